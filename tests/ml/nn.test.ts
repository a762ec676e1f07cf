import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  attention,
  conv2d,
  crossAttentionCache,
  dropout,
  embedding,
  gelu,
  geluTanh,
  gluFeedForward,
  groupNorm,
  layerNorm,
  rmsNorm,
  linear,
  resnetBlock,
  sparseCrossEntropy,
  upsampleNearest2x,
} from '../../src/ml/nn.js';
import { Params, addConv2d, addLinear, addNorm, loadParams } from '../../src/ml/params.js';
import { Rng } from '../../src/ml/rng.js';
import { gradCheck, maxAbsDiff, randn, useCpu } from './helpers.js';

beforeAll(useCpu);

describe('linear / embedding / norms against hand-computed values', () => {
  it('linear loads a PyTorch [out, in] weight and computes x Wᵀ + b', () => {
    const p = new Params();
    addLinear(p, new Rng(0), 'fc', 2, 3);
    // PyTorch weight rows are outputs: y0 = 1·x0 + 2·x1, y1 = 3·x0 + 4·x1, y2 = 5·x0 + 6·x1
    loadParams(p, new Map([['fc.weight', tf.tensor([[1, 2], [3, 4], [5, 6]])], ['fc.bias', tf.tensor([0.5, 0, -1])]]));
    const y = linear(p, 'fc', tf.tensor([[[1, 1]], [[2, -1]]])); // (2, 1, 2)
    expect(y.shape).toEqual([2, 1, 3]);
    expect([...y.dataSync()]).toEqual([3.5, 7, 10, 0.5, 2, 3]);
    p.dispose();
  });

  it('embedding gathers rows', () => {
    const p = new Params();
    p.add('wte.weight', tf.tensor([[0, 1], [2, 3], [4, 5]]));
    const e = embedding(p, 'wte', tf.tensor([[2, 0]], [1, 2], 'int32'));
    expect(e.shape).toEqual([1, 2, 2]);
    expect([...e.dataSync()]).toEqual([4, 5, 0, 1]);
  });

  it('layerNorm normalises the last axis and applies scale/bias', () => {
    const p = new Params();
    p.add('ln.weight', tf.tensor([2, 2, 2, 2]));
    p.add('ln.bias', tf.tensor([1, 1, 1, 1]));
    // x = [1,2,3,4]: mean 2.5, var 1.25 → (x − 2.5)/√1.25 = ±1.3416, ±0.4472
    const y = [...layerNorm(p, 'ln', tf.tensor([[1, 2, 3, 4]]), 0).dataSync()];
    const s = 1 / Math.sqrt(1.25);
    [-1.5, -0.5, 0.5, 1.5].forEach((d, i) => expect(y[i]).toBeCloseTo(2 * d * s + 1, 5));
    // without parameters it is the plain normalisation
    const q = new Params();
    expect(layerNorm(q, 'none', tf.tensor([[1, 3]]), 0).dataSync()[1]).toBeCloseTo(1, 5);
  });

  it('rmsNorm divides by the root mean square and scales', () => {
    const p = new Params();
    p.add('n.weight', tf.tensor([1, 2]));
    // x = [3, 4]: rms = √12.5
    const y = [...rmsNorm(p, 'n', tf.tensor([[3, 4]]), 0).dataSync()];
    expect(y[0]).toBeCloseTo(3 / Math.sqrt(12.5), 5);
    expect(y[1]).toBeCloseTo(8 / Math.sqrt(12.5), 5);
  });

  it('groupNorm over NHWC matches a direct computation per (sample, group)', () => {
    const rng = new Rng(1);
    const x = randn(rng, [2, 3, 3, 4]);
    const p = new Params();
    p.add('gn.weight', tf.tensor([1, 2, 3, 4]));
    p.add('gn.bias', tf.tensor([0, 0.5, 0, -0.5]));
    const y = groupNorm(p, 'gn', x as tf.Tensor4D, 2, 1e-6).arraySync();
    const xa = x.arraySync() as number[][][][];
    const w = [1, 2, 3, 4], b = [0, 0.5, 0, -0.5];
    for (let n = 0; n < 2; n++) for (let g = 0; g < 2; g++) {
      const vals: number[] = [];
      for (let h = 0; h < 3; h++) for (let ww = 0; ww < 3; ww++) for (let c = 2 * g; c < 2 * g + 2; c++) vals.push(xa[n]![h]![ww]![c]!);
      const m = vals.reduce((s, v) => s + v, 0) / vals.length;
      const v = vals.reduce((s, t) => s + (t - m) ** 2, 0) / vals.length;
      for (let h = 0; h < 3; h++) for (let ww = 0; ww < 3; ww++) for (let c = 2 * g; c < 2 * g + 2; c++) {
        expect(y[n]![h]![ww]![c]).toBeCloseTo(((xa[n]![h]![ww]![c]! - m) / Math.sqrt(v + 1e-6)) * w[c]! + b[c]!, 4);
      }
    }
  });

  it('gelu matches known values (exact and tanh)', () => {
    const x = tf.tensor([-1, 0, 1, 2]);
    const exact = [-0.158655254, 0, 0.841344746, 1.954499736];
    const approx = [-0.158808009, 0, 0.841191991, 1.954597694];
    [...gelu(x).dataSync()].forEach((v, i) => expect(v).toBeCloseTo(exact[i]!, 5));
    [...geluTanh(x).dataSync()].forEach((v, i) => expect(v).toBeCloseTo(approx[i]!, 5));
  });
});

