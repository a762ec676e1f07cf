import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import plugin, { VqganFinetuneConfig } from '../../plugins/vqgan-finetune/index.js';
import { RunStore } from '../../src/core/runs/index.js';
import { checkPluginShape } from '../../src/core/plugins/registry.js';
import { generateShapes, DEFAULT_HELDOUT_COMBOS } from '../../src/data/shapes.js';
import { loadVqgan, saveVqgan, Vqgan } from '../../src/ml/models/vqgan.js';
import { initCompute } from '../../src/ml/backend.js';
import { Lpips } from '../../src/ml/losses/lpips.js';
import { saveParamsFile } from '../../src/ml/params.js';
import { makeSchedule } from '../../src/ml/schedule.js';
import { renderShape } from '../../src/data/shapes.js';
import { stageContext } from '../support/stage-context.js';

let root: string;
let train: string;
let heldout: string;

beforeAll(async () => {
  // wasm: the plugin test trains a real (tiny) model; cpu is ~5× slower on convolutions
  await initCompute({ backend: 'wasm' });
  root = mkdtempSync(join(tmpdir(), 'minidalle-vqgan-plugin-'));
  const r = await generateShapes(join(root, 'data'), {
    count: 24,
    heldoutCount: 8,
    size: 16,
    seed: 1,
    samplesPerShard: 12,
    heldoutCombos: DEFAULT_HELDOUT_COMBOS.map((c) => ({ ...c })),
    plainBackgroundProb: 0.5,
  });
  train = r.train.pattern;
  heldout = r.heldout.pattern;
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

const MODEL = { ch: 8, ch_mult: [1, 2], num_res_blocks: 1, attn_resolutions: [8], z_channels: 4, n_embed: 16, embed_dim: 4, num_groups: 4 };

function config(extra: Record<string, unknown> = {}) {
  return VqganFinetuneConfig.parse({
    resolution: 16,
    model: MODEL,
    steps: 6,
    batch_size: 4,
    lr: 1e-3,
    disc_start: 2, // GAN loss, adaptive weight and discriminator updates in steps 3..6 (after 2 steps)
    disc_layers: 1,
    disc_ndf: 4,
    restart_every: 2,
    restart_until: 5,
    log_every: 1,
    media_every: 3,
    eval_every: 3,
    eval_count: 4,
    checkpoint_every: 2,
    ...extra,
  });
}

async function weights(dir: string): Promise<Map<string, number[]>> {
  const m = await loadVqgan(dir);
  const out = new Map<string, number[]>();
  for (const [n, v] of m.params.entries()) out.set(n, Array.from(v.dataSync()));
  m.dispose();
  return out;
}

describe('vqgan-finetune plugin', () => {
  it('has a valid plugin shape and a strict config with defaults', () => {
    expect(() => checkPluginShape(plugin, 'test')).not.toThrow();
    expect(VqganFinetuneConfig.parse({}).beta1).toBe(0.5);
    expect(() => VqganFinetuneConfig.parse({ stepz: 3 })).toThrow();
  });

  it('stopping at step 3 and resuming gives the same weights at step 6 as an uninterrupted run (warmup + cosine lr); no tensor growth', async () => {
    const schedule = { lr_warmup_steps: 1, lr_decay: 'cosine', lr_end: 1e-4 };
    const lrs: number[] = [];
    const store = new RunStore(join(root, 'runs'), { onWarning: () => {} });
    const inputs = { data: { runId: 'x', outDir: root, artifacts: { train, heldout }, summary: {} } };

    // uninterrupted
    const runA = await store.create({ name: 'a', kind: 'stage' });
    const counts: number[] = [];
    const media: { key: string; step: number; bytes: number }[] = [];
    const meta: Record<string, unknown> = {};
    const before = tf.memory().numTensors;
    const onLogA = (m: Record<string, number>): void => {
      if (!('train/loss' in m)) return;
      counts.push(tf.memory().numTensors);
      lrs.push(m['train/lr'] as number);
    };
    const resA = await plugin.run(stageContext(runA, { config: config(schedule), inputs, media, meta, onLog: onLogA }));
    await runA.flush();
    expect(tf.memory().numTensors).toBe(before);
    expect(counts).toHaveLength(6);
    // the learning rate of each step: warmup to lr, then cosine down towards lr_end
    const lrAt = makeSchedule({ lr: 1e-3, warmupSteps: 1, decay: 'cosine', totalSteps: 6, endLr: 1e-4 });
    expect(lrs).toEqual([0, 1, 2, 3, 4, 5].map(lrAt));
    expect(lrs[0]).toBeLessThan(lrs[1]!);
    expect(lrs[5]).toBeLessThan(lrs[2]!);
    // live tensors stay constant once the lazily created Adam slots exist (generator after step 1,
    // discriminator after its first update at step 3)
    expect(counts[1]).toBe(counts[0]);
    expect(new Set(counts.slice(3)).size).toBe(1);
    expect(resA.artifacts?.model).toBe(join(runA.outDir, 'vqgan'));
    expect(existsSync(join(runA.outDir, 'vqgan', 'config.json'))).toBe(true);
    expect(media.map((m) => m.step)).toEqual([3, 6]);
    expect((meta.backend as { backend: string }).backend).toBe('wasm');
    expect(resA.summary?.eval_psnr).toEqual(expect.any(Number));
    expect(readdirSync(join(runA.dir, 'checkpoints')).sort()).toEqual(['step-2', 'step-4', 'step-6']);

    // interrupted at step 3 (after the GAN switched on), then resumed in a new run
    const runB = await store.create({ name: 'b', kind: 'stage' });
    const ctl = new AbortController();
    const resB = await plugin.run(stageContext(runB, { config: config(schedule), inputs, signal: ctl.signal, onLog: (m, step) => step === 3 && 'train/loss' in m && ctl.abort() }));
    await runB.flush();
    expect(resB.artifacts).toBeUndefined();
    expect(readdirSync(join(runB.dir, 'checkpoints')).sort()).toEqual(['step-2', 'step-3']);
    const runC = await store.create({ name: 'c', kind: 'stage', resumed_from: runB.id });
    const stepsC: number[] = [];
    const resC = await plugin.run(stageContext(runC, { config: config(schedule), inputs, onLog: (m, step) => 'train/loss' in m && stepsC.push(step) }));
    await runC.flush();
    expect(stepsC).toEqual([4, 5, 6]);

    const a = await weights(resA.artifacts!.model!);
    const c = await weights(resC.artifacts!.model!);
    expect(c.size).toBe(a.size);
    for (const [n, v] of a) expect(c.get(n), n).toEqual(v);
    // and training moved the weights away from the initialisation
    const init = Vqgan.create({ ...MODEL, resolution: 16 }, 0);
    await saveVqgan(init, join(root, 'init'));
    init.dispose();
    const i0 = await weights(join(root, 'init'));
    expect(i0.get('decoder.conv_out.weight')).not.toEqual(a.get('decoder.conv_out.weight'));
  });

  it('honours an abort signalled from outside the step (a timer, like SIGINT): final checkpoint, no artifact', async () => {
    const store = new RunStore(join(root, 'runs3'), { onWarning: () => {} });
    const run = await store.create({ name: 's', kind: 'stage' });
    const ctl = new AbortController();
    let logged = 0;
    const timer = setInterval(() => logged >= 2 && ctl.abort(), 5);
    const res = await plugin.run(stageContext(run, { config: config({ steps: 1000, train, heldout, checkpoint_every: 1000, eval_every: 1000, media_every: 1000 }), signal: ctl.signal, onLog: () => logged++ }));
    clearInterval(timer);
    expect(res.artifacts).toBeUndefined();
    const steps = res.summary?.steps as number;
    expect(steps).toBeGreaterThanOrEqual(2);
    expect(steps).toBeLessThan(10);
    expect(readdirSync(join(run.dir, 'checkpoints'))).toEqual([`step-${steps}`]);
  });

  it('adds perceptual_weight · LPIPS from a weights file (train/p_loss), and refuses perceptual_weight > 0 without one', async () => {
    const store = new RunStore(join(root, 'runs4'), { onWarning: () => {} });
    const lpipsFile = join(root, 'lpips-tiny.safetensors');
    const net = Lpips.create({ channels: [4, 8], convsPerSlice: [1, 1] }, 3);
    saveParamsFile(lpipsFile, net.params); // taming names, PyTorch layout
    net.dispose();
    const before = tf.memory().numTensors;
    const logs: Record<string, number>[] = [];
    const run = await store.create({ name: 'p', kind: 'stage' });
    const perceptual = { perceptual_weight: 0.5, perceptual_weights: lpipsFile, steps: 2, disc_start: 1, train, heldout };
    await plugin.run(stageContext(run, { config: config(perceptual), onLog: (m) => 'train/loss' in m && logs.push(m) }));
    await run.flush();
    expect(tf.memory().numTensors).toBe(before); // the LPIPS network is released too
    expect(logs).toHaveLength(2);
    for (const m of logs) {
      expect(m['train/p_loss']).toBeGreaterThan(0);
      // total = rec + q + 0.5·p (+ λ·g once the GAN is on at step 2)
      const expected = m['train/rec_loss']! + m['train/q_loss']! + 0.5 * m['train/p_loss']! + m['train/disc_weight']! * m['train/g_loss']!;
      expect(m['train/loss']).toBeCloseTo(expected, 4);
    }
    const run2 = await store.create({ name: 'q', kind: 'stage' });
    await expect(plugin.run(stageContext(run2, { config: config({ ...perceptual, perceptual_weights: '' }) }))).rejects.toThrow(/perceptual_weights is empty/);
    await expect(plugin.run(stageContext(run2, { config: config({ ...perceptual, perceptual_weights: join(root, 'none.safetensors') }) }))).rejects.toThrow(/with\.perceptual_weights '.*none\.safetensors' does not exist.*never downloaded/);
    expect(VqganFinetuneConfig.parse({}).perceptual_weight).toBe(0); // off by default
  });

  it('counts skipped images by reason in its summary and says so in the log (item 5 of the hardening issue)', async () => {
    const folder = join(root, 'folder-with-corrupt');
    mkdirSync(folder, { recursive: true });
    for (let i = 0; i < 5; i++) {
      const r = await renderShape({ shape: 'circle', colour: 'red', position: 'centre', size: 'large', background: 'plain' }, 16);
      writeFileSync(join(folder, `img${i}.png`), r.png);
      writeFileSync(join(folder, `img${i}.txt`), 'a red circle');
    }
    writeFileSync(join(folder, 'broken.png'), 'not a png');
    writeFileSync(join(folder, 'broken.txt'), 'a broken image');
    copyFileSync(join(folder, 'img0.png'), join(folder, 'nocaption.png'));
    const store = new RunStore(join(root, 'runs5'), { onWarning: () => {} });
    const run = await store.create({ name: 'k', kind: 'stage' });
    const warnings: string[] = [];
    const ctx = stageContext(run, { config: config({ steps: 1, train: folder, heldout, disc_start: 5 }) });
    ctx.logger.warn = (m) => void warnings.push(m);
    const res = await plugin.run(ctx);
    expect(res.summary?.skipped).toEqual({ total: 2, by_reason: { corrupt_image: 1, missing_caption: 1 } });
    expect(warnings).toContain('vqgan-finetune: skipped 2 item(s): 1 corrupt_image, 1 missing_caption');
  });

  it('fine-tunes from an init folder; reports a missing data source and a warmup longer than the run clearly', async () => {
    const store = new RunStore(join(root, 'runs2'), { onWarning: () => {} });
    const init = Vqgan.create({ ...MODEL, resolution: 16 }, 9);
    await saveVqgan(init, join(root, 'init2'));
    init.dispose();
    const run = await store.create({ name: 'f', kind: 'stage' });
    const res = await plugin.run(stageContext(run, { config: config({ init: join(root, 'init2'), steps: 1, train, heldout }) }));
    await run.flush();
    expect(res.artifacts?.model).toBeDefined();
    const run2 = await store.create({ name: 'g', kind: 'stage' });
    await expect(plugin.run(stageContext(run2, { config: config() }))).rejects.toThrow(/with.train/);
    // a warmup as long as the run is refused by the config itself, so `validate` reports it with its field
    const badSchedule = VqganFinetuneConfig.safeParse({ resolution: 16, model: MODEL, train, heldout, steps: 4, lr_warmup_steps: 4, lr_decay: 'cosine' });
    expect(badSchedule.success).toBe(false);
    expect(badSchedule.error?.issues[0]).toMatchObject({ path: ['lr_warmup_steps'], message: expect.stringMatching(/must be less than steps \(4\) for lr_decay cosine, is 4/) });
  });
});
