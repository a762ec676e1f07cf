/**
 * encode-dataset: runs a VQGAN encoder over image-caption sources and writes dalle-mini-style encoded parquet
 * shards (`key`, `caption`, `encoding`) with a `dataset.json` manifest per split.
 *
 * Resumable per shard: after each finished shard a checkpoint records the shards written so far (with sha256)
 * and where they are. A resumed run verifies and hard-links those shards into its own output folder, skips
 * the rows they hold and goes on — the result is byte-identical to an uninterrupted run. A shard is written
 * to a hidden name and renamed, so readers never see a partial one.
 */
import { copyFile, link, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { definePlugin, type StageContext } from '../../src/core/plugins/types.js';
import { modelPath } from '../../src/core/refs.js';
import { DataReadConfig, prepareOptionsFrom } from '../../src/data/config.js';
import { EncodedShardWriter, sha256File, MANIFEST_NAME, type EncodedManifest, type EncodedShardInfo } from '../../src/data/encoded.js';
import { prepareItems, type PreparedItem } from '../../src/data/prepare.js';
import { openSource } from '../../src/data/sources/index.js';
import { SkipCounts } from '../../src/data/skips.js';

export const EncodeDatasetConfig = DataReadConfig.omit({ source: true, crop: true, blank_caption_prob: true })
  .extend({
    vqgan: modelPath('VQGAN folder (config.json + model.safetensors), e.g. ${stages.vqgan.artifacts.model}', { required: true }),
    sources: z
      .record(z.string().regex(/^[a-z][a-z0-9_-]*$/), z.string().min(1))
      .refine((s) => Object.keys(s).length > 0, 'name at least one split, e.g. { train: ${stages.data.artifacts.train} }')
      .describe('split name → source (tar pattern, image folder, .tsv/.csv/.jsonl, parquet)'),
    batch_size: z.number().int().min(1).default(32).describe('images encoded at once'),
    rows_per_shard: z.number().int().min(1).default(10_000).describe('rows per parquet shard (a checkpoint after each)'),
    backend: z.enum(['node', 'wasm', 'cpu']).optional().describe('compute backend (default: best available)'),
  })
  .strict();

export type EncodeDatasetConfig = z.output<typeof EncodeDatasetConfig>;

/** What a checkpoint records: per split, the shards written and whether the split is complete. */
interface EncodeProgress {
  out_dir: string;
  splits: Record<string, { shards: EncodedShardInfo[]; done: boolean }>;
}

/** Brings the shards an interrupted run wrote into this run's folder, verifying each one's sha256. */
async function adoptShards(from: string, to: string, shards: EncodedShardInfo[]): Promise<void> {
  await mkdir(to, { recursive: true });
  for (const shard of shards) {
    const src = join(from, shard.file);
    if ((await sha256File(src)) !== shard.sha256) throw new Error(`${src}: shard fails its sha256 check; cannot resume from it (rerun with --rerun)`);
    const dst = join(to, shard.file);
    await link(src, dst).catch(() => copyFile(src, dst)); // a hard link costs nothing on the same filesystem
  }
}

async function* batches(items: AsyncIterable<PreparedItem>, size: number): AsyncGenerator<PreparedItem[]> {
  let batch: PreparedItem[] = [];
  for await (const item of items) {
    batch.push(item);
    if (batch.length === size) {
      yield batch;
      batch = [];
    }
  }
  if (batch.length > 0) yield batch;
}

export default definePlugin({
  name: 'encode-dataset',
  description: 'Encodes image-caption datasets with a VQGAN into parquet shards (key, caption, encoding), resumable per shard',
  config: EncodeDatasetConfig,
  async run(ctx: StageContext<EncodeDatasetConfig>) {
    const c = ctx.config;
    const { describeCompute, initCompute, tf } = await import('../../src/ml/backend.js');
    const { loadVqgan } = await import('../../src/ml/models/vqgan.js');
    const compute = await initCompute(c.backend ? { backend: c.backend } : {});
    ctx.meta({ backend: compute });
    ctx.logger.info(`encode-dataset: compute ${describeCompute(compute)}`);
    const vqgan = await loadVqgan(c.vqgan);
    const side = c.resolution / 2 ** (vqgan.config.ch_mult.length - 1);
    const codeCount = side * side;
    if (vqgan.config.resolution !== c.resolution) {
      ctx.logger.warn(`the VQGAN was configured for ${vqgan.config.resolution} px; encoding at resolution ${c.resolution} gives ${side}×${side} codes`);
    }

    const latest = await ctx.checkpoints.latest();
    const previous = latest ? (JSON.parse(await readFile(join(latest.dir, 'progress.json'), 'utf8')) as EncodeProgress) : undefined;
    const progress: EncodeProgress = { out_dir: ctx.outDir, splits: {} };
    const artifacts: Record<string, string> = {};
    const summary: Record<string, unknown> = {};
    let step = latest?.step ?? 0;
    let decodeSeconds = 0;
    let encodeSeconds = 0;
    let encoded = 0;
    const started = performance.now();
    // Sources that know their size cheaply give the progress bar a total (and an ETA).
    const estimates = await Promise.all(Object.values(c.sources).map((spec) => openSource(spec).estimateCount()));
    const total = estimates.every((n) => n !== undefined) ? estimates.reduce((a, n) => a + n!, 0) : 0;
    ctx.progress.start(total, 'img');
    try {
      for (const [split, spec] of Object.entries(c.sources)) {
        const dir = join(ctx.outDir, split);
        artifacts[split] = dir;
        const before = previous?.splits[split];
        if (before) await adoptShards(join(previous!.out_dir, split), dir, before.shards);
        if (before?.done) {
          ctx.progress.tick(before.shards.reduce((n, s) => n + s.rows, 0));
          await copyFile(join(previous!.out_dir, split, MANIFEST_NAME), join(dir, MANIFEST_NAME));
          progress.splits[split] = before;
          ctx.logger.info(`${split}: complete in run ${latest!.runId}, reused`);
          continue;
        }
        const writer = new EncodedShardWriter({
          dir,
          rowsPerShard: c.rows_per_shard,
          codeCount,
          existingShards: before?.shards ?? [],
          producer: { plugin: 'encode-dataset', vqgan: c.vqgan, source: spec, resolution: c.resolution },
        });
        let skipRows = (before?.shards ?? []).reduce((n, s) => n + s.rows, 0);
        if (skipRows > 0) ctx.progress.tick(skipRows);
        if (skipRows > 0) ctx.logger.info(`${split}: resuming after ${before!.shards.length} shards (${skipRows} rows) from run ${latest!.runId}`);
        const skips = new SkipCounts();
        const items = prepareItems(openSource(spec), { ...prepareOptionsFrom({ ...c, source: spec, crop: 'centre', blank_caption_prob: 0 }, ctx.seed), signal: ctx.signal, onWarning: (m) => ctx.logger.warn(m) }, skips);
        let t = performance.now();
        for await (const all of batches(items, c.batch_size)) {
          const batch = all.slice(Math.min(skipRows, all.length));
          skipRows -= all.length - batch.length;
          decodeSeconds += (performance.now() - t) / 1000;
          if (batch.length === 0) {
            t = performance.now();
            continue;
          }
          const t0 = performance.now();
          const pixels = new Float32Array(batch.length * c.resolution * c.resolution * 3);
          batch.forEach((item, i) => pixels.set(item.pixels, i * item.pixels.length));
          const codes = tf.tidy(() => vqgan.encode(tf.tensor4d(pixels, [batch.length, c.resolution, c.resolution, 3])));
          const flat = (await codes.data()) as Int32Array;
          codes.dispose();
          encodeSeconds += (performance.now() - t0) / 1000;
          const shardsBefore = writer.finishedShards.length;
          for (const [i, item] of batch.entries()) {
            await writer.add({ key: item.key, caption: item.caption, encoding: flat.subarray(i * codeCount, (i + 1) * codeCount) });
          }
          encoded += batch.length;
          ctx.progress.tick(batch.length);
          if (writer.finishedShards.length > shardsBefore) {
            progress.splits[split] = { shards: [...writer.finishedShards], done: false };
            await ctx.checkpoints.save(++step, (d) => writeFile(join(d, 'progress.json'), JSON.stringify(progress)), { split, shards: writer.finishedShards.length });
          }
          if (ctx.signal.aborted) break;
          t = performance.now();
        }
        if (ctx.signal.aborted) {
          ctx.logger.info(`stopped: ${split} has ${writer.finishedShards.length} complete shards; the next run resumes after them`);
          break;
        }
        const manifest: EncodedManifest = await writer.finish();
        progress.splits[split] = { shards: manifest.shards, done: true };
        await ctx.checkpoints.save(++step, (d) => writeFile(join(d, 'progress.json'), JSON.stringify(progress)), { split, done: true });
        summary[`${split}_count`] = manifest.count;
        summary[`${split}_shards`] = manifest.shards.length;
        summary[`${split}_skipped`] = skips.toJSON();
        ctx.logger.info(`${split}: ${manifest.count} rows in ${manifest.shards.length} shards (${skips.toJSON().total} skipped)`);
      }
    } finally {
      ctx.progress.end();
      vqgan.dispose();
    }
    const seconds = (performance.now() - started) / 1000;
    Object.assign(summary, {
      code_count: codeCount,
      images_per_s: encoded / Math.max(seconds, 1e-9),
      decode_s: decodeSeconds,
      encode_s: encodeSeconds,
    });
    return { artifacts, summary };
  },
});