describe('gradients of the small blocks match finite differences', () => {
  it('layerNorm, rmsNorm, groupNorm, gelu, geluTanh, GLU feed-forward, embedding', () => {
    const rng = new Rng(11);
    const p = new Params();
    addNorm(p, 'ln', 4);
    p.get('ln.weight').assign(randn(rng, [4]));
    addNorm(p, 'gn', 4);
    addNorm(p, 'ffn.ln0', 4, { bias: false });
    addLinear(p, rng, 'ffn.fc0', 4, 6, { bias: false, std: 0.5 });
    addLinear(p, rng, 'ffn.fc1', 4, 6, { bias: false, std: 0.5 });
    addLinear(p, rng, 'ffn.fc2', 6, 4, { bias: false, std: 0.5 });
    const x = randn(rng, [2, 3, 4]);
    const proj = randn(rng, [2, 3, 4]);
    const dot = (y: tf.Tensor) => tf.sum(tf.mul(y, proj)) as tf.Scalar;
    gradCheck((t) => dot(layerNorm(p, 'ln', t)), x, rng);
    gradCheck((t) => dot(rmsNorm(p, 'ln', t)), x, rng);
    gradCheck((t) => dot(gelu(t)), x, rng);
    gradCheck((t) => dot(geluTanh(t)), x, rng);
    gradCheck((t) => dot(gluFeedForward(p, 'ffn', t)), x, rng);
    const x4 = randn(rng, [2, 2, 3, 4]);
    const proj4 = randn(rng, [2, 2, 3, 4]);
    gradCheck((t) => tf.sum(tf.mul(groupNorm(p, 'gn', t as tf.Tensor4D, 2), proj4)) as tf.Scalar, x4, rng);
    // embedding: gradient w.r.t. the table accumulates repeated ids
    p.add('wte.weight', randn(rng, [5, 4]));
    const ids = tf.tensor2d([[1, 3, 1]], [1, 3], 'int32');
    const wte = p.get('wte.weight');
    const g = tf.variableGrads(() => tf.sum(tf.mul(embedding(p, 'wte', ids), tf.slice(proj, [0, 0, 0], [1, 3, 4]))) as tf.Scalar, [wte]).grads[wte.name]!.arraySync() as number[][];
    const pr = tf.slice(proj, [0, 0, 0], [1, 3, 4]).arraySync() as number[][][];
    g[1]!.forEach((v, c) => expect(v).toBeCloseTo(pr[0]![0]![c]! + pr[0]![2]![c]!, 5));
    expect(g[0]).toEqual([0, 0, 0, 0]);
  });
});

