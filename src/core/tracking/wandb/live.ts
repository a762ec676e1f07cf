/**
 * The live W&B replica of one stage run, in the orchestrator: every `intervalMs` it samples system metrics
 * and replays what the run's files gained; when the stage ends (finished, failed or crashed) it flushes the
 * rest and completes the W&B run. W&B being down only delays: each failed pass leaves the state where it
 * was, and what is still unsent when the stage ends is sent by `minidalle sync`.
 */
import { join } from 'node:path';
import { RunStore } from '../../runs/store.js';
import { scrub } from '../../secrets.js';
import { WandbClient } from './client.js';
import type { RetryPolicy } from './http.js';
import { RunReplayer } from './replay.js';
import { baseUrlFrom, runUrl, wandbMode, type WandbTracking } from './settings.js';
import { newState, readState, SyncLock, writeState } from './state.js';
import { SystemSampler } from './system.js';
import { wandbGroupOf, wandbRunIdFor } from './destination.js';

export interface LiveReplicaOptions {
  runsDir: string;
  runId: string;
  tracking: WandbTracking;
  /** Default: process.env. */
  env?: Record<string, string | undefined>;
  /** The store's secrets (scrubbed from everything sent and printed). */
  secrets: readonly string[];
  /** One line per event worth telling (start, outage, recovery, end). */
  log: (line: string) => void;
  /** Default: MINIDALLE_WANDB_INTERVAL_MS or 5000. */
  intervalMs?: number;
  retry?: Partial<RetryPolicy>;
}

export interface LiveReplica {
  /** Flushes what is left and completes the W&B run; never throws (a failure is a line saying `minidalle sync`). */
  stop(): Promise<void>;
}

const NOOP: LiveReplica = { stop: async () => undefined };

/** An empty file_stream this often while nothing else is sent. */
const HEARTBEAT_MS = 30_000;

/** Retry knobs from the environment (tests make them short; a user may lengthen them). */
export function envRetry(env: Record<string, string | undefined>): Partial<RetryPolicy> {
  const out: Partial<RetryPolicy> = {};
  const base = Number(env.MINIDALLE_WANDB_BACKOFF_MS);
  if (env.MINIDALLE_WANDB_BACKOFF_MS && Number.isFinite(base) && base >= 0) {
    out.baseDelayMs = base;
    out.maxDelayMs = Math.max(base, base * 8);
    out.maxRetryAfterMs = Math.max(base * 8, 1);
  }
  return out;
}

