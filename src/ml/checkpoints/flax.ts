/**
 * Flax checkpoints (`flax.serialization.to_bytes`, as `flax_model.msgpack`): a msgpack map of nested
 * maps whose leaves are numpy arrays in msgpack ext types —
 *   ext 1 (ndarray):  msgpack of [shape, dtype name, C-order bytes]
 *   ext 3 (npscalar): the same payload for a numpy scalar
 *   ext 2 (complex):  refused (no model of ours has one)
 * and arrays over 2³⁰ bytes split into `{__msgpack_chunked_array__: true, shape: {"0": …}, chunks: {"0": …}}`.
 * Decoded with @msgpack/msgpack; the array bytes stay views into the file buffer until read.
 *
 * The tree is flattened to `/`-joined paths (`encoder/down_0/block_0/conv1/kernel`); a lone `params`
 * wrapper at the top (a TrainState's) is removed.
 */
import { readFile } from 'node:fs/promises';
import { decode, ExtensionCodec } from '@msgpack/msgpack';
import { DTYPE_BYTES, numel, type SourceDtype, type SourceTensor } from './tensor.js';

export class FlaxCheckpointError extends Error {
  constructor(
    readonly file: string,
    problem: string,
  ) {
    super(`${file}: ${problem}`);
    this.name = 'FlaxCheckpointError';
  }
}

const NUMPY_DTYPES: Record<string, SourceDtype> = {
  float32: 'F32',
  float16: 'F16',
  bfloat16: 'BF16',
  float64: 'F64',
  int64: 'I64',
  int32: 'I32',
  int16: 'I16',
  int8: 'I8',
  uint32: 'U32',
  uint16: 'U16',
  uint8: 'U8',
  bool: 'BOOL',
};

/** A decoded ndarray leaf: bytes still a view into the file. */
class FlaxArray {
  constructor(
    readonly dtype: SourceDtype,
    readonly shape: number[],
    readonly bytes: Uint8Array,
  ) {}
}

function decodeNdarray(data: Uint8Array, file: string): FlaxArray {
  const t = decode(data) as unknown;
  if (!Array.isArray(t) || t.length !== 3) throw new FlaxCheckpointError(file, 'an ndarray ext value is not [shape, dtype, bytes]');
  const [shape, dtypeName, bytes] = t as [unknown, unknown, unknown];
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) throw new FlaxCheckpointError(file, `ndarray shape ${JSON.stringify(shape)} is not a list of sizes`);
  const name = typeof dtypeName === 'string' ? dtypeName : dtypeName instanceof Uint8Array ? new TextDecoder().decode(dtypeName) : '';
  const dtype = NUMPY_DTYPES[name];
  if (!dtype) throw new FlaxCheckpointError(file, `ndarray dtype ${JSON.stringify(name)} is not supported (supported: ${Object.keys(NUMPY_DTYPES).join(', ')})`);
  if (!(bytes instanceof Uint8Array)) throw new FlaxCheckpointError(file, 'ndarray data is not a byte string');
  const need = numel(shape as number[]) * DTYPE_BYTES[dtype];
  if (bytes.length !== need) throw new FlaxCheckpointError(file, `ndarray ${name}${JSON.stringify(shape)} needs ${need} bytes, has ${bytes.length}`);
  return new FlaxArray(dtype, shape as number[], bytes);
}

function codec(file: string): ExtensionCodec {
  const c = new ExtensionCodec();
  const refuse = (what: string) => () => {
    throw new FlaxCheckpointError(file, `${what} are not supported`);
  };
  c.register({ type: 1, encode: () => null, decode: (data) => decodeNdarray(data, file) });
  c.register({ type: 2, encode: () => null, decode: refuse('complex numbers') });
  c.register({ type: 3, encode: () => null, decode: (data) => decodeNdarray(data, file) });
  return c;
}

const isMap = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array) && !(v instanceof FlaxArray);

/** Joins a chunked array's pieces (Flax splits arrays over 2³⁰ bytes). */
function unchunk(v: Record<string, unknown>, path: string, file: string): FlaxArray {
  const shapeMap = v.shape;
  const chunkMap = v.chunks;
  if (!isMap(shapeMap) || !isMap(chunkMap)) throw new FlaxCheckpointError(file, `${path}: chunked array without shape/chunks maps`);
  const shape = Object.keys(shapeMap).map((_, i) => shapeMap[String(i)]) as number[];
  const chunks = Object.keys(chunkMap).map((_, i) => chunkMap[String(i)]);
  if (!chunks.every((c) => c instanceof FlaxArray)) throw new FlaxCheckpointError(file, `${path}: a chunk is not an array`);
  const arrays = chunks as FlaxArray[];
  const dtype = arrays[0]?.dtype ?? 'F32';
  const total = arrays.reduce((a, c) => a + c.bytes.length, 0);
  if (total !== numel(shape) * DTYPE_BYTES[dtype]) throw new FlaxCheckpointError(file, `${path}: chunks hold ${total} bytes, shape ${JSON.stringify(shape)} needs ${numel(shape) * DTYPE_BYTES[dtype]}`);
  return new FlaxArray(dtype, shape, Buffer.concat(arrays.map((c) => c.bytes)));
}

export interface FlaxCheckpoint {
  file: string;
  /** `/`-joined path → tensor, in the file's order */
  tensors: Map<string, SourceTensor>;
  /** leaves that are not arrays (numbers, strings), by path */
  nonTensors: string[];
}

/** Reads a Flax msgpack checkpoint (the whole file is read: msgpack has no index to seek with). */
export async function readFlaxCheckpoint(file: string): Promise<FlaxCheckpoint> {
  const buf = await readFile(file);
  let tree: unknown;
  try {
    tree = decode(buf, { extensionCodec: codec(file) });
  } catch (e) {
    if (e instanceof FlaxCheckpointError) throw e;
    throw new FlaxCheckpointError(file, `not a Flax msgpack checkpoint (${(e as Error).message})`);
  }
  if (!isMap(tree)) throw new FlaxCheckpointError(file, 'the top level is not a map of parameters');
  // TrainState-style files wrap the parameters in {params: …}
  const keys = Object.keys(tree);
  if (keys.length === 1 && keys[0] === 'params' && isMap(tree.params)) tree = tree.params;
  const tensors = new Map<string, SourceTensor>();
  const nonTensors: string[] = [];
  const walk = (v: unknown, path: string): void => {
    if (isMap(v) && v.__msgpack_chunked_array__ === true) v = unchunk(v, path, file);
    if (v instanceof FlaxArray) {
      const a = v;
      tensors.set(path, { dtype: a.dtype, shape: a.shape, read: async () => a.bytes.slice() });
    } else if (isMap(v)) for (const [k, x] of Object.entries(v)) walk(x, path ? `${path}/${k}` : k);
    else nonTensors.push(path);
  };
  walk(tree, '');
  if (tensors.size === 0) throw new FlaxCheckpointError(file, 'no arrays in the file');
  return { file, tensors, nonTensors };
}
