import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initCompute } from '../../src/ml/backend.js';
import { DalleBart, encoderParamNames, saveDalleBart, type DalleBartConfig } from '../../src/ml/models/dallebart.js';
import { warmStartEncoder, WarmStartError } from '../../src/ml/models/warm-start.js';
import { readSafetensors, writeSafetensors, type RawTensor } from '../../src/ml/safetensors.js';
import { TINY } from './helpers.js';

/** The DalleBart being warm-started: a BART-style encoder (FFN, biases, post-LN) of width 32. */
const TARGET: Partial<DalleBartConfig> = { ...TINY, use_glu: false, use_bias: true };

const tmp = (tag: string): string => mkdtempSync(join(tmpdir(), `minidalle-warm-${tag}-`));

/**
 * Writes a folder as transformers writes a BartForConditionalGeneration: HF's own config.json keys only
 * (no ln_positions / use_glu: the defaults of BartConfig apply), tied copies of model.shared included.
 * Its decoder has 1 layer and its own sizes, which must not matter. Returns the source model too.
 */
async function writeHfBart(dir: string, vocab: number, positions: number, shards = 1): Promise<{ src: DalleBart; tensors: Map<string, RawTensor> }> {
  const src = DalleBart.create({ ...TARGET, model_type: 'bart', vocab_size: vocab, max_text_length: positions, decoder_layers: 1, decoder_ffn_dim: 48 }, 77);
  const scratch = tmp('scratch');
  await saveDalleBart(src, scratch);
  const tensors = new Map((await readSafetensors(join(scratch, 'model.safetensors'))).tensors);
  const shared = tensors.get('model.shared.weight') as RawTensor;
  for (const alias of ['model.encoder.embed_tokens.weight', 'model.decoder.embed_tokens.weight', 'lm_head.weight']) tensors.set(alias, shared);
  mkdirSync(dir, { recursive: true });
  const config = {
    model_type: 'bart', architectures: ['BartForConditionalGeneration'], vocab_size: vocab, max_position_embeddings: positions, d_model: 32,
    encoder_layers: 2, decoder_layers: 1, encoder_attention_heads: 4, decoder_attention_heads: 4, encoder_ffn_dim: 64, decoder_ffn_dim: 48,
    activation_function: 'gelu', scale_embedding: false, dropout: 0.1, attention_dropout: 0, activation_dropout: 0, init_std: 0.02,
    pad_token_id: 1, bos_token_id: 0, eos_token_id: 2, decoder_start_token_id: 2, normalize_before: false, add_final_layer_norm: false,
  };
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2));
  if (shards === 1) {
    writeSafetensors(join(dir, 'model.safetensors'), tensors);
  } else {
    const names = [...tensors.keys()].sort();
    const weightMap: Record<string, string> = {};
    for (let s = 0; s < shards; s++) {
      const file = `model-0000${s + 1}-of-0000${shards}.safetensors`;
      const part = new Map(names.filter((_, i) => i % shards === s).map((n) => [n, tensors.get(n) as RawTensor]));
      for (const n of part.keys()) weightMap[n] = file;
      writeSafetensors(join(dir, file), part);
    }
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }));
  }
  return { src, tensors };
}

function snapshot(m: DalleBart, filter: (n: string) => boolean = () => true): Map<string, Float32Array> {
  return new Map(m.params.names().filter(filter).map((n) => [n, m.params.get(n).dataSync().slice() as Float32Array]));
}

/** The model parameter in PyTorch layout, as plain numbers. */
function torchValues(m: DalleBart, name: string): Float32Array {
  const v = m.params.get(name);
  return tf.tidy(() => (m.params.kind(name) === 'linear' ? tf.transpose(v, [1, 0]) : v).dataSync().slice() as Float32Array);
}

beforeAll(async () => {
  await initCompute({ backend: 'wasm', selfCheck: false });
});