export function startWandbReplica(o: LiveReplicaOptions): LiveReplica {
  const env = o.env ?? process.env;
  const say = (m: string) => o.log(`W&B: ${scrub(m, [...o.secrets, ...(env.WANDB_API_KEY ? [env.WANDB_API_KEY] : [])])}`);
  let mode;
  let baseUrl: string;
  try {
    mode = wandbMode(env);
    baseUrl = baseUrlFrom(env);
  } catch (err) {
    say(`${(err as Error).message}; not streaming this run`);
    return NOOP;
  }
  if (mode === 'disabled') return NOOP;
  const runDir = join(o.runsDir, o.runId);
  const apiKey = env.WANDB_API_KEY ?? '';
  const sampler = new SystemSampler(runDir);
  const intervalMs = o.intervalMs ?? (Number(env.MINIDALLE_WANDB_INTERVAL_MS) || 5000);
  const entity = o.tracking.entity ?? env.WANDB_ENTITY;
  const offline = mode === 'offline' || apiKey === '';

  let lock: SyncLock | undefined;
  let replayer: RunReplayer | undefined;
  let client: WandbClient | undefined;
  let lastSent = Date.now();
  let down = false;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let current: Promise<void> = Promise.resolve();
  let pass = new AbortController();

  /** The state says where this run goes even when nothing can be sent now (offline, no key). */
  const ensureState = async () => {
    if (await readState(runDir)) return;
    const record = await new RunStore(o.runsDir, { secrets: o.secrets }).readRecord(o.runId);
    await writeState(runDir, newState({ base_url: baseUrl, entity, project: o.tracking.project, wandb_run_id: await wandbRunIdFor(o.runsDir, record), group: wandbGroupOf(record), tags: o.tracking.tags ?? [], job_type: record.plugin, notes: o.tracking.notes }));
  };

  const connect = async (signal: AbortSignal): Promise<RunReplayer> => {
    if (replayer) return replayer;
    const retry = { ...envRetry(env), maxAttempts: 4, ...o.retry };
    const state = await readState(runDir);
    let resolved = state?.entity ?? entity;
    if (!resolved) resolved = await new WandbClient({ baseUrl, apiKey, entity: '', project: o.tracking.project, retry }).viewerEntity(signal);
    if (state && !state.entity) await writeState(runDir, { ...state, entity: resolved });
    client = new WandbClient({ baseUrl, apiKey, entity: resolved, project: o.tracking.project, retry });
    replayer = new RunReplayer({ runsDir: o.runsDir, runId: o.runId, client, destination: { baseUrl, entity: resolved, project: o.tracking.project, tags: o.tracking.tags ?? [], notes: o.tracking.notes }, secrets: o.secrets, warn: say });
    return replayer;
  };

  const tick = async (): Promise<void> => {
    sampler.sample();
    if (offline || !lock) return;
    try {
      const r = await (await connect(pass.signal)).step({ final: false, complete: false });
      const sent = r.sent.history + r.sent.events + r.sent.output + r.sent.files;
      if (sent > 0) lastSent = Date.now();
      else if (Date.now() - lastSent >= HEARTBEAT_MS && !r.sealedBy) {
        // A long step logs nothing for a while: W&B would take the silent run for a dead one.
        await client!.fileStream(r.wandbRunId, {}, pass.signal);
        lastSent = Date.now();
      }
      if (down) say(`reachable again; streaming ${r.url}`);
      down = false;
    } catch (err) {
      if (pass.signal.aborted) return;
      if (!down) say(`${(err as Error).message.replace(/; nothing was lost.*$/, '')}; retrying every ${Math.round(intervalMs / 1000)} s, nothing is lost`);
      down = true;
    }
  };

  const schedule = () => {
    if (stopped) return;
    timer = setTimeout(() => {
      current = tick().finally(schedule);
    }, intervalMs);
    timer.unref();
  };

  const started = (async () => {
    try {
      await ensureState();
      if (offline) {
        say(mode === 'offline' ? `WANDB_MODE=offline: recorded locally; \`minidalle sync ${o.runId}\` sends it` : `WANDB_API_KEY is not set: recorded locally; \`minidalle sync ${o.runId}\` sends it once the key is set`);
      } else lock = await SyncLock.acquire(runDir);
      const state = await readState(runDir);
      // Without a configured entity the address is known once W&B named the key's default entity (said at the end).
      if (!offline && state?.entity) say(`streaming to ${runUrl({ baseUrl, entity: state.entity, project: state.project, runId: state.wandb_run_id })}`);
    } catch (err) {
      say(`${(err as Error).message}; not streaming this run live (\`minidalle sync ${o.runId}\` sends it later)`);
    }
    current = tick().finally(schedule);
  })();

  return {
    async stop() {
      await started;
      stopped = true;
      if (timer) clearTimeout(timer);
      pass.abort(new Error('the stage ended'));
      await current.catch(() => undefined);
      sampler.sample();
      if (offline || !lock) return;
      pass = new AbortController();
      try {
        const r = await (await connect(pass.signal)).step({ final: true, complete: true });
        say(`${r.complete ? 'synced' : 'streamed'} ${r.url}`);
      } catch (err) {
        say(`could not finish streaming run ${o.runId} (${(err as Error).message.replace(/; nothing was lost.*$/, '')}); nothing is lost: \`minidalle sync ${o.runId}\` sends the rest`);
      } finally {
        lock.release();
      }
    },
  };
}
