/**
 * The one tensor type every checkpoint reader hands out: name, stored dtype, shape, and a `read()` that
 * fetches its bytes only when asked, so a converter holds one tensor at a time however large the file.
 * Also the dtype decoding (to float32 or int32 data) and the axis permutations that turn Flax's kernel
 * layouts into PyTorch's.
 */
import { bf16BitsToFloat, f16BitsToFloat, type SafetensorsDtype } from '../safetensors.js';

export type SourceDtype = SafetensorsDtype;

export const DTYPE_BYTES: Record<SourceDtype, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U32: 4, U16: 2, U8: 1, BOOL: 1,
};

export const FLOAT_SOURCE_DTYPES: ReadonlySet<SourceDtype> = new Set(['F64', 'F32', 'F16', 'BF16']);

/** A tensor in a source checkpoint, its data not yet read. */
export interface SourceTensor {
  /** dtype as stored */
  dtype: SourceDtype;
  shape: number[];
  /** the elements, C-contiguous, little-endian, in `dtype` (strides and offsets already applied) */
  read(): Promise<Uint8Array>;
}

/** Decoded tensor data: float dtypes → float32, integer dtypes → int32 (values outside int32 refused). */
export interface DecodedTensor {
  dtype: 'float32' | 'int32';
  shape: number[];
  data: Float32Array | Int32Array;
}

export class TensorDataError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TensorDataError';
  }
}

export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

let F16_TABLE: Float32Array | null = null;
function f16Table(): Float32Array {
  if (!F16_TABLE) {
    F16_TABLE = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) F16_TABLE[h] = f16BitsToFloat(h);
  }
  return F16_TABLE;
}

/** Little-endian bytes of `dtype` → float32 / int32 values. `what` names the tensor in errors. */
export function decodeElements(bytes: Uint8Array, dtype: SourceDtype, shape: number[], what: string): DecodedTensor {
  const n = numel(shape);
  if (bytes.length !== n * DTYPE_BYTES[dtype]) throw new TensorDataError(`${what}: ${dtype}${JSON.stringify(shape)} needs ${n * DTYPE_BYTES[dtype]} bytes, got ${bytes.length}`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (FLOAT_SOURCE_DTYPES.has(dtype)) {
    const out = new Float32Array(n);
    if (dtype === 'F32') for (let i = 0; i < n; i++) out[i] = dv.getFloat32(i * 4, true);
    else if (dtype === 'F16') {
      const t = f16Table();
      for (let i = 0; i < n; i++) out[i] = t[dv.getUint16(i * 2, true)] as number;
    } else if (dtype === 'BF16') for (let i = 0; i < n; i++) out[i] = bf16BitsToFloat(dv.getUint16(i * 2, true));
    else for (let i = 0; i < n; i++) out[i] = dv.getFloat64(i * 8, true);
    return { dtype: 'float32', shape, data: out };
  }
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    let v: number | bigint;
    switch (dtype) {
      case 'I64': v = dv.getBigInt64(i * 8, true); break;
      case 'I32': v = dv.getInt32(i * 4, true); break;
      case 'I16': v = dv.getInt16(i * 2, true); break;
      case 'I8': v = dv.getInt8(i); break;
      case 'U32': v = dv.getUint32(i * 4, true); break;
      case 'U16': v = dv.getUint16(i * 2, true); break;
      default: v = dv.getUint8(i);
    }
    if (v < -2147483648 || v > 2147483647) throw new TensorDataError(`${what}: ${dtype} value ${v} at index ${i} does not fit in int32`);
    out[i] = Number(v);
  }
  return { dtype: 'int32', shape, data: out };
}

/**
 * Copies the elements of a strided view (PyTorch's storage offset + strides, in elements) out of
 * `storage` into C order. The common contiguous case is a single slice.
 */
export function gatherStrided(storage: Uint8Array, elemBytes: number, offset: number, shape: number[], stride: number[], what: string): Uint8Array {
  const n = numel(shape);
  if (n === 0) return new Uint8Array(0);
  let maxIndex = offset;
  for (let d = 0; d < shape.length; d++) {
    if ((stride[d] as number) < 0) throw new TensorDataError(`${what}: negative stride ${stride[d]}`);
    maxIndex += ((shape[d] as number) - 1) * (stride[d] as number);
  }
  if ((maxIndex + 1) * elemBytes > storage.length) {
    throw new TensorDataError(`${what}: view (offset ${offset}, shape ${JSON.stringify(shape)}, stride ${JSON.stringify(stride)}) reaches element ${maxIndex}, past its storage of ${storage.length / elemBytes}`);
  }
  let contiguous = true;
  let expect = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    if ((shape[d] as number) !== 1 && stride[d] !== expect) contiguous = false;
    expect *= shape[d] as number;
  }
  if (contiguous) return storage.subarray(offset * elemBytes, (offset + n) * elemBytes);
  const out = new Uint8Array(n * elemBytes);
  // Copy whole elements through typed views when the storage is aligned (always, for buffers we read),
  // else byte by byte. Words of 8-byte elements are copied as two 32-bit halves.
  const words = elemBytes === 8 ? 2 : 1;
  const unit = elemBytes === 8 ? 4 : elemBytes;
  const aligned = (unit === 4 || unit === 2) && storage.byteOffset % unit === 0 && storage.byteLength % unit === 0;
  const view = (b: Uint8Array): Uint32Array | Uint16Array =>
    unit === 4 ? new Uint32Array(b.buffer, b.byteOffset, b.byteLength / 4) : new Uint16Array(b.buffer, b.byteOffset, b.byteLength / 2);
  const from = aligned ? view(storage) : null;
  const to = aligned ? view(out) : null;
  const rank = shape.length;
  const idx = new Array<number>(rank).fill(0);
  let src = offset;
  for (let i = 0; i < n; i++) {
    if (from && to) {
      to[i * words] = from[src * words] as number;
      if (words === 2) to[i * 2 + 1] = from[src * 2 + 1] as number;
    } else out.set(storage.subarray(src * elemBytes, (src + 1) * elemBytes), i * elemBytes);
    for (let d = rank - 1; d >= 0; d--) {
      idx[d] = (idx[d] as number) + 1;
      src += stride[d] as number;
      if ((idx[d] as number) < (shape[d] as number)) break;
      src -= (shape[d] as number) * (stride[d] as number);
      idx[d] = 0;
    }
  }
  return out;
}

/**
 * Permutes the axes of C-ordered elements: out axis i is input axis `perm[i]` (numpy's transpose).
 * Returns the new bytes and shape.
 */
export function permuteElements(bytes: Uint8Array, elemBytes: number, shape: number[], perm: number[]): { bytes: Uint8Array; shape: number[] } {
  const rank = shape.length;
  const outShape = perm.map((p) => shape[p] as number);
  const inStride = new Array<number>(rank);
  let s = 1;
  for (let d = rank - 1; d >= 0; d--) {
    inStride[d] = s;
    s *= shape[d] as number;
  }
  // strides of the input, in output-axis order: gathering with them is the permutation
  const stride = perm.map((p) => inStride[p] as number);
  return { bytes: gatherStrided(bytes, elemBytes, 0, outShape, stride, 'permute').slice(), shape: outShape };
}
