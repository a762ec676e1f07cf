/**
 * Building blocks as plain functions over a named parameter tree (no tf.layers).
 *
 * Each block reads `${prefix}.<name>` from a `Params` (HF / taming names), so a model file reads as
 * `linear(p, 'encoder.layers.0.fc1', x)`. Layout conventions (see params.ts):
 *   - activations are channels-last: sequences (B, T, C), images NHWC (B, H, W, C);
 *   - Linear weights are [in, out], conv weights [kh, kw, in, out].
 * A bias or norm scale is optional: when `${prefix}.bias` is absent the block runs without it (DalleBart
 * uses bias-free linears and norms, BART and taming use biases), so the parameter tree decides.
 *
 * The blocks create intermediate tensors; run them inside `tf.tidy` (or `tf.variableGrads`).
 */
import * as tf from '@tensorflow/tfjs-core';
// Functional ops only (tf.add(x, y), not x.add(y)): chained methods are not registered when the ESM
// build of tfjs-core is loaded (as under vitest), so code using them breaks depending on the loader.
import { fusedDropoutMask, fusedGelu, fusedGroupNorm, fusedSwish, nativeFusionActive } from './kernels/ops.js';
import type { Params } from './params.js';
import type { Rng } from './rng.js';

export class ShapeError extends Error {
  constructor(block: string, message: string) {
    super(`${block}: ${message}`);
    this.name = 'ShapeError';
  }
}

function optional(p: Params, name: string): tf.Variable | undefined {
  return p.has(name) ? p.get(name) : undefined;
}

// ---------------------------------------------------------------------------------------------------
// linear, embedding, norms

/** y = x @ W + b over the last axis. x (..., in) → (..., out); W [in, out]. */
export function linear(p: Params, prefix: string, x: tf.Tensor): tf.Tensor {
  const w = p.get(`${prefix}.weight`); // (in, out)
  const [inDim, outDim] = w.shape as [number, number];
  const lead = x.shape.slice(0, -1);
  if (x.shape[x.rank - 1] !== inDim) throw new ShapeError(`linear ${prefix}`, `input last dim ${x.shape[x.rank - 1]} ≠ weight in-dim ${inDim}`);
  // 2-D matmul: the fast (untransposed) path on wasm, and correct gradients (no broadcast batch dims).
  let y: tf.Tensor = tf.matMul(tf.reshape(x, [-1, inDim]), w); // (N, out)
  const b = optional(p, `${prefix}.bias`);
  if (b) y = tf.add(y, b);
  return tf.reshape(y, [...lead, outDim]); // (..., out)
}

/** Rows of `${prefix}.weight` [V, C] for int32 ids (...) → (..., C). */
export function embedding(p: Params, prefix: string, ids: tf.Tensor): tf.Tensor {
  const w = p.get(`${prefix}.weight`); // (V, C)
  if (ids.dtype !== 'int32') throw new ShapeError(`embedding ${prefix}`, `ids must be int32, got ${ids.dtype}`);
  const flat = tf.gather(w, tf.reshape(ids, [-1])); // (N, C)
  return tf.reshape(flat, [...ids.shape, w.shape[1] as number]); // (..., C)
}

/** LayerNorm over the last axis; scale/bias used when present. x (..., C) → (..., C). */
export function layerNorm(p: Params, prefix: string, x: tf.Tensor, eps = 1e-5): tf.Tensor {
  const w = optional(p, `${prefix}.weight`);
  const b = optional(p, `${prefix}.bias`);
  // A layer norm is a one-group GroupNorm of 1×1 "images": one native kernel each way instead of ~20 small ops
  if (w && b && nativeFusionActive()) {
    const c = x.shape[x.rank - 1] as number;
    return tf.reshape(fusedGroupNorm(tf.reshape(x, [-1, 1, 1, c]), w as tf.Tensor1D, b as tf.Tensor1D, 1, eps), x.shape);
  }
  const { mean, variance } = tf.moments(x, -1, true); // (..., 1)
  let y = tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, eps)));
  if (w) y = tf.mul(y, w);
  if (b) y = tf.add(y, b);
  return y;
}

