import type { CheckpointInfo, Checkpoints, Logger, ObserverContext, Plugin, PluginHooks, Progress, StageContext, StageOutputs } from './plugins/types.js';
import type { RunHandle } from './runs/index.js';

/** A plugin observing a run (an experiment's `observers:` entry), with the context its hooks receive. */
export interface Observer {
  plugin: Plugin;
  ctx: ObserverContext;
}

/** Calls one hook of every observer; a failing hook is reported, and does not stop the stage. */
export async function notify<K extends keyof PluginHooks>(
  observers: Observer[],
  hook: K,
  event: Parameters<NonNullable<PluginHooks[K]>>[0],
  logger: Logger,
): Promise<void> {
  for (const o of observers) {
    const fn = o.plugin.hooks?.[hook] as ((e: typeof event, ctx: ObserverContext) => void | Promise<void>) | undefined;
    if (!fn) continue;
    try {
      await fn(event, o.ctx);
    } catch (err) {
      logger.warn(`plugin '${o.plugin.name}' hook ${hook} failed: ${(err as Error).message}`);
    }
  }
}

export interface StageContextParts<C> {
  run: RunHandle;
  stage: string;
  config: C;
  inputs: Record<string, StageOutputs>;
  seed: number;
  signal: AbortSignal;
  logger: Logger;
  progress: Progress;
  /** run.json `meta` updates (the worker forwards them to the orchestrator, which owns run.json). */
  meta: (values: Record<string, unknown>) => void;
  observers?: Observer[];
}

/**
 * The StageContext a plugin sees, backed by the run store. The worker builds it for real runs; tests build it
 * directly to drive a plugin step by step. `pending()` resolves when metric hooks called so far have run.
 */
export function createStageContext<C>(parts: StageContextParts<C>): { ctx: StageContext<C>; pending: () => Promise<void> } {
  const { run, logger } = parts;
  const observers = parts.observers ?? [];
  const stored = run.checkpoints({ onWarning: (m) => logger.warn(m) });
  const inFlight: Promise<void>[] = [];
  const checkpoints: Checkpoints = {
    save: async (step, write, meta) => {
      const info: CheckpointInfo = await stored.save(step, write, meta);
      await notify(observers, 'checkpoint', { runId: run.id, checkpoint: info }, logger);
      return info;
    },
    latest: () => stored.latest(),
    list: () => stored.list(),
    prune: (keep, options) => stored.prune(keep, options),
  };
  const ctx: StageContext<C> = {
    config: parts.config,
    stage: parts.stage,
    runId: run.id,
    runDir: run.dir,
    outDir: run.outDir,
    inputs: parts.inputs,
    seed: parts.seed,
    log: (metrics, step) => {
      run.log(metrics, step);
      inFlight.push(notify(observers, 'metrics', { runId: run.id, step, metrics }, logger));
    },
    defineMetric: (name, o) => run.defineMetric(name, o),
    media: (key, png, step, caption) => run.media(key, png, step, caption),
    summary: (values) => run.summary(values),
    meta: parts.meta,
    checkpoints,
    progress: parts.progress,
    logger,
    signal: parts.signal,
  };
  return { ctx, pending: () => Promise.all(inFlight).then(() => undefined) };
}
