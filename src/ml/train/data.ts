/**
 * The trainers' data paths, each counting what it skips: images (with captions) decoded once into memory
 * for small datasets such as shapes (4,000 × 32 px ≈ 50 MB), and the stage-input lookup every trainer
 * uses for "the upstream stage's artifact".
 */
import type { StageContext } from '../../core/plugins/types.js';
import { DEFAULT_CAPTION_OPTIONS, pickCaption } from '../../data/captions.js';
import { prepareItems } from '../../data/prepare.js';
import { DEFAULT_PREPROCESS } from '../../data/preprocess.js';
import { SkipCounts } from '../../data/skips.js';
import { openSource } from '../../data/sources/index.js';
import { tf } from '../backend.js';

export interface ImageSet {
  pixels: Float32Array; // (N, R, R, 3) in [-1, 1]
  captions: string[]; // (N)
  count: number;
  side: number;
  /** what the data path dropped while reading, by reason */
  skips: SkipCounts;
}

export interface ImageSetOptions {
  resolution: number;
  /** at most this many items (0 = all) */
  limit?: number;
  signal: AbortSignal;
  warn: (message: string) => void;
  lowercase?: boolean;
}

/** Reads every usable item of `spec` (any source `openSource` knows), centre-cropped to `resolution`. */
export async function loadImageSet(spec: string, o: ImageSetOptions): Promise<ImageSet> {
  const chunks: Float32Array[] = [];
  const captions: string[] = [];
  const skips = new SkipCounts();
  const items = prepareItems(
    openSource(spec),
    {
      captions: { ...DEFAULT_CAPTION_OPTIONS, lowercase: o.lowercase ?? false },
      image: { ...DEFAULT_PREPROCESS, resolution: o.resolution, range: '-1_1', crop: 'centre' },
      seed: 0,
      epoch: 0,
      signal: o.signal,
      onWarning: o.warn,
    },
    skips,
  );
  for await (const it of items) {
    chunks.push(it.pixels);
    captions.push(it.caption);
    if (o.limit && chunks.length >= o.limit) break;
  }
  const per = o.resolution * o.resolution * 3;
  const pixels = new Float32Array(chunks.length * per);
  chunks.forEach((c, i) => pixels.set(c, i * per));
  return { pixels, captions, count: chunks.length, side: o.resolution, skips };
}

export interface CaptionSet {
  captions: string[];
  skips: SkipCounts;
}

/**
 * The captions of `spec` (images are not decoded): for tokenizer training and text pre-training. An item
 * without a caption in `fields` is skipped and counted.
 */
export async function loadCaptions(spec: string, o: { fields?: string[]; limit?: number; signal: AbortSignal; warn: (message: string) => void }): Promise<CaptionSet> {
  const source = openSource(spec);
  const skips = new SkipCounts();
  const captions: string[] = [];
  const options = { ...DEFAULT_CAPTION_OPTIONS, fields: o.fields ?? DEFAULT_CAPTION_OPTIONS.fields };
  for await (const item of source.items({ skips, signal: o.signal, onWarning: o.warn })) {
    const caption = pickCaption(item, options);
    if (caption === undefined) {
      const msg = `${source.description}: item "${item.key}" has no caption in ${options.fields.join(' / ')}`;
      skips.add('missing_caption', msg);
      o.warn(msg);
      continue;
    }
    captions.push(caption);
    if (o.limit && captions.length >= o.limit) break;
  }
  return { captions, skips };
}

/** (B, R, R, 3) batch of the items at `idx`. */
export function imageBatch(set: ImageSet, idx: readonly number[]): tf.Tensor4D {
  const per = set.side * set.side * 3;
  const buf = new Float32Array(idx.length * per);
  idx.forEach((k, i) => buf.set(set.pixels.subarray(k * per, (k + 1) * per), i * per));
  return tf.tensor4d(buf, [idx.length, set.side, set.side, 3]);
}

export class StageInputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StageInputError';
  }
}

/** The first upstream stage's (in `needs:`) artifact called `artifact`. */
export function upstreamArtifact(ctx: StageContext<unknown>, artifact: string): string | undefined {
  for (const out of Object.values(ctx.inputs)) if (out.artifacts[artifact]) return out.artifacts[artifact];
  return undefined;
}

/**
 * `value` when set, else the first upstream stage (in `needs:`) that has an artifact called `artifact`;
 * an actionable error names the `with:` field otherwise.
 */
export function resolveInput(ctx: StageContext<unknown>, plugin: string, field: string, value: string, artifact: string, hint: string): string {
  const found = value || upstreamArtifact(ctx, artifact);
  if (found) return found;
  throw new StageInputError(`${plugin}: 'with.${field}' is empty and no upstream stage (needs:) has a '${artifact}' artifact; set with.${field} to ${hint}`);
}
