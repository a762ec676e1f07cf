/**
 * The local run store: one directory per run, W&B-like file names, local files as the source of truth.
 *
 * <root>/<run-id>/run.json       RunRecord, written atomically; only the owning process writes it
 * <root>/<run-id>/config.yaml    resolved config, secrets redacted
 * <root>/<run-id>/history.jsonl  one JSON line per log call (+ _step, _runtime, _timestamp)
 * <root>/<run-id>/summary.json   last value of every metric, `_best` of metrics with a goal, summary() values
 * <root>/<run-id>/output.log     `<iso ts> <text>` lines, stderr prefixed `ERROR `
 * <root>/<run-id>/media/images/  `<key>_<step>_<sha256[:20]>.png`
 * <root>/<run-id>/out/           the stage's artifacts
 * <root>/<run-id>/checkpoints/step-<N>/  files + manifest.json
 */
import { appendFileSync, readFileSync } from 'node:fs';
import { access, mkdir, readdir, readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { stringify as toYaml } from 'yaml';
import { redactConfig, scrub, scrubDeep, secretValues } from '../secrets.js';
import type { CheckpointInfo } from '../plugins/types.js';
import { runCheckpoints, type RunCheckpoints, type WarningSink } from './checkpoints.js';
import { AmbiguousRunIdError, RunNotFoundError, RunRecordError, RunStoreError, RunUsageError } from './errors.js';
import { isErrnoCode, sha256, writeFileAtomic, writeFileAtomicSync } from './fs-util.js';
import { newRunId } from './ids.js';
import { openOutputLog, type OutputLog } from './output-log.js';
import { pngSize } from './png.js';
import { parseRunRecord, type RunInit, type RunRecord, type RunStatus } from './record.js';

export interface RunStoreOptions {
  /** Where warnings go (unreadable run.json, corrupt checkpoint, …). Default: stderr. */
  onWarning?: WarningSink;
  /** Environment whose secret-named variables are scrubbed from everything written. Default: process.env. */
  env?: Record<string, string | undefined>;
  /** Extra secret values to scrub (e.g. a token read from a file). */
  secrets?: readonly string[];
  /** Id generator (tests use it to force collisions). Default: `newRunId`. */
  newId?: () => string;
}

export interface CheckpointsOptions {
  /** Receives "skipping corrupt checkpoint …" messages. Default: the store's onWarning. */
  onWarning?: WarningSink;
}

/** W&B's image-file history value. */
export interface ImageFileValue {
  _type: 'image-file';
  /** Relative to the run dir: `media/images/<key>_<step>_<sha256[:20]>.png`. */
  path: string;
  sha256: string;
  size: number;
  format: 'png';
  width: number;
  height: number;
  caption?: string;
}

export interface BestValue {
  value: number;
  step: number;
  goal: 'minimize' | 'maximize';
  /** Set on the run's key metric (`defineMetric(..., { primary: true })`). */
  primary?: boolean;
}

const RUN_JSON = 'run.json';
const SUMMARY_JSON = 'summary.json';
const HISTORY = 'history.jsonl';
const CREATE_ATTEMPTS = 100;
const LIST_BATCH = 64;
/** Summary writes are coalesced to at most one per interval; flush() and process exit write what is pending. */
const SUMMARY_INTERVAL_MS = 1000;

const defaultWarning: WarningSink = (m) => process.stderr.write(`warning: ${m}\n`);

/** Serialises read-modify-write of one run.json within this process. */
const locks = new Map<string, Promise<unknown>>();
function withLock<T>(key: string, fn: () => Promise<T>): Promise<T> {
  const prev = locks.get(key) ?? Promise.resolve();
  const next = prev.then(fn, fn);
  const tail = next.catch(() => undefined);
  locks.set(key, tail);
  void tail.then(() => {
    if (locks.get(key) === tail) locks.delete(key);
  });
  return next;
}

/** Handles with summary changes not yet on disk; written synchronously if the process exits first. */
const dirty = new Set<RunHandle>();
let exitHookInstalled = false;
function markDirty(h: RunHandle): void {
  dirty.add(h);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => {
      for (const d of dirty) d.flushQuietly();
    });
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: the process exists but belongs to someone else.
    return !isErrnoCode(err, 'ESRCH');
  }
}

