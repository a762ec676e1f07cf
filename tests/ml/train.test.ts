import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { useCpu } from './helpers.js';
import { dispose, resume, save, snapshot, start, train } from './tiny-train.js';

beforeAll(useCpu);

const N = 8, K = 3;

for (const kind of ['adamw', 'adafactor'] as const) {
  describe(`tiny model training with ${kind} (cpu)`, () => {
    it('two runs from the same seed give bit-identical weights; a different seed does not', () => {
      const a = start(42, kind);
      const ra = train(a, N);
      const b = start(42, kind);
      train(b, N);
      const wa = snapshot(a.params), wb = snapshot(b.params);
      for (const [n, v] of wa) expect(wb.get(n), n).toEqual(v);
      const c = start(43, kind);
      train(c, N);
      expect(snapshot(c.params).get('lm_head.weight')).not.toEqual(wa.get('lm_head.weight'));
      // it learns (the target is a fixed function of the input token)
      expect(ra.losses[N - 1]!).toBeLessThan(ra.losses[0]!);
      // a training step does not grow the number of live tensors
      expect(new Set(ra.tensorCounts.slice(1)).size).toBe(1);
      [a, b, c].forEach(dispose);
    });

    it(`saving weights + optimizer + RNG at step ${K} and resuming gives bit-identical weights at step ${N}`, async () => {
      const full = start(7, kind);
      train(full, N);
      const part = start(7, kind);
      train(part, K);
      const dir = mkdtempSync(join(tmpdir(), `minidalle-resume-${kind}-`));
      save(part, dir);
      dispose(part);
      const resumed = await resume(dir, kind);
      expect(resumed.opt.step).toBe(K);
      train(resumed, N);
      const want = snapshot(full.params);
      for (const [n, v] of snapshot(resumed.params)) expect(v, n).toEqual(want.get(n));
      [full, resumed].forEach(dispose);
    });
  });
}
