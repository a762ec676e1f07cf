/**
 * One incremental decoding step (DalleBart.decodeStep) as a recorded program of native ops, for the wasm
 * backend with the native kernels active.
 *
 * A step works on a few rows of d_model floats. As stock tf ops it was ~500 ops, each costing more in
 * dispatch (~10 µs) than in arithmetic; as one fused tf kernel per op it was ~50, still ~3 µs of JS each,
 * run with caches the step's weights had just evicted. So the step is recorded once per decoding state,
 * like a CUDA graph: `DecodeProgram` takes the ops (their operands are weights, the state's caches, or rows
 * of one arena tensor the program owns), and `run` replays all of them in one native call
 * (native `decodeProgram`), with the rows' tokens and the position as the only inputs that change. The ops:
 * - a linear layer with its bias and activation: act(x·W + b) (W may be stored transposed: a tied lm head);
 * - a residual add with its layer norm: LN(x + r), optionally keeping x + r (pre-LN's residual stream);
 * - attention of one new query per row over cached keys/values: for decoder self-attention appending the
 *   new key/value row to a preallocated cache in place (no concat, no copy of the past), for cross-attention
 *   over the encoder's keys/values with the padding bias;
 * - the token rows (scaled) plus the position's row; elementwise multiply (GLU) and add.
 * No gradients: these are for inference. Each op has the result of its tf-op version in nn.ts within float32
 * rounding (tests/ml/decode-kernels.test.ts).
 *
 * The in-place cache write is the one exception to tfjs' immutable tensors: the cache tensors are created by
 * `emptyKvCache`, owned by a decoding state, and never handed to anyone else, so no reader can see a value
 * change under it; the attention reads only rows it has written. A program holds heap offsets, so every
 * tensor it reads must outlive it: `run` refuses to start if one was disposed.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Activation } from '../nn.js';
import { nativeKernels } from './native.js';
import { asWasmBackend, floatOffset, heapBuffer, WasmKernelError } from './wasm-heap.js';

const PROGRAM = 'DecodeProgram';
/** Slots per op record, as native/minidalle_native.c's PROGRAM_SLOTS. */
const SLOTS = 16;
const OP = { linear: 1, addLayerNorm: 2, attend: 3, embed: 4, mul: 5, add: 6 } as const;

/** The native kernel's activation codes. */
const ACTIVATION_CODE: Record<'none' | Activation, number> = { none: 0, gelu: 1, gelu_new: 2, relu: 3, swish: 4, silu: 4 };

/** Where an operand lives: a tensor's data (from its float `from`), or floats of the program's arena from `at`. */
type Place = { tensor: tf.Tensor; from?: number } | { at: number };

/** Rows × cols floats that an op reads or writes. */
export interface ProgramRows {
  readonly rows: number;
  readonly cols: number;
  readonly place: Place;
}

/** An operand slot: a place (resolved to a heap offset when compiled), absent (−1), or a number. */
type Field = Place | undefined | number;

function shapeOf(t: tf.Tensor | undefined): string {
  return t ? JSON.stringify(t.shape) : 'none';
}

export class DecodeProgram {
  private readonly ops: { code: number; fields: Field[] }[] = [];
  private readonly tensors = new Set<tf.Tensor>();
  private arenaFloats = 0;
  /** after `compile`: the arena, the records, and where the output lies (heap floats) */
  private compiled: { arena: tf.Tensor1D; program: Float64Array; outOffset: number; outFloats: number } | null = null;

  /** A tensor as rows (R, C) for the ops, e.g. a test's input. */
  rowsOf(t: tf.Tensor2D): ProgramRows {
    return { rows: t.shape[0], cols: t.shape[1], place: this.read(t) };
  }

  private read(t: tf.Tensor, from = 0): Place {
    if (t.dtype !== 'float32') throw new WasmKernelError(PROGRAM, `operands must be float32, got ${t.dtype}`);
    this.tensors.add(t);
    return { tensor: t, from };
  }

  private rows(rows: number, cols: number): ProgramRows {
    const at = this.arenaFloats;
    this.arenaFloats += rows * cols;
    return { rows, cols, place: { at } };
  }

  private op(code: number, ...fields: Field[]): void {
    if (this.compiled) throw new WasmKernelError(PROGRAM, 'the program is compiled: no op can be added');
    this.ops.push({ code, fields });
  }

