import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join, relative, resolve } from 'node:path';
import type { LoadedExperiment, StageConfig } from '../config/experiment.js';
import type { ProjectConfig } from '../config/project.js';
import { EXIT, type StageSpec } from '../executors/protocol.js';
import { Placer } from '../executors/placement.js';
import type { Executor, StageIO, StageProcess } from '../executors/types.js';
import { gitState, hostName, versions } from '../meta.js';
import type { StageOutputs } from '../plugins/types.js';
import type { ProgressBoard } from '../progress.js';
import {
  ArtifactError,
  readArtifactManifest,
  RunStore,
  tryLockFingerprint,
  verifyArtifacts,
  writeArtifactManifest,
  type FingerprintLock,
  type RunHandle,
  type RunRecord,
  type RunStatus,
} from '../runs/index.js';
import { configSecretValues, consoleSecrets, scrub } from '../secrets.js';
import { startReplicas } from '../tracking/index.js';
import { stageFingerprints } from './fingerprint.js';
import { resolveStageRefs } from './resolve-refs.js';

export type StageOutcome =
  | { stage: string; status: 'finished' | 'failed' | 'crashed' | 'stopped'; runId: string; error?: string }
  | { stage: string; status: 'reused'; runId: string }
  | { stage: string; status: 'skipped'; reason: string };

export interface PipelineResult {
  pipelineRunId: string;
  status: RunStatus;
  stages: StageOutcome[];
}

export interface RunPipelineOptions {
  project: ProjectConfig;
  /** Executors by host name. */
  executors: Record<string, Executor>;
  board: ProgressBoard;
  /** Run again from scratch (no reuse, no resume): every stage (true) or the named ones. */
  rerun?: boolean | string[];
  maxParallel?: number;
  /** Aborting it stops the pipeline gracefully (workers get SIGTERM and save a checkpoint). */
  signal?: AbortSignal;
  /** Aborting it kills the running workers at once (SIGKILL): the second Ctrl-C. */
  kill?: AbortSignal;
  /** Hash every file of a reused run's artifacts (default: sizes always, sha256 of files whose mtime/ctime changed). */
  verify?: boolean;
  /** When another process runs a stage with the same fingerprint: wait for it and reuse its result (default), or refuse. */
  whenBusy?: 'wait' | 'refuse';
  /** How often a waiting stage looks at the lock again (ms). */
  lockPollMs?: number;
  /** More run.json meta for the pipeline run and each stage run it starts (a sweep member's `sweep: { id, member, parameters }`). */
  meta?: Record<string, unknown>;
  /**
   * Host slots shared with the other pipelines this process runs at once (a sweep's members), so that together
   * they keep to each host's concurrency; default: the pipeline's own.
   */
  placer?: Placer;
}

/** Waits `ms`, or less when `stop()` turns true. */
async function pause(ms: number, stop: () => boolean): Promise<void> {
  for (const end = Date.now() + ms; Date.now() < end && !stop(); ) await new Promise((r) => setTimeout(r, Math.min(100, end - Date.now())));
}

/**
 * Before a retry resumes from checkpoint `step`, history lines after it go: the retry logs those steps again,
 * so the history keeps every step once. No checkpoint: the retry starts at step 0 and the history is emptied.
 */
async function truncateHistory(runDir: string, step: number | undefined): Promise<void> {
  const file = join(runDir, 'history.jsonl');
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    return;
  }
  const kept = text.split('\n').filter((l) => {
    if (!l.trim()) return false;
    try {
      const s = (JSON.parse(l) as { _step?: unknown })._step;
      return step !== undefined && typeof s === 'number' && s <= step;
    } catch {
      return false; // a line cut by the crash
    }
  });
  await writeFile(`${file}.tmp`, kept.map((l) => `${l}\n`).join(''));
  await rename(`${file}.tmp`, file);
}

/** Lines the worker's logger.warn writes to stderr start with this. */
const WARNING_PREFIX = 'warning: ';

/** A stage that cannot start because another process owns its fingerprint. */
class StageBlocked extends Error {}

