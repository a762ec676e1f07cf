/**
 * Ops whose stock tfjs versions are missing or wrong for training; backend independent.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Rng } from '../rng.js';
import { nativeKernels } from './native.js';
import { DROPOUT_MASK, GELU, GELU_GRAD, GROUP_NORM, GROUP_NORM_GRAD, SPARSE_XENT, SPARSE_XENT_GRAD, SWISH, SWISH_GRAD } from './fused.js';

/**
 * The same data as `x`, invisible to autodiff: no tape node links the result to `x`, so gradients stop
 * here. Unlike a zero-gradient customGrad, the tape never walks back past it, which is what lets
 * argMin → gather (vector quantisation) differentiate: the int indices are no longer tied to trainables.
 */
export function stopGradient<T extends tf.Tensor>(x: T): T {
  const engine = tf.engine();
  const owner = engine.state.tensorInfo.get(x.dataId)?.backend ?? engine.backend;
  // One more reference to the same buffer, released when the alias is disposed (as Reshape does).
  owner.incRef(x.dataId);
  return engine.makeTensorFromTensorInfo({ dataId: x.dataId, shape: x.shape, dtype: x.dtype }, owner) as T;
}

/** Straight-through estimator: the value of `quantized`, the gradient of `x` (VQ-VAE). */
export function straightThrough<T extends tf.Tensor>(x: T, quantized: T): T {
  return tf.tidy(() => tf.add(x, stopGradient(tf.sub(quantized, x)))) as T;
}

/**
 * 2× nearest-neighbour upsampling of NHWC images. The gradient is a 2×2 block sum (reshape + sum),
 * which is exact for any batch size; the cpu backend's ResizeNearestNeighborGrad is wrong for batch > 1.
 */
export const upsampleNearest2x: (x: tf.Tensor4D) => tf.Tensor4D = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
  const x = args[0] as tf.Tensor;
  const [n, h, w, c] = x.shape as [number, number, number, number];
  const value: tf.Tensor = tf.image.resizeNearestNeighbor(x as tf.Tensor4D, [2 * h, 2 * w]);
  const gradFunc = (dy: tf.Tensor): tf.Tensor => tf.sum(tf.reshape(dy, [n, h, 2, w, 2, c]), [2, 4]);
  return { value, gradFunc };
}) as unknown as (x: tf.Tensor4D) => tf.Tensor4D;

/**
 * Per-row softmax cross-entropy against integer labels: logits (R, V), labels (R,) int32 → (R,).
 * Its own gradient, softmax − onehot, replaces the chain through logSumExp's max, whose stock gradient
 * (a broadcast Equal) takes seconds on wasm at (2048, 16384); no one-hot is built in the forward pass.
 * On wasm with the native kernels, forward and gradient are one fused kernel each (xent.ts).
 */
export function sparseSoftmaxCrossEntropy(logits: tf.Tensor2D, labels: tf.Tensor1D): tf.Tensor1D {
  const [rows, vocab] = logits.shape;
  if (labels.dtype !== 'int32' || labels.shape[0] !== rows) {
    throw new Error(`sparseSoftmaxCrossEntropy: labels must be int32 of shape [${rows}], got ${labels.dtype} [${labels.shape.join(', ')}]`);
  }
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const x = args[0] as tf.Tensor2D;
    const save = args[1] as tf.GradSaveFunc;
    if (nativeFusionActive()) {
      const [loss, lse] = tf.engine().runKernel(SPARSE_XENT, { logits: x, labels }, {}) as tf.Tensor[];
      save([x, lse as tf.Tensor]);
      const gradFunc = (dy: tf.Tensor, saved: tf.Tensor[]): tf.Tensor =>
        tf.engine().runKernel(SPARSE_XENT_GRAD, { logits: saved[0] as tf.Tensor, labels, lse: saved[1] as tf.Tensor, dy }, {}) as tf.Tensor;
      return { value: loss as tf.Tensor, gradFunc };
    }
    const shifted = tf.sub(x, tf.max(x, -1, true)); // (R, V), max 0 per row: exp cannot overflow
    const lse = tf.log(tf.sum(tf.exp(shifted), -1)); // (R,)
    const flat = tf.add(tf.mul(tf.range(0, rows, 1, 'int32'), tf.scalar(vocab, 'int32')), labels);
    const picked = tf.gather(tf.reshape(shifted, [-1]), flat); // (R,)
    save([shifted, lse]);
    const gradFunc = (dy: tf.Tensor, saved: tf.Tensor[]): tf.Tensor => {
      const [s, l] = saved as [tf.Tensor2D, tf.Tensor1D];
      const softmax = tf.exp(tf.sub(s, tf.expandDims(l, 1)));
      return tf.mul(tf.expandDims(dy, 1), tf.sub(softmax, tf.oneHot(labels, vocab)));
    };
    return { value: tf.sub(lse, picked), gradFunc };
  });
  return f(logits) as tf.Tensor1D;
}

