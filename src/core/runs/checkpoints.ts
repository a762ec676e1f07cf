import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import type { CheckpointInfo, Checkpoints } from '../plugins/types.js';
import { CheckpointError, RunUsageError } from './errors.js';
import { hashFile, isErrnoCode, writeFileAtomic } from './fs-util.js';

export interface CheckpointManifest {
  step: number;
  created_at: string;
  meta: Record<string, unknown>;
  /** Every file of the checkpoint (paths relative to its directory, `/`-separated). */
  files: Record<string, { sha256: string; size: number }>;
}

export type WarningSink = (message: string) => void;

export interface RunCheckpoints extends Checkpoints {
  /** Deletes all but the newest `keep` checkpoints of this run and those in `protect` (never an ancestor's). */
  prune(keep: number, options?: { protect?: number[] }): Promise<void>;
  /**
   * Removes what interrupted saves of this run left (`.tmp-` dirs; a set-aside checkpoint is put back). Call it
   * only when no process writes this run's checkpoints any more (e.g. when a new run resumes from it).
   */
  removeLeftovers(): Promise<void>;
}

/** How a checkpoint store finds the runs a run resumed from. */
export interface CheckpointLineage {
  runId: string;
  dir: string;
  /** The run this one resumed from, or undefined at the root of the chain. */
  parent(runId: string): Promise<{ runId: string; dir: string } | undefined>;
}

const MANIFEST = 'manifest.json';
const STEP_DIR = /^step-(\d+)$/;
/** Hidden names the writer uses; never listed, removed when a run's checkpoints are next written. */
const TMP_PREFIX = '.tmp-';
const REPLACED = /^\.tmp-replaced-step-(\d+)-[0-9a-f]+$/;

/** Temp dirs being written right now by this process (a second RunCheckpoints must not delete them). */
const inProgress = new Set<string>();

interface StepDir {
  step: number;
  dir: string;
}

async function stepDirs(checkpointsDir: string): Promise<StepDir[]> {
  let names: string[];
  try {
    names = await readdir(checkpointsDir);
  } catch (err) {
    if (isErrnoCode(err, 'ENOENT')) return [];
    throw err;
  }
  const out: StepDir[] = [];
  for (const name of names) {
    const m = STEP_DIR.exec(name);
    if (m) out.push({ step: Number(m[1]), dir: join(checkpointsDir, name) });
  }
  return out.sort((a, b) => a.step - b.step);
}

/** Every regular file under `dir`, as `/`-separated relative paths. Symlinks are refused: a manifest cannot vouch for them. */
async function walk(dir: string, root: string = dir): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const full = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await walk(full, root)));
    else if (entry.isFile()) out.push(relative(root, full).split(sep).join('/'));
    else throw new CheckpointError(`${full}: checkpoints may hold only regular files and folders (found a symlink or special file)`);
  }
  return out.sort();
}

async function readManifest(dir: string, step: number): Promise<CheckpointManifest> {
  const file = join(dir, MANIFEST);
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, 'utf8'));
  } catch (err) {
    throw new CheckpointError(`${file}: ${isErrnoCode(err, 'ENOENT') ? 'missing' : `unreadable (${(err as Error).message})`}`);
  }
  const m = raw as Partial<CheckpointManifest> | null;
  if (typeof m !== 'object' || m === null || typeof m.files !== 'object' || m.files === null) {
    throw new CheckpointError(`${file}: field 'files' is missing (expected { relpath: { sha256, size } })`);
  }
  if (m.step !== step) throw new CheckpointError(`${file}: field 'step' is ${String(m.step)}, expected ${step} (the directory name)`);
  return {
    step,
    created_at: typeof m.created_at === 'string' ? m.created_at : '',
    meta: typeof m.meta === 'object' && m.meta !== null ? m.meta : {},
    files: m.files,
  };
}

/** Re-hashes every file; throws a CheckpointError naming the first file that does not match. */
async function verify(dir: string, manifest: CheckpointManifest): Promise<void> {
  const onDisk = (await walk(dir)).filter((f) => f !== MANIFEST);
  const listed = Object.keys(manifest.files).sort();
  const extra = onDisk.filter((f) => !(f in manifest.files));
  if (extra.length > 0) throw new CheckpointError(`${dir}: file '${extra[0]}' is not in the manifest`);
  for (const rel of listed) {
    const want = manifest.files[rel]!;
    let got: { sha256: string; size: number };
    try {
      got = await hashFile(join(dir, rel));
    } catch (err) {
      if (isErrnoCode(err, 'ENOENT')) throw new CheckpointError(`${dir}: file '${rel}' listed in the manifest is missing`);
      throw err;
    }
    if (got.size !== want.size) throw new CheckpointError(`${dir}: file '${rel}' has ${got.size} bytes, manifest says ${want.size}`);
    if (got.sha256 !== want.sha256) throw new CheckpointError(`${dir}: file '${rel}' fails its sha256 check`);
  }
}

/**
 * Checkpoints of one run (`<run>/checkpoints/step-<N>/`), with lookups that continue into the runs it resumed from.
 */
