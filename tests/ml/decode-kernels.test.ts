/**
 * The ops of a recorded decoding program (src/ml/kernels/decode.ts) against the plain tf ops of nn.ts, and
 * the fused decoding step of DalleBart against its plain step: the same numbers within 1e-5, no tensor
 * growth per step. They need the native kernels (skipped only where those are neither built nor required;
 * CI requires them).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initCompute, tf } from '../../src/ml/backend.js';
import { DecodeProgram, emptyKvCache, type ProgramRows } from '../../src/ml/kernels/decode.js';
import { loadNativeKernels, nativeMode, useNativeKernels } from '../../src/ml/kernels/native.js';
import { bosTokenId, DalleBart, type DalleBartConfig, decoderPositions, decoderVocabSize, disposeDecodeState } from '../../src/ml/models/dallebart.js';
import * as nn from '../../src/ml/nn.js';
import { Params } from '../../src/ml/params.js';
import { Rng } from '../../src/ml/rng.js';
import { generateCodes } from '../../src/ml/sampling/index.js';
import { randn, TINY } from './helpers.js';

const TOL = 1e-5;
const nativeBuilt = loadNativeKernels().available || nativeMode() === 'require';

/** max |a − b| relative to the largest |b| (at least 1). */
function relDiff(a: tf.Tensor, b: tf.Tensor): number {
  expect(a.shape).toEqual(b.shape);
  const x = a.dataSync();
  const y = b.dataSync();
  let worst = 0;
  let scale = 1;
  for (let i = 0; i < y.length; i++) scale = Math.max(scale, Math.abs(y[i] as number));
  for (let i = 0; i < y.length; i++) worst = Math.max(worst, Math.abs((x[i] as number) - (y[i] as number)));
  return worst / scale;
}

beforeAll(async () => {
  await initCompute({ backend: 'wasm', selfCheck: false });
});

/** Records what `build` adds to a new program, runs it once at `position`, and returns its output as a tensor. */
function once(build: (p: DecodeProgram) => ProgramRows, position = 0, tokens = new Int32Array(0)): tf.Tensor2D {
  const p = new DecodeProgram();
  const out = build(p);
  p.compile(out);
  try {
    return tf.tensor2d(p.run(tokens, position), [out.rows, out.cols]);
  } finally {
    p.dispose();
  }
}

