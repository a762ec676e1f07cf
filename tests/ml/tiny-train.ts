/**
 * A tiny decoder-only model built from the nn blocks, and a plain training loop, shared by the
 * determinism/resume tests on cpu and on wasm.
 */
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { attention, embedding, gluFeedForward, layerNorm, linear, sparseCrossEntropy } from '../../src/ml/nn.js';
import {
  AdamW,
  Adafactor,
  clipByGlobalNorm,
  disposeGrads,
  loadOptimizerState,
  saveOptimizerState,
  valueAndGrads,
  type Optimizer,
} from '../../src/ml/optim/index.js';
import { Params, addEmbedding, addLinear, addNorm, loadParamsFile, saveParamsFile } from '../../src/ml/params.js';
import { Rng, type RngState } from '../../src/ml/rng.js';
import { makeSchedule } from '../../src/ml/schedule.js';

const V = 11, C = 8, F = 12, B = 2, T = 5, HEADS = 2;

export function buildModel(seed: number): Params {
  const rng = new Rng(seed);
  const p = new Params();
  addEmbedding(p, rng, 'embed_tokens', V, C, 0.5);
  addNorm(p, 'layers.0.self_attn_layer_norm', C);
  for (const n of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) addLinear(p, rng, `layers.0.self_attn.${n}`, C, C, { std: 0.3 });
  addNorm(p, 'layers.0.ffn.ln0', C, { bias: false });
  addLinear(p, rng, 'layers.0.ffn.fc0', C, F, { bias: false, std: 0.3 });
  addLinear(p, rng, 'layers.0.ffn.fc1', C, F, { bias: false, std: 0.3 });
  addNorm(p, 'layers.0.ffn.ln1', F, { bias: false });
  addLinear(p, rng, 'layers.0.ffn.fc2', F, C, { bias: false, std: 0.3 });
  addNorm(p, 'final_layer_norm', C);
  addLinear(p, rng, 'lm_head', C, V, { bias: false, std: 0.3 });
  return p;
}

function loss(p: Params, ids: tf.Tensor2D, labels: tf.Tensor1D, dropRng: Rng): tf.Scalar {
  const flags = { training: true, rng: dropRng, dropout: 0.1 };
  let h = embedding(p, 'embed_tokens', ids) as tf.Tensor3D; // (B, T, C)
  const a = attention(p, 'layers.0.self_attn', layerNorm(p, 'layers.0.self_attn_layer_norm', h) as tf.Tensor3D, { numHeads: HEADS, causal: true, ...flags });
  h = tf.add(h, a.out);
  h = tf.add(h, gluFeedForward(p, 'layers.0.ffn', h, flags));
  const logits = linear(p, 'lm_head', layerNorm(p, 'final_layer_norm', h)); // (B, T, V)
  return sparseCrossEntropy(tf.reshape(logits, [B * T, V]) as tf.Tensor2D, labels, { labelSmoothing: 0.1 });
}

export interface TrainState {
  params: Params;
  opt: Optimizer;
  dataRng: Rng;
  dropRng: Rng;
}

export function makeOptimizer(kind: 'adamw' | 'adafactor'): Optimizer {
  const learningRate = makeSchedule({ lr: 0.05, warmupSteps: 2, decay: 'cosine', totalSteps: 10 });
  return kind === 'adamw'
    ? new AdamW({ learningRate, weightDecay: 0.01, decayMask: (n) => n.endsWith('.weight') })
    : new Adafactor({ learningRate, minDimSizeToFactor: 4, momentum: 0.9 });
}

export function start(seed: number, kind: 'adamw' | 'adafactor'): TrainState {
  const root = new Rng(seed);
  const params = buildModel(root.seed());
  return { params, opt: makeOptimizer(kind), dataRng: root.split(), dropRng: root.split() };
}

/** Runs steps until `opt.step === until`; returns the losses and the tensor count after each step. */
export function train(s: TrainState, until: number): { losses: number[]; tensorCounts: number[] } {
  const losses: number[] = [];
  const tensorCounts: number[] = [];
  while (s.opt.step < until) {
    const idsArr = Int32Array.from({ length: B * T }, () => s.dataRng.int(V));
    // target: the next token, or a fixed function of the current one at the end: learnable
    const labelsArr = Int32Array.from(idsArr, (t) => (t * 3 + 1) % V);
    const ids = tf.tensor2d(idsArr, [B, T], 'int32');
    const labels = tf.tensor1d(labelsArr, 'int32');
    const { loss: l, grads } = valueAndGrads(s.params, () => loss(s.params, ids, labels, s.dropRng));
    const clipped = clipByGlobalNorm(grads, 1.0).grads;
    s.opt.apply(s.params, clipped);
    disposeGrads(clipped);
    losses.push(l.dataSync()[0] as number);
    tf.dispose([l, ids, labels]);
    tensorCounts.push(tf.memory().numTensors);
  }
  return { losses, tensorCounts };
}

export function snapshot(p: Params): Map<string, Float32Array> {
  return new Map(p.names().map((n) => [n, p.get(n).dataSync().slice() as Float32Array]));
}

/** Saves everything a step needs to continue (weights, optimizer, both RNG streams). */
export function save(s: TrainState, dir: string): void {
  saveParamsFile(join(dir, 'model.safetensors'), s.params);
  saveOptimizerState(join(dir, 'optimizer.safetensors'), s.opt, {
    data_rng: JSON.stringify(s.dataRng.state()),
    dropout_rng: JSON.stringify(s.dropRng.state()),
  });
}

/** Resumes into a model initialised from a different seed, to prove every value comes from the files. */
export async function resume(dir: string, kind: 'adamw' | 'adafactor'): Promise<TrainState> {
  const params = buildModel(987654);
  await loadParamsFile(join(dir, 'model.safetensors'), params);
  const opt = makeOptimizer(kind);
  const meta = await loadOptimizerState(join(dir, 'optimizer.safetensors'), opt, params);
  return {
    params,
    opt,
    dataRng: Rng.fromState(JSON.parse(meta.data_rng as string) as RngState),
    dropRng: Rng.fromState(JSON.parse(meta.dropout_rng as string) as RngState),
  };
}

export function dispose(s: TrainState): void {
  s.params.dispose();
  s.opt.dispose();
}
