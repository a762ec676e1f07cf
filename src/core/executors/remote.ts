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
import { decodeEvent, type StageSpec } from './protocol.js';
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

interface Attachment {
  host: string;
  target: SshTarget;
  remoteRunDir: string;
  offset: number;
}

const ATTACHMENT = 'remote.json';
/** What a pull never overwrites or deletes locally: the orchestrator's own files. */
const LOCAL_ONLY = ['/run.json', '/config.yaml', '/output.log', `/${ATTACHMENT}`, '/.worker/', '.tmp-*', '/git.diff', '/sync/', '/artifacts.json'];
const STALL_MS = 8000;

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
      signalWorker = (force) => void sshRun(att.target, [this.settings.node, this.agentPath(att.target), 'signal', att.remoteRunDir, force ? 'KILL' : 'TERM']);
      if (stopRequest !== undefined) signalWorker(stopRequest);
      return this.follow(att, join(this.local.runsDir, spec.runId), io);
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
    this.targetsUsed.add(att.target);
    const signal = (force: boolean) => void sshRun(att.target, [this.settings.node, this.agentPath(att.target), 'signal', att.remoteRunDir, force ? 'KILL' : 'TERM']);
    return (io) => ({ exited: this.follow(att, runDir, io), stop: (force = false) => signal(force) });
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

  private async launch(spec: StageSpec, io: StageIO): Promise<Attachment> {
    const targets = await this.access.targets();
    const t = targets[0]!;
    await this.ensureCode(targets, io);
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
      if (r.code !== 0) throw new HostUnavailable(`cannot copy run ${id} to ${this.host}: ${r.stderr.trim()}`);
    };
    for (const id of runs.others) await pushRun(id, false);
    await pushRun(runs.own, true);
    const remote: StageSpec = {
      ...mapPaths(spec, [
        [this.local.runsDir, this.runsDirOn(t)],
        [this.local.projectDir, this.projectDirOn(t)],
        [packageRoot(), this.codeDir(t)],
      ]),
      env: { ...this.settings.env, ...secretEnv() },
    };
    const remoteRunDir = `${this.runsDirOn(t)}/${spec.runId}`;
    const r = await sshRun(
      t,
      [this.settings.node, this.agentPath(t), 'launch', remoteRunDir, `${this.codeDir(t)}/dist/src/cli.js`, this.projectDirOn(t)],
      { input: `${JSON.stringify(remote)}\n` },
    );
    if (r.code !== 0) {
      if (r.code === 255) throw new HostUnavailable(`lost ssh to ${t.address} while starting the worker: ${r.stderr.trim()}`);
      throw new Error(`the worker did not start on ${this.host}: ${r.stderr.trim() || `exit ${r.code}`}`);
    }
    const att: Attachment = { host: this.host, target: t, remoteRunDir, offset: 0 };
    this.saveAttachment(join(this.local.runsDir, spec.runId), att);
    return att;
  }

  private saveAttachment(runDir: string, att: Attachment): void {
    const file = join(runDir, ATTACHMENT);
    // the temporary file lives beside the run dir, not in it: pulling the run dir back from the host (rsync
    // --delete) must not remove it between the write and the rename
    const tmp = join(dirname(runDir), `.${basename(runDir)}.${ATTACHMENT}.${process.pid}.tmp`);
    writeFileSync(tmp, `${JSON.stringify(att)}\n`);
    renameSync(tmp, file);
  }

  private async status(att: Attachment): Promise<AgentStatus | undefined> {
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

  /** Follows the worker's stream until it exits or its host is lost; re-attaches after dropped connections. */
  private async follow(att: Attachment, runDir: string, io: StageIO): Promise<StageExit> {
    let pulling: Promise<unknown> | undefined;
    const timer = setInterval(() => {
      pulling ??= this.pull(att, runDir).finally(() => (pulling = undefined));
    }, this.settings.syncInterval * 1000);
    const finish = async (exit: StageExit): Promise<StageExit> => {
      clearInterval(timer);
      await pulling;
      const ok = await this.pull(att, runDir);
      if (!ok && !exit.lost) io.onOutput(`warning: the last copy of ${att.remoteRunDir} from ${this.host} failed; the local store has the copy from before`, 'stderr');
      return exit;
    };
    for (;;) {
      const r = await this.followOnce(att, runDir, io);
      if (r.t === 'x') return finish({ code: r.code, signal: r.signal as NodeJS.Signals | null });
      if (r.t === 'lost') return finish({ code: null, signal: null, lost: `${this.host}: ${r.why}` });
      // The connection dropped: keep trying to re-attach until the host is known gone or the timeout passes.
      io.onOutput(`${this.host}: connection lost (${r.why}); re-attaching at byte ${att.offset}`, 'stderr');
      const deadline = Date.now() + this.settings.reattachTimeout * 1000;
      let back = false;
      while (!back) {
        const gone = await this.access.whyLost?.().catch(() => undefined);
        if (gone) return finish({ code: null, signal: null, lost: `${this.host}: ${gone}` });
        const s = await this.status(att).catch(() => undefined);
        if (s?.launched && (s.exit || s.supervisorAlive)) back = true;
        else if (s) return finish({ code: null, signal: null, lost: `${this.host}: the worker is gone (no exit recorded)` });
        else if (Date.now() > deadline) {
          clearInterval(timer);
          return { code: null, signal: null, lost: `${this.host}: unreachable for ${this.settings.reattachTimeout} s` };
        } else await sleep(1000);
      }
      io.onOutput(`${this.host}: re-attached to the worker`, 'stderr');
    }
  }

  private followOnce(att: Attachment, runDir: string, io: StageIO): Promise<FollowLine & { t: 'x' | 'lost' } | { t: 'dropped'; why: string }> {
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
          this.saveAttachment(runDir, att);
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
