/**
 * The orchestrator's helper on a remote host, run as `node dist/src/core/executors/remote-agent.js <command>`
 * over ssh. It keeps a stage's worker alive independently of any ssh connection:
 *
 *   launch <runDir> <cli> <cwd> [<gs://…> <seconds>]
 *                                 reads one line ({spec, env}) from stdin, starts a supervisor in its own
 *                                 session (setsid; SIGHUP ignored) and prints the pids; with a bucket URL the
 *                                 supervisor also writes the run directory there every <seconds> s and once
 *                                 more after the worker ends (`gcloud storage rsync`, before exit.json)
 *   follow <runDir> <offset>      prints <runDir>/.worker/stream.jsonl from byte <offset> as it grows, a
 *                                 heartbeat every 2 s, and a last line with the exit (or "lost")
 *   status <runDir>               one JSON line: launched, alive, exit, stream size
 *   signal <runDir> TERM|KILL     signals the worker (TERM: finish the step, checkpoint, exit)
 *
 * The supervisor hands the line to `minidalle worker` on its stdin (secrets never touch a file or a command
 * line), keeps that stdin open, writes every output line of the worker to stream.jsonl and, when the worker
 * ends, its exit code and signal to exit.json (written atomically). Only Node's standard library is used, so
 * it runs from the synced tree before anything else.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, renameSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const AGENT_DIR = '.worker';
const HEARTBEAT_MS = 2000;
const POLL_MS = 100;

/** One line of stream.jsonl: a line the worker wrote to stdout ('o') or stderr ('e'). */
export interface StreamLine {
  t: 'o' | 'e';
  l: string;
}

/** What `follow` prints besides the stream's own lines. */
export type FollowLine = StreamLine | { t: 'h' } | { t: 'x'; code: number | null; signal: string | null } | { t: 'lost'; why: string };

export interface AgentStatus {
  launched: boolean;
  supervisorAlive: boolean;
  workerAlive: boolean;
  exit?: { code: number | null; signal: string | null };
  size: number;
  pids?: { supervisor: number; worker: number };
}

const files = (runDir: string) => {
  const dir = join(runDir, AGENT_DIR);
  return { dir, stream: join(dir, 'stream.jsonl'), pids: join(dir, 'pids.json'), exit: join(dir, 'exit.json') };
};

