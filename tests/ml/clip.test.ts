/**
 * CLIP: config checks, HF names and shapes, save/load round trip, mismatches listed, the forward pass equal to
 * a plain-PyTorch transcription of HF CLIPModel's (when Debian's python3-torch is installed), the CLIP-style
 * tokenizer's text batches, preprocessing, training lowering the InfoNCE loss, and re-ranking.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initCompute } from '../../src/ml/backend.js';
import { rankByScore } from '../../src/ml/clip-rank.js';
import { Clip, ClipConfigError, clipParamSpecs, clipTextBatch, clipTokenizer, l2normalize, loadClip, preprocessForClip, resizeBicubic, resolveClipConfig, saveClip, type ClipConfigInput } from '../../src/ml/models/clip.js';
import { AdamW, disposeGrads, valueAndGrads } from '../../src/ml/optim/index.js';
import { LoadParamsError } from '../../src/ml/params.js';
import { Rng } from '../../src/ml/rng.js';
import { readSafetensors, writeSafetensors } from '../../src/ml/safetensors.js';
import { tokenizerFromJson, trainByteLevelBpe } from '../../src/ml/tokenizers/index.js';
import { shapesCaptions } from './tokenizers-corpus.js';

const TINY: ClipConfigInput = {
  projection_dim: 12,
  text_config: { vocab_size: 50, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 2, num_attention_heads: 2, max_position_embeddings: 12, pad_token_id: 1, bos_token_id: 0, eos_token_id: 3 },
  vision_config: { hidden_size: 16, intermediate_size: 32, num_hidden_layers: 2, num_attention_heads: 4, image_size: 8, patch_size: 4 },
};

let root: string;
beforeAll(async () => {
  await initCompute({ backend: 'wasm', selfCheck: false });
  root = mkdtempSync(join(tmpdir(), 'minidalle-clip-'));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** Texts as ids: 0 (bos), tokens, 3 (eos), then padding 1. */
function textIds(rows: number[][], L: number): { ids: tf.Tensor2D; mask: tf.Tensor2D; raw: number[][]; rawMask: number[][] } {
  const raw = rows.map((r) => [0, ...r, 3, ...Array(L - r.length - 2).fill(1)]);
  const rawMask = rows.map((r) => Array.from({ length: L }, (_, i) => (i < r.length + 2 ? 1 : 0)));
  return { ids: tf.tensor2d(raw, [rows.length, L], 'int32'), mask: tf.tensor2d(rawMask, [rows.length, L], 'int32'), raw, rawMask };
}

function images(rng: Rng, B: number, S: number): { t: tf.Tensor4D; raw: number[][][][] } {
  const data = Float32Array.from({ length: B * S * S * 3 }, () => rng.uniform());
  const t = tf.tensor4d(data, [B, S, S, 3]);
  return { t, raw: t.arraySync() as number[][][][] };
}

describe('CLIP config and parameters', () => {
  it('fills ViT-B/32 defaults and refuses sizes that do not divide', () => {
    const c = resolveClipConfig({});
    expect([c.vision_config.image_size, c.vision_config.patch_size, c.text_config.max_position_embeddings, c.projection_dim]).toEqual([224, 32, 77, 512]);
    expect(() => resolveClipConfig({ vision_config: { hidden_size: 10, num_attention_heads: 4 } })).toThrow(ClipConfigError);
    expect(() => resolveClipConfig({ vision_config: { image_size: 30, patch_size: 4 } })).toThrow(/multiple of patch_size/);
  });

  it("uses HF CLIP's names and ViT-B/32's shapes", () => {
    const specs = new Map(clipParamSpecs(resolveClipConfig({})).map((s) => [s.name, s.shape]));
    expect(specs.get('vision_model.embeddings.patch_embedding.weight')).toEqual([32, 32, 3, 768]); // (out 768, in 3, 32, 32) on disk
    expect(specs.get('vision_model.embeddings.position_embedding.weight')).toEqual([50, 768]);
    expect(specs.get('vision_model.encoder.layers.0.self_attn.k_proj.weight')).toEqual([768, 768]);
    expect(specs.get('text_model.embeddings.token_embedding.weight')).toEqual([49408, 512]);
    expect(specs.get('visual_projection.weight')).toEqual([768, 512]);
    expect(specs.get('text_projection.weight')).toEqual([512, 512]);
    expect(specs.get('logit_scale')).toEqual([]);
    expect(specs.has('vision_model.pre_layrnorm.weight')).toBe(true);
    // ViT-B/32 has 151,277,313 parameters
    expect([...specs.values()].reduce((a, s) => a + s.reduce((x, y) => x * y, 1), 0)).toBe(151277313);
  });
});

