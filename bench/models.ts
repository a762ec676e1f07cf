/**
 * The two reference training workloads of shared/reference/tfjs-wasm.md, written with plain tf ops so
 * the bench does not depend on (or change with) src/ml/nn.ts. bench/peer/models.py mirrors them in
 * PyTorch with the same shapes. FLOPs are counted as the model is built: 2 per multiply-add of every
 * conv and matmul in the forward pass (a training step is then ~3× that).
 */
import { sparseSoftmaxCrossEntropy, stopGradient, straightThrough, tf, upsampleNearest2x } from '../src/ml/backend.js';
import { type AdamW, disposeGrads, valueAndGrads } from '../src/ml/optim/index.js';
import { Params } from '../src/ml/params.js';
import { randomValues } from '../src/ml/selfcheck.js';

export interface Workload {
  name: string;
  /** Forward-pass FLOPs of one batch. */
  forwardFlops: number;
  params: Params;
  loss: () => tf.Scalar;
  dispose: () => void;
}

/** One training step of `w` with `opt`; returns the loss. */
export function trainStep(w: Workload, opt: AdamW): number {
  const { loss, grads } = valueAndGrads(w.params, w.loss);
  opt.apply(w.params, grads);
  disposeGrads(grads);
  const value = loss.dataSync()[0] as number;
  loss.dispose();
  return value;
}

let seed = 1;
/** A parameter factory for one workload: uniform(−scale, scale) values, or `ones` for norm scales. */
function paramFactory(params: Params): (shape: number[], scale: number | 'ones') => tf.Variable {
  return (shape, scale) => {
    const name = `w${params.names().length}`;
    if (scale === 'ones') return params.add(name, tf.ones(shape));
    const v = tf.tensor(randomValues(tf.util.sizeFromShape(shape), seed++), shape);
    const p = params.add(name, tf.mul(v, scale));
    v.dispose();
    return p;
  };
}

// ---------------------------------------------------------------- VQ autoencoder
export interface VqConfig {
  batch: number; // 8
  size: number; // 64 (square images)
  channels: number[]; // [32, 64, 128]
  codebook: number; // 512
  codeDim: number; // 64
  groups: number; // GroupNorm groups
}
export const VQ_REFERENCE: VqConfig = { batch: 8, size: 64, channels: [32, 64, 128], codebook: 512, codeDim: 64, groups: 8 };

