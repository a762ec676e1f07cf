import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { beforeAll, describe, expect, it } from 'vitest';
import { comparePlot, RUN_COLOURS } from '../../src/commands/compare-plot.js';
import { RunStore } from '../../src/core/runs/index.js';
import { cli, project } from '../support/cli.js';

const hex = (c: string) => [1, 3, 5].map((i) => parseInt(c.slice(i, i + 2), 16));

/** Pixels of the PNG within `tolerance` of each colour, split by half (left/right) and by the mean row. */
async function colourPixels(file: string, colours: string[], fromRow: number) {
  const { data, info } = await sharp(readFileSync(file)).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return colours.map((c) => {
    const [r, g, b] = hex(c);
    const left: number[] = [];
    const right: number[] = [];
    for (let y = fromRow; y < info.height; y++) {
      for (let x = 0; x < info.width; x++) {
        const i = (y * info.width + x) * 3;
        if (Math.abs(data[i]! - r!) <= 12 && Math.abs(data[i + 1]! - g!) <= 12 && Math.abs(data[i + 2]! - b!) <= 12) (x < info.width / 2 ? left : right).push(y);
      }
    }
    const mean = (v: number[]) => v.reduce((s, y) => s + y, 0) / Math.max(1, v.length);
    return { count: left.length + right.length, leftMeanRow: mean(left), rightMeanRow: mean(right), info };
  });
}

describe('compare --plot', () => {
  let dir: string;
  let ids: string[];
  beforeAll(async () => {
    dir = project();
    const store = new RunStore(join(dir, 'runs'), { onWarning: () => {} });
    ids = [];
    for (const [stage, f] of [['down', (s: number) => 2 - s / 30], ['up', (s: number) => 0.3 + s / 40]] as const) {
      const run = await store.create({ name: `e/${stage}`, kind: 'stage', stage });
      for (let s = 1; s <= 60; s++) run.log({ 'train/loss': f(s), ...(stage === 'down' ? { acc: s / 60 } : {}) }, s);
      await run.flush();
      await run.finish('finished');
      ids.push(run.id);
    }
  });

  it('writes a PNG with one differently coloured curve per run (falling and rising where the data do)', async () => {
    const out = join(mkdtempSync(join(tmpdir(), 'plot-')), 'loss.png');
    const r = await comparePlot({ runsDir: join(dir, 'runs'), runs: ids, metrics: ['train/loss'], out });
    expect(r.series.map((s) => [s.run, s.metric, s.points, s.colour])).toEqual([
      [ids[0], 'train/loss', 60, RUN_COLOURS[0]],
      [ids[1], 'train/loss', 60, RUN_COLOURS[1]],
    ]);
    expect(r.warnings).toEqual([]);
    const meta = await sharp(out).metadata();
    expect(meta.format).toBe('png');
    // Below the legend (its swatches are in the top 56 px), each run's colour is a curve of many pixels.
    const [down, up] = await colourPixels(out, [RUN_COLOURS[0]!, RUN_COLOURS[1]!], 60);
    expect(down!.count).toBeGreaterThan(400);
    expect(up!.count).toBeGreaterThan(400);
    // The falling run sits higher on the left than on the right (rows grow downwards); the rising one the opposite.
    expect(down!.leftMeanRow).toBeLessThan(down!.rightMeanRow - 40);
    expect(up!.leftMeanRow).toBeGreaterThan(up!.rightMeanRow + 40);
    // No other palette colour is drawn.
    const [third] = await colourPixels(out, [RUN_COLOURS[2]!], 0);
    expect(third!.count).toBe(0);
  });

  it('plots several metrics as panels and says which run lacks one; an unknown metric is an error listing the logged ones', async () => {
    const out = join(mkdtempSync(join(tmpdir(), 'plot-')), 'two.png');
    const r = await comparePlot({ runsDir: join(dir, 'runs'), runs: ids, metrics: ['train/loss,acc'], out, panelHeight: 200 });
    expect(r.series.map((s) => `${s.metric}:${s.run}`)).toEqual([`train/loss:${ids[0]}`, `train/loss:${ids[1]}`, `acc:${ids[0]}`]);
    expect(r.warnings).toEqual([`run ${ids[1]} logged no 'acc'`]);
    expect((await sharp(out).metadata()).height).toBe(56 + 2 * (200 + 48));
    await expect(comparePlot({ runsDir: join(dir, 'runs'), runs: ids, metrics: ['eval/loss'], out })).rejects.toThrow("no run logged 'eval/loss' (they logged: acc, train/loss)");
  });

  it('is wired into minidalle compare', () => {
    const r = cli(dir, ['compare', ...ids, '--plot', 'train/loss', '--out', 'curves.png']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/metrics \(final \/ best\)/);
    expect(r.stdout).toContain(`plot: ${join(dir, 'curves.png')} (train/loss: 2 runs)`);
    expect(readFileSync(join(dir, 'curves.png')).subarray(1, 4).toString()).toBe('PNG');
  });
});
