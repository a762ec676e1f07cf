/**
 * Writes a safetensors file tensor by tensor: the header is computed from names, dtypes and shapes
 * alone, then each tensor's bytes are produced and written in turn, so converting a multi-GB checkpoint
 * holds one tensor in memory, not the whole file. Same layout as `serializeSafetensors` (tensors in
 * name order, header space-padded to 8 bytes), written to a temp file and renamed.
 */
import { open, rename, rm } from 'node:fs/promises';
import { floatToF16Bits } from '../safetensors.js';
import { decodeElements, DTYPE_BYTES, numel, permuteElements, type SourceTensor } from './tensor.js';

export type OutputFloatDtype = 'F32' | 'F16';

/** One tensor to write: where its bytes come from and how to lay them out. */
export interface OutputTensor {
  name: string;
  source: SourceTensor;
  /** axis permutation applied to the source (numpy transpose order), e.g. HWIO → OIHW = [3, 2, 0, 1] */
  perm?: number[];
  /** final shape (a reshape after `perm`, same element count), e.g. Flax's [1, 1, 1, C] norm scale → [C] */
  shape?: number[];
  /** source name, for messages */
  from: string;
}

/** The shape an output tensor will have on disk. */
export function outputShape(t: Pick<OutputTensor, 'source' | 'perm' | 'shape'>): number[] {
  if (t.shape) return t.shape.slice();
  const s = t.source.shape;
  return t.perm ? t.perm.map((p) => s[p] as number) : s.slice();
}

/** Float sources become `floatDtype`; integer sources become I32. */
function storedDtype(t: OutputTensor, floatDtype: OutputFloatDtype): 'F32' | 'F16' | 'I32' {
  return ['F32', 'F16', 'BF16', 'F64'].includes(t.source.dtype) ? floatDtype : 'I32';
}

/**
 * The bytes of one output tensor. F32 → F32 and F16 → F16 copy the source bits unchanged; other float
 * conversions go through float32 (F16 rounded to nearest even, as PyTorch's `.half()`).
 */
export async function outputBytes(t: OutputTensor, floatDtype: OutputFloatDtype): Promise<Uint8Array> {
  const src = t.source;
  let bytes = await src.read();
  let shape = src.shape;
  if (t.perm) ({ bytes, shape } = permuteElements(bytes, DTYPE_BYTES[src.dtype], shape, t.perm));
  const dtype = storedDtype(t, floatDtype);
  if ((dtype === 'F32' && src.dtype === 'F32') || (dtype === 'F16' && src.dtype === 'F16')) return bytes;
  const decoded = decodeElements(bytes, src.dtype, shape, `tensor "${t.from}"`);
  const n = numel(shape);
  if (dtype === 'F16') {
    const out = Buffer.alloc(n * 2);
    for (let i = 0; i < n; i++) out.writeUInt16LE(floatToF16Bits(decoded.data[i] as number), i * 2);
    return out;
  }
  const out = Buffer.alloc(n * 4);
  if (dtype === 'I32') for (let i = 0; i < n; i++) out.writeInt32LE(decoded.data[i] as number, i * 4);
  else for (let i = 0; i < n; i++) out.writeFloatLE(decoded.data[i] as number, i * 4);
  return out;
}

export interface WriteProgress {
  (done: number, total: number, name: string): void;
}

/** Streams `tensors` into `path` (atomically). Returns the bytes written. */
export async function writeSafetensorsStreaming(
  path: string,
  tensors: OutputTensor[],
  opts: { floatDtype?: OutputFloatDtype; metadata?: Record<string, string>; onTensor?: WriteProgress } = {},
): Promise<number> {
  const floatDtype = opts.floatDtype ?? 'F32';
  const sorted = [...tensors].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const header: Record<string, unknown> = {};
  if (opts.metadata && Object.keys(opts.metadata).length) header.__metadata__ = opts.metadata;
  let offset = 0;
  for (const t of sorted) {
    const shape = outputShape(t);
    if (numel(shape) !== numel(t.source.shape)) throw new Error(`tensor "${t.name}": cannot reshape ${JSON.stringify(t.source.shape)} to ${JSON.stringify(shape)}`);
    const dtype = storedDtype(t, floatDtype);
    const bytes = numel(shape) * (dtype === 'F16' ? 2 : 4);
    header[t.name] = { dtype, shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  const pad = (8 - (json.length % 8)) % 8;
  if (pad) json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  const tmp = `${path}.tmp-${process.pid}`;
  const fh = await open(tmp, 'w');
  try {
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    await fh.write(len);
    await fh.write(json);
    let done = 0;
    for (const t of sorted) {
      const bytes = await outputBytes(t, floatDtype);
      const expected = (header[t.name] as { data_offsets: [number, number] }).data_offsets;
      if (bytes.length !== expected[1] - expected[0]) throw new Error(`tensor "${t.name}": produced ${bytes.length} bytes, expected ${expected[1] - expected[0]}`);
      await fh.write(bytes);
      opts.onTensor?.(++done, sorted.length, t.name);
    }
    await fh.close();
  } catch (e) {
    await fh.close().catch(() => undefined);
    await rm(tmp, { force: true });
    throw e;
  }
  await rename(tmp, path);
  return 8 + json.length + offset;
}
