/**
 * Everything a report shows, gathered from the run store alone: a pipeline run and its member stage runs (the
 * pipeline's `meta.stages`, which also names reused runs of earlier pipelines, and the runs whose `group` is
 * the pipeline), or any list of runs. Secrets are redacted again on the way out (by key in configs, by value
 * everywhere), so a report can be mailed.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import { redactConfig, scrubDeep, secretValues } from '../core/secrets.js';
import { RunStore, type RunRecord } from '../core/runs/index.js';
import { SweepStore, type SweepRecord } from '../core/sweep/record.js';
import { rankSweep, shortKey, type SweepResults } from '../core/sweep/results.js';
import type { ChartSpec } from './chart-spec.js';
import { chartsOf, parseHistory, type MediaRef } from './history.js';
import { DEFAULT_IMAGE_BUDGET, findTableFiles, ImageBudget, readTable, type EmbeddedImage, type ReportTable } from './media.js';

/** Snapshots per media key: the latest, and earlier ones spread over training to show progress. */
const SNAPSHOTS_PER_KEY = 4;

export type StageStatus = RunRecord['status'] | 'reused';

export interface SummaryItem {
  key: string;
  value: unknown;
  best?: { value: number; step: number; goal: string };
  primary?: boolean;
}

export interface MediaGroup {
  key: string;
  caption?: string;
  /** newest first */
  images: { step: number; image: EmbeddedImage }[];
  /** snapshots that exist but are not embedded */
  notShown: number;
}

export interface ReportRun {
  /** the stage name in its pipeline, else the run's name */
  stage: string;
  record: RunRecord;
  status: StageStatus;
  seconds?: number;
  keyMetric?: { name: string; value: unknown };
  summary: SummaryItem[];
  charts: ChartSpec[];
  media: MediaGroup[];
  tables: ReportTable[];
  /** config.yaml, redacted */
  config?: string;
  checkpoints: string[];
  historyLines: number;
}

export interface ReportEnvironment {
  engine?: string;
  threads?: number;
  /** The orchestrating machine's cores, which its local stages share (pipelines since session 7). */
  cores?: number;
  native?: string;
  commit?: string;
  branch?: string;
  dirty?: boolean;
  versions: Record<string, string>;
  hosts: string[];
}

export interface ReportData {
  title: string;
  generatedAt: string;
  pipeline?: { record: RunRecord; config?: string; seconds?: number };
  sweep?: ReportSweep;
  runs: ReportRun[];
  environment: ReportEnvironment;
  /** images left out to keep the file small */
  imagesOmitted: number;
  imageBytes: number;
  warnings: string[];
}

/** A sweep's members ranked by its metric, shown above the members' runs. */
export interface ReportSweep {
  id: string;
  metric?: string;
  goal?: string;
  /** rank, member, status, value, then one column per swept parameter */
  columns: string[];
  rows: (string | number)[][];
}

export interface CollectOptions {
  /** environment whose secret values are scrubbed (default process.env) */
  env?: Record<string, string | undefined>;
  imageBudget?: number;
}

async function readText(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, 'utf8');
  } catch {
    return undefined;
  }
}

function seconds(r: RunRecord): number | undefined {
  const start = Date.parse(r.started_at ?? r.created_at);
  const end = r.ended_at ? Date.parse(r.ended_at) : r.status === 'running' ? Date.now() : undefined;
  return end === undefined ? undefined : Math.max(0, (end - start) / 1000);
}

/** config.yaml parsed, redacted by key and value, and written back as YAML. */
export function redactedYaml(text: string | undefined, secrets: readonly string[]): string | undefined {
  if (text === undefined) return undefined;
  let tree: unknown;
  try {
    tree = parseYaml(text);
  } catch {
    return scrubDeep(text, secrets);
  }
  return toYaml(redactConfig(tree ?? {}, secrets));
}

