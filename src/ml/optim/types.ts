/**
 * What every optimizer shares: gradients keyed by parameter name, a step counter, and state that
 * round-trips exactly through a checkpoint (`state()` / `loadState()`).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Params } from '../params.js';

/** Gradients by parameter name (the names of `Params`). */
export type Grads = Map<string, tf.Tensor>;

/** A fixed learning rate, or a schedule of the number of updates already applied (0 for the first). */
export type LearningRate = number | ((step: number) => number);

export interface OptimizerState {
  /** updates applied so far */
  step: number;
  /** slot tensors named `<slot>/<parameter name>`, e.g. `m/encoder.layers.0.fc1.weight` */
  tensors: Map<string, tf.Tensor>;
}

export interface Optimizer {
  readonly name: string;
  /** updates applied so far */
  readonly step: number;
  /** learning rate the next `apply` will use */
  currentLr(): number;
  /** one update of every parameter that has a gradient; disposes nothing it did not create */
  apply(params: Params, grads: Grads): void;
  /** copies of the state (the caller disposes them) */
  state(): OptimizerState;
  /** replaces the state with copies of `state`, checked against `params` (names and shapes) */
  loadState(state: OptimizerState, params: Params): void;
  dispose(): void;
}

export class OptimizerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'OptimizerError';
  }
}

export function lrAt(lr: LearningRate, step: number): number {
  const v = typeof lr === 'number' ? lr : lr(step);
  if (!Number.isFinite(v)) throw new OptimizerError(`learning rate at step ${step} is ${v}; check the schedule configuration`);
  return v;
}

export function checkStep(step: number): void {
  if (!Number.isSafeInteger(step) || step < 0) throw new OptimizerError(`optimizer step must be a non-negative integer, got ${step}`);
}

/** Disposes every gradient tensor. */
export function disposeGrads(grads: Grads): void {
  for (const g of grads.values()) g.dispose();
  grads.clear();
}

/**
 * Loss and gradients of every trainable parameter, keyed by parameter name. The loss function's
 * intermediate tensors are released; the returned loss and gradients belong to the caller.
 */
export function valueAndGrads(params: Params, loss: () => tf.Scalar): { loss: tf.Scalar; grads: Grads } {
  const { value, grads } = tf.variableGrads(loss, params.trainable());
  const out: Grads = new Map();
  for (const v of params.trainable()) {
    const g = grads[v.name];
    if (g) out.set(params.nameOf(v), g);
  }
  return { loss: value, grads: out };
}

/**
 * Slot storage shared by the optimizers: non-trainable variables keyed `<slot>/<param>`, so a step
 * updates them in place with `assign` (no tensor churn) and `state()` is a plain copy.
 */
export class Slots {
  private readonly vars = new Map<string, tf.Variable>();

  get(key: string, shape: number[]): tf.Variable {
    let v = this.vars.get(key);
    if (!v) {
      v = owned(tf.zeros(shape));
      this.vars.set(key, v);
    } else if (v.shape.length !== shape.length || v.shape.some((d, i) => d !== shape[i])) {
      throw new OptimizerError(`optimizer slot ${key} has shape ${JSON.stringify(v.shape)} but the parameter needs ${JSON.stringify(shape)}`);
    }
    return v;
  }

  copy(): Map<string, tf.Tensor> {
    const out = new Map<string, tf.Tensor>();
    for (const [k, v] of this.vars) out.set(k, tf.clone(v));
    return out;
  }

  /** Replaces all slots with copies of `tensors`, each checked by `expectShape` (undefined = unknown key). */
  load(tensors: Map<string, tf.Tensor>, expectShape: (key: string) => number[] | undefined): void {
    const problems: string[] = [];
    for (const [k, t] of tensors) {
      const want = expectShape(k);
      if (!want) problems.push(`${k}: not a slot of any parameter`);
      else if (want.length !== t.shape.length || want.some((d, i) => d !== t.shape[i])) problems.push(`${k}: shape ${JSON.stringify(t.shape)}, expected ${JSON.stringify(want)}`);
    }
    if (problems.length) throw new OptimizerError(`optimizer state does not fit the model:\n  ${problems.slice(0, 20).join('\n  ')}`);
    this.dispose();
    for (const [k, t] of tensors) this.vars.set(k, owned(tf.cast(t, 'float32')));
  }

  keys(): string[] {
    return [...this.vars.keys()];
  }

  dispose(): void {
    for (const v of this.vars.values()) v.dispose();
    this.vars.clear();
  }
}

/** A non-trainable variable holding `t`'s data; `t` itself is released (the variable keeps the data). */
function owned(t: tf.Tensor): tf.Variable {
  const v = tf.variable(t, false);
  t.dispose();
  return v;
}

/** Splits `<slot>/<param>` keys. */
export function splitSlotKey(key: string): [string, string] | undefined {
  const i = key.indexOf('/');
  return i > 0 ? [key.slice(0, i), key.slice(i + 1)] : undefined;
}

/**
 * nanoGPT's weight-decay rule: decay parameters with ≥ 2 dims (matmul/conv weights, embeddings), not
 * biases or norm scales. Pass as `decayMask`.
 */
export function matrixDecayMask(params: Params): (name: string) => boolean {
  return (name) => params.has(name) && params.get(name).rank >= 2;
}