describe('convolution blocks', () => {
  it('conv2d (NHWC) with a PyTorch [out, in, kh, kw] weight matches a direct convolution', () => {
    const rng = new Rng(2);
    const [B, H, W, Ci, Co, K] = [1, 4, 5, 2, 3, 3];
    const xt = randn(rng, [B, H, W, Ci]);
    const wt = randn(rng, [Co, Ci, K, K]); // PyTorch layout
    const p = new Params();
    addConv2d(p, rng, 'conv', Ci, Co, K);
    loadParams(p, new Map([['conv.weight', wt], ['conv.bias', tf.tensor([0.1, -0.2, 0.3])]]));
    const x = xt.arraySync() as number[][][][];
    const w = wt.arraySync() as number[][][][];
    for (const [padding, stride] of [[1, 1], [[[0, 1], [0, 1]], 2]] as const) {
      const y = conv2d(p, 'conv', xt as tf.Tensor4D, { padding, stride }).arraySync();
      const [pt, pl] = typeof padding === 'number' ? [padding, padding] : [padding[0][0], padding[1][0]];
      for (let oh = 0; oh < y[0]!.length; oh++) for (let ow = 0; ow < y[0]![0]!.length; ow++) for (let o = 0; o < Co; o++) {
        let s = [0.1, -0.2, 0.3][o]!;
        for (let i = 0; i < Ci; i++) for (let kh = 0; kh < K; kh++) for (let kw = 0; kw < K; kw++) {
          const ih = oh * stride + kh - pt, iw = ow * stride + kw - pl;
          if (ih >= 0 && ih < H && iw >= 0 && iw < W) s += x[0]![ih]![iw]![i]! * w[o]![i]![kh]![kw]!;
        }
        expect(y[0]![oh]![ow]![o]).toBeCloseTo(s, 4);
      }
    }
  });

  it('nearest 2× upsample repeats pixels and its gradient sums each 2×2 block (batch 2)', () => {
    const x = tf.tensor4d([1, 2, 3, 4, 5, 6, 7, 8], [2, 2, 2, 1]);
    const y = upsampleNearest2x(x);
    expect(y.shape).toEqual([2, 4, 4, 1]);
    expect(y.arraySync()[1]!.map((r) => r.map((c) => c[0]))).toEqual([[5, 5, 6, 6], [5, 5, 6, 6], [7, 7, 8, 8], [7, 7, 8, 8]]);
    const wts = tf.reshape(tf.range(0, 32), [2, 4, 4, 1]);
    const g = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(upsampleNearest2x(t as tf.Tensor4D), wts)))(x);
    // block (0,0) of sample 0: weights 0+1+4+5; block (1,1) of sample 1: 26+27+30+31
    expect([...g.dataSync()]).toEqual([10, 18, 42, 50, 74, 82, 106, 114]);
  });

  it('resnetBlock gradients match finite differences (with nin_shortcut)', () => {
    const rng = new Rng(3);
    const p = new Params();
    addNorm(p, 'b.norm1', 2); addConv2d(p, rng, 'b.conv1', 2, 4, 3);
    addNorm(p, 'b.norm2', 4); addConv2d(p, rng, 'b.conv2', 4, 4, 3);
    addConv2d(p, rng, 'b.nin_shortcut', 2, 4, 1);
    const x = randn(rng, [2, 3, 3, 2]);
    const proj = randn(rng, [2, 3, 3, 4]);
    const f = (t: tf.Tensor) => tf.sum(tf.mul(resnetBlock(p, 'b', t as tf.Tensor4D, { groups: 2 }), proj)) as tf.Scalar;
    gradCheck(f, x, rng);
    // and w.r.t. a conv weight
    const w = p.get('b.conv1.weight');
    const g = tf.variableGrads(() => f(x), [w]).grads[w.name]!;
    const data = w.dataSync().slice();
    const i = 5, h = 1e-2;
    const at = (v: number) => { const d = data.slice(); d[i] = v; w.assign(tf.tensor(d, w.shape)); return f(x).dataSync()[0]!; };
    const num = (at(data[i]! + h) - at(data[i]! - h)) / (2 * h);
    w.assign(tf.tensor(data, w.shape));
    expect(g.dataSync()[i]).toBeCloseTo(num, 1);
  });
});

