/**
 * seq2seq-train: trains a DalleBart (text → VQGAN codes) on encoded parquet shards, as dalle-mini did:
 * teacher forcing (decoder input = BOS + codes[:-1]), cross-entropy over the codes, empty captions with
 * `blank_caption_prob` (so super-conditioning has an unconditional model to subtract), the encoder
 * optionally warm-started from a pretrained BART (`encoder_init`, frozen for `freeze_encoder_steps`).
 *
 * A step: batch of rows → tokenise (maybe blank) → micro-batch losses → grads → (freeze) → clip → update.
 * The shared loop (src/ml/train/) logs, evaluates (held-out loss; generated images judged, with
 * `judge: shapes`), renders sample grids, checkpoints and resumes exactly.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { definePlugin, type StageContext } from '../../src/core/plugins/types.js';
import { modelPath } from '../../src/core/refs.js';
import { readEncodedManifest } from '../../src/data/encoded.js';
import { EncodedLoader } from '../../src/data/loader.js';
import type { EncodedRow } from '../../src/data/encoded.js';
import { createShapesJudge, parseShapesCaption, scoreShapes, type ShapesJudge } from '../../src/data/shapes-judge.js';
import { describeCompute, initCompute, tf } from '../../src/ml/backend.js';
import { DalleBart, dalleBartConfigToHf, isEncoderParam, readDalleBartConfig, saveDalleBart } from '../../src/ml/models/dallebart.js';
import { formatWarmStartReport, warmStartEncoder } from '../../src/ml/models/warm-start.js';
import { loadVqgan, type Vqgan } from '../../src/ml/models/vqgan.js';
import { normsByName } from '../../src/ml/optim/index.js';
import { Rng } from '../../src/ml/rng.js';
import { generateImages, imageGrid, writeGenerationConfig, writeVqganReference } from '../../src/ml/text2image.js';
import { loadTokenizer, saveTokenizer, type TextTokenizer } from '../../src/ml/tokenizers/index.js';
import { resolveInput, upstreamArtifact } from '../../src/ml/train/data.js';
import { cadenceFields, deriveSeed, findResume, optimizerFields, optimizerFrom, optimizerUpdate, runTraining, scheduleFields, scheduleFrom, TrainState, trainerConfig } from '../../src/ml/train/index.js';
import { dalleBartConfigOf, groupNorms, TransformerFields } from '../../src/ml/train/transformer-fields.js';

const posInt = z.number().int().min(1);

export const Seq2SeqTrainConfig = trainerConfig({
    train: z.string().default('').describe("encoded dataset folder (dataset.json + parquet shards); '' = the upstream stage's train artifact"),
    heldout: z.string().default('').describe("held-out encoded dataset folder; '' = the upstream stage's heldout artifact"),
    tokenizer: z.string().default('').describe("tokenizer.json or folder; '' = the upstream stage's tokenizer artifact, else encoder_init's tokenizer.json"),
    vqgan: modelPath("the VQGAN the codes came from; '' = the one recorded in the train dataset's manifest"),
    encoder_init: modelPath('HF BART folder (config.json + model.safetensors or a sharded index) whose encoder and text embeddings warm-start the model; empty = from scratch'),
    freeze_encoder_steps: z.number().int().min(0).default(0).describe('keep the (warm-started) encoder and text embeddings fixed for this many steps'),
    model: TransformerFields.default(() => TransformerFields.parse({})).describe('model sizes (the text and image vocabularies come from the tokenizer and the data)'),
    seed: z.number().int().min(0).nullable().default(null).describe('init/data seed; null = experiment seed'),
    steps: posInt.default(2000).describe('training steps'),
    batch_size: posInt.default(32).describe('rows per step'),
    ...scheduleFields({ lr: 1e-3, lr_warmup_steps: 100, lr_decay: 'cosine' }),
    ...optimizerFields({ beta1: 0.9, beta2: 0.98, weight_decay: 0.01, grad_clip: 1 }),
    label_smoothing: z.number().min(0).max(0.5).default(0).describe('label smoothing of the code cross-entropy'),
    input_noise: z.number().min(0).max(1).default(0).describe('probability of replacing each teacher-forced input code by a random code (the target stays), so the decoder leans on the text more than on the codes before'),
    blank_caption_prob: z.number().min(0).max(1).default(0.1).describe('probability of training a row with the empty caption (needed by super-conditioning)'),
    shuffle_window: z.number().int().min(0).default(4096).describe('rows shuffled together by the loader'),
    eval_count: posInt.default(256).describe('held-out rows in the eval loss'),
    ...cadenceFields({ log_every: 10, eval_every: 250, media_every: 250, checkpoint_every: 500 }),
    log_norms: z.boolean().default(true).describe('log per-layer gradient and weight norms (grad_norm/…, param_norm/…) at log steps'),
    sample_prompts: z.array(z.string()).default([]).describe('prompts of the media grid; [] = the first held-out and training captions'),
    samples_per_prompt: posInt.default(4).describe('images per prompt in the media grid'),
    cond_scale: z.number().min(0).default(3).describe('super-conditioning scale of evaluation sampling (1 = off); with top_k, top_p and temperature it goes into the model folder as the default of minidalle generate'),
    top_k: z.number().int().min(0).default(0).describe('top-k of evaluation sampling (0 = off)'),
    top_p: z.number().positive().max(1).default(1).describe('top-p of evaluation sampling (1 = off)'),
    temperature: z.number().positive().default(1).describe('temperature of evaluation sampling'),
    judge: z.enum(['none', 'shapes']).default('none').describe("score generated images from pixels: 'shapes' judges shape, colour, position and size of the shapes dataset"),
    judge_count: posInt.default(64).describe('held-out prompts generated and judged at each eval (and as many training prompts at the end)'),
});

export type Seq2SeqTrainConfig = z.output<typeof Seq2SeqTrainConfig>;

export class Seq2SeqTrainError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'Seq2SeqTrainError';
  }
}

const NAME = 'seq2seq-train';
const ENCODED_HINT = 'an encoded dataset folder, or add needs: [encode]';

function resolveTokenizer(ctx: StageContext<Seq2SeqTrainConfig>): string {
  const c = ctx.config;
  const upstream = c.tokenizer || upstreamArtifact(ctx, 'tokenizer');
  if (upstream) return upstream;
  if (c.encoder_init && existsSync(join(c.encoder_init, 'tokenizer.json'))) return join(c.encoder_init, 'tokenizer.json');
  throw new Seq2SeqTrainError(`${NAME}: no tokenizer: with.tokenizer is empty, no upstream stage has a 'tokenizer' artifact and encoder_init has no tokenizer.json; set with.tokenizer or add a tokenizer-train stage to needs:`);
}

/** Held-out rows (up to `n`) in file order. */
async function readRows(dir: string, n: number): Promise<EncodedRow[]> {
  const loader = await EncodedLoader.open(dir, { batchSize: n, seed: 0, shuffleWindow: 0, epochs: 1 });
  return (await loader.next()) ?? [];
}

