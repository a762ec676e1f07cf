/**
 * `minidalle generate "<prompt>"… --model <run-id | dir> [-n 8] [--seed 1] [--top-k K] [--top-p P]
 * [--temperature T] [--cond-scale S] [--out dir] [--prompts file.txt] [--clip <run | dir> [--top K]]`: samples
 * images for each prompt and writes them as PNGs, one grid PNG with the prompts as labels, and generations.json
 * (prompt, seed, sampling settings, codes, file names). Unset sampling flags take the model folder's
 * generation_config.json. With --clip the samples of each prompt are re-ranked by CLIP score (best first, scores
 * in the grid's labels and generations.json) and --top keeps the best K.
 */
import { existsSync, statSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { SamplingOptions } from '../ml/sampling/index.js';

export class GenerateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GenerateError';
  }
}

export interface GenerateArgs {
  prompts: string[];
  promptsFile?: string;
  model: string;
  runsDir: string;
  samples: number;
  seed: number;
  /** unset: the model folder's generation_config.json, else dalle-mini's defaults */
  topK?: number;
  topP?: number;
  temperature?: number;
  condScale?: number;
  out: string;
  /** a CLIP (run id, folder or ref) that re-ranks the samples of each prompt */
  clip?: string;
  /** with clip: the best this many images per prompt are written and shown (default all) */
  top?: number;
  /** progress lines (a TTY bar or quiet lines) */
  progress: { start(total: number, unit: string): void; tick(n?: number): void; end(): void };
  log: (line: string) => void;
}

/**
 * A model folder from a folder path, an `hf:`/`wandb:` reference (pulled into the cache), or a run id (prefix)
 * whose `artifact` (seq2seq-train's `model`, the default; clip-train's `clip`) is one.
 */
export async function resolveModelDir(model: string, runsDir: string, o: { log?: (line: string) => void; progress?: GenerateArgs['progress']; artifact?: 'model' | 'clip' } = {}): Promise<string> {
  const artifact = o.artifact ?? 'model';
  const flag = artifact === 'model' ? '--model' : '--clip';
  const producer = artifact === 'model' ? 'seq2seq-train' : 'clip-train';
  const { parseModelRef, resolveModelRef } = await import('../core/refs.js');
  const ref = parseModelRef(model);
  if (ref) {
    const { dir } = await resolveModelRef(ref, o);
    if (existsSync(join(dir, 'config.json'))) return dir;
    throw new GenerateError(`${flag} ${model}: what it names (pulled into ${dir}) has no config.json; name a model folder pushed from a ${producer} run`);
  }
  if (existsSync(model) && statSync(model).isDirectory()) {
    if (existsSync(join(model, 'config.json'))) return resolve(model);
    if (existsSync(join(model, 'out', artifact, 'config.json'))) return resolve(model, 'out', artifact);
    throw new GenerateError(`${flag} ${model}: the folder has no config.json (a ${producer} model folder holds config.json, model.safetensors and tokenizer.json)`);
  }
  const { RunStore } = await import('../core/runs/index.js');
  const store = new RunStore(runsDir, { onWarning: () => {} });
  let run;
  try {
    run = await store.open(model);
  } catch (err) {
    throw new GenerateError(`${flag} ${model}: not a folder, and ${(err as Error).message}`);
  }
  const record = await run.read();
  const art = record.outputs?.artifacts[artifact];
  const dir = art === undefined ? undefined : resolve(run.dir, art);
  if (!dir || !existsSync(join(dir, 'config.json'))) {
    throw new GenerateError(`${flag} ${model}: run ${run.id} (${record.plugin ?? record.kind}, ${record.status}) has no ${artifact} artifact with a config.json; name a finished ${producer} run`);
  }
  return dir;
}

