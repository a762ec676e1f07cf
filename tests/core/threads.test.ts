/**
 * Local stages running at once share the cores: each worker is told its share as stages start and end, and a
 * stage left alone gets every core back. MINIDALLE_THREADS set by the user wins.
 */
import { existsSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { threadShares } from '../../src/core/threads.js';
import { cli, project, stages } from '../support/cli.js';

const TWO_STAGES = `name: two
max_parallel: 2
stages:
  long: { plugin: counter, with: { steps: 30, delay_ms: 100 } }
  short: { plugin: counter, with: { steps: 5, delay_ms: 100 } }
`;

const output = (dir: string, stage: string) => {
  const run = stages(dir).find((r) => r.stage === stage) as { id: string };
  const file = join(dir, 'runs', run.id, 'output.log'); // absent when the stage printed nothing
  return existsSync(file) ? readFileSync(file, 'utf8') : '';
};

describe('sharing the cores between local stages', () => {
  it('splits the cores as evenly as possible, at least one each', () => {
    expect(threadShares(2, 1)).toEqual([2]);
    expect(threadShares(2, 2)).toEqual([1, 1]);
    expect(threadShares(2, 3)).toEqual([1, 1, 1]);
    expect(threadShares(5, 2)).toEqual([3, 2]);
    expect(threadShares(8, 3)).toEqual([3, 3, 2]);
  });

  it.skipIf(availableParallelism() < 2)('a stage gives up cores while another runs beside it and takes them back when it ends', () => {
    const dir = project({ 'e.yaml': TWO_STAGES });
    const r = cli(dir, ['run', 'e.yaml'], { MINIDALLE_THREADS: '' });
    expect(r.code, r.stderr).toBe(0);
    const [both] = threadShares(availableParallelism(), 2);
    // whichever started first is told to give up cores when the other starts (the later one starts with its share)
    const shared = `compute: now ${both} thread${both === 1 ? '' : 's'} (2 local stages running)`;
    const [long, short] = [output(dir, 'long'), output(dir, 'short')];
    expect(long + short).toContain(shared);
    // the long stage outlives the short one and gets every core back
    expect(long).toContain(`compute: now ${availableParallelism()} threads (1 local stage running)`);
  }, 60_000);

  it('leaves the threads alone when the user set MINIDALLE_THREADS', () => {
    const dir = project({ 'e.yaml': TWO_STAGES });
    const r = cli(dir, ['run', 'e.yaml'], { MINIDALLE_THREADS: '1' });
    expect(r.code, r.stderr).toBe(0);
    expect(output(dir, 'long')).not.toMatch(/compute: now/);
  }, 60_000);
});