describe('warmStartEncoder', () => {
  const models: DalleBart[] = [];
  afterAll(() => models.forEach((m) => m.dispose()));

  it('copies the encoder bit-exactly from an HF-named BART folder and leaves the decoder untouched', async () => {
    const dir = tmp('hf');
    const { src, tensors } = await writeHfBart(dir, 40, 8);
    const model = DalleBart.create(TARGET, 1);
    models.push(src, model);
    const isDecoder = (n: string): boolean => !encoderParamNames(model).includes(n);
    const decoderBefore = snapshot(model, isDecoder);
    const lines: string[] = [];
    const report = await warmStartEncoder(model, dir, { log: (l) => lines.push(l) });

    expect(report.copied.sort()).toEqual(encoderParamNames(model).sort());
    expect(report.resized).toEqual([]);
    expect(report.mismatched).toEqual([]);
    for (const n of ['lm_head.weight', 'final_logits_bias', 'model.encoder.embed_tokens.weight', 'model.decoder.layers.0.fc1.weight', 'model.decoder.embed_positions.weight']) expect(report.skipped).toContain(n);
    for (const n of report.copied) expect(torchValues(model, n), n).toEqual((tensors.get(n) as RawTensor).data);
    for (const [n, v] of snapshot(model, isDecoder)) expect(v, n).toEqual(decoderBefore.get(n));
    // the same encoder computes the same thing
    const ids = tf.tensor2d([[0, 5, 9, 33, 2, 1, 1, 1]], [1, 8], 'int32');
    const mask = tf.tensor2d([[1, 1, 1, 1, 1, 0, 0, 0]], [1, 8], 'int32');
    const a = model.encode(ids, mask);
    const b = src.encode(ids, mask);
    expect(a.dataSync()).toEqual(b.dataSync());
    tf.dispose([ids, mask, a, b]);
    expect(lines[0]).toMatch(new RegExp(`copied ${encoderParamNames(model).length} encoder tensors bit-exactly`));
    expect(lines.join('\n')).toMatch(/decoder and lm head left at their initialisation/);
  });

  it('reads a 2-shard folder and resizes a different text vocabulary and a longer position table, saying so', async () => {
    for (const vocab of [44, 36]) {
      const dir = tmp(`shards-${vocab}`);
      const { src, tensors } = await writeHfBart(dir, vocab, 12, 2);
      const model = DalleBart.create(TARGET, 2);
      models.push(src, model);
      const before = model.params.get('model.shared.weight').dataSync().slice() as Float32Array;
      const lines: string[] = [];
      const report = await warmStartEncoder(model, dir, { log: (l) => lines.push(l), seed: 3 });
      expect(report.resized).toEqual([
        { name: 'model.shared.weight', from: [vocab, 32], to: [40, 32] },
        { name: 'model.encoder.embed_positions.weight', from: [14, 32], to: [10, 32] },
      ]);
      const shared = model.params.get('model.shared.weight').dataSync();
      const rows = Math.min(vocab, 40);
      expect(shared.slice(0, rows * 32)).toEqual((tensors.get('model.shared.weight') as RawTensor).data.slice(0, rows * 32));
      if (vocab < 40) {
        const fresh = shared.slice(rows * 32);
        expect(fresh.every(Number.isFinite) && fresh.some((x) => x !== 0)).toBe(true);
        expect(fresh).not.toEqual(before.slice(rows * 32)); // drawn from the warm start's seed
      }
      expect(model.params.get('model.encoder.embed_positions.weight').dataSync()).toEqual((tensors.get('model.encoder.embed_positions.weight') as RawTensor).data.slice(0, 10 * 32));
      expect(lines.join('\n')).toMatch(new RegExp(`text vocabulary differs \\(checkpoint ${vocab} tokens, model 40\\)`));
      expect(lines.join('\n')).toMatch(/checkpoint has 12 positions, the model 8/);
    }
  });

  it('refuses a checkpoint whose shapes or encoder config do not fit, with the list, touching nothing', async () => {
    const dir = tmp('refuse');
    const { src } = await writeHfBart(dir, 40, 8);
    models.push(src);
    const glu = DalleBart.create({ ...TARGET, use_glu: true, use_bias: false, encoder_ffn_dim: 48, encoder_attention_heads: 2 }, 4);
    models.push(glu);
    const before = snapshot(glu);
    const err = await warmStartEncoder(glu, dir).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WarmStartError);
    const list = (err as WarmStartError).mismatched;
    const names = list.map((m) => m.name);
    for (const n of ['config.use_glu', 'config.use_bias', 'config.encoder_ffn_dim', 'config.encoder_attention_heads', 'model.encoder.layers.0.fc0.weight', 'model.encoder.layers.1.fc2.weight']) expect(names).toContain(n);
    expect(list.find((m) => m.name === 'model.encoder.layers.0.fc1.weight')).toEqual({ name: 'model.encoder.layers.0.fc1.weight', expected: [48, 32], got: [64, 32] });
    expect(list.find((m) => m.name === 'model.encoder.layers.0.fc0.weight')?.got).toBeNull();
    expect((err as Error).message).toMatch(/nothing was copied/);
    for (const [n, v] of snapshot(glu)) expect(v, n).toEqual(before.get(n));

    // a wider model: every layer listed, not just the first
    const wide = DalleBart.create({ ...TARGET, d_model: 48, encoder_attention_heads: 4, decoder_attention_heads: 4 }, 5);
    models.push(wide);
    const e2 = (await warmStartEncoder(wide, dir).catch((e: unknown) => e)) as WarmStartError;
    expect(e2.mismatched.filter((m) => m.name.startsWith('model.encoder.layers.1.')).length).toBeGreaterThan(5);
    expect(e2.mismatched.map((m) => m.name)).toContain('model.shared.weight');

    // non-strict: copies what fits and reports the rest
    const partial = await warmStartEncoder(glu, dir, { strict: false });
    expect(partial.copied).toContain('model.encoder.layers.0.self_attn.q_proj.weight');
    expect(partial.mismatched.length).toBe(list.length);
  });

  it('takes a bart-pretrain run directory (the saved text BART below it), and says where nothing is', async () => {
    const run = tmp('run');
    const pretrained = DalleBart.create({ ...TARGET, model_type: 'bart' }, 9);
    models.push(pretrained);
    await saveDalleBart(pretrained, join(run, 'out', 'model'));
    const model = DalleBart.create(TARGET, 10);
    models.push(model);
    const report = await warmStartEncoder(model, run);
    expect(report.source).toBe(join(run, 'out', 'model'));
    expect(report.sourceModelType).toBe('bart');
    for (const n of encoderParamNames(model)) expect(model.params.get(n).dataSync(), n).toEqual(pretrained.params.get(n).dataSync());
    await expect(warmStartEncoder(model, tmp('empty'))).rejects.toThrow(/no config\.json/);
  });
});
