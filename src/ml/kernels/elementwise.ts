/**
 * Wasm kernels for memory-bound ops that dominate a transformer step once matmuls are fast:
 * - Identity and same-dtype Cast alias their input (a reference count) instead of copying it, as the
 *   cpu backend does. They run in every gradient of Mul (`cast(b)`) and of Cast itself; the stock wasm
 *   kernels copy, which cost a third of a second per BART step.
 * - Sum over contiguous axes reads the input in place through the native kernels; the stock kernel
 *   transposes whenever the reduced axes are not innermost (every bias gradient). Other axis sets, and
 *   all of it without the native kernels, go to the stock kernel.
 * - Tanh, Exp, Erf and Sigmoid (GELU, softmax, swish) through the native kernels' vectorised loops;
 *   the stock ones are scalar (~13 ns per element for tanh).
 * - Add, Sub and Multiply of float32 tensors of one shape, or with one operand broadcast along the other's
 *   leading axes (a bias), through the native kernels' threaded loops; the stock kernels run on one
 *   thread. Other broadcasts go to the stock kernels.
 */
import * as tf from '@tensorflow/tfjs-core';
import { nativeKernels } from './native.js';
import { asWasmBackend, floatOffset, heapBuffer, withScope } from './wasm-heap.js';

type KernelArgs = { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap };

function alias(backend: unknown, x: tf.TensorInfo): tf.TensorInfo {
  (backend as { incRef(dataId: tf.DataId): void }).incRef(x.dataId);
  return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
}

function identity(args: KernelArgs): tf.TensorInfo {
  const x = args.inputs['x'] as tf.TensorInfo;
  if (x.dtype === 'string') return withScope(args.backend, (s) => s.run('Identity', { x }));
  return alias(args.backend, x);
}

function cast(args: KernelArgs): tf.TensorInfo {
  const x = args.inputs['x'] as tf.TensorInfo;
  const { dtype } = args.attrs as { dtype: tf.DataType };
  if (dtype === x.dtype && dtype !== 'string') return alias(args.backend, x);
  return withScope(args.backend, (s) => s.run('Cast', { x }, args.attrs));
}

/** [outer, mid, inner] of `shape` when `axes` are contiguous (so the sum is over `mid`), else null. */
export function contiguousReduction(shape: number[], axes: number[]): [number, number, number] | null {
  const sorted = [...axes].sort((a, b) => a - b);
  for (let i = 1; i < sorted.length; i++) if (sorted[i] !== (sorted[i - 1] as number) + 1) return null;
  const first = sorted[0] as number;
  const last = sorted[sorted.length - 1] as number;
  const size = (from: number, to: number) => tf.util.sizeFromShape(shape.slice(from, to));
  return [size(0, first), size(first, last + 1), size(last + 1, shape.length)];
}

function sum(args: KernelArgs): tf.TensorInfo {
  const x = args.inputs['x'] as tf.TensorInfo;
  const { axis, keepDims } = args.attrs as { axis: number | number[]; keepDims: boolean };
  const native = nativeKernels();
  const axes = tf.util.parseAxisParam(axis, x.shape);
  const dims = axes.length > 0 && x.dtype === 'float32' ? contiguousReduction(x.shape, axes) : null;
  if (native === null || dims === null || tf.util.sizeFromShape(x.shape) === 0) {
    return withScope(args.backend, (s) => s.run('Sum', { x }, args.attrs));
  }
  const backend = asWasmBackend(args.backend);
  const [outShape] = tf.backend_util.computeOutAndReduceShapes(x.shape, axes);
  const shape = keepDims ? tf.backend_util.expandShapeToKeepDim(outShape, axes) : outShape;
  const out = backend.makeOutput(shape, 'float32');
  native.sum(heapBuffer(backend), floatOffset(backend, x, 'Sum'), floatOffset(backend, out, 'Sum'), ...dims);
  return out;
}

