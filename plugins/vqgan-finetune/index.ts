/**
 * vqgan-finetune: trains a VQGAN from scratch or from a checkpoint folder on an image dataset (the
 * shapes-data tars by default), taming-style: L1 (+ LPIPS from a user-given weights file when
 * perceptual_weight > 0; off by default) + codebook/commitment, PatchGAN hinge loss with the adaptive
 * weight from `disc_start`, Adam(0.5, 0.9). Logs losses, PSNR and codebook perplexity,
 * reconstruction grids, held-out evaluation; checkpoints everything a step needs and resumes exactly.
 *
 * The loop, in order: batch → (λ) → generator grads → Adam → (discriminator step) → log → maybe media
 * → maybe eval → maybe dead-code restart → maybe checkpoint.
 */
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { z } from 'zod';
import { definePlugin, type StageContext } from '../../src/core/plugins/types.js';
import { DEFAULT_CAPTION_OPTIONS } from '../../src/data/captions.js';
import { prepareItems } from '../../src/data/prepare.js';
import { DEFAULT_PREPROCESS } from '../../src/data/preprocess.js';
import { openSource } from '../../src/data/sources/index.js';
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
import { loadVqgan, readVqganConfig, saveVqgan, Vqgan, VQGAN_WEIGHTS_FILE } from '../../src/ml/models/vqgan.js';
import { AdamW, disposeGrads, loadOptimizerState, saveOptimizerState, valueAndGrads } from '../../src/ml/optim/index.js';
import { loadParamsFile, saveParamsFile } from '../../src/ml/params.js';
import { Rng, type RngState } from '../../src/ml/rng.js';
import { makeSchedule } from '../../src/ml/schedule.js';

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

export const VqganFinetuneConfig = z
  .object({
    train: z.string().default('').describe("training images (tar pattern, folder, parquet…); '' = the `data` stage's train artifact"),
    heldout: z.string().default('').describe("held-out images; '' = the `data` stage's heldout artifact"),
    resolution: posInt.default(32).describe('image side in pixels'),
    max_train_items: z.number().int().min(0).default(0).describe('use at most this many training images (0 = all)'),
    init: z.string().default('').describe('checkpoint folder (config.json + model.safetensors) to fine-tune; empty = from scratch'),
    model: VqganModelFields.default(() => VqganModelFields.parse({})).describe('architecture when training from scratch (ignored with init)'),
    seed: z.number().int().min(0).nullable().default(null).describe('init/shuffle seed; null = experiment seed'),
    steps: posInt.default(2000).describe('training steps'),
    batch_size: posInt.default(16).describe('images per step'),
    lr: z.number().positive().default(2e-4).describe('Adam learning rate (generator and discriminator); the peak when lr_decay is set'),
    lr_warmup_steps: z.number().int().min(0).default(0).describe('linear warmup steps to lr'),
    lr_decay: z.enum(['constant', 'linear', 'cosine']).default('constant').describe('decay from lr to lr_end over the steps after warmup'),
    lr_end: z.number().min(0).default(0).describe('learning rate at the last step (linear/cosine decay)'),
    beta1: z.number().min(0).max(0.999).default(0.5).describe('Adam beta1 (taming 0.5)'),
    beta2: z.number().min(0).max(0.9999).default(0.9).describe('Adam beta2 (taming 0.9)'),
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
    log_every: posInt.default(10).describe('steps between train/* logs'),
    media_every: posInt.default(250).describe('steps between reconstruction grids'),
    eval_every: posInt.default(250).describe('steps between held-out evaluations'),
    eval_count: posInt.default(128).describe('held-out images evaluated'),
    checkpoint_every: posInt.default(500).describe('steps between checkpoints'),
  })
  .strict()
  .superRefine((c, ctx) => {
    // checked with the config, so that `validate` reports it before anything runs
    if (c.lr_decay !== 'constant' && c.lr_warmup_steps >= c.steps) {
      ctx.addIssue({
        code: 'custom',
        path: ['lr_warmup_steps'],
        message: `must be less than steps (${c.steps}) for lr_decay ${c.lr_decay}, is ${c.lr_warmup_steps}; lower lr_warmup_steps or set lr_decay: constant`,
      });
    }
  });

export type VqganFinetuneConfig = z.output<typeof VqganFinetuneConfig>;

export class VqganFinetuneError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'VqganFinetuneError';
  }
}

// ---------------------------------------------------------------------------------------------------
// data: decoded once into memory (32 px shapes: 4000 images ≈ 50 MB), shuffled per epoch from the seed

interface ImageSet {
  pixels: Float32Array; // (N, R, R, 3) in [-1, 1]
  count: number;
  side: number;
}

