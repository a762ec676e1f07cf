/**
 * BatchMatMul for the wasm backend. The stock kernel reaches XNNPACK only for a single untransposed
 * a@b; transposed operands (every weight gradient) and batches (attention) fall to a slow loop. Here
 * every case is reduced to that fast one: transposes are materialised, a batch with a shared b is
 * flattened into one tall matmul, and other batches run one 2-D matmul per batch on heap copies.
 * With the native kernels loaded, OpenBLAS does every case in place instead (transposes included).
 */
import * as tf from '@tensorflow/tfjs-core';
import { type NativeKernels, nativeKernels } from './native.js';
import { asWasmBackend, floatOffset, heapBuffer, KernelScope, WasmKernelError, withScope } from './wasm-heap.js';

/** For each output batch index, the index into a batch of shape `dims` broadcast to `outDims`. */
function broadcastIndex(dims: number[], outDims: number[]): number[] {
  const rank = outDims.length;
  const padded = [...new Array<number>(rank - dims.length).fill(1), ...dims];
  const total = tf.util.sizeFromShape(outDims);
  const result = new Array<number>(total);
  for (let flat = 0; flat < total; flat++) {
    let rem = flat;
    let idx = 0;
    let stride = 1;
    for (let axis = rank - 1; axis >= 0; axis--) {
      const size = outDims[axis] as number;
      const coord = rem % size;
      rem = (rem - coord) / size;
      const d = padded[axis] as number;
      if (d !== 1) idx += coord * stride;
      stride *= d;
    }
    result[flat] = idx;
  }
  return result;
}

function heapOffset(s: KernelScope, info: tf.TensorInfo): number {
  return floatOffset(s.backend, info, 'BatchMatMul');
}

interface MatMulShape {
  a: tf.TensorInfo;
  b: tf.TensorInfo;
  transposeA: boolean;
  transposeB: boolean;
  m: number;
  n: number;
  k: number;
  outerA: number[];
  outerB: number[];
  outer: number[];
}

/** Every batch as OpenBLAS sgemm calls on the heap, in place. */
function nativeBatchMatMul(native: NativeKernels, backendObj: unknown, p: MatMulShape): tf.TensorInfo {
  const backend = asWasmBackend(backendObj);
  const { m, n, k } = p;
  const batchA = tf.util.sizeFromShape(p.outerA);
  const batchB = tf.util.sizeFromShape(p.outerB);
  const batch = tf.util.sizeFromShape(p.outer);
  const out = backend.makeOutput([...p.outer, m, n], 'float32');
  if (batch * m * n === 0) return out;
  const heap = heapBuffer(backend); // after makeOutput: it may have grown the heap
  const aOff = floatOffset(backend, p.a, 'BatchMatMul');
  const bOff = floatOffset(backend, p.b, 'BatchMatMul');
  const cOff = floatOffset(backend, out, 'BatchMatMul');
  if (k === 0) {
    new Float32Array(heap, cOff * 4, batch * m * n).fill(0);
  } else if (batchB === 1 && !p.transposeA) {
    // a's batches stack into one tall [batch·m, k] matrix against the shared b.
    native.sgemm(heap, false, p.transposeB, batch * m, n, k, 1, aOff, 0, bOff, 0, cOff);
  } else if ((batchA === 1 || batchA === batch) && (batchB === 1 || batchB === batch)) {
    native.sgemm(heap, p.transposeA, p.transposeB, m, n, k, batch, aOff, batchA === 1 ? 0 : m * k, bOff, batchB === 1 ? 0 : k * n, cOff);
  } else {
    // Both sides broadcast (e.g. [2,1] with [1,3]): one product per output batch.
    const aIdx = broadcastIndex(p.outerA, p.outer);
    const bIdx = broadcastIndex(p.outerB, p.outer);
    for (let i = 0; i < batch; i++) {
      native.sgemm(heap, p.transposeA, p.transposeB, m, n, k, 1, aOff + (aIdx[i] as number) * m * k, 0, bOff + (bIdx[i] as number) * k * n, 0, cOff + i * m * n);
    }
  }
  return out;
}

/** A new heap tensor holding batch `index` of the rank-3 `src`. */
function copyBatch(s: KernelScope, src: tf.TensorInfo, index: number, shape: number[]): tf.TensorInfo {
  const size = tf.util.sizeFromShape(shape);
  const dst = s.backend.makeOutput(shape, 'float32');
  const from = heapOffset(s, src) + index * size;
  s.backend.wasm.HEAPF32.copyWithin(heapOffset(s, dst), from, from + size);
  return dst;
}

/** The stock kernel on rank-3 untransposed operands with batch 1: its XNNPACK path. */
function matmul2d(s: KernelScope, a: tf.TensorInfo, b: tf.TensorInfo): tf.TensorInfo {
  return s.run('BatchMatMul', { a, b }, { transposeA: false, transposeB: false });
}

