/** Which W&B run a local run belongs to, and where a run without a sync state is sent. */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import type { RunRecord } from '../../runs/record.js';
import type { RunStore } from '../../runs/store.js';
import { readState } from './state.js';
import type { WandbTracking } from './settings.js';

/**
 * A resumed run keeps its W&B run: the W&B id of the run it resumed from (from that run's sync state, else
 * the id of the first run of the chain). A run of its own is its own W&B run, under its local id.
 */
export async function wandbRunIdFor(runsDir: string, record: RunRecord, seen = new Set<string>()): Promise<string> {
  if (!record.resumed_from || seen.has(record.id)) return record.id;
  seen.add(record.id);
  const parentDir = join(runsDir, record.resumed_from);
  const parentState = await readState(parentDir);
  if (parentState) return parentState.wandb_run_id;
  if (!existsSync(join(parentDir, 'run.json'))) return record.id;
  const parent = JSON.parse(readFileSync(join(parentDir, 'run.json'), 'utf8')) as RunRecord;
  return wandbRunIdFor(runsDir, parent, seen);
}

/**
 * The W&B group of a run: the sweep it is a member of (`meta.sweep.id`, so a sweep's members compare as one
 * group), else its pipeline run.
 */
export function wandbGroupOf(record: Pick<RunRecord, 'group' | 'meta'>): string | undefined {
  const sweep = (record.meta as { sweep?: { id?: unknown } } | undefined)?.sweep;
  return typeof sweep?.id === 'string' ? `sweep-${sweep.id}` : record.group;
}

/** `tracking.wandb` of the experiment a stage run belongs to, read from its pipeline run's config.yaml. */
export function trackingOfRun(store: RunStore, record: RunRecord): WandbTracking | undefined {
  if (!record.group) return undefined;
  const file = join(store.root, record.group, 'config.yaml');
  if (!existsSync(file)) return undefined;
  const exp = parseYaml(readFileSync(file, 'utf8')) as { tracking?: { tags?: string[]; notes?: string; wandb?: WandbTracking } } | null;
  const w = exp?.tracking?.wandb;
  if (!w || typeof w.project !== 'string') return undefined;
  return { ...w, tags: w.tags ?? exp?.tracking?.tags ?? [], notes: w.notes ?? exp?.tracking?.notes };
}