/** True when neither the orchestrator nor the worker that wrote a run is alive on this host. */
function ownerGone(r: RunRecord, me: string): boolean {
  if ((r.owner_host ?? r.host) !== me) return false;
  const pids = [r.pid, (r.meta as { worker_pid?: unknown }).worker_pid].filter((p): p is number => typeof p === 'number' && p > 0);
  return pids.every((pid) => {
    try {
      process.kill(pid, 0);
      return pid === process.pid;
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === 'ESRCH';
    }
  });
}

/**
 * Why a finished run's artifacts cannot be reused (a file changed, grew, or was deleted), '' when they verify,
 * undefined when the run has no manifest (it finished before manifests were recorded).
 */
async function checkArtifacts(record: RunRecord, store: RunStore, full: boolean): Promise<string | undefined> {
  const dir = join(store.root, record.id);
  try {
    const manifest = await readArtifactManifest(dir);
    if (!manifest) return undefined;
    await verifyArtifacts(dir, record.outputs?.artifacts ?? {}, manifest, { full });
    return '';
  } catch (err) {
    if (err instanceof ArtifactError) return err.message;
    throw err;
  }
}

function readSummary(file: string): Record<string, unknown> {
  try {
    const { _best: _, ...values } = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
    return values;
  } catch {
    return {}; // a stage that logged nothing has no summary
  }
}

function outputsOf(record: RunRecord, store: RunStore): StageOutputs {
  const dir = join(store.root, record.id);
  return {
    runId: record.id,
    outDir: join(dir, 'out'),
    artifacts: Object.fromEntries(Object.entries(record.outputs?.artifacts ?? {}).map(([k, p]) => [k, resolve(dir, p)])),
    summary: readSummary(join(dir, 'summary.json')),
  };
}

/**
 * Runs an experiment's stages as a DAG: each stage is a run in the store grouped under one pipeline run;
 * independent stages run concurrently up to a limit; a failed stage skips its dependants while the others go
 * on; a stage that already finished with the same fingerprint is reused; one that crashed or stopped with the
 * same fingerprint is resumed from its last checkpoint.
 */
