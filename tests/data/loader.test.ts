import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EncodedShardWriter } from '../../src/data/encoded.js';
import { EncodedLoader } from '../../src/data/loader.js';
import type { LoaderOptions, LoaderPosition } from '../../src/data/loader.js';
import type { EncodedRow } from '../../src/data/encoded.js';

let dir: string;
const N = 5 * 37 - 4; // five shards, the last one short
const keys = Array.from({ length: N }, (_, i) => `k${String(i).padStart(4, '0')}`);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'loader-'));
  const w = new EncodedShardWriter({ dir, rowsPerShard: 37, codeCount: 8, rowGroupSize: 16 });
  for (let i = 0; i < N; i++) await w.add({ key: keys[i] as string, caption: `c${i}`, encoding: Array.from({ length: 8 }, (_, j) => i + j) });
  await w.finish();
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const opts: LoaderOptions<string[]> = { batchSize: 8, seed: 11, shuffleWindow: 20, epochs: 3, transform: (rows: EncodedRow[]) => rows.map((r) => r.key) };

async function all(loader: EncodedLoader<string[]>): Promise<string[][]> {
  const out: string[][] = [];
  for await (const b of loader) out.push(b);
  return out;
}

describe('EncodedLoader', () => {
  it('yields every row once per epoch, shuffled, with rows intact', async () => {
    const raw = await EncodedLoader.open<EncodedRow[]>(dir, { batchSize: 8, seed: 11, shuffleWindow: 20, epochs: 1 });
    const rows: EncodedRow[] = [];
    for await (const b of raw) rows.push(...b);
    expect(rows.map((r) => r.key).sort()).toEqual(keys);
    const i = Number(rows[5]?.key.slice(1));
    expect(rows[5]?.caption).toBe(`c${i}`);
    expect(Array.from(rows[5]?.encoding ?? [])).toEqual(Array.from({ length: 8 }, (_, j) => i + j));
    const order = rows.map((r) => r.key);
    expect(order).not.toEqual(keys);
    const batches = await all(await EncodedLoader.open(dir, opts));
    const flat = batches.flat();
    expect(flat.length).toBe(3 * N);
    expect(batches.slice(0, -1).every((b) => b.length === 8)).toBe(true);
    for (let e = 0; e < 3; e++) expect(flat.slice(e * N, (e + 1) * N).sort()).toEqual(keys);
    // Epochs are shuffled differently.
    expect(flat.slice(0, N)).not.toEqual(flat.slice(N, 2 * N));
  });

  it('is deterministic per seed and changes with it', async () => {
    const a = await all(await EncodedLoader.open(dir, opts));
    const b = await all(await EncodedLoader.open(dir, opts));
    const c = await all(await EncodedLoader.open(dir, { ...opts, seed: 12 }));
    expect(b).toEqual(a);
    expect(c).not.toEqual(a);
  });

  it('restored at batch k continues with exactly batches k+1… of the uninterrupted run', async () => {
    const reference = await all(await EncodedLoader.open(dir, opts));
    // Mid-window, window edges, the epoch boundary (N/8 ≈ 22.6) and the very end.
    for (const k of [1, 2, 3, 5, 22, 23, 45, reference.length - 1, reference.length]) {
      const first = await EncodedLoader.open(dir, opts);
      for (let i = 0; i < k; i++) await first.next();
      const saved: LoaderPosition = JSON.parse(JSON.stringify(first.position()));
      const resumed = await EncodedLoader.open(dir, opts);
      resumed.restore(saved);
      expect(resumed.position()).toEqual(saved);
      const rest = await all(resumed);
      expect(rest, `resume at batch ${k}`).toEqual(reference.slice(k));
    }
  });

  it('calls the transform lazily, once per batch taken', async () => {
    let calls = 0;
    const loader = await EncodedLoader.open(dir, { ...opts, transform: (rows) => (calls++, rows.map((r) => r.key)) });
    await loader.next();
    await loader.next();
    expect(calls).toBe(2);
  });

  it('partitions shards between hosts', async () => {
    const hosts = await Promise.all([0, 1].map(async (index) => (await all(await EncodedLoader.open(dir, { ...opts, epochs: 1, shardByHost: { index, count: 2 } }))).flat()));
    const [h0, h1] = hosts as [string[], string[]];
    expect(h0.length + h1.length).toBe(N);
    expect(h0.filter((k) => h1.includes(k))).toEqual([]);
    expect([...h0, ...h1].sort()).toEqual(keys);
    // Shard 0 and 2 and 4 go to host 0.
    expect(h0.length).toBe(37 * 2 + 33);
    await expect(EncodedLoader.open(dir, { ...opts, shardByHost: { index: 5, count: 6 } })).rejects.toThrow(/leave host 5 of 6 with no data/);
  });

  it('reads in order without shuffling, and drops the last partial batch on request', async () => {
    const loader = await EncodedLoader.open(dir, { ...opts, shuffleWindow: 0, epochs: 1, dropLast: true });
    const batches = await all(loader);
    expect(batches.length).toBe(Math.floor(N / 8));
    expect(batches.flat()).toEqual(keys.slice(0, Math.floor(N / 8) * 8));
  });
});
