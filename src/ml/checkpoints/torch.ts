/**
 * PyTorch checkpoints (`torch.save`): `.ckpt` (Lightning), `.bin` (transformers), `.pt`/`.pth`.
 *
 * Two container formats, both read without loading the file:
 *   - zip (torch ≥ 1.6): `<prefix>/data.pkl` (the pickle) + `<prefix>/data/<key>` (one entry per storage,
 *     stored uncompressed). The zip's central directory is read by yauzl; a storage's bytes are read from
 *     the file at its data offset only when a tensor asks for them.
 *   - legacy (torch < 1.6): five pickles in a row (magic number, protocol, sys info, the object, the
 *     storage keys) followed by each storage as an int64 element count and its bytes. The pickles are
 *     read piece by piece; the storages are located by their 8-byte headers without reading their data.
 * The pickle is read by the restricted unpickler (pickle.ts): only tensors (`_rebuild_tensor_v2`,
 * `_rebuild_parameter`), storage types, OrderedDict and the inert data Lightning keeps beside the state
 * dict (argparse.Namespace / AttributeDict hyper-parameters, numpy scalars) are built; nothing else.
 *
 * `readTorchStateDict` finds the state dict: the object itself, or its `state_dict` (Lightning) or
 * `model`/`module` entry, keeping only tensor values; non-tensor entries are reported, not guessed at.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { openSync, readSync, closeSync, fstatSync } from 'node:fs';
import yauzl from 'yauzl';
import { BASIC_ALLOWED, BufferInput, PickleError, PyDict, PyGlobal, PyTuple, unpickle, type AllowedCall, type PickleInput } from './pickle.js';
import { DTYPE_BYTES, gatherStrided, numel, type SourceDtype, type SourceTensor } from './tensor.js';

export class TorchCheckpointError extends Error {
  constructor(
    readonly file: string,
    problem: string,
  ) {
    super(`${file}: ${problem}`);
    this.name = 'TorchCheckpointError';
  }
}

/** torch's storage classes (what the pickle names) → element dtype. */
const STORAGE_DTYPES: Record<string, SourceDtype> = {
  FloatStorage: 'F32',
  HalfStorage: 'F16',
  BFloat16Storage: 'BF16',
  DoubleStorage: 'F64',
  LongStorage: 'I64',
  IntStorage: 'I32',
  ShortStorage: 'I16',
  CharStorage: 'I8',
  ByteStorage: 'U8',
  BoolStorage: 'BOOL',
};

/** A storage type named by a persistent id: an allowed global that is never called. */
class StorageType {
  constructor(
    readonly name: string,
    readonly dtype: SourceDtype,
  ) {}
}

/** A storage as the pickle refers to it: its key (the zip entry / legacy record) and dtype. */
export class StorageRef {
  constructor(
    readonly key: string,
    readonly dtype: SourceDtype,
    readonly numel: number,
  ) {}
}

/** A tensor as the pickle describes it: a view into a storage. */
export class TensorRef {
  constructor(
    readonly storage: StorageRef,
    readonly offset: number,
    readonly shape: number[],
    readonly stride: number[],
  ) {}
}

const intList = (v: unknown, what: string): number[] => {
  const items = v instanceof PyTuple ? v.items : Array.isArray(v) ? v : null;
  if (!items || !items.every((x) => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0)) throw new Error(`${what} must be a tuple of non-negative integers`);
  return items as number[];
};

function rebuildTensor(args: unknown[]): TensorRef {
  const [storage, offset, size, stride] = args;
  if (!(storage instanceof StorageRef)) throw new Error('the first argument must be a storage');
  if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0) throw new Error('storage offset must be a non-negative integer');
  const shape = intList(size, 'size');
  const strides = intList(stride, 'stride');
  if (strides.length !== shape.length) throw new Error(`size ${JSON.stringify(shape)} and stride ${JSON.stringify(strides)} differ in rank`);
  return new TensorRef(storage, offset, shape, strides);
}

