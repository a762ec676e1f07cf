import { mkdtempSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import encodeDataset, { EncodeDatasetConfig } from '../../plugins/encode-dataset/index.js';
import { RunStore } from '../../src/core/runs/index.js';
import { EncodedLoader } from '../../src/data/loader.js';
import { DEFAULT_HELDOUT_COMBOS, generateShapes } from '../../src/data/shapes.js';
import { initCompute } from '../../src/ml/backend.js';
import { stageContext } from '../support/stage-context.js';
import { saveVqgan, Vqgan } from '../../src/ml/models/vqgan.js';

const TINY = { ch: 8, ch_mult: [1, 2], num_res_blocks: 1, attn_resolutions: [], z_channels: 4, n_embed: 16, embed_dim: 4, resolution: 16, num_groups: 4 };
let work: string;
let vqganDir: string;
let trainPattern: string;

beforeAll(async () => {
  await initCompute({ backend: 'wasm' });
  work = mkdtempSync(join(tmpdir(), 'minidalle-encode-'));
  vqganDir = join(work, 'vqgan');
  const model = Vqgan.create(TINY, 1);
  await saveVqgan(model, vqganDir);
  model.dispose();
  const shapes = await generateShapes(join(work, 'shapes'), {
    count: 45, heldoutCount: 0, size: 16, seed: 3, samplesPerShard: 20, heldoutCombos: DEFAULT_HELDOUT_COMBOS, plainBackgroundProb: 0.5,
  });
  trainPattern = shapes.train.pattern;
});

/** Runs the plugin in a fresh run; `stopAfterCheckpoints` aborts it like SIGTERM after that many checkpoints. */
async function encode(store: RunStore, resumedFrom?: string, stopAfterCheckpoints?: number) {
  const run = await store.create({ name: 'enc', kind: 'stage', stage: 'encode', plugin: 'encode-dataset', resumed_from: resumedFrom });
  const controller = new AbortController();
  const config = EncodeDatasetConfig.parse({ vqgan: vqganDir, sources: { train: trainPattern }, resolution: 16, batch_size: 4, rows_per_shard: 8 });
  const ctx = stageContext(run, { config, stage: 'encode', signal: controller.signal });
  let saved = 0;
  const save = ctx.checkpoints.save;
  ctx.checkpoints.save = async (...args) => {
    const info = await save(...args);
    if (++saved === stopAfterCheckpoints) controller.abort();
    return info;
  };
  const result = await encodeDataset.run(ctx);
  await run.flush();
  return { run, result };
}

function shardHashes(dir: string): Record<string, string> {
  const manifest = JSON.parse(readFileSync(join(dir, 'dataset.json'), 'utf8')) as { shards: { file: string; sha256: string }[] };
  return Object.fromEntries(manifest.shards.map((s) => [s.file, s.sha256]));
}

describe('encode-dataset', () => {
  it('writes parquet shards of in-range codes with a manifest, and a stopped encode resumes to identical shards', async () => {
    const store = new RunStore(join(work, 'runs'));
    const whole = await encode(store);
    const dir = whole.result.artifacts!.train!;
    expect(readdirSync(dir).filter((f) => f.endsWith('.parquet'))).toHaveLength(6); // 45 rows / 8 per shard
    const manifest = JSON.parse(readFileSync(join(dir, 'dataset.json'), 'utf8'));
    expect(manifest).toMatchObject({ count: 45, code_count: 64 });
    const loader = await EncodedLoader.open(dir, { batchSize: 45, seed: 0, shuffleWindow: 1, epochs: 1 });
    const batch = (await loader.next())!;
    expect(batch).toHaveLength(45);
    for (const row of batch) {
      expect(row.encoding).toHaveLength(64);
      expect(Math.min(...row.encoding)).toBeGreaterThanOrEqual(0);
      expect(Math.max(...row.encoding)).toBeLessThan(16);
    }
    expect(new Set(batch.map((r) => r.caption)).size).toBeGreaterThan(10);

    const stopped = await encode(store, undefined, 2);
    const partial = readdirSync(join(stopped.run.outDir, 'train'));
    expect(partial.filter((f) => f.endsWith('.parquet'))).toHaveLength(2);
    expect(partial).not.toContain('dataset.json');
    const resumed = await encode(store, stopped.run.id);
    // The resumed run adopted the two finished shards (hard links), and wrote the rest itself.
    for (const f of ['shard-00000.parquet', 'shard-00001.parquet']) {
      expect(statSync(join(resumed.run.outDir, 'train', f)).ino).toBe(statSync(join(stopped.run.outDir, 'train', f)).ino);
    }
    expect(shardHashes(resumed.result.artifacts!.train!)).toEqual(shardHashes(dir));
  }, 120_000);
});
