/**
 * VQGAN (taming-transformers / dalle-mini vqgan-jax) in one file: config, Encoder, VectorQuantizer,
 * Decoder, the model, and HF-style save/load. Read top to bottom.
 *
 * Layout: images NHWC (B, H, W, 3) in [-1, 1]; parameters live in a `Params` tree under the exact
 * taming / HF names (`encoder.down.0.block.1.norm1.weight`, `quantize.embedding.weight`, …), conv
 * weights internally [kh, kw, in, out] and [out, in, kh, kw] on disk (PyTorch), converted by params.ts.
 */
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { convertHint } from '../checkpoints/hint.js';
import { readHfConfig, VqganConfigSchema, writeHfConfig } from '../hf-config.js';
import { stopGradient, straightThrough } from '../kernels/ops.js';
import { conv2d, groupNorm, resnetBlock, swish, upsampleNearest2x, type TrainFlags } from '../nn.js';
import { addConv2d, addNorm, loadParamsFile, Params, uniformInit, saveParamsFile, type LoadMismatch } from '../params.js';
import { Rng } from '../rng.js';

// ---------------------------------------------------------------------------------------------------
// config

export interface VqganModelConfig {
  ch: number; // base channel count of the first level
  ch_mult: number[]; // channel multiplier per level; levels − 1 downsamplings (f = 2^(len−1))
  num_res_blocks: number; // ResnetBlocks per encoder level (decoder uses one more)
  attn_resolutions: number[]; // feature-map sides at which an AttnBlock follows each ResnetBlock
  z_channels: number; // encoder output channels (before quant_conv)
  n_embed: number; // codebook size
  embed_dim: number; // code vector width
  resolution: number; // image side the model is built for (decides where attention sits)
  in_channels: number; // image channels in
  out_ch: number; // image channels out
  dropout: number; // dropout inside ResnetBlocks during training
  num_groups: number; // GroupNorm groups (taming hard-codes 32; tiny test models need fewer)
  /**
   * Look codes up by cosine similarity: latents and codebook rows are L2-normalised before the nearest
   * code is chosen and used (ViT-VQGAN's "l2-normalised codes"; better codebook usage). Not in taming:
   * false for its checkpoints, and absent from their config.json.
   */
  codebook_l2: boolean;
}

/** dalle-mini's VQGAN f16 16384 (vqgan_imagenet_f16_16384). */
export const VQGAN_DEFAULTS: VqganModelConfig = {
  ch: 128,
  ch_mult: [1, 1, 2, 2, 4],
  num_res_blocks: 2,
  attn_resolutions: [16],
  z_channels: 256,
  n_embed: 16384,
  embed_dim: 256,
  resolution: 256,
  in_channels: 3,
  out_ch: 3,
  dropout: 0,
  num_groups: 32,
  codebook_l2: false,
};

export class VqganConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'VqganConfigError';
  }
}

/** Defaults filled in and the channel/group arithmetic checked, so a bad config fails before any tensor. */
export function resolveVqganConfig(partial: Partial<VqganModelConfig> = {}): VqganModelConfig {
  const c: VqganModelConfig = { ...VQGAN_DEFAULTS };
  for (const k of Object.keys(VQGAN_DEFAULTS) as (keyof VqganModelConfig)[]) {
    const v = partial[k];
    if (v !== undefined) (c as unknown as Record<string, unknown>)[k] = v;
  }
  const f = 2 ** (c.ch_mult.length - 1);
  if (c.resolution % f !== 0) throw new VqganConfigError(`resolution ${c.resolution} is not divisible by the downsampling factor ${f} (ch_mult has ${c.ch_mult.length} levels)`);
  for (const m of c.ch_mult) {
    if ((c.ch * m) % c.num_groups !== 0) throw new VqganConfigError(`channels ch·ch_mult = ${c.ch * m} not divisible by num_groups ${c.num_groups}`);
  }
  return c;
}

