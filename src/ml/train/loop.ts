/**
 * The one training loop. A trainer supplies what differs (its train state, a `step()` that returns
 * metrics, `evaluate()`, `media()`, its artifacts); the loop owns the order and everything around it,
 * in nanoGPT's order:
 *
 *   resume → while step < steps: yield · step · log · after-step · media · eval · checkpoint (+ retention)
 *          → on abort: finish the step, checkpoint, return no artifact
 *          → at the end: export artifacts · summary · dispose
 *
 * Cadences fire at multiples of their period and at the final step, each once. The loop's resume is
 * exact: the checkpoint holds model, optimizer, RNG and data position, so a run stopped at step k and
 * resumed gives the same weights at step n as a run that was never stopped.
 */
import type { CheckpointInfo, MetricGoal, StageContext, StageResult } from '../../core/plugins/types.js';
import type { SkipCounts } from '../../data/skips.js';
import type { TrainState } from './state.js';

export interface Cadence {
  log_every: number;
  eval_every: number;
  media_every: number;
  checkpoint_every: number;
  /** newest N kept plus the best by the key metric; 0 keeps all */
  keep_checkpoints: number;
}

export interface Trainer {
  /** plugin name, for log lines */
  name: string;
  state: TrainState;
  steps: number;
  cadence: Cadence;
  /** the run's key metric (summary best, checkpoint retention) */
  primary?: { name: string; goal: MetricGoal };
  /** other metrics whose best the summary keeps */
  metrics?: Record<string, MetricGoal>;
  /**
   * One optimizer update at `state.step` (the loop increments it afterwards). Returns the metrics to log
   * when `log` is true (computing them may sync the device, so it is skipped otherwise).
   */
  step(log: boolean): Promise<Record<string, number> | undefined> | Record<string, number> | undefined;
  /** after the step counter moved on (e.g. dead-code restarts), with the new step */
  afterStep?(step: number): void | Promise<void>;
  /** held-out metrics, logged as they are named (`eval/…`) */
  evaluate?(): Promise<Record<string, number>> | Record<string, number>;
  /** logs media through ctx.media at `step` */
  media?(step: number): Promise<void>;
  /** items the data path skipped, by reason: into the summary and the log */
  skips?: () => SkipCounts[];
  /** summary values of the trainer (the loop adds steps, timing, skips) */
  summary?(lastEval: Record<string, number> | undefined): Record<string, unknown>;
  /** writes the final artifacts into ctx.outDir (only when training reached `steps`) */
  export?(): Promise<Record<string, string>>;
  /** releases what the trainer holds beyond the train state (e.g. a frozen perceptual network) */
  dispose?(): void;
}

/**
 * The checkpoint to resume from, or undefined. Says so on the console either way, so a run whose every
 * checkpoint is corrupt does not claim to resume.
 */
export async function findResume(ctx: StageContext<unknown>, name: string): Promise<CheckpointInfo | undefined> {
  const latest = await ctx.checkpoints.latest();
  if (latest) return latest;
  const any = (await ctx.checkpoints.list()).length > 0;
  if (any) ctx.logger.warn(`${name}: no usable checkpoint: starting from step 0`);
  return undefined;
}

const METRIC_KEY = 'metric';

