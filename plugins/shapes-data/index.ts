/**
 * shapes-data: a synthetic captioned dataset (shape × colour × position × size × background) written as
 * img2dataset-style webdataset shards, with a held-out split of shape×colour pairs never seen in train.
 */
import { z } from 'zod';
import { definePlugin } from '../../src/core/plugins/types.js';
import { COLOUR_NAMES, COLOURS, DEFAULT_HELDOUT_COMBOS, PLAIN_BACKGROUND, POSITIONS, SHAPES, SIZES, SIZE_FRACTION, generateShapes } from '../../src/data/shapes.js';
import type { ColourName, ShapeName } from '../../src/data/shapes.js';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

// The judge of generated shapes images and the caption parser, for evaluators of models trained on this dataset.
export { ShapesJudge, ShapesJudgeError, createShapesJudge, judgeShapesImage, parseShapesCaption, scoreShapes, DEFAULT_JUDGE_OPTIONS, SCORED_ATTRIBUTES } from '../../src/data/shapes-judge.js';
export type { AskedAttributes, BackgroundName, JudgedAttribute, ScoredAttribute, ShapesJudgement, ShapesJudgeOptions, ShapesScore } from '../../src/data/shapes-judge.js';

const Combo = z
  .object({
    shape: z.enum(SHAPES as unknown as [ShapeName, ...ShapeName[]]).describe('shape name, e.g. star'),
    colour: z.enum(COLOUR_NAMES as [ColourName, ...ColourName[]]).describe('colour name, e.g. green'),
  })
  .strict();

export const ShapesDataConfig = z
  .object({
    count: z.number().int().min(1).default(4000).describe('number of training samples'),
    size: z.number().int().min(16).max(1024).default(32).describe('image side in pixels'),
    seed: z.number().int().min(0).nullable().default(null).describe('generator seed; null uses the experiment seed'),
    samples_per_shard: z.number().int().min(1).default(1000).describe('samples per tar shard'),
    heldout_count: z.number().int().min(0).default(400).describe('number of held-out samples (only held-out combinations)'),
    heldout_combos: z
      .array(Combo)
      .default(() => DEFAULT_HELDOUT_COMBOS.map((c) => ({ ...c })))
      .describe('shape×colour pairs that never appear in train'),
    plain_background_prob: z.number().min(0).max(1).default(0.5).describe('probability of the plain grey background instead of a second colour'),
  })
  .strict();

export type ShapesDataConfig = z.output<typeof ShapesDataConfig>;

export default definePlugin({
  name: 'shapes-data',
  description: 'Synthetic captioned shapes as webdataset tar shards, with a held-out shape×colour split',
  config: ShapesDataConfig,
  async run(ctx) {
    const c = ctx.config;
    const seed = c.seed ?? ctx.seed;
    const total = c.count + c.heldout_count;
    ctx.logger.info(`shapes-data: ${c.count} train + ${c.heldout_count} held-out images of ${c.size}px, seed ${seed}`);
    ctx.progress.start(total, 'img');
    let result;
    try {
      result = await generateShapes(
        ctx.outDir,
        {
          count: c.count,
          heldoutCount: c.heldout_count,
          size: c.size,
          seed,
          samplesPerShard: c.samples_per_shard,
          heldoutCombos: c.heldout_combos,
          plainBackgroundProb: c.plain_background_prob,
        },
        { signal: ctx.signal, onItem: () => ctx.progress.tick(1) },
      );
    } finally {
      ctx.progress.end();
    }
    if (result.aborted) ctx.logger.warn(`shapes-data: aborted after ${result.train.count} train / ${result.heldout.count} held-out samples; shards written so far are complete`);
    // The vocabulary with exact RGB values, so evaluators can judge generations by pixels.
    const manifest = {
      producer: 'shapes-data',
      seed,
      size: c.size,
      shapes: SHAPES,
      colours: COLOURS,
      plain_background: PLAIN_BACKGROUND,
      positions: POSITIONS,
      sizes: SIZE_FRACTION,
      size_names: SIZES,
      heldout_combos: c.heldout_combos,
      train: { pattern: result.train.pattern, count: result.train.count, shards: result.train.shards.length },
      heldout: { pattern: result.heldout.pattern, count: result.heldout.count, shards: result.heldout.shards.length },
      histogram: result.histogram,
    };
    const manifestPath = join(ctx.outDir, 'shapes.json');
    await writeFile(manifestPath, JSON.stringify(manifest, null, 2) + '\n');
    const summary = {
      train_count: result.train.count,
      heldout_count: result.heldout.count,
      train_shards: result.train.shards.length,
      heldout_shards: result.heldout.shards.length,
      aborted: result.aborted,
    };
    ctx.summary(summary);
    const artifacts: Record<string, string> = { manifest: manifestPath };
    if (result.train.pattern) artifacts.train = result.train.pattern;
    if (result.heldout.pattern) artifacts.heldout = result.heldout.pattern;
    return { artifacts, summary };
  },
});
