/**
 * The report as one HTML file: tables, images (data URIs) and text rendered here; charts drawn in the browser
 * by the bundled script (uPlot inside) from JSON embedded in the page. A Content-Security-Policy that allows
 * only inline code and data: images makes "works offline, fetches nothing" a property the browser enforces.
 */
import { formatValue } from '../commands/table.js';
import { formatDuration } from '../core/progress.js';
import { readWebAsset } from './assets.js';
import type { ChartSpec } from './chart-spec.js';
import type { ReportData, ReportRun, SummaryItem } from './collect.js';
import type { EmbeddedImage, ReportTable, TableCell } from './media.js';

export const CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'";

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** JSON safe inside a <script> element. */
export function scriptJson(value: unknown): string {
  return JSON.stringify(value).replace(/</g, '\\u003c').replace(/\u2028/g, '\\u2028').replace(/\u2029/g, '\\u2029');
}

const STYLE = `
*{box-sizing:border-box}body{font:14px/1.45 system-ui,-apple-system,"DejaVu Sans",sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
main{max-width:1280px;margin:0 auto;padding:20px 24px 60px}h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:32px 0 10px;border-bottom:1px solid #d9dde3;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 8px}.muted{color:#667085}.mono,code,pre{font-family:"DejaVu Sans Mono",ui-monospace,monospace;font-size:12px}
table{border-collapse:collapse;background:#fff;margin:6px 0}th,td{border:1px solid #e1e4e8;padding:4px 8px;text-align:left;vertical-align:top}th{background:#f0f2f5}
td.num{text-align:right;font-variant-numeric:tabular-nums}.status-finished,.status-reused{color:#137333}.status-failed,.status-crashed{color:#b3261e}.status-running{color:#1a56db}.status-stopped{color:#9a6700}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(400px,1fr));gap:12px}.chart{background:#fff;border:1px solid #e1e4e8;padding:6px;min-height:250px}
.media{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}figure{margin:0;background:#fff;border:1px solid #e1e4e8;padding:6px}figcaption{font-size:12px;color:#667085;max-width:520px}
img.px{image-rendering:pixelated}.timeline{position:relative;background:#fff;border:1px solid #e1e4e8;padding:6px 8px}.tl-row{display:flex;align-items:center;height:22px}
.tl-name{width:140px;flex:none;font-size:12px}.tl-track{position:relative;flex:1;height:14px;background:#f0f2f5}.tl-bar{position:absolute;top:0;height:14px;background:#1f77b4;min-width:2px}
.tl-bar.reused{background:repeating-linear-gradient(45deg,#9db8d9,#9db8d9 4px,#c8d7ea 4px,#c8d7ea 8px)}.tl-label{font-size:11px;margin-left:6px;width:70px;flex:none}
details{margin:8px 0}summary{cursor:pointer;color:#1a56db}pre{background:#fff;border:1px solid #e1e4e8;padding:8px;overflow:auto;max-height:480px}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{background:#fff;border:1px solid #e1e4e8;padding:8px 12px;min-width:150px}.card .v{font-size:20px;font-weight:600}.card .k{font-size:12px;color:#667085}
.warn{background:#fff8e1;border:1px solid #f2d57e;padding:8px 12px}td img{display:block}
`;

function statusSpan(s: string): string {
  return `<span class="status-${escapeHtml(s)}">${escapeHtml(s)}</span>`;
}

function when(iso: string | undefined): string {
  return iso ? escapeHtml(iso.replace('T', ' ').slice(0, 19)) : '-';
}

function fmt(v: unknown): string {
  return escapeHtml(formatValue(v));
}

/** Integer upscaling for small pixel-art images, so an 8-px code grid is visible but stays crisp. */
function imageTag(img: EmbeddedImage, target = 420, alt = img.path): string {
  const k = img.width > 0 && img.height > 0 ? Math.max(1, Math.min(8, Math.floor(target / img.width), Math.floor((target * 1.5) / img.height))) : 1;
  const w = img.width * k;
  const h = img.height * k;
  return `<img class="px" src="${img.dataUri}" width="${w || ''}" height="${h || ''}" alt="${escapeHtml(alt)}" loading="eager">`;
}

