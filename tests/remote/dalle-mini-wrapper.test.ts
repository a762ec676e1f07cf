/**
 * tpu/dalle_mini_train.py runs a train.py that reports and resumes the way dalle-mini's does (the fixture
 * imports wandb, logs through wandb.log with train/step, saves output_dir then logs time/save_model, resumes
 * only from a W&B artifact) as a command stage under Debian's /usr/bin/python3: its metrics become history,
 * its saves become checkpoints, and a retry resumes from the last one with the step counters restored. Once
 * without wandb installed, once with a stand-in "installed" wandb that must still get every call but never
 * the resume artifacts.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cli, ROOT } from '../support/cli.js';
import { history, remoteProject, stageRuns } from './helpers.js';

const PYTHON = '/usr/bin/python3';
const WRAPPER = join(ROOT, 'tpu/dalle_mini_train.py');
const TRAIN_PY = join(ROOT, 'tests/remote/fixtures/dalle-mini/train.py');
const INSTALLED_WANDB = join(ROOT, 'tests/remote/fixtures/dalle-mini/wandb-installed');
const noPython = existsSync(PYTHON) ? '' : `${PYTHON} is missing`;
if (noPython) console.warn(`tests/remote/dalle-mini-wrapper: 3 tests skipped: ${noPython}`);

const experiment = (env: Record<string, string>) => `name: dalle-mini
stages:
  seq2seq:
    plugin: command
    retry: { max: 1, backoff: 0, on_exit_codes: [75] }
    with:
      command: [${PYTHON}, "{minidalle_dir}/tpu/dalle_mini_train.py", ${JSON.stringify(TRAIN_PY)}]
      param_style: space
      params: { output_dir: "{out_dir}/model", do_train: true, logging_steps: 1, save_steps: 2, num_steps: 6, fail_at: 5 }
      resume_flag: --resume_from
      env: ${JSON.stringify(env)}
      outputs: { model: model }
`;

function runAndCheck(env: Record<string, string>) {
  const dir = remoteProject({}, { 'dm.yaml': experiment(env) });
  const r = cli(dir, ['run', 'dm.yaml']);
  expect(r.code, r.stdout + r.stderr).toBe(0);
  const [run, ...more] = stageRuns(dir);
  expect(more).toHaveLength(0);
  expect(run!.record.meta.attempts).toBe(2);
  expect(r.stdout).toMatch(/seq2seq: attempt 1 on local failed: .*exited with code 75; retrying/);
  expect(r.stdout).toContain('[seq2seq] fake train.py starts at step 0 with w=0 count=0');
  // the retry got the step-4 checkpoint back as train.py's own resume: params, optimizer state and step
  expect(r.stdout).toContain('[seq2seq] fake train.py starts at step 4 with w=4 count=4');
  const h = history(run!.dir) as unknown as Record<string, number>[];
  expect(h.map((l) => l._step)).toEqual([0, 1, 2, 3, 4, 5, 6]);
  expect(h[3]).toMatchObject({ 'train/loss': 1 / 3, 'train/learning_rate': 0.001, 'train/gradients_norm/encoder/layer': 0.5, 'time/train_per_step': 0.01, 'train/samples': 24, 'train/grad_scale': 1 });
  expect(h[2]).not.toHaveProperty('train/grad_scale'); // NaN: left out, with a warning
  expect(r.stdout).toMatch(/train\/grad_scale is nan at step 2/);
  const cps = join(run!.dir, 'checkpoints');
  expect(JSON.parse(readFileSync(join(cps, 'step-4/minidalle-train-state.json'), 'utf8'))).toEqual({ step: 4, epoch: 0, train_time: 2, train_samples: 32 });
  expect(JSON.parse(readFileSync(join(cps, 'step-2/flax_model.msgpack'), 'utf8'))).toEqual({ w: 2 });
  expect(JSON.parse(readFileSync(join(cps, 'step-6/flax_model.msgpack'), 'utf8'))).toEqual({ w: 6 });
  // the saves set aside were moved into the checkpoints; the last one is the declared output too
  expect(existsSync(join(run!.dir, 'out/.tmp-dalle-mini-saves'))).toBe(false);
  expect(JSON.parse(readFileSync(join(run!.dir, 'out/model/flax_model.msgpack'), 'utf8'))).toEqual({ w: 6 });
  expect(JSON.parse(readFileSync(join(run!.dir, 'run.json'), 'utf8')).outputs.artifacts).toEqual({ model: 'out/model' });
  return r;
}

describe.skipIf(noPython !== '')('dalle-mini train.py through tpu/dalle_mini_train.py', () => {
  it('without wandb installed: history, checkpoints and a resume with its step counters', () => {
    runAndCheck({});
  });

  it('with wandb installed: the same, and every call still reaches wandb except the resume artifacts', () => {
    const calls = join(mkdtempSync(join(tmpdir(), 'md-wandb-')), 'calls.jsonl');
    runAndCheck({ PYTHONPATH: INSTALLED_WANDB, WANDB_CALLS: calls });
    const seen = readFileSync(calls, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as unknown[]);
    expect(seen.filter((c) => c[0] === 'init')).toEqual([['init', 'dalle-mini'], ['init', 'dalle-mini']]);
    expect(seen).toContainEqual(['define_metric', '*', 'train/step']);
    expect(seen).toContainEqual(['log', ['time/save_model', 'train/epoch', 'train/samples', 'train/step', 'train/time']]);
    expect(seen.filter((c) => c[0] === 'log').length).toBe(1 + 4 * 2 + 2 + 1 + (2 * 2 + 1 + 1)); // attempt 1: start, 4 steps, 2 saves; attempt 2: start, 2 steps, saves at 6 and at the end
  });

  it('refuses save_steps that are not a multiple of logging_steps, and a checkpoint it did not write', () => {
    const a = spawnSync(PYTHON, [WRAPPER, TRAIN_PY, '--output_dir', '/tmp/x', '--logging_steps', '50', '--save_steps', '125', '--num_steps', '1'], { encoding: 'utf8' });
    expect(a.status).toBe(2);
    expect(a.stderr).toContain('--save_steps (125) must be a multiple of --logging_steps (50)');
    const empty = mkdtempSync(join(tmpdir(), 'md-ckpt-'));
    const b = spawnSync(PYTHON, [WRAPPER, TRAIN_PY, '--output_dir', '/tmp/x', '--num_steps', '1', '--resume_from', empty], { encoding: 'utf8' });
    expect(b.status).toBe(2);
    expect(b.stderr).toContain(`cannot resume from ${empty}: minidalle-train-state.json is missing`);
  });
});
