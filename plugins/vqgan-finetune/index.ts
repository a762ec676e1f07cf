/**
 * vqgan-finetune: trains a VQGAN from scratch or from a checkpoint folder on an image dataset (the
 * shapes-data tars by default), taming-style: L1 (+ LPIPS from a user-given weights file when
 * perceptual_weight > 0; off by default) + codebook/commitment, PatchGAN hinge loss with the adaptive
 * weight from `disc_start`, Adam(0.5, 0.9). Logs losses, PSNR and codebook perplexity,
 * reconstruction grids, held-out evaluation; checkpoints everything a step needs and resumes exactly.
 *
 * A step, in order: batch → (λ) → generator grads → Adam → (discriminator step); then the shared loop
 * (src/ml/train/) logs, restarts dead codes (afterStep), renders media, evaluates and checkpoints.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { z } from 'zod';
import { definePlugin } from '../../src/core/plugins/types.js';
import { modelPath } from '../../src/core/refs.js';
import { describeCompute, initCompute, tf } from '../../src/ml/backend.js';
import { stopGradient } from '../../src/ml/kernels/ops.js';
import { loadLpips, lpipsLoss, type Lpips } from '../../src/ml/losses/lpips.js';
import {
  adaptiveWeight,
  buildDiscriminator,
  CodebookUsage,
  codebookStats,
  discriminator,
  generatorLoss,
  hingeDLoss,
  psnr,
  reconstructionLoss,
  restartDeadCodes,
  type DiscriminatorConfig,
} from '../../src/ml/losses/vqgan-loss.js';
import { loadVqgan, readVqganConfig, saveVqgan, Vqgan } from '../../src/ml/models/vqgan.js';
import { AdamW, disposeGrads, valueAndGrads } from '../../src/ml/optim/index.js';
import { Rng } from '../../src/ml/rng.js';
import { cadenceFields, deriveSeed, findResume, optimizerFields, runTraining, scheduleFields, scheduleFrom, ShuffledOrder, TrainState, trainerConfig } from '../../src/ml/train/index.js';
import { imageBatch, loadImageSet, resolveInput, type ImageSet } from '../../src/ml/train/data.js';

const posInt = z.number().int().min(1);

export const VqganModelFields = z
  .object({
    ch: posInt.default(32).describe('base channels'),
    ch_mult: z.array(posInt).min(1).default([1, 2, 2]).describe('channel multiplier per level; f = 2^(levels-1)'),
    num_res_blocks: z.number().int().min(0).default(1).describe('ResnetBlocks per level'),
    attn_resolutions: z.array(posInt).default([]).describe('feature-map sides with self-attention'),
    z_channels: posInt.default(32).describe('encoder output channels'),
    n_embed: posInt.default(256).describe('codebook size'),
    embed_dim: posInt.default(32).describe('code vector width'),
    dropout: z.number().min(0).max(0.9).default(0).describe('ResnetBlock dropout'),
    num_groups: posInt.default(8).describe('GroupNorm groups (taming uses 32)'),
    codebook_l2: z.boolean().default(false).describe('choose codes by cosine similarity of L2-normalised latents and codes (ViT-VQGAN); taming: false'),
  })
  .strict();

const { beta1, beta2 } = optimizerFields({ beta1: 0.5, beta2: 0.9 });

export const VqganFinetuneConfig = trainerConfig({
    train: z.string().default('').describe("training images (tar pattern, folder, parquet…); '' = the `data` stage's train artifact"),
    heldout: z.string().default('').describe("held-out images; '' = the `data` stage's heldout artifact"),
    resolution: posInt.default(32).describe('image side in pixels'),
    max_train_items: z.number().int().min(0).default(0).describe('use at most this many training images (0 = all)'),
    init: modelPath('checkpoint folder (config.json + model.safetensors) to fine-tune; empty = from scratch'),
    model: VqganModelFields.default(() => VqganModelFields.parse({})).describe('architecture when training from scratch (ignored with init)'),
    seed: z.number().int().min(0).nullable().default(null).describe('init/shuffle seed; null = experiment seed'),
    steps: posInt.default(2000).describe('training steps'),
    batch_size: posInt.default(16).describe('images per step'),
    ...scheduleFields({ lr: 2e-4 }),
    beta1: beta1.describe('Adam beta1 (taming 0.5)'),
    beta2: beta2.describe('Adam beta2 (taming 0.9)'),
    rec_loss: z.enum(['l1', 'l2', 'l1+l2']).default('l1').describe('pixel reconstruction loss'),
    perceptual_weight: z.number().min(0).default(0).describe('weight of the LPIPS perceptual term added to the reconstruction loss (taming 1.0); 0 = off (the default); > 0 needs perceptual_weights'),
    perceptual_weights: z.string().default('').describe('safetensors file with the LPIPS VGG16 weights (taming vgg.pth + torchvision vgg16, converted by you; never downloaded)'),
    codebook_weight: z.number().min(0).default(1).describe('weight of codebook + commitment loss'),
    commitment_beta: z.number().min(0).default(0.25).describe('β of the commitment term'),
    disc_start: z.number().int().min(0).default(1000).describe('step from which the GAN loss and discriminator training are on'),
    disc_weight: z.number().min(0).default(0.8).describe('GAN weight multiplying the adaptive weight'),
    disc_layers: posInt.default(2).describe('PatchGAN stride-2 layers'),
    disc_ndf: posInt.default(32).describe('PatchGAN first-layer channels'),
    dead_code_restart: z.boolean().default(true).describe('re-initialise unused codes from batch latents every restart_every steps'),
    restart_every: posInt.default(100).describe('window (steps) for dead-code detection'),
    restart_until: z.number().int().min(0).default(0).describe('no restarts from this step on, so the codebook settles (0 = steps·3/4)'),
    eval_count: posInt.default(128).describe('held-out images evaluated'),
    ...cadenceFields({ log_every: 10, eval_every: 250, media_every: 250, checkpoint_every: 500 }),
});

export type VqganFinetuneConfig = z.output<typeof VqganFinetuneConfig>;

export class VqganFinetuneError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'VqganFinetuneError';
  }
}

// ---------------------------------------------------------------------------------------------------
// media

/** Rows of (original | reconstruction) pairs as a PNG, 2 px grey gutters. */
export async function reconstructionGrid(x: tf.Tensor4D, xrec: tf.Tensor4D): Promise<Uint8Array> {
  const [B, H, W] = x.shape;
  const gap = 2;
  const width = 2 * W + 3 * gap;
  const height = B * H + (B + 1) * gap;
  const out = Buffer.alloc(width * height * 3, 128);
  const a = x.dataSync();
  const b = xrec.dataSync();
  const put = (src: ArrayLike<number>, i: number, x0: number, y0: number): void => {
    for (let yy = 0; yy < H; yy++) {
      for (let xx = 0; xx < W; xx++) {
        for (let c = 0; c < 3; c++) {
          const v = src[((i * H + yy) * W + xx) * 3 + c] as number;
          out[((y0 + yy) * width + x0 + xx) * 3 + c] = Math.max(0, Math.min(255, Math.round((v + 1) * 127.5)));
        }
      }
    }
  };
  for (let i = 0; i < B; i++) {
    const y0 = gap + i * (H + gap);
    put(a, i, gap, y0);
    put(b, i, 2 * gap + W, y0);
  }
  return new Uint8Array(await sharp(out, { raw: { width, height, channels: 3 } }).png().toBuffer());
}

