/**
 * `minidalle report` on a run store written with the store API: a pipeline whose first stage was reused from an
 * earlier pipeline, a VQGAN-like stage (loss/PSNR curves, reconstructions), a seq2seq-like one (judge
 * accuracies, sample grids), an eval-like one (CLIP scores, a ranking table with images). The HTML is opened in
 * headless Debian chromium: every chart drew its lines, every image loaded, no request left the page.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RunStore, type RunHandle } from '../../src/core/runs/index.js';
import { collectReport } from '../../src/report/collect.js';
import { chartGroup, chartsOf, parseHistory } from '../../src/report/history.js';
import { computeSize, renderReportHtml } from '../../src/report/html.js';
import { summarySvg } from '../../src/report/png.js';
import { PALETTE } from '../../src/report/chart-spec.js';
import { chartsWithSeriesPixels, imageSizes, inPage, launchChromium, type BrowserSession } from '../support/browser.js';
import { cli } from '../support/cli.js';

const SECRET = 'wandb-secret-value-0123456789';
const ENV = { WANDB_API_KEY: SECRET };
let dir: string;
let store: RunStore;
let pipelineId: string;
let browser: BrowserSession;

/** A w×h PNG of a colour, with a darker square so it is not flat. */
async function png(w: number, h: number, rgb: [number, number, number]): Promise<Uint8Array> {
  const square = await sharp({ create: { width: Math.max(1, w >> 1), height: Math.max(1, h >> 1), channels: 3, background: { r: rgb[0] >> 1, g: rgb[1] >> 1, b: rgb[2] >> 1 } } }).png().toBuffer();
  return new Uint8Array(await sharp({ create: { width: w, height: h, channels: 3, background: { r: rgb[0], g: rgb[1], b: rgb[2] } } }).composite([{ input: square, left: 0, top: 0 }]).png().toBuffer());
}