function validRunName(q: string): boolean {
  return q.length > 0 && !q.startsWith('.') && !/[\\/]/.test(q);
}

export class RunStore {
  readonly root: string;
  /** Values scrubbed from every file the store writes. */
  readonly secrets: readonly string[];
  readonly onWarning: WarningSink;
  private readonly makeId: () => string;
  private readonly host = hostname();

  constructor(root: string, options: RunStoreOptions = {}) {
    // Absolute, so paths handed to plugins (CheckpointInfo.dir, media) survive a change of cwd.
    this.root = resolve(root);
    this.secrets = [...new Set([...secretValues(options.env ?? process.env), ...(options.secrets ?? [])])]
      .filter((s) => s.length > 0)
      .sort((a, b) => b.length - a.length);
    this.onWarning = options.onWarning ?? defaultWarning;
    this.makeId = options.newId ?? (() => newRunId());
  }

  /**
   * Creates a run directory with a fresh unique id (mkdir without `recursive` fails on an existing directory,
   * so concurrent creators, even in other processes, never share one), status 'running', run.json and
   * config.yaml (redacted by key and by value). pid/owner_host default to this process.
   */
  async create(init: RunInit, config?: unknown): Promise<RunHandle> {
    await mkdir(this.root, { recursive: true });
    let id: string | undefined;
    for (let attempt = 0; attempt < CREATE_ATTEMPTS && id === undefined; attempt++) {
      const candidate = this.makeId();
      if (!validRunName(candidate)) throw new RunUsageError(`run id generator returned an unusable id '${candidate}'`);
      try {
        await mkdir(join(this.root, candidate));
        id = candidate;
      } catch (err) {
        if (!isErrnoCode(err, 'EEXIST')) throw err;
      }
    }
    if (id === undefined) {
      throw new RunStoreError(`could not find a free run id in ${this.root} after ${CREATE_ATTEMPTS} attempts; check the id generator`);
    }
    const dir = join(this.root, id);
    const { name, kind, ...rest } = init;
    const record: RunRecord = {
      id,
      name,
      kind,
      ...rest,
      status: init.status ?? 'running',
      host: init.host ?? this.host,
      pid: init.pid ?? process.pid,
      owner_host: init.owner_host ?? this.host,
      created_at: new Date().toISOString(),
      meta: init.meta ?? {},
    };
    await mkdir(join(dir, 'out'));
    const yamlText = toYaml(redactConfig(config ?? {}, this.secrets));
    await writeFileAtomic(join(dir, 'config.yaml'), scrub(yamlText, this.secrets));
    await this.writeRecord(dir, record);
    return new RunHandle(this, record);
  }

  /** Opens a run by full id or unique prefix. */
  async open(idOrPrefix: string): Promise<RunHandle> {
    if (!validRunName(idOrPrefix)) throw new RunUsageError(`'${idOrPrefix}' is not a run id (expected letters and digits, no '/')`);
    const names = await this.runDirNames();
    let id: string;
    if (names.includes(idOrPrefix)) id = idOrPrefix;
    else {
      const candidates = names.filter((n) => n.startsWith(idOrPrefix)).sort();
      if (candidates.length === 0) throw new RunNotFoundError(idOrPrefix, this.root);
      if (candidates.length > 1) throw new AmbiguousRunIdError(idOrPrefix, candidates);
      id = candidates[0]!;
    }
    return new RunHandle(this, await this.readRecord(id));
  }

