/**
 * The per-destination sync state `runs/<id>/sync/wandb.json`: how far the replica got. Both the live replica
 * and `minidalle sync` read and advance it, only after W&B acknowledged, so an outage delays and a re-send
 * (same lines at the same offsets) is idempotent. It never holds the API key.
 */
import { closeSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { writeFileAtomic } from '../../runs/fs-util.js';
import { isErrnoCode } from '../../runs/fs-util.js';
import { MinidalleError } from '../../errors.js';

export const SYNC_DIR = 'sync';
export const STATE_FILE = 'wandb.json';
/** System metrics the orchestrator sampled while the stage ran (replayed as wandb-events.jsonl). */
export const SYSTEM_FILE = 'system.jsonl';

/** Where a local stream is read up to, and where its next line goes on the server. */
export interface StreamPosition {
  /** Bytes of the local file consumed. */
  bytes: number;
  /** Line number (file_stream offset) the next line is sent at. */
  offset: number;
  /** Inode of the file read: a history rewritten in place (a retry drops the steps after its checkpoint) is read again from its start. */
  ino?: number;
}

export type StreamName = 'history' | 'events' | 'output';

export interface WandbSyncState {
  version: 1;
  base_url: string;
  entity?: string;
  project: string;
  /** The W&B run id: this run's own id, or the first run of its resume chain. */
  wandb_run_id: string;
  group?: string;
  tags: string[];
  job_type?: string;
  notes?: string;
  /** Offsets of this segment were settled (max of the parent's state and the server's RunResumeStatus). */
  segment_started: boolean;
  streams: Record<StreamName, StreamPosition>;
  /** The last `_step` W&B holds for this W&B run; lines at or below it are not sent again. */
  last_step: number | null;
  /** The last `_runtime` sent (after adding runtime_base). */
  last_runtime: number;
  /** Added to this segment's `_runtime`, so a resumed run's clock continues. */
  runtime_base: number;
  /** What W&B's summary held when this segment started (merged under this run's summary). */
  summary_base: Record<string, unknown>;
  summary_sha256?: string;
  /** W&B run file name → sha256 of the bytes uploaded. */
  files: Record<string, string>;
  /** Uploaded but not yet listed in an acknowledged file_stream `uploaded`. */
  pending_uploaded: string[];
  /** Artifacts pushed for this run: `name:version` → digest. */
  artifacts: Record<string, { name: string; version: string; digest: string; pushed_at: string }>;
  /** History lines not sent because W&B already had their step, or because they were not JSON. */
  skipped: { old_step: number; unreadable: number };
  /** A resumed run continues this W&B run from here on: nothing more is sent from this one. */
  sealed_by?: string;
  /** The final file_stream (complete, exitcode) was acknowledged. */
  complete: boolean;
  updated_at: string;
}

export function syncDir(runDir: string): string {
  return join(runDir, SYNC_DIR);
}

export function newState(init: Pick<WandbSyncState, 'base_url' | 'entity' | 'project' | 'wandb_run_id' | 'group' | 'tags' | 'job_type' | 'notes'>): WandbSyncState {
  const zero = (): StreamPosition => ({ bytes: 0, offset: 0 });
  return {
    version: 1,
    ...init,
    segment_started: false,
    streams: { history: zero(), events: zero(), output: zero() },
    last_step: null,
    last_runtime: 0,
    runtime_base: 0,
    summary_base: {},
    files: {},
    pending_uploaded: [],
    artifacts: {},
    skipped: { old_step: 0, unreadable: 0 },
    complete: false,
    updated_at: new Date().toISOString(),
  };
}

export class SyncStateError extends MinidalleError {
  override name = 'SyncStateError';
}

export async function readState(runDir: string): Promise<WandbSyncState | undefined> {
  const file = join(syncDir(runDir), STATE_FILE);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if (isErrnoCode(err, 'ENOENT')) return undefined;
    throw err;
  }
  let raw: Partial<WandbSyncState>;
  try {
    raw = JSON.parse(text) as Partial<WandbSyncState>;
  } catch (err) {
    throw new SyncStateError(`${file}: not valid JSON (${(err as Error).message}); delete it to send the run again from the start (offsets make that safe)`);
  }
  if (raw.version !== 1 || typeof raw.wandb_run_id !== 'string' || typeof raw.project !== 'string' || !raw.streams) {
    throw new SyncStateError(`${file}: not a minidalle W&B sync state (version 1 with wandb_run_id, project, streams); delete it to send the run again from the start`);
  }
  const base = newState({ base_url: raw.base_url ?? '', entity: raw.entity, project: raw.project, wandb_run_id: raw.wandb_run_id, group: raw.group, tags: raw.tags ?? [], job_type: raw.job_type, notes: raw.notes });
  return { ...base, ...raw, streams: { ...base.streams, ...raw.streams }, skipped: { ...base.skipped, ...raw.skipped } } as WandbSyncState;
}

