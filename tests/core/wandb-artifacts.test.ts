import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ArtifactDigestError, checkpointArtifacts, manifestDigest, pullArtifact, pushArtifact } from '../../src/core/tracking/wandb/artifacts.js';
import type { WandbSettings } from '../../src/core/tracking/wandb/settings.js';
import { FakeWandb } from '../support/fake-wandb.js';

const KEY = 'wandb-test-key-0123456789abcdef0123456789abcdef';
let fake: FakeWandb;
let sleeps: number[];
let settings: WandbSettings;

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'minidalle-wandb-art-'));
}

/** A checkpoint folder in the layout the training loop writes. */
function checkpoint(): string {
  const dir = tmp();
  writeFileSync(join(dir, 'model.safetensors'), randomBytes(70_000));
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ model_type: 'dallebart', d_model: 32 }));
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify({ model: { type: 'BPE' } }));
  writeFileSync(join(dir, 'optimizer.model.safetensors'), randomBytes(20_000));
  writeFileSync(join(dir, 'train_state.json'), JSON.stringify({ step: 100, samples: 3200, rngs: {}, data: { epoch: 2, shard: 1 }, extra: null }));
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify({ step: 100, files: {} }));
  return dir;
}

beforeEach(async () => {
  fake = new FakeWandb(KEY);
  await fake.start();
  sleeps = [];
  settings = { baseUrl: fake.url, apiKey: KEY, entity: 'me', project: 'proj', retry: { sleep: async (ms) => void sleeps.push(ms), random: () => 0.5, maxAttempts: 5 } };
});

afterEach(async () => {
  await fake.stop();
});

