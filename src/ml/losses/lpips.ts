/**
 * LPIPS perceptual distance (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a
 * Perceptual Metric") with a VGG16 trunk, as taming-transformers' `taming/modules/losses/lpips.py` uses
 * it for VQGAN training: config, the frozen network, the distance, and the asserted loader. Read top
 * to bottom.
 *
 *   x, y (B, H, W, 3) in [-1, 1]
 *     → ScalingLayer (x − shift) / scale
 *     → VGG16 `features`, cut into 5 slices ending at relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
 *     → per slice: unit-normalise each feature vector over channels, squared difference,
 *       a 1×1 conv without bias to one channel (the learned non-negative "lin" weights), spatial mean
 *     → sum over slices: one distance per image (B,)
 *
 * Weights: never downloaded. The user converts taming's `vgg.pth` (the `lin0..lin4` layers) together with
 * torchvision's VGG16 `features` (under taming's `net.sliceK.N` names) into one safetensors file and
 * points `loadLpips` at it; every tensor is checked against the names and shapes below, and a mismatch
 * refuses the load with the full list. All parameters are frozen (non-trainable variables): gradients
 * flow through the network to the images, never into it.
 *
 * Differences from the PyTorch module, all deliberate:
 *   - 2×2 max pooling is a reshape + max with its own gradient (`maxPool2x2`): tfjs' MaxPoolGrad drops
 *     gradients on the wasm backend. Where several inputs of a window tie for the maximum the gradient
 *     is shared equally between them (PyTorch gives all of it to one); with ReLU inputs ties happen
 *     only at 0, where the ReLU's gradient is 0 anyway, so the result is the same.
 *   - the channel norm is sqrt(Σx² + 1e-20) + 1e-10 instead of sqrt(Σx²) + 1e-10: identical values for
 *     any non-degenerate feature vector, but a finite gradient (0 instead of NaN) where ReLU made a whole
 *     feature vector zero.
 *   - no dropout (taming runs LPIPS in eval mode, where its dropout is the identity).
 */
import { existsSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs-core';
import { conv2d } from '../nn.js';
import { loadParamsFile, normalInit, Params, uniformInit, zerosInit, type LoadMismatch } from '../params.js';
import { Rng } from '../rng.js';
import { readSafetensorsHeader } from '../safetensors.js';

// ---------------------------------------------------------------------------------------------------
// config

export interface LpipsConfig {
  channels: number[]; // output channels of each slice's convs (VGG16: 64, 128, 256, 512, 512)
  convsPerSlice: number[]; // 3×3 conv + ReLU pairs per slice (VGG16: 2, 2, 3, 3, 3)
}

/** VGG16 as taming's LPIPS cuts it (the only architecture taming's `vgg.pth` fits). */
export const LPIPS_VGG16: LpipsConfig = { channels: [64, 128, 256, 512, 512], convsPerSlice: [2, 2, 3, 3, 3] };

/** ScalingLayer constants (per RGB channel), for inputs in [-1, 1]. */
export const LPIPS_SHIFT = [-0.03, -0.088, -0.188];
export const LPIPS_SCALE = [0.458, 0.448, 0.45];

export class LpipsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LpipsError';
  }
}

/** Checks a config before any tensor exists (equal lengths, positive integers). */
export function resolveLpipsConfig(c: LpipsConfig = LPIPS_VGG16): LpipsConfig {
  const { channels, convsPerSlice } = c;
  if (channels.length === 0 || channels.length !== convsPerSlice.length) {
    throw new LpipsError(`LPIPS config: channels (${channels.length} slices) and convsPerSlice (${convsPerSlice.length}) must be non-empty and of equal length`);
  }
  for (const v of [...channels, ...convsPerSlice]) {
    if (!Number.isInteger(v) || v < 1) throw new LpipsError(`LPIPS config: channels and convsPerSlice must be positive integers, got ${JSON.stringify(c)}`);
  }
  return { channels: channels.slice(), convsPerSlice: convsPerSlice.slice() };
}

// ---------------------------------------------------------------------------------------------------
// layer plan (torchvision / taming names)

