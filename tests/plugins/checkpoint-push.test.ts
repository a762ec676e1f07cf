import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { cli, FIXTURE_PLUGINS, filesUnder, project, runRecords, start } from '../support/cli.js';
import { FakeHub } from '../support/fake-hub.js';
import { FakeWandb } from '../support/fake-wandb.js';

const FIXTURES = fileURLToPath(new URL('./fixtures/checkpoint-push-plugins.mjs', import.meta.url));
const HF_TOKEN = `hf_${randomBytes(16).toString('hex')}`;
const WANDB_KEY = `wandb-${randomBytes(20).toString('hex')}`;

const hookCalls = (file: string) => readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);

/** A project whose plugins are the shared test plugins and this file's model-steps / model-reader. */
function pushProject(files: Record<string, string>): string {
  const dir = project(files);
  writeFileSync(join(dir, 'minidalle.config.json'), JSON.stringify({ runs_dir: 'runs', plugins: [FIXTURE_PLUGINS, FIXTURES] }));
  return dir;
}

/** The model-steps plugin's deterministic weights (same generator as the fixture). */
async function weights(step: number, size?: number): Promise<Buffer> {
  const mod = (await import(FIXTURES)) as { weights: (s: number, n?: number) => Buffer };
  return mod.weights(step, size);
}

/** Every file of the project's runs and the CLI's output, checked for both secrets. */
function expectNoSecrets(dir: string, output: string): void {
  for (const secret of [HF_TOKEN, WANDB_KEY]) {
    expect(output).not.toContain(secret);
    for (const f of filesUnder(join(dir, 'runs'))) expect(readFileSync(f).includes(secret), f).toBe(false);
  }
}