/** RMSNorm over the last axis (DalleBart `ln_type: rmsnorm`): x / √(mean(x²) + eps) · weight. */
export function rmsNorm(p: Params, prefix: string, x: tf.Tensor, eps = 1e-5): tf.Tensor {
  const y = tf.mul(x, tf.rsqrt(tf.add(tf.mean(tf.square(x), -1, true), eps))); // (..., C)
  const w = optional(p, `${prefix}.weight`);
  return w ? tf.mul(y, w) : y;
}

/** GroupNorm over NHWC: statistics per (sample, group) over H, W and the group's channels. */
export function groupNorm(p: Params, prefix: string, x: tf.Tensor4D, groups: number, eps = 1e-6): tf.Tensor4D {
  const [B, H, W, C] = x.shape;
  if (C % groups !== 0) throw new ShapeError(`groupNorm ${prefix}`, `channels ${C} not divisible by groups ${groups}`);
  const w = optional(p, `${prefix}.weight`);
  const b = optional(p, `${prefix}.bias`);
  // One native kernel each way instead of ~20 small ops, when the wasm backend has the native kernels.
  if (w && b && nativeFusionActive()) return fusedGroupNorm(x, w as tf.Tensor1D, b as tf.Tensor1D, groups, eps);
  const g = tf.reshape(x, [B, H, W, groups, C / groups]); // (B, H, W, G, C/G)
  const { mean, variance } = tf.moments(g, [1, 2, 4], true); // (B, 1, 1, G, 1)
  let y: tf.Tensor = tf.reshape(tf.mul(tf.sub(g, mean), tf.rsqrt(tf.add(variance, eps))), [B, H, W, C]);
  if (w) y = tf.mul(y, w);
  if (b) y = tf.add(y, b);
  return y as tf.Tensor4D;
}

// ---------------------------------------------------------------------------------------------------
// activations

/** Exact GELU: x·Φ(x) = 0.5·x·(1 + erf(x/√2)) (HF "gelu"). */
export function gelu(x: tf.Tensor): tf.Tensor {
  if (nativeFusionActive() && x.dtype === 'float32') return fusedGelu(x);
  return tf.mul(tf.mul(x, tf.add(tf.erf(tf.mul(x, Math.SQRT1_2)), 1)), 0.5);
}

/** tanh GELU (HF "gelu_new" / flax approximate=True); x*x*x instead of pow, which is slow on wasm. */
export function geluTanh(x: tf.Tensor): tf.Tensor {
  const cube = tf.mul(tf.mul(x, x), x);
  const inner = tf.mul(tf.add(x, tf.mul(cube, 0.044715)), Math.sqrt(2 / Math.PI));
  return tf.mul(tf.mul(x, tf.add(tf.tanh(inner), 1)), 0.5);
}

/** swish / SiLU: x·σ(x) (taming's `nonlinearity`). */
export function swish(x: tf.Tensor): tf.Tensor {
  return nativeFusionActive() && x.dtype === 'float32' ? fusedSwish(x) : tf.mul(x, tf.sigmoid(x));
}

export type Activation = 'gelu' | 'gelu_new' | 'relu' | 'swish' | 'silu';

export function activation(name: Activation, x: tf.Tensor): tf.Tensor {
  switch (name) {
    case 'gelu': return gelu(x);
    case 'gelu_new': return geluTanh(x);
    case 'relu': return tf.relu(x);
    default: return swish(x);
  }
}

// ---------------------------------------------------------------------------------------------------
// dropout

/**
 * Inverted dropout with a mask drawn from the seeded Rng (reproducible and resumable, unlike tf.dropout).
 * Identity when not training or rate is 0.
 */
export function dropout(x: tf.Tensor, rate: number, rng: Rng | undefined, training: boolean): tf.Tensor {
  if (!training || rate <= 0) return x;
  if (rate >= 1) throw new ShapeError('dropout', `rate must be < 1, got ${rate}`);
  if (!rng) throw new ShapeError('dropout', 'training with dropout needs an Rng');
  const keep = 1 - rate;
  if (nativeFusionActive()) return tf.mul(x, fusedDropoutMask(x.shape, keep, rng)); // the same mask, drawn natively
  const mask = new Float32Array(x.size);
  rng.fillUniform(mask);
  const scale = 1 / keep;
  for (let i = 0; i < mask.length; i++) mask[i] = (mask[i] as number) < keep ? scale : 0;
  return tf.mul(x, tf.tensor(mask, x.shape, 'float32'));
}