interface ConvLayer {
  prefix: string; // e.g. 'net.slice2.5'
  cin: number;
  cout: number;
}

interface Slice {
  pool: boolean; // a 2×2/2 max pool opens the slice (all but the first)
  convs: ConvLayer[];
  lin: string; // e.g. 'lin1.model.1' (index 1: taming's NetLinLayer is Sequential(Dropout, Conv2d))
  channels: number;
}

/**
 * The slices with torchvision's `features` indices, which taming keeps as module names: conv at i, its
 * ReLU at i+1, a pool taking one index at the start of every slice after the first. VGG16 gives convs
 * 0,2 | 5,7 | 10,12,14 | 17,19,21 | 24,26,28 in slice1..slice5.
 */
function lpipsSlices(c: LpipsConfig): Slice[] {
  const slices: Slice[] = [];
  let idx = 0;
  let cin = 3;
  c.channels.forEach((cout, s) => {
    const pool = s > 0;
    if (pool) idx++;
    const convs: ConvLayer[] = [];
    for (let k = 0; k < (c.convsPerSlice[s] as number); k++) {
      convs.push({ prefix: `net.slice${s + 1}.${idx}`, cin, cout });
      cin = cout;
      idx += 2;
    }
    slices.push({ pool, convs, lin: `lin${s}.model.1`, channels: cout });
  });
  return slices;
}

/**
 * The parameter tree, frozen (non-trainable). With a seed the values are random (He-normal convs, zero
 * biases, lin weights uniform in [0, 1/C)): a stand-in network for tests. Without one, zeros, for
 * `loadLpips` to overwrite (VGG16 has 14.7M weights: no point drawing random ones first).
 */
export function buildLpipsParams(c: LpipsConfig, seed?: number): Params {
  const rng = seed === undefined ? undefined : new Rng(seed);
  const p = new Params();
  for (const s of lpipsSlices(c)) {
    for (const l of s.convs) {
      const shape = [3, 3, l.cin, l.cout];
      p.add(`${l.prefix}.weight`, rng ? normalInit(rng, shape, Math.sqrt(2 / (9 * l.cin))) : zerosInit(shape), 'conv2d', false);
      p.add(`${l.prefix}.bias`, zerosInit([l.cout]), 'plain', false);
    }
    const lin = [1, 1, s.channels, 1];
    p.add(`${s.lin}.weight`, rng ? uniformInit(rng, lin, 0, 1 / s.channels) : zerosInit(lin), 'conv2d', false);
  }
  return p;
}

/**
 * The explicit name → PyTorch-layout shape map a converted file must match: convs [out, in, 3, 3],
 * biases [out], lin weights [1, C, 1, 1].
 */
export function lpipsParamShapes(c: LpipsConfig): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const s of lpipsSlices(resolveLpipsConfig(c))) {
    for (const l of s.convs) {
      out.set(`${l.prefix}.weight`, [l.cout, l.cin, 3, 3]);
      out.set(`${l.prefix}.bias`, [l.cout]);
    }
    out.set(`${s.lin}.weight`, [1, s.channels, 1, 1]);
  }
  return out;
}

/**
 * The architecture a file describes, from its tensor names and shapes: one slice per `net.sliceK` /
 * `linK` seen, its conv count from the distinct conv indices, its width from a conv's (or the lin's)
 * output channels. Used when `loadLpips` gets no config; the load then still asserts every tensor, so
 * an inconsistent file is refused with its list of mismatches rather than half-read.
 */
export function inferLpipsConfig(shapes: Map<string, number[]>): LpipsConfig {
  const convIdx = new Map<number, Set<number>>(); // slice (0-based) → conv indices
  const width = new Map<number, number>();
  let slices = 0;
  for (const [name, shape] of shapes) {
    const conv = /^net\.slice(\d+)\.(\d+)\.(weight|bias)$/.exec(name);
    const lin = /^lin(\d+)\.model\.1\.weight$/.exec(name);
    if (conv) {
      const s = Number(conv[1]) - 1;
      if (s < 0) continue;
      slices = Math.max(slices, s + 1);
      convIdx.set(s, (convIdx.get(s) ?? new Set()).add(Number(conv[2])));
      if (shape[0] !== undefined) width.set(s, shape[0]);
    } else if (lin) {
      const s = Number(lin[1]);
      slices = Math.max(slices, s + 1);
      if (!width.has(s) && shape[1] !== undefined) width.set(s, shape[1]);
    }
  }
  if (slices === 0) return LPIPS_VGG16;
  const channels: number[] = [];
  const convsPerSlice: number[] = [];
  for (let s = 0; s < slices; s++) {
    channels.push(width.get(s) ?? 1);
    convsPerSlice.push(Math.max(1, convIdx.get(s)?.size ?? 1));
  }
  return { channels, convsPerSlice };
}

