/**
 * Where a training step of a reference workload spends its time, per kernel (tf.profile):
 *   node dist/bench/profile.js bart|vq|vqgan|seq2seq [steps] [key=value model overrides, e.g. ch=12 ch_mult=1,2,4 batch=8]
 *   node dist/bench/profile.js generate [codes] [batch=1 condScale=1]   (greedy generateCodes, bench/generate.ts's model)
 * Prints kernels by total ms, with call counts; for finding what to optimise next, not a benchmark.
 */
import { initCompute, tf } from '../src/ml/backend.js';
import { AdamW } from '../src/ml/optim/index.js';
import { reconstructionLoss } from '../src/ml/losses/vqgan-loss.js';
import { DalleBart } from '../src/ml/models/dallebart.js';
import { Vqgan } from '../src/ml/models/vqgan.js';
import { generateCodes } from '../src/ml/sampling/index.js';
import { benchDalleBartConfig } from './generate.js';
import { Rng } from '../src/ml/rng.js';
import { bart, trainStep, vqAutoencoder, type Workload } from './models.js';

/** The generator step of experiments/vqgan-shapes.yaml (GAN phase off), overridable from argv. */
function vqganShapes(overrides: Record<string, number | number[] | boolean>): Workload {
  const { batch = 16, size = 32, ...model } = overrides as { batch?: number; size?: number } & Record<string, number | number[] | boolean>;
  const vq = Vqgan.create({ ch: 16, ch_mult: [1, 2, 2], num_res_blocks: 1, attn_resolutions: [], z_channels: 32, n_embed: 1024, embed_dim: 32, num_groups: 4, codebook_l2: true, resolution: size, ...model }, 0);
  const x = tf.randomUniform([batch, size, size, 3], -1, 1, 'float32', 1) as tf.Tensor4D;
  const rng = new Rng(1);
  const loss = (): tf.Scalar => {
    const r = vq.forward(x, { training: true, rng });
    return tf.add(reconstructionLoss(x, r.xrec, 'l2'), r.qloss) as tf.Scalar;
  };
  return { name: 'vqgan-shapes', forwardFlops: 0, params: vq.params, loss, dispose: () => { vq.params.dispose(); x.dispose(); } };
}

/**
 * The seq2seq-train step of experiments/quickstart.yaml: a DalleBart of d 128, 2 + 2 layers, GLU 256, dropout 0.1,
 * 24 text tokens → 64 codes of 256, batch 32, with dropout drawn as in training. Overridable from argv
 * (d_model=…, dropout=0, batch=64).
 */
function seq2seqShapes(overrides: Record<string, number | number[] | boolean>): Workload {
  const { batch = 32, ...model } = overrides as { batch?: number } & Record<string, number | boolean>;
  const d = (model['d_model'] as number | undefined) ?? 128;
  const m = DalleBart.create({
    model_type: 'dallebart', vocab_size: 424, d_model: d, encoder_layers: 2, decoder_layers: 2, encoder_attention_heads: 4, decoder_attention_heads: 4,
    encoder_ffn_dim: 2 * d, decoder_ffn_dim: 2 * d, use_glu: true, use_bias: false, ln_positions: 'preln', use_final_ln_encoder: true, use_final_ln_decoder: true,
    max_text_length: 24, image_vocab_size: 256, image_length: 64, dropout: 0.1, ...model,
  }, 0);
  const L = m.config.max_text_length;
  const T = m.config.image_length;
  const ids = tf.tensor2d(Int32Array.from({ length: batch * L }, (_, i) => 3 + ((i * 7919) % 400)), [batch, L], 'int32');
  const mask = tf.ones([batch, L], 'int32') as tf.Tensor2D;
  const codes = tf.tensor2d(Int32Array.from({ length: batch * T }, (_, i) => (i * 104729) % 256), [batch, T], 'int32');
  const rng = new Rng(1);
  return { name: 'seq2seq-shapes', forwardFlops: 0, params: m.params, loss: () => m.loss(ids, mask, codes, { training: true, rng }), dispose: () => { m.dispose(); tf.dispose([ids, mask, codes]); } };
}