/** Options shared by blocks that may apply dropout. */
export interface TrainFlags {
  training?: boolean;
  rng?: Rng;
}

// ---------------------------------------------------------------------------------------------------
// convolution blocks (NHWC)

/**
 * Padding: 'same'/'valid' (TensorFlow semantics: with stride > 1 'same' pads more at the bottom/right,
 * unlike PyTorch), a symmetric pixel count (PyTorch's `padding=n`), or explicit
 * [[top, bottom], [left, right]] (taming's stride-2 downsample pads (0, 1, 0, 1)). Prefer numbers or
 * explicit pairs when porting PyTorch weights.
 */
export type ConvPadding = 'same' | 'valid' | number | readonly [readonly [number, number], readonly [number, number]];

/** conv2d NHWC: x (B, H, W, Cin), weight [kh, kw, Cin, Cout] → (B, H', W', Cout). */
export function conv2d(p: Params, prefix: string, x: tf.Tensor4D, opts: { stride?: number; padding?: ConvPadding } = {}): tf.Tensor4D {
  const w = p.get(`${prefix}.weight`) as tf.Variable<tf.Rank.R4>; // (kh, kw, Cin, Cout)
  if (x.shape[3] !== w.shape[2]) throw new ShapeError(`conv2d ${prefix}`, `input channels ${x.shape[3]} ≠ weight in-channels ${w.shape[2]}`);
  const pad = opts.padding ?? 'same';
  const stride = opts.stride ?? 1;
  let y: tf.Tensor4D;
  if (pad === 'same' || pad === 'valid') {
    y = tf.conv2d(x, w, stride, pad);
  } else {
    const [[t, b], [l, r]] = typeof pad === 'number' ? [[pad, pad], [pad, pad]] : pad;
    // Explicit (possibly asymmetric: taming's downsample pads (0,1,0,1)) padding inside the conv, not a
    // tf.pad copy whose gradient is a Slice copy.
    y = tf.conv2d(x, w, stride, [[0, 0], [t, b], [l, r], [0, 0]]);
  }
  const bias = optional(p, `${prefix}.bias`);
  return (bias ? tf.add(y, bias) : y) as tf.Tensor4D;
}

/**
 * Nearest-neighbour 2× upsample (B, H, W, C) → (B, 2H, 2W, C), with its own gradient (2×2 block sum)
 * because stock cpu `ResizeNearestNeighborGrad` is wrong for batch > 1. Implemented with the compute
 * layer's kernels; re-exported so model code finds every block here.
 */
export { upsampleNearest2x } from './kernels/ops.js';

export interface ResnetBlockOptions extends TrainFlags {
  groups?: number;
  eps?: number;
  dropout?: number;
}

/**
 * taming ResnetBlock: h = conv2(dropout(swish(norm2(conv1(swish(norm1(x))))))); x → nin_shortcut(x)
 * (1×1) or conv_shortcut (3×3) when channels change; returns x + h. (B, H, W, Cin) → (B, H, W, Cout).
 */
export function resnetBlock(p: Params, prefix: string, x: tf.Tensor4D, opts: ResnetBlockOptions = {}): tf.Tensor4D {
  const groups = opts.groups ?? 32;
  const eps = opts.eps ?? 1e-6;
  let h = swish(groupNorm(p, `${prefix}.norm1`, x, groups, eps)) as tf.Tensor4D; // (B, H, W, Cin)
  h = conv2d(p, `${prefix}.conv1`, h, { padding: 1 }); // (B, H, W, Cout)
  h = swish(groupNorm(p, `${prefix}.norm2`, h, groups, eps)) as tf.Tensor4D;
  h = dropout(h, opts.dropout ?? 0, opts.rng, opts.training ?? false) as tf.Tensor4D;
  h = conv2d(p, `${prefix}.conv2`, h, { padding: 1 }); // (B, H, W, Cout)
  let skip = x;
  if (p.has(`${prefix}.nin_shortcut.weight`)) skip = conv2d(p, `${prefix}.nin_shortcut`, x, { padding: 0 });
  else if (p.has(`${prefix}.conv_shortcut.weight`)) skip = conv2d(p, `${prefix}.conv_shortcut`, x, { padding: 1 });
  else if (x.shape[3] !== h.shape[3]) throw new ShapeError(`resnetBlock ${prefix}`, `channels change ${x.shape[3]} → ${h.shape[3]} but no nin_shortcut/conv_shortcut parameter`);
  return tf.add(skip, h);
}

