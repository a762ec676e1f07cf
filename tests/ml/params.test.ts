import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  LoadParamsError,
  ParamError,
  Params,
  addConv2d,
  addLinear,
  addNorm,
  exportParams,
  loadParams,
  loadParamsFile,
  saveParamsFile,
} from '../../src/ml/params.js';
import { Rng } from '../../src/ml/rng.js';
import { readSafetensorsHeader } from '../../src/ml/safetensors.js';
import { useCpu } from './helpers.js';

beforeAll(useCpu);
const dir = mkdtempSync(join(tmpdir(), 'minidalle-params-'));

function model(seed: number): Params {
  const rng = new Rng(seed);
  const p = new Params();
  addLinear(p, rng, 'encoder.layers.0.fc1', 3, 5);
  addConv2d(p, rng, 'decoder.conv_in', 2, 4, 3);
  addNorm(p, 'encoder.layernorm_embedding', 3);
  return p;
}

describe('Params', () => {
  it('counts, refuses duplicates and unknown names, seeded init is reproducible', () => {
    const p = model(1);
    expect(p.count()).toBe(3 * 5 + 5 + 3 * 3 * 2 * 4 + 4 + 3 + 3);
    expect(p.count((n) => n.startsWith('encoder.'))).toBe(15 + 5 + 6);
    expect(() => p.add('decoder.conv_in.bias', tf.zeros([4]))).toThrow(/already defined/);
    expect(() => p.get('nope.weight')).toThrow(ParamError);
    expect([...model(1).get('encoder.layers.0.fc1.weight').dataSync()]).toEqual([...p.get('encoder.layers.0.fc1.weight').dataSync()]);
    expect([...model(2).get('encoder.layers.0.fc1.weight').dataSync()]).not.toEqual([...p.get('encoder.layers.0.fc1.weight').dataSync()]);
    // two models with the same names live side by side (tf variable names are namespaced)
    const before = tf.memory().numTensors;
    model(3).dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('exports PyTorch layout and loads it back exactly; files round-trip', async () => {
    const p = model(1);
    const out = exportParams(p);
    expect(out.get('encoder.layers.0.fc1.weight')!.shape).toEqual([5, 3]);
    expect(out.get('decoder.conv_in.weight')!.shape).toEqual([4, 2, 3, 3]);
    // element check of the conv transpose: torch[o][i][kh][kw] = ours[kh][kw][i][o]
    const ours = p.get('decoder.conv_in.weight').arraySync() as number[][][][];
    const torch = out.get('decoder.conv_in.weight')!.arraySync() as number[][][][];
    expect(torch[3]![1]![2]![0]).toBe(ours[2]![0]![1]![3]);
    const q = model(9);
    loadParams(q, out);
    for (const n of p.names()) expect([...q.get(n).dataSync()]).toEqual([...p.get(n).dataSync()]);

    const path = join(dir, 'model.safetensors');
    saveParamsFile(path, p);
    expect(readSafetensorsHeader(path).metadata).toEqual({ format: 'pt' });
    const r = model(10);
    const report = await loadParamsFile(path, r);
    expect(report.loaded.length).toBe(p.size);
    for (const n of p.names()) expect([...r.get(n).dataSync()]).toEqual([...p.get(n).dataSync()]);
  });

  it('lists missing, unexpected and wrong-shape tensors instead of guessing, and changes nothing', () => {
    const p = model(1);
    const before = [...p.get('encoder.layernorm_embedding.weight').dataSync()];
    const tensors = exportParams(model(2));
    tensors.delete('decoder.conv_in.bias');
    tensors.set('lm_head.weight', tf.zeros([2, 2]));
    tensors.set('encoder.layers.0.fc1.weight', tf.zeros([3, 5])); // transposed: wrong
    let err: unknown;
    try { loadParams(p, tensors, { source: 'ckpt.safetensors' }); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(LoadParamsError);
    const mm = (err as LoadParamsError).mismatches;
    expect(mm).toContainEqual({ name: 'decoder.conv_in.bias', problem: 'missing', expected: [4] });
    expect(mm).toContainEqual({ name: 'lm_head.weight', problem: 'unexpected', got: [2, 2] });
    expect(mm).toContainEqual({ name: 'encoder.layers.0.fc1.weight', problem: 'shape', expected: [5, 3], got: [3, 5] });
    expect((err as Error).message).toMatch(/^ckpt\.safetensors: 3 parameter mismatch/);
    expect([...p.get('encoder.layernorm_embedding.weight').dataSync()]).toEqual(before);
    // non-strict loads what fits and reports the rest
    const rep = loadParams(p, tensors, { strict: false });
    expect(rep.mismatches.length).toBe(3);
    expect(rep.loaded).toContain('encoder.layernorm_embedding.weight');
  });

  it('loadParamsFile checks the header before reading data and can feed one tensor to tied parameters', async () => {
    const src = new Params();
    src.add('shared.weight', tf.tensor([[1, 2], [3, 4], [5, 6]]));
    const path = join(dir, 'shared.safetensors');
    saveParamsFile(path, src);
    const p = new Params();
    p.add('encoder.embed_tokens.weight', tf.zeros([3, 2]));
    p.add('decoder.embed_tokens.weight', tf.zeros([3, 2]));
    const rep = await loadParamsFile(path, p, { nameMap: (n) => (n.endsWith('embed_tokens.weight') ? 'shared.weight' : undefined) });
    expect(rep.loaded.sort()).toEqual(['decoder.embed_tokens.weight', 'encoder.embed_tokens.weight']);
    expect([...p.get('decoder.embed_tokens.weight').dataSync()]).toEqual([1, 2, 3, 4, 5, 6]);
    const wrong = new Params();
    wrong.add('shared.weight', tf.zeros([2, 3]));
    await expect(loadParamsFile(path, wrong)).rejects.toThrow(/shared\.safetensors: 1 parameter mismatch.*\n.*shared\.weight: shape \[3,2\] in file, expected \[2,3\]/);
    expect([...wrong.get('shared.weight').dataSync()].every((v) => v === 0)).toBe(true);
  });

  it('nameMap and only: warm-start part of a model from differently named tensors', () => {
    const p = model(1);
    const src = exportParams(model(5));
    const renamed = new Map([...src].filter(([n]) => n.startsWith('encoder.')).map(([n, t]) => [`model.${n}`, t] as const));
    const rep = loadParams(p, renamed, { nameMap: (n) => `model.${n}`, only: (n) => n.startsWith('encoder.') });
    expect(rep.loaded.sort()).toEqual(['encoder.layernorm_embedding.bias', 'encoder.layernorm_embedding.weight', 'encoder.layers.0.fc1.bias', 'encoder.layers.0.fc1.weight']);
    expect([...p.get('encoder.layers.0.fc1.weight').dataSync()]).toEqual([...model(5).get('encoder.layers.0.fc1.weight').dataSync()]);
    expect([...p.get('decoder.conv_in.weight').dataSync()]).toEqual([...model(1).get('decoder.conv_in.weight').dataSync()]);
  });
});
