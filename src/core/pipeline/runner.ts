import { readFileSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import type { LoadedExperiment } from '../config/experiment.js';
import type { ProjectConfig } from '../config/project.js';
import { EXIT, type StageSpec } from '../executors/protocol.js';
import type { Executor, StageProcess } from '../executors/types.js';
import { gitState, hostName, versions } from '../meta.js';
import type { StageOutputs } from '../plugins/types.js';
import type { ProgressBoard } from '../progress.js';
import { RunStore, type RunHandle, type RunRecord, type RunStatus } from '../runs/index.js';
import { scrub, secretValues } from '../secrets.js';
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
  const store = new RunStore(project.runsDir);
  const secrets = secretValues();
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
    tags: exp.tracking.tags,
    notes: exp.tracking.notes,
  };
  await pipeline.update({ meta: commonMeta });
  board.line(`pipeline ${exp.name}: run ${pipeline.id} (${project.runsDir})`);

  const fingerprints = stageFingerprints(loaded);
  const outcomes = new Map<string, StageOutcome>();
  const outputs: Record<string, StageOutputs> = {};
  const running = new Map<string, { proc: StageProcess; done: Promise<void> }>();
  const maxParallel = options.maxParallel ?? exp.max_parallel ?? project.max_parallel;
  const forced = (stage: string) => options.rerun === true || (Array.isArray(options.rerun) && options.rerun.includes(stage));
  let stopping = false;
  const onAbort = (): void => {
    stopping = true;
    for (const r of running.values()) r.proc.stop();
  };
  options.signal?.addEventListener('abort', onAbort, { once: true });

  const startStage = async (name: string): Promise<void> => {
    const stage = exp.stages[name]!;
    const fingerprint = fingerprints[name]!;
    if (!forced(name)) {
      const reusable = await store.findReusable(fingerprint);
      if (reusable) {
        board.line(`${name}: reusing run ${reusable.id} (finished ${reusable.ended_at ?? '?'}; same plugin, config and inputs — --rerun to run it again)`);
        outputs[name] = outputsOf(reusable, store);
        outcomes.set(name, { stage: name, status: 'reused', runId: reusable.id });
        return;
      }
    }
    // --rerun means from scratch: neither reuse a finished run nor resume an interrupted one.
    const resumable = forced(name) ? undefined : await store.findResumable(fingerprint);
    const inputs = Object.fromEntries(stage.needs.map((n) => [n, outputs[n]!]));
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
        owner_host: hostName(),
      },
      { ...stage, seed: exp.seed },
    );
    await run.update({ host: stage.host, started_at: new Date().toISOString(), meta: commonMeta });
    board.line(`${name}: run ${run.id} (${stage.plugin} on ${stage.host})${resumable ? `, resuming from run ${resumable.id} (${resumable.status})` : ''}`);
    const output = run.output();
    let config: Record<string, unknown>;
    try {
      config = resolveStageRefs(stage.with, inputs) as Record<string, unknown>;
    } catch (err) {
      const error = (err as Error).message;
      await run.finish('failed', { error });
      board.line(`${name}: failed: ${error}`);
      outcomes.set(name, { stage: name, status: 'failed', runId: run.id, error });
      return;
    }
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
      observers: [...new Set(Object.values(exp.stages).map((s) => s.plugin))],
    };
    const executor = options.executors[stage.host];
    if (!executor) throw new Error(`no executor for host '${stage.host}'`);
    let result: { artifacts: Record<string, string>; stopped: boolean } | undefined;
    let error: string | undefined;
    const proc = executor.start(spec, {
      onEvent: (e) => {
        if (e.type === 'progress') {
          if (e.op === 'start') board.start(name, e.total, e.unit, e.done);
          else if (e.op === 'tick') board.tick(name, e.n);
          else board.end(name);
        } else if (e.type === 'meta') void run.update({ meta: e.values });
        else if (e.type === 'result') result = e;
        else if (e.type === 'error') {
          error = e.message;
          if (e.stack) output.line(e.stack, 'stderr');
        }
      },
      onOutput: (line, stream) => {
        output.line(line, stream);
        board.line(`[${name}] ${scrub(line, secrets)}`);
      },
    });
    await run.update({ meta: { worker_pid: proc.pid } });
    const done = proc.exited.then(async ({ code, signal }) => {
      board.end(name);
      let status: Exclude<RunStatus, 'running'>;
      if (code === EXIT.finished && result && !result.stopped) status = 'finished';
      else if (code === EXIT.stopped || result?.stopped) status = 'stopped';
      else if (code === EXIT.failed) status = 'failed';
      else status = 'crashed';
      const why = error ?? (status === 'crashed' ? `worker exited with ${signal ? `signal ${signal}` : `code ${code}`}` : undefined);
      output.close();
      await run.finish(status, {
        exit_code: code ?? undefined,
        error: why,
        outputs: status === 'finished' ? { artifacts: result!.artifacts } : undefined,
      });
      if (status === 'finished') outputs[name] = outputsOf(await run.read(), store);
      board.line(`${name}: ${status}${why ? `: ${why}` : ''} (run ${run.id})`);
      outcomes.set(name, { stage: name, status, runId: run.id, error: why });
      running.delete(name);
    });
    running.set(name, { proc, done });
  };

  // Scheduler: start every stage whose needs are done, up to maxParallel at once.
  const pending = [...loaded.order];
  while (pending.length > 0 || running.size > 0) {
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
      if (running.size >= maxParallel || !needs.every((n) => outcomes.has(n))) continue;
      pending.splice(pending.indexOf(name), 1);
      await startStage(name);
    }
    if (running.size > 0) await Promise.race([...running.values()].map((r) => r.done));
    else if (pending.length > 0 && pending.every((n) => !exp.stages[n]!.needs.every((d) => outcomes.has(d)))) {
      throw new Error(`internal: stages ${pending.join(', ')} can never start`);
    }
  }
  options.signal?.removeEventListener('abort', onAbort);

  const stages = loaded.order.map((n) => outcomes.get(n)!);
  const ok = stages.every((s) => s.status === 'finished' || s.status === 'reused');
  const status: RunStatus = ok ? 'finished' : stopping || stages.some((s) => s.status === 'stopped') ? 'stopped' : 'failed';
  await pipeline.finish(status, {
    meta: { stages: Object.fromEntries(stages.map((s) => [s.stage, { status: s.status, run: 'runId' in s ? s.runId : undefined }])) },
  });
  return { pipelineRunId: pipeline.id, status, stages };
}
