import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { MinidalleError } from '../errors.js';
import { decodeEvent, type StageSpec } from './protocol.js';
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

/** Runs each stage in a child process on this machine. */
export class LocalExecutor implements Executor {
  readonly host = 'local';

  start(spec: StageSpec, io: StageIO): StageProcess {
    // Its own process group: a Ctrl-C in the terminal reaches only the orchestrator, which forwards one SIGTERM
    // (graceful stop) and, on a second Ctrl-C, SIGKILL. In the terminal's group, the worker would get the
    // terminal's SIGINT and the forwarded SIGTERM together and take the second for "kill now".
    const child = spawn(process.execPath, [workerEntry(), 'worker'], { stdio: ['pipe', 'pipe', 'pipe'], env: process.env, detached: true });
    child.stdin.on('error', () => {}); // the worker may exit before reading everything; its exit code tells why
    child.stdin.write(`${JSON.stringify(spec)}\n`);
    createInterface({ input: child.stdout }).on('line', (line) => {
      const event = decodeEvent(line);
      if (event) io.onEvent(event);
      else io.onOutput(line, 'stdout');
    });
    createInterface({ input: child.stderr }).on('line', (line) => io.onOutput(line, 'stderr'));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => {
      child.once('close', (code, signal) => res({ code, signal }));
      child.once('error', (err) => {
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