// ---------------------------------------------------------------------------------------------------
// evaluation

interface EvalResult {
  psnr: number;
  rec_loss: number;
  perplexity: number;
  dead: number;
}

function evaluate(model: Vqgan, set: ImageSet, count: number, batch: number): EvalResult {
  const n = Math.min(count, set.count);
  const usage = new CodebookUsage(model.config.n_embed);
  let psnrSum = 0;
  let recSum = 0;
  for (let s = 0; s < n; s += batch) {
    const idx = Array.from({ length: Math.min(batch, n - s) }, (_, i) => s + i);
    const x = imageBatch(set, idx);
    const codes = model.encode(x);
    const xrec = model.decode(codes);
    usage.add(codes.dataSync());
    psnrSum += psnr(x, xrec) * idx.length;
    recSum += tf.tidy(() => reconstructionLoss(x, xrec, 'l1').dataSync()[0] as number) * idx.length;
    tf.dispose([x, codes, xrec]);
  }
  const st = usage.stats();
  return { psnr: psnrSum / n, rec_loss: recSum / n, perplexity: st.perplexity, dead: st.dead };
}

// ---------------------------------------------------------------------------------------------------
// the plugin

const NAME = 'vqgan-finetune';
const DATA_HINT = 'a tar pattern or folder, or add needs: [data]';

