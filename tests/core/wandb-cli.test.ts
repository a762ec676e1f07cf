import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { CLI, filesUnder, project, runRecords, sleep, start, until } from '../support/cli.js';
import { FakeWandb } from '../support/fake-wandb.js';

const KEY = 'wandb-cli-key-a1b2c3d4e5f60718293a4b5c6d7e8f90';
let fake: FakeWandb;

/** The CLI without blocking this process (the fake W&B lives in it and must keep answering). */
function cli(cwd: string, args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { cwd, env: { ...process.env, CI: '1', WANDB_API_KEY: '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => child.once('close', (code) => resolve({ code, stdout, stderr })));
}

const EXPERIMENT = `name: count
tracking:
  tags: [smoke]
  wandb: { project: proj, entity: me }
stages:
  a:
    plugin: counter
    with: { steps: 30, delay_ms: 60 }
`;

beforeEach(async () => {
  fake = new FakeWandb(KEY);
  await fake.start();
});

afterEach(async () => {
  await fake.stop();
});

describe('minidalle run with tracking.wandb, and minidalle sync', () => {
  it('SIGKILL of the orchestrator while it streams, then a resumed run: one continuous W&B history, no duplicate _step, the same W&B id', async () => {
    const dir = project({ 'e.yaml': EXPERIMENT });
    const env = { WANDB_API_KEY: KEY, WANDB_BASE_URL: fake.url, MINIDALLE_WANDB_INTERVAL_MS: '50', MINIDALLE_WANDB_BACKOFF_MS: '10' };
    const first = start(dir, ['run', 'e.yaml'], { env });
    await until('W&B has a few history rows', () => [...fake.runs.values()].some((r) => (r.files['wandb-history.jsonl']?.length ?? 0) >= 4));
    first.child.kill('SIGKILL');
    await first.exited;
    await sleep(1500); // its worker notices that stdin closed and stops
    const crashed = runRecords(dir).find((r) => r.kind === 'stage') as { id: string };
    expect([...fake.runs.keys()]).toEqual([crashed.id]);
    expect(fake.run(crashed.id).complete).toBe(false);

    const again = await cli(dir, ['run', 'e.yaml'], env);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain(`resuming from run ${crashed.id}`);
    expect(again.stdout).toMatch(/W&B: synced http:\/\/127\.0\.0\.1:\d+\/me\/proj\/runs\//);
    const resumed = runRecords(dir).find((r) => r.kind === 'stage' && r.resumed_from === crashed.id)!;
    expect(resumed).toBeDefined();
    // One W&B run, under the first run's id, with every step once and in order.
    expect([...fake.runs.keys()]).toEqual([crashed.id]);
    const steps = fake.history(crashed.id).map((h) => h._step);
    expect(steps).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
    const server = fake.run(crashed.id);
    expect(server).toMatchObject({ complete: true, exitcode: 0, jobType: 'counter', tags: ['smoke'], group: resumed.group });
    expect(server.summary).toMatchObject({ final_step: 30, value: 300 });
    expect(fake.violations).toEqual([]);

    // ls and show print the W&B run; show of the pipeline its group.
    const ls = await cli(dir, ['ls']);
    expect(ls.stdout).toContain(`/me/proj/runs/${crashed.id}`);
    expect(ls.stdout).toContain(`/me/proj/groups/${resumed.group}`);
    expect((await cli(dir, ['show', resumed.id as string])).stdout).toMatch(new RegExp(`W&B http://127\\.0\\.0\\.1:\\d+/me/proj/runs/${crashed.id}\\n`));
    expect((await cli(dir, ['show', resumed.group as string])).stdout).toContain(`W&B group ${fake.url}/me/proj/groups/${resumed.group}`);
    expect((await cli(dir, ['compare', crashed.id as string, resumed.id as string])).stdout).toContain(`${resumed.id}: ${fake.url}/me/proj/runs/${crashed.id}`);

    // Nothing is left to send; sync says so and sends nothing.
    const n = fake.requests.length;
    const sync = await cli(dir, ['sync'], env);
    expect(sync.code).toBe(0);
    expect(sync.stdout).toContain('nothing to sync');
    expect(fake.requests.length).toBe(n);

    // The key is in no run file and no output.
    for (const f of filesUnder(join(dir, 'runs'))) expect(readFileSync(f, 'latin1').includes(KEY), f).toBe(false);
    for (const text of [again.stdout, again.stderr, ls.stdout, sync.stdout, sync.stderr]) expect(text).not.toContain(KEY);
  }, 60_000);

  it('WANDB_MODE=offline records locally; sync later sends the run, and a bad key is an error without the key', async () => {
    const dir = project({ 'e.yaml': EXPERIMENT.replace('steps: 30, delay_ms: 60', 'steps: 3, delay_ms: 0') });
    const run = await cli(dir, ['run', 'e.yaml'], { WANDB_API_KEY: KEY, WANDB_BASE_URL: fake.url, WANDB_MODE: 'offline' });
    expect(run.code, run.stdout + run.stderr).toBe(0);
    expect(run.stdout).toContain('WANDB_MODE=offline: recorded locally');
    expect(fake.requests).toEqual([]);
    const stage = runRecords(dir).find((r) => r.kind === 'stage')!;
    expect((await cli(dir, ['show', stage.id as string])).stdout).toContain(`W&B not synced yet (minidalle sync ${stage.id})`);

    const bad = await cli(dir, ['sync'], { WANDB_API_KEY: `${KEY}x`, WANDB_BASE_URL: fake.url });
    expect(bad.code).toBe(1);
    expect(bad.stdout).toMatch(/not synced: .*HTTP 401/);
    expect(bad.stdout + bad.stderr).not.toContain(KEY);

    const ok = await cli(dir, ['sync'], { WANDB_API_KEY: KEY, WANDB_BASE_URL: fake.url });
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/sent 3 history rows, \d+ system samples, \d+ log lines, \d+ files \(complete\)/);
    expect(fake.history(stage.id as string).map((h) => h._step)).toEqual([1, 2, 3]);
  }, 60_000);
});
