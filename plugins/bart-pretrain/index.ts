/**
 * bart-pretrain: BART's denoising pre-training by text infilling (Lewis et al. 2019): spans whose lengths
 * are drawn from Poisson(λ = 3) cover ~30% of a caption's tokens; each span becomes one `<mask>` (a
 * zero-length span inserts one), and the decoder reconstructs the original caption. The result is an HF
 * BART folder (`config.json`, `model.safetensors`, `tokenizer.json`) whose encoder seq2seq-train's
 * `encoder_init` warm-starts from: in the shapes world it stands in for `facebook/bart-large-cnn`.
 */
import { join } from 'node:path';
import { z } from 'zod';
import { definePlugin } from '../../src/core/plugins/types.js';
import { describeCompute, initCompute, tf } from '../../src/ml/backend.js';
import { DalleBart, dalleBartConfigToHf, readDalleBartConfig, saveDalleBart } from '../../src/ml/models/dallebart.js';
import { normsByName } from '../../src/ml/optim/index.js';
import { Rng } from '../../src/ml/rng.js';
import { loadTokenizer, saveTokenizer, type TextTokenizer } from '../../src/ml/tokenizers/index.js';
import { loadCaptions, resolveInput } from '../../src/ml/train/data.js';
import { cadenceFields, deriveSeed, findResume, optimizerFields, optimizerFrom, optimizerUpdate, runTraining, scheduleFields, scheduleFrom, ShuffledOrder, TrainState, trainerConfig } from '../../src/ml/train/index.js';
import { dalleBartConfigOf, groupNorms, TransformerFields } from '../../src/ml/train/transformer-fields.js';

const posInt = z.number().int().min(1);

export const BartPretrainConfig = trainerConfig({
    train: z.string().default('').describe("training captions (tar pattern, folder, table, parquet); '' = the upstream stage's train artifact"),
    heldout: z.string().default('').describe("held-out captions; '' = the upstream stage's heldout artifact"),
    caption_fields: z.array(z.string().min(1)).min(1).default(['txt']).describe('caption fields tried in order'),
    tokenizer: z.string().default('').describe("tokenizer.json or folder; '' = the upstream stage's tokenizer artifact"),
    model: TransformerFields.default(() => TransformerFields.parse({})).describe('model sizes (the vocabulary comes from the tokenizer)'),
    seed: z.number().int().min(0).nullable().default(null).describe('init/data/noise seed; null = experiment seed'),
    steps: posInt.default(1000).describe('training steps'),
    batch_size: posInt.default(32).describe('captions per step'),
    mask_ratio: z.number().min(0).max(0.9).default(0.3).describe('share of tokens covered by masked spans'),
    poisson_lambda: z.number().min(0).default(3).describe('mean span length (Poisson λ)'),
    ...scheduleFields({ lr: 1e-3, lr_warmup_steps: 100, lr_decay: 'cosine' }),
    ...optimizerFields({ beta1: 0.9, beta2: 0.98, weight_decay: 0.01, grad_clip: 1 }),
    eval_count: posInt.default(256).describe('held-out captions in the eval loss'),
    ...cadenceFields({ log_every: 10, eval_every: 250, media_every: 250, checkpoint_every: 500 }),
    log_norms: z.boolean().default(true).describe('log per-layer gradient and weight norms at log steps'),
});

export type BartPretrainConfig = z.output<typeof BartPretrainConfig>;

export class BartPretrainError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BartPretrainError';
  }
}

/** Knuth's Poisson sampler (λ is small here). */
function poisson(rng: Rng, lambda: number): number {
  const l = Math.exp(-lambda);
  let k = 0;
  let p = 1;
  for (;;) {
    p *= rng.uniform();
    if (p <= l) return k;
    k++;
  }
}

/**
 * Text infilling of `tokens` (no special tokens): spans of Poisson(λ) length, until `ratio` of the tokens
 * are covered, each replaced by one `maskId`; a zero-length span inserts a mask before its start.
 */