/** The metrics a reader looks for first: the key metric, evaluations, scores and accuracies. */
export function headlineItems(run: ReportRun): SummaryItem[] {
  const re = /(^|\/)(eval|heldout|val|test|clip|judge)(\/|_)|psnr|acc|correct|score|recall|precision/i;
  return run.summary.filter((s) => typeof s.value === 'number' && (s.primary || s.key === run.keyMetric?.name || re.test(s.key))).slice(0, 16);
}

function stagesTable(data: ReportData): string {
  const rows = data.runs.map((r) => {
    const key = r.keyMetric ? `${escapeHtml(r.keyMetric.name)} = ${fmt(r.keyMetric.value)}` : '-';
    return `<tr><td><a href="#run-${escapeHtml(r.record.id)}">${escapeHtml(r.stage)}</a></td><td>${escapeHtml(r.record.plugin ?? r.record.kind)}</td><td class="mono">${escapeHtml(r.record.id)}</td><td>${statusSpan(r.status)}</td><td>${escapeHtml(r.record.host)}</td><td>${when(r.record.started_at ?? r.record.created_at)}</td><td class="num">${r.seconds === undefined ? '-' : escapeHtml(formatDuration(r.seconds))}</td><td>${key}</td></tr>`;
  });
  return `<table><thead><tr><th>stage</th><th>plugin</th><th>run</th><th>status</th><th>host</th><th>started</th><th>duration</th><th>key metric</th></tr></thead><tbody>${rows.join('')}</tbody></table>`;
}

/** Bars on one time axis; a reused stage ran in an earlier pipeline and is drawn hatched at the start. */
function timeline(data: ReportData): string {
  const spans = data.runs.map((r) => {
    const start = Date.parse(r.record.started_at ?? r.record.created_at);
    return { r, start, end: start + (r.seconds ?? 0) * 1000 };
  });
  const live = spans.filter((s) => s.r.status !== 'reused');
  if (live.length === 0) return '';
  const t0 = Math.min(...live.map((s) => s.start));
  const t1 = Math.max(...live.map((s) => s.end), t0 + 1000);
  const rows = spans.map(({ r, start, end }) => {
    const reused = r.status === 'reused';
    const left = reused ? 0 : ((start - t0) / (t1 - t0)) * 100;
    const width = reused ? 1 : Math.max(0.3, ((end - start) / (t1 - t0)) * 100);
    return `<div class="tl-row"><div class="tl-name">${escapeHtml(r.stage)}</div><div class="tl-track"><div class="tl-bar${reused ? ' reused' : ''}" style="left:${left.toFixed(2)}%;width:${width.toFixed(2)}%" title="${escapeHtml(r.stage)}: ${r.seconds === undefined ? '' : formatDuration(r.seconds)}"></div></div><div class="tl-label">${reused ? 'reused' : r.seconds === undefined ? '-' : escapeHtml(formatDuration(r.seconds))}</div></div>`;
  });
  return `<div class="timeline">${rows.join('')}<div class="muted" style="font-size:11px;margin-top:4px">wall clock ${escapeHtml(formatDuration((t1 - t0) / 1000))} from the first stage's start</div></div>`;
}

function cell(c: TableCell): string {
  if (c !== null && typeof c === 'object' && 'image' in c) return `<td>${imageTag(c.image, 96)}</td>`;
  if (c !== null && typeof c === 'object' && 'missingImage' in c) return `<td class="muted">${escapeHtml(c.missingImage)} (not embedded)</td>`;
  if (typeof c === 'number') return `<td class="num">${fmt(c)}</td>`;
  return `<td>${escapeHtml(c === null ? '' : String(c))}</td>`;
}

function tableHtml(t: ReportTable): string {
  const head = t.columns.map((c) => `<th>${escapeHtml(c)}</th>`).join('');
  const body = t.rows.map((r) => `<tr>${r.map(cell).join('')}</tr>`).join('');
  const more = t.totalRows > t.rows.length ? `<div class="muted">first ${t.rows.length} of ${t.totalRows} rows</div>` : '';
  return `<h3>table ${escapeHtml(t.key)} <span class="muted mono">${escapeHtml(t.path)}</span></h3><table class="report-table"><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>${more}`;
}