async function stage(name: string, plugin: string, group: string, config: unknown, fill: (run: RunHandle) => Promise<void>): Promise<string> {
  const run = await store.create({ name: `exp/${name}`, kind: 'stage', stage: name, plugin, group, host: 'local', started_at: '2026-12-01T10:00:00.000Z', meta: { backend: { backend: 'wasm', threads: 2, native: { active: true, blas: 'OpenBLAS 0.3.21 X', threads: 2 } }, git: { commit: 'abc123def4567890', branch: 'main', dirty: false }, versions: { node: 'v20.20.2' } } }, config);
  await fill(run);
  await run.flush();
  await run.finish('finished', { ended_at: '2026-12-01T10:02:00.000Z' });
  return run.id;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'minidalle-report-'));
  writeFileSync(join(dir, 'minidalle.config.json'), JSON.stringify({ runs_dir: 'runs' }));
  store = new RunStore(join(dir, 'runs'), { onWarning: () => {} });

  // an earlier pipeline whose data stage the later one reuses
  const old = await store.create({ name: 'exp', kind: 'pipeline', experiment: 'exp.yaml' }, {});
  const dataId = await stage('data', 'shapes-data', old.id, { count: 64 }, async (r) => r.summary({ train_count: 64, heldout_count: 16 }));
  await old.finish('finished', { meta: { stages: { data: { status: 'finished', run: dataId } } } });

  const p = await store.create({ name: 'exp', kind: 'pipeline', experiment: 'exp.yaml', meta: { git: { commit: 'abc123def4567890', branch: 'main', dirty: true }, cores: 2 } }, { name: 'exp' });
  pipelineId = p.id;
  const vqganId = await stage('vqgan', 'vqgan-finetune', p.id, { steps: 300, wandb_api_key: 'key-in-stage-config-7' }, async (r) => {
    r.defineMetric('eval/psnr', { goal: 'maximize', primary: true });
    for (let s = 10; s <= 300; s += 10) {
      r.log({ 'train/loss': 1 / s, 'train/psnr': 10 + s / 20, 'grad_norm/model.encoder.conv_in': 0.5, 'grad_norm/model.decoder.conv_out': 0.7 }, s);
      if (s % 100 === 0) {
        r.log({ 'eval/psnr': 12 + s / 25, 'eval/loss': 2 / s }, s);
        await r.media('reconstructions', await png(40, 80, [200, 40, 40]), s, 'held-out: original | reconstruction');
      }
    }
    r.log({ 'train/loss': Number.NaN }, 310);
  });
  const seq2seqId = await stage('seq2seq', 'seq2seq-train', p.id, { steps: 20 }, async (r) => {
    for (let s = 5; s <= 20; s += 5) {
      r.log({ 'train/loss': 5 - s / 10 }, s);
      r.log({ 'eval/attr_acc/shape': s / 40, 'eval/attr_acc/colour': s / 25, 'eval/attr_acc/position': s / 30, 'eval/all_correct': s / 80 }, s);
    }
    await r.media('samples', await png(64, 96, [40, 160, 40]), 20, 'held-out prompts, then training prompts');
  });
  const evalId = await stage('eval', 'clip-eval', p.id, {}, async (r) => {
    r.summary({ 'clip/score_mean': 0.31, 'heldout/recall_at_1': 0.5 });
    const imgs = join(r.dir, 'media', 'images');
    mkdirSync(imgs, { recursive: true });
    for (const i of [0, 1, 2]) writeFileSync(join(imgs, `ranked_${i}.png`), await png(16, 16, [40, 40, 60 + 60 * i]));
    const tables = join(r.dir, 'media', 'tables');
    mkdirSync(tables, { recursive: true });
    writeFileSync(
      join(tables, 'ranking.table.json'),
      JSON.stringify({
        columns: ['prompt', 'rank', 'score', 'image'],
        data: [
          ['a red circle', 1, 0.33, 'media/images/ranked_0.png'],
          ['a red circle', 2, 0.29, 'media/images/ranked_1.png'],
          ['a blue star <b>', 1, 0.27, '../images/ranked_2.png'],
          ['escape attempt', 3, 0.1, '../../../../etc/passwd.png'],
        ],
      }),
    );
    writeFileSync(join(tables, 'broken.table.json'), JSON.stringify({ rows: [] }));
    // an older run's summary, written before scrubbing existed: the report scrubs by value on its own
  });
  // files written by an older version, or by hand: the store would have scrubbed and redacted them, the
  // report does it again on its own (by value in a summary, by key in a config)
  const evalSummary = join(store.root, evalId, 'summary.json');
  writeFileSync(evalSummary, JSON.stringify({ ...JSON.parse(readFileSync(evalSummary, 'utf8')), note: `uploaded with ${SECRET}` }));
  writeFileSync(join(store.root, p.id, 'config.yaml'), 'name: exp\ntracking:\n  wandb:\n    api_key: in-config-secret-42\n');
  await p.finish('finished', {
    ended_at: '2026-12-01T10:05:00.000Z',
    meta: { stages: { data: { status: 'reused', run: dataId }, vqgan: { status: 'finished', run: vqganId }, seq2seq: { status: 'finished', run: seq2seqId }, eval: { status: 'finished', run: evalId } } },
  });
  browser = await launchChromium();
});