export function textInfilling(tokens: readonly number[], rng: Rng, maskId: number, ratio: number, lambda: number): number[] {
  const n = tokens.length;
  const want = Math.round(n * ratio);
  const masked = new Uint8Array(n);
  const insertBefore = new Uint8Array(n + 1);
  let covered = 0;
  for (let tries = 0; covered < want && tries < 10 * n + 10; tries++) {
    const len = poisson(rng, lambda);
    const start = rng.int(n);
    if (len === 0) {
      insertBefore[start] = 1;
      continue;
    }
    for (let i = start; i < Math.min(n, start + len); i++) {
      if (!masked[i]) covered++;
      masked[i] = 1;
    }
  }
  const out: number[] = [];
  for (let i = 0; i <= n; i++) {
    if (insertBefore[i] && !(i < n && masked[i]) && !(i > 0 && masked[i - 1])) out.push(maskId);
    if (i === n) break;
    if (masked[i]) {
      if (i === 0 || !masked[i - 1]) out.push(maskId);
    } else out.push(tokens[i] as number);
  }
  return out;
}

/** `<s> … </s>` ids of a caption without padding, cut to `max` positions. */
function withSpecials(tok: TextTokenizer, text: string, max: number): number[] {
  return tok.encode(text, { maxLength: max }).ids;
}

const NAME = 'bart-pretrain';

