import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cli, COUNTER, filesUnder, project, ROOT, runRecords } from '../support/cli.js';

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
    const tars = readdirSync(join(runDir, 'out/train')).filter((f) => f.endsWith('.tar'));
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

  it('validate refuses ten kinds of broken experiment, each with file:line and exit code 2', () => {
    const broken: Record<string, [string, RegExp]> = {
      'yaml.yaml': ['name: e\nstages:\n  a: { plugin: counter\n', /yaml\.yaml:\d+:\d+: invalid YAML/],
      'key.yaml': ['name: e\nstagez: {}\nstages:\n  a: { plugin: counter }\n', /key\.yaml:2:1: stagez: unknown key 'stagez' — did you mean 'stages'\?/],
      'type.yaml': ['name: e\nstages:\n  a:\n    plugin: counter\n    with: { steps: many }\n', /type\.yaml:5:\d+: stages\.a\.with\.steps: .*expected number/i],
      'plugin.yaml': ['name: e\nstages:\n  a: { plugin: countr }\n', /plugin\.yaml:3:\d+: stages\.a\.plugin: unknown plugin 'countr' — did you mean 'counter'\?/],
      'cycle.yaml': ['name: e\nstages:\n  a: { plugin: counter, needs: [b] }\n  b: { plugin: counter, needs: [a] }\n', /cycle\.yaml:3:\d+: stages\.a\.needs: stages form a cycle: a → b → a/],
      'needs.yaml': ['name: e\nstages:\n  a: { plugin: counter, needs: [x] }\n', /needs\.yaml:3:\d+: stages\.a\.needs\[0\]: unknown stage 'x'/],
      'ext1.yaml': ['extends: ext2.yaml\nname: e\n', /ext2\.yaml:1:\d+: extends: 'extends' forms a cycle/],
      'host.yaml': ['name: e\nstages:\n  a: { plugin: counter, host: tpu-a }\n', /host\.yaml:3:\d+: stages\.a\.host: unknown host 'tpu-a'/],
      'with.yaml': ['name: e\nstages:\n  a:\n    plugin: counter\n    with: { stepz: 1 }\n', /with\.yaml:5:\d+: stages\.a\.with\.stepz: unknown key 'stepz' — did you mean 'steps'\?/],
      'env.yaml': ['name: e\nstages:\n  a: { plugin: counter, with: { steps: "${env:MINIDALLE_UNSET_VAR}" } }\n', /env\.yaml:3:\d+: .*MINIDALLE_UNSET_VAR is not set/],
    };
    const dir = project({ ...Object.fromEntries(Object.entries(broken).map(([f, [text]]) => [f, text])), 'ext2.yaml': 'extends: ext1.yaml\n' });
    for (const [file, [, expected]] of Object.entries(broken)) {
      const r = cli(dir, ['validate', file]);
      expect(r.code, file).toBe(2);
      expect(r.stderr, file).toMatch(expected);
    }
    const override = cli(dir, ['validate', 'plugin.yaml', 'stages.a.plugin=counter', 'stages.a.with.stepz=3']);
    expect(override.code).toBe(2);
    expect(override.stderr).toMatch(/command-line override 'stages\.a\.with\.stepz=3'/);
  });

  it('plugins lists built-in and package plugins with their config fields', () => {
    const r = cli(project(), ['plugins']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/shapes-data — .*\[built-in plugin plugins\/shapes-data\]/);
    expect(r.stdout).toMatch(/count: integer = 4000/);
    expect(r.stdout).toMatch(/^vqgan-finetune v2 — /m); // the behaviour version that enters the fingerprint
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

  it('calls observer hooks in order and compares runs', () => {
    const dir = project({ 'e.yaml': 'name: h\nstages:\n  a: { plugin: counter, with: { steps: 2 } }\nobservers:\n  - { plugin: observer }\n' });
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

  it('runs independent stages concurrently up to the limit', () => {
    const two = 'name: p\nstages:\n  a: { plugin: counter, with: { steps: 3, delay_ms: 300 } }\n  b: { plugin: counter, with: { steps: 4, delay_ms: 300 } }\n';
    const window = (dir: string, stage: string) => {
      const r = runRecords(dir).find((x) => x.stage === stage)!;
      return [Date.parse(r.started_at as string), Date.parse(r.ended_at as string)] as const;
    };
    const parallel = project({ 'e.yaml': two });
    expect(cli(parallel, ['run', 'e.yaml']).code).toBe(0);
    const [a0, a1] = window(parallel, 'a');
    const [b0, b1] = window(parallel, 'b');
    expect(Math.max(a0, b0)).toBeLessThan(Math.min(a1, b1)); // overlapping

    const serial = project({ 'e.yaml': two });
    expect(cli(serial, ['run', 'e.yaml', '--parallel', '1']).code).toBe(0);
    const [, s1] = window(serial, 'a');
    const [t0] = window(serial, 'b');
    expect(t0).toBeGreaterThanOrEqual(s1);
  });
});
