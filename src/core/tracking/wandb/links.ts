/** The W&B addresses of synced runs, for `ls`, `show` and `compare` (read from the sync state, no network). */
import { join } from 'node:path';
import type { RunRecord } from '../../runs/record.js';
import { groupUrl, runUrl } from './settings.js';
import { readStateSync, type WandbSyncState } from './state.js';

/** Something reached W&B: a line, a file, or the final mark. */
function synced(s: WandbSyncState | undefined): s is WandbSyncState & { entity: string } {
  if (!s?.entity || !s.base_url) return false;
  return s.complete || Object.keys(s.files ?? {}).length > 0 || Object.values(s.streams ?? {}).some((p) => p.offset > 0);
}

/** A stage run's W&B run page; undefined when nothing of it has reached W&B. */
export function wandbRunUrl(runsDir: string, runId: string): string | undefined {
  const s = readStateSync(join(runsDir, runId));
  return synced(s) ? runUrl({ baseUrl: s.base_url, entity: s.entity, project: s.project, runId: s.wandb_run_id }) : undefined;
}

/** What `show` says about W&B for a stage run: the URL, or that it waits for `minidalle sync`. */
export function wandbStatus(runsDir: string, runId: string): string | undefined {
  const s = readStateSync(join(runsDir, runId));
  if (!s) return undefined;
  const url = wandbRunUrl(runsDir, runId);
  if (!url) return `not synced yet (minidalle sync ${runId})`;
  if (s.sealed_by) return `${url} (continued by run ${s.sealed_by})`;
  return s.complete ? url : `${url} (partly synced: minidalle sync ${runId} sends the rest)`;
}

/** A pipeline run's W&B group page, from any of its synced stage runs. */
export function wandbGroupUrl(runsDir: string, pipeline: RunRecord, stageRuns: RunRecord[]): string | undefined {
  for (const r of stageRuns) {
    if (r.group !== pipeline.id) continue;
    const s = readStateSync(join(runsDir, r.id));
    if (synced(s)) return groupUrl({ baseUrl: s.base_url, entity: s.entity, project: s.project, group: s.group ?? pipeline.id });
  }
  return undefined;
}
