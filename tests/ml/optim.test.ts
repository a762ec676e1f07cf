import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  AdamW,
  Adafactor,
  OptimizerError,
  accumulateGradients,
  clipByGlobalNorm,
  disposeGrads,
  factoredDims,
  loadOptimizerState,
  matrixDecayMask,
  normsByName,
  saveOptimizerState,
  valueAndGrads,
  type Grads,
} from '../../src/ml/optim/index.js';
import { Params } from '../../src/ml/params.js';
import { Rng } from '../../src/ml/rng.js';
import { useCpu } from './helpers.js';

beforeAll(useCpu);
const dir = mkdtempSync(join(tmpdir(), 'minidalle-optim-'));

function grads(entries: [string, number[], number[]][]): Grads {
  return new Map(entries.map(([k, v, s]) => [k, tf.tensor(v, s)]));
}

describe('AdamW', () => {
  it('first step by hand: p − lr·(m̂/(√v̂+ε) + λp)', () => {
    const p = new Params();
    p.add('w', tf.tensor([1, -2]));
    const opt = new AdamW({ learningRate: 0.1, weightDecay: 0.1 });
    opt.apply(p, grads([['w', [0.5, 3], [2]]]));
    // bias-corrected m̂ = g, v̂ = g², so the Adam term is sign(g): 1 − 0.1·(1 + 0.1) and −2 − 0.1·(1 − 0.2)
    const got = [...p.get('w').dataSync()];
    expect(got[0]).toBeCloseTo(0.89, 6);
    expect(got[1]).toBeCloseTo(-2.08, 6);
    expect(opt.step).toBe(1);
  });

  it('matches a float64 reference over several steps with a schedule and a decay mask', () => {
    const rng = new Rng(1);
    const p = new Params();
    p.add('a.weight', tf.tensor([0.3, -0.7, 1.2]));
    p.add('a.bias', tf.tensor([0.1]));
    const lr = (s: number) => 0.05 / (1 + s);
    const opt = new AdamW({ learningRate: lr, beta1: 0.8, beta2: 0.95, eps: 1e-6, weightDecay: 0.2, decayMask: (n) => n.endsWith('.weight') });
    const ref = { w: [0.3, -0.7, 1.2], b: [0.1], mw: [0, 0, 0], vw: [0, 0, 0], mb: [0], vb: [0] };
    for (let s = 0; s < 5; s++) {
      const gw = [rng.normal(), rng.normal(), rng.normal()].map(Math.fround);
      const gb = [Math.fround(rng.normal())];
      opt.apply(p, grads([['a.weight', gw, [3]], ['a.bias', gb, [1]]]));
      const t = s + 1;
      const upd = (x: number[], m: number[], v: number[], g: number[], decay: boolean) => x.forEach((xi, i) => {
        m[i] = 0.8 * m[i]! + 0.2 * g[i]!;
        v[i] = 0.95 * v[i]! + 0.05 * g[i]! ** 2;
        const u = m[i]! / (1 - 0.8 ** t) / (Math.sqrt(v[i]! / (1 - 0.95 ** t)) + 1e-6) + (decay ? 0.2 * xi : 0);
        x[i] = xi - lr(s) * u;
      });
      upd(ref.w, ref.mw, ref.vw, gw, true);
      upd(ref.b, ref.mb, ref.vb, gb, false);
    }
    [...p.get('a.weight').dataSync()].forEach((v, i) => expect(v).toBeCloseTo(ref.w[i]!, 5));
    expect(p.get('a.bias').dataSync()[0]).toBeCloseTo(ref.b[0]!, 5);
  });

  it('matrixDecayMask decays weights and embeddings, not biases or norm scales', () => {
    const p = new Params();
    p.add('fc.weight', tf.ones([2, 2]), 'linear');
    p.add('fc.bias', tf.ones([2]));
    p.add('ln.weight', tf.ones([2]));
    const opt = new AdamW({ learningRate: 0.1, weightDecay: 0.5, decayMask: matrixDecayMask(p) });
    opt.apply(p, grads([['fc.weight', [0, 0, 0, 0], [2, 2]], ['fc.bias', [0, 0], [2]], ['ln.weight', [0, 0], [2]]]));
    // zero gradient: only decay moves a parameter, by lr·λ·p = 0.05
    expect([...p.get('fc.weight').dataSync()].every((v) => Math.abs(v - 0.95) < 1e-6)).toBe(true);
    expect([...p.get('fc.bias').dataSync()]).toEqual([1, 1]);
    expect([...p.get('ln.weight').dataSync()]).toEqual([1, 1]);
  });

  it('a step does not grow the tensor count and gradients of the wrong shape are refused', () => {
    const p = new Params();
    p.add('w', tf.ones([4, 3]));
    const opt = new AdamW({ learningRate: 0.01 });
    const g = grads([['w', new Array(12).fill(0.1), [4, 3]]]);
    opt.apply(p, g);
    const n = tf.memory().numTensors;
    for (let i = 0; i < 3; i++) opt.apply(p, g);
    expect(tf.memory().numTensors).toBe(n);
    expect(() => opt.apply(p, grads([['w', [1, 2, 3], [3]]]))).toThrow(OptimizerError);
  });
});