function runSection(r: ReportRun): string {
  const out: string[] = [];
  out.push(`<section id="run-${escapeHtml(r.record.id)}"><h2>${escapeHtml(r.stage)} <span class="muted" style="font-size:13px">${escapeHtml(r.record.plugin ?? r.record.kind)} · run <span class="mono">${escapeHtml(r.record.id)}</span> · ${statusSpan(r.status)} · ${escapeHtml(r.record.host)}${r.seconds === undefined ? '' : ` · ${escapeHtml(formatDuration(r.seconds))}`}</span></h2>`);
  if (r.status === 'reused') out.push(`<p class="muted">reused: this run finished in an earlier pipeline${r.record.group ? ` (<span class="mono">${escapeHtml(r.record.group)}</span>)` : ''} with the same fingerprint.</p>`);
  if (r.record.error) out.push(`<p class="status-failed">error: ${escapeHtml(r.record.error)}</p>`);
  if (r.record.resumed_from) out.push(`<p class="muted">resumed from <span class="mono">${escapeHtml(r.record.resumed_from)}</span></p>`);
  const head = headlineItems(r);
  if (head.length) {
    out.push(`<div class="cards">${head.map((s) => `<div class="card"><div class="v">${fmt(s.value)}</div><div class="k">${escapeHtml(s.key)}${s.best && s.best.value !== s.value ? ` · best ${fmt(s.best.value)} @${s.best.step}` : ''}</div></div>`).join('')}</div>`);
  }
  if (r.charts.length) out.push(`<h3>curves <span class="muted">(${r.historyLines} history lines)</span></h3><div class="charts">${r.charts.map((c) => `<div class="chart" data-chart="${escapeHtml(c.id)}"></div>`).join('')}</div>`);
  for (const m of r.media) {
    if (m.images.length === 0) {
      out.push(`<h3>${escapeHtml(m.key)}</h3><p class="muted">${m.notShown} image(s), none embedded (size budget)</p>`);
      continue;
    }
    const [latest, ...earlier] = m.images;
    const figs = [`<figure>${imageTag(latest!.image)}<figcaption>step ${latest!.step}${m.caption ? ` — ${escapeHtml(m.caption)}` : ''}</figcaption></figure>`];
    for (const e of earlier) figs.push(`<figure>${imageTag(e.image, 200)}<figcaption>step ${e.step}</figcaption></figure>`);
    out.push(`<h3>${escapeHtml(m.key)}${m.notShown ? ` <span class="muted">(${m.images.length} of ${m.images.length + m.notShown} snapshots)</span>` : ''}</h3><div class="media">${figs.join('')}</div>`);
  }
  for (const t of r.tables) out.push(tableHtml(t));
  if (r.summary.length) {
    const rows = r.summary.map((s) => `<tr><td class="mono">${escapeHtml(s.key)}${s.primary ? ' ★' : ''}</td><td class="num">${fmt(s.value)}</td><td class="num">${s.best ? `${fmt(s.best.value)} @${s.best.step} (${escapeHtml(s.best.goal)})` : ''}</td></tr>`);
    out.push(`<details><summary>summary (${r.summary.length} values)</summary><table><thead><tr><th>key</th><th>last</th><th>best</th></tr></thead><tbody>${rows.join('')}</tbody></table></details>`);
  }
  const artifacts = Object.entries(r.record.outputs?.artifacts ?? {});
  if (artifacts.length || r.checkpoints.length) {
    out.push(`<details><summary>artifacts and checkpoints</summary><ul>${artifacts.map(([k, p]) => `<li>${escapeHtml(k)}: <span class="mono">${escapeHtml(p)}</span></li>`).join('')}${r.checkpoints.length ? `<li>checkpoints: <span class="mono">${escapeHtml(r.checkpoints.join(', '))}</span></li>` : ''}</ul></details>`);
  }
  if (r.config !== undefined) out.push(`<details><summary>config (secrets redacted)</summary><pre>${escapeHtml(r.config)}</pre></details>`);
  out.push('</section>');
  return out.join('\n');
}