export function vqAutoencoder(cfg: VqConfig = VQ_REFERENCE): Workload {
  const params = new Params();
  const param = paramFactory(params);
  let flops = 0;
  const conv = (ci: number, co: number, k: number, hw: number, stride = 1) => {
    const w = param([k, k, ci, co], 1 / Math.sqrt(k * k * ci));
    const b = param([co], 0);
    const out = Math.floor(hw / stride);
    flops += 2 * cfg.batch * out * out * k * k * ci * co;
    return (x: tf.Tensor4D): tf.Tensor4D =>
      tf.add(tf.conv2d(x, w as tf.Tensor4D, stride, stride === 1 ? 'same' : [[0, 0], [1, 1], [1, 1], [0, 0]]), b) as tf.Tensor4D;
  };
  const norm = (c: number) => {
    const g = param([c], 0);
    const gamma = param([c], 'ones');
    return (x: tf.Tensor4D): tf.Tensor4D => {
      const [n, h, w] = x.shape;
      const r = tf.reshape(x, [n, h, w, cfg.groups, c / cfg.groups]);
      const { mean, variance } = tf.moments(r, [1, 2, 4], true);
      const y = tf.reshape(tf.div(tf.sub(r, mean), tf.sqrt(tf.add(variance, 1e-6))), [n, h, w, c]);
      return tf.add(tf.mul(y, gamma), g) as tf.Tensor4D;
    };
  };
  const silu = (x: tf.Tensor4D): tf.Tensor4D => tf.mul(x, tf.sigmoid(x));
  const resBlock = (c: number, hw: number) => {
    const [n1, c1, n2, c2] = [norm(c), conv(c, c, 3, hw), norm(c), conv(c, c, 3, hw)];
    return (x: tf.Tensor4D): tf.Tensor4D => tf.add(x, c2(silu(n2(c1(silu(n1(x))))))) as tf.Tensor4D;
  };
  const [c0, c1, c2] = cfg.channels as [number, number, number];
  const s = cfg.size;
  const encoder = [conv(3, c0, 3, s), resBlock(c0, s), conv(c0, c1, 4, s, 2), resBlock(c1, s / 2), conv(c1, c2, 4, s / 2, 2), resBlock(c2, s / 4), conv(c2, cfg.codeDim, 1, s / 4)];
  const codebook = param([cfg.codebook, cfg.codeDim], 1);
  const codes = cfg.batch * (s / 4) * (s / 4);
  flops += 2 * codes * cfg.codebook * cfg.codeDim; // distances
  const up1 = conv(c2, c1, 3, s / 2);
  const up2 = conv(c1, c0, 3, s);
  const decoder = [conv(cfg.codeDim, c2, 3, s / 4), resBlock(c2, s / 4), (x: tf.Tensor4D) => up1(upsampleNearest2x(x)), resBlock(c1, s / 2), (x: tf.Tensor4D) => up2(upsampleNearest2x(x)), resBlock(c0, s)];
  const outNorm = norm(c0);
  const convOut = conv(c0, 3, 3, s);
  const images = tf.tensor(randomValues(cfg.batch * s * s * 3, 999), [cfg.batch, s, s, 3]) as tf.Tensor4D;

  const loss = (): tf.Scalar => {
    let h = images;
    for (const layer of encoder) h = layer(h);
    const z = tf.reshape(h, [codes, cfg.codeDim]);
    // ‖z − e‖² = ‖z‖² − 2 z·e + ‖e‖²; the nearest code is found without gradient (stopGradient).
    const d = tf.add(tf.sub(tf.sum(tf.square(z), 1, true), tf.mul(2, tf.matMul(z, codebook, false, true))), tf.sum(tf.square(codebook), 1));
    const q = tf.gather(codebook, tf.argMin(stopGradient(d), 1));
    const vq = tf.add(tf.mean(tf.square(tf.sub(q, stopGradient(z)))), tf.mul(0.25, tf.mean(tf.square(tf.sub(z, stopGradient(q))))));
    let y = tf.reshape(straightThrough(z, q), [cfg.batch, s / 4, s / 4, cfg.codeDim]) as tf.Tensor4D;
    for (const layer of decoder) y = layer(y);
    const recon = convOut(silu(outNorm(y)));
    return tf.add(tf.mean(tf.abs(tf.sub(recon, images))), vq) as tf.Scalar;
  };
  return { name: 'vq-autoencoder', forwardFlops: flops, params, loss, dispose: () => { params.dispose(); images.dispose(); } };
}

// ---------------------------------------------------------------- BART seq2seq
export interface BartConfig {
  batch: number; // 8
  layers: number; // 4 encoder + 4 decoder
  dModel: number; // 256
  heads: number; // 4
  ffn: number; // 1024
  textLen: number; // 64
  imageLen: number; // 256
  vocab: number; // 16384
}
export const BART_REFERENCE: BartConfig = { batch: 8, layers: 4, dModel: 256, heads: 4, ffn: 1024, textLen: 64, imageLen: 256, vocab: 16384 };