async function loadImages(spec: string, resolution: number, limit: number, signal: AbortSignal, warn: (m: string) => void): Promise<ImageSet> {
  const chunks: Float32Array[] = [];
  const items = prepareItems(openSource(spec), {
    captions: DEFAULT_CAPTION_OPTIONS,
    image: { ...DEFAULT_PREPROCESS, resolution, range: '-1_1', crop: 'centre' },
    seed: 0,
    epoch: 0,
    signal,
    onWarning: warn,
  });
  for await (const it of items) {
    chunks.push(it.pixels);
    if (limit > 0 && chunks.length >= limit) break;
  }
  const per = resolution * resolution * 3;
  const pixels = new Float32Array(chunks.length * per);
  chunks.forEach((c, i) => pixels.set(c, i * per));
  return { pixels, count: chunks.length, side: resolution };
}

/** Position in the stream of batches: epoch and offset into that epoch's permutation. */
export interface DataPosition {
  epoch: number;
  index: number;
}

function permutation(n: number, seed: number, epoch: number): number[] {
  return new Rng((seed * 1000003 + epoch * 7919) >>> 0).shuffle(Array.from({ length: n }, (_, i) => i));
}

/** Next batch indices, advancing `pos` (a batch never straddles epochs: the epoch's tail is dropped). */
function nextBatch(n: number, B: number, seed: number, pos: DataPosition, cache: { epoch: number; perm: number[] }): number[] {
  if (pos.index + B > n) {
    pos.epoch++;
    pos.index = 0;
  }
  if (cache.epoch !== pos.epoch) {
    cache.epoch = pos.epoch;
    cache.perm = permutation(n, seed, pos.epoch);
  }
  const out = cache.perm.slice(pos.index, pos.index + B);
  pos.index += B;
  return out;
}