  /** All runs, newest first. Directories without run.json are not runs; an unreadable run.json is warned about and skipped. */
  async list(): Promise<RunRecord[]> {
    const out: RunRecord[] = [];
    const names = await this.runDirNames();
    // Read in parallel batches: a store holds hundreds of runs, and file descriptors are finite.
    for (let i = 0; i < names.length; i += LIST_BATCH) {
      const batch = await Promise.all(
        names.slice(i, i + LIST_BATCH).map(async (name) => {
          try {
            return await this.readRecord(name);
          } catch (err) {
            if (err instanceof RunRecordError) this.onWarning(`${err.message}; run skipped`);
            else if (!isErrnoCode(err, 'ENOENT')) throw err;
            return undefined;
          }
        }),
      );
      for (const r of batch) if (r) out.push(r);
    }
    return out.sort((a, b) => (a.created_at === b.created_at ? cmp(b.id, a.id) : cmp(b.created_at, a.created_at)));
  }

  /** The newest finished stage run with this fingerprint: its outputs can be reused instead of running again. */
  async findReusable(fingerprint: string): Promise<RunRecord | undefined> {
    return (await this.list()).find((r) => r.kind === 'stage' && r.status === 'finished' && r.fingerprint === fingerprint);
  }

  /** The newest crashed/stopped/failed run with this fingerprint that has a checkpoint (its own or an ancestor's). */
  async findResumable(fingerprint: string): Promise<RunRecord | undefined> {
    for (const r of await this.list()) {
      if (r.fingerprint !== fingerprint || !(r.status === 'crashed' || r.status === 'stopped' || r.status === 'failed')) continue;
      const cps = await new RunHandle(this, r).checkpoints().list();
      if (cps.length > 0) return r;
    }
    return undefined;
  }

  /**
   * Where a new run with this fingerprint resumes: the newest crashed/stopped/failed run whose checkpoint chain
   * holds a checkpoint that verifies (sha256), with that checkpoint. `unusable` lists the newer interrupted runs
   * passed over because none of their checkpoints verify (each corrupt one is warned about).
   */
  async resumePoint(fingerprint: string, onWarning: WarningSink = this.onWarning): Promise<{ run?: RunRecord; checkpoint?: CheckpointInfo; unusable: RunRecord[] }> {
    const unusable: RunRecord[] = [];
    for (const r of await this.list()) {
      if (r.fingerprint !== fingerprint || !(r.status === 'crashed' || r.status === 'stopped' || r.status === 'failed')) continue;
      const cps = new RunHandle(this, r).checkpoints({ onWarning });
      if ((await cps.list()).length === 0) continue;
      const checkpoint = await cps.latest();
      if (checkpoint) return { run: r, checkpoint, unusable };
      unusable.push(r);
    }
    return { unusable };
  }

  /** A handle on an existing run record (no read). */
  handle(record: RunRecord): RunHandle {
    return new RunHandle(this, record);
  }

  /** @internal Reads run.json, rewriting a 'running' run whose owner process on this host is gone as 'crashed'. */
  async readRecord(id: string): Promise<RunRecord> {
    const dir = join(this.root, id);
    const file = join(dir, RUN_JSON);
    const record = parseRunRecord(await readFile(file, 'utf8'), file);
    if (record.id !== id) throw new RunRecordError(file, 'id', `'${record.id}' differs from the directory name '${id}'`);
    if (record.status !== 'running' || record.pid === undefined || record.owner_host !== this.host) return record;
    if (record.pid === process.pid || isAlive(record.pid)) return record;
    return withLock(file, async () => {
      const cur = parseRunRecord(await readFile(file, 'utf8'), file);
      if (cur.status !== 'running' || cur.pid !== record.pid) return cur;
      const crashed: RunRecord = {
        ...cur,
        status: 'crashed',
        ended_at: new Date().toISOString(),
        error: `owner process ${cur.pid} ended without finishing the run`,
      };
      await this.writeRecord(dir, crashed);
      return crashed;
    });
  }

