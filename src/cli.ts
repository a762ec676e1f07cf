/**
 * The command line: parses arguments and calls the core. Heavy modules (zod, yaml, the plugins, tfjs, sharp)
 * are imported inside the commands that need them, so `--help` starts fast.
 */
import { pathToFileURL } from 'node:url';
import yargs, { type Argv } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { MinidalleError } from './core/errors.js';

async function context() {
  const { loadProjectConfig } = await import('./core/config/project.js');
  const { loadPlugins } = await import('./core/plugins/registry.js');
  const project = await loadProjectConfig();
  const registry = await loadPlugins({ packages: project.plugins, projectDir: project.projectDir });
  return { project, registry };
}

async function load(experiment: string, overrides: string[]) {
  const { project, registry } = await context();
  const { loadExperiment } = await import('./core/config/experiment.js');
  const { placementTargets } = await import('./core/config/project.js');
  const loaded = loadExperiment(experiment, { overrides, registry, hosts: placementTargets(project), projectDir: project.projectDir });
  return { project, registry, loaded };
}

function withOverrides<T>(y: Argv<T>) {
  return y
    .positional('experiment', { type: 'string', demandOption: true, describe: 'experiment YAML file' })
    .positional('overrides', { type: 'string', array: true, default: [] as string[], describe: "overrides: a.b=1, +new.key=2, ~drop.key" });
}

