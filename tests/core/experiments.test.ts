import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cli, project, ROOT, runRecords } from '../support/cli.js';

// two-vm-pipeline.yaml places stages on tpu-a/tpu-b: it validates against tpu/hosts.example.yaml's inventory
// (tests/remote/inventory.test.ts), not in a project without hosts
const EXPERIMENTS = readdirSync(join(ROOT, 'experiments')).filter((f) => f.endsWith('.yaml') && f !== 'two-vm-pipeline.yaml');

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

  // The quickstart scaled down: the same eight stages with far fewer images and steps (~3–5 min on 2 cores).
  const SMALL = [
    'stages.data.with.count=2000', 'stages.data.with.heldout_count=160',
    'stages.vqgan.with.steps=400', 'stages.vqgan.with.lr_warmup_steps=40', 'stages.vqgan.with.eval_count=64', 'stages.vqgan.with.eval_every=400', 'stages.vqgan.with.checkpoint_every=400',
    'stages.bart.with.steps=40', 'stages.bart.with.lr_warmup_steps=5',
    'stages.seq2seq.with.steps=600', 'stages.seq2seq.with.lr_warmup_steps=50', 'stages.seq2seq.with.eval_every=600', 'stages.seq2seq.with.media_every=600', 'stages.seq2seq.with.checkpoint_every=600', 'stages.seq2seq.with.judge_count=32', 'stages.seq2seq.with.eval_count=64',
    'stages.clip.with.steps=150', 'stages.clip.with.lr_warmup_steps=15', 'stages.clip.with.batch_size=64', 'stages.clip.with.eval_count=160', 'stages.clip.with.eval_every=150', 'stages.clip.with.checkpoint_every=150',
    'stages.eval.with.prompt_count=32', 'stages.eval.with.samples_per_prompt=4',
  ];

  it('the quickstart, scaled down: all eight stages, their artifacts and metrics, the report, a judged floor far above chance, and generate --clip', () => {
    const dir = project();
    const r = cli(dir, ['run', join(ROOT, 'experiments/quickstart.yaml'), ...SMALL], {}, { timeout: 840_000 });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    for (const stage of ['data', 'vqgan', 'encode', 'tokenizer', 'bart', 'seq2seq', 'clip', 'eval']) expect(r.stdout).toMatch(new RegExp(`\\b${stage}=finished\\b`));
    const runs = runRecords(dir);
    const byStage = (stage: string): Record<string, unknown> => runs.find((x) => x.stage === stage)!;
    const summary = (stage: string): Record<string, number> => JSON.parse(readFileSync(join(dir, 'runs', byStage(stage).id as string, 'summary.json'), 'utf8'));
    const artifact = (stage: string, name: string): string => resolve(dir, 'runs', byStage(stage).id as string, (byStage(stage).outputs as { artifacts: Record<string, string> }).artifacts[name]!);
    // artifacts
    expect(readdirSync(artifact('vqgan', 'model'))).toEqual(expect.arrayContaining(['config.json', 'model.safetensors']));
    expect(readdirSync(artifact('seq2seq', 'model'))).toEqual(expect.arrayContaining(['config.json', 'model.safetensors', 'tokenizer.json', 'vqgan.json', 'generation_config.json']));
    expect(readdirSync(artifact('clip', 'clip'))).toEqual(expect.arrayContaining(['config.json', 'model.safetensors', 'tokenizer.json']));
    expect(readdirSync(artifact('eval', 'images')).length).toBe(32 * 4);
    expect(summary('encode')).toMatchObject({ train_count: 2000, heldout_count: 160, code_count: 64 });
    // metrics: each trainer's key figures, and the re-ranked images judged from their pixels
    expect(summary('vqgan')['eval/psnr']).toBeGreaterThan(18);
    expect(summary('seq2seq')).toHaveProperty('eval/attr_acc/colour');
    expect(summary('clip')['eval/retrieval/t2i_attr_acc/colour']).toBeGreaterThan(0.4);
    const ev = summary('eval');
    expect(ev['clip/best_of_n_score']).toBeGreaterThanOrEqual(ev['clip/random_of_n_score']!);
    console.log(`quickstart (scaled down): ${JSON.stringify({ psnr: summary('vqgan')['eval/psnr'], seq2seq: summary('seq2seq')['eval/attr_acc/colour'], clip: summary('clip')['eval/retrieval/t2i_attr_acc/colour'], top1: ev['judge/top1/attr_acc/colour'], pos: ev['judge/top1/attr_acc/position'] })}`);
    expect(ev['judge/top1/attr_acc/colour']).toBeGreaterThan(0.5); // 8 colours: chance 0.125
    // a prompt whose top-1 (or any sample) is all right has an all-right sample
    expect(ev['judge/any_of_n/all_correct']).toBeGreaterThanOrEqual(Math.max(ev['judge/top1/all_correct']!, ev['judge/random/all_correct']!));
    expect(ev['judge/any_of_n/all_correct']).toBeLessThanOrEqual(1);
    expect(ev['judge/top1/attr_acc/position']).toBeGreaterThan(0.35); // 5 positions: chance 0.2
    const table = JSON.parse(readFileSync(join(dir, 'runs', byStage('eval').id as string, 'media', 'table', 'clip_eval.table.json'), 'utf8'));
    expect(table.data).toHaveLength(32 * 4);
    // the report the experiment asks for
    const report = /report: (\S+report\.html)/.exec(r.stdout)?.[1];
    expect(report, r.stdout).toBeDefined();
    expect(statSync(report!).size).toBeLessThan(5e6);
    // and images from the trained pair, re-ranked
    const g = cli(dir, ['generate', 'a red circle on the left', '--model', byStage('seq2seq').id as string, '--clip', byStage('clip').id as string, '-n', '4', '--top', '2', '--out', 'images']);
    expect(g.code, g.stdout + g.stderr).toBe(0);
    expect(readdirSync(join(dir, 'images')).sort()).toEqual(['generations.json', 'grid.png', 'p00-rank00.png', 'p00-rank01.png']);
  }, 900_000);
});
