/**
 * Adafactor (Shazeer & Stern 2018) with optax's semantics (`optax.adafactor`), the optimizer dalle-mini
 * offers besides Distributed Shampoo:
 *
 *   ĝ² = g² + ε1,  β2ₜ = 1 − (t+1)^−0.8 with t = step − decayOffset
 *   ≥2-D parameter whose second-largest dim ≥ minDimSizeToFactor (factored; d0 = largest dim, d1 = second):
 *     R ← β2ₜ·R + (1−β2ₜ)·mean_d0(ĝ²),  C ← β2ₜ·C + (1−β2ₜ)·mean_d1(ĝ²)
 *     u = g · (R / mean_d1(R))^−½ · C^−½            (the rank-1 estimate of v̂^−½)
 *   otherwise: v ← β2ₜ·v + (1−β2ₜ)·ĝ²,  u = g · v^−½
 *   u ← u / max(1, rms(u)/clippingThreshold)        (per parameter)
 *   u ← lr · u;  u ← u · max(rms(p), 1e-3) if multiplyByParameterScale
 *   u ← β1·m + (1−β1)·u if momentum (no debiasing);  u ← u + λ·p if weightDecay
 *   p ← p − u
 * "relative step" (lr from the step count) is off: the learning rate is the given one or schedule.
 * Note optax adds the weight decay after the learning-rate scaling, so λ is not multiplied by lr.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Params } from '../params.js';
import { type Grads, type LearningRate, type Optimizer, type OptimizerState, OptimizerError, Slots, checkStep, lrAt, splitSlotKey } from './types.js';

export interface AdafactorOptions {
  learningRate: LearningRate;
  /** factor second moments of ≥2-D parameters (default true) */
  factored?: boolean;
  /** exponent of the β2 schedule (default 0.8) */
  decayRate?: number;
  decayOffset?: number;
  /** a parameter is factored only if its second-largest dim is at least this (default 128) */
  minDimSizeToFactor?: number;
  /** ε1 added to g² (default 1e-30) */
  eps?: number;
  /** per-parameter update RMS clip (default 1; null disables) */
  clippingThreshold?: number | null;
  /** scale updates by max(rms(p), 1e-3) (default false, as dalle-mini runs it) */
  multiplyByParameterScale?: boolean;
  /** first-moment EMA coefficient (default none) */
  momentum?: number | null;
  weightDecay?: number;
  decayMask?: (name: string) => boolean;
}

/** [d1, d0]: second-largest and largest dim (stable on ties), or null when the parameter is not factored. */
export function factoredDims(shape: readonly number[], factored: boolean, minDim: number): [number, number] | null {
  if (!factored || shape.length < 2) return null;
  const order = shape.map((d, i) => [d, i] as const).sort((a, b) => a[0] - b[0] || a[1] - b[1]).map(([, i]) => i);
  const d1 = order[order.length - 2] as number;
  const d0 = order[order.length - 1] as number;
  if ((shape[d1] as number) < minDim) return null;
  return [d1, d0];
}

function without(shape: readonly number[], axis: number): number[] {
  return shape.filter((_, i) => i !== axis);
}

function rms(x: tf.Tensor): tf.Scalar {
  return tf.sqrt(tf.mean(tf.square(x)));
}

export class Adafactor implements Optimizer {
  readonly name = 'adafactor';
  private t = 0;
  private readonly slots = new Slots();
  private readonly o: Required<Omit<AdafactorOptions, 'decayMask' | 'learningRate'>>;

  constructor(private readonly opts: AdafactorOptions) {
    this.o = {
      factored: opts.factored ?? true,
      decayRate: opts.decayRate ?? 0.8,
      decayOffset: opts.decayOffset ?? 0,
      minDimSizeToFactor: opts.minDimSizeToFactor ?? 128,
      eps: opts.eps ?? 1e-30,
      clippingThreshold: opts.clippingThreshold === undefined ? 1 : opts.clippingThreshold,
      multiplyByParameterScale: opts.multiplyByParameterScale ?? false,
      momentum: opts.momentum ?? null,
      weightDecay: opts.weightDecay ?? 0,
    };
  }

