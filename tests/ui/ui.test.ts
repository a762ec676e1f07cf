/**
 * `minidalle ui` on a tiny text → image model trained here (tokenizer-train → seq2seq-train, 2 steps, on a
 * tiny VQGAN) and a tiny CLIP: the demo in headless Debian chromium (type, generate, N images with scores),
 * the Runs tab (the list; a chart that gains a point when a history line is appended), POST /api/generate
 * (same seed → same codes, the library's codes; a second request waits for the first), and the safety rules
 * (traversal, symlinks, tokens, non-loopback binds, Host checks, bounded bodies and prompts, secrets).
 */
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import seq2seqPlugin, { Seq2SeqTrainConfig } from '../../plugins/seq2seq-train/index.js';
import tokenizerPlugin, { TokenizerTrainConfig } from '../../plugins/tokenizer-train/index.js';
import type { StageOutputs } from '../../src/core/plugins/types.js';
import { RunStore, type RunHandle } from '../../src/core/runs/index.js';
import { EncodedShardWriter } from '../../src/data/encoded.js';
import { DEFAULT_HELDOUT_COMBOS, generateShapes } from '../../src/data/shapes.js';
import { initCompute } from '../../src/ml/backend.js';
import { loadClipScorer } from '../../src/ml/clip-rank.js';
import { Clip, saveClip } from '../../src/ml/models/clip.js';
import { saveVqgan, Vqgan } from '../../src/ml/models/vqgan.js';
import { generateImages, loadText2Image, readGenerationConfig, type Text2Image } from '../../src/ml/text2image.js';
import { loadCaptions } from '../../src/ml/train/data.js';
import { WarmGenerator } from '../../src/ui/generator.js';
import { startUiServer, UiServerError, type UiServer } from '../../src/ui/server.js';
import { PALETTE } from '../../src/report/chart-spec.js';
import { chartsWithSeriesPixels, imageSizes, inPage, launchChromium, waitInPage, type BrowserSession } from '../support/browser.js';
import { cli } from '../support/cli.js';
import { stageContext } from '../support/stage-context.js';

const SECRET = 'hf_secret-value-for-the-ui-test-0042';
let root: string;
let store: RunStore;
let modelDir: string;
let seq2seqRunId: string;
let t2i: Text2Image;
let server: UiServer;
let browser: BrowserSession;
let live: RunHandle;

