/**
 * `--png`: a one-page summary image of a report for terminals and CI logs — the stages with status and
 * timing, each run's first chart (its key metric's), and the newest image of each media key. Drawn as SVG and
 * rasterised by sharp (librsvg, DejaVu fonts), so it needs no browser.
 */
import sharp from 'sharp';
import { formatValue } from '../commands/table.js';
import { formatDuration } from '../core/progress.js';
import type { ChartSpec } from './chart-spec.js';
import type { ReportData } from './collect.js';
import type { EmbeddedImage } from './media.js';

const W = 1200;
const PAD = 20;
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#17becf', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22'];
const FONT = `font-family="DejaVu Sans, sans-serif"`;

function x(s: string): string {
  return s.replace(/[<>&'"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', "'": '&apos;', '"': '&quot;' })[c]!);
}

function clip(s: string, n: number): string {
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}

function chartSvg(c: ChartSpec, left: number, top: number, w: number, h: number, subtitle: string): string {
  const plotL = left + 48;
  const plotT = top + 34;
  const plotW = w - 60;
  const plotH = h - 64;
  const pts = c.series.flatMap((s) => s.steps.map((st, i) => [st, s.values[i]] as const)).filter((p): p is readonly [number, number] => p[1] !== null);
  const out = [`<rect x="${left}" y="${top}" width="${w}" height="${h}" fill="#fff" stroke="#e1e4e8"/>`, `<text x="${left + 8}" y="${top + 16}" ${FONT} font-size="12" font-weight="bold">${x(clip(c.title, 40))}</text>`, `<text x="${left + 8}" y="${top + 28}" ${FONT} font-size="10" fill="#667085">${x(clip(subtitle, 60))}</text>`];
  if (pts.length === 0) return out.join('');
  const tx = (v: number): number => (c.log ? Math.log10(v) : v);
  const xs = pts.map((p) => p[0]);
  const ys = pts.map((p) => tx(p[1]));
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (y0 === y1) [y0, y1] = [y0 - 1, y1 + 1];
  const px = (v: number): number => plotL + (x1 === x0 ? plotW / 2 : ((v - x0) / (x1 - x0)) * plotW);
  const py = (v: number): number => plotT + plotH - ((tx(v) - y0) / (y1 - y0)) * plotH;
  out.push(`<rect x="${plotL}" y="${plotT}" width="${plotW}" height="${plotH}" fill="none" stroke="#d0d4da"/>`);
  const label = (v: number): string => formatValue(c.log ? 10 ** v : v);
  out.push(`<text x="${plotL - 4}" y="${plotT + 8}" ${FONT} font-size="9" text-anchor="end">${x(label(y1))}</text>`, `<text x="${plotL - 4}" y="${plotT + plotH}" ${FONT} font-size="9" text-anchor="end">${x(label(y0))}</text>`);
  out.push(`<text x="${plotL}" y="${plotT + plotH + 12}" ${FONT} font-size="9">${x0}</text>`, `<text x="${plotL + plotW}" y="${plotT + plotH + 12}" ${FONT} font-size="9" text-anchor="end">${x1} steps</text>`);
  c.series.slice(0, COLORS.length).forEach((s, i) => {
    const line = s.steps.flatMap((st, k) => (s.values[k] === null ? [] : [`${px(st).toFixed(1)},${py(s.values[k]!).toFixed(1)}`]));
    if (line.length === 1) out.push(`<circle cx="${line[0]!.split(',')[0]}" cy="${line[0]!.split(',')[1]}" r="2.5" fill="${COLORS[i]}"/>`);
    else out.push(`<polyline points="${line.join(' ')}" fill="none" stroke="${COLORS[i]}" stroke-width="1.5"/>`);
  });
  let lx = left + 8;
  for (const [i, s] of c.series.slice(0, 4).entries()) {
    const label = clip(s.label, 24);
    out.push(`<rect x="${lx}" y="${top + h - 13}" width="8" height="8" fill="${COLORS[i]}"/><text x="${lx + 11}" y="${top + h - 6}" ${FONT} font-size="9">${x(label)}</text>`);
    lx += 11 + label.length * 5.4 + 10;
    if (lx > left + w - 60) break;
  }
  return out.join('');
}