// ---------------------------------------------------------------------------------------------------
// attention

/** Keys and values of past positions, (B, nh, S, hs) each. */
export interface KVCache {
  k: tf.Tensor4D;
  v: tf.Tensor4D;
}

export interface AttentionOptions extends TrainFlags {
  numHeads: number;
  /** encoder states for cross-attention (B, S, C); self-attention when absent */
  context?: tf.Tensor3D;
  /** queries may not attend to later positions (decoder self-attention) */
  causal?: boolean;
  /** key padding mask (B, S): 1 = attend, 0 = ignore */
  keyMask?: tf.Tensor2D;
  /** self-attention: keys/values of earlier positions; the new ones are appended and returned */
  cache?: KVCache;
  /** cross-attention: the context's keys/values from `crossAttentionCache` (instead of `context`) */
  contextCache?: KVCache;
  /** attention-probability dropout */
  dropout?: number;
}

export interface AttentionOutput {
  out: tf.Tensor3D;
  /** keys/values to pass as `cache` next time (self: past + new; cross: the context's) */
  cache: KVCache;
}

const NEG_INF = -1e9;

/** The additive attention bias of a key mask (B, S) of 1 = attend, 0 = padding: 0 on keys, −1e9 on padding, (B, S). */
export function keyMaskBias(keyMask: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => tf.mul(tf.sub(1, tf.cast(keyMask, 'float32')), NEG_INF) as tf.Tensor2D);
}

function splitHeads(x: tf.Tensor, B: number, T: number, nh: number, hs: number): tf.Tensor4D {
  return tf.transpose(tf.reshape(x, [B, T, nh, hs]), [0, 2, 1, 3]) as tf.Tensor4D; // (B, nh, T, hs)
}

/**
 * Multi-head attention with HF BART names (`q_proj`, `k_proj`, `v_proj`, `out_proj`).
 * x (B, T, C) → (B, T, C). Queries are scaled by hs^-0.5 after projection, as HF BART does.
 * With a cache, position i of x is absolute position S_past + i (incremental decoding); the result
 * equals a full recompute over the concatenated sequence. The returned cache holds the keys/values
 * used (past + new for self-attention, `contextCache` itself for cross-attention): inside tf.tidy,
 * tf.keep the ones carried to the next step and dispose the previous step's.
 */
export function attention(p: Params, prefix: string, x: tf.Tensor3D, opts: AttentionOptions): AttentionOutput {
  const [B, T, C] = x.shape;
  const nh = opts.numHeads;
  if (C % nh !== 0) throw new ShapeError(`attention ${prefix}`, `width ${C} not divisible by ${nh} heads`);
  const hs = C / nh;
  const q = splitHeads(tf.mul(linear(p, `${prefix}.q_proj`, x), 1 / Math.sqrt(hs)), B, T, nh, hs); // (B, nh, T, hs)

  let k: tf.Tensor4D;
  let v: tf.Tensor4D;
  if (opts.contextCache) {
    ({ k, v } = opts.contextCache);
  } else if (opts.context) {
    const S = opts.context.shape[1];
    k = splitHeads(linear(p, `${prefix}.k_proj`, opts.context), B, S, nh, hs); // (B, nh, S, hs)
    v = splitHeads(linear(p, `${prefix}.v_proj`, opts.context), B, S, nh, hs);
  } else {
    const kNew = splitHeads(linear(p, `${prefix}.k_proj`, x), B, T, nh, hs); // (B, nh, T, hs)
    const vNew = splitHeads(linear(p, `${prefix}.v_proj`, x), B, T, nh, hs);
    k = opts.cache ? tf.concat([opts.cache.k, kNew], 2) : kNew; // (B, nh, S, hs)
    v = opts.cache ? tf.concat([opts.cache.v, vNew], 2) : vNew;
  }
  const S = k.shape[2];

  // Batched matmuls as rank 3 with equal batch dims: broadcast batch dims give wrong grads in tfjs.
  const q3 = tf.reshape(q, [B * nh, T, hs]);
  const k3 = tf.reshape(k, [B * nh, S, hs]);
  const v3 = tf.reshape(v, [B * nh, S, hs]);
  let att: tf.Tensor = tf.reshape(tf.matMul(q3, k3, false, true), [B, nh, T, S]); // (B, nh, T, S)

  let bias: tf.Tensor | undefined;
  if (opts.causal && T > 1) {
    // query i (absolute S - T + i) sees keys j ≤ S - T + i (a single query, the newest, sees every key:
    // no mask, which saves ~7 kernels a layer per decoding step)
    const off = S - T;
    const allowed = tf.lessEqual(tf.reshape(tf.range(0, S, 1, 'int32'), [1, S]), tf.reshape(tf.range(off, off + T, 1, 'int32'), [T, 1])); // (T, S)
    bias = tf.reshape(tf.where(allowed, tf.zeros([T, S]), tf.fill([T, S], NEG_INF)), [1, 1, T, S]);
  }
  if (opts.keyMask) {
    if (opts.keyMask.shape[0] !== B || opts.keyMask.shape[1] !== S) {
      throw new ShapeError(`attention ${prefix}`, `keyMask shape ${JSON.stringify(opts.keyMask.shape)} ≠ [${B}, ${S}]`);
    }
    const kb = tf.reshape(keyMaskBias(opts.keyMask), [B, 1, 1, S]);
    bias = bias ? tf.add(bias, kb) : kb;
  }
  if (bias) att = tf.add(att, bias);
  att = tf.softmax(att, -1);
  att = dropout(att, opts.dropout ?? 0, opts.rng, opts.training ?? false);
  const yh = tf.matMul(tf.reshape(att, [B * nh, T, S]), v3); // (B·nh, T, hs)
  const y = tf.reshape(tf.transpose(tf.reshape(yh, [B, nh, T, hs]), [0, 2, 1, 3]), [B, T, C]); // (B, T, C)
  return { out: linear(p, `${prefix}.out_proj`, y) as tf.Tensor3D, cache: { k, v } };
}

