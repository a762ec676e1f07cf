/**
 * A worker's share of this machine's cores, which the orchestrator updates while local stages start and end
 * (executors/local.ts). The compute layer follows it (ml/backend.ts). Why: the native kernels' thread pool spins
 * while it waits, so two training stages with a pool of 2 each on 2 cores fight over them; at one thread each they
 * did 1.8× the steps (seq2seq, 315 → 172 ms a step each).
 */
type Listener = (threads: number) => void;

const listeners = new Set<Listener>();

/** Cores each of `stages` workers on a machine of `cores` gets: as even as possible, at least 1. */
export function threadShares(cores: number, stages: number): number[] {
  return Array.from({ length: stages }, (_, i) => Math.max(1, Math.floor(cores / stages) + (i < cores % stages ? 1 : 0)));
}

/** Sets this process's share: MINIDALLE_THREADS for compute started later, and every listener now. */
export function setThreadShare(threads: number): void {
  process.env['MINIDALLE_THREADS'] = String(threads);
  for (const listener of listeners) listener(threads);
}

/** Calls `listener` on every later change of the share. */
export function onThreadShare(listener: Listener): void {
  listeners.add(listener);
}