/** Side of the code grid (resolution / f) and number of codes per image. */
export function latentSide(c: VqganModelConfig): number {
  return c.resolution / 2 ** (c.ch_mult.length - 1);
}

// ---------------------------------------------------------------------------------------------------
// parameter tree (taming names)

/**
 * A ResnetBlock's second conv starts at zero, so that every block starts as its shortcut and the network
 * as a shallow one that deepens as it trains ("zero-γ", Goyal et al. 2017; Fixup). Taming initialises it
 * like the others; on the 32 px shapes, zero gives +0.5 dB held-out PSNR at equal steps.
 */
function addResnet(p: Params, rng: Rng, prefix: string, cin: number, cout: number): void {
  addNorm(p, `${prefix}.norm1`, cin);
  addConv2d(p, rng, `${prefix}.conv1`, cin, cout, 3);
  addNorm(p, `${prefix}.norm2`, cout);
  addConv2d(p, rng, `${prefix}.conv2`, cout, cout, 3, { std: 0 });
  if (cin !== cout) addConv2d(p, rng, `${prefix}.nin_shortcut`, cin, cout, 1);
}

function addAttn(p: Params, rng: Rng, prefix: string, c: number): void {
  addNorm(p, `${prefix}.norm`, c);
  for (const n of ['q', 'k', 'v', 'proj_out']) addConv2d(p, rng, `${prefix}.${n}`, c, c, 1, { std: Math.sqrt(1 / c) });
}

/** Builds the full parameter tree with seeded init (He-normal convs, zero ResnetBlock conv2, unit norms, uniform codebook). */
export function buildVqganParams(c: VqganModelConfig, seed: number): Params {
  const rng = new Rng(seed);
  const p = new Params();
  const L = c.ch_mult.length;
  // encoder
  addConv2d(p, rng, 'encoder.conv_in', c.in_channels, c.ch, 3);
  let res = c.resolution;
  let blockIn = c.ch;
  for (let i = 0; i < L; i++) {
    const blockOut = c.ch * (c.ch_mult[i] as number);
    for (let j = 0; j < c.num_res_blocks; j++) {
      addResnet(p, rng, `encoder.down.${i}.block.${j}`, blockIn, blockOut);
      blockIn = blockOut;
      if (c.attn_resolutions.includes(res)) addAttn(p, rng, `encoder.down.${i}.attn.${j}`, blockIn);
    }
    if (i !== L - 1) {
      addConv2d(p, rng, `encoder.down.${i}.downsample.conv`, blockIn, blockIn, 3);
      res /= 2;
    }
  }
  addResnet(p, rng, 'encoder.mid.block_1', blockIn, blockIn);
  addAttn(p, rng, 'encoder.mid.attn_1', blockIn);
  addResnet(p, rng, 'encoder.mid.block_2', blockIn, blockIn);
  addNorm(p, 'encoder.norm_out', blockIn);
  addConv2d(p, rng, 'encoder.conv_out', blockIn, c.z_channels, 3);
  // quantizer
  addConv2d(p, rng, 'quant_conv', c.z_channels, c.embed_dim, 1);
  // taming: embedding uniform(−1/n, 1/n)
  p.add('quantize.embedding.weight', uniformInit(rng, [c.n_embed, c.embed_dim], -1 / c.n_embed, 1 / c.n_embed));
  addConv2d(p, rng, 'post_quant_conv', c.embed_dim, c.z_channels, 1);
  // decoder
  blockIn = c.ch * (c.ch_mult[L - 1] as number);
  res = latentSide(c);
  addConv2d(p, rng, 'decoder.conv_in', c.z_channels, blockIn, 3);
  addResnet(p, rng, 'decoder.mid.block_1', blockIn, blockIn);
  addAttn(p, rng, 'decoder.mid.attn_1', blockIn);
  addResnet(p, rng, 'decoder.mid.block_2', blockIn, blockIn);
  // taming builds `up` in reverse and inserts at the front, so decoder.up.i has ch_mult[i]
  for (let i = L - 1; i >= 0; i--) {
    const blockOut = c.ch * (c.ch_mult[i] as number);
    for (let j = 0; j < c.num_res_blocks + 1; j++) {
      addResnet(p, rng, `decoder.up.${i}.block.${j}`, blockIn, blockOut);
      blockIn = blockOut;
      if (c.attn_resolutions.includes(res)) addAttn(p, rng, `decoder.up.${i}.attn.${j}`, blockIn);
    }
    if (i !== 0) {
      addConv2d(p, rng, `decoder.up.${i}.upsample.conv`, blockIn, blockIn, 3);
      res *= 2;
    }
  }
  addNorm(p, 'decoder.norm_out', blockIn);
  addConv2d(p, rng, 'decoder.conv_out', blockIn, c.out_ch, 3);
  return p;
}

