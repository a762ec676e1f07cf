import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { initCompute } from '../../src/ml/backend.js';
import { dispose, resume, save, snapshot, start, train } from './tiny-train.js';

beforeAll(async () => {
  await initCompute({ backend: 'wasm', selfCheck: false });
});

describe('tiny model training on wasm (our kernels for embedding/matmul gradients)', () => {
  it('is bit-reproducible, resumable, learns, and does not leak tensors', async () => {
    const a = start(42, 'adamw');
    const ra = train(a, 8);
    const b = start(42, 'adamw');
    train(b, 8);
    const wa = snapshot(a.params);
    for (const [n, v] of snapshot(b.params)) expect(v, n).toEqual(wa.get(n));
    expect(ra.losses[7]!).toBeLessThan(ra.losses[0]!);
    expect(new Set(ra.tensorCounts.slice(1)).size).toBe(1);

    const part = start(42, 'adamw');
    train(part, 3);
    const dir = mkdtempSync(join(tmpdir(), 'minidalle-resume-wasm-'));
    save(part, dir);
    dispose(part);
    const resumed = await resume(dir, 'adamw');
    train(resumed, 8);
    for (const [n, v] of snapshot(resumed.params)) expect(v, n).toEqual(wa.get(n));
    [a, b, resumed].forEach(dispose);
  });
});
