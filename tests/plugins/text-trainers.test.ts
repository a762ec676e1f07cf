/**
 * The text-side trainers on tiny data: tokenizer-train → bart-pretrain → seq2seq-train with the encoder
 * warm start. Exact resume for both trainers, the frozen encoder staying the pretrained one, the model
 * folder generation loads, and a VQGAN whose digest changed refused.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import bartPlugin, { BartPretrainConfig, textInfilling } from '../../plugins/bart-pretrain/index.js';
import seq2seqPlugin, { Seq2SeqTrainConfig } from '../../plugins/seq2seq-train/index.js';
import tokenizerPlugin, { TokenizerTrainConfig } from '../../plugins/tokenizer-train/index.js';
import { checkPluginShape } from '../../src/core/plugins/registry.js';
import type { StageOutputs } from '../../src/core/plugins/types.js';
import { RunStore } from '../../src/core/runs/index.js';
import { initCompute } from '../../src/ml/backend.js';
import { loadDalleBart } from '../../src/ml/models/dallebart.js';
import { Rng } from '../../src/ml/rng.js';
import { generateImages, loadText2Image, ModelFolderError } from '../../src/ml/text2image.js';
import { cli } from '../support/cli.js';
import { stageContext } from '../support/stage-context.js';
import { tinyText2ImageInputs } from '../support/tiny-text2image.js';

let root: string;
let store: RunStore;
const inputs: Record<string, StageOutputs> = {};
const MODEL = { d_model: 32, encoder_layers: 1, decoder_layers: 1, attention_heads: 2, ffn_dim: 48, max_text_length: 20 };

beforeAll(async () => {
  await initCompute({ backend: 'wasm' });
  root = mkdtempSync(join(tmpdir(), 'minidalle-text-'));
  store = new RunStore(join(root, 'runs'), { onWarning: () => {} });
  const tiny = await tinyText2ImageInputs(root);
  inputs.data = tiny.data;
  inputs.encode = tiny.encode;
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

async function tensorsOf(dir: string, filter: (n: string) => boolean = () => true): Promise<Map<string, number[]>> {
  const m = await loadDalleBart(dir);
  const out = new Map<string, number[]>();
  for (const [n, v] of m.params.entries()) if (filter(n)) out.set(n, Array.from(v.dataSync()));
  m.dispose();
  return out;
}

describe('text-side trainers', () => {
  it('tokenizer-train writes a tokenizer.json that round-trips the captions', async () => {
    expect(() => checkPluginShape(tokenizerPlugin, 'test')).not.toThrow();
    const run = await store.create({ name: 'tok', kind: 'stage' });
    const res = await tokenizerPlugin.run(stageContext(run, { config: TokenizerTrainConfig.parse({ vocab_size: 300, lowercase: true }), inputs: { data: inputs.data! } }));
    expect(readdirSync(res.artifacts!.tokenizer!)).toContain('tokenizer.json');
    expect(res.summary).toMatchObject({ captions: 40, vocab_size: 300 });
    inputs.tokenizer = { runId: run.id, outDir: run.outDir, artifacts: res.artifacts!, summary: {} };
  });

  it('text infilling masks about the asked share in spans, one <mask> per span', () => {
    const rng = new Rng(3);
    const tokens = Array.from({ length: 100 }, (_, i) => 10 + i);
    const noised = textInfilling(tokens, rng, 4, 0.3, 3);
    const kept = noised.filter((t) => t !== 4);
    expect(kept.length).toBeGreaterThanOrEqual(60);
    expect(kept.length).toBeLessThanOrEqual(75);
    expect(kept).toEqual([...kept].sort((a, b) => a - b)); // order kept
    expect(noised.some((t, i) => t === 4 && noised[i + 1] === 4)).toBe(false); // a span is one mask
    expect(textInfilling(tokens, new Rng(3), 4, 0, 3)).toEqual(tokens);
  });

  it('bart-pretrain: stopping at step 3 and resuming gives the weights of an uninterrupted run at step 6', async () => {
    expect(() => checkPluginShape(bartPlugin, 'test')).not.toThrow();
    const config = BartPretrainConfig.parse({ model: MODEL, steps: 6, batch_size: 8, lr: 3e-3, lr_warmup_steps: 1, log_every: 1, eval_every: 3, checkpoint_every: 2, eval_count: 8 });
    const ins = { data: inputs.data!, tokenizer: inputs.tokenizer! };
    const a = await store.create({ name: 'bart-a', kind: 'stage' });
    const before = tf.memory().numTensors;
    const resA = await bartPlugin.run(stageContext(a, { config, inputs: ins }));
    expect(tf.memory().numTensors).toBe(before);
    expect(resA.summary?.backend).toBe('wasm');
    const b = await store.create({ name: 'bart-b', kind: 'stage' });
    const ctl = new AbortController();
    await bartPlugin.run(stageContext(b, { config, inputs: ins, signal: ctl.signal, onLog: (m, s) => s === 3 && 'train/loss' in m && ctl.abort() }));
    const c = await store.create({ name: 'bart-c', kind: 'stage', resumed_from: b.id });
    const resC = await bartPlugin.run(stageContext(c, { config, inputs: ins }));
    expect(await tensorsOf(resC.artifacts!.model!)).toEqual(await tensorsOf(resA.artifacts!.model!));
    inputs.bart = { runId: a.id, outDir: a.outDir, artifacts: resA.artifacts!, summary: {} };
  });

  it('seq2seq-train: warm start from bart-pretrain (kept while frozen), exact resume, and a model folder generation loads', async () => {
    expect(() => checkPluginShape(seq2seqPlugin, 'test')).not.toThrow();
    const config = Seq2SeqTrainConfig.parse({
      model: MODEL,
      encoder_init: inputs.bart!.artifacts.model,
      freeze_encoder_steps: 6,
      steps: 6,
      batch_size: 8,
      grad_accumulation: 2,
      lr: 3e-3,
      lr_warmup_steps: 1,
      log_every: 1,
      eval_every: 3,
      media_every: 6,
      checkpoint_every: 2,
      eval_count: 8,
      judge: 'shapes',
      judge_count: 4,
      samples_per_prompt: 2,
    });
    const ins = { encode: inputs.encode!, tokenizer: inputs.tokenizer! };
    const a = await store.create({ name: 's-a', kind: 'stage' });
    const meta: Record<string, unknown> = {};
    const media: { key: string; step: number; bytes: number }[] = [];
    const logs: Record<string, number>[] = [];
    const before = tf.memory().numTensors;
    const resA = await seq2seqPlugin.run(stageContext(a, { config, inputs: ins, meta, media, onLog: (m) => void logs.push(m) }));
    await a.flush();
    expect(tf.memory().numTensors).toBe(before);
    expect((meta.warm_start as { copied: string[] }).copied).toContain('model.encoder.layers.0.self_attn.q_proj.weight');
    expect(media.map((m) => [m.key, m.step])).toEqual([['samples', 6]]);
    const evals = logs.filter((m) => 'eval/loss' in m);
    expect(evals).toHaveLength(2);
    for (const k of ['shape', 'colour', 'position', 'size']) expect(evals[1]![`eval/attr_acc/${k}`]).toEqual(expect.any(Number));
    expect(logs.some((m) => 'train_prompts/all_correct' in m)).toBe(true);
    expect(logs.find((m) => 'train/loss' in m)).toHaveProperty(['grad_norm/model.decoder.layers.0']);

    // frozen for all 6 steps: the encoder is still bart-pretrain's, bit for bit; the decoder moved
    const isEnc = (n: string): boolean => n.startsWith('model.encoder.layers.');
    const pretrained = await tensorsOf(inputs.bart!.artifacts.model!, isEnc);
    const trained = await tensorsOf(resA.artifacts!.model!, isEnc);
    expect(trained).toEqual(pretrained);

    // stop at 3, resume in a new run: same weights at 6
    const b = await store.create({ name: 's-b', kind: 'stage' });
    const ctl = new AbortController();
    await seq2seqPlugin.run(stageContext(b, { config, inputs: ins, signal: ctl.signal, onLog: (m, s) => s === 3 && 'train/loss' in m && ctl.abort() }));
    const c = await store.create({ name: 's-c', kind: 'stage', resumed_from: b.id });
    const resC = await seq2seqPlugin.run(stageContext(c, { config, inputs: ins }));
    expect(await tensorsOf(resC.artifacts!.model!)).toEqual(await tensorsOf(resA.artifacts!.model!));

    // the model folder generates, and the same seed gives the same images
    const t2i = await loadText2Image(resA.artifacts!.model!);
    const g1 = generateImages(t2i, ['a red circle'], { samples: 2, seed: 5, sampling: { condScale: 3 } });
    const g2 = generateImages(t2i, ['a red circle'], { samples: 2, seed: 5, sampling: { condScale: 3 } });
    expect(g1.map((g) => Array.from(g.codes))).toEqual(g2.map((g) => Array.from(g.codes)));
    expect(g1[0]!.rgb).toHaveLength(16 * 16 * 3);
    t2i.dispose();
    expect(tf.memory().numTensors).toBe(before);

    // the CLI: PNGs, the labelled grid and generations.json, from the model folder
    const out = join(root, 'gen');
    writeFileSync(join(root, 'prompts.txt'), '# shapes\na blue square at the top\n');
    const r = cli(root, ['generate', 'a red circle', '--prompts', join(root, 'prompts.txt'), '--model', resA.artifacts!.model!, '-n', '2', '--seed', '3', '--cond-scale', '2', '--out', out]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(readdirSync(out).sort()).toEqual(['generations.json', 'grid.png', 'p00-s00.png', 'p00-s01.png', 'p01-s00.png', 'p01-s01.png']);
    const gen = JSON.parse(readFileSync(join(out, 'generations.json'), 'utf8')) as { sampling: { cond_scale: number }; images: { prompt: string; codes: number[]; file: string }[] };
    expect(gen.sampling.cond_scale).toBe(2); // the flag wins over the model folder's generation_config.json
    expect(JSON.parse(readFileSync(join(resA.artifacts!.model!, 'generation_config.json'), 'utf8'))).toMatchObject({ condition_scale: 3, top_k: 0, temperature: 1 });
    const byDefault = cli(root, ['generate', 'a red circle', '--model', resA.artifacts!.model!, '-n', '1', '--out', join(root, 'gen-default')]);
    expect(byDefault.code).toBe(0);
    expect(JSON.parse(readFileSync(join(root, 'gen-default', 'generations.json'), 'utf8')).sampling).toEqual({ top_k: 0, top_p: 1, temperature: 1, cond_scale: 3 });
    expect(gen.images.map((i) => i.prompt)).toEqual(['a red circle', 'a red circle', 'a blue square at the top', 'a blue square at the top']);
    const lib = await loadText2Image(resA.artifacts!.model!);
    const again = generateImages(lib, ['a red circle'], { samples: 2, seed: 3, sampling: { condScale: 2 } });
    lib.dispose();
    expect(gen.images.slice(0, 2).map((i) => i.codes)).toEqual(again.map((g) => Array.from(g.codes))); // the CLI's images are the library's
    expect(existsSync(join(out, 'grid.png'))).toBe(true);

    // a VQGAN whose weights changed after training is refused, naming the file
    writeFileSync(join(root, 'vqgan', 'model.safetensors'), 'changed');
    await expect(loadText2Image(resA.artifacts!.model!)).rejects.toThrow(ModelFolderError);
    await expect(loadText2Image(resA.artifacts!.model!)).rejects.toThrow(/model\.safetensors has sha256 .* but the model was trained with/);
    const refused = cli(root, ['generate', 'a red circle', '--model', resA.artifacts!.model!, '--out', join(root, 'gen2')]);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/its VQGAN .*model\.safetensors has sha256 .* the VQGAN was changed or replaced/);
    expect(existsSync(join(root, 'gen2'))).toBe(false);
  });
});
