import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { folderFiles, modelCard, parseHubRef, pullHubRepo, pushFolder, type HubSettings } from '../../src/core/hub/index.js';
import { FakeHub } from '../support/fake-hub.js';

const TOKEN = `hf_${randomBytes(12).toString('hex')}`;

/** A model folder like seq2seq-train's: small JSON files and binary weights (one in two shards). */
function modelFolder(): string {
  const dir = mkdtempSync(join(tmpdir(), 'hub-model-'));
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ model_type: 'dallebart', d_model: 16 }));
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify({ model: { type: 'BPE', vocab: { a: 0 } } }));
  writeFileSync(join(dir, 'model.safetensors'), randomBytes(200_000));
  mkdirSync(join(dir, 'vqgan'));
  writeFileSync(join(dir, 'vqgan', 'model.safetensors'), randomBytes(3_000));
  return dir;
}

describe('Hub replica against a local Hub', () => {
  let hub: FakeHub;
  let settings: HubSettings;
  beforeAll(async () => {
    hub = await FakeHub.start({ token: TOKEN, multipartAbove: 100_000, chunkSize: 64 * 1024 });
    settings = { hubUrl: hub.url, token: TOKEN };
  });
  afterAll(() => hub.close());

  it('uploads a model folder in one commit (weights through LFS, multipart for the large one) and pulls identical bytes', async () => {
    const dir = modelFolder();
    const files = await folderFiles(dir);
    const card = modelCard({ repo: 'me/shapes', experiment: 'e', stage: 'seq2seq', plugin: 'seq2seq-train', runId: 'r1', step: 300, summary: { 'eval/loss': 1.5 }, kind: 'model', files: [] });
    hub.requests.length = 0;
    const pushed = await pushFolder({ repo: 'me/shapes', dir, extra: { 'README.md': card }, title: 'minidalle: e/seq2seq run r1, step 300', settings });
    expect(pushed.created).toBe(true);
    // Protocol: repo check, create, preupload, LFS batch, part PUTs + completion and a plain PUT, then ONE commit.
    const calls = hub.requests.map((r) => `${r.method} ${r.path.replace(/\?.*$/, '').replace(/[0-9a-f]{64}/, '<oid>')}`);
    expect(calls[0]).toBe('GET /api/models/me/shapes');
    expect(calls[1]).toBe('POST /api/repos/create');
    expect(calls[2]).toBe('POST /api/models/me/shapes/preupload/main');
    expect(calls[3]).toBe('POST /me/shapes.git/info/lfs/objects/batch');
    expect(calls.filter((c) => c.startsWith('PUT /lfs-parts/'))).toHaveLength(4); // 200 KB in 64 KiB parts
    expect(calls.filter((c) => c.startsWith('POST /lfs-complete/'))).toHaveLength(1);
    expect(calls.filter((c) => c.startsWith('PUT /lfs-storage/'))).toHaveLength(1); // the small VQGAN weights
    expect(calls.filter((c) => c.includes('/commit/'))).toEqual(['POST /api/models/me/shapes/commit/main']);
    expect(calls.at(-1)).toBe('POST /api/models/me/shapes/commit/main');
    expect(hub.requests.filter((r) => !r.path.startsWith('/lfs-')).every((r) => r.auth === 'valid')).toBe(true);

    const [head] = hub.log('me/shapes');
    expect(head).toMatchObject({ oid: pushed.commit, title: 'minidalle: e/seq2seq run r1, step 300' });
    expect(head!.paths).toEqual(['.gitattributes', 'README.md', ...files].sort());
    expect(hub.file('me/shapes', 'model.safetensors')!.lfs).toBe(true);
    expect(hub.file('me/shapes', 'vqgan/model.safetensors')!.lfs).toBe(true);
    expect(hub.file('me/shapes', 'config.json')!.lfs).toBe(false);

    const cacheDir = mkdtempSync(join(tmpdir(), 'hub-cache-'));
    const pulled = await pullHubRepo(parseHubRef('me/shapes'), { cacheDir, settings });
    expect(pulled.commit).toBe(pushed.commit);
    expect(pulled.downloaded).toBe(files.length + 2);
    for (const f of files) expect(readFileSync(join(pulled.dir, f)).equals(readFileSync(join(dir, f))), f).toBe(true);
    expect(readFileSync(join(pulled.dir, 'README.md'), 'utf8')).toBe(card);

    // A second pull of the same revision downloads nothing; a pinned commit does not even ask the Hub.
    hub.requests.length = 0;
    expect(await pullHubRepo(parseHubRef('me/shapes@main'), { cacheDir, settings })).toMatchObject({ dir: pulled.dir, downloaded: 0 });
    expect(hub.requests.map((r) => r.path.replace(/\?.*$/, ''))).toEqual(['/api/models/me/shapes/revision/main']);
    hub.requests.length = 0;
    expect(await pullHubRepo(parseHubRef(`me/shapes@${pushed.commit}`), { cacheDir, settings })).toMatchObject({ dir: pulled.dir, downloaded: 0 });
    expect(hub.requests).toHaveLength(0);
  });

  it('a second push is one more commit that mirrors the folder (removed files are deleted, unchanged weights not re-uploaded)', async () => {
    const dir = modelFolder();
    await pushFolder({ repo: 'me/mirror', dir, title: 'first', settings });
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ model_type: 'dallebart', d_model: 32 }));
    const { rmSync } = await import('node:fs');
    rmSync(join(dir, 'vqgan'), { recursive: true });
    hub.requests.length = 0;
    const second = await pushFolder({ repo: 'me/mirror', dir, title: 'second', settings });
    expect(second).toMatchObject({ created: false, deleted: ['vqgan/model.safetensors'] });
    expect(hub.requests.some((r) => r.path.startsWith('/lfs-'))).toBe(false); // model.safetensors is already stored
    const log = hub.log('me/mirror');
    expect(log.map((c) => c.title)).toEqual(['second', 'first', 'initial commit']);
    expect(log[0]!.paths).toEqual(['.gitattributes', 'config.json', 'model.safetensors', 'tokenizer.json']);
    expect(JSON.parse(hub.file('me/mirror', 'config.json')!.bytes.toString()).d_model).toBe(32);
  });

  it('a corrupted download is detected by its digest and nothing is cached', async () => {
    const dir = modelFolder();
    await pushFolder({ repo: 'me/corrupt', dir, title: 'x', settings });
    hub.corrupt('me/corrupt', 'model.safetensors');
    const cacheDir = mkdtempSync(join(tmpdir(), 'hub-cache-'));
    await expect(pullHubRepo(parseHubRef('me/corrupt'), { cacheDir, settings })).rejects.toThrow(/model\.safetensors downloaded from hf:me\/corrupt@[0-9a-f]{40} does not match its digest \(expected sha256 [0-9a-f]{64}/);
    expect(await folderFiles(cacheDir)).toEqual([]);
  });

  it('a cached copy changed on disk is noticed and downloaded again', async () => {
    const dir = modelFolder();
    await pushFolder({ repo: 'me/damaged', dir, title: 'x', settings });
    const cacheDir = mkdtempSync(join(tmpdir(), 'hub-cache-'));
    const first = await pullHubRepo(parseHubRef('me/damaged'), { cacheDir, settings });
    writeFileSync(join(first.dir, 'config.json'), '{}');
    const lines: string[] = [];
    const again = await pullHubRepo(parseHubRef('me/damaged'), { cacheDir, settings, log: (l) => lines.push(l) });
    expect(again.downloaded).toBeGreaterThan(0);
    expect(lines.join('\n')).toMatch(/cached copy of hf:me\/damaged@[0-9a-f]{40} is damaged \(config\.json changed\)/);
    expect(readFileSync(join(again.dir, 'config.json')).equals(readFileSync(join(dir, 'config.json')))).toBe(true);
  });

  it('a wrong token is refused with a message that says to check HF_TOKEN and never quotes the token, even when the server does', async () => {
    const wrong = `hf_${randomBytes(12).toString('hex')}`;
    hub.echoAuthorization = true;
    try {
      const bad = { hubUrl: hub.url, token: wrong };
      const push = await pushFolder({ repo: 'me/denied', dir: modelFolder(), title: 't', settings: bad }).catch((e: Error) => e);
      const pull = await pullHubRepo(parseHubRef('me/shapes'), { cacheDir: mkdtempSync(join(tmpdir(), 'hub-cache-')), settings: bad }).catch((e: Error) => e);
      for (const err of [push, pull]) {
        expect(err).toBeInstanceOf(Error);
        const text = `${(err as Error).message}\n${(err as Error).stack}`;
        expect(text).toMatch(/Invalid credentials in Authorization header 'Bearer <redacted>'.*check HF_TOKEN/);
        expect(text).not.toContain(wrong);
      }
    } finally {
      hub.echoAuthorization = false;
    }
  });

  it('refuses bad refs and a missing token with a clear message', async () => {
    expect(() => parseHubRef('no-owner')).toThrow(/expected <owner>\/<name>/);
    expect(() => parseHubRef('me/x@')).toThrow(/revision after '@'/);
    await expect(pushFolder({ repo: 'me/x', dir: modelFolder(), title: 't', settings: { hubUrl: hub.url } })).rejects.toThrow(/HF_TOKEN is not set/);
    await expect(pullHubRepo(parseHubRef('me/absent'), { cacheDir: mkdtempSync(join(tmpdir(), 'hub-cache-')), settings })).rejects.toThrow(/cannot resolve hf:me\/absent@main.*Repository not found/);
  });
});
