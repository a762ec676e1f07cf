/**
 * The shared training loop on a tiny regression trainer: cadences (final step once), exact resume through
 * the train state, abort → checkpoint and no artifact, retention (newest N + best), skips in the summary.
 */
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RunStore } from '../../src/core/runs/index.js';
import { SkipCounts } from '../../src/data/skips.js';
import { AdamW } from '../../src/ml/optim/index.js';
import { addLinear, Params } from '../../src/ml/params.js';
import { Rng } from '../../src/ml/rng.js';
import { deriveSeed, optimizerUpdate, runTraining, findResume, ShuffledOrder, TrainState, type Trainer } from '../../src/ml/train/index.js';
import { useCpu } from './helpers.js';
import { stageContext } from '../support/stage-context.js';

let root: string;
beforeAll(async () => {
  await useCpu();
  root = mkdtempSync(join(tmpdir(), 'minidalle-loop-'));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

const N = 12;
const X = Array.from({ length: N }, (_, i) => [i / N, (i % 3) / 3]);
const Y = X.map(([a, b]) => [2 * a! - b! + 0.5]);

interface Events {
  logs: number[];
  evals: number[];
  media: number[];
}

/** A linear regression trainer whose eval "loss" is scripted so retention's best is known. */
function trainer(steps: number, cadence: Partial<Trainer['cadence']>, events: Events, evalScript?: (step: number) => number): Trainer {
  const params = new Params();
  addLinear(params, new Rng(1), 'fc', 2, 1, { std: 0.1 });
  const opt = new AdamW({ learningRate: 0.05, weightDecay: 0 });
  const order = new ShuffledOrder(N, deriveSeed(7, 'data'));
  const noise = new Rng(deriveSeed(7, 'noise'));
  const state = new TrainState({ models: { model: { params, config: { model_type: 'toy' } } }, optimizers: { main: { optimizer: opt, params } }, rngs: { noise }, data: order });
  const skips = new SkipCounts();
  skips.add('corrupt_image', 'x.png: bad', 2);
  return {
    name: 'toy',
    state,
    steps,
    cadence: { log_every: 1, eval_every: 100, media_every: 100, checkpoint_every: 100, keep_checkpoints: 0, ...cadence },
    primary: { name: 'eval/loss', goal: 'minimize' },
    step(log) {
      const idx = order.next(4);
      const jitter = noise.normal(0, 0.01);
      const x = tf.tensor2d(idx.map((i) => X[i]!));
      const y = tf.tensor2d(idx.map((i) => [Y[i]![0]! + jitter]));
      const r = optimizerUpdate(params, opt, () => tf.tidy(() => tf.mean(tf.square(tf.sub(tf.matMul(x, params.get('fc.weight')), y))) as tf.Scalar), { microBatches: 1, clip: 1 });
      tf.dispose([x, y]);
      state.samples += 4;
      return log ? { 'train/loss': r.loss, 'train/grad_norm': r.gradNorm } : undefined;
    },
    evaluate() {
      events.evals.push(state.step);
      return { 'eval/loss': evalScript ? evalScript(state.step) : 1 / state.step };
    },
    async media(step) {
      events.media.push(step);
    },
    skips: () => [skips],
    async export() {
      return { model: 'm' };
    },
  };
}

function weights(dir: string): Promise<number[]> {
  const p = new Params();
  addLinear(p, new Rng(0), 'fc', 2, 1);
  const s = new TrainState({ models: { model: { params: p } } });
  return import('../../src/ml/params.js').then(async ({ loadParamsFile }) => {
    await loadParamsFile(join(dir, 'model.safetensors'), p);
    const v = Array.from(p.get('fc.weight').dataSync());
    s.dispose();
    return v;
  });
}

describe('the shared training loop', () => {
  it('fires cadences at multiples and at the final step once; summary has steps, samples and skips; no tensor growth', async () => {
    const store = new RunStore(join(root, 'r1'), { onWarning: () => {} });
    const run = await store.create({ name: 'a', kind: 'stage' });
    const ev: Events = { logs: [], evals: [], media: [] };
    const logged: number[] = [];
    const counts: number[] = [];
    const before = tf.memory().numTensors;
    const t = trainer(7, { log_every: 3, eval_every: 3, media_every: 5, checkpoint_every: 3 }, ev);
    const res = await runTraining(stageContext(run, { config: {}, onLog: (m, s) => { if ('train/loss' in m) { logged.push(s); counts.push(tf.memory().numTensors); } } }), t);
    await run.flush();
    expect(logged).toEqual([3, 6, 7]);
    expect(ev.evals).toEqual([3, 6, 7]);
    expect(ev.media).toEqual([5, 7]);
    expect(readdirSync(join(run.dir, 'checkpoints')).sort()).toEqual(['step-3', 'step-6', 'step-7']);
    expect(res.artifacts).toEqual({ model: 'm' });
    expect(res.summary).toMatchObject({ steps: 7, samples: 28, skipped: { total: 2, by_reason: { corrupt_image: 2 } } });
    expect(new Set(counts.slice(1)).size).toBe(1);
    expect(tf.memory().numTensors).toBe(before); // the loop disposed the train state
    // every checkpoint has the fixed layout, and the main model folder loads as a model folder
    const ck = join(run.dir, 'checkpoints', 'step-7');
    expect(readdirSync(ck).sort()).toEqual(['config.json', 'manifest.json', 'model.safetensors', 'optimizer.main.safetensors', 'train_state.json']);
  });

  it('stop at step 4 and resume gives the weights of an uninterrupted run at step 9', async () => {
    const store = new RunStore(join(root, 'r2'), { onWarning: () => {} });
    const ev = (): Events => ({ logs: [], evals: [], media: [] });
    const a = await store.create({ name: 'a', kind: 'stage' });
    await runTraining(stageContext(a, { config: {} }), trainer(9, { checkpoint_every: 3 }, ev()));
    const b = await store.create({ name: 'b', kind: 'stage' });
    const ctl = new AbortController();
    const resB = await runTraining(stageContext(b, { config: {}, signal: ctl.signal, onLog: (_m, s) => s === 4 && ctl.abort() }), trainer(9, { checkpoint_every: 3 }, ev()));
    expect(resB.artifacts).toBeUndefined();
    expect(readdirSync(join(b.dir, 'checkpoints')).sort()).toEqual(['step-3', 'step-4']);
    const c = await store.create({ name: 'c', kind: 'stage', resumed_from: b.id });
    const ctxC = stageContext(c, { config: {} });
    const resume = await findResume(ctxC, 'toy');
    expect(resume?.step).toBe(4);
    const steps: number[] = [];
    await runTraining(stageContext(c, { config: {}, onLog: (m, s) => 'train/loss' in m && steps.push(s) }), trainer(9, { checkpoint_every: 3 }, ev()), resume);
    expect(steps).toEqual([5, 6, 7, 8, 9]);
    expect(await weights(join(c.dir, 'checkpoints', 'step-9'))).toEqual(await weights(join(a.dir, 'checkpoints', 'step-9')));
  });

  it('keep_checkpoints: 2 holds the newest two plus the best by the key metric, and still resumes', async () => {
    const store = new RunStore(join(root, 'r3'), { onWarning: () => {} });
    const run = await store.create({ name: 'a', kind: 'stage' });
    // eval loss is lowest at step 2, so step-2 stays as the best
    const script = (s: number): number => (s === 2 ? 0.01 : 1 + s);
    await runTraining(stageContext(run, { config: {} }), trainer(6, { checkpoint_every: 1, eval_every: 1, keep_checkpoints: 2 }, { logs: [], evals: [], media: [] }, script));
    expect(readdirSync(join(run.dir, 'checkpoints')).sort()).toEqual(['step-2', 'step-5', 'step-6']);
    // a resumed run never deletes its parent's checkpoints, and prunes only its own
    const child = await store.create({ name: 'b', kind: 'stage', resumed_from: run.id });
    const ctx = stageContext(child, { config: {} });
    const resume = await findResume(ctx, 'toy');
    expect(resume?.step).toBe(6);
    await runTraining(ctx, trainer(9, { checkpoint_every: 1, eval_every: 1, keep_checkpoints: 2 }, { logs: [], evals: [], media: [] }, script), resume);
    expect(readdirSync(join(run.dir, 'checkpoints')).sort()).toEqual(['step-2', 'step-5', 'step-6']);
    expect(readdirSync(join(child.dir, 'checkpoints')).sort()).toEqual(['step-8', 'step-9']);
  });

  it('says "no usable checkpoint" when every checkpoint is corrupt, and starts at step 0', async () => {
    const store = new RunStore(join(root, 'r4'), { onWarning: () => {} });
    const run = await store.create({ name: 'a', kind: 'stage' });
    await runTraining(stageContext(run, { config: {} }), trainer(2, { checkpoint_every: 1 }, { logs: [], evals: [], media: [] }));
    for (const s of ['step-1', 'step-2']) writeFileSync(join(run.dir, 'checkpoints', s, 'model.safetensors'), 'garbage');
    const child = await store.create({ name: 'b', kind: 'stage', resumed_from: run.id });
    const warnings: string[] = [];
    const ctx = stageContext(child, { config: {} });
    ctx.logger.warn = (m) => void warnings.push(m);
    expect(await findResume(ctx, 'toy')).toBeUndefined();
    expect(warnings).toContain('toy: no usable checkpoint: starting from step 0');
    expect(existsSync(join(child.dir, 'checkpoints'))).toBe(false);
  });
});