beforeAll(async () => {
  await initCompute({ backend: 'wasm' });
  root = mkdtempSync(join(tmpdir(), 'minidalle-ui-'));
  store = new RunStore(join(root, 'runs'), { onWarning: () => {} });
  const shapes = await generateShapes(join(root, 'data'), { count: 24, heldoutCount: 8, size: 16, seed: 2, samplesPerShard: 24, heldoutCombos: DEFAULT_HELDOUT_COMBOS.map((c) => ({ ...c })), plainBackgroundProb: 0.5 });
  const data: StageOutputs = { runId: 'd', outDir: root, artifacts: { train: shapes.train.pattern, heldout: shapes.heldout.pattern }, summary: {} };
  const vqgan = Vqgan.create({ ch: 4, ch_mult: [1, 2], num_res_blocks: 0, attn_resolutions: [], z_channels: 4, n_embed: 16, embed_dim: 4, num_groups: 2, resolution: 16 }, 1);
  const vqganDir = join(root, 'vqgan');
  await saveVqgan(vqgan, vqganDir);
  vqgan.dispose();
  const encoded: Record<string, string> = {};
  for (const split of ['train', 'heldout'] as const) {
    const { captions } = await loadCaptions(data.artifacts[split]!, { signal: new AbortController().signal, warn: () => {} });
    const w = new EncodedShardWriter({ dir: join(root, 'encoded', split), rowsPerShard: 16, codeCount: 64, producer: { plugin: 'test', vqgan: vqganDir } });
    for (const [i, caption] of captions.entries()) await w.add({ key: `${split}-${i}`, caption, encoding: Int32Array.from({ length: 64 }, (_, k) => (caption.length * 7 + k) % 16) });
    await w.finish();
    encoded[split] = join(root, 'encoded', split);
  }
  const tokRun = await store.create({ name: 'tok', kind: 'stage', stage: 'tokenizer', plugin: 'tokenizer-train' });
  const tok = await tokenizerPlugin.run(stageContext(tokRun, { config: TokenizerTrainConfig.parse({ vocab_size: 300, lowercase: true }), inputs: { data } }));
  await tokRun.finish('finished');
  const run = await store.create({ name: 'shapes/seq2seq', kind: 'stage', stage: 'seq2seq', plugin: 'seq2seq-train' }, { steps: 2, wandb: { api_key: SECRET } });
  const res = await seq2seqPlugin.run(
    stageContext(run, {
      config: Seq2SeqTrainConfig.parse({ model: { d_model: 32, encoder_layers: 1, decoder_layers: 1, attention_heads: 2, ffn_dim: 48, max_text_length: 20 }, steps: 2, batch_size: 8, lr: 3e-3, lr_warmup_steps: 1, log_every: 1, eval_every: 2, media_every: 2, checkpoint_every: 2, eval_count: 8, samples_per_prompt: 1 }),
      inputs: { encode: { runId: 'e', outDir: root, artifacts: encoded, summary: {} }, tokenizer: { runId: tokRun.id, outDir: tokRun.outDir, artifacts: tok.artifacts!, summary: {} } },
    }),
  );
  await run.finish('finished', { outputs: { artifacts: { model: 'out/model' } } });
  seq2seqRunId = run.id;
  modelDir = res.artifacts!.model!;
  // an older summary.json carrying a secret value under an innocent key: pages must not show it
  const summaryFile = join(run.dir, 'summary.json');
  writeFileSync(summaryFile, JSON.stringify({ ...JSON.parse(readFileSync(summaryFile, 'utf8')), note: `pushed with ${SECRET}` }));

  // a tiny CLIP over the same tokenizer
  const clipDir = join(root, 'clip');
  const clip = Clip.create({ projection_dim: 8, text_config: { vocab_size: 300, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2, max_position_embeddings: 24, pad_token_id: 1, bos_token_id: 0, eos_token_id: 2 }, vision_config: { hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2, image_size: 8, patch_size: 4 } }, 3);
  await saveClip(clip, clipDir);
  clip.dispose();
  copyFileSync(join(modelDir, 'tokenizer.json'), join(clipDir, 'tokenizer.json'));

  t2i = await loadText2Image(modelDir);
  const generator = new WarmGenerator(t2i, await readGenerationConfig(modelDir), await loadClipScorer(clipDir), 2);
  server = await startUiServer({ store, port: 0, generator, env: { HF_TOKEN: SECRET }, pollMs: 100 });

  // a run that is still training: the test appends history lines to it
  live = await store.create({ name: 'live/vqgan', kind: 'stage', stage: 'vqgan', plugin: 'vqgan-finetune' });
  for (const s of [1, 2, 3]) live.log({ 'train/loss': 1 / s }, s);
  await live.flush();
  browser = await launchChromium();
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await server?.close();
  await live?.finish('finished');
  rmSync(root, { recursive: true, force: true });
});

async function api(path: string, init: RequestInit = {}): Promise<{ status: number; body: any; text: string }> {
  const res = await fetch(`${server.url}${path}`, init);
  const text = await res.text();
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  return { status: res.status, body, text };
}

const post = (body: unknown) => api('/api/generate', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });

/** A raw request whose path and Host header are sent exactly as given (fetch normalises both). */
function raw(port: number, path: string, headers: Record<string, string> = {}): Promise<{ status: number; text: string }> {
  return new Promise((res, rej) => {
    const req = request({ host: '127.0.0.1', port, path, headers }, (r) => {
      let text = '';
      r.on('data', (d: Buffer) => (text += d.toString()));
      r.on('end', () => res({ status: r.statusCode ?? 0, text }));
    });
    req.on('error', rej);
    req.end();
  });
}

