/**
 * GatherV2 for the wasm backend. The stock kernel copies element by element through a generic strided
 * loop: an embedding lookup of 2,048 ids from a [257, 128] table took 11 ms, about 4% of a whole DalleBart
 * training step of the quickstart's size (0.36 ms here). Every gather is rows of `sliceSize` contiguous elements, so here each index
 * costs one typed-array copy of its row (a short loop when rows are a few elements, as in a logit pick).
 */
import * as tf from '@tensorflow/tfjs-core';
import { asWasmBackend, WasmKernelError } from './wasm-heap.js';

/** Below this many elements a row is copied by a loop: `set(subarray)` costs more than it saves. */
const SHORT_ROW = 16;

function gatherV2(args: { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap }): tf.TensorInfo {
  const x = args.inputs['x'] as tf.TensorInfo;
  const indices = args.inputs['indices'] as tf.TensorInfo;
  const { axis, batchDims } = args.attrs as { axis: number; batchDims: number };
  if (indices.dtype !== 'int32') throw new WasmKernelError('GatherV2', `indices must be int32, got ${indices.dtype}`);
  const backend = asWasmBackend(args.backend);
  const parsedAxis = tf.util.parseAxisParam(axis, x.shape)[0] as number;
  // x as [batch, outer, dim, slice] and indices as [batch, perBatch]; the output is [batch, outer, perBatch, slice].
  const info = tf.backend_util.segment_util.collectGatherOpShapeInfo(x, indices, parsedAxis, batchDims);
  const out = backend.makeOutput(info.outputShape, x.dtype);
  if (tf.util.sizeFromShape(info.outputShape) === 0) return out;
  // Views after makeOutput: an allocation may grow (and so detach) the heap buffer.
  const src = backend.typedArrayFromHeap(x);
  const dst = backend.typedArrayFromHeap(out);
  const ids = backend.typedArrayFromHeap(indices);
  const { batchSize, outerSize, dimSize, sliceSize } = info;
  const perBatch = ids.length / batchSize;
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i] as number;
    if (!(id >= 0 && id < dimSize)) throw new WasmKernelError('GatherV2', `the index value ${id} (position ${i}) is not in [0, ${dimSize - 1}]`);
  }
  let d = 0;
  for (let b = 0; b < batchSize; b++) {
    for (let o = 0; o < outerSize; o++) {
      const base = (b * outerSize + o) * dimSize * sliceSize;
      for (let i = b * perBatch; i < (b + 1) * perBatch; i++) {
        const s = base + (ids[i] as number) * sliceSize;
        if (sliceSize < SHORT_ROW) {
          for (let k = 0; k < sliceSize; k++) dst[d + k] = src[s + k] as number;
        } else {
          dst.set(src.subarray(s, s + sliceSize), d);
        }
        d += sliceSize;
      }
    }
  }
  return out;
}

export const gatherV2Config: tf.KernelConfig = {
  kernelName: tf.GatherV2,
  backendName: 'wasm',
  kernelFunc: gatherV2 as unknown as tf.KernelFunc,
};
