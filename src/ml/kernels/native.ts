/**
 * The optional native kernels (`native/`, a C addon over OpenBLAS built at install time). They compute
 * matrix products and convolutions in place on the wasm heap with every core, which is where the wasm
 * backend spends most of a training step. Without them the wasm kernels of this folder do the work.
 *
 * `MINIDALLE_NATIVE`: unset or `auto` uses them when built; `off` never; `require` makes their absence
 * an error (CI sets it, so the native path is what the tests exercise there).
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The addon's functions; offsets and sizes are in floats, the heap is the wasm memory's ArrayBuffer. */
export interface NativeKernels {
  sgemm(heap: ArrayBuffer, transA: boolean, transB: boolean, m: number, n: number, k: number, batch: number, aOff: number, aStride: number, bOff: number, bStride: number, cOff: number): void;
  conv2d(heap: ArrayBuffer, xOff: number, fOff: number, yOff: number, ...geometry: ConvGeometry): void;
  conv2dBackpropInput(heap: ArrayBuffer, dxOff: number, fOff: number, dyOff: number, ...geometry: ConvGeometry): void;
  conv2dBackpropFilter(heap: ArrayBuffer, xOff: number, dfOff: number, dyOff: number, ...geometry: ConvGeometry): void;
  /** y[o, i] = Σ_m x[o, m, i]. */
  sum(heap: ArrayBuffer, xOff: number, yOff: number, outer: number, mid: number, inner: number): void;
  /** Per row: lse = log Σ exp(logits), loss = lse − logits[label]; labels int32. */
  sparseXent(heap: ArrayBuffer, logitsOff: number, labelsOff: number, lossOff: number, lseOff: number, rows: number, vocab: number): void;
  /** dx = dy · (softmax(logits) − onehot(label)), from the forward pass's lse. */
  sparseXentGrad(heap: ArrayBuffer, logitsOff: number, labelsOff: number, lseOff: number, dyOff: number, dxOff: number, rows: number, vocab: number): void;
  /** One AdamW step into new tensors: offsets of p, m, v, g, then of p', m', v'. */
  adamw(heap: ArrayBuffer, pOff: number, mOff: number, vOff: number, gOff: number, pOut: number, mOut: number, vOut: number, n: number, lr: number, b1: number, b2: number, c1: number, c2: number, eps: number, wd: number): void;
  /** dx = dy · d(x·σ(x))/dx. */
  swishGrad(heap: ArrayBuffer, xOff: number, dyOff: number, dxOff: number, n: number): void;
  /** dx = dy · (Φ(x) + x·φ(x)): the gradient of exact GELU. */
  geluGrad(heap: ArrayBuffer, xOff: number, dyOff: number, dxOff: number, n: number): void;
  /** y[i] = scale where (next xoshiro128** word of state >> 8) < threshold, else 0; state (4 words) advances in place. */
  dropoutMask(heap: ArrayBuffer, yOff: number, n: number, state: Uint32Array, threshold: number, scale: number): void;
  /** NHWC GroupNorm over [b, hw, c]; writes y and the per-(image, group) mean and 1/std. */
  groupNorm(heap: ArrayBuffer, xOff: number, wOff: number, bOff: number, yOff: number, meanOff: number, rstdOff: number, b: number, hw: number, c: number, groups: number, eps: number): void;
  groupNormGrad(heap: ArrayBuffer, xOff: number, wOff: number, meanOff: number, rstdOff: number, dyOff: number, dxOff: number, dwOff: number, dbOff: number, b: number, hw: number, c: number, groups: number): void;
  /** y = f(x), f by code: tanh 0, exp 1, erf 2, sigmoid 3, swish 4, exact GELU 5. */
  unary(heap: ArrayBuffer, op: number, xOff: number, yOff: number, n: number): void;
  /** y[i] = a[i] ∘ b[i mod bn], ∘ by code: add 0, sub 1, mul 2; bn divides n. */
  binary(heap: ArrayBuffer, op: number, aOff: number, bOff: number, yOff: number, n: number, bn: number): void;
  /**
   * One decoding step recorded by kernels/decode.ts's DecodeProgram: records of 16 numbers (op code, heap
   * offsets, sizes), run in order for the rows' tokens at `position`.
   */
  decodeProgram(heap: ArrayBuffer, program: Float64Array, tokens: Int32Array, position: number): void;
  /** Threads of the addon's pool, the calling thread included; jobs below minParallelWork run on one. */
  setThreads(n: number, minParallelWork?: number): void;
  info(): { blas: string; core: string; threads: number };
}

