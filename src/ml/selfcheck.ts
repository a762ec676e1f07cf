/**
 * Start-up check of our wasm kernels against the pure-JS cpu backend on small random inputs, so a
 * tfjs upgrade or a heap-handling mistake fails loudly instead of training on wrong gradients.
 */
import * as tf from '@tensorflow/tfjs-core';
import { Rng } from './rng.js';

export class KernelSelfCheckError extends Error {
  constructor(
    readonly kernel: string,
    readonly caseName: string,
    readonly maxRelativeError: number,
  ) {
    super(
      `minidalle kernel self-check failed: ${kernel} (${caseName}) differs from the cpu backend by relative error ${maxRelativeError.toExponential(2)} (limit ${SELF_CHECK_TOLERANCE}). ` +
        'Set MINIDALLE_BACKEND=cpu to train without our wasm kernels, and report the tfjs versions.',
    );
    this.name = 'KernelSelfCheckError';
  }
}

export const SELF_CHECK_TOLERANCE = 1e-4;

/** Deterministic values in [-1, 1) from the project's seeded RNG: the check must be reproducible. */
export function randomValues(size: number, seed: number): Float32Array {
  return new Rng(seed).fillUniform(new Float32Array(size), -1, 1);
}

export function randomTensor(shape: number[], seed: number): tf.Tensor {
  return tf.tensor(randomValues(tf.util.sizeFromShape(shape), seed), shape);
}

/** max |a − b| / max |b| (b is the reference); shapes must match exactly. */
export function relativeError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) return Number.POSITIVE_INFINITY;
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < expected.length; i++) {
    const e = expected[i] as number;
    const d = Math.abs((actual[i] as number) - e);
    if (!(d <= diff)) diff = d; // also catches NaN
    scale = Math.max(scale, Math.abs(e));
  }
  return diff / Math.max(scale, 1e-6);
}

/**
 * Runs `fn` with `backend` as the active tfjs backend and returns its outputs as plain arrays.
 * Inputs must be created inside `fn` so that they live on that backend.
 */
export async function runOn(backend: string, fn: () => tf.Tensor | tf.Tensor[]): Promise<{ shape: number[]; values: Float32Array }[]> {
  const previous = tf.getBackend();
  if (!(await tf.setBackend(backend))) throw new Error(`tfjs backend '${backend}' is not available`);
  try {
    const outs = tf.tidy(fn);
    const list = Array.isArray(outs) ? outs : [outs];
    const result = list.map((t) => ({ shape: t.shape.slice(), values: Float32Array.from(t.dataSync()) }));
    tf.dispose(list);
    return result;
  } finally {
    await tf.setBackend(previous);
  }
}

export interface KernelCase {
  kernel: string;
  name: string;
  run: () => tf.Tensor | tf.Tensor[];
}

function conv(x: number[], f: number[], strides: number, pad: 'same' | 'valid' | tf.backend_util.ExplicitPadding, seed: number): KernelCase[] {
  const info = tf.backend_util.computeConv2DInfo(x as [number, number, number, number], f as [number, number, number, number], strides, 1, pad, 'floor');
  const name = `x ${x.join('×')} filter ${f.join('×')} stride ${strides} pad ${JSON.stringify(pad)}`;
  return [
    {
      kernel: 'Conv2D',
      name,
      run: () => tf.conv2d(randomTensor(x, seed + 4) as tf.Tensor4D, randomTensor(f, seed + 5) as tf.Tensor4D, strides, pad),
    },
    {
      kernel: 'Conv2DBackpropFilter',
      name,
      run: () =>
        tf.engine().runKernel('Conv2DBackpropFilter', { x: randomTensor(x, seed), dy: randomTensor(info.outShape, seed + 1) }, { strides, pad, dataFormat: 'NHWC', dimRoundingMode: 'floor', filterShape: f }) as tf.Tensor,
    },
    {
      kernel: 'Conv2DBackpropInput',
      name,
      run: () =>
        tf.engine().runKernel('Conv2DBackpropInput', { dy: randomTensor(info.outShape, seed + 2), filter: randomTensor(f, seed + 3) }, { strides, pad, dataFormat: 'NHWC', dimRoundingMode: 'floor', inputShape: x }) as tf.Tensor,
    },
  ];
}

