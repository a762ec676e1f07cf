/**
 * clip-eval on toy models (a DalleBart trained a few steps on hashed codes, a CLIP trained a few steps on the
 * 16 px shapes): samples re-ranked best first, the table and grids written, best-of-N ≥ random-of-N, the
 * real-pair ceiling scored, and no tensor left behind.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import clipEval, { ClipEvalConfig } from '../../plugins/clip-eval/index.js';
import { generateCommand } from '../../src/commands/generate.js';
import clipTrain, { ClipTrainConfig } from '../../plugins/clip-train/index.js';
import seq2seq, { Seq2SeqTrainConfig } from '../../plugins/seq2seq-train/index.js';
import { checkPluginShape } from '../../src/core/plugins/registry.js';
import type { StageOutputs } from '../../src/core/plugins/types.js';
import { RunStore } from '../../src/core/runs/index.js';
import { initCompute } from '../../src/ml/backend.js';
import { saveTokenizer, trainByteLevelBpe } from '../../src/ml/tokenizers/index.js';
import { loadCaptions } from '../../src/ml/train/data.js';
import { stageContext } from '../support/stage-context.js';
import { tinyText2ImageInputs } from '../support/tiny-text2image.js';

let root: string;
let store: RunStore;
const inputs: Record<string, StageOutputs> = {};

beforeAll(async () => {
  await initCompute({ backend: 'wasm' });
  root = mkdtempSync(join(tmpdir(), 'minidalle-clip-eval-'));
  store = new RunStore(join(root, 'runs'), { onWarning: () => {} });
  const tiny = await tinyText2ImageInputs(root);
  inputs.data = tiny.data;
  inputs.encode = tiny.encode;
  const { captions } = await loadCaptions(tiny.data.artifacts.train!, { signal: new AbortController().signal, warn: () => {} });
  saveTokenizer(trainByteLevelBpe(captions, { vocabSize: 300, lowercase: true }), join(root, 'tok'));
  inputs.tokenizer = { runId: 't', outDir: root, artifacts: { tokenizer: join(root, 'tok', 'tokenizer.json') }, summary: {} };
  const model = { d_model: 32, encoder_layers: 1, decoder_layers: 1, attention_heads: 2, ffn_dim: 48, max_text_length: 20 };
  const s2s = await store.create({ name: 's2s', kind: 'stage' });
  const s2sConfig = Seq2SeqTrainConfig.parse({ model, steps: 4, batch_size: 8, lr: 3e-3, lr_warmup_steps: 1, eval_every: 4, media_every: 4, checkpoint_every: 4, eval_count: 8, top_k: 4, cond_scale: 2 });
  const s2sRes = await seq2seq.run(stageContext(s2s, { config: s2sConfig, inputs: { encode: inputs.encode, tokenizer: inputs.tokenizer } }));
  inputs.seq2seq = { runId: s2s.id, outDir: s2s.outDir, artifacts: s2sRes.artifacts!, summary: {} };
  const clip = await store.create({ name: 'clip', kind: 'stage' });
  const clipConfig = ClipTrainConfig.parse({ resolution: 16, model: { projection_dim: 16, text_width: 32, text_layers: 1, text_heads: 2, vision_width: 32, vision_layers: 1, vision_heads: 2, patch_size: 8, max_text_length: 20 }, steps: 4, batch_size: 16, lr_warmup_steps: 1, eval_every: 4, checkpoint_every: 4, eval_count: 8 });
  const clipRes = await clipTrain.run(stageContext(clip, { config: clipConfig, inputs: { data: inputs.data, tokenizer: inputs.tokenizer } }));
  inputs.clip = { runId: clip.id, outDir: clip.outDir, artifacts: clipRes.artifacts!, summary: {} };
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('clip-eval', () => {
  it('re-ranks N samples per prompt best first and writes the table, the top images and the grids', async () => {
    expect(() => checkPluginShape(clipEval, 'test')).not.toThrow();
    const run = await store.create({ name: 'eval', kind: 'stage' });
    const logs: Record<string, number>[] = [];
    const media: { key: string; step: number; bytes: number }[] = [];
    const config = ClipEvalConfig.parse({ prompt_count: 3, samples_per_prompt: 5, top: 2, grids: 2, real_count: 6 });
    const before = tf.memory().numTensors;
    const res = await clipEval.run(stageContext(run, { config, inputs: { data: inputs.data!, seq2seq: inputs.seq2seq!, clip: inputs.clip! }, onLog: (m) => logs.push(m), media }));
    expect(tf.memory().numTensors).toBe(before);
    const m = logs[0]!;
    expect(m['clip/best_of_n_score']).toBeGreaterThanOrEqual(m['clip/random_of_n_score']!);
    expect(m['clip/best_minus_random']).toBeCloseTo(m['clip/best_of_n_score']! - m['clip/random_of_n_score']!, 9);
    expect(m['clip/real_pairs_score']).toBeGreaterThanOrEqual(0);

    const table = JSON.parse(readFileSync(join(run.dir, 'media', 'table', 'clip_eval.table.json'), 'utf8')) as { columns: string[]; data: (string | number)[][] };
    expect(table.columns).toEqual(['prompt', 'rank', 'clip_score', 'image', 'seed']);
    expect(table.data).toHaveLength(3 * 2);
    for (let p = 0; p < 3; p++) {
      const rows = table.data.slice(p * 2, p * 2 + 2);
      expect(rows.map((r) => r[1])).toEqual([0, 1]);
      expect(rows[0]![2] as number).toBeGreaterThanOrEqual(rows[1]![2] as number); // best first
      expect(new Set(rows.map((r) => r[0])).size).toBe(1);
      for (const r of rows) expect(existsSync(join(run.dir, r[3] as string))).toBe(true);
    }
    expect(media.map((x) => x.key)).toEqual(['reranked/0', 'reranked/1']);
    expect(existsSync(res.artifacts!.images!)).toBe(true);
  });

  it('minidalle generate --clip re-ranks each prompt\'s samples and keeps the best --top, scores in generations.json', async () => {
    const quiet = { progress: { start: () => {}, tick: () => {}, end: () => {} }, log: () => {} };
    const base = { prompts: ['a red circle on the left', 'a small blue star'], model: inputs.seq2seq!.artifacts.model!, runsDir: join(root, 'runs'), samples: 5, seed: 3, ...quiet };
    const out = join(root, 'gen');
    const res = await generateCommand({ ...base, out, clip: join(inputs.clip!.outDir, '..'), top: 2 });
    expect(res.files.filter((f) => f.endsWith('.png')).sort()).toEqual(['grid.png', 'p00-rank00.png', 'p00-rank01.png', 'p01-rank00.png', 'p01-rank01.png']);
    const gen = JSON.parse(readFileSync(join(out, 'generations.json'), 'utf8')) as { top: number; images: { prompt_index: number; rank: number; clip_score: number; sample: number }[] };
    expect(gen.top).toBe(2);
    for (const p of [0, 1]) {
      const rows = gen.images.filter((im) => im.prompt_index === p);
      expect(rows.map((r) => r.rank)).toEqual([0, 1]);
      expect(rows[0]!.clip_score).toBeGreaterThanOrEqual(rows[1]!.clip_score);
    }
    // the kept images are the best of all five: without --top every sample is scored, and none beats rank 0
    const all = await generateCommand({ ...base, out: join(root, 'gen-all'), clip: inputs.clip!.artifacts.clip! });
    const every = JSON.parse(readFileSync(join(all.out, 'generations.json'), 'utf8')) as typeof gen;
    expect(every.images).toHaveLength(10);
    for (const p of [0, 1]) expect(Math.max(...every.images.filter((im) => im.prompt_index === p).map((im) => im.clip_score))).toBe(gen.images.find((im) => im.prompt_index === p && im.rank === 0)!.clip_score);
    await expect(generateCommand({ ...base, out: join(root, 'gen-x'), top: 2 })).rejects.toThrow(/--top .*--clip/);
  });
});
