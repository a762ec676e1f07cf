/** A sweep's members ranked by its metric, read from the run store. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RunStore } from '../runs/index.js';
import { metricValue, readSummary } from './history.js';
import type { MemberStatus, SweepMetric, SweepRecord } from './record.js';

export interface RankedMember {
  index: number;
  status: MemberStatus;
  parameters: Record<string, unknown>;
  /** The metric's last value in the summary of the stage run that holds it. */
  value?: number;
  /** That stage run. */
  runId?: string;
  /** 1-based; undefined for members without a (finite) value. */
  rank?: number;
}

export interface SweepResults {
  /** What it is ranked by: the sweep's metric, else the key metric the members' last stage declared. */
  metric?: SweepMetric & { from: 'sweep' | 'key metric' };
  members: RankedMember[];
}

function keyMetricOf(store: RunStore, runId: string): SweepMetric | undefined {
  let keyMetric: string | undefined;
  try {
    keyMetric = (JSON.parse(readFileSync(join(store.root, runId, 'run.json'), 'utf8')) as { key_metric?: string }).key_metric;
  } catch {
    return undefined;
  }
  const best = readSummary(store, runId)._best ?? {};
  const name = keyMetric ?? Object.entries(best).find(([, b]) => b.primary)?.[0];
  const goal = name ? best[name]?.goal : undefined;
  return name && goal ? { name, goal } : undefined;
}

/** Ranks members: finite values best first by the goal (ties by member index), then the others by index. */
export function rankSweep(record: SweepRecord, store: RunStore): SweepResults {
  let metric: SweepResults['metric'] = record.metric && { ...record.metric, from: 'sweep' };
  if (!metric) {
    for (const m of record.members) {
      for (const s of [...record.stages].reverse()) {
        const found = m.stage_runs[s] ? keyMetricOf(store, m.stage_runs[s]) : undefined;
        if (found) {
          metric = { ...found, stage: s, from: 'key metric' };
          break;
        }
      }
      if (metric) break;
    }
  }
  const members: RankedMember[] = record.members.map((m) => {
    const out: RankedMember = { index: m.index, status: m.status, parameters: m.parameters };
    if (!metric) return out;
    for (const s of metric.stage ? [metric.stage] : [...record.stages].reverse()) {
      const runId = m.stage_runs[s];
      const value = runId ? metricValue(readSummary(store, runId)[metric.name]) : undefined;
      if (value !== undefined) return { ...out, value, runId };
    }
    return out;
  });
  const sign = metric?.goal === 'maximize' ? -1 : 1;
  const ranked = members.filter((m) => m.value !== undefined && Number.isFinite(m.value)).sort((a, b) => sign * (a.value! - b.value!) || a.index - b.index);
  ranked.forEach((m, i) => (m.rank = i + 1));
  const rest = members.filter((m) => m.rank === undefined);
  return { metric, members: [...ranked, ...rest] };
}

/** `stages.vqgan.with.lr` → `vqgan.lr`: the column names of the table. */
export function shortKey(key: string): string {
  return key.replace(/^stages\./, '').replace('.with.', '.');
}
