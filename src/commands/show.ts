import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import type { LoadedExperiment } from '../core/config/experiment.js';
import { formatDuration } from '../core/progress.js';
import { RunStore, type RunRecord } from '../core/runs/index.js';
import { wandbGroupUrl, wandbRunUrl, wandbStatus } from '../core/tracking/wandb/links.js';
import { flatten, formatValue, table } from './table.js';

function readJson<T>(file: string, fallback: T): T {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as T;
  } catch {
    return fallback;
  }
}

type Summary = Record<string, unknown> & { _best?: Record<string, { value: number; step: number; primary?: boolean }> };

function summaryOf(store: RunStore, id: string): Summary {
  return readJson<Summary>(join(store.root, id, 'summary.json'), {});
}

function duration(r: RunRecord): string {
  const start = r.started_at ?? r.created_at;
  const end = r.ended_at ? Date.parse(r.ended_at) : r.status === 'running' ? Date.now() : undefined;
  return end === undefined ? '-' : formatDuration((end - Date.parse(start)) / 1000);
}

function keyMetric(r: RunRecord, s: Summary): string {
  // A running run has no key_metric in run.json yet; its summary marks the primary metric.
  const name = r.key_metric ?? Object.entries(s._best ?? {}).find(([, b]) => b.primary)?.[0];
  return name ? `${name}=${formatValue(s[name])}` : '-';
}

export function formatPlan(loaded: LoadedExperiment): string {
  const exp = loaded.experiment;
  const lines = [
    `experiment ${exp.name} — ${loaded.file}${loaded.files.length > 1 ? ` (extends ${loaded.files.slice(1).join(', ')})` : ''}`,
    `seed ${exp.seed}${exp.max_parallel ? `, max_parallel ${exp.max_parallel}` : ''}${exp.tracking.tags.length ? `, tags ${exp.tracking.tags.join(', ')}` : ''}`,
    'stages, in order:',
  ];
  loaded.order.forEach((name, i) => {
    const s = exp.stages[name]!;
    lines.push(`  ${i + 1}. ${name}  plugin ${s.plugin}  host ${s.host}  needs ${s.needs.length ? s.needs.join(', ') : '-'}`);
    const changed = Object.entries(loaded.changedFromDefaults[name] ?? {});
    if (changed.length === 0) lines.push('       config: plugin defaults');
    else for (const [k, v] of changed) lines.push(`       ${k}: ${JSON.stringify(v)}`);
  });
  lines.push('valid: nothing was run');
  return lines.join('\n');
}

export async function listRuns(root: string, limit: number): Promise<string> {
  const store = new RunStore(root);
  const all = await store.list();
  const runs = all.slice(0, limit);
  if (runs.length === 0) return `no runs in ${root}`;
  const rows = runs.map((r) => [
    r.id,
    r.name,
    r.kind === 'pipeline' ? '(pipeline)' : (r.stage ?? '-'),
    r.status,
    r.host,
    (r.started_at ?? r.created_at).replace('T', ' ').slice(0, 19),
    duration(r),
    keyMetric(r, summaryOf(store, r.id)),
  ]);
  // A W&B column only once something was synced.
  const urls = runs.map((r) => (r.kind === 'pipeline' ? wandbGroupUrl(store.root, r, all) : wandbRunUrl(store.root, r.id)) ?? '-');
  if (urls.some((u) => u !== '-')) return table(['id', 'name', 'stage', 'status', 'host', 'start', 'duration', 'key metric', 'W&B'], rows.map((row, i) => [...row, urls[i]!]));
  return table(['id', 'name', 'stage', 'status', 'host', 'start', 'duration', 'key metric'], rows);
}

