import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { stages, start, checkpointSteps, cli, project } from '../support/cli.js';

describe('resume details and console scrubbing', () => {
  it('cleans .tmp- leftovers of the run it resumes; says so when no checkpoint is usable; warnings are WARN in output.log', () => {
    const dir = project({ 'e.yaml': 'name: r\nstages:\n  a: { plugin: counter, with: { steps: 4, fail_at: 3 } }\n' });
    expect(cli(dir, ['run', 'e.yaml']).code).toBe(1);
    const first = stages(dir)[0]!;
    const cps = join(dir, 'runs', first.id as string, 'checkpoints');
    mkdirSync(join(cps, '.tmp-999999-0badc0ffee00'));
    writeFileSync(join(cps, '.tmp-999999-0badc0ffee00', 'count.txt'), '1');
    const resumed = cli(dir, ['run', 'e.yaml']);
    expect(resumed.stdout).toContain(`resuming from run ${first.id} (failed) (step 2)`);
    expect(readdirSync(cps).filter((n) => n.startsWith('.tmp-'))).toEqual([]);

    // Every checkpoint of both runs corrupt: no resume claimed, a plain start from step 0.
    for (const r of stages(dir)) {
      for (const step of checkpointSteps(dir, r.id as string)) writeFileSync(join(dir, 'runs', r.id as string, `checkpoints/step-${step}/count.txt`), '9');
    }
    const fresh = cli(dir, ['run', 'e.yaml']);
    expect(fresh.stdout).toContain('a: no usable checkpoint: starting from step 0');
    expect(fresh.stdout).toMatch(/a: warning: skipping corrupt checkpoint .*count\.txt' fails its sha256 check/);
    expect(fresh.stdout).not.toContain('resuming from');
    const latest = stages(dir).find((r) => r.id !== first.id && r.resumed_from === undefined)!;
    expect(latest).toBeDefined();

    const warn = project({ 'w.yaml': 'name: w\nstages:\n  leak: { plugin: echo-secret, with: { token: "abcdef123" } }\n' });
    cli(warn, ['run', 'w.yaml'], { HF_TOKEN: 'hf_EnvSecret123' });
    const log = readFileSync(join(warn, 'runs', stages(warn)[0]!.id as string, 'output.log'), 'utf8');
    expect(log).toMatch(/ WARN warning: warning with <redacted>/);
    expect(log).not.toMatch(/ERROR warning:/);
    expect(log).not.toContain('abcdef123');
  }, 40_000);

  it('validate prints <redacted> for a secret from the environment and one written in with:', () => {
    const env = 'hf_EnvironmentSecret42';
    const literal = 'sk_LiteralSecretInYaml77';
    const dir = project({
      'e.yaml': `name: s\nstages:\n  a:\n    plugin: echo-secret\n    with: { token: "${literal}", upstream: "\${env:HF_TOKEN}" }\n  b:\n    plugin: echo-secret\n    with: { token: "\${env:HF_TOKEN}", upstream: "copy of ${literal}" }\n`,
    });
    const r = cli(dir, ['validate', 'e.yaml'], { HF_TOKEN: env });
    expect(r.code).toBe(0);
    expect(r.stdout + r.stderr).not.toContain(env);
    expect(r.stdout + r.stderr).not.toContain(literal);
    expect(r.stdout.match(/<redacted>/g)).toHaveLength(4);
    expect(r.stdout).toContain('upstream: "copy of <redacted>"');
  });
});
