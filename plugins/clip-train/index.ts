/**
 * clip-train: trains a CLIP (ViT image tower + causal text tower) with the symmetric InfoNCE loss on any
 * captioned image source, or fine-tunes one (`init`: an HF CLIP folder, e.g. a converted
 * openai/clip-vit-base-patch32). Evaluation is held-out retrieval: for each caption, is its own image the
 * most similar of the held-out set (text → image top-1), and the other way round (image → text top-1). With
 * `judge: shapes` it also counts a text → image retrieval as right when the retrieved image shows what the
 * caption asks (read by the pixel judge): captions of the shapes world do not single out one image, so two
 * images with the same attributes are equally right answers.
 *
 * The result is a CLIP folder (config.json, model.safetensors, tokenizer.json) that clip-eval and
 * `minidalle generate --clip` re-rank samples with.
 */
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { definePlugin } from '../../src/core/plugins/types.js';
import { modelPath } from '../../src/core/refs.js';
import { createShapesJudge, parseShapesCaption, scoreShapes } from '../../src/data/shapes-judge.js';
import { NegativesError, WordSwapNegatives } from '../../src/data/negatives.js';
import { SHAPES, SHAPES_WORD_GROUPS } from '../../src/data/shapes.js';
import { describeCompute, initCompute, tf } from '../../src/ml/backend.js';
import { cosine, embedImages, embedTexts, type ClipScorer } from '../../src/ml/clip-rank.js';
import { Clip, CLIP_MEAN, CLIP_STD, clipConfigToHf, clipTextBatch, clipTokenizer, LEGACY_EOS_ID, loadClip, readClipConfig, resolveClipConfig, saveClip, type ClipConfig } from '../../src/ml/models/clip.js';
import { normsByName } from '../../src/ml/optim/index.js';
import { loadTokenizer, saveTokenizer } from '../../src/ml/tokenizers/index.js';
import { loadVqgan } from '../../src/ml/models/vqgan.js';
import { Rng } from '../../src/ml/rng.js';
import { imageBatch, loadImageSet, resolveInput, type ImageSet } from '../../src/ml/train/data.js';
import { cadenceFields, deriveSeed, findResume, optimizerFields, optimizerFrom, optimizerUpdate, runTraining, scheduleFields, scheduleFrom, ShuffledOrder, TrainState, trainerConfig } from '../../src/ml/train/index.js';
import { groupNorms } from '../../src/ml/train/transformer-fields.js';

const posInt = z.number().int().min(1);
const layers = z.number().int().min(0);

/** The sizes a user picks; vocabulary and special ids come from the tokenizer, the image side from `resolution`. */
const ClipModelFields = z
  .object({
    projection_dim: posInt.default(64).describe('width of the joint embedding space'),
    text_width: posInt.default(128).describe('text transformer width'),
    text_layers: layers.default(2).describe('text transformer layers'),
    text_heads: posInt.default(4).describe('text attention heads'),
    vision_width: posInt.default(128).describe('ViT width'),
    vision_layers: layers.default(2).describe('ViT layers'),
    vision_heads: posInt.default(4).describe('ViT attention heads'),
    patch_size: posInt.default(4).describe('ViT patch side in pixels'),
    mlp_ratio: posInt.default(2).describe('MLP hidden width = mlp_ratio × width (CLIP: 4)'),
    max_text_length: posInt.default(32).describe('text positions (CLIP: 77)'),
    activation: z.enum(['quick_gelu', 'gelu']).default('quick_gelu').describe("MLP activation (OpenAI's CLIP: quick_gelu)"),
  })
  .strict();

