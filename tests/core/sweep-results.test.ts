import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { formatSweep } from '../../src/commands/sweep.js';
import { RunStore } from '../../src/core/runs/index.js';
import type { SweepMemberRecord, SweepRecord } from '../../src/core/sweep/record.js';
import { rankSweep } from '../../src/core/sweep/results.js';

/** A store with one stage run per member whose summary holds `psnr` (undefined: the run logged nothing). */
function fixture(values: (number | string | undefined)[], goal: 'minimize' | 'maximize', status: SweepMemberRecord['status'][] = []) {
  const root = mkdtempSync(join(tmpdir(), 'minidalle-sweep-rank-'));
  const members: SweepMemberRecord[] = values.map((v, i) => {
    const id = `run${i}`;
    mkdirSync(join(root, id), { recursive: true });
    if (v !== undefined) writeFileSync(join(root, id, 'summary.json'), JSON.stringify({ psnr: v, _best: {} }));
    return { index: i, parameters: { 'stages.vqgan.with.lr': (i + 1) / 1000 }, status: status[i] ?? 'finished', pipeline_runs: [], stage_runs: { vqgan: id } };
  });
  const record: SweepRecord = {
    id: 'sw1', kind: 'sweep', name: 'demo', experiment: 'e.yaml', fingerprint: 'f', status: 'finished', method: 'grid',
    parameters: { 'stages.vqgan.with.lr': { kind: 'values', values: values.map((_, i) => (i + 1) / 1000) } }, overrides: [],
    metric: { name: 'psnr', goal }, max_parallel: 1, stages: ['data', 'vqgan'], pid: 1, owner_host: 'h', created_at: new Date().toISOString(), members,
  };
  return { record, store: new RunStore(root) };
}

describe('ranking a sweep', () => {
  it('orders by the metric and goal; ties by member; members without a finite value last, unranked', () => {
    const max = fixture([20, 25, undefined, 22, 'NaN', 25], 'maximize', ['finished', 'finished', 'failed', 'early_stopped', 'finished', 'finished']);
    const ranked = rankSweep(max.record, max.store);
    expect(ranked.members.map((m) => [m.index, m.rank, m.value])).toEqual([
      [1, 1, 25], [5, 2, 25], [3, 3, 22], [0, 4, 20], [2, undefined, undefined], [4, undefined, NaN],
    ]);
    const min = fixture([20, 25, undefined, 22, 'NaN', 25], 'minimize');
    expect(rankSweep(min.record, min.store).members.map((m) => m.index)).toEqual([0, 3, 1, 5, 2, 4]);

    const table = formatSweep(max.record, ranked).split('\n');
    expect(table[1]).toContain('ranked by psnr (maximize)');
    const rows = table.slice(5).map((l) => l.split(/\s+/));
    expect(rows.map((r) => [r[0], r[1], r[2]])).toEqual([['1', '1', 'finished'], ['2', '5', 'finished'], ['3', '3', 'early'], ['4', '0', 'finished'], ['-', '2', 'failed'], ['-', '4', 'finished']]);
    expect(table[3]).toMatch(/^rank\s+member\s+status\s+psnr\s+vqgan\.lr\s+run$/);
    expect(rows[0]!.slice(-2)).toEqual(['0.002', 'run1']);
  });
});
