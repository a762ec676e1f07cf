/**
 * Autoregressive sampling of image codes from a DalleBart, as dalle-mini generates:
 *
 *   encode the prompts (and, with super-conditioning, the empty caption) once → cross-attention K/V once
 *   per layer → for t in 0…image_length−1: one decoder step over the KV cache → logits of the next code
 *   → logits = uncond + scale·(cond − uncond) → temperature, top-k, top-p → draw → feed it back
 *
 * The conditional and unconditional rows are one batch (2B rows), so a step is one pass of the model.
 * Draws come from a seeded Rng per sample (seed, row), so the images for a prompt and a seed do not
 * depend on what else is in the batch. Filtering and drawing run on the host: a row is at most
 * image_vocab_size + 1 floats.
 */
import { tf } from '../backend.js';
import { bosTokenId, type DalleBart, decoderVocabSize, disposeDecodeState } from '../models/dallebart.js';
import { Rng } from '../rng.js';
import { deriveSeed } from '../train/state.js';

export interface SamplingOptions {
  /** keep the k most likely codes (0 = all) */
  topK?: number;
  /** keep the smallest set of codes whose probability reaches p (1 = all) */
  topP?: number;
  /** divide logits by this (1 = unchanged) */
  temperature?: number;
  /** take the most likely code instead of drawing (top-k 1 is the same) */
  greedy?: boolean;
  /** super-conditioning scale (1 = off; dalle-mini's default 10) */
  condScale?: number;
}

export class SamplingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SamplingError';
  }
}

/** Text batch: ids and mask (B, L) row-major int32, as a tokenizer's encodeBatch gives them. */
export interface TextBatch {
  ids: Int32Array;
  mask: Int32Array;
  /** rows */
  batch: number;
  /** positions per row */
  length: number;
}

export interface GenerateRequest {
  text: TextBatch;
  /** the empty caption tokenised (1 row, same length): needed when condScale ≠ 1 */
  uncond?: TextBatch;
  /** one seed per row */
  seeds: readonly number[];
  sampling: SamplingOptions;
  /** called after each generated position (for progress) */
  onStep?: (done: number, total: number) => void;
  /** decode on the fused kernels (DalleBart.startDecoding's option); default: when the native kernels are active */
  fused?: boolean;
}

function checkOptions(o: SamplingOptions): Required<SamplingOptions> {
  const r = { topK: o.topK ?? 0, topP: o.topP ?? 1, temperature: o.temperature ?? 1, greedy: o.greedy ?? false, condScale: o.condScale ?? 1 };
  if (!Number.isInteger(r.topK) || r.topK < 0) throw new SamplingError(`top-k must be a non-negative integer (0 = off), got ${r.topK}`);
  if (!(r.topP > 0 && r.topP <= 1)) throw new SamplingError(`top-p must be in (0, 1], got ${r.topP}`);
  if (!(r.temperature > 0) || !Number.isFinite(r.temperature)) throw new SamplingError(`temperature must be positive, got ${r.temperature}`);
  if (!Number.isFinite(r.condScale)) throw new SamplingError(`condition scale must be a finite number, got ${r.condScale}`);
  return r;
}

/** Scratch for `byLikelihood`: a row's float32 bits, sort keys and codes, double-buffered. */
let rowBits = new Uint32Array(0);
let keysA = new Uint32Array(0);
let keysB = new Uint32Array(0);
let codesA = new Uint32Array(0);
let codesB = new Uint32Array(0);
const buckets = new Uint32Array(257);

/**
 * The first `count` of codes 0 … n−1 ordered by logit, highest first, ties by the lower code: exactly the
 * order of `sort((a, b) => logits[b] − logits[a] || a − b)`, which drawCode's sums and draw depend on, but
 * as a stable radix sort of the logits' bits (made order-preserving and inverted) in four byte passes
 * instead of a comparator call per comparison: ~20× faster on a 16,384-code row, which matters once a
 * decoding step costs about a millisecond. A row holding NaN keeps the comparator sort.
 */
