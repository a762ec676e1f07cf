/**
 * Running a sweep: each member is an ordinary pipeline (`runPipeline`), up to `max_parallel` at once, all
 * recorded in one sweep record. Stages that members share (same fingerprint: the data stage of a learning-rate
 * sweep) run once: the first member takes the stage's lock, the others wait on it and reuse the finished run.
 * A sweep is identified by its fingerprint, so running the same command again continues the same sweep and
 * runs only the members that have not finished (a member stopped mid-stage resumes from its checkpoint).
 */
import { hostname } from 'node:os';
import { Placer } from '../executors/placement.js';
import { runPipeline, type PipelineResult, type RunPipelineOptions } from '../pipeline/runner.js';
import { ProgressBoard } from '../progress.js';
import { RunStore, tryLockFingerprint, type FingerprintLock, type RunRecord } from '../runs/index.js';
import { MinidalleError } from '../errors.js';
import { configSecretValues, consoleSecrets, scrub } from '../secrets.js';
import { median, valueAtStep } from './history.js';
import type { SweepMember, SweepPlan } from './plan.js';
import { SweepStore, type MemberStatus, type SweepMemberRecord, type SweepRecord, type SweepStatus } from './record.js';

export interface RunSweepOptions extends Omit<RunPipelineOptions, 'meta' | 'rerun' | 'whenBusy'> {
  /** Called after each member ends (with the record as written); tests use it to stop a sweep part-way. */
  onMemberEnd?: (member: SweepMemberRecord, record: SweepRecord) => void;
  /** How often early stopping looks at the running members' histories (ms). */
  earlyStopPollMs?: number;
}

export interface SweepResult {
  id: string;
  status: SweepStatus;
  record: SweepRecord;
  /** Members this call ran (the others had finished before). */
  ran: number[];
}

export class SweepBusyError extends MinidalleError {
  override name = 'SweepBusyError';
}

/** Board lines and progress bars of one member, prefixed with `m<index>` so parallel members stay apart. */
class MemberBoard extends ProgressBoard {
  constructor(
    private readonly inner: ProgressBoard,
    private readonly prefix: string,
  ) {
    super({ write: () => true });
  }
  override start(name: string, total: number, unit: string, done?: number): void {
    this.inner.start(`${this.prefix}/${name}`, total, unit, done);
  }
  override tick(name: string, n?: number): void {
    this.inner.tick(`${this.prefix}/${name}`, n);
  }
  override end(name: string): void {
    this.inner.end(`${this.prefix}/${name}`);
  }
  override line(text: string): void {
    this.inner.line(`${this.prefix} ${text}`);
  }
}

const DONE: MemberStatus[] = ['finished', 'early_stopped'];

function describeValues(values: Record<string, unknown>): string {
  return Object.entries(values)
    .map(([k, v]) => `${k.replace(/^stages\./, '').replace('.with.', '.')}=${JSON.stringify(v)}`)
    .join(' ');
}

/** Runs (or continues) a planned sweep. */
export async function runSweep(plan: SweepPlan, options: RunSweepOptions): Promise<SweepResult> {
  const { project, board } = options;
  const secrets = [...consoleSecrets(plan.members[0]!.loaded.experiment), ...plan.members.flatMap((m) => configSecretValues(m.loaded.experiment))];
  const store = new RunStore(project.runsDir, { secrets });
  const sweeps = new SweepStore(project.runsDir, store.secrets);
  const say = (text: string) => board.line(scrub(text, secrets));

  const lockKey = `sweep-${plan.fingerprint}`;
  const attempt = tryLockFingerprint(store.root, lockKey, `sweep ${plan.name}`);
  if (!('lock' in attempt)) {
    const o = attempt.owner;
    throw new SweepBusyError(`pid ${o.pid} on ${o.host} (${o.what}, since ${o.since}) is running this same sweep (${attempt.file}); wait for it or stop it`);
  }
  const lock: FingerprintLock = attempt.lock;
  try {
    return await runLocked(plan, options, store, sweeps, say);
  } finally {
    lock.release();
  }
}