describe('checkpoint-push against a local Hub and W&B', () => {
  let hub: FakeHub;
  let wandb: FakeWandb;
  let env: Record<string, string>;
  beforeAll(async () => {
    hub = await FakeHub.start({ token: HF_TOKEN });
    wandb = new FakeWandb(WANDB_KEY);
    await wandb.start();
    env = {
      HF_TOKEN,
      HF_ENDPOINT: hub.url,
      WANDB_API_KEY: WANDB_KEY,
      WANDB_BASE_URL: wandb.url,
      MINIDALLE_CACHE: mkdtempSync(join(tmpdir(), 'minidalle-cache-')),
    };
  });
  afterAll(async () => {
    await hub.close();
    await wandb.stop();
  });

  it('as a stage: pushes the model folder of its need to the Hub (one commit, model card) and W&B; hf: and wandb: refs pull it back', async () => {
    const dir = pushProject({
      'e.yaml': `name: cp
tracking: { wandb: { entity: me, project: proj } }
stages:
  train: { plugin: model-steps, with: { steps: 3 } }
  push:
    plugin: checkpoint-push
    needs: [train]
    with: { hub: me/shapes, wandb: true }
`,
    });
    const r = await start(dir, ['run', 'e.yaml'], { env }).exited;
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const train = runRecords(dir).find((x) => x.stage === 'train')!;
    const push = runRecords(dir).find((x) => x.stage === 'push')!;
    const model = join(dir, 'runs', String(train.id), 'out', 'model');

    // The Hub: one commit (after the repo's initial one) naming the run and step, the folder + README.md.
    const [head, ...older] = hub.log('me/shapes');
    expect(older.map((c) => c.title)).toEqual(['initial commit']);
    expect(head!.title).toBe(`minidalle: cp/train run ${train.id}, step 3`);
    // The VQGAN the folder names (vqgan.json) travels along as vqgan/, so the pushed model loads anywhere.
    const folder = ['config.json', 'model.safetensors', 'tokenizer.json', 'vqgan.json'];
    expect(head!.paths).toEqual(['.gitattributes', 'README.md', ...folder, 'vqgan/config.json', 'vqgan/model.safetensors']);
    for (const f of folder) expect(hub.file('me/shapes', f)!.bytes.equals(readFileSync(join(model, f))), f).toBe(true);
    expect(hub.file('me/shapes', 'vqgan/model.safetensors')!.bytes.equals(await weights(777, 3000))).toBe(true);
    expect(hub.file('me/shapes', 'model.safetensors')!.lfs).toBe(true);
    const card = hub.file('me/shapes', 'README.md')!.bytes.toString();
    expect(card).toContain('library_name: minidalle');
    expect(card).toContain(`experiment \`cp\`, run \`${train.id}\` at step 3`);
    expect(card).toMatch(/\| loss \| 0\.33333 \| 0\.33333 \(3\) — key metric \|/);
    expect(card).toContain('plugin `model-steps`');

    // W&B: model-<runid> with every file of the folder, aliases latest + step-3.
    const art = wandb.artifacts.find((a) => a.collection === `model-${train.id}`)!;
    expect(art).toMatchObject({ type: 'model', state: 'COMMITTED', runName: train.id });
    expect(art.aliases.sort()).toEqual(['latest', 'step-3']);
    expect([...art.files.keys()].sort()).toEqual([...folder, 'vqgan/config.json', 'vqgan/model.safetensors']);
    expect(art.files.get('model.safetensors')!.equals(await weights(3))).toBe(true);
    // The W&B run is the one the live replica streamed (tracking.wandb), and its sync state records the artifact.
    expect(wandb.run(String(train.id)).project).toBe('proj');
    const sync = JSON.parse(readFileSync(join(dir, 'runs', String(train.id), 'sync', 'wandb.json'), 'utf8'));
    expect(Object.keys(sync.artifacts)).toEqual([`model-${train.id}:v0`]);

    const pushed = JSON.parse(readFileSync(join(dir, 'runs', String(push.id), 'out', 'pushed.json'), 'utf8'));
    expect(pushed).toMatchObject({ step: 3, hub: { repo: 'me/shapes', commit: head!.oid, files: 7 }, wandb: [{ name: `model-${train.id}`, version: 'v0' }] });
    expect(hub.requests.filter((q) => !q.path.startsWith('/lfs-')).every((q) => q.auth === 'valid')).toBe(true);

    // Refs: a stage's modelPath field takes hf: and wandb: references; the worker pulls them into the cache.
    writeFileSync(
      join(dir, 'refs.yaml'),
      `name: refs
stages:
  from_hub: { plugin: model-reader, with: { init: "hf:me/shapes@main" } }
  from_wandb: { plugin: model-reader, with: { init: "wandb:me/proj/model-${train.id}:latest" } }
`,
    );
    const rr = await start(dir, ['run', 'refs.yaml'], { env }).exited;
    expect(rr.code, rr.stdout + rr.stderr).toBe(0);
    const want = (await import('node:crypto')).createHash('sha256').update(await weights(3)).digest('hex');
    for (const stage of ['from_hub', 'from_wandb']) {
      const run = runRecords(dir).find((x) => x.stage === stage)!;
      const seen = JSON.parse(readFileSync(join(dir, 'runs', String(run.id), 'out', 'seen.json'), 'utf8'));
      expect(seen.sha256, stage).toBe(want);
      expect(seen.init.startsWith(env.MINIDALLE_CACHE!), seen.init).toBe(true);
      // The run's config keeps the reference; run.json says what it resolved to.
      const config = parseYaml(readFileSync(join(dir, 'runs', String(run.id), 'config.yaml'), 'utf8'));
      expect(config.with.init).toMatch(stage === 'from_hub' ? /^hf:me\/shapes@main$/ : /^wandb:me\/proj\/model-/);
      expect((run.meta as { model_refs: Record<string, { dir: string; version: string }> }).model_refs.init.dir).toBe(seen.init);
    }
    expect((runRecords(dir).find((x) => x.stage === 'from_hub')!.meta as { model_refs: { init: { version: string } } }).model_refs.init.version).toBe(head!.oid);
    expectNoSecrets(dir, r.stdout + r.stderr + rr.stdout + rr.stderr);
  });

  it('as an observer: pushes every Nth checkpoint of a running stage (model part to the Hub, model-/state- artifacts to W&B)', async () => {
    const dir = pushProject({
      'e.yaml': `name: obs
stages:
  train: { plugin: model-steps, with: { steps: 5 } }
observers:
  - plugin: checkpoint-push
    stages: [train]
    with: { hub: me/ckpts, every: 2, wandb: true }
`,
    });
    const r = await start(dir, ['run', 'e.yaml'], { env: { ...env, WANDB_ENTITY: 'me', WANDB_PROJECT: 'obs' } }).exited;
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const train = runRecords(dir).find((x) => x.stage === 'train')!;
    const log = hub.log('me/ckpts');
    expect(log.map((c) => c.title)).toEqual([`minidalle: checkpoint of obs/train run ${train.id}, step 4`, `minidalle: checkpoint of obs/train run ${train.id}, step 2`, 'initial commit']);
    expect(log[0]!.paths).toEqual(['.gitattributes', 'README.md', 'config.json', 'model.safetensors']); // no optimizer or train state on the Hub
    expect(hub.file('me/ckpts', 'model.safetensors', log[1]!.oid)!.bytes.equals(await weights(2))).toBe(true);
    expect(hub.file('me/ckpts', 'model.safetensors')!.bytes.equals(await weights(4))).toBe(true);
    expect(hub.file('me/ckpts', 'README.md')!.bytes.toString()).toContain('a checkpoint (step 4) of the running `train` stage');

    const versions = (name: string) => wandb.artifacts.filter((a) => a.collection === name).map((a) => [a.versionIndex, [...a.aliases].sort(), [...a.files.keys()].sort()]);
    expect(versions(`model-${train.id}`)).toEqual([
      [0, ['step-2'], ['config.json', 'model.safetensors']],
      [1, ['latest', 'step-4'], ['config.json', 'model.safetensors']],
    ]);
    expect(versions(`state-${train.id}`)).toEqual([
      [0, ['step-2'], ['optimizer.model.safetensors', 'train_state.json']],
      [1, ['latest', 'step-4'], ['optimizer.model.safetensors', 'train_state.json']],
    ]);
    const state = wandb.artifacts.find((a) => a.collection === `state-${train.id}` && a.versionIndex === 1)!;
    expect(JSON.parse(state.metadata!)).toEqual({ step: 4, epoch: 0, samples: 32 });
    const out = readFileSync(join(dir, 'runs', String(train.id), 'output.log'), 'utf8');
    expect(out).toMatch(/checkpoint-push: checkpoint step-2 of run \S+ → hf:me\/ckpts@[0-9a-f]{12} \(3 files\), W&B model-\S+:v0, W&B state-\S+:v0/);
    expectNoSecrets(dir, r.stdout + r.stderr);
  });

  it('a wrong token fails the push with an actionable message that never contains the token', async () => {
    const wrong = `hf_${randomBytes(16).toString('hex')}`;
    const dir = pushProject({
      'e.yaml': `name: bad
stages:
  train: { plugin: model-steps, with: { steps: 1 } }
  push: { plugin: checkpoint-push, needs: [train], with: { hub: me/denied } }
observers:
  - { plugin: checkpoint-push, with: { hub: me/denied-ckpt } }
`,
    });
    hub.echoAuthorization = true; // the server quotes the header it got in its error body, as a careless proxy might
    const r = await start(dir, ['run', 'e.yaml'], { env: { ...env, HF_TOKEN: wrong } }).exited;
    hub.echoAuthorization = false;
    expect(r.code).toBe(1);
    const push = runRecords(dir).find((x) => x.stage === 'push')!;
    expect(push.error).toMatch(/cannot create Hub repo me\/denied at http:\/\/127\.0\.0\.1:\d+: .*check HF_TOKEN/);
    expect(push.error).toContain('<redacted>'); // the echoed token was scrubbed, not just absent
    expect(hub.hasRepo('me/denied')).toBe(false);
    // The observer's failed push is a warning in the observed run's log, and the stage finished anyway.
    const train = runRecords(dir).find((x) => x.stage === 'train')!;
    expect(train.status).toBe('finished');
    expect(readFileSync(join(dir, 'runs', String(train.id), 'output.log'), 'utf8')).toMatch(/hook checkpoint failed: cannot create Hub repo me\/denied-ckpt/);
    for (const secret of [wrong, HF_TOKEN]) {
      expect(r.stdout + r.stderr).not.toContain(secret);
      for (const f of filesUnder(join(dir, 'runs'))) expect(readFileSync(f).includes(secret), f).toBe(false);
    }
  });

  it('a missing W&B key fails the stage before anything is pushed to the Hub', async () => {
    const dir = pushProject({
      'e.yaml': 'name: nokey\nstages:\n  train: { plugin: model-steps, with: { steps: 1 } }\n  push: { plugin: checkpoint-push, needs: [train], with: { hub: me/half, wandb: { entity: me, project: p } } }\n',
    });
    const r = await start(dir, ['run', 'e.yaml'], { env: { ...env, WANDB_API_KEY: '' } }).exited;
    expect(r.code).toBe(1);
    expect(runRecords(dir).find((x) => x.stage === 'push')!.error).toBe('checkpoint-push: pushing to W&B needs WANDB_API_KEY in the environment');
    expect(hub.hasRepo('me/half')).toBe(false);
  });

  it('refuses a config with nowhere to push, with file:line', () => {
    const dir = pushProject({ 'e.yaml': 'name: v\nstages:\n  train: { plugin: model-steps }\n  push: { plugin: checkpoint-push, needs: [train], with: { hub: not-a-repo } }\n' });
    const r = cli(dir, ['validate', 'e.yaml']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/e\.yaml:4:\d+: stages\.push\.with\.hub: expected a Hub model repo <owner>\/<name>/);
    const none = pushProject({ 'e.yaml': 'name: v\nstages:\n  push: { plugin: checkpoint-push }\n' });
    expect(cli(none, ['validate', 'e.yaml']).stderr).toMatch(/stages\.push\.with\.hub: nowhere to push/);
    const badRef = pushProject({ 'e.yaml': 'name: v\nstages:\n  r: { plugin: model-reader, with: { init: "hf:just-a-name" } }\n' });
    expect(cli(badRef, ['validate', 'e.yaml']).stderr).toMatch(/e\.yaml:3:\d+: stages\.r\.with\.init: 'hf:just-a-name' is not a Hub reference: expected hf:<owner>\/<repo>/);
    expect(existsSync(join(dir, 'runs'))).toBe(false);
  });
});