function batchTensor(set: ImageSet, idx: number[]): tf.Tensor4D {
  const per = set.side * set.side * 3;
  const buf = new Float32Array(idx.length * per);
  idx.forEach((k, i) => buf.set(set.pixels.subarray(k * per, (k + 1) * per), i * per));
  return tf.tensor4d(buf, [idx.length, set.side, set.side, 3]);
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
// checkpoint state

interface TrainState {
  step: number;
  position: DataPosition;
  rng: RngState;
  usage: number[];
}

const STATE_FILE = 'state.json';
const DISC_FILE = 'discriminator.safetensors';
const OPT_G_FILE = 'optimizer_g.safetensors';
const OPT_D_FILE = 'optimizer_d.safetensors';

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
    const x = batchTensor(set, idx);
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

function resolveInput(ctx: StageContext<VqganFinetuneConfig>, value: string, artifact: 'train' | 'heldout'): string {
  if (value) return value;
  for (const out of Object.values(ctx.inputs)) {
    const a = out.artifacts[artifact];
    if (a) return a;
  }
  throw new VqganFinetuneError(`vqgan-finetune: 'with.${artifact}' is empty and no upstream stage (needs:) has a '${artifact}' artifact; set with.${artifact} to a tar pattern or folder, or add needs: [data]`);
}

export default definePlugin({
  name: 'vqgan-finetune',
  description: 'Train or fine-tune a VQGAN (L1 + codebook + PatchGAN with adaptive weight), PSNR/perplexity, recon grids, exact resume',
  config: VqganFinetuneConfig,
  async run(ctx) {
    const c = ctx.config;
    const info = await initCompute();
    ctx.meta({ backend: info });
    const seed = c.seed ?? ctx.seed;
    const trainSpec = resolveInput(ctx, c.train, 'train');
    const heldoutSpec = resolveInput(ctx, c.heldout, 'heldout');

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

    // ---- model, discriminator, optimizers (fresh, then overwritten by a checkpoint when resuming)
    const latest = await ctx.checkpoints.latest();
    let model: Vqgan;
    if (latest) model = Vqgan.create(readVqganConfig(latest.dir), seed);
    else if (c.init) model = await loadVqgan(c.init, { dropout: c.model.dropout });
    else model = Vqgan.create({ ...c.model, resolution: c.resolution }, seed);
    const discConfig: DiscriminatorConfig = { n_layers: c.disc_layers, ndf: c.disc_ndf, in_channels: model.config.out_ch };
    const disc = buildDiscriminator(discConfig, seed + 1);
    const state: TrainState = { step: 0, position: { epoch: 0, index: 0 }, rng: new Rng(seed + 2).state(), usage: [] };
    // Both optimizers follow the global step (the discriminator's own count starts at disc_start).
    const lrAt = makeSchedule({ lr: c.lr, warmupSteps: c.lr_warmup_steps, decay: c.lr_decay, totalSteps: c.steps, endLr: c.lr_end });
    const learningRate = (): number => lrAt(state.step);
    const optG = new AdamW({ learningRate, beta1: c.beta1, beta2: c.beta2, weightDecay: 0 });
    const optD = new AdamW({ learningRate, beta1: c.beta1, beta2: c.beta2, weightDecay: 0 });
    if (latest) {
      await loadParamsFile(join(latest.dir, VQGAN_WEIGHTS_FILE), model.params);
      await loadParamsFile(join(latest.dir, DISC_FILE), disc);
      await loadOptimizerState(join(latest.dir, OPT_G_FILE), optG, model.params);
      await loadOptimizerState(join(latest.dir, OPT_D_FILE), optD, disc);
      Object.assign(state, JSON.parse(await readFile(join(latest.dir, STATE_FILE), 'utf8')) as TrainState);
      ctx.logger.info(`vqgan-finetune: resumed at step ${state.step} from run ${latest.runId}`);
    }
    const rng = Rng.fromState(state.rng);
    const usage = new CodebookUsage(model.config.n_embed);
    state.usage.forEach((v, k) => (usage.counts[k] = v));
    const R = model.config.resolution;
    if (R !== c.resolution) ctx.logger.warn(`vqgan-finetune: the model was built for ${R} px; images are read at ${R} px (with.resolution ${c.resolution} ignored)`);

    const warn = (m: string): void => ctx.logger.warn(m);
    const train = await loadImages(trainSpec, R, c.max_train_items, ctx.signal, warn);
    const heldout = await loadImages(heldoutSpec, R, c.eval_count, ctx.signal, warn);
    if (train.count < c.batch_size) throw new VqganFinetuneError(`vqgan-finetune: ${trainSpec} has ${train.count} usable images, fewer than batch_size ${c.batch_size}`);
    if (heldout.count === 0) throw new VqganFinetuneError(`vqgan-finetune: ${heldoutSpec} has no usable images for evaluation`);
    ctx.logger.info(`vqgan-finetune: ${train.count} train / ${heldout.count} held-out images at ${R} px, ${model.params.count()} parameters, codebook ${model.config.n_embed}×${model.config.embed_dim}, compute ${describeCompute(info)}`);

    ctx.defineMetric('eval/psnr', { goal: 'maximize', primary: true });
    ctx.defineMetric('eval/perplexity', { goal: 'maximize' });
    ctx.defineMetric('train/rec_loss', { goal: 'minimize' });

    const restartUntil = c.restart_until > 0 ? c.restart_until : Math.floor((c.steps * 3) / 4);
    const permCache = { epoch: -1, perm: [] as number[] };
    const mediaIdx = Array.from({ length: Math.min(8, heldout.count) }, (_, i) => i);

    const saveCheckpoint = async (): Promise<void> => {
      const s: TrainState = { ...state, rng: rng.state(), usage: Array.from(usage.counts) };
      await ctx.checkpoints.save(
        state.step,
        async (dir) => {
          await saveVqgan(model, dir);
          saveParamsFile(join(dir, DISC_FILE), disc);
          saveOptimizerState(join(dir, OPT_G_FILE), optG);
          saveOptimizerState(join(dir, OPT_D_FILE), optD);
          await writeFile(join(dir, STATE_FILE), JSON.stringify(s));
        },
        { step: state.step },
      );
    };

    const runEval = async (): Promise<EvalResult> => {
      const e = evaluate(model, heldout, c.eval_count, c.batch_size);
      ctx.log({ 'eval/psnr': e.psnr, 'eval/rec_loss': e.rec_loss, 'eval/perplexity': e.perplexity, 'eval/dead_codes': e.dead }, state.step);
      return e;
    };

    let msTotal = 0;
    let msSteps = 0;
    let lastEval: EvalResult | undefined;
    const startStep = state.step;
    ctx.progress.start(c.steps, 'step', state.step);
    try {
      while (state.step < c.steps) {
        // A macrotask turn per step: SIGINT/SIGTERM handlers (which abort ctx.signal) run only when the
        // event loop gets one, and a step is otherwise all synchronous tensor work.
        await new Promise<void>((r) => setImmediate(r));
        if (ctx.signal.aborted) break;
        const t0 = performance.now();
        const x = batchTensor(train, nextBatch(train.count, c.batch_size, seed, state.position, permCache));
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
        let z: tf.Tensor2D | undefined;
        const parts = { rec: 0, q: 0, g: 0, p: 0 };
        let partT: tf.Tensor[] = [];
        let pT: tf.Tensor | undefined;
        const { loss, grads } = valueAndGrads(model.params, () => {
          const r = model.forward(x, { training: true, rng, beta: c.commitment_beta });
          xrec = tf.keep(r.xrec);
          indices = tf.keep(r.indices);
          z = tf.keep(r.z);
          const rec = reconstructionLoss(x, r.xrec, c.rec_loss);
          let total = tf.add(rec, tf.mul(r.qloss, c.codebook_weight));
          if (perceptual) {
            // taming: rec = |x − x̂| + perceptual_weight · LPIPS(x, x̂)
            const p = lpipsLoss(perceptual, x, r.xrec);
            pT = tf.keep(p);
            total = tf.add(total, tf.mul(p, c.perceptual_weight));
          }
          const kept: tf.Tensor[] = [tf.keep(rec), tf.keep(r.qloss)];
          if (ganOn) {
            const g = generatorLoss(discriminator(disc, discConfig, r.xrec));
            kept.push(tf.keep(g));
            total = tf.add(total, tf.mul(g, lambda));
          }
          partT = kept;
          return total as tf.Scalar;
        });
        optG.apply(model.params, grads);
        disposeGrads(grads);
        const vals = partT.map((t) => t.dataSync()[0] as number);
        parts.rec = vals[0] ?? 0;
        parts.q = vals[1] ?? 0;
        parts.g = vals[2] ?? 0;
        parts.p = pT ? (pT.dataSync()[0] as number) : 0;
        tf.dispose([...partT, ...(pT ? [pT] : [])]);

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
        state.step++;
        const ms = performance.now() - t0;
        msTotal += ms;
        msSteps++;

        if (state.step % c.log_every === 0 || state.step === c.steps) {
          const batchStats = codebookStats(countCodes(codes, model.config.n_embed));
          const window = usage.stats();
          ctx.log(
            {
              'train/loss': loss.dataSync()[0] as number,
              'train/rec_loss': parts.rec,
              'train/q_loss': parts.q,
              'train/g_loss': parts.g,
              ...(perceptual ? { 'train/p_loss': parts.p } : {}),
              'train/d_loss': dLoss,
              'train/disc_weight': lambda,
              'train/lr': lrAt(state.step - 1),
              'train/psnr': psnr(x, xrec!),
              'train/perplexity': batchStats.perplexity,
              'train/window_perplexity': window.perplexity,
              'train/dead_codes': window.dead,
              'train/ms_per_step': ms,
              'train/epoch': state.position.epoch,
            },
            state.step,
          );
        }

        // dead-code restart from this batch's latents, over a window of restart_every steps
        if (c.dead_code_restart && state.step % c.restart_every === 0) {
          if (state.step < restartUntil) {
            const n = restartDeadCodes(model, usage.deadCodes(), z!, rng);
            if (n > 0) ctx.log({ 'train/restarted_codes': n }, state.step);
          }
          usage.reset();
        }
        tf.dispose([x, xrec!, indices!, z!, loss]);

        if (state.step % c.media_every === 0 || state.step === c.steps) {
          const xm = batchTensor(heldout, mediaIdx);
          const rm = model.reconstruct(xm);
          await ctx.media('reconstructions', await reconstructionGrid(xm, rm), state.step, 'held-out: original | reconstruction');
          tf.dispose([xm, rm]);
        }
        if (state.step % c.eval_every === 0 || state.step === c.steps) lastEval = await runEval();
        if (state.step % c.checkpoint_every === 0 || state.step === c.steps) await saveCheckpoint();
        ctx.progress.tick(1);
      }
      if (ctx.signal.aborted && state.step > startStep && state.step % c.checkpoint_every !== 0) await saveCheckpoint();
    } finally {
      ctx.progress.end();
      perceptual?.dispose();
    }

    const summary: Record<string, unknown> = {
      steps: state.step,
      ms_per_step: msSteps ? msTotal / msSteps : null,
      backend: info.backend,
      parameters: model.params.count(),
      codes_per_image: (R / 2 ** (model.config.ch_mult.length - 1)) ** 2,
    };
    if (lastEval) Object.assign(summary, { eval_psnr: lastEval.psnr, eval_perplexity: lastEval.perplexity, eval_dead_codes: lastEval.dead });
    ctx.summary(summary);
    if (ctx.signal.aborted) {
      model.dispose();
      disc.dispose();
      optG.dispose();
      optD.dispose();
      return { summary };
    }
    const outModel = join(ctx.outDir, 'vqgan');
    await saveVqgan(model, outModel);
    model.dispose();
    disc.dispose();
    optG.dispose();
    optD.dispose();
    return { artifacts: { model: outModel }, summary };
  },
});

function countCodes(codes: ArrayLike<number>, n: number): Float64Array {
  const counts = new Float64Array(n);
  for (let i = 0; i < codes.length; i++) counts[codes[i] as number]! += 1;
  return counts;
}