/** The pipeline's stage runs in experiment order, with their status there ('reused' for a reused run). */
export async function members(store: RunStore, pipeline: RunRecord, all: RunRecord[]): Promise<{ stage: string; record: RunRecord; status: StageStatus }[]> {
  const out: { stage: string; record: RunRecord; status: StageStatus }[] = [];
  const seen = new Set<string>();
  const stages = pipeline.meta.stages;
  if (typeof stages === 'object' && stages !== null) {
    for (const [stage, v] of Object.entries(stages as Record<string, { status?: string; run?: string }>)) {
      if (typeof v?.run !== 'string') continue;
      const record = all.find((r) => r.id === v.run) ?? (await store.readRecord(v.run).catch(() => undefined));
      if (!record) continue;
      seen.add(record.id);
      out.push({ stage, record, status: v.status === 'reused' ? 'reused' : record.status });
    }
  }
  // a running pipeline has no meta.stages yet: its runs are the ones grouped under it
  const grouped = all.filter((r) => r.group === pipeline.id && !seen.has(r.id)).sort((a, b) => a.created_at.localeCompare(b.created_at));
  for (const record of grouped) out.push({ stage: record.stage ?? record.name, record, status: record.status });
  return out;
}

export function summaryItems(summary: Record<string, unknown>): { items: SummaryItem[]; primary?: string } {
  const best = (summary._best ?? {}) as Record<string, { value: number; step: number; goal: string; primary?: boolean }>;
  const primary = Object.entries(best).find(([, b]) => b?.primary)?.[0];
  const items: SummaryItem[] = [];
  const flat = (prefix: string, v: unknown): void => {
    if (typeof v === 'object' && v !== null && !Array.isArray(v)) {
      const o = v as Record<string, unknown>;
      if (o._type !== undefined) return; // media and tables are shown as such
      for (const [k, x] of Object.entries(o)) flat(prefix ? `${prefix}.${k}` : k, x);
      return;
    }
    const b = best[prefix];
    items.push({ key: prefix, value: v, ...(b ? { best: { value: b.value, step: b.step, goal: b.goal } } : {}), ...(prefix === primary ? { primary: true } : {}) });
  };
  for (const [k, v] of Object.entries(summary)) if (!k.startsWith('_')) flat(k, v);
  return { items, ...(primary ? { primary } : {}) };
}

/** The snapshots of one media key to show: the newest, then earlier ones spread evenly back to the first. */
function pickSnapshots(refs: MediaRef[]): MediaRef[] {
  const sorted = [...refs].sort((a, b) => b.step - a.step);
  if (sorted.length <= SNAPSHOTS_PER_KEY) return sorted;
  const picks = new Set<number>([0]);
  for (let i = 1; i < SNAPSHOTS_PER_KEY; i++) picks.add(Math.round((i * (sorted.length - 1)) / (SNAPSHOTS_PER_KEY - 1)));
  return [...picks].sort((a, b) => a - b).map((i) => sorted[i]!);
}

