// @ts-check
/**
 * The UI front end: a Demo tab (prompt → images as they are decoded, CLIP scores and ranking when the server has
 * a CLIP model) and a Runs tab (the run list, a run's page with live curves, compare). Everything comes from
 * the server's API on the same origin; the DOM is built with textContent, never from HTML strings.
 *
 * @typedef {import('../../report/chart-spec.js').ChartSpec} ChartSpec
 * @typedef {{ sample: number, seed: number, codes: number[], png: string, score?: number }} Sample
 */
import { drawChart } from '../../report/web/charts.js';

/**
 * @param {string} tag
 * @param {Record<string, string | number | boolean | ((e: Event) => void)>} [attrs]
 * @param {(Node | string | null | undefined | false)[]} children
 * @returns {HTMLElement}
 */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (typeof v === 'function') el.addEventListener(k.replace(/^on/, ''), v);
    else if (v === false) continue;
    else if (k === 'class') el.className = String(v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(typeof c === 'string' ? document.createTextNode(c) : c);
  return el;
}

/** @param {unknown} v */
function fmt(v) {
  if (v === undefined || v === null) return '-';
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : Math.abs(v) >= 1e4 || Math.abs(v) < 1e-3 ? v.toExponential(3) : v.toPrecision(4);
  if (typeof v === 'string') return v;
  return JSON.stringify(v);
}

/** @param {number | null} s */
function duration(s) {
  if (s === null || !Number.isFinite(s)) return '-';
  const r = Math.round(s);
  if (r < 60) return `${r}s`;
  if (r < 3600) return `${Math.floor(r / 60)}m${String(r % 60).padStart(2, '0')}s`;
  return `${Math.floor(r / 3600)}h${String(Math.floor((r % 3600) / 60)).padStart(2, '0')}m`;
}

/**
 * @template T
 * @param {string} url
 * @returns {Promise<T>}
 */
async function getJson(url) {
  const res = await fetch(url, { headers: { Accept: 'application/json' } });
  const body = await res.json();
  if (!res.ok) throw new Error(body?.error ?? `${res.status} ${res.statusText}`);
  return body;
}

const app = /** @type {HTMLElement} */ (document.getElementById('app'));
/** cleanups of the current view (timers, event sources) */
let cleanups = /** @type {(() => void)[]} */ ([]);

function statusEl(/** @type {string} */ s) {
  return h('span', { class: `status-${s}` }, s);
}

// ---------------------------------------------------------------- demo

/** @type {null | { model: null | { dir: string, parameters: number, codes: number, side: number, clip?: string, defaults: { condScale: number, topK: number, topP: number, temperature: number } }, compute: string | null }} */
let info = null;

async function demo() {
  info ??= await getJson('/api/info');
  const model = info?.model;
  if (!model) {
    app.replaceChildren(h('h2', {}, 'Demo'), h('p', { class: 'error', id: 'no-model' }, 'No model is loaded: start the UI with --model <seq2seq run | model folder>.'));
    return;
  }
  const d = model.defaults;
  const prompt = /** @type {HTMLInputElement} */ (h('input', { name: 'prompt', maxlength: 256, required: true, placeholder: 'a red circle on the left', autocomplete: 'off' }));
  const field = (/** @type {string} */ label, /** @type {string} */ name, /** @type {number} */ value, /** @type {Record<string, string | number>} */ extra = {}) =>
    h('label', {}, label, h('input', { type: 'number', name, value, ...extra }));
  const button = /** @type {HTMLButtonElement} */ (h('button', { type: 'submit', id: 'generate' }, 'Generate'));
  const status = h('div', { id: 'gen-status', class: 'muted' });
  const grid = h('div', { class: 'samples', id: 'samples' });
  const form = /** @type {HTMLFormElement} */ (
    h('form', { class: 'gen' }, h('label', {}, 'prompt', prompt), field('samples', 'samples', 4, { min: 1, max: 16 }), field('seed', 'seed', 1, { min: 0 }), field('cond scale', 'cond_scale', d.condScale, { min: 0, max: 100, step: 0.5 }), field('top-k', 'top_k', d.topK, { min: 0 }), button)
  );
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const data = new FormData(form);
    const body = { prompt: String(data.get('prompt') ?? ''), samples: Number(data.get('samples')), seed: Number(data.get('seed')), cond_scale: Number(data.get('cond_scale')), top_k: Number(data.get('top_k')) };
    button.disabled = true;
    void runGeneration(body, grid, status, model.side, !!model.clip).finally(() => (button.disabled = false));
  });
  app.replaceChildren(
    h('h2', {}, 'Demo'),
    h('p', { class: 'muted' }, `model ${model.dir} · ${model.parameters.toLocaleString()} parameters · ${model.codes} codes per image${model.clip ? ` · re-ranked by CLIP ${model.clip}` : ' · no CLIP model (no scores)'}${info?.compute ? ` · ${info.compute}` : ''}`),
    form,
    status,
    grid,
  );
  prompt.focus();
}

