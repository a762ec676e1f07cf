/**
 * Fused native kernels for the wasm backend, each replacing a chain of tf ops that would make many
 * passes over memory. Registered on wasm; callers use them only while the native kernels are active.
 * - Sparse softmax cross-entropy (forward: loss and log-sum-exp per row; backward: dy · (softmax −
 *   onehot)). Over a 16k vocabulary the tf-op version makes ~10 passes over (rows, vocab) with scalar
 *   exp; these make two vectorised ones. Used by ops.ts.
 * - One AdamW update per parameter: reads p, m, v, g once and writes p', m', v' (instead of ~12 ops).
 *   Used by optim/adamw.ts.
 * - GroupNorm (NHWC) forward and backward, and swish x·σ(x) with its gradient: the norm + swish pair
 *   of every taming ResnetBlock, ~20 small ops each way otherwise. Layer norm runs as a one-group GroupNorm.
 *   Exact GELU with its gradient. Used by nn.ts.
 * - Dropout masks drawn natively from the Rng's xoshiro128** stream (the same masks as the JS loop, without a
 *   pass of JS per element and an upload). Used by nn.ts.
 */
import * as tf from '@tensorflow/tfjs-core';
import { nativeKernels } from './native.js';
import { asWasmBackend, floatOffset, heapBuffer, WasmKernelError } from './wasm-heap.js';

export const SPARSE_XENT = 'MinidalleSparseXent';
export const SPARSE_XENT_GRAD = 'MinidalleSparseXentGrad';
export const ADAMW_UPDATE = 'MinidalleAdamW';
export const GROUP_NORM = 'MinidalleGroupNorm';
export const GROUP_NORM_GRAD = 'MinidalleGroupNormGrad';
export const SWISH = 'MinidalleSwish';
export const SWISH_GRAD = 'MinidalleSwishGrad';
export const GELU = 'MinidalleGelu';
export const GELU_GRAD = 'MinidalleGeluGrad';
export const DROPOUT_MASK = 'MinidalleDropoutMask';

type KernelArgs = { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap };

function native(kernel: string) {
  const k = nativeKernels();
  if (k === null) throw new WasmKernelError(kernel, 'needs the native kernels, which are not active');
  return k;
}

function sparseXent(args: KernelArgs): tf.TensorInfo[] {
  const logits = args.inputs['logits'] as tf.TensorInfo;
  const labels = args.inputs['labels'] as tf.TensorInfo;
  const [rows, vocab] = logits.shape as [number, number];
  const k = native(SPARSE_XENT);
  const backend = asWasmBackend(args.backend);
  const loss = backend.makeOutput([rows], 'float32');
  const lse = backend.makeOutput([rows], 'float32');
  const off = (t: tf.TensorInfo) => floatOffset(backend, t, SPARSE_XENT);
  k.sparseXent(heapBuffer(backend), off(logits), off(labels), off(loss), off(lse), rows, vocab);
  return [loss, lse];
}

function sparseXentGrad(args: KernelArgs): tf.TensorInfo {
  const { logits, labels, lse, dy } = args.inputs as Record<'logits' | 'labels' | 'lse' | 'dy', tf.TensorInfo>;
  const [rows, vocab] = logits.shape as [number, number];
  const k = native(SPARSE_XENT_GRAD);
  const backend = asWasmBackend(args.backend);
  const dx = backend.makeOutput([rows, vocab], 'float32');
  const off = (t: tf.TensorInfo) => floatOffset(backend, t, SPARSE_XENT_GRAD);
  k.sparseXentGrad(heapBuffer(backend), off(logits), off(labels), off(lse), off(dy), off(dx), rows, vocab);
  return dx;
}

export interface AdamWAttrs {
  lr: number;
  beta1: number;
  beta2: number;
  /** Bias corrections 1 − β1ᵗ and 1 − β2ᵗ. */
  c1: number;
  c2: number;
  eps: number;
  /** 0 for a parameter that is not decayed. */
  weightDecay: number;
}

function adamwUpdate(args: KernelArgs & { attrs?: tf.NamedAttrMap }): tf.TensorInfo[] {
  const { p, m, v, g } = args.inputs as Record<'p' | 'm' | 'v' | 'g', tf.TensorInfo>;
  const a = args.attrs as unknown as AdamWAttrs;
  const k = native(ADAMW_UPDATE);
  const backend = asWasmBackend(args.backend);
  const outs = [p, m, v].map((t) => backend.makeOutput(t.shape, 'float32'));
  const n = tf.util.sizeFromShape(p.shape);
  if (n === 0) return outs;
  const off = (t: tf.TensorInfo) => floatOffset(backend, t, ADAMW_UPDATE);
  const [po, mo, vo] = outs as [tf.TensorInfo, tf.TensorInfo, tf.TensorInfo];
  k.adamw(heapBuffer(backend), off(p), off(m), off(v), off(g), off(po), off(mo), off(vo), n, a.lr, a.beta1, a.beta2, a.c1, a.c2, a.eps, a.weightDecay);
  return outs;
}

export const adamwUpdateConfig: tf.KernelConfig = { kernelName: ADAMW_UPDATE, backendName: 'wasm', kernelFunc: adamwUpdate as unknown as tf.KernelFunc };
export const sparseXentConfig: tf.KernelConfig = { kernelName: SPARSE_XENT, backendName: 'wasm', kernelFunc: sparseXent as unknown as tf.KernelFunc };
export const sparseXentGradConfig: tf.KernelConfig = { kernelName: SPARSE_XENT_GRAD, backendName: 'wasm', kernelFunc: sparseXentGrad as unknown as tf.KernelFunc };

