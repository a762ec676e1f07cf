/**
 * The W&B replica: replays a run's files from the run store (run.json, config.yaml, history.jsonl,
 * summary.json, output.log, media/, sync/system.jsonl) to W&B, advancing `sync/wandb.json` only after W&B
 * acknowledged. Called over and over while a stage runs (live) and once by `minidalle sync`; both pick up
 * where the state says, so an outage delays and nothing is sent twice.
 *
 * History lines with the same `_step` are merged into one W&B row (W&B keeps one row per step), and the
 * newest step is held back until the run ends or a later step appears, since more of it may still be
 * written. A resumed run (run.json `resumed_from`) continues its first ancestor's W&B run: the ancestors are
 * replayed first and sealed, offsets continue from max(their state, the server's RunResumeStatus), lines at
 * or below the last `_step` W&B holds are not sent again, and `_runtime` continues.
 */
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { cpus, hostname, platform, release, totalmem } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import type { RunRecord } from '../../runs/record.js';
import { RunStore } from '../../runs/store.js';
import { scrub } from '../../secrets.js';
import type { FileStreamBody, WandbClient } from './client.js';
import { runUrl } from './settings.js';
import { wandbGroupOf } from './destination.js';
import { newState, readState, SYSTEM_FILE, syncDir, writeState, type StreamName, type WandbSyncState } from './state.js';
import { readLines, sha256Text, type Line } from './streams.js';

/** Where a run without a sync state is sent. */
export interface WandbDestination {
  baseUrl: string;
  entity: string;
  project: string;
  tags: string[];
  notes?: string;
}

export interface ReplayOptions {
  /** The run store's root. */
  runsDir: string;
  runId: string;
  client: WandbClient;
  /** Used when the run (or an ancestor) has no sync state yet. */
  destination: WandbDestination;
  /** Values scrubbed from everything sent (the store's secrets; the API key is always added). */
  secrets: readonly string[];
  warn: (message: string) => void;
  signal?: AbortSignal;
}

export interface ReplayStep {
  /** Send everything, the newest step and unterminated last lines included, plus the final run files. */
  final: boolean;
  /** With final: also mark the W&B run complete (exitcode from run.json). */
  complete: boolean;
}

export interface ReplayReport {
  runId: string;
  wandbRunId: string;
  url: string;
  sent: Record<StreamName, number> & { files: number };
  complete: boolean;
  sealedBy?: string;
}

/** Lines and bytes per file_stream request. */
const MAX_LINES = 1000;
const MAX_BODY_BYTES = 4 << 20;

const FILE_NAMES: Record<StreamName, string> = { history: 'wandb-history.jsonl', events: 'wandb-events.jsonl', output: 'output.log' };

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** W&B's config form: `{key: {value}}`; the plugin's `with:` keys at the top, minidalle's own under `minidalle`. */
export function wandbConfig(config: unknown, record: RunRecord): Record<string, { value: unknown }> {
  const out: Record<string, { value: unknown }> = {};
  const tree = isObject(config) ? config : {};
  const meta = record.meta as { backend?: unknown; plugin_version?: unknown; git?: { commit?: unknown; dirty?: unknown } };
  const { with: withValues, ...rest } = tree;
  if (isObject(withValues)) for (const [k, v] of Object.entries(withValues)) out[k] = { value: v };
  out.minidalle = {
    value: {
      ...rest,
      run_id: record.id,
      stage: record.stage,
      plugin: record.plugin,
      plugin_version: meta.plugin_version,
      experiment: record.experiment,
      pipeline_run: record.group,
      resumed_from: record.resumed_from,
      backend: meta.backend,
      git_commit: meta.git?.commit,
      git_dirty: meta.git?.dirty,
    },
  };
  return JSON.parse(JSON.stringify(out)) as Record<string, { value: unknown }>;
}

/** What W&B shows as the run's system information. */
function wandbMetadata(record: RunRecord): Record<string, unknown> {
  const meta = record.meta as { backend?: unknown; versions?: Record<string, string>; git?: { commit?: string; branch?: string } };
  return {
    os: `${platform()}-${release()}`,
    host: record.host,
    program: 'minidalle',
    codePath: record.experiment,
    startedAt: record.started_at ?? record.created_at,
    executable: process.execPath,
    cpu_count: cpus().length,
    memory: { total: String(totalmem()) },
    git: meta.git ? { commit: meta.git.commit, branch: meta.git.branch } : undefined,
    minidalle: { run_id: record.id, stage: record.stage, plugin: record.plugin, backend: meta.backend, versions: meta.versions, orchestrator_host: hostname() },
  };
}

