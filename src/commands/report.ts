/**
 * `minidalle report <pipeline-run | run…> [--out report.html] [--png]`: one self-contained HTML file (charts,
 * image grids, tables, scores, config, environment) from the run store, and with --png a one-page summary image
 * beside it.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';

export class ReportError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ReportError';
  }
}

export interface ReportArgs {
  runs: string[];
  runsDir: string;
  /** default: report.html */
  out?: string;
  /** also write a summary PNG: true = beside the HTML (same name, .png), a string = that path */
  png?: boolean | string;
  env?: Record<string, string | undefined>;
}

export interface ReportResult {
  html: string;
  png?: string;
  bytes: number;
  seconds: number;
  charts: number;
  images: number;
  warnings: string[];
}

export async function reportCommand(a: ReportArgs): Promise<ReportResult> {
  if (a.runs.length === 0) throw new ReportError('name a pipeline run or one or more runs (ids or unique prefixes, see `minidalle ls`)');
  const t0 = performance.now();
  const { RunStore } = await import('../core/runs/index.js');
  const { collectReport } = await import('../report/collect.js');
  const { renderReportHtml } = await import('../report/html.js');
  const store = new RunStore(a.runsDir, { onWarning: () => {} });
  const data = await collectReport(store, a.runs, a.env ? { env: a.env } : {});
  const html = renderReportHtml(data);
  const out = resolve(a.out ?? 'report.html');
  await mkdir(dirname(out), { recursive: true });
  await writeFile(out, html);
  let png: string | undefined;
  if (a.png) {
    const { renderSummaryPng } = await import('../report/png.js');
    png = typeof a.png === 'string' ? resolve(a.png) : out.replace(/\.html?$/i, '') + '.png';
    await mkdir(dirname(png), { recursive: true });
    await writeFile(png, await renderSummaryPng(data));
  }
  return {
    html: out,
    ...(png ? { png } : {}),
    bytes: Buffer.byteLength(html),
    seconds: (performance.now() - t0) / 1000,
    charts: data.runs.reduce((n, r) => n + r.charts.length, 0),
    images: data.runs.reduce((n, r) => n + r.media.reduce((k, m) => k + m.images.length, 0) + r.tables.reduce((k, t) => k + t.rows.flat().filter((c) => c !== null && typeof c === 'object' && 'image' in c).length, 0), 0),
    warnings: data.warnings,
  };
}
