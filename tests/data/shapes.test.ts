import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tar from 'tar-stream';
import sharp from 'sharp';
import { COLOURS, DEFAULT_HELDOUT_COMBOS, POSITION_WORDS, generateShapes, shapeBox } from '../../src/data/shapes.js';
import type { ShapesOptions, ShapeAttributes, ColourName } from '../../src/data/shapes.js';
import { expandBraces } from '../../src/data/braces.js';

interface Sample {
  key: string;
  png: Buffer;
  txt: string;
  json: ShapeAttributes & { caption: string; bbox: [number, number, number, number]; coverage: number };
}

async function readTar(path: string): Promise<Sample[]> {
  const ex = tar.extract();
  createReadStream(path).pipe(ex);
  const byKey = new Map<string, Partial<Record<string, Buffer>>>();
  for await (const entry of ex) {
    const chunks: Buffer[] = [];
    for await (const c of entry) chunks.push(c as Buffer);
    const name = entry.header.name;
    const dot = name.lastIndexOf('.');
    const rec = byKey.get(name.slice(0, dot)) ?? {};
    rec[name.slice(dot + 1)] = Buffer.concat(chunks);
    byKey.set(name.slice(0, dot), rec);
  }
  return [...byKey].map(([key, r]) => ({ key, png: r.png as Buffer, txt: (r.txt as Buffer).toString('utf8'), json: JSON.parse((r.json as Buffer).toString('utf8')) }));
}

