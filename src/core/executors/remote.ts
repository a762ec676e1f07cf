/**
 * The executor for hosts reached over ssh (plain `ssh` hosts and TPU VMs): the project is synced to the host
 * (rsync of the tree at this commit, then the host's setup command on first use), the stage's run directory
 * (and those it resumes from or reads) is pushed, and `remote-agent.js launch` starts a detached worker. The
 * orchestrator follows the worker's stream by byte offset, so a dropped connection (or a restarted
 * orchestrator) re-attaches where it left off; the run directory is copied back every `sync_interval`
 * seconds and once more at the end, so the local store holds the checkpoints as they are written.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, relative } from 'node:path';
import { createInterface } from 'node:readline';
import { gitState } from '../meta.js';
import { isSecretKey } from '../secrets.js';
import { packageRoot } from './local.js';
import { bucketRunUrl, restoreFromBucket } from './bucket.js';
import { decodeEvent, EXIT, type StageSpec, type WorkerEvent } from './protocol.js';
import type { AgentStatus, FollowLine } from './remote-agent.js';
import { rsync, sshRun, sshSpawn, closeMaster, type SshTarget } from './ssh.js';
import type { Executor, HostProbe, StageExit, StageIO, StageProcess } from './types.js';

/** The part of a host's inventory entry the remote executor uses. */
export interface RemoteSettings {
  workDir: string;
  env: Record<string, string>;
  node: string;
  setup: string[];
  /** Seconds. */
  syncInterval: number;
  reattachTimeout: number;
  /** `gs://bucket/prefix` the host writes running stages' run directories to (bucket.ts). */
  bucket?: string;
  /** Seconds between those uploads. */
  bucketInterval: number;
}

/** How to reach a host: plain ssh has one fixed target; a TPU VM is looked up (and created) through gcloud. */
export interface HostAccess {
  /** The ssh targets of the host's workers (first: the one that runs the worker), ready to use. */
  targets(): Promise<SshTarget[]>;
  /** After a failed connection: why the host itself is gone (e.g. `preempted`), undefined when it may come back. */
  whyLost?(): Promise<string | undefined>;
  probe(): Promise<HostProbe>;
}

/** Raised when a host cannot take a stage (unreachable, not READY): the attempt is lost, not failed. */
export class HostUnavailable extends Error {
  override name = 'HostUnavailable';
}

/** One worker's detached supervisor: where it runs and how much of its stream the orchestrator has read. */
interface WorkerAttachment {
  target: SshTarget;
  remoteRunDir: string;
  offset: number;
}

/**
 * What remote.json records: worker 0 (whose events are the stage's) at the top level, and the other workers of
 * a multi-worker TPU slice, which run the same stage at the same time, in `others` (worker 1, 2, …).
 */
interface Attachment extends WorkerAttachment {
  host: string;
  others?: WorkerAttachment[];
}

const ATTACHMENT = 'remote.json';
/** What a pull never overwrites or deletes locally: the orchestrator's own files. */
const LOCAL_ONLY = ['/run.json', '/config.yaml', '/output.log', `/${ATTACHMENT}`, '/.worker/', '.tmp-*', '/git.diff', '/sync/', '/artifacts.json'];
const STALL_MS = 8000;
/** After one worker of a slice failed, how long the others get to stop gracefully before they are killed. */
const SLICE_STOP_GRACE_MS = 60_000;

/** A worker's end; `unreachable`: its host never answered again, so no last copy of its run directory is tried. */
type WorkerExit = StageExit & { unreachable?: true };

/** Worker 0, then the other workers of a multi-worker slice. */
function workersOf(att: Attachment): WorkerAttachment[] {
  return [att, ...(att.others ?? [])];
}