describe('CLIP save / load', () => {
  it('round-trips through an HF folder and gives the same embeddings', async () => {
    const m = Clip.create(TINY, 4);
    const dir = join(root, 'rt');
    await saveClip(m, dir);
    const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    expect(cfg).toMatchObject({ model_type: 'clip', text_config: { hidden_size: 16 }, vision_config: { patch_size: 4 } });
    const onDisk = (await readSafetensors(join(dir, 'model.safetensors'))).tensors;
    expect(onDisk.get('vision_model.embeddings.patch_embedding.weight')?.shape).toEqual([16, 3, 4, 4]);
    expect(onDisk.get('logit_scale')?.data[0]).toBeCloseTo(2.6592, 4);
    const back = await loadClip(dir);
    const im = images(new Rng(1), 2, 8);
    const tx = textIds([[5, 6], [7, 8, 9]], 6);
    const a = tf.concat([m.encodeImage(im.t), m.encodeText(tx.ids, tx.mask)]);
    const b = tf.concat([back.encodeImage(im.t), back.encodeText(tx.ids, tx.mask)]);
    expect(Array.from(b.dataSync())).toEqual(Array.from(a.dataSync()));
    tf.dispose([a, b, im.t, tx.ids, tx.mask]);
    m.dispose();
    back.dispose();
  });

  it('refuses a checkpoint with missing, unexpected and wrongly shaped tensors, listing each', async () => {
    const m = Clip.create(TINY, 4);
    const dir = join(root, 'bad');
    await saveClip(m, dir);
    m.dispose();
    const t = (await readSafetensors(join(dir, 'model.safetensors'))).tensors;
    t.delete('text_projection.weight');
    const pos = t.get('vision_model.embeddings.position_embedding.weight')!;
    t.set('vision_model.embeddings.position_embedding.weight', { ...pos, shape: [pos.shape[0]! - 1, pos.shape[1]!], data: pos.data.slice(0, (pos.shape[0]! - 1) * pos.shape[1]!) });
    t.set('vision_model.extra.weight', { dtype: 'float32', shape: [2], data: new Float32Array(2) });
    t.set('text_model.embeddings.position_ids', { dtype: 'int32', shape: [1, 12], data: new Int32Array(12) }); // an old transformers buffer: accepted
    writeSafetensors(join(dir, 'model.safetensors'), t);
    const err = await loadClip(dir).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LoadParamsError);
    const msg = (err as Error).message;
    expect(msg).toMatch(/text_projection\.weight.*missing/);
    expect(msg).toMatch(/position_embedding\.weight/);
    expect(msg).toMatch(/vision_model\.extra\.weight/);
    expect(msg).not.toMatch(/position_ids/);
  });
});