async function listMedia(runDir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    let entries;
    try {
      entries = await readdir(join(runDir, rel), { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (e.name.startsWith('.')) continue; // temp files of atomic writes
      const p = `${rel}/${e.name}`;
      if (e.isDirectory()) await walk(p);
      else if (e.isFile()) out.push(p);
    }
  };
  await walk('media');
  // W&B tables written beside the run files.
  for (const e of await readdir(runDir, { withFileTypes: true }).catch(() => [])) if (e.isFile() && e.name.endsWith('.table.json')) out.push(e.name);
  return out.sort();
}

export class RunReplayer {
  private upserted = false;
  private readonly secrets: readonly string[];
  private readonly store: RunStore;

  constructor(private readonly o: ReplayOptions) {
    this.secrets = [...o.secrets, ...o.client.secrets];
    // The store's read marks a run whose owner process died as crashed (its exit code for W&B).
    this.store = new RunStore(o.runsDir, { onWarning: o.warn, secrets: o.secrets });
  }

  private readRecord(runId: string): Promise<RunRecord> {
    return this.store.readRecord(runId);
  }

  private dir(runId: string): string {
    return join(this.o.runsDir, runId);
  }

  /** The run's state, created from the destination (and its resume chain) when it has none. */
  private async stateFor(record: RunRecord): Promise<WandbSyncState> {
    const dir = this.dir(record.id);
    const existing = await readState(dir);
    if (existing) return existing;
    let wandbRunId = record.id;
    if (record.resumed_from) {
      const parent = await this.stateFor(await this.readRecord(record.resumed_from));
      wandbRunId = parent.wandb_run_id;
    }
    const d = this.o.destination;
    const state = newState({ base_url: d.baseUrl, entity: d.entity, project: d.project, wandb_run_id: wandbRunId, group: wandbGroupOf(record), tags: d.tags, job_type: record.plugin, notes: d.notes });
    await writeState(dir, state);
    return state;
  }

  /** One pass: sends what the run's files hold beyond the state. */
  async step(step: ReplayStep): Promise<ReplayReport> {
    const record = await this.readRecord(this.o.runId);
    return this.replay(record, step);
  }

  private async replay(record: RunRecord, step: ReplayStep): Promise<ReplayReport> {
    const { client, signal } = this.o;
    const dir = this.dir(record.id);
    const state = await this.stateFor(record);
    const report: ReplayReport = {
      runId: record.id,
      wandbRunId: state.wandb_run_id,
      url: runUrl({ baseUrl: state.base_url, entity: state.entity ?? client.entity, project: state.project, runId: state.wandb_run_id }),
      sent: { history: 0, events: 0, output: 0, files: 0 },
      complete: state.complete,
      sealedBy: state.sealed_by,
    };
    if (state.sealed_by || (state.complete && step.final)) return report;
    // Ancestors first (they upsert as themselves), then this run's upsert, so W&B shows this run's config.
    if (!state.segment_started) await this.startSegment(record, state);
    if (!this.upserted || record.id !== this.o.runId) {
      const configText = await readFile(join(dir, 'config.yaml'), 'utf8').catch(() => '{}');
      await client.upsertRun(
        {
          name: state.wandb_run_id,
          displayName: record.name,
          config: wandbConfig(parseYaml(scrub(configText, this.secrets)), record),
          tags: state.tags,
          jobType: state.job_type,
          groupName: state.group,
          notes: state.notes,
          host: record.host,
          program: 'minidalle',
        },
        signal,
      );
      if (record.id === this.o.runId) this.upserted = true;
    }

    const historyFile = join(dir, 'history.jsonl');
    const hs = await stat(historyFile).catch(() => undefined);
    if (hs && (hs.size < state.streams.history.bytes || (state.streams.history.ino !== undefined && state.streams.history.ino !== hs.ino))) {
      // Replaced, not appended to: read it again; the steps W&B already has are not sent twice (last_step).
      state.streams.history.bytes = 0;
    }
    if (hs) state.streams.history.ino = hs.ino;
    // 1. What the streams hold beyond the state (read before the media scan, so every image a sent line names is uploaded first).
    const history = await this.historyRows(historyFile, state, step.final);
    const events = await this.eventRows(join(syncDir(dir), SYSTEM_FILE), state, step.final);
    const output = (await readLines(join(dir, 'output.log'), state.streams.output.bytes, { final: step.final })).map((l) => ({ text: scrub(l.text, this.secrets), end: l.end }));

    // 2. Run files: media, config, metadata; at the end the log, the summary and run.json.
    report.sent.files = await this.uploadFiles(dir, record, state, step.final);

    // 3. file_stream, in batches, the state advanced after each acknowledged one.
    const summary = await this.summaryLine(dir, state);
    const queues: Record<StreamName, { text: string; end: number; step?: number; runtime?: number }[]> = { history, events, output };
    for (;;) {
      const body: FileStreamBody = { files: {} };
      let bytes = 0;
      const taken: Partial<Record<StreamName, typeof history>> = {};
      for (const name of ['history', 'events', 'output'] as const) {
        const q = queues[name];
        const batch: typeof history = [];
        while (q.length > 0 && batch.length < MAX_LINES && (batch.length === 0 || bytes + q[0]!.text.length < MAX_BODY_BYTES)) {
          bytes += q[0]!.text.length;
          batch.push(q.shift()!);
        }
        if (batch.length === 0) continue;
        taken[name] = batch;
        body.files![FILE_NAMES[name]] = { offset: state.streams[name].offset, content: batch.filter((l) => l.text !== '').map((l) => l.text) };
      }
      const summaryDue = summary !== undefined && summary.sha !== state.summary_sha256;
      if (summaryDue) body.files!['wandb-summary.json'] = { offset: 0, content: [summary.text] };
      if (state.pending_uploaded.length > 0) body.uploaded = [...state.pending_uploaded];
      const drained = queues.history.length + queues.events.length + queues.output.length === 0;
      const finishing = step.final && step.complete && drained;
      if (finishing) {
        body.complete = true;
        body.exitcode = record.exit_code ?? (record.status === 'finished' ? 0 : 1);
      }
      if (Object.keys(body.files!).length === 0) delete body.files;
      if (!body.files && !body.uploaded && !finishing) break;
      // Empty lines (placeholders for unreadable or already-sent history) are not sent: fix the offsets up.
      for (const [name, batch] of Object.entries(taken) as [StreamName, typeof history][]) {
        if (batch.every((l) => l.text === '')) delete body.files?.[FILE_NAMES[name]];
      }
      if (body.files && Object.keys(body.files).length === 0) delete body.files;
      if (body.files || body.uploaded || finishing) await client.fileStream(state.wandb_run_id, body, signal);
      for (const [name, batch] of Object.entries(taken) as [StreamName, typeof history][]) {
        const sent = batch.filter((l) => l.text !== '');
        state.streams[name].offset += sent.length;
        state.streams[name].bytes = batch[batch.length - 1]!.end;
        report.sent[name] += sent.length;
        if (name === 'history') {
          for (const l of sent) {
            if (l.step !== undefined) state.last_step = l.step;
            if (l.runtime !== undefined) state.last_runtime = Math.max(state.last_runtime, l.runtime);
          }
        }
      }
      if (summaryDue) state.summary_sha256 = summary.sha;
      state.pending_uploaded = [];
      if (finishing) state.complete = true;
      await writeState(dir, state);
      if (finishing || drained) break;
    }
    if (step.final) {
      const { old_step, unreadable } = state.skipped;
      if (old_step + unreadable > 0 && report.sent.history + report.sent.files > 0) {
        this.o.warn(`run ${record.id}: ${old_step ? `${old_step} history line(s) at a step W&B already had` : ''}${old_step && unreadable ? ' and ' : ''}${unreadable ? `${unreadable} line(s) that are not JSON` : ''} were not sent`);
      }
    }
    report.complete = state.complete;
    return report;
  }

  /**
   * Settles where this run's lines go on the server. A run of its own starts at 0 (its lines are the W&B
   * run's lines). A resumed one first sends what its ancestors still hold and seals them, then continues from
   * max(their final offsets, the server's line counts).
   */
  private async startSegment(record: RunRecord, state: WandbSyncState): Promise<void> {
    if (record.resumed_from) {
      const parentRecord = await this.readRecord(record.resumed_from);
      await this.replay(parentRecord, { final: true, complete: false });
      const parent = (await readState(this.dir(parentRecord.id)))!;
      const server = await this.o.client.resumeStatus(state.wandb_run_id, this.o.signal);
      const counts: Record<StreamName, number> = { history: server?.historyLineCount ?? 0, events: server?.eventsLineCount ?? 0, output: server?.logLineCount ?? 0 };
      for (const name of ['history', 'events', 'output'] as const) state.streams[name] = { bytes: 0, offset: Math.max(parent.streams[name].offset, counts[name]) };
      const serverTail = lastStepOf(server?.historyTail);
      const steps = [parent.last_step, serverTail].filter((s): s is number => s !== null && s !== undefined);
      state.last_step = steps.length ? Math.max(...steps) : null;
      let serverSummary: Record<string, unknown> = {};
      try {
        const parsed = JSON.parse(server?.summaryMetrics ?? '{}') as unknown;
        if (isObject(parsed)) serverSummary = parsed;
      } catch {
        /* an unreadable server summary: the parent's is used */
      }
      const serverRuntime = typeof serverSummary._runtime === 'number' ? serverSummary._runtime : 0;
      state.runtime_base = Math.max(parent.last_runtime, serverRuntime);
      state.last_runtime = state.runtime_base;
      state.summary_base = Object.keys(serverSummary).length ? serverSummary : parent.summary_base;
      parent.sealed_by = record.id;
      await writeState(this.dir(parentRecord.id), parent);
    }
    state.segment_started = true;
    await writeState(this.dir(record.id), state);
  }

  /** history.jsonl → W&B rows: lines of one `_step` merged, `_runtime` continued, steps W&B has skipped. */
  private async historyRows(file: string, state: WandbSyncState, final: boolean): Promise<{ text: string; end: number; step?: number; runtime?: number }[]> {
    const lines = await readLines(file, state.streams.history.bytes, { final });
    const groups: { lines: Line[]; row: Record<string, unknown>; step: number | undefined }[] = [];
    for (const l of lines) {
      let row: unknown;
      try {
        row = JSON.parse(l.text);
      } catch {
        row = undefined;
      }
      if (!isObject(row)) {
        if (l.text.trim() !== '') state.skipped.unreadable++;
        groups.push({ lines: [l], row: {}, step: undefined });
        continue;
      }
      const s = typeof row._step === 'number' ? row._step : undefined;
      const last = groups[groups.length - 1];
      if (last && s !== undefined && last.step === s) {
        Object.assign(last.row, row);
        last.lines.push(l);
      } else groups.push({ lines: [l], row, step: s });
    }
    // The newest step may still get lines (a media value logged after the metrics of its step).
    if (!final && groups.length > 0 && groups[groups.length - 1]!.step !== undefined) groups.pop();
    const out: { text: string; end: number; step?: number; runtime?: number }[] = [];
    let lastStep = state.last_step;
    for (const g of groups) {
      const end = g.lines[g.lines.length - 1]!.end;
      if (g.step === undefined || Object.keys(g.row).length === 0) {
        out.push({ text: '', end });
        continue;
      }
      if (lastStep !== null && g.step <= lastStep) {
        state.skipped.old_step += g.lines.length;
        out.push({ text: '', end });
        continue;
      }
      lastStep = g.step;
      const row = { ...g.row };
      if (typeof row._runtime === 'number') row._runtime += state.runtime_base;
      out.push({ text: scrub(JSON.stringify(row), this.secrets), end, step: g.step, runtime: row._runtime as number | undefined });
    }
    return out;
  }

  private async eventRows(file: string, state: WandbSyncState, final: boolean): Promise<{ text: string; end: number }[]> {
    return (await readLines(file, state.streams.events.bytes, { final })).map((l) => {
      try {
        const row = JSON.parse(l.text) as Record<string, unknown>;
        if (typeof row._runtime === 'number') row._runtime += state.runtime_base;
        return { text: scrub(JSON.stringify({ ...row, _wandb: true }), this.secrets), end: l.end };
      } catch {
        return { text: '', end: l.end };
      }
    });
  }

  /** wandb-summary.json: W&B's summary at the start of this segment, this run's summary.json over it. */
  private async summaryLine(dir: string, state: WandbSyncState): Promise<{ text: string; sha: string } | undefined> {
    let local: unknown;
    try {
      local = JSON.parse(await readFile(join(dir, 'summary.json'), 'utf8'));
    } catch {
      return undefined; // nothing logged yet, or a summary being replaced (read again on the next pass)
    }
    if (!isObject(local)) return undefined;
    const { _best: _, ...values } = local;
    const out: Record<string, unknown> = { ...state.summary_base, ...values };
    if (typeof values._runtime === 'number') out._runtime = values._runtime + state.runtime_base;
    out._wandb = { runtime: Math.round(typeof out._runtime === 'number' ? out._runtime : 0) };
    const text = scrub(JSON.stringify(out), this.secrets);
    return { text, sha: sha256Text(text) };
  }

  /** Uploads run files whose bytes W&B does not have yet; returns how many. */
  private async uploadFiles(dir: string, record: RunRecord, state: WandbSyncState, final: boolean): Promise<number> {
    const generated = join(syncDir(dir), 'wandb-files');
    await mkdir(generated, { recursive: true });
    const candidates: { name: string; path: string; sha?: string }[] = [];
    const writeGenerated = async (name: string, text: string) => {
      const path = join(generated, name);
      const scrubbed = scrub(text, this.secrets);
      await writeFile(path, scrubbed);
      candidates.push({ name, path, sha: sha256Text(scrubbed) });
    };
    for (const m of await listMedia(dir)) {
      // Media names carry their sha256 prefix and never change: known ones are not hashed again.
      if (state.files[m] !== undefined) continue;
      candidates.push({ name: m, path: join(dir, m) });
    }
    if (state.files['config.yaml'] === undefined) {
      const configText = await readFile(join(dir, 'config.yaml'), 'utf8').catch(() => '{}');
      await writeGenerated('config.yaml', toYaml(wandbConfig(parseYaml(scrub(configText, this.secrets)), record)));
      await writeGenerated('wandb-metadata.json', JSON.stringify(wandbMetadata(record), null, 2));
    }
    if (final) {
      const log = join(dir, 'output.log');
      if (await stat(log).catch(() => undefined)) await writeGenerated('output.log', await readFile(log, 'utf8'));
      const summary = await this.summaryLine(dir, state);
      if (summary) await writeGenerated('wandb-summary.json', summary.text);
      await writeGenerated('minidalle-run.json', `${JSON.stringify(record, null, 2)}\n`);
    }
    const due: { name: string; path: string; sha: string }[] = [];
    for (const c of candidates) {
      const sha = c.sha ?? sha256Text(await readFile(c.path));
      if (state.files[c.name] !== sha) due.push({ ...c, sha });
    }
    if (due.length === 0) return 0;
    const targets = await this.o.client.createRunFiles(state.wandb_run_id, due.map((d) => d.name), this.o.signal);
    for (const d of due) {
      const t = targets.get(d.name);
      if (t?.uploadUrl) await this.o.client.uploadFile({ ...t, uploadUrl: t.uploadUrl }, d.path, `upload ${d.name}`, this.o.signal);
      state.files[d.name] = d.sha;
      if (!state.pending_uploaded.includes(d.name)) state.pending_uploaded.push(d.name);
    }
    await writeState(dir, state);
    return due.length;
  }
}

/** The last `_step` in RunResumeStatus's historyTail (a JSON array of JSON line strings). */
function lastStepOf(tail: string | undefined): number | undefined {
  if (!tail) return undefined;
  try {
    const lines = JSON.parse(tail) as unknown;
    if (!Array.isArray(lines)) return undefined;
    for (let i = lines.length - 1; i >= 0; i--) {
      const row = (typeof lines[i] === 'string' ? JSON.parse(lines[i] as string) : lines[i]) as unknown;
      if (isObject(row) && typeof row._step === 'number') return row._step;
    }
  } catch {
    return undefined;
  }
  return undefined;
}
