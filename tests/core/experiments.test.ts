import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cli, project, ROOT, runRecords } from '../support/cli.js';

const EXPERIMENTS = readdirSync(join(ROOT, 'experiments')).filter((f) => f.endsWith('.yaml'));

describe('shipped experiments', () => {
  it.each(EXPERIMENTS)('%s validates', (file) => {
    const r = cli(project(), ['validate', join(ROOT, 'experiments', file)]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
  });

  it('a quick look shorter than the LR warmup is refused by validate, at the line that sets the warmup', () => {
    const r = cli(project(), ['validate', join(ROOT, 'experiments/quickstart.yaml'), 'stages.vqgan.with.steps=200']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/vqgan-shapes\.yaml:\d+:\d+: stages\.vqgan\.with\.lr_warmup_steps: must be less than steps \(200\)/);
  });

  it('the quickstart runs end to end at a tiny size: shapes → VQGAN → encoded parquet shards', () => {
    const dir = project();
    const r = cli(dir, [
      'run', join(ROOT, 'experiments/quickstart.yaml'),
      'stages.data.with.count=64', 'stages.data.with.heldout_count=16', 'stages.vqgan.with.steps=4', 'stages.vqgan.with.lr_warmup_steps=1', 'stages.vqgan.with.eval_count=16',
      'stages.vqgan.with.log_every=2', 'stages.vqgan.with.checkpoint_every=2',
    ]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/data=finished vqgan=finished encode=finished/);
    const encode = runRecords(dir).find((x) => x.stage === 'encode')!;
    const summary = JSON.parse(readFileSync(join(dir, 'runs', encode.id as string, 'summary.json'), 'utf8'));
    expect(summary).toMatchObject({ train_count: 64, heldout_count: 16, code_count: 64 });
    const vqgan = runRecords(dir).find((x) => x.stage === 'vqgan')!;
    expect((vqgan.meta as { backend?: { backend: string } }).backend?.backend).toBe('wasm');
  }, 120_000);

  it('text2image-shapes runs end to end at a tiny size, and minidalle generate draws from its seq2seq run', () => {
    const dir = project();
    const r = cli(dir, [
      'run', join(ROOT, 'experiments/text2image-shapes.yaml'),
      'stages.data.with.count=64', 'stages.data.with.heldout_count=16', 'stages.vqgan.with.steps=4', 'stages.vqgan.with.lr_warmup_steps=1', 'stages.vqgan.with.eval_count=16',
      'stages.bart.with.steps=3', 'stages.bart.with.lr_warmup_steps=1', 'stages.bart.with.batch_size=8',
      'stages.seq2seq.with.steps=3', 'stages.seq2seq.with.lr_warmup_steps=1', 'stages.seq2seq.with.batch_size=8', 'stages.seq2seq.with.judge_count=4', 'stages.seq2seq.with.eval_count=8',
    ]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/data=finished vqgan=finished encode=finished tokenizer=finished bart=finished seq2seq=finished/);
    const seq2seq = runRecords(dir).find((x) => x.stage === 'seq2seq')!;
    expect(seq2seq.status).toBe('finished');
    const g = cli(dir, ['generate', 'a red circle on the left', '--model', (seq2seq.id as string).slice(0, 8), '-n', '2', '--out', 'images']);
    expect(g.code, g.stdout + g.stderr).toBe(0);
    expect(readdirSync(join(dir, 'images')).sort()).toEqual(['generations.json', 'grid.png', 'p00-s00.png', 'p00-s01.png']);
  }, 180_000);
});
