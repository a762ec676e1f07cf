/** Shared helpers for the ml tests: cpu backend, tensors from the seeded Rng, finite differences. */
import * as tf from '@tensorflow/tfjs-core';
import { initCompute } from '../../src/ml/backend.js';
import type { DalleBartConfig } from '../../src/ml/models/dallebart.js';
import type { Vqgan } from '../../src/ml/models/vqgan.js';
import { Rng } from '../../src/ml/rng.js';

/** cpu backend through initCompute, which also registers tfjs' gradients (core alone has none). */
export async function useCpu(): Promise<void> {
  await initCompute({ backend: 'cpu', selfCheck: false });
}

export function randn(rng: Rng, shape: number[], std = 1): tf.Tensor {
  return tf.tensor(rng.fillNormal(new Float32Array(shape.reduce((a, b) => a * b, 1)), 0, std), shape);
}

/**
 * Central finite differences of a scalar function at `x`, on `count` coordinates picked by the rng
 * (float32 arithmetic, so the step is large and the comparison tolerance loose).
 */
export function finiteDiff(f: (x: tf.Tensor) => tf.Scalar, x: tf.Tensor, rng: Rng, count = 6, h = 1e-2): { idx: number[]; numeric: number[] } {
  const base = x.dataSync().slice() as Float32Array;
  const idx: number[] = [];
  const numeric: number[] = [];
  for (let c = 0; c < count; c++) {
    const i = rng.int(base.length);
    const plus = base.slice(); plus[i] = (plus[i] as number) + h;
    const minus = base.slice(); minus[i] = (minus[i] as number) - h;
    const fp = tf.tidy(() => f(tf.tensor(plus, x.shape)).dataSync()[0] as number);
    const fm = tf.tidy(() => f(tf.tensor(minus, x.shape)).dataSync()[0] as number);
    idx.push(i);
    numeric.push((fp - fm) / (2 * h));
  }
  return { idx, numeric };
}

/** Asserts the analytic gradient of f at x matches finite differences. */
export function gradCheck(f: (x: tf.Tensor) => tf.Scalar, x: tf.Tensor, rng: Rng, tol = 2e-2): void {
  const g = tf.tidy(() => tf.grad(f)(x).dataSync().slice());
  const { idx, numeric } = finiteDiff(f, x, rng);
  idx.forEach((i, k) => {
    const a = g[i] as number;
    const n = numeric[k] as number;
    if (Math.abs(a - n) > tol * Math.max(1, Math.abs(n))) {
      throw new Error(`gradient mismatch at ${i}: analytic ${a}, numeric ${n}`);
    }
  });
}

export function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0] as number);
}

/** ‖∂loss/∂W‖ at the decoder's last conv W, for a loss of the reconstruction of x (the adaptive GAN weight's ingredients). */
export function decoderLastGradNorm(m: Vqgan, x: tf.Tensor4D, loss: (xrec: tf.Tensor4D) => tf.Scalar): number {
  const w = m.params.get('decoder.conv_out.weight');
  const { grads, value } = tf.variableGrads(() => loss(m.forward(x).xrec), [w]);
  const n = tf.norm(grads[w.name]!).dataSync()[0]!;
  tf.dispose([value, ...Object.values(grads)]);
  return n;
}

/** A tiny DalleBart: 2 + 2 layers, width 32, 4 heads, GLU 64, 8 text positions, 16 codes of 24. */
export const TINY: Partial<DalleBartConfig> = {
  vocab_size: 40,
  d_model: 32,
  encoder_layers: 2,
  decoder_layers: 2,
  encoder_attention_heads: 4,
  decoder_attention_heads: 4,
  encoder_ffn_dim: 64,
  decoder_ffn_dim: 64,
  max_text_length: 8,
  image_vocab_size: 24,
  image_length: 16,
};
