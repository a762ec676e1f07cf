/**
 * The `generate` section (issue #12): greedy image codes from a DalleBart of the bench BART's shape
 * (bench/models.ts BART_REFERENCE: 4 + 4 layers, d 256, 4 heads, FFN 1024 with tanh GELU, biases, post-LN,
 * 64 text positions, 16384 codes + BOS), random weights from `DalleBart.create`:
 *   - `generateCodes` (KV cache) vs `generateCodesNoCache` (the prefix recomputed per code) at 64 and 256
 *     codes, batch 1: the two outputs must be identical (checked here; the bench fails otherwise), and the
 *     speed-up is the median ratio of paired repetitions (no cache, then cache);
 *   - tokens/s at batch 1 and batch 8 (256 codes);
 *   - super-conditioning (condScale 10 with the empty caption: 2B rows a step) vs plain sampling;
 *   - each cached row alternating (ABAB) with bench/peer/generate.py, the same model in PyTorch with a KV cache;
 *   - with the native kernels: the fused decoding step (kernels/decode.ts) vs the plain tf-op step, paired, at 64
 *     codes batch 1 and 256 codes batch 8 with super-conditioning (the same greedy codes are checked), so the
 *     gain is measured under the same machine load as the rest.
 * A repetition is one whole `generateCodes` call (encoder, cross K/V, every step, host-side picking).
 */
import { tf } from '../src/ml/backend.js';
import { DalleBart, type DalleBartConfig } from '../src/ml/models/dallebart.js';
import { generateCodes, generateCodesNoCache, type GenerateRequest, type TextBatch } from '../src/ml/sampling/index.js';
import { nativeFusionActive } from '../src/ml/kernels/ops.js';
import { BART_REFERENCE } from './models.js';
import { interleave, spread } from './peer.js';
import type { Ctx, Row } from './run.js';

/** The bench BART's sizes as a DalleBart config (text vocabulary = codebook, as bench/models.ts). */
export function benchDalleBartConfig(imageLength: number): Partial<DalleBartConfig> {
  const b = BART_REFERENCE;
  return {
    model_type: 'dallebart', vocab_size: b.vocab, d_model: b.dModel, encoder_layers: b.layers, decoder_layers: b.layers,
    encoder_attention_heads: b.heads, decoder_attention_heads: b.heads, encoder_ffn_dim: b.ffn, decoder_ffn_dim: b.ffn,
    use_glu: false, activation_function: 'gelu_new', use_bias: true, ln_positions: 'postln',
    max_text_length: b.textLen, image_vocab_size: b.vocab, image_length: imageLength, dropout: 0, attention_dropout: 0, activation_dropout: 0,
  };
}

const CAPTION_TOKENS = 24; // a caption of 24 tokens, the rest of the 64 positions padding (as the peer)

function captions(batch: number, length: number, vocab: number): TextBatch {
  const ids = new Int32Array(batch * length).fill(1);
  const mask = new Int32Array(batch * length);
  let s = 12345;
  for (let r = 0; r < batch; r++) {
    for (let i = 0; i < CAPTION_TOKENS; i++) {
      s = (Math.imul(s, 1103515245) + 12345) >>> 0;
      ids[r * length + i] = 3 + (s % (vocab - 3));
      mask[r * length + i] = 1;
    }
  }
  return { ids, mask, batch, length };
}

/** The empty caption: BOS, EOS, then padding. */
function emptyCaption(length: number): TextBatch {
  const ids = new Int32Array(length).fill(1);
  const mask = new Int32Array(length);
  ids[0] = 0;
  ids[1] = 2;
  mask[0] = 1;
  mask[1] = 1;
  return { ids, mask, batch: 1, length };
}

function request(c: DalleBartConfig, batch: number, condScale: number): GenerateRequest {
  return {
    text: captions(batch, c.max_text_length, c.vocab_size),
    ...(condScale !== 1 ? { uncond: emptyCaption(c.max_text_length) } : {}),
    seeds: Array.from({ length: batch }, (_, i) => i),
    sampling: { greedy: true, condScale },
  };
}

function timed(fn: () => Int32Array[]): { ms: number; codes: Int32Array[] } {
  const t0 = performance.now();
  const codes = fn();
  return { ms: performance.now() - t0, codes };
}

function same(a: Int32Array[], b: Int32Array[]): boolean {
  return a.length === b.length && a.every((row, i) => row.length === b[i]?.length && row.every((v, j) => v === b[i]?.[j]));
}

export class GenerateBenchError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GenerateBenchError';
  }
}

