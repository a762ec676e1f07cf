/**
 * safetensors read/write (https://huggingface.co/docs/safetensors format):
 *
 *   [u64 little-endian N][N bytes of JSON header, space padded][data]
 *   header = { "<name>": { "dtype": "F32", "shape": [..], "data_offsets": [begin, end] }, "__metadata__": {str: str} }
 *
 * Offsets are relative to the start of the data section. Every number in the header is checked before a
 * byte of data is read: a truncated, oversized or lying file is a `SafetensorsError` naming the file and
 * the problem, never an out-of-bounds read.
 *
 * Reading: floats (F16, BF16, F32, F64) become float32; integers (I8…I64, U8, U16, BOOL) become int32,
 * and an I64/U32 value outside the int32 range is refused rather than wrapped. Writing: F32 by default,
 * F16 or BF16 on request for float tensors; int32 tensors are written as I32.
 */
import { closeSync, fstatSync, openSync, readSync, renameSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { endianness } from 'node:os';
import * as tf from '@tensorflow/tfjs-core';

export type SafetensorsDtype = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U32' | 'U16' | 'U8' | 'BOOL';

const DTYPE_BYTES: Record<SafetensorsDtype, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U32: 4, U16: 2, U8: 1, BOOL: 1,
};
const FLOAT_DTYPES = new Set<SafetensorsDtype>(['F64', 'F32', 'F16', 'BF16']);

/** Typed arrays use the machine's byte order; on little-endian machines F32/I32 data is copied in bulk. */
const LITTLE_ENDIAN = endianness() === 'LE';

/** Headers larger than this are refused (the reference implementation uses 100 MB). */
export const MAX_HEADER_BYTES = 100_000_000;

export class SafetensorsError extends Error {
  constructor(
    readonly source: string,
    readonly problem: string,
  ) {
    super(`${source}: ${problem}`);
    this.name = 'SafetensorsError';
  }
}

/** One tensor as plain data: float32 for float dtypes, int32 for integer dtypes. */
export interface RawTensor {
  dtype: 'float32' | 'int32';
  shape: number[];
  data: Float32Array | Int32Array;
}

export interface TensorInfo {
  name: string;
  /** dtype as stored in the file */
  dtype: SafetensorsDtype;
  shape: number[];
  /** byte offsets relative to the data section */
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  /** size of the JSON header in bytes (the data section starts at 8 + headerBytes) */
  headerBytes: number;
  tensors: TensorInfo[];
  metadata: Record<string, string>;
}

// ---------------------------------------------------------------------------------------------------
// float16 / bfloat16 bit conversions

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** IEEE half bits → float32 value. */
export function f16BitsToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24; // zero / subnormal
  if (exp === 0x1f) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

let F16_TABLE: Float32Array | null = null;
/** All 65536 half values, built once: decoding by lookup is ~10× faster than by arithmetic. */
function f16Table(): Float32Array {
  if (!F16_TABLE) {
    F16_TABLE = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) F16_TABLE[h] = f16BitsToFloat(h);
  }
  return F16_TABLE;
}

/** float32 value → IEEE half bits, round to nearest even; overflow → ±Inf; NaN stays NaN. */
export function floatToF16Bits(value: number): number {
  f32[0] = value;
  const x = u32[0] as number;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // subnormal half (or zero): shift the implicit-1 mantissa right, rounding to nearest even
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = mant & ((1 << shift) - 1);
    let h = mant >>> shift;
    if (rest > half || (rest === half && (h & 1))) h += 1;
    return sign | h;
  }
  const rest = mant & 0x1fff;
  let h = (e << 10) | (mant >>> 13);
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1))) h += 1; // may carry into the exponent, which is correct
  return sign | h;
}

/** bfloat16 bits → float32 value (bf16 is the top half of a float32). */
export function bf16BitsToFloat(b: number): number {
  u32[0] = (b & 0xffff) << 16;
  return f32[0] as number;
}