export default definePlugin({
  name: NAME,
  version: '1',
  description: 'BART denoising pre-training (text infilling, Poisson(3) spans, 30% masked) on captions; writes an HF BART folder for encoder warm starts',
  config: BartPretrainConfig,
  async run(ctx) {
    const c = ctx.config;
    const info = await initCompute();
    ctx.meta({ backend: info });
    const seed = c.seed ?? ctx.seed;
    const hint = 'a caption source, or add needs: [data]';
    const trainSpec = resolveInput(ctx, NAME, 'train', c.train, 'train', hint);
    const heldoutSpec = resolveInput(ctx, NAME, 'heldout', c.heldout, 'heldout', hint);
    const tokenizerPath = resolveInput(ctx, NAME, 'tokenizer', c.tokenizer, 'tokenizer', 'a tokenizer.json, or add a tokenizer-train stage to needs:');
    const tok = await loadTokenizer(tokenizerPath);
    const { padId, maskId, bosId, eosId } = tok;
    if (padId === null || maskId === null || bosId === null || eosId === null) {
      throw new BartPretrainError(`${NAME}: tokenizer ${tokenizerPath} lacks BART's special tokens (<s>, <pad>, </s>, <mask>); train one with tokenizer-train`);
    }
    const warn = (m: string): void => ctx.logger.warn(m);
    const train = await loadCaptions(trainSpec, { fields: c.caption_fields, signal: ctx.signal, warn });
    const heldout = await loadCaptions(heldoutSpec, { fields: c.caption_fields, limit: c.eval_count, signal: ctx.signal, warn });
    if (train.captions.length < c.batch_size) throw new BartPretrainError(`${NAME}: ${trainSpec} has ${train.captions.length} captions, fewer than batch_size ${c.batch_size}`);

    const resume = await findResume(ctx, NAME);
    const facts = { model_type: 'bart' as const, vocab_size: tok.vocabSize, pad_token_id: padId, bos_token_id: bosId, eos_token_id: eosId, decoder_start_token_id: eosId };
    const model = DalleBart.create(resume ? readDalleBartConfig(resume.dir) : dalleBartConfigOf(c.model, facts), seed);
    const L = model.config.max_text_length;
    const lrAt = scheduleFrom(c, c.steps);
    const optimizer = optimizerFrom(c, lrAt, model.params);
    const dropoutRng = new Rng(deriveSeed(seed, 'dropout'));
    const noiseRng = new Rng(deriveSeed(seed, 'noise'));
    const order = new ShuffledOrder(train.captions.length, deriveSeed(seed, 'data'));
    const state = new TrainState({
      models: { model: { params: model.params, config: dalleBartConfigToHf(model.config) } },
      optimizers: { model: { optimizer, params: model.params } },
      rngs: { dropout: dropoutRng, noise: noiseRng },
      data: order,
    });
    ctx.logger.info(`${NAME}: ${train.captions.length} train / ${heldout.captions.length} held-out captions, ${L} tokens of ${tok.vocabSize}, ${model.params.count()} parameters, compute ${describeCompute(info)}`);

    /** Noised encoder input and the original as target, both (B, L) padded. */
    const batch = (texts: readonly string[], rng: Rng): { ids: tf.Tensor2D; mask: tf.Tensor2D; targets: tf.Tensor2D } => {
      const B = texts.length;
      const ids = new Int32Array(B * L).fill(padId);
      const mask = new Int32Array(B * L);
      const targets = new Int32Array(B * L).fill(padId);
      texts.forEach((t, b) => {
        const full = withSpecials(tok, t, L); // <s> … </s>
        targets.set(full, b * L);
        const noised = [bosId, ...textInfilling(full.slice(1, -1), rng, maskId, c.mask_ratio, c.poisson_lambda), eosId].slice(0, L);
        ids.set(noised, b * L);
        mask.fill(1, b * L, b * L + noised.length);
      });
      return { ids: tf.tensor2d(ids, [B, L], 'int32'), mask: tf.tensor2d(mask, [B, L], 'int32'), targets: tf.tensor2d(targets, [B, L], 'int32') };
    };
    const micro = c.batch_size / c.grad_accumulation;

    return runTraining(
      ctx,
      {
        name: NAME,
        state,
        steps: c.steps,
        cadence: c,
        primary: { name: 'eval/loss', goal: 'minimize' },
        metrics: { 'train/loss': 'minimize', 'eval/token_acc': 'maximize' },
        step(log) {
          const texts = order.next(c.batch_size).map((i) => train.captions[i] as string);
          let norms: Record<string, number> = {};
          const r = optimizerUpdate(
            model.params,
            optimizer,
            (i) => {
              const b = batch(texts.slice(i * micro, (i + 1) * micro), noiseRng);
              return model.loss(b.ids, b.mask, b.targets, { training: true, rng: dropoutRng });
            },
            { microBatches: c.grad_accumulation, clip: c.grad_clip, ...(log && c.log_norms ? { onGrads: (g) => (norms = groupNorms('grad_norm', normsByName(g))) } : {}) },
          );
          state.samples += texts.length;
          if (!log) return undefined;
          return {
            'train/loss': r.loss,
            'train/grad_norm': r.gradNorm,
            'train/lr': lrAt(state.step),
            'train/epoch': order.currentEpoch,
            ...norms,
          };
        },
        evaluate() {
          // the same noise every evaluation, so eval/loss is comparable across steps
          const rng = new Rng(deriveSeed(seed, 'eval-noise'));
          let loss = 0;
          let right = 0;
          let counted = 0;
          for (let i = 0; i < heldout.captions.length; i += c.batch_size) {
            const texts = heldout.captions.slice(i, i + c.batch_size);
            const b = batch(texts, rng);
            const sums = tf.tidy(() => {
              const { decoderInput } = model.teacherForcing(b.targets);
              const logits = model.decoderForward(model.encode(b.ids, b.mask), b.mask, decoderInput); // (B, L, V)
              const real = tf.notEqual(b.targets, padId); // (B, L)
              const hits = tf.logicalAnd(tf.equal(tf.argMax(logits, -1), b.targets), real);
              return tf.stack([model.loss(b.ids, b.mask, b.targets), tf.sum(tf.cast(hits, 'float32')), tf.sum(tf.cast(real, 'float32'))]);
            });
            const [l = 0, hits = 0, real = 0] = sums.dataSync();
            sums.dispose();
            loss += l * texts.length;
            right += hits;
            counted += real;
            tf.dispose([b.ids, b.mask, b.targets]);
          }
          return { 'eval/loss': loss / Math.max(1, heldout.captions.length), 'eval/token_acc': right / Math.max(1, counted) };
        },
        skips: () => [train.skips, heldout.skips],
        // the last eval/* values are in the summary already (ctx.log keeps last and best)
        summary: () => ({ backend: info.backend }),
        async export() {
          const dir = join(ctx.outDir, 'bart');
          await saveDalleBart(model, dir);
          saveTokenizer(tok, dir);
          return { model: dir, tokenizer: join(dir, 'tokenizer.json') };
        },
      },
      resume,
    );
  },
});