describe('experiment-level observers', () => {
  it('calls runEnd when the observed stage fails, with the error, and watches only the stages it names', () => {
    const dir = project({
      'e.yaml': `name: obs
stages:
  bad: { plugin: counter, with: { steps: 3, fail_at: 2 } }
  good: { plugin: counter, with: { steps: 1 } }
observers:
  - { plugin: observer, stages: [bad] }
`,
    });
    const hooks = join(dir, 'hooks.jsonl');
    const r = cli(dir, ['run', 'e.yaml'], { MINIDALLE_TEST_HOOKS: hooks });
    expect(r.code).toBe(1);
    const bad = runRecords(dir).find((x) => x.stage === 'bad')!;
    const calls = hookCalls(hooks);
    expect(calls.every((c) => c.runId === bad.id)).toBe(true); // 'good' is not watched
    expect(calls.map((c) => `${c.hook}${c.step ?? ''}`)).toEqual(['runStart', 'metrics1', 'checkpoint1', 'runEnd']);
    expect(calls.at(-1)).toMatchObject({ status: 'failed', error: 'failing at step 2 as configured', artifacts: {} });
  });

  it('validates observers like stages: unknown plugin, plugin without hooks, unknown stage, bad with: — each with file:line', () => {
    const dir = project({
      'e.yaml': `name: obs
stages:
  a: { plugin: counter }
observers:
  - { plugin: observr }
  - { plugin: counter }
  - plugin: observer
    stages: [b]
    with: { nope: 1 }
`,
    });
    const r = cli(dir, ['validate', 'e.yaml']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/e\.yaml:5:\d+: observers\[0\]\.plugin: unknown plugin 'observr' — did you mean 'observer'\?/);
    expect(r.stderr).toMatch(/e\.yaml:6:\d+: observers\[1\]\.plugin: plugin 'counter' has no observer hooks/);
    expect(r.stderr).toMatch(/e\.yaml:8:\d+: observers\[2\]\.stages\[0\]: unknown stage 'b'/);
    expect(r.stderr).toMatch(/e\.yaml:9:\d+: observers\[2\]\.with\.nope: unknown key 'nope'/);
  });
});