// ---------------------------------------------------------------------------------------------------
// blocks

/**
 * 2×2 max pool, stride 2, floor mode (an odd last row/column is dropped, as PyTorch does):
 * (B, H, W, C) → (B, ⌊H/2⌋, ⌊W/2⌋, C). The forward is a reshape to (B, H/2, 2, W/2, 2, C) and a max over
 * the two window axes; the gradient sends dy to the window's maximum (shared equally on ties). Both are
 * plain reshape/max/equal ops, correct on every backend (wasm's MaxPoolGrad is not).
 */
export function maxPool2x2(x: tf.Tensor4D): tf.Tensor4D {
  const [B, H, W, C] = x.shape;
  const h = Math.floor(H / 2);
  const w = Math.floor(W / 2);
  if (h < 1 || w < 1) throw new LpipsError(`maxPool2x2: feature map ${H}×${W} is too small to pool (images too small for this many LPIPS slices)`);
  const even = H % 2 || W % 2 ? tf.slice(x, [0, 0, 0, 0], [B, 2 * h, 2 * w, C]) : x;
  return pool(even);
}

const pool: (x: tf.Tensor4D) => tf.Tensor4D = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
  const [x, save] = args as [tf.Tensor4D, tf.GradSaveFunc];
  const [B, H, W, C] = x.shape;
  const windows = tf.reshape(x, [B, H / 2, 2, W / 2, 2, C]); // (B, h, 2, w, 2, C)
  const value = tf.max(windows, [2, 4]); // (B, h, w, C)
  save([windows, value]);
  const gradFunc = (dy: tf.Tensor, saved: tf.Tensor[]): tf.Tensor => {
    const [win, y] = saved as [tf.Tensor, tf.Tensor];
    const at = (t: tf.Tensor): tf.Tensor => tf.reshape(t, [B, H / 2, 1, W / 2, 1, C]);
    const isMax = tf.cast(tf.equal(win, at(y)), 'float32'); // (B, h, 2, w, 2, C) 1 at the maximum
    const share = tf.div(at(dy), tf.sum(isMax, [2, 4], true)); // dy split between tied maxima
    return tf.reshape(tf.mul(isMax, share), [B, H, W, C]);
  };
  return { value, gradFunc };
}) as unknown as (x: tf.Tensor4D) => tf.Tensor4D;

/** Unit length over channels: x / (‖x‖₂ + 1e-10) per position. (B, H, W, C) → same. */
export function normalizeChannels(x: tf.Tensor): tf.Tensor {
  const norm = tf.sqrt(tf.add(tf.sum(tf.square(x), -1, true), 1e-20)); // (B, H, W, 1); see header for 1e-20
  return tf.div(x, tf.add(norm, 1e-10));
}

// ---------------------------------------------------------------------------------------------------
// the network

export class Lpips {
  constructor(
    readonly config: LpipsConfig,
    readonly params: Params,
  ) {}

  /** A randomly initialised network (tests; real use loads weights with `loadLpips`). */
  static create(config: LpipsConfig = LPIPS_VGG16, seed = 0): Lpips {
    const c = resolveLpipsConfig(config);
    return new Lpips(c, buildLpipsParams(c, seed));
  }

  dispose(): void {
    this.params.dispose();
  }
}