function byLikelihood(logits: Float32Array, n: number, count: number): number[] {
  if (logits.subarray(0, n).some(Number.isNaN)) {
    return Array.from({ length: n }, (_, i) => i).sort((a, b) => (logits[b] as number) - (logits[a] as number) || a - b).slice(0, count);
  }
  if (keysA.length < n) {
    rowBits = new Uint32Array(n);
    keysA = new Uint32Array(n);
    keysB = new Uint32Array(n);
    codesA = new Uint32Array(n);
    codesB = new Uint32Array(n);
  }
  const asFloat = new Float32Array(rowBits.buffer, 0, n);
  for (let i = 0; i < n; i++) asFloat[i] = (logits[i] as number) + 0; // + 0: −0 and 0 tie, as in the comparator
  let [key, code, nextKey, nextCode] = [keysA, codesA, keysB, codesB];
  for (let i = 0; i < n; i++) {
    const bits = rowBits[i] as number;
    const ascending = bits & 0x80000000 ? ~bits >>> 0 : (bits | 0x80000000) >>> 0; // unsigned order = float order
    key[i] = ~ascending >>> 0; // highest logit first
    code[i] = i;
  }
  for (let shift = 0; shift < 32; shift += 8) {
    // stable counting sort by one byte: equal keys keep their order, so ties stay lowest code first
    buckets.fill(0);
    for (let i = 0; i < n; i++) buckets[(((key[i] as number) >>> shift) & 255) + 1]!++;
    for (let d = 1; d < 257; d++) buckets[d]! += buckets[d - 1] as number;
    for (let i = 0; i < n; i++) {
      const at = buckets[((key[i] as number) >>> shift) & 255]!++;
      nextKey[at] = key[i] as number;
      nextCode[at] = code[i] as number;
    }
    [key, code, nextKey, nextCode] = [nextKey, nextCode, key, code];
  }
  return Array.from(code.subarray(0, count));
}

/**
 * One code from a row of logits over `n` codes (the BOS column excluded by the caller): temperature,
 * then top-k, then top-p over what is left, then a draw with `rng` (or the arg-max when greedy).
 */
export function drawCode(logits: Float32Array, n: number, o: Required<SamplingOptions>, rng: Rng): number {
  let best = 0;
  for (let i = 1; i < n; i++) if ((logits[i] as number) > (logits[best] as number)) best = i;
  if (o.greedy || o.topK === 1) return best;
  // candidates, most likely first (only as many as top-k keeps, when it is set)
  let idx = byLikelihood(logits, n, o.topK > 0 && o.topK < n ? o.topK : n);
  const max = logits[best] as number;
  const w = idx.map((i) => Math.exp(((logits[i] as number) - max) / o.temperature));
  let total = w.reduce((s, v) => s + v, 0);
  if (o.topP < 1) {
    let acc = 0;
    let keep = 0;
    while (keep < w.length && acc < o.topP * total) acc += w[keep++] as number;
    idx = idx.slice(0, Math.max(1, keep));
    w.length = idx.length;
    total = w.reduce((s, v) => s + v, 0);
  }
  let u = rng.uniform() * total;
  for (let k = 0; k < idx.length; k++) {
    u -= w[k] as number;
    if (u < 0) return idx[k] as number;
  }
  return idx[idx.length - 1] as number;
}

/**
 * The next code of each of the B prompts from the step's logits (rows × V): super-conditioning mixes row b
 * with its unconditional row B + b (logits = uncond + scale·(cond − uncond)), then `drawCode`.
 */
function pickCodes(logits: Float32Array, B: number, V: number, nCodes: number, superCond: boolean, o: Required<SamplingOptions>, rngs: Rng[]): number[] {
  const row = new Float32Array(nCodes);
  const codes: number[] = [];
  for (let b = 0; b < B; b++) {
    const cond = logits.subarray(b * V, b * V + nCodes);
    if (superCond) {
      const un = logits.subarray((B + b) * V, (B + b) * V + nCodes);
      for (let i = 0; i < nCodes; i++) row[i] = (un[i] as number) + o.condScale * ((cond[i] as number) - (un[i] as number));
    } else {
      row.set(cond);
    }
    codes.push(drawCode(row, nCodes, o, rngs[b] as Rng));
  }
  return codes;
}

/**
 * Text rows for the model, with the unconditional rows appended when super-conditioning is on, cut after
 * the last position any row uses: trailing padding is masked out of every attention, so it changes nothing
 * but the cost (a 64-position text model given a 24-token caption ran its encoder and cross-attention
 * over 64 positions).
 */
function modelInputs(req: GenerateRequest, superCond: boolean): { ids: tf.Tensor2D; mask: tf.Tensor2D; rows: number } {
  const { text } = req;
  if (text.ids.length !== text.batch * text.length || text.mask.length !== text.ids.length) throw new SamplingError(`text batch: ids/mask must hold ${text.batch}×${text.length} values`);
  if (req.seeds.length !== text.batch) throw new SamplingError(`one seed per prompt row is needed: ${text.batch} rows, ${req.seeds.length} seeds`);
  const u = req.uncond;
  if (superCond && (!u || u.batch !== 1 || u.length !== text.length)) throw new SamplingError(`super-conditioning needs the empty caption tokenised as 1 row of ${text.length} positions`);
  const L = text.length;
  const row = (b: TextBatch, r: number): { ids: Int32Array; mask: Int32Array } => ({ ids: b.ids.subarray(r * L, (r + 1) * L), mask: b.mask.subarray(r * L, (r + 1) * L) });
  const prompts = Array.from({ length: text.batch }, (_, r) => row(text, r));
  const rows = superCond ? [...prompts, ...prompts.map(() => row(u as TextBatch, 0))] : prompts;
  let used = 1; // positions up to the last one any row uses
  for (const r of rows) for (let i = used; i < L; i++) if (r.mask[i] !== 0) used = i + 1;
  const ids = new Int32Array(rows.length * used);
  const mask = new Int32Array(rows.length * used);
  rows.forEach((r, i) => {
    ids.set(r.ids.subarray(0, used), i * used);
    mask.set(r.mask.subarray(0, used), i * used);
  });
  return { ids: tf.tensor2d(ids, [rows.length, used], 'int32'), mask: tf.tensor2d(mask, [rows.length, used], 'int32'), rows: rows.length };
}