  /** @internal */
  async writeRecord(dir: string, record: RunRecord): Promise<void> {
    await writeFileAtomic(join(dir, RUN_JSON), `${JSON.stringify(scrubDeep(record, this.secrets), null, 2)}\n`);
  }

  private async runDirNames(): Promise<string[]> {
    let entries;
    try {
      entries = await readdir(this.root, { withFileTypes: true });
    } catch (err) {
      if (isErrnoCode(err, 'ENOENT')) return [];
      throw err;
    }
    const names = entries.filter((e) => e.isDirectory() && !e.name.startsWith('.')).map((e) => e.name);
    const checks = await Promise.all(
      names.map(async (n) => {
        try {
          await access(join(this.root, n, RUN_JSON));
          return true;
        } catch {
          return false;
        }
      }),
    );
    return names.filter((_, i) => checks[i]);
  }
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

interface SummaryState {
  values: Record<string, unknown>;
  best: Record<string, BestValue>;
  goals: Map<string, 'minimize' | 'maximize'>;
  primary?: string;
}

/**
 * One run. The orchestrator uses read/update/finish (run.json); the worker process uses log/summary/media/
 * output/checkpoints. Summary state is loaded from summary.json on first use and then kept in memory, so one
 * process at a time should write a run's history and summary.
 */
export class RunHandle {
  readonly id: string;
  readonly dir: string;
  readonly outDir: string;
  private startMs: number;
  private summaryState: SummaryState | undefined;
  private lastSummaryWrite = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly store: RunStore,
    record: RunRecord,
  ) {
    this.id = record.id;
    this.dir = join(store.root, record.id);
    this.outDir = join(this.dir, 'out');
    this.startMs = Date.parse(record.started_at ?? record.created_at);
  }

  async read(): Promise<RunRecord> {
    return this.store.readRecord(this.id);
  }

  /** Merges `patch` into run.json (`meta` merged shallowly; an `undefined` value removes a field) and writes it atomically. */
  async update(patch: Partial<RunRecord>): Promise<RunRecord> {
    const file = join(this.dir, RUN_JSON);
    return withLock(file, async () => {
      const cur = parseRunRecord(await readFile(file, 'utf8'), file);
      const next: RunRecord = { ...cur, ...patch, id: cur.id, created_at: cur.created_at, meta: { ...cur.meta, ...(patch.meta ?? {}) } };
      await this.store.writeRecord(this.dir, next);
      if (patch.started_at !== undefined) this.startMs = Date.parse(patch.started_at);
      // What was written went through JSON: return that (undefined fields gone, secrets scrubbed).
      return parseRunRecord(`${JSON.stringify(scrubDeep(next, this.store.secrets))}`, file);
    });
  }

  /** Flushes logs, sets status and ended_at (and key_metric from a primary metric when not set). */
  async finish(status: RunStatus, extra: Partial<RunRecord> = {}): Promise<RunRecord> {
    await this.flush();
    const patch: Partial<RunRecord> = { ...extra, status, ended_at: extra.ended_at ?? new Date().toISOString() };
    if (patch.key_metric === undefined) {
      const primary = this.loadSummary().primary;
      if (primary !== undefined && (await this.read()).key_metric === undefined) patch.key_metric = primary;
    }
    return this.update(patch);
  }