describe('demo', () => {
  it('in chromium: type a prompt, press generate, and N images render with CLIP scores, best first', async () => {
    const { page, blocked, errors } = await browser.open({ allowOrigins: [server.url] });
    await page.goto(`${server.url}/#demo`);
    await page.fill('input[name=prompt]', 'a red circle on the left');
    await page.fill('input[name=samples]', '3');
    await page.click('#generate');
    await page.waitForSelector('#gen-status[data-done="1"]');
    const images = await imageSizes(page, '#samples img');
    expect(images).toHaveLength(3);
    for (const im of images) expect(im.w).toBe(16);
    const figs = await inPage<{ score: number; rank: number }[]>(page, `() => [...document.querySelectorAll('#samples figure')].map((f) => ({ score: Number(f.dataset.score), rank: Number(f.dataset.rank) }))`);
    expect(figs.map((f) => f.rank)).toEqual([1, 2, 3]);
    for (const f of figs) expect(f.score).toBeGreaterThanOrEqual(0);
    expect([...figs].sort((a, b) => b.score - a.score)).toEqual(figs);
    expect(await page.textContent('#samples figcaption')).toMatch(/CLIP \d+\.\d\d/);
    expect(blocked).toEqual([]);
    expect(errors).toEqual([]);
    await page.close();
  });

  it('POST /api/generate: the same seed gives the same codes, which are the library generator\'s', async () => {
    const body = { prompt: 'a blue square at the top', samples: 2, seed: 7, cond_scale: 2, top_k: 4 };
    const a = await post(body);
    const b = await post(body);
    expect(a.status, a.text).toBe(200);
    const codes = (r: typeof a) => r.body.images.map((i: { codes: number[] }) => i.codes);
    expect(codes(b)).toEqual(codes(a));
    expect(a.body.images).toHaveLength(2);
    expect(a.body.images[0].png.length).toBeGreaterThan(50);
    expect(a.body.ranking.slice().sort()).toEqual([0, 1]);
    const lib = generateImages(t2i, [body.prompt], { samples: 2, seed: 7, sampling: { condScale: 2, topK: 4, topP: 1, temperature: 1 } });
    expect(codes(a)).toEqual(lib.map((g) => Array.from(g.codes)));
    const other = await post({ ...body, seed: 8 });
    expect(codes(other)).not.toEqual(codes(a));
  });

  it('a second request while one runs is queued: it starts after the first has finished', async () => {
    const both = await Promise.all([post({ prompt: 'a green star', samples: 6, seed: 1 }), post({ prompt: 'a green star', samples: 6, seed: 2 })]);
    for (const r of both) expect(r.status, r.text).toBe(200);
    // whichever the server read first ran first; the other waited for all of it
    const [first, second] = [...both].sort((x, y) => x.body.started_ms - y.body.started_ms);
    expect(first!.body.queued_behind).toBe(0);
    expect(second!.body.queued_behind).toBe(1);
    expect(second!.body.started_ms).toBeGreaterThanOrEqual(first!.body.finished_ms);
  });

  it('the stream hands out each image as it is decoded, then the ranking; a stream behind another says it waits', async () => {
    const stream = (body: unknown) => fetch(`${server.url}/api/generate/stream`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) }).then(async (r) => (await r.text()).trim().split('\n').map((l) => JSON.parse(l) as { type: string; position?: number; image?: { sample: number } }));
    const both = await Promise.all([stream({ prompt: 'a yellow heart', samples: 3, seed: 4 }), stream({ prompt: 'a yellow heart', samples: 3, seed: 5 })]);
    const [a, b] = [...both].sort((x, y) => Number(x.some((e) => e.type === 'queued')) - Number(y.some((e) => e.type === 'queued')));
    expect(a!.map((e) => e.type)).toEqual(['request', 'start', 'image', 'image', 'image', 'done']);
    expect(a!.filter((e) => e.type === 'image').map((e) => e.image!.sample)).toEqual([0, 1, 2]);
    expect(b!.map((e) => e.type)).toEqual(['request', 'queued', 'start', 'image', 'image', 'image', 'done']);
    expect(b![1]!.position).toBe(1);
  });

  it('bounds what a request may ask: prompt length, samples, fields, body size', async () => {
    expect((await post({ prompt: 'x'.repeat(257) })).body.error).toMatch(/'prompt' has 257 characters; at most 256/);
    expect((await post({ prompt: 'a', samples: 17 })).body.error).toMatch(/'samples' must be an integer from 1 to 16/);
    expect((await post({ prompt: 'a', top_k: 17 })).body.error).toMatch(/'top_k' must be an integer from 0 \(off\) to 16/);
    expect((await post({ prompt: 'a', steps: 3 })).body.error).toMatch(/unknown field 'steps'/);
    expect((await post({ prompt: '  ' })).status).toBe(400);
    const big = await api('/api/generate', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ prompt: 'a'.repeat(100_000) }) });
    expect(big.status).toBe(413);
    expect((await api('/api/generate', { method: 'POST', body: '{not json' })).status).toBe(400);
  });
});

