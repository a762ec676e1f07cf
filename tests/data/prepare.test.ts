import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { prepareItems } from '../../src/data/prepare.js';
import type { PrepareOptions, PreparedItem } from '../../src/data/prepare.js';
import { openSource } from '../../src/data/sources/index.js';
import { bandsImage, writeTar } from './fixtures.js';

let dir: string;
let file: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'prepare-'));
  file = join(dir, 'p.tar');
  const img = await bandsImage([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 0, 0], [255, 255, 255]], 96, 16);
  const entries = [];
  for (let i = 0; i < 12; i++) entries.push({ name: `${i}.png`, body: img }, { name: `${i}.txt`, body: `item ${i}` });
  await writeTar(file, entries);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const options = (o: Partial<PrepareOptions>): Partial<PrepareOptions> => ({
  image: { resolution: 16, range: '0_1', background: [0, 0, 0], crop: 'random' },
  captions: { fields: ['txt'], lowercase: false, maxChars: 0, blankProb: 0.5 },
  seed: 5,
  epoch: 0,
  ...o,
});

async function run(o: Partial<PrepareOptions>): Promise<PreparedItem[]> {
  const out: PreparedItem[] = [];
  for await (const it of prepareItems(openSource(file), options(o))) out.push(it);
  return out;
}

const fingerprint = (items: PreparedItem[]) => items.map((i) => `${i.caption}|${Array.from(i.pixels.slice(0, 3)).join(',')}`);

describe('prepareItems', () => {
  it('random crops and caption blanking repeat for (seed, epoch) and change with the epoch', async () => {
    const a = await run({});
    expect(a.length).toBe(12);
    expect(fingerprint(await run({}))).toEqual(fingerprint(a));
    expect(fingerprint(await run({ epoch: 1 }))).not.toEqual(fingerprint(a));
    expect(a.some((i) => i.blanked && i.caption === '')).toBe(true);
    expect(a.some((i) => !i.blanked && i.caption.startsWith('item'))).toBe(true);
  });

  it('stops cleanly when aborted, without the "no usable items" error', async () => {
    const ac = new AbortController();
    const seen: string[] = [];
    for await (const it of prepareItems(openSource(file), { ...options({}), signal: ac.signal })) {
      seen.push(it.key);
      if (seen.length === 3) ac.abort();
    }
    expect(seen).toEqual(['0', '1', '2']);
  });
});