  get step(): number {
    return this.t;
  }

  currentLr(): number {
    return lrAt(this.opts.learningRate, this.t);
  }

  /** Slot names and shapes for a parameter: vr/vc (factored) or v, plus m with momentum. */
  private slotShapes(shape: readonly number[]): Map<string, number[]> {
    const out = new Map<string, number[]>();
    const dims = factoredDims(shape, this.o.factored, this.o.minDimSizeToFactor);
    if (dims) {
      out.set('vr', without(shape, dims[1]));
      out.set('vc', without(shape, dims[0]));
    } else {
      out.set('v', shape.slice());
    }
    if (this.o.momentum !== null) out.set('m', shape.slice());
    return out;
  }

  apply(params: Params, grads: Grads): void {
    const lr = this.currentLr();
    const i = this.t - this.o.decayOffset;
    const beta2 = 1 - (i + 1) ** -this.o.decayRate;
    const clip = this.o.clippingThreshold;
    for (const [name, g] of grads) {
      const p = params.get(name);
      if (g.rank !== p.rank || g.shape.some((d, k) => d !== p.shape[k])) {
        throw new OptimizerError(`gradient of ${name} has shape ${JSON.stringify(g.shape)}, parameter is ${JSON.stringify(p.shape)}`);
      }
      const dims = factoredDims(p.shape, this.o.factored, this.o.minDimSizeToFactor);
      const decay = this.o.weightDecay !== 0 && (this.opts.decayMask?.(name) ?? true);
      tf.tidy(() => {
        const g2 = tf.add(tf.square(g), this.o.eps);
        let u: tf.Tensor;
        if (dims) {
          const [d1, d0] = dims;
          const vr = this.slots.get(`vr/${name}`, without(p.shape, d0));
          const vc = this.slots.get(`vc/${name}`, without(p.shape, d1));
          const vrNew = tf.add(tf.mul(vr, beta2), tf.mul(tf.mean(g2, d0), 1 - beta2));
          const vcNew = tf.add(tf.mul(vc, beta2), tf.mul(tf.mean(g2, d1), 1 - beta2));
          const reducedD1 = d1 > d0 ? d1 - 1 : d1;
          const rowColMean = tf.mean(vrNew, reducedD1, true);
          const rowFactor = tf.rsqrt(tf.div(vrNew, rowColMean));
          const colFactor = tf.rsqrt(vcNew);
          u = tf.mul(tf.mul(g, tf.expandDims(rowFactor, d0)), tf.expandDims(colFactor, d1));
          vr.assign(vrNew);
          vc.assign(vcNew);
        } else {
          const v = this.slots.get(`v/${name}`, p.shape);
          const vNew = tf.add(tf.mul(v, beta2), tf.mul(g2, 1 - beta2));
          u = tf.mul(g, tf.rsqrt(vNew));
          v.assign(vNew);
        }
        if (clip !== null) u = tf.div(u, tf.maximum(1, tf.div(rms(u), clip)));
        u = tf.mul(u, lr);
        if (this.o.multiplyByParameterScale) u = tf.mul(u, tf.maximum(rms(p), 1e-3));
        if (this.o.momentum !== null) {
          const m = this.slots.get(`m/${name}`, p.shape);
          u = tf.add(tf.mul(m, this.o.momentum), tf.mul(u, 1 - this.o.momentum));
          m.assign(u);
        }
        if (decay) u = tf.add(u, tf.mul(p, this.o.weightDecay));
        p.assign(tf.sub(p, u));
      });
    }
    this.t += 1;
  }

  state(): OptimizerState {
    return { step: this.t, tensors: this.slots.copy() };
  }

  loadState(state: OptimizerState, params: Params): void {
    checkStep(state.step);
    this.slots.load(state.tensors, (key) => {
      const parts = splitSlotKey(key);
      if (!parts || !params.has(parts[1])) return undefined;
      return this.slotShapes(params.get(parts[1]).shape).get(parts[0]);
    });
    this.t = state.step;
  }

  dispose(): void {
    this.slots.dispose();
  }
}
