/**
 * Typed access to the parts of `BackendWasm` (tfjs-backend-wasm 4.22.0) our kernels use, and a small
 * context that composes stock wasm kernels at the TensorInfo level.
 *
 * Why at the TensorInfo level: a kernel runs inside the engine, so it must not call tf ops (they would
 * record tape nodes and track tensors in the caller's scope). Stock tfjs kernels compose the same way:
 * they call other kernels' `kernelFunc` directly and free intermediates with `backend.disposeData`.
 */
import * as tf from '@tensorflow/tfjs-core';

/** The `BackendWasm` members used here; names and semantics as in tfjs-backend-wasm 4.22.0 dist/backend_wasm.js. */
export interface WasmBackendInternals {
  /** Per dataId: heap offset (bytes), shape, dtype, refCount. */
  dataIdMap: { get(dataId: tf.DataId): { id: number; memoryOffset: number } | undefined };
  /** Allocates `prod(shape) * bytesPerElement` bytes on the wasm heap (uninitialised). */
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  /** A live view of a tensor's bytes; invalid after any allocation that grows the heap. */
  typedArrayFromHeap(info: tf.TensorInfo): Float32Array | Int32Array | Uint8Array;
  disposeData(dataId: tf.DataId, force?: boolean): boolean;
  wasm: { HEAPF32: Float32Array };
}

export class WasmKernelError extends Error {
  constructor(kernel: string, detail: string) {
    super(`minidalle wasm kernel ${kernel}: ${detail}`);
    this.name = 'WasmKernelError';
  }
}

/** Narrow the engine's backend object to the members we rely on, failing loudly if tfjs changed them. */
export function asWasmBackend(backend: unknown): WasmBackendInternals {
  const b = backend as Partial<WasmBackendInternals> | null;
  if (
    b == null ||
    typeof b.makeOutput !== 'function' ||
    typeof b.typedArrayFromHeap !== 'function' ||
    typeof b.disposeData !== 'function' ||
    b.dataIdMap == null ||
    b.wasm == null
  ) {
    throw new WasmKernelError('backend', 'the wasm backend does not expose makeOutput/typedArrayFromHeap/dataIdMap; tfjs-backend-wasm must be exactly 4.22.0');
  }
  return b as WasmBackendInternals;
}

/** Where a tensor's data starts on the heap, as a float32 index. */
export function floatOffset(backend: WasmBackendInternals, info: tf.TensorInfo, kernel: string): number {
  const entry = backend.dataIdMap.get(info.dataId);
  if (entry == null) throw new WasmKernelError(kernel, 'tensor data is not on the wasm heap');
  return entry.memoryOffset / 4;
}

/** The heap's current buffer, for native kernels. Take it after the kernel's last allocation (growth replaces it). */
export function heapBuffer(backend: WasmBackendInternals): ArrayBuffer {
  return backend.wasm.HEAPF32.buffer as ArrayBuffer;
}

/** Float32 view of a tensor on the heap. Take it after the last allocation of the kernel. */
export function f32(backend: WasmBackendInternals, info: tf.TensorInfo): Float32Array {
  const v = backend.typedArrayFromHeap(info);
  if (!(v instanceof Float32Array)) throw new WasmKernelError('heap', `expected float32 data, got ${info.dtype}`);
  return v;
}

type StockKernel = (args: { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap }) => tf.TensorInfo;

/**
 * The stock wasm kernel functions, captured once when our kernels are installed: some of ours replace
 * stock ones (BatchMatMul, Conv2DBackpropInput), so they must be looked up before we register.
 */
const stock = new Map<string, StockKernel>();

export function captureStockKernels(names: readonly string[]): void {
  for (const name of names) {
    if (stock.has(name)) continue;
    const cfg = tf.getKernel(name, 'wasm');
    if (cfg == null) throw new WasmKernelError(name, 'the stock wasm kernel is not registered (is @tensorflow/tfjs-backend-wasm 4.22.0 loaded?)');
    stock.set(name, cfg.kernelFunc as unknown as StockKernel);
  }
}

/** Calls stock kernels and remembers intermediates so one `dispose()` frees them (outputs are kept). */
export class KernelScope {
  private readonly temps: tf.TensorInfo[] = [];
  constructor(readonly backend: WasmBackendInternals) {}

  run(name: string, inputs: tf.NamedTensorInfoMap, attrs: tf.NamedAttrMap = {}): tf.TensorInfo {
    const fn = stock.get(name);
    if (fn == null) throw new WasmKernelError(name, 'stock kernel not captured; call initCompute() first');
    const out = fn({ inputs, backend: this.backend, attrs });
    this.temps.push(out);
    return out;
  }

  /** A fresh heap tensor owned by this scope (freed on dispose unless kept). */
  alloc(shape: number[], dtype: tf.DataType = 'float32'): tf.TensorInfo {
    const out = this.backend.makeOutput(shape, dtype);
    this.temps.push(out);
    return out;
  }

  reshape(x: tf.TensorInfo, shape: number[]): tf.TensorInfo {
    return this.run('Reshape', { x }, { shape });
  }

  transpose(x: tf.TensorInfo, perm: number[]): tf.TensorInfo {
    return this.run('Transpose', { x }, { perm });
  }

  slice(x: tf.TensorInfo, begin: number[], size: number[]): tf.TensorInfo {
    return this.run('Slice', { x }, { begin, size });
  }

  /** Removes `info` from the temporaries so the caller can return it. */
  keep(info: tf.TensorInfo): tf.TensorInfo {
    const i = this.temps.lastIndexOf(info);
    if (i >= 0) this.temps.splice(i, 1);
    return info;
  }

  /** Frees one intermediate now (loops that would otherwise hold every iteration's temporaries). */
  release(info: tf.TensorInfo): void {
    this.keep(info);
    this.backend.disposeData(info.dataId);
  }

  dispose(): void {
    for (const t of this.temps) this.backend.disposeData(t.dataId);
    this.temps.length = 0;
  }
}

/** Runs `body` with a scope and frees every intermediate whatever happens; the returned info is kept. */
export function withScope(backend: unknown, body: (s: KernelScope) => tf.TensorInfo): tf.TensorInfo {
  const scope = new KernelScope(asWasmBackend(backend));
  try {
    return scope.keep(body(scope));
  } finally {
    scope.dispose();
  }
}
