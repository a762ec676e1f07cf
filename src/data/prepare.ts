/**
 * Source → (caption handling, image preprocessing) → prepared items, with skips counted by reason. The
 * whole chain is streamed: one item at a time is decoded.
 */
import { DEFAULT_CAPTION_OPTIONS, processCaption } from './captions.js';
import { NoUsableItemsError } from './errors.js';
import { DEFAULT_PREPROCESS, ImageDecodeError, preprocessImage } from './preprocess.js';
import type { PreprocessOptions } from './preprocess.js';
import type { CaptionOptions } from './captions.js';
import { SeededRng, hashSeed } from './rng.js';
import { SkipCounts } from './skips.js';
import type { DataSource } from './sources/types.js';

export interface PrepareOptions {
  captions: CaptionOptions;
  image: PreprocessOptions;
  /** Seeds random crops and caption blanking (with `epoch` and the item key). */
  seed: number;
  epoch: number;
  signal?: AbortSignal;
  strict?: boolean;
  onWarning?: (message: string) => void;
}

export interface PreparedItem {
  key: string;
  caption: string;
  /** True when the caption was blanked for classifier-free guidance. */
  blanked: boolean;
  pixels: Float32Array;
  height: number;
  width: number;
  meta: Record<string, unknown>;
}

export const DEFAULT_PREPARE: PrepareOptions = { captions: DEFAULT_CAPTION_OPTIONS, image: DEFAULT_PREPROCESS, seed: 0, epoch: 0 };

function keyHash(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/**
 * Streams prepared items. Corrupt images and missing captions are skipped and counted in `skips`;
 * when nothing at all is usable, throws NoUsableItemsError naming the source and the reasons.
 */
export async function* prepareItems(source: DataSource, options: Partial<PrepareOptions> = {}, skips = new SkipCounts()): AsyncGenerator<PreparedItem, void, undefined> {
  const o = { ...DEFAULT_PREPARE, ...options };
  const warn = (m: string): void => {
    o.onWarning?.(m);
  };
  let good = 0;
  const readOptions = { skips, ...(o.signal ? { signal: o.signal } : {}), ...(o.strict ? { strict: true } : {}), onWarning: warn };
  for await (const item of source.items(readOptions)) {
    const rng = new SeededRng(hashSeed(o.seed, o.epoch, keyHash(item.key)));
    const cap = processCaption(item, o.captions, rng);
    if (!cap) {
      const msg = `${source.description}: item "${item.key}" has no caption in ${o.captions.fields.join(' / ')}`;
      skips.add('missing_caption', msg);
      warn(msg);
      continue;
    }
    let img;
    try {
      img = await preprocessImage(item.image, o.image, rng, item.key);
    } catch (err) {
      if (!(err instanceof ImageDecodeError)) throw err;
      const msg = `${source.description}: ${err.message}`;
      skips.add('corrupt_image', msg);
      warn(msg);
      continue;
    }
    good++;
    yield { key: item.key, caption: cap.caption, blanked: cap.blanked, pixels: img.pixels, height: img.height, width: img.width, meta: item.meta };
  }
  if (good === 0 && !o.signal?.aborted) throw new NoUsableItemsError(source.description, skips.toJSON().by_reason);
}