/** [b, hw, c] of an NHWC tensor. */
function nhwc(x: tf.TensorInfo): [number, number, number] {
  const [b, h, w, c] = x.shape as [number, number, number, number];
  return [b, h * w, c];
}

function groupNorm(args: KernelArgs & { attrs?: tf.NamedAttrMap }): tf.TensorInfo[] {
  const { x, w, b } = args.inputs as Record<'x' | 'w' | 'b', tf.TensorInfo>;
  const { groups, eps } = args.attrs as { groups: number; eps: number };
  const k = native(GROUP_NORM);
  const backend = asWasmBackend(args.backend);
  const [batch, hw, c] = nhwc(x);
  const y = backend.makeOutput(x.shape, 'float32');
  const mean = backend.makeOutput([batch, groups], 'float32');
  const rstd = backend.makeOutput([batch, groups], 'float32');
  const off = (t: tf.TensorInfo) => floatOffset(backend, t, GROUP_NORM);
  k.groupNorm(heapBuffer(backend), off(x), off(w), off(b), off(y), off(mean), off(rstd), batch, hw, c, groups, eps);
  return [y, mean, rstd];
}

function groupNormGrad(args: KernelArgs & { attrs?: tf.NamedAttrMap }): tf.TensorInfo[] {
  const { x, w, mean, rstd, dy } = args.inputs as Record<'x' | 'w' | 'mean' | 'rstd' | 'dy', tf.TensorInfo>;
  const { groups } = args.attrs as { groups: number };
  const k = native(GROUP_NORM_GRAD);
  const backend = asWasmBackend(args.backend);
  const [batch, hw, c] = nhwc(x);
  const dx = backend.makeOutput(x.shape, 'float32');
  const dw = backend.makeOutput([c], 'float32');
  const db = backend.makeOutput([c], 'float32');
  const off = (t: tf.TensorInfo) => floatOffset(backend, t, GROUP_NORM_GRAD);
  k.groupNormGrad(heapBuffer(backend), off(x), off(w), off(mean), off(rstd), off(dy), off(dx), off(dw), off(db), batch, hw, c, groups);
  return [dx, dw, db];
}

/** y = f(x) by the native unary loop `op` (swish 4, exact GELU 5). */
function unaryKernel(name: string, op: number): tf.KernelFunc {
  return ((args: KernelArgs): tf.TensorInfo => {
    const x = args.inputs['x'] as tf.TensorInfo;
    const k = native(name);
    const backend = asWasmBackend(args.backend);
    const y = backend.makeOutput(x.shape, 'float32');
    const n = tf.util.sizeFromShape(x.shape);
    if (n > 0) k.unary(heapBuffer(backend), op, floatOffset(backend, x, name), floatOffset(backend, y, name), n);
    return y;
  }) as unknown as tf.KernelFunc;
}

/** dx = dy · f'(x) by the native gradient loop of an activation. */
function activationGradKernel(name: string, which: 'swishGrad' | 'geluGrad'): tf.KernelFunc {
  return ((args: KernelArgs): tf.TensorInfo => {
    const { x, dy } = args.inputs as Record<'x' | 'dy', tf.TensorInfo>;
    const k = native(name);
    const backend = asWasmBackend(args.backend);
    const dx = backend.makeOutput(x.shape, 'float32');
    const n = tf.util.sizeFromShape(x.shape);
    const off = (t: tf.TensorInfo) => floatOffset(backend, t, name);
    if (n > 0) k[which](heapBuffer(backend), off(x), off(dy), off(dx), n);
    return dx;
  }) as unknown as tf.KernelFunc;
}

/** attrs: shape, threshold (keep · 2^24), scale (1 / keep), state (the Rng's 4 words, advanced in place). */
function dropoutMask(args: KernelArgs): tf.TensorInfo {
  const { shape, threshold, scale, state } = args.attrs as unknown as { shape: number[]; threshold: number; scale: number; state: Uint32Array };
  const k = native(DROPOUT_MASK);
  const backend = asWasmBackend(args.backend);
  const y = backend.makeOutput(shape, 'float32');
  const n = tf.util.sizeFromShape(shape);
  if (n > 0) k.dropoutMask(heapBuffer(backend), floatOffset(backend, y, DROPOUT_MASK), n, state, threshold, scale);
  return y;
}

export const groupNormConfig: tf.KernelConfig = { kernelName: GROUP_NORM, backendName: 'wasm', kernelFunc: groupNorm as unknown as tf.KernelFunc };
export const groupNormGradConfig: tf.KernelConfig = { kernelName: GROUP_NORM_GRAD, backendName: 'wasm', kernelFunc: groupNormGrad as unknown as tf.KernelFunc };
export const swishConfig: tf.KernelConfig = { kernelName: SWISH, backendName: 'wasm', kernelFunc: unaryKernel(SWISH, 4) };
export const swishGradConfig: tf.KernelConfig = { kernelName: SWISH_GRAD, backendName: 'wasm', kernelFunc: activationGradKernel(SWISH_GRAD, 'swishGrad') };
export const geluConfig: tf.KernelConfig = { kernelName: GELU, backendName: 'wasm', kernelFunc: unaryKernel(GELU, 5) };
export const dropoutMaskConfig: tf.KernelConfig = { kernelName: DROPOUT_MASK, backendName: 'wasm', kernelFunc: dropoutMask as unknown as tf.KernelFunc };
export const geluGradConfig: tf.KernelConfig = { kernelName: GELU_GRAD, backendName: 'wasm', kernelFunc: activationGradKernel(GELU_GRAD, 'geluGrad') };
