/** drawCode's candidate order (a numeric key sort) gives exactly the draws of the comparator sort it replaced. */
import { describe, expect, it } from 'vitest';
import { drawCode } from '../../src/ml/sampling/index.js';
import { Rng } from '../../src/ml/rng.js';

type Options = Parameters<typeof drawCode>[2];

/** drawCode as it was written first: every code sorted with a comparator. */
function referenceDraw(logits: Float32Array, n: number, o: Options, rng: Rng): number {
  let best = 0;
  for (let i = 1; i < n; i++) if ((logits[i] as number) > (logits[best] as number)) best = i;
  if (o.greedy || o.topK === 1) return best;
  let idx = Array.from({ length: n }, (_, i) => i);
  idx.sort((a, b) => (logits[b] as number) - (logits[a] as number) || a - b);
  if (o.topK > 0 && o.topK < n) idx = idx.slice(0, o.topK);
  const max = logits[best] as number;
  const w = idx.map((i) => Math.exp(((logits[i] as number) - max) / o.temperature));
  let total = w.reduce((s, v) => s + v, 0);
  if (o.topP < 1) {
    let acc = 0;
    let keep = 0;
    while (keep < w.length && acc < o.topP * total) acc += w[keep++] as number;
    idx = idx.slice(0, Math.max(1, keep));
    w.length = idx.length;
    total = w.reduce((s, v) => s + v, 0);
  }
  let u = rng.uniform() * total;
  for (let k = 0; k < idx.length; k++) {
    u -= w[k] as number;
    if (u < 0) return idx[k] as number;
  }
  return idx[idx.length - 1] as number;
}

describe('drawCode', () => {
  it('draws exactly what the comparator sort drew: ties, −0, negative and huge logits, top-k, top-p, temperature', () => {
    const rng = new Rng(21);
    const base = { topK: 0, topP: 1, temperature: 1, greedy: false, condScale: 1 };
    const settings: Options[] = [base, { ...base, topK: 5 }, { ...base, topK: 300 }, { ...base, topP: 0.9 }, { ...base, topP: 0.3, temperature: 0.7 }, { ...base, temperature: 3 }];
    for (const n of [7, 1000, 4097]) {
      const logits = new Float32Array(n + 1); // one column more than drawn (the BOS column)
      for (let row = 0; row < 6; row++) {
        for (let i = 0; i <= n; i++) {
          const r = rng.uniform();
          // coarse values make many exact ties; some ±0 and extremes
          logits[i] = r < 0.1 ? (rng.uniform() < 0.5 ? -0 : 0) : r < 0.15 ? (rng.uniform() < 0.5 ? 3e38 : -3e38) : Math.round(rng.normal() * 8) / 4;
        }
        for (const o of settings) {
          const a = new Rng(row * 31 + n);
          const b = new Rng(row * 31 + n);
          for (let d = 0; d < 20; d++) expect(drawCode(logits, n, o, a), `n ${n}, ${JSON.stringify(o)}`).toBe(referenceDraw(logits, n, o, b));
        }
      }
    }
  });

  it('a row with NaN keeps the comparator order', () => {
    const logits = Float32Array.from([1, Number.NaN, 2, 0.5]);
    const o = { topK: 0, topP: 1, temperature: 1, greedy: false, condScale: 1 };
    const a = new Rng(3);
    const b = new Rng(3);
    for (let d = 0; d < 10; d++) expect(drawCode(logits, 4, o, a)).toBe(referenceDraw(logits, 4, o, b));
  });
});