const base: ShapesOptions = {
  count: 60,
  heldoutCount: 12,
  size: 32,
  seed: 7,
  samplesPerShard: 25,
  heldoutCombos: DEFAULT_HELDOUT_COMBOS,
  plainBackgroundProb: 0.5,
};

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'shapes-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('generateShapes', () => {
  it('is byte-identical for the same seed and differs for another seed', async () => {
    const a = await generateShapes(join(dir, 'a'), base);
    const b = await generateShapes(join(dir, 'b'), base);
    const c = await generateShapes(join(dir, 'c'), { ...base, seed: 8 });
    expect(a.train.shards.length).toBe(3);
    for (let i = 0; i < a.train.shards.length; i++) {
      const [x, y, z] = await Promise.all([a, b, c].map((r) => readFile(r.train.shards[i] as string)));
      expect(Buffer.compare(x as Buffer, y as Buffer)).toBe(0);
      expect(Buffer.compare(x as Buffer, z as Buffer)).not.toBe(0);
    }
    const [h1, h2] = await Promise.all([a, b].map((r) => readFile(r.heldout.shards[0] as string)));
    expect(Buffer.compare(h1 as Buffer, h2 as Buffer)).toBe(0);
  });

  it('writes the requested counts in numbered shards named by the brace pattern', async () => {
    const r = await generateShapes(join(dir, 'counts'), { ...base, count: 53, heldoutCount: 9, samplesPerShard: 20 });
    expect(r.train.count).toBe(53);
    expect(r.heldout.count).toBe(9);
    expect(expandBraces(r.train.pattern)).toEqual(r.train.shards);
    expect(r.train.shards.map((s) => s.split('/').pop())).toEqual(['train-00000.tar', 'train-00001.tar', 'train-00002.tar']);
    const sizes = await Promise.all(r.train.shards.map(async (s) => (await readTar(s)).length));
    expect(sizes).toEqual([20, 20, 13]);
    expect((await readTar(r.heldout.shards[0] as string)).length).toBe(9);
  });

  it('never puts a held-out shape×colour pair in train, and only those pairs in held-out', async () => {
    const combos = [
      { shape: 'circle', colour: 'red' },
      { shape: 'square', colour: 'blue' },
    ] as const;
    const r = await generateShapes(join(dir, 'held'), { ...base, count: 160, heldoutCount: 20, samplesPerShard: 200, heldoutCombos: combos, size: 16 });
    const train = await readTar(r.train.shards[0] as string);
    const held = await readTar(r.heldout.shards[0] as string);
    const isHeld = (s: Sample) => combos.some((c) => c.shape === s.json.shape && c.colour === s.json.colour);
    expect(train.filter(isHeld)).toEqual([]);
    expect(held.every(isHeld)).toBe(true);
    // The rest of the space is covered, so the exclusion is not an accident of a small sample.
    expect(new Set(train.map((s) => s.json.shape)).size).toBe(8);
    expect(new Set(train.map((s) => s.json.colour)).size).toBe(10);
  });

  it('captions name shape, colour, size, position and a coloured background', async () => {
    const r = await generateShapes(join(dir, 'caps'), { ...base, count: 80, samplesPerShard: 100 });
    const samples = await readTar(r.train.shards[0] as string);
    const templates = new Set<string>();
    for (const s of samples) {
      const cap = s.txt;
      expect(cap).toBe(s.json.caption);
      expect(cap).toContain(s.json.shape);
      expect(cap).toContain(s.json.colour);
      expect(cap).toContain(s.json.size);
      expect(POSITION_WORDS[s.json.position].some((w) => cap.includes(w))).toBe(true);
      if (s.json.background !== 'plain') expect(cap).toContain(s.json.background);
      templates.add(cap.replace(s.json.shape, 'S').replace(s.json.colour, 'C').split(' ').slice(0, 2).join(' '));
    }
    expect(templates.size).toBeGreaterThan(3);
  });

  it('paints the named colour as the dominant colour of the shape box and the background outside it', async () => {
    const r = await generateShapes(join(dir, 'px'), { ...base, count: 40, heldoutCount: 0, samplesPerShard: 100 });
    const samples = await readTar(r.train.shards[0] as string);
    for (const s of samples) {
      const { data, info } = await sharp(s.png).raw().toBuffer({ resolveWithObject: true });
      expect(info.width).toBe(32);
      const [x0, y0, x1, y1] = shapeBox(s.json, 32);
      expect(s.json.bbox).toEqual([x0, y0, x1, y1]);
      const hist = new Map<string, number>();
      for (let y = y0; y < y1; y++)
        for (let x = x0; x < x1; x++) {
          const i = (y * 32 + x) * info.channels;
          const k = `${data[i]},${data[i + 1]},${data[i + 2]}`;
          hist.set(k, (hist.get(k) ?? 0) + 1);
        }
      const named = COLOURS[s.json.colour as ColourName].join(',');
      const counts = [...hist.values()];
      // Named colour fills at least the thinnest shape's share (the star, ~1/3 of its box).
      expect(hist.get(named) ?? 0).toBeGreaterThanOrEqual(0.3 * (x1 - x0) * (y1 - y0));
      expect(s.json.coverage).toBeCloseTo((hist.get(named) ?? 0) / ((x1 - x0) * (y1 - y0)), 3);
      // Only the shape colour and the background colour appear: no anti-aliased blends.
      expect(counts.length).toBeLessThanOrEqual(2);
      // Corner pixel is the background.
      const corner = x0 > 0 || y0 > 0 ? `${data[0]},${data[1]},${data[2]}` : `${data[data.length - 3]},${data[data.length - 2]},${data[data.length - 1]}`;
      expect(corner).not.toBe(named);
    }
  });

  it('stops early and cleanly when aborted', async () => {
    const ac = new AbortController();
    let n = 0;
    const r = await generateShapes(join(dir, 'abort'), { ...base, count: 50, samplesPerShard: 10 }, { signal: ac.signal, onItem: () => ++n === 15 && ac.abort() });
    expect(r.aborted).toBe(true);
    expect(r.train.count).toBe(15);
    expect(r.heldout.count).toBe(0);
    const counts = await Promise.all(r.train.shards.map(async (s) => (await readTar(s)).length));
    expect(counts).toEqual([10, 5]);
  });
});
