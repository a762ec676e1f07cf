/**
 * Fused native kernels of one incremental decoding step (DalleBart.decodeStep), for the wasm backend with
 * the native kernels active. A step works on a few rows of d_model floats, where a stock tf op costs more
 * in dispatch (~10 µs) than in arithmetic, and the plain step was ~500 ops. These do in one op each:
 * - a linear layer with its bias and activation: act(x·W + b) (one sgemv/sgemm and one pass);
 * - a residual add with its layer norm: LN(x + r), optionally returning x + r too (pre-LN's residual stream);
 * - attention of one new query per row over cached keys/values, for decoder self-attention appending the
 *   new key/value row to a preallocated cache in place (no concat, no copy of the past), and for cross-
 *   attention over the encoder's keys/values with the padding bias.
 * No gradients: these are for inference. Each has the same result as the tf-op version in nn.ts within
 * float32 rounding (tests/ml/decode-kernels.test.ts).
 *
 * The in-place write is the one exception to tfjs' immutable tensors: the cache tensors are created by
 * `emptyKvCache`, owned by a decoding state, and never handed to anyone else, so no reader can see a
 * value change under it; the attention reads only rows it has written.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Activation } from '../nn.js';
import { nativeKernels } from './native.js';
import { asWasmBackend, floatOffset, heapBuffer, WasmKernelError } from './wasm-heap.js';

export const DECODE_LINEAR = 'MinidalleDecodeLinear';
export const ADD_LAYER_NORM = 'MinidalleAddLayerNorm';
export const ATTEND_ONE = 'MinidalleAttendOne';

/** The native kernel's activation codes. */
const ACTIVATION_CODE: Record<'none' | Activation, number> = { none: 0, gelu: 1, gelu_new: 2, relu: 3, swish: 4, silu: 4 };

type KernelArgs = { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap };

function native(kernel: string) {
  const k = nativeKernels();
  if (k === null) throw new WasmKernelError(kernel, 'needs the native kernels, which are not active');
  return k;
}

function float32(kernel: string, ...infos: (tf.TensorInfo | undefined)[]): void {
  for (const t of infos) if (t && t.dtype !== 'float32') throw new WasmKernelError(kernel, `operands must be float32, got ${t.dtype}`);
}

function decodeLinear(args: KernelArgs): tf.TensorInfo {
  const { x, w, b } = args.inputs as Record<'x' | 'w' | 'b', tf.TensorInfo | undefined>;
  const { activation } = args.attrs as { activation: number };
  const k = native(DECODE_LINEAR);
  float32(DECODE_LINEAR, x, w, b);
  const [rows, inDim] = (x as tf.TensorInfo).shape as [number, number];
  const [wIn, outDim] = (w as tf.TensorInfo).shape as [number, number];
  if (wIn !== inDim || (b && b.shape[0] !== outDim)) throw new WasmKernelError(DECODE_LINEAR, `x ${JSON.stringify(x?.shape)}, w ${JSON.stringify(w?.shape)} and b ${JSON.stringify(b?.shape)} do not fit`);
  const backend = asWasmBackend(args.backend);
  const y = backend.makeOutput([rows, outDim], 'float32');
  if (rows === 0) return y;
  const off = (t: tf.TensorInfo | undefined) => (t ? floatOffset(backend, t, DECODE_LINEAR) : -1);
  k.linear(heapBuffer(backend), off(x), off(w), off(b), off(y), rows, inDim, outDim, activation);
  return y;
}

function addLayerNormKernel(args: KernelArgs): tf.TensorInfo | tf.TensorInfo[] {
  const { x, r, w, b } = args.inputs as Record<'x' | 'r' | 'w' | 'b', tf.TensorInfo | undefined>;
  const { eps, keepSum } = args.attrs as { eps: number; keepSum: boolean };
  const k = native(ADD_LAYER_NORM);
  float32(ADD_LAYER_NORM, x, r, w, b);
  const [rows, c] = (x as tf.TensorInfo).shape as [number, number];
  if ((r && !(r.shape[1] === c && (r.shape[0] === rows || r.shape[0] === 1))) || (w && w.shape[0] !== c) || (b && b.shape[0] !== c)) {
    throw new WasmKernelError(ADD_LAYER_NORM, `x ${JSON.stringify(x?.shape)}, r ${JSON.stringify(r?.shape)}, w and b of ${c} do not fit`);
  }
  const backend = asWasmBackend(args.backend);
  const y = backend.makeOutput([rows, c], 'float32');
  const s = keepSum ? backend.makeOutput([rows, c], 'float32') : undefined;
  if (rows === 0) return s ? [y, s] : y;
  const off = (t: tf.TensorInfo | undefined) => (t ? floatOffset(backend, t, ADD_LAYER_NORM) : -1);
  k.addLayerNorm(heapBuffer(backend), off(x), off(r), r ? (r.shape[0] as number) : rows, off(w), off(b), off(y), off(s), rows, c, eps);
  return s ? [y, s] : y; // one output is returned bare, so that runKernel gives a tensor, not a list
}