/**
 * Streams one generation (NDJSON lines) into `grid`: images as they come, then ranked best first by CLIP.
 * @param {Record<string, unknown>} body
 * @param {HTMLElement} grid
 * @param {HTMLElement} status
 * @param {number} side
 * @param {boolean} hasClip
 */
async function runGeneration(body, grid, status, side, hasClip) {
  grid.replaceChildren();
  status.textContent = 'sending…';
  status.className = 'muted';
  const res = await fetch('/api/generate/stream', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  if (!res.ok || !res.body) {
    const err = await res.json().catch(() => ({ error: `${res.status} ${res.statusText}` }));
    status.textContent = err.error;
    status.className = 'error';
    return;
  }
  /** @type {Map<number, HTMLElement>} */
  const figures = new Map();
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = '';
  const scale = Math.max(1, Math.floor(192 / side));
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += value;
    let nl;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      if (!line.trim()) continue;
      const e = JSON.parse(line);
      if (e.type === 'queued') status.textContent = `waiting: ${e.position} request(s) ahead`;
      else if (e.type === 'start') status.textContent = 'generating…';
      else if (e.type === 'image') {
        /** @type {Sample} */
        const s = e.image;
        const fig = h(
          'figure',
          { 'data-sample': s.sample, ...(s.score !== undefined ? { 'data-score': s.score } : {}) },
          h('img', { class: 'px', src: `data:image/png;base64,${s.png}`, width: side * scale, height: side * scale, alt: `sample ${s.sample}` }),
          h('figcaption', {}, `#${s.sample} · seed ${s.seed}${s.score !== undefined ? ` · CLIP ${s.score.toFixed(2)}` : ''}`),
        );
        figures.set(s.sample, fig);
        grid.append(fig);
        status.textContent = `generating… ${figures.size}/${body.samples}`;
      } else if (e.type === 'done') {
        if (e.ranking) {
          // best first, as DALL·E mini shows them
          /** @type {number[]} */ (e.ranking).forEach((sample, rank) => {
            const fig = figures.get(sample);
            if (!fig) return;
            fig.dataset.rank = String(rank + 1);
            if (rank === 0) fig.classList.add('best');
            grid.append(fig);
          });
        }
        status.textContent = `${figures.size} image(s) in ${e.seconds.toFixed(2)} s${e.ranking ? ', best CLIP score first' : hasClip ? '' : ''}`;
        status.dataset.done = '1';
      } else if (e.type === 'error') {
        status.textContent = e.message;
        status.className = 'error';
      }
    }
  }
}

// ---------------------------------------------------------------- runs

/** @typedef {{ id: string, name: string, kind: string, stage: string, status: string, host: string, started: string, seconds: number | null, key_metric: null | { name: string, value: unknown } }} RunRow */

