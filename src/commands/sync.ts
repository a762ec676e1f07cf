/**
 * `minidalle sync [run…]`: sends to W&B what the live replica could not (W&B was down, WANDB_MODE=offline,
 * no key at the time, or the orchestrator died), from the same `runs/<id>/sync/wandb.json` state, so nothing
 * is sent twice. Without arguments: every stage run with something left to send.
 */
import { join } from 'node:path';
import { RunStore, type RunRecord } from '../core/runs/index.js';
import { WandbClient } from '../core/tracking/wandb/client.js';
import { trackingOfRun } from '../core/tracking/wandb/destination.js';
import type { RetryPolicy } from '../core/tracking/wandb/http.js';
import { envRetry } from '../core/tracking/wandb/live.js';
import { RunReplayer, type ReplayReport } from '../core/tracking/wandb/replay.js';
import { baseUrlFrom, WandbConfigError, wandbMode } from '../core/tracking/wandb/settings.js';
import { readState, SyncLock, writeState } from '../core/tracking/wandb/state.js';
import { scrub } from '../core/secrets.js';

export interface SyncOptions {
  runsDir: string;
  /** Run ids or prefixes; a pipeline run stands for its stage runs. Empty: every run with something to send. */
  runs: string[];
  /** For runs whose experiment has no tracking.wandb. */
  project?: string;
  entity?: string;
  env?: Record<string, string | undefined>;
  log: (line: string) => void;
  retry?: Partial<RetryPolicy>;
}

export interface SyncOutcome {
  runId: string;
  report?: ReplayReport;
  error?: string;
}

function describe(r: ReplayReport): string {
  if (r.sealedBy) return `${r.url}: continued by run ${r.sealedBy} (same W&B run); nothing to send from here`;
  const { history, events, output, files } = r.sent;
  const total = history + events + output + files;
  const what = total === 0 ? 'up to date' : `sent ${history} history rows, ${events} system samples, ${output} log lines, ${files} files`;
  return `${r.url}: ${what}${r.complete ? ' (complete)' : ''}`;
}

export async function syncRuns(o: SyncOptions): Promise<SyncOutcome[]> {
  const env = o.env ?? process.env;
  const mode = wandbMode(env);
  if (mode !== 'online') throw new WandbConfigError(`WANDB_MODE=${env.WANDB_MODE}: nothing is sent; unset it (or set WANDB_MODE=online) to sync`);
  const apiKey = env.WANDB_API_KEY ?? '';
  if (apiKey === '') throw new WandbConfigError('WANDB_API_KEY is not set: create a key at https://wandb.ai/authorize and export WANDB_API_KEY');
  const store = new RunStore(o.runsDir);
  const secrets = [...store.secrets, apiKey];
  const say = (m: string) => o.log(scrub(m, secrets));

  const all = await store.list();
  let chosen: RunRecord[];
  if (o.runs.length > 0) {
    chosen = [];
    for (const q of o.runs) {
      const r = await (await store.open(q)).read();
      chosen.push(...(r.kind === 'pipeline' ? all.filter((c) => c.group === r.id && c.kind === 'stage') : [r]));
    }
  } else {
    chosen = [];
    for (const r of all) {
      if (r.kind !== 'stage') continue;
      const state = await readState(join(store.root, r.id));
      if (state ? !state.complete && !state.sealed_by : trackingOfRun(store, r) !== undefined) chosen.push(r);
    }
    if (chosen.length === 0) say('nothing to sync: every run with a W&B destination is complete');
  }
  // Oldest first: a run that others resumed from is settled before them.
  chosen = [...new Map(chosen.map((r) => [r.id, r])).values()].sort((a, b) => (a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1 : a.id < b.id ? -1 : 1));

  const retry = { ...envRetry(env), ...o.retry };
  const envBase = env.WANDB_BASE_URL ? baseUrlFrom(env) : undefined;
  const viewerEntities = new Map<string, string>();
  const outcomes: SyncOutcome[] = [];
  for (const record of chosen) {
    const dir = join(store.root, record.id);
    let lock: SyncLock | undefined;
    try {
      const state = await readState(dir);
      const tracking = trackingOfRun(store, record);
      const project = state?.project ?? o.project ?? tracking?.project;
      if (!project) throw new WandbConfigError(`no W&B destination: its experiment has no tracking.wandb; pass --project (and --entity)`);
      if (state?.base_url && envBase && state.base_url !== envBase) {
        throw new WandbConfigError(`it was sent to ${state.base_url} but WANDB_BASE_URL is ${envBase}; unset WANDB_BASE_URL (or set it to ${state.base_url}) to sync it`);
      }
      const baseUrl = state?.base_url || envBase || baseUrlFrom(env);
      let entity = state?.entity ?? o.entity ?? tracking?.entity ?? env.WANDB_ENTITY;
      if (!entity) {
        entity = viewerEntities.get(baseUrl) ?? (await new WandbClient({ baseUrl, apiKey, entity: '', project, retry }).viewerEntity());
        viewerEntities.set(baseUrl, entity);
      }
      lock = await SyncLock.acquire(dir);
      if (state && !state.entity) await writeState(dir, { ...state, entity });
      const client = new WandbClient({ baseUrl, apiKey, entity, project, retry });
      const replayer = new RunReplayer({
        runsDir: store.root,
        runId: record.id,
        client,
        destination: { baseUrl, entity, project, tags: tracking?.tags ?? [], notes: tracking?.notes },
        secrets: store.secrets,
        warn: (m) => say(`${record.id}: warning: ${m}`),
      });
      const ended = record.status !== 'running';
      const report = await replayer.step({ final: ended, complete: ended });
      say(`${record.id} (${record.name}): ${describe(report)}${ended ? '' : ' — the run is still running'}`);
      outcomes.push({ runId: record.id, report });
    } catch (err) {
      const error = scrub((err as Error).message, secrets);
      say(`${record.id} (${record.name}): not synced: ${error}`);
      outcomes.push({ runId: record.id, error });
    } finally {
      lock?.release();
    }
  }
  return outcomes;
}
