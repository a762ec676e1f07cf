/**
 * A text → image model as one folder, and what turns prompts into pixels with it:
 *
 *   <model>/config.json + model.safetensors   the DalleBart (HF names)
 *   <model>/tokenizer.json                    its text tokenizer
 *   <model>/vqgan.json                        the VQGAN it was trained with: { path, files: { name: sha256 } }
 *                                             (or a `vqgan/` folder inside, for an exported, movable model)
 *
 * The VQGAN is verified against the digests recorded at training: codes only mean something to the VQGAN
 * that produced them, and a silently swapped VQGAN gives plausible-looking garbage.
 */
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { isAbsolute, join, resolve } from 'node:path';
import sharp, { type OverlayOptions } from 'sharp';
import { hashFile } from '../core/runs/fs-util.js';
import { tf } from './backend.js';
import { DalleBart, loadDalleBart } from './models/dallebart.js';
import { loadVqgan, type Vqgan } from './models/vqgan.js';
import { generateCodes, sampleSeed, type SamplingOptions, type TextBatch } from './sampling/index.js';
import { loadTokenizer, type TextTokenizer } from './tokenizers/index.js';

export const VQGAN_REF_FILE = 'vqgan.json';
const VQGAN_FILES = ['config.json', 'model.safetensors'];

export class ModelFolderError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ModelFolderError';
  }
}

export interface VqganReference {
  /** absolute path, or relative to the model folder */
  path: string;
  /** sha256 of the VQGAN folder's files */
  files: Record<string, string>;
}

/** The reference a model folder records for `vqganDir` (digests of its config and weights). */
export async function vqganReference(vqganDir: string): Promise<VqganReference> {
  const files: Record<string, string> = {};
  for (const f of VQGAN_FILES) files[f] = (await hashFile(join(vqganDir, f))).sha256;
  return { path: resolve(vqganDir), files };
}

export async function writeVqganReference(modelDir: string, vqganDir: string): Promise<void> {
  await writeFile(join(modelDir, VQGAN_REF_FILE), `${JSON.stringify(await vqganReference(vqganDir), null, 2)}\n`);
}

/** The VQGAN folder a model folder refers to, verified by its digests; a clear error otherwise. */
export async function resolveVqgan(modelDir: string): Promise<string> {
  const refFile = join(modelDir, VQGAN_REF_FILE);
  if (!existsSync(refFile)) {
    if (existsSync(join(modelDir, 'vqgan', 'model.safetensors'))) return join(modelDir, 'vqgan');
    throw new ModelFolderError(`${modelDir}: no ${VQGAN_REF_FILE} and no vqgan/ folder; a text → image model folder names the VQGAN its codes belong to`);
  }
  let ref: VqganReference;
  try {
    ref = JSON.parse(await readFile(refFile, 'utf8')) as VqganReference;
  } catch (err) {
    throw new ModelFolderError(`${refFile}: not JSON (${(err as Error).message})`);
  }
  if (typeof ref?.path !== 'string' || typeof ref.files !== 'object' || ref.files === null) throw new ModelFolderError(`${refFile}: expected { "path": "<vqgan folder>", "files": { "<file>": "<sha256>" } }`);
  const inside = join(modelDir, 'vqgan');
  const dir = existsSync(join(inside, 'model.safetensors')) ? inside : isAbsolute(ref.path) ? ref.path : join(modelDir, ref.path);
  for (const [file, want] of Object.entries(ref.files)) {
    const p = join(dir, file);
    if (!existsSync(p)) throw new ModelFolderError(`${modelDir}: its VQGAN ${dir} has no ${file} (it was moved or deleted); the model's codes need the VQGAN it was trained with`);
    const got = (await hashFile(p)).sha256;
    if (got !== want) {
      throw new ModelFolderError(`${modelDir}: its VQGAN ${p} has sha256 ${got.slice(0, 12)}…, but the model was trained with ${want.slice(0, 12)}…; the VQGAN was changed or replaced, and its codes would decode to wrong images`);
    }
  }
  return dir;
}

export const GENERATION_CONFIG_FILE = 'generation_config.json';

/** dalle-mini's sampling defaults, for a model folder that names none of its own. */
export const DEFAULT_SAMPLING: Required<Pick<SamplingOptions, 'topK' | 'topP' | 'temperature' | 'condScale'>> = { topK: 0, topP: 1, temperature: 1, condScale: 10 };

