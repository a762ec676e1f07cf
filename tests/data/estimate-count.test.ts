import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { EncodedShardWriter } from '../../src/data/encoded.js';
import { DEFAULT_HELDOUT_COMBOS, generateShapes } from '../../src/data/shapes.js';
import { openSource } from '../../src/data/sources/index.js';

describe('estimateCount', () => {
  it('reads img2dataset shard stats, and is unknown when a shard has none', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'minidalle-estimate-'));
    const r = await generateShapes(dir, { count: 25, heldoutCount: 0, size: 16, seed: 1, samplesPerShard: 10, heldoutCombos: DEFAULT_HELDOUT_COMBOS, plainBackgroundProb: 0.5 });
    expect(await openSource(r.train.pattern).estimateCount()).toBe(25);
    rmSync(r.train.shards[1]!.replace(/\.tar$/, '_stats.json'));
    expect(await openSource(r.train.pattern).estimateCount()).toBeUndefined();
  });

  it('counts table rows, folder images and parquet rows', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'minidalle-estimate-'));
    writeFileSync(join(dir, 'a.tsv'), 'image_path\tcaption\nx.png\tone\ny.png\ttwo\n\n');
    writeFileSync(join(dir, 'a.jsonl'), '{"image_path":"x.png","caption":"one"}\n\n{"image_path":"y.png","caption":"two"}\n{"image_path":"z.png","caption":"3"}\n');
    expect(await openSource(join(dir, 'a.tsv')).estimateCount()).toBe(2);
    expect(await openSource(join(dir, 'a.jsonl')).estimateCount()).toBe(3);
    const png = await sharp({ create: { width: 4, height: 4, channels: 3, background: '#f00' } }).png().toBuffer();
    const images = join(dir, 'images');
    mkdirSync(images);
    writeFileSync(join(images, 'a.png'), png);
    writeFileSync(join(images, 'a.txt'), 'red');
    writeFileSync(join(images, 'b.jpg'), png);
    expect(await openSource(images).estimateCount()).toBe(2);
    const writer = new EncodedShardWriter({ dir: join(dir, 'enc'), rowsPerShard: 3, codeCount: 2 });
    for (let i = 0; i < 7; i++) await writer.add({ key: `k${i}`, caption: 'c', encoding: [i, i] });
    const manifest = await writer.finish();
    const pattern = join(dir, 'enc', `shard-{00000..0000${manifest.shards.length - 1}}.parquet`);
    expect(await openSource(pattern).estimateCount()).toBe(7);
  });
});
