/**
 * Optimizer state in a checkpoint: one safetensors file holding the slot tensors (F32, so a resumed run
 * is bit-identical) with the optimizer name, step and any caller metadata (e.g. the RNG state) in
 * `__metadata__`.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Params } from '../params.js';
import { readSafetensors, toTfTensors, writeSafetensors } from '../safetensors.js';
import { type Optimizer, OptimizerError } from './types.js';

export function saveOptimizerState(path: string, opt: Optimizer, metadata: Record<string, string> = {}): void {
  const { step, tensors } = opt.state();
  try {
    writeSafetensors(path, tensors, { metadata: { ...metadata, optimizer: opt.name, step: String(step) } });
  } finally {
    for (const t of tensors.values()) t.dispose();
  }
}

/** Restores `opt` from a file written by `saveOptimizerState`; returns the file's metadata. */
export async function loadOptimizerState(path: string, opt: Optimizer, params: Params): Promise<Record<string, string>> {
  const { tensors: raw, metadata } = await readSafetensors(path);
  if (metadata.optimizer !== opt.name) {
    throw new OptimizerError(`${path}: optimizer state is for "${metadata.optimizer ?? '(unnamed)'}" but the run uses "${opt.name}"`);
  }
  const step = Number(metadata.step);
  if (!Number.isSafeInteger(step) || step < 0) throw new OptimizerError(`${path}: __metadata__.step must be a non-negative integer, got ${JSON.stringify(metadata.step)}`);
  const tensors = toTfTensors(raw);
  try {
    opt.loadState({ step, tensors }, params);
  } catch (e) {
    throw new OptimizerError(`${path}: ${(e as Error).message}`);
  } finally {
    tf.dispose([...tensors.values()]);
  }
  return metadata;
}
