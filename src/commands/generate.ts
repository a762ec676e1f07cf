/**
 * `minidalle generate "<prompt>"… --model <run-id | dir> [-n 8] [--seed 1] [--top-k K] [--top-p P]
 * [--temperature T] [--cond-scale S] [--out dir] [--prompts file.txt]`: samples images for each prompt and
 * writes them as PNGs, one grid PNG with the prompts as labels, and generations.json (prompt, seed,
 * sampling settings, codes, file names). Unset sampling flags take the model folder's generation_config.json.
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
  /** progress lines (a TTY bar or quiet lines) */
  progress: { start(total: number, unit: string): void; tick(n?: number): void; end(): void };
  log: (line: string) => void;
}

/** A model folder from a folder path, an `hf:`/`wandb:` reference (pulled into the cache), or a run id (prefix) whose `model` artifact is one. */
export async function resolveModelDir(model: string, runsDir: string, o: { log?: (line: string) => void; progress?: GenerateArgs['progress'] } = {}): Promise<string> {
  const { parseModelRef, resolveModelRef } = await import('../core/refs.js');
  const ref = parseModelRef(model);
  if (ref) {
    const { dir } = await resolveModelRef(ref, o);
    if (existsSync(join(dir, 'config.json'))) return dir;
    throw new GenerateError(`--model ${model}: what it names (pulled into ${dir}) has no config.json; name a model folder pushed from a seq2seq-train run`);
  }
  if (existsSync(model) && statSync(model).isDirectory()) {
    if (existsSync(join(model, 'config.json'))) return resolve(model);
    if (existsSync(join(model, 'out', 'model', 'config.json'))) return resolve(model, 'out', 'model');
    throw new GenerateError(`--model ${model}: the folder has no config.json (a model folder from seq2seq-train holds config.json, model.safetensors, tokenizer.json and vqgan.json)`);
  }
  const { RunStore } = await import('../core/runs/index.js');
  const store = new RunStore(runsDir, { onWarning: () => {} });
  let run;
  try {
    run = await store.open(model);
  } catch (err) {
    throw new GenerateError(`--model ${model}: not a folder, and ${(err as Error).message}`);
  }
  const record = await run.read();
  const art = record.outputs?.artifacts.model;
  const dir = art === undefined ? undefined : resolve(run.dir, art);
  if (!dir || !existsSync(join(dir, 'config.json'))) {
    throw new GenerateError(`--model ${model}: run ${run.id} (${record.plugin ?? record.kind}, ${record.status}) has no model artifact with a config.json; name a finished seq2seq-train run`);
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
  const dir = await resolveModelDir(a.model, a.runsDir, { log: a.log, progress: a.progress });

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
    await mkdir(a.out, { recursive: true });
    const files: string[] = [];
    const records = [];
    for (const im of images) {
      const name = `p${String(im.promptIndex).padStart(2, '0')}-s${String(im.sample).padStart(2, '0')}.png`;
      await writeFile(join(a.out, name), await rgbToPng(im.rgb, side));
      files.push(name);
      records.push({ prompt: im.prompt, prompt_index: im.promptIndex, sample: im.sample, seed: im.seed, file: name, codes: Array.from(im.codes) });
    }
    const grid = await imageGrid(prompts.map((p, i) => ({ label: p, images: images.filter((im) => im.promptIndex === i).map((im) => im.rgb) })), side);
    await writeFile(join(a.out, 'grid.png'), grid);
    files.push('grid.png');
    const seconds = (performance.now() - t0) / 1000;
    await writeFile(
      join(a.out, 'generations.json'),
      `${JSON.stringify({ model: dir, seed: a.seed, samples_per_prompt: a.samples, sampling: { top_k: sampling.topK, top_p: sampling.topP, temperature: sampling.temperature, cond_scale: sampling.condScale }, seconds, images: records }, null, 1)}\n`,
    );
    files.push('generations.json');
    a.log(`generate: ${images.length} image(s), grid and generations.json in ${a.out} (${seconds.toFixed(1)} s)`);
    return { out: a.out, files };
  } finally {
    t2i.dispose();
  }
}
