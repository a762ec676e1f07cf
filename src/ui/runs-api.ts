/**
 * The Runs tab's data, read from the run store on each request: the run list (as `minidalle ls`), one run
 * (record, summary, redacted config, charts, media, checkpoints, lineage), a comparison (one metric overlaid,
 * the config difference), and the files a page may show: images and `*.table.json` inside a run's directory.
 * Every string leaving here is scrubbed of the environment's secret values; configs are redacted by key.
 */
import { realpathSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { extname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { flatten } from '../commands/table.js';
import { scrubDeep } from '../core/secrets.js';
import { isRunId, type RunRecord, type RunStore } from '../core/runs/index.js';
import type { ChartSpec } from '../report/chart-spec.js';
import { members, redactedYaml, summaryItems, type SummaryItem } from '../report/collect.js';
import { chartGroup, chartsOf, downsample, parseHistory } from '../report/history.js';

export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

export interface RunRow {
  id: string;
  name: string;
  kind: RunRecord['kind'];
  stage: string;
  status: string;
  host: string;
  started: string;
  seconds: number | null;
  key_metric: { name: string; value: unknown } | null;
}

async function readText(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, 'utf8');
  } catch {
    return undefined;
  }
}

async function readSummary(store: RunStore, id: string): Promise<Record<string, unknown>> {
  const text = await readText(join(store.root, id, 'summary.json'));
  if (text === undefined) return {};
  try {
    const v = JSON.parse(text) as unknown;
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

function seconds(r: RunRecord): number | null {
  const start = Date.parse(r.started_at ?? r.created_at);
  const end = r.ended_at ? Date.parse(r.ended_at) : r.status === 'running' ? Date.now() : undefined;
  return end === undefined ? null : Math.max(0, (end - start) / 1000);
}

function row(r: RunRecord, summary: Record<string, unknown>): RunRow {
  const { primary } = summaryItems(summary);
  const key = r.key_metric ?? primary;
  return {
    id: r.id,
    name: r.name,
    kind: r.kind,
    stage: r.kind === 'pipeline' ? '(pipeline)' : (r.stage ?? '-'),
    status: r.status,
    host: r.host,
    started: r.started_at ?? r.created_at,
    seconds: seconds(r),
    key_metric: key ? { name: key, value: summary[key] ?? null } : null,
  };
}

/** Opens a run by its full id only (the UI links by id; a prefix or a path is refused). */
async function openRun(store: RunStore, id: string): Promise<RunRecord> {
  if (!isRunId(id) && !/^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/.test(id)) throw new HttpError(400, `'${id.slice(0, 80)}' is not a run id`);
  const runs = await store.list();
  const r = runs.find((x) => x.id === id);
  if (!r) throw new HttpError(404, `no run ${id} in ${store.root}`);
  return r;
}

export async function runList(store: RunStore, secrets: readonly string[], limit = 500): Promise<RunRow[]> {
  const runs = (await store.list()).slice(0, limit);
  const rows = await Promise.all(runs.map(async (r) => row(r, await readSummary(store, r.id))));
  return scrubDeep(rows, secrets);
}

export interface RunMedia {
  key: string;
  step: number;
  path: string;
  caption?: string;
}

export interface RunDetail {
  row: RunRow;
  record: RunRecord;
  summary: SummaryItem[];
  config?: string;
  charts: ChartSpec[];
  media: RunMedia[];
  tables: string[];
  checkpoints: string[];
  artifacts: Record<string, string>;
  lineage: {
    pipeline?: { id: string; name: string };
    members?: { stage: string; id: string; status: string }[];
    resumed_from: { id: string; status: string }[];
    resumed_by: { id: string; status: string }[];
  };
  /** bytes of history.jsonl read for `charts`: the live stream continues from here */
  history_offset: number;
}

/** The record without what a page has no use for (pid, owner host, diff file names stay; git diff text never). */
function publicRecord(r: RunRecord): RunRecord {
  const { pid: _pid, ...rest } = r;
  return rest as RunRecord;
}

export async function runDetail(store: RunStore, id: string, secrets: readonly string[]): Promise<RunDetail> {
  const r = await openRun(store, id);
  const all = await store.list();
  const dir = join(store.root, r.id);
  const [historyText, summary, configText] = await Promise.all([readText(join(dir, 'history.jsonl')), readSummary(store, r.id), readText(join(dir, 'config.yaml'))]);
  const text = historyText ?? '';
  // only complete lines: the live stream starts after the last newline
  const complete = text.slice(0, text.lastIndexOf('\n') + 1);
  const history = parseHistory(complete);
  const { items, primary } = summaryItems(summary);
  const checkpoints = (await store.handle(r).checkpoints({ onWarning: () => {} }).list()).map((c) => `${c.runId === r.id ? '' : `${c.runId}/`}step-${c.step}`);
  const chain: { id: string; status: string }[] = [];
  for (let cur = r.resumed_from; cur !== undefined && chain.length < 50; ) {
    const parent = all.find((x) => x.id === cur);
    if (!parent) break;
    chain.push({ id: parent.id, status: parent.status });
    cur = parent.resumed_from;
  }
  const group = r.group ? all.find((x) => x.id === r.group) : undefined;
  const tables = history.tables.map((t) => t.path);
  const detail: RunDetail = {
    row: row(r, summary),
    record: publicRecord(r),
    summary: items,
    ...(configText !== undefined ? { config: redactedYaml(configText, secrets)! } : {}),
    charts: chartsOf(r.id, history.series, r.key_metric ?? primary),
    media: history.media.map((m) => ({ key: m.key, step: m.step, path: m.path, ...(m.caption !== undefined ? { caption: m.caption } : {}) })),
    tables,
    checkpoints,
    artifacts: r.outputs?.artifacts ?? {},
    lineage: {
      ...(group ? { pipeline: { id: group.id, name: group.name } } : {}),
      ...(r.kind === 'pipeline' ? { members: (await members(store, r, all)).map((m) => ({ stage: m.stage, id: m.record.id, status: m.status })) } : {}),
      resumed_from: chain,
      resumed_by: all.filter((x) => x.resumed_from === r.id).map((x) => ({ id: x.id, status: x.status })),
    },
    history_offset: Buffer.byteLength(complete),
  };
  return scrubDeep(detail, secrets);
}

export interface Comparison {
  runs: { id: string; label: string }[];
  metrics: string[];
  metric?: string;
  chart?: ChartSpec;
  config_diff: { key: string; values: unknown[] }[];
}

const MAX_COMPARED = 12;

export async function compareRuns(store: RunStore, ids: readonly string[], metric: string | undefined, secrets: readonly string[]): Promise<Comparison> {
  if (ids.length < 1 || ids.length > MAX_COMPARED) throw new HttpError(400, `compare takes 1 to ${MAX_COMPARED} runs, got ${ids.length}`);
  const records = await Promise.all(ids.map((id) => openRun(store, id)));
  const loaded = await Promise.all(
    records.map(async (r) => {
      const dir = join(store.root, r.id);
      const [h, c] = await Promise.all([readText(join(dir, 'history.jsonl')), readText(join(dir, 'config.yaml'))]);
      let config: Record<string, unknown> = {};
      const redacted = redactedYaml(c, secrets);
      if (redacted !== undefined) {
        try {
          config = flatten(parseYaml(redacted) ?? {});
        } catch {
          config = {};
        }
      }
      return { r, series: parseHistory(h ?? '').series, config };
    }),
  );
  const metrics = [...new Set(loaded.flatMap((l) => [...l.series.keys()]))].sort((a, b) => chartGroup(a).localeCompare(chartGroup(b)) || a.localeCompare(b));
  const label = (r: RunRecord): string => `${r.id} ${r.stage ?? r.name}`;
  const keys = [...new Set(loaded.flatMap((l) => Object.keys(l.config)))].sort();
  const config_diff = keys
    .map((key) => ({ key, values: loaded.map((l) => l.config[key] ?? null) }))
    .filter((d) => new Set(d.values.map((v) => JSON.stringify(v))).size > 1);
  const out: Comparison = { runs: records.map((r) => ({ id: r.id, label: label(r) })), metrics, config_diff };
  const chosen = metric ?? metrics[0];
  if (chosen !== undefined) {
    if (!metrics.includes(chosen)) throw new HttpError(400, `no run of these logged '${chosen.slice(0, 80)}'`);
    out.metric = chosen;
    out.chart = {
      id: `compare:${chosen}`,
      title: chosen,
      series: loaded.flatMap((l) => {
        const s = l.series.get(chosen);
        return s ? [{ ...downsample(s), label: label(l.r) }] : [];
      }),
    };
  }
  return scrubDeep(out, secrets);
}

const FILE_TYPES: Record<string, string> = { '.png': 'image/png', '.jpg': 'image/jpeg', '.jpeg': 'image/jpeg', '.webp': 'image/webp', '.gif': 'image/gif' };
const MAX_FILE = 50 * 1024 * 1024;

/**
 * A file a page may load: an image, or a `*.table.json`, inside the run's directory after resolving symlinks;
 * anything else (a traversal, an absolute path, a symlink out, a checkpoint, a log) is refused.
 */
export async function runFile(store: RunStore, id: string, path: string): Promise<{ file: string; type: string; size: number }> {
  const r = await openRun(store, id);
  if (path === '' || path.includes('\0') || path.length > 1024) throw new HttpError(400, 'a file path inside the run directory is required');
  const runDir = realpathSync(join(store.root, r.id));
  const wanted = resolve(runDir, path);
  const rel = relative(runDir, wanted);
  if (rel === '' || rel === '..' || rel.startsWith(`..${sep}`) || isAbsolute(path)) throw new HttpError(403, `${path.slice(0, 200)}: outside the run directory`);
  const typeOf = (p: string): string | undefined => FILE_TYPES[extname(p).toLowerCase()] ?? (p.endsWith('.table.json') ? 'application/json' : undefined);
  if (!typeOf(wanted)) throw new HttpError(403, `${path.slice(0, 200)}: only images and *.table.json files are served`);
  let real: string;
  try {
    real = realpathSync(wanted);
  } catch {
    throw new HttpError(404, `${path.slice(0, 200)}: no such file in run ${r.id}`);
  }
  const realRel = relative(runDir, real);
  if (realRel === '' || realRel === '..' || realRel.startsWith(`..${sep}`)) throw new HttpError(403, `${path.slice(0, 200)}: outside the run directory`);
  const type = typeOf(real);
  if (!type) throw new HttpError(403, `${path.slice(0, 200)}: only images and *.table.json files are served`);
  const st = statSync(real);
  if (!st.isFile()) throw new HttpError(404, `${path.slice(0, 200)}: not a file`);
  if (st.size > MAX_FILE) throw new HttpError(413, `${path.slice(0, 200)}: ${st.size} bytes, more than the ${MAX_FILE} served`);
  return { file: real, type, size: st.size };
}

/** Where a run's history.jsonl is, for the live stream (after checking the id). */
export async function historyFile(store: RunStore, id: string): Promise<{ file: string; record: RunRecord }> {
  const r = await openRun(store, id);
  return { file: join(store.root, r.id, 'history.jsonl'), record: r };
}
