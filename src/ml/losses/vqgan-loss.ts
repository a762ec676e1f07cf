/**
 * VQGAN training losses, apart from the model (as taming's `vqperceptual.VQLPIPSWithDiscriminator`):
 * pixel reconstruction (L1, optionally + L2), codebook + commitment (from the quantizer), a PatchGAN
 * NLayerDiscriminator with hinge loss, and the adaptive GAN weight λ = ‖∇_W L_rec‖ / (‖∇_W L_G‖ + 1e-4)
 * at the decoder's last conv W, switched on from `disc_start`.
 * Codebook usage (perplexity, dead codes) and an optional dead-code restart live here too.
 *
 * The LPIPS perceptual term lives in `lpips.ts`. It is off by default: it needs VGG16 + LPIPS weights
 * that are never downloaded, so it is on only when the user provides a converted weights file; then the
 * reconstruction term is pixel loss + perceptual_weight · LPIPS (taming's rec_loss + p_weight · p_loss),
 * and the adaptive weight's ‖∇_W L_rec‖ includes it (`AdaptiveWeightOptions.perceptual`).
 */
import * as tf from '@tensorflow/tfjs-core';
import { conv2d } from '../nn.js';
import { addConv2d, Params } from '../params.js';
import { Rng } from '../rng.js';
import type { Vqgan } from '../models/vqgan.js';

// ---------------------------------------------------------------------------------------------------
// reconstruction

export type RecLoss = 'l1' | 'l2' | 'l1+l2';

/** Mean per-pixel reconstruction loss. x, xrec (B, H, W, C). */
export function reconstructionLoss(x: tf.Tensor, xrec: tf.Tensor, kind: RecLoss = 'l1'): tf.Scalar {
  const d = tf.sub(x, xrec);
  if (kind === 'l1') return tf.mean(tf.abs(d));
  if (kind === 'l2') return tf.mean(tf.square(d));
  return tf.add(tf.mean(tf.abs(d)), tf.mean(tf.square(d)));
}

/** PSNR in dB of images in [-1, 1] (peak-to-peak 2), per batch (mean over images of per-image PSNR). */
export function psnr(x: tf.Tensor4D, xrec: tf.Tensor4D): number {
  return tf.tidy(() => {
    const mse = tf.mean(tf.square(tf.sub(tf.clipByValue(x, -1, 1), tf.clipByValue(xrec, -1, 1))), [1, 2, 3]); // (B)
    const db = tf.mul(tf.log(tf.div(4, tf.maximum(mse, 1e-10))), 10 / Math.LN10); // 10·log10(peak² / mse)
    return tf.mean(db).dataSync()[0] as number;
  });
}

// ---------------------------------------------------------------------------------------------------
// PatchGAN discriminator (taming NLayerDiscriminator)

export interface DiscriminatorConfig {
  n_layers: number; // stride-2 conv layers after the first (taming default 3)
  ndf: number; // channels of the first layer
  in_channels: number; // image channels
}

export const DISC_DEFAULTS: DiscriminatorConfig = { n_layers: 3, ndf: 64, in_channels: 3 };

/**
 * Layer plan with taming's Sequential indices (`main.0`, `main.2`, …). taming follows each middle conv
 * with BatchNorm; we use a bias instead (no batch statistics: deterministic, resumable, batch-size
 * independent), so the parameter names match taming's convs but there are no `main.N` norm entries.
 */
function discLayers(c: DiscriminatorConfig): { name: string; cin: number; cout: number; stride: number; act: boolean }[] {
  const layers = [{ name: 'main.0', cin: c.in_channels, cout: c.ndf, stride: 2, act: true }];
  let idx = 2;
  let mult = 1;
  for (let n = 1; n < c.n_layers; n++) {
    const prev = mult;
    mult = Math.min(2 ** n, 8);
    layers.push({ name: `main.${idx}`, cin: c.ndf * prev, cout: c.ndf * mult, stride: 2, act: true });
    idx += 3;
  }
  const prev = mult;
  mult = Math.min(2 ** c.n_layers, 8);
  layers.push({ name: `main.${idx}`, cin: c.ndf * prev, cout: c.ndf * mult, stride: 1, act: true });
  idx += 3;
  layers.push({ name: `main.${idx}`, cin: c.ndf * mult, cout: 1, stride: 1, act: false });
  return layers;
}

/** Discriminator parameters, N(0, 0.02) conv init as taming's `weights_init`. */
export function buildDiscriminator(c: DiscriminatorConfig, seed: number): Params {
  const rng = new Rng(seed);
  const p = new Params();
  for (const l of discLayers(c)) addConv2d(p, rng, l.name, l.cin, l.cout, 4, { std: 0.02 });
  return p;
}

/** Patch logits (B, h, w, 1) for images (B, H, W, C): 4×4 convs, padding 1, LeakyReLU(0.2). */
export function discriminator(p: Params, c: DiscriminatorConfig, x: tf.Tensor4D): tf.Tensor4D {
  let h = x;
  for (const l of discLayers(c)) {
    h = conv2d(p, l.name, h, { stride: l.stride, padding: 1 });
    if (l.act) h = tf.leakyRelu(h, 0.2);
  }
  return h;
}

/** Hinge loss of the discriminator: ½(mean relu(1 − D(x)) + mean relu(1 + D(x̂))). */
export function hingeDLoss(logitsReal: tf.Tensor, logitsFake: tf.Tensor): tf.Scalar {
  return tf.mul(tf.add(tf.mean(tf.relu(tf.sub(1, logitsReal))), tf.mean(tf.relu(tf.add(1, logitsFake)))), 0.5);
}