function attnParams(rng: Rng, C: number, prefix = 'attn'): Params {
  const p = new Params();
  for (const n of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) addLinear(p, rng, `${prefix}.${n}`, C, C, { std: 0.5 });
  return p;
}

describe('attention', () => {
  it('single head, no projections: softmax(q kᵀ/√d) v by hand', () => {
    const p = new Params();
    for (const n of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) p.add(`a.${n}.weight`, tf.eye(2), 'linear');
    const x = tf.tensor3d([[[1, 0], [0, 1]]]);
    const y = attention(p, 'a', x, { numHeads: 1, causal: false }).out.arraySync()[0]!;
    const s = 1 / Math.sqrt(2);
    const a = Math.exp(s) / (Math.exp(s) + 1); // weight of the matching key
    expect(y[0]![0]).toBeCloseTo(a, 5);
    expect(y[0]![1]).toBeCloseTo(1 - a, 5);
    const yc = attention(p, 'a', x, { numHeads: 1, causal: true }).out.arraySync()[0]!;
    expect(yc[0]).toEqual([1, 0]); // first position only sees itself
  });

  it('causal: outputs do not depend on later positions; key mask hides padded keys', () => {
    const rng = new Rng(4);
    const p = attnParams(rng, 8);
    const x = randn(rng, [2, 5, 8]) as tf.Tensor3D;
    const x2 = tf.concat([tf.slice(x, [0, 0, 0], [2, 3, 8]), randn(rng, [2, 2, 8])], 1) as tf.Tensor3D;
    const y1 = attention(p, 'attn', x, { numHeads: 2, causal: true }).out;
    const y2 = attention(p, 'attn', x2, { numHeads: 2, causal: true }).out;
    expect(maxAbsDiff(tf.slice(y1, [0, 0, 0], [2, 3, 8]), tf.slice(y2, [0, 0, 0], [2, 3, 8]))).toBeLessThan(1e-5);
    expect(maxAbsDiff(y1, y2)).toBeGreaterThan(1e-3);
    const mask = tf.tensor2d([[1, 1, 1, 0, 0], [1, 1, 1, 0, 0]]);
    const m1 = attention(p, 'attn', x, { numHeads: 2, causal: false, keyMask: mask }).out;
    const m2 = attention(p, 'attn', x2, { numHeads: 2, causal: false, keyMask: mask }).out;
    expect(maxAbsDiff(tf.slice(m1, [0, 0, 0], [2, 3, 8]), tf.slice(m2, [0, 0, 0], [2, 3, 8]))).toBeLessThan(1e-5);
  });

  it('incremental decoding with a KV cache equals full recompute (self and cross)', () => {
    const rng = new Rng(5);
    const p = attnParams(rng, 8, 'self');
    const pc = attnParams(rng, 8, 'cross');
    for (const [n, v] of pc.entries()) p.add(n, tf.clone(v), pc.kind(n));
    const x = randn(rng, [2, 6, 8]) as tf.Tensor3D;
    const ctx = randn(rng, [2, 4, 8]) as tf.Tensor3D;
    const full = tf.tidy(() => {
      const h = attention(p, 'self', x, { numHeads: 2, causal: true }).out;
      return attention(p, 'cross', h, { numHeads: 2, context: ctx }).out;
    });
    const crossKv = crossAttentionCache(p, 'cross', ctx, 2);
    let cache: { k: tf.Tensor4D; v: tf.Tensor4D } | undefined;
    const steps: tf.Tensor[] = [];
    // first a 2-token prompt, then one token at a time
    for (const [start, len] of [[0, 2], [2, 1], [3, 1], [4, 1], [5, 1]] as const) {
      const xs = tf.slice(x, [0, start, 0], [2, len, 8]) as tf.Tensor3D;
      const s = attention(p, 'self', xs, { numHeads: 2, causal: true, cache });
      cache = s.cache;
      steps.push(attention(p, 'cross', s.out, { numHeads: 2, contextCache: crossKv }).out);
    }
    expect(cache!.k.shape).toEqual([2, 2, 6, 4]);
    expect(maxAbsDiff(tf.concat(steps, 1), full)).toBeLessThan(1e-5);
  });

  it('an incremental decoding loop inside tf.tidy keeps only the current cache alive', () => {
    const rng = new Rng(12);
    const p = attnParams(rng, 8, 'self');
    const x = randn(rng, [1, 6, 8]) as tf.Tensor3D;
    let cache: { k: tf.Tensor4D; v: tf.Tensor4D } | undefined;
    const counts: number[] = [];
    for (let t = 0; t < 6; t++) {
      const prev = cache;
      const [y, k, v] = tf.tidy(() => {
        const r = attention(p, 'self', tf.slice(x, [0, t, 0], [1, 1, 8]) as tf.Tensor3D, { numHeads: 2, causal: true, cache: prev });
        return [r.out, r.cache.k, r.cache.v]; // returned from tidy = kept
      }) as [tf.Tensor3D, tf.Tensor4D, tf.Tensor4D];
      if (prev) tf.dispose([prev.k, prev.v]);
      cache = { k, v };
      y.dispose();
      counts.push(tf.memory().numTensors);
    }
    expect(cache!.k.shape).toEqual([1, 2, 6, 4]);
    expect(new Set(counts).size).toBe(1);
    tf.dispose([cache!.k, cache!.v]);
  });

  it('gradients match finite differences', () => {
    const rng = new Rng(6);
    const p = attnParams(rng, 4);
    const x = randn(rng, [1, 3, 4]);
    const proj = randn(rng, [1, 3, 4]);
    gradCheck((t) => tf.sum(tf.mul(attention(p, 'attn', t as tf.Tensor3D, { numHeads: 2, causal: true }).out, proj)) as tf.Scalar, x, rng);
  });
});