(nativeBuilt ? describe : describe.skip)('fused decoding kernels', () => {
  // 'split': 3 threads and every job split however small, so parts are uneven or empty
  for (const [path, threads, minWork] of [['2 threads', 2, 1 << 15], ['split', 3, 1]] as const) {
    describe(path, () => {
      beforeAll(() => useNativeKernels(true, threads, minWork));
      afterAll(() => useNativeKernels(true, 2, 1 << 15));

      it.each(['none', 'gelu', 'gelu_new', 'relu', 'swish'] as const)('linear + bias + %s equals linear then activation', (act) => {
        const rng = new Rng(1);
        for (const [rows, inDim, outDim, bias] of [[1, 16, 40, true], [3, 24, 7, false], [5, 64, 130, true]] as const) {
          const p = new Params();
          p.add('l.weight', randn(rng, [inDim, outDim]), 'linear');
          if (bias) p.add('l.bias', randn(rng, [outDim]), 'plain');
          const x = randn(rng, [rows, inDim]) as tf.Tensor2D;
          tf.tidy(() => {
            const want = act === 'none' ? nn.linear(p, 'l', x) : nn.activation(act, nn.linear(p, 'l', x));
            const got = once((q) => q.linear(q.rowsOf(x), p.get('l.weight') as tf.Tensor2D, bias ? (p.get('l.bias') as tf.Tensor1D) : undefined, act));
            expect(relDiff(got, want), `${rows}×${inDim}×${outDim}`).toBeLessThan(TOL);
            // the same weight stored (out, in), as a tied lm head reads it
            const wT = tf.transpose(p.get('l.weight')) as tf.Tensor2D;
            const gotT = once((q) => q.linear(q.rowsOf(x), wT, bias ? (p.get('l.bias') as tf.Tensor1D) : undefined, act, true));
            expect(relDiff(gotT, want), `${rows}×${inDim}×${outDim}, transposed`).toBeLessThan(TOL);
          });
          x.dispose();
          p.dispose();
        }
      });

      it('add + layer norm equals a tf-op layer norm of x + r; the sum is returned when asked; r may be one row for all', () => {
        // the oracle is tf ops: nn.layerNorm itself runs a native kernel when these tests do
        const layerNorm = (q: Params, _: string, v: tf.Tensor, eps = 1e-5): tf.Tensor => {
          const { mean, variance } = tf.moments(v, -1, true);
          const y = tf.mul(tf.sub(v, mean), tf.rsqrt(tf.add(variance, eps)));
          return q.has('n.weight') ? tf.add(tf.mul(y, q.get('n.weight')), q.get('n.bias')) : y;
        };
        const rng = new Rng(2);
        const p = new Params();
        p.add('n.weight', randn(rng, [48]), 'plain');
        p.add('n.bias', randn(rng, [48]), 'plain');
        const x = tf.add(randn(rng, [4, 48], 3), 2) as tf.Tensor2D;
        const r = randn(rng, [4, 48]) as tf.Tensor2D;
        const r1 = randn(rng, [1, 48]) as tf.Tensor2D;
        tf.tidy(() => {
          const w = p.get('n.weight') as tf.Tensor1D;
          const b = p.get('n.bias') as tf.Tensor1D;
          const norm = (res: tf.Tensor2D | undefined, weight?: tf.Tensor1D, shift?: tf.Tensor1D, eps?: number): tf.Tensor2D =>
            once((q) => q.addLayerNorm(q.rowsOf(x), res && q.rowsOf(res), weight, shift, eps));
          expect(relDiff(norm(r, w, b), layerNorm(p, 'n', tf.add(x, r)))).toBeLessThan(TOL);
          expect(relDiff(norm(r1, w, b), layerNorm(p, 'n', tf.add(x, r1)))).toBeLessThan(TOL);
          expect(relDiff(norm(undefined, w, b), layerNorm(p, 'n', x))).toBeLessThan(TOL);
          const bare = new Params();
          expect(relDiff(norm(r, undefined, undefined, 1e-6), layerNorm(bare, 'n', tf.add(x, r), 1e-6))).toBeLessThan(TOL);
          const y = once((q) => q.addLayerNormKeepSum(q.rowsOf(x), q.rowsOf(r), w, b)[0]);
          const s = once((q) => q.addLayerNormKeepSum(q.rowsOf(x), q.rowsOf(r), w, b)[1]);
          expect(relDiff(y, layerNorm(p, 'n', tf.add(x, r)))).toBeLessThan(TOL);
          expect(relDiff(s, tf.add(x, r))).toBe(0);
        });
        tf.dispose([x, r, r1]);
        p.dispose();
      });

      it('self-attention over the in-place cache equals attention with a concatenated cache, step by step; no tensor growth', () => {
        const rng = new Rng(3);
        const [B, nh, hs, T] = [3, 4, 8, 6];
        const C = nh * hs;
        const p = new Params();
        for (const n of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) {
          p.add(`a.${n}.weight`, randn(rng, [C, C], 0.5), 'linear');
          p.add(`a.${n}.bias`, randn(rng, [C], 0.5), 'plain');
        }
        const qkvW = tf.concat(['q_proj', 'k_proj', 'v_proj'].map((n) => p.get(`a.${n}.weight`)), 1) as tf.Tensor2D;
        const qkvB = tf.concat(['q_proj', 'k_proj', 'v_proj'].map((n) => p.get(`a.${n}.bias`)), 0) as tf.Tensor1D;
        const cache = emptyKvCache(B, nh, T + 2, hs); // room to spare: only the filled rows are read
        let plain: nn.KVCache | undefined;
        let tensors = -1;
        for (let t = 0; t < T; t++) {
          const x = randn(rng, [B, C]) as tf.Tensor2D;
          const got = once((q) => q.selfAttention(q.linear(q.rowsOf(x), qkvW, qkvB), cache, nh), t);
          const ref = tf.tidy(() => {
            const r = nn.attention(p, 'a', tf.reshape(x, [B, 1, C]) as tf.Tensor3D, { numHeads: nh, causal: true, ...(plain ? { cache: plain } : {}) });
            return { out: r.out, k: r.cache.k, v: r.cache.v };
          }) as { out: tf.Tensor3D; k: tf.Tensor4D; v: tf.Tensor4D };
          // nn.attention ends with out_proj; the fused step applies it as its own linear
          tf.tidy(() => {
            expect(relDiff(nn.linear(p, 'a.out_proj', got), tf.reshape(ref.out, [B, C])), `step ${t}`).toBeLessThan(TOL);
            // the cache holds exactly the keys/values the concatenated cache does
            expect(relDiff(tf.slice(cache.k, [0, 0, 0, 0], [B, nh, t + 1, hs]), ref.k)).toBe(0);
            expect(relDiff(tf.slice(cache.v, [0, 0, 0, 0], [B, nh, t + 1, hs]), ref.v)).toBe(0);
          });
          if (plain) tf.dispose([plain.k, plain.v]);
          plain = { k: ref.k, v: ref.v };
          tf.dispose([x, got, ref.out]);
          if (tensors === -1) tensors = tf.memory().numTensors;
          expect(tf.memory().numTensors).toBe(tensors);
        }
        tf.dispose([qkvW, qkvB, cache.k, cache.v, plain!.k, plain!.v]);
        p.dispose();
      });

      it('cross-attention of one query over cached K/V with the padding bias equals attention with contextCache and keyMask', () => {
        const rng = new Rng(4);
        const [B, nh, hs, S] = [2, 2, 16, 9];
        const C = nh * hs;
        const p = new Params();
        for (const n of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) {
          p.add(`a.${n}.weight`, randn(rng, [C, C], 0.5), 'linear');
          p.add(`a.${n}.bias`, randn(rng, [C], 0.5), 'plain');
        }
        const ctx = randn(rng, [B, S, C]) as tf.Tensor3D;
        const mask = tf.tensor2d([[1, 1, 1, 1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1, 1]], [B, S], 'int32');
        const kv = nn.crossAttentionCache(p, 'a', ctx, nh);
        const x = randn(rng, [B, C]) as tf.Tensor2D;
        tf.tidy(() => {
          const bias = tf.mul(tf.sub(1, tf.cast(mask, 'float32')), -1e9) as tf.Tensor2D;
          const q = nn.linear(p, 'a.q_proj', x) as tf.Tensor2D;
          const got = nn.linear(p, 'a.out_proj', once((prog) => prog.crossAttention(prog.rowsOf(q), kv, bias, nh)));
          const want = nn.attention(p, 'a', tf.reshape(x, [B, 1, C]) as tf.Tensor3D, { numHeads: nh, contextCache: kv, keyMask: mask }).out;
          expect(relDiff(got, tf.reshape(want, [B, C]))).toBeLessThan(TOL);
        });
        tf.dispose([ctx, mask, kv.k, kv.v, x]);
        p.dispose();
      });

      it('refuses shapes that do not fit, a position past the cache, a token outside the table, and a disposed operand', () => {
        const x = tf.zeros([2, 8]) as tf.Tensor2D;
        const w = tf.zeros([7, 4]) as tf.Tensor2D;
        expect(() => once((q) => q.linear(q.rowsOf(x), w))).toThrow(/linear: .* do not fit/);
        const cache = emptyKvCache(2, 2, 3, 4);
        const wqkv = tf.zeros([8, 24]) as tf.Tensor2D;
        expect(() => once((q) => q.selfAttention(q.linear(q.rowsOf(x), wqkv), emptyKvCache(2, 3, 3, 4), 2))).toThrow(/self-attention: .* do not fit/);
        expect(() => once((q) => q.selfAttention(q.linear(q.rowsOf(x), wqkv), cache, 2), 3)).toThrow(/op 1 \(code 3\): .*keys ≤ cap/); // position 3 of a 3-row cache
        const table = tf.zeros([5, 8]) as tf.Tensor2D;
        const positions = tf.zeros([4, 8]) as tf.Tensor2D;
        expect(() => once((q) => q.embed(2, table, positions, 1, 1), 0, Int32Array.from([1, 5]))).toThrow(/outside the embedding table/);
        expect(() => once((q) => q.embed(2, table, positions, 1, 1), 3, Int32Array.from([1, 2]))).toThrow(/past the position table/);
        const prog = new DecodeProgram();
        prog.compile(prog.linear(prog.rowsOf(x), wqkv));
        wqkv.dispose();
        expect(() => prog.run(new Int32Array(0), 0)).toThrow(/\[8,24\]\) was disposed/);
        prog.dispose();
        tf.dispose([x, w, cache.k, cache.v, table, positions]);
      });

      it('an embedding row is the token row, scaled, plus the position row', () => {
        const rng = new Rng(6);
        const table = randn(rng, [6, 8]) as tf.Tensor2D;
        const positions = randn(rng, [5, 8]) as tf.Tensor2D;
        const got = once((q) => q.embed(2, table, positions, 2, 1.5), 1, Int32Array.from([4, 0]));
        tf.tidy(() => {
          const want = tf.add(tf.mul(tf.gather(table, [4, 0]), 1.5), tf.slice(positions, [3, 0], [1, 8]));
          expect(relDiff(got, want)).toBeLessThan(TOL);
        });
        tf.dispose([table, positions, got]);
      });
    });
  }
});

