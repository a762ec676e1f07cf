import { z } from 'zod';
import { RunRecordError } from './errors.js';

export type RunStatus = 'running' | 'finished' | 'failed' | 'crashed' | 'stopped';
export const RUN_STATUSES: readonly RunStatus[] = ['running', 'finished', 'failed', 'crashed', 'stopped'];

export interface RunRecord {
  id: string;
  name: string;
  kind: 'pipeline' | 'stage';
  /** Experiment file path. */
  experiment?: string;
  stage?: string;
  plugin?: string;
  /** Pipeline run id a stage run belongs to. */
  group?: string;
  status: RunStatus;
  /** Run id whose checkpoints this run continues. */
  resumed_from?: string;
  /** sha256 of what determines the stage's result; used for reuse. */
  fingerprint?: string;
  /** os.hostname() or the inventory host name the stage runs on. */
  host: string;
  /** Pid of the process that owns run.json (used to detect a dead owner). */
  pid?: number;
  /** os.hostname() of that process. */
  owner_host?: string;
  created_at: string;
  started_at?: string;
  ended_at?: string;
  exit_code?: number;
  error?: string;
  /** Paths relative to the run dir. */
  outputs?: { artifacts: Record<string, string> };
  key_metric?: string;
  /** Git commit/diff, versions, compute backend, … */
  meta: Record<string, unknown>;
}

/** What `RunStore.create` needs; the store fills id, created_at, and defaults status/host/meta/pid/owner_host. */
export type RunInit = Omit<RunRecord, 'id' | 'created_at' | 'status' | 'host' | 'meta'> &
  Partial<Pick<RunRecord, 'status' | 'host' | 'meta'>>;

const isoDate = z.string().refine((s) => !Number.isNaN(Date.parse(s)), 'an ISO date string');

// Loose: fields added by other tools (a W&B run id, …) survive a read-modify-write.
const RunRecordSchema = z.looseObject({
  id: z.string().min(1),
  name: z.string(),
  kind: z.enum(['pipeline', 'stage']),
  experiment: z.string().optional(),
  stage: z.string().optional(),
  plugin: z.string().optional(),
  group: z.string().optional(),
  status: z.enum(['running', 'finished', 'failed', 'crashed', 'stopped']),
  resumed_from: z.string().optional(),
  fingerprint: z.string().optional(),
  host: z.string(),
  pid: z.number().int().optional(),
  owner_host: z.string().optional(),
  created_at: isoDate,
  started_at: isoDate.optional(),
  ended_at: isoDate.optional(),
  exit_code: z.number().int().optional(),
  error: z.string().optional(),
  outputs: z.object({ artifacts: z.record(z.string(), z.string()) }).optional(),
  key_metric: z.string().optional(),
  meta: z.record(z.string(), z.unknown()),
});

/** Parses run.json text; errors name the file, the field and what was expected. */
export function parseRunRecord(text: string, file: string): RunRecord {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new RunRecordError(file, '', `not valid JSON (${(err as Error).message})`);
  }
  const parsed = RunRecordSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new RunRecordError(file, issue.path.map(String).join('.'), issue.message);
  }
  return parsed.data as RunRecord;
}