describe('runs', () => {
  it('in chromium: the Runs tab lists the runs, and a running run\'s chart gains a point when a history line is appended', async () => {
    const { page, blocked, errors } = await browser.open({ allowOrigins: [server.url] });
    await page.goto(`${server.url}/#runs`);
    await page.waitForSelector(`#runs-table tr[data-run="${seq2seqRunId}"]`);
    expect(await page.textContent(`#runs-table tr[data-run="${live.id}"]`)).toMatch(/running/);
    await page.click(`a[href="#run/${live.id}"]`);
    await page.waitForSelector('[data-chart][data-points="3"]');
    live.log({ 'train/loss': 0.2 }, 4);
    await page.waitForSelector('[data-chart][data-points="4"]');
    expect(await chartsWithSeriesPixels(page, '[data-chart]', [PALETTE[0]])).toEqual([true]);

    // the trained run's page: charts drawn, its sample grid loaded from the run dir, config redacted
    await page.goto(`${server.url}/#run/${seq2seqRunId}`);
    await page.waitForSelector(`body[data-view="#run/${seq2seqRunId}"] #run-page [data-chart][data-points]`);
    const drawn = await chartsWithSeriesPixels(page, '[data-chart]');
    expect(drawn.length).toBeGreaterThan(0);
    const titles = await inPage<string[]>(page, `() => [...document.querySelectorAll('.u-title')].map((t) => t.textContent)`);
    expect(titles.filter((_, i) => !drawn[i])).toEqual([]);
    await waitInPage(page, `() => [...document.querySelectorAll('#media img')].every((i) => i.complete && i.naturalWidth > 0)`);
    expect((await imageSizes(page, '#media img')).length).toBeGreaterThan(0);
    expect(await page.textContent('#config')).toContain('<redacted>');
    expect(await page.content()).not.toContain(SECRET);
    expect(blocked).toEqual([]);
    expect(errors).toEqual([]);
    await page.close();
  });

  it('compare: one metric overlaid across runs, and the config difference', async () => {
    const other = await store.create({ name: 'live/vqgan', kind: 'stage', stage: 'vqgan' }, { lr: 2 });
    other.log({ 'train/loss': 0.5 }, 1);
    await other.finish('finished');
    const c = await api(`/api/compare?runs=${live.id},${other.id}&metric=train/loss`);
    expect(c.status).toBe(200);
    expect(c.body.chart.series.map((s: { label: string }) => s.label)).toEqual([`${live.id} vqgan`, `${other.id} vqgan`]);
    expect(c.body.config_diff).toEqual([{ key: 'lr', values: [null, 2] }]);
    const { page, errors } = await browser.open({ allowOrigins: [server.url] });
    await page.goto(`${server.url}/#compare/${live.id},${other.id}`);
    await page.waitForSelector('[data-chart="compare"][data-points]');
    expect(await chartsWithSeriesPixels(page, '[data-chart="compare"]', [PALETTE[1]])).toEqual([true]); // the second run's colour
    expect(await page.textContent('#config-diff')).toContain('lr');
    expect(errors).toEqual([]);
    await page.close();
  });

  it('the API never shows a secret: configs redacted by key, summaries scrubbed by value', async () => {
    const d = await api(`/api/runs/${seq2seqRunId}`);
    expect(d.status).toBe(200);
    expect(d.text).not.toContain(SECRET);
    expect(d.body.config).toContain('<redacted>');
    expect(d.body.summary.find((s: { key: string }) => s.key === 'note').value).toBe('pushed with <redacted>');
    expect((await api('/api/runs')).text).not.toContain(SECRET);
  });
});