/**
 * Codes (B × image_length) for the prompts of `req`, decoded with the KV cache. Leaves no tensor behind.
 */
export function generateCodes(model: DalleBart, req: GenerateRequest): Int32Array[] {
  const o = checkOptions(req.sampling);
  const c = model.config;
  if (c.model_type !== 'dallebart') throw new SamplingError(`image codes are sampled from a 'dallebart' model, this one is '${c.model_type}'`);
  const superCond = o.condScale !== 1;
  const B = req.text.batch;
  const T = c.image_length;
  const V = decoderVocabSize(c);
  const nCodes = c.image_vocab_size; // the BOS column (last) is never drawn
  const rngs = req.seeds.map((s) => new Rng(s));
  const out = Array.from({ length: B }, () => new Int32Array(T));

  const { ids, mask, rows } = modelInputs(req, superCond);
  const enc = model.encode(ids, mask);
  let state = model.startDecoding(enc, mask, req.fused === undefined ? {} : { fused: req.fused });
  tf.dispose([ids, enc, mask]);
  let prev = new Int32Array(rows).fill(bosTokenId(c));
  try {
    for (let t = 0; t < T; t++) {
      const tokens = tf.tensor2d(prev, [rows, 1], 'int32');
      const step = model.decodeStep(state, tokens);
      state = step.state;
      tokens.dispose();
      const logits = step.logits.dataSync() as Float32Array; // (rows, V)
      step.logits.dispose();
      const codes = pickCodes(logits, B, V, nCodes, superCond, o, rngs);
      const next = new Int32Array(rows);
      codes.forEach((code, b) => {
        (out[b] as Int32Array)[t] = code;
        next[b] = code;
        if (superCond) next[B + b] = code; // the unconditional row follows the same image
      });
      prev = next;
      req.onStep?.(t + 1, T);
    }
  } finally {
    disposeDecodeState(state);
  }
  return out;
}

/**
 * The same decoding without a cache: the whole prefix goes through `decoderForward` at every position.
 * For tests (the cache must not change a greedy result) and the speed benchmark; O(T²) work.
 */
export function generateCodesNoCache(model: DalleBart, req: GenerateRequest): Int32Array[] {
  const o = checkOptions(req.sampling);
  const c = model.config;
  const superCond = o.condScale !== 1;
  const B = req.text.batch;
  const T = c.image_length;
  const V = decoderVocabSize(c);
  const nCodes = c.image_vocab_size;
  const rngs = req.seeds.map((s) => new Rng(s));
  const out = Array.from({ length: B }, () => new Int32Array(T));
  const { ids, mask, rows } = modelInputs(req, superCond);
  const enc = model.encode(ids, mask);
  const seq: number[][] = Array.from({ length: rows }, () => [bosTokenId(c)]);
  try {
    for (let t = 0; t < T; t++) {
      const input = tf.tensor2d(Int32Array.from(seq.flat()), [rows, t + 1], 'int32');
      const last = tf.tidy(() => {
        const logits = model.decoderForward(enc, mask, input); // (rows, t+1, V)
        return tf.reshape(tf.slice(logits, [0, t, 0], [rows, 1, V]), [rows, V]);
      });
      input.dispose();
      const logits = last.dataSync() as Float32Array;
      last.dispose();
      pickCodes(logits, B, V, nCodes, superCond, o, rngs).forEach((code, b) => {
        (out[b] as Int32Array)[t] = code;
        seq[b]!.push(code);
        if (superCond) seq[B + b]!.push(code);
      });
      req.onStep?.(t + 1, T);
    }
  } finally {
    tf.dispose([ids, mask, enc]);
  }
  return out;
}

/** Per-sample seeds: sample s of prompt p under `seed` (so adding prompts or samples changes no other image). */
export function sampleSeed(seed: number, prompt: number, sample: number): number {
  return deriveSeed(seed, 'sample', prompt, sample);
}