function environmentTable(data: ReportData): string {
  const e = data.environment;
  const rows: [string, string][] = [];
  if (e.engine) rows.push(['compute engine', `${e.engine}${computeSize(e)}`]);
  if (e.native) rows.push(['native kernels', e.native]);
  if (e.commit) rows.push(['commit', `${e.commit}${e.branch ? ` (${e.branch})` : ''}${e.dirty ? ', with uncommitted changes (git.diff in the run dir)' : ''}`]);
  rows.push(['hosts', e.hosts.join(', ') || '-']);
  for (const [k, v] of Object.entries(e.versions)) rows.push([k, v]);
  return `<table>${rows.map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td class="mono">${escapeHtml(v)}</td></tr>`).join('')}</table>`;
}

export function renderReportHtml(data: ReportData): string {
  const charts: ChartSpec[] = data.runs.flatMap((r) => r.charts);
  const p = data.pipeline?.record;
  const subtitle = p
    ? `pipeline run <span class="mono">${escapeHtml(p.id)}</span> · ${statusSpan(p.status)} · ${escapeHtml(p.experiment ?? '')} · started ${when(p.started_at ?? p.created_at)}${data.pipeline?.seconds === undefined ? '' : ` · ${escapeHtml(formatDuration(data.pipeline.seconds))}`}`
    : `${data.runs.length} run(s)`;
  const body: string[] = [];
  body.push(`<h1>${escapeHtml(data.title)}</h1><div class="muted">${subtitle} · report written ${when(data.generatedAt)} UTC</div>`);
  if (data.sweep) {
    const sw = data.sweep;
    const head = sw.columns.map((c) => `<th>${escapeHtml(c)}</th>`).join('');
    const rows = sw.rows.map((r) => `<tr>${r.map((v) => `<td>${escapeHtml(typeof v === 'number' ? fmt(v) : v)}</td>`).join('')}</tr>`).join('');
    body.push(`<h2>Sweep ranking <span class="muted" style="font-size:13px">${sw.metric ? `by ${escapeHtml(sw.metric)} (${escapeHtml(sw.goal ?? '')})` : 'no metric'}</span></h2><table class="report-table"><thead><tr>${head}</tr></thead><tbody>${rows}</tbody></table>`);
  }
  body.push(`<h2>${p ? 'Stages' : 'Runs'}</h2>${stagesTable(data)}${timeline(data)}`);
  if (data.warnings.length || data.imagesOmitted) {
    const items = [...(data.imagesOmitted ? [`${data.imagesOmitted} image(s) not embedded to keep the file small`] : []), ...data.warnings];
    body.push(`<div class="warn"><b>notes</b><ul>${items.map((w) => `<li>${escapeHtml(w)}</li>`).join('')}</ul></div>`);
  }
  for (const r of data.runs) body.push(runSection(r));
  body.push(`<h2>Environment</h2>${environmentTable(data)}`);
  if (data.pipeline?.config !== undefined) body.push(`<details><summary>experiment config (secrets redacted)</summary><pre>${escapeHtml(data.pipeline.config)}</pre></details>`);
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="${CSP}">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>${escapeHtml(data.title)} — minidalle report</title>
<style>${readWebAsset('uplot.css')}</style><style>${STYLE}</style>
</head><body><main>
${body.join('\n')}
</main>
<script type="application/json" id="report-charts">${scriptJson(charts)}</script>
<script>${readWebAsset('report.js').replace(/<\/script/gi, '<\\/script')}</script>
</body></html>
`;
}

/** " (2 cores, shared by the stages running at once)", or a stage's own " (2 threads)". */
export function computeSize(e: { threads?: number; cores?: number }): string {
  if (e.cores) return ` (${e.cores} core${e.cores === 1 ? '' : 's'}, shared by the stages running at once)`;
  return e.threads ? ` (${e.threads} thread${e.threads === 1 ? '' : 's'})` : '';
}
