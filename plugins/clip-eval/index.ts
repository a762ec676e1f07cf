/**
 * clip-eval: DALL·E mini's "generate many, show the best". For each prompt, N samples from a trained text →
 * image model, each scored by a CLIP, re-ranked best first. Logged: the mean CLIP score, the mean best-of-N
 * score and the mean random-of-N score (the expectation over a uniformly drawn sample, i.e. the mean), their
 * gain, a W&B-style table (prompt, rank, score, image) as a JSON table file, and a grid per prompt. With
 * `judge: shapes` the pixel judge says whether re-ranking picks better images: attribute accuracy of the
 * top-1 against a random sample (again the expectation, the mean over all N), and the share of prompts with at
 * least one all-right sample (what a perfect re-ranker would pick). It also scores real
 * image-caption pairs (the ceiling a generated image can reach).
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { z } from 'zod';
import { definePlugin } from '../../src/core/plugins/types.js';
import { createShapesJudge, parseShapesCaption, scoreShapes, SCORED_ATTRIBUTES, type ShapesJudge, type ShapesScore } from '../../src/data/shapes-judge.js';
import { describeCompute, initCompute } from '../../src/ml/backend.js';
import { clipScores, loadClipScorer, rerank } from '../../src/ml/clip-rank.js';
import { generateImages, imageGrid, loadText2Image, readGenerationConfig, rgbToPng, type GeneratedImage } from '../../src/ml/text2image.js';
import { loadCaptions, loadImageSet, resolveInput, upstreamArtifact } from '../../src/ml/train/data.js';

const posInt = z.number().int().min(1);

export const ClipEvalConfig = z
  .object({
    model: z.string().default('').describe("text → image model folder (seq2seq-train's); '' = the upstream stage's model artifact"),
    clip: z.string().default('').describe("CLIP folder (clip-train's); '' = the upstream stage's clip artifact"),
    prompts: z.array(z.string().min(1)).default([]).describe('prompts to generate for'),
    prompts_file: z.string().default('').describe('a text file of prompts, one per line (# comments)'),
    captions: z.string().default('').describe("when no prompts are given: captions of this source are the prompts; '' = the upstream stage's heldout artifact"),
    prompt_count: posInt.default(32).describe('prompts taken from captions'),
    samples_per_prompt: posInt.default(16).describe('N: samples generated and re-ranked per prompt'),
    top: posInt.default(4).describe('best samples per prompt written as images and shown first in the grids'),
    seed: z.number().int().min(0).nullable().default(null).describe('sampling seed; null = experiment seed'),
    cond_scale: z.number().min(0).nullable().default(null).describe("super-conditioning scale; null = the model folder's generation_config.json"),
    top_k: z.number().int().min(0).nullable().default(null).describe('top-k; null = the model folder’s'),
    top_p: z.number().positive().max(1).nullable().default(null).describe('top-p; null = the model folder’s'),
    temperature: z.number().positive().nullable().default(null).describe('temperature; null = the model folder’s'),
    judge: z.enum(['none', 'shapes']).default('none').describe("'shapes': judge the pixels of the top-1 and of every sample"),
    real_images: z.string().default('').describe("captioned real images scored as the ceiling; '' = the upstream heldout artifact, 'none' = skip"),
    real_count: posInt.default(256).describe('real pairs scored'),
    batch_size: posInt.default(32).describe('sequences decoded together'),
    grids: posInt.default(8).describe('prompts that get a grid of all their samples, best first'),
  })
  .strict();

export type ClipEvalConfig = z.output<typeof ClipEvalConfig>;

export class ClipEvalError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ClipEvalError';
  }
}

const NAME = 'clip-eval';

function mean(xs: readonly number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0;
}

/** attr_acc/* and all_correct of a score under `prefix`. */
function judgeMetrics(prefix: string, s: ShapesScore): Record<string, number> {
  const out: Record<string, number> = {};
  for (const k of SCORED_ATTRIBUTES) if (s.attr_acc[k] !== null) out[`${prefix}/attr_acc/${k}`] = s.attr_acc[k] as number;
  if (s.all_correct !== null) out[`${prefix}/all_correct`] = s.all_correct;
  return out;
}