afterAll(async () => {
  await browser?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('the compute line', () => {
  it("names the pipeline machine's cores, shared by its stages, else a stage's own threads", () => {
    expect(computeSize({ cores: 2, threads: 1 })).toBe(' (2 cores, shared by the stages running at once)');
    expect(computeSize({ threads: 1 })).toBe(' (1 thread)');
    expect(computeSize({ threads: 4 })).toBe(' (4 threads)');
    expect(computeSize({})).toBe('');
  });
});

describe('history → charts', () => {
  it('groups metrics: train/eval of one name together, a/b/c by a/b, per-parameter norms by prefix', () => {
    expect(chartGroup('train/loss')).toBe('loss');
    expect(chartGroup('eval/loss')).toBe('loss');
    expect(chartGroup('eval/attr_acc/shape')).toBe('eval/attr_acc');
    expect(chartGroup('grad_norm/model.decoder.layers.0')).toBe('grad_norm');
    expect(chartGroup('steps')).toBe('steps');
    const h = parseHistory(['{"a/loss":1,"_step":1}', '{"a/loss":"NaN","_step":2}', '{"b/loss":3,"_step":2}', '{"truncat', '{"k/psnr":4,"_step":2}', ''].join('\n'));
    expect(h.badLines).toEqual([4]);
    expect(h.series.get('a/loss')).toEqual({ label: 'a/loss', steps: [1, 2], values: [1, null] });
    const charts = chartsOf('r', h.series, 'k/psnr');
    expect(charts.map((c) => c.title)).toEqual(['psnr', 'loss']); // the key metric's chart first
    expect(charts[1]!.series.map((s) => s.label)).toEqual(['a/loss', 'b/loss']);
  });
});

describe('minidalle report', () => {
  it('writes one HTML file with stages, curves, images, tables, scores, config and environment; secrets redacted', async () => {
    const r = cli(dir, ['report', pipelineId.slice(0, 9), '--out', 'out/report.html', '--png'], ENV);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^report: .*out\/report\.html \(\d+\.\d\d MB, \d+ charts, 7 images, \d+\.\d s\); summary .*out\/report\.png/);
    expect(r.stderr).toMatch(/broken\.table\.json: expected a table \{ "columns"/);
    const html = readFileSync(join(dir, 'out/report.html'), 'utf8');
    expect(statSync(join(dir, 'out/report.html')).size).toBeLessThan(5e6);
    for (const secret of [SECRET, 'in-config-secret-42', 'key-in-stage-config-7']) expect(html).not.toContain(secret);
    expect(html).toContain('&lt;redacted&gt;');
    expect(html).toContain('Content-Security-Policy');
    expect(html).not.toMatch(/(src|href)="https?:/);
    for (const text of ['Stages', 'vqgan-finetune', 'seq2seq-train', 'clip-eval', 'reused', 'eval/psnr', 'eval/attr_acc', 'clip/score_mean', 'heldout/recall_at_1', 'abc123def4567890', 'wasm (2 cores, shared by the stages running at once)', 'a blue star &lt;b&gt;', '../../../../etc/passwd.png (not embedded)']) {
      expect(html, text).toContain(text);
    }

    const url = `file://${join(dir, 'out/report.html')}`;
    const { page, blocked, errors } = await browser.open({ allowOrigins: [url] }); // the page itself, nothing else
    await page.goto(url);
    await page.waitForSelector('body[data-charts-drawn]');
    const placeholders = await inPage<number>(page, `() => document.querySelectorAll('[data-chart]').length`);
    const drawn = await chartsWithSeriesPixels(page, '[data-chart]', [PALETTE[0]]);
    // vqgan: psnr, loss, grad_norm; seq2seq: eval/attr_acc, all_correct, loss
    expect(placeholders).toBe(6);
    expect(drawn).toEqual(new Array(6).fill(true));
    const titles = await inPage<string[]>(page, `() => [...document.querySelectorAll('.u-title')].map((t) => t.textContent)`);
    expect(titles).toEqual(['psnr', 'loss', 'grad_norm', 'loss', 'all_correct', 'eval/attr_acc']);
    const images = await imageSizes(page);
    expect(images.length).toBe(7); // 3 reconstructions, 1 sample grid, 3 table images
    for (const im of images) {
      expect(im.src.startsWith('data:image/')).toBe(true);
      expect(im.w).toBeGreaterThan(0);
    }
    const rows = await inPage<number>(page, `() => document.querySelectorAll('table.report-table tbody tr').length`);
    expect(rows).toBe(4);
    expect(blocked).toEqual([]);
    expect(errors).toEqual([]);
    await page.close();

    const meta = await sharp(join(dir, 'out/report.png')).metadata();
    expect(meta.format).toBe('png');
    expect(meta.width).toBe(1200);
    expect(meta.height).toBeGreaterThan(400);
  });

  it('the summary image names every stage and draws each chart and newest image', async () => {
    const data = await collectReport(store, [pipelineId], { env: ENV });
    const svg = summarySvg(data);
    for (const s of ['data', 'vqgan', 'seq2seq', 'eval', 'reused', 'eval/psnr = 24']) expect(svg).toContain(s);
    expect(svg.match(/<polyline/g)?.length).toBeGreaterThanOrEqual(6);
    expect(svg.match(/<image /g)?.length).toBe(2); // reconstructions and samples (the table's images are in the HTML)
    expect(svg).not.toContain(SECRET);
  });

  it('lays the summary images out in rows as tall as their tallest image (a strip of samples takes no more)', async () => {
    const data = await collectReport(store, [pipelineId], { env: ENV });
    const strip = { path: 'media/strip.png', dataUri: 'data:image/png;base64,', width: 1000, height: 20, bytes: 1 };
    const last = data.runs[data.runs.length - 1]!;
    const withStrips = { ...data, runs: [...data.runs.slice(0, -1), { ...last, media: [...last.media, ...[1, 2, 3].map((i) => ({ key: `strip${i}`, images: [{ step: 0, image: strip }], notShown: 0 }))] }] };
    const svg = summarySvg(withStrips);
    const height = Number(/<svg [^>]*height="(\d+)"/.exec(svg)![1]);
    const images = [...svg.matchAll(/<image x="\d+" y="(\d+)" width="(\d+)" height="(\d+)"/g)].map((m) => ({ y: Number(m[1]), w: Number(m[2]), h: Number(m[3]) }));
    expect(images).toHaveLength(2 + 3);
    const strips = images.filter((im) => im.w === 360); // 1000 px wide, scaled to the 360 px cap: 7 px tall
    expect(strips.map((im) => im.h)).toEqual([7, 7, 7]);
    const bottom = Math.max(...images.map((im) => im.y + im.h));
    expect(height - bottom).toBe(8 + 20); // the row's gap below the label offset, then the page margin
  });

  it('keeps to the image budget: the newest snapshot of every key first, the rest counted and said', async () => {
    const data = await collectReport(store, [pipelineId], { env: ENV, imageBudget: 1200 });
    const shown = data.runs.flatMap((r) => r.media.flatMap((m) => m.images.map((i) => `${m.key}@${i.step}`)));
    expect(data.imageBytes).toBeLessThanOrEqual(1200);
    expect(shown).toContain('reconstructions@300');
    expect(shown).not.toContain('reconstructions@100');
    expect(data.imagesOmitted).toBeGreaterThan(0);
    expect(renderReportHtml(data)).toMatch(/\d+ image\(s\) not embedded to keep the file small/);
  });

  it('a pipeline still running (no meta.stages yet) shows the stage runs grouped under it', async () => {
    const p = await store.create({ name: 'exp', kind: 'pipeline', experiment: 'exp.yaml' }, {});
    const a = await store.create({ name: 'exp/vqgan', kind: 'stage', stage: 'vqgan', group: p.id }, {});
    a.log({ 'train/loss': 1 }, 1);
    await a.flush();
    const data = await collectReport(store, [p.id], { env: ENV });
    expect(data.runs.map((r) => [r.stage, r.status])).toEqual([['vqgan', 'running']]);
    expect(renderReportHtml(data)).toContain('status-running');
    await a.finish('stopped');
    await p.finish('stopped');
  });

  it('reports single runs too, and names a run that does not exist', async () => {
    const data = await collectReport(store, [data0()], { env: ENV });
    expect(data.pipeline).toBeUndefined();
    expect(data.runs.map((r) => r.stage)).toEqual(['vqgan']);
    const r = cli(dir, ['report', 'nosuchrun']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/nosuchrun/);
    expect(cli(dir, ['report']).code).not.toBe(0);
  });
});

function data0(): string {
  const p = JSON.parse(readFileSync(join(store.root, pipelineId, 'run.json'), 'utf8')) as { meta: { stages: Record<string, { run: string }> } };
  return p.meta.stages.vqgan!.run;
}
