/**
 * Compute engine selection. Everything in minidalle imports tf from here, so there is one tfjs-core
 * instance and one place that decides the backend:
 *   tfjs-node (if installed) → wasm + our training kernels → cpu (pure JS, tiny checks only).
 * `MINIDALLE_BACKEND` or `options.backend` forces one; a forced backend that cannot load is an error.
 * On wasm, matmuls and convs go to the native OpenBLAS kernels when they are built (kernels/native.ts;
 * `MINIDALLE_NATIVE=auto|off|require`), on `MINIDALLE_THREADS` threads (default: every core).
 */
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { registerCoreGradients } from './kernels/gradients.js';
import { installCpuKernels, installGradientFixes, installWasmKernels } from './kernels/index.js';
import { onThreadShare } from '../core/threads.js';
import { loadNativeKernels, nativeMode, useNativeKernels } from './kernels/native.js';

export { tf };
export { sparseSoftmaxCrossEntropy, stopGradient, straightThrough, upsampleNearest2x } from './kernels/index.js';

export type BackendName = 'node' | 'wasm' | 'cpu';

export interface ComputeOptions {
  /** Force a backend instead of the best available one. Default: env MINIDALLE_BACKEND, else auto. */
  backend?: BackendName;
  /**
   * Threads of the native kernels. Default: env MINIDALLE_THREADS, else every core. The wasm module
   * itself always runs on one: tfjs' Node build of it never starts threads, and a patched threaded
   * build measured only 1.1–1.2× end to end and kept the process from exiting.
   */
  threads?: number;
  /** Compare our wasm kernels with the cpu backend at start-up (< 1 s). Default true. */
  selfCheck?: boolean;
}

/** The native kernels' state on the wasm backend: in use (which BLAS, how many threads), or why not. */
export type NativeInfo = { active: true; blas: string; core: string; threads: number } | { active: false; reason: string };

export interface ComputeInfo {
  backend: BackendName;
  /** Threads doing the heavy ops: the native kernels' threads when active, else 1. */
  threads: number;
  /** Only on wasm. */
  native?: NativeInfo;
  /** tfjs-core version. */
  version: string;
  /** Names of the kernels minidalle registered on this backend. */
  kernels: string[];
}

export class ComputeBackendError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ComputeBackendError';
  }
}

const BACKENDS: readonly BackendName[] = ['node', 'wasm', 'cpu'];
const TF_NAME: Record<BackendName, string> = { node: 'tensorflow', wasm: 'wasm', cpu: 'cpu' };

let current: ComputeInfo | null = null;
let pending: Promise<ComputeInfo> | null = null;

function isModuleNotFound(err: unknown, name: string): boolean {
  const e = err as { code?: string; message?: string } | null;
  return (e?.code === 'ERR_MODULE_NOT_FOUND' || e?.code === 'MODULE_NOT_FOUND') && (e.message ?? '').includes(name);
}

/** Imports tfjs-node; false when it is simply not installed, any other failure is reported. */
async function loadNode(): Promise<boolean> {
  const name = '@tensorflow/tfjs-node';
  try {
    // A variable specifier keeps TypeScript from requiring the (optional, usually absent) types.
    await import(name);
    return true;
  } catch (err) {
    if (isModuleNotFound(err, name)) return false;
    throw new ComputeBackendError(`${name} is installed but failed to load: ${(err as Error).message}. Reinstall it or set MINIDALLE_BACKEND=wasm.`, { cause: err });
  }
}

async function loadWasm(): Promise<void> {
  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  if (tf.findBackendFactory('wasm') == null) throw new ComputeBackendError('@tensorflow/tfjs-backend-wasm loaded but did not register the wasm backend');
  // The .wasm binaries ship in the package; point tfjs at them on disk so nothing is fetched.
  const require = createRequire(import.meta.url);
  const dist = dirname(require.resolve('@tensorflow/tfjs-backend-wasm'));
  wasm.setWasmPaths(join(dist, '/'));
}

async function loadCpu(): Promise<void> {
  await import('@tensorflow/tfjs-backend-cpu');
  // The cpu backend greets its first use in Node with advice to install tfjs-node; minidalle already chose the
  // engine (and says which at stage start), so the advice would only be noise in every stage's output.
  const cpu = tf.findBackend('cpu') as unknown as { firstUse?: boolean } | null;
  if (cpu && 'firstUse' in cpu) cpu.firstUse = false;
}

async function activate(name: BackendName): Promise<boolean> {
  if (name === 'node') {
    if (!(await loadNode())) return false;
  } else if (name === 'wasm') {
    await loadWasm();
  } else {
    await loadCpu();
  }
  const ok = await tf.setBackend(TF_NAME[name]);
  if (!ok) throw new ComputeBackendError(`tfjs could not initialise the ${name} backend (tf.setBackend('${TF_NAME[name]}') returned false)`);
  await tf.ready();
  return true;
}

