/**
 * `minidalle worker`: runs one stage of one run. Started by an executor (locally, or over ssh), it reads its
 * StageSpec from stdin, runs the plugin with a StageContext backed by the run store, and reports progress and
 * the result as events on stdout (see executors/protocol.ts).
 */
import { isAbsolute, relative, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { encodeEvent, EXIT, type OrchestratorMessage, type StageSpec, type WorkerEvent } from './executors/protocol.js';
import { setThreadShare } from './threads.js';
import { loadPlugins } from './plugins/registry.js';
import { createStageContext, notify, type Observer } from './context.js';
import type { Logger } from './plugins/types.js';
import { resolveConfigRefs } from './refs.js';
import { RunStore } from './runs/index.js';
import { configSecretValues, scrub, secretValues } from './secrets.js';

function emit(e: WorkerEvent): void {
  process.stdout.write(encodeEvent(e));
}

/** A message line from the orchestrator (executors/protocol.ts), after the spec. */
function onMessage(line: string, state: { threads?: number }): void {
  let m: OrchestratorMessage;
  try {
    m = JSON.parse(line) as OrchestratorMessage;
  } catch {
    process.stderr.write(`warning: ignoring a line from the orchestrator that is not a message: ${line.slice(0, 80)}\n`);
    return;
  }
  if (m.type !== 'threads' || m.threads === state.threads) return;
  // the first share is the one compute starts with (its start-up line says so); later ones are news
  if (state.threads !== undefined) process.stdout.write(`compute: now ${m.threads} thread${m.threads === 1 ? '' : 's'} (${m.stages} local stage${m.stages === 1 ? '' : 's'} running)\n`);
  state.threads = m.threads;
  setThreadShare(m.threads);
}

async function readSpec(): Promise<{ spec: StageSpec; stdinClosed: Promise<void> }> {
  const rl = createInterface({ input: process.stdin });
  // one listener from the start: the spec and the first messages may arrive in one chunk
  const state: { threads?: number } = {};
  let spec: ((line: string) => void) | undefined;
  const first = new Promise<string>((res, rej) => {
    spec = res;
    rl.once('close', () => rej(new Error('no stage spec on stdin: `minidalle worker` is started by `minidalle run`, not by hand')));
  });
  rl.on('line', (line) => {
    if (spec) {
      spec(line);
      spec = undefined;
    } else onMessage(line, state);
  });
  const stdinClosed = new Promise<void>((res) => rl.once('close', () => res()));
  return { spec: JSON.parse(await first) as StageSpec, stdinClosed };
}

export async function runWorker(): Promise<number> {
  const { spec, stdinClosed } = await readSpec();
  // A remote worker's secrets and host env came with the spec on stdin: they live in this process's memory and
  // reach the plugin's own child processes, never a file or a command line.
  if (spec.env) Object.assign(process.env, spec.env);
  // The environment's secrets and the values under secret-named keys of the stage's and the observers' config.
  const secrets = [...secretValues(), ...configSecretValues(spec.config), ...configSecretValues(spec.observers)];
  const controller = new AbortController();
  let signals = 0;
  // Signals come from the orchestrator (the worker has its own process group): SIGTERM once to stop gracefully,
  // then SIGKILL. A second signal sent by hand still means "stop now".
  const stop = (why: string): void => {
    if (signals++ > 0) process.exit(130);
    process.stderr.write(`stopping (${why}): finishing the current step and saving a checkpoint\n`);
    controller.abort(new Error(why));
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  void stdinClosed.then(() => controller.signal.aborted || stop('the orchestrator went away'));

  const logger: Logger = {
    info: (m: string) => process.stdout.write(`${scrub(m, secrets)}\n`),
    warn: (m: string) => process.stderr.write(`warning: ${scrub(m, secrets)}\n`),
    error: (m: string) => process.stderr.write(`error: ${scrub(m, secrets)}\n`),
  };
  // Once the run has started, every end it lives to see (finished, stopped, failed) reaches the observers.
  let ended: ((status: 'stopped' | 'failed', error?: string) => Promise<void>) | undefined;
  try {
    const registry = await loadPlugins({ packages: spec.pluginPackages, projectDir: spec.projectDir });
    const plugin = registry.get(spec.plugin);
    if (!plugin) throw new Error(`plugin '${spec.plugin}' is not installed on this host`);
    // hf:/wandb: references in the plugin's model-path fields become cached folders before the stage runs.
    const progress = {
      start: (total: number, unit: string, done = 0) => emit({ type: 'progress', op: 'start', total, unit, done }),
      tick: (n = 1) => emit({ type: 'progress', op: 'tick', n }),
      end: () => emit({ type: 'progress', op: 'end' }),
    };
    const { config, resolved } = await resolveConfigRefs(plugin.config, plugin.config.parse(spec.config) as Record<string, unknown>, {
      log: logger.info,
      progress,
      signal: controller.signal,
    });
    if (Object.keys(resolved).length > 0) emit({ type: 'meta', values: { model_refs: resolved } });
    const store = new RunStore(spec.runsDir, { secrets: configSecretValues([spec.config, spec.observers]) });
    const run = await store.open(spec.runId);
    const runName = (await run.read()).name;
    const observers: Observer[] = spec.observers.map((o) => {
      const p = registry.get(o.plugin);
      if (!p) throw new Error(`observer plugin '${o.plugin}' is not installed on this host`);
      return { plugin: p, ctx: { config: p.config.parse(o.config), stage: spec.stage, runName, plugin: plugin.name, runDir: run.dir, logger } };
    });
    const { ctx, pending } = createStageContext({
      run,
      stage: spec.stage,
      config,
      inputs: spec.inputs,
      seed: spec.seed,
      signal: controller.signal,
      logger,
      observers,
      meta: (values) => emit({ type: 'meta', values }),
      progress,
    });
    await notify(observers, 'runStart', { runId: run.id, stage: spec.stage, plugin: plugin.name }, logger);
    ended = async (status, error) => {
      await pending();
      await run.flush().catch(() => {});
      await notify(observers, 'runEnd', { runId: run.id, status, artifacts: {}, ...(error === undefined ? {} : { error }) }, logger);
    };
    const result = await plugin.run(ctx);
    await pending();
    if (result.summary) run.summary(result.summary);
    const artifacts: Record<string, string> = {};
    for (const [name, p] of Object.entries(result.artifacts ?? {})) {
      const abs = isAbsolute(p) ? p : resolve(run.outDir, p);
      const rel = relative(run.dir, abs);
      if (rel.startsWith('..')) throw new Error(`artifact '${name}' (${p}) is outside the run directory; write artifacts under ctx.outDir`);
      artifacts[name] = rel;
    }
    await run.flush();
    const stopped = controller.signal.aborted;
    ended = undefined; // runEnd is called here, with the artifacts
    await notify(observers, 'runEnd', { runId: run.id, status: stopped ? 'stopped' : 'finished', artifacts }, logger);
    emit({ type: 'result', artifacts, stopped });
    return stopped ? EXIT.stopped : EXIT.finished;
  } catch (err) {
    const e = err as Error;
    if (controller.signal.aborted && e.name === 'AbortError') {
      await ended?.('stopped');
      emit({ type: 'result', artifacts: {}, stopped: true });
      return EXIT.stopped;
    }
    await ended?.('failed', scrub(e.message ?? String(err), secrets));
    // A plugin error may carry the exit code of a program it ran (command stages): retry.on_exit_codes matches it.
    const exitCode = (e as { exitCode?: unknown }).exitCode;
    emit({ type: 'error', message: scrub(e.message ?? String(err), secrets), stack: e.stack ? scrub(e.stack, secrets) : undefined, ...(typeof exitCode === 'number' ? { exitCode } : {}) });
    return EXIT.failed;
  }
}
