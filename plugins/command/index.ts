/**
 * command: runs any program as a stage — dalle-mini's JAX `tools/train/train.py`, taming's `main.py`, a shell
 * script — on whichever host the stage is placed (this is how the TPU chips are used: tfjs has no TPU backend).
 *
 * The argument array comes from the config (never a shell string, so no value is ever re-parsed); `{out_dir}`,
 * `{run_dir}`, `{stage}` and `{minidalle_dir}` (this package's folder on the host running the stage, which
 * holds tpu/dalle_mini_train.py) inside an argument are replaced. The program's output lines go
 * to the log; a line that is a JSON object with a numeric step (`{"step": 10, "train/loss": 1.2}`) becomes a
 * history line (the same from a metrics file it appends to); `{"checkpoint": "<dir>", "step": N}` copies that
 * directory into the run's checkpoints, so it comes back to the local store and a retry can resume from it:
 * the retry gets `resume_flag <checkpoint dir>` appended. With `"move": true` the program gives the directory
 * away: it is moved (renamed) into the checkpoints instead of copied. Declared outputs are checked and returned as artifacts.
 */
import { spawn } from 'node:child_process';
import { cp, readdir, readFile, rename, rm, rmdir, stat } from 'node:fs/promises';
import { isAbsolute, join, relative, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { definePlugin, type StageContext } from '../../src/core/plugins/types.js';

const Scalar = z.union([z.string(), z.number(), z.boolean()]);

export const CommandConfig = z
  .object({
    command: z.array(z.string()).min(1).describe('the program and its arguments, one array element per argument ({out_dir}, {run_dir}, {stage}, {minidalle_dir} are replaced)'),
    params: z.record(z.string(), Scalar).default({}).describe('more arguments rendered from a mapping: --key=value (true → --key, false → left out)'),
    param_style: z.enum(['equals', 'space']).default('equals').describe("'--key=value' or '--key value'"),
    cwd: z.string().default('').describe('working directory (relative: to the project; default: the project directory)'),
    env: z.record(z.string(), z.string()).default({}).describe('extra environment of the program'),
    metrics_file: z.string().default('').describe('a JSON-lines file the program appends metrics to (relative: to {out_dir})'),
    step_key: z.string().default('step').describe('the field of a metrics line that holds the step'),
    resume_flag: z.string().default('').describe('on a retry with a checkpoint: appended with the checkpoint directory, e.g. --resume_from'),
    outputs: z.record(z.string(), z.string()).default({}).describe('artifacts the program writes, as paths relative to {out_dir}'),
  })
  .strict();

type Config = z.output<typeof CommandConfig>;

/** This package's folder: the plugin runs from plugins/command/ (sources) or dist/plugins/command/ (built). */
const MINIDALLE_DIR = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '').replace(/\/dist$/, '');

function render(arg: string, ctx: StageContext<Config>): string {
  return arg.replaceAll('{out_dir}', ctx.outDir).replaceAll('{run_dir}', ctx.runDir).replaceAll('{stage}', ctx.stage).replaceAll('{minidalle_dir}', MINIDALLE_DIR);
}

export function commandArgv(ctx: StageContext<Config>, resumeFrom?: string): string[] {
  const c = ctx.config;
  const argv = c.command.map((a) => render(a, ctx));
  for (const [k, v] of Object.entries(c.params)) {
    if (v === false) continue;
    if (v === true) argv.push(`--${k}`);
    else if (c.param_style === 'equals') argv.push(`--${k}=${render(String(v), ctx)}`);
    else argv.push(`--${k}`, render(String(v), ctx));
  }
  if (resumeFrom && c.resume_flag) argv.push(c.resume_flag, resumeFrom);
  return argv;
}

/** What one output line of the program is: metrics at a step, a checkpoint announcement, or plain text. */
function parseLine(line: string, stepKey: string): { metrics?: Record<string, number>; step?: number; checkpoint?: string; move?: boolean } | undefined {
  if (!line.startsWith('{')) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) return undefined;
  const o = v as Record<string, unknown>;
  const step = o[stepKey];
  if (typeof step !== 'number' || !Number.isSafeInteger(step) || step < 0) return undefined;
  if (typeof o.checkpoint === 'string') return { step, checkpoint: o.checkpoint, move: o.move === true };
  const metrics = Object.fromEntries(Object.entries(o).filter(([k, x]) => k !== stepKey && !k.startsWith('_') && typeof x === 'number')) as Record<string, number>;
  return { step, metrics };
}