async function main(): Promise<void> {
  const which = process.argv[2] ?? 'bart';
  const steps = Number(process.argv[3] ?? 2);
  await initCompute();
  // key=value; a comma makes a list (ch_mult=1,2,4), and list-valued keys always get one.
  const lists = new Set(['ch_mult', 'attn_resolutions']);
  const parse = (k: string, v: string): number | number[] | boolean => (v === 'true' || v === 'false' ? v === 'true' : v.includes(',') || lists.has(k) ? v.split(',').filter(Boolean).map(Number) : Number(v));
  const overrides = Object.fromEntries(process.argv.slice(4).map((kv) => { const [k = '', v = ''] = kv.split('='); return [k, parse(k, v)]; }));
  if (which === 'generate') return profileGenerate(steps === 2 ? 64 : steps, overrides as Record<string, number>);
  const w = which === 'vq' ? vqAutoencoder() : which === 'vqgan' ? vqganShapes(overrides) : which === 'seq2seq' ? seq2seqShapes(overrides) : bart();
  const opt = new AdamW({ learningRate: 1e-4, weightDecay: 0 });
  const step = (): void => void trainStep(w, opt);
  step(); // warm-up: XNNPACK packing, heap growth
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) step();
  const plainMs = (performance.now() - t0) / steps;
  const totals: KernelTotals = new Map();
  let wall = 0;
  for (let i = 0; i < steps; i++) {
    const t0 = performance.now();
    const info = await tf.profile(step);
    wall += performance.now() - t0;
    addKernels(totals, info.kernels);
  }
  const rows = [...totals.entries()].sort((a, b) => b[1].ms - a[1].ms);
  const sum = rows.reduce((s, [, t]) => s + t.ms, 0);
  process.stdout.write(`${which}: ${plainMs.toFixed(0)} ms/step; profiled ${(wall / steps).toFixed(0)} ms/step wall, of which kernels ${(sum / steps).toFixed(0)} ms\n`);
  for (const [name, t] of rows.slice(0, 30)) {
    process.stdout.write(`${name.padEnd(28)} ${(t.ms / steps).toFixed(1).padStart(8)} ms ${String(t.calls / steps).padStart(6)} calls\n`);
  }
  opt.dispose();
  w.dispose();
}

type KernelTotals = Map<string, { ms: number; calls: number }>;

/** Adds a tf.profile's kernels to per-kernel time and call totals. */
function addKernels(totals: KernelTotals, kernels: readonly { name: string; kernelTimeMs: unknown }[]): void {
  for (const k of kernels) {
    const t = totals.get(k.name) ?? { ms: 0, calls: 0 };
    t.ms += Number(k.kernelTimeMs);
    t.calls += 1;
    totals.set(k.name, t);
  }
}

/** Where one greedy `generateCodes` call spends its time (steps = codes generated). */
async function profileGenerate(codes: number, o: Record<string, number>): Promise<void> {
  const batch = o['batch'] ?? 1;
  const condScale = o['condScale'] ?? 1;
  const model = DalleBart.create(benchDalleBartConfig(codes), 0);
  const L = model.config.max_text_length;
  const text = { ids: new Int32Array(batch * L).fill(5), mask: new Int32Array(batch * L).fill(1), batch, length: L };
  const uncond = { ids: new Int32Array(L).fill(1), mask: new Int32Array(L).fill(0).fill(1, 0, 2), batch: 1, length: L };
  const req = { text, uncond, seeds: Array.from({ length: batch }, (_, i) => i), sampling: { greedy: true, condScale } };
  generateCodes(model, req);
  const t0 = performance.now();
  generateCodes(model, req);
  const plainMs = performance.now() - t0;
  const t1 = performance.now();
  const info = await tf.profile(() => void generateCodes(model, req));
  const wall = performance.now() - t1;
  const totals: KernelTotals = new Map();
  addKernels(totals, info.kernels);
  const rows = [...totals.entries()].sort((a, b) => b[1].ms - a[1].ms);
  const sum = rows.reduce((s, [, t]) => s + t.ms, 0);
  const calls = rows.reduce((s, [, t]) => s + t.calls, 0);
  process.stdout.write(`generate ${codes} codes, batch ${batch}, condScale ${condScale}: ${plainMs.toFixed(0)} ms (${(plainMs / codes).toFixed(2)} ms/code); profiled ${wall.toFixed(0)} ms wall, kernels ${sum.toFixed(0)} ms, ${calls} kernel calls (${(calls / codes).toFixed(0)}/code)\n`);
  for (const [name, t] of rows.slice(0, 30)) process.stdout.write(`${name.padEnd(28)} ${(t.ms / codes).toFixed(3).padStart(8)} ms/code ${String(t.calls / codes).padStart(6)} calls/code\n`);
  model.dispose();
}

main().catch((err: unknown) => {
  process.stderr.write(`profile failed: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