/** float64 Adafactor for a 2-D [R, C] parameter with R ≤ C (rows factored as d1 = 0, d0 = 1) */
function adafactorRef(w: number[][], gs: number[][][], lr: number, clip: number): number[][] {
  const R = w.length, C = w[0]!.length;
  const vr = new Array(R).fill(0), vc = new Array(C).fill(0);
  gs.forEach((g, step) => {
    const b2 = 1 - (step + 1) ** -0.8;
    const g2 = g.map((row) => row.map((x) => x * x + 1e-30));
    for (let r = 0; r < R; r++) vr[r] = b2 * vr[r] + (1 - b2) * g2[r]!.reduce((s, x) => s + x, 0) / C;
    for (let c = 0; c < C; c++) vc[c] = b2 * vc[c] + (1 - b2) * g2.reduce((s, row) => s + row[c]!, 0) / R;
    const rowMean = vr.reduce((s, x) => s + x, 0) / R;
    const u = g.map((row, r) => row.map((x, c) => x / Math.sqrt(vr[r] / rowMean) / Math.sqrt(vc[c])));
    const rms = Math.sqrt(u.flat().reduce((s, x) => s + x * x, 0) / (R * C));
    const den = Math.max(1, rms / clip);
    w = w.map((row, r) => row.map((x, c) => x - (lr * u[r]![c]!) / den));
  });
  return w;
}

describe('Adafactor', () => {
  it('factors dims like optax (largest two, stable on ties, min size)', () => {
    expect(factoredDims([4, 8], true, 2)).toEqual([0, 1]);
    expect(factoredDims([8, 4], true, 2)).toEqual([1, 0]);
    expect(factoredDims([3, 3, 5], true, 2)).toEqual([1, 2]);
    expect(factoredDims([4, 8], true, 128)).toBeNull();
    expect(factoredDims([400], true, 1)).toBeNull();
    expect(factoredDims([400, 400], false, 1)).toBeNull();
  });

  it('unfactored first step is lr·sign(g) (v = g², rms 1, no clip)', () => {
    const p = new Params();
    p.add('b', tf.tensor([1, 1, 1]));
    const opt = new Adafactor({ learningRate: 0.1 });
    opt.apply(p, grads([['b', [2, -0.5, 1e-3], [3]]]));
    [...p.get('b').dataSync()].forEach((v, i) => expect(v).toBeCloseTo([0.9, 1.1, 0.9][i]!, 5));
  });

  it('factored second moments match a float64 reference over 3 steps (with clipping active)', () => {
    const rng = new Rng(2);
    const w0 = [[0.5, -0.1, 0.2, 0.7], [0.3, 0.3, -0.9, 0.1]];
    const gs = [0, 1, 2].map(() => w0.map((row) => row.map(() => Math.fround(rng.normal() * (1 + rng.uniform() * 3)))));
    for (const clip of [1, 0.5]) {
      const p = new Params();
      p.add('w', tf.tensor(w0));
      const opt = new Adafactor({ learningRate: 0.01, minDimSizeToFactor: 2, clippingThreshold: clip });
      for (const g of gs) opt.apply(p, grads([['w', g.flat(), [2, 4]]]));
      const st = opt.state();
      expect([...st.tensors.keys()].sort()).toEqual(['vc/w', 'vr/w']);
      expect(st.tensors.get('vr/w')!.shape).toEqual([2]);
      expect(st.tensors.get('vc/w')!.shape).toEqual([4]);
      const ref = adafactorRef(w0, gs, 0.01, clip).flat();
      [...p.get('w').dataSync()].forEach((v, i) => expect(v).toBeCloseTo(ref[i]!, 5));
    }
  });

  it('momentum, parameter scale and weight decay follow the optax chain', () => {
    const p = new Params();
    p.add('b', tf.tensor([2, -2]));
    const opt = new Adafactor({ learningRate: 0.1, momentum: 0.5, multiplyByParameterScale: true, weightDecay: 0.01 });
    opt.apply(p, grads([['b', [1, 1], [2]]]));
    // u = sign(g) = 1; ·lr = 0.1; ·max(rms(p)=2, 1e-3) = 0.2; momentum: 0.5·0 + 0.5·0.2 = 0.1; + 0.01·p
    [...p.get('b').dataSync()].forEach((v, i) => expect(v).toBeCloseTo([2 - 0.1 - 0.02, -2 - 0.1 + 0.02][i]!, 5));
  });
});

