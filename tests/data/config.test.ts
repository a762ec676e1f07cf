import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DataReadConfig, prepareOptionsFrom } from '../../src/data/config.js';
import { prepareItems } from '../../src/data/prepare.js';
import { openSource } from '../../src/data/sources/index.js';
import { writeTar, solidImage } from './fixtures.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'datacfg-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('DataReadConfig', () => {
  it('applies defaults, rejects unknown keys, and describes every field', () => {
    const c = DataReadConfig.parse({ source: 'x.tar' });
    expect(c).toMatchObject({ caption_fields: ['txt'], resolution: 256, pixel_range: '-1_1', crop: 'centre', blank_caption_prob: 0 });
    expect(() => DataReadConfig.parse({ source: 'x.tar', resolutoin: 3 })).toThrow();
    expect(() => DataReadConfig.parse({})).toThrow();
    for (const [name, field] of Object.entries(DataReadConfig.shape)) expect(field.description, name).toBeTruthy();
  });

  it('drives the pipeline: caption field choice, lowercase, resolution and range', async () => {
    const file = join(dir, 'd.tar');
    await writeTar(file, [
      { name: 'a.png', body: await solidImage('png', [255, 0, 0], 30, 20) },
      { name: 'a.txt', body: '' },
      { name: 'a.json', body: JSON.stringify({ title: 'A  RED   Thing' }) },
    ]);
    const c = DataReadConfig.parse({ source: file, caption_fields: ['txt', 'title'], lowercase: true, resolution: 8, pixel_range: '0_1' });
    const items = [];
    for await (const it of prepareItems(openSource(c.source), prepareOptionsFrom(c, 0))) items.push(it);
    expect(items.map((i) => i.caption)).toEqual(['a red thing']);
    expect(items[0]?.pixels.length).toBe(8 * 8 * 3);
    expect(items[0]?.pixels[0]).toBeCloseTo(1, 2);
  });
});
