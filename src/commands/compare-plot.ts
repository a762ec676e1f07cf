/**
 * `minidalle compare <runs…> --plot <metric>[,metric] [--out f.png]`: the runs' curves of each metric from
 * their history.jsonl, one panel per metric, one colour per run (the same across panels) and a legend with the
 * run names. echarts renders the chart as SVG in Node (no canvas needed); sharp turns it into a PNG.
 */
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { MinidalleError } from '../core/errors.js';
import { RunStore, type RunRecord } from '../core/runs/index.js';

export class ComparePlotError extends MinidalleError {
  override name = 'ComparePlotError';
  override exitCode = 2;
}

/** Tableau 10: distinct on screen and in print; a run keeps its colour in every panel. */
export const RUN_COLOURS = ['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac'];

export interface ComparePlotArgs {
  runsDir: string;
  runs: string[];
  /** Metric names (history keys), e.g. `train/loss`. */
  metrics: string[];
  out: string;
  width?: number;
  /** Height of one metric's panel. */
  panelHeight?: number;
}

export interface ComparePlotResult {
  out: string;
  /** Points drawn per run and metric. */
  series: { run: string; label: string; metric: string; colour: string; points: number }[];
  /** Runs that lack a metric (said, not hidden). */
  warnings: string[];
}

/** `[step, value]` pairs of every metric in a run's history (non-numbers skipped), in log order. */
function readHistory(file: string): Map<string, [number, number][]> {
  const out = new Map<string, [number, number][]>();
  if (!existsSync(file)) return out;
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (line.trim() === '') continue;
    let row: Record<string, unknown>;
    try {
      row = JSON.parse(line) as Record<string, unknown>;
    } catch {
      continue; // a torn last line of a crashed run
    }
    const step = row._step;
    if (typeof step !== 'number') continue;
    for (const [k, v] of Object.entries(row)) {
      if (k.startsWith('_') || typeof v !== 'number' || !Number.isFinite(v)) continue;
      let points = out.get(k);
      if (!points) out.set(k, (points = []));
      points.push([step, v]);
    }
  }
  return out;
}

const label = (r: RunRecord) => `${r.id} (${r.stage ?? r.name})`;

export async function comparePlot(a: ComparePlotArgs): Promise<ComparePlotResult> {
  const metrics = [...new Set(a.metrics.flatMap((m) => m.split(',')).map((m) => m.trim()).filter((m) => m !== ''))];
  if (metrics.length === 0) throw new ComparePlotError('--plot needs a metric name, e.g. --plot train/loss or --plot train/loss,eval/loss');
  if (a.runs.length === 0) throw new ComparePlotError('name the runs to plot');
  if (a.runs.length > RUN_COLOURS.length) throw new ComparePlotError(`--plot draws at most ${RUN_COLOURS.length} runs (one distinct colour each); got ${a.runs.length}`);
  const store = new RunStore(a.runsDir, { onWarning: () => {} });
  const runs = await Promise.all(a.runs.map(async (id) => (await store.open(id)).read()));
  const histories = runs.map((r) => readHistory(join(store.root, r.id, 'history.jsonl')));

  const warnings: string[] = [];
  for (const m of metrics) {
    if (histories.every((h) => !h.has(m))) {
      const known = [...new Set(histories.flatMap((h) => [...h.keys()]))].sort();
      throw new ComparePlotError(`no run logged '${m}'${known.length ? ` (they logged: ${known.join(', ')})` : ' (their histories are empty)'}`);
    }
    runs.forEach((r, i) => {
      if (!histories[i]!.has(m)) warnings.push(`run ${r.id} logged no '${m}'`);
    });
  }

  const width = a.width ?? 1000;
  const panel = a.panelHeight ?? 360;
  const top = 56; // title and legend
  const gap = 48;
  const height = top + metrics.length * (panel + gap);
  const series: ComparePlotResult['series'] = [];
  const echartsSeries = metrics.flatMap((m, p) =>
    runs.flatMap((r, i) => {
      const points = histories[i]!.get(m);
      if (!points) return [];
      const colour = RUN_COLOURS[i]!;
      series.push({ run: r.id, label: label(r), metric: m, colour, points: points.length });
      return [{ name: label(r), type: 'line', xAxisIndex: p, yAxisIndex: p, data: points, showSymbol: points.length <= 30, symbolSize: 5, color: colour, lineStyle: { width: 2.5, color: colour }, itemStyle: { color: colour } }];
    }),
  );
  const option = {
    animation: false,
    backgroundColor: '#ffffff',
    textStyle: { fontFamily: 'DejaVu Sans, sans-serif' },
    legend: { top: 8, itemGap: 32, data: runs.map(label), textStyle: { fontSize: 13 } },
    title: metrics.map((m, p) => ({ text: m, top: top + p * (panel + gap) - 4, left: 'center', textStyle: { fontSize: 14, fontWeight: 'normal' } })),
    grid: metrics.map((_, p) => ({ left: 70, right: 30, top: top + p * (panel + gap) + 24, height: panel - 40 })),
    xAxis: metrics.map((_, p) => ({ type: 'value', gridIndex: p, name: 'step', nameLocation: 'middle', nameGap: 24, scale: true })),
    yAxis: metrics.map((_, p) => ({ type: 'value', gridIndex: p, scale: true })),
    series: echartsSeries,
  };
  const echarts = await import('echarts');
  const chart = echarts.init(null, null, { renderer: 'svg', ssr: true, width, height });
  let svg: string;
  try {
    chart.setOption(option as Parameters<typeof chart.setOption>[0]);
    svg = chart.renderToSVGString();
  } finally {
    chart.dispose();
  }
  const { default: sharp } = await import('sharp');
  const png = await sharp(Buffer.from(svg)).png().toBuffer();
  const out = resolve(a.out);
  await mkdir(dirname(out), { recursive: true });
  await writeFile(out, png);
  return { out, series, warnings };
}