async function runs() {
  const selected = new Set();
  const compare = /** @type {HTMLButtonElement} */ (h('button', { class: 'secondary', id: 'compare', disabled: true }, 'compare selected'));
  compare.addEventListener('click', () => (location.hash = `#compare/${[...selected].join(',')}`));
  const tbody = h('tbody');
  const table = h('table', { id: 'runs-table' }, h('thead', {}, h('tr', {}, ...['', 'id', 'name', 'stage', 'status', 'host', 'start', 'duration', 'key metric'].map((c) => h('th', {}, c)))), tbody);
  const draw = async () => {
    /** @type {RunRow[]} */
    const rows = await getJson('/api/runs');
    tbody.replaceChildren(
      ...rows.map((r) => {
        const box = /** @type {HTMLInputElement} */ (h('input', { type: 'checkbox', 'data-run': r.id }));
        box.checked = selected.has(r.id);
        box.addEventListener('change', () => {
          if (box.checked) selected.add(r.id);
          else selected.delete(r.id);
          compare.disabled = selected.size < 1;
        });
        return h(
          'tr',
          { 'data-run': r.id },
          h('td', {}, box),
          h('td', { class: 'mono' }, h('a', { href: `#run/${r.id}` }, r.id)),
          h('td', {}, r.name),
          h('td', {}, r.stage),
          h('td', {}, statusEl(r.status)),
          h('td', {}, r.host),
          h('td', {}, r.started.replace('T', ' ').slice(0, 19)),
          h('td', { class: 'num' }, duration(r.seconds)),
          h('td', {}, r.key_metric ? `${r.key_metric.name}=${fmt(r.key_metric.value)}` : '-'),
        );
      }),
    );
    if (rows.length === 0) tbody.append(h('tr', {}, h('td', { colspan: 9, class: 'muted' }, 'no runs yet')));
  };
  app.replaceChildren(h('h2', {}, 'Runs'), h('p', {}, compare), table);
  await draw();
  const timer = setInterval(() => void draw().catch(() => undefined), 5000);
  cleanups.push(() => clearInterval(timer));
}

/** @param {string} id @param {string} path */
function fileUrl(id, path) {
  return `/api/runs/${encodeURIComponent(id)}/file?path=${encodeURIComponent(path)}`;
}