/** float32 value → bfloat16 bits, round to nearest even; NaN stays NaN. */
export function floatToBf16Bits(value: number): number {
  f32[0] = value;
  const x = u32[0] as number;
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff)) return ((x >>> 16) | 0x40) & 0xffff;
  const lsb = (x >>> 16) & 1;
  return ((x + 0x7fff + lsb) >>> 16) & 0xffff;
}

// ---------------------------------------------------------------------------------------------------
// header parsing and validation

function isDtype(s: unknown): s is SafetensorsDtype {
  return typeof s === 'string' && Object.hasOwn(DTYPE_BYTES, s);
}

/**
 * Validates a header against the size of its data section. `dataBytes` is the file size minus
 * 8 + headerBytes. Tensors come back in data order.
 */
export function parseHeader(json: Uint8Array, dataBytes: number, source: string): SafetensorsHeader {
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(json));
  } catch (e) {
    throw new SafetensorsError(source, `header is not valid UTF-8 JSON (${(e as Error).message})`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new SafetensorsError(source, 'header must be a JSON object of tensor entries');
  }
  const metadata: Record<string, string> = {};
  const tensors: TensorInfo[] = [];
  for (const [name, entry] of Object.entries(parsed as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
        throw new SafetensorsError(source, '__metadata__ must be an object of string values');
      }
      for (const [k, v] of Object.entries(entry)) {
        if (typeof v !== 'string') throw new SafetensorsError(source, `__metadata__.${k} must be a string, got ${typeof v}`);
        metadata[k] = v;
      }
      continue;
    }
    const e = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown } | null;
    if (typeof e !== 'object' || e === null) throw new SafetensorsError(source, `tensor "${name}": entry must be an object`);
    if (!isDtype(e.dtype)) {
      throw new SafetensorsError(source, `tensor "${name}": unsupported dtype ${JSON.stringify(e.dtype)} (expected one of ${Object.keys(DTYPE_BYTES).join(', ')})`);
    }
    if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new SafetensorsError(source, `tensor "${name}": shape must be an array of non-negative integers, got ${JSON.stringify(e.shape)}`);
    }
    const offs = e.data_offsets;
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => Number.isSafeInteger(o) && o >= 0)) {
      throw new SafetensorsError(source, `tensor "${name}": data_offsets must be [begin, end] non-negative integers, got ${JSON.stringify(offs)}`);
    }
    const [begin, end] = offs as [number, number];
    const shape = e.shape as number[];
    const expected = shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[e.dtype];
    if (end < begin) throw new SafetensorsError(source, `tensor "${name}": data_offsets end ${end} < begin ${begin}`);
    if (end - begin !== expected) {
      throw new SafetensorsError(source, `tensor "${name}": ${e.dtype}${JSON.stringify(shape)} needs ${expected} bytes but data_offsets span ${end - begin}`);
    }
    if (end > dataBytes) {
      throw new SafetensorsError(source, `tensor "${name}": data_offsets [${begin}, ${end}] run past the end of the data (${dataBytes} bytes; file truncated?)`);
    }
    tensors.push({ name, dtype: e.dtype, shape, begin, end });
  }
  tensors.sort((a, b) => a.begin - b.begin || a.end - b.end);
  for (let i = 1; i < tensors.length; i++) {
    const prev = tensors[i - 1] as TensorInfo;
    const cur = tensors[i] as TensorInfo;
    if (cur.begin < prev.end) {
      throw new SafetensorsError(source, `tensors "${prev.name}" [${prev.begin}, ${prev.end}] and "${cur.name}" [${cur.begin}, ${cur.end}] overlap`);
    }
  }
  return { headerBytes: json.length, tensors, metadata };
}

