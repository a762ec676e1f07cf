/**
 * One optimizer update from a loss over micro-batches: accumulate → (freeze) → clip → apply. Shared by the
 * trainers whose step is a single loss (bart-pretrain, seq2seq-train, clip-train); vqgan-finetune's
 * generator/discriminator pair calls the optimizers itself.
 */
import { tf } from '../backend.js';
import { accumulateGradients, clipByGlobalNorm, disposeGrads, globalNorm, type Optimizer } from '../optim/index.js';
import type { Grads } from '../optim/types.js';
import type { Params } from '../params.js';

export interface UpdateOptions {
  /** micro-batches whose mean loss is the step's loss (1 = no accumulation) */
  microBatches: number;
  /** global-norm clip (0 = off) */
  clip: number;
  /** parameters left unchanged this step (their gradients are dropped), e.g. a frozen encoder */
  frozen?: (name: string) => boolean;
  /** sees the final gradients before they are applied (e.g. per-layer norms for the log) */
  onGrads?: (grads: Grads) => void;
}

export interface UpdateResult {
  loss: number;
  /** global gradient norm before clipping */
  gradNorm: number;
}

export function optimizerUpdate(params: Params, optimizer: Optimizer, microLoss: (micro: number) => tf.Scalar, o: UpdateOptions): UpdateResult {
  const acc = accumulateGradients(params, o.microBatches, microLoss);
  let grads = acc.grads;
  try {
    if (o.frozen) {
      for (const [name, g] of [...grads]) {
        if (!o.frozen(name)) continue;
        g.dispose();
        grads.delete(name);
      }
    }
    let gradNorm: number;
    if (o.clip > 0) {
      const clipped = clipByGlobalNorm(grads, o.clip);
      grads = clipped.grads;
      gradNorm = clipped.norm;
    } else {
      gradNorm = globalNorm(grads);
    }
    o.onGrads?.(grads);
    optimizer.apply(params, grads);
    return { loss: acc.loss, gradNorm };
  } finally {
    disposeGrads(grads);
  }
}