/** @param {string} id */
async function runPage(id) {
  /** @type {any} */
  const d = await getJson(`/api/runs/${encodeURIComponent(id)}`);
  const r = d.record;
  const status = statusEl(r.status);
  status.id = 'run-status';
  const lineage = [];
  if (d.lineage.pipeline) lineage.push(h('li', {}, 'pipeline ', h('a', { href: `#run/${d.lineage.pipeline.id}` }, `${d.lineage.pipeline.name} (${d.lineage.pipeline.id})`)));
  for (const p of d.lineage.resumed_from) lineage.push(h('li', {}, 'resumed from ', h('a', { href: `#run/${p.id}` }, p.id), ` (${p.status})`));
  for (const p of d.lineage.resumed_by) lineage.push(h('li', {}, 'resumed by ', h('a', { href: `#run/${p.id}` }, p.id), ` (${p.status})`));
  if (d.lineage.members) for (const m of d.lineage.members) lineage.push(h('li', {}, `stage ${m.stage}: `, h('a', { href: `#run/${m.id}` }, m.id), ` (${m.status})`));

  const chartsEl = h('div', { class: 'charts', id: 'charts' });
  /** @type {Map<string, { spec: ChartSpec, chart: ReturnType<typeof drawChart> }>} */
  const charts = new Map();
  const mediaEl = h('div', { id: 'media' });
  const byKey = new Map();
  for (const m of d.media) byKey.set(m.key, [...(byKey.get(m.key) ?? []), m]);
  for (const [key, list] of byKey) {
    const sorted = [...list].sort((a, b) => b.step - a.step);
    const latest = sorted[0];
    mediaEl.append(
      h('h3', {}, `${key} `, h('span', { class: 'muted' }, `${list.length} snapshot(s)`)),
      h(
        'div',
        { class: 'media' },
        ...sorted.slice(0, 4).map((m, i) =>
          h('figure', {}, h('img', { class: 'px', src: fileUrl(id, m.path), alt: `${key} step ${m.step}`, style: i === 0 ? 'max-width:520px;min-width:200px' : 'width:160px' }), h('figcaption', {}, `step ${m.step}${i === 0 && latest.caption ? ` — ${latest.caption}` : ''}`)),
        ),
      ),
    );
  }
  for (const t of d.tables) {
    /** @type {{ columns: string[], data: unknown[][] }} */
    const table = await getJson(fileUrl(id, t)).catch(() => ({ columns: [], data: [] }));
    mediaEl.append(
      h('h3', {}, `table ${t}`),
      h(
        'table',
        {},
        h('thead', {}, h('tr', {}, ...table.columns.map((c) => h('th', {}, c)))),
        h('tbody', {}, ...table.data.slice(0, 200).map((row) => h('tr', {}, ...row.map((c) => h('td', {}, typeof c === 'string' && /\.(png|jpe?g|webp|gif)$/i.test(c) ? h('img', { class: 'px', src: fileUrl(id, c), width: 64, alt: c }) : fmt(c)))))),
      ),
    );
  }
  const summary = h(
    'table',
    { id: 'summary' },
    h('thead', {}, h('tr', {}, h('th', {}, 'key'), h('th', {}, 'last'), h('th', {}, 'best'))),
    h('tbody', {}, ...d.summary.map((/** @type {any} */ s) => h('tr', {}, h('td', { class: 'mono' }, `${s.key}${s.primary ? ' ★' : ''}`), h('td', { class: 'num' }, fmt(s.value)), h('td', { class: 'num' }, s.best ? `${fmt(s.best.value)} @${s.best.step}` : '')))),
  );
  app.replaceChildren(
    h('div', { id: 'run-page' },
      h('h2', {}, `${d.row.stage === '(pipeline)' ? 'pipeline' : d.row.stage} `, h('span', { class: 'muted mono' }, r.id), ' ', status),
      h('p', { class: 'muted' }, `${r.name} · ${r.plugin ?? r.kind} · host ${r.host} · started ${d.row.started.replace('T', ' ').slice(0, 19)} · ${duration(d.row.seconds)}${r.error ? ` · error: ${r.error}` : ''}`),
      lineage.length ? h('ul', { id: 'lineage' }, ...lineage) : null,
      d.charts.length ? h('h3', {}, 'curves ', h('span', { class: 'muted', id: 'live' }, r.status === 'running' ? '(live)' : '')) : null,
      chartsEl,
      mediaEl,
      h('h3', {}, 'summary'),
      summary,
      d.checkpoints.length ? h('p', {}, 'checkpoints: ', h('span', { class: 'mono' }, d.checkpoints.join(', '))) : null,
      Object.keys(d.artifacts).length ? h('p', {}, 'artifacts: ', h('span', { class: 'mono' }, Object.entries(d.artifacts).map(([k, v]) => `${k}: ${v}`).join(', '))) : null,
      d.config !== undefined ? h('details', {}, h('summary', {}, 'config (secrets redacted)'), h('pre', { id: 'config' }, d.config)) : null,
    ),
  );
  for (const spec of /** @type {ChartSpec[]} */ (d.charts)) {
    const el = h('div', { class: 'chart', 'data-chart': spec.id });
    chartsEl.append(el);
    charts.set(spec.id, { spec, chart: drawChart(el, spec, Math.max(280, el.clientWidth - 12)) });
  }

  // live: new history lines extend the curves; a metric or image not seen yet redraws the page
  const source = new EventSource(`/api/runs/${encodeURIComponent(id)}/events?offset=${d.history_offset}`);
  let redraw = false;
  source.addEventListener('rows', (ev) => {
    const rows = JSON.parse(/** @type {MessageEvent} */ (ev).data);
    const touched = new Set();
    for (const row of rows) {
      const step = row._step;
      for (const [key, v] of Object.entries(row)) {
        if (key.startsWith('_')) continue;
        if (typeof v === 'object' && v !== null) {
          redraw = true;
          continue;
        }
        const value = typeof v === 'number' && Number.isFinite(v) ? v : v === 'NaN' || v === 'Infinity' || v === '-Infinity' ? null : undefined;
        if (value === undefined) continue;
        const owner = [...charts.values()].find((c) => c.spec.series.some((s) => s.label === key));
        if (!owner) {
          redraw = true;
          continue;
        }
        const s = /** @type {import('../../report/chart-spec.js').SeriesSpec} */ (owner.spec.series.find((x) => x.label === key));
        if (s.steps.length && s.steps[s.steps.length - 1] === step) s.values[s.values.length - 1] = value;
        else {
          s.steps.push(step);
          s.values.push(value);
        }
        touched.add(owner);
      }
    }
    for (const c of touched) c.chart.update(c.spec);
    if (redraw) {
      redraw = false;
      source.close();
      void route();
    }
  });
  source.addEventListener('status', (ev) => {
    const s = JSON.parse(/** @type {MessageEvent} */ (ev).data).status;
    status.textContent = s;
    status.className = `status-${s}`;
    const live = document.getElementById('live');
    if (live) live.textContent = s === 'running' ? '(live)' : '';
  });
  cleanups.push(() => source.close());
}