/** The summary as SVG text (exported for tests: it is what the PNG shows). */
export function summarySvg(data: ReportData): string {
  const parts: string[] = [];
  let y = PAD + 8;
  const p = data.pipeline?.record;
  parts.push(`<text x="${PAD}" y="${y + 14}" ${FONT} font-size="22" font-weight="bold">${x(clip(data.title, 70))}</text>`);
  y += 26;
  const sub = p ? `pipeline ${p.id} · ${p.status}${data.pipeline?.seconds === undefined ? '' : ` · ${formatDuration(data.pipeline.seconds)}`} · ${data.environment.engine ?? ''}${data.environment.cores ? ` · ${data.environment.cores} cores` : data.environment.threads ? ` ${data.environment.threads} thread${data.environment.threads === 1 ? '' : 's'}` : ''}${data.environment.commit ? ` · commit ${data.environment.commit.slice(0, 10)}` : ''}` : `${data.runs.length} run(s)`;
  parts.push(`<text x="${PAD}" y="${y + 12}" ${FONT} font-size="12" fill="#667085">${x(sub)}</text>`);
  y += 28;
  // stages
  const cols = [PAD, PAD + 150, PAD + 310, PAD + 400, PAD + 520, PAD + 620];
  const head = ['stage', 'plugin', 'status', 'host', 'duration', 'key metric'];
  parts.push(head.map((h, i) => `<text x="${cols[i]}" y="${y + 12}" ${FONT} font-size="12" font-weight="bold">${h}</text>`).join(''));
  y += 18;
  for (const r of data.runs) {
    const key = r.keyMetric ? `${r.keyMetric.name} = ${formatValue(r.keyMetric.value)}` : '-';
    const cells = [clip(r.stage, 20), clip(r.record.plugin ?? r.record.kind, 20), r.status, clip(r.record.host, 14), r.seconds === undefined ? '-' : formatDuration(r.seconds), clip(key, 70)];
    const colour = r.status === 'finished' || r.status === 'reused' ? '#137333' : r.status === 'running' ? '#1a56db' : '#b3261e';
    parts.push(cells.map((c, i) => `<text x="${cols[i]}" y="${y + 12}" ${FONT} font-size="12"${i === 2 ? ` fill="${colour}"` : ''}>${x(c)}</text>`).join(''));
    y += 17;
  }
  y += 12;
  // each run's first chart (its key metric's), then their second ones, …: nine at most, three per row
  const charts: { chart: ChartSpec; stage: string }[] = [];
  for (let round = 0; round < 9 && charts.length < 9; round++) {
    for (const r of data.runs) if (r.charts[round] && charts.length < 9) charts.push({ chart: r.charts[round]!, stage: r.stage });
  }
  const cw = (W - 2 * PAD - 20) / 3;
  const ch = 190;
  charts.forEach((c, i) => parts.push(chartSvg(c.chart, PAD + (i % 3) * (cw + 10), y + Math.floor(i / 3) * (ch + 10), cw, ch, c.stage)));
  if (charts.length) y += Math.ceil(charts.length / 3) * (ch + 10) + 6;
  // the newest image of each media key, at most `maxH` tall; each row as tall as its tallest image
  const images: { img: EmbeddedImage; label: string }[] = data.runs.flatMap((r) => r.media.flatMap((m) => (m.images[0] ? [{ img: m.images[0].image, label: `${r.stage}: ${m.key} @${m.images[0].step}` }] : [])));
  let left = PAD;
  const maxH = 320;
  let rowH = 0; // 0: the row is empty
  for (const { img, label } of images) {
    if (img.width === 0 || img.height === 0) continue;
    const scale = Math.min(maxH / img.height, 360 / img.width, 8);
    const w = Math.round(img.width * scale);
    const h = Math.round(img.height * scale);
    if (left + w > W - PAD && rowH > 0) {
      y += rowH + 24;
      left = PAD;
      rowH = 0;
    }
    parts.push(`<text x="${left}" y="${y + 11}" ${FONT} font-size="10" fill="#667085">${x(clip(label, Math.max(12, Math.floor(w / 6))))}</text>`);
    parts.push(`<image x="${left}" y="${y + 16}" width="${w}" height="${h}" preserveAspectRatio="none" style="image-rendering:pixelated" image-rendering="optimizeSpeed" href="${img.dataUri}" xlink:href="${img.dataUri}"/>`);
    left += w + 14;
    rowH = Math.max(rowH, h);
  }
  if (rowH > 0) y += rowH + 24;
  const H = Math.ceil(y + PAD);
  return `<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}"><rect width="100%" height="100%" fill="#f6f7f9"/>${parts.join('')}</svg>`;
}

export async function renderSummaryPng(data: ReportData): Promise<Buffer> {
  return sharp(Buffer.from(summarySvg(data)), { density: 72 }).png().toBuffer();
}