  /** Row r: table[token r]·scale + positions[firstRow + position]. table (vocab, C), positions (P, C) → (rows, C). */
  embed(rows: number, table: tf.Tensor2D, positions: tf.Tensor2D, firstRow: number, scale: number): ProgramRows {
    const [vocab, C] = table.shape;
    if (positions.shape[1] !== C || firstRow < 0 || firstRow >= positions.shape[0]) throw new WasmKernelError(PROGRAM, `embedding: table ${shapeOf(table)}, positions ${shapeOf(positions)} from row ${firstRow} do not fit`);
    const y = this.rows(rows, C);
    this.op(OP.embed, this.read(table), vocab, this.read(positions, firstRow * C), positions.shape[0] - firstRow, y.place, rows, C, scale);
    return y;
  }

  /** act(x·w + b): x (R, in), w (in, out) — or (out, in) with `transposed` — and b (out) or none → (R, out). */
  linear(x: ProgramRows, w: tf.Tensor2D, b?: tf.Tensor, activation: 'none' | Activation = 'none', transposed = false): ProgramRows {
    const [wIn, outDim] = transposed ? [w.shape[1], w.shape[0]] : w.shape;
    if (wIn !== x.cols || (b && b.size !== outDim)) throw new WasmKernelError(PROGRAM, `linear: x (${x.rows}, ${x.cols}), w ${shapeOf(w)}${transposed ? ' (transposed)' : ''} and b ${shapeOf(b)} do not fit`);
    const y = this.rows(x.rows, outDim);
    this.op(OP.linear, x.place, this.read(w), b ? this.read(b) : undefined, y.place, x.rows, x.cols, outDim, ACTIVATION_CODE[activation], transposed ? 1 : 0);
    return y;
  }

  private norm(x: ProgramRows, r: ProgramRows | undefined, w: tf.Tensor1D | undefined, b: tf.Tensor1D | undefined, eps: number, keepSum: boolean): [ProgramRows, ProgramRows | undefined] {
    const c = x.cols;
    if ((r && !(r.cols === c && (r.rows === x.rows || r.rows === 1))) || (w && w.size !== c) || (b && b.size !== c)) {
      throw new WasmKernelError(PROGRAM, `add + layer norm: x (${x.rows}, ${c}), r ${r ? `(${r.rows}, ${r.cols})` : 'none'}, w ${shapeOf(w)} and b ${shapeOf(b)} do not fit`);
    }
    const y = this.rows(x.rows, c);
    const s = keepSum ? this.rows(x.rows, c) : undefined;
    this.op(OP.addLayerNorm, x.place, r?.place, r ? r.rows : x.rows, w ? this.read(w) : undefined, b ? this.read(b) : undefined, y.place, s?.place, x.rows, c, eps);
    return [y, s];
  }

  /** LayerNorm of x + r per row (r absent: of x), with scale w and shift b when given. x (R, C), r (R or 1, C) → (R, C). */
  addLayerNorm(x: ProgramRows, r: ProgramRows | undefined, w: tf.Tensor1D | undefined, b: tf.Tensor1D | undefined, eps = 1e-5): ProgramRows {
    return this.norm(x, r, w, b, eps, false)[0];
  }

  /** The same, also returning the sum x + r: [LN(x + r), x + r]. */
  addLayerNormKeepSum(x: ProgramRows, r: ProgramRows, w: tf.Tensor1D | undefined, b: tf.Tensor1D | undefined, eps = 1e-5): [ProgramRows, ProgramRows] {
    return this.norm(x, r, w, b, eps, true) as [ProgramRows, ProgramRows];
  }

  /**
   * Causal self-attention of the newest position: qkv (R, 3C) holds its projected [q | k | v]; k and v are
   * written into row `position` of the caches (R, nh, capacity, hs), in place, and q attends to positions
   * 0 … position (the position of each `run`). → (R, C), heads merged. Queries are scaled by hs^-0.5, as nn.ts's attention.
   */
  selfAttention(qkv: ProgramRows, cache: { k: tf.Tensor4D; v: tf.Tensor4D }, numHeads: number): ProgramRows {
    const [kb, kh, cap, hs] = cache.k.shape;
    const C = kh * hs;
    if (kh !== numHeads || kb !== qkv.rows || !tf.util.arraysEqual(cache.v.shape, cache.k.shape) || qkv.cols !== 3 * C) {
      throw new WasmKernelError(PROGRAM, `self-attention: qkv (${qkv.rows}, ${qkv.cols}) and k/v ${shapeOf(cache.k)} (${numHeads} heads) do not fit`);
    }
    if (!('at' in qkv.place)) throw new WasmKernelError(PROGRAM, 'self-attention reads q|k|v from an op of the program');
    const q = qkv.place.at;
    const y = this.rows(qkv.rows, C);
    this.op(OP.attend, qkv.place, qkv.cols, this.read(cache.k), this.read(cache.v), cap, -1, undefined, y.place, qkv.rows, kh, hs, { at: q + C }, { at: q + 2 * C }, qkv.cols, 1 / Math.sqrt(hs));
    return y;
  }