function batchMatMul(args: { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap }): tf.TensorInfo {
  const a = args.inputs['a'] as tf.TensorInfo;
  const b = args.inputs['b'] as tf.TensorInfo;
  const { transposeA, transposeB } = args.attrs as { transposeA: boolean; transposeB: boolean };
  if (a.dtype !== 'float32' || b.dtype !== 'float32') {
    throw new WasmKernelError('BatchMatMul', `operands must be float32, got ${a.dtype} and ${b.dtype}`);
  }
  const ar = a.shape.length;
  const br = b.shape.length;
  const m = (transposeA ? a.shape[ar - 1] : a.shape[ar - 2]) as number;
  const k = (transposeA ? a.shape[ar - 2] : a.shape[ar - 1]) as number;
  const kb = (transposeB ? b.shape[br - 1] : b.shape[br - 2]) as number;
  const n = (transposeB ? b.shape[br - 2] : b.shape[br - 1]) as number;
  if (k !== kb) {
    throw new WasmKernelError('BatchMatMul', `inner dimensions differ: a ${JSON.stringify(a.shape)} (transposeA=${transposeA}) and b ${JSON.stringify(b.shape)} (transposeB=${transposeB})`);
  }
  const outerA = a.shape.slice(0, -2);
  const outerB = b.shape.slice(0, -2);
  const outer = tf.broadcast_util.assertAndGetBroadcastShape(outerA, outerB);
  const batchA = tf.util.sizeFromShape(outerA);
  const batchB = tf.util.sizeFromShape(outerB);
  const batch = tf.util.sizeFromShape(outer);
  const outShape = [...outer, m, n];
  const native = nativeKernels();
  if (native !== null) return nativeBatchMatMul(native, args.backend, { a, b, transposeA, transposeB, m, n, k, outerA, outerB, outer });

  return withScope(args.backend, (s) => {
    // Untransposed rank-3 operands: [batchA, m, k] and [batchB, k, n].
    const a3 = transposeA ? s.transpose(s.reshape(a, [batchA, k, m]), [0, 2, 1]) : s.reshape(a, [batchA, m, k]);
    const b3 = transposeB ? s.transpose(s.reshape(b, [batchB, n, k]), [0, 2, 1]) : s.reshape(b, [batchB, k, n]);

    // b shared by every batch (or no batch at all; then batch = batchA): one tall [batch·m, k] @ [k, n].
    if (batchB === 1) return s.reshape(matmul2d(s, s.reshape(a3, [1, batch * m, k]), b3), outShape);

    const out = s.alloc([batch, m, n]);
    const aIdx = broadcastIndex(outerA, outer);
    const bIdx = broadcastIndex(outerB, outer);
    for (let i = 0; i < batch; i++) {
      // Fresh operands every batch: the stock kernel caches XNNPACK's packed b by tensor id, so reusing
      // one temporary with new contents would silently multiply by a stale b.
      const aTmp = batchA === 1 ? a3 : copyBatch(s, a3, aIdx[i] as number, [1, m, k]);
      const bTmp = batchB === 1 ? b3 : copyBatch(s, b3, bIdx[i] as number, [1, k, n]);
      const prod = matmul2d(s, aTmp, bTmp);
      const from = heapOffset(s, prod);
      // Read HEAPF32 afresh: the allocations above may have grown the heap.
      s.backend.wasm.HEAPF32.copyWithin(heapOffset(s, out) + i * m * n, from, from + m * n);
      s.release(prod);
      if (aTmp !== a3) s.backend.disposeData(aTmp.dataId);
      if (bTmp !== b3) s.backend.disposeData(bTmp.dataId);
    }
    return s.reshape(out, outShape);
  });
}

export const batchMatMulConfig: tf.KernelConfig = {
  kernelName: tf.BatchMatMul,
  backendName: 'wasm',
  kernelFunc: batchMatMul as unknown as tf.KernelFunc,
};

/**
 * BatchMatMul gradient that also handles a broadcast batch dimension: stock tfjs returns the gradient
 * with the broadcast (output) batch shape, which is wrong for the smaller operand. We sum over the
 * broadcast axes, as the gradients of Add/Mul do. Backend independent.
 */
export const batchMatMulGradConfig: tf.GradConfig = {
  kernelName: tf.BatchMatMul,
  inputsToSave: ['a', 'b'],
  gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[], attrs: tf.NamedAttrMap) => {
    const g = dy as tf.Tensor;
    const [a, b] = saved as [tf.Tensor, tf.Tensor];
    const { transposeA, transposeB } = attrs as unknown as { transposeA: boolean; transposeB: boolean };
    const reduceTo = (grad: tf.Tensor, like: tf.Tensor): tf.Tensor => {
      if (tf.util.arraysEqual(grad.shape, like.shape)) return grad;
      const axes = tf.broadcast_util.getReductionAxes(like.shape.slice(0, -2), grad.shape.slice(0, -2));
      return tf.reshape(axes.length > 0 ? tf.sum(grad, axes) : grad, like.shape);
    };
    if (!transposeA && !transposeB) {
      return { a: () => reduceTo(tf.matMul(g, b, false, true), a), b: () => reduceTo(tf.matMul(a, g, true, false), b) };
    }
    if (!transposeA && transposeB) {
      return { a: () => reduceTo(tf.matMul(g, b, false, false), a), b: () => reduceTo(tf.matMul(g, a, true, false), b) };
    }
    if (transposeA && !transposeB) {
      return { a: () => reduceTo(tf.matMul(b, g, false, true), a), b: () => reduceTo(tf.matMul(a, g, false, false), b) };
    }
    return { a: () => reduceTo(tf.matMul(b, g, true, true), a), b: () => reduceTo(tf.matMul(g, a, true, true), b) };
  },
};