export function runCheckpoints(lineage: CheckpointLineage, onWarning: WarningSink): RunCheckpoints {
  const root = join(lineage.dir, 'checkpoints');
  let cleaned = false;

  /** Removes leftovers of interrupted saves; puts back a checkpoint that was set aside by an interrupted replace. */
  async function cleanup(): Promise<void> {
    if (cleaned) return;
    cleaned = true;
    let names: string[];
    try {
      names = await readdir(root);
    } catch (err) {
      if (isErrnoCode(err, 'ENOENT')) return;
      throw err;
    }
    for (const name of names) {
      if (!name.startsWith(TMP_PREFIX)) continue;
      const full = join(root, name);
      if (inProgress.has(full)) continue;
      const replaced = REPLACED.exec(name);
      if (replaced && !names.includes(`step-${replaced[1]}`)) {
        // Crash between "rename old aside" and "rename new in": the old checkpoint is still whole.
        await rename(full, join(root, `step-${replaced[1]}`));
        continue;
      }
      await rm(full, { recursive: true, force: true });
    }
  }

  /** [this run, parent, grandparent, …], stopping at a missing run or a cycle. */
  async function chain(): Promise<{ runId: string; dir: string }[]> {
    const out = [{ runId: lineage.runId, dir: lineage.dir }];
    const seen = new Set([lineage.runId]);
    for (;;) {
      const cur = out[out.length - 1]!;
      const parent = await lineage.parent(cur.runId);
      if (!parent) return out;
      if (seen.has(parent.runId)) {
        onWarning(`run ${cur.runId}: resumed_from chain loops back to ${parent.runId}; stopped following it`);
        return out;
      }
      seen.add(parent.runId);
      out.push(parent);
    }
  }

  return {
    async save(step, write, meta = {}) {
      if (!Number.isSafeInteger(step) || step < 0) {
        throw new RunUsageError(`checkpoints.save: step must be a non-negative integer, got ${String(step)}`);
      }
      await mkdir(root, { recursive: true });
      await cleanup();
      const tmp = join(root, `${TMP_PREFIX}${process.pid}-${randomBytes(6).toString('hex')}`);
      inProgress.add(tmp);
      try {
        await mkdir(tmp);
        await write(tmp);
        const files: CheckpointManifest['files'] = {};
        for (const rel of await walk(tmp)) {
          if (rel === MANIFEST) {
            throw new CheckpointError(`checkpoint step ${step}: '${MANIFEST}' is reserved for the store; name the file differently`);
          }
          files[rel] = await hashFile(join(tmp, rel), { sync: true });
        }
        const manifest: CheckpointManifest = { step, created_at: new Date().toISOString(), meta, files };
        await writeFileAtomic(join(tmp, MANIFEST), `${JSON.stringify(manifest, null, 2)}\n`);
        const final = join(root, `step-${step}`);
        const aside = join(root, `${TMP_PREFIX}replaced-step-${step}-${randomBytes(6).toString('hex')}`);
        let replaced = false;
        try {
          await rename(final, aside);
          replaced = true;
        } catch (err) {
          if (!isErrnoCode(err, 'ENOENT')) throw err;
        }
        try {
          await rename(tmp, final);
        } catch (err) {
          // Put the previous checkpoint back rather than leave the step missing.
          if (replaced) await rename(aside, final).catch(() => undefined);
          throw err;
        }
        if (replaced) await rm(aside, { recursive: true, force: true });
        return { step, dir: final, meta, runId: lineage.runId };
      } catch (err) {
        await rm(tmp, { recursive: true, force: true });
        throw err;
      } finally {
        inProgress.delete(tmp);
      }
    },

    async latest() {
      for (const run of await chain()) {
        const dirs = await stepDirs(join(run.dir, 'checkpoints'));
        for (const { step, dir } of dirs.reverse()) {
          try {
            const manifest = await readManifest(dir, step);
            await verify(dir, manifest);
            return { step, dir, meta: manifest.meta, runId: run.runId } satisfies CheckpointInfo;
          } catch (err) {
            if (!(err instanceof CheckpointError)) throw err;
            onWarning(`skipping corrupt checkpoint ${dir}: ${err.message}`);
          }
        }
      }
      return undefined;
    },

    async list() {
      const out: CheckpointInfo[] = [];
      for (const run of (await chain()).reverse()) {
        for (const { step, dir } of await stepDirs(join(run.dir, 'checkpoints'))) {
          try {
            const manifest = await readManifest(dir, step);
            out.push({ step, dir, meta: manifest.meta, runId: run.runId });
          } catch (err) {
            if (!(err instanceof CheckpointError)) throw err;
            onWarning(`skipping checkpoint ${dir}: ${err.message}`);
          }
        }
      }
      return out;
    },

    async removeLeftovers() {
      cleaned = false;
      await cleanup();
    },

    async prune(keep, options = {}) {
      if (!Number.isSafeInteger(keep) || keep < 0) {
        throw new RunUsageError(`checkpoints.prune: keep must be a non-negative integer, got ${String(keep)}`);
      }
      const dirs = await stepDirs(root);
      const protect = new Set(options.protect ?? []);
      for (const { step, dir } of dirs.slice(0, Math.max(0, dirs.length - keep))) {
        if (protect.has(step)) continue;
        // Rename first so a half-deleted checkpoint is never visible as a corrupt one.
        const doomed = join(root, `${TMP_PREFIX}pruned-step-${step}-${randomBytes(6).toString('hex')}`);
        await rename(dir, doomed);
        await rm(doomed, { recursive: true, force: true });
      }
    },
  };
}
