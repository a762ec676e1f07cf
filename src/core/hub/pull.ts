/**
 * Downloading a Hub model repo at a revision into the local cache, verified: every file is checked against
 * the digest the Hub lists for it (sha256 for LFS files, the git blob id for the others) before the folder is
 * put in place, so a corrupted download is never used. Folders are keyed by commit, so a second pull of the
 * same commit downloads nothing (a pinned `@<commit>` does not even ask the Hub).
 */
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { downloadFile, listFiles, modelInfo } from '@huggingface/hub';
import type { Progress } from '../plugins/types.js';
import { writeFileAtomic } from '../runs/fs-util.js';
import { checkRepoId, HubError, hubError, type HubSettings } from './settings.js';

export interface HubRef {
  repo: string;
  /** Branch, tag or commit; default `main`. */
  revision: string;
}

export interface PullOptions {
  /** Root of minidalle's cache; Hub folders go to `<cacheDir>/hf/<owner>--<name>/<commit>/`. */
  cacheDir: string;
  settings: HubSettings;
  log?: (line: string) => void;
  /** Download progress in bytes (a TTY bar or quiet lines). */
  progress?: Progress;
}

export interface PullResult {
  dir: string;
  commit: string;
  /** Files downloaded by this pull (0 when the cache had the commit). */
  downloaded: number;
  bytes: number;
}

/** What a cached folder `<commit>/` holds is listed in `<commit>.json` beside it, written last: a folder without one is not complete. */
const manifestFile = (dir: string) => `${dir}.json`;

interface CachedManifest {
  repo: string;
  commit: string;
  files: Record<string, { size: number; sha256?: string; git_oid?: string }>;
}

const COMMIT = /^[0-9a-f]{40}$/;

/** `owner/name@rev` → ref (rev default `main`). */
export function parseHubRef(text: string): HubRef {
  const at = text.indexOf('@');
  const repo = at < 0 ? text : text.slice(0, at);
  const revision = at < 0 ? 'main' : text.slice(at + 1);
  checkRepoId(repo);
  if (revision === '' || /\s|\.\./.test(revision)) throw new HubError(`'${text}': the revision after '@' must be a branch, tag or commit`);
  return { repo, revision };
}

export function hubCacheDir(cacheDir: string, repo: string): string {
  return join(cacheDir, 'hf', repo.replace('/', '--'));
}

/** Digest of a file in the two forms the Hub lists: sha256, and git's blob id (sha1 of `blob <size>\0…`). */
async function digests(path: string): Promise<{ sha256: string; gitOid: string; size: number }> {
  const fh = await open(path, 'r');
  try {
    const { size } = await fh.stat();
    const sha = createHash('sha256');
    const git = createHash('sha1').update(`blob ${size}\0`);
    for await (const chunk of fh.createReadStream({ autoClose: false, highWaterMark: 1 << 20 })) {
      sha.update(chunk as Buffer);
      git.update(chunk as Buffer);
    }
    return { sha256: sha.digest('hex'), gitOid: git.digest('hex'), size };
  } finally {
    await fh.close();
  }
}

/** The first file of a cached folder that differs from its manifest, or undefined when all match. */
async function firstMismatch(dir: string, manifest: CachedManifest): Promise<string | undefined> {
  for (const [path, want] of Object.entries(manifest.files)) {
    const file = join(dir, path);
    if (!existsSync(file)) return `${path} is missing`;
    const got = await digests(file);
    if (got.size !== want.size || (want.sha256 && got.sha256 !== want.sha256) || (want.git_oid && got.gitOid !== want.git_oid)) return `${path} changed`;
  }
  return undefined;
}

async function readManifest(dir: string): Promise<CachedManifest | undefined> {
  try {
    return JSON.parse(await readFile(manifestFile(dir), 'utf8')) as CachedManifest;
  } catch {
    return undefined;
  }
}

