import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MediaError, pngSize, RunStore, sanitizeKey, type ImageFileValue } from '../../src/core/runs/index.js';

let root: string;
beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'minidalle-media-'));
});
afterEach(() => {
  rmSync(root, { recursive: true, force: true });
});

async function png(width: number, height: number, red: number): Promise<Uint8Array> {
  const buf = await sharp({ create: { width, height, channels: 3, background: { r: red, g: 10, b: 200 } } }).png().toBuffer();
  return new Uint8Array(buf);
}

describe('pngSize', () => {
  it('reads width and height from IHDR of PNGs of several shapes', async () => {
    for (const [w, h] of [[7, 5], [1, 300], [256, 256], [513, 2]] as const) {
      expect(pngSize(await png(w, h, 0))).toEqual({ width: w, height: h });
    }
  });
  it('rejects non-PNG data with a MediaError naming it', async () => {
    const jpeg = new Uint8Array(await sharp({ create: { width: 4, height: 4, channels: 3, background: '#fff' } }).jpeg().toBuffer());
    expect(() => pngSize(jpeg, 'sample')).toThrow(MediaError);
    expect(() => pngSize(jpeg, 'sample')).toThrow(/sample: not a PNG/);
    const truncated = (await png(3, 3, 0)).slice(0, 20);
    expect(() => pngSize(truncated)).toThrow(MediaError);
  });
});

describe('RunHandle.media', () => {
  it('names the file <key>_<step>_<sha256[:20]>.png and logs a W&B image-file value', async () => {
    const store = new RunStore(root, { env: {}, onWarning: () => {} });
    const run = await store.create({ name: 'r', kind: 'stage' });
    const a = await png(7, 5, 1);
    const b = await png(7, 5, 2);
    const pa = await run.media('samples/grid', a, 12, 'a red square');
    const pb = await run.media('samples/grid', b, 13);
    await run.flush();

    const shaA = createHash('sha256').update(a).digest('hex');
    expect(pa).toBe(join(run.dir, 'media', 'images', `samples_grid_12_${shaA.slice(0, 20)}.png`));
    expect(new Uint8Array(readFileSync(pa))).toEqual(a);
    expect(existsSync(pb)).toBe(true);
    expect(readdirSync(join(run.dir, 'media', 'images'))).toHaveLength(2);

    const lines = readFileSync(join(run.dir, 'history.jsonl'), 'utf8').trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toHaveLength(2);
    const v = lines[0]!['samples/grid'] as ImageFileValue;
    expect(v).toEqual({
      _type: 'image-file',
      path: `media/images/samples_grid_12_${shaA.slice(0, 20)}.png`,
      sha256: shaA,
      size: a.length,
      format: 'png',
      width: 7,
      height: 5,
      caption: 'a red square',
    });
    expect(lines[0]!._step).toBe(12);
    expect('caption' in (lines[1]!['samples/grid'] as object)).toBe(false);
    const summary = JSON.parse(readFileSync(join(run.dir, 'summary.json'), 'utf8')) as Record<string, ImageFileValue>;
    expect(summary['samples/grid']!.path).toBe(`media/images/samples_grid_13_${createHash('sha256').update(b).digest('hex').slice(0, 20)}.png`);
  });

  it('refuses non-PNG bytes before writing anything', async () => {
    const run = await new RunStore(root, { env: {}, onWarning: () => {} }).create({ name: 'r', kind: 'stage' });
    await expect(run.media('x', new TextEncoder().encode('not a png at all, really not'), 0)).rejects.toBeInstanceOf(MediaError);
    expect(existsSync(join(run.dir, 'media'))).toBe(false);
    expect(existsSync(join(run.dir, 'history.jsonl'))).toBe(false);
  });

  it('sanitises keys for file names', () => {
    expect(sanitizeKey('eval/samples/0')).toBe('eval_samples_0');
    expect(sanitizeKey('a b:c\\d')).toBe('a_b_c_d');
    expect(sanitizeKey('recon.png-x_1')).toBe('recon.png-x_1');
  });
});
