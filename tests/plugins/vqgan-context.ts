/** A StageContext over a real RunStore run, as the worker builds it, for driving plugins in-process. */
import { mkdirSync } from 'node:fs';
import type { StageContext, StageOutputs } from '../../src/core/plugins/types.js';
import type { RunHandle } from '../../src/core/runs/index.js';

export interface ContextOptions<C> {
  config: C;
  inputs?: Record<string, StageOutputs>;
  signal?: AbortSignal;
  seed?: number;
  onLog?: (metrics: Record<string, number>, step: number) => void;
  media?: { key: string; step: number; bytes: number }[];
  meta?: Record<string, unknown>;
}

export function stageContext<C>(run: RunHandle, o: ContextOptions<C>): StageContext<C> {
  mkdirSync(run.outDir, { recursive: true });
  const cps = run.checkpoints({ onWarning: () => {} });
  return {
    config: o.config,
    stage: 'vqgan',
    runId: run.id,
    runDir: run.dir,
    outDir: run.outDir,
    inputs: o.inputs ?? {},
    seed: o.seed ?? 0,
    log: (m, step) => {
      run.log(m, step);
      o.onLog?.(m, step);
    },
    defineMetric: (name, d) => run.defineMetric(name, d),
    media: async (key, png, step, caption) => {
      o.media?.push({ key, step, bytes: png.length });
      return run.media(key, png, step, caption);
    },
    summary: (v) => run.summary(v),
    meta: (v) => void Object.assign(o.meta ?? {}, v),
    checkpoints: { save: (s, w, m) => cps.save(s, w, m), latest: () => cps.latest(), list: () => cps.list() },
    progress: { start: () => {}, tick: () => {}, end: () => {} },
    logger: { info: () => {}, warn: () => {}, error: () => {} },
    signal: o.signal ?? new AbortController().signal,
  };
}
