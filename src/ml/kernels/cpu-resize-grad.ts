/**
 * ResizeNearestNeighborGrad for the cpu backend. The stock kernel (tfjs-backend-cpu 4.22.0) offsets dy
 * by the *input's* batch stride, so every image after the first reads the wrong gradient, and it ignores
 * halfPixelCenters. Here each dy pixel is added to the source pixel the forward pass copied it from,
 * with the forward kernel's exact source mapping.
 */
import * as tf from '@tensorflow/tfjs-core';

interface CpuBackendInternals {
  data: { get(dataId: tf.DataId): { values: ArrayLike<number> } };
  makeTensorInfo(shape: number[], dtype: tf.DataType, values: Float32Array): tf.TensorInfo;
}

/** Source index along one axis, as tfjs' nearest-neighbour forward computes it. */
function sourceIndex(out: number, inSize: number, outSize: number, alignCorners: boolean, halfPixelCenters: boolean): number {
  const effIn = alignCorners && outSize > 1 ? inSize - 1 : inSize;
  const effOut = alignCorners && outSize > 1 ? outSize - 1 : outSize;
  const ratio = effIn / effOut;
  const frac = halfPixelCenters ? ratio * (out + 0.5) : ratio * out;
  const nearest = Math.min(inSize - 1, alignCorners ? Math.round(frac) : Math.floor(frac));
  return halfPixelCenters ? Math.max(0, nearest) : nearest;
}

function resizeNearestNeighborGrad(args: { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap }): tf.TensorInfo {
  const images = args.inputs['images'] as tf.TensorInfo;
  const dy = args.inputs['dy'] as tf.TensorInfo;
  const { alignCorners, halfPixelCenters } = args.attrs as { alignCorners: boolean; halfPixelCenters?: boolean };
  const backend = args.backend as CpuBackendInternals;
  const [batch, inH, inW, depth] = images.shape as [number, number, number, number];
  const [, outH, outW] = dy.shape as [number, number, number, number];
  const rows = Array.from({ length: outH }, (_, r) => sourceIndex(r, inH, outH, alignCorners, halfPixelCenters === true));
  const cols = Array.from({ length: outW }, (_, c) => sourceIndex(c, inW, outW, alignCorners, halfPixelCenters === true));
  const g = backend.data.get(dy.dataId).values;
  const dx = new Float32Array(batch * inH * inW * depth);
  for (let b = 0; b < batch; b++) {
    for (let r = 0; r < outH; r++) {
      const srcRow = (b * inH + (rows[r] as number)) * inW;
      for (let c = 0; c < outW; c++) {
        const to = (srcRow + (cols[c] as number)) * depth;
        const from = ((b * outH + r) * outW + c) * depth;
        for (let d = 0; d < depth; d++) dx[to + d] += g[from + d] as number;
      }
    }
  }
  return backend.makeTensorInfo(images.shape, 'float32', dx);
}

export const cpuResizeNearestNeighborGradConfig: tf.KernelConfig = {
  kernelName: tf.ResizeNearestNeighborGrad,
  backendName: 'cpu',
  kernelFunc: resizeNearestNeighborGrad as unknown as tf.KernelFunc,
};