const CONFIGS: [string, Partial<DalleBartConfig>][] = [
  ['dallebart, post-LN, biases, tanh GELU (the bench model)', { ...TINY, use_bias: true, use_glu: false, activation_function: 'gelu_new', ln_positions: 'postln' }],
  ['dallebart, pre-LN, GLU, no biases, final norms (the shapes model)', { ...TINY, use_bias: false, use_glu: true, ln_positions: 'preln', use_final_ln_encoder: true, use_final_ln_decoder: true }],
  ['dallebart, pre-LN, biases, no final norm', { ...TINY, use_bias: true, use_glu: false, ln_positions: 'preln', activation_function: 'relu' }],
  ['dallebart, scaled embeddings, swish', { ...TINY, scale_embedding: true, activation_function: 'swish' }],
  ['bart (tied head)', { ...TINY, model_type: 'bart', use_glu: false, use_bias: true }],
];

(nativeBuilt ? describe : describe.skip)('DalleBart fused decoding step', () => {
  beforeAll(() => useNativeKernels(true, 2, 1 << 15));

  it.each(CONFIGS)('%s: logits equal the plain step within 1e-5 at every position; no tensor growth per step', (_name, cfg) => {
    const m = DalleBart.create({ ...cfg, init_std: 0.3 }, 5);
    const c = m.config;
    const rng = new Rng(8);
    const B = 3;
    const L = c.max_text_length;
    const ids = tf.tensor2d(Int32Array.from({ length: B * L }, () => 3 + rng.int(c.vocab_size - 3)), [B, L], 'int32');
    const mask = tf.tensor2d(Int32Array.from({ length: B * L }, (_, i) => (i % L < [L, 3, 5][Math.floor(i / L)]! ? 1 : 0)), [B, L], 'int32');
    const enc = m.encode(ids, mask);
    const before = tf.memory().numTensors;
    let fused = m.startDecoding(enc, mask, { fused: true });
    let plain = m.startDecoding(enc, mask, { fused: false });
    expect(fused.fused).toBeDefined();
    expect(plain.fused).toBeUndefined();
    const steps = decoderPositions(c);
    let tokens = Array<number>(B).fill(c.model_type === 'dallebart' ? bosTokenId(c) : c.decoder_start_token_id);
    let perStep = -1;
    for (let t = 0; t < steps; t++) {
      const input = tf.tensor2d(tokens, [B, 1], 'int32');
      const a = m.decodeStep(fused, input);
      const b = m.decodeStep(plain, input);
      fused = a.state;
      plain = b.state;
      expect(a.logits.shape).toEqual([B, decoderVocabSize(c)]);
      expect(relDiff(a.logits, b.logits), `position ${t}`).toBeLessThan(TOL);
      tokens = Array.from({ length: B }, () => rng.int(c.model_type === 'dallebart' ? c.image_vocab_size : c.vocab_size));
      tf.dispose([input, a.logits, b.logits]);
      // the fused state holds the same tensors at every step; the plain one swaps its K/V for longer ones
      const fusedTensors = tf.memory().numTensors;
      if (perStep === -1) perStep = fusedTensors;
      expect(fusedTensors, `after position ${t}`).toBe(perStep);
    }
    const past = tf.tensor2d(tokens, [B, 1], 'int32');
    expect(() => m.decodeStep(fused, past)).toThrow(/positions/);
    past.dispose();
    disposeDecodeState(fused);
    disposeDecodeState(plain);
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([ids, mask, enc]);
    m.dispose();
  });

  it('generateCodes draws the same codes on the fused and the plain step (greedy, sampled, super-conditioned)', () => {
    const m = DalleBart.create({ ...TINY, image_length: 12, init_std: 0.5 }, 3);
    const text = { ids: Int32Array.from([0, 5, 9, 13, 2, 1, 1, 1, 0, 7, 7, 21, 30, 2, 1, 1]), mask: Int32Array.from([1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0]), batch: 2, length: 8 };
    const uncond = { ids: Int32Array.from([0, 2, 1, 1, 1, 1, 1, 1]), mask: Int32Array.from([1, 1, 0, 0, 0, 0, 0, 0]), batch: 1, length: 8 };
    for (const sampling of [{ greedy: true }, { temperature: 1.3, topK: 10 }, { topP: 0.9, condScale: 3 }]) {
      const req = { text, uncond, seeds: [4, 5], sampling };
      const codes = (fused: boolean): number[][] => generateCodes(m, { ...req, fused }).map((c) => Array.from(c));
      expect(codes(true), JSON.stringify(sampling)).toEqual(codes(false));
    }
    m.dispose();
  });

  it('asking for the fused path without the native kernels is refused', () => {
    const m = DalleBart.create(TINY, 1);
    const ids = tf.zeros([1, 8], 'int32') as tf.Tensor2D;
    const mask = tf.ones([1, 8], 'int32') as tf.Tensor2D;
    const enc = m.encode(ids, mask);
    useNativeKernels(false);
    try {
      expect(() => m.startDecoding(enc, mask, { fused: true })).toThrow(/native kernels/);
      const state = m.startDecoding(enc, mask); // the default follows what is active: plain
      expect(state.fused).toBeUndefined();
      disposeDecodeState(state);
    } finally {
      useNativeKernels(true, 2, 1 << 15);
    }
    tf.dispose([ids, mask, enc]);
    m.dispose();
  });
});
