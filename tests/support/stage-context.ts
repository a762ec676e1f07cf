/** A StageContext over a real RunStore run, built like the worker's, for driving plugins in-process in tests. */
import { mkdirSync } from 'node:fs';
import { createStageContext } from '../../src/core/context.js';
import type { StageContext, StageOutputs } from '../../src/core/plugins/types.js';
import type { RunHandle } from '../../src/core/runs/index.js';

export interface ContextOptions<C> {
  config: C;
  stage?: string;
  inputs?: Record<string, StageOutputs>;
  signal?: AbortSignal;
  seed?: number;
  /** Called after each `ctx.log`. */
  onLog?: (metrics: Record<string, number>, step: number) => void;
  /** Receives one entry per `ctx.media` call. */
  media?: { key: string; step: number; bytes: number }[];
  /** Receives what the plugin passes to `ctx.meta`. */
  meta?: Record<string, unknown>;
}

export function stageContext<C>(run: RunHandle, o: ContextOptions<C>): StageContext<C> {
  mkdirSync(run.outDir, { recursive: true });
  const { ctx } = createStageContext({
    run,
    stage: o.stage ?? 'test',
    config: o.config,
    inputs: o.inputs ?? {},
    seed: o.seed ?? 0,
    signal: o.signal ?? new AbortController().signal,
    logger: { info: () => {}, warn: () => {}, error: () => {} },
    progress: { start: () => {}, tick: () => {}, end: () => {} },
    meta: (values) => void Object.assign(o.meta ?? {}, values),
  });
  const { log, media } = ctx;
  ctx.log = (metrics, step) => {
    log(metrics, step);
    o.onLog?.(metrics, step);
  };
  ctx.media = async (key, png, step, caption) => {
    o.media?.push({ key, step, bytes: png.length });
    return media(key, png, step, caption);
  };
  return ctx;
}
