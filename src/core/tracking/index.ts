/**
 * Replicas of the run store: copies of a run's files kept in step with a tracking service while a stage runs
 * (the orchestrator follows the run directory, so a crashed stage still gets its last lines out) and later by
 * `minidalle sync`. The run store stays the source of truth; a replica only ever reads it.
 */
import { startWandbReplica } from './wandb/live.js';
import type { WandbTracking } from './wandb/settings.js';

export interface StageReplicaOptions {
  /** The run store's root. */
  runsDir: string;
  runId: string;
  /** The experiment's `tracking` block. */
  tracking: { tags?: string[]; notes?: string; wandb?: WandbTracking };
  /** The store's secrets: scrubbed from everything sent and printed. */
  secrets: readonly string[];
  log: (line: string) => void;
  env?: Record<string, string | undefined>;
}

export interface StageReplicas {
  /** After the run's final status is written: flush, complete, release. Never throws. */
  stop(): Promise<void>;
}

/** Starts every replica the experiment asks for (today: W&B, when `tracking.wandb` is set). */
export function startReplicas(o: StageReplicaOptions): StageReplicas {
  const replicas: { stop(): Promise<void> }[] = [];
  if (o.tracking.wandb) {
    const w = o.tracking.wandb;
    replicas.push(
      startWandbReplica({
        runsDir: o.runsDir,
        runId: o.runId,
        tracking: { ...w, tags: w.tags ?? o.tracking.tags ?? [], notes: w.notes ?? o.tracking.notes },
        secrets: o.secrets,
        log: o.log,
        env: o.env,
      }),
    );
  }
  return {
    async stop() {
      await Promise.all(replicas.map((r) => r.stop().catch((err: unknown) => o.log(`replica: ${(err as Error).message}`))));
    },
  };
}