  /** Appends one history line and updates the summary. Non-finite values are written as "NaN"/"Infinity"/"-Infinity". */
  log(metrics: Record<string, number>, step: number): void {
    for (const [k, v] of Object.entries(metrics)) {
      if (k === '' || k.startsWith('_')) throw new RunUsageError(`log: metric name '${k}' is reserved or empty (names starting with '_' belong to the store)`);
      if (typeof v !== 'number') throw new RunUsageError(`log: metric '${k}' must be a number, got ${typeof v}`);
    }
    const encoded: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(metrics)) encoded[k] = Number.isFinite(v) ? v : String(v);
    this.logRaw(encoded, step);
  }

  /** Declares how a metric is judged; summary `_best` keeps its best value and step. */
  defineMetric(name: string, o: { goal: 'minimize' | 'maximize'; primary?: boolean }): void {
    if (name === '' || name.startsWith('_')) throw new RunUsageError(`defineMetric: metric name '${name}' is reserved or empty`);
    if (o.goal !== 'minimize' && o.goal !== 'maximize') {
      throw new RunUsageError(`defineMetric('${name}'): goal must be 'minimize' or 'maximize', got '${String(o.goal)}'`);
    }
    const s = this.loadSummary();
    s.goals.set(name, o.goal);
    const best = s.best[name];
    if (best && best.goal !== o.goal) delete s.best[name];
    const last = s.values[name];
    const lastStep = s.values._step;
    if (!s.best[name] && typeof last === 'number' && Number.isFinite(last) && typeof lastStep === 'number') {
      s.best[name] = { value: last, step: lastStep, goal: o.goal };
    }
    if (o.primary) s.primary = name;
    this.summaryChanged();
  }

  /** Merges values into summary.json (strings scrubbed of secrets). */
  summary(values: Record<string, unknown>): void {
    if ('_best' in values) throw new RunUsageError(`summary: '_best' is kept by the store from defineMetric goals; use another key`);
    Object.assign(this.loadSummary().values, scrubDeep(values, this.store.secrets));
    this.summaryChanged();
  }

  /**
   * Writes a PNG as `media/images/<key>_<step>_<sha256[:20]>.png` and logs it at `step` as a W&B image-file
   * value. Returns the absolute path of the file.
   */
  async media(key: string, png: Uint8Array, step: number, caption?: string): Promise<string> {
    checkStep(step, 'media');
    if (key === '' || key.startsWith('_')) throw new RunUsageError(`media: key '${key}' is reserved or empty`);
    const { width, height } = pngSize(png, `media '${key}' at step ${step}`);
    const digest = sha256(png);
    const file = `${sanitizeKey(scrub(key, this.store.secrets))}_${step}_${digest.slice(0, 20)}.png`;
    const dir = join(this.dir, 'media', 'images');
    await mkdir(dir, { recursive: true });
    const abs = join(dir, file);
    await writeFileAtomic(abs, png);
    const value: ImageFileValue = { _type: 'image-file', path: `media/images/${file}`, sha256: digest, size: png.length, format: 'png', width, height };
    if (caption !== undefined) value.caption = scrub(caption, this.store.secrets);
    this.logRaw({ [key]: value }, step);
    return abs;
  }

  /** The run's output.log writer. */
  output(): OutputLog {
    return openOutputLog(join(this.dir, 'output.log'), this.store.secrets);
  }

  /** This run's checkpoints; lookups continue into the runs named by resumed_from. */
  checkpoints(options: CheckpointsOptions = {}): RunCheckpoints {
    const store = this.store;
    return runCheckpoints(
      {
        runId: this.id,
        dir: this.dir,
        async parent(runId) {
          const rec = await store.readRecord(runId);
          if (rec.resumed_from === undefined) return undefined;
          try {
            await store.readRecord(rec.resumed_from);
          } catch (err) {
            if (!isErrnoCode(err, 'ENOENT') && !(err instanceof RunRecordError)) throw err;
            (options.onWarning ?? store.onWarning)(`run ${runId} resumed from ${rec.resumed_from}, which is not in ${store.root}; its checkpoints are not searched`);
            return undefined;
          }
          return { runId: rec.resumed_from, dir: join(store.root, rec.resumed_from) };
        },
      },
      options.onWarning ?? store.onWarning,
    );
  }

  /** Writes any pending summary change. History lines are already on disk when log() returns. */
  async flush(): Promise<void> {
    this.flushSync();
  }

  /** @internal Also used by the process 'exit' hook. */
  flushSync(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (!dirty.has(this)) return;
    dirty.delete(this);
    this.writeSummary();
  }

  /** @internal flushSync for timers and the exit hook, where nobody can catch an error. */
  flushQuietly(): void {
    try {
      this.flushSync();
    } catch (err) {
      this.store.onWarning(`${join(this.dir, SUMMARY_JSON)}: could not write the summary (${(err as Error).message})`);
    }
  }

  private logRaw(values: Record<string, unknown>, step: number): void {
    checkStep(step, 'log');
    const now = Date.now();
    const line: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(values)) line[scrub(k, this.store.secrets)] = v;
    line._step = step;
    line._runtime = Math.max(0, (now - this.startMs) / 1000);
    line._timestamp = now / 1000;
    appendFileSync(join(this.dir, HISTORY), `${JSON.stringify(line)}\n`);
    const s = this.loadSummary();
    Object.assign(s.values, line);
    for (const [k, v] of Object.entries(line)) {
      const goal = s.goals.get(k);
      if (goal === undefined || typeof v !== 'number' || !Number.isFinite(v)) continue;
      const best = s.best[k];
      if (!best || (goal === 'minimize' ? v < best.value : v > best.value)) s.best[k] = { value: v, step, goal };
    }
    this.summaryChanged();
  }

  private summaryChanged(): void {
    markDirty(this);
    const wait = this.lastSummaryWrite + SUMMARY_INTERVAL_MS - Date.now();
    if (wait <= 0) this.flushSync();
    else if (!this.timer) {
      // A timer has no caller to throw to: a failed write becomes a warning (flush() would still throw).
      this.timer = setTimeout(() => this.flushQuietly(), wait);
      this.timer.unref();
    }
  }

  private writeSummary(): void {
    const s = this.loadSummary();
    const best: Record<string, BestValue> = {};
    for (const [k, b] of Object.entries(s.best)) best[k] = s.primary === k ? { ...b, primary: true } : { ...b };
    const out = scrubDeep({ ...s.values, _best: best }, this.store.secrets);
    writeFileAtomicSync(join(this.dir, SUMMARY_JSON), `${JSON.stringify(out, null, 2)}\n`);
    this.lastSummaryWrite = Date.now();
  }

  private loadSummary(): SummaryState {
    if (this.summaryState) return this.summaryState;
    const state: SummaryState = { values: {}, best: {}, goals: new Map() };
    const file = join(this.dir, SUMMARY_JSON);
    let raw: unknown;
    try {
      raw = JSON.parse(readFileSync(file, 'utf8'));
    } catch (err) {
      if (!isErrnoCode(err, 'ENOENT')) this.store.onWarning(`${file}: unreadable (${(err as Error).message}); starting a new summary`);
    }
    if (typeof raw === 'object' && raw !== null && !Array.isArray(raw)) {
      const { _best, ...values } = raw as Record<string, unknown>;
      state.values = values;
      if (typeof _best === 'object' && _best !== null) {
        for (const [k, b] of Object.entries(_best as Record<string, Partial<BestValue>>)) {
          if (typeof b?.value !== 'number' || typeof b.step !== 'number' || (b.goal !== 'minimize' && b.goal !== 'maximize')) continue;
          state.best[k] = { value: b.value, step: b.step, goal: b.goal };
          state.goals.set(k, b.goal);
          if (b.primary) state.primary = k;
        }
      }
    }
    this.summaryState = state;
    return state;
  }
}

function checkStep(step: number, what: string): void {
  if (!Number.isSafeInteger(step) || step < 0) throw new RunUsageError(`${what}: step must be a non-negative integer, got ${String(step)}`);
}

/** Media keys become file-name parts: `/` (and anything else unsafe in a file name) → `_`. */
export function sanitizeKey(key: string): string {
  return key.replace(/[^A-Za-z0-9._-]/g, '_');
}