export const ClipTrainConfig = trainerConfig({
    train: z.string().default('').describe("training images with captions (tar pattern, folder, table, parquet); '' = the upstream stage's train artifact"),
    heldout: z.string().default('').describe("held-out images with captions; '' = the upstream stage's heldout artifact"),
    tokenizer: z.string().default('').describe("tokenizer.json or folder; '' = init's tokenizer.json, else the upstream stage's tokenizer artifact"),
    init: z.string().default('').describe("HF CLIP folder to fine-tune (config.json, model.safetensors, tokenizer.json); '' = train from scratch"),
    resolution: posInt.default(32).describe("image side the ViT reads (from scratch); with init, the model's image_size"),
    model: ClipModelFields.default(() => ClipModelFields.parse({})).describe('model sizes (from scratch)'),
    max_train_items: z.number().int().min(0).default(0).describe('read at most this many training images (0 = all)'),
    vqgan: modelPath("VQGAN folder: training images are also shown as its reconstructions (encode → decode), the image domain of the samples CLIP re-ranks; '' = real images only"),
    reconstruction_prob: z.number().min(0).max(1).default(0.5).describe('with vqgan: share of training rows shown as their reconstruction'),
    hard_negatives: z.number().int().min(0).default(0).describe('per pair, this many captions with a word swapped (NegCLIP hard negatives) that its image is also scored against; needs negative_words'),
    negative_words: z
      .union([z.literal('shapes'), z.array(z.array(z.union([z.string().min(1), z.array(z.string().min(1)).min(1)])).min(2)).min(1)])
      .nullable()
      .default(null)
      .describe("word groups the hard negatives swap within: 'shapes' (shapes, colours, sizes, positions), or a list of groups, each a list of words or of synonym lists"),
    seed: z.number().int().min(0).nullable().default(null).describe('init/data seed; null = experiment seed'),
    steps: posInt.default(1500).describe('training steps'),
    batch_size: posInt.default(128).describe('image-caption pairs per step (the negatives of each pair)'),
    ...scheduleFields({ lr: 1e-3, lr_warmup_steps: 100, lr_decay: 'cosine' }),
    ...optimizerFields({ beta1: 0.9, beta2: 0.98, weight_decay: 0.1, grad_clip: 1 }),
    eval_count: posInt.default(512).describe('held-out pairs in the retrieval evaluation'),
    judge: z.enum(['none', 'shapes']).default('none').describe("'shapes': also score retrieval by the attributes the retrieved image shows"),
    ...cadenceFields({ log_every: 25, eval_every: 500, media_every: 500, checkpoint_every: 500 }),
    log_norms: z.boolean().default(false).describe('log per-tower gradient norms at log steps'),
});

export type ClipTrainConfig = z.output<typeof ClipTrainConfig>;

export class ClipTrainError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ClipTrainError';
  }
}

const NAME = 'clip-train';

/** [-1, 1] images of the data pipeline → [0, 1], as CLIP's preprocessing expects. */
function toUnit(x: tf.Tensor4D): tf.Tensor4D {
  return tf.tidy(() => tf.div(tf.add(x, 1), 2) as tf.Tensor4D);
}

/** Retrieval over a held-out set: each text against every image, each image against every text. */
export function retrievalTop1(textEmb: Float32Array, imageEmb: Float32Array, n: number, d: number): { t2i: number[]; i2t: number[] } {
  const t2i: number[] = [];
  const i2t: number[] = [];
  const sim = new Float32Array(n * n);
  for (let t = 0; t < n; t++) for (let i = 0; i < n; i++) sim[t * n + i] = cosine(textEmb, t, imageEmb, i, d);
  for (let t = 0; t < n; t++) {
    let best = 0;
    for (let i = 1; i < n; i++) if ((sim[t * n + i] as number) > (sim[t * n + best] as number)) best = i;
    t2i.push(best);
  }
  for (let i = 0; i < n; i++) {
    let best = 0;
    for (let t = 1; t < n; t++) if ((sim[t * n + i] as number) > (sim[best * n + i] as number)) best = t;
    i2t.push(best);
  }
  return { t2i, i2t };
}

/**
 * Does CLIP read the shape itself? Each image against its caption with the shape word swapped for every shape:
 * the share whose own shape scores best. Held-out pairs need this: there colour alone names the shape, so
 * retrieval among held-out images cannot tell reading the shape from reading the colour.
 */