/**
 * The explicit name → PyTorch-layout shape map a converted taming / dalle-mini checkpoint must match
 * (conv [out, in, kh, kw], norms and biases [C], codebook [n_embed, embed_dim]).
 */
export function vqganParamShapes(c: VqganModelConfig): Map<string, number[]> {
  // Built from a throwaway tree so the map and the model can never disagree.
  const p = buildVqganParams(c, 0);
  const out = new Map<string, number[]>();
  for (const [name, v] of p.entries()) {
    const s = v.shape;
    out.set(name, p.kind(name) === 'conv2d' ? [s[3] as number, s[2] as number, s[0] as number, s[1] as number] : s.slice());
  }
  p.dispose();
  return out;
}

// ---------------------------------------------------------------------------------------------------
// blocks

interface Flags extends TrainFlags {
  groups: number;
  dropout: number;
}

/** taming AttnBlock: single-head self-attention over the H·W positions with 1×1 conv projections. */
function attnBlock(p: Params, prefix: string, x: tf.Tensor4D, groups: number): tf.Tensor4D {
  const [B, H, W, C] = x.shape;
  const h = groupNorm(p, `${prefix}.norm`, x, groups, 1e-6);
  const q = tf.reshape(conv2d(p, `${prefix}.q`, h, { padding: 0 }), [B, H * W, C]); // (B, HW, C)
  const k = tf.reshape(conv2d(p, `${prefix}.k`, h, { padding: 0 }), [B, H * W, C]);
  const v = tf.reshape(conv2d(p, `${prefix}.v`, h, { padding: 0 }), [B, H * W, C]);
  const w = tf.softmax(tf.mul(tf.matMul(q, k, false, true), 1 / Math.sqrt(C)), -1); // (B, HW, HW)
  const o = tf.reshape(tf.matMul(w, v), [B, H, W, C]) as tf.Tensor4D; // (B, H, W, C)
  return tf.add(x, conv2d(p, `${prefix}.proj_out`, o, { padding: 0 })) as tf.Tensor4D;
}

function resnet(p: Params, prefix: string, x: tf.Tensor4D, f: Flags): tf.Tensor4D {
  return resnetBlock(p, prefix, x, { groups: f.groups, dropout: f.dropout, training: f.training ?? false, ...(f.rng ? { rng: f.rng } : {}) });
}