/** Cross-attention keys/values of an encoder output, computed once before incremental decoding. */
export function crossAttentionCache(p: Params, prefix: string, context: tf.Tensor3D, numHeads: number): KVCache {
  const [B, S, C] = context.shape;
  const hs = C / numHeads;
  return {
    k: splitHeads(linear(p, `${prefix}.k_proj`, context), B, S, numHeads, hs),
    v: splitHeads(linear(p, `${prefix}.v_proj`, context), B, S, numHeads, hs),
  };
}

// ---------------------------------------------------------------------------------------------------
// feed-forward

export interface GluOptions extends TrainFlags {
  activation?: Activation;
  dropout?: number;
  eps?: number;
}

/**
 * DalleBart GLU feed-forward: ln0 → gelu(fc0(x)) · fc1(x) → ln1 → dropout → fc2. The layernorms are
 * applied when their parameters exist (NormFormer style uses both). x (B, T, C) → (B, T, C).
 */
export function gluFeedForward(p: Params, prefix: string, x: tf.Tensor, opts: GluOptions = {}): tf.Tensor {
  const eps = opts.eps ?? 1e-5;
  let h = hasNorm(p, `${prefix}.ln0`) ? layerNorm(p, `${prefix}.ln0`, x, eps) : x; // (B, T, C)
  const w = activation(opts.activation ?? 'gelu', linear(p, `${prefix}.fc0`, h)); // (B, T, F)
  const v = linear(p, `${prefix}.fc1`, h); // (B, T, F)
  h = tf.mul(w, v);
  if (hasNorm(p, `${prefix}.ln1`)) h = layerNorm(p, `${prefix}.ln1`, h, eps);
  h = dropout(h, opts.dropout ?? 0, opts.rng, opts.training ?? false);
  return linear(p, `${prefix}.fc2`, h); // (B, T, C)
}

/** BART feed-forward: fc2(dropout(act(fc1(x)))). x (B, T, C) → (B, T, C). */
export function feedForward(p: Params, prefix: string, x: tf.Tensor, opts: GluOptions = {}): tf.Tensor {
  let h = activation(opts.activation ?? 'gelu', linear(p, `${prefix}.fc1`, x)); // (B, T, F)
  h = dropout(h, opts.dropout ?? 0, opts.rng, opts.training ?? false);
  return linear(p, `${prefix}.fc2`, h);
}

function hasNorm(p: Params, prefix: string): boolean {
  return p.has(`${prefix}.weight`) || p.has(`${prefix}.bias`);
}