  /** One query per row q (R, C) over the context's k, v (R, nh, S, hs) plus an additive bias (R, S). → (R, C). */
  crossAttention(q: ProgramRows, kv: { k: tf.Tensor4D; v: tf.Tensor4D }, bias: tf.Tensor2D | undefined, numHeads: number): ProgramRows {
    const [kb, kh, S, hs] = kv.k.shape;
    if (kh !== numHeads || kb !== q.rows || !tf.util.arraysEqual(kv.v.shape, kv.k.shape) || q.cols !== kh * hs || (bias && !tf.util.arraysEqual(bias.shape, [q.rows, S]))) {
      throw new WasmKernelError(PROGRAM, `cross-attention: q (${q.rows}, ${q.cols}), k/v ${shapeOf(kv.k)} (${numHeads} heads) and bias ${shapeOf(bias)} do not fit`);
    }
    const y = this.rows(q.rows, q.cols);
    this.op(OP.attend, q.place, q.cols, this.read(kv.k), this.read(kv.v), S, S, bias ? this.read(bias) : undefined, y.place, q.rows, kh, hs, undefined, undefined, 0, 1 / Math.sqrt(hs));
    return y;
  }

  private elementwise(code: number, a: ProgramRows, b: ProgramRows, what: string): ProgramRows {
    if (a.rows !== b.rows || a.cols !== b.cols) throw new WasmKernelError(PROGRAM, `${what}: (${a.rows}, ${a.cols}) and (${b.rows}, ${b.cols}) differ`);
    const y = this.rows(a.rows, a.cols);
    this.op(code, a.place, b.place, y.place, a.rows * a.cols);
    return y;
  }

  /** a ⊙ b, same shapes. */
  mul(a: ProgramRows, b: ProgramRows): ProgramRows {
    return this.elementwise(OP.mul, a, b, 'multiply');
  }

  /** a + b, same shapes. */
  add(a: ProgramRows, b: ProgramRows): ProgramRows {
    return this.elementwise(OP.add, a, b, 'add');
  }

  /** Ends the recording: `out` is what `run` returns. Allocates the arena. */
  compile(out: ProgramRows): void {
    if (this.compiled) throw new WasmKernelError(PROGRAM, 'the program is compiled already');
    if (!('at' in out.place)) throw new WasmKernelError(PROGRAM, 'the output must be an op of the program');
    const backend = asWasmBackend(tf.backend());
    const arena = tf.keep(tf.zeros([Math.max(1, this.arenaFloats)]) as tf.Tensor1D); // owned here, whatever scope records
    const base = floatOffset(backend, arena, PROGRAM);
    const offset = (f: Field): number => (f === undefined ? -1 : typeof f === 'number' ? f : 'at' in f ? base + f.at : floatOffset(backend, f.tensor, PROGRAM) + (f.from ?? 0));
    const program = new Float64Array(this.ops.length * SLOTS);
    this.ops.forEach((o, i) => {
      program[i * SLOTS] = o.code;
      o.fields.forEach((f, j) => {
        program[i * SLOTS + 1 + j] = offset(f);
      });
    });
    this.compiled = { arena, program, outOffset: base + out.place.at, outFloats: out.rows * out.cols };
  }

  /** Runs every op for the rows' tokens (one per row; none without an embedding) at `position` → a copy of the output rows. */
  run(tokens: Int32Array, position: number): Float32Array {
    const k = nativeKernels();
    if (k === null) throw new WasmKernelError(PROGRAM, 'needs the native kernels, which are not active');
    const c = this.compiled;
    if (!c) throw new WasmKernelError(PROGRAM, 'compile the program before running it');
    for (const t of this.tensors) if (t.isDisposed) throw new WasmKernelError(PROGRAM, `a tensor the program reads (${shapeOf(t)}) was disposed`);
    const backend = asWasmBackend(tf.backend());
    k.decodeProgram(heapBuffer(backend), c.program, tokens, position);
    return new Float32Array(heapBuffer(backend), c.outOffset * 4, c.outFloats).slice();
  }

  /** Releases the arena (not the tensors the program reads). */
  dispose(): void {
    this.compiled?.arena.dispose();
    this.compiled = null;
  }
}

/** A zeroed key/value cache of `capacity` positions for `rows` rows: (rows, heads, capacity, hs) each. */
export function emptyKvCache(rows: number, heads: number, capacity: number, hs: number): { k: tf.Tensor4D; v: tf.Tensor4D } {
  return { k: tf.zeros([rows, heads, capacity, hs]), v: tf.zeros([rows, heads, capacity, hs]) };
}