export function shapeSwapAccuracy(scorer: ClipScorer, captions: readonly string[], imageEmb: Float32Array, d: number): number | null {
  const asked = captions.flatMap((caption, i) => {
    const shape = parseShapesCaption(caption).shape;
    return shape ? [{ i, shape, variants: SHAPES.map((s) => caption.replace(new RegExp(`\\b${shape}\\b`), s)) }] : [];
  });
  if (asked.length === 0) return null;
  const swapped = embedTexts(scorer, asked.flatMap((a) => a.variants)); // every variant in one batched pass
  const right = asked.filter((a, n) => {
    const scores = SHAPES.map((_, k) => cosine(swapped, n * SHAPES.length + k, imageEmb, a.i, d));
    return SHAPES[scores.indexOf(Math.max(...scores))] === a.shape;
  }).length;
  return right / asked.length;
}

/** (N, side, side, 3) [-1, 1] floats of a set → one byte RGB image each (for the pixel judge). */
function toBytes(set: ImageSet, i: number): Uint8Array {
  const per = set.side * set.side * 3;
  return Uint8Array.from(set.pixels.subarray(i * per, (i + 1) * per), (v) => Math.round(Math.min(1, Math.max(0, (v + 1) / 2)) * 255));
}

/**
 * The set as `vqganDir` reconstructs it (encode → decode): generated samples are VQGAN decodes, so a CLIP
 * that also sees reconstructions ranks them in their own image domain rather than only in the crisp one.
 */
async function reconstructSet(set: ImageSet, vqganDir: string): Promise<ImageSet> {
  const vqgan = await loadVqgan(vqganDir);
  try {
    if (vqgan.config.resolution !== set.side) throw new ClipTrainError(`${NAME}: with.vqgan ${vqganDir} works at ${vqgan.config.resolution} px, the CLIP reads ${set.side} px; use a VQGAN of the CLIP's resolution`);
    const per = set.side * set.side * 3;
    const pixels = new Float32Array(set.pixels.length);
    for (let i = 0; i < set.count; i += 256) {
      const x = imageBatch(set, Array.from({ length: Math.min(256, set.count - i) }, (_, k) => i + k));
      const y = vqgan.reconstruct(x);
      pixels.set(y.dataSync(), i * per);
      tf.dispose([x, y]);
    }
    return { ...set, pixels };
  } finally {
    vqgan.dispose();
  }
}

/** (B, side, side, 3) rows of `real`, each drawn from `recon` instead with probability `prob`. */
function mixedBatch(real: ImageSet, recon: ImageSet, idx: readonly number[], rng: Rng, prob: number): tf.Tensor4D {
  const per = real.side * real.side * 3;
  const buf = new Float32Array(idx.length * per);
  idx.forEach((k, i) => buf.set((rng.uniform() < prob ? recon : real).pixels.subarray(k * per, (k + 1) * per), i * per));
  return tf.tensor4d(buf, [idx.length, real.side, real.side, 3]);
}

/** The hard-negative builder of `with:`, checked against the training captions; null when off. */
function hardNegatives(c: ClipTrainConfig, captions: readonly string[]): { negatives: WordSwapNegatives; covered: number } | null {
  if (c.hard_negatives === 0) {
    if (c.negative_words !== null) throw new ClipTrainError(`${NAME}: with.negative_words is set but with.hard_negatives is 0; set hard_negatives (e.g. 2) or drop negative_words`);
    return null;
  }
  if (c.negative_words === null) throw new ClipTrainError(`${NAME}: with.hard_negatives ${c.hard_negatives} needs with.negative_words: 'shapes', or word groups such as [[red, green, blue], [circle, square], [[top, upper], [bottom, lower]]]`);
  let negatives: WordSwapNegatives;
  try {
    negatives = new WordSwapNegatives(c.negative_words === 'shapes' ? SHAPES_WORD_GROUPS : c.negative_words);
  } catch (e) {
    if (e instanceof NegativesError) throw new ClipTrainError(`${NAME}: with.negative_words: ${e.message}`);
    throw e;
  }
  const probe = () => 0;
  const covered = captions.filter((cap) => negatives.negative(cap, probe) !== null).length;
  if (covered === 0) throw new ClipTrainError(`${NAME}: no training caption contains a word of with.negative_words, so there is nothing to swap (first caption: "${captions[0] ?? ''}")`);
  return { negatives, covered };
}