async function runLocked(plan: SweepPlan, options: RunSweepOptions, store: RunStore, sweeps: SweepStore, say: (t: string) => void): Promise<SweepResult> {
  const existing = (await sweeps.list()).find((r) => r.fingerprint === plan.fingerprint);
  const now = () => new Date().toISOString();
  let record: SweepRecord;
  if (existing) {
    record = existing;
    const done = record.members.filter((m) => DONE.includes(m.status)).length;
    if (record.status === 'finished') {
      say(`sweep ${record.id} (${plan.name}): finished already (${done} of ${record.members.length} members); \`minidalle sweep ${record.id}\` ranks them`);
      return { id: record.id, status: 'finished', record, ran: [] };
    }
    say(`sweep ${record.id} (${plan.name}): continuing a ${record.status} sweep: ${done} of ${record.members.length} members done, running the other ${record.members.length - done}`);
    // Settings that do not change what the members compute may change between attempts.
    Object.assign(record, { status: 'running', pid: process.pid, owner_host: hostname(), metric: plan.metric ?? record.metric, max_parallel: plan.maxParallel, early_stop: plan.earlyStop, ended_at: undefined });
  } else {
    record = {
      id: sweeps.newId(),
      kind: 'sweep',
      name: plan.name,
      experiment: plan.experiment,
      fingerprint: plan.fingerprint,
      status: 'running',
      method: plan.method,
      ...(plan.seed === undefined ? {} : { seed: plan.seed }),
      parameters: plan.parameters,
      overrides: plan.overrides,
      ...(plan.metric ? { metric: plan.metric } : {}),
      max_parallel: plan.maxParallel,
      ...(plan.earlyStop ? { early_stop: plan.earlyStop } : {}),
      stages: plan.stages,
      pid: process.pid,
      owner_host: hostname(),
      created_at: now(),
      members: plan.members.map((m) => ({ index: m.index, parameters: m.parameters, status: 'pending', pipeline_runs: [], stage_runs: {} })),
    };
    say(`sweep ${record.id} (${plan.name}): ${plan.method}, ${plan.members.length} members, ${plan.maxParallel} at once (${sweeps.dir})`);
  }
  record.started_at ??= now();
  let writing = Promise.resolve();
  const save = (): Promise<void> => (writing = writing.then(() => sweeps.write(record)));
  await save();

  const memberRecord = (i: number) => record.members[i]!;
  // A member whose pipeline got that far before the sweep was killed may be finished without its record saying so.
  const runs = await store.list();
  for (const m of plan.members) {
    const mr = memberRecord(m.index);
    if (DONE.includes(mr.status) || mr.pipeline_runs.length === 0) continue;
    const finished = plan.stages.map((s) => runs.find((r) => r.kind === 'stage' && r.status === 'finished' && r.fingerprint === m.fingerprints[s]));
    if (finished.every(Boolean)) {
      mr.status = 'finished';
      mr.stage_runs = Object.fromEntries(plan.stages.map((s, i) => [s, finished[i]!.id]));
    }
  }
  const todo = plan.members.filter((m) => !DONE.includes(memberRecord(m.index).status));
  for (const m of todo) memberRecord(m.index).status = 'pending';
  await save();

  let stopping = options.signal?.aborted ?? false;
  const controllers = new Map<number, AbortController>();
  const onAbort = () => {
    stopping = true;
    for (const c of controllers.values()) c.abort();
  };
  options.signal?.addEventListener('abort', onAbort, { once: true });

  const earlyStopped = new Set<number>();
  const watcher = plan.earlyStop ? watchEarlyStop(plan, record, store, controllers, earlyStopped, say, save, options.earlyStopPollMs ?? 1000) : undefined;

  const ran: number[] = [];
  // one set of host slots for every member: members running at once share the hosts, each host's concurrency kept
  const placer = options.placer ?? new Placer(options.project, { shared: true });
  const runMember = async (m: SweepMember): Promise<void> => {
    const mr = memberRecord(m.index);
    const controller = new AbortController();
    controllers.set(m.index, controller);
    mr.status = 'running';
    delete mr.error;
    await save();
    say(`sweep ${record.id}: member ${m.index} of ${plan.members.length}: ${describeValues(m.parameters)}`);
    ran.push(m.index);
    let result: PipelineResult | undefined;
    try {
      result = await runPipeline(m.loaded, {
        ...options,
        board: new MemberBoard(options.board, `m${m.index}`),
        signal: controller.signal,
        whenBusy: 'wait',
        placer,
        meta: { sweep: { id: record.id, member: m.index, parameters: m.parameters } },
      });
    } catch (err) {
      mr.status = 'failed';
      mr.error = (err as Error).message;
    } finally {
      controllers.delete(m.index);
    }
    if (result) {
      mr.pipeline_runs.push(result.pipelineRunId);
      for (const s of result.stages) if ('runId' in s) mr.stage_runs[s.stage] = s.runId;
      mr.status = earlyStopped.has(m.index) ? 'early_stopped' : result.status === 'finished' ? 'finished' : result.status === 'stopped' ? 'stopped' : 'failed';
      const bad = result.stages.find((s) => s.status !== 'finished' && s.status !== 'reused');
      if (mr.status === 'failed' && bad) mr.error = `${bad.stage}: ${bad.status === 'skipped' ? bad.reason : bad.status === 'reused' ? '' : (bad.error ?? bad.status)}`;
    }
    await save();
    say(`sweep ${record.id}: member ${m.index}: ${mr.status.replace('_', ' ')}${mr.error ? ` (${mr.error})` : ''}`);
    options.onMemberEnd?.(mr, record);
  };

  // Members in order, up to max_parallel at once; none starts once the sweep is stopping.
  const queue = [...todo];
  const active = new Set<Promise<void>>();
  while (queue.length > 0 || active.size > 0) {
    while (!stopping && queue.length > 0 && active.size < plan.maxParallel) {
      const task: Promise<void> = runMember(queue.shift()!).finally(() => active.delete(task));
      active.add(task);
    }
    if (active.size === 0) break;
    await Promise.race(active);
  }
  options.signal?.removeEventListener('abort', onAbort);
  await watcher?.stop();

  const statuses = record.members.map((m) => m.status);
  record.status = statuses.every((st) => DONE.includes(st)) ? 'finished' : stopping || statuses.includes('stopped') ? 'stopped' : 'failed';
  record.ended_at = now();
  await save();
  const done = statuses.filter((st) => DONE.includes(st)).length;
  say(`sweep ${record.id}: ${record.status} (${done} of ${record.members.length} members done)${record.status === 'finished' ? '' : '; run the same command again to finish the others'}`);
  return { id: record.id, status: record.status, record, ran };
}

