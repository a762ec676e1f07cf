/**
 * Compute engine selection. Everything in minidalle imports tf from here, so there is one tfjs-core
 * instance and one place that decides the backend:
 *   tfjs-node (if installed) → wasm + our training kernels → cpu (pure JS, tiny checks only).
 * `MINIDALLE_BACKEND` or `options.backend` forces one; a forced backend that cannot load is an error.
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { registerCoreGradients } from './kernels/gradients.js';
import { installCpuKernels, installGradientFixes, installWasmKernels } from './kernels/index.js';

export { tf };
export { sparseSoftmaxCrossEntropy, stopGradient, straightThrough, upsampleNearest2x } from './kernels/index.js';

export type BackendName = 'node' | 'wasm' | 'cpu';

export interface ComputeOptions {
  /** Force a backend instead of the best available one. Default: env MINIDALLE_BACKEND, else auto. */
  backend?: BackendName;
  /**
   * wasm threads. Only 1: tfjs' Node build of the wasm backend never starts threads, and a patched
   * threaded build measured only 1.1–1.2× end to end and kept the process from exiting.
   */
  threads?: number;
  /** Compare our wasm kernels with the cpu backend at start-up (< 1 s). Default true. */
  selfCheck?: boolean;
}

export interface ComputeInfo {
  backend: BackendName;
  threads: number;
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

async function loadWasm(threads: number): Promise<void> {
  if (threads !== 1) {
    throw new ComputeBackendError(`threads: ${threads} is not supported by the wasm backend here (tfjs runs wasm single-threaded in Node); use threads: 1`);
  }
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

async function activate(name: BackendName, threads: number): Promise<boolean> {
  if (name === 'node') {
    if (!(await loadNode())) return false;
  } else if (name === 'wasm') {
    await loadWasm(threads);
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

async function init(options: ComputeOptions): Promise<ComputeInfo> {
  const threads = options.threads ?? 1;
  const forced = requested(options);
  let backend: BackendName | undefined;
  if (forced !== undefined) {
    if (!(await activate(forced, threads))) {
      throw new ComputeBackendError(`backend '${forced}' was requested but @tensorflow/tfjs-node is not installed (it needs libtensorflow, downloaded at install time); unset MINIDALLE_BACKEND or choose wasm`);
    }
    backend = forced;
  } else {
    for (const name of BACKENDS) {
      if (name === 'node' && !(await loadNode())) continue;
      await activate(name, threads);
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
  if (backend === 'wasm' && options.selfCheck !== false) {
    const { selfCheck } = await import('./selfcheck.js');
    await selfCheck();
  }
  return { backend, threads: backend === 'wasm' ? threads : 1, version: tf.version_core, kernels };
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