describe('safety', () => {
  it('serves images from inside a run directory, and nothing else', async () => {
    const d = await api(`/api/runs/${seq2seqRunId}`);
    const media = d.body.media[0].path as string;
    const ok = await fetch(`${server.url}/api/runs/${seq2seqRunId}/file?path=${encodeURIComponent(media)}`);
    expect(ok.status).toBe(200);
    expect(ok.headers.get('content-type')).toBe('image/png');
    const runDir = join(store.root, seq2seqRunId);
    mkdirSync(join(runDir, 'media', 'images'), { recursive: true });
    symlinkSync('/etc/passwd', join(runDir, 'media', 'images', 'link.png'));
    writeFileSync(join(root, 'outside.png'), 'x');
    writeFileSync(join(runDir, 'output.log'), 'a log line\n');
    for (const path of ['../../../../etc/passwd', '/etc/passwd', '../../outside.png', `../${seq2seqRunId}/../../outside.png`, 'media/images/link.png', 'run.json', 'config.yaml', 'output.log', 'media/images/missing.log', '']) {
      const r = await api(`/api/runs/${seq2seqRunId}/file?path=${encodeURIComponent(path)}`);
      expect([400, 403], `${path}: ${r.status}`).toContain(r.status);
      expect(r.text).not.toContain('root:');
    }
    for (const path of ['/../../etc/passwd', '/api/runs/..%2F..%2Fetc/file?path=passwd', '/api/runs/../../etc/passwd', '/assets/../../../etc/passwd']) {
      const r = await raw(server.port, path, { Host: `127.0.0.1:${server.port}` });
      expect([400, 403, 404], `${path}: ${r.status}`).toContain(r.status);
      expect(r.text).not.toContain('root:');
    }
  });

  it('refuses a non-loopback bind without a token, before listening, from the API and the CLI', async () => {
    await expect(startUiServer({ store, host: '0.0.0.0', port: 0 })).rejects.toThrow(UiServerError);
    await expect(startUiServer({ store, host: '0.0.0.0', port: 0 })).rejects.toThrow(/refusing to listen on 0\.0\.0\.0 without a token/);
    const dir = mkdtempSync(join(tmpdir(), 'minidalle-ui-cli-'));
    writeFileSync(join(dir, 'minidalle.config.json'), JSON.stringify({ runs_dir: 'runs' }));
    const r = cli(dir, ['ui', '--host', '0.0.0.0', '--port', '0'], { MINIDALLE_UI_TOKEN: '' });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/refusing to listen on 0\.0\.0\.0 without a token/);
    rmSync(dir, { recursive: true, force: true });
  });

  it('with a token, every request needs it: none or a wrong one gets 401; the page turns ?token= into a cookie', async () => {
    const token = 'ui-token-0123456789';
    const guarded = await startUiServer({ store, port: 0, token });
    try {
      for (const path of ['/', '/api/runs', `/api/runs/${seq2seqRunId}`, '/assets/ui.js']) {
        expect((await fetch(`${guarded.url}${path}`)).status, path).toBe(401);
        expect((await fetch(`${guarded.url}${path}`, { headers: { Authorization: 'Bearer wrong-token-000000' } })).status, path).toBe(401);
      }
      expect((await fetch(`${guarded.url}/api/runs`, { headers: { Authorization: `Bearer ${token}` } })).status).toBe(200);
      const first = await fetch(`${guarded.url}/?token=${token}`);
      expect(first.status).toBe(200);
      const cookie = first.headers.get('set-cookie')!;
      expect(cookie).toMatch(/HttpOnly; SameSite=Strict/);
      expect((await fetch(`${guarded.url}/api/runs`, { headers: { Cookie: cookie.split(';')[0]! } })).status).toBe(200);
      const runs = await (await fetch(`${guarded.url}/api/runs`, { headers: { Authorization: `Bearer ${token}` } })).text();
      expect(runs).not.toContain(token);
    } finally {
      await guarded.close();
    }
  });

  it('without a token, a request addressed to another host name is refused (DNS rebinding)', async () => {
    expect((await raw(server.port, '/api/runs', { Host: 'attacker.example' })).status).toBe(403);
    expect((await raw(server.port, '/api/runs', { Host: `localhost:${server.port}` })).status).toBe(200);
  });
});