/**
 * The median stopping rule: a running member whose metric, at the first value logged at or after `step`, is worse
 * than the median of the values of at least `min_members` other members at that step is stopped (gracefully: its
 * stage checkpoints). Each member is judged once; the decision is recorded in the sweep record.
 */
function watchEarlyStop(
  plan: SweepPlan,
  record: SweepRecord,
  store: RunStore,
  controllers: Map<number, AbortController>,
  earlyStopped: Set<number>,
  say: (t: string) => void,
  save: () => Promise<void>,
  pollMs: number,
): { stop: () => Promise<void> } {
  const rule = plan.earlyStop!;
  const metric = plan.metric!;
  const stage = metric.stage ?? plan.stages[plan.stages.length - 1]!;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();
  let stopped = false;
  const look = async (): Promise<void> => {
    const judge = [...controllers.keys()].filter((i) => !record.members[i]!.early_stop);
    if (judge.length === 0) return;
    const runs: RunRecord[] = await store.list();
    const values = new Map<number, number>();
    for (const m of plan.members) {
      const v = valueAtStep(store, runs, m.fingerprints[stage]!, metric.name, rule.step);
      if (v !== undefined) values.set(m.index, v);
    }
    for (const i of judge) {
      const value = values.get(i);
      if (value === undefined) continue;
      // Members that reached the step before this one did: the judged ones, and any that ended past it.
      const others = [...values.keys()].filter((j) => j !== i && (record.members[j]!.early_stop || !controllers.has(j)));
      if (others.length < rule.min_members) continue;
      const med = median(others.map((j) => values.get(j)!));
      const worse = metric.goal === 'minimize' ? value > med : value < med;
      record.members[i]!.early_stop = { step: rule.step, value, median: med, over: others, stopped: worse };
      if (worse && controllers.has(i)) {
        earlyStopped.add(i);
        const show = (x: number) => Number(x.toPrecision(5));
        say(`sweep ${record.id}: member ${i}: ${metric.name} = ${show(value)} at step ≥ ${rule.step} is worse than the median ${show(med)} of members ${others.join(', ')}: stopping it (median rule)`);
        controllers.get(i)!.abort();
      }
      await save();
    }
  };
  const tick = () => {
    running = look()
      .catch((err: unknown) => say(`sweep ${record.id}: early stopping could not read the members' histories: ${(err as Error).message}`))
      .finally(() => {
        if (!stopped) timer = setTimeout(tick, pollMs);
      });
  };
  timer = setTimeout(tick, pollMs);
  return {
    stop: async () => {
      stopped = true;
      if (timer) clearTimeout(timer);
      await running;
    },
  };
}