function torchAllowed(): Map<string, AllowedCall> {
  const m = new Map<string, AllowedCall>(BASIC_ALLOWED);
  m.set('torch._utils._rebuild_tensor_v2', rebuildTensor);
  m.set('torch._utils._rebuild_tensor', rebuildTensor);
  // torch ≥ 2.1 may write v3 (an explicit dtype after the hooks); the storage's type already gives it
  m.set('torch._utils._rebuild_tensor_v3', rebuildTensor);
  // nn.Parameter(data, requires_grad, hooks): the data is the tensor
  const param: AllowedCall = (args) => {
    if (!(args[0] instanceof TensorRef)) throw new Error('a Parameter must wrap a tensor');
    return args[0];
  };
  m.set('torch._utils._rebuild_parameter', param);
  m.set('torch._utils._rebuild_parameter_with_state', param);
  // Plain data that Lightning checkpoints carry beside the state dict (hyper-parameters, callback
  // scores): built as inert values, their classes' code never runs.
  for (const q of ['argparse.Namespace', 'pytorch_lightning.utilities.parsing.AttributeDict', 'lightning_fabric.utilities.data.AttributeDict', 'lightning.fabric.utilities.data.AttributeDict']) {
    m.set(q, () => new PyDict());
  }
  m.set('numpy.dtype', (args) => new NumpyDtype(String(args[0])));
  const scalar: AllowedCall = (args) => numpyScalar(args[0], args[1]);
  m.set('numpy.core.multiarray.scalar', scalar);
  m.set('numpy._core.multiarray.scalar', scalar);
  for (const [name, dtype] of Object.entries(STORAGE_DTYPES)) {
    // named in persistent ids, never called: calling one is refused like any other global
    m.set(`torch.${name}`, () => {
      throw new Error(`torch.${name} is a storage type, not something a state dict calls`);
    });
    STORAGE_TYPES.set(`torch.${name}`, new StorageType(name, dtype));
  }
  return m;
}
/** numpy.dtype('f8', …) as a pickle builds it; its BUILD state (byte order etc.) is accepted and unused. */
class NumpyDtype {
  constructor(readonly code: string) {}
  setState(): void {}
}

/** numpy.core.multiarray.scalar(dtype, raw bytes) → the number (floats and integers; others are refused). */
function numpyScalar(dtype: unknown, bytes: unknown): number | bigint | boolean {
  if (!(dtype instanceof NumpyDtype) || !(bytes instanceof Uint8Array)) throw new Error('numpy scalar needs a dtype and its bytes');
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (`${dtype.code}:${bytes.length}`) {
    case 'f8:8': return dv.getFloat64(0, true);
    case 'f4:4': return dv.getFloat32(0, true);
    case 'i8:8': return dv.getBigInt64(0, true);
    case 'i4:4': return dv.getInt32(0, true);
    case 'u8:8': return dv.getBigUint64(0, true);
    case 'b1:1': return bytes[0] !== 0;
    default: throw new Error(`numpy scalar of dtype ${dtype.code} is not supported`);
  }
}

const STORAGE_TYPES = new Map<string, StorageType>();
const TORCH_ALLOWED = torchAllowed();

/** torch's persistent id: ('storage', storage_type, key, location, numel[, view_metadata]). */
function persistentLoad(pid: unknown): StorageRef {
  const items = pid instanceof PyTuple ? pid.items : null;
  if (!items || items[0] !== 'storage' || items.length < 5) throw new PickleError('<pid>', `unsupported persistent id (expected a ('storage', …) tuple)`);
  const [, type, key, , size] = items;
  const q = (type as { allowedGlobal?: string } | null)?.allowedGlobal ?? (type instanceof PyGlobal ? type.qualified : String(type));
  const st = STORAGE_TYPES.get(q);
  if (!st) throw new PickleError('<pid>', `unsupported storage type ${q} (supported: ${Object.keys(STORAGE_DTYPES).join(', ')})`);
  if (typeof key !== 'string' && typeof key !== 'number') throw new PickleError('<pid>', 'storage key must be a string');
  if (items[5] !== undefined && items[5] !== null) throw new PickleError('<pid>', 'legacy storage views (view_metadata) are not supported');
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) throw new PickleError('<pid>', 'storage size must be a non-negative integer');
  return new StorageRef(String(key), st.dtype, size);
}