export async function generateCommand(a: GenerateArgs): Promise<{ out: string; files: string[] }> {
  let prompts = [...a.prompts];
  if (a.promptsFile) {
    const text = await readFile(a.promptsFile, 'utf8').catch((err: Error) => {
      throw new GenerateError(`--prompts ${a.promptsFile}: ${err.message}`);
    });
    prompts.push(...text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#')));
  }
  prompts = prompts.filter((p) => p.trim() !== '');
  if (prompts.length === 0) throw new GenerateError('no prompt: give prompts as arguments ("a red circle on the left") or --prompts file.txt (one per line)');
  if (!Number.isInteger(a.samples) || a.samples < 1) throw new GenerateError(`-n must be a positive integer, got ${a.samples}`);
  if (!Number.isSafeInteger(a.seed) || a.seed < 0) throw new GenerateError(`--seed must be a non-negative integer, got ${a.seed}`);
  if (a.top !== undefined && (!Number.isInteger(a.top) || a.top < 1)) throw new GenerateError(`--top must be a positive integer, got ${a.top}`);
  if (a.top !== undefined && !a.clip) throw new GenerateError('--top keeps the best images by CLIP score: give --clip <clip-train run | CLIP folder> too');
  const dir = await resolveModelDir(a.model, a.runsDir, { log: a.log, progress: a.progress });
  const clipDir = a.clip ? await resolveModelDir(a.clip, a.runsDir, { log: a.log, progress: a.progress, artifact: 'clip' }) : undefined;

  const t0 = performance.now();
  const { describeCompute, initCompute } = await import('../ml/backend.js');
  const info = await initCompute();
  const { generateImages, imageGrid, loadText2Image, readGenerationConfig, rgbToPng } = await import('../ml/text2image.js');
  const defaults = await readGenerationConfig(dir);
  const t2i = await loadText2Image(dir);
  const sampling = { topK: a.topK ?? defaults.topK, topP: a.topP ?? defaults.topP, temperature: a.temperature ?? defaults.temperature, condScale: a.condScale ?? defaults.condScale } satisfies SamplingOptions;
  const side = t2i.vqgan.config.resolution;
  a.log(`generate: ${prompts.length} prompt(s) × ${a.samples} from ${dir} (${t2i.model.params.count()} parameters, ${t2i.model.config.image_length} codes), cond scale ${sampling.condScale}, top-k ${sampling.topK || 'off'}, top-p ${sampling.topP}, temperature ${sampling.temperature}; compute ${describeCompute(info)}`);
  try {
    const total = prompts.length * a.samples * t2i.model.config.image_length;
    a.progress.start(total, 'code');
    let done = 0;
    const images = generateImages(t2i, prompts, {
      samples: a.samples,
      seed: a.seed,
      sampling,
      onProgress: (n) => {
        a.progress.tick(n - done);
        done = n;
      },
    });
    a.progress.end();
    // per prompt, the images to write: all in sample order, or with --clip the best `top` by CLIP score
    let kept: { im: (typeof images)[number]; score?: number; rank?: number }[][] = prompts.map((_, i) => images.filter((im) => im.promptIndex === i).map((im) => ({ im })));
    if (clipDir) {
      const { loadClipScorer, rerank } = await import('../ml/clip-rank.js');
      const scorer = await loadClipScorer(clipDir);
      try {
        kept = rerank(scorer, images, side).map((list) => list.slice(0, a.top ?? list.length).map((r) => ({ im: r.item, score: r.score, rank: r.rank })));
      } finally {
        scorer.clip.dispose();
      }
      a.log(`generate: re-ranked by CLIP ${clipDir}${a.top ? `, best ${a.top} of ${a.samples} kept` : ''}`);
    }
    await mkdir(a.out, { recursive: true });
    const files: string[] = [];
    const records = [];
    for (const { im, score, rank } of kept.flat()) {
      const name = `p${String(im.promptIndex).padStart(2, '0')}-${rank === undefined ? `s${String(im.sample).padStart(2, '0')}` : `rank${String(rank).padStart(2, '0')}`}.png`;
      await writeFile(join(a.out, name), await rgbToPng(im.rgb, side));
      files.push(name);
      records.push({ prompt: im.prompt, prompt_index: im.promptIndex, sample: im.sample, seed: im.seed, file: name, ...(score === undefined ? {} : { clip_score: Number(score.toFixed(3)), rank }), codes: Array.from(im.codes) });
    }
    const label = (p: string, row: (typeof kept)[number]): string => (clipDir ? `${p} — CLIP ${row.map((r) => (r.score as number).toFixed(1)).join(' ')}` : p);
    const grid = await imageGrid(prompts.map((p, i) => ({ label: label(p, kept[i] ?? []), images: (kept[i] ?? []).map((r) => r.im.rgb) })), side);
    await writeFile(join(a.out, 'grid.png'), grid);
    files.push('grid.png');
    const seconds = (performance.now() - t0) / 1000;
    await writeFile(
      join(a.out, 'generations.json'),
      `${JSON.stringify({ model: dir, seed: a.seed, samples_per_prompt: a.samples, ...(clipDir ? { clip: clipDir, top: a.top ?? a.samples } : {}), sampling: { top_k: sampling.topK, top_p: sampling.topP, temperature: sampling.temperature, cond_scale: sampling.condScale }, seconds, images: records }, null, 1)}\n`,
    );
    files.push('generations.json');
    a.log(`generate: ${records.length} image(s), grid and generations.json in ${a.out} (${seconds.toFixed(1)} s)`);
    return { out: a.out, files };
  } finally {
    t2i.dispose();
  }
}
