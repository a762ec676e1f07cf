/**
 * Image preprocessing with sharp: decode (truncated files rejected), EXIF orientation, alpha flattened
 * on a chosen colour, shortest side resized to the model resolution, then a centre crop (eval) or a
 * seeded random crop (training), to Float32 [H, W, 3].
 */
import sharp from 'sharp';
import type { OutputInfo } from 'sharp';
import { DataError } from './errors.js';
import type { SeededRng } from './rng.js';

export interface PreprocessOptions {
  /** Output side in pixels (square). */
  resolution: number;
  /** `-1_1` maps 0..255 to [-1, 1] (VQGAN input); `0_1` to [0, 1]. */
  range: '-1_1' | '0_1';
  /** RGB used under transparent pixels. */
  background: [number, number, number];
  crop: 'centre' | 'random';
}

export const DEFAULT_PREPROCESS: PreprocessOptions = { resolution: 256, range: '-1_1', background: [255, 255, 255], crop: 'centre' };

export class ImageDecodeError extends DataError {
  constructor(
    readonly key: string,
    cause: string,
  ) {
    super(`image "${key}" cannot be decoded (${cause})`);
  }
}

export interface PreprocessedImage {
  /** [H, W, 3] row-major. */
  pixels: Float32Array;
  height: number;
  width: number;
}

/** Decodes and crops to `resolution`²; `rng` is used only for `crop: 'random'`. */
export async function preprocessImage(bytes: Uint8Array, options: PreprocessOptions, rng?: SeededRng, key = '?'): Promise<PreprocessedImage> {
  const side = options.resolution;
  if (bytes.byteLength === 0) throw new ImageDecodeError(key, 'empty file');
  let data: Buffer;
  let info: OutputInfo;
  try {
    // failOn 'warning' (sharp's default, spelled out): a truncated JPEG/PNG is an error, not a grey half-image.
    ({ data, info } = await sharp(bytes, { failOn: 'warning' })
      .rotate()
      .flatten({ background: { r: options.background[0], g: options.background[1], b: options.background[2] } })
      .toColourspace('srgb')
      .resize({ width: side, height: side, fit: 'outside', kernel: 'lanczos3' })
      .removeAlpha()
      .raw()
      .toBuffer({ resolveWithObject: true }));
  } catch (err) {
    throw new ImageDecodeError(key, (err as Error).message);
  }
  const { width: w, height: h, channels } = info;
  if (w < side || h < side) throw new ImageDecodeError(key, `resized to ${w}×${h}, smaller than ${side}`);
  let x0 = Math.floor((w - side) / 2);
  let y0 = Math.floor((h - side) / 2);
  if (options.crop === 'random') {
    if (!rng) throw new RangeError('preprocessImage: crop "random" needs a seeded rng');
    x0 = rng.int(w - side + 1);
    y0 = rng.int(h - side + 1);
  }
  const out = new Float32Array(side * side * 3);
  const scale = options.range === '-1_1' ? 2 / 255 : 1 / 255;
  const shift = options.range === '-1_1' ? -1 : 0;
  for (let y = 0; y < side; y++) {
    let src = ((y + y0) * w + x0) * channels;
    let dst = y * side * 3;
    for (let x = 0; x < side; x++) {
      out[dst] = (data[src] as number) * scale + shift;
      out[dst + 1] = (data[src + 1] as number) * scale + shift;
      out[dst + 2] = (data[src + 2] as number) * scale + shift;
      src += channels;
      dst += 3;
    }
  }
  return { pixels: out, height: side, width: side };
}