/** True when the fused native kernels can run: the wasm backend with the native kernels active. */
export function nativeFusionActive(): boolean {
  return tf.getBackend() === 'wasm' && nativeKernels() !== null;
}

/**
 * GroupNorm of NHWC `x` with per-channel scale and shift as one native kernel each way (call only when
 * nativeFusionActive()). Same result as the moments-based version in nn.ts within float32 rounding.
 */
export function fusedGroupNorm(x: tf.Tensor4D, weight: tf.Tensor1D, bias: tf.Tensor1D, groups: number, eps: number): tf.Tensor4D {
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xi, w, b] = args as [tf.Tensor, tf.Tensor, tf.Tensor];
    const save = args[3] as tf.GradSaveFunc;
    const [y, mean, rstd] = tf.engine().runKernel(GROUP_NORM, { x: xi, w, b }, { groups, eps }) as tf.Tensor[];
    save([xi, w, mean as tf.Tensor, rstd as tf.Tensor]);
    const gradFunc = (dy: tf.Tensor, saved: tf.Tensor[]): tf.Tensor[] => {
      const [sx, sw, sm, sr] = saved as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor];
      return tf.engine().runKernel(GROUP_NORM_GRAD, { x: sx, w: sw, mean: sm, rstd: sr, dy }, { groups }) as tf.Tensor[];
    };
    return { value: y as tf.Tensor, gradFunc };
  });
  return f(x, weight, bias) as tf.Tensor4D;
}

/** An activation as one native kernel each way (call only when nativeFusionActive()). */
function fusedActivation(kernel: string, gradKernel: string): (x: tf.Tensor) => tf.Tensor {
  return tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const x = args[0] as tf.Tensor;
    const save = args[1] as tf.GradSaveFunc;
    save([x]);
    const gradFunc = (dy: tf.Tensor, saved: tf.Tensor[]): tf.Tensor => tf.engine().runKernel(gradKernel, { x: saved[0] as tf.Tensor, dy }, {}) as tf.Tensor;
    return { value: tf.engine().runKernel(kernel, { x }, {}) as tf.Tensor, gradFunc };
  }) as unknown as (x: tf.Tensor) => tf.Tensor;
}

/** swish x·σ(x) as one native kernel each way (call only when nativeFusionActive()). */
export const fusedSwish = fusedActivation(SWISH, SWISH_GRAD);

/** Exact GELU x·Φ(x) as one native kernel each way (call only when nativeFusionActive()). */
export const fusedGelu = fusedActivation(GELU, GELU_GRAD);

/**
 * The inverted-dropout mask of `shape` (keep → 1/keep, drop → 0) drawn natively from `rng`, which advances as
 * if the JS loop had drawn it (call only when nativeFusionActive()).
 */
export function fusedDropoutMask(shape: number[], keep: number, rng: Rng): tf.Tensor {
  const state = rng.state();
  const words = Uint32Array.from(state.s);
  const mask = tf.engine().runKernel(DROPOUT_MASK, {}, { shape, threshold: keep * 16777216, scale: 1 / keep, state: words } as unknown as tf.NamedAttrMap) as tf.Tensor;
  rng.restore({ ...state, s: [words[0] as number, words[1] as number, words[2] as number, words[3] as number] });
  return mask;
}