export default definePlugin({
  name: NAME,
  // 2: the shared training loop (checkpoint layout train_state.json / optimizer.<name>.safetensors, derived seeds)
  version: '2',
  description: 'Train or fine-tune a VQGAN (L1 + codebook + PatchGAN with adaptive weight), PSNR/perplexity, recon grids, exact resume',
  config: VqganFinetuneConfig,
  async run(ctx) {
    const c = ctx.config;
    const info = await initCompute();
    ctx.meta({ backend: info });
    const seed = c.seed ?? ctx.seed;
    const trainSpec = resolveInput(ctx, NAME, 'train', c.train, 'train', DATA_HINT);
    const heldoutSpec = resolveInput(ctx, NAME, 'heldout', c.heldout, 'heldout', DATA_HINT);

    // ---- perceptual loss (LPIPS, frozen): on only when asked for and given a weights file
    if (c.perceptual_weight > 0 && (!c.perceptual_weights || !existsSync(c.perceptual_weights))) {
      throw new VqganFinetuneError(
        `vqgan-finetune: perceptual_weight is ${c.perceptual_weight} but with.perceptual_weights ${c.perceptual_weights ? `'${c.perceptual_weights}' does not exist` : 'is empty'}; ` +
          "set it to a safetensors file converted from taming-transformers' vgg.pth + torchvision vgg16 (LPIPS weights are never downloaded), or set perceptual_weight: 0",
      );
    }
    const perceptual: Lpips | undefined = c.perceptual_weight > 0 ? await loadLpips(c.perceptual_weights) : undefined;
    if (perceptual) ctx.logger.info(`vqgan-finetune: LPIPS perceptual loss × ${c.perceptual_weight} from ${c.perceptual_weights} (slice widths ${perceptual.config.channels.join('/')})`);
    const perceptualTerm = perceptual ? (a: tf.Tensor4D, b: tf.Tensor4D): tf.Scalar => tf.mul(lpipsLoss(perceptual, a, b), c.perceptual_weight) : undefined;

    // ---- model, discriminator, optimizers (fresh; the loop overwrites them from a checkpoint when resuming)
    const resume = await findResume(ctx, NAME);
    let model: Vqgan;
    if (resume) model = Vqgan.create(readVqganConfig(resume.dir), seed);
    else if (c.init) model = await loadVqgan(c.init, { dropout: c.model.dropout });
    else model = Vqgan.create({ ...c.model, resolution: c.resolution }, seed);
    const discConfig: DiscriminatorConfig = { n_layers: c.disc_layers, ndf: c.disc_ndf, in_channels: model.config.out_ch };
    const disc = buildDiscriminator(discConfig, deriveSeed(seed, 'discriminator'));
    // Both optimizers follow the global step (the discriminator's own count starts at disc_start).
    const lrAt = scheduleFrom(c, c.steps);
    const learningRate = (): number => lrAt(state.step);
    const optG = new AdamW({ learningRate, beta1: c.beta1, beta2: c.beta2, weightDecay: 0 });
    const optD = new AdamW({ learningRate, beta1: c.beta1, beta2: c.beta2, weightDecay: 0 });
    const rng = new Rng(deriveSeed(seed, 'train'));
    const usage = new CodebookUsage(model.config.n_embed);
    const R = model.config.resolution;
    if (R !== c.resolution) ctx.logger.warn(`vqgan-finetune: the model was built for ${R} px; images are read at ${R} px (with.resolution ${c.resolution} ignored)`);

    const warn = (m: string): void => ctx.logger.warn(m);
    let train: ImageSet;
    let heldout: ImageSet;
    try {
      train = await loadImageSet(trainSpec, { resolution: R, limit: c.max_train_items, signal: ctx.signal, warn });
      heldout = await loadImageSet(heldoutSpec, { resolution: R, limit: c.eval_count, signal: ctx.signal, warn });
      if (train.count < c.batch_size) throw new VqganFinetuneError(`vqgan-finetune: ${trainSpec} has ${train.count} usable images, fewer than batch_size ${c.batch_size}`);
      if (heldout.count === 0) throw new VqganFinetuneError(`vqgan-finetune: ${heldoutSpec} has no usable images for evaluation`);
    } catch (err) {
      for (const d of [model.params, disc, optG, optD, perceptual]) d?.dispose();
      throw err;
    }
    const order = new ShuffledOrder(train.count, deriveSeed(seed, 'data'));
    const state = new TrainState({
      models: { model: { params: model.params, config: { model_type: 'vqgan', ...model.config } }, discriminator: { params: disc } },
      optimizers: { generator: { optimizer: optG, params: model.params }, discriminator: { optimizer: optD, params: disc } },
      rngs: { train: rng },
      data: order,
      extra: {
        save: () => ({ usage: Array.from(usage.counts) }),
        restore: (v) => ((v as { usage: number[] }).usage ?? []).forEach((n, k) => (usage.counts[k] = n)),
      },
    });
    ctx.logger.info(`vqgan-finetune: ${train.count} train / ${heldout.count} held-out images at ${R} px, ${model.params.count()} parameters, codebook ${model.config.n_embed}×${model.config.embed_dim}, compute ${describeCompute(info)}`);

    const restartUntil = c.restart_until > 0 ? c.restart_until : Math.floor((c.steps * 3) / 4);
    const mediaIdx = Array.from({ length: Math.min(8, heldout.count) }, (_, i) => i);
    let z: tf.Tensor2D | undefined; // this step's latents, kept for the dead-code restart after it

    return runTraining(
      ctx,
      {
        name: NAME,
        state,
        steps: c.steps,
        cadence: c,
        primary: { name: 'eval/psnr', goal: 'maximize' },
        metrics: { 'eval/perplexity': 'maximize', 'train/rec_loss': 'minimize' },
        step(log) {
          const x = imageBatch(train, order.next(c.batch_size));
          const ganOn = state.step >= c.disc_start;

          // λ: adaptive GAN weight from the current parameters (a gradient-free forward, then grads at conv_out)
          let lambda = 0;
          if (ganOn) {
            const f = tf.tidy(() => {
              const r = model.forward(x);
              return { xrec: r.xrec, hLast: r.hLast };
            });
            lambda = adaptiveWeight(x, f.xrec, f.hLast, model, disc, discConfig, { recLoss: c.rec_loss, discWeight: c.disc_weight, ...(perceptualTerm ? { perceptual: perceptualTerm } : {}) });
            tf.dispose([f.xrec, f.hLast]);
          }

          // generator step
          let xrec: tf.Tensor4D | undefined;
          let indices: tf.Tensor1D | undefined;
          let parts: tf.Tensor[] = []; // rec, q, (g), (p)
          const { loss, grads } = valueAndGrads(model.params, () => {
            const r = model.forward(x, { training: true, rng, beta: c.commitment_beta });
            xrec = tf.keep(r.xrec);
            indices = tf.keep(r.indices);
            z = tf.keep(r.z);
            const rec = reconstructionLoss(x, r.xrec, c.rec_loss);
            let total = tf.add(rec, tf.mul(r.qloss, c.codebook_weight));
            const kept: tf.Tensor[] = [tf.keep(rec), tf.keep(r.qloss)];
            if (ganOn) {
              const g = generatorLoss(discriminator(disc, discConfig, r.xrec));
              kept.push(tf.keep(g));
              total = tf.add(total, tf.mul(g, lambda));
            }
            if (perceptual) {
              // taming: rec = |x − x̂| + perceptual_weight · LPIPS(x, x̂)
              const p = lpipsLoss(perceptual, x, r.xrec);
              kept.push(tf.keep(p));
              total = tf.add(total, tf.mul(p, c.perceptual_weight));
            }
            parts = kept;
            return total as tf.Scalar;
          });
          optG.apply(model.params, grads);
          disposeGrads(grads);
          const [rec = 0, q = 0, ...rest] = parts.map((t) => t.dataSync()[0] as number);
          const g = ganOn ? (rest.shift() ?? 0) : 0;
          const p = perceptual ? (rest.shift() ?? 0) : 0;
          tf.dispose(parts);

          // discriminator step (on the reconstruction the generator just produced)
          let dLoss = 0;
          if (ganOn) {
            const fake = stopGradient(xrec!);
            const d = valueAndGrads(disc, () => hingeDLoss(discriminator(disc, discConfig, x), discriminator(disc, discConfig, fake)));
            optD.apply(disc, d.grads);
            disposeGrads(d.grads);
            dLoss = d.loss.dataSync()[0] as number;
            tf.dispose([d.loss, fake]);
          }

          const codes = indices!.dataSync();
          usage.add(codes);
          state.samples += c.batch_size;
          let metrics: Record<string, number> | undefined;
          if (log) {
            const batchStats = codebookStats(countCodes(codes, model.config.n_embed));
            const window = usage.stats();
            metrics = {
              'train/loss': loss.dataSync()[0] as number,
              'train/rec_loss': rec,
              'train/q_loss': q,
              'train/g_loss': g,
              ...(perceptual ? { 'train/p_loss': p } : {}),
              'train/d_loss': dLoss,
              'train/disc_weight': lambda,
              'train/lr': lrAt(state.step),
              'train/psnr': psnr(x, xrec!),
              'train/perplexity': batchStats.perplexity,
              'train/window_perplexity': window.perplexity,
              'train/dead_codes': window.dead,
              'train/epoch': order.currentEpoch,
            };
          }
          tf.dispose([x, xrec!, indices!, loss]);
          return metrics;
        },
        afterStep(step) {
          // dead-code restart from this batch's latents, over a window of restart_every steps
          if (c.dead_code_restart && step % c.restart_every === 0) {
            if (step < restartUntil) {
              const n = restartDeadCodes(model, usage.deadCodes(), z!, rng);
              if (n > 0) ctx.log({ 'train/restarted_codes': n }, step);
            }
            usage.reset();
          }
          z?.dispose();
          z = undefined;
        },
        async media(step) {
          const xm = imageBatch(heldout, mediaIdx);
          const rm = model.reconstruct(xm);
          await ctx.media('reconstructions', await reconstructionGrid(xm, rm), step, 'held-out: original | reconstruction');
          tf.dispose([xm, rm]);
        },
        evaluate() {
          const e = evaluate(model, heldout, c.eval_count, c.batch_size);
          return { 'eval/psnr': e.psnr, 'eval/rec_loss': e.rec_loss, 'eval/perplexity': e.perplexity, 'eval/dead_codes': e.dead };
        },
        skips: () => [train.skips, heldout.skips],
        summary: (e) => ({
          backend: info.backend,
          codes_per_image: (R / 2 ** (model.config.ch_mult.length - 1)) ** 2,
          ...(e ? { eval_psnr: e['eval/psnr'], eval_perplexity: e['eval/perplexity'], eval_dead_codes: e['eval/dead_codes'] } : {}),
        }),
        async export() {
          const outModel = join(ctx.outDir, 'vqgan');
          await saveVqgan(model, outModel);
          return { model: outModel };
        },
        dispose() {
          z?.dispose();
          perceptual?.dispose();
        },
      },
      resume,
    );
  },
});

function countCodes(codes: ArrayLike<number>, n: number): Float64Array {
  const counts = new Float64Array(n);
  for (let i = 0; i < codes.length; i++) counts[codes[i] as number]! += 1;
  return counts;
}
