/**
 * Sweep records: `<runs>/sweeps/<id>.json`, one per sweep, written atomically by the process that runs it.
 * The members are ordinary pipeline runs whose run.json (and every stage run they start) carries
 * `meta.sweep = { id, member, parameters }`; the record lists, per member, its parameter values, status, pipeline
 * runs and the stage runs that hold its results (own or reused), so the ranking, a replica (one W&B group per
 * sweep) and a second `minidalle run` (which finishes only the missing members) can all read it.
 */
import { mkdir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { newRunId } from '../runs/ids.js';
import { isErrnoCode, writeFileAtomic } from '../runs/fs-util.js';
import { AmbiguousRunIdError, RunRecordError } from '../runs/errors.js';
import { scrubDeep } from '../secrets.js';
import { MinidalleError } from '../errors.js';
import type { ParameterSpec } from './parameters.js';

export type MemberStatus = 'pending' | 'running' | 'finished' | 'failed' | 'stopped' | 'early_stopped';
export type SweepStatus = 'running' | 'finished' | 'failed' | 'stopped';

export interface EarlyStopDecision {
  step: number;
  value: number;
  /** Median of the other members' values at that step. */
  median: number;
  /** Members the median was taken over. */
  over: number[];
  stopped: boolean;
}

export interface SweepMemberRecord {
  index: number;
  /** Override path → the value this member runs with. */
  parameters: Record<string, unknown>;
  status: MemberStatus;
  /** Every pipeline run this member had, oldest first (a stopped member run again has two). */
  pipeline_runs: string[];
  /** Stage → the run that holds this member's result for it (its own, or one reused from another member). */
  stage_runs: Record<string, string>;
  error?: string;
  early_stop?: EarlyStopDecision;
}

export interface SweepMetric {
  name: string;
  goal: 'minimize' | 'maximize';
  stage?: string;
}

export interface SweepRecord {
  id: string;
  kind: 'sweep';
  name: string;
  /** Experiment file, relative to the project when inside it. */
  experiment: string;
  /** sha256 of the experiment name, method, and every member's parameters and stage fingerprints. */
  fingerprint: string;
  status: SweepStatus;
  method: 'grid' | 'random';
  seed?: number;
  parameters: Record<string, ParameterSpec>;
  /** Plain overrides every member runs with. */
  overrides: string[];
  metric?: SweepMetric;
  max_parallel: number;
  early_stop?: { rule: 'median'; step: number; min_members: number };
  /** Stage names in pipeline order. */
  stages: string[];
  pid: number;
  owner_host: string;
  created_at: string;
  started_at?: string;
  ended_at?: string;
  members: SweepMemberRecord[];
}

const MemberSchema = z.looseObject({
  index: z.number().int().nonnegative(),
  parameters: z.record(z.string(), z.unknown()),
  status: z.enum(['pending', 'running', 'finished', 'failed', 'stopped', 'early_stopped']),
  pipeline_runs: z.array(z.string()),
  stage_runs: z.record(z.string(), z.string()),
  error: z.string().optional(),
  early_stop: z.looseObject({ step: z.number(), value: z.number(), median: z.number(), over: z.array(z.number()), stopped: z.boolean() }).optional(),
});

const RecordSchema = z.looseObject({
  id: z.string().min(1),
  kind: z.literal('sweep'),
  name: z.string(),
  experiment: z.string(),
  fingerprint: z.string(),
  status: z.enum(['running', 'finished', 'failed', 'stopped']),
  method: z.enum(['grid', 'random']),
  seed: z.number().optional(),
  parameters: z.record(z.string(), z.unknown()),
  overrides: z.array(z.string()),
  metric: z.looseObject({ name: z.string(), goal: z.enum(['minimize', 'maximize']), stage: z.string().optional() }).optional(),
  max_parallel: z.number().int().positive(),
  early_stop: z.looseObject({ rule: z.literal('median'), step: z.number(), min_members: z.number() }).optional(),
  stages: z.array(z.string()),
  pid: z.number().int(),
  owner_host: z.string(),
  created_at: z.string(),
  started_at: z.string().optional(),
  ended_at: z.string().optional(),
  members: z.array(MemberSchema),
});

export class SweepNotFoundError extends MinidalleError {
  override name = 'SweepNotFoundError';
  constructor(query: string, dir: string) {
    super(`no sweep '${query}' in ${dir} (\`minidalle sweep\` lists them)`);
  }
}

/** The sweep records of one run store. */
export class SweepStore {
  readonly dir: string;

  constructor(
    runsDir: string,
    private readonly secrets: readonly string[] = [],
  ) {
    this.dir = join(runsDir, 'sweeps');
  }

  newId(): string {
    return newRunId();
  }

  async write(record: SweepRecord): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    await writeFileAtomic(join(this.dir, `${record.id}.json`), `${JSON.stringify(scrubDeep(record, this.secrets), null, 2)}\n`);
  }

  async read(id: string): Promise<SweepRecord> {
    const file = join(this.dir, `${id}.json`);
    let raw: unknown;
    try {
      raw = JSON.parse(await readFile(file, 'utf8'));
    } catch (err) {
      if (isErrnoCode(err, 'ENOENT')) throw new SweepNotFoundError(id, this.dir);
      throw new RunRecordError(file, '', `not valid JSON (${(err as Error).message})`);
    }
    const parsed = RecordSchema.safeParse(raw);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      throw new RunRecordError(file, issue.path.map(String).join('.'), issue.message);
    }
    return parsed.data as unknown as SweepRecord;
  }

  /** Every readable sweep, newest first; an unreadable file is warned about and skipped. */
  async list(onWarning: (m: string) => void = (m) => process.stderr.write(`warning: ${m}\n`)): Promise<SweepRecord[]> {
    let names: string[];
    try {
      names = (await readdir(this.dir)).filter((n) => n.endsWith('.json') && !n.startsWith('.'));
    } catch (err) {
      if (isErrnoCode(err, 'ENOENT')) return [];
      throw err;
    }
    const out: SweepRecord[] = [];
    for (const n of names) {
      try {
        out.push(await this.read(n.slice(0, -5)));
      } catch (err) {
        if (err instanceof RunRecordError) onWarning(`${err.message}; sweep skipped`);
        else throw err;
      }
    }
    return out.sort((a, b) => (a.created_at === b.created_at ? (a.id < b.id ? 1 : -1) : a.created_at < b.created_at ? 1 : -1));
  }

  /** By full id or unique prefix. */
  async open(idOrPrefix: string): Promise<SweepRecord> {
    if (!/^[A-Za-z0-9_-]+$/.test(idOrPrefix)) throw new SweepNotFoundError(idOrPrefix, this.dir);
    const ids = (await this.list(() => undefined)).map((r) => r.id);
    if (ids.includes(idOrPrefix)) return this.read(idOrPrefix);
    const candidates = ids.filter((i) => i.startsWith(idOrPrefix)).sort();
    if (candidates.length === 0) throw new SweepNotFoundError(idOrPrefix, this.dir);
    if (candidates.length > 1) throw new AmbiguousRunIdError(idOrPrefix, candidates);
    return this.read(candidates[0]!);
  }
}
