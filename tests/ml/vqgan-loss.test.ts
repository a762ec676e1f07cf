import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  adaptiveWeight,
  buildDiscriminator,
  codebookStats,
  CodebookUsage,
  discriminator,
  generatorLoss,
  hingeDLoss,
  psnr,
  reconstructionLoss,
  restartDeadCodes,
} from '../../src/ml/losses/vqgan-loss.js';
import { Vqgan } from '../../src/ml/models/vqgan.js';
import { Rng } from '../../src/ml/rng.js';
import { decoderLastGradNorm, useCpu } from './helpers.js';

const TINY = { ch: 8, ch_mult: [1, 2], num_res_blocks: 1, attn_resolutions: [], z_channels: 4, n_embed: 16, embed_dim: 4, resolution: 16, num_groups: 4 };
const DISC = { n_layers: 2, ndf: 4, in_channels: 3 };

beforeAll(useCpu);

function images(seed: number, B = 2, side = 16): tf.Tensor4D {
  return tf.tensor(new Rng(seed).fillUniform(new Float32Array(B * side * side * 3), -1, 1), [B, side, side, 3]) as tf.Tensor4D;
}

describe('vqgan losses', () => {
  it('PatchGAN discriminator: taming layer names and patch logits', () => {
    const d = buildDiscriminator(DISC, 1);
    expect(d.names()).toEqual(['main.0.weight', 'main.0.bias', 'main.2.weight', 'main.2.bias', 'main.5.weight', 'main.5.bias', 'main.8.weight', 'main.8.bias']);
    const x = images(1);
    const y = tf.tidy(() => discriminator(d, DISC, x));
    expect(y.shape).toEqual([2, 2, 2, 1]); // 16 → 8 → 4 → 3 → 2
    tf.dispose([x, y]);
    d.dispose();
  });

  it('hinge and generator losses', () => {
    const v = (t: tf.Scalar): number => { const n = t.dataSync()[0]!; t.dispose(); return n; };
    expect(v(hingeDLoss(tf.fill([2, 2], 2), tf.fill([2, 2], -2)))).toBe(0);
    expect(v(hingeDLoss(tf.zeros([2, 2]), tf.zeros([2, 2])))).toBe(1);
    expect(v(hingeDLoss(tf.tensor([-1, 3]), tf.tensor([1, -3])))).toBeCloseTo(0.5 * (1 + 1), 6);
    expect(v(generatorLoss(tf.tensor([1, 3])))).toBe(-2);
    expect(v(reconstructionLoss(tf.tensor([0, 0]), tf.tensor([1, -3]), 'l1'))).toBe(2);
    expect(v(reconstructionLoss(tf.tensor([0, 0]), tf.tensor([1, -3]), 'l1+l2'))).toBe(2 + 5);
  });

  it('PSNR of images in [-1, 1]', () => {
    const x = images(2);
    const y = tf.add(x, 0.1) as tf.Tensor4D;
    const yc = tf.clipByValue(y, -1, 1) as tf.Tensor4D;
    const xc = tf.clipByValue(x, -1, 1) as tf.Tensor4D;
    // fully inside the range a uniform shift of 0.1 gives 10·log10(4 / 0.01)
    const inside = tf.mul(x, 0.5) as tf.Tensor4D;
    const shifted = tf.add(inside, 0.1) as tf.Tensor4D;
    expect(psnr(inside, shifted)).toBeCloseTo(10 * Math.log10(4 / 0.01), 3);
    expect(psnr(xc, yc)).toBeGreaterThan(26);
    tf.dispose([x, y, yc, xc, inside, shifted]);
  });

  it('adaptive weight equals the ratio of full-backprop gradient norms at decoder.conv_out', () => {
    const m = Vqgan.create(TINY, 3);
    const d = buildDiscriminator(DISC, 4);
    const x = images(5);
    const fwd = m.forward(x);
    const lam = adaptiveWeight(x, fwd.xrec, fwd.hLast, m, d, DISC, { recLoss: 'l1', discWeight: 0.8 });
    tf.dispose([fwd.xrec, fwd.hLast, fwd.qloss, fwd.indices, fwd.z]);
    const gradNorm = (f: (xrec: tf.Tensor4D) => tf.Scalar): number => decoderLastGradNorm(m, x, f);
    const nRec = gradNorm((r) => reconstructionLoss(x, r, 'l1'));
    const nG = gradNorm((r) => generatorLoss(discriminator(d, DISC, r)));
    expect(nRec).toBeGreaterThan(0);
    expect(nG).toBeGreaterThan(0);
    expect(lam).toBeCloseTo((0.8 * nRec) / (nG + 1e-4), 4);
    x.dispose();
    m.dispose();
    d.dispose();
  });

  it('codebook perplexity and dead codes', () => {
    expect(codebookStats([5, 5, 5, 5])).toEqual({ perplexity: 4, used: 4, dead: 0 });
    const one = codebookStats([0, 9, 0, 0]);
    expect(one.perplexity).toBeCloseTo(1, 10);
    expect(one.dead).toBe(3);
    const u = new CodebookUsage(6);
    u.add([0, 1, 1, 4]);
    u.add(new Int32Array([4]));
    expect(u.deadCodes()).toEqual([2, 3, 5]);
    const s = u.stats();
    expect(s.used).toBe(3);
    expect(s.perplexity).toBeGreaterThan(1);
    expect(s.perplexity).toBeLessThan(3);
  });

  it('restarts dead codes from batch latents, leaving live codes untouched', () => {
    const m = Vqgan.create(TINY, 6);
    const before = m.params.get('quantize.embedding.weight').arraySync() as number[][];
    const z = tf.tensor2d([[9, 9, 9, 9], [7, 7, 7, 7], [5, 5, 5, 5]]);
    const n = restartDeadCodes(m, [1, 10], z, new Rng(1));
    expect(n).toBe(2);
    const after = m.params.get('quantize.embedding.weight').arraySync() as number[][];
    for (const k of [1, 10]) expect([9, 7, 5]).toContain(after[k]![0]);
    for (let k = 0; k < 16; k++) if (k !== 1 && k !== 10) expect(after[k]).toEqual(before[k]);
    z.dispose();
    m.dispose();
  });
});