/** @param {string[]} ids @param {string | undefined} metric */
async function comparePage(ids, metric) {
  /** @type {any} */
  const c = await getJson(`/api/compare?runs=${ids.map(encodeURIComponent).join(',')}${metric ? `&metric=${encodeURIComponent(metric)}` : ''}`);
  const select = /** @type {HTMLSelectElement} */ (h('select', { id: 'metric' }, ...c.metrics.map((/** @type {string} */ m) => h('option', { value: m, ...(m === c.metric ? { selected: true } : {}) }, m))));
  select.addEventListener('change', () => (location.hash = `#compare/${ids.join(',')}/${encodeURIComponent(select.value)}`));
  const chartEl = h('div', { class: 'chart', 'data-chart': 'compare' });
  const diff = h(
    'table',
    { id: 'config-diff' },
    h('thead', {}, h('tr', {}, h('th', {}, 'config key'), ...c.runs.map((/** @type {any} */ r) => h('th', {}, r.label)))),
    h('tbody', {}, ...(c.config_diff.length ? c.config_diff.map((/** @type {any} */ d) => h('tr', {}, h('td', { class: 'mono' }, d.key), ...d.values.map((/** @type {unknown} */ v) => h('td', {}, fmt(v))))) : [h('tr', {}, h('td', { colspan: c.runs.length + 1, class: 'muted' }, 'the configs are the same'))])),
  );
  app.replaceChildren(h('h2', {}, 'Compare'), h('p', {}, 'metric ', select), chartEl, h('h3', {}, 'config difference (secrets redacted)'), diff);
  if (c.chart) drawChart(chartEl, c.chart, Math.min(1000, Math.max(400, chartEl.clientWidth - 12)), 320);
  else chartEl.textContent = 'these runs logged no metrics';
}

// ---------------------------------------------------------------- routing

async function route() {
  for (const c of cleanups) c();
  cleanups = [];
  const hash = location.hash || '#demo';
  const tab = hash.startsWith('#demo') ? 'demo' : 'runs';
  for (const a of document.querySelectorAll('header a[data-tab]')) a.classList.toggle('active', a.getAttribute('data-tab') === tab);
  try {
    if (hash.startsWith('#run/')) await runPage(decodeURIComponent(hash.slice(5)));
    else if (hash.startsWith('#compare/')) {
      const [ids, metric] = hash.slice(9).split('/');
      await comparePage((ids ?? '').split(',').filter(Boolean), metric ? decodeURIComponent(metric) : undefined);
    } else if (tab === 'runs') await runs();
    else await demo();
  } catch (err) {
    app.replaceChildren(h('p', { class: 'error' }, /** @type {Error} */ (err).message));
  }
  document.body.dataset.view = hash;
}

window.addEventListener('hashchange', () => void route());
void route();
