import { mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { syncRuns } from '../../src/commands/sync.js';
import { RunStore, type RunHandle } from '../../src/core/runs/index.js';
import { WandbClient } from '../../src/core/tracking/wandb/client.js';
import { startWandbReplica } from '../../src/core/tracking/wandb/live.js';
import { RunReplayer } from '../../src/core/tracking/wandb/replay.js';
import { readState } from '../../src/core/tracking/wandb/state.js';
import { FakeWandb } from '../support/fake-wandb.js';
import { filesUnder, until } from '../support/cli.js';

const KEY = 'wandb-replica-key-5f1e2d3c4b5a69788796a5b4c3d2e1f0';
let fake: FakeWandb;
let sleeps: number[];
let lines: string[];
const retry = () => ({ sleep: async (ms: number) => void sleeps.push(ms), random: () => 0.5, maxAttempts: 3 });

/** A tiny PNG (the store checks the signature and IHDR). */
function png(w: number, h: number, seed: number): Uint8Array {
  const b = Buffer.alloc(33 + seed);
  Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]).copy(b, 0);
  b.writeUInt32BE(13, 8);
  b.write('IHDR', 12, 'ascii');
  b.writeUInt32BE(w, 16);
  b.writeUInt32BE(h, 20);
  return b;
}

/** A store with a pipeline run whose experiment has tracking.wandb, and a stage run in it. */
async function stageRun(store: RunStore, resumedFrom?: string): Promise<RunHandle> {
  const pipeline = await store.create({ name: 'exp', kind: 'pipeline' }, { name: 'exp', tracking: { tags: ['t1'], wandb: { project: 'proj', entity: 'me' } }, stages: {} });
  const run = await store.create(
    { name: 'exp/train', kind: 'stage', stage: 'train', plugin: 'counter', group: pipeline.id, resumed_from: resumedFrom },
    { plugin: 'counter', needs: [], host: 'local', with: { steps: 12, lr: 0.001 }, seed: 0 },
  );
  await run.update({ started_at: new Date().toISOString(), meta: { backend: 'wasm' } });
  return run;
}

function env() {
  return { WANDB_API_KEY: KEY, WANDB_BASE_URL: fake.url };
}

async function sync(store: RunStore, runs: string[] = []) {
  return syncRuns({ runsDir: store.root, runs, env: env(), log: (l) => lines.push(l), retry: retry() });
}

/** The key travels only in the Authorization header: never in a URL, a variable or a body. */
function expectKeyOnlyInAuth(): void {
  for (const r of fake.requests) expect(JSON.stringify({ ...r, authorization: undefined })).not.toContain(KEY);
}

beforeEach(async () => {
  fake = new FakeWandb(KEY);
  await fake.start();
  sleeps = [];
  lines = [];
});

afterEach(async () => {
  await fake.stop();
});