/** Generator's adversarial loss: −mean D(x̂). */
export function generatorLoss(logitsFake: tf.Tensor): tf.Scalar {
  return tf.neg(tf.mean(logitsFake));
}

// ---------------------------------------------------------------------------------------------------
// adaptive weight

/** Gradient of Σ conv_out(h) ⊙ dy w.r.t. the conv_out weight (what backprop gives at that layer). */
function lastLayerGrad(w: tf.Tensor4D, hLast: tf.Tensor4D, dy: tf.Tensor4D): tf.Tensor {
  const hp = tf.pad(hLast, [[0, 0], [1, 1], [1, 1], [0, 0]]) as tf.Tensor4D;
  return tf.grad((k: tf.Tensor) => tf.sum(tf.mul(tf.conv2d(hp, k as tf.Tensor4D, 1, 'valid'), dy)))(w);
}

export interface AdaptiveWeightOptions {
  recLoss: RecLoss;
  /** overall GAN weight (taming disc_weight) */
  discWeight: number;
  /** λ is clipped to [0, maxWeight] (taming 1e4) */
  maxWeight?: number;
  /** extra reconstruction term, already weighted (perceptual_weight · LPIPS(x, x̂)); part of L_rec as in taming */
  perceptual?: (x: tf.Tensor4D, xrec: tf.Tensor4D) => tf.Scalar;
}

/**
 * λ = discWeight · ‖∂L_rec/∂W‖ / (‖∂L_G/∂W‖ + 1e-4), W = decoder.conv_out.weight, clipped and treated
 * as a constant in the generator step (taming detaches it). Both gradients at W are formed from the
 * gradients at the reconstruction (W is the last op), so only the discriminator (and LPIPS, when on)
 * is differentiated.
 */
export function adaptiveWeight(x: tf.Tensor4D, xrec: tf.Tensor4D, hLast: tf.Tensor4D, model: Vqgan, disc: Params, discConfig: DiscriminatorConfig, o: AdaptiveWeightOptions): number {
  return tf.tidy(() => {
    const w = model.params.get('decoder.conv_out.weight') as tf.Variable<tf.Rank.R4>;
    const recLoss = (r: tf.Tensor): tf.Scalar => {
      const pixel = reconstructionLoss(x, r, o.recLoss);
      return o.perceptual ? tf.add(pixel, o.perceptual(x, r as tf.Tensor4D)) : pixel;
    };
    const dRec = tf.grad(recLoss)(xrec) as tf.Tensor4D;
    const dG = tf.grad((r: tf.Tensor) => generatorLoss(discriminator(disc, discConfig, r as tf.Tensor4D)))(xrec) as tf.Tensor4D;
    const nRec = tf.norm(lastLayerGrad(w, hLast, dRec));
    const nG = tf.norm(lastLayerGrad(w, hLast, dG));
    const lambda = tf.clipByValue(tf.div(nRec, tf.add(nG, 1e-4)), 0, o.maxWeight ?? 1e4);
    return (tf.mul(lambda, o.discWeight).dataSync()[0] as number);
  });
}

// ---------------------------------------------------------------------------------------------------
// codebook usage

export interface CodebookStats {
  /** exp(entropy) of the code distribution: n_embed when uniform, 1 when collapsed */
  perplexity: number;
  /** codes used at least once */
  used: number;
  /** codes never used */
  dead: number;
}

/** Counts code use over a window of steps (plain JS: a few thousand ints a step). */
export class CodebookUsage {
  readonly counts: Float64Array;

  constructor(readonly nEmbed: number) {
    this.counts = new Float64Array(nEmbed);
  }

  add(indices: ArrayLike<number>): void {
    for (let i = 0; i < indices.length; i++) this.counts[indices[i] as number]! += 1;
  }

  stats(): CodebookStats {
    return codebookStats(this.counts);
  }

  deadCodes(): number[] {
    const out: number[] = [];
    for (let k = 0; k < this.nEmbed; k++) if (this.counts[k] === 0) out.push(k);
    return out;
  }

  reset(): void {
    this.counts.fill(0);
  }
}

export function codebookStats(counts: ArrayLike<number>): CodebookStats {
  let total = 0;
  for (let k = 0; k < counts.length; k++) total += counts[k] as number;
  let h = 0;
  let used = 0;
  for (let k = 0; k < counts.length; k++) {
    const c = counts[k] as number;
    if (c > 0) {
      used++;
      const p = c / total;
      h -= p * Math.log(p);
    }
  }
  return { perplexity: total > 0 ? Math.exp(h) : 0, used, dead: counts.length - used };
}

/**
 * Dead-code restart: each unused codebook row is replaced by a latent drawn (with the seeded rng) from
 * `z` (N, D), the current batch's pre-quantisation vectors, so it lands where the encoder puts data.
 * Returns how many rows were replaced.
 */
export function restartDeadCodes(model: Vqgan, dead: number[], z: tf.Tensor2D, rng: Rng): number {
  if (dead.length === 0) return 0;
  const emb = model.params.get('quantize.embedding.weight');
  const rows = dead.map(() => rng.int(z.shape[0]));
  tf.tidy(() => {
    const picked = tf.gather(z, tf.tensor1d(rows, 'int32')); // (n, D)
    const idx = tf.tensor2d(dead, [dead.length, 1], 'int32');
    emb.assign(tf.tensorScatterUpdate(emb, idx, picked));
  });
  return dead.length;
}