/**
 * The sampling settings a model folder recommends (HF's generation_config.json keys: top_k, top_p,
 * temperature, and dalle-mini's condition_scale), written by the trainer from what it evaluated with.
 */
export async function readGenerationConfig(dir: string): Promise<typeof DEFAULT_SAMPLING> {
  const file = join(dir, GENERATION_CONFIG_FILE);
  if (!existsSync(file)) return { ...DEFAULT_SAMPLING };
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new ModelFolderError(`${file}: not JSON (${(err as Error).message})`);
  }
  const num = (k: string, fallback: number): number => {
    const v = raw[k];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new ModelFolderError(`${file}: field '${k}' must be a number, got ${JSON.stringify(v)}`);
    return v;
  };
  return { topK: num('top_k', DEFAULT_SAMPLING.topK), topP: num('top_p', DEFAULT_SAMPLING.topP), temperature: num('temperature', DEFAULT_SAMPLING.temperature), condScale: num('condition_scale', DEFAULT_SAMPLING.condScale) };
}

export async function writeGenerationConfig(dir: string, s: typeof DEFAULT_SAMPLING): Promise<void> {
  const json = { do_sample: true, top_k: s.topK, top_p: s.topP, temperature: s.temperature, condition_scale: s.condScale };
  await writeFile(join(dir, GENERATION_CONFIG_FILE), `${JSON.stringify(json, null, 2)}\n`);
}

/** A loaded text → image model. */
export interface Text2Image {
  model: DalleBart;
  tokenizer: TextTokenizer;
  vqgan: Vqgan;
  dir: string;
  dispose(): void;
}

export async function loadText2Image(dir: string): Promise<Text2Image> {
  for (const f of ['config.json', 'model.safetensors', 'tokenizer.json']) {
    if (!existsSync(join(dir, f))) throw new ModelFolderError(`${dir}: no ${f}; a text → image model folder holds config.json, model.safetensors, tokenizer.json and ${VQGAN_REF_FILE}`);
  }
  const vqganDir = await resolveVqgan(dir);
  const tokenizer = await loadTokenizer(join(dir, 'tokenizer.json'));
  const model = await loadDalleBart(dir);
  let vqgan: Vqgan;
  try {
    vqgan = await loadVqgan(vqganDir);
  } catch (err) {
    model.dispose();
    throw err;
  }
  const side = vqgan.config.resolution / 2 ** (vqgan.config.ch_mult.length - 1);
  if (side * side !== model.config.image_length || vqgan.config.n_embed !== model.config.image_vocab_size) {
    model.dispose();
    vqgan.dispose();
    throw new ModelFolderError(`${dir}: the model makes ${model.config.image_length} codes of ${model.config.image_vocab_size}, its VQGAN ${vqganDir} ${side * side} of ${vqgan.config.n_embed}`);
  }
  return { model, tokenizer, vqgan, dir, dispose: () => (model.dispose(), vqgan.dispose()) };
}

/** Prompts (and the empty caption) as the model's text batch. */
export function textBatch(tokenizer: TextTokenizer, prompts: readonly string[], maxLength: number): TextBatch {
  return tokenizer.encodeBatch(prompts, { maxLength });
}

export interface GenerateImagesOptions {
  /** samples per prompt */
  samples: number;
  seed: number;
  sampling: SamplingOptions;
  /** rows decoded together (prompts × samples are split into batches of this many) */
  batchSize?: number;
  onProgress?: (codesDone: number, codesTotal: number) => void;
}

export interface GeneratedImage {
  prompt: string;
  promptIndex: number;
  sample: number;
  seed: number;
  codes: Int32Array;
  /** (side, side, 3) RGB bytes */
  rgb: Uint8Array;
}

/**
 * Images for `prompts`, `samples` each. Sample s of prompt p uses seed `sampleSeed(seed, p, s)`, so it is the
 * same image whatever the batch size or the other prompts. Super-conditioning (condScale ≠ 1) batches the
 * empty caption, tokenised like every prompt, alongside.
 */
