/**
 * `minidalle sweep <id> --plot`: the metric against each swept parameter, one panel per parameter, drawn as SVG
 * and rasterised to PNG by sharp (librsvg). Numeric parameters get a linear axis, or a log axis when drawn
 * log-uniformly or spread over more than a decade; other values (strings, lists) are categories. The best
 * member is filled in orange; members without a value are left out (the table lists them).
 */
import type { ParameterSpec } from './parameters.js';
import type { RankedMember, SweepResults } from './results.js';
import { shortKey } from './results.js';

const PANEL_W = 380;
const PANEL_H = 300;
const MARGIN = { left: 64, right: 16, top: 36, bottom: 52 };

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const label = (x: number) => (Math.abs(x) >= 1e5 || (Math.abs(x) < 1e-4 && x !== 0) ? x.toExponential(1) : Number(x.toPrecision(3)).toString());

/** About `n` round tick values covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, n = 5): number[] {
  if (lo === hi) return [lo];
  const raw = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((f) => f * mag).find((s) => s >= raw)!;
  const out: number[] = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(Number(t.toPrecision(12)));
  return out;
}

interface Axis {
  pos: (v: unknown) => number; // 0..1
  ticks: { at: number; text: string }[];
  log: boolean;
}

function xAxis(spec: ParameterSpec | undefined, values: unknown[]): Axis {
  const nums = values.filter((v): v is number => typeof v === 'number');
  if (nums.length === values.length && nums.length > 0) {
    let lo = Math.min(...nums, ...(spec && spec.kind !== 'values' ? [spec.min] : []));
    let hi = Math.max(...nums, ...(spec && spec.kind !== 'values' ? [spec.max] : []));
    const log = lo > 0 && (spec?.kind === 'loguniform' || hi / lo >= 20);
    if (log) {
      const [a, b] = [Math.log10(lo), Math.log10(hi)];
      const pad = a === b ? 0.5 : (b - a) * 0.05;
      const [l, h] = [a - pad, b + pad];
      const decades = niceTicks(l, h, 5);
      return { log, pos: (v) => (Math.log10(v as number) - l) / (h - l), ticks: decades.map((d) => ({ at: (d - l) / (h - l), text: label(10 ** d) })) };
    }
    if (lo === hi) [lo, hi] = [lo - (Math.abs(lo) || 1) * 0.5, hi + (Math.abs(hi) || 1) * 0.5];
    const pad = (hi - lo) * 0.05;
    const [l, h] = [lo - pad, hi + pad];
    return { log, pos: (v) => ((v as number) - l) / (h - l), ticks: niceTicks(l, h).map((t) => ({ at: (t - l) / (h - l), text: label(t) })) };
  }
  const cats = [...new Set(values.map((v) => JSON.stringify(v)))];
  const step = 1 / cats.length;
  return { log: false, pos: (v) => (cats.indexOf(JSON.stringify(v)) + 0.5) * step, ticks: cats.map((c, i) => ({ at: (i + 0.5) * step, text: c.length > 14 ? `${c.slice(0, 13)}…` : c })) };
}

function panel(key: string, spec: ParameterSpec | undefined, points: RankedMember[], metric: string, yLo: number, yHi: number, x0: number): string {
  const w = PANEL_W - MARGIN.left - MARGIN.right;
  const h = PANEL_H - MARGIN.top - MARGIN.bottom;
  const ax = xAxis(spec, points.map((p) => p.parameters[key]));
  const yTicks = niceTicks(yLo, yHi);
  const py = (v: number) => MARGIN.top + h - ((v - yLo) / (yHi - yLo || 1)) * h;
  const px = (v: unknown) => x0 + MARGIN.left + ax.pos(v) * w;
  const parts: string[] = [];
  parts.push(`<rect x="${x0 + MARGIN.left}" y="${MARGIN.top}" width="${w}" height="${h}" fill="#fafafa" stroke="#999"/>`);
  parts.push(`<text x="${x0 + PANEL_W / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">${esc(metric)} vs ${esc(shortKey(key))}</text>`);
  for (const t of yTicks) {
    const y = py(t);
    if (y < MARGIN.top - 0.5 || y > MARGIN.top + h + 0.5) continue;
    parts.push(`<line x1="${x0 + MARGIN.left}" x2="${x0 + MARGIN.left + w}" y1="${y}" y2="${y}" stroke="#e4e4e4"/>`);
    parts.push(`<text x="${x0 + MARGIN.left - 6}" y="${y + 4}" text-anchor="end" font-size="11">${esc(label(t))}</text>`);
  }
  for (const t of ax.ticks) {
    const x = x0 + MARGIN.left + t.at * w;
    if (t.at < -1e-9 || t.at > 1 + 1e-9) continue;
    parts.push(`<line x1="${x}" x2="${x}" y1="${MARGIN.top + h}" y2="${MARGIN.top + h + 5}" stroke="#666"/>`);
    parts.push(`<text x="${x}" y="${MARGIN.top + h + 18}" text-anchor="middle" font-size="11">${esc(t.text)}</text>`);
  }
  parts.push(`<text x="${x0 + MARGIN.left + w / 2}" y="${PANEL_H - 10}" text-anchor="middle" font-size="12">${esc(key)}${ax.log ? ' (log)' : ''}</text>`);
  for (const p of points) {
    const best = p.rank === 1;
    const hollow = p.status === 'early_stopped' || p.status === 'stopped';
    const fill = hollow ? 'none' : best ? '#f28e2b' : '#4e79a7';
    parts.push(`<circle cx="${px(p.parameters[key]).toFixed(1)}" cy="${py(p.value!).toFixed(1)}" r="${best ? 6 : 4.5}" fill="${fill}" stroke="${best ? '#b85c00' : '#2d4e72'}" stroke-width="1.5"><title>member ${p.index}</title></circle>`);
  }
  return parts.join('\n');
}

/** The SVG of the plot; throws when no member has a value yet. */
export function sweepPlotSvg(results: SweepResults, parameters: Record<string, ParameterSpec>, title: string): string {
  const metric = results.metric?.name;
  if (!metric) throw new Error('nothing to plot: the sweep has no metric (add metric: { name, goal } to the sweep block)');
  const points = results.members.filter((m) => m.value !== undefined && Number.isFinite(m.value));
  if (points.length === 0) throw new Error(`nothing to plot: no member has a value of ${metric} yet`);
  const values = points.map((p) => p.value!);
  let [yLo, yHi] = [Math.min(...values), Math.max(...values)];
  if (yLo === yHi) [yLo, yHi] = [yLo - (Math.abs(yLo) || 1) * 0.05, yHi + (Math.abs(yHi) || 1) * 0.05];
  const pad = (yHi - yLo) * 0.08;
  [yLo, yHi] = [yLo - pad, yHi + pad];
  const keys = Object.keys(parameters);
  const width = PANEL_W * keys.length;
  const height = PANEL_H + 34;
  const body = keys.map((k, i) => panel(k, parameters[k], points, metric, yLo, yHi, i * PANEL_W)).join('\n');
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="DejaVu Sans, sans-serif">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    body,
    `<text x="8" y="${height - 20}" font-size="11" fill="#555">${esc(title)}</text>`,
    `<text x="8" y="${height - 6}" font-size="11" fill="#555">${esc(metric)} (${results.metric!.goal}); orange: best, hollow: stopped</text>`,
    '</svg>',
  ].join('\n');
}

/** The plot as PNG bytes. */
export async function sweepPlotPng(results: SweepResults, parameters: Record<string, ParameterSpec>, title: string): Promise<Buffer> {
  const { default: sharp } = await import('sharp');
  return sharp(Buffer.from(sweepPlotSvg(results, parameters, title))).png().toBuffer();
}
