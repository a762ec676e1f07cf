import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initCompute } from '../../src/ml/backend.js';
import {
  bosTokenId,
  DalleBart,
  DalleBartConfigError,
  dalleBartConfigFromHf,
  dalleBartParamSpecs,
  decoderVocabSize,
  disposeDecodeState,
  encoderParamNames,
  loadDalleBart,
  noisyDecoderInput,
  resolveDalleBartConfig,
  saveDalleBart,
  type DalleBartConfig,
} from '../../src/ml/models/dallebart.js';
import { AdamW, clipByGlobalNorm, disposeGrads, valueAndGrads } from '../../src/ml/optim/index.js';
import { LoadParamsError } from '../../src/ml/params.js';
import { Rng } from '../../src/ml/rng.js';
import { readSafetensors, writeSafetensors } from '../../src/ml/safetensors.js';
import { maxAbsDiff, TINY } from './helpers.js';

const TINY_BART: Partial<DalleBartConfig> = { ...TINY, model_type: 'bart', use_glu: false, use_bias: true };

function text(rng: Rng, B: number, L: number, lengths: number[], vocab = 40): { ids: tf.Tensor2D; mask: tf.Tensor2D } {
  const ids = new Int32Array(B * L);
  const mask = new Int32Array(B * L);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < L; t++) {
      const real = t < (lengths[b] as number);
      ids[b * L + t] = real ? 3 + rng.int(vocab - 3) : 1; // 1 = padding
      mask[b * L + t] = real ? 1 : 0;
    }
  }
  return { ids: tf.tensor2d(ids, [B, L], 'int32'), mask: tf.tensor2d(mask, [B, L], 'int32') };
}

function randomCodes(rng: Rng, B: number, T: number, V: number): tf.Tensor2D {
  return tf.tensor2d(Int32Array.from({ length: B * T }, () => rng.int(V)), [B, T], 'int32');
}

beforeAll(async () => {
  await initCompute({ backend: 'wasm', selfCheck: false });
});

describe('DalleBart config', () => {
  it('fills defaults (dalle-mini mini, ≈0.4 B parameters) and refuses bad fields by name', () => {
    const c = resolveDalleBartConfig();
    expect([c.encoder_layers, c.decoder_layers, c.d_model, c.encoder_attention_heads, c.encoder_ffn_dim, c.use_glu]).toEqual([12, 12, 1024, 16, 2730, true]);
    expect([c.max_text_length, c.image_length, c.image_vocab_size]).toEqual([64, 256, 16384]);
    // counted from the spec list: nothing is allocated
    const n = dalleBartParamSpecs(c).reduce((a, s) => a + s.shape.reduce((x, y) => x * y, 1), 0);
    expect(n).toBeGreaterThan(0.4e9);
    expect(n).toBeLessThan(0.45e9);
    expect(() => resolveDalleBartConfig({ d_model: 30, encoder_attention_heads: 4 })).toThrow(/encoder_attention_heads.*not divisible/);
    expect(() => resolveDalleBartConfig({ ln_positions: 'normformer' as never })).toThrow(DalleBartConfigError);
    expect(() => resolveDalleBartConfig({ decoder_layer: 3 } as never)).toThrow(/decoder_layer/);
  });
});

