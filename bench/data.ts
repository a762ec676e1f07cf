/**
 * Data figures for `npm run bench --only data`: sharp preprocessing, the encoded-shard loader, and the
 * encode-dataset plugin end to end on 64 px shapes with a small VQGAN (with its decode/encode split).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import encodeDataset, { EncodeDatasetConfig } from '../plugins/encode-dataset/index.js';
import { createStageContext } from '../src/core/context.js';
import { RunStore } from '../src/core/runs/index.js';
import { benchLoader, benchPreprocess } from '../src/data/bench.js';
import { DEFAULT_HELDOUT_COMBOS, generateShapes } from '../src/data/shapes.js';
import { saveVqgan, Vqgan } from '../src/ml/models/vqgan.js';

export interface DataRow {
  section: string;
  name: string;
  backend: string;
  ms: number;
  extra?: Record<string, number | string>;
}

/**
 * The small f4 VQGAN of experiments/vqgan-shapes.yaml, here at 64 px (16×16 codes). Random weights: the speed
 * does not depend on them.
 */
const SMALL_VQGAN = { ch: 16, ch_mult: [1, 2, 2], num_res_blocks: 1, attn_resolutions: [], z_channels: 32, n_embed: 1024, embed_dim: 32, resolution: 64, num_groups: 4, codebook_l2: true };

async function benchEncode(backend: string, images: number): Promise<DataRow> {
  const work = await mkdtemp(join(tmpdir(), 'minidalle-bench-encode-'));
  try {
    const model = Vqgan.create(SMALL_VQGAN, 0);
    await saveVqgan(model, join(work, 'vqgan'));
    model.dispose();
    const shapes = await generateShapes(join(work, 'shapes'), {
      count: images, heldoutCount: 0, size: 64, seed: 0, samplesPerShard: 1000, heldoutCombos: DEFAULT_HELDOUT_COMBOS, plainBackgroundProb: 0.5,
    });
    const run = await new RunStore(join(work, 'runs')).create({ name: 'bench', kind: 'stage' });
    const config = EncodeDatasetConfig.parse({ vqgan: join(work, 'vqgan'), sources: { train: shapes.train.pattern }, resolution: 64, batch_size: 32 });
    const { ctx } = createStageContext({
      run, stage: 'encode', config, inputs: {}, seed: 0, signal: new AbortController().signal,
      logger: { info: () => {}, warn: () => {}, error: () => {} },
      progress: { start: () => {}, tick: () => {}, end: () => {} },
      meta: () => {},
    });
    const t0 = performance.now();
    const { summary = {} } = await encodeDataset.run(ctx);
    const ms = performance.now() - t0;
    const s = summary as { images_per_s: number; decode_s: number; encode_s: number };
    return {
      section: 'data',
      name: `encode-dataset end to end, ${images} shapes at 64 px, the shapes f4 VQGAN (ch 16)`,
      backend,
      ms,
      extra: { images_per_s: +s.images_per_s.toFixed(1), decode_resize_s: +s.decode_s.toFixed(2), encode_s: +s.encode_s.toFixed(2), target_images_per_s: 50 },
    };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

export async function benchData(backend: string, quick: boolean): Promise<DataRow[]> {
  const pre = await benchPreprocess({ count: quick ? 32 : 128 });
  const loader = await benchLoader({ rows: quick ? 4096 : 16384 });
  const rows: DataRow[] = [pre, loader].map((r) => ({
    section: 'data',
    name: r.name,
    backend: 'sharp/js',
    ms: r.seconds * 1000,
    extra: { images_per_s: +r.images_per_s.toFixed(1), ...r.params },
  }));
  rows.push(await benchEncode(backend, quick ? 128 : 512));
  return rows;
}