/** images (B, H, W, in_channels) → z (B, H/f, W/f, z_channels). */
export function encoder(p: Params, c: VqganModelConfig, x: tf.Tensor4D, f: Flags): tf.Tensor4D {
  const L = c.ch_mult.length;
  let h = conv2d(p, 'encoder.conv_in', x, { padding: 1 }); // (B, H, W, ch)
  for (let i = 0; i < L; i++) {
    for (let j = 0; j < c.num_res_blocks; j++) {
      h = resnet(p, `encoder.down.${i}.block.${j}`, h, f);
      if (p.has(`encoder.down.${i}.attn.${j}.q.weight`)) h = attnBlock(p, `encoder.down.${i}.attn.${j}`, h, f.groups);
    }
    // taming Downsample: pad right/bottom by one, 3×3 stride-2 valid conv
    if (i !== L - 1) h = conv2d(p, `encoder.down.${i}.downsample.conv`, h, { stride: 2, padding: [[0, 1], [0, 1]] }); // (B, H/2, W/2, C)
  }
  h = resnet(p, 'encoder.mid.block_1', h, f);
  h = attnBlock(p, 'encoder.mid.attn_1', h, f.groups);
  h = resnet(p, 'encoder.mid.block_2', h, f);
  h = swish(groupNorm(p, 'encoder.norm_out', h, f.groups, 1e-6)) as tf.Tensor4D;
  return conv2d(p, 'encoder.conv_out', h, { padding: 1 }); // (B, h, w, z_channels)
}

/**
 * z (B, h, w, z_channels) → images (B, H, W, out_ch), plus the input of the last conv (`hLast`),
 * which the adaptive GAN weight needs to form conv_out's weight gradients.
 */
export function decoderWithLast(p: Params, c: VqganModelConfig, z: tf.Tensor4D, f: Flags): { out: tf.Tensor4D; hLast: tf.Tensor4D } {
  const L = c.ch_mult.length;
  let h = conv2d(p, 'decoder.conv_in', z, { padding: 1 });
  h = resnet(p, 'decoder.mid.block_1', h, f);
  h = attnBlock(p, 'decoder.mid.attn_1', h, f.groups);
  h = resnet(p, 'decoder.mid.block_2', h, f);
  for (let i = L - 1; i >= 0; i--) {
    for (let j = 0; j < c.num_res_blocks + 1; j++) {
      h = resnet(p, `decoder.up.${i}.block.${j}`, h, f);
      if (p.has(`decoder.up.${i}.attn.${j}.q.weight`)) h = attnBlock(p, `decoder.up.${i}.attn.${j}`, h, f.groups);
    }
    if (i !== 0) h = conv2d(p, `decoder.up.${i}.upsample.conv`, upsampleNearest2x(h), { padding: 1 }); // (B, 2H, 2W, C)
  }
  const hLast = swish(groupNorm(p, 'decoder.norm_out', h, f.groups, 1e-6)) as tf.Tensor4D;
  return { out: conv2d(p, 'decoder.conv_out', hLast, { padding: 1 }), hLast };
}

export interface QuantizeResult {
  /** straight-through quantised latents (B, h, w, embed_dim): value of the codes, gradient of z */
  zq: tf.Tensor4D;
  /** codebook + β·commitment loss */
  loss: tf.Scalar;
  /** nearest code per position (B·h·w) int32 */
  indices: tf.Tensor1D;
}

/** Rows scaled to unit L2 norm (the epsilon keeps an all-zero row finite). */
function l2Normalize(x: tf.Tensor2D): tf.Tensor2D {
  return tf.div(x, tf.sqrt(tf.add(tf.sum(tf.square(x), 1, true), 1e-12))) as tf.Tensor2D;
}

/** The code vectors as the quantizer uses them: the embedding rows, L2-normalised when `l2`. */
function codeVectors(p: Params, l2: boolean): tf.Tensor2D {
  const emb = p.get('quantize.embedding.weight') as tf.Tensor2D; // (K, D)
  return l2 ? l2Normalize(emb) : emb;
}

/**
 * VectorQuantizer: nearest codebook row by squared distance; loss = ‖sg(z) − e‖² + β‖z − sg(e)‖²
 * (the VQ-VAE paper's form; taming's `legacy=True` swaps β between the two terms by mistake).
 */
