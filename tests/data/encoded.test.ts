import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EncodedShardWriter, readEncodedManifest, sha256File } from '../../src/data/encoded.js';
import { EncodedDatasetError } from '../../src/data/errors.js';
import { ParquetSource } from '../../src/data/sources/index.js';
import { SkipCounts } from '../../src/data/skips.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'encoded-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const codes = (i: number, n: number) => Array.from({ length: n }, (_, j) => (i * 31 + j * 7) % 16384);

describe('EncodedShardWriter', () => {
  it('writes key/caption/encoding parquet shards and a manifest with sha256 that reads back', async () => {
    const out = join(dir, 'ds');
    const w = new EncodedShardWriter({ dir: out, rowsPerShard: 4, codeCount: 16, producer: { plugin: 'test', vqgan: 'none' } });
    for (let i = 0; i < 10; i++) await w.add({ key: `k${i}`, caption: `caption ${i} – é`, encoding: codes(i, 16) });
    const m = await w.finish();
    expect(m.count).toBe(10);
    expect(m.code_count).toBe(16);
    expect(m.shards.map((s) => [s.file, s.rows])).toEqual([
      ['shard-00000.parquet', 4],
      ['shard-00001.parquet', 4],
      ['shard-00002.parquet', 2],
    ]);
    // Only finished files are visible: no temp leftovers.
    expect((await readdir(out)).sort()).toEqual(['dataset.json', 'shard-00000.parquet', 'shard-00001.parquet', 'shard-00002.parquet']);
    for (const s of m.shards) expect(s.sha256).toBe(await sha256File(join(out, s.file)));
    const onDisk = JSON.parse(await readFile(join(out, 'dataset.json'), 'utf8'));
    expect(onDisk).toEqual(m);
    expect(await readEncodedManifest(out, { verify: true })).toEqual(m);
    const rows = [];
    for await (const r of new ParquetSource(join(out, 'shard-{00000..00002}.parquet')).items({ skips: new SkipCounts() })) rows.push(r);
    expect(rows.map((r) => r.key)).toEqual(Array.from({ length: 10 }, (_, i) => `k${i}`));
    expect(rows[7]?.caption).toBe('caption 7 – é');
    expect(Array.from(rows[7]?.encoding ?? [])).toEqual(codes(7, 16));
  });

  it('rejects a row with the wrong code count, naming the key', async () => {
    const w = new EncodedShardWriter({ dir: join(dir, 'bad'), rowsPerShard: 4, codeCount: 16 });
    await expect(w.add({ key: 'oops', caption: '', encoding: [1, 2, 3] })).rejects.toThrow(/row "oops": encoding has 3 codes, expected 16/);
  });

  it('detects a replaced shard and a missing manifest', async () => {
    const out = join(dir, 'tamper');
    const w = new EncodedShardWriter({ dir: out, rowsPerShard: 3, codeCount: 4 });
    for (let i = 0; i < 5; i++) await w.add({ key: `k${i}`, caption: 'c', encoding: codes(i, 4) });
    await w.finish();
    await writeFile(join(out, 'shard-00001.parquet'), 'garbage');
    await expect(readEncodedManifest(out, { verify: true })).rejects.toThrow(/shard-00001\.parquet: sha256 .* does not match/);
    await expect(readEncodedManifest(join(dir, 'nowhere'))).rejects.toBeInstanceOf(EncodedDatasetError);
  });
});