/** Synchronous read for `ls`/`show` (URLs only); undefined when absent or unreadable. */
export function readStateSync(runDir: string): WandbSyncState | undefined {
  try {
    return JSON.parse(readFileSync(join(syncDir(runDir), STATE_FILE), 'utf8')) as WandbSyncState;
  } catch {
    return undefined;
  }
}

export async function writeState(runDir: string, state: WandbSyncState): Promise<void> {
  await mkdir(syncDir(runDir), { recursive: true });
  state.updated_at = new Date().toISOString();
  await writeFileAtomic(join(syncDir(runDir), STATE_FILE), `${JSON.stringify(state, null, 2)}\n`);
}

/** Records an artifact pushed for a run (the checkpoint-push plugin calls it after pushArtifact). */
export async function recordArtifact(runDir: string, pushed: { name: string; version: string; digest: string }): Promise<void> {
  const state = await readState(runDir);
  if (!state) throw new SyncStateError(`${join(syncDir(runDir), STATE_FILE)} does not exist: the run has no W&B destination yet`);
  state.artifacts[`${pushed.name}:${pushed.version}`] = { ...pushed, pushed_at: new Date().toISOString() };
  await writeState(runDir, state);
}

/**
 * One replayer per run at a time (the live replica or `minidalle sync`): `sync/wandb.lock` holds pid and host;
 * one left by a dead process on this host is taken over.
 */
export class SyncLock {
  private constructor(private readonly file: string) {}

  static async acquire(runDir: string): Promise<SyncLock> {
    await mkdir(syncDir(runDir), { recursive: true });
    const file = join(syncDir(runDir), 'wandb.lock');
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fd = openSync(file, 'wx');
        writeSync(fd, JSON.stringify({ pid: process.pid, host: hostname() }));
        closeSync(fd);
        return new SyncLock(file);
      } catch (err) {
        if (!isErrnoCode(err, 'EEXIST')) throw err;
        let owner: { pid?: number; host?: string } = {};
        try {
          owner = JSON.parse(readFileSync(file, 'utf8')) as typeof owner;
        } catch {
          /* torn or empty: treated as stale below */
        }
        if (owner.host !== undefined && owner.host !== hostname()) {
          throw new SyncStateError(`${file}: the run is being sent to W&B by pid ${owner.pid} on ${owner.host}; if that process is gone, delete the file`);
        }
        if (typeof owner.pid === 'number' && owner.pid !== process.pid && alive(owner.pid)) {
          throw new SyncStateError(`the run is being sent to W&B by pid ${owner.pid} (live, while its stage runs): wait for it to end, then sync`);
        }
        rmSync(file, { force: true });
      }
    }
    throw new SyncStateError(`${file}: could not take the sync lock`);
  }

  release(): void {
    rmSync(this.file, { force: true });
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return !isErrnoCode(err, 'ESRCH');
  }
}