function alive(pid: number | undefined): boolean {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function readJson<T>(file: string): T | undefined {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

function writeAtomic(file: string, text: string): void {
  writeFileSync(`${file}.tmp`, text);
  renameSync(`${file}.tmp`, file);
}

function status(runDir: string): AgentStatus {
  const f = files(runDir);
  const pids = readJson<{ supervisor: number; worker: number }>(f.pids);
  const exit = readJson<{ code: number | null; signal: string | null }>(f.exit);
  let size = 0;
  try {
    size = statSync(f.stream).size;
  } catch {
    /* not started */
  }
  return { launched: pids !== undefined, supervisorAlive: alive(pids?.supervisor), workerAlive: alive(pids?.worker), ...(exit ? { exit } : {}), size, ...(pids ? { pids } : {}) };
}

async function firstLine(): Promise<string> {
  const rl = createInterface({ input: process.stdin });
  return new Promise((res, rej) => {
    rl.once('line', (l) => {
      res(l); // before close(), whose 'close' event would reject
      rl.close();
    });
    rl.once('close', () => rej(new Error('no stage on stdin')));
  });
}

async function launch(runDir: string, cli: string, cwd: string, upload: string[]): Promise<number> {
  const f = files(runDir);
  const before = status(runDir);
  if (before.launched && (before.supervisorAlive || before.workerAlive)) {
    process.stderr.write(`a worker already runs for ${runDir} (pids ${JSON.stringify(before.pids)})\n`);
    return 2;
  }
  const line = await firstLine();
  mkdirSync(f.dir, { recursive: true });
  for (const old of [f.pids, f.exit, f.stream]) if (existsSync(old)) renameSync(old, `${old}.${Date.now()}.old`);
  const self = fileURLToPath(import.meta.url);
  // detached = setsid(): the supervisor leads its own session, so the end of this ssh session (SIGHUP to the
  // session, closed pipes) does not reach it or the worker.
  const sup = spawn(process.execPath, [self, 'supervise', runDir, cli, cwd, ...upload], { detached: true, stdio: ['pipe', 'ignore', 'ignore'], cwd });
  sup.stdin.end(`${line}\n`);
  sup.unref();
  for (let t = 0; t < 10_000; t += 20) {
    if (existsSync(f.pids)) {
      process.stdout.write(`${readFileSync(f.pids, 'utf8').trim()}\n`);
      return 0;
    }
    if (sup.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  process.stderr.write(`the supervisor did not start the worker (exit ${String(sup.exitCode)})\n`);
  return 1;
}

/**
 * What the bucket upload leaves out: the agent's own files and the store's half-written `.tmp-` dirs. gcloud
 * takes one --exclude (a repeated flag replaces it; the value is a list split at commas, and one starting with
 * `^X^` changes that delimiter, so no comma and no leading `^`) and re.match()es it against the path relative
 * to the run directory: anchored at its start.
 */
const BUCKET_EXCLUDE = [String.raw`\.worker/`, String.raw`\.tmp-`, String.raw`.*/\.tmp-`, String.raw`\.rsync-partial/`, String.raw`.*/\.rsync-partial/`].join('|');

/** `gcloud storage rsync --recursive` of `from` to `to`; the problem, '' when it went. */
function rsync(from: string, to: string, exclude: string, env: Record<string, string>): Promise<string> {
  return new Promise((res) => {
    const p = spawn('gcloud', ['storage', 'rsync', '--recursive', `--exclude=${exclude}`, from, to], {
      env: { ...process.env, ...env, CLOUDSDK_CORE_DISABLE_PROMPTS: '1' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    p.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
    p.once('error', (err) => res(`cannot run gcloud: ${err.message}`));
    p.once('close', (code) => {
      if (code === 0) return res('');
      const lines = stderr.split('\n').map((l) => l.trim()).filter((l) => l.startsWith('ERROR'));
      res(lines.at(-1) ?? `gcloud exited with ${code}`);
    });
  });
}

/**
 * The run directory to `url`, one upload at a time, every `seconds`; `final()` waits for the one in flight and
 * runs the last. Each upload takes the checkpoints published when it starts, sends everything else (the history)
 * first and only then those checkpoints: a checkpoint in the bucket always has the history up to its step there,
 * even when the host is lost between the two. Failures are said once each (in the stream, as the worker's
 * stderr), never fatal: the stage goes on and its run directory still comes back to the orchestrator.
 */
export function bucketUploads(runDir: string, url: string, seconds: number, env: Record<string, string>, say: (line: string) => void) {
  let running: Promise<void> | undefined;
  let lastProblem = '';
  const upload = async (): Promise<string> => {
    let published: string[] = [];
    try {
      published = readdirSync(join(runDir, 'checkpoints')).filter((n) => /^step-\d+$/.test(n)); // renamed in whole
    } catch {
      /* none yet */
    }
    const problem = await rsync(runDir, url, `${BUCKET_EXCLUDE}|checkpoints/`, env);
    if (problem || published.length === 0) return problem;
    return rsync(join(runDir, 'checkpoints'), `${url}/checkpoints`, `${BUCKET_EXCLUDE}|(?!(?:${published.join('|')})/)`, env);
  };
  const once = (): Promise<void> =>
    (running ??= upload().then((problem) => {
      if (problem && problem !== lastProblem) say(`bucket: the upload to ${url} failed: ${problem}`);
      lastProblem = problem;
      running = undefined;
    }));
  const timer = setInterval(() => void once(), seconds * 1000);
  return {
    async final(): Promise<void> {
      clearInterval(timer);
      await running;
      await once();
    },
  };
}

async function supervise(runDir: string, cli: string, cwd: string, bucketUrl?: string, seconds?: string): Promise<number> {
  process.on('SIGHUP', () => {});
  const f = files(runDir);
  const line = await firstLine();
  const out = openSync(f.stream, 'a');
  const worker = spawn(process.execPath, [cli, 'worker'], { cwd, stdio: ['pipe', 'pipe', 'pipe'] });
  worker.stdin.on('error', () => {});
  worker.stdin.write(`${line}\n`); // kept open: its end would tell the worker that nobody supervises it
  writeAtomic(f.pids, `${JSON.stringify({ supervisor: process.pid, worker: worker.pid, started_at: new Date().toISOString() })}\n`);
  const record = (t: 'o' | 'e') => (l: string) => writeSync(out, `${JSON.stringify({ t, l } satisfies StreamLine)}\n`);
  // gcloud gets the worker's environment (the host's env and the orchestrator's credentials, from stdin only)
  const env = bucketUrl ? ((JSON.parse(line) as { env?: Record<string, string> }).env ?? {}) : {};
  const uploads = bucketUrl ? bucketUploads(runDir, bucketUrl, Number(seconds ?? 30), env, record('e')) : undefined;
  const outDone = new Promise<void>((res) => createInterface({ input: worker.stdout }).on('line', record('o')).once('close', res));
  const errDone = new Promise<void>((res) => createInterface({ input: worker.stderr }).on('line', record('e')).once('close', res));
  process.on('SIGTERM', () => worker.kill('SIGTERM'));
  const exit = await new Promise<{ code: number | null; signal: string | null }>((res) => worker.once('exit', (code, signal) => res({ code, signal })));
  await Promise.all([outDone, errDone]);
  await uploads?.final(); // before exit.json: once the attempt has ended, the bucket has all of it
  closeSync(out);
  writeAtomic(f.exit, `${JSON.stringify({ ...exit, at: new Date().toISOString() })}\n`);
  return 0;
}

async function follow(runDir: string, from: number): Promise<number> {
  const f = files(runDir);
  let offset = from;
  let lastWrite = Date.now();
  const emit = (text: string) => {
    process.stdout.write(text);
    lastWrite = Date.now();
  };
  // Prints the complete lines after `offset`.
  const drain = (): void => {
    let fd: number;
    try {
      fd = openSync(f.stream, 'r');
    } catch {
      return;
    }
    try {
      const size = statSync(f.stream).size;
      if (size <= offset) return;
      const buf = Buffer.alloc(size - offset);
      const n = readSync(fd, buf, 0, buf.length, offset);
      const end = buf.subarray(0, n).lastIndexOf(0x0a);
      if (end < 0) return;
      emit(buf.subarray(0, end + 1).toString('utf8'));
      offset += end + 1;
    } finally {
      closeSync(fd);
    }
  };
  for (;;) {
    const exited = existsSync(f.exit);
    drain();
    if (exited) {
      const exit = readJson<{ code: number | null; signal: string | null }>(f.exit) ?? { code: null, signal: null };
      emit(`${JSON.stringify({ t: 'x', code: exit.code, signal: exit.signal } satisfies FollowLine)}\n`);
      return 0;
    }
    const s = status(runDir);
    if (s.launched && !s.supervisorAlive && !existsSync(f.exit)) {
      drain();
      emit(`${JSON.stringify({ t: 'lost', why: `the supervisor (pid ${s.pids?.supervisor}) is gone and left no exit file` } satisfies FollowLine)}\n`);
      return 0;
    }
    if (!s.launched) {
      emit(`${JSON.stringify({ t: 'lost', why: `no worker was launched in ${runDir}` } satisfies FollowLine)}\n`);
      return 0;
    }
    if (Date.now() - lastWrite >= HEARTBEAT_MS) emit(`${JSON.stringify({ t: 'h' } satisfies FollowLine)}\n`);
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

function signalWorker(runDir: string, sig: string): number {
  const s = status(runDir);
  if (!s.pids || !s.workerAlive) return 0;
  process.kill(s.pids.worker, sig === 'KILL' ? 'SIGKILL' : 'SIGTERM');
  return 0;
}

async function main(argv: string[]): Promise<number> {
  const [cmd, runDir, a, b, ...upload] = argv;
  if (!runDir) throw new Error('usage: remote-agent launch|supervise|follow|status|signal <runDir> …');
  if (cmd === 'launch') return launch(runDir, a!, b!, upload);
  if (cmd === 'supervise') return supervise(runDir, a!, b!, upload[0], upload[1]);
  if (cmd === 'follow') return follow(runDir, Number(a ?? 0));
  if (cmd === 'status') {
    process.stdout.write(`${JSON.stringify(status(runDir))}\n`);
    return 0;
  }
  if (cmd === 'signal') return signalWorker(runDir, a ?? 'TERM');
  throw new Error(`unknown agent command '${cmd}'`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  process.stdout.on('error', () => process.exit(0)); // the ssh client went away: nothing left to tell
  main(process.argv.slice(2)).then(
    (code) => process.stdout.write('', () => process.exit(code)),
    (err: Error) => {
      process.stderr.write(`remote-agent: ${err.message}\n`);
      process.exit(1);
    },
  );
}
