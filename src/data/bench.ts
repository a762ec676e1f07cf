/**
 * Benchmark hooks for the bench runner: throughput of image preprocessing and of the encoded-shard
 * training loader, on data generated here (nothing downloaded). Each returns images/s figures.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { EncodedShardWriter } from './encoded.js';
import { EncodedLoader } from './loader.js';
import { preprocessImage } from './preprocess.js';
import { SeededRng } from './rng.js';
import { COLOUR_NAMES, POSITIONS, SHAPES, SIZES, renderShape } from './shapes.js';

export interface DataBenchResult {
  name: string;
  images_per_s: number;
  images: number;
  seconds: number;
  params: Record<string, number | string>;
}

export interface BenchPreprocessOptions {
  /** Images decoded per measurement. */
  count?: number;
  /** Side of the generated source JPEGs (non-square: width = 1.25 × this). */
  inputSize?: number;
  /** Model resolution. */
  resolution?: number;
  crop?: 'centre' | 'random';
}

/** JPEG decode + EXIF + resize + crop + float conversion, images/s on one thread of the caller. */
export async function benchPreprocess(options: BenchPreprocessOptions = {}): Promise<DataBenchResult> {
  const count = options.count ?? 64;
  const inputSize = options.inputSize ?? 320;
  const resolution = options.resolution ?? 256;
  const crop = options.crop ?? 'random';
  const rng = new SeededRng(1);
  const images: Buffer[] = [];
  for (let i = 0; i < Math.min(count, 16); i++) {
    const { png } = await renderShape({ shape: rng.pick(SHAPES), colour: rng.pick(COLOUR_NAMES), position: rng.pick(POSITIONS), size: rng.pick(SIZES), background: 'plain' }, inputSize);
    images.push(await sharp(png).resize({ width: Math.round(inputSize * 1.25), height: inputSize, fit: 'fill' }).jpeg({ quality: 90 }).toBuffer());
  }
  const opts = { resolution, range: '-1_1' as const, background: [255, 255, 255] as [number, number, number], crop };
  await preprocessImage(images[0] as Buffer, opts, rng); // warm-up (sharp/libvips initialisation)
  const t0 = performance.now();
  for (let i = 0; i < count; i++) await preprocessImage(images[i % images.length] as Buffer, opts, rng);
  const seconds = (performance.now() - t0) / 1000;
  return { name: 'data/preprocess', images_per_s: count / seconds, images: count, seconds, params: { input: `${Math.round(inputSize * 1.25)}x${inputSize} jpeg`, resolution, crop } };
}

export interface BenchLoaderOptions {
  rows?: number;
  codeCount?: number;
  batchSize?: number;
  shuffleWindow?: number;
  rowsPerShard?: number;
}

/** One epoch of the encoded loader (parquet decode + shuffle + batching), rows/s as images/s. */
export async function benchLoader(options: BenchLoaderOptions = {}): Promise<DataBenchResult> {
  const rows = options.rows ?? 8192;
  const codeCount = options.codeCount ?? 256;
  const batchSize = options.batchSize ?? 64;
  const shuffleWindow = options.shuffleWindow ?? 1024;
  const rowsPerShard = options.rowsPerShard ?? 2048;
  const dir = await mkdtemp(join(tmpdir(), 'minidalle-bench-loader-'));
  try {
    const rng = new SeededRng(2);
    const writer = new EncodedShardWriter({ dir, rowsPerShard, codeCount, producer: { bench: true } });
    const enc = new Int32Array(codeCount);
    for (let i = 0; i < rows; i++) {
      for (let j = 0; j < codeCount; j++) enc[j] = rng.int(16384);
      await writer.add({ key: String(i).padStart(9, '0'), caption: `a ${rng.pick(SIZES)} ${rng.pick(COLOUR_NAMES)} ${rng.pick(SHAPES)}`, encoding: enc });
    }
    await writer.finish();
    const loader = await EncodedLoader.open(dir, { batchSize, seed: 0, shuffleWindow, epochs: 1 });
    let n = 0;
    const t0 = performance.now();
    for await (const batch of loader) n += batch.length;
    const seconds = (performance.now() - t0) / 1000;
    return { name: 'data/loader', images_per_s: n / seconds, images: n, seconds, params: { codeCount, batchSize, shuffleWindow, rowsPerShard } };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