/** Tokenised text (B, L) and codes (B, image_length) as tensors, the caller owns them. */
function batchTensors(tok: TextTokenizer, rows: readonly EncodedRow[], captions: readonly string[], L: number, T: number): { ids: tf.Tensor2D; mask: tf.Tensor2D; codes: tf.Tensor2D } {
  const text = tok.encodeBatch(captions, { maxLength: L });
  const codes = new Int32Array(rows.length * T);
  rows.forEach((r, i) => {
    if (r.encoding.length !== T) throw new Seq2SeqTrainError(`${NAME}: row '${r.key}' has ${r.encoding.length} codes, the model makes ${T}`);
    codes.set(r.encoding, i * T);
  });
  return {
    ids: tf.tensor2d(text.ids, [rows.length, L], 'int32'),
    mask: tf.tensor2d(text.mask, [rows.length, L], 'int32'),
    codes: tf.tensor2d(codes, [rows.length, T], 'int32'),
  };
}

export default definePlugin({
  name: NAME,
  version: '1',
  description: 'Train a DalleBart (text → VQGAN codes) on encoded shards: BART encoder warm start, teacher forcing, eval loss, judged samples, exact resume',
  config: Seq2SeqTrainConfig,
  async run(ctx) {
    const c = ctx.config;
    const info = await initCompute();
    ctx.meta({ backend: info });
    const seed = c.seed ?? ctx.seed;
    const trainDir = resolveInput(ctx, NAME, 'train', c.train, 'train', ENCODED_HINT);
    const heldoutDir = resolveInput(ctx, NAME, 'heldout', c.heldout, 'heldout', ENCODED_HINT);
    const manifest = await readEncodedManifest(trainDir);
    const vqganDir = c.vqgan || (typeof manifest.producer.vqgan === 'string' ? manifest.producer.vqgan : '');
    if (!vqganDir || !existsSync(join(vqganDir, 'model.safetensors'))) {
      throw new Seq2SeqTrainError(`${NAME}: the VQGAN of ${trainDir} ${vqganDir ? `(${vqganDir}) is missing` : 'is not recorded in its dataset.json'}; set with.vqgan to the VQGAN folder the codes came from`);
    }
    const tokenizerPath = resolveTokenizer(ctx);
    const tok = await loadTokenizer(tokenizerPath);
    if (tok.padId === null) throw new Seq2SeqTrainError(`${NAME}: tokenizer ${tokenizerPath} has no padding token (<pad>); train one with tokenizer-train or use BART's`);

    const vqgan: Vqgan = await loadVqgan(vqganDir);
    const T = manifest.code_count;
    const facts = {
      model_type: 'dallebart' as const,
      vocab_size: tok.vocabSize,
      pad_token_id: tok.padId,
      bos_token_id: tok.bosId ?? 0,
      eos_token_id: tok.eosId ?? 2,
      decoder_start_token_id: tok.eosId ?? 2,
      image_vocab_size: vqgan.config.n_embed,
      image_length: T,
    };
    const resume = await findResume(ctx, NAME);
    const model = DalleBart.create(resume ? readDalleBartConfig(resume.dir) : dalleBartConfigOf(c.model, facts), seed);
    const L = model.config.max_text_length;
    if (!resume && c.encoder_init) {
      const report = await warmStartEncoder(model, c.encoder_init);
      ctx.meta({ warm_start: { source: c.encoder_init, copied: report.copied, skipped: report.skipped, resized: report.resized } });
      for (const line of formatWarmStartReport(report, model.config)) ctx.logger.info(`${NAME}: ${line}`);
    }

    const lrAt = scheduleFrom(c, c.steps);
    const optimizer = optimizerFrom(c, lrAt, model.params);
    const dropoutRng = new Rng(deriveSeed(seed, 'dropout'));
    const captionRng = new Rng(deriveSeed(seed, 'captions'));
    const loader = await EncodedLoader.open(trainDir, { batchSize: c.batch_size, seed: deriveSeed(seed, 'data'), shuffleWindow: c.shuffle_window });
    const heldout = await readRows(heldoutDir, Math.max(c.eval_count, c.judge_count));
    const trainSample = await readRows(trainDir, c.judge_count);
    if (heldout.length === 0) throw new Seq2SeqTrainError(`${NAME}: ${heldoutDir} has no rows for evaluation`);
    const state = new TrainState({
      models: { model: { params: model.params, config: dalleBartConfigToHf(model.config) } },
      optimizers: { model: { optimizer, params: model.params } },
      rngs: { dropout: dropoutRng, captions: captionRng },
      data: { position: () => loader.position(), restore: (p) => loader.restore(p as ReturnType<typeof loader.position>) },
    });
    const judge: ShapesJudge | undefined = c.judge === 'shapes' ? await createShapesJudge(vqgan.config.resolution) : undefined;
    const prompts = c.sample_prompts.length ? c.sample_prompts : [...heldout.slice(0, 4), ...trainSample.slice(0, 4)].map((r) => r.caption);
    ctx.logger.info(
      `${NAME}: ${loader.rowsPerEpoch} train / ${heldout.length} held-out rows, ${T} codes of ${vqgan.config.n_embed}, text ${L} tokens of ${tok.vocabSize}, ${model.params.count()} parameters, ${c.optimizer}, compute ${describeCompute(info)}`,
    );

    const t2i = { model, tokenizer: tok, vqgan };
    const sampling = { condScale: c.cond_scale, topK: c.top_k, topP: c.top_p, temperature: c.temperature };
    const micro = c.batch_size / c.grad_accumulation;

    /** eval/attr_acc/* and eval/all_correct over generated images of `rows`' captions (one sample each). */
    const judged = async (rows: readonly EncodedRow[], prefix: string): Promise<Record<string, number>> => {
      if (!judge) return {};
      const captions = rows.map((r) => r.caption);
      const images = generateImages(t2i, captions, { samples: 1, seed: 1234, sampling, batchSize: 32 });
      const score = scoreShapes(images.map((im) => judge.judge(im.rgb)), captions.map(parseShapesCaption));
      const out: Record<string, number> = {};
      for (const [k, v] of Object.entries(score.attr_acc)) if (v !== null) out[`${prefix}/attr_acc/${k}`] = v;
      if (score.all_correct !== null) out[`${prefix}/all_correct`] = score.all_correct;
      return out;
    };

    return runTraining(
      ctx,
      {
        name: NAME,
        state,
        steps: c.steps,
        cadence: c,
        primary: judge ? { name: 'eval/all_correct', goal: 'maximize' } : { name: 'eval/loss', goal: 'minimize' },
        metrics: { 'eval/loss': 'minimize', 'train/loss': 'minimize' },
        async step(log) {
          const rows = await loader.next();
          if (!rows) throw new Seq2SeqTrainError(`${NAME}: the loader of ${trainDir} ended`);
          const captions = rows.map((r) => (captionRng.uniform() < c.blank_caption_prob ? '' : r.caption));
          const frozen = state.step < c.freeze_encoder_steps ? isEncoderParam : undefined;
          let norms: Record<string, number> = {};
          const r = optimizerUpdate(
            model.params,
            optimizer,
            (i) => {
              const part = rows.slice(i * micro, (i + 1) * micro);
              const b = batchTensors(tok, part, captions.slice(i * micro, (i + 1) * micro), L, T);
              return model.loss(b.ids, b.mask, b.codes, { training: true, rng: dropoutRng, labelSmoothing: c.label_smoothing, inputNoise: c.input_noise });
            },
            {
              microBatches: c.grad_accumulation,
              clip: c.grad_clip,
              ...(frozen ? { frozen } : {}),
              ...(log && c.log_norms ? { onGrads: (g) => (norms = groupNorms('grad_norm', normsByName(g))) } : {}),
            },
          );
          state.samples += rows.length;
          if (!log) return undefined;
          return {
            'train/loss': r.loss,
            'train/grad_norm': r.gradNorm,
            'train/lr': lrAt(state.step),
            'train/epoch': loader.position().epoch,
            ...norms,
            ...(c.log_norms ? groupNorms('param_norm', normsByName(model.params.entries())) : {}),
          };
        },
        async evaluate() {
          let sum = 0;
          let n = 0;
          const rows = heldout.slice(0, c.eval_count);
          for (let i = 0; i < rows.length; i += c.batch_size) {
            const part = rows.slice(i, i + c.batch_size);
            const b = batchTensors(tok, part, part.map((r) => r.caption), L, T);
            const loss = model.loss(b.ids, b.mask, b.codes);
            sum += (loss.dataSync()[0] as number) * part.length;
            n += part.length;
            tf.dispose([loss, b.ids, b.mask, b.codes]);
          }
          return { 'eval/loss': sum / n, ...(await judged(heldout.slice(0, c.judge_count), 'eval')) };
        },
        async media(step) {
          const images = generateImages(t2i, prompts, { samples: c.samples_per_prompt, seed: 1, sampling, batchSize: 32 });
          const rows = prompts.map((p, i) => ({ label: p, images: images.filter((im) => im.promptIndex === i).map((im) => im.rgb) }));
          await ctx.media('samples', await imageGrid(rows, vqgan.config.resolution), step, `cond scale ${c.cond_scale}: held-out prompts, then training prompts`);
        },
        // the last eval/* values are in the summary already (ctx.log keeps last and best)
        summary: () => ({ backend: info.backend, text_tokens: L, image_codes: T }),
        async export() {
          // memorisation vs generalisation: the same judged score on training prompts, once at the end
          const onTrain = await judged(trainSample, 'train_prompts');
          if (Object.keys(onTrain).length) ctx.log(onTrain, state.step);
          const dir = join(ctx.outDir, 'model');
          await saveDalleBart(model, dir);
          saveTokenizer(tok, dir);
          await writeVqganReference(dir, vqganDir);
          // `minidalle generate` samples as this run evaluated, unless told otherwise
          await writeGenerationConfig(dir, { topK: c.top_k, topP: c.top_p, temperature: c.temperature, condScale: c.cond_scale });
          return { model: dir };
        },
        dispose() {
          vqgan.dispose();
        },
      },
      resume,
    );
  },
});