describe('GLU feed-forward and dropout', () => {
  it('gluFeedForward = fc2(ln1(gelu(fc0(ln0 x)) · fc1(ln0 x)))', () => {
    const rng = new Rng(7);
    const p = new Params();
    addNorm(p, 'ffn.ln0', 4, { bias: false });
    addLinear(p, rng, 'ffn.fc0', 4, 6, { bias: false, std: 0.5 });
    addLinear(p, rng, 'ffn.fc1', 4, 6, { bias: false, std: 0.5 });
    addNorm(p, 'ffn.ln1', 6, { bias: false });
    addLinear(p, rng, 'ffn.fc2', 6, 4, { bias: false, std: 0.5 });
    const x = randn(rng, [2, 3, 4]);
    const y = gluFeedForward(p, 'ffn', x);
    const mm = (a: tf.Tensor, name: string) => tf.reshape(tf.matMul(tf.reshape(a, [-1, a.shape[2]!]), p.get(name)), [2, 3, -1]);
    const lnorm = (a: tf.Tensor) => { const { mean, variance } = tf.moments(a, -1, true); return tf.div(tf.sub(a, mean), tf.sqrt(tf.add(variance, 1e-5))); };
    const h = lnorm(x);
    const a = mm(h, 'ffn.fc0.weight');
    const erfGelu = tf.mul(tf.mul(a, 0.5), tf.add(tf.erf(tf.div(a, Math.SQRT2)), 1));
    const ref = mm(lnorm(tf.mul(erfGelu, mm(h, 'ffn.fc1.weight'))), 'ffn.fc2.weight');
    expect(maxAbsDiff(y, ref)).toBeLessThan(1e-5);
    // removing ln1 changes the result (the optional norm is really applied)
    const q = new Params();
    for (const [n, v] of p.entries()) if (!n.startsWith('ffn.ln1')) q.add(n, tf.clone(v), p.kind(n));
    expect(maxAbsDiff(gluFeedForward(q, 'ffn', x), y)).toBeGreaterThan(1e-3);
  });

  it('dropout is seeded, scaled by 1/keep, resumable, and identity in eval', () => {
    const x = tf.ones([1000]);
    const a = dropout(x, 0.25, new Rng(1), true).dataSync();
    const b = dropout(x, 0.25, new Rng(1), true).dataSync();
    expect([...a]).toEqual([...b]);
    const kept = [...a].filter((v) => v !== 0);
    expect(new Set(kept)).toEqual(new Set([Math.fround(1 / 0.75)]));
    expect(Math.abs(kept.length - 750)).toBeLessThan(60);
    expect(dropout(x, 0.25, new Rng(1), false)).toBe(x);
    const r = new Rng(2);
    dropout(x, 0.5, r, true);
    const saved = r.state();
    const next = dropout(x, 0.5, r, true).dataSync();
    expect([...dropout(x, 0.5, Rng.fromState(saved), true).dataSync()]).toEqual([...next]);
  });
});

