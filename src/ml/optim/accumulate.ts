/**
 * Gradient accumulation over micro-batches: when a batch does not fit in memory (the wasm heap is
 * 4 GiB), run it in `n` slices and average. The result equals the gradient of the mean loss over the
 * slices, so `n` does not change the effective learning rate.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Params } from '../params.js';
import { type Grads, OptimizerError, valueAndGrads } from './types.js';

export interface Accumulated {
  /** mean of the micro-batch losses */
  loss: number;
  /** mean of the micro-batch gradients (caller disposes) */
  grads: Grads;
}

/**
 * Calls `loss(i)` for i = 0 … n−1, adding gradients as it goes (only one running sum is alive at a time;
 * every micro-batch's tensors are released before the next starts).
 */
export function accumulateGradients(params: Params, n: number, loss: (micro: number) => tf.Scalar): Accumulated {
  if (!Number.isInteger(n) || n < 1) throw new OptimizerError(`micro-batch count must be a positive integer, got ${n}`);
  let sum: Grads | null = null;
  let lossSum = 0;
  for (let i = 0; i < n; i++) {
    const { loss: value, grads } = valueAndGrads(params, () => loss(i));
    lossSum += value.dataSync()[0] as number;
    value.dispose();
    if (sum === null) {
      sum = grads;
      continue;
    }
    for (const [k, g] of grads) {
      const prev = sum.get(k);
      sum.set(k, prev ? tf.add(prev, g) : g);
      if (prev) {
        prev.dispose();
        g.dispose();
      }
    }
  }
  const total = sum as Grads;
  if (n > 1) {
    for (const [k, g] of total) {
      total.set(k, tf.div(g, n));
      g.dispose();
    }
  }
  return { loss: lossSum / n, grads: total };
}
