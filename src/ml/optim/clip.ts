/** Global-norm gradient clipping (as optax.clip_by_global_norm / torch.nn.utils.clip_grad_norm_). */
import * as tf from '@tensorflow/tfjs-core';
import type { Grads } from './types.js';

/** √(Σ over all gradients of Σ g²), as a number (one sync; it is also what gets logged). */
export function globalNorm(grads: Grads): number {
  if (grads.size === 0) return 0;
  return tf.tidy(() => tf.sqrt(tf.addN([...grads.values()].map((g) => tf.sum(tf.square(g))))).dataSync()[0] as number);
}

/**
 * Scales all gradients by min(1, maxNorm / ‖g‖) so their global norm is at most `maxNorm`. Returns new
 * tensors and disposes the inputs (the usual `grads = clipByGlobalNorm(grads, 1).grads` then works
 * without leaking); `norm` is the norm before clipping.
 */
export function clipByGlobalNorm(grads: Grads, maxNorm: number): { grads: Grads; norm: number } {
  const norm = globalNorm(grads);
  const out: Grads = new Map();
  if (norm <= maxNorm || norm === 0) {
    for (const [k, g] of grads) out.set(k, g);
    return { grads: out, norm };
  }
  const scale = maxNorm / norm;
  for (const [k, g] of grads) {
    out.set(k, tf.mul(g, scale));
    g.dispose();
  }
  return { grads: out, norm };
}

/**
 * L2 norm of each tensor by name, read back in one sync (for `grad_norm/<name>` and `param_norm/<name>`
 * logs, whose names are the HF names).
 */
export function normsByName(tensors: Map<string, tf.Tensor> | Iterable<[string, tf.Tensor]>): Map<string, number> {
  const entries = [...tensors];
  if (entries.length === 0) return new Map();
  const values = tf.tidy(() => tf.stack(entries.map(([, t]) => tf.norm(t))).dataSync());
  return new Map(entries.map(([name], i) => [name, values[i] as number]));
}
