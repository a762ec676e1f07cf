import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initCompute, tf } from '../../src/ml/backend.js';
import { inferLpipsConfig, loadLpips, Lpips, LPIPS_SCALE, LPIPS_SHIFT, LPIPS_VGG16, LpipsError, lpips, lpipsLoss, lpipsParamShapes, maxPool2x2, type LpipsConfig } from '../../src/ml/losses/lpips.js';
import { adaptiveWeight, buildDiscriminator, discriminator, generatorLoss, reconstructionLoss } from '../../src/ml/losses/vqgan-loss.js';
import { Vqgan } from '../../src/ml/models/vqgan.js';
import { exportParams, LoadParamsError, type LoadMismatch } from '../../src/ml/params.js';
import { Rng } from '../../src/ml/rng.js';
import { writeSafetensors, type RawTensor } from '../../src/ml/safetensors.js';
import { randomTensor, relativeError, runOn } from '../../src/ml/selfcheck.js';
import { decoderLastGradNorm } from './helpers.js';

/** Two slices: conv 3→4 (net.slice1.0), pool, conv 4→8 (net.slice2.3). */
const TINY: LpipsConfig = { channels: [4, 8], convsPerSlice: [1, 1] };

let dir: string;
beforeAll(async () => {
  // wasm (what training uses), with the cpu backend beside it for the gradient comparisons
  await initCompute({ backend: 'wasm', selfCheck: false });
  await import('@tensorflow/tfjs-backend-cpu');
  dir = mkdtempSync(join(tmpdir(), 'minidalle-lpips-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Random tensors in PyTorch layout under taming's names (biases non-zero, lin weights ≥ 0). */
function torchTensors(c: LpipsConfig, seed: number): Map<string, RawTensor> {
  const rng = new Rng(seed);
  const out = new Map<string, RawTensor>();
  for (const [name, shape] of lpipsParamShapes(c)) {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    if (name.startsWith('lin')) rng.fillUniform(data, 0, 1);
    else rng.fillNormal(data, 0, name.endsWith('.bias') ? 0.1 : 0.4);
    out.set(name, { dtype: 'float32', shape, data });
  }
  return out;
}

function writeFile(name: string, tensors: Map<string, RawTensor>): string {
  const path = join(dir, name);
  writeSafetensors(path, tensors);
  return path;
}

function images(seed: number, shape: [number, number, number, number]): tf.Tensor4D {
  return tf.tensor(new Rng(seed).fillUniform(new Float32Array(shape.reduce((a, b) => a * b, 1)), -1, 1), shape) as tf.Tensor4D;
}

async function mismatchesOf(p: Promise<unknown>): Promise<LoadMismatch[]> {
  const e = await p.then(() => null, (err: unknown) => err);
  expect(e).toBeInstanceOf(LoadParamsError);
  return (e as LoadParamsError).mismatches;
}

// ---------------------------------------------------------------------------------------------------
// float64 reference, written from the paper's definition over PyTorch-layout arrays

type Img = { h: number; w: number; c: number; v: Float64Array }; // HWC

function refFeatures(t: Map<string, RawTensor>, c: LpipsConfig, img: Img): Img[] {
  let x: Img = { ...img, v: img.v.map((v, i) => (v - (LPIPS_SHIFT[i % 3] as number)) / (LPIPS_SCALE[i % 3] as number)) };
  const feats: Img[] = [];
  let idx = 0;
  c.channels.forEach((cout, s) => {
    if (s > 0) {
      idx++;
      const h = Math.floor(x.h / 2), w = Math.floor(x.w / 2);
      const v = new Float64Array(h * w * x.c);
      for (let i = 0; i < h; i++) for (let j = 0; j < w; j++) for (let k = 0; k < x.c; k++) {
        let m = -Infinity;
        for (let di = 0; di < 2; di++) for (let dj = 0; dj < 2; dj++) m = Math.max(m, x.v[((2 * i + di) * x.w + 2 * j + dj) * x.c + k] as number);
        v[(i * w + j) * x.c + k] = m;
      }
      x = { h, w, c: x.c, v };
    }
    for (let n = 0; n < (c.convsPerSlice[s] as number); n++) {
      const W = t.get(`net.slice${s + 1}.${idx}.weight`)!.data; // [cout, cin, 3, 3]
      const b = t.get(`net.slice${s + 1}.${idx}.bias`)!.data;
      const v = new Float64Array(x.h * x.w * cout);
      for (let i = 0; i < x.h; i++) for (let j = 0; j < x.w; j++) for (let o = 0; o < cout; o++) {
        let acc = b[o] as number;
        for (let ky = 0; ky < 3; ky++) for (let kx = 0; kx < 3; kx++) {
          const ii = i + ky - 1, jj = j + kx - 1;
          if (ii < 0 || jj < 0 || ii >= x.h || jj >= x.w) continue;
          for (let ci = 0; ci < x.c; ci++) acc += (W[((o * x.c + ci) * 3 + ky) * 3 + kx] as number) * (x.v[(ii * x.w + jj) * x.c + ci] as number);
        }
        v[(i * x.w + j) * cout + o] = Math.max(0, acc);
      }
      x = { h: x.h, w: x.w, c: cout, v };
      idx += 2;
    }
    feats.push(x);
  });
  return feats;
}

function refLpips(t: Map<string, RawTensor>, c: LpipsConfig, a: Img, b: Img): number {
  const fa = refFeatures(t, c, a);
  const fb = refFeatures(t, c, b);
  let total = 0;
  fa.forEach((f, s) => {
    const g = fb[s]!;
    const lin = t.get(`lin${s}.model.1.weight`)!.data; // [1, C, 1, 1]
    let sum = 0;
    for (let p = 0; p < f.h * f.w; p++) {
      let na = 0, nb = 0;
      for (let k = 0; k < f.c; k++) {
        na += (f.v[p * f.c + k] as number) ** 2;
        nb += (g.v[p * f.c + k] as number) ** 2;
      }
      na = Math.sqrt(na) + 1e-10;
      nb = Math.sqrt(nb) + 1e-10;
      for (let k = 0; k < f.c; k++) sum += (lin[k] as number) * ((f.v[p * f.c + k] as number) / na - (g.v[p * f.c + k] as number) / nb) ** 2;
    }
    total += sum / (f.h * f.w);
  });
  return total;
}

function toImgs(x: tf.Tensor4D): Img[] {
  const [B, h, w, c] = x.shape;
  const v = x.dataSync();
  return Array.from({ length: B }, (_, i) => ({ h, w, c, v: Float64Array.from(v.subarray(i * h * w * c, (i + 1) * h * w * c)) }));
}

// ---------------------------------------------------------------------------------------------------

describe('LPIPS weights', () => {
  it("uses taming's names and torchvision's feature indices for VGG16", () => {
    const shapes = lpipsParamShapes(LPIPS_VGG16);
    const convs = [...shapes.keys()].filter((n) => n.startsWith('net.') && n.endsWith('.weight'));
    expect(convs).toEqual([0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28].map((i) => `net.slice${i < 4 ? 1 : i < 9 ? 2 : i < 16 ? 3 : i < 23 ? 4 : 5}.${i}.weight`));
    expect(shapes.get('net.slice1.0.weight')).toEqual([64, 3, 3, 3]);
    expect(shapes.get('net.slice2.5.weight')).toEqual([128, 64, 3, 3]);
    expect(shapes.get('net.slice5.28.bias')).toEqual([512]);
    expect(shapes.get('lin0.model.1.weight')).toEqual([1, 64, 1, 1]);
    expect(shapes.get('lin4.model.1.weight')).toEqual([1, 512, 1, 1]);
    expect(shapes.size).toBe(13 * 2 + 5);
    expect(inferLpipsConfig(shapes)).toEqual(LPIPS_VGG16);
    expect([...lpipsParamShapes(TINY).keys()]).toEqual(['net.slice1.0.weight', 'net.slice1.0.bias', 'lin0.model.1.weight', 'net.slice2.3.weight', 'net.slice2.3.bias', 'lin1.model.1.weight']);
  });

  it('loads a converted file bit-exactly (config given or read from the file), frozen', async () => {
    const tensors = torchTensors(TINY, 1);
    const path = writeFile('tiny.safetensors', tensors);
    for (const net of [await loadLpips(path, TINY), await loadLpips(path)]) {
      expect(net.config).toEqual(TINY);
      expect(net.params.trainable()).toEqual([]);
      const back = exportParams(net.params);
      expect([...back.keys()].sort()).toEqual([...tensors.keys()].sort());
      for (const [name, t] of back) {
        expect(t.shape, name).toEqual(tensors.get(name)!.shape);
        expect(Float32Array.from(t.dataSync()), name).toEqual(tensors.get(name)!.data);
      }
      tf.dispose([...back.values()]);
      net.dispose();
    }
  });

  it('refuses a file with missing, unexpected or wrongly shaped tensors, listing them all', async () => {
    const tensors = torchTensors(TINY, 2);
    tensors.delete('net.slice1.0.bias');
    tensors.set('lin1.model.1.weight', { dtype: 'float32', shape: [1, 7, 1, 1], data: new Float32Array(7) });
    tensors.set('net.slice2.4.weight', { dtype: 'float32', shape: [1], data: new Float32Array(1) });
    const path = writeFile('bad.safetensors', tensors);
    const m = await mismatchesOf(loadLpips(path, TINY));
    expect(m).toEqual(
      expect.arrayContaining([
        { name: 'net.slice1.0.bias', problem: 'missing', expected: [4] },
        { name: 'lin1.model.1.weight', problem: 'shape', expected: [1, 8, 1, 1], got: [1, 7, 1, 1] },
        { name: 'net.slice2.4.weight', problem: 'unexpected', got: [1] },
      ]),
    );
    expect(m).toHaveLength(3);
    // read from the file, the architecture cannot explain it either
    expect((await mismatchesOf(loadLpips(path))).length).toBeGreaterThan(0);
    // a tiny file is not VGG16
    const vgg = await mismatchesOf(loadLpips(writeFile('tiny2.safetensors', torchTensors(TINY, 3)), LPIPS_VGG16));
    expect(vgg).toContainEqual({ name: 'net.slice5.28.weight', problem: 'missing', expected: [512, 512, 3, 3] });
    expect(vgg).toContainEqual({ name: 'net.slice1.0.weight', problem: 'shape', expected: [64, 3, 3, 3], got: [4, 3, 3, 3] });
  });

  it('refuses negative lin weights and a missing file (which is never downloaded)', async () => {
    const tensors = torchTensors(TINY, 4);
    tensors.get('lin0.model.1.weight')!.data[1] = -0.5;
    await expect(loadLpips(writeFile('neg.safetensors', tensors))).rejects.toThrow(/lin0\.model\.1\.weight has negative/);
    await expect(loadLpips(join(dir, 'nope.safetensors'))).rejects.toThrow(LpipsError);
    await expect(loadLpips(join(dir, 'nope.safetensors'))).rejects.toThrow(/does not exist.*never downloaded/s);
    await expect(loadLpips('')).rejects.toThrow(/not given/);
  });
});

describe('LPIPS distance', () => {
  it('is 0 for identical images, positive otherwise, symmetric, one value per image', () => {
    const net = Lpips.create({ channels: [4, 8, 8], convsPerSlice: [1, 2, 1] }, 5);
    const [same, d, dRev] = tf.tidy(() => {
      const x = images(1, [3, 8, 8, 3]);
      const y = images(2, [3, 8, 8, 3]);
      return [lpips(net, x, x), lpips(net, x, y), lpips(net, y, x)].map((t) => Array.from(t.dataSync()));
    });
    expect(same).toEqual([0, 0, 0]);
    expect(d).toHaveLength(3);
    for (const v of d!) expect(v).toBeGreaterThan(1e-3);
    d!.forEach((v, i) => expect(dRev![i]).toBeCloseTo(v, 6));
    net.dispose();
  });

  for (const c of [{ channels: [5], convsPerSlice: [2] }, { channels: [3, 6], convsPerSlice: [1, 2] }]) {
    it(`matches a float64 reference on 4×4 images (${c.channels.length} slice(s), loaded weights)`, async () => {
      const tensors = torchTensors(c, 6);
      const net = await loadLpips(writeFile(`ref${c.channels.length}.safetensors`, tensors), c);
      const x = images(7, [2, 4, 4, 3]);
      const y = images(8, [2, 4, 4, 3]);
      const got = tf.tidy(() => lpips(net, x, y).dataSync());
      const xs = toImgs(x);
      const ys = toImgs(y);
      const want = xs.map((a, i) => refLpips(tensors, c, a, ys[i]!));
      for (let i = 0; i < want.length; i++) {
        expect(want[i]).toBeGreaterThan(1e-2);
        expect(Math.abs((got[i] as number) - want[i]!)).toBeLessThan(1e-5);
      }
      tf.dispose([x, y]);
      net.dispose();
    });
  }

  it('sends gradients to the images, none to its frozen parameters; the loss is the batch mean', () => {
    const net = Lpips.create(TINY, 9);
    const x = images(10, [2, 8, 8, 3]);
    const y = tf.variable(images(11, [2, 8, 8, 3]), true, 'lpips-test-y');
    const before = tf.memory().numTensors;
    const { value, grads } = tf.variableGrads(() => lpipsLoss(net, x, y));
    expect(Object.keys(grads)).toEqual(['lpips-test-y']); // every trainable variable: only y
    const g = grads['lpips-test-y']!;
    expect(tf.tidy(() => tf.max(tf.abs(g)).dataSync()[0] as number)).toBeGreaterThan(1e-4);
    expect(value.dataSync()[0]).toBeCloseTo(tf.tidy(() => tf.mean(lpips(net, x, y)).dataSync()[0] as number), 6);
    // x and y both get gradients through the same network; params are not watched
    const [gx, gy] = tf.grads((a: tf.Tensor, b: tf.Tensor) => lpipsLoss(net, a as tf.Tensor4D, b as tf.Tensor4D))([x, y]);
    expect(tf.tidy(() => tf.sum(tf.abs(gx!)).dataSync()[0] as number)).toBeGreaterThan(0);
    expect(relativeError(gy!.dataSync(), g.dataSync())).toBeLessThan(1e-5);
    tf.dispose([value, g, gx!, gy!]);
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([x, y]);
    net.dispose();
  });
});

describe('LPIPS in the VQGAN loss', () => {
  it("the adaptive weight's reconstruction gradient includes the perceptual term (taming's nll_loss)", () => {
    const m = Vqgan.create({ ch: 8, ch_mult: [1, 2], num_res_blocks: 1, attn_resolutions: [8], z_channels: 4, n_embed: 16, embed_dim: 4, resolution: 16, num_groups: 4 }, 3);
    const disc = { n_layers: 1, ndf: 4, in_channels: 3 };
    const d = buildDiscriminator(disc, 4);
    const net = Lpips.create(TINY, 5);
    const x = images(6, [2, 16, 16, 3]);
    const perceptual = (a: tf.Tensor4D, b: tf.Tensor4D): tf.Scalar => tf.mul(lpipsLoss(net, a, b), 0.5);
    const fwd = m.forward(x);
    const opts = { recLoss: 'l1' as const, discWeight: 0.8 };
    const lam = adaptiveWeight(x, fwd.xrec, fwd.hLast, m, d, disc, { ...opts, perceptual });
    const lamPixel = adaptiveWeight(x, fwd.xrec, fwd.hLast, m, d, disc, opts);
    tf.dispose([fwd.xrec, fwd.hLast, fwd.qloss, fwd.indices, fwd.z]);
    const gradNorm = (f: (xrec: tf.Tensor4D) => tf.Scalar): number => decoderLastGradNorm(m, x, f);
    const nRec = gradNorm((r) => tf.add(reconstructionLoss(x, r, 'l1'), perceptual(x, r)));
    const nG = gradNorm((r) => generatorLoss(discriminator(d, disc, r)));
    expect(lam).toBeCloseTo((0.8 * nRec) / (nG + 1e-4), 4);
    expect(Math.abs(lam - lamPixel)).toBeGreaterThan(1e-3 * lam);
    tf.dispose([x]);
    m.dispose();
    d.dispose();
    net.dispose();
  });
});

describe('maxPool2x2', () => {
  /** d/dx Σ pool(x)·w, with a fixed random w. */
  const poolGrad = (shape: [number, number, number, number], seed: number) => (): tf.Tensor[] => {
    const x = randomTensor(shape, seed) as tf.Tensor4D;
    const y = maxPool2x2(x);
    const w = randomTensor(y.shape, seed + 1);
    return [y, tf.grad((t: tf.Tensor) => tf.sum(tf.mul(maxPool2x2(t as tf.Tensor4D), w)))(x)];
  };

  for (const shape of [[2, 8, 8, 3], [1, 5, 7, 4], [3, 4, 6, 1]] as [number, number, number, number][]) {
    it(`forward and gradient on wasm equal cpu and stock cpu maxPool (${shape.join('×')})`, async () => {
      const wasm = await runOn('wasm', poolGrad(shape, 20));
      const cpu = await runOn('cpu', poolGrad(shape, 20));
      // the stock op on cpu (whose MaxPoolGrad is right) as the reference for both
      const stock = await runOn('cpu', () => {
        const x = randomTensor(shape, 20) as tf.Tensor4D;
        const y = tf.maxPool(x, 2, 2, 'valid');
        const w = randomTensor(y.shape, 21);
        return [y, tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.maxPool(t as tf.Tensor4D, 2, 2, 'valid'), w)))(x)];
      });
      for (let i = 0; i < 2; i++) {
        expect(wasm[i]!.shape).toEqual(stock[i]!.shape);
        expect(relativeError(wasm[i]!.values, stock[i]!.values), `wasm output ${i}`).toBeLessThan(1e-6);
        expect(relativeError(cpu[i]!.values, stock[i]!.values), `cpu output ${i}`).toBeLessThan(1e-6);
      }
      // each window passes its dy to exactly one input: as many non-zero gradients as outputs
      expect(wasm[1]!.values.filter((v) => v !== 0).length).toBe(wasm[0]!.values.length);
    });
  }

  it('shares the gradient between tied maxima', async () => {
    const [g] = await runOn('wasm', () => [tf.grad((t: tf.Tensor) => tf.sum(maxPool2x2(t as tf.Tensor4D)))(tf.tensor4d([1, 1, 0, 1], [1, 2, 2, 1]))]);
    expect(Array.from(g!.values)).toEqual([1 / 3, 1 / 3, 0, 1 / 3].map(Math.fround));
  });

  it("LPIPS's input gradient on wasm equals cpu", async () => {
    const grad = (): tf.Tensor => {
      const net = Lpips.create({ channels: [4, 6], convsPerSlice: [2, 1] }, 12);
      const x = randomTensor([2, 8, 8, 3], 13) as tf.Tensor4D;
      const g = tf.grad((y: tf.Tensor) => lpipsLoss(net, x, y as tf.Tensor4D))(randomTensor([2, 8, 8, 3], 14));
      net.dispose();
      return g;
    };
    const [w] = await runOn('wasm', grad);
    const [c] = await runOn('cpu', grad);
    expect(c!.values.some((v) => v !== 0)).toBe(true);
    expect(relativeError(w!.values, c!.values)).toBeLessThan(1e-4);
  });
});