export function buildCli(argv: string[]) {
  return yargs(argv)
    .scriptName('minidalle')
    .usage('$0 <command> [options]\n\nTrain, evaluate and serve DALL·E-mini-style models from experiment YAML files.')
    .option('verbose', { type: 'boolean', default: false, describe: 'print stack traces with errors' })
    .command(
      'run <experiment> [overrides..]',
      'run an experiment (stages that already finished with the same config are reused)',
      (y) =>
        withOverrides(y)
          .option('rerun', { type: 'string', array: true, describe: 'run again: all stages (no value) or the named ones' })
          .option('parallel', { type: 'number', describe: 'stages run at once (default: project config max_parallel)' })
          .option('verify', { type: 'boolean', default: false, describe: "re-hash every file of reused runs' artifacts (default: sizes, and sha256 of files changed since)" })
          .option('wait', { type: 'boolean', default: true, describe: 'wait for another process running the same stage (--no-wait: refuse)' })
          .option('sweep', { type: 'string', array: true, describe: 'run a grid sweep: key.path=a,b,c | range(start,stop[,step]) | choice(a,b); with --sweep-random: uniform(a,b) | loguniform(a,b) | int(a,b)' })
          .option('sweep-random', { type: 'number', describe: 'random search: this many members drawn from the --sweep / sweep: block parameters' })
          .option('sweep-seed', { type: 'number', describe: 'seed of a random sweep (default: the sweep block seed, else the experiment seed)' })
          .option('sweep-parallel', { type: 'number', describe: 'sweep members run at once (default: the sweep block max_parallel, else 1)' }),
      async (args) => {
        const { loaded, project, registry } = await load(args.experiment, args.overrides);
        const { runPipeline } = await import('./core/pipeline/runner.js');
        const { buildExecutors } = await import('./core/executors/inventory.js');
        const { planPlacement } = await import('./core/executors/placement.js');
        const { ProgressBoard } = await import('./core/progress.js');
        planPlacement(loaded, project); // a stage no host can run is refused before anything starts
        const board = new ProgressBoard(process.stdout);
        const executors = buildExecutors(project, (line) => board.line(line));
        const controller = new AbortController();
        const killer = new AbortController();
        let interrupts = 0;
        const onSignal = (sig: string) => {
          interrupts++;
          if (interrupts === 1) {
            process.stderr.write(`\n${sig}: stopping stages gracefully (they save a checkpoint); press Ctrl-C again to kill them\n`);
            controller.abort();
          } else if (interrupts === 2) {
            process.stderr.write(`\n${sig}: killing the stages (press Ctrl-C once more to leave without recording it)\n`);
            killer.abort();
          } else process.exit(130);
        };
        process.on('SIGINT', () => onSignal('SIGINT'));
        process.on('SIGTERM', () => onSignal('SIGTERM'));
        const rerun = args.rerun === undefined ? false : args.rerun.length === 0 || args.rerun.every((r) => r === '') ? true : args.rerun;
        const sweep = { sweep: args.sweep, random: args.sweepRandom, seed: args.sweepSeed, parallel: args.sweepParallel };
        const { wantsSweep } = await import('./core/sweep/plan.js');
        if (wantsSweep(loaded, sweep)) {
          if (rerun !== false) throw new UsageError("--rerun applies to one pipeline, not to a sweep (whose members share stages); run a member alone with its values as overrides and '~sweep'");
          if (!args.wait) throw new UsageError('--no-wait cannot be combined with a sweep: its members wait for the stages they share');
          const { runSweepCommand } = await import('./commands/sweep.js');
          process.exitCode = await runSweepCommand({
            base: loaded,
            overrides: args.overrides,
            sweep,
            project,
            registry,
            executors,
            board,
            maxParallel: args.parallel,
            verify: args.verify,
            signal: controller.signal,
            kill: killer.signal,
          });
          await Promise.all(Object.values(executors).map((e) => e.close?.()));
          return;
        }
        const result = await runPipeline(loaded, {
          project,
          executors,
          board,
          rerun,
          maxParallel: args.parallel,
          signal: controller.signal,
          kill: killer.signal,
          verify: args.verify,
          whenBusy: args.wait ? 'wait' : 'refuse',
        });
        await Promise.all(Object.values(executors).map((e) => e.close?.()));
        const line = result.stages.map((s) => `${s.stage}=${s.status}`).join(' ');
        console.log(`pipeline ${result.pipelineRunId}: ${result.status} (${line})`);
        if (result.status === 'finished' && loaded.experiment.report) {
          // the experiment asks for its report: a failure to write it is said, and does not fail the run
          const { reportCommand } = await import('./commands/report.js');
          const { join } = await import('node:path');
          const out = join(project.runsDir, result.pipelineRunId, 'report.html');
          await reportCommand({ runs: [result.pipelineRunId], runsDir: project.runsDir, out }).then(
            (r) => console.log(`report: ${r.html} (${(r.bytes / 1e6).toFixed(1)} MB; open it in a browser)`),
            (err: Error) => console.error(`report: not written: ${err.message} (try: npx minidalle report ${result.pipelineRunId})`),
          );
        }
        process.exitCode = result.status === 'finished' ? 0 : result.status === 'stopped' ? 130 : 1;
      },
    )
    .command(
      'validate <experiment> [overrides..]',
      'check an experiment and print its plan without running anything',
      (y) => withOverrides(y),
      async (args) => {
        const { loaded, project, registry } = await load(args.experiment, args.overrides);
        const { formatPlan } = await import('./commands/show.js');
        const { formatPlacement, planPlacement } = await import('./core/executors/placement.js');
        const { consoleSecrets, redactConfig, scrub } = await import('./core/secrets.js');
        // The plan goes through the same scrubbing as run/show/the run store: redacted by key, scrubbed by value.
        const secrets = consoleSecrets(loaded.experiment);
        const shown = { ...loaded, experiment: redactConfig(loaded.experiment, secrets), changedFromDefaults: redactConfig(loaded.changedFromDefaults, secrets) };
        console.log(scrub(formatPlan(shown), secrets));
        console.log(formatPlacement(planPlacement(loaded, project), project));
        if (loaded.experiment.sweep) {
          // Every member is loaded and validated too; the list shows what `run` would run.
          const { formatSweepPlan } = await import('./commands/sweep.js');
          console.log(scrub(formatSweepPlan(loaded, args.overrides, registry, project), secrets));
        }
      },
    )
    .command(
      'ls',
      'list runs: id, name, stage, status, host, start, duration, key metric',
      (y) => y.option('limit', { type: 'number', default: 50 }).option('all', { type: 'boolean', default: false, describe: 'no limit' }),
      async (args) => {
        const { project } = await context();
        const { listRuns } = await import('./commands/show.js');
        console.log(await listRuns(project.runsDir, args.all ? Infinity : args.limit));
      },
    )
    .command(
      'sweep [id]',
      'list the sweeps, or rank one sweep\'s members by its metric (with each member\'s parameters)',
      (y) =>
        y
          .positional('id', { type: 'string', describe: 'sweep id (a unique prefix is enough); none: list the sweeps' })
          .option('plot', { type: 'string', describe: 'also draw the metric against each parameter as PNG (default file: runs/sweeps/<id>.png)' }),
      async (args) => {
        const { project } = await context();
        const { sweepCommand } = await import('./commands/sweep.js');
        console.log(await sweepCommand(project.runsDir, args.id, args.plot));
      },
    )
    .command(
      'show <run>',
      'show one run: record, config, summary, checkpoints, artifacts',
      (y) => y.positional('run', { type: 'string', demandOption: true, describe: 'run id (a unique prefix is enough)' }),
      async (args) => {
        const { project } = await context();
        const { showRun } = await import('./commands/show.js');
        console.log(await showRun(project.runsDir, args.run));
      },
    )
    .command(
      'compare <runs..>',
      'compare runs: config differences and final/best metrics side by side; --plot draws their curves as a PNG',
      (y) =>
        y
          .positional('runs', { type: 'string', array: true, demandOption: true })
          .option('plot', { type: 'string', describe: 'metrics to plot from history.jsonl, comma-separated (e.g. train/loss,eval/loss)' })
          .option('out', { type: 'string', default: 'compare.png', describe: 'the PNG --plot writes' }),
      async (args) => {
        const { project } = await context();
        const { compareRuns } = await import('./commands/show.js');
        console.log(await compareRuns(project.runsDir, args.runs));
        if (args.plot !== undefined) {
          const { comparePlot } = await import('./commands/compare-plot.js');
          const r = await comparePlot({ runsDir: project.runsDir, runs: args.runs, metrics: [args.plot], out: args.out });
          for (const w of r.warnings) process.stderr.write(`warning: ${w}\n`);
          const metrics = [...new Set(r.series.map((s) => s.metric))].map((m) => `${m}: ${r.series.filter((s) => s.metric === m).length} runs`);
          console.log(`plot: ${r.out} (${metrics.join(', ')})`);
        }
      },
    )
    .command(
      'report <runs..>',
      'write one self-contained HTML report of a pipeline run (or of runs): stages, curves, images, tables, config',
      (y) =>
        y
          .positional('runs', { type: 'string', array: true, demandOption: true, describe: 'a pipeline run, or runs (ids or unique prefixes)' })
          .option('out', { type: 'string', default: 'report.html', describe: 'the HTML file to write' })
          .option('png', { type: 'boolean', default: false, describe: 'also write a one-page summary PNG beside it (same name, .png)' }),
      async (args) => {
        // the project config alone: loading the plugins (and tfjs with them) would double the time a report takes
        const { loadProjectConfig } = await import('./core/config/project.js');
        const project = await loadProjectConfig();
        const { reportCommand } = await import('./commands/report.js');
        const r = await reportCommand({ runs: args.runs.map(String), runsDir: project.runsDir, out: args.out, png: args.png });
        for (const w of r.warnings) process.stderr.write(`warning: ${w}\n`);
        console.log(`report: ${r.html} (${(r.bytes / 1e6).toFixed(2)} MB, ${r.charts} charts, ${r.images} images, ${r.seconds.toFixed(1)} s)${r.png ? `; summary ${r.png}` : ''}`);
      },
    )
    .command(
      'sync [runs..]',
      'send runs to W&B: what the live replica could not (W&B down, WANDB_MODE=offline, no key); nothing is sent twice',
      (y) =>
        y
          .positional('runs', { type: 'string', array: true, default: [] as string[], describe: 'run ids or prefixes; a pipeline run means its stages (default: every run with something left to send)' })
          .option('project', { type: 'string', describe: 'W&B project for runs whose experiment has no tracking.wandb' })
          .option('entity', { type: 'string', describe: 'W&B entity for those runs (default: WANDB_ENTITY, else the key\'s default entity)' }),
      async (args) => {
        const { project } = await context();
        const { syncRuns } = await import('./commands/sync.js');
        const outcomes = await syncRuns({ runsDir: project.runsDir, runs: args.runs.map(String), project: args.project, entity: args.entity, log: (l) => console.log(l) });
        if (outcomes.some((o) => o.error !== undefined)) process.exitCode = 1;
      },
    )
    .command(
      'hosts',
      'list the hosts of the project inventory: whether each answers, its state (TPU: READY, PREEMPTED, …), what runs on it',
      (y) => y,
      async () => {
        const { loadProjectConfig } = await import('./core/config/project.js');
        const { hostsCommand } = await import('./commands/hosts.js');
        console.log(await hostsCommand(await loadProjectConfig()));
      },
    )
    .command(
      'ui',
      'a local web app: the text → image demo (--model, re-ranked with --clip) and a live dashboard of the runs',
      (y) =>
        y
          .option('port', { type: 'number', default: 7860 })
          .option('host', { type: 'string', default: '127.0.0.1', describe: 'address to bind; anything but loopback needs --token' })
          .option('model', { type: 'string', describe: 'seq2seq-train run id (prefix) or model folder for the demo tab' })
          .option('clip', { type: 'string', describe: 'clip-train run id (prefix) or CLIP folder: scores and re-ranks the demo images' })
          .option('token', { type: 'string', describe: 'required on every request (default: MINIDALLE_UI_TOKEN)' }),
      async (args) => {
        const { loadProjectConfig } = await import('./core/config/project.js');
        const project = await loadProjectConfig();
        const { uiCommand } = await import('./commands/ui.js');
        const ui = await uiCommand({
          runsDir: project.runsDir,
          host: args.host,
          port: args.port,
          ...(args.model ? { model: args.model } : {}),
          ...(args.clip ? { clip: args.clip } : {}),
          ...(args.token ? { token: args.token } : {}),
          log: (line) => console.log(line),
        });
        await new Promise<void>((res) => {
          const stop = () => void ui.close().then(res);
          process.once('SIGINT', stop);
          process.once('SIGTERM', stop);
        });
      },
    )
    .command(
      'plugins',
      'list the installed plugins and their config schemas',
      (y) => y,
      async () => {
        const { registry } = await context();
        const { describePlugins } = await import('./commands/plugins.js');
        console.log(describePlugins(registry));
      },
    )
    .command(
      'tokenize [texts..]',
      'encode texts with a tokenizer: one JSON array of ids per text (stdin lines when no text is given)',
      (y) =>
        y
          .positional('texts', { type: 'string', array: true, default: [] as string[], describe: 'texts (with --decode: id lists such as "[0, 9, 2]")' })
          .option('tokenizer', { type: 'string', demandOption: true, describe: 'tokenizer.json, or a folder with tokenizer.json or vocab.json + merges.txt' })
          .option('special', { type: 'boolean', default: true, describe: 'add special tokens (<s> … </s>); --no-special leaves them out (and skips them when decoding)' })
          .option('max-length', { type: 'number', describe: 'truncate to N ids, special tokens included' })
          .option('decode', { type: 'boolean', default: false, describe: 'decode id lists to text (one JSON string per input)' }),
      async (args) => {
        const { tokenizeCommand } = await import('./commands/tokenize.js');
        await tokenizeCommand({ tokenizer: args.tokenizer, texts: args.texts.map(String), special: args.special, maxLength: args.maxLength, decode: args.decode });
      },
    )
    .command(
      'convert <source>',
      'convert a PyTorch (.ckpt, .bin, sharded .bin) or Flax (.msgpack) checkpoint into a model folder (config.json + model.safetensors)',
      (y) =>
        y
          .positional('source', { type: 'string', demandOption: true, describe: 'checkpoint file, or a folder holding one (HF layout, taming logs/…)' })
          .option('to', { type: 'string', demandOption: true, describe: 'the model folder to write' })
          .option('kind', { type: 'string', choices: ['vqgan', 'bart', 'clip'], describe: 'model kind (default: recognised from the tensor names)' })
          .option('dtype', { type: 'string', choices: ['float32', 'float16'], default: 'float32', describe: 'storage dtype of float tensors' })
          .option('config', { type: 'string', describe: 'model config when it is not beside the weights (taming: configs/model.yaml; HF: config.json)' })
          .option('force', { type: 'boolean', default: false, describe: 'replace a model.safetensors already in --to' })
          .option('keep-loss', { type: 'boolean', default: false, describe: "taming .ckpt: also write its LPIPS network to lpips.safetensors (vqgan-finetune's perceptual_weights)" }),
      async (args) => {
        const { convertCommand } = await import('./commands/convert.js');
        const { ProgressBoard } = await import('./core/progress.js');
        const board = new ProgressBoard(process.stdout);
        await convertCommand({
          input: args.source,
          to: args.to,
          ...(args.kind ? { kind: args.kind } : {}),
          dtype: args.dtype as 'float32' | 'float16',
          ...(args.config ? { config: args.config } : {}),
          force: args.force,
          keepLoss: args.keepLoss,
          log: (line) => board.line(line),
          progress: { start: (total) => board.start('convert', total, 'tensors'), tick: (n) => board.tick('convert', n), end: () => board.end('convert') },
        });
      },
    )
    .command(
      'generate [prompt..]',
      'generate images for prompts with a trained text → image model: PNGs, a labelled grid and generations.json',
      (y) =>
        y
          .positional('prompt', { type: 'string', array: true, default: [] as string[], describe: 'prompts, e.g. "a red circle on the left"' })
          .option('model', { type: 'string', demandOption: true, describe: 'seq2seq-train run id (a unique prefix is enough), model folder, hf:<owner>/<repo>[@rev] or wandb:<entity>/<project>/<name>:<alias>' })
          .option('prompts', { type: 'string', describe: 'a file of prompts, one per line (# comments)' })
          .option('n', { type: 'number', default: 8, describe: 'images per prompt' })
          .option('seed', { type: 'number', default: 1, describe: 'sampling seed (same seed, same images)' })
          .option('top-k', { type: 'number', describe: "sample from the k most likely codes (0 = all; default: the model's generation_config.json, else 0)" })
          .option('top-p', { type: 'number', describe: "nucleus sampling: the smallest set of codes reaching p (default: the model's, else 1)" })
          .option('temperature', { type: 'number', describe: "softmax temperature (default: the model's, else 1)" })
          .option('cond-scale', { type: 'number', describe: "super-conditioning scale, 1 = off (default: the model's, else 10 as dalle-mini)" })
          .option('out', { type: 'string', default: 'generations', describe: 'output folder' })
          .option('clip', { type: 'string', describe: 're-rank each prompt\'s samples by CLIP score: a clip-train run id, a CLIP folder, hf:… or wandb:…' })
          .option('top', { type: 'number', describe: 'with --clip: keep the best K images per prompt' }),
      async (args) => {
        const { project } = await context();
        const { generateCommand } = await import('./commands/generate.js');
        const { ProgressBoard } = await import('./core/progress.js');
        const board = new ProgressBoard(process.stdout);
        await generateCommand({
          prompts: args.prompt.map(String),
          ...(args.prompts ? { promptsFile: args.prompts } : {}),
          model: args.model,
          runsDir: project.runsDir,
          samples: args.n,
          seed: args.seed,
          ...(args.topK !== undefined ? { topK: args.topK } : {}),
          ...(args.topP !== undefined ? { topP: args.topP } : {}),
          ...(args.temperature !== undefined ? { temperature: args.temperature } : {}),
          ...(args.condScale !== undefined ? { condScale: args.condScale } : {}),
          out: args.out,
          ...(args.clip !== undefined ? { clip: args.clip } : {}),
          ...(args.top !== undefined ? { top: args.top } : {}),
          progress: { start: (total, unit) => board.start('generate', total, unit), tick: (n) => board.tick('generate', n), end: () => board.end('generate') },
          log: (line) => board.line(line),
        });
      },
    )
    .command(
      'worker',
      false, // internal: started by executors, reads its stage spec from stdin
      (y) => y,
      async () => {
        const { runWorker } = await import('./core/worker.js');
        const code = await runWorker();
        // stdin stays open (its end signals that the orchestrator is gone), so exit explicitly once stdout drains.
        process.stdout.write('', () => process.exit(code));
      },
    )
    .completion('completion', 'print a shell completion script (bash/zsh): minidalle completion >> ~/.bashrc')
    .demandCommand(1, 'name a command: minidalle --help lists them')
    .strict()
    .recommendCommands()
    .help()
    .alias('h', 'help')
    .version()
    .wrap(Math.min(110, process.stdout.columns ?? 100))
    .fail((message, error) => {
      // yargs reports bad usage (unknown command/option, missing argument) as a message; real errors pass through.
      if (error) throw error;
      throw new UsageError(message);
    });
}

class UsageError extends MinidalleError {
  override name = 'UsageError';
  override exitCode = 2;
}

export async function main(argv: string[]): Promise<void> {
  try {
    await buildCli(hideBin(['node', 'minidalle', ...argv])).parseAsync();
  } catch (err) {
    const e = err as Error & { exitCode?: number };
    const usage = e instanceof UsageError;
    const ours = e instanceof MinidalleError;
    // Errors reach the console scrubbed of the environment's secrets, like everything else printed.
    const { consoleSecrets, scrub } = await import('./core/secrets.js');
    const secrets = consoleSecrets();
    process.stderr.write(`error: ${scrub(e.name === 'ConfigError' ? `invalid configuration:\n${e.message}` : e.message, secrets)}\n`);
    if (argv.includes('--verbose') && e.stack) process.stderr.write(`${scrub(e.stack, secrets)}\n`);
    else if (!ours && !usage) process.stderr.write('(run with --verbose for the stack trace)\n');
    if (usage) process.stderr.write('see `minidalle --help`\n');
    process.exitCode = e.exitCode ?? (usage ? 2 : 1);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) void main(process.argv.slice(2));