/** Runs `trainer` to `trainer.steps` (or until ctx.signal aborts); returns the stage result. */
export async function runTraining(ctx: StageContext<unknown>, trainer: Trainer, resume?: CheckpointInfo): Promise<StageResult> {
  const { state, cadence, steps } = trainer;
  try {
    if (resume) {
      await state.restore(resume.dir);
      ctx.logger.info(`${trainer.name}: resumed at step ${state.step} from run ${resume.runId}`);
    }
    if (trainer.primary) ctx.defineMetric(trainer.primary.name, { goal: trainer.primary.goal, primary: true });
    for (const [name, goal] of Object.entries(trainer.metrics ?? {})) ctx.defineMetric(name, { goal });

    let lastEval: Record<string, number> | undefined;
    let lastSaved = resume ? state.step : -1;
    let msTotal = 0;
    let msSteps = 0;
    const startStep = state.step;
    const due = (every: number): boolean => state.step % every === 0 || state.step === steps;

    const checkpoint = async (): Promise<void> => {
      const primary = trainer.primary;
      const value = primary && lastEval ? lastEval[primary.name] : undefined;
      const meta: Record<string, unknown> = { step: state.step, ...(primary && value !== undefined ? { [METRIC_KEY]: { name: primary.name, goal: primary.goal, value } } : {}) };
      await ctx.checkpoints.save(state.step, (dir) => state.save(dir), meta);
      lastSaved = state.step;
      if (cadence.keep_checkpoints > 0) await retain(ctx, cadence.keep_checkpoints);
    };

    ctx.progress.start(steps, 'step', state.step);
    try {
      while (state.step < steps) {
        // A macrotask turn per step: SIGINT/SIGTERM handlers (which abort ctx.signal) run only when the
        // event loop gets one, and a step is otherwise all synchronous tensor work.
        await new Promise<void>((r) => setImmediate(r));
        if (ctx.signal.aborted) break;
        const log = (state.step + 1) % cadence.log_every === 0 || state.step + 1 === steps;
        const t0 = performance.now();
        const metrics = await trainer.step(log);
        state.step++;
        const ms = performance.now() - t0;
        msTotal += ms;
        msSteps++;
        if (log && metrics) ctx.log({ ...metrics, 'train/ms_per_step': ms }, state.step);
        await trainer.afterStep?.(state.step);
        if (trainer.media && due(cadence.media_every)) await trainer.media(state.step);
        if (trainer.evaluate && due(cadence.eval_every)) {
          lastEval = await trainer.evaluate();
          ctx.log(lastEval, state.step);
        }
        if (due(cadence.checkpoint_every)) await checkpoint();
        ctx.progress.tick(1);
      }
      if (ctx.signal.aborted && state.step > startStep && lastSaved !== state.step) await checkpoint();
    } finally {
      ctx.progress.end();
    }

    const summary: Record<string, unknown> = {
      steps: state.step,
      samples: state.samples,
      ms_per_step: msSteps ? msTotal / msSteps : null,
      parameters: state.params.count(),
      ...trainer.summary?.(lastEval),
    };
    const skips = trainer.skips?.() ?? [];
    if (skips.length) {
      const total = skips.reduce((s, k) => s + k.total, 0);
      const byReason: Record<string, number> = {};
      for (const k of skips) for (const [r, n] of Object.entries(k.byReason)) byReason[r] = (byReason[r] ?? 0) + (n ?? 0);
      summary.skipped = { total, by_reason: byReason };
      if (total > 0) ctx.logger.warn(`${trainer.name}: skipped ${total} item(s): ${Object.entries(byReason).map(([r, n]) => `${n} ${r}`).join(', ')}`);
    }
    ctx.summary(summary);
    if (ctx.signal.aborted || state.step < steps) return { summary };
    const artifacts = (await trainer.export?.()) ?? {};
    return { artifacts, summary };
  } finally {
    trainer.dispose?.();
    state.dispose();
  }
}

/**
 * Retention: this run keeps its newest `keep` checkpoints plus the best one by the key metric recorded in
 * each checkpoint's meta, looking over the whole resume chain (when the best is an ancestor's, nothing of
 * this run needs protecting). The store prunes only the current run, so the checkpoints a resumed run
 * depends on stay whole.
 */
async function retain(ctx: StageContext<unknown>, keep: number): Promise<void> {
  let best: { runId: string; step: number; value: number } | undefined;
  for (const c of await ctx.checkpoints.list()) {
    const m = c.meta[METRIC_KEY] as { goal?: MetricGoal; value?: unknown } | undefined;
    if (!m || typeof m.value !== 'number' || !Number.isFinite(m.value)) continue;
    const better = !best || (m.goal === 'minimize' ? m.value < best.value : m.value > best.value);
    if (better) best = { runId: c.runId, step: c.step, value: m.value };
  }
  await ctx.checkpoints.prune(keep, { protect: best && best.runId === ctx.runId ? [best.step] : [] });
}