/** ScalingLayer then the VGG trunk: the ReLU output at the end of every slice, (B, H/2^s, W/2^s, C_s). */
export function lpipsFeatures(net: Lpips, x: tf.Tensor4D): tf.Tensor4D[] {
  if (x.rank !== 4 || x.shape[3] !== 3) throw new LpipsError(`LPIPS images must be [B, H, W, 3] in [-1, 1], got ${JSON.stringify(x.shape)}`);
  let h = tf.div(tf.sub(x, tf.tensor1d(LPIPS_SHIFT)), tf.tensor1d(LPIPS_SCALE)) as tf.Tensor4D; // (B, H, W, 3)
  const feats: tf.Tensor4D[] = [];
  for (const s of lpipsSlices(net.config)) {
    if (s.pool) h = maxPool2x2(h); // (B, H/2, W/2, C)
    for (const l of s.convs) h = tf.relu(conv2d(net.params, l.prefix, h, { padding: 1 })); // (B, H, W, cout)
    feats.push(h);
  }
  return feats;
}

/** LPIPS distance per image: x, y (B, H, W, 3) in [-1, 1] → (B,). Differentiable w.r.t. x and y. */
export function lpips(net: Lpips, x: tf.Tensor4D, y: tf.Tensor4D): tf.Tensor1D {
  if (x.shape.some((d, i) => d !== y.shape[i])) throw new LpipsError(`LPIPS inputs differ in shape: ${JSON.stringify(x.shape)} vs ${JSON.stringify(y.shape)}`);
  const fx = lpipsFeatures(net, x);
  const fy = lpipsFeatures(net, y);
  const slices = lpipsSlices(net.config);
  let total: tf.Tensor | undefined;
  slices.forEach((s, k) => {
    const d = tf.square(tf.sub(normalizeChannels(fx[k]!), normalizeChannels(fy[k]!))) as tf.Tensor4D; // (B, h, w, C)
    const r = tf.mean(conv2d(net.params, s.lin, d, { padding: 0 }), [1, 2, 3]); // (B,) lin → spatial mean
    total = total ? tf.add(total, r) : r;
  });
  return total as tf.Tensor1D;
}

/** Mean LPIPS over the batch: the perceptual loss term. */
export function lpipsLoss(net: Lpips, x: tf.Tensor4D, y: tf.Tensor4D): tf.Scalar {
  return tf.mean(lpips(net, x, y));
}

// ---------------------------------------------------------------------------------------------------
// loading

/**
 * Loads a safetensors file holding taming's LPIPS weights (`lin0.model.1.weight` … [1, C, 1, 1]) and
 * torchvision's VGG16 features under taming's names (`net.slice1.0.weight` [64, 3, 3, 3], …), PyTorch
 * layout. `config` defaults to the architecture the file describes (VGG16 for the real file); every
 * tensor is then asserted against `lpipsParamShapes(config)` and any missing, unexpected or wrongly
 * shaped tensor refuses the load with the full list (LoadParamsError). Lin weights must be ≥ 0.
 * Nothing is ever downloaded.
 */
export async function loadLpips(path: string, config?: LpipsConfig): Promise<Lpips> {
  if (!path || !existsSync(path)) {
    throw new LpipsError(
      `LPIPS weights file ${path ? `'${path}' does not exist` : 'not given'}. They are never downloaded: convert taming-transformers' vgg.pth ` +
        `(lin0..lin4) and torchvision's VGG16 features (as net.slice1.0 … net.slice5.28) into one safetensors file and pass its path.`,
    );
  }
  const c = resolveLpipsConfig(config ?? inferLpipsConfig(new Map(readSafetensorsHeader(path).tensors.map((t) => [t.name, t.shape] as [string, number[]]))));
  const net = new Lpips(c, buildLpipsParams(c));
  try {
    await loadParamsFile(path, net.params, { source: path });
    for (let k = 0; k < c.channels.length; k++) {
      const min = tf.tidy(() => tf.min(net.params.get(`lin${k}.model.1.weight`)).dataSync()[0] as number);
      if (min < 0) throw new LpipsError(`${path}: lin${k}.model.1.weight has negative entries (min ${min}); LPIPS lin weights are non-negative, so this is not an LPIPS file`);
    }
  } catch (e) {
    net.dispose();
    throw e;
  }
  return net;
}

export type { LoadMismatch };
