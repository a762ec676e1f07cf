/** Reading members' metrics back from the run store: summaries for the ranking, history for early stopping. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RunRecord, RunStore } from '../runs/index.js';

type Summary = Record<string, unknown> & { _best?: Record<string, { value: number; step: number; goal?: 'minimize' | 'maximize'; primary?: boolean }> };

export function readSummary(store: RunStore, runId: string): Summary {
  try {
    return JSON.parse(readFileSync(join(store.root, runId, 'summary.json'), 'utf8')) as Summary;
  } catch {
    return {}; // a run that logged nothing has no summary
  }
}

/** A summary value as a number ("NaN"/"Infinity" as the store writes non-finite values), undefined when absent. */
export function metricValue(v: unknown): number | undefined {
  if (typeof v === 'number') return v;
  if (v === 'NaN' || v === 'Infinity' || v === '-Infinity') return Number(v);
  return undefined;
}

/** (step, value) of every logged value of `metric` in a run's history.jsonl, in file order. */
export function historyOf(store: RunStore, runId: string, metric: string): { step: number; value: number }[] {
  let text: string;
  try {
    text = readFileSync(join(store.root, runId, 'history.jsonl'), 'utf8');
  } catch {
    return [];
  }
  const out: { step: number; value: number }[] = [];
  for (const line of text.split('\n')) {
    if (!line.includes(`"${metric}"`)) continue;
    try {
      const row = JSON.parse(line) as Record<string, unknown>;
      const value = metricValue(row[metric]);
      if (value !== undefined && typeof row._step === 'number') out.push({ step: row._step, value });
    } catch {
      // a line being appended right now: read again at the next look
    }
  }
  return out;
}

/**
 * The metric's value at the first step ≥ `step` logged by any run of this stage fingerprint (a stopped and
 * resumed stage spreads its history over runs), or undefined when none has got that far yet.
 */
export function valueAtStep(store: RunStore, runs: RunRecord[], fingerprint: string, metric: string, step: number): number | undefined {
  let best: { step: number; value: number } | undefined;
  for (const r of runs) {
    if (r.fingerprint !== fingerprint) continue;
    for (const p of historyOf(store, r.id, metric)) if (p.step >= step && (!best || p.step < best.step)) best = p;
  }
  return best?.value;
}

export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}