describe('clipping and accumulation', () => {
  it('clipByGlobalNorm scales to the max norm and reports the norm before', () => {
    const { grads: g, norm } = clipByGlobalNorm(grads([['a', [3], [1]], ['b', [4], [1]]]), 1);
    expect(norm).toBeCloseTo(5, 5);
    expect(g.get('a')!.dataSync()[0]).toBeCloseTo(0.6, 6);
    expect(g.get('b')!.dataSync()[0]).toBeCloseTo(0.8, 6);
    const small = clipByGlobalNorm(grads([['a', [0.3], [1]]]), 1);
    expect(small.grads.get('a')!.dataSync()[0]).toBeCloseTo(0.3, 6);
  });

  it('normsByName gives the L2 norm of each tensor under its name', () => {
    const n = normsByName(grads([['enc.w', [3, 4], [2]], ['dec.w', [1, 2, 2, 4], [2, 2]]]));
    expect(n.get('enc.w')).toBeCloseTo(5, 5);
    expect(n.get('dec.w')).toBeCloseTo(5, 5);
    expect(normsByName(new Map()).size).toBe(0);
  });

  it('accumulated micro-batch gradients equal the full-batch gradient of the mean loss', () => {
    const rng = new Rng(3);
    const p = new Params();
    p.add('w', tf.tensor(rng.fillNormal(new Float32Array(6)), [3, 2]), 'linear');
    const x = tf.tensor(rng.fillNormal(new Float32Array(8 * 3)), [8, 3]);
    const y = tf.tensor(rng.fillNormal(new Float32Array(8 * 2)), [8, 2]);
    const lossOf = (xs: tf.Tensor, ys: tf.Tensor) => tf.mean(tf.square(tf.sub(tf.matMul(xs, p.get('w')), ys))) as tf.Scalar;
    const full = valueAndGrads(p, () => lossOf(x, y));
    const before = tf.memory().numTensors;
    const acc = accumulateGradients(p, 4, (i) => lossOf(tf.slice(x, [2 * i, 0], [2, 3]), tf.slice(y, [2 * i, 0], [2, 2])));
    expect(tf.memory().numTensors).toBe(before + 1); // only the averaged gradient remains
    expect(acc.loss).toBeCloseTo(full.loss.dataSync()[0]!, 5);
    const a = acc.grads.get('w')!.dataSync(), f = full.grads.get('w')!.dataSync();
    a.forEach((v, i) => expect(v).toBeCloseTo(f[i]!, 5));
    disposeGrads(acc.grads);
  });
});

describe('optimizer state save/restore', () => {
  for (const make of [() => new AdamW({ learningRate: 0.01 }), () => new Adafactor({ learningRate: 0.01, minDimSizeToFactor: 2, momentum: 0.9 })]) {
    it(`${make().name}: state round-trips exactly through safetensors and is validated`, async () => {
      const p = new Params();
      p.add('w', tf.tensor([[1, 2, 3], [4, 5, 6]]));
      p.add('b', tf.tensor([1, 2]));
      const opt = make();
      const rng = new Rng(4);
      const step = () => grads([['w', [...rng.fillNormal(new Float32Array(6))], [2, 3]], ['b', [rng.normal(), rng.normal()], [2]]]);
      for (let i = 0; i < 2; i++) opt.apply(p, step());
      const path = join(dir, `${opt.name}.safetensors`);
      saveOptimizerState(path, opt, { rng: JSON.stringify(rng.state()) });
      const opt2 = make();
      const meta = await loadOptimizerState(path, opt2, p);
      expect(opt2.step).toBe(2);
      expect(JSON.parse(meta.rng!)).toEqual(rng.state());
      const a = opt.state(), b = opt2.state();
      expect([...b.tensors.keys()].sort()).toEqual([...a.tensors.keys()].sort());
      for (const [k, t] of a.tensors) expect([...b.tensors.get(k)!.dataSync()]).toEqual([...t.dataSync()]);
      // a model whose shapes differ is refused with the file name
      const other = new Params();
      other.add('w', tf.zeros([3, 3]));
      other.add('b', tf.zeros([2]));
      await expect(loadOptimizerState(path, make(), other)).rejects.toThrow(new RegExp(`${opt.name}\\.safetensors: optimizer state does not fit the model`));
      const wrong = opt.name === 'adamw' ? new Adafactor({ learningRate: 1 }) : new AdamW({ learningRate: 1 });
      await expect(loadOptimizerState(path, wrong, p)).rejects.toThrow(/optimizer state is for/);
    });
  }
});
