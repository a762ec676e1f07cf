import { describe, it, expect } from 'vitest';
import { mkdtemp, rm, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import plugin, { ShapesDataConfig } from '../../plugins/shapes-data/index.js';
import type { StageContext } from '../../src/core/plugins/types.js';
import { checkPluginShape } from '../../src/core/plugins/registry.js';
import { expandBraces } from '../../src/data/braces.js';
import { openSource } from '../../src/data/sources/index.js';
import { prepareItems } from '../../src/data/prepare.js';
import { COLOURS } from '../../src/data/shapes.js';
import type { ColourName } from '../../src/data/shapes.js';

function fakeContext(outDir: string, config: ShapesDataConfig, signal = new AbortController().signal) {
  const events: string[] = [];
  const summaries: Record<string, unknown>[] = [];
  const ctx: StageContext<ShapesDataConfig> = {
    config,
    stage: 'data',
    runId: 'test-run',
    runDir: outDir,
    outDir,
    inputs: {},
    seed: 3,
    log: () => undefined,
    defineMetric: () => undefined,
    media: async () => '',
    summary: (v) => void summaries.push(v),
    meta: () => undefined,
    checkpoints: { save: async () => Promise.reject(new Error('unused')), latest: async () => undefined, list: async () => [], prune: async () => undefined },
    progress: { start: (t) => void events.push(`start:${t}`), tick: (n = 1) => void events.push(`tick:${n}`), end: () => void events.push('end') },
    logger: { info: (m) => void events.push(`info:${m}`), warn: (m) => void events.push(`warn:${m}`), error: (m) => void events.push(`error:${m}`) },
    signal,
  };
  return { ctx, events, summaries };
}

describe('shapes-data plugin', () => {
  it('declares a strict config where every field has a default and a description', () => {
    expect(checkPluginShape(plugin, 'plugins/shapes-data').name).toBe('shapes-data');
    const parsed = ShapesDataConfig.parse({});
    expect(parsed.size).toBe(32);
    expect(parsed.heldout_combos.length).toBeGreaterThan(0);
    expect(() => ShapesDataConfig.parse({ cuont: 3 })).toThrow();
    expect(() => ShapesDataConfig.parse({ heldout_combos: [{ shape: 'blob', colour: 'red' }] })).toThrow();
    for (const [name, field] of Object.entries(ShapesDataConfig.shape)) {
      expect(field.description, name).toBeTruthy();
    }
  });

  it('runs into outDir, reports progress and returns brace-pattern artifacts with counts', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'shapes-plugin-'));
    try {
      const config = ShapesDataConfig.parse({ count: 30, heldout_count: 6, samples_per_shard: 16 });
      const { ctx, events, summaries } = fakeContext(dir, config);
      const res = await plugin.run(ctx);
      expect(res.summary).toMatchObject({ train_count: 30, heldout_count: 6, train_shards: 2, heldout_shards: 1 });
      expect(summaries[0]).toEqual(res.summary);
      const train = expandBraces(res.artifacts?.train ?? '');
      expect(train).toEqual([join(dir, 'train', 'train-00000.tar'), join(dir, 'train', 'train-00001.tar')]);
      expect(res.artifacts?.heldout).toBe(join(dir, 'heldout', 'heldout-00000.tar'));
      const bar = events.filter((e) => !e.startsWith('info:'));
      expect(bar[0]).toBe('start:36');
      expect(bar.slice(1, -1)).toEqual(Array.from({ length: 36 }, () => 'tick:1'));
      expect(bar.at(-1)).toBe('end');
      const manifest = JSON.parse(await readFile(res.artifacts?.manifest ?? '', 'utf8'));
      expect(manifest.seed).toBe(3); // seed: null falls back to the experiment seed
      expect(manifest.colours.red).toEqual([220, 30, 30]);
      // The artifacts read back through the webdataset source and preprocessing, pixels intact.
      let n = 0;
      for await (const item of prepareItems(openSource(res.artifacts?.train ?? ''), { image: { resolution: 32, range: '0_1', background: [0, 0, 0], crop: 'centre' } })) {
        const [x0, y0, x1, y1] = item.meta.bbox as number[];
        const cx = Math.floor(((x0 as number) + (x1 as number)) / 2);
        const cy = Math.floor(((y0 as number) + (y1 as number)) / 2);
        const i = (cy * 32 + cx) * 3;
        const rgb = [item.pixels[i], item.pixels[i + 1], item.pixels[i + 2]].map((v) => Math.round((v as number) * 255));
        expect(rgb).toEqual([...COLOURS[item.meta.colour as ColourName]]);
        expect(item.caption).toContain(item.meta.shape as string);
        n++;
      }
      expect(n).toBe(30);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('stops when the signal is aborted and says so', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'shapes-plugin-'));
    try {
      const ac = new AbortController();
      ac.abort();
      const { ctx, events } = fakeContext(dir, ShapesDataConfig.parse({ count: 30 }), ac.signal);
      const res = await plugin.run(ctx);
      expect(res.summary).toMatchObject({ train_count: 0, aborted: true });
      expect(res.artifacts?.train).toBeUndefined();
      expect(events.some((e) => e.startsWith('warn:') && e.includes('aborted'))).toBe(true);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