/** Reads bytes of one storage. */
type StorageReader = (ref: StorageRef) => Promise<Uint8Array>;

export interface TorchCheckpoint {
  file: string;
  format: 'zip' | 'legacy';
  /** the unpickled top-level object */
  root: unknown;
  readStorage: StorageReader;
  close(): Promise<void>;
}

const ZIP_MAGIC = [0x50, 0x4b, 0x03, 0x04];

function headBytes(file: string, n: number): Uint8Array {
  const fd = openSync(file, 'r');
  try {
    const b = new Uint8Array(n);
    const got = readSync(fd, b, 0, n, 0);
    return b.subarray(0, got);
  } finally {
    closeSync(fd);
  }
}

async function readAt(fh: FileHandle, position: number, length: number, file: string): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(out, done, length - done, position + done);
    if (bytesRead === 0) throw new TorchCheckpointError(file, `file ends at byte ${position + done} inside a storage (truncated?)`);
    done += bytesRead;
  }
  return out;
}

async function streamToBytes(stream: NodeJS.ReadableStream): Promise<Uint8Array> {
  const parts: Buffer[] = [];
  for await (const chunk of stream) parts.push(chunk as Buffer);
  return Buffer.concat(parts);
}

/** Opens a zip-format torch checkpoint: unpickles data.pkl and returns a storage reader. */
async function openZip(file: string): Promise<TorchCheckpoint> {
  const zip = await yauzl.openPromise(file, { lazyEntries: true, autoClose: false, decodeStrings: true });
  const entries = new Map<string, yauzl.Entry>();
  try {
    for await (const e of zip.eachEntry()) entries.set(e.fileName, e);
  } catch (e) {
    zip.close();
    throw new TorchCheckpointError(file, `not a readable zip (${(e as Error).message})`);
  }
  const pkl = [...entries.keys()].find((n) => n === 'data.pkl' || n.endsWith('/data.pkl'));
  if (!pkl) {
    zip.close();
    throw new TorchCheckpointError(file, `a zip without data.pkl is not a torch checkpoint (entries: ${[...entries.keys()].slice(0, 5).join(', ')}…)`);
  }
  const prefix = pkl.slice(0, pkl.length - 'data.pkl'.length);
  const fh = await open(file, 'r');
  const entryBytes = async (e: yauzl.Entry): Promise<Uint8Array> => {
    if (e.compressionMethod === 0) {
      const { fileDataStart } = await zip.readLocalFileHeaderPromise(e, { minimal: true });
      return readAt(fh, fileDataStart, e.uncompressedSize, file);
    }
    return streamToBytes(await zip.openReadStreamPromise(e));
  };
  let root: unknown;
  try {
    const source = `${file}:${pkl}`;
    root = unpickle(new BufferInput(await entryBytes(entries.get(pkl) as yauzl.Entry)), { allowed: TORCH_ALLOWED, persistentLoad, source });
  } catch (e) {
    zip.close();
    await fh.close();
    throw e;
  }
  const readStorage: StorageReader = async (ref) => {
    const e = entries.get(`${prefix}data/${ref.key}`);
    if (!e) throw new TorchCheckpointError(file, `storage ${ref.key} named by the pickle has no entry ${prefix}data/${ref.key}`);
    const need = ref.numel * DTYPE_BYTES[ref.dtype];
    if (e.uncompressedSize < need) throw new TorchCheckpointError(file, `storage ${ref.key} holds ${e.uncompressedSize} bytes, the pickle says ${need}`);
    return entryBytes(e);
  };
  const close = async (): Promise<void> => {
    zip.close();
    await fh.close();
  };
  return { file, format: 'zip', root, readStorage, close };
}

