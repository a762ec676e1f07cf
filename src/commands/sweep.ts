/** `minidalle run … --sweep …` / a `sweep:` block, and `minidalle sweep [id] [--plot]`. */
import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { LoadedExperiment } from '../core/config/experiment.js';
import type { ProjectConfig } from '../core/config/project.js';
import type { PluginRegistry } from '../core/plugins/registry.js';
import type { Executor } from '../core/executors/types.js';
import type { ProgressBoard } from '../core/progress.js';
import { RunStore } from '../core/runs/index.js';
import { planSweep, type SweepArguments } from '../core/sweep/plan.js';
import { SweepStore, type SweepRecord } from '../core/sweep/record.js';
import { rankSweep, shortKey, type SweepResults } from '../core/sweep/results.js';
import { runSweep } from '../core/sweep/run.js';
import { formatValue, table } from './table.js';

export interface RunSweepCommandOptions {
  base: LoadedExperiment;
  overrides: string[];
  sweep: SweepArguments;
  project: ProjectConfig;
  registry: PluginRegistry;
  executors: Record<string, Executor>;
  board: ProgressBoard;
  maxParallel?: number;
  verify?: boolean;
  signal?: AbortSignal;
  kill?: AbortSignal;
}

/** Plans (validating every member), runs or continues the sweep, prints the ranking; returns the exit code. */
export async function runSweepCommand(o: RunSweepCommandOptions): Promise<number> {
  const plan = planSweep(o.base, o.sweep, {
    overrides: o.overrides,
    registry: o.registry,
    hosts: Object.keys(o.project.hosts),
    projectDir: o.project.projectDir,
  });
  const result = await runSweep(plan, {
    project: o.project,
    executors: o.executors,
    board: o.board,
    maxParallel: o.maxParallel,
    verify: o.verify,
    signal: o.signal,
    kill: o.kill,
  });
  console.log(formatSweep(result.record, rankSweep(result.record, new RunStore(o.project.runsDir))));
  return result.status === 'finished' ? 0 : result.status === 'stopped' ? 130 : 1;
}

/** `minidalle validate` of an experiment with a `sweep:` block: its members, each validated. */
export function formatSweepPlan(base: LoadedExperiment, overrides: string[], registry: PluginRegistry, project: ProjectConfig): string {
  const plan = planSweep(base, {}, { overrides, registry, hosts: Object.keys(project.hosts), projectDir: project.projectDir });
  const by = plan.metric ? `, ranked by ${plan.metric.name} (${plan.metric.goal})` : '';
  const stop = plan.earlyStop ? `, median early stopping at step ${plan.earlyStop.step}` : '';
  const lines = [`sweep: ${plan.method}${plan.seed === undefined ? '' : ` (seed ${plan.seed})`}, ${plan.members.length} members, ${plan.maxParallel} at once${by}${stop}; every member is valid`];
  for (const m of plan.members) lines.push(`  member ${m.index}: ${Object.entries(m.parameters).map(([k, v]) => `${shortKey(k)}=${JSON.stringify(v)}`).join(' ')}`);
  return lines.join('\n');
}

/** `minidalle sweep`: the sweeps of the store; `minidalle sweep <id>`: one ranked, optionally plotted. */
export async function sweepCommand(runsDir: string, id: string | undefined, plot: string | boolean | undefined): Promise<string> {
  const sweeps = new SweepStore(runsDir);
  if (id === undefined) return formatSweepList(await sweeps.list());
  const record = await sweeps.open(id);
  const results = rankSweep(record, new RunStore(runsDir));
  const out = [formatSweep(record, results)];
  if (plot !== undefined && plot !== false) {
    const { sweepPlotPng } = await import('../core/sweep/plot.js');
    const file = typeof plot === 'string' && plot !== '' ? resolve(plot) : join(sweeps.dir, `${record.id}.png`);
    writeFileSync(file, await sweepPlotPng(results, record.parameters, `sweep ${record.id} ${record.name}`));
    out.push('', `plot: ${file}`);
  }
  return out.join('\n');
}

export function formatSweep(record: SweepRecord, results: SweepResults): string {
  const keys = Object.keys(record.parameters);
  const done = record.members.filter((m) => m.status === 'finished' || m.status === 'early_stopped').length;
  const by = results.metric
    ? `ranked by ${results.metric.name} (${results.metric.goal}${results.metric.stage ? `, stage ${results.metric.stage}` : ''}${results.metric.from === 'key metric' ? ', the key metric' : ''})`
    : 'no metric to rank by (add metric: { name, goal } to the sweep block)';
  const lines = [
    `sweep ${record.id}  ${record.name}  (${record.experiment})`,
    `${record.status}: ${record.method}${record.seed === undefined ? '' : ` seed ${record.seed}`}, ${done} of ${record.members.length} members done, ${by}`,
    '',
  ];
  const header = ['rank', 'member', 'status', results.metric?.name ?? 'metric', ...keys.map(shortKey), 'run'];
  const rows = results.members.map((m) => [
    m.rank === undefined ? '-' : String(m.rank),
    String(m.index),
    m.status.replace('_', ' '),
    formatValue(m.value),
    ...keys.map((k) => (typeof m.parameters[k] === 'number' ? String(m.parameters[k]) : JSON.stringify(m.parameters[k]))),
    m.runId ?? '-',
  ]);
  lines.push(table(header, rows));
  const stopped = record.members.filter((m) => m.early_stop?.stopped);
  if (stopped.length) {
    lines.push('', 'early stopped (median rule):');
    for (const m of stopped) lines.push(`  member ${m.index}: ${formatValue(m.early_stop!.value)} at step ≥ ${m.early_stop!.step}, median ${formatValue(m.early_stop!.median)} of members ${m.early_stop!.over.join(', ')}`);
  }
  return lines.join('\n');
}

export function formatSweepList(records: SweepRecord[]): string {
  if (records.length === 0) return 'no sweeps';
  const rows = records.map((r) => [
    r.id,
    r.name,
    r.method,
    r.status,
    `${r.members.filter((m) => m.status === 'finished' || m.status === 'early_stopped').length}/${r.members.length}`,
    Object.keys(r.parameters).map(shortKey).join(', '),
    r.created_at.replace('T', ' ').slice(0, 19),
  ]);
  return table(['id', 'name', 'method', 'status', 'done', 'parameters', 'created'], rows);
}
