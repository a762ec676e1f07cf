/**
 * The plugin contract. The core knows plugins only through these types; a plugin uses only what its
 * StageContext gives it (Rollup/Vite style: a named object with typed members).
 */
import type { z } from 'zod';

/** What a finished stage hands to the stages that `need` it. Paths are absolute. */
export interface StageOutputs {
  /** Run id of the stage run that produced these outputs. */
  runId: string;
  /** The producing stage's output directory (`runs/<id>/out`). */
  outDir: string;
  /** Named artifacts (files or folders), e.g. `{ dataset: '/…/out/train.tar' }`. */
  artifacts: Record<string, string>;
  /** The producing run's summary values. */
  summary: Record<string, unknown>;
}

export interface CheckpointInfo {
  step: number;
  /** Absolute path of the verified checkpoint directory (read-only for the plugin). */
  dir: string;
  /** Plugin-defined metadata saved with the checkpoint (JSON). */
  meta: Record<string, unknown>;
  /** Run that wrote it: the current run, or the run this one resumed from. */
  runId: string;
}

export interface Checkpoints {
  /**
   * Writes a checkpoint atomically: `write(dir)` fills a hidden temporary directory, the store records a
   * sha256 manifest of every file and renames it to `checkpoints/step-<step>`. A crash mid-way leaves no
   * visible partial checkpoint.
   */
  save(step: number, write: (dir: string) => Promise<void>, meta?: Record<string, unknown>): Promise<CheckpointInfo>;
  /**
   * The newest checkpoint whose manifest verifies, searching this run and then the runs it resumed from.
   * A checkpoint failing its checksum is never returned (a warning names it).
   */
  latest(): Promise<CheckpointInfo | undefined>;
  /** All verified-looking checkpoints of this run and its ancestors, oldest first (manifest read, not hashed). */
  list(): Promise<CheckpointInfo[]>;
  /**
   * Deletes this run's checkpoints except the newest `keep` and the steps in `protect`. Checkpoints of the
   * runs this one resumed from are never touched: a resumed run's chain stays whole.
   */
  prune(keep: number, options?: { protect?: number[] }): Promise<void>;
}

export interface Progress {
  /** Starts (or restarts) a progress bar; `done` lets a resumed stage start part-way. */
  start(total: number, unit: string, done?: number): void;
  /** Advances by `n` units. */
  tick(n?: number): void;
  /** Ends the bar. */
  end(): void;
}

export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

export type MetricGoal = 'minimize' | 'maximize';

export interface StageContext<C> {
  /** The stage's `with:` block, validated and with schema defaults applied. */
  config: C;
  /** Stage name in the experiment (e.g. `vqgan`). */
  stage: string;
  /** This stage run's id and directory. */
  runId: string;
  runDir: string;
  /** Where the stage writes what it produces; return paths inside it as artifacts. */
  outDir: string;
  /** Outputs of the stages named in `needs:`, by stage name. */
  inputs: Record<string, StageOutputs>;
  /** Experiment seed (top-level `seed:`), for plugins that want one. */
  seed: number;
  /** Appends one history line (`_step`, `_runtime`, `_timestamp` added) and updates the summary. */
  log(metrics: Record<string, number>, step: number): void;
  /** Declares how a metric is judged (summary keeps its best); `primary` makes it the run's key metric. */
  defineMetric(name: string, options: { goal: MetricGoal; primary?: boolean }): void;
  /** Saves a PNG under media/images/ and logs it as a W&B-style image-file value at `step`. */
  media(key: string, png: Uint8Array, step: number, caption?: string): Promise<string>;
  /** Merges values into summary.json (counts, final figures). */
  summary(values: Record<string, unknown>): void;
  /** Records facts about the stage in run.json `meta` (e.g. the compute backend). */
  meta(values: Record<string, unknown>): void;
  checkpoints: Checkpoints;
  progress: Progress;
  logger: Logger;
  /** Aborted on SIGINT/SIGTERM: finish the step, save a checkpoint, return. */
  signal: AbortSignal;
}

export interface StageResult {
  /** Named artifacts, as paths inside `ctx.outDir` (relative or absolute). */
  artifacts?: Record<string, string>;
  summary?: Record<string, unknown>;
}

/**
 * What an observer's hooks get besides the event: its own configuration (the `with:` of the experiment's
 * `observers:` entry, validated against the plugin's `config`), the observed run, and a logger.
 */
export interface ObserverContext<C = unknown> {
  config: C;
  /** The observed stage, its run's name (`<experiment>/<stage>`), plugin and directory. */
  stage: string;
  runName: string;
  plugin: string;
  runDir: string;
  logger: Logger;
}

/**
 * Observer hooks, called by the core in this order: runStart, metrics*, checkpoint*, runEnd. They run in the
 * worker beside the observed stage; `checkpoint` is awaited before the stage goes on, so the checkpoint is
 * still there. `runEnd` comes for every end the worker lives to see: finished, stopped, or failed (with the
 * error); a worker killed outright (SIGKILL, a lost host) calls nothing.
 */
export interface PluginHooks<C = unknown> {
  runStart?(event: { runId: string; stage: string; plugin: string }, ctx: ObserverContext<C>): void | Promise<void>;
  metrics?(event: { runId: string; step: number; metrics: Record<string, number> }, ctx: ObserverContext<C>): void | Promise<void>;
  checkpoint?(event: { runId: string; checkpoint: CheckpointInfo }, ctx: ObserverContext<C>): void | Promise<void>;
  runEnd?(
    event: { runId: string; status: 'finished' | 'stopped' | 'failed'; artifacts: Record<string, string>; error?: string },
    ctx: ObserverContext<C>,
  ): void | Promise<void>;
}

export interface Plugin<S extends z.ZodType = z.ZodType> {
  /** Unique, kebab-case (`vqgan-finetune`). */
  name: string;
  /** One line for `minidalle plugins`. */
  description: string;
  /**
   * Behaviour version: part of the stage fingerprint, so a plugin whose results change (new loss, new
   * checkpoint layout) bumps it and finished runs of the old code are not reused.
   */
  version?: string;
  /** Schema of the stage's `with:` block: every field has a default or is required; unknown keys are errors. */
  config: S;
  run(ctx: StageContext<z.output<S>>): Promise<StageResult>;
  /** Observer hooks: active for the stages an experiment's `observers:` entry naming this plugin watches. */
  hooks?: PluginHooks<z.output<S>>;
}

/** Identity function that gives a plugin object its types. */
export function definePlugin<S extends z.ZodType>(plugin: Plugin<S>): Plugin<S> {
  return plugin;
}
