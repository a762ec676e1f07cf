/**
 * The native kernels give the same bits whatever the thread count: reductions are split into chunks fixed by
 * the shape alone and added in chunk order, so a run of one seed trains the same model alone on the machine
 * or beside another stage (which takes some of the cores away, core/threads.ts). Every job is split however
 * small (minimum work 1), so each split path runs even on these tiny cases.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initCompute, tf } from '../../src/ml/backend.js';
import { loadNativeKernels, nativeMode, useNativeKernels } from '../../src/ml/kernels/native.js';
import { DalleBart } from '../../src/ml/models/dallebart.js';
import { Vqgan } from '../../src/ml/models/vqgan.js';
import { reconstructionLoss } from '../../src/ml/losses/vqgan-loss.js';
import { AdamW, disposeGrads, valueAndGrads } from '../../src/ml/optim/index.js';
import * as nn from '../../src/ml/nn.js';
import { Params } from '../../src/ml/params.js';
import { Rng } from '../../src/ml/rng.js';

const nativeBuilt = loadNativeKernels().available || nativeMode() === 'require';
const THREADS = [1, 2, 3, 5];

beforeAll(async () => {
  await initCompute({ backend: 'wasm', selfCheck: false });
});
afterAll(() => useNativeKernels(true, 2, 1 << 15));

/** Every parameter's bits after `steps` AdamW steps of `loss`, one array per parameter. */
function train(params: Params, loss: () => tf.Scalar, steps: number): Float32Array[] {
  const opt = new AdamW({ learningRate: 3e-3, weightDecay: 0.01 });
  for (let i = 0; i < steps; i++) {
    const { loss: l, grads } = valueAndGrads(params, loss);
    opt.apply(params, grads);
    disposeGrads(grads);
    l.dispose();
  }
  opt.dispose();
  return params.names().map((n) => params.get(n).dataSync() as Float32Array);
}

/** Runs `make` (which builds, trains and returns arrays) at each thread count; all must equal the first bit for bit. */
function expectSameBits(make: () => Float32Array[]): void {
  const runs = THREADS.map((t) => {
    useNativeKernels(true, t, 1);
    return make();
  });
  const [first, ...rest] = runs;
  expect(first!.some((a) => a.some((v) => v !== 0))).toBe(true);
  rest.forEach((run, r) => {
    run.forEach((a, i) => {
      const differing = a.findIndex((v, k) => !Object.is(v, first![i]![k]));
      expect(differing, `${THREADS[r + 1]} threads, array ${i}: first differing element`).toBe(-1);
    });
  });
}

describe.skipIf(!nativeBuilt)('native kernels, any thread count', () => {
  it('sums over leading, middle and trailing axes, few rows or many', () => {
    expectSameBits(() => {
      const x = tf.randomNormal([3, 1000, 7], 0, 1, 'float32', 5);
      const out = [tf.sum(x, [0, 1]), tf.sum(x, 1), tf.sum(tf.reshape(x, [3000, 7]), 0), tf.sum(x, 2), tf.sum(x)];
      const arrays = out.map((t) => t.dataSync() as Float32Array);
      tf.dispose([x, ...out]);
      return arrays;
    });
  });

  it('the gradients of a conv filter, a group norm and a layer norm', () => {
    expectSameBits(() => {
      const p = new Params();
      p.add('conv', tf.randomNormal([3, 3, 8, 8], 0, 0.2, 'float32', 7));
      for (const n of ['gn', 'ln']) {
        p.add(`${n}.weight`, tf.randomNormal([8], 1, 0.1, 'float32', 8));
        p.add(`${n}.bias`, tf.randomNormal([8], 0, 0.1, 'float32', 9));
      }
      const x = tf.randomNormal([6, 12, 12, 8], 0, 1, 'float32', 6) as tf.Tensor4D;
      const { loss, grads } = valueAndGrads(p, () => {
        const y = tf.conv2d(x, p.get('conv') as tf.Tensor4D, 1, 'same');
        const g = nn.groupNorm(p, 'gn', y, 4);
        return tf.sum(tf.square(nn.layerNorm(p, 'ln', tf.reshape(g, [6 * 144, 8]))));
      });
      const arrays = p.names().map((n) => grads.get(n)!.dataSync() as Float32Array);
      disposeGrads(grads);
      tf.dispose([loss, x]);
      p.dispose();
      return arrays;
    });
  });

  it('a DalleBart trained three steps with dropout', () => {
    expectSameBits(() => {
      const m = DalleBart.create({
        model_type: 'dallebart', vocab_size: 40, d_model: 16, encoder_layers: 1, decoder_layers: 1, encoder_attention_heads: 2, decoder_attention_heads: 2,
        encoder_ffn_dim: 24, decoder_ffn_dim: 24, use_glu: true, use_bias: false, ln_positions: 'preln', use_final_ln_encoder: true, use_final_ln_decoder: true,
        max_text_length: 6, image_vocab_size: 32, image_length: 9, dropout: 0.1,
      }, 3);
      const ids = tf.tensor2d(Int32Array.from({ length: 4 * 6 }, (_, i) => 3 + ((i * 7) % 37)), [4, 6], 'int32');
      const mask = tf.ones([4, 6], 'int32') as tf.Tensor2D;
      const codes = tf.tensor2d(Int32Array.from({ length: 4 * 9 }, (_, i) => (i * 13) % 32), [4, 9], 'int32');
      const rng = new Rng(1);
      const arrays = train(m.params, () => m.loss(ids, mask, codes, { training: true, rng }), 3);
      m.dispose();
      tf.dispose([ids, mask, codes]);
      return arrays;
    });
  });

  it('a VQGAN trained three steps', () => {
    expectSameBits(() => {
      const vq = Vqgan.create({ ch: 8, ch_mult: [1, 2], num_res_blocks: 1, attn_resolutions: [], z_channels: 8, n_embed: 32, embed_dim: 8, num_groups: 4, resolution: 8 }, 2);
      const x = tf.randomUniform([4, 8, 8, 3], -1, 1, 'float32', 3) as tf.Tensor4D;
      const rng = new Rng(2);
      const arrays = train(vq.params, () => {
        const r = vq.forward(x, { training: true, rng });
        return tf.add(reconstructionLoss(x, r.xrec, 'l2'), r.qloss) as tf.Scalar;
      }, 3);
      vq.params.dispose();
      x.dispose();
      return arrays;
    });
  });
});