export async function showRun(root: string, idOrPrefix: string): Promise<string> {
  const store = new RunStore(root);
  const run = await store.open(idOrPrefix);
  const r = await run.read();
  const s = summaryOf(store, r.id);
  const out: string[] = [`run ${r.id}  ${r.name}  (${r.kind}${r.stage ? ` ${r.stage}` : ''}${r.plugin ? `, plugin ${r.plugin}` : ''})`];
  out.push(`status ${r.status}${r.error ? `: ${r.error}` : ''}`);
  out.push(`host ${r.host}  started ${r.started_at ?? r.created_at}  duration ${duration(r)}`);
  if (r.group) out.push(`pipeline run ${r.group}`);
  if (r.resumed_from) out.push(`resumed from ${r.resumed_from}`);
  if (r.experiment) out.push(`experiment ${r.experiment}`);
  out.push(`directory ${run.dir}`);
  const wandb = r.kind === 'pipeline' ? wandbGroupUrl(store.root, r, await store.list()) : wandbStatus(store.root, r.id);
  if (wandb) out.push(`W&B ${r.kind === 'pipeline' ? 'group ' : ''}${wandb}`);
  if (r.kind === 'pipeline') {
    const children = (await store.list()).filter((c) => c.group === r.id).reverse();
    if (children.length) out.push('', 'stage runs:', table(['id', 'stage', 'status', 'duration'], children.map((c) => [c.id, c.stage ?? '-', c.status, duration(c)])));
  }
  const artifacts = Object.entries(r.outputs?.artifacts ?? {});
  if (artifacts.length) out.push('', 'artifacts:', ...artifacts.map(([k, p]) => `  ${k}: ${join(run.dir, p)}`));
  const metrics = Object.entries(s).filter(([k]) => !k.startsWith('_'));
  if (metrics.length) out.push('', 'summary:', ...metrics.map(([k, v]) => `  ${k}: ${formatValue(v)}${s._best?.[k] ? `  (best ${formatValue(s._best[k]!.value)} at step ${s._best[k]!.step})` : ''}`));
  const checkpoints = await run.checkpoints().list();
  if (checkpoints.length) out.push('', `checkpoints: ${checkpoints.map((c) => `${c.runId === r.id ? '' : `${c.runId}/`}step-${c.step}`).join(', ')}`);
  const meta = r.meta as { git?: { commit?: string; dirty?: boolean }; versions?: Record<string, string>; backend?: unknown };
  if (meta.git) out.push('', `git ${meta.git.commit}${meta.git.dirty ? ' (dirty: git.diff)' : ''}`);
  if (meta.backend) out.push(`compute ${JSON.stringify(meta.backend)}`);
  const configFile = join(run.dir, 'config.yaml');
  if (existsSync(configFile)) out.push('', 'config:', ...readFileSync(configFile, 'utf8').trimEnd().split('\n').map((l) => `  ${l}`));
  return out.join('\n');
}

export async function compareRuns(root: string, ids: string[]): Promise<string> {
  const store = new RunStore(root);
  const runs = await Promise.all(ids.map(async (id) => (await store.open(id)).read()));
  const configs = runs.map((r) => {
    const file = join(store.root, r.id, 'config.yaml');
    return flatten(existsSync(file) ? parseYaml(readFileSync(file, 'utf8')) : {});
  });
  const header = ['', ...runs.map((r) => `${r.id} (${r.stage ?? r.name})`)];
  const keys = [...new Set(configs.flatMap((c) => Object.keys(c)))].sort();
  const differing = keys.filter((k) => new Set(configs.map((c) => JSON.stringify(c[k]))).size > 1);
  const urls = runs.map((r) => [r.id, wandbRunUrl(store.root, r.id)] as const).filter(([, u]) => u !== undefined);
  const out = urls.length ? ['W&B:', ...urls.map(([id, u]) => `  ${id}: ${u}`), ''] : [];
  out.push('config differences:');
  out.push(differing.length ? table(header, differing.map((k) => [k, ...configs.map((c) => formatValue(c[k]))])) : '  none');
  const summaries = runs.map((r) => summaryOf(store, r.id));
  const metricKeys = [...new Set(summaries.flatMap((s) => Object.keys(s).filter((k) => k !== '_best' && !k.startsWith('_'))))].sort();
  out.push('', 'metrics (final / best):');
  out.push(
    metricKeys.length
      ? table(header, metricKeys.map((k) => [k, ...summaries.map((s) => `${formatValue(s[k])}${s._best?.[k] ? ` / ${formatValue(s._best[k]!.value)}` : ''}`)]))
      : '  none logged',
  );
  return out.join('\n');
}
