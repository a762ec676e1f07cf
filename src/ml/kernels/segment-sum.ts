/**
 * UnsortedSegmentSum for the wasm backend (absent from tfjs-backend-wasm 4.22.0). It is the gradient of
 * every gather/embedding lookup, so without it no embedding trains on wasm. A JS loop over heap views:
 * rows are contiguous, so each id costs one strided add of `inner` floats.
 */
import * as tf from '@tensorflow/tfjs-core';
import { asWasmBackend, WasmKernelError } from './wasm-heap.js';

function unsortedSegmentSum(args: { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap }): tf.TensorInfo {
  const x = args.inputs['x'] as tf.TensorInfo;
  const ids = args.inputs['segmentIds'] as tf.TensorInfo;
  const numSegments = (args.attrs as { numSegments: number }).numSegments;
  if (x.dtype !== 'float32' && x.dtype !== 'int32') {
    throw new WasmKernelError('UnsortedSegmentSum', `x must be float32 or int32, got ${x.dtype}`);
  }
  const backend = asWasmBackend(args.backend);
  const idCount = tf.util.sizeFromShape(ids.shape);
  const inner = idCount === 0 ? 0 : tf.util.sizeFromShape(x.shape) / idCount;
  const out = backend.makeOutput([numSegments, ...x.shape.slice(ids.shape.length)], x.dtype);
  // Views are taken after makeOutput: an allocation may grow (and so detach) the heap buffer.
  const dst = backend.typedArrayFromHeap(out);
  const src = backend.typedArrayFromHeap(x);
  const seg = backend.typedArrayFromHeap(ids);
  dst.fill(0);
  for (let i = 0; i < idCount; i++) {
    const id = seg[i] as number;
    // As TensorFlow: ids outside [0, numSegments) are dropped.
    if (id < 0 || id >= numSegments) continue;
    const d = id * inner;
    const s = i * inner;
    for (let k = 0; k < inner; k++) dst[d + k] += src[s + k] as number;
  }
  return out;
}

export const unsortedSegmentSumConfig: tf.KernelConfig = {
  kernelName: tf.UnsortedSegmentSum,
  backendName: 'wasm',
  kernelFunc: unsortedSegmentSum as unknown as tf.KernelFunc,
};