function attendOneKernel(args: KernelArgs): tf.TensorInfo {
  const { q, k: keys, v: values, bias } = args.inputs as Record<'q' | 'k' | 'v' | 'bias', tf.TensorInfo | undefined>;
  const { numHeads, position, append } = args.attrs as { numHeads: number; position: number; append: boolean };
  const nk = native(ATTEND_ONE);
  float32(ATTEND_ONE, q, keys, values, bias);
  const [rows, width] = (q as tf.TensorInfo).shape as [number, number];
  const [kb, kh, cap, hs] = (keys as tf.TensorInfo).shape as [number, number, number, number];
  const C = kh * hs;
  // appending: q is (rows, 3C) = [q | k | v] of the new position, and the keys are positions 0 … position
  const n = append ? position + 1 : cap;
  if (kh !== numHeads || kb !== rows || !tf.util.arraysEqual((values as tf.TensorInfo).shape, keys?.shape ?? []) || width !== (append ? 3 * C : C) || n > cap || (bias && !tf.util.arraysEqual(bias.shape, [rows, n]))) {
    throw new WasmKernelError(ATTEND_ONE, `q ${JSON.stringify(q?.shape)}, k/v ${JSON.stringify(keys?.shape)} (${numHeads} heads${append ? `, appending at ${position}` : ''}) and bias ${JSON.stringify(bias?.shape)} do not fit`);
  }
  const backend = asWasmBackend(args.backend);
  const y = backend.makeOutput([rows, C], 'float32');
  if (rows === 0) return y;
  const off = (t: tf.TensorInfo | undefined) => (t ? floatOffset(backend, t, ATTEND_ONE) : -1);
  const qOff = off(q);
  nk.attendOne(heapBuffer(backend), qOff, width, off(keys), off(values), cap, n, off(bias), off(y), rows, kh, hs, append ? qOff + C : -1, append ? qOff + 2 * C : -1, width, append ? position : 0, 1 / Math.sqrt(hs));
  return y;
}

export const decodeLinearConfig: tf.KernelConfig = { kernelName: DECODE_LINEAR, backendName: 'wasm', kernelFunc: decodeLinear as unknown as tf.KernelFunc };
export const addLayerNormConfig: tf.KernelConfig = { kernelName: ADD_LAYER_NORM, backendName: 'wasm', kernelFunc: addLayerNormKernel as unknown as tf.KernelFunc };
export const attendOneConfig: tf.KernelConfig = { kernelName: ATTEND_ONE, backendName: 'wasm', kernelFunc: attendOneKernel as unknown as tf.KernelFunc };

// ---------------------------------------------------------------------------------------------------
// ops (call only when nativeFusionActive())

/** act(x·w + b): x (R, in), w (in, out), b (out) or none → (R, out). */
export function fusedLinear(x: tf.Tensor2D, w: tf.Tensor2D, b: tf.Tensor1D | undefined, activation: 'none' | Activation = 'none'): tf.Tensor2D {
  return tf.engine().runKernel(DECODE_LINEAR, { x, w, ...(b ? { b } : {}) }, { activation: ACTIVATION_CODE[activation] }) as tf.Tensor2D;
}

/** LayerNorm of x + r per row (r absent: of x), with scale w and shift b when given. x (R, C), r (R or 1, C) → (R, C). */
export function fusedAddLayerNorm(x: tf.Tensor2D, r: tf.Tensor2D | undefined, w: tf.Tensor1D | undefined, b: tf.Tensor1D | undefined, eps = 1e-5): tf.Tensor2D {
  return tf.engine().runKernel(ADD_LAYER_NORM, { x, ...(r ? { r } : {}), ...(w ? { w } : {}), ...(b ? { b } : {}) }, { eps, keepSum: false }) as tf.Tensor2D;
}

/** The same, also returning the sum x + r: [LN(x + r), x + r]. */
export function fusedAddLayerNormKeepSum(x: tf.Tensor2D, r: tf.Tensor2D, w: tf.Tensor1D | undefined, b: tf.Tensor1D | undefined, eps = 1e-5): [tf.Tensor2D, tf.Tensor2D] {
  return tf.engine().runKernel(ADD_LAYER_NORM, { x, r, ...(w ? { w } : {}), ...(b ? { b } : {}) }, { eps, keepSum: true }) as unknown as [tf.Tensor2D, tf.Tensor2D];
}

/** A zeroed key/value cache of `capacity` positions for `rows` rows: (rows, heads, capacity, hs) each. */
export function emptyKvCache(rows: number, heads: number, capacity: number, hs: number): { k: tf.Tensor4D; v: tf.Tensor4D } {
  return { k: tf.zeros([rows, heads, capacity, hs]), v: tf.zeros([rows, heads, capacity, hs]) };
}

/**
 * Causal self-attention of the newest position: qkv (R, 3C) holds its projected [q | k | v]; k and v
 * are written into row `position` of the caches (R, nh, capacity, hs), in place, and q attends to
 * positions 0 … position. → (R, C), heads merged. Queries are scaled by hs^-0.5, as nn.ts's attention.
 */
export function cachedSelfAttention(qkv: tf.Tensor2D, cache: { k: tf.Tensor4D; v: tf.Tensor4D }, position: number, numHeads: number): tf.Tensor2D {
  return tf.engine().runKernel(ATTEND_ONE, { q: qkv, k: cache.k, v: cache.v }, { numHeads, position, append: true }) as tf.Tensor2D;
}

/** One query per row q (R, C) over the context's k, v (R, nh, S, hs) plus an additive bias (R, S). → (R, C). */
export function cachedCrossAttention(q: tf.Tensor2D, kv: { k: tf.Tensor4D; v: tf.Tensor4D }, bias: tf.Tensor2D | undefined, numHeads: number): tf.Tensor2D {
  return tf.engine().runKernel(ATTEND_ONE, { q, k: kv.k, v: kv.v, ...(bias ? { bias } : {}) }, { numHeads, position: 0, append: false }) as tf.Tensor2D;
}