export const identityConfig: tf.KernelConfig = { kernelName: tf.Identity, backendName: 'wasm', kernelFunc: identity as unknown as tf.KernelFunc };
export const castConfig: tf.KernelConfig = { kernelName: tf.Cast, backendName: 'wasm', kernelFunc: cast as unknown as tf.KernelFunc };
export const sumConfig: tf.KernelConfig = { kernelName: tf.Sum, backendName: 'wasm', kernelFunc: sum as unknown as tf.KernelFunc };

const UNARY_OPS = { Tanh: 0, Exp: 1, Erf: 2, Sigmoid: 3 } as const;

function unaryConfig(name: keyof typeof UNARY_OPS): tf.KernelConfig {
  const op = UNARY_OPS[name];
  const kernelFunc = (args: KernelArgs): tf.TensorInfo => {
    const x = args.inputs['x'] as tf.TensorInfo;
    const native = nativeKernels();
    const n = tf.util.sizeFromShape(x.shape);
    if (native === null || x.dtype !== 'float32' || n === 0) return withScope(args.backend, (s) => s.run(name, { x }, args.attrs));
    const backend = asWasmBackend(args.backend);
    const out = backend.makeOutput(x.shape, 'float32');
    native.unary(heapBuffer(backend), op, floatOffset(backend, x, name), floatOffset(backend, out, name), n);
    return out;
  };
  return { kernelName: name, backendName: 'wasm', kernelFunc: kernelFunc as unknown as tf.KernelFunc };
}

export const UNARY_KERNELS = Object.keys(UNARY_OPS) as (keyof typeof UNARY_OPS)[];
export const unaryConfigs: tf.KernelConfig[] = UNARY_KERNELS.map(unaryConfig);

const BINARY_OPS = { Add: 0, Sub: 1, Multiply: 2 } as const;

/** The element count of `b`'s period in `out` when b repeats along out's leading axes (or equals it), else null. */
function suffixPeriod(b: number[], out: number[]): number | null {
  const first = b.findIndex((d) => d !== 1);
  const trailing = first === -1 ? [] : b.slice(first); // leading 1s dropped; a scalar has period 1
  const tail = out.slice(out.length - trailing.length);
  return trailing.length <= out.length && tail.every((d, i) => d === trailing[i]) ? tf.util.sizeFromShape(trailing) : null;
}

function binaryConfig(name: keyof typeof BINARY_OPS): tf.KernelConfig {
  const op = BINARY_OPS[name];
  const kernelFunc = (args: KernelArgs): tf.TensorInfo => {
    let a = args.inputs['a'] as tf.TensorInfo;
    let b = args.inputs['b'] as tf.TensorInfo;
    const native = nativeKernels();
    const stock = (): tf.TensorInfo => withScope(args.backend, (s) => s.run(name, { a, b }, args.attrs));
    if (native === null || a.dtype !== 'float32' || b.dtype !== 'float32') return stock();
    const outShape = tf.backend_util.assertAndGetBroadcastShape(a.shape, b.shape);
    const n = tf.util.sizeFromShape(outShape);
    if (n === 0) return stock();
    // a must cover the output; a commutative op may swap its operands for that (and stock() then sees them swapped, to the same result)
    if (tf.util.sizeFromShape(a.shape) !== n && name !== 'Sub') [a, b] = [b, a];
    const period = tf.util.sizeFromShape(a.shape) === n ? suffixPeriod(b.shape, outShape) : null;
    if (period === null) return stock();
    const backend = asWasmBackend(args.backend);
    const out = backend.makeOutput(outShape, 'float32');
    native.binary(heapBuffer(backend), op, floatOffset(backend, a, name), floatOffset(backend, b, name), floatOffset(backend, out, name), n, period);
    return out;
  };
  return { kernelName: name, backendName: 'wasm', kernelFunc: kernelFunc as unknown as tf.KernelFunc };
}

export const BINARY_KERNELS = Object.keys(BINARY_OPS) as (keyof typeof BINARY_OPS)[];
export const binaryConfigs: tf.KernelConfig[] = BINARY_KERNELS.map(binaryConfig);
