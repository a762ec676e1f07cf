/**
 * A run's history.jsonl as chart series, media references and table references, and the grouping of metric
 * names into charts. Everything is found from the values themselves (numbers, W&B `image-file` and
 * `table-file` objects), never from which plugin wrote them.
 */
import type { ChartSpec, SeriesSpec } from './chart-spec.js';

export interface MediaRef {
  key: string;
  step: number;
  /** relative to the run dir */
  path: string;
  caption?: string;
  width?: number;
  height?: number;
}

export interface ParsedHistory {
  series: Map<string, SeriesSpec>;
  media: MediaRef[];
  /** `table-file` values: paths relative to the run dir */
  tables: { key: string; step: number; path: string }[];
  lines: number;
  /** lines that were not JSON objects (a line being written by a running stage, a damaged file) */
  badLines: number[];
}

const NON_FINITE = new Set(['NaN', 'Infinity', '-Infinity']);

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function parseHistory(text: string): ParsedHistory {
  const out: ParsedHistory = { series: new Map(), media: [], tables: [], lines: 0, badLines: [] };
  const lines = text.split('\n');
  for (const [i, line] of lines.entries()) {
    if (line.trim() === '') continue;
    out.lines++;
    let row: unknown;
    try {
      row = JSON.parse(line);
    } catch {
      out.badLines.push(i + 1);
      continue;
    }
    if (!isObject(row) || typeof row._step !== 'number') {
      out.badLines.push(i + 1);
      continue;
    }
    addRow(out, row, row._step);
  }
  return out;
}

/** Adds one history line (already parsed) to the series; used for live following too. */
export function addRow(out: Pick<ParsedHistory, 'series' | 'media' | 'tables'>, row: Record<string, unknown>, step: number): void {
  for (const [key, v] of Object.entries(row)) {
    if (key.startsWith('_')) continue;
    let value: number | null | undefined;
    if (typeof v === 'number') value = Number.isFinite(v) ? v : null;
    else if (typeof v === 'string' && NON_FINITE.has(v)) value = null;
    else if (isObject(v) && v._type === 'image-file' && typeof v.path === 'string') {
      out.media.push({
        key,
        step,
        path: v.path,
        ...(typeof v.caption === 'string' ? { caption: v.caption } : {}),
        ...(typeof v.width === 'number' ? { width: v.width } : {}),
        ...(typeof v.height === 'number' ? { height: v.height } : {}),
      });
    } else if (isObject(v) && v._type === 'table-file' && typeof v.path === 'string') out.tables.push({ key, step, path: v.path });
    if (value === undefined) continue;
    let s = out.series.get(key);
    if (!s) out.series.set(key, (s = { label: key, steps: [], values: [] }));
    // the same metric logged twice at one step (a re-log at the final step): the last value counts
    if (s.steps.length > 0 && s.steps[s.steps.length - 1] === step) s.values[s.values.length - 1] = value;
    else {
      s.steps.push(step);
      s.values.push(value);
    }
  }
}

/**
 * The chart a metric belongs to:
 * - `a/b/c` → `a/b` (eval/attr_acc/shape with the other attributes);
 * - `a/b` → `b`, so train/loss and eval/loss share a chart — unless `b` is a parameter name with dots
 *   (grad_norm/model.decoder.layers.0), which groups by `a`;
 * - `name` → itself.
 */
export function chartGroup(name: string): string {
  const parts = name.split('/');
  if (parts.length >= 3) return parts.slice(0, -1).join('/');
  if (parts.length === 2) return parts[1]!.includes('.') ? parts[0]! : parts[1]!;
  return name;
}

/** Charts first that a reader looks for first: the key metric's, then loss, quality, scores; per-layer norms last. */
function groupRank(group: string, primaryGroup: string | undefined): number {
  if (group === primaryGroup) return 0;
  const order: [RegExp, number][] = [
    [/(^|\/)loss$/, 1],
    [/psnr|acc|correct|clip|score|recall|precision/i, 2],
    [/norm/i, 9],
    [/lr$|ms_per_step|epoch|samples/i, 8],
  ];
  for (const [re, rank] of order) if (re.test(group)) return rank;
  return 5;
}

const MAX_SERIES_PER_CHART = 10;
const MAX_POINTS = 1500;

/** Every `stride`-th point and the last one: a chart needs a few hundred points, not every step. */
export function downsample(s: SeriesSpec, max = MAX_POINTS): SeriesSpec {
  if (s.steps.length <= max) return s;
  const stride = Math.ceil(s.steps.length / max);
  const keep = s.steps.map((_, i) => i).filter((i) => i % stride === 0 || i === s.steps.length - 1);
  return { label: s.label, steps: keep.map((i) => s.steps[i]!), values: keep.map((i) => s.values[i]!) };
}

function wantsLog(series: readonly SeriesSpec[]): boolean {
  const vs = series.flatMap((s) => s.values).filter((v): v is number => v !== null);
  if (vs.length < 2 || vs.some((v) => v <= 0)) return false;
  return Math.max(...vs) / Math.min(...vs) > 100;
}

/** The charts of one run: metrics grouped by `chartGroup`, large groups split, series downsampled. */
export function chartsOf(runId: string, series: ReadonlyMap<string, SeriesSpec>, primary?: string): ChartSpec[] {
  const groups = new Map<string, SeriesSpec[]>();
  for (const name of [...series.keys()].sort()) {
    const s = series.get(name)!;
    if (!s.values.some((v) => v !== null)) continue;
    const g = chartGroup(name);
    if (!groups.has(g)) groups.set(g, []);
    groups.get(g)!.push(downsample(s));
  }
  const primaryGroup = primary === undefined ? undefined : chartGroup(primary);
  const names = [...groups.keys()].sort((a, b) => groupRank(a, primaryGroup) - groupRank(b, primaryGroup) || a.localeCompare(b));
  const charts: ChartSpec[] = [];
  for (const g of names) {
    const all = groups.get(g)!;
    const parts = Math.ceil(all.length / MAX_SERIES_PER_CHART);
    for (let p = 0; p < parts; p++) {
      const part = all.slice(p * MAX_SERIES_PER_CHART, (p + 1) * MAX_SERIES_PER_CHART);
      const title = parts > 1 ? `${g} (${p + 1}/${parts})` : g;
      charts.push({ id: `${runId}:${title}`, title, series: part, ...(wantsLog(part) ? { log: true } : {}) });
    }
  }
  return charts;
}