function headerLength(prefix: Uint8Array, fileBytes: number, source: string): number {
  if (fileBytes < 8) throw new SafetensorsError(source, `file is ${fileBytes} bytes, shorter than the 8-byte header length`);
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_BYTES)) throw new SafetensorsError(source, `header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  if (n > BigInt(fileBytes - 8)) throw new SafetensorsError(source, `header length ${n} is larger than the ${fileBytes - 8} bytes after it (file truncated?)`);
  return Number(n);
}

/** Decodes one tensor's bytes (already bounds-checked) into float32 or int32 data. */
function decode(info: TensorInfo, bytes: Uint8Array, source: string): RawTensor {
  const n = info.shape.reduce((a, b) => a * b, 1);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (FLOAT_DTYPES.has(info.dtype)) {
    const out = new Float32Array(n);
    switch (info.dtype) {
      case 'F32':
        if (LITTLE_ENDIAN) new Uint8Array(out.buffer).set(bytes.subarray(0, n * 4));
        else for (let i = 0; i < n; i++) out[i] = dv.getFloat32(i * 4, true);
        break;
      case 'F16': {
        const table = f16Table();
        for (let i = 0; i < n; i++) out[i] = table[dv.getUint16(i * 2, true)] as number;
        break;
      }
      case 'BF16': {
        const bits = new Uint32Array(out.buffer); // bf16 is the top half of a float32: shift the bits up
        for (let i = 0; i < n; i++) bits[i] = dv.getUint16(i * 2, true) << 16;
        break;
      }
      default:
        for (let i = 0; i < n; i++) out[i] = dv.getFloat64(i * 8, true);
    }
    return { dtype: 'float32', shape: info.shape, data: out };
  }
  const out = new Int32Array(n);
  if (info.dtype === 'I32' && LITTLE_ENDIAN) {
    new Uint8Array(out.buffer).set(bytes.subarray(0, n * 4));
    return { dtype: 'int32', shape: info.shape, data: out };
  }
  const checked = (v: number | bigint, i: number): number => {
    if (v < -2147483648 || v > 2147483647) {
      throw new SafetensorsError(source, `tensor "${info.name}": ${info.dtype} value ${v} at index ${i} does not fit in int32`);
    }
    return Number(v);
  };
  for (let i = 0; i < n; i++) {
    switch (info.dtype) {
      case 'I64': out[i] = checked(dv.getBigInt64(i * 8, true), i); break;
      case 'I32': out[i] = dv.getInt32(i * 4, true); break;
      case 'I16': out[i] = dv.getInt16(i * 2, true); break;
      case 'I8': out[i] = dv.getInt8(i); break;
      case 'U32': out[i] = checked(dv.getUint32(i * 4, true), i); break;
      case 'U16': out[i] = dv.getUint16(i * 2, true); break;
      default: out[i] = dv.getUint8(i); // U8, BOOL
    }
  }
  return { dtype: 'int32', shape: info.shape, data: out };
}

export interface SafetensorsContents {
  tensors: Map<string, RawTensor>;
  metadata: Record<string, string>;
}

/** Parses an in-memory safetensors file. `source` names it in errors (a path or a description). */
export function parseSafetensors(buf: Uint8Array, source = '<buffer>'): SafetensorsContents {
  const n = headerLength(buf.subarray(0, 8), buf.length, source);
  const header = parseHeader(buf.subarray(8, 8 + n), buf.length - 8 - n, source);
  const base = 8 + n;
  const tensors = new Map<string, RawTensor>();
  for (const info of header.tensors) tensors.set(info.name, decode(info, buf.subarray(base + info.begin, base + info.end), source));
  return { tensors, metadata: header.metadata };
}

/** Reads only the header of a safetensors file (names, dtypes, shapes) without loading data. */
export function readSafetensorsHeader(path: string): SafetensorsHeader {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    const prefix = new Uint8Array(8);
    readSync(fd, prefix, 0, Math.min(8, size), 0);
    const n = headerLength(prefix, size, path);
    const json = new Uint8Array(n);
    readFully(fd, json, 8, path);
    return parseHeader(json, size - 8 - n, path);
  } finally {
    closeSync(fd);
  }
}

function readFully(fd: number, out: Uint8Array, position: number, path: string): void {
  let done = 0;
  while (done < out.length) {
    const got = readSync(fd, out, done, out.length - done, position + done);
    if (got === 0) throw new SafetensorsError(path, `file ended at byte ${position + done} while reading (changed while open?)`);
    done += got;
  }
}

/**
 * Streams a safetensors file: validates the whole header first, then decodes the requested tensors (all
 * when `names` is omitted) one at a time in file order and hands each to `onTensor`, so peak memory is
 * one tensor rather than the whole checkpoint. A requested name absent from the file is an error
 * raised before any tensor is decoded.
 */
export async function forEachSafetensor(
  path: string,
  onTensor: (name: string, tensor: RawTensor) => void | Promise<void>,
  opts: { names?: Iterable<string> } = {},
): Promise<SafetensorsHeader> {
  const fh = await open(path, 'r');
  try {
    const size = (await fh.stat()).size;
    const prefix = new Uint8Array(8);
    await fh.read(prefix, 0, Math.min(8, size), 0);
    const n = headerLength(prefix, size, path);
    const json = new Uint8Array(n);
    await readAll(fh, json, 8, path);
    const header = parseHeader(json, size - 8 - n, path);
    const wanted = opts.names ? new Set(opts.names) : null;
    if (wanted) {
      const present = new Set(header.tensors.map((t) => t.name));
      const missing = [...wanted].filter((w) => !present.has(w));
      if (missing.length) throw new SafetensorsError(path, `requested tensors not in file: ${missing.join(', ')}`);
    }
    for (const info of header.tensors) {
      if (wanted && !wanted.has(info.name)) continue;
      const bytes = new Uint8Array(info.end - info.begin);
      await readAll(fh, bytes, 8 + n + info.begin, path);
      await onTensor(info.name, decode(info, bytes, path));
    }
    return header;
  } finally {
    await fh.close();
  }
}

/** Reads a safetensors file (or only `names` from it) into memory. */
export async function readSafetensors(path: string, opts: { names?: Iterable<string> } = {}): Promise<SafetensorsContents> {
  const tensors = new Map<string, RawTensor>();
  const header = await forEachSafetensor(path, (name, t) => void tensors.set(name, t), opts);
  return { tensors, metadata: header.metadata };
}

async function readAll(fh: Awaited<ReturnType<typeof open>>, out: Uint8Array, position: number, path: string): Promise<void> {
  let done = 0;
  while (done < out.length) {
    const { bytesRead } = await fh.read(out, done, out.length - done, position + done);
    if (bytesRead === 0) throw new SafetensorsError(path, `file ended at byte ${position + done} while reading (changed while open?)`);
    done += bytesRead;
  }
}

// ---------------------------------------------------------------------------------------------------
// writing

export type TensorLike = RawTensor | tf.Tensor;

export interface WriteOptions {
  /** storage dtype for float tensors (default F32); int32 tensors are always I32 */
  floatDtype?: 'F32' | 'F16' | 'BF16';
  metadata?: Record<string, string>;
}

function toRaw(t: TensorLike, name: string): RawTensor {
  if (t instanceof tf.Tensor) {
    if (t.dtype !== 'float32' && t.dtype !== 'int32') {
      throw new SafetensorsError('<write>', `tensor "${name}" has dtype ${t.dtype}; only float32 and int32 can be written`);
    }
    return { dtype: t.dtype, shape: t.shape.slice(), data: t.dataSync() as Float32Array | Int32Array };
  }
  return t;
}

/**
 * Serialises tensors to safetensors bytes. Tensors are laid out in name order so the same contents
 * always give the same bytes (checkpoint manifests hash them).
 */
export function serializeSafetensors(tensors: Map<string, TensorLike> | Record<string, TensorLike>, opts: WriteOptions = {}): Buffer {
  const entries = (tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors)).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const floatDtype = opts.floatDtype ?? 'F32';
  const header: Record<string, unknown> = {};
  if (opts.metadata && Object.keys(opts.metadata).length) {
    for (const [k, v] of Object.entries(opts.metadata)) {
      if (typeof v !== 'string') throw new SafetensorsError('<write>', `metadata "${k}" must be a string`);
    }
    header.__metadata__ = opts.metadata;
  }
  const raws: [string, RawTensor, SafetensorsDtype][] = [];
  let offset = 0;
  for (const [name, t] of entries) {
    if (name === '__metadata__') throw new SafetensorsError('<write>', 'a tensor cannot be named __metadata__');
    let raw = toRaw(t, name);
    // The bulk copies below need the array type to match the declared dtype.
    if (raw.dtype === 'float32' && !(raw.data instanceof Float32Array)) raw = { ...raw, data: Float32Array.from(raw.data) };
    if (raw.dtype === 'int32' && !(raw.data instanceof Int32Array)) raw = { ...raw, data: Int32Array.from(raw.data) };
    const n = raw.shape.reduce((a, b) => a * b, 1);
    if (raw.data.length !== n) {
      throw new SafetensorsError('<write>', `tensor "${name}": shape ${JSON.stringify(raw.shape)} needs ${n} values, data has ${raw.data.length}`);
    }
    const dtype: SafetensorsDtype = raw.dtype === 'int32' ? 'I32' : floatDtype;
    const bytes = n * DTYPE_BYTES[dtype];
    header[name] = { dtype, shape: raw.shape, data_offsets: [offset, offset + bytes] };
    raws.push([name, raw, dtype]);
    offset += bytes;
  }
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  // Pad with spaces to a multiple of 8 so the data section is aligned (as the reference writer does).
  const pad = (8 - (json.length % 8)) % 8;
  if (pad) json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  const out = Buffer.alloc(8 + json.length + offset);
  out.writeBigUInt64LE(BigInt(json.length), 0);
  json.copy(out, 8);
  let pos = 8 + json.length;
  for (const [, raw, dtype] of raws) {
    const d = raw.data;
    switch (dtype) {
      case 'I32':
      case 'F32': {
        // raw.dtype matches the storage dtype here (int32 → I32, float32 → F32)
        if (LITTLE_ENDIAN) out.set(new Uint8Array(d.buffer, d.byteOffset, d.length * 4), pos);
        else if (dtype === 'I32') for (let i = 0; i < d.length; i++) out.writeInt32LE(d[i] as number, pos + i * 4);
        else for (let i = 0; i < d.length; i++) out.writeFloatLE(d[i] as number, pos + i * 4);
        pos += d.length * 4;
        break;
      }
      case 'F16':
        for (let i = 0; i < d.length; i++) out.writeUInt16LE(floatToF16Bits(d[i] as number), pos + i * 2);
        pos += d.length * 2;
        break;
      default:
        for (let i = 0; i < d.length; i++) out.writeUInt16LE(floatToBf16Bits(d[i] as number), pos + i * 2);
        pos += d.length * 2;
    }
  }
  return out;
}

/** Writes a safetensors file atomically (temp file + rename), so a crash never leaves half a file. */
export function writeSafetensors(path: string, tensors: Map<string, TensorLike> | Record<string, TensorLike>, opts: WriteOptions = {}): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, serializeSafetensors(tensors, opts));
  renameSync(tmp, path);
}

/** Converts decoded tensors to tf tensors (the caller owns and disposes them). */
export function toTfTensors(raw: Map<string, RawTensor>): Map<string, tf.Tensor> {
  const out = new Map<string, tf.Tensor>();
  for (const [name, r] of raw) out.set(name, tf.tensor(r.data, r.shape, r.dtype));
  return out;
}
