/**
 * Our wasm kernels: what tfjs-backend-wasm 4.22.0 lacks (Conv2DBackpropFilter, UnsortedSegmentSum) or
 * runs far below XNNPACK or memory speed (Conv2DBackpropInput, BatchMatMul, GatherV2), plus a gradient fix. Conv2D, its
 * gradients and BatchMatMul switch to the native OpenBLAS kernels when those are loaded (native.ts).
 * An incremental decoding step runs as one recorded native program (decode.ts), outside the kernel registry.
 */
import * as tf from '@tensorflow/tfjs-core';
import { batchMatMulConfig, batchMatMulGradConfig } from './batch-matmul.js';
import { cpuResizeNearestNeighborGradConfig } from './cpu-resize-grad.js';
import { conv2DBackpropFilterConfig, conv2DBackpropInputConfig, conv2DConfig } from './conv.js';
import { BINARY_KERNELS, binaryConfigs, castConfig, identityConfig, sumConfig, UNARY_KERNELS, unaryConfigs } from './elementwise.js';
import { gatherV2Config } from './gather.js';
import { unsortedSegmentSumConfig } from './segment-sum.js';
import { adamwUpdateConfig, dropoutMaskConfig, geluConfig, geluGradConfig, groupNormConfig, groupNormGradConfig, sparseXentConfig, sparseXentGradConfig, swishConfig, swishGradConfig } from './fused.js';
import { captureStockKernels } from './wasm-heap.js';

export { fusedGroupNorm, fusedSwish, nativeFusionActive, sparseSoftmaxCrossEntropy, stopGradient, straightThrough, upsampleNearest2x } from './ops.js';

/** Kernels we register for the wasm backend, in registration order. */
export const WASM_KERNELS: readonly tf.KernelConfig[] = [
  conv2DConfig,
  conv2DBackpropFilterConfig,
  conv2DBackpropInputConfig,
  unsortedSegmentSumConfig,
  gatherV2Config,
  batchMatMulConfig,
  identityConfig,
  castConfig,
  sumConfig,
  ...unaryConfigs,
  ...binaryConfigs,
  sparseXentConfig,
  sparseXentGradConfig,
  adamwUpdateConfig,
  groupNormConfig,
  groupNormGradConfig,
  swishConfig,
  swishGradConfig,
  geluConfig,
  geluGradConfig,
  dropoutMaskConfig,
];

/** Stock wasm kernels ours call into. */
const STOCK_USED = ['BatchMatMul', 'Conv2D', 'Reshape', 'Transpose', 'Slice', 'Identity', 'Cast', 'Sum', ...UNARY_KERNELS, ...BINARY_KERNELS];

let installed = false;

/**
 * Registers our kernels on 'wasm' (replacing stock ones where we are faster) and the BatchMatMul
 * gradient fix. Must run after the wasm backend is initialised: the stock kernels' setup has to have
 * run before we capture and replace them. Idempotent. Returns the kernel names.
 */
export function installWasmKernels(): string[] {
  if (!installed) {
    captureStockKernels(STOCK_USED);
    for (const cfg of WASM_KERNELS) {
      if (tf.getKernel(cfg.kernelName, 'wasm') != null) tf.unregisterKernel(cfg.kernelName, 'wasm');
      tf.registerKernel(cfg);
    }
    installed = true;
  }
  return WASM_KERNELS.map((k) => k.kernelName);
}

/** Kernels we register for the cpu backend (bug fixes), in registration order. */
export const CPU_KERNELS: readonly tf.KernelConfig[] = [cpuResizeNearestNeighborGradConfig];

let cpuInstalled = false;

/**
 * Replaces buggy stock cpu kernels. Call after @tensorflow/tfjs-backend-cpu has been imported: its
 * import registers the stock kernels and would otherwise overwrite ours. Idempotent.
 */
export function installCpuKernels(): string[] {
  if (!cpuInstalled) {
    for (const cfg of CPU_KERNELS) {
      if (tf.getKernel(cfg.kernelName, 'cpu') != null) tf.unregisterKernel(cfg.kernelName, 'cpu');
      tf.registerKernel(cfg);
    }
    cpuInstalled = true;
  }
  return CPU_KERNELS.map((k) => k.kernelName);
}

/** Gradient fixes are global in tfjs (not per backend); they are correct on every backend. */
let gradientsInstalled = false;
export function installGradientFixes(): void {
  if (gradientsInstalled) return;
  tf.registerGradient(batchMatMulGradConfig);
  gradientsInstalled = true;
}
