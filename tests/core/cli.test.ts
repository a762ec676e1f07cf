import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CLI = join(ROOT, 'bin/minidalle.js');
const FIXTURE_PLUGINS = join(ROOT, 'tests/fixtures/plugins/steps.mjs');

function project(files: Record<string, string> = {}): string {
  const dir = mkdtempSync(join(tmpdir(), 'minidalle-cli-'));
  writeFileSync(join(dir, 'minidalle.config.json'), JSON.stringify({ runs_dir: 'runs', plugins: [FIXTURE_PLUGINS] }));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return dir;
}

function cli(cwd: string, args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd, encoding: 'utf8', env: { ...process.env, CI: '1', ...env }, timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function runRecords(dir: string): Record<string, unknown>[] {
  const runs = join(dir, 'runs');
  return readdirSync(runs)
    .filter((id) => existsSync(join(runs, id, 'run.json')))
    .map((id) => JSON.parse(readFileSync(join(runs, id, 'run.json'), 'utf8')) as Record<string, unknown>);
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' }).map((f) => join(dir, f)).filter((f) => statSync(f).isFile());
}

const COUNTER = (steps: number, delay = 0) => `name: count
stages:
  a:
    plugin: counter
    with: { steps: ${steps}, delay_ms: ${delay} }
`;

describe('minidalle CLI', () => {
  it('runs the shapes-data experiment: run layout, dataset size, ls/show, reuse and --rerun', () => {
    const dir = project();
    const exp = join(ROOT, 'experiments/shapes-data.yaml');
    const first = cli(dir, ['run', exp, 'stages.data.with.count=60', 'stages.data.with.heldout_count=12', 'stages.data.with.samples_per_shard=25']);
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    const stage = runRecords(dir).find((r) => r.kind === 'stage')!;
    const runDir = join(dir, 'runs', stage.id as string);
    for (const f of ['run.json', 'config.yaml', 'summary.json', 'output.log', 'out']) expect(existsSync(join(runDir, f)), f).toBe(true);
    expect(stage).toMatchObject({ status: 'finished', stage: 'data', plugin: 'shapes-data' });
    const summary = JSON.parse(readFileSync(join(runDir, 'summary.json'), 'utf8'));
    expect(summary).toMatchObject({ train_count: 60, heldout_count: 12, train_shards: 3 });
    const tars = readdirSync(join(runDir, 'out/train'));
    expect(tars).toEqual(['train-00000.tar', 'train-00001.tar', 'train-00002.tar']);

    const ls = cli(dir, ['ls']);
    expect(ls.code).toBe(0);
    expect(ls.stdout).toContain(stage.id as string);
    expect(ls.stdout).toMatch(/shapes-data\/data\s+data\s+finished/);
    const show = cli(dir, ['show', (stage.id as string).slice(0, 9)]);
    expect(show.stdout).toContain('train_count: 60');
    expect(show.stdout).toContain('count: 60');

    const again = cli(dir, ['run', exp, 'stages.data.with.count=60', 'stages.data.with.heldout_count=12', 'stages.data.with.samples_per_shard=25']);
    expect(again.stdout).toContain(`data: reusing run ${stage.id}`);
    const rerun = cli(dir, ['run', exp, '--rerun', '--', 'stages.data.with.count=60', 'stages.data.with.heldout_count=12', 'stages.data.with.samples_per_shard=25']);
    expect(rerun.code).toBe(0);
    expect(runRecords(dir).filter((r) => r.kind === 'stage')).toHaveLength(2);
  });

  it('validate prints the plan, and refuses a broken file with file:line and a non-zero exit', () => {
    const dir = project({ 'good.yaml': COUNTER(3), 'bad.yaml': 'name: b\nstages:\n  a:\n    plugin: countr\n' });
    const ok = cli(dir, ['validate', 'good.yaml', 'stages.a.with.steps=4']);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/1\. a\s+plugin counter\s+host local/);
    expect(ok.stdout).toContain('steps: 4');
    const bad = cli(dir, ['validate', 'bad.yaml']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("bad.yaml:4:5: stages.a.plugin: unknown plugin 'countr' — did you mean 'counter'?");
    expect(existsSync(join(dir, 'runs'))).toBe(false);
  });

  it('plugins lists built-in and package plugins with their config fields', () => {
    const r = cli(project(), ['plugins']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/shapes-data — .*\[built-in plugin plugins\/shapes-data\]/);
    expect(r.stdout).toMatch(/count: integer = 4000/);
    expect(r.stdout).toMatch(/counter — .*steps\.mjs/s);
  });

  it('never writes a secret from the environment or the config into the run store', () => {
    const secret = 'hf_Sup3rSecretValue42';
    const dir = project({
      'e.yaml': 'name: s\nstages:\n  leak:\n    plugin: echo-secret\n    with: { token: "${env:HF_TOKEN}", upstream: "${env:HF_TOKEN}" }\n',
    });
    const r = cli(dir, ['run', 'e.yaml'], { HF_TOKEN: secret });
    expect(r.code).toBe(1);
    expect(r.stdout + r.stderr).not.toContain(secret);
    expect(r.stdout).toContain('failing with <redacted>');
    const files = filesUnder(join(dir, 'runs'));
    expect(files.some((f) => f.endsWith('output.log'))).toBe(true);
    for (const f of files) {
      if (f.endsWith('upstream.txt')) continue; // the plugin's own output file: what a plugin writes is its business
      expect(readFileSync(f, 'utf8'), f).not.toContain(secret);
    }
  });

  it('a failed stage skips its dependants and leaves independent stages running', () => {
    const dir = project({
      'e.yaml': `name: f
stages:
  bad: { plugin: counter, with: { steps: 3, fail_at: 2 } }
  after: { plugin: counter, needs: [bad] }
  other: { plugin: counter, with: { steps: 2 } }
`,
    });
    const r = cli(dir, ['run', 'e.yaml']);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/bad=failed after=skipped other=finished/);
    const bad = runRecords(dir).find((x) => x.stage === 'bad')!;
    expect(bad.error).toBe('failing at step 2 as configured');
  });

  async function interrupted(signal: 'SIGTERM' | 'SIGKILL') {
    const dir = project({ 'e.yaml': COUNTER(30, 100) });
    const child = spawn(process.execPath, [CLI, 'run', 'e.yaml'], { cwd: dir, env: { ...process.env, CI: '1' }, stdio: 'ignore' });
    const runs = join(dir, 'runs');
    // Wait until the stage has written a few checkpoints.
    for (let i = 0; i < 400; i++) {
      await new Promise((r) => setTimeout(r, 50));
      const stage = existsSync(runs) ? runRecords(dir).find((r) => r.kind === 'stage') : undefined;
      if (stage && existsSync(join(runs, stage.id as string, 'checkpoints/step-3'))) break;
    }
    child.kill(signal);
    await new Promise((r) => child.once('exit', r));
    if (signal === 'SIGKILL') {
      // The orchestrator died; its worker notices that stdin closed and stops by itself.
      await new Promise((r) => setTimeout(r, 1500));
    }
    return dir;
  }

  it.each(['SIGTERM', 'SIGKILL'] as const)('after %s mid-stage the store is consistent and the next run resumes from the last checkpoint', async (signal) => {
    const dir = await interrupted(signal);
    const ls = cli(dir, ['ls']);
    const expected = signal === 'SIGTERM' ? 'stopped' : 'crashed';
    expect(ls.stdout).toMatch(new RegExp(`count/a\\s+a\\s+${expected}`));
    const first = runRecords(dir).find((r) => r.kind === 'stage')!;
    const cps = readdirSync(join(dir, 'runs', first.id as string, 'checkpoints'));
    expect(cps.every((c) => /^step-\d+$/.test(c) || c.startsWith('.')), cps.join(',')).toBe(true);
    const lastStep = Math.max(...cps.filter((c) => c.startsWith('step-')).map((c) => Number(c.slice(5))));
    expect(lastStep).toBeGreaterThanOrEqual(3);
    expect(lastStep).toBeLessThan(30);

    const again = cli(dir, ['run', 'e.yaml']);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain(`resuming from run ${first.id}`);
    expect(again.stdout).not.toContain('reusing');
    const second = runRecords(dir).filter((r) => r.kind === 'stage' && r.resumed_from === first.id);
    expect(second).toHaveLength(1);
    const log = readFileSync(join(dir, 'runs', second[0]!.id as string, 'output.log'), 'utf8');
    expect(log).toMatch(new RegExp(`resumed at step (\\d+) from run ${first.id}`));
    const from = Number(/resumed at step (\d+)/.exec(log)![1]);
    expect(from).toBeGreaterThanOrEqual(lastStep - 1);
    const summary = JSON.parse(readFileSync(join(dir, 'runs', second[0]!.id as string, 'summary.json'), 'utf8'));
    expect(summary.final_step).toBe(30);
  }, 60_000);

  it('calls observer hooks in order and compares runs', () => {
    const dir = project({ 'e.yaml': 'name: h\nstages:\n  a: { plugin: counter, with: { steps: 2 } }\n  watch: { plugin: observer }\n' });
    const hooks = join(dir, 'hooks.jsonl');
    const r = cli(dir, ['run', 'e.yaml'], { MINIDALLE_TEST_HOOKS: hooks });
    expect(r.code).toBe(0);
    const a = runRecords(dir).find((x) => x.stage === 'a')!;
    const calls = readFileSync(hooks, 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((e) => e.runId === a.id);
    expect(calls.map((c) => c.hook + (c.step ?? ''))).toEqual(['runStart', 'metrics1', 'checkpoint1', 'metrics2', 'checkpoint2', 'runEnd']);
    expect(calls.at(-1)).toMatchObject({ status: 'finished', artifacts: { result: 'out/result.txt' } });

    expect(cli(dir, ['run', 'e.yaml', 'stages.a.with.steps=3']).code).toBe(0);
    const b = runRecords(dir).find((x) => x.stage === 'a' && x.id !== a.id)!;
    const cmp = cli(dir, ['compare', a.id as string, b.id as string]);
    expect(cmp.code).toBe(0);
    expect(cmp.stdout).toMatch(/with\.steps\s+2\s+3/);
    expect(cmp.stdout).toMatch(/value\s+20 \/ 20\s+30 \/ 30/);
    expect(cli(dir, ['ls']).stdout).toMatch(/count|h\/a\s+a\s+finished.*value=30/);
  });
});