function requested(options: ComputeOptions): BackendName | undefined {
  const fromEnv = process.env['MINIDALLE_BACKEND'];
  const choice = options.backend ?? (fromEnv === undefined || fromEnv === '' ? undefined : fromEnv);
  if (choice === undefined) return undefined;
  if (!(BACKENDS as readonly string[]).includes(choice)) {
    const where = options.backend !== undefined ? 'options.backend' : 'MINIDALLE_BACKEND';
    throw new ComputeBackendError(`${where} is '${choice}'; expected one of ${BACKENDS.join(', ')}`);
  }
  return choice as BackendName;
}

/** The native kernels' pool holds at most this many threads (MAX_THREADS in native/minidalle_native.c). */
const MAX_THREADS = 64;

function requestedThreads(options: ComputeOptions): number {
  const fromEnv = process.env['MINIDALLE_THREADS'];
  if (options.threads === undefined && (fromEnv === undefined || fromEnv === '')) return Math.min(availableParallelism(), MAX_THREADS);
  const n = options.threads ?? Number(fromEnv);
  if (!Number.isInteger(n) || n < 1 || n > MAX_THREADS) {
    throw new ComputeBackendError(`${options.threads !== undefined ? 'options.threads' : 'MINIDALLE_THREADS'} is '${options.threads ?? fromEnv}'; expected a whole number from 1 to ${MAX_THREADS}`);
  }
  return n;
}

/** On wasm: switch the native kernels on when built (and wanted); absence is an error only under MINIDALLE_NATIVE=require. */
function setUpNative(threads: number): NativeInfo {
  const mode = nativeMode();
  if (mode === 'off') {
    useNativeKernels(false);
    return { active: false, reason: 'MINIDALLE_NATIVE=off' };
  }
  const status = loadNativeKernels();
  if (!status.available) {
    if (mode === 'require') throw new ComputeBackendError(`MINIDALLE_NATIVE=require, but the native kernels are unavailable: ${status.reason}`);
    return { active: false, reason: status.reason };
  }
  useNativeKernels(true, threads);
  return { active: true, blas: status.blas, core: status.core, threads };
}

/** One line for logs: "wasm + native OpenBLAS 0.3.21 (Zen, 2 threads)" or "wasm, 1 thread (native kernels: …)". */
export function describeCompute(info: ComputeInfo): string {
  if (info.native?.active) return `${info.backend} + native ${info.native.blas.split(' ').slice(0, 2).join(' ')} (${info.native.core}, ${info.native.threads} thread${info.native.threads === 1 ? '' : 's'})`;
  const base = `${info.backend}, ${info.threads} thread${info.threads === 1 ? '' : 's'}`;
  return info.native ? `${base} (native kernels not in use: ${info.native.reason})` : base;
}

async function init(options: ComputeOptions): Promise<ComputeInfo> {
  const threads = requestedThreads(options);
  const forced = requested(options);
  let backend: BackendName | undefined;
  if (forced !== undefined) {
    if (!(await activate(forced))) {
      throw new ComputeBackendError(`backend '${forced}' was requested but @tensorflow/tfjs-node is not installed (it needs libtensorflow, downloaded at install time); unset MINIDALLE_BACKEND or choose wasm`);
    }
    backend = forced;
  } else {
    for (const name of BACKENDS) {
      if (name === 'node' && !(await loadNode())) continue;
      await activate(name);
      backend = name;
      break;
    }
  }
  if (backend === undefined) throw new ComputeBackendError('no tfjs backend could be initialised');
  await registerCoreGradients();
  installGradientFixes();
  // The cpu backend is loaded in every case: it is the self-check's reference and the fallback for tiny checks.
  await loadCpu();
  const cpuKernels = installCpuKernels();
  const kernels = backend === 'wasm' ? installWasmKernels() : backend === 'cpu' ? cpuKernels : [];
  const native = backend === 'wasm' ? setUpNative(threads) : undefined;
  if (backend === 'wasm' && options.selfCheck !== false) {
    const { selfCheck } = await import('./selfcheck.js');
    await selfCheck();
  }
  const info: ComputeInfo = { backend, threads: native?.active ? native.threads : 1, version: tf.version_core, kernels };
  if (native) info.native = native;
  // an orchestrator that runs stages side by side hands out shares of the cores (core/threads.ts)
  if (native?.active && options.threads === undefined) {
    onThreadShare((n) => {
      useNativeKernels(true, n);
      native.threads = n;
      info.threads = n;
    });
  }
  return info;
}

/**
 * Selects and initialises the compute backend. Idempotent: later calls return the first result, and
 * a later call that forces a different backend is an error rather than a silent switch.
 */
export async function initCompute(options: ComputeOptions = {}): Promise<ComputeInfo> {
  if (current !== null) {
    const want = requested(options);
    if (want !== undefined && want !== current.backend) {
      throw new ComputeBackendError(`compute is already initialised on '${current.backend}'; cannot switch to '${want}' in the same process`);
    }
    return current;
  }
  pending ??= init(options).then(
    (info) => (current = info),
    (err: unknown) => {
      pending = null;
      throw err;
    },
  );
  return pending;
}

/** The info of the initialised backend, or null before initCompute. */
export function computeInfo(): ComputeInfo | null {
  return current;
}
