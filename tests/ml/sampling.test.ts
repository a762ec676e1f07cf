/** Sampling image codes from a tiny random DalleBart: the cache changes nothing, seeds, top-k/p, super-conditioning. */
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initCompute } from '../../src/ml/backend.js';
import { DalleBart } from '../../src/ml/models/dallebart.js';
import { Rng } from '../../src/ml/rng.js';
import { TINY } from './helpers.js';
import { drawCode, generateCodes, generateCodesNoCache, sampleSeed, SamplingError, type TextBatch } from '../../src/ml/sampling/index.js';

let model: DalleBart;
beforeAll(async () => {
  await initCompute({ backend: 'wasm' });
  // large weights: sharp, varied distributions, so greedy ties are impossible and seeds matter
  model = DalleBart.create({ ...TINY, image_length: 12, init_std: 0.5 }, 3);
});
afterAll(() => model.dispose());

/** Two prompts of 8 positions (padded with 1), and the empty caption `<s></s>`. */
function text(): TextBatch {
  const rows = [
    [0, 5, 9, 13, 2, 1, 1, 1],
    [0, 7, 7, 21, 30, 2, 1, 1],
  ];
  return { ids: Int32Array.from(rows.flat()), mask: Int32Array.from(rows.flat().map((v) => (v === 1 ? 0 : 1))), batch: 2, length: 8 };
}
const EMPTY: TextBatch = { ids: Int32Array.from([0, 2, 1, 1, 1, 1, 1, 1]), mask: Int32Array.from([1, 1, 0, 0, 0, 0, 0, 0]), batch: 1, length: 8 };

const arr = (codes: Int32Array[]): number[][] => codes.map((c) => Array.from(c));