describe('sparse cross-entropy', () => {
  function denseCE(z: tf.Tensor2D, labels: number[], eps: number, ignore: number): tf.Scalar {
    const V = z.shape[1];
    const keep = labels.map((l) => (l === ignore ? 0 : 1));
    const target = tf.add(tf.mul(tf.cast(tf.oneHot(tf.tensor1d(labels.map((l) => (l === ignore ? 0 : l)), 'int32'), V), 'float32'), 1 - eps), eps / V);
    const per = tf.neg(tf.sum(tf.mul(target, tf.logSoftmax(z)), 1));
    return tf.div(tf.sum(tf.mul(per, tf.tensor1d(keep))), Math.max(1, keep.reduce((s: number, v) => s + v, 0))) as tf.Scalar;
  }

  for (const [eps, withIgnore] of [[0, false], [0.1, false], [0, true], [0.2, true]] as const) {
    it(`equals dense softmax CE in value and gradient (ε=${eps}, ignore=${withIgnore})`, () => {
      const rng = new Rng(8);
      const z = randn(rng, [6, 11], 3) as tf.Tensor2D;
      const labels = [3, 0, 10, 7, 7, 2];
      if (withIgnore) { labels[1] = -100; labels[4] = -100; }
      const lab = tf.tensor1d(labels, 'int32');
      const sparse = (t: tf.Tensor) => sparseCrossEntropy(t as tf.Tensor2D, lab, { labelSmoothing: eps });
      const dense = (t: tf.Tensor) => denseCE(t as tf.Tensor2D, labels, eps, -100);
      expect(sparse(z).dataSync()[0]).toBeCloseTo(dense(z).dataSync()[0]!, 5);
      const gs = tf.grad(sparse)(z);
      expect(maxAbsDiff(gs, tf.grad(dense)(z))).toBeLessThan(1e-6);
      if (withIgnore) expect([...tf.slice(gs, [1, 0], [1, 11]).dataSync()].every((v) => v === 0)).toBe(true);
      gradCheck(sparse, z, rng);
    });
  }

  it('does not leak tensors and survives large logits', () => {
    const z = tf.tensor2d([[1000, 0, -1000], [0, 0, 0]]);
    const lab = tf.tensor1d([0, 2], 'int32');
    const before = tf.memory().numTensors;
    const { value, grads } = tf.tidy(() => { const r = tf.valueAndGrad((t: tf.Tensor) => sparseCrossEntropy(t as tf.Tensor2D, lab))(z); return { value: r.value, grads: r.grad }; });
    expect(value.dataSync()[0]).toBeCloseTo(Math.log(3) / 2, 5);
    expect(grads.dataSync().every(Number.isFinite)).toBe(true);
    value.dispose(); grads.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });
});
