import { mkdtempSync, rmSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LoadParamsError, exportParams } from '../../src/ml/params.js';
import { Rng } from '../../src/ml/rng.js';
import { readSafetensors, writeSafetensors, toTfTensors } from '../../src/ml/safetensors.js';
import { loadVqgan, saveVqgan, Vqgan, vqganParamShapes, VqganConfigError, resolveVqganConfig, latentSide } from '../../src/ml/models/vqgan.js';
import { useCpu } from './helpers.js';

/** f4, 16 px, 2 levels with attention at 8: every block kind appears. */
export const TINY = { ch: 8, ch_mult: [1, 2], num_res_blocks: 1, attn_resolutions: [8], z_channels: 4, n_embed: 16, embed_dim: 4, resolution: 16, num_groups: 4 };

let dir: string;
beforeAll(async () => {
  await useCpu();
  dir = mkdtempSync(join(tmpdir(), 'minidalle-vqgan-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function images(seed: number, B = 2, side = 16): tf.Tensor4D {
  const rng = new Rng(seed);
  return tf.tensor(rng.fillUniform(new Float32Array(B * side * side * 3), -1, 1), [B, side, side, 3]) as tf.Tensor4D;
}

describe('VQGAN model', () => {
  it('uses taming names and PyTorch shapes', () => {
    const shapes = vqganParamShapes(resolveVqganConfig(TINY));
    expect(shapes.get('encoder.conv_in.weight')).toEqual([8, 3, 3, 3]);
    expect(shapes.get('encoder.down.1.block.0.nin_shortcut.weight')).toEqual([16, 8, 1, 1]);
    // level 0 runs at 16 px, level 1 at 8 px: attention only there
    expect(shapes.get('encoder.down.1.attn.0.q.weight')).toEqual([16, 16, 1, 1]);
    expect(shapes.has('encoder.down.0.attn.0.q.weight')).toBe(false);
    expect(shapes.get('decoder.up.1.attn.1.proj_out.weight')).toEqual([16, 16, 1, 1]);
    expect(shapes.has('decoder.up.0.attn.0.q.weight')).toBe(false);
    expect(shapes.get('encoder.down.0.downsample.conv.weight')).toEqual([8, 8, 3, 3]);
    expect(shapes.has('encoder.down.1.downsample.conv.weight')).toBe(false);
    expect(shapes.get('quantize.embedding.weight')).toEqual([16, 4]);
    expect(shapes.get('decoder.up.1.block.1.norm1.weight')).toEqual([16]);
    expect(shapes.get('decoder.up.0.block.0.nin_shortcut.weight')).toEqual([8, 16, 1, 1]);
    expect(shapes.get('decoder.up.1.upsample.conv.weight')).toEqual([16, 16, 3, 3]);
    expect(shapes.has('decoder.up.0.upsample.conv.weight')).toBe(false);
    expect(shapes.get('decoder.conv_out.weight')).toEqual([3, 8, 3, 3]);
  });

  it('counts the f16 reference architecture like taming (attention at 16 only)', () => {
    const c = resolveVqganConfig({ n_embed: 16384 });
    // names only: the f16 tree is large, so compare its name set through a shrunken channel count
    const small = vqganParamShapes({ ...c, ch: 32, z_channels: 32, embed_dim: 8, n_embed: 4, resolution: 256 });
    expect(small.has('encoder.down.4.attn.1.proj_out.weight')).toBe(true);
    expect(small.has('encoder.down.3.attn.0.q.weight')).toBe(false);
    expect(small.has('decoder.up.4.attn.2.k.weight')).toBe(true);
    expect(small.has('encoder.down.4.downsample.conv.weight')).toBe(false);
    expect(latentSide(c)).toBe(16);
  });

  it('refuses an inconsistent config', () => {
    expect(() => resolveVqganConfig({ ...TINY, resolution: 17 })).toThrow(VqganConfigError);
    expect(() => resolveVqganConfig({ ...TINY, num_groups: 3 })).toThrow(/num_groups/);
  });

  it('encodes to int32 codes in [0, n_embed) and decodes to images in [-1, 1]', () => {
    const m = Vqgan.create(TINY, 1);
    const x = images(2);
    const before = tf.memory().numTensors;
    const codes = m.encode(x);
    expect(codes.dtype).toBe('int32');
    expect(codes.shape).toEqual([2, 64]);
    const c = codes.dataSync();
    expect(Math.min(...c)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...c)).toBeLessThan(16);
    const y = m.decode(codes);
    expect(y.shape).toEqual([2, 16, 16, 3]);
    const v = y.dataSync();
    expect(Math.min(...v)).toBeGreaterThanOrEqual(-1);
    expect(Math.max(...v)).toBeLessThanOrEqual(1);
    const r = m.reconstruct(x);
    expect(Array.from(r.dataSync())).toEqual(Array.from(v));
    tf.dispose([codes, y, r]);
    expect(tf.memory().numTensors).toBe(before);
    // the codes are those of the nearest codebook rows: re-encoding the same images gives the same codes
    const again = m.encode(x);
    expect(Array.from(again.dataSync())).toEqual(Array.from(c));
    tf.dispose([again, x]);
    m.dispose();
  });

  it('passes straight-through gradients to the encoder and codebook gradients to the embedding', () => {
    const m = Vqgan.create(TINY, 3);
    const x = images(4);
    const { grads } = tf.variableGrads(() => {
      const { xrec, qloss } = m.forward(x, { training: true });
      return tf.add(tf.mean(tf.abs(tf.sub(x, xrec))), qloss) as tf.Scalar;
    }, m.params.trainable());
    const norm = (n: string): number => tf.tidy(() => tf.norm(grads[`${(m.params.get(n)).name}`]!).dataSync()[0]!);
    // conv_in only gets gradient through the straight-through estimator (rec loss) and commitment
    expect(norm('encoder.conv_in.weight')).toBeGreaterThan(0);
    // (conv2, not conv1: a block's conv2 starts at zero, so conv1's gradient is zero until conv2 has moved)
    expect(norm('encoder.down.0.block.0.conv2.weight')).toBeGreaterThan(0);
    expect(norm('quantize.embedding.weight')).toBeGreaterThan(0);
    expect(norm('decoder.conv_out.weight')).toBeGreaterThan(0);
    tf.dispose(Object.values(grads));
    // without the commitment/codebook loss the encoder still learns: only straight-through remains
    const st = tf.variableGrads(() => {
      const { xrec } = m.forward(x, { training: true });
      return tf.mean(tf.abs(tf.sub(x, xrec))) as tf.Scalar;
    }, [m.params.get('encoder.conv_in.weight')]);
    expect(tf.norm(st.grads[m.params.get('encoder.conv_in.weight').name]!).dataSync()[0]).toBeGreaterThan(0);
    tf.dispose([...Object.values(st.grads), st.value, x]);
    m.dispose();
  });

  it('codebook_l2 chooses codes by cosine similarity, decodes unit-norm codes, and survives save/load', async () => {
    const m = Vqgan.create({ ...TINY, codebook_l2: true }, 6);
    const emb = m.params.get('quantize.embedding.weight');
    // Scaling each code row by a different factor changes no cosine choice (but distance-based ones).
    const x = images(12);
    const before = Array.from(m.encode(x).dataSync());
    emb.assign(tf.tidy(() => tf.mul(emb, tf.reshape(tf.linspace(0.5, 40, TINY.n_embed), [-1, 1]))));
    const after = Array.from(m.encode(x).dataSync());
    expect(after).toEqual(before);
    const plain = Vqgan.create({ ...TINY, codebook_l2: false }, 6);
    plain.params.get('quantize.embedding.weight').assign(emb);
    expect(Array.from(plain.encode(x).dataSync())).not.toEqual(after); // distance-based choice does change
    // decode sees unit vectors: two codebooks that differ only in row scale decode identically
    const codes = m.encode(x);
    const d1 = m.decode(codes);
    const y1 = Array.from(d1.dataSync());
    emb.assign(tf.tidy(() => tf.mul(emb, 3)));
    const d3 = m.decode(codes);
    const y3 = d3.dataSync();
    expect(Math.max(...y1.map((v, i) => Math.abs(v - (y3[i] as number))))).toBeLessThan(1e-5);
    await saveVqgan(m, join(dir, 'l2'));
    const l = await loadVqgan(join(dir, 'l2'));
    expect(l.config.codebook_l2).toBe(true);
    expect(resolveVqganConfig(TINY).codebook_l2).toBe(false); // taming configs do not have it
    tf.dispose([x, codes, d1, d3]);
    [m, plain, l].forEach((v) => v.dispose());
  });

  it('save → load round-trips bit-exactly as config.json + model.safetensors', async () => {
    const m = Vqgan.create(TINY, 5);
    const out = join(dir, 'rt');
    await saveVqgan(m, out);
    const cfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
    expect(cfg.ch_mult).toEqual([1, 2]);
    const l = await loadVqgan(out);
    expect(l.config).toEqual(m.config);
    for (const [name, v] of m.params.entries()) expect(Array.from(l.params.get(name).dataSync()), name).toEqual(Array.from(v.dataSync()));
    m.dispose();
    l.dispose();
  });

  it('loads a taming/HF-named checkpoint in PyTorch layout bit-exactly', async () => {
    const m = Vqgan.create(TINY, 6);
    const tensors = exportParams(m.params); // [out, in, kh, kw], as a converted taming checkpoint
    const conv = tensors.get('encoder.down.0.block.0.conv1.weight')!;
    expect(conv.shape).toEqual([8, 8, 3, 3]);
    const out = join(dir, 'taming');
    await saveVqgan(m, out); // for config.json
    writeSafetensors(join(out, 'model.safetensors'), tensors);
    const l = await loadVqgan(out);
    for (const [name, v] of m.params.entries()) expect(Array.from(l.params.get(name).dataSync()), name).toEqual(Array.from(v.dataSync()));
    // the same pixels come out of both
    const x = images(7);
    const a = m.reconstruct(x);
    const b = l.reconstruct(x);
    expect(Array.from(b.dataSync())).toEqual(Array.from(a.dataSync()));
    tf.dispose([x, a, b, ...tensors.values()]);
    m.dispose();
    l.dispose();
  });

  it('refuses a checkpoint with a wrong shape, a missing and an unexpected tensor, listing each', async () => {
    const m = Vqgan.create(TINY, 8);
    const out = join(dir, 'bad');
    await saveVqgan(m, out);
    const { tensors: raw } = await readSafetensors(join(out, 'model.safetensors'));
    const t = toTfTensors(raw);
    t.get('quantize.embedding.weight')!.dispose();
    t.set('quantize.embedding.weight', tf.zeros([32, 4]));
    t.get('decoder.norm_out.bias')!.dispose();
    t.delete('decoder.norm_out.bias');
    t.set('loss.discriminator.main.0.weight', tf.zeros([2]));
    writeSafetensors(join(out, 'model.safetensors'), t);
    tf.dispose([...t.values()]);
    const err = await loadVqgan(out).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LoadParamsError);
    const e = err as LoadParamsError;
    expect(e.mismatches).toEqual(
      expect.arrayContaining([
        { name: 'quantize.embedding.weight', problem: 'shape', expected: [16, 4], got: [32, 4] },
        { name: 'decoder.norm_out.bias', problem: 'missing', expected: [8] },
        { name: 'loss.discriminator.main.0.weight', problem: 'unexpected', got: [2] },
      ]),
    );
    expect(e.mismatches).toHaveLength(3);
    expect(e.message).toContain('model.safetensors');
    // a truncated config.json is refused too
    writeFileSync(join(out, 'config.json'), '{"ch": 8,');
    await expect(loadVqgan(out)).rejects.toThrow(/config.json/);
    m.dispose();
  });
});
