import { describe, it, expect } from 'vitest';
import { benchLoader, benchPreprocess } from '../../src/data/bench.js';

// Smoke checks only: the figures themselves belong to `npm run bench`, never to assertions on speed.
describe('data bench hooks', () => {
  it('benchLoader reads every generated row once and reports a rate', async () => {
    const r = await benchLoader({ rows: 90, codeCount: 8, batchSize: 16, shuffleWindow: 32, rowsPerShard: 40 });
    expect(r.images).toBe(90);
    expect(r.images_per_s).toBeGreaterThan(0);
    expect(r.name).toBe('data/loader');
  });

  it('benchPreprocess processes the requested count', async () => {
    const r = await benchPreprocess({ count: 5, inputSize: 32, resolution: 16 });
    expect(r.images).toBe(5);
    expect(r.images_per_s).toBeGreaterThan(0);
    expect(r.params.resolution).toBe(16);
  });
});