/** Buffered reads from a file descriptor, for the pickles at the head of a legacy file. */
class FdInput implements PickleInput {
  private buf = new Uint8Array(0);
  private bufStart = 0;
  private pos: number;
  constructor(
    private readonly fd: number,
    start: number,
  ) {
    this.pos = start;
  }
  get position(): number {
    return this.pos;
  }
  private fill(upTo: number): void {
    if (upTo <= this.bufStart + this.buf.length) return;
    const want = Math.max(upTo - this.pos, 1 << 20);
    const b = new Uint8Array(want);
    const got = readSync(this.fd, b, 0, want, this.pos);
    this.bufStart = this.pos;
    this.buf = b.subarray(0, got);
  }
  read(n: number): Uint8Array {
    if (this.pos < this.bufStart || this.pos + n > this.bufStart + this.buf.length) this.fill(this.pos + n);
    const out = this.buf.subarray(this.pos - this.bufStart, this.pos - this.bufStart + n).slice();
    this.pos += out.length;
    return out;
  }
  readLine(): Uint8Array {
    const parts: Uint8Array[] = [];
    for (;;) {
      if (this.pos >= this.bufStart + this.buf.length || this.pos < this.bufStart) this.fill(this.pos + 1);
      const rel = this.pos - this.bufStart;
      if (rel >= this.buf.length) break;
      const nl = this.buf.indexOf(0x0a, rel);
      const end = nl < 0 ? this.buf.length : nl + 1;
      parts.push(this.buf.slice(rel, end));
      this.pos += end - rel;
      if (nl >= 0) break;
    }
    return Buffer.concat(parts);
  }
}

const LEGACY_MAGIC = 0x1950a86a20f9469cfc6cn;

/** Opens a legacy (pre-zip) torch file: reads its pickles, then locates each storage record. */
async function openLegacy(file: string): Promise<TorchCheckpoint> {
  const fd = openSync(file, 'r');
  try {
    const size = fstatSync(fd).size;
    const input = new FdInput(fd, 0);
    const plain = { allowed: BASIC_ALLOWED, source: file };
    const magic = unpickle(input, plain);
    if (typeof magic !== 'bigint' || magic !== LEGACY_MAGIC) throw new TorchCheckpointError(file, 'neither a zip nor a legacy torch file (no torch magic number): not a PyTorch checkpoint');
    const protocol = unpickle(input, plain);
    if (protocol !== 1001) throw new TorchCheckpointError(file, `legacy torch protocol ${String(protocol)} (expected 1001)`);
    const sysInfo = unpickle(input, plain);
    if (sysInfo instanceof PyDict && sysInfo.get('little_endian') === false) throw new TorchCheckpointError(file, 'saved on a big-endian machine (not supported)');
    const root = unpickle(input, { allowed: TORCH_ALLOWED, persistentLoad, source: file });
    const keys = unpickle(input, plain);
    if (!Array.isArray(keys)) throw new TorchCheckpointError(file, 'storage key list missing after the pickle');
    // Each storage: an int64 element count, then its bytes; their byte lengths need their dtypes,
    // which only the pickle's tensors tell. Only the counts are read here.
    const dtypes = new Map<string, SourceDtype>();
    collectStorages(root, dtypes);
    const offsets = new Map<string, { start: number; count: number }>();
    const head = new Uint8Array(8);
    let pos = input.position;
    for (const k of keys) {
      const key = String(k);
      if (readSync(fd, head, 0, 8, pos) !== 8) throw new TorchCheckpointError(file, `file ends before storage ${key} (truncated?)`);
      const count = Number(new DataView(head.buffer).getBigInt64(0, true));
      const dtype = dtypes.get(key);
      if (!dtype) throw new TorchCheckpointError(file, `storage ${key} is listed but no tensor uses it (its element size is unknown)`);
      offsets.set(key, { start: pos + 8, count });
      pos += 8 + count * DTYPE_BYTES[dtype];
      if (pos > size) throw new TorchCheckpointError(file, `storage ${key} runs past the end of the file (truncated?)`);
    }
    closeSync(fd);
    const fh = await open(file, 'r');
    const readStorage: StorageReader = async (ref) => {
      const o = offsets.get(ref.key);
      if (!o) throw new TorchCheckpointError(file, `storage ${ref.key} named by the pickle is not in the file`);
      return readAt(fh, o.start, o.count * DTYPE_BYTES[ref.dtype], file);
    };
    return { file, format: 'legacy', root, readStorage, close: () => fh.close() };
  } catch (e) {
    try {
      closeSync(fd);
    } catch {
      /* already closed */
    }
    throw e;
  }
}