export function bart(cfg: BartConfig = BART_REFERENCE): Workload {
  const params = new Params();
  const param = paramFactory(params);
  const constants: tf.Tensor[] = [];
  let flops = 0;
  const { batch: B, dModel: d, heads: H } = cfg;
  const hs = d / H;
  const dense = (din: number, dout: number, rows: number) => {
    const w = param([din, dout], 1 / Math.sqrt(din));
    const b = param([dout], 0);
    flops += 2 * rows * din * dout;
    return (x: tf.Tensor2D): tf.Tensor2D => tf.add(tf.matMul(x, w), b) as tf.Tensor2D;
  };
  const layerNorm = () => {
    const gamma = param([d], 'ones');
    const beta = param([d], 0);
    return (x: tf.Tensor2D): tf.Tensor2D => {
      const { mean, variance } = tf.moments(x, -1, true);
      return tf.add(tf.mul(tf.div(tf.sub(x, mean), tf.sqrt(tf.add(variance, 1e-5))), gamma), beta) as tf.Tensor2D;
    };
  };
  // GELU (tanh form) with x·x·x: wasm's pow is slow.
  const gelu = (x: tf.Tensor2D): tf.Tensor2D => tf.mul(tf.mul(x, 0.5), tf.add(1, tf.tanh(tf.mul(Math.sqrt(2 / Math.PI), tf.add(x, tf.mul(0.044715, tf.mul(tf.mul(x, x), x))))))) as tf.Tensor2D;
  const heads = (x: tf.Tensor2D, len: number): tf.Tensor4D => tf.transpose(tf.reshape(x, [B, len, H, hs]), [0, 2, 1, 3]); // (B, nh, T, hs)
  const attention = (tq: number, tk: number, causal: boolean) => {
    const [q, k, v, o] = [dense(d, d, B * tq), dense(d, d, B * tk), dense(d, d, B * tk), dense(d, d, B * tq)];
    flops += 2 * 2 * B * H * tq * tk * hs;
    const mask = causal ? tf.tidy(() => tf.mul(tf.sub(1, tf.linalg.bandPart(tf.ones([tq, tk]), -1, 0)), -1e9)) : null;
    if (mask) constants.push(mask);
    return (x: tf.Tensor2D, mem: tf.Tensor2D): tf.Tensor2D => {
      let att = tf.mul(tf.matMul(heads(q(x), tq), heads(k(mem), tk), false, true), 1 / Math.sqrt(hs)); // (B, nh, T, S)
      if (mask) att = tf.add(att, mask);
      const y = tf.matMul(tf.softmax(att), heads(v(mem), tk)); // (B, nh, T, hs)
      return o(tf.reshape(tf.transpose(y, [0, 2, 1, 3]), [B * tq, d]));
    };
  };
  const ffn = (rows: number) => {
    const [a, b] = [dense(d, cfg.ffn, rows), dense(cfg.ffn, d, rows)];
    return (x: tf.Tensor2D): tf.Tensor2D => b(gelu(a(x)));
  };
  const embed = (len: number) => {
    const tok = param([cfg.vocab, d], 0.02);
    const pos = param([len, d], 0.02);
    return (ids: tf.Tensor2D): tf.Tensor2D => tf.reshape(tf.add(tf.gather(tok, ids), pos), [B * len, d]) as tf.Tensor2D;
  };
  const te = cfg.textLen;
  const ti = cfg.imageLen;
  const encEmbed = embed(te);
  const encLayers = Array.from({ length: cfg.layers }, () => ({ att: attention(te, te, false), ln1: layerNorm(), ffn: ffn(B * te), ln2: layerNorm() }));
  const decEmbed = embed(ti);
  const decLayers = Array.from({ length: cfg.layers }, () => ({ self: attention(ti, ti, true), ln1: layerNorm(), cross: attention(ti, te, false), ln2: layerNorm(), ffn: ffn(B * ti), ln3: layerNorm() }));
  const head = dense(d, cfg.vocab, B * ti);

  const ints = (len: number, s: number) => tf.tensor2d(Array.from(randomValues(B * len, s), (v) => Math.floor((v + 1) * 0.5 * cfg.vocab) % cfg.vocab), [B, len], 'int32');
  const text = ints(te, 501);
  const image = ints(ti, 502);
  const labels = tf.reshape(image, [B * ti]) as tf.Tensor1D;

  const loss = (): tf.Scalar => {
    let x = encEmbed(text);
    for (const l of encLayers) {
      x = l.ln1(tf.add(x, l.att(x, x)));
      x = l.ln2(tf.add(x, l.ffn(x)));
    }
    let y = decEmbed(image);
    for (const l of decLayers) {
      y = l.ln1(tf.add(y, l.self(y, y)));
      y = l.ln2(tf.add(y, l.cross(y, x)));
      y = l.ln3(tf.add(y, l.ffn(y)));
    }
    const logits = head(y); // (B·T, vocab)
    return tf.mean(sparseSoftmaxCrossEntropy(logits, labels));
  };
  return { name: 'bart', forwardFlops: flops, params, loss, dispose: () => { params.dispose(); tf.dispose([...constants, text, image, labels]); } };
}
