/**
 * clip-train on a small shapes set: held-out retrieval far above chance (also by the attributes the pixel judge
 * reads), the exported folder scores matching captions above mismatched ones, and exact resume.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import clipPlugin, { ClipTrainConfig, retrievalTop1, shapeSwapAccuracy } from '../../plugins/clip-train/index.js';
import { checkPluginShape } from '../../src/core/plugins/registry.js';
import type { StageOutputs } from '../../src/core/plugins/types.js';
import { RunStore } from '../../src/core/runs/index.js';
import { DEFAULT_HELDOUT_COMBOS, generateShapes, SHAPES } from '../../src/data/shapes.js';
import { initCompute } from '../../src/ml/backend.js';
import { clipScores, embedImages, loadClipScorer, rankByScore } from '../../src/ml/clip-rank.js';
import { loadClip } from '../../src/ml/models/clip.js';
import { saveVqgan, Vqgan } from '../../src/ml/models/vqgan.js';
import { saveTokenizer, trainByteLevelBpe } from '../../src/ml/tokenizers/index.js';
import { loadCaptions, loadImageSet } from '../../src/ml/train/data.js';
import { stageContext } from '../support/stage-context.js';

let root: string;
let store: RunStore;
let vqganDir: string;
const inputs: Record<string, StageOutputs> = {};
const MODEL = { projection_dim: 32, text_width: 48, text_layers: 1, text_heads: 2, vision_width: 48, vision_layers: 1, vision_heads: 2, patch_size: 8, max_text_length: 24 };
// 96 held-out images: a retrieval count of a few hits is then far above chance (1/96) by a margin that holds across seeds
const HELD = 96;

beforeAll(async () => {
  await initCompute({ backend: 'wasm' });
  root = mkdtempSync(join(tmpdir(), 'minidalle-clip-train-'));
  store = new RunStore(join(root, 'runs'), { onWarning: () => {} });
  const shapes = await generateShapes(join(root, 'data'), { count: 2000, heldoutCount: HELD, size: 32, seed: 3, samplesPerShard: 2000, heldoutCombos: DEFAULT_HELDOUT_COMBOS.map((c) => ({ ...c })), plainBackgroundProb: 0.5 });
  const { captions } = await loadCaptions(shapes.train.pattern, { signal: new AbortController().signal, warn: () => {} });
  const tok = trainByteLevelBpe(captions, { vocabSize: 300, lowercase: true });
  const tokDir = join(root, 'tok');
  saveTokenizer(tok, tokDir);
  inputs.data = { runId: 'd', outDir: root, artifacts: { train: shapes.train.pattern, heldout: shapes.heldout.pattern }, summary: {} };
  inputs.tokenizer = { runId: 't', outDir: root, artifacts: { tokenizer: join(tokDir, 'tokenizer.json') }, summary: {} };
  // a random f4 VQGAN at the CLIP's 32 px: its reconstructions are another image domain for the mixed batches
  const vqgan = Vqgan.create({ ch: 4, ch_mult: [1, 2, 2], num_res_blocks: 0, attn_resolutions: [], z_channels: 4, n_embed: 16, embed_dim: 4, num_groups: 2, resolution: 32 }, 1);
  vqganDir = join(root, 'vqgan');
  await saveVqgan(vqgan, vqganDir);
  vqgan.dispose();
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

async function weights(dir: string): Promise<number[][]> {
  const m = await loadClip(dir);
  const out = [...m.params.entries()].map(([, v]) => Array.from(v.dataSync()));
  m.dispose();
  return out;
}

describe('clip-train', () => {
  it('retrieval top-1 is the argmax of each row and column of the similarities', () => {
    // 3 texts × 3 images, unit 2-d embeddings: text 0 ≈ image 1, text 1 ≈ image 0, text 2 ≈ image 2
    const t = Float32Array.from([0, 1, 1, 0, 0.6, 0.8]);
    const i = Float32Array.from([1, 0, 0, 1, 0.6, 0.8]);
    expect(retrievalTop1(t, i, 3, 2)).toEqual({ t2i: [1, 0, 2], i2t: [1, 0, 2] });
  });

  it('learns retrieval of held-out shape × colour pairs far above chance; its folder ranks the matching caption first', async () => {
    expect(() => checkPluginShape(clipPlugin, 'test')).not.toThrow();
    const run = await store.create({ name: 'clip', kind: 'stage' });
    const logs: Record<string, number>[] = [];
    const config = ClipTrainConfig.parse({ model: MODEL, steps: 200, batch_size: 64, lr: 3e-3, lr_warmup_steps: 20, log_every: 50, eval_every: 200, checkpoint_every: 200, eval_count: HELD, judge: 'shapes' });
    const before = tf.memory().numTensors;
    const res = await clipPlugin.run(stageContext(run, { config, inputs, onLog: (m) => logs.push(m) }));
    expect(tf.memory().numTensors).toBe(before);
    const dir = res.artifacts!.clip!;
    expect(readdirSync(dir)).toEqual(expect.arrayContaining(['config.json', 'model.safetensors', 'preprocessor_config.json', 'tokenizer.json']));
    const last = Object.assign({}, ...logs.filter((m) => 'eval/retrieval/t2i_top1' in m));
    const chance = 1 / HELD;
    expect(last['eval/retrieval/chance']).toBeCloseTo(chance, 6);
    expect(last['eval/retrieval/t2i_top1']).toBeGreaterThan(3 * chance);
    expect(last['eval/retrieval/i2t_top1']).toBeGreaterThan(3 * chance);
    expect(last['eval/retrieval/t2i_top1_attrs']).toBeGreaterThanOrEqual(last['eval/retrieval/t2i_top1']);
    expect(last['eval/retrieval/t2i_attr_acc/colour']).toBeGreaterThan(3 / 8); // 8 colours
    expect(last['eval/loss']).toBeLessThan(Math.log(HELD));
    expect(last['eval/shape_swap_acc']).toBeGreaterThanOrEqual(0); // logged; this tiny model does not compose shape with an unseen colour

    // the exported scorer: each held-out image scores its own caption above the mean of the others
    const scorer = await loadClipScorer(dir);
    // the upstream tokenizer is BART-style (</s> at 2); the folder's has it at the highest id, as its config says
    expect(scorer.clip.config.text_config.eos_token_id).toBe(scorer.tokenizer.vocabSize - 1);
    expect(scorer.tokenizer.eosId).toBe(scorer.tokenizer.vocabSize - 1);
    const held = await loadImageSet(inputs.data!.artifacts.heldout!, { resolution: 32, signal: new AbortController().signal, warn: () => {} });
    const per = 32 * 32 * 3;
    const imgs = Array.from({ length: 8 }, (_, k) => Float32Array.from(held.pixels.subarray(k * per, (k + 1) * per), (v) => (v + 1) / 2));
    let wins = 0;
    for (let k = 0; k < 8; k++) {
      const scores = clipScores(scorer, held.captions.slice(0, 8), imgs.map(() => imgs[k]!), 32);
      if (rankByScore(scores)[0] === k) wins++;
    }
    expect(wins).toBeGreaterThanOrEqual(3); // chance: 1 in 8
    // shape swap: each image against its caption with the shape word swapped for each of the 8, as clipScores ranks them
    const n = 24;
    const heldEmb = embedImages(scorer, Array.from({ length: n }, (_, k) => Float32Array.from(held.pixels.subarray(k * per, (k + 1) * per), (v) => (v + 1) / 2)), 32);
    let own = 0;
    for (let k = 0; k < n; k++) {
      const caption = held.captions[k]!;
      const shape = SHAPES.find((s) => caption.includes(s))!;
      const img = Float32Array.from(held.pixels.subarray(k * per, (k + 1) * per), (v) => (v + 1) / 2);
      const scores = clipScores(scorer, SHAPES.map((s) => caption.replace(shape, s)), SHAPES.map(() => img), 32);
      if (SHAPES[rankByScore(scores)[0]!] === shape) own++;
    }
    expect(shapeSwapAccuracy(scorer, held.captions.slice(0, n), heldEmb, MODEL.projection_dim)).toBeCloseTo(own / n, 9);
    scorer.clip.dispose();
  });

  it('stopping at step 3 and resuming gives the weights of an uninterrupted run at step 6 (rows mixed with VQGAN reconstructions, hard negative captions)', async () => {
    const config = ClipTrainConfig.parse({ model: MODEL, steps: 6, batch_size: 16, grad_accumulation: 2, lr: 3e-3, lr_warmup_steps: 1, log_every: 1, eval_every: 3, checkpoint_every: 2, eval_count: 16, vqgan: vqganDir, reconstruction_prob: 0.5, hard_negatives: 2, negative_words: 'shapes' });
    const a = await store.create({ name: 'clip-a', kind: 'stage' });
    const resA = await clipPlugin.run(stageContext(a, { config, inputs }));
    const b = await store.create({ name: 'clip-b', kind: 'stage' });
    const ctl = new AbortController();
    await clipPlugin.run(stageContext(b, { config, inputs, signal: ctl.signal, onLog: (m, s) => s === 3 && 'train/loss' in m && ctl.abort() }));
    const c = await store.create({ name: 'clip-c', kind: 'stage', resumed_from: b.id });
    const resC = await clipPlugin.run(stageContext(c, { config, inputs }));
    expect(await weights(resC.artifacts!.clip!)).toEqual(await weights(resA.artifacts!.clip!));
    // the reconstructions change what CLIP learns: the same run on real images only ends elsewhere
    const d = await store.create({ name: 'clip-d', kind: 'stage' });
    const resD = await clipPlugin.run(stageContext(d, { config: { ...config, vqgan: '' }, inputs }));
    expect(await weights(resD.artifacts!.clip!)).not.toEqual(await weights(resA.artifacts!.clip!));
    // and so do the hard negatives
    const e = await store.create({ name: 'clip-no-negatives', kind: 'stage' });
    const resE = await clipPlugin.run(stageContext(e, { config: { ...config, hard_negatives: 0, negative_words: null }, inputs }));
    expect(await weights(resE.artifacts!.clip!)).not.toEqual(await weights(resA.artifacts!.clip!));
  }, 180_000); // five runs of up to 6 steps, each reconstructing its rows: over 60 s on a slow, loaded machine

  it('hard negatives need word groups that occur in the captions; bad groups are named', async () => {
    const base = { model: MODEL, steps: 1, batch_size: 16, lr_warmup_steps: 0, eval_count: 16 };
    const attempt = async (extra: Record<string, unknown>) => {
      const run = await store.create({ name: 'clip-negatives-config', kind: 'stage' });
      return clipPlugin.run(stageContext(run, { config: ClipTrainConfig.parse({ ...base, ...extra }), inputs }));
    };
    await expect(attempt({ hard_negatives: 2 })).rejects.toThrow(/hard_negatives 2 needs with.negative_words/);
    await expect(attempt({ negative_words: 'shapes' })).rejects.toThrow(/negative_words is set but with.hard_negatives is 0/);
    await expect(attempt({ hard_negatives: 1, negative_words: [['cat', 'dog']] })).rejects.toThrow(/no training caption contains a word of with.negative_words/);
    await expect(attempt({ hard_negatives: 1, negative_words: [['red', 'blue'], ['blue', 'circle']] })).rejects.toThrow(/with.negative_words: "blue" is in word group 1 and word group 2/);
  });

  it('refuses a VQGAN of another resolution, naming both', async () => {
    const other = Vqgan.create({ ch: 4, ch_mult: [1, 2], num_res_blocks: 0, attn_resolutions: [], z_channels: 4, n_embed: 16, embed_dim: 4, num_groups: 2, resolution: 16 }, 1);
    const dir = join(root, 'vqgan16');
    await saveVqgan(other, dir);
    other.dispose();
    const run = await store.create({ name: 'clip-e', kind: 'stage' });
    const config = ClipTrainConfig.parse({ model: MODEL, steps: 1, batch_size: 16, lr_warmup_steps: 0, eval_count: 16, vqgan: dir });
    await expect(clipPlugin.run(stageContext(run, { config, inputs }))).rejects.toThrow(/works at 16 px, the CLIP reads 32 px/);
  });
});