function collectStorages(v: unknown, out: Map<string, SourceDtype>, seen = new Set<unknown>()): void {
  if (v === null || typeof v !== 'object' || seen.has(v)) return;
  seen.add(v);
  if (v instanceof TensorRef) out.set(v.storage.key, v.storage.dtype);
  else if (v instanceof PyDict) for (const [k, x] of v.entries) (collectStorages(k, out, seen), collectStorages(x, out, seen));
  else if (v instanceof PyTuple) for (const x of v.items) collectStorages(x, out, seen);
  else if (Array.isArray(v)) for (const x of v) collectStorages(x, out, seen);
}

/** Opens a torch checkpoint of either format (the pickle is read; no storage yet). */
export async function openTorchCheckpoint(file: string): Promise<TorchCheckpoint> {
  const head = headBytes(file, 4);
  return ZIP_MAGIC.every((b, i) => head[i] === b) ? openZip(file) : openLegacy(file);
}

/** A tensor of a torch checkpoint as a lazily read `SourceTensor`. */
export function torchSourceTensor(ckpt: TorchCheckpoint, ref: TensorRef, name: string): SourceTensor {
  return {
    dtype: ref.storage.dtype,
    shape: ref.shape.slice(),
    read: async () => {
      const storage = await ckpt.readStorage(ref.storage);
      return gatherStrided(storage, DTYPE_BYTES[ref.storage.dtype], ref.offset, ref.shape, ref.stride, `${ckpt.file}: tensor "${name}"`).slice();
    },
  };
}

export interface TorchStateDict {
  /** name → tensor, in the file's order */
  tensors: Map<string, SourceTensor>;
  /** where in the file the state dict was: '' (the top level), 'state_dict', … */
  path: string;
  /** entries of the state dict that are not tensors (kept out; reported) */
  nonTensors: string[];
  /** the top-level keys beside the state dict (global_step, optimizer_states, …) */
  otherTopKeys: string[];
  /** the top-level object's scalar entries (global_step, epoch, …), for the report */
  scalars: Record<string, number | string>;
}

function isTensorDict(d: PyDict): boolean {
  let tensors = 0;
  for (const v of d.entries.values()) if (v instanceof TensorRef) tensors++;
  return tensors > 0 && tensors >= d.entries.size / 2;
}

/** Finds the state dict of an opened checkpoint (top level, or Lightning's `state_dict`, or `model`/`module`). */
export function torchStateDict(ckpt: TorchCheckpoint): TorchStateDict {
  const root = ckpt.root;
  if (!(root instanceof PyDict)) throw new TorchCheckpointError(ckpt.file, `the checkpoint holds ${root === null ? 'None' : Array.isArray(root) ? 'a list' : typeof root}, not a dict of tensors`);
  let dict: PyDict | null = null;
  let path = '';
  if (isTensorDict(root)) dict = root;
  else {
    for (const key of ['state_dict', 'model', 'module', 'model_state_dict']) {
      const v = root.get(key);
      if (v instanceof PyDict && isTensorDict(v)) {
        dict = v;
        path = key;
        break;
      }
    }
  }
  const topKeys = [...root.entries.keys()].map((k) => (typeof k === 'string' ? k : k instanceof PyGlobal ? k.qualified : String(k)));
  if (!dict) throw new TorchCheckpointError(ckpt.file, `no state dict found: the top level is a dict with keys ${topKeys.slice(0, 12).join(', ')} and none of them (state_dict, model, module) holds tensors`);
  const tensors = new Map<string, SourceTensor>();
  const nonTensors: string[] = [];
  for (const [k, v] of dict.entries) {
    const name = String(k);
    if (v instanceof TensorRef) tensors.set(name, torchSourceTensor(ckpt, v, name));
    else nonTensors.push(name);
  }
  const scalars: Record<string, number | string> = {};
  if (dict !== root) for (const [k, v] of root.entries) if (typeof k === 'string' && (typeof v === 'number' || typeof v === 'string')) scalars[k] = v;
  return { tensors, path, nonTensors, otherTopKeys: dict === root ? [] : topKeys.filter((k) => k !== path), scalars };
}

export { numel };