export function quantize(p: Params, z: tf.Tensor4D, beta = 0.25, l2 = false): QuantizeResult {
  const [B, h, w, D] = z.shape;
  const emb = codeVectors(p, l2); // (K, D)
  const flat = l2 ? l2Normalize(tf.reshape(z, [B * h * w, D])) : tf.reshape(z, [B * h * w, D]); // (N, D)
  // Distances on gradient-free copies: argMin is not differentiable and must not sit on the tape.
  const indices = tf.tidy(() => {
    const zf = stopGradient(flat);
    const e = stopGradient(emb);
    const d = tf.sub(tf.add(tf.sum(tf.square(zf), 1, true), tf.reshape(tf.sum(tf.square(e), 1), [1, -1])), tf.mul(tf.matMul(zf, e, false, true), 2)); // (N, K)
    return tf.cast(tf.argMin(d, 1), 'int32') as tf.Tensor1D;
  });
  const q = tf.gather(emb, indices); // (N, D), gradient to the codebook
  const codebook = tf.mean(tf.square(tf.sub(q, stopGradient(flat))));
  const commit = tf.mean(tf.square(tf.sub(flat, stopGradient(q))));
  const loss = tf.add(codebook, tf.mul(commit, beta)) as tf.Scalar;
  const zq = tf.reshape(straightThrough(flat, q), [B, h, w, D]) as tf.Tensor4D;
  return { zq, loss, indices };
}

// ---------------------------------------------------------------------------------------------------
// the model

export interface ForwardResult {
  /** reconstruction (B, H, W, out_ch) */
  xrec: tf.Tensor4D;
  /** codebook + commitment loss */
  qloss: tf.Scalar;
  /** codes (B·h·w) int32 */
  indices: tf.Tensor1D;
  /** input of decoder.conv_out */
  hLast: tf.Tensor4D;
  /** pre-quantisation latents (B·h·w, embed_dim), e.g. to restart dead codes from */
  z: tf.Tensor2D;
}

export class VqganError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'VqganError';
  }
}

export class Vqgan {
  constructor(
    readonly config: VqganModelConfig,
    readonly params: Params,
  ) {}

  static create(config: Partial<VqganModelConfig> = {}, seed = 0): Vqgan {
    const c = resolveVqganConfig(config);
    return new Vqgan(c, buildVqganParams(c, seed));
  }

  private flags(training: boolean, rng?: Rng): Flags {
    return { groups: this.config.num_groups, dropout: this.config.dropout, training, ...(rng ? { rng } : {}) };
  }

  private checkImages(x: tf.Tensor): void {
    if (x.rank !== 4 || x.shape[3] !== this.config.in_channels || x.shape[1] !== x.shape[2] || (x.shape[1] as number) % 2 ** (this.config.ch_mult.length - 1) !== 0) {
      throw new VqganError(`images must be [B, H, W, ${this.config.in_channels}] square with H divisible by ${2 ** (this.config.ch_mult.length - 1)}, got ${JSON.stringify(x.shape)}`);
    }
  }

  /** The full differentiable pass used for training (call inside tf.tidy / variableGrads). */
  forward(x: tf.Tensor4D, opts: { training?: boolean; rng?: Rng; beta?: number } = {}): ForwardResult {
    this.checkImages(x);
    const f = this.flags(opts.training ?? false, opts.rng);
    const z = conv2d(this.params, 'quant_conv', encoder(this.params, this.config, x, f), { padding: 0 }); // (B, h, w, D)
    const { zq, loss, indices } = quantize(this.params, z, opts.beta ?? 0.25, this.config.codebook_l2);
    const zPost = conv2d(this.params, 'post_quant_conv', zq, { padding: 0 }); // (B, h, w, z_channels)
    const { out, hLast } = decoderWithLast(this.params, this.config, zPost, f);
    return { xrec: out, qloss: loss, indices, hLast, z: tf.reshape(z, [-1, this.config.embed_dim]) as tf.Tensor2D };
  }

  /** images (B, H, W, 3) in [-1, 1] → codes (B, h·w) int32 in [0, n_embed). */
  encode(images: tf.Tensor4D): tf.Tensor2D {
    this.checkImages(images);
    const B = images.shape[0];
    return tf.tidy(() => {
      const z = conv2d(this.params, 'quant_conv', encoder(this.params, this.config, images, this.flags(false)), { padding: 0 });
      return tf.reshape(quantize(this.params, z, 0.25, this.config.codebook_l2).indices, [B, -1]) as tf.Tensor2D;
    });
  }