describe('sampling', () => {
  it('greedy decoding with the KV cache gives exactly the codes of decoding without it; no tensor is left behind', () => {
    const before = tf.memory().numTensors;
    const req = { text: text(), seeds: [1, 2], sampling: { greedy: true } };
    const cached = generateCodes(model, req);
    expect(tf.memory().numTensors).toBe(before);
    const plain = generateCodesNoCache(model, req);
    expect(arr(cached)).toEqual(arr(plain));
    expect(cached[0]).toHaveLength(12);
    expect(new Set(arr(cached).flat()).size).toBeGreaterThan(1);
    for (const c of arr(cached).flat()) expect(c).toBeLessThan(24); // BOS (24) is never produced
    // and with super-conditioning too
    const sc = { text: text(), uncond: EMPTY, seeds: [1, 2], sampling: { greedy: true, condScale: 4 } };
    expect(arr(generateCodes(model, sc))).toEqual(arr(generateCodesNoCache(model, sc)));
    expect(tf.memory().numTensors).toBe(before);
  });

  it('padding changes no code: cut after the last used position, and whatever ids the masked positions hold', () => {
    const sampling = { temperature: 1, topK: 20, condScale: 3 };
    const req = (t: TextBatch, uncond: TextBatch) => generateCodes(model, { text: t, uncond, seeds: [1, 2], sampling });
    const want = arr(req(text(), EMPTY));
    const t = text();
    const cut = (b: TextBatch, n: number): TextBatch => ({ ...b, length: n, ids: Int32Array.from({ length: b.batch * n }, (_, i) => b.ids[Math.floor(i / n) * 8 + (i % n)] as number), mask: Int32Array.from({ length: b.batch * n }, (_, i) => b.mask[Math.floor(i / n) * 8 + (i % n)] as number) });
    expect(arr(req(cut(t, 6), cut(EMPTY, 6)))).toEqual(want);
    const noisy = { ...t, ids: t.ids.map((id, i) => (t.mask[i] ? id : 30 + (i % 9))) };
    expect(arr(req(noisy, { ...EMPTY, ids: EMPTY.ids.map((id, i) => (EMPTY.mask[i] ? id : 20 + i)) }))).toEqual(want);
  });

  it('the same seed gives the same codes, a different seed different ones; top-k 1 equals greedy; per-row seeds', () => {
    const sampling = { temperature: 1.5 };
    const a = generateCodes(model, { text: text(), seeds: [5, 6], sampling });
    const b = generateCodes(model, { text: text(), seeds: [5, 6], sampling });
    const c = generateCodes(model, { text: text(), seeds: [7, 8], sampling });
    expect(arr(a)).toEqual(arr(b));
    expect(arr(a)).not.toEqual(arr(c));
    const greedy = generateCodes(model, { text: text(), seeds: [1, 1], sampling: { greedy: true } });
    expect(arr(generateCodes(model, { text: text(), seeds: [9, 10], sampling: { topK: 1 } }))).toEqual(arr(greedy));
    // a prompt's images do not depend on the other rows of the batch
    const t = text();
    const one: TextBatch = { ids: t.ids.slice(8), mask: t.mask.slice(8), batch: 1, length: 8 };
    expect(arr(generateCodes(model, { text: one, seeds: [6], sampling }))).toEqual([arr(a)[1]]);
    expect(sampleSeed(1, 0, 0)).not.toBe(sampleSeed(1, 0, 1));
    expect(sampleSeed(1, 2, 3)).toBe(sampleSeed(1, 2, 3));
  });

  it('super-conditioning with scale 1 is conditional sampling; scale 0 is sampling from the empty caption', () => {
    const sampling = { temperature: 1 };
    const cond = generateCodes(model, { text: text(), seeds: [3, 4], sampling });
    expect(arr(generateCodes(model, { text: text(), uncond: EMPTY, seeds: [3, 4], sampling: { ...sampling, condScale: 1 } }))).toEqual(arr(cond));
    const uncondOnly = generateCodes(model, { text: { ...EMPTY, ids: Int32Array.from([...EMPTY.ids, ...EMPTY.ids]), mask: Int32Array.from([...EMPTY.mask, ...EMPTY.mask]), batch: 2 }, seeds: [3, 4], sampling });
    expect(arr(generateCodes(model, { text: text(), uncond: EMPTY, seeds: [3, 4], sampling: { ...sampling, condScale: 0 } }))).toEqual(arr(uncondOnly));
    expect(() => generateCodes(model, { text: text(), seeds: [3, 4], sampling: { condScale: 10 } })).toThrow(/empty caption/);
  });

  it('drawCode: temperature, top-k and top-p keep only what they should', () => {
    const logits = Float32Array.from([0, 3, 1, 2.9, -5]);
    const o = { topK: 0, topP: 1, temperature: 1, greedy: false, condScale: 1 };
    const counts = (opts: typeof o, n = 2000): number[] => {
      const rng = new Rng(11);
      const c = [0, 0, 0, 0, 0];
      for (let i = 0; i < n; i++) c[drawCode(logits, 5, opts, rng)]!++;
      return c;
    };
    expect(counts({ ...o, topK: 2 }).filter((v, i) => v > 0 && i !== 1 && i !== 3)).toEqual([]);
    const p = counts({ ...o, topP: 0.5 }); // codes 1 and 3 hold ~0.93 together; 1 alone ~0.49 < 0.5 → {1, 3}
    expect(p[1]! + p[3]!).toBe(2000);
    expect(p[3]).toBeGreaterThan(0);
    const cold = counts({ ...o, temperature: 0.01 }); // e^(0.1/0.01): code 3 all but vanishes
    expect(cold[1]).toBeGreaterThan(1990);
    const hot = counts({ ...o, temperature: 100 });
    expect(hot[4]).toBeGreaterThan(200);
    expect(() => generateCodes(model, { text: text(), seeds: [1, 2], sampling: { topP: 0 } })).toThrow(SamplingError);
    expect(() => generateCodes(model, { text: text(), seeds: [1], sampling: {} })).toThrow(/one seed per prompt/);
  });
});