const torchPython = '/usr/bin/python3';
const hasTorch = existsSync(torchPython) && (() => {
  try {
    execFileSync(torchPython, ['-c', 'import torch'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();
if (!hasTorch) console.warn('[skipped] CLIP forward vs PyTorch: /usr/bin/python3 has no torch (Debian python3-torch; .ci/run installs it)');

describe.skipIf(!hasTorch)('CLIP forward vs a PyTorch transcription of HF CLIPModel', () => {
  for (const act of ['quick_gelu', 'gelu'] as const) {
    it(`image and text embeddings and logits match within 1e-5 (${act})`, async () => {
      const cfg: ClipConfigInput = { ...TINY, text_config: { ...TINY.text_config, hidden_act: act }, vision_config: { ...TINY.vision_config, hidden_act: act } };
      const m = Clip.create(cfg, 9);
      // a trained-looking logit scale, and non-zero biases and norms, so every term is exercised
      const rng = new Rng(5);
      for (const [name, v] of m.params.entries()) if (/bias|layer_norm|layrnorm|logit_scale/.test(name)) v.assign(tf.add(v, tf.mul(tf.randomNormal(v.shape, 0, 1, 'float32', rng.int(1e6)), 0.1)));
      const dir = join(root, `torch-${act}`);
      await saveClip(m, dir);
      const im = images(new Rng(2), 3, 8);
      const tx = textIds([[5, 6], [7, 8, 9, 10], [11]], 7);
      const inputs = join(dir, 'inputs.json');
      writeFileSync(inputs, JSON.stringify({ pixels: im.raw, ids: tx.raw, mask: tx.rawMask }));
      const ref = JSON.parse(execFileSync(torchPython, [join(__dirname, '../fixtures/clip/reference_forward.py'), dir, inputs], { encoding: 'utf8' })) as { image: number[][]; text: number[][]; logits_per_text: number[][] };
      const image = m.encodeImage(im.t);
      const text = m.encodeText(tx.ids, tx.mask);
      const close = (got: number[][], want: number[][]): void => got.forEach((row, i) => row.forEach((v, j) => expect(Math.abs(v - want[i]![j]!)).toBeLessThan(1e-5)));
      close(image.arraySync(), ref.image);
      close(text.arraySync(), ref.text);
      const logits = tf.tidy(() => {
        const ni = tf.div(image, tf.norm(image, 2, -1, true));
        const nt = tf.div(text, tf.norm(text, 2, -1, true));
        return tf.mul(tf.matMul(nt, ni, false, true), m.logitScale());
      });
      (logits.arraySync() as number[][]).forEach((row, i) => row.forEach((v, j) => expect(Math.abs(v - ref.logits_per_text[i]![j]!)).toBeLessThan(1e-4)));
      tf.dispose([image, text, logits, im.t, tx.ids, tx.mask]);
      m.dispose();
    });
  }
});

describe('CLIP inputs', () => {
  const reference = JSON.parse(readFileSync(join(__dirname, 'tokenizers-hf-reference.json'), 'utf8'));
  it('text batches carry start and end-of-text tokens, the end kept when cut, padded after it', () => {
    const tok = tokenizerFromJson(reference.clip.tokenizer, 'clip-style tokenizer.json');
    const b = clipTextBatch(tok, ['A Photo of a CAT', 'hi', 'a photo of a cat and a dog and a bird'], 8);
    const ids = b.ids.arraySync();
    const mask = b.mask.arraySync();
    expect(b.ids.shape).toEqual([3, 8]);
    for (let r = 0; r < 3; r++) {
      const n = mask[r]!.reduce((a, x) => a + x, 0);
      expect(ids[r]![0]).toBe(tok.bosId);
      expect(ids[r]![n - 1]).toBe(tok.eosId);
    }
    expect(mask[2]!.every((x) => x === 1)).toBe(true); // cut at 8, still ending in <|endoftext|>
    // lowercasing: the same ids whatever the case
    expect(tok.encode('A Photo of a CAT').ids).toEqual(tok.encode('a photo of a cat').ids);
    tf.dispose([b.ids, b.mask]);
  });

  it('a BART-style tokenizer (</s> at 2, which HF CLIP reads as a legacy config) gets </s> at its highest id for CLIP; the pooled token is then the end of the text', () => {
    const bart = trainByteLevelBpe(shapesCaptions(300, 4), { vocabSize: 300 });
    expect(bart.eosId).toBe(2);
    const tok = clipTokenizer(bart);
    const top = bart.vocabSize - 1;
    expect([tok.eosId, tok.vocabSize, tok.bosId, tok.padId]).toEqual([top, bart.vocabSize, bart.bosId, bart.padId]);
    const text = 'a small red circle on a blue background';
    const before = bart.encode(text).ids;
    const after = tok.encode(text).ids;
    expect(after).toEqual(before.map((id) => (id === 2 ? top : id === top ? 2 : id)));
    expect(after[after.length - 1]).toBe(top);
    expect(tok.decode(after, { skipSpecial: true })).toBe(bart.decode(before, { skipSpecial: true }));
    expect(clipTokenizer(tok)).toBe(tok); // nothing to move any more
    // a CLIP on it pools at the end of the text: the embedding depends on the last word
    const clip = Clip.create(resolveClipConfig({ ...TINY, text_config: { ...TINY.text_config, max_position_embeddings: 16, vocab_size: tok.vocabSize, eos_token_id: tok.eosId as number, bos_token_id: tok.bosId as number, pad_token_id: tok.padId as number } }), 1);
    const b = clipTextBatch(tok, ['a red circle on a blue background', 'a red circle on a green background'], 16);
    const e = clip.encodeText(b.ids, b.mask).arraySync();
    expect(Math.max(...e[0]!.map((v, i) => Math.abs(v - (e[1]![i] as number))))).toBeGreaterThan(1e-3);
    tf.dispose([b.ids, b.mask]);
    clip.dispose();
  });

  it('preprocessing resizes the shortest side and centre-crops; an image already at size is untouched', () => {
    const rgb = Float32Array.from({ length: 6 * 10 * 3 }, (_, i) => (i % 7) / 7);
    const out = preprocessForClip(rgb, 6, 10, 4);
    expect(out.length).toBe(4 * 4 * 3);
    const same = Float32Array.from({ length: 4 * 4 * 3 }, (_, i) => i / 48);
    expect(preprocessForClip(same, 4, 4, 4)).toBe(same);
    // a constant image stays constant through bicubic resampling (weights sum to 1)
    const flat = resizeBicubic(new Float32Array(8 * 8 * 3).fill(0.25), 8, 8, 3, 5);
    for (const v of flat) expect(v).toBeCloseTo(0.25, 6);
  });
});

describe('CLIP training and re-ranking', () => {
  it('a few AdamW steps lower the symmetric InfoNCE loss of a batch without growing the tensor count', () => {
    const m = Clip.create(TINY, 1);
    const im = images(new Rng(3), 6, 8);
    const tx = textIds([[5], [6, 7], [8, 9, 10], [11], [12, 13], [14, 15, 16, 17]], 8);
    const opt = new AdamW({ learningRate: 1e-2, weightDecay: 0 });
    const first = m.loss(im.t, tx.ids, tx.mask);
    const l0 = first.dataSync()[0]!;
    first.dispose();
    const counts: number[] = [];
    for (let i = 0; i < 40; i++) {
      const { loss, grads } = valueAndGrads(m.params, () => m.loss(im.t, tx.ids, tx.mask));
      opt.apply(m.params, grads);
      disposeGrads(grads);
      loss.dispose();
      counts.push(tf.memory().numTensors);
    }
    expect(new Set(counts.slice(2)).size).toBe(1); // a step does not grow the tensor count
    const last = m.loss(im.t, tx.ids, tx.mask);
    expect(last.dataSync()[0]!).toBeLessThan(l0 * 0.5);
    last.dispose();
    opt.dispose();
    tf.dispose([im.t, tx.ids, tx.mask]);
    m.dispose();
  });

  it('texts past the batch are extra negatives of image → text only (NegCLIP), by the formula', () => {
    const m = Clip.create(TINY, 1);
    const im = images(new Rng(4), 3, 8);
    const tx = textIds([[5], [6, 7], [8, 9, 10], [11, 12], [13]], 8); // 3 captions + 2 hard negatives
    const [img, txt, scale] = tf.tidy(() => [l2normalize(m.encodeImage(im.t)).arraySync(), l2normalize(m.encodeText(tx.ids, tx.mask)).arraySync(), m.logitScale().dataSync()[0]!] as const);
    const sim = (i: number, t: number) => scale * img[i]!.reduce((a, v, k) => a + v * txt[t]![k]!, 0);
    const ce = (row: number[], right: number) => Math.log(row.reduce((a, v) => a + Math.exp(v), 0)) - row[right]!;
    let i2t = 0;
    let t2i = 0;
    for (let k = 0; k < 3; k++) {
      i2t += ce([0, 1, 2, 3, 4].map((t) => sim(k, t)), k) / 3; // every text, negatives included
      t2i += ce([0, 1, 2].map((i) => sim(i, k)), k) / 3; // the batch's images only
    }
    const loss = m.loss(im.t, tx.ids, tx.mask);
    expect(loss.dataSync()[0]!).toBeCloseTo((i2t + t2i) / 2, 4);
    const plain = m.loss(im.t, tf.slice(tx.ids, [0, 0], [3, 8]), tf.slice(tx.mask, [0, 0], [3, 8]));
    expect(plain.dataSync()[0]!).toBeLessThan(loss.dataSync()[0]!);
    expect(() => m.loss(im.t, tf.slice(tx.ids, [0, 0], [2, 8]), tf.slice(tx.mask, [0, 0], [2, 8]))).toThrow(/3 images but 2 texts/);
    tf.dispose([im.t, tx.ids, tx.mask, loss, plain]);
    m.dispose();
  });

  it('rankByScore orders best first, ties in order', () => {
    expect(rankByScore([0.1, 0.9, 0.5, 0.9])).toEqual([1, 3, 2, 0]);
  });
});
