/**
 * A finished run's artifacts, vouched for: `<run>/artifacts.json` records the size and sha256 of every file of
 * every artifact when the stage finishes, and a run is reused only if its artifacts still match. Sizes are checked
 * always; a file is hashed again when its mtime/ctime differ from the record (any write leaves that trace), when
 * `full` is asked (`--verify`, for bit rot), and at most once per process and file state.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import { expandBraces } from '../../data/braces.js';
import { RunStoreError } from './errors.js';
import { hashFile, isErrnoCode, writeFileAtomic } from './fs-util.js';

export const ARTIFACT_MANIFEST = 'artifacts.json';

interface FileEntry {
  size: number;
  sha256: string;
  mtime_ms: number;
  ctime_ms: number;
}

export interface ArtifactManifest {
  created_at: string;
  /** By artifact name: its path or shard pattern (relative to the run dir) and its files (relative to the run dir). */
  artifacts: Record<string, { path: string; files: Record<string, FileEntry> }>;
}

/** An artifact of a finished run is missing or differs from what the run recorded. */
export class ArtifactError extends RunStoreError {
  override name = 'ArtifactError';
}

/**
 * Files of an artifact, relative to the run dir (`/`-separated): the file itself, every file under a folder, or
 * every file a shard pattern (`out/train-{00000..00002}.tar`) names. ENOENT names what is missing.
 */
async function filesOf(runDir: string, rel: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (abs: string): Promise<void> => {
    if (!(await stat(abs)).isDirectory()) {
      out.push(relative(runDir, abs).split(sep).join('/'));
      return;
    }
    for (const e of await readdir(abs)) await walk(join(abs, e));
  };
  for (const part of rel.includes('{') ? expandBraces(rel) : [rel]) await walk(join(runDir, part));
  return out.sort();
}

/** Hashes every file of every artifact and writes the manifest. A missing artifact is an ArtifactError. */
export async function writeArtifactManifest(runDir: string, artifacts: Record<string, string>): Promise<ArtifactManifest> {
  const manifest: ArtifactManifest = { created_at: new Date().toISOString(), artifacts: {} };
  for (const [name, rel] of Object.entries(artifacts)) {
    let files: string[];
    try {
      files = await filesOf(runDir, rel);
    } catch (err) {
      if (isErrnoCode(err, 'ENOENT')) throw new ArtifactError(`the stage returned artifact '${name}' (${rel}), but ${(err as NodeJS.ErrnoException).path ?? 'it'} does not exist`);
      throw err;
    }
    const entries: Record<string, FileEntry> = {};
    for (const f of files) {
      const path = join(runDir, f);
      const { sha256, size } = await hashFile(path);
      const st = await stat(path);
      entries[f] = { size, sha256, mtime_ms: st.mtimeMs, ctime_ms: st.ctimeMs };
    }
    manifest.artifacts[name] = { path: rel, files: entries };
  }
  await writeFileAtomic(join(runDir, ARTIFACT_MANIFEST), `${JSON.stringify(manifest, null, 2)}\n`);
  return manifest;
}

/** Reads a run's manifest; undefined when the run has none (it finished before manifests were recorded). */
export async function readArtifactManifest(runDir: string): Promise<ArtifactManifest | undefined> {
  const file = join(runDir, ARTIFACT_MANIFEST);
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, 'utf8'));
  } catch (err) {
    if (isErrnoCode(err, 'ENOENT')) return undefined;
    throw new ArtifactError(`${file}: unreadable (${(err as Error).message})`);
  }
  const m = raw as Partial<ArtifactManifest> | null;
  if (typeof m?.artifacts !== 'object' || m.artifacts === null) throw new ArtifactError(`${file}: field 'artifacts' is missing`);
  return m as ArtifactManifest;
}

/** File states (path, size, mtime, ctime) whose sha256 this process has already checked. */
const verified = new Set<string>();

/**
 * Checks that every artifact in `artifacts` (name → path relative to the run dir) is as the manifest recorded.
 * Throws an ArtifactError naming the artifact and the file.
 */
export async function verifyArtifacts(runDir: string, artifacts: Record<string, string>, manifest: ArtifactManifest, options: { full?: boolean } = {}): Promise<void> {
  for (const [name, rel] of Object.entries(artifacts)) {
    const rec = manifest.artifacts[name];
    if (!rec || rec.path !== rel) throw new ArtifactError(`artifact '${name}' (${rel}) is not in ${ARTIFACT_MANIFEST}`);
    let files: string[];
    try {
      files = await filesOf(runDir, rel);
    } catch (err) {
      if (isErrnoCode(err, 'ENOENT')) throw new ArtifactError(`artifact '${name}' (${(err as NodeJS.ErrnoException).path ?? join(runDir, rel)}) was deleted`);
      throw err;
    }
    const shown = (f: string): string => join(runDir, f);
    const extra = files.find((f) => !(f in rec.files));
    if (extra !== undefined) throw new ArtifactError(`artifact '${name}': ${shown(extra)} was added after the stage finished`);
    for (const [f, want] of Object.entries(rec.files)) {
      const path = shown(f);
      let st;
      try {
        st = await stat(path);
      } catch (err) {
        if (isErrnoCode(err, 'ENOENT')) throw new ArtifactError(`artifact '${name}': ${path} was deleted`);
        throw err;
      }
      if (st.size !== want.size) throw new ArtifactError(`artifact '${name}': ${path} has ${st.size} bytes, ${want.size} when the stage finished`);
      const state = `${path}\0${st.size}\0${st.mtimeMs}\0${st.ctimeMs}`;
      const touched = st.mtimeMs !== want.mtime_ms || st.ctimeMs !== want.ctime_ms;
      if (!(options.full || touched) || verified.has(state)) continue;
      const { sha256 } = await hashFile(path);
      if (sha256 !== want.sha256) throw new ArtifactError(`artifact '${name}': ${path} fails its sha256 check (changed since the stage finished)`);
      verified.add(state);
    }
  }
}