describe('W&B replica', () => {
  it('W&B down for a whole run (refused, then 500s, then 429 + Retry-After): after sync the server holds every line once, in order, the summary and every media file', async () => {
    const store = new RunStore(mkdtempSync(join(tmpdir(), 'minidalle-wandb-')), { env: {} });
    const run = await stageRun(store);
    await fake.stop(); // connection refused
    const replica = startWandbReplica({ runsDir: store.root, runId: run.id, tracking: { project: 'proj', entity: 'me', tags: ['t1'] }, env: env(), secrets: store.secrets, log: (l) => lines.push(l), intervalMs: 5, retry: retry() });
    const out = run.output();
    run.defineMetric('loss', { goal: 'minimize', primary: true });
    for (let step = 1; step <= 12; step++) {
      run.log({ loss: 1 / step }, step);
      if (step % 4 === 0) await run.media('samples', png(8, 4, step), step, `grid ${step}`);
      out.line(`step ${step} done`);
      // each outage lasts until the replica has met it (its first pass may come late on a loaded machine)
      if (step === 4) {
        await until('the replica meeting the refused connection', () => lines.some((l) => /ECONNREFUSED/.test(l)));
        await fake.start();
        fake.fault = () => ({ status: 500 });
      }
      if (step === 8) {
        await until('a request answered 500', () => fake.requests.some((r) => r.status === 500));
        fake.fault = () => ({ status: 429, retryAfter: '3' });
      }
      await new Promise((r) => setTimeout(r, 15));
    }
    out.line('a warning', 'stderr');
    out.close();
    run.summary({ final_loss: 1 / 12 });
    await run.flush();
    await run.finish('finished', { exit_code: 0 });
    await replica.stop();
    expect(lines.some((l) => /ECONNREFUSED/.test(l))).toBe(true);
    expect(lines.at(-1)).toMatch(/could not finish streaming run .*HTTP 429.*`minidalle sync/);
    expect(fake.requests.some((r) => r.status === 500)).toBe(true);
    expect(fake.requests.some((r) => r.status === 429)).toBe(true);
    expect(sleeps).toContain(3000); // Retry-After: 3
    expect(fake.runs.get(run.id)?.files['wandb-history.jsonl'] ?? []).toEqual([]);

    fake.fault = undefined;
    const mark = fake.requests.length;
    const [outcome] = await sync(store);
    expect(outcome!.error).toBeUndefined();
    const history = fake.history(run.id);
    expect(history.map((h) => h._step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    expect(history.map((h) => h.loss)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12].map((s) => 1 / s));
    // media and metrics of one step are one W&B row
    expect(history[3]!.samples).toMatchObject({ _type: 'image-file', format: 'png', width: 8, height: 4, caption: 'grid 4', path: expect.stringMatching(/^media\/images\/samples_4_[0-9a-f]{20}\.png$/) });
    const server = fake.run(run.id);
    expect(server.complete).toBe(true);
    expect(server.exitcode).toBe(0);
    expect(server.summary).toMatchObject({ loss: 1 / 12, final_loss: 1 / 12, _step: 12 });
    expect(server.summary!._best).toBeUndefined();
    const media = readdirSync(join(run.dir, 'media', 'images')).filter((f) => !f.startsWith('.'));
    expect(media).toHaveLength(3);
    for (const f of media) expect(server.runFiles.get(`media/images/${f}`)?.equals(readFileSync(join(run.dir, 'media', 'images', f)))).toBe(true);
    for (const f of ['config.yaml', 'wandb-metadata.json', 'output.log', 'wandb-summary.json', 'minidalle-run.json', ...media.map((m) => `media/images/${m}`)]) expect(server.uploaded.has(f), f).toBe(true);
    const log = server.files['output.log']!;
    expect(log).toHaveLength(13);
    expect(log[12]).toMatch(/^\S+ ERROR a warning$/);
    expect(server.config).toMatchObject({ steps: { value: 12 }, lr: { value: 0.001 }, minidalle: { value: { stage: 'train', plugin: 'counter', backend: 'wasm', run_id: run.id } } });
    expect(server).toMatchObject({ group: (await run.read()).group, jobType: 'counter', tags: ['t1'], displayName: 'exp/train' });
    expect(server.files['wandb-events.jsonl']!.length).toBeGreaterThan(0);
    expect(JSON.parse(server.files['wandb-events.jsonl']![0]!)).toMatchObject({ _wandb: true, 'system.compute_backend': 'wasm' });
    expect(fake.violations).toEqual([]);
    // The sync's own request sequence: upsert, the run files, then file_stream (history before it is complete).
    const seq = fake.requests.slice(mark).map((r) => r.op ?? `${r.method} ${r.path.split('/')[1]}`);
    expect(seq[0]).toBe('UpsertBucket');
    expect(seq[1]).toBe('CreateRunFiles');
    expect(seq.filter((s) => s === 'PUT upload')).toHaveLength(8);
    expect(seq.at(-1)).toBe('POST files');
    const last = JSON.parse(fake.requests.at(-1)!.body!) as { complete: boolean; exitcode: number };
    expect(last).toMatchObject({ complete: true, exitcode: 0 });

    // A second sync sends nothing: the state says everything is there.
    const again = fake.requests.length;
    const [second] = await sync(store, [run.id]);
    expect(second!.report!.sent).toEqual({ history: 0, events: 0, output: 0, files: 0 });
    expect(fake.requests.length).toBe(again);
    expectKeyOnlyInAuth();
    for (const f of filesUnder(store.root)) expect(readFileSync(f, 'latin1').includes(KEY), f).toBe(false);
    for (const l of lines) expect(l).not.toContain(KEY);
  });

  it("a run's W&B group is its pipeline, or the sweep it is a member of, so a sweep's members compare as one group", async () => {
    const store = new RunStore(mkdtempSync(join(tmpdir(), 'minidalle-wandb-')), { env: {} });
    const plain = await stageRun(store);
    const member = await stageRun(store);
    await member.update({ meta: { backend: 'wasm', sweep: { id: 'sw123', member: 0, parameters: { 'stages.train.with.lr': 0.001 } } } });
    for (const run of [plain, member]) {
      run.log({ x: 1 }, 1);
      await run.finish('finished', { exit_code: 0 });
    }
    await sync(store, [plain.id, member.id]);
    expect(fake.run(plain.id).group).toBe((await plain.read()).group);
    expect(fake.run(member.id).group).toBe('sweep-sw123');
  });

  it('a flaky W&B (every other request a 500) gets every batch, each line once', async () => {
    const store = new RunStore(mkdtempSync(join(tmpdir(), 'minidalle-wandb-')), { env: {} });
    const run = await stageRun(store);
    let n = 0;
    fake.fault = ({ path }) => (path.includes('file_stream') && n++ % 2 === 0 ? { status: 500 } : undefined);
    const replica = startWandbReplica({ runsDir: store.root, runId: run.id, tracking: { project: 'proj', entity: 'me' }, env: env(), secrets: store.secrets, log: (l) => lines.push(l), intervalMs: 2, retry: retry() });
    for (let step = 0; step < 40; step++) {
      run.log({ x: step }, step);
      if (step % 10 === 0) await new Promise((r) => setTimeout(r, 20));
    }
    await run.finish('finished', { exit_code: 0 });
    await replica.stop();
    expect(fake.history(run.id).map((h) => h.x)).toEqual([...Array(40).keys()]);
    expect(fake.run(run.id).complete).toBe(true);
    expect(sleeps.length).toBeGreaterThan(0);
    // Every file_stream sent history at the offset where the previous acknowledged one ended.
    let expected = 0;
    for (const r of fake.requests.filter((x) => x.path.endsWith('file_stream'))) {
      const h = (JSON.parse(r.body!) as { files?: Record<string, { offset: number; content: string[] }> }).files?.['wandb-history.jsonl'];
      if (!h) continue;
      expect(h.offset).toBe(expected);
      if (r.status === 200) expected += h.content.length;
    }
    expect(fake.violations).toEqual([]);
  });

  it('a resumed run keeps the W&B run: the ancestor is flushed first, then one continuous history with no duplicate _step', async () => {
    const store = new RunStore(mkdtempSync(join(tmpdir(), 'minidalle-wandb-')), { env: {} });
    const first = await stageRun(store);
    // Live passes as the orchestrator makes them (the newest step is held back until a later one exists).
    const live = new RunReplayer({ runsDir: store.root, runId: first.id, client: new WandbClient({ baseUrl: fake.url, apiKey: KEY, entity: 'me', project: 'proj', retry: retry() }), destination: { baseUrl: fake.url, entity: 'me', project: 'proj', tags: [] }, secrets: [], warn: (l) => lines.push(l) });
    for (let step = 1; step <= 5; step++) {
      run_log(first, step);
      await live.step({ final: false, complete: false });
    }
    // The orchestrator dies here: no more passes, no final flush; its worker still logs 6 and 7 before it notices.
    run_log(first, 6);
    run_log(first, 7);
    await first.finish('crashed', { error: 'worker exited with signal SIGKILL' });
    const sentBefore = fake.history(first.id).length;
    expect(sentBefore).toBe(4);

    // The resumed run restarts from the checkpoint at step 5: it logs 6 and 7 again, then goes on.
    const second = await stageRun(store, first.id);
    for (let step = 6; step <= 10; step++) run_log(second, step);
    await second.finish('finished', { exit_code: 0 });
    const outcomes = await sync(store, [second.id]);
    expect(outcomes.map((o) => o.error)).toEqual([undefined]);
    expect([...fake.runs.keys()]).toEqual([first.id]);
    const history = fake.history(first.id);
    expect(history.map((h) => h._step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    const runtimes = history.map((h) => h._runtime as number);
    expect([...runtimes].sort((a, b) => a - b)).toEqual(runtimes);
    expect((await readState(second.dir))!.wandb_run_id).toBe(first.id);
    expect((await readState(first.dir))!.sealed_by).toBe(second.id);
    expect(fake.run(first.id).complete).toBe(true);
    expect(fake.requests.some((r) => r.op === 'RunResumeStatus')).toBe(true);
    expect(fake.violations).toEqual([]);
    // Syncing the ancestor now sends nothing more into the W&B run its successor continues.
    const n = fake.requests.length;
    const [again] = await sync(store, [first.id]);
    expect(again!.report!.sealedBy).toBe(second.id);
    expect(fake.requests.length).toBe(n);
  });

  it('offline and disabled modes send nothing; sync refuses without a key, naming what to do', async () => {
    const store = new RunStore(mkdtempSync(join(tmpdir(), 'minidalle-wandb-')), { env: {} });
    const run = await stageRun(store);
    const offline = startWandbReplica({ runsDir: store.root, runId: run.id, tracking: { project: 'proj', entity: 'me' }, env: { ...env(), WANDB_MODE: 'offline' }, secrets: [], log: (l) => lines.push(l), intervalMs: 2 });
    run_log(run, 1);
    await run.finish('finished', { exit_code: 0 });
    await offline.stop();
    expect(fake.requests).toEqual([]);
    expect(lines.join('\n')).toContain(`WANDB_MODE=offline: recorded locally; \`minidalle sync ${run.id}\` sends it`);
    expect((await readState(run.dir))!).toMatchObject({ project: 'proj', entity: 'me', wandb_run_id: run.id, complete: false });
    const disabled = startWandbReplica({ runsDir: store.root, runId: run.id, tracking: { project: 'proj' }, env: { ...env(), WANDB_MODE: 'disabled' }, secrets: [], log: (l) => lines.push(l) });
    await disabled.stop();
    expect(fake.requests).toEqual([]);
    await expect(syncRuns({ runsDir: store.root, runs: [], env: { WANDB_BASE_URL: fake.url }, log: () => undefined })).rejects.toThrow(/WANDB_API_KEY is not set/);
    await expect(syncRuns({ runsDir: store.root, runs: [], env: { ...env(), WANDB_MODE: 'offline' }, log: () => undefined })).rejects.toThrow(/WANDB_MODE=offline: nothing is sent/);
    const [done] = await sync(store);
    expect(done!.report!.complete).toBe(true);
    expect(fake.history(run.id)).toHaveLength(1);
  });

  it('a history rewritten in place (a retry drops the steps after its checkpoint) is read again without sending a step twice', async () => {
    const store = new RunStore(mkdtempSync(join(tmpdir(), 'minidalle-wandb-')), { env: {} });
    const run = await stageRun(store);
    const live = new RunReplayer({ runsDir: store.root, runId: run.id, client: new WandbClient({ baseUrl: fake.url, apiKey: KEY, entity: 'me', project: 'proj', retry: retry() }), destination: { baseUrl: fake.url, entity: 'me', project: 'proj', tags: [] }, secrets: [], warn: (l) => lines.push(l) });
    for (let step = 1; step <= 6; step++) run_log(run, step);
    await live.step({ final: false, complete: false });
    expect(fake.history(run.id).map((h) => h._step)).toEqual([1, 2, 3, 4, 5]);
    // The retry keeps steps up to its checkpoint (4) in a new file, then logs 5… again.
    const file = join(run.dir, 'history.jsonl');
    const kept = readFileSync(file, 'utf8').split('\n').filter((l) => l && (JSON.parse(l) as { _step: number })._step <= 4);
    writeFileSync(`${file}.tmp`, kept.map((l) => `${l}\n`).join(''));
    renameSync(`${file}.tmp`, file);
    for (let step = 5; step <= 8; step++) run_log(run, step);
    await run.finish('finished', { exit_code: 0 });
    await live.step({ final: true, complete: true });
    expect(fake.history(run.id).map((h) => h._step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(fake.violations).toEqual([]);
  });

  it('W&B tables are uploaded, and the key is scrubbed from whatever a stage wrote before it is sent', async () => {
    const store = new RunStore(mkdtempSync(join(tmpdir(), 'minidalle-wandb-')), { env: {} });
    const run = await stageRun(store);
    mkdirSync(join(run.dir, 'media', 'table'), { recursive: true });
    writeFileSync(join(run.dir, 'media', 'table', 'preds_3_0123456789abcdef0123.table.json'), JSON.stringify({ columns: ['caption', 'score'], data: [['a red circle', 0.9]] }));
    writeFileSync(join(run.dir, 'eval.table.json'), JSON.stringify({ columns: ['x'], data: [[1]] }));
    run_log(run, 1);
    run.summary({ note: `echoed ${KEY}` });
    await run.flush();
    const out = run.output();
    out.line(`the key is ${KEY}`);
    out.close();
    await run.finish('finished', { exit_code: 0 });
    await sync(store, [run.id]);
    const server = fake.run(run.id);
    expect(server.uploaded.has('media/table/preds_3_0123456789abcdef0123.table.json')).toBe(true);
    expect(server.uploaded.has('eval.table.json')).toBe(true);
    expect(server.summary!.note).toBe('echoed <redacted>');
    expect(server.files['output.log']![0]).toMatch(/ the key is <redacted>$/);
    expect(server.runFiles.get('output.log')!.toString('utf8')).not.toContain(KEY);
    expectKeyOnlyInAuth();
  });

  it("without an entity, sync asks W&B for the key's default entity and records it", async () => {
    const store = new RunStore(mkdtempSync(join(tmpdir(), 'minidalle-wandb-')), { env: {} });
    const pipeline = await store.create({ name: 'exp', kind: 'pipeline' }, { name: 'exp', tracking: { tags: [], wandb: { project: 'proj' } }, stages: {} });
    const run = await store.create({ name: 'exp/a', kind: 'stage', stage: 'a', plugin: 'counter', group: pipeline.id }, { with: {} });
    run_log(run, 1);
    await run.finish('finished', { exit_code: 0 });
    const [o] = await sync(store);
    expect(o!.report!.url).toBe(`${fake.url}/me/proj/runs/${run.id}`);
    expect(fake.requests[0]!.op).toBe('Viewer');
    expect((await readState(run.dir))!.entity).toBe('me');
    expect(fake.run(run.id).entity).toBe('me');
  });

  it('a wrong key is a clear error that never shows the key', async () => {
    const store = new RunStore(mkdtempSync(join(tmpdir(), 'minidalle-wandb-')), { env: {} });
    const run = await stageRun(store);
    await run.finish('finished', { exit_code: 0 });
    const wrong = `${KEY}-not-this-one`;
    const out: string[] = [];
    const [o] = await syncRuns({ runsDir: store.root, runs: [run.id], env: { WANDB_API_KEY: wrong, WANDB_BASE_URL: fake.url }, log: (l) => out.push(l) });
    expect(o!.error).toMatch(/HTTP 401 \(check WANDB_API_KEY/);
    expect(out.join('\n')).not.toContain(wrong);
    expect(out.join('\n')).not.toContain(Buffer.from(`api:${wrong}`).toString('base64'));
  });
});

function run_log(run: RunHandle, step: number): void {
  run.log({ loss: 1 / step }, step);
}
