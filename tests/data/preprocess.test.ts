import { describe, it, expect } from 'vitest';
import sharp from 'sharp';
import { ImageDecodeError, preprocessImage } from '../../src/data/preprocess.js';
import type { PreprocessOptions } from '../../src/data/preprocess.js';
import { SeededRng } from '../../src/data/rng.js';
import { bandsImage, solidImage } from './fixtures.js';

const opts = (o: Partial<PreprocessOptions> = {}): PreprocessOptions => ({ resolution: 16, range: '-1_1', background: [255, 255, 255], crop: 'centre', ...o });

function px(p: Float32Array, side: number, x: number, y: number): number[] {
  const i = (y * side + x) * 3;
  return [p[i], p[i + 1], p[i + 2]].map((v) => Math.round((v as number) * 100) / 100);
}

describe('preprocessImage', () => {
  it('gives Float32 [H,W,3] in [-1,1] or [0,1]', async () => {
    const img = await solidImage('png', [255, 0, 51], 40, 20);
    const a = await preprocessImage(img, opts());
    expect(a.pixels.length).toBe(16 * 16 * 3);
    expect(px(a.pixels, 16, 3, 7)).toEqual([1, -1, -0.6]);
    const b = await preprocessImage(img, opts({ range: '0_1' }));
    expect(px(b.pixels, 16, 15, 15)).toEqual([1, 0, 0.2]);
  });

  it('resizes the shortest side and centre-crops', async () => {
    // 48×16, three bands: after resizing to 48×16 (already shortest = 16), the centre crop is all green.
    const img = await bandsImage([[255, 0, 0], [0, 255, 0], [0, 0, 255]], 48, 16);
    const out = await preprocessImage(img, opts({ range: '0_1' }));
    for (const x of [1, 8, 14]) expect(px(out.pixels, 16, x, 8)).toEqual([0, 1, 0]);
  });

  it('random crop is seeded: same seed same crop, crops vary across seeds', async () => {
    const img = await bandsImage([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], 64, 16);
    const crop = async (seed: number) => Array.from((await preprocessImage(img, opts({ crop: 'random' }), new SeededRng(seed))).pixels);
    expect(await crop(1)).toEqual(await crop(1));
    const distinct = new Set<string>();
    for (let s = 0; s < 8; s++) distinct.add(JSON.stringify((await crop(s)).slice(0, 3)));
    expect(distinct.size).toBeGreaterThan(1);
  });

  it('applies EXIF orientation before cropping', async () => {
    // Left half red, right half blue; orientation 6 means "rotate 90° clockwise to display": red ends on top.
    const raw = await bandsImage([[255, 0, 0], [0, 0, 255]], 32, 32);
    const jpeg = await sharp(raw).jpeg({ quality: 100 }).withMetadata({ orientation: 6 }).toBuffer();
    const out = await preprocessImage(jpeg, opts({ range: '0_1' }));
    const top = px(out.pixels, 16, 8, 2);
    const bottom = px(out.pixels, 16, 8, 13);
    expect(top[0]).toBeGreaterThan(0.9);
    expect(top[2]).toBeLessThan(0.1);
    expect(bottom[2]).toBeGreaterThan(0.9);
  });

  it('flattens alpha on the chosen colour', async () => {
    const transparent = await sharp({ create: { width: 20, height: 20, channels: 4, background: { r: 0, g: 0, b: 0, alpha: 0 } } }).png().toBuffer();
    const out = await preprocessImage(transparent, opts({ range: '0_1', background: [0, 255, 0] }));
    expect(px(out.pixels, 16, 5, 5)).toEqual([0, 1, 0]);
  });

  it('rejects undecodable and truncated images with ImageDecodeError naming the key', async () => {
    await expect(preprocessImage(new Uint8Array([1, 2, 3]), opts(), undefined, 'k1')).rejects.toThrow(/image "k1" cannot be decoded/);
    const jpeg = await bandsImage([[255, 0, 0]], 64, 64).then((b) => sharp(b).jpeg().toBuffer());
    await expect(preprocessImage(jpeg.subarray(0, jpeg.length - 200), opts(), undefined, 'cut')).rejects.toBeInstanceOf(ImageDecodeError);
    await expect(preprocessImage(new Uint8Array(0), opts())).rejects.toBeInstanceOf(ImageDecodeError);
  });
});
