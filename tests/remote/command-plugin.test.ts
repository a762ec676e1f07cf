/**
 * The command plugin on this machine: an argument array from the config, JSON-lines metrics (stdout or a
 * metrics file) into history, announced checkpoints into the run store, a failing exit code retried
 * (retry.on_exit_codes) with the resume flag pointing at the last checkpoint, same run id, declared outputs.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cli, ROOT } from '../support/cli.js';
import { expectSteps, history, remoteProject, stageRuns } from './helpers.js';

const PROGRAM = join(ROOT, 'tests/remote/fixtures/steps-program.mjs');

const experiment = (extra: string) => `name: cmd
stages:
  prog:
    plugin: command
    retry: { max: 1, backoff: 0, on_exit_codes: [75] }
    with:
      command: [${JSON.stringify(process.execPath)}, ${JSON.stringify(PROGRAM)}, --out, "{out_dir}"]
      params: { steps: 6, fail-at: 4 }
      param_style: space
      resume_flag: --resume
      outputs: { final: final.txt }
${extra}`;

describe('command stages', () => {
  it('metrics on stdout become history; exit 75 is retried with --resume <last checkpoint>, same run, every step once', () => {
    const dir = remoteProject({}, { 'cmd.yaml': experiment('') });
    const r = cli(dir, ['run', 'cmd.yaml']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const [run, ...more] = stageRuns(dir);
    expect(more).toHaveLength(0);
    expect(run!.record.meta.attempts).toBe(2);
    expect(r.stdout).toMatch(/prog: attempt 1 on local failed: .*exited with code 75; retrying in 0 s/);
    expect(r.stdout).toMatch(new RegExp(`\\[prog\\] program starts at step 3 from ${run!.dir}/checkpoints/step-3`));
    expectSteps(history(run!.dir), 6);
    expect(history(run!.dir)[5]).toMatchObject({ _step: 6, loss: 1 / 6 });
    expect(readFileSync(join(run!.dir, 'out/final.txt'), 'utf8')).toBe('6');
    expect(JSON.parse(readFileSync(join(run!.dir, 'run.json'), 'utf8')).outputs.artifacts).toEqual({ final: 'out/final.txt' });
  });

  it('reads metrics from a metrics file; an exit code not listed fails at once', () => {
    const dir = remoteProject({}, { 'cmd.yaml': experiment('      metrics_file: metrics.jsonl\n').replace('params: { steps: 6, fail-at: 4 }', 'params: { steps: 3, metrics-file: "{out_dir}/metrics.jsonl" }') });
    const r = cli(dir, ['run', 'cmd.yaml']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expectSteps(history(stageRuns(dir)[0]!.dir), 3);

    const bad = remoteProject({}, { 'cmd.yaml': experiment('').replace('on_exit_codes: [75]', 'on_exit_codes: [76]') });
    const f = cli(bad, ['run', 'cmd.yaml']);
    expect(f.code).toBe(1);
    expect(f.stdout).toMatch(/prog: failed: .*exited with code 75/);
    expect(stageRuns(bad)[0]!.record.meta.attempts).toBe(1);
  });
});