function matmul(a: number[], b: number[], ta: boolean, tb: boolean, seed: number): KernelCase {
  return {
    kernel: 'BatchMatMul',
    name: `a ${a.join('×')}${ta ? 'ᵀ' : ''} b ${b.join('×')}${tb ? 'ᵀ' : ''}`,
    run: () => tf.matMul(randomTensor(a, seed), randomTensor(b, seed + 1), ta, tb),
  };
}

/** Small cases touching every code path of every kernel we register. */
export function selfCheckCases(): KernelCase[] {
  return [
    ...conv([2, 7, 6, 3], [3, 3, 3, 4], 1, 'same', 11),
    ...conv([2, 8, 8, 3], [4, 4, 3, 5], 2, [[0, 0], [1, 1], [1, 1], [0, 0]], 21),
    ...conv([1, 9, 7, 2], [3, 3, 2, 3], 2, 'valid', 31),
    ...conv([2, 5, 4, 6], [1, 1, 6, 3], 1, 'valid', 61), // pointwise: no im2col in the native path
    ...conv([1, 6, 6, 4], [1, 1, 4, 2], 2, 'valid', 71),
    {
      kernel: 'UnsortedSegmentSum',
      name: 'x 6×5, 4 segments, one id out of range',
      run: () => tf.unsortedSegmentSum(randomTensor([6, 5], 41), tf.tensor1d([0, 3, 3, 1, 0, 7], 'int32'), 4),
    },
    { kernel: 'GatherV2', name: 'rows of 20 from 9, repeated ids', run: () => tf.gather(randomTensor([9, 20], 42), tf.tensor2d([[8, 0], [3, 3]], [2, 2], 'int32')) },
    { kernel: 'GatherV2', name: 'axis 1, rows of 2', run: () => tf.gather(randomTensor([3, 5, 2], 43), tf.tensor1d([4, 1, 1], 'int32'), 1) },
    matmul([5, 7], [7, 3], false, false, 51),
    matmul([7, 5], [3, 7], true, true, 52),
    matmul([3, 4, 6], [6, 5], false, false, 53),
    matmul([2, 3, 6, 4], [2, 3, 5, 6], true, true, 54),
    matmul([1, 4, 6], [3, 6, 5], false, false, 55),
    matmul([3, 6, 4], [6, 5], true, false, 56),
  ];
}

export interface SelfCheckResult {
  kernel: string;
  name: string;
  relativeError: number;
}

/** Compares each case on wasm and cpu; throws KernelSelfCheckError on the first disagreement. */
export async function selfCheck(cases: KernelCase[] = selfCheckCases()): Promise<SelfCheckResult[]> {
  await import('@tensorflow/tfjs-backend-cpu');
  const results: SelfCheckResult[] = [];
  for (const c of cases) {
    const [got, want] = [await runOn('wasm', c.run), await runOn('cpu', c.run)];
    let err = got.length === want.length ? 0 : Number.POSITIVE_INFINITY;
    for (let i = 0; i < Math.min(got.length, want.length); i++) {
      const g = got[i]!;
      const w = want[i]!;
      const e = tf.util.arraysEqual(g.shape, w.shape) ? relativeError(g.values, w.values) : Number.POSITIVE_INFINITY;
      err = Math.max(err, e);
    }
    if (!(err <= SELF_CHECK_TOLERANCE)) throw new KernelSelfCheckError(c.kernel, c.name, err);
    results.push({ kernel: c.kernel, name: c.name, relativeError: err });
  }
  return results;
}
