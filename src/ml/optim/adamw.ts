/**
 * AdamW (Loshchilov & Hutter): Adam with bias correction and decoupled weight decay, computed as optax
 * does: u = m̂ / (√v̂ + ε) + λ·p, p ← p − lr·u, with m̂ = m/(1−β1ᵗ), v̂ = v/(1−β2ᵗ), t = step + 1.
 */
import * as tf from '@tensorflow/tfjs-core';
import { ADAMW_UPDATE, type AdamWAttrs } from '../kernels/fused.js';
import { nativeFusionActive } from '../kernels/ops.js';
import type { Params } from '../params.js';
import { type Grads, type LearningRate, type Optimizer, type OptimizerState, OptimizerError, Slots, checkStep, lrAt, splitSlotKey } from './types.js';

export interface AdamWOptions {
  learningRate: LearningRate;
  beta1?: number; // default 0.9
  beta2?: number; // default 0.999
  eps?: number; // default 1e-8, added to √v̂
  weightDecay?: number; // default 0.01 (PyTorch's AdamW default)
  /** which parameters are decayed (default: all); dalle-mini-style masks skip biases and norm scales */
  decayMask?: (name: string) => boolean;
}

export class AdamW implements Optimizer {
  readonly name = 'adamw';
  private t = 0;
  private readonly slots = new Slots();
  private readonly b1: number;
  private readonly b2: number;
  private readonly eps: number;
  private readonly wd: number;

  constructor(private readonly opts: AdamWOptions) {
    this.b1 = opts.beta1 ?? 0.9;
    this.b2 = opts.beta2 ?? 0.999;
    this.eps = opts.eps ?? 1e-8;
    this.wd = opts.weightDecay ?? 0.01;
    for (const [k, v] of [['beta1', this.b1], ['beta2', this.b2]] as const) {
      if (!(v >= 0 && v < 1)) throw new OptimizerError(`AdamW ${k} must be in [0, 1), got ${v}`);
    }
  }

  get step(): number {
    return this.t;
  }

  currentLr(): number {
    return lrAt(this.opts.learningRate, this.t);
  }

  apply(params: Params, grads: Grads): void {
    const lr = this.currentLr();
    const t = this.t + 1;
    const c1 = 1 - this.b1 ** t;
    const c2 = 1 - this.b2 ** t;
    // On wasm with the native kernels: one fused pass per parameter (the same formula, in float32).
    const fused = nativeFusionActive();
    for (const [name, g] of grads) {
      const p = params.get(name);
      if (g.shape.some((d, i) => d !== p.shape[i]) || g.rank !== p.rank) {
        throw new OptimizerError(`gradient of ${name} has shape ${JSON.stringify(g.shape)}, parameter is ${JSON.stringify(p.shape)}`);
      }
      const m = this.slots.get(`m/${name}`, p.shape);
      const v = this.slots.get(`v/${name}`, p.shape);
      const decay = this.wd !== 0 && (this.opts.decayMask?.(name) ?? true);
      tf.tidy(() => {
        if (fused && g.dtype === 'float32') {
          const attrs: AdamWAttrs = { lr, beta1: this.b1, beta2: this.b2, c1, c2, eps: this.eps, weightDecay: decay ? this.wd : 0 };
          const [pNew, mNew, vNew] = tf.engine().runKernel(ADAMW_UPDATE, { p, m, v, g }, attrs as unknown as tf.NamedAttrMap) as tf.Tensor[];
          m.assign(mNew as tf.Tensor);
          v.assign(vNew as tf.Tensor);
          p.assign(pNew as tf.Tensor);
          return;
        }
        const mNew = tf.add(tf.mul(m, this.b1), tf.mul(g, 1 - this.b1));
        const vNew = tf.add(tf.mul(v, this.b2), tf.mul(tf.square(g), 1 - this.b2));
        let u: tf.Tensor = tf.div(tf.div(mNew, c1), tf.add(tf.sqrt(tf.div(vNew, c2)), this.eps));
        if (decay) u = tf.add(u, tf.mul(p, this.wd));
        m.assign(mNew);
        v.assign(vNew);
        p.assign(tf.sub(p, tf.mul(u, lr)));
      });
    }
    this.t = t;
  }

  state(): OptimizerState {
    return { step: this.t, tensors: this.slots.copy() };
  }

  loadState(state: OptimizerState, params: Params): void {
    checkStep(state.step);
    this.slots.load(state.tensors, (key) => {
      const parts = splitSlotKey(key);
      if (!parts || (parts[0] !== 'm' && parts[0] !== 'v') || !params.has(parts[1])) return undefined;
      return params.get(parts[1]).shape;
    });
    this.t = state.step;
  }

  dispose(): void {
    this.slots.dispose();
  }
}
