/**
 * Ops whose stock tfjs versions are missing or wrong for training; backend independent.
 */
import * as tf from '@tensorflow/tfjs-core';

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