  /** codes (B, h·w) int32 → images (B, H, W, 3), clipped to [-1, 1]. */
  decode(codes: tf.Tensor2D): tf.Tensor4D {
    const [B, n] = codes.shape;
    const side = Math.round(Math.sqrt(n));
    if (side * side !== n) throw new VqganError(`codes must be [B, h·w] with a square grid, got ${JSON.stringify(codes.shape)}`);
    if (codes.dtype !== 'int32') throw new VqganError(`codes must be int32, got ${codes.dtype}`);
    return tf.tidy(() => {
      const zq = tf.reshape(tf.gather(codeVectors(this.params, this.config.codebook_l2), tf.reshape(codes, [-1])), [B, side, side, this.config.embed_dim]) as tf.Tensor4D;
      const zPost = conv2d(this.params, 'post_quant_conv', zq, { padding: 0 });
      return tf.clipByValue(decoderWithLast(this.params, this.config, zPost, this.flags(false)).out, -1, 1) as tf.Tensor4D;
    });
  }

  /** encode → decode. */
  reconstruct(images: tf.Tensor4D): tf.Tensor4D {
    const codes = this.encode(images);
    try {
      return this.decode(codes);
    } finally {
      codes.dispose();
    }
  }

  dispose(): void {
    this.params.dispose();
  }
}

// ---------------------------------------------------------------------------------------------------
// save / load (HF-style folder: config.json + model.safetensors)

export const VQGAN_CONFIG_FILE = 'config.json';
export const VQGAN_WEIGHTS_FILE = 'model.safetensors';

/** Writes `dir/config.json` and `dir/model.safetensors` (F32, PyTorch layout, taming names). */
export async function saveVqgan(model: Vqgan, dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  writeHfConfig(join(dir, VQGAN_CONFIG_FILE), { model_type: 'vqgan', ...model.config } as unknown as Record<string, unknown>, VqganConfigSchema);
  saveParamsFile(join(dir, VQGAN_WEIGHTS_FILE), model.params);
}

/** Reads a folder's config.json (validated; defaults fill absent keys). */
export function readVqganConfig(dir: string): VqganModelConfig {
  const raw = readHfConfig(join(dir, VQGAN_CONFIG_FILE), VqganConfigSchema);
  const known: Partial<VqganModelConfig> = {};
  for (const k of Object.keys(VQGAN_DEFAULTS) as (keyof VqganModelConfig)[]) {
    if (raw[k] !== undefined) (known as Record<string, unknown>)[k] = raw[k];
  }
  return resolveVqganConfig(known);
}

/**
 * Loads a folder written by `saveVqgan` or converted from taming / dalle-mini. Every tensor is checked
 * against `vqganParamShapes(config)`: any missing, unexpected or wrongly shaped tensor refuses the load
 * with the full list (LoadParamsError). `overrides` may change non-architectural fields (dropout).
 */
export async function loadVqgan(dir: string, overrides: Partial<Pick<VqganModelConfig, 'dropout'>> = {}): Promise<Vqgan> {
  const weights = join(dir, VQGAN_WEIGHTS_FILE);
  if (!existsSync(weights)) throw new VqganError(convertHint(dir) ?? `${dir}: no ${VQGAN_WEIGHTS_FILE} (a VQGAN folder holds ${VQGAN_CONFIG_FILE} + ${VQGAN_WEIGHTS_FILE})`);
  const config = { ...readVqganConfig(dir), ...overrides };
  const model = Vqgan.create(config, 0);
  try {
    await loadParamsFile(weights, model.params, { source: weights });
  } catch (e) {
    model.dispose();
    throw e;
  }
  return model;
}

export type { LoadMismatch };
