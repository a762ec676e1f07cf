import { MediaError } from './errors.js';

const SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/**
 * Width and height from a PNG's IHDR chunk, which the format requires to be the first chunk: 8-byte
 * signature, then length (4, = 13), type `IHDR` (4), width (4, big-endian), height (4, big-endian).
 */
export function pngSize(png: Uint8Array, what = 'image'): { width: number; height: number } {
  if (png.length < 24 || SIGNATURE.some((b, i) => png[i] !== b)) {
    throw new MediaError(`${what}: not a PNG file (missing the 8-byte PNG signature); encode the image as PNG first`);
  }
  const view = new DataView(png.buffer, png.byteOffset, png.byteLength);
  const type = String.fromCharCode(png[12]!, png[13]!, png[14]!, png[15]!);
  if (type !== 'IHDR' || view.getUint32(8) !== 13) {
    throw new MediaError(`${what}: PNG does not start with a 13-byte IHDR chunk (found '${type}'); the file is corrupt`);
  }
  const width = view.getUint32(16);
  const height = view.getUint32(20);
  if (width === 0 || height === 0) throw new MediaError(`${what}: PNG IHDR has a zero width or height (${width}×${height})`);
  return { width, height };
}