describe('W&B artifacts', () => {
  it('computes the manifest digest wandb-core sent in the captured traffic', () => {
    // wandb-core-0.30-sync-run.jsonl n=5/7 and wandb-core-0.30-sync-artifact.jsonl n=4/6
    expect(manifestDigest({ 'model.bin': { digest: '7ePTtoW04Te6TLJSEymnXg==', size: 1000 } })).toBe('b127757e72b238c6227cbfe7d96629ee');
    expect(manifestDigest({ 'model.safetensors': { digest: '0EPiAVBL9yCgiD74OOXkDQ==', size: 5000 } })).toBe('757d13b1064b3db6a09b0efca3bce027');
  });

  it("splits a checkpoint into dalle-mini's model-<runid> and state-<runid>", async () => {
    const dir = checkpoint();
    const parts = await checkpointArtifacts(dir, 'run1');
    expect(parts.map((p) => [p.name, p.type, p.files.map((f) => f.path)])).toEqual([
      ['model-run1', 'model', ['config.json', 'model.safetensors', 'tokenizer.json']],
      ['state-run1', 'state', ['optimizer.model.safetensors', 'train_state.json']],
    ]);
    for (const p of parts) {
      expect(p.metadata).toEqual({ step: 100, epoch: 2, samples: 3200 });
      expect(p.aliases).toEqual(['latest', 'step-100']);
    }
  });

  it('pushes in the order wandb-core uses, pulls back byte-identical, and pulls from the cache the second time', async () => {
    const dir = checkpoint();
    const [model, state] = await checkpointArtifacts(dir, 'run1');
    const pushed = await pushArtifact({ settings, runId: 'run1', ...model! });
    expect(pushed).toEqual({ name: 'model-run1', version: 'v0', digest: expect.stringMatching(/^[0-9a-f]{32}$/) });
    const seq = fake.requests.map((r) => r.op ?? `${r.method} ${r.path.split('/').slice(0, 3).join('/')}`);
    expect(seq).toEqual([
      'CreateArtifact',
      'CreateArtifactManifest',
      'CreateArtifactFiles',
      'PUT /upload/artifact',
      'PUT /upload/artifact',
      'PUT /upload/artifact',
      'CreateArtifactManifest',
      'PUT /upload/manifest',
      'CommitArtifact',
    ]);
    const create = fake.requests[0]!.vars!.input as Record<string, unknown>;
    expect(create).toMatchObject({ entityName: 'me', projectName: 'proj', artifactTypeName: 'model', artifactCollectionName: 'model-run1', runName: 'run1', digestAlgorithm: 'MANIFEST_MD5', enableDigestDeduplication: true, digest: pushed.digest });
    expect(create.aliases).toEqual([{ alias: 'latest', artifactCollectionName: 'model-run1' }, { alias: 'step-100', artifactCollectionName: 'model-run1' }]);
    expect(JSON.parse(create.metadata as string)).toEqual({ step: 100, epoch: 2, samples: 3200 });
    expect(fake.requests[1]!.vars).toMatchObject({ digest: '', includeUpload: false, manifestType: 'FULL', name: 'wandb_manifest.json' });
    expect(fake.requests[6]!.vars).toMatchObject({ includeUpload: true });
    expect(fake.requests[6]!.vars!.digest).toMatch(/^[A-Za-z0-9+/]{22}==$/);
    await pushArtifact({ settings, runId: 'run1', ...state! });
    expect(fake.artifacts.map((a) => [a.collection, a.state, a.aliases])).toEqual([
      ['model-run1', 'COMMITTED', ['latest', 'step-100']],
      ['state-run1', 'COMMITTED', ['latest', 'step-100']],
    ]);

    const cache = tmp();
    const before = fake.requests.length;
    const got = await pullArtifact('me/proj/model-run1:latest', { cacheDir: cache, settings });
    for (const f of ['model.safetensors', 'config.json', 'tokenizer.json']) expect(readFileSync(join(got, f)).equals(readFileSync(join(dir, f)))).toBe(true);
    expect(existsSync(join(got, 'optimizer.model.safetensors'))).toBe(false);
    const downloads = (from: number) => fake.requests.slice(from).filter((r) => r.method === 'GET').length;
    expect(downloads(before)).toBe(4); // the manifest and three files
    const again = fake.requests.length;
    expect(await pullArtifact('me/proj/model-run1:step-100', { cacheDir: cache, settings })).toBe(got);
    expect(downloads(again)).toBe(0);
    expect(fake.requests.slice(again).map((r) => r.op)).toEqual(['ArtifactMembershipByName']);
  });

  it('a push of the same bytes again is deduplicated by digest: no uploads, the same version', async () => {
    const [model] = await checkpointArtifacts(checkpoint(), 'run2');
    const first = await pushArtifact({ settings, runId: 'run2', ...model! });
    const n = fake.requests.length;
    const second = await pushArtifact({ settings, runId: 'run2', ...model!, aliases: ['latest', 'step-200'] });
    expect(second).toEqual(first);
    expect(fake.requests.slice(n).map((r) => r.op)).toEqual(['CreateArtifact']);
    expect(fake.artifacts[0]!.aliases.sort()).toEqual(['latest', 'step-100', 'step-200']);
  });

  it('a corrupted download is detected by digest and nothing of it is used or cached', async () => {
    const [model] = await checkpointArtifacts(checkpoint(), 'run3');
    await pushArtifact({ settings, runId: 'run3', ...model! });
    fake.corrupt.add('model.safetensors');
    const cache = tmp();
    await expect(pullArtifact('me/proj/model-run3:latest', { cacheDir: cache, settings })).rejects.toThrow(ArtifactDigestError);
    await expect(pullArtifact('me/proj/model-run3:latest', { cacheDir: cache, settings })).rejects.toThrow(/model\.safetensors' arrived corrupt twice .* not used/);
    const collection = join(cache, 'wandb', 'me', 'proj', 'model-run3');
    expect(existsSync(collection) ? readdirSync(collection) : []).toEqual([]);
    // Once the server sends good bytes, the pull succeeds.
    fake.corrupt.clear();
    const got = await pullArtifact('me/proj/model-run3:latest', { cacheDir: cache, settings });
    expect(readFileSync(join(got, 'model.safetensors')).equals(readFileSync(model!.files.find((f) => f.path === 'model.safetensors')!.localPath))).toBe(true);
  });

  it('a cached file damaged after the pull is pulled again, not used', async () => {
    const [model] = await checkpointArtifacts(checkpoint(), 'run4');
    await pushArtifact({ settings, runId: 'run4', ...model! });
    const cache = tmp();
    const got = await pullArtifact('me/proj/model-run4:latest', { cacheDir: cache, settings });
    const file = join(got, 'config.json');
    const good = readFileSync(file);
    writeFileSync(file, Buffer.from(good.toString('utf8').replace('32', '64')));
    await pullArtifact('me/proj/model-run4:latest', { cacheDir: cache, settings });
    expect(readFileSync(file).equals(good)).toBe(true);
  });

  it('retries 500s and 429s (honouring Retry-After), and never puts the key in an error', async () => {
    const [model] = await checkpointArtifacts(checkpoint(), 'run5');
    let n = 0;
    fake.fault = ({ op }) => {
      if (op !== 'CreateArtifact') return undefined;
      n++;
      return n === 1 ? { status: 500 } : n === 2 ? { status: 429, retryAfter: '7' } : undefined;
    };
    await pushArtifact({ settings, runId: 'run5', ...model! });
    expect(sleeps).toEqual([750, 7000]); // backoff 1 s jittered to 0.75 s, then the server's 7 s
    fake.fault = undefined;
    const wrong = { ...settings, apiKey: `${KEY}-wrong` };
    const err = await pullArtifact('me/proj/model-run5:latest', { cacheDir: tmp(), settings: wrong }).catch((e: Error) => e);
    expect(String((err as Error).message)).toMatch(/HTTP 401 \(check WANDB_API_KEY/);
    expect(String((err as Error).message)).not.toContain(KEY);
    expect(String((err as Error).stack)).not.toContain(KEY);
  });

  it('refuses artifact paths that would leave the directory', async () => {
    const dir = tmp();
    mkdirSync(join(dir, 'a'));
    writeFileSync(join(dir, 'a', 'x'), 'x');
    await expect(pushArtifact({ settings, runId: 'r', name: 'bad', type: 'model', files: [{ path: '../x', localPath: join(dir, 'a', 'x') }], metadata: {}, aliases: [] })).rejects.toThrow(/not a relative path inside the artifact/);
  });
});
