import { describe, expect, it } from 'vitest';
import { availableParallelism } from 'node:os';
import { ComputeBackendError, computeInfo, describeCompute, initCompute, tf } from '../../src/ml/backend.js';
import { CPU_KERNELS } from '../../src/ml/kernels/index.js';
import { loadNativeKernels } from '../../src/ml/kernels/native.js';
import { setThreadShare } from '../../src/core/threads.js';
import { KernelSelfCheckError, selfCheck } from '../../src/ml/selfcheck.js';

// One process per test file (vitest forks), so the order below is the life of one process.
describe('initCompute', () => {
  it('rejects an unknown MINIDALLE_BACKEND, naming the variable and the choices', async () => {
    process.env['MINIDALLE_BACKEND'] = 'gpu';
    try {
      await expect(initCompute()).rejects.toThrow(/MINIDALLE_BACKEND is 'gpu'; expected one of node, wasm, cpu/);
    } finally {
      delete process.env['MINIDALLE_BACKEND'];
    }
    expect(computeInfo()).toBeNull();
  });

  it('treats an explicitly requested but absent tfjs-node as an error, not a fallback', async () => {
    const err = await initCompute({ backend: 'node' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ComputeBackendError);
    expect((err as Error).message).toMatch(/tfjs-node is not installed/);
    expect(computeInfo()).toBeNull();
  });

  it('falls back to wasm with our kernels, runs the self-check, and is idempotent', async () => {
    const info = await initCompute();
    expect(info).toMatchObject({ backend: 'wasm', version: tf.version_core });
    expect(info.kernels).toEqual([
      'Conv2D', 'Conv2DBackpropFilter', 'Conv2DBackpropInput', 'UnsortedSegmentSum', 'GatherV2', 'BatchMatMul', 'Identity', 'Cast', 'Sum',
      'Tanh', 'Exp', 'Erf', 'Sigmoid', 'Add', 'Sub', 'Multiply', 'MinidalleSparseXent', 'MinidalleSparseXentGrad', 'MinidalleAdamW',
      'MinidalleGroupNorm', 'MinidalleGroupNormGrad', 'MinidalleSwish', 'MinidalleSwishGrad', 'MinidalleGelu', 'MinidalleGeluGrad', 'MinidalleDropoutMask',
    ]);
    // The native kernels are used when built; CI builds them and sets MINIDALLE_NATIVE=require.
    const native = loadNativeKernels();
    if (native.available) {
      expect(info.native).toMatchObject({ active: true, blas: native.blas, threads: availableParallelism() });
      expect(info.threads).toBe(availableParallelism());
      expect(describeCompute(info)).toMatch(/^wasm \+ native OpenBLAS [\d.]+ \(.+, \d+ threads?\)$/);
      // a share of the cores handed out by the orchestrator (core/threads.ts) applies at once
      const userThreads = process.env['MINIDALLE_THREADS'];
      setThreadShare(1);
      expect(info.threads).toBe(1);
      expect(native.kernels.info().threads).toBe(1);
      setThreadShare(availableParallelism());
      expect(native.kernels.info().threads).toBe(availableParallelism());
      if (userThreads === undefined) delete process.env['MINIDALLE_THREADS'];
      else process.env['MINIDALLE_THREADS'] = userThreads;
    } else {
      expect(info).toMatchObject({ threads: 1, native: { active: false, reason: native.reason } });
      expect(describeCompute(info)).toMatch(/native kernels not in use: not built/);
    }
    expect(tf.getBackend()).toBe('wasm');
    for (const k of info.kernels) expect(tf.getKernel(k, 'wasm')).toBeDefined();
    expect(await initCompute()).toBe(info);
    expect(await initCompute({ backend: 'wasm' })).toBe(info);
    expect(tf.getKernel('ResizeNearestNeighborGrad', 'cpu')).toBe(CPU_KERNELS[0]);
    // Gradients are registered (tfjs-core's Node bundle ships none).
    expect(tf.getGradient('Mean')).toBeDefined();
  });

  it('refuses to switch backend once initialised', async () => {
    await expect(initCompute({ backend: 'cpu' })).rejects.toThrow(/already initialised on 'wasm'; cannot switch to 'cpu'/);
  });
});

describe('selfCheck', () => {
  it('passes for the registered kernels and reports every case', async () => {
    const results = await selfCheck();
    expect(new Set(results.map((r) => r.kernel))).toEqual(new Set(['Conv2D', 'Conv2DBackpropFilter', 'Conv2DBackpropInput', 'UnsortedSegmentSum', 'GatherV2', 'BatchMatMul']));
    for (const r of results) expect(r.relativeError).toBeLessThan(1e-4);
  });

  it('names the kernel and the error when wasm and cpu disagree', async () => {
    // A case whose result depends on the backend stands in for a broken kernel.
    const broken = { kernel: 'FakeKernel', name: 'offset on wasm', run: () => tf.add(tf.ones([3]), tf.getBackend() === 'wasm' ? 0.01 : 0) };
    const err = await selfCheck([broken]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KernelSelfCheckError);
    expect((err as KernelSelfCheckError).kernel).toBe('FakeKernel');
    expect((err as KernelSelfCheckError).maxRelativeError).toBeCloseTo(0.01, 4);
    expect(tf.getBackend()).toBe('wasm');
  });
});