const key = (t: SshTarget) => `${t.user ?? ''}@${t.address}:${t.port}#${t.instance ?? ''}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The orchestrator's environment variables a worker needs that are credentials (they travel on stdin only). */
export function secretEnv(env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  return Object.fromEntries(Object.entries(env).filter((e): e is [string, string] => e[1] !== undefined && isSecretKey(e[0])));
}

/** Replaces local path prefixes in every string of a JSON-like value (longest prefix first). */
export function mapPaths<T>(value: T, prefixes: [string, string][]): T {
  const sorted = [...prefixes].sort((a, b) => b[0].length - a[0].length);
  const map = (s: string): string => {
    for (const [from, to] of sorted) if (s === from || s.startsWith(`${from}/`)) return to + s.slice(from.length);
    return s;
  };
  const walk = (v: unknown): unknown => {
    if (typeof v === 'string') return map(v);
    if (Array.isArray(v)) return v.map(walk);
    if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x)]));
    return v;
  };
  return walk(value) as T;
}

export class RemoteExecutor implements Executor {
  /** Per worker address: the home directory, and whether this orchestrator synced the tree there. */
  private readonly homes = new Map<string, string>();
  private readonly synced = new Map<string, Promise<void>>();
  private readonly targetsUsed = new Set<SshTarget>();

  constructor(
    readonly host: string,
    private readonly settings: RemoteSettings,
    private readonly access: HostAccess,
    private readonly local: { projectDir: string; runsDir: string },
  ) {}

  probe(): Promise<HostProbe> {
    return this.access.probe();
  }

  async close(): Promise<void> {
    await Promise.all([...this.targetsUsed].map((t) => closeMaster(t)));
  }

  start(spec: StageSpec, io: StageIO): StageProcess {
    let stopRequest: boolean | undefined;
    let signalWorker: ((force: boolean) => void) | undefined;
    const exited = (async (): Promise<StageExit> => {
      let att: Attachment;
      try {
        att = await this.launch(spec, io);
      } catch (err) {
        return { code: null, signal: null, lost: `${this.host}: ${(err as Error).message}` };
      }
      signalWorker = (force) => this.signalAll(att, force);
      if (stopRequest !== undefined) signalWorker(stopRequest);
      return this.follow(att, join(this.local.runsDir, spec.runId), io, () => stopRequest !== undefined);
    })();
    return {
      exited,
      stop: (force = false) => {
        stopRequest = force;
        signalWorker?.(force);
      },
    };
  }

  async attach(runDir: string): Promise<((io: StageIO) => StageProcess) | undefined> {
    let att: Attachment;
    try {
      att = JSON.parse(readFileSync(join(runDir, ATTACHMENT), 'utf8')) as Attachment;
    } catch {
      return undefined;
    }
    if (att.host !== this.host) return undefined;
    const status = await this.status(att).catch(() => undefined);
    if (!status?.launched || (!status.exit && !status.supervisorAlive)) return undefined;
    for (const w of workersOf(att)) this.targetsUsed.add(w.target);
    let stopped = false;
    return (io) => ({
      exited: this.follow(att, runDir, io, () => stopped),
      stop: (force = false) => {
        stopped = true;
        this.signalAll(att, force);
      },
    });
  }

  /** TERM (finish the step, checkpoint, exit) or KILL to the worker on every worker host of the attempt. */
  private signalAll(att: Attachment, force: boolean, except?: WorkerAttachment): void {
    for (const w of workersOf(att)) {
      if (w === except) continue;
      // after a restart of the orchestrator a worker may not be connected yet (its home, hence the agent's path)
      void this.connect(w.target)
        .then(() => this.signal(w, force))
        .catch(() => undefined);
    }
  }

  /** TERM or KILL to one worker through the host's agent. */
  private signal(w: WorkerAttachment, force: boolean): Promise<unknown> {
    return sshRun(w.target, [this.settings.node, this.agentPath(w.target), 'signal', w.remoteRunDir, force ? 'KILL' : 'TERM']);
  }

  private home(t: SshTarget): string {
    return this.homes.get(key(t))!;
  }

  private workDir(t: SshTarget): string {
    const w = this.settings.workDir;
    return w.startsWith('/') ? w : `${this.home(t)}/${w.replace(/^~\//, '')}`;
  }

  private codeDir(t: SshTarget): string {
    return `${this.workDir(t)}/code`;
  }

  private agentPath(t: SshTarget): string {
    return `${this.codeDir(t)}/dist/src/core/executors/remote-agent.js`;
  }

  /** Where the local project lives on the host: the code tree itself, or beside it when the project is elsewhere. */
  private projectDirOn(t: SshTarget): string {
    const rel = relative(packageRoot(), this.local.projectDir);
    if (rel === '') return this.codeDir(t);
    return rel.startsWith('..') ? `${this.workDir(t)}/project` : `${this.codeDir(t)}/${rel}`;
  }

  private runsDirOn(t: SshTarget): string {
    return `${this.workDir(t)}/runs`;
  }

  private async connect(t: SshTarget): Promise<void> {
    if (this.homes.has(key(t))) return;
    this.targetsUsed.add(t);
    const r = await sshRun(t, ['sh', '-c', 'printf %s "$HOME"'], { timeoutMs: (t.connectTimeout + 20) * 1000 });
    if (r.code !== 0) throw new HostUnavailable(`cannot reach ${t.address}:${t.port} over ssh: ${r.stderr.trim() || `ssh exited with ${r.code}`}`);
    this.homes.set(key(t), r.stdout.trim());
  }

  /** The tree at this commit on every worker of the host, and the setup command run once per lockfile. */
  private ensureCode(targets: SshTarget[], io: StageIO): Promise<void> {
    const k = targets.map(key).join(',');
    let p = this.synced.get(k);
    if (!p) {
      p = Promise.all(targets.map((t) => this.syncTo(t, io))).then(() => undefined);
      this.synced.set(k, p);
      p.catch(() => this.synced.delete(k));
    }
    return p;
  }

  private async syncTo(t: SshTarget, io: StageIO): Promise<void> {
    await this.connect(t);
    const root = packageRoot();
    const excludes = ['/node_modules', '/.git/', '/runs/', '.worker/', `/${relative(root, this.local.runsDir)}/`];
    const push = async (from: string, to: string, ex: string[]) => {
      const r = await rsync(t, { from: `${from}/`, to: `${to}/`, excludes: ex, delete: true, push: true });
      if (r.code !== 0) throw new HostUnavailable(`rsync of ${from} to ${this.host} failed: ${r.stderr.trim()}`);
    };
    await push(root, this.codeDir(t), excludes);
    if (relative(root, this.local.projectDir).startsWith('..')) {
      await push(this.local.projectDir, this.projectDirOn(t), ['/node_modules', '/.git/', `/${relative(this.local.projectDir, this.local.runsDir)}/`]);
    }
    const git = gitState(root);
    const lock = existsSync(join(root, 'package-lock.json')) ? readFileSync(join(root, 'package-lock.json')) : Buffer.alloc(0);
    const setupKey = createHash('sha256').update(lock).update(JSON.stringify(this.settings.setup)).digest('hex');
    const marker = `${this.workDir(t)}/.setup-done`;
    const commit = git ? `${git.commit}${git.dirty ? ' (with uncommitted changes)' : ''}` : 'not a git checkout';
    const have = await sshRun(t, ['cat', marker]);
    await sshRun(t, ['sh', '-c', 'printf "%s\\n" "$1" > "$2"', 'sh', commit, `${this.codeDir(t)}/.minidalle-commit`]);
    if (have.code === 0 && have.stdout.trim() === setupKey) return;
    io.onOutput(`${this.host} (${t.address}): first use, running ${this.settings.setup.join(' ')} in ${this.codeDir(t)}`, 'stderr');
    const r = await sshRun(t, ['sh', '-c', 'cd "$1" && shift && exec "$@"', 'sh', this.codeDir(t), ...this.settings.setup]);
    for (const line of `${r.stdout}${r.stderr}`.split('\n').filter(Boolean)) io.onOutput(`[setup ${this.host}] ${line}`, 'stderr');
    if (r.code !== 0) throw new Error(`setup on ${this.host} (${this.settings.setup.join(' ')}) exited with ${r.code}`);
    await sshRun(t, ['sh', '-c', 'printf %s "$1" > "$2"', 'sh', setupKey, marker]);
  }

  /** The run ids whose directories the worker reads: this run, the runs it resumes from, and its inputs. */
  private runsToPush(spec: StageSpec): { own: string; others: string[] } {
    const others = new Set<string>(Object.values(spec.inputs).map((o) => o.runId));
    let cur: string | undefined = spec.runId;
    const seen = new Set<string>();
    while (cur && !seen.has(cur)) {
      seen.add(cur);
      try {
        cur = (JSON.parse(readFileSync(join(this.local.runsDir, cur, 'run.json'), 'utf8')) as { resumed_from?: string }).resumed_from;
      } catch {
        cur = undefined;
      }
      if (cur) others.add(cur);
    }
    others.delete(spec.runId);
    return { own: spec.runId, others: [...others] };
  }

  private async pushRuns(t: SshTarget, spec: StageSpec): Promise<void> {
    const runs = this.runsToPush(spec);
    const pushRun = async (id: string, exact: boolean) => {
      // The run itself goes over exactly (a retry on the same host must not find newer checkpoints than the local store's).
      const r = await rsync(t, {
        from: `${join(this.local.runsDir, id)}/`,
        to: `${this.runsDirOn(t)}/${id}/`,
        excludes: ['/output.log', `/${ATTACHMENT}`, '/.worker/', '.tmp-*'],
        delete: exact,
        push: true,
      });
      if (r.code !== 0) throw new HostUnavailable(`cannot copy run ${id} to ${this.host} (${t.address}): ${r.stderr.trim()}`);
    };
    for (const id of runs.others) await pushRun(id, false);
    await pushRun(runs.own, true);
  }

  /** Starts the detached worker of worker `index` (of `count`) on `t`. */
  private async launchOn(t: SshTarget, index: number, count: number, spec: StageSpec): Promise<WorkerAttachment> {
    const remote: StageSpec = {
      ...mapPaths(spec, [
        [this.local.runsDir, this.runsDirOn(t)],
        [this.local.projectDir, this.projectDirOn(t)],
        [packageRoot(), this.codeDir(t)],
      ]),
      // which worker of the slice this is: what a multi-host program (or its launcher) needs besides JAX's own
      // discovery, which on a TPU VM reads the worker number and endpoints from the metadata server
      env: { ...this.settings.env, ...secretEnv(), MINIDALLE_WORKER_INDEX: String(index), MINIDALLE_WORKER_COUNT: String(count) },
    };
    const remoteRunDir = `${this.runsDirOn(t)}/${spec.runId}`;
    // worker 0 writes the run directory to the bucket as it runs (the others' are not the stage's)
    const upload = this.settings.bucket && index === 0 ? [bucketRunUrl(this.settings.bucket, spec.runId), String(this.settings.bucketInterval)] : [];
    const r = await sshRun(
      t,
      [this.settings.node, this.agentPath(t), 'launch', remoteRunDir, `${this.codeDir(t)}/dist/src/cli.js`, this.projectDirOn(t), ...upload],
      { input: `${JSON.stringify(remote)}\n` },
    );
    const who = count > 1 ? ` (worker ${index}, ${t.address})` : '';
    if (r.code !== 0) {
      if (r.code === 255) throw new HostUnavailable(`lost ssh to ${t.address} while starting the worker: ${r.stderr.trim()}`);
      throw new Error(`the worker did not start on ${this.host}${who}: ${r.stderr.trim() || `exit ${r.code}`}`);
    }
    return { target: t, remoteRunDir, offset: 0 };
  }

  /**
   * Every worker of the host gets the code, the run directories and its own detached worker, all running the
   * same stage at once (a multi-worker TPU slice: one program per worker host, as JAX multi-host training
   * expects). When one cannot start, those already started are killed.
   */
  private async launch(spec: StageSpec, io: StageIO): Promise<Attachment> {
    const targets = await this.access.targets();
    await this.ensureCode(targets, io);
    if (this.settings.bucket) await this.restore(spec, io);
    await Promise.all(targets.map((t) => this.pushRuns(t, spec)));
    const started = await Promise.allSettled(targets.map((t, i) => this.launchOn(t, i, targets.length, spec)));
    const failed = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    const workers = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
    if (failed) {
      for (const w of workers) void this.signal(w, true);
      throw failed.reason;
    }
    const [first, ...others] = workers;
    const att: Attachment = { host: this.host, ...first!, ...(others.length > 0 ? { others } : {}) };
    this.saveAttachment(join(this.local.runsDir, spec.runId), att);
    if (others.length > 0) io.onOutput(`${this.host}: the stage runs on ${workers.length} workers (${targets.map((t) => t.address).join(', ')})`, 'stderr');
    return att;
  }

  /** A newer checkpoint in the bucket than in the local store (a lost host wrote it) comes into the local run first. */
  private async restore(spec: StageSpec, io: StageIO): Promise<void> {
    const bucket = this.settings.bucket!;
    const say = (m: string) => io.onOutput(`${this.host}: ${m}`, 'stderr');
    try {
      const got = await restoreFromBucket(bucket, spec.runId, join(this.local.runsDir, spec.runId), (m) => say(`warning: ${bucket}: ${m}`));
      if (got) say(`resuming from the bucket's checkpoint step ${got.step} (${bucketRunUrl(bucket, spec.runId)}; the local store had ${got.local === undefined ? 'none' : `step ${got.local}`})`);
    } catch (err) {
      say(`warning: cannot read the bucket (${(err as Error).message}); the attempt starts from the local store's checkpoints`);
    }
  }

  private saveAttachment(runDir: string, att: Attachment): void {
    const file = join(runDir, ATTACHMENT);
    // the temporary file lives beside the run dir, not in it: pulling the run dir back from the host (rsync
    // --delete) must not remove it between the write and the rename
    const tmp = join(dirname(runDir), `.${basename(runDir)}.${ATTACHMENT}.${process.pid}.tmp`);
    writeFileSync(tmp, `${JSON.stringify(att)}\n`);
    renameSync(tmp, file);
  }

  private async status(att: WorkerAttachment): Promise<AgentStatus | undefined> {
    if (!this.homes.has(key(att.target))) await this.connect(att.target);
    const r = await sshRun(att.target, [this.settings.node, this.agentPath(att.target), 'status', att.remoteRunDir], { timeoutMs: (att.target.connectTimeout + 20) * 1000 });
    if (r.code !== 0) return undefined;
    return JSON.parse(r.stdout) as AgentStatus;
  }

  /** Copies the remote run directory into the local one (outputs, checkpoints, history, summary, media). */
  private async pull(att: Attachment, runDir: string): Promise<boolean> {
    const r = await rsync(att.target, { from: `${att.remoteRunDir}/`, to: `${runDir}/`, excludes: LOCAL_ONLY, delete: true, push: false, timeoutMs: 600_000 });
    return r.code === 0;
  }

  /**
   * Follows the attempt until it exits or its host is lost, copying worker 0's run directory back as it goes.
   * On a multi-worker slice every worker is followed: worker 0's events are the stage's, every worker's lines go
   * to the log prefixed with its index, and the first worker to fail or be lost stops the others and fails
   * the attempt.
   */
  private async follow(att: Attachment, runDir: string, io: StageIO, stopRequested: () => boolean): Promise<StageExit> {
    let pulling: Promise<unknown> | undefined;
    const timer = setInterval(() => {
      pulling ??= this.pull(att, runDir).finally(() => (pulling = undefined));
    }, this.settings.syncInterval * 1000);
    const save = () => this.saveAttachment(runDir, att);
    let exit: WorkerExit;
    try {
      exit = att.others?.length ? await this.followSlice(att, io, save, stopRequested) : await this.followWorker(att, this.host, io, save);
    } finally {
      clearInterval(timer);
    }
    await pulling;
    if (exit.unreachable) return { code: exit.code, signal: exit.signal, lost: exit.lost! }; // nothing to copy from: the last copy stays
    const ok = await this.pull(att, runDir);
    if (!ok && !exit.lost) io.onOutput(`warning: the last copy of ${att.remoteRunDir} from ${this.host} failed; the local store has the copy from before`, 'stderr');
    return exit;
  }

  private async followSlice(att: Attachment, io: StageIO, save: () => void, stopRequested: () => boolean): Promise<WorkerExit> {
    const workers = workersOf(att);
    let result: WorkerEvent | undefined;
    let first: { index: number; exit: WorkerExit; error?: { message: string; exitCode?: number } } | undefined;
    let killer: NodeJS.Timeout | undefined;
    const errors = new Map<number, { message: string; exitCode?: number }>();
    const exits = await Promise.all(
      workers.map(async (w, index) => {
        const label = `${this.host} worker ${index} (${w.target.address})`;
        const prefixed: StageIO = {
          onEvent: (e) => {
            if (e.type === 'error') errors.set(index, { message: e.message, ...(e.exitCode === undefined ? {} : { exitCode: e.exitCode }) });
            if (index !== 0) {
              if (e.type === 'error') io.onOutput(`[worker ${index}] error: ${e.message}`, 'stderr');
              return; // the other workers' progress, meta and results are their own: the stage's are worker 0's
            }
            if (e.type === 'result') result = e; // held until every worker has ended
            else io.onEvent(e);
          },
          onOutput: (line, stream) => io.onOutput(`[worker ${index}] ${line}`, stream),
        };
        const exit = await this.followWorker(w, label, prefixed, save);
        const failed = exit.lost !== undefined || (exit.code !== EXIT.finished && !(stopRequested() && exit.code === EXIT.stopped));
        if (failed && !first) {
          first = { index, exit, ...(errors.has(index) ? { error: errors.get(index)! } : {}) };
          if (!stopRequested()) {
            const why = exit.lost ?? (exit.signal ? `signal ${exit.signal}` : `exit code ${exit.code}`);
            io.onOutput(`${this.host}: worker ${index} (${w.target.address}) ended (${why}): stopping the other workers`, 'stderr');
            this.signalAll(att, false, w);
            // a program blocked in a collective with a dead peer may never see the TERM
            killer = setTimeout(() => this.signalAll(att, true, w), SLICE_STOP_GRACE_MS);
          }
        }
        return exit;
      }),
    );
    clearTimeout(killer);
    if (!first || first.index === 0) {
      if (result) io.onEvent(result);
      return first?.exit ?? exits[0]!;
    }
    const address = workers[first.index]!.target.address;
    if (first.exit.lost !== undefined) return { code: null, signal: null, lost: first.exit.lost }; // worker 0's host may answer: its last copy is taken
    const why = first.error?.message ?? (first.exit.signal ? `killed by ${first.exit.signal}` : `exited with code ${first.exit.code}`);
    io.onEvent({ type: 'error', message: `worker ${first.index} (${address}) failed: ${why}`, ...(first.error?.exitCode === undefined ? {} : { exitCode: first.error.exitCode }) });
    return { code: first.exit.code, signal: first.exit.signal };
  }

  /** Follows one worker's stream until it exits or is lost; re-attaches after dropped connections. */
  private async followWorker(w: WorkerAttachment, label: string, io: StageIO, save: () => void): Promise<WorkerExit> {
    for (;;) {
      const r = this.homes.has(key(w.target))
        ? await this.followOnce(w, io, save)
        : await this.connect(w.target).then(
            () => this.followOnce(w, io, save),
            (err: Error) => ({ t: 'dropped' as const, why: err.message }),
          );
      if (r.t === 'x') return { code: r.code, signal: r.signal as NodeJS.Signals | null };
      if (r.t === 'lost') return { code: null, signal: null, lost: `${label}: ${r.why}` };
      // The connection dropped: keep trying to re-attach until the host is known gone or the timeout passes.
      io.onOutput(`${label}: connection lost (${r.why}); re-attaching at byte ${w.offset}`, 'stderr');
      const deadline = Date.now() + this.settings.reattachTimeout * 1000;
      let back = false;
      while (!back) {
        const gone = await this.access.whyLost?.().catch(() => undefined);
        if (gone) return { code: null, signal: null, lost: `${label}: ${gone}` };
        const s = await this.status(w).catch(() => undefined);
        if (s?.launched && (s.exit || s.supervisorAlive)) back = true;
        else if (s) return { code: null, signal: null, lost: `${label}: the worker is gone (no exit recorded)` };
        else if (Date.now() > deadline) return { code: null, signal: null, lost: `${label}: unreachable for ${this.settings.reattachTimeout} s`, unreachable: true };
        else await sleep(1000);
      }
      io.onOutput(`${label}: re-attached to the worker`, 'stderr');
    }
  }

  private followOnce(att: WorkerAttachment, io: StageIO, save: () => void): Promise<FollowLine & { t: 'x' | 'lost' } | { t: 'dropped'; why: string }> {
    return new Promise((resolve) => {
      const child = sshSpawn(att.target, [this.settings.node, this.agentPath(att.target), 'follow', att.remoteRunDir, String(att.offset)]);
      let end: (FollowLine & { t: 'x' | 'lost' }) | undefined;
      let last = Date.now();
      const watchdog = setInterval(() => {
        if (Date.now() - last > STALL_MS) child.kill('SIGKILL');
      }, 1000);
      let stderr = '';
      child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()).slice(-2000));
      const rl = createInterface({ input: child.stdout! });
      rl.on('line', (text) => {
        last = Date.now();
        let line: FollowLine;
        try {
          line = JSON.parse(text) as FollowLine;
        } catch {
          return;
        }
        if (line.t === 'o' || line.t === 'e') {
          att.offset += Buffer.byteLength(text) + 1;
          const event = line.t === 'o' ? decodeEvent(line.l) : undefined;
          if (event) io.onEvent(event);
          else io.onOutput(line.l, line.t === 'o' ? 'stdout' : 'stderr');
          save();
        } else if (line.t === 'x' || line.t === 'lost') end = line;
      });
      void child.then((r) => {
        clearInterval(watchdog);
        rl.close();
        resolve(end ?? { t: 'dropped', why: stderr.trim().split('\n').pop() || (r.signal ? `ssh killed by ${r.signal}` : `ssh exited with ${r.exitCode}`) });
      });
    });
  }
}