export async function runPipeline(loaded: LoadedExperiment, options: RunPipelineOptions): Promise<PipelineResult> {
  const { project, board } = options;
  const exp = loaded.experiment;
  // Secrets of the environment and the values under secret-named keys of the experiment, scrubbed everywhere.
  const store = new RunStore(project.runsDir, { secrets: configSecretValues(exp) });
  const secrets = consoleSecrets(exp);
  const git = gitState(project.projectDir);
  const inProject = relative(project.projectDir, loaded.file);
  const experimentPath = inProject.startsWith('..') ? loaded.file : inProject;
  const pipeline = await store.create(
    {
      name: exp.name,
      kind: 'pipeline',
      experiment: experimentPath,
      pid: process.pid,
      owner_host: hostName(),
    },
    exp,
  );
  if (git?.diff) writeFileSync(join(pipeline.dir, 'git.diff'), scrub(git.diff, secrets));
  const commonMeta = {
    git: git && { commit: git.commit, branch: git.branch, dirty: git.dirty, diff: git.diff ? 'git.diff' : undefined },
    versions: versions(),
    cores: availableParallelism(), // local stages running at once share them (core/threads.ts)
    tags: exp.tracking.tags,
    notes: exp.tracking.notes,
    ...options.meta,
  };
  await pipeline.update({ meta: commonMeta });
  board.line(`pipeline ${exp.name}: run ${pipeline.id} (${project.runsDir})`);

  const fingerprints = stageFingerprints(loaded);
  const outcomes = new Map<string, StageOutcome>();
  const outputs: Record<string, StageOutputs> = {};
  const running = new Map<string, { proc: Pick<StageProcess, 'stop'>; done: Promise<void> }>();
  const placer = options.placer ?? new Placer(project);
  /** Stages between "may start" and "worker started" (waiting for a lock, verifying, creating the run). */
  const launching = new Map<string, Promise<void>>();
  const maxParallel = options.maxParallel ?? exp.max_parallel ?? project.max_parallel;
  const forced = (stage: string) => options.rerun === true || (Array.isArray(options.rerun) && options.rerun.includes(stage));
  const me = hostName();
  let stopping = options.signal?.aborted ?? false;
  let wake: (() => void) | undefined;
  const onAbort = (): void => {
    stopping = true;
    for (const r of running.values()) r.proc.stop();
    wake?.();
  };
  const onKill = (): void => {
    stopping = true;
    for (const r of running.values()) r.proc.stop(true);
    wake?.();
  };
  options.signal?.addEventListener('abort', onAbort, { once: true });
  options.kill?.addEventListener('abort', onKill, { once: true });
  const warnFor = (name: string) => (m: string) => board.line(`${name}: warning: ${scrub(m, secrets)}`);

  /** Waits for the lock of a fingerprint; undefined when the pipeline stops meanwhile. Throws when refusing. */
  const acquire = async (name: string, fingerprint: string): Promise<FingerprintLock | undefined> => {
    let told = false;
    for (;;) {
      const attempt = tryLockFingerprint(store.root, fingerprint, `${exp.name}/${name} (pipeline run ${pipeline.id})`);
      if ('lock' in attempt) return attempt.lock;
      const { owner, file } = attempt;
      const who = `pid ${owner.pid} on ${owner.host} (${owner.what}, since ${owner.since})`;
      if (owner.host !== me || owner.pid <= 0) {
        throw new StageBlocked(`${who} holds ${file} for this same stage; it cannot be checked from ${me}. If that process is gone, delete the file`);
      }
      if (options.whenBusy === 'refuse') throw new StageBlocked(`${who} is running this same stage (same plugin, config and inputs); wait for it, or stop it`);
      if (!told) board.line(`${name}: waiting for ${who}, which runs this same stage; its result is reused when it finishes`);
      told = true;
      if (stopping) return undefined;
      await new Promise<void>((res) => {
        const t = setTimeout(res, options.lockPollMs ?? 250);
        wake = () => {
          clearTimeout(t);
          res();
        };
      });
      if (stopping) return undefined;
    }
  };

  const startStage = async (name: string, host: string): Promise<void> => {
    const stage = exp.stages[name]!;
    const fingerprint = fingerprints[name]!;
    let lock: FingerprintLock | undefined;
    try {
      lock = await acquire(name, fingerprint);
    } catch (err) {
      if (!(err instanceof StageBlocked)) throw err;
      board.line(`${name}: not started: ${err.message}`);
      outcomes.set(name, { stage: name, status: 'skipped', reason: err.message });
      placer.release(host);
      return;
    }
    if (!lock) {
      outcomes.set(name, { stage: name, status: 'skipped', reason: 'the pipeline was stopped' });
      board.line(`${name}: skipped (the pipeline was stopped)`);
      placer.release(host);
      return;
    }
    let handedOver = false;
    try {
      handedOver = await launch(name, stage, fingerprint, lock, host);
    } finally {
      if (!handedOver) {
        lock.release();
        placer.release(host);
      }
    }
  };

  /** Reuses, or starts a worker for, one stage while holding its lock; true when a worker now owns the lock. */
  const launch = async (name: string, stage: StageConfig, fingerprint: string, lock: FingerprintLock, host: string): Promise<boolean> => {
    if (!forced(name)) {
      const reusable = await store.findReusable(fingerprint);
      if (reusable) {
        const problem = await checkArtifacts(reusable, store, options.verify ?? false);
        if (problem) {
          const error = `cannot reuse run ${reusable.id}: ${problem}; run it again with --rerun ${name}`;
          board.line(`${name}: ${error}`);
          outcomes.set(name, { stage: name, status: 'failed', runId: reusable.id, error });
          return false;
        }
        if (problem === undefined) {
          board.line(`${name}: warning: run ${reusable.id} finished before artifact manifests were recorded, so its artifacts are reused unverified (--rerun ${name} makes a verified one)`);
        }
        board.line(`${name}: reusing run ${reusable.id} (finished ${reusable.ended_at ?? '?'}; same plugin, config and inputs — --rerun to run it again)`);
        outputs[name] = outputsOf(reusable, store);
        outcomes.set(name, { stage: name, status: 'reused', runId: reusable.id });
        return false;
      }
    }
    // A previous orchestrator died while a detached remote worker ran this stage: follow that worker again.
    const adoption = forced(name) ? undefined : await findOrphan(fingerprint);
    if (adoption) {
      placer.release(host);
      host = adoption.record.host;
      placer.claim(host);
      return start(name, stage, lock, host, store.handle(adoption.record), adoption.attach);
    }
    // --rerun means from scratch: neither reuse a finished run nor resume an interrupted one.
    const point = forced(name) ? { unusable: [] } : await store.resumePoint(fingerprint, warnFor(name));
    const resumable = point.run;
    // Whoever wrote these runs' checkpoints is gone (this process holds the fingerprint): clear what they left.
    for (const r of [...(resumable ? [resumable] : []), ...point.unusable]) {
      if (!ownerGone(r, me)) continue;
      await store.handle(r).checkpoints({ onWarning: warnFor(name) }).removeLeftovers();
    }
    const run: RunHandle = await store.create(
      {
        name: `${exp.name}/${name}`,
        kind: 'stage',
        experiment: experimentPath,
        stage: name,
        plugin: stage.plugin,
        group: pipeline.id,
        fingerprint,
        resumed_from: resumable?.id,
        pid: process.pid,
        owner_host: me,
      },
      { ...stage, seed: exp.seed },
    );
    const pluginVersion = loaded.pluginVersions[stage.plugin];
    await run.update({ host, started_at: new Date().toISOString(), meta: { ...commonMeta, ...(pluginVersion === undefined ? {} : { plugin_version: pluginVersion }) } });
    const from = point.checkpoint ? ` (step ${point.checkpoint.step}${point.checkpoint.runId === resumable?.id ? '' : ` of run ${point.checkpoint.runId}`})` : '';
    board.line(`${name}: run ${run.id} (${stage.plugin} on ${host})${resumable ? `, resuming from run ${resumable.id} (${resumable.status})${from}` : ''}`);
    if (!resumable && point.unusable.length > 0) {
      board.line(`${name}: no usable checkpoint: starting from step 0 (every checkpoint of run ${point.unusable.map((r) => r.id).join(', ')} fails its check; see the warnings above)`);
    }
    return start(name, stage, lock, host, run);
  };

  /** A crashed run of this fingerprint whose orchestrator died while its remote worker may still run, with a way to follow it. */
  const findOrphan = async (fingerprint: string) => {
    for (const record of await store.list()) {
      if (record.kind !== 'stage' || record.fingerprint !== fingerprint || record.status !== 'crashed') continue;
      if (!record.error?.startsWith('owner process') || !existsSync(join(store.root, record.id, 'remote.json'))) continue;
      const attach = await options.executors[record.host]?.attach?.(join(store.root, record.id)).catch(() => undefined);
      if (attach) return { record, attach };
    }
    return undefined;
  };

  /** Runs a stage's attempts on a created (or adopted) run; true once a worker owns the lock. */
  const start = async (
    name: string,
    stage: StageConfig,
    lock: FingerprintLock,
    host: string,
    run: RunHandle,
    adopted?: (io: StageIO) => StageProcess,
  ): Promise<boolean> => {
    if (adopted) {
      await run.update({ status: 'running', pid: process.pid, owner_host: me, ended_at: undefined, error: undefined });
      board.line(`${name}: re-attaching to run ${run.id} on ${host} (its orchestrator ended while the worker ran)`);
    }
    const inputs = Object.fromEntries(stage.needs.map((n) => [n, outputs[n]!]));
    const output = run.output();
    let config: Record<string, unknown>;
    try {
      config = resolveStageRefs(stage.with, inputs) as Record<string, unknown>;
    } catch (err) {
      const error = (err as Error).message;
      output.close();
      await run.finish('failed', { error });
      board.line(`${name}: failed: ${error}`);
      outcomes.set(name, { stage: name, status: 'failed', runId: run.id, error });
      return false;
    }
    // W&B and other replicas follow the run's files from here (so a crashed worker's last lines still go out).
    const replicas = startReplicas({ runsDir: store.root, runId: run.id, tracking: exp.tracking, secrets: store.secrets, log: (m) => board.line(`${name}: ${m}`) });
    const spec: StageSpec = {
      runId: run.id,
      runsDir: project.runsDir,
      stage: name,
      plugin: stage.plugin,
      config,
      inputs,
      seed: exp.seed,
      projectDir: project.projectDir,
      pluginPackages: project.plugins,
      observers: exp.observers.filter((o) => o.stages?.includes(name) ?? true).map((o) => ({ plugin: o.plugin, config: o.with })),
    };
    const retry = stage.retry ?? { max: 0, backoff: 0, on_exit_codes: [] };
    /** The attempt running now (a retry replaces it). */
    let current: StageProcess | undefined;
    const attemptOnce = async (at: string, attempt: number, follow?: (io: StageIO) => StageProcess) => {
      const executor = options.executors[at];
      if (!executor) throw new Error(`no executor for host '${at}'`);
      let result: { artifacts: Record<string, string>; stopped: boolean } | undefined;
      let error: string | undefined;
      let errorExit: number | undefined;
      const io: StageIO = {
        onEvent: (e) => {
          if (e.type === 'progress') {
            if (e.op === 'start') board.start(name, e.total, e.unit, e.done);
            else if (e.op === 'tick') board.tick(name, e.n);
            else board.end(name);
          } else if (e.type === 'meta') void run.update({ meta: e.values });
          else if (e.type === 'result') result = e;
          else if (e.type === 'error') {
            error = e.message;
            errorExit = e.exitCode;
            if (e.stack) output.line(e.stack, 'stderr');
          }
        },
        onOutput: (line, stream) => {
          // The worker's logger.warn lines are warnings, not errors, in output.log.
          output.line(line, stream === 'stderr' && line.startsWith(WARNING_PREFIX) ? 'warning' : stream);
          board.line(`[${name}] ${scrub(line, secrets)}`);
        },
      };
      const proc = follow ? follow(io) : executor.start(spec, io);
      current = proc;
      await run.update({ host: at, meta: { worker_pid: proc.pid, attempts: attempt } });
      if (stopping) proc.stop(options.kill?.aborted ?? false); // a Ctrl-C that came while the worker was starting
      const exit = await proc.exited;
      board.end(name);
      return { exit, result, error, errorExit };
    };
    let attemptHost = host;
    const done = (async () => {
      let adoptedProc = adopted;
      try {
        for (let attempt = (adopted ? ((await run.read()).meta as { attempts?: number }).attempts ?? 1 : 1); ; attempt++) {
          const { exit, result, error, errorExit } = await attemptOnce(attemptHost, attempt, adoptedProc);
          adoptedProc = undefined;
          const { code, signal } = exit;
          let status: Exclude<RunStatus, 'running'>;
          if (code === EXIT.finished && result && !result.stopped) status = 'finished';
          else if (code === EXIT.stopped || result?.stopped) status = 'stopped';
          else if (code === EXIT.failed) status = 'failed';
          else status = 'crashed';
          let why = error ?? exit.lost ?? (status === 'crashed' ? `worker exited with ${signal ? `signal ${signal}` : `code ${code}`}` : undefined);
          const exitCode = errorExit ?? code ?? undefined;
          const retryable = status === 'crashed' || (status === 'failed' && exitCode !== undefined && retry.on_exit_codes.includes(exitCode));
          if (retryable && attempt <= retry.max && !stopping) {
            const wait = retry.backoff * 2 ** (attempt - 1);
            board.line(`${name}: attempt ${attempt} on ${attemptHost} ${status}: ${scrub(why ?? '', secrets)}; retrying in ${wait} s (${attempt}/${retry.max}), same run ${run.id}`);
            placer.release(attemptHost);
            // another free candidate first, whatever the failure: a host that lost or crashed a worker (an OOM
            // kill is a crash) is likely to do so again; it is taken again only when nothing else is free
            const failedHost = attemptHost;
            attemptHost = '';
            await pause(wait * 1000, () => stopping);
            while (!stopping && !(attemptHost = placer.take(name, stage, new Set([failedHost])) ?? '')) await pause(250, () => stopping);
            if (!stopping) {
              const from = await run.checkpoints({ onWarning: warnFor(name) }).latest();
              await truncateHistory(run.dir, from?.step);
              board.line(`${name}: attempt ${attempt + 1} on ${attemptHost}, ${from ? `resuming from step ${from.step}${from.runId === run.id ? '' : ` of run ${from.runId}`}` : 'from step 0 (no checkpoint)'}`);
              continue;
            }
            why = `${why}; not retried: the pipeline was stopped`;
          }
          if (status === 'finished') {
            // What a later run reuses is vouched for by size and sha256 from now on.
            try {
              await writeArtifactManifest(run.dir, result!.artifacts);
            } catch (err) {
              if (!(err instanceof ArtifactError)) throw err;
              status = 'failed';
              why = err.message;
            }
          }
          output.close();
          await run.finish(status, {
            exit_code: code ?? undefined,
            error: why,
            outputs: status === 'finished' ? { artifacts: result!.artifacts } : undefined,
          });
          if (status === 'finished') outputs[name] = outputsOf(await run.read(), store);
          board.line(`${name}: ${status}${why ? `: ${scrub(why, secrets)}` : ''} (run ${run.id})`);
          outcomes.set(name, { stage: name, status, runId: run.id, error: why });
          return;
        }
      } catch (err) {
        const why = scrub((err as Error).message ?? String(err), secrets);
        output.close();
        await run.finish('failed', { error: why }).catch(() => undefined);
        board.line(`${name}: failed: ${why} (run ${run.id})`);
        outcomes.set(name, { stage: name, status: 'failed', runId: run.id, error: why });
      } finally {
        await replicas.stop();
        if (attemptHost) placer.release(attemptHost);
        lock.release();
        running.delete(name);
      }
    })();
    running.set(name, { proc: { stop: (force) => current?.stop(force) }, done });
    return true;
  };

  // Scheduler: start every stage whose needs are done, up to maxParallel at once.
  const pending = [...loaded.order];
  while (pending.length > 0 || running.size > 0 || launching.size > 0) {
    let waitingForHost = false;
    for (const name of [...pending]) {
      const needs = exp.stages[name]!.needs;
      const bad = needs.find((n) => outcomes.has(n) && !['finished', 'reused'].includes(outcomes.get(n)!.status));
      if (bad || stopping) {
        const reason = stopping ? 'the pipeline was stopped' : `'${bad}' did not finish`;
        outcomes.set(name, { stage: name, status: 'skipped', reason });
        board.line(`${name}: skipped (${reason})`);
        pending.splice(pending.indexOf(name), 1);
        continue;
      }
      if (running.size + launching.size >= maxParallel || !needs.every((n) => outcomes.has(n))) continue;
      let host: string | undefined;
      try {
        host = placer.take(name, exp.stages[name]!);
      } catch (err) {
        const reason = (err as Error).message;
        outcomes.set(name, { stage: name, status: 'skipped', reason });
        board.line(`${name}: not started: ${reason}`);
        pending.splice(pending.indexOf(name), 1);
        continue;
      }
      if (host === undefined) {
        waitingForHost = true; // every host it may use is busy: wait for one
        continue;
      }
      pending.splice(pending.indexOf(name), 1);
      const task = startStage(name, host)
        .catch((err: unknown) => {
          const error = scrub((err as Error).message ?? String(err), secrets);
          board.line(`${name}: failed to start: ${error}`);
          outcomes.set(name, { stage: name, status: 'skipped', reason: `failed to start: ${error}` });
        })
        .finally(() => launching.delete(name));
      launching.set(name, task);
    }
    const busy = [...running.values()].map((r) => r.done).concat([...launching.values()]);
    // a host may be freed by another pipeline sharing the placer (a sweep's members), not only by our own stages
    if (waitingForHost) await Promise.race([...busy, pause(250, () => stopping)]);
    else if (busy.length > 0) await Promise.race(busy);
    else if (pending.length > 0 && pending.every((n) => !exp.stages[n]!.needs.every((d) => outcomes.has(d)))) {
      throw new Error(`internal: stages ${pending.join(', ')} can never start`);
    }
  }
  options.signal?.removeEventListener('abort', onAbort);
  options.kill?.removeEventListener('abort', onKill);

  const stages = loaded.order.map((n) => outcomes.get(n)!);
  const ok = stages.every((s) => s.status === 'finished' || s.status === 'reused');
  const status: RunStatus = ok ? 'finished' : stopping || stages.some((s) => s.status === 'stopped') ? 'stopped' : 'failed';
  await pipeline.finish(status, {
    meta: { stages: Object.fromEntries(stages.map((s) => [s.stage, { status: s.status, run: 'runId' in s ? s.runId : undefined }])) },
  });
  return { pipelineRunId: pipeline.id, status, stages };
}