export function generateImages(t2i: Pick<Text2Image, 'model' | 'tokenizer' | 'vqgan'>, prompts: readonly string[], o: GenerateImagesOptions): GeneratedImage[] {
  const L = t2i.model.config.max_text_length;
  const jobs = prompts.flatMap((prompt, p) => Array.from({ length: o.samples }, (_, s) => ({ prompt, p, s, seed: sampleSeed(o.seed, p, s) })));
  const uncond = (o.sampling.condScale ?? 1) !== 1 ? textBatch(t2i.tokenizer, [''], L) : undefined;
  const batch = Math.max(1, o.batchSize ?? 16);
  const out: GeneratedImage[] = [];
  const total = jobs.length * t2i.model.config.image_length;
  for (let i = 0; i < jobs.length; i += batch) {
    const part = jobs.slice(i, i + batch);
    const text = textBatch(t2i.tokenizer, part.map((j) => j.prompt), L);
    const codes = generateCodes(t2i.model, {
      text,
      ...(uncond ? { uncond } : {}), // every row is padded to L, the empty caption too
      seeds: part.map((j) => j.seed),
      sampling: o.sampling,
      onStep: (t, T) => o.onProgress?.(i * T + t * part.length, total),
    });
    const rgb = decodeToRgb(t2i.vqgan, codes);
    part.forEach((j, k) => out.push({ prompt: j.prompt, promptIndex: j.p, sample: j.s, seed: j.seed, codes: codes[k] as Int32Array, rgb: rgb[k] as Uint8Array }));
  }
  return out;
}

/** Codes → RGB bytes through the VQGAN decoder. */
export function decodeToRgb(vqgan: Vqgan, codes: readonly Int32Array[]): Uint8Array[] {
  if (codes.length === 0) return [];
  const n = (codes[0] as Int32Array).length;
  const flat = new Int32Array(codes.length * n);
  codes.forEach((c, i) => flat.set(c, i * n));
  const t = tf.tensor2d(flat, [codes.length, n], 'int32');
  const img = vqgan.decode(t);
  const px = img.dataSync() as Float32Array;
  const per = px.length / codes.length;
  tf.dispose([t, img]);
  return codes.map((_, i) => {
    const out = new Uint8Array(per);
    for (let k = 0; k < per; k++) out[k] = Math.max(0, Math.min(255, Math.round(((px[i * per + k] as number) + 1) * 127.5)));
    return out;
  });
}

export async function rgbToPng(rgb: Uint8Array, side: number): Promise<Uint8Array> {
  return new Uint8Array(await sharp(Buffer.from(rgb), { raw: { width: side, height: side, channels: 3 } }).png().toBuffer());
}

function escapeXml(s: string): string {
  return s.replace(/[<>&'"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', "'": '&apos;', '"': '&quot;' })[c] as string);
}

/**
 * A grid PNG: one row per label (prompt) with its images, each image scaled ×`scale` (nearest), a label
 * strip above each row. Labels render through librsvg's text (DejaVu fonts from the system).
 */
export async function imageGrid(rows: { label: string; images: Uint8Array[] }[], side: number, scale = 3): Promise<Uint8Array> {
  const cell = side * scale;
  const gap = 4;
  const labelH = rows.some((r) => r.label) ? 18 : 0;
  const cols = Math.max(1, ...rows.map((r) => r.images.length));
  const width = cols * cell + (cols + 1) * gap;
  const height = rows.length * (cell + labelH + gap) + gap;
  const composites: OverlayOptions[] = [];
  for (const [r, row] of rows.entries()) {
    const y = gap + r * (cell + labelH + gap);
    if (row.label) {
      const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${labelH}"><text x="${gap}" y="${labelH - 5}" font-family="DejaVu Sans, sans-serif" font-size="11" fill="#111">${escapeXml(row.label)}</text></svg>`;
      composites.push({ input: Buffer.from(svg), left: 0, top: y });
    }
    for (const [c, rgb] of row.images.entries()) {
      const tile = await sharp(Buffer.from(rgb), { raw: { width: side, height: side, channels: 3 } }).resize(cell, cell, { kernel: 'nearest' }).png().toBuffer();
      composites.push({ input: tile, left: gap + c * (cell + gap), top: y + labelH });
    }
  }
  const png = await sharp({ create: { width, height, channels: 3, background: { r: 240, g: 240, b: 240 } } }).composite(composites).png().toBuffer();
  return new Uint8Array(png);
}