export async function collectReport(store: RunStore, ids: readonly string[], options: CollectOptions = {}): Promise<ReportData> {
  const secrets = [...new Set([...store.secrets, ...secretValues(options.env ?? process.env)])].filter((s) => s.length > 0).sort((a, b) => b.length - a.length);
  const warnings: string[] = [];
  const warn = (m: string): void => void warnings.push(m);
  const all = await store.list();
  const sweep = ids.length === 1 ? await findSweep(store, ids[0] as string) : undefined;
  const opened = sweep ? [] : await Promise.all(ids.map(async (id) => (await store.open(id)).read()));

  let pipeline: ReportData['pipeline'];
  let chosen: { stage: string; record: RunRecord; status: StageStatus }[];
  const pipelineRecord = opened.length === 1 && opened[0]!.kind === 'pipeline' ? opened[0]! : undefined;
  if (sweep) {
    // each ranked member's run that holds the metric, best first
    chosen = [];
    for (const m of sweep.ranked.members) {
      if (!m.runId) continue;
      const record = await store.readRecord(m.runId);
      chosen.push({ stage: `${m.rank === undefined ? 'unranked' : `#${m.rank}`} · member ${m.index}`, record, status: record.status });
    }
  } else if (pipelineRecord) {
    const config = redactedYaml(await readText(join(store.root, pipelineRecord.id, 'config.yaml')), secrets);
    pipeline = { record: pipelineRecord, ...(config !== undefined ? { config } : {}), ...(seconds(pipelineRecord) !== undefined ? { seconds: seconds(pipelineRecord)! } : {}) };
    chosen = await members(store, pipelineRecord, all);
  } else {
    chosen = [];
    for (const r of opened) {
      if (r.kind === 'pipeline') chosen.push(...(await members(store, r, all)));
      else chosen.push({ stage: r.stage ?? r.name, record: r, status: r.status });
    }
  }

  const images = new ImageBudget(options.imageBudget ?? DEFAULT_IMAGE_BUDGET);
  // First pass: what each run has (cheap reads, in parallel).
  const loaded = await Promise.all(
    chosen.map(async (c) => {
      const dir = join(store.root, c.record.id);
      const [historyText, summaryText, configText] = await Promise.all([readText(join(dir, 'history.jsonl')), readText(join(dir, 'summary.json')), readText(join(dir, 'config.yaml'))]);
      const history = parseHistory(historyText ?? '');
      if (history.badLines.length) warn(`${join(dir, 'history.jsonl')}: ${history.badLines.length} unreadable line(s) skipped (line ${history.badLines.slice(0, 5).join(', ')}${history.badLines.length > 5 ? ', …' : ''})`);
      let summary: Record<string, unknown> = {};
      if (summaryText !== undefined) {
        try {
          summary = JSON.parse(summaryText) as Record<string, unknown>;
        } catch (err) {
          warn(`${join(dir, 'summary.json')}: not JSON (${(err as Error).message}); summary not shown`);
        }
      }
      const checkpoints = (await store.handle(c.record).checkpoints({ onWarning: warn }).list()).map((cp) => `${cp.runId === c.record.id ? '' : `${cp.runId}/`}step-${cp.step}`);
      const tableFiles = await findTableFiles(dir, history.tables.map((t) => t.path));
      return { c, dir, history, summary, config: redactedYaml(configText, secrets), checkpoints, tableFiles };
    }),
  );

  // Second pass: images in priority order (every key's newest snapshot, then tables, then earlier snapshots).
  const byRun = loaded.map((l) => {
    const byKey = new Map<string, MediaRef[]>();
    for (const m of l.history.media) {
      if (!byKey.has(m.key)) byKey.set(m.key, []);
      byKey.get(m.key)!.push(m);
    }
    return { l, picks: [...byKey.entries()].map(([key, refs]) => ({ key, refs, picks: pickSnapshots(refs) })) };
  });
  const embedded = new Map<string, EmbeddedImage | undefined>();
  const embed = async (dir: string, path: string): Promise<void> => {
    const k = join(dir, path);
    if (!embedded.has(k)) embedded.set(k, await images.embed(dir, path, warn));
  };
  for (const { l, picks } of byRun) for (const p of picks) if (p.picks[0]) await embed(l.dir, p.picks[0].path);
  const tables = await Promise.all(loaded.map(async (l) => (await Promise.all(l.tableFiles.map((t) => readTable(l.dir, t, images, warn)))).filter((t): t is ReportTable => t !== undefined)));
  for (const { l, picks } of byRun) for (const p of picks) for (const ref of p.picks.slice(1)) await embed(l.dir, ref.path);

  const runs: ReportRun[] = byRun.map(({ l, picks }, i) => {
    const { items, primary } = summaryItems(l.summary);
    const keyName = l.c.record.key_metric ?? primary;
    const media: MediaGroup[] = picks.map((p) => {
      const shown = p.picks.flatMap((ref) => {
        const image = embedded.get(join(l.dir, ref.path));
        return image ? [{ step: ref.step, image }] : [];
      });
      const caption = p.picks[0]?.caption;
      return { key: p.key, ...(caption !== undefined ? { caption } : {}), images: shown, notShown: p.refs.length - shown.length };
    });
    const run: ReportRun = {
      stage: l.c.stage,
      record: l.c.record,
      status: l.c.status,
      ...(seconds(l.c.record) !== undefined ? { seconds: seconds(l.c.record)! } : {}),
      ...(keyName !== undefined ? { keyMetric: { name: keyName, value: l.summary[keyName] } } : {}),
      summary: items,
      charts: chartsOf(l.c.record.id, l.history.series, keyName),
      media,
      tables: tables[i]!,
      ...(l.config !== undefined ? { config: l.config } : {}),
      checkpoints: l.checkpoints,
      historyLines: l.history.lines,
    };
    return run;
  });

  const data: ReportData = {
    title: sweep ? `sweep ${sweep.record.id} (${sweep.record.experiment ?? ''})` : pipelineRecord ? pipelineRecord.name : opened.map((r) => r.name).join(', '),
    generatedAt: new Date().toISOString(),
    ...(pipeline ? { pipeline } : {}),
    ...(sweep ? { sweep: sweepTable(sweep.record, sweep.ranked) } : {}),
    runs,
    environment: environmentOf(pipelineRecord, runs.map((r) => r.record)),
    imagesOmitted: images.omitted,
    imageBytes: images.used,
    warnings,
  };
  return scrubDeep(data, secrets);
}

/** The sweep an id (or unique prefix) names, when it names no run. */
async function findSweep(store: RunStore, id: string): Promise<{ record: SweepRecord; ranked: SweepResults } | undefined> {
  if ((await store.list()).some((r) => r.id === id || r.id.startsWith(id))) return undefined;
  const matches = (await new SweepStore(store.root).list(() => {})).filter((r) => r.id === id || r.id.startsWith(id));
  if (matches.length !== 1) return undefined;
  const record = matches[0] as SweepRecord;
  return { record, ranked: rankSweep(record, store) };
}

function sweepTable(record: SweepRecord, ranked: SweepResults): ReportSweep {
  const params = [...new Set(record.members.flatMap((m) => Object.keys(m.parameters)))];
  return {
    id: record.id,
    ...(ranked.metric ? { metric: ranked.metric.name, goal: ranked.metric.goal } : {}),
    columns: ['rank', 'member', 'status', ranked.metric?.name ?? 'value', ...params.map(shortKey)],
    rows: ranked.members.map((m) => [m.rank ?? '–', m.index, m.status, m.value ?? '–', ...params.map((k) => String(m.parameters[k] ?? '–'))]),
  };
}

function environmentOf(pipeline: RunRecord | undefined, runs: RunRecord[]): ReportEnvironment {
  type Meta = { git?: { commit?: string; branch?: string; dirty?: boolean }; versions?: Record<string, string>; cores?: number; backend?: { backend?: string; threads?: number; native?: { active?: boolean; blas?: string; threads?: number } } };
  const metas = [pipeline, ...runs].filter((r): r is RunRecord => r !== undefined).map((r) => r.meta as Meta);
  const git = metas.find((m) => m.git?.commit)?.git;
  const backend = metas.find((m) => m.backend?.backend)?.backend;
  const versions = metas.find((m) => m.versions)?.versions ?? {};
  const native = backend?.native?.active ? `${backend.native.blas?.split(' ').slice(0, 2).join(' ') ?? 'native kernels'}${backend.native.threads ? `, ${backend.native.threads} threads` : ''}` : backend?.native ? 'not in use' : undefined;
  return {
    ...(backend?.backend ? { engine: backend.backend } : {}),
    ...(typeof backend?.threads === 'number' ? { threads: backend.threads } : {}),
    ...(typeof pipeline?.meta?.['cores'] === 'number' ? { cores: pipeline.meta['cores'] as number } : {}),
    ...(native ? { native } : {}),
    ...(git?.commit ? { commit: git.commit } : {}),
    ...(git?.branch ? { branch: git.branch } : {}),
    ...(git?.dirty !== undefined ? { dirty: git.dirty } : {}),
    versions,
    hosts: [...new Set(runs.map((r) => r.host))],
  };
}