/** Moves the entries of `src` into `dir` (a rename each: no copy) and removes `src`; across file systems, copies. */
async function moveInto(src: string, dir: string): Promise<void> {
  for (const name of await readdir(src)) {
    try {
      await rename(join(src, name), join(dir, name));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
      await cp(join(src, name), join(dir, name), { recursive: true });
      await rm(join(src, name), { recursive: true, force: true });
    }
  }
  await rmdir(src);
}

export default definePlugin({
  name: 'command',
  description: 'runs a program (argument array from the config): JSON-lines metrics → history, checkpoints, resume flag, declared outputs',
  version: '1',
  config: CommandConfig,
  async run(ctx) {
    const c = ctx.config;
    const latest = await ctx.checkpoints.latest();
    const argv = commandArgv(ctx, latest?.dir);
    if (latest) ctx.logger.info(`resuming ${argv[0]} from step ${latest.step}: ${c.resume_flag || '(no resume_flag configured: the program starts over)'}`);
    const cwd = c.cwd ? resolve(c.cwd) : process.cwd();
    let lastStep = latest?.step ?? -1;
    let saving = Promise.resolve();
    const handle = (line: string, fromStdout: boolean) => {
      const parsed = parseLine(line, c.step_key);
      if (parsed?.checkpoint) {
        const src = isAbsolute(parsed.checkpoint) ? parsed.checkpoint : resolve(cwd, parsed.checkpoint);
        const step = parsed.step!;
        saving = saving.then(async () => {
          await ctx.checkpoints.save(step, (dir) => (parsed.move ? moveInto(src, dir) : cp(src, dir, { recursive: true })), { source: relative(ctx.runDir, src) });
        });
      } else if (parsed?.metrics) {
        // After a resume the program may report steps up to its checkpoint again: the history keeps each once.
        if (!latest || parsed.step! > latest.step) {
          if (Object.keys(parsed.metrics).length > 0) ctx.log(parsed.metrics, parsed.step!);
          lastStep = Math.max(lastStep, parsed.step!);
        }
      } else if (fromStdout) ctx.logger.info(line);
    };
    const metricsFile = c.metrics_file ? resolve(ctx.outDir, c.metrics_file) : undefined;
    let metricsOffset = 0;
    const readMetricsFile = async () => {
      if (!metricsFile) return;
      const text = await readFile(metricsFile, 'utf8').catch(() => '');
      const end = text.lastIndexOf('\n') + 1;
      for (const line of text.slice(metricsOffset, end).split('\n')) if (line) handle(line, false);
      metricsOffset = end;
    };

    const child = spawn(argv[0]!, argv.slice(1), { cwd, env: { ...process.env, ...c.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const stopChild = () => child.kill('SIGTERM');
    ctx.signal.addEventListener('abort', stopChild, { once: true });
    createInterface({ input: child.stdout }).on('line', (l) => handle(l, true));
    createInterface({ input: child.stderr }).on('line', (l) => ctx.logger.warn(l));
    const poll = setInterval(() => void readMetricsFile(), 500);
    const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: Error }>((res) => {
      child.once('error', (error) => res({ code: null, signal: null, error }));
      child.once('close', (code, signal) => res({ code, signal }));
    });
    clearInterval(poll);
    ctx.signal.removeEventListener('abort', stopChild);
    await readMetricsFile();
    await saving;
    if (exit.error) throw new Error(`cannot run ${argv[0]}: ${exit.error.message}`);
    if (ctx.signal.aborted) return {};
    if (exit.code !== 0) {
      throw Object.assign(new Error(`${argv[0]} exited with ${exit.signal ? `signal ${exit.signal}` : `code ${exit.code}`}`), { exitCode: exit.code ?? 128 });
    }
    const artifacts: Record<string, string> = {};
    const missing: string[] = [];
    for (const [name, p] of Object.entries(c.outputs)) {
      const abs = resolve(ctx.outDir, render(p, ctx));
      if (relative(ctx.outDir, abs).startsWith('..')) throw new Error(`output '${name}' (${p}) is outside {out_dir}`);
      if (await stat(abs).then(() => true, () => false)) artifacts[name] = abs;
      else missing.push(`${name} (${p})`);
    }
    if (missing.length) throw new Error(`${argv[0]} finished without writing its declared outputs: ${missing.join(', ')} (under ${ctx.outDir})`);
    return { artifacts, summary: lastStep >= 0 ? { last_step: lastStep } : {} };
  },
});