export default definePlugin({
  name: NAME,
  version: '1',
  description: 'Generate N samples per prompt, score them with CLIP, re-rank; best-of-N vs random-of-N scores (and judged accuracy on shapes), a table and grids',
  config: ClipEvalConfig,
  async run(ctx) {
    const c = ctx.config;
    const info = await initCompute();
    ctx.meta({ backend: info });
    const modelDir = resolveInput(ctx, NAME, 'model', c.model, 'model', 'a seq2seq-train model folder, or add its stage to needs:');
    const clipDir = resolveInput(ctx, NAME, 'clip', c.clip, 'clip', 'a CLIP folder, or add a clip-train stage to needs:');
    let prompts = [...c.prompts];
    if (c.prompts_file) {
      const text = await readFile(c.prompts_file, 'utf8').catch((e: Error) => {
        throw new ClipEvalError(`${NAME}: with.prompts_file ${c.prompts_file}: ${e.message}`);
      });
      prompts.push(...text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l && !l.startsWith('#')));
    }
    const warn = (m: string): void => ctx.logger.warn(m);
    if (prompts.length === 0) {
      const source = resolveInput(ctx, NAME, 'captions', c.captions, 'heldout', 'prompts, a prompts_file, or a caption source');
      prompts = (await loadCaptions(source, { limit: c.prompt_count, signal: ctx.signal, warn })).captions;
    }
    if (prompts.length === 0) throw new ClipEvalError(`${NAME}: no prompts (with.prompts, with.prompts_file and the captions source are all empty)`);

    const t2i = await loadText2Image(modelDir);
    const scorer = await loadClipScorer(clipDir);
    try {
      const defaults = await readGenerationConfig(modelDir);
      const sampling = { condScale: c.cond_scale ?? defaults.condScale, topK: c.top_k ?? defaults.topK, topP: c.top_p ?? defaults.topP, temperature: c.temperature ?? defaults.temperature };
      const side = t2i.vqgan.config.resolution;
      const N = c.samples_per_prompt;
      ctx.logger.info(`${NAME}: ${prompts.length} prompts × ${N} samples from ${modelDir}, re-ranked by ${clipDir}; cond scale ${sampling.condScale}, top-k ${sampling.topK || 'off'}; compute ${describeCompute(info)}`);
      const T = t2i.model.config.image_length;
      ctx.progress.start(prompts.length * N * T, 'code');
      let done = 0;
      const images: GeneratedImage[] = generateImages(t2i, prompts, {
        samples: N,
        seed: c.seed ?? ctx.seed,
        sampling,
        batchSize: c.batch_size,
        onProgress: (n) => {
          ctx.progress.tick(n - done);
          done = n;
        },
      });
      ctx.progress.end();
      if (ctx.signal.aborted) return {};
      const ranked = rerank(scorer, images, side); // per prompt, best first

      const metrics: Record<string, number> = {
        'clip/mean_score': mean(ranked.flat().map((r) => r.score)),
        'clip/best_of_n_score': mean(ranked.map((r) => r[0]?.score ?? 0)),
        'clip/random_of_n_score': mean(ranked.map((r) => mean(r.map((x) => x.score)))),
      };
      metrics['clip/best_minus_random'] = (metrics['clip/best_of_n_score'] as number) - (metrics['clip/random_of_n_score'] as number);

      // does re-ranking pick better images? the pixel judge on the top-1 and on every sample
      let judge: ShapesJudge | undefined;
      const correct = new Map<GeneratedImage, boolean>();
      if (c.judge === 'shapes') {
        judge = await createShapesJudge(side);
        const asked = ranked.map((r) => parseShapesCaption((r[0] as { item: GeneratedImage }).item.prompt));
        const top1 = scoreShapes(ranked.map((r) => judge!.judge((r[0] as { item: GeneratedImage }).item.rgb)), asked);
        const all = ranked.flatMap((r) => r.map((x) => ({ x, j: judge!.judge(x.item.rgb) })));
        const random = scoreShapes(all.map((a) => a.j), all.map((a) => parseShapesCaption(a.x.item.prompt)));
        for (const a of all) correct.set(a.x.item, scoreShapes([a.j], [parseShapesCaption(a.x.item.prompt)]).all_correct === 1);
        Object.assign(metrics, judgeMetrics('judge/top1', top1), judgeMetrics('judge/random', random));
        // the headroom of re-ranking: prompts with at least one all-right sample, the top-1 of a perfect re-ranker
        metrics['judge/any_of_n/all_correct'] = ranked.filter((r) => r.some((x) => correct.get(x.item))).length / ranked.length;
        if (top1.all_correct !== null && random.all_correct !== null) metrics['judge/top1_minus_random/all_correct'] = top1.all_correct - random.all_correct;
      }

      // the ceiling: real images with their own captions
      const realSpec = c.real_images === 'none' ? '' : c.real_images || upstreamArtifact(ctx, 'heldout') || '';
      if (realSpec) {
        const S = scorer.clip.config.vision_config.image_size;
        const real = await loadImageSet(realSpec, { resolution: S, limit: c.real_count, signal: ctx.signal, warn });
        const per = S * S * 3;
        const px = Array.from({ length: real.count }, (_, i) => Float32Array.from(real.pixels.subarray(i * per, (i + 1) * per), (v) => (v + 1) / 2));
        if (real.count) metrics['clip/real_pairs_score'] = mean(clipScores(scorer, real.captions, px, S));
      }
      ctx.log(metrics, 0);

      // the top images as files, a W&B-style table, and grids of every sample best first
      const imagesDir = join(ctx.outDir, 'images');
      await mkdir(imagesDir, { recursive: true });
      const rows: (string | number | boolean)[][] = [];
      for (const [p, list] of ranked.entries()) {
        for (const r of list.slice(0, c.top)) {
          const file = join(imagesDir, `p${String(p).padStart(3, '0')}-rank${r.rank}.png`);
          await writeFile(file, await rgbToPng(r.item.rgb, side));
          rows.push([r.item.prompt, r.rank, Number(r.score.toFixed(3)), relative(ctx.runDir, file), r.item.seed, ...(judge ? [correct.get(r.item) ?? false] : [])]);
        }
      }
      const columns = ['prompt', 'rank', 'clip_score', 'image', 'seed', ...(judge ? ['judge_all_correct'] : [])];
      const tableDir = join(ctx.runDir, 'media', 'table');
      await mkdir(tableDir, { recursive: true });
      const tablePath = join(tableDir, 'clip_eval.table.json');
      await writeFile(tablePath, `${JSON.stringify({ columns, data: rows })}\n`);
      for (const [p, list] of ranked.slice(0, c.grids).entries()) {
        const label = `${list[0]?.item.prompt ?? ''} — CLIP ${list.map((r) => r.score.toFixed(1)).join(' ')}`;
        await ctx.media(`reranked/${p}`, await imageGrid([{ label, images: list.map((r) => r.item.rgb) }], side), 0, 'best first, with CLIP scores');
      }
      ctx.summary({ prompts: prompts.length, samples_per_prompt: N, table: relative(ctx.runDir, tablePath), sampling });
      return { artifacts: { images: imagesDir } };
    } finally {
      t2i.dispose();
      scorer.clip.dispose();
    }
  },
});