export default definePlugin({
  name: NAME,
  version: '1',
  description: 'Train (or fine-tune) a CLIP with symmetric InfoNCE on captioned images; held-out retrieval eval; writes an HF CLIP folder for re-ranking',
  config: ClipTrainConfig,
  async run(ctx) {
    const c = ctx.config;
    const info = await initCompute();
    ctx.meta({ backend: info });
    const seed = c.seed ?? ctx.seed;
    const hint = 'a captioned image source, or add needs: [data]';
    const trainSpec = resolveInput(ctx, NAME, 'train', c.train, 'train', hint);
    const heldoutSpec = resolveInput(ctx, NAME, 'heldout', c.heldout, 'heldout', hint);
    if (c.init && !existsSync(join(c.init, 'config.json'))) throw new ClipTrainError(`${NAME}: with.init ${c.init} is not a CLIP folder (no config.json)`);
    const initTokenizer = c.init && existsSync(join(c.init, 'tokenizer.json')) ? join(c.init, 'tokenizer.json') : '';
    const tokenizerPath = c.tokenizer || initTokenizer || resolveInput(ctx, NAME, 'tokenizer', '', 'tokenizer', "a tokenizer.json, a CLIP folder as with.init, or add a tokenizer-train stage to needs:");
    const resume = await findResume(ctx, NAME);
    const resumed = resume ? readClipConfig(resume.dir) : null;
    const loaded = await loadTokenizer(tokenizerPath);
    // a run begun before the tokenizer was moved (its config pools at id 2) resumes on the unmoved one
    const tok = c.init || resumed?.text_config.eos_token_id === LEGACY_EOS_ID ? loaded : clipTokenizer(loaded);
    const eos = tok.eosId;
    if (eos === null) throw new ClipTrainError(`${NAME}: tokenizer ${tokenizerPath} has no end-of-text token (</s> or <|endoftext|>), which CLIP pools at`);
    if (tok !== loaded) ctx.logger.info(`${NAME}: the tokenizer's end-of-text token moves from id ${LEGACY_EOS_ID} to ${eos} for CLIP (HF CLIP reads eos_token_id ${LEGACY_EOS_ID} as a legacy config and pools elsewhere); the CLIP folder carries the moved tokenizer`);

    const m = c.model;
    const fresh = (): ClipConfig =>
      resolveClipConfig({
        projection_dim: m.projection_dim,
        text_config: {
          vocab_size: tok.vocabSize,
          hidden_size: m.text_width,
          intermediate_size: m.mlp_ratio * m.text_width,
          num_hidden_layers: m.text_layers,
          num_attention_heads: m.text_heads,
          max_position_embeddings: m.max_text_length,
          hidden_act: m.activation,
          pad_token_id: tok.padId ?? eos,
          bos_token_id: tok.bosId ?? eos,
          eos_token_id: eos,
        },
        vision_config: {
          hidden_size: m.vision_width,
          intermediate_size: m.mlp_ratio * m.vision_width,
          num_hidden_layers: m.vision_layers,
          num_attention_heads: m.vision_heads,
          image_size: c.resolution,
          patch_size: m.patch_size,
          hidden_act: m.activation,
        },
      });
    let model: Clip;
    if (resumed) model = Clip.create(resumed, seed); // the loop restores its weights
    else if (c.init) model = await loadClip(c.init);
    else model = Clip.create(fresh(), seed);
    const cfg = model.config;
    if (cfg.text_config.vocab_size < tok.vocabSize) throw new ClipTrainError(`${NAME}: tokenizer ${tokenizerPath} has ${tok.vocabSize} tokens, the model's embedding ${cfg.text_config.vocab_size}`);
    const side = cfg.vision_config.image_size;
    const L = cfg.text_config.max_position_embeddings;

    const warn = (msg: string): void => ctx.logger.warn(msg);
    const train = await loadImageSet(trainSpec, { resolution: side, limit: c.max_train_items, signal: ctx.signal, warn });
    const heldout = await loadImageSet(heldoutSpec, { resolution: side, limit: c.eval_count, signal: ctx.signal, warn });
    if (train.count < c.batch_size) throw new ClipTrainError(`${NAME}: ${trainSpec} has ${train.count} usable images, fewer than batch_size ${c.batch_size}`);
    if (heldout.count < 2) throw new ClipTrainError(`${NAME}: ${heldoutSpec} has ${heldout.count} usable images; retrieval needs at least 2`);

    let recon: ImageSet | undefined;
    if (c.vqgan) {
      const t0 = Date.now();
      recon = await reconstructSet(train, c.vqgan);
      ctx.logger.info(`${NAME}: ${train.count} training images reconstructed by ${c.vqgan} in ${((Date.now() - t0) / 1000).toFixed(1)} s; ${Math.round(100 * c.reconstruction_prob)}% of rows are shown reconstructed`);
    }
    const domainRng = new Rng(deriveSeed(seed, 'domain'));
    const swaps = hardNegatives(c, train.captions);
    if (swaps) ctx.logger.info(`${NAME}: ${c.hard_negatives} hard negative caption(s) per pair; ${swaps.covered} of ${train.count} training captions have a word to swap`);
    const negativesRng = new Rng(deriveSeed(seed, 'negatives'));

    const lrAt = scheduleFrom(c, c.steps);
    const optimizer = optimizerFrom(c, lrAt, model.params);
    const order = new ShuffledOrder(train.count, deriveSeed(seed, 'data'));
    const state = new TrainState({
      models: { model: { params: model.params, config: clipConfigToHf(cfg) } },
      optimizers: { model: { optimizer, params: model.params } },
      rngs: swaps ? { domain: domainRng, negatives: negativesRng } : { domain: domainRng },
      data: order,
    });
    const judge = c.judge === 'shapes' ? await createShapesJudge(side) : undefined;
    const scorer: ClipScorer = { clip: model, tokenizer: tok, dir: '' };
    ctx.logger.info(
      `${NAME}: ${train.count} train / ${heldout.count} held-out pairs at ${side} px, text ${L} tokens of ${tok.vocabSize}, ${model.params.count()} parameters${c.init ? ` (from ${c.init})` : ''}, compute ${describeCompute(info)}`,
    );
    const micro = c.batch_size / c.grad_accumulation;

    return runTraining(
      ctx,
      {
        name: NAME,
        state,
        steps: c.steps,
        cadence: c,
        primary: { name: judge ? 'eval/retrieval/t2i_top1_attrs' : 'eval/retrieval/t2i_top1', goal: 'maximize' },
        metrics: { 'train/loss': 'minimize', 'eval/loss': 'minimize', 'eval/retrieval/t2i_top1': 'maximize', 'eval/retrieval/i2t_top1': 'maximize', 'eval/shape_swap_acc': 'maximize' },
        step(log) {
          const idx = order.next(c.batch_size);
          let norms: Record<string, number> = {};
          const r = optimizerUpdate(
            model.params,
            optimizer,
            (i) => {
              const part = idx.slice(i * micro, (i + 1) * micro);
              const raw = recon ? mixedBatch(train, recon, part, domainRng, c.reconstruction_prob) : imageBatch(train, part);
              const pixels = toUnit(raw);
              const captions = part.map((k) => train.captions[k] as string);
              const negatives = swaps ? captions.flatMap((cap) => Array.from({ length: c.hard_negatives }, () => swaps.negatives.negative(cap, () => negativesRng.uniform())).filter((n) => n !== null)) : [];
              const text = clipTextBatch(tok, [...captions, ...negatives], L);
              const loss = model.loss(pixels, text.ids, text.mask);
              tf.dispose([raw, pixels, text.ids, text.mask]);
              return loss;
            },
            { microBatches: c.grad_accumulation, clip: c.grad_clip, ...(log && c.log_norms ? { onGrads: (g) => (norms = groupNorms('grad_norm', normsByName(g))) } : {}) },
          );
          state.samples += idx.length;
          if (!log) return undefined;
          const scale = model.logitScale();
          const temperature = scale.dataSync()[0] as number;
          scale.dispose();
          return { 'train/loss': r.loss, 'train/grad_norm': r.gradNorm, 'train/lr': lrAt(state.step), 'train/logit_scale': temperature, 'train/epoch': order.currentEpoch, ...norms };
        },
        evaluate() {
          const n = heldout.count;
          const d = cfg.projection_dim;
          const images: Float32Array[] = [];
          const per = side * side * 3;
          for (let i = 0; i < n; i++) images.push(Float32Array.from(heldout.pixels.subarray(i * per, (i + 1) * per), (v) => (v + 1) / 2));
          const imageEmb = embedImages(scorer, images, side);
          const textEmb = embedTexts(scorer, heldout.captions);
          const { t2i, i2t } = retrievalTop1(textEmb, imageEmb, n, d);
          // InfoNCE over held-out batches of batch_size, comparable with train/loss
          let loss = 0;
          let batches = 0;
          for (let i = 0; i + 2 <= n; i += c.batch_size) {
            const part = Array.from({ length: Math.min(c.batch_size, n - i) }, (_, k) => i + k);
            if (part.length < 2) break;
            const raw = imageBatch(heldout, part);
            const pixels = toUnit(raw);
            const text = clipTextBatch(tok, part.map((k) => heldout.captions[k] as string), L);
            const l = model.loss(pixels, text.ids, text.mask);
            loss += l.dataSync()[0] as number;
            batches++;
            tf.dispose([raw, pixels, text.ids, text.mask, l]);
          }
          const out: Record<string, number> = {
            'eval/loss': loss / Math.max(1, batches),
            'eval/retrieval/t2i_top1': t2i.filter((best, t) => best === t).length / n,
            'eval/retrieval/i2t_top1': i2t.filter((best, i) => best === i).length / n,
            'eval/retrieval/chance': 1 / n,
          };
          if (judge) {
            // the retrieved image, read by the pixel judge, against what each caption asks
            const score = scoreShapes(t2i.map((best) => judge.judge(toBytes(heldout, best))), heldout.captions.map(parseShapesCaption));
            if (score.all_correct !== null) out['eval/retrieval/t2i_top1_attrs'] = score.all_correct;
            for (const [k, v] of Object.entries(score.attr_acc)) if (v !== null) out[`eval/retrieval/t2i_attr_acc/${k}`] = v;
            const swap = shapeSwapAccuracy(scorer, heldout.captions, imageEmb, d);
            if (swap !== null) out['eval/shape_swap_acc'] = swap;
          }
          return out;
        },
        skips: () => [train.skips, heldout.skips],
        summary: () => ({ backend: info.backend, image_size: side, text_tokens: L, heldout_pairs: heldout.count }),
        async export() {
          const dir = join(ctx.outDir, 'clip');
          await saveClip(model, dir);
          saveTokenizer(tok, dir);
          // CLIPImageProcessor's settings, so transformers preprocesses as we do
          const pre = { image_processor_type: 'CLIPImageProcessor', do_resize: true, size: { shortest_edge: side }, resample: 3, do_center_crop: true, crop_size: { height: side, width: side }, do_rescale: true, rescale_factor: 1 / 255, do_normalize: true, image_mean: [...CLIP_MEAN], image_std: [...CLIP_STD] };
          await writeFile(join(dir, 'preprocessor_config.json'), `${JSON.stringify(pre, null, 2)}\n`);
          return { clip: dir };
        },
      },
      resume,
    );
  },
});