/** Downloads `ref` into the cache (or finds it there, verified) and returns the folder. */
export async function pullHubRepo(ref: HubRef, o: PullOptions): Promise<PullResult> {
  checkRepoId(ref.repo);
  const log = o.log ?? (() => {});
  const auth = { hubUrl: o.settings.hubUrl, ...(o.settings.token ? { accessToken: o.settings.token } : {}) };
  const where = `${ref.repo}@${ref.revision}`;
  let commit = ref.revision;
  if (!COMMIT.test(commit)) {
    try {
      const info = await modelInfo({ name: ref.repo, revision: ref.revision, additionalFields: ['sha'], ...auth });
      commit = String((info as { sha?: unknown }).sha ?? '');
    } catch (err) {
      throw hubError(`cannot resolve hf:${where} at ${o.settings.hubUrl}`, err, o.settings);
    }
    if (!COMMIT.test(commit)) throw new HubError(`cannot resolve hf:${where}: the Hub answered no commit id`);
  }
  const root = hubCacheDir(o.cacheDir, ref.repo);
  const dir = join(root, commit);
  const cached = await readManifest(dir);
  if (cached) {
    const problem = await firstMismatch(dir, cached);
    if (!problem) return { dir, commit, downloaded: 0, bytes: 0 };
    log(`warning: the cached copy of hf:${ref.repo}@${commit} is damaged (${problem}): downloading it again`);
    await rm(dir, { recursive: true, force: true });
  } else if (existsSync(dir)) {
    await rm(dir, { recursive: true, force: true }); // an incomplete folder from an interrupted pull
  }
  await rm(manifestFile(dir), { force: true });

  const tmp = join(root, `.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  await mkdir(tmp, { recursive: true });
  try {
    const manifest: CachedManifest = { repo: ref.repo, commit, files: {} };
    let bytes = 0;
    let downloaded = 0;
    let entries;
    try {
      entries = [];
      for await (const e of listFiles({ repo: ref.repo, revision: commit, recursive: true, ...auth })) if (e.type === 'file') entries.push(e);
    } catch (err) {
      throw hubError(`cannot list hf:${ref.repo}@${commit}`, err, o.settings);
    }
    o.progress?.start(entries.reduce((n, e) => n + e.size, 0), 'B');
    for (const entry of entries) {
      if (entry.path.split('/').some((part) => part === '..' || part === '')) {
        throw new HubError(`hf:${ref.repo}@${commit} lists an unsafe path '${entry.path}'; nothing was cached`);
      }
      const file = join(tmp, entry.path);
      await mkdir(dirname(file), { recursive: true });
      try {
        const blob = await downloadFile({ repo: ref.repo, path: entry.path, revision: commit, ...auth });
        if (!blob) throw new Error('the Hub says the file does not exist');
        const count = async function* (source: AsyncIterable<Uint8Array>) {
          for await (const chunk of source) {
            o.progress?.tick(chunk.length);
            yield chunk;
          }
        };
        await pipeline(Readable.fromWeb(blob.stream() as import('node:stream/web').ReadableStream<Uint8Array>), count, createWriteStream(file));
      } catch (err) {
        throw hubError(`cannot download ${entry.path} of hf:${ref.repo}@${commit}`, err, o.settings);
      }
      const got = await digests(file);
      const want = entry.lfs ? { sha256: entry.lfs.oid, size: entry.lfs.size } : { git_oid: entry.oid, size: entry.size };
      const ok = got.size === want.size && (entry.lfs ? got.sha256 === entry.lfs.oid : entry.oid === undefined || got.gitOid === entry.oid);
      if (!ok) {
        const expected = entry.lfs ? `sha256 ${entry.lfs.oid}` : `git blob ${entry.oid}`;
        const actual = entry.lfs ? `sha256 ${got.sha256}` : `git blob ${got.gitOid}`;
        throw new HubError(`${entry.path} downloaded from hf:${ref.repo}@${commit} does not match its digest (expected ${expected}, ${want.size} bytes; got ${actual}, ${got.size} bytes); nothing was cached`);
      }
      manifest.files[entry.path] = entry.lfs ? { size: got.size, sha256: got.sha256 } : { size: got.size, git_oid: got.gitOid };
      bytes += got.size;
      downloaded++;
    }
    try {
      await rename(tmp, dir);
    } catch (err) {
      // Another process put the same commit in place meanwhile: theirs is as good as ours.
      if (!(await readManifest(dir))) throw err;
      await rm(tmp, { recursive: true, force: true });
    }
    await writeFileAtomic(manifestFile(dir), `${JSON.stringify(manifest, null, 1)}\n`);
    o.progress?.end();
    log(`hf:${where}: ${downloaded} file(s), ${bytes} bytes, verified, in ${dir}`);
    return { dir, commit, downloaded, bytes };
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
}