/** n, h, w, ci, oh, ow, co, fh, fw, sh, sw, padTop, padLeft, dh, dw */
export type ConvGeometry = [number, number, number, number, number, number, number, number, number, number, number, number, number, number, number];

export type NativeMode = 'auto' | 'off' | 'require';

export type NativeStatus = { available: true; kernels: NativeKernels; blas: string; core: string } | { available: false; reason: string };

export class NativeKernelsError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'NativeKernelsError';
  }
}

export function nativeMode(env: NodeJS.ProcessEnv = process.env): NativeMode {
  const v = env['MINIDALLE_NATIVE'];
  if (v === undefined || v === '' || v === 'auto') return 'auto';
  if (v === 'off' || v === 'require') return v;
  throw new NativeKernelsError(`MINIDALLE_NATIVE is '${v}'; expected auto, off or require`);
}

/** The package root: the nearest ancestor holding native/binding.gyp (src/ and dist/src/ both work). */
function addonPath(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'native', 'binding.gyp'))) return join(dir, 'native', 'build', 'Release', 'minidalle_native.node');
    const parent = dirname(dir);
    if (parent === dir) return join('native', 'build', 'Release', 'minidalle_native.node');
    dir = parent;
  }
}

const BUILD_HINT = 'build them with `npm run build:native` (needs g++ and libopenblas-dev: apt-get install -y g++ libopenblas-dev)';

/** Every function of the addon, checked at load. */
const KERNEL_FUNCTIONS: ReadonlyArray<keyof NativeKernels> = ['sgemm', 'sum', 'sparseXent', 'sparseXentGrad', 'adamw', 'swishGrad', 'geluGrad', 'dropoutMask', 'groupNorm', 'groupNormGrad', 'unary', 'binary', 'decodeProgram', 'setThreads', 'info'];

let loaded: NativeStatus | null = null;

/** Loads the addon once; never throws (the caller decides what absence means). */
export function loadNativeKernels(): NativeStatus {
  if (loaded !== null) return loaded;
  const path = addonPath();
  if (!existsSync(path)) {
    loaded = { available: false, reason: `not built (${path} is missing); ${BUILD_HINT}` };
    return loaded;
  }
  try {
    const kernels = createRequire(import.meta.url)(path) as NativeKernels;
    // an addon built from older sources lacks the newer kernels: refuse it whole rather than fail mid-run
    const missing = KERNEL_FUNCTIONS.filter((name) => typeof kernels[name] !== 'function');
    if (missing.length) {
      loaded = { available: false, reason: `${path} is out of date (no ${missing.join(', ')}); ${BUILD_HINT}` };
      return loaded;
    }
    const { blas, core } = kernels.info();
    loaded = { available: true, kernels, blas, core };
  } catch (err) {
    loaded = { available: false, reason: `${path} failed to load: ${(err as Error).message}; ${BUILD_HINT}` };
  }
  return loaded;
}

let active: NativeKernels | null = null;

/** The kernels our wasm kernels should call now, or null to use the wasm paths. */
export function nativeKernels(): NativeKernels | null {
  return active;
}

/**
 * Switches the native paths on (with `threads` compute threads) or off; benchmarks and tests compare both.
 * `minParallelWork` (multiply-adds or elements) is the size below which a job runs on one thread; tests
 * set 1 so that tiny cases go through every split.
 */
export function useNativeKernels(enabled: boolean, threads?: number, minParallelWork?: number): void {
  if (!enabled) {
    active = null;
    return;
  }
  const status = loadNativeKernels();
  if (!status.available) throw new NativeKernelsError(`minidalle native kernels are unavailable: ${status.reason}`);
  if (threads !== undefined) status.kernels.setThreads(threads, minParallelWork);
  active = status.kernels;
}
