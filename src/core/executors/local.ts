import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { MinidalleError } from '../errors.js';
import { threadShares } from '../threads.js';
import { decodeEvent, encodeMessage, type StageSpec } from './protocol.js';
import type { Executor, StageIO, StageProcess } from './types.js';

/** The minidalle package's folder (the one holding package.json, src/ and dist/). */
export function packageRoot(): string {
  const here = fileURLToPath(import.meta.url);
  return here.slice(0, here.lastIndexOf('/src/core/executors/')).replace(/\/dist$/, '');
}

/** The compiled CLI that runs workers (`dist/src/cli.js`), also when the orchestrator itself runs from sources in tests. */
export function workerEntry(): string {
  const entry = `${packageRoot()}/dist/src/cli.js`;
  if (!existsSync(entry)) throw new MinidalleError(`${entry} is missing: run \`npm run build\``);
  return entry;
}

/** The local workers of this orchestrator process, oldest first. */
const live: ChildProcess[] = [];

/**
 * Tells every local worker its share of the cores (threads.ts), unless the user fixed MINIDALLE_THREADS. The
 * shares change as stages start and end, so a stage running alone gets every core again.
 */
function shareCores(): void {
  if (process.env['MINIDALLE_THREADS']) return;
  const shares = threadShares(availableParallelism(), live.length);
  live.forEach((child, i) => child.stdin?.write(encodeMessage({ type: 'threads', threads: shares[i] as number, stages: live.length })));
}

/** Runs each stage in a child process on this machine; stages running at once share the cores. */
export class LocalExecutor implements Executor {
  readonly host = 'local';

  start(spec: StageSpec, io: StageIO): StageProcess {
    // Its own process group: a Ctrl-C in the terminal reaches only the orchestrator, which forwards one SIGTERM
    // (graceful stop) and, on a second Ctrl-C, SIGKILL. In the terminal's group, the worker would get the
    // terminal's SIGINT and the forwarded SIGTERM together and take the second for "kill now".
    const child = spawn(process.execPath, [workerEntry(), 'worker'], { stdio: ['pipe', 'pipe', 'pipe'], env: process.env, detached: true });
    child.stdin.on('error', () => {}); // the worker may exit before reading everything; its exit code tells why
    child.stdin.write(`${JSON.stringify(spec)}\n`);
    live.push(child);
    shareCores();
    createInterface({ input: child.stdout }).on('line', (line) => {
      const event = decodeEvent(line);
      if (event) io.onEvent(event);
      else io.onOutput(line, 'stdout');
    });
    createInterface({ input: child.stderr }).on('line', (line) => io.onOutput(line, 'stderr'));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => {
      const forget = (): void => {
        const at = live.indexOf(child);
        if (at < 0) return; // 'error' and 'close' may both come
        live.splice(at, 1);
        shareCores();
      };
      child.once('close', (code, signal) => {
        forget();
        res({ code, signal });
      });
      child.once('error', (err) => {
        forget();
        io.onOutput(`cannot start the worker: ${err.message}`, 'stderr');
        res({ code: 1, signal: null });
      });
    });
    return {
      pid: child.pid,
      exited,
      stop: (force = false) => {
        if (child.exitCode === null) child.kill(force ? 'SIGKILL' : 'SIGTERM');
      },
    };
  }
}