describe('DalleBart model', () => {
  const models: DalleBart[] = [];
  afterAll(() => models.forEach((m) => m.dispose()));

  it('has the HF names and shapes, and the forward shapes', () => {
    const m = DalleBart.create(TINY, 1);
    models.push(m);
    const shapes = new Map(m.params.names().map((n) => [n, m.params.get(n).shape]));
    expect(shapes.get('model.shared.weight')).toEqual([40, 32]);
    expect(shapes.get('model.encoder.embed_positions.weight')).toEqual([8 + 2, 32]); // HF offset 2
    expect(shapes.get('model.decoder.embed_positions.weight')).toEqual([16 + 1, 32]); // image_length + 1
    expect(shapes.get('model.decoder.embed_tokens.weight')).toEqual([25, 32]); // codes + BOS
    expect(shapes.get('lm_head.weight')).toEqual([32, 25]); // internal [in, out]; (25, 32) on disk
    for (const n of ['model.encoder.layers.1.self_attn.q_proj.weight', 'model.encoder.layers.0.fc0.weight', 'model.encoder.layers.0.self_attn_layer_norm.weight',
      'model.encoder.layers.0.final_layer_norm.bias', 'model.encoder.layernorm_embedding.weight', 'model.decoder.layers.1.encoder_attn.k_proj.weight',
      'model.decoder.layers.0.encoder_attn_layer_norm.weight', 'model.decoder.layernorm_embedding.bias']) expect(shapes.has(n), n).toBe(true);
    expect(shapes.has('model.encoder.layers.0.self_attn.q_proj.bias')).toBe(false); // use_bias false
    expect(shapes.has('final_logits_bias')).toBe(false);
    expect(encoderParamNames(m).every((n) => n === 'model.shared.weight' || n.startsWith('model.encoder.'))).toBe(true);
    expect(encoderParamNames(m)).toHaveLength(1 + 1 + 2 + 2 * (4 + 2 + 3 + 2));

    const rng = new Rng(5);
    const { ids, mask } = text(rng, 2, 8, [8, 5]);
    const codes = randomCodes(rng, 2, 16, 24);
    const enc = m.encode(ids, mask);
    expect(enc.shape).toEqual([2, 8, 32]);
    const { decoderInput } = m.teacherForcing(codes);
    expect(Array.from(decoderInput.dataSync().slice(0, 2))).toEqual([bosTokenId(m.config), codes.dataSync()[0]]);
    const logits = m.decoderForward(enc, mask, decoderInput);
    expect(logits.shape).toEqual([2, 16, decoderVocabSize(m.config)]);
    const loss = m.loss(ids, mask, codes);
    expect(loss.shape).toEqual([]);
    // random init: loss ≈ ln(25)
    expect(Math.abs(loss.dataSync()[0]! - Math.log(25))).toBeLessThan(0.3);
    tf.dispose([ids, mask, codes, enc, decoderInput, logits, loss]);
  });

  it('ignores padded text, and its decoder is causal', () => {
    const m = DalleBart.create({ ...TINY, ln_positions: 'preln', use_final_ln_encoder: true, use_final_ln_decoder: true }, 2);
    models.push(m);
    expect(m.params.has('model.encoder.layer_norm.weight') && m.params.has('model.decoder.layer_norm.bias')).toBe(true);
    const rng = new Rng(6);
    const a = text(rng, 1, 8, [5]);
    // same text, different ids under the padding
    const idsB = tf.tensor2d(Int32Array.from(a.ids.dataSync(), (v, i) => (i >= 5 ? 7 : v)), [1, 8], 'int32');
    const codes = randomCodes(rng, 1, 16, 24);
    const { decoderInput } = m.teacherForcing(codes);
    const la = tf.tidy(() => m.decoderForward(m.encode(a.ids, a.mask), a.mask, decoderInput));
    const lb = tf.tidy(() => m.decoderForward(m.encode(idsB, a.mask), a.mask, decoderInput));
    expect(maxAbsDiff(la, lb)).toBe(0);
    // change the last 6 decoder inputs: the first 10 positions' logits do not move
    const changed = tf.tensor2d(Int32Array.from(decoderInput.dataSync(), (v, i) => (i >= 10 ? (v + 1) % 24 : v)), [1, 16], 'int32');
    const lc = tf.tidy(() => m.decoderForward(m.encode(a.ids, a.mask), a.mask, changed));
    expect(maxAbsDiff(tf.slice(la, [0, 0, 0], [1, 10, 25]), tf.slice(lc, [0, 0, 0], [1, 10, 25]))).toBeLessThan(1e-6);
    expect(maxAbsDiff(la, lc)).toBeGreaterThan(1e-4);
    tf.dispose([a.ids, a.mask, idsB, codes, decoderInput, la, lb, changed, lc]);
  });

  it.each([
    ['dallebart', TINY],
    ['bart', TINY_BART],
  ] as const)('%s: greedy decoding with the KV cache equals full recompute', (_flavour, cfg) => {
    const m = DalleBart.create(cfg, 3);
    models.push(m);
    const c = m.config;
    const rng = new Rng(7);
    const B = 2;
    const { ids, mask } = text(rng, B, 8, [8, 4]);
    const enc = m.encode(ids, mask);
    const steps = c.model_type === 'dallebart' ? c.image_length : 7;
    const start = c.model_type === 'dallebart' ? bosTokenId(c) : c.decoder_start_token_id;
    const V = decoderVocabSize(c);
    // the sampler's rule: never pick BOS
    const pick = (logits: tf.Tensor2D): number[] => tf.tidy(() => {
      const masked = c.model_type === 'dallebart' ? tf.concat([tf.slice(logits, [0, 0], [B, V - 1]), tf.fill([B, 1], -1e9)], 1) : logits;
      return Array.from(tf.argMax(masked, 1).dataSync());
    });

    const before = tf.memory().numTensors;
    let state = m.startDecoding(enc, mask);
    let tokens = Array<number>(B).fill(start);
    const cached: number[][] = [];
    const cachedLogits: Float32Array[] = [];
    for (let t = 0; t < steps; t++) {
      const input = tf.tensor2d(tokens, [B, 1], 'int32');
      const out = m.decodeStep(state, input);
      state = out.state;
      tokens = pick(out.logits);
      cached.push(tokens);
      cachedLogits.push(out.logits.dataSync().slice() as Float32Array);
      tf.dispose([input, out.logits]);
    }
    disposeDecodeState(state);
    expect(tf.memory().numTensors).toBe(before);

    // full recompute: the whole prefix each step
    const seq: number[][] = Array.from({ length: B }, () => [start]);
    let worst = 0;
    for (let t = 0; t < steps; t++) {
      const input = tf.tensor2d(seq.flat(), [B, t + 1], 'int32');
      const logits = tf.tidy(() => tf.reshape(tf.slice(m.decoderForward(enc, mask, input), [0, t, 0], [B, 1, V]), [B, V]) as tf.Tensor2D);
      const next = pick(logits);
      expect(next, `step ${t}`).toEqual(cached[t]);
      const full = logits.dataSync();
      const inc = cachedLogits[t] as Float32Array;
      for (let i = 0; i < full.length; i++) worst = Math.max(worst, Math.abs((full[i] as number) - (inc[i] as number)));
      next.forEach((v, b) => seq[b]!.push(v));
      tf.dispose([input, logits]);
    }
    expect(worst).toBeLessThan(1e-5);
    tf.dispose([ids, mask, enc]);
  });

  it('text BART flavour ties embeddings and lm head, with HF final_logits_bias', () => {
    const m = DalleBart.create(TINY_BART, 4);
    models.push(m);
    const names = m.params.names();
    expect(names).toContain('final_logits_bias');
    expect(names).toContain('model.encoder.layers.0.self_attn.q_proj.bias');
    expect(names).not.toContain('lm_head.weight');
    expect(names).not.toContain('model.decoder.embed_tokens.weight');
    expect(m.params.get('final_logits_bias').trainable).toBe(false);
    expect(m.params.get('model.decoder.embed_positions.weight').shape).toEqual([8 + 2, 32]);
    // padding targets are not scored: padding rows of the labels are −100
    const targets = tf.tensor2d([5, 6, 7, 1, 8, 9, 1, 1], [2, 4], 'int32');
    const { decoderInput, labels } = m.teacherForcing(targets);
    expect(Array.from(decoderInput.dataSync())).toEqual([2, 5, 6, 7, 2, 8, 9, 1]);
    expect(Array.from(labels.dataSync())).toEqual([5, 6, 7, -100, 8, 9, -100, -100]);
    tf.dispose([targets, decoderInput, labels]);
  });

  it.each([
    ['dallebart', TINY],
    ['bart', TINY_BART],
  ] as const)('%s: save/load round trip is exact; a wrong checkpoint is refused with the list', async (flavour, cfg) => {
    const m = DalleBart.create({ ...cfg, dropout: 0.1 }, 8);
    models.push(m);
    const dir = mkdtempSync(join(tmpdir(), `minidalle-dallebart-${flavour}-`));
    await saveDalleBart(m, dir);
    const json = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    expect(json.model_type).toBe(flavour);
    expect([json.d_model, json.encoder_layers, json.use_glu, json.ln_positions, json.image_vocab_size, json.image_length, json.max_text_length]).toEqual([32, 2, cfg.use_glu ?? true, 'postln', 24, 16, 8]);
    if (flavour === 'bart') expect(json.max_position_embeddings).toBe(8);
    const file = await readSafetensors(join(dir, 'model.safetensors'));
    if (flavour === 'dallebart') expect(file.tensors.get('lm_head.weight')!.shape).toEqual([25, 32]); // torch (out, in)
    expect(file.tensors.get('model.encoder.layers.0.self_attn.q_proj.weight')!.shape).toEqual([32, 32]);

    const back = await loadDalleBart(dir);
    models.push(back);
    expect(back.config).toEqual(m.config);
    expect(back.params.names()).toEqual(m.params.names());
    for (const n of m.params.names()) expect(back.params.get(n).dataSync(), n).toEqual(m.params.get(n).dataSync());

    // HF's tied copies are accepted; an unknown tensor, a missing one and a wrong shape are all listed
    const tensors = new Map(file.tensors);
    tensors.set('model.encoder.embed_tokens.weight', tensors.get('model.shared.weight')!);
    writeSafetensors(join(dir, 'model.safetensors'), tensors);
    (await loadDalleBart(dir)).dispose();
    tensors.delete('model.encoder.layers.1.fc1.weight');
    tensors.set('model.decoder.layers.0.self_attn.k_proj.weight', { dtype: 'float32', shape: [32, 16], data: new Float32Array(512) });
    tensors.set('model.decoder.layers.9.fc1.weight', { dtype: 'float32', shape: [1], data: new Float32Array(1) });
    writeSafetensors(join(dir, 'model.safetensors'), tensors);
    const err = await loadDalleBart(dir).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LoadParamsError);
    const problems = (err as LoadParamsError).mismatches.map((x) => `${x.problem} ${x.name}`).sort();
    expect(problems).toEqual(['missing model.encoder.layers.1.fc1.weight', 'shape model.decoder.layers.0.self_attn.k_proj.weight', 'unexpected model.decoder.layers.9.fc1.weight']);
  });

  it('trains with seeded dropout: reproducible from the Rng, different from evaluation', () => {
    const m = DalleBart.create({ ...TINY, dropout: 0.1, attention_dropout: 0.1, activation_dropout: 0.1 }, 13);
    models.push(m);
    const rng = new Rng(14);
    const { ids, mask } = text(rng, 2, 8, [8, 3]);
    const codes = randomCodes(rng, 2, 16, 24);
    const run = (seed: number): number => tf.tidy(() => m.loss(ids, mask, codes, { training: true, rng: new Rng(seed) }).dataSync()[0] as number);
    const evalLoss = tf.tidy(() => m.loss(ids, mask, codes).dataSync()[0] as number);
    expect(run(1)).toBe(run(1));
    expect(run(1)).not.toBe(run(2));
    expect(run(1)).not.toBe(evalLoss);
    expect(() => tf.tidy(() => m.loss(ids, mask, codes, { training: true }))).toThrow(/needs an Rng/);
    tf.dispose([ids, mask, codes]);
  });

  it('input noise replaces teacher-forced input codes, never the BOS, reproducibly; the labels stay', () => {
    const T = 16;
    const ids = Int32Array.from({ length: 4 * T }, (_, i) => (i % T === 0 ? 24 : i % 24));
    const a = noisyDecoderInput(ids, T, 0.5, 24, new Rng(3));
    expect(noisyDecoderInput(ids, T, 0.5, 24, new Rng(3))).toEqual(a);
    expect(noisyDecoderInput(ids, T, 0, 24, new Rng(3))).toEqual(ids);
    const changed = a.filter((v, i) => v !== ids[i]).length;
    expect(changed).toBeGreaterThan(15); // about 0.5 · 60 · 23/24
    expect(changed).toBeLessThan(45);
    for (let b = 0; b < 4; b++) expect(a[b * T]).toBe(24);
    expect(Math.max(...noisyDecoderInput(ids, T, 1, 24, new Rng(4)))).toBe(24); // only the BOS reaches 24
    expect(() => noisyDecoderInput(ids, 5, 0.1, 24, new Rng(1))).toThrow(/rows of 5/);

    const m = DalleBart.create(TINY, 21);
    models.push(m);
    const rng = new Rng(22);
    const { ids: text8, mask } = text(rng, 2, 8, [8, 3]);
    const codes = randomCodes(rng, 2, 16, 24);
    const loss = (opts: Parameters<DalleBart['loss']>[3]): number => tf.tidy(() => m.loss(text8, mask, codes, opts).dataSync()[0] as number);
    const clean = loss({ training: true, rng: new Rng(5) });
    expect(loss({ training: true, rng: new Rng(5), inputNoise: 0 })).toBe(clean);
    expect(loss({ training: true, rng: new Rng(5), inputNoise: 0.3 })).toBe(loss({ training: true, rng: new Rng(5), inputNoise: 0.3 }));
    expect(loss({ training: true, rng: new Rng(5), inputNoise: 0.3 })).not.toBe(clean);
    expect(loss({ inputNoise: 0.3 })).toBe(loss({})); // evaluation sees the true codes
    expect(() => loss({ training: true, inputNoise: 0.3 })).toThrow(/needs opts.rng/);
    tf.dispose([text8, mask, codes]);
  });

  it('reads an HF BART config.json (bart-large-cnn style) as post-LN BART with biases, no GLU', () => {
    const c = dalleBartConfigFromHf({
      model_type: 'bart', vocab_size: 50264, d_model: 1024, encoder_layers: 12, decoder_layers: 12, encoder_attention_heads: 16, decoder_attention_heads: 16,
      encoder_ffn_dim: 4096, decoder_ffn_dim: 4096, max_position_embeddings: 1024, activation_function: 'gelu', dropout: 0.1, attention_dropout: 0,
      activation_dropout: 0, init_std: 0.02, scale_embedding: false, pad_token_id: 1, bos_token_id: 0, eos_token_id: 2, decoder_start_token_id: 2,
      normalize_before: false, add_final_layer_norm: false, forced_bos_token_id: 0, task_specific_params: { summarization: { num_beams: 4 } },
    });
    expect(c).toMatchObject({ model_type: 'bart', use_glu: false, use_bias: true, ln_positions: 'postln', use_final_ln_encoder: false, max_text_length: 1024, encoder_ffn_dim: 4096, vocab_size: 50264 });
    expect(dalleBartConfigFromHf({ model_type: 'bart', normalize_before: true, add_final_layer_norm: true })).toMatchObject({ ln_positions: 'preln', use_final_ln_encoder: true, use_final_ln_decoder: true });
    expect(() => dalleBartConfigFromHf({ model_type: 'dallebart', ln_positions: 'normformer' })).toThrow(/normformer.*not implemented/);
    expect(() => dalleBartConfigFromHf({ model_type: 't5' })).toThrow(/neither/);
  });

  it('a tiny DalleBart overfits 8 captions: loss far below the unigram entropy of the codes, no tensor growth', () => {
    const m = DalleBart.create(TINY, 11);
    models.push(m);
    const rng = new Rng(12);
    const N = 8;
    const { ids, mask } = text(rng, N, 8, [8, 6, 7, 5, 8, 4, 6, 8]);
    const codes = randomCodes(rng, N, 16, 24);
    const counts = new Map<number, number>();
    for (const v of codes.dataSync()) counts.set(v, (counts.get(v) ?? 0) + 1);
    const total = N * 16;
    const entropy = -[...counts.values()].reduce((a, n) => a + (n / total) * Math.log(n / total), 0); // nats
    const opt = new AdamW({ learningRate: 3e-3, weightDecay: 0 });
    const losses: number[] = [];
    const tensorCounts: number[] = [];
    for (let step = 0; step < 150; step++) {
      const { loss, grads } = valueAndGrads(m.params, () => m.loss(ids, mask, codes));
      const { grads: clipped } = clipByGlobalNorm(grads, 1.0);
      opt.apply(m.params, clipped);
      disposeGrads(clipped);
      losses.push(loss.dataSync()[0] as number);
      loss.dispose();
      tensorCounts.push(tf.memory().numTensors);
    }
    expect(entropy).toBeGreaterThan(2.5);
    expect(losses[losses.length - 1]!).toBeLessThan(0.1 * entropy);
    expect(new Set(tensorCounts.slice(2)).size).toBe(1);
    opt.dispose();
    tf.dispose([ids, mask, codes]);
  });
});
