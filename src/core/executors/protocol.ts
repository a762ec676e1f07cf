/**
 * The worker protocol: the orchestrator starts `minidalle worker`, writes one StageSpec JSON line to its stdin
 * and keeps stdin open (its end means the orchestrator is gone: the worker stops gracefully); later lines are
 * OrchestratorMessages (a local worker's share of the cores). The worker writes
 * events to stdout as lines starting with EVENT_MARK; every other stdout/stderr line is the stage's output.
 * Secrets travel only in the spec on stdin (and the environment), never through a file.
 */
import type { StageOutputs } from '../plugins/types.js';

export const EVENT_MARK = '\u001eminidalle-event ';

export interface StageSpec {
  runId: string;
  runsDir: string;
  stage: string;
  plugin: string;
  /** The stage's `with:` with `${stages.…}` references resolved; the worker validates it again. */
  config: Record<string, unknown>;
  inputs: Record<string, StageOutputs>;
  seed: number;
  projectDir: string;
  pluginPackages: string[];
  /** The experiment's `observers:` entries that watch this stage: plugin name and validated `with:`. */
  observers: { plugin: string; config: Record<string, unknown> }[];
  /**
   * Environment the worker adds to its own before anything runs: how a remote worker receives the
   * orchestrator's secrets (on stdin, like the rest of the spec) and its host's `env`.
   */
  env?: Record<string, string>;
}

/** What the orchestrator may write to a worker's stdin after the spec, one JSON line each. */
export type OrchestratorMessage = { type: 'threads'; threads: number; stages: number };

export function encodeMessage(m: OrchestratorMessage): string {
  return `${JSON.stringify(m)}\n`;
}

export type WorkerEvent =
  | { type: 'progress'; op: 'start'; total: number; unit: string; done: number }
  | { type: 'progress'; op: 'tick'; n: number }
  | { type: 'progress'; op: 'end' }
  | { type: 'meta'; values: Record<string, unknown> }
  | { type: 'result'; artifacts: Record<string, string>; stopped: boolean }
  | { type: 'error'; message: string; stack?: string; exitCode?: number };

/** Worker exit codes. */
export const EXIT = { finished: 0, failed: 1, stopped: 3 } as const;

export function encodeEvent(e: WorkerEvent): string {
  return `${EVENT_MARK}${JSON.stringify(e)}\n`;
}

export function decodeEvent(line: string): WorkerEvent | undefined {
  if (!line.startsWith(EVENT_MARK)) return undefined;
  return JSON.parse(line.slice(EVENT_MARK.length)) as WorkerEvent;
}