/** Paired repetitions of the same request on the plain tf-op decoding step and on the fused one. */
function fusedVsPlain(model: DalleBart, req: GenerateRequest, what: string, backend: string, ctx: Ctx): Row {
  const plainReq = { ...req, fused: false };
  const fused = generateCodes(model, req);
  const plain = generateCodes(model, plainReq); // also the plain path's warm-up
  const reps = Math.min(ctx.reps, model.config.image_length > 64 ? 2 : 3);
  const plainTimes: number[] = [];
  const ratios: number[] = [];
  for (let i = 0; i < reps; i++) {
    const p = timed(() => generateCodes(model, plainReq)).ms;
    plainTimes.push(p);
    ratios.push(p / timed(() => generateCodes(model, req)).ms);
  }
  const t = spread(plainTimes);
  const gain = spread(ratios);
  const codes = model.config.image_length * req.text.batch;
  return { section: 'generate', name: `${what}, KV cache on the plain tf-op step (before the fused kernels)`, backend, ms: t.ms, spread: t, extra: { tokensPerS: +(codes / (t.ms / 1000)).toFixed(1), fusedSpeedup: +gain.ms.toFixed(2), fusedSpeedupMin: +gain.min.toFixed(2), fusedSpeedupMax: +gain.max.toFixed(2), identicalToFused: same(fused, plain) } };
}

export async function benchGenerate(backend: string, ctx: Ctx): Promise<Row[]> {
  const rows: Row[] = [];
  const tokS = (codes: number, batch: number, ms: number): number => +((codes * batch) / (ms / 1000)).toFixed(1);
  const plainMs = new Map<string, number>();
  for (const codes of [64, 256]) {
    const model = DalleBart.create(benchDalleBartConfig(codes), 0);
    const params = model.params.names().reduce((s, n) => s + model.params.get(n).size, 0);
    const before = tf.memory().numTensors;
    // cache vs recompute, batch 1: identical greedy codes, and the speed-up
    const req1 = request(model.config, 1, 1);
    const warm = timed(() => generateCodes(model, req1));
    const noCache = timed(() => generateCodesNoCache(model, req1)); // its warm-up
    const identical = same(warm.codes, noCache.codes);
    if (!identical) throw new GenerateBenchError(`${codes} codes: generateCodes (KV cache) and generateCodesNoCache disagree on greedy codes`);
    // each no-cache repetition is paired with a cached one right after it, and the speed-up is the median
    // of the pairs' ratios, so the machine's drift does not land on one side only
    const noCacheReps = codes === 256 ? (ctx.quick ? 1 : 2) : Math.min(ctx.reps, 3);
    const ncTimes: number[] = [];
    const ratios: number[] = [];
    for (let i = 0; i < noCacheReps; i++) {
      const n = timed(() => generateCodesNoCache(model, req1)).ms;
      ncTimes.push(n);
      ratios.push(n / timed(() => generateCodes(model, req1)).ms);
    }
    const nc = spread(ncTimes);
    const speedup = spread(ratios);
    rows.push({ section: 'generate', name: `${codes} codes, batch 1, no cache (prefix recomputed per code)`, backend, ms: nc.ms, spread: nc, extra: { tokensPerS: tokS(codes, 1, nc.ms), params, identicalToCache: identical, cacheSpeedup: speedup.ms, cacheSpeedupMin: speedup.min, cacheSpeedupMax: speedup.max } });
    const batches = codes === 256 ? [1, 8] : [1];
    for (const batch of batches) {
      for (const condScale of [1, 10]) {
        if (codes === 64 && condScale !== 1) continue;
        const req = batch === 1 && condScale === 1 ? req1 : request(model.config, batch, condScale);
        if (req !== req1) generateCodes(model, req); // warm-up of this shape
        const r = await interleave(() => timed(() => generateCodes(model, req)).ms, ctx.reps, ctx.peer, `gen:${codes}:${batch}:${condScale}`, ctx.settleMs);
        const extra: Record<string, number | string | boolean> = { tokensPerS: tokS(codes, batch, r.ours.ms), msPerCode: +(r.ours.ms / codes).toFixed(2) };
        if (r.peer) extra['peerTokensPerS'] = tokS(codes, batch, r.peer.ms);
        if (batch === 1 && condScale === 1) {
          extra['identicalToNoCache'] = identical;
          extra['cacheSpeedup'] = +speedup.ms.toFixed(2); // median of paired no-cache/cache ratios (see the no-cache row)
        }
        if (condScale === 1) plainMs.set(`${codes}:${batch}`, r.ours.ms);
        else extra['costVsPlain'] = +(r.ours.ms / (plainMs.get(`${codes}:${batch}`) as number)).toFixed(2);
        const what = condScale === 1 ? 'KV cache' : `KV cache, super-conditioning (condScale ${condScale}, empty caption)`;
        rows.push({ section: 'generate', name: `${codes} codes, batch ${batch}, ${what}`, backend, ms: r.ours.ms, spread: r.ours, ...(r.peer ? { peer: r.peer } : {}), ...(r.peerNote ? { peerNote: r.peerNote } : {}), extra });
      }
    }
    if (nativeFusionActive()) rows.push(fusedVsPlain(model, codes === 64 ? req1 : request(model.config, 8, 10), codes === 64 ? '64 codes, batch 1' : '256 codes, batch 8, super-conditioning', backend, ctx));
    const own = model.params.names().length;
    model.dispose();
    const leaked = tf.memory().numTensors - (before - own);
    if (leaked !== 0) rows[rows.length - 1]!.extra!['tensorsLeft'] = leaked;
  }
  return rows;
}
