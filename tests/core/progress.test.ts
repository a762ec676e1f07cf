import { describe, expect, it } from 'vitest';
import { describeProgress, formatDuration, ProgressBoard } from '../../src/core/progress.js';

function sink(isTTY: boolean) {
  const chunks: string[] = [];
  return { chunks, out: { isTTY, write: (s: string) => (chunks.push(s), true) } };
}

describe('progress', () => {
  it('describes rate and ETA from what was done since start', () => {
    const p = { total: 1000, unit: 'img', done: 300, startDone: 100, startedAt: 0, lastPrinted: 0 };
    expect(describeProgress('data', p, 4000)).toBe('data: 300/1000 img (30%), 50 img/s, ETA 14s');
    expect(formatDuration(3725)).toBe('1h02m');
    expect(formatDuration(Infinity)).toBe('?');
  });

  it('stays quiet and line-oriented off a TTY: at most one line per interval, plus the end', () => {
    let now = 0;
    const { chunks, out } = sink(false);
    const board = new ProgressBoard(out, 10_000, () => now);
    board.start('data', 100, 'img');
    for (let i = 0; i < 100; i++) {
      now += 250;
      board.tick('data');
    }
    board.end('data');
    expect(chunks.every((c) => c.endsWith('\n') && !c.includes('\r'))).toBe(true);
    expect(chunks).toHaveLength(1 + 2 + 1); // start, at 10 s and 20 s, end
    expect(chunks.at(-1)).toBe('data: 100/100 img (100%), 4.00 img/s, ETA 0s\n');
  });

  it('redraws one status line in place on a TTY and keeps log lines intact', () => {
    const saved = process.env.CI;
    delete process.env.CI;
    try {
      let now = 0;
      const { chunks, out } = sink(true);
      const board = new ProgressBoard(out, 10_000, () => now);
      board.start('a', 10, 'steps');
      now += 500;
      board.tick('a');
      board.line('hello');
      const text = chunks.join('');
      expect(text).toContain('\r\u001b[K');
      expect(text).toContain('hello\n');
      expect(text.endsWith('a: 1/10 steps (10%), 2.00 steps/s, ETA 5s')).toBe(true);
    } finally {
      if (saved !== undefined) process.env.CI = saved;
    }
  });
});