// ---------------------------------------------------------------------------------------------------
// loss

export interface CrossEntropyOptions {
  /** label smoothing ε: target = (1 − ε)·onehot + ε/V */
  labelSmoothing?: number;
  /** labels equal to this are excluded from the loss and the mean (default -100, as in PyTorch/HF) */
  ignoreIndex?: number;
}

/**
 * Mean sparse softmax cross-entropy with its own gradient. logits (N, V), labels int32 (N).
 * Never builds a one-hot of the labels: the forward gathers the label logits from the flat logits,
 * the backward is (softmax − ε/V)·w with (1 − ε)·w subtracted at the N label positions (a scatter
 * update), reusing the forward's exp(z − max) so the vocabulary is exponentiated once per step.
 * Rows whose label is `ignoreIndex` contribute neither loss nor gradient; the mean is over the others.
 */
export function sparseCrossEntropy(logits: tf.Tensor2D, labels: tf.Tensor1D, opts: CrossEntropyOptions = {}): tf.Scalar {
  const [N, V] = logits.shape;
  if (labels.shape[0] !== N) throw new ShapeError('sparseCrossEntropy', `labels length ${labels.shape[0]} ≠ logits rows ${N}`);
  if (labels.dtype !== 'int32') throw new ShapeError('sparseCrossEntropy', `labels must be int32, got ${labels.dtype}`);
  if (N * V > 2 ** 31 - 1) throw new ShapeError('sparseCrossEntropy', `${N}×${V} logits exceed int32 flat indexing; split the batch (gradient accumulation)`);
  const eps = opts.labelSmoothing ?? 0;
  if (!(eps >= 0 && eps < 1)) throw new ShapeError('sparseCrossEntropy', `labelSmoothing must be in [0, 1), got ${eps}`);
  const ignore = opts.ignoreIndex ?? -100;

  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [z, save] = args as [tf.Tensor, tf.GradSaveFunc];
    const keep = tf.notEqual(labels, ignore); // (N)
    const w = tf.cast(keep, 'float32'); // (N) 1 for rows that count
    const count = tf.maximum(tf.sum(w), 1); // scalar
    const safeLabels = tf.where(keep, labels, tf.zerosLike(labels)); // (N) in [0, V)
    const rows = tf.range(0, N, 1, 'int32');
    const flatIdx = tf.add(tf.mul(rows, tf.scalar(V, 'int32')), safeLabels); // (N) int32
    const zy = tf.gather(tf.reshape(z, [N * V]), flatIdx); // (N) label logits
    const m = tf.max(z, 1, true); // (N, 1)
    const e = tf.exp(tf.sub(z, m)); // (N, V) kept for the backward pass: saves an exp over the vocabulary
    const se = tf.sum(e, 1, true); // (N, 1)
    const lse = tf.add(tf.log(se), m); // (N, 1)
    let perRow = tf.sub(tf.reshape(lse, [N]), tf.mul(zy, 1 - eps)); // (N)
    if (eps > 0) perRow = tf.sub(perRow, tf.mul(tf.mean(z, 1), eps));
    const value = tf.div(tf.sum(tf.mul(perRow, w)), count) as tf.Scalar;
    save([e, se, w, count, flatIdx]);
    const gradFunc = (dy: tf.Tensor, saved: tf.Tensor[]): tf.Tensor => {
      const [es, ses, ws, counts, idx] = saved as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor];
      const rowScale = tf.reshape(tf.mul(tf.div(ws, counts), dy), [N, 1]); // (N, 1) dL/dloss_i
      let g = tf.mul(es, tf.div(rowScale, ses)); // (N, V) softmax · rowScale
      if (eps > 0) g = tf.sub(g, tf.mul(rowScale, eps / V));
      // subtract (1 − ε)·rowScale at (i, y_i): N sparse writes instead of a one-hot over the vocabulary
      const flat = tf.reshape(g, [N * V]);
      const idx2 = tf.reshape(idx, [N, 1]);
      const atLabel = tf.sub(tf.gather(flat, idx), tf.mul(tf.reshape(rowScale, [N]), 1 - eps)); // (N)
      return tf.reshape(tf.tensorScatterUpdate(flat, idx2, atLabel), [N, V]);
    };
    return { value, gradFunc };
  });
  return op(logits) as tf.Scalar;
}
