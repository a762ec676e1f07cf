/**
 * Uploading a folder to a Hub model repo as one commit, with `@huggingface/hub`: the repo is created when
 * missing, files the Hub marks as LFS (weights) go through the LFS batch API, and files the repo holds but
 * the folder no longer does are deleted in the same commit, so each revision is exactly one folder.
 */
import { openAsBlob } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import { commitIter, createRepo, listFiles, repoExists, type CommitOperation } from '@huggingface/hub';
import { checkRepoId, HubError, hubError, type HubSettings } from './settings.js';

export interface PushFolderOptions {
  /** `owner/name` of a model repo. */
  repo: string;
  /** Folder whose files are uploaded, relative paths kept. */
  dir: string;
  /** Only these paths (relative to `dir`, `/`-separated); default every regular file under it. */
  files?: string[];
  /** Files generated for the commit (e.g. the model card README.md); they replace files of the same path. */
  extra?: Record<string, string | Uint8Array>;
  /** Files from elsewhere on disk, by their path in the repo (e.g. the VQGAN a model folder refers to). */
  extraFiles?: { path: string; localPath: string }[];
  /** Commit title (first line) and description. */
  title: string;
  description?: string;
  /** Visibility of a repo this push creates (an existing repo keeps its own). Default private. */
  private?: boolean;
  branch?: string;
  settings: HubSettings;
  signal?: AbortSignal;
  /** Called once per file when its upload is done (for progress). */
  onFileDone?: (path: string) => void;
}

export interface PushResult {
  repo: string;
  /** Whether this push created the repo. */
  created: boolean;
  commit: string;
  commitUrl: string;
  branch: string;
  /** Uploaded paths with their sizes. */
  files: { path: string; size: number }[];
  /** Paths the commit deleted (they were in the repo, not in the folder). */
  deleted: string[];
}

/** Every regular file under `dir`, as sorted `/`-separated relative paths. */
export async function folderFiles(dir: string, root: string = dir): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const full = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await folderFiles(full, root)));
    else if (entry.isFile()) out.push(relative(root, full).split(sep).join('/'));
  }
  return out.sort();
}

/** Files every repo keeps: the Hub's own LFS rules. */
const KEEP = new Set(['.gitattributes']);

export async function pushFolder(o: PushFolderOptions): Promise<PushResult> {
  checkRepoId(o.repo);
  const { hubUrl, token } = o.settings;
  if (!token) throw new HubError(`cannot push to ${o.repo}: HF_TOKEN is not set (export a Hub access token with write access; it is read from the environment only)`);
  const branch = o.branch ?? 'main';
  const auth = { hubUrl, accessToken: token };
  let created = false;
  try {
    if (!(await repoExists({ repo: o.repo, ...auth }))) {
      await createRepo({ repo: o.repo, visibility: o.private === false ? 'public' : 'private', ...auth });
      created = true;
    }
  } catch (err) {
    throw hubError(`cannot create Hub repo ${o.repo} at ${hubUrl}`, err, o.settings);
  }

  const replaced = new Set([...Object.keys(o.extra ?? {}), ...(o.extraFiles ?? []).map((f) => f.path)]);
  const paths = (o.files ?? (await folderFiles(o.dir))).filter((p) => !replaced.has(p));
  const operations: CommitOperation[] = [];
  const files: { path: string; size: number }[] = [];
  for (const path of paths) {
    const content = await openAsBlob(join(o.dir, path));
    operations.push({ operation: 'addOrUpdate', path, content });
    files.push({ path, size: content.size });
  }
  for (const f of o.extraFiles ?? []) {
    const content = await openAsBlob(f.localPath);
    operations.push({ operation: 'addOrUpdate', path: f.path, content });
    files.push({ path: f.path, size: content.size });
  }
  for (const [path, value] of Object.entries(o.extra ?? {})) {
    const content = new Blob([typeof value === 'string' ? value : new Uint8Array(value)]);
    operations.push({ operation: 'addOrUpdate', path, content });
    files.push({ path, size: content.size });
  }
  const uploading = new Set(files.map((f) => f.path));
  const deleted: string[] = [];
  try {
    if (!created) {
      for await (const entry of listFiles({ repo: o.repo, revision: branch, recursive: true, ...auth })) {
        if (entry.type === 'file' && !uploading.has(entry.path) && !KEEP.has(entry.path)) deleted.push(entry.path);
      }
    }
  } catch (err) {
    // A branch that does not exist yet has nothing to delete; anything else is a real failure.
    if (!/status 404|not found/i.test((err as Error).message)) throw hubError(`cannot list ${o.repo}@${branch}`, err, o.settings);
  }
  for (const path of deleted) operations.push({ operation: 'delete', path });

  try {
    const done = new Set<string>();
    const it = commitIter({ repo: o.repo, operations, title: o.title, description: o.description, branch, ...auth, ...(o.signal ? { abortSignal: o.signal } : {}) });
    for (;;) {
      const next = await it.next();
      if (next.done) {
        const out = next.value;
        if (!out) throw new Error('the Hub returned no commit');
        for (const f of files) if (!done.has(f.path)) o.onFileDone?.(f.path);
        return { repo: o.repo, created, commit: out.commit.oid, commitUrl: out.commit.url, branch, files, deleted };
      }
      const e = next.value;
      if (e.event === 'fileProgress' && e.state === 'uploading' && e.progress >= 1 && !done.has(e.path)) {
        done.add(e.path);
        o.onFileDone?.(e.path);
      }
    }
  } catch (err) {
    throw hubError(`cannot upload ${o.dir} to ${o.repo}@${branch}`, err, o.settings);
  }
}
