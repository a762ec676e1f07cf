/**
 * W&B artifacts: push a set of files as a new version of a collection (the order wandb-core uses:
 * CreateArtifact → CreateArtifactManifest → CreateArtifactFiles + PUTs → manifest upload → CommitArtifact),
 * pull one back by `entity/project/name:alias` into a cache with every file checked against the manifest's
 * md5, and dalle-mini's split of a checkpoint into `model-<runid>` and `state-<runid>`.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { dirname, isAbsolute, join, normalize, sep } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { MinidalleError } from '../../errors.js';
import { writeFileAtomic } from '../../runs/fs-util.js';
import { WandbClient } from './client.js';
import { WandbError } from './http.js';
import type { WandbSettings } from './settings.js';

export interface ArtifactFile {
  /** Path inside the artifact (`/`-separated). */
  path: string;
  localPath: string;
}

export interface PushArtifactOptions {
  settings: WandbSettings;
  /** The W&B run that logs the artifact. */
  runId: string;
  /** Collection name, e.g. `model-<runid>`. */
  name: string;
  type: 'model' | 'state' | (string & {});
  files: ArtifactFile[];
  metadata: Record<string, unknown>;
  aliases: string[];
  signal?: AbortSignal;
}

export interface PushedArtifact {
  name: string;
  /** `v<N>`. */
  version: string;
  /** The manifest digest (hex md5, MANIFEST_MD5). */
  digest: string;
}

/** `contents` of wandb_manifest.json: digest = base64 md5 of the file. */
export type ManifestContents = Record<string, { digest: string; size: number }>;

export class ArtifactDigestError extends MinidalleError {
  override name = 'ArtifactDigestError';
}

/** base64 md5 of a file, streamed. */
export async function fileMd5(path: string): Promise<{ md5: string; size: number }> {
  const hash = createHash('md5');
  let size = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { md5: hash.digest('base64'), size };
}

/** The artifact digest (MANIFEST_MD5): hex md5 of `wandb-artifact-manifest-v1\n` + sorted `path:b64md5\n` lines. */
export function manifestDigest(contents: ManifestContents): string {
  const lines = Object.keys(contents)
    .sort()
    .map((p) => `${p}:${contents[p]!.digest}\n`);
  return createHash('md5').update(`wandb-artifact-manifest-v1\n${lines.join('')}`).digest('hex');
}

export function manifestJson(contents: ManifestContents): string {
  const sorted = Object.fromEntries(Object.keys(contents).sort().map((k) => [k, contents[k]!]));
  return JSON.stringify({ version: 1, storagePolicy: 'wandb-storage-policy-v1', storagePolicyConfig: { storageLayout: 'V2' }, contents: sorted });
}

/** A path inside an artifact must stay inside the directory it is pulled into. */
function checkArtifactPath(p: string, what: string): void {
  const n = normalize(p);
  if (p === '' || isAbsolute(p) || n.startsWith('..') || n.split(sep).includes('..') || p.includes('\\')) {
    throw new MinidalleError(`${what}: artifact path '${p}' is not a relative path inside the artifact`);
  }
}

const CLIENT_ID_CHARS = 'abcdefghijklmnopqrstuvwxyz0123456789';
function clientId(): string {
  return [...randomBytes(128)].map((b) => CLIENT_ID_CHARS[b % CLIENT_ID_CHARS.length]).join('');
}

/** Pushes files as a new version of `name` (or finds the identical version already there: dedup by digest). */
export async function pushArtifact(opts: PushArtifactOptions): Promise<PushedArtifact> {
  const client = new WandbClient(opts.settings);
  const seen = new Set<string>();
  const contents: ManifestContents = {};
  for (const f of opts.files) {
    checkArtifactPath(f.path, `artifact ${opts.name}`);
    if (seen.has(f.path)) throw new MinidalleError(`artifact ${opts.name}: '${f.path}' is listed twice`);
    seen.add(f.path);
    const { md5, size } = await fileMd5(f.localPath);
    contents[f.path] = { digest: md5, size };
  }
  if (opts.files.length === 0) throw new MinidalleError(`artifact ${opts.name}: no files to push`);
  const digest = manifestDigest(contents);
  const aliases = [...new Set(opts.aliases)].map((alias) => ({ alias, artifactCollectionName: opts.name }));
  const created = await client.createArtifact(
    {
      entityName: client.entity,
      projectName: client.project,
      artifactTypeName: opts.type,
      artifactCollectionName: opts.name,
      runName: opts.runId,
      digest,
      digestAlgorithm: 'MANIFEST_MD5',
      aliases,
      clientID: clientId(),
      sequenceClientID: clientId(),
      enableDigestDeduplication: true,
      metadata: JSON.stringify(opts.metadata),
    },
    opts.signal,
  );
  const version = (v: number | null | undefined) => (typeof v === 'number' ? `v${v}` : 'latest');
  // COMMITTED: these exact bytes are already a version of this collection (W&B moved the aliases onto it).
  if (created.state === 'COMMITTED') return { name: opts.name, version: version(created.versionIndex), digest: created.digest || digest };

  const manifest = await client.createArtifactManifest({ artifactID: created.id, digest: '', runName: opts.runId, includeUpload: false }, opts.signal);
  const paths = Object.keys(contents).sort();
  const byPath = new Map(opts.files.map((f) => [f.path, f.localPath]));
  const targets = await client.createArtifactFiles(
    paths.map((p) => ({ artifactID: created.id, artifactManifestID: manifest.id, name: p, md5: contents[p]!.digest })),
    opts.signal,
  );
  for (const [i, p] of paths.entries()) {
    const t = targets[i]!;
    if (t.uploadUrl === null) continue; // the server already stores these bytes
    await client.uploadFile({ ...t, uploadUrl: t.uploadUrl }, byPath.get(p)!, `upload ${opts.name}/${p}`, opts.signal);
  }
  const json = Buffer.from(manifestJson(contents));
  const manifestMd5 = createHash('md5').update(json).digest('base64');
  const upload = await client.createArtifactManifest({ artifactID: created.id, digest: manifestMd5, runName: opts.runId, includeUpload: true }, opts.signal);
  if (!upload.upload?.uploadUrl) throw new WandbError(`W&B GraphQL CreateArtifactManifest: no upload URL for the manifest of ${opts.name}`, false);
  await client.uploadBytes({ ...upload.upload, uploadUrl: upload.upload.uploadUrl }, json, `upload ${opts.name}/wandb_manifest.json`, opts.signal);
  const committed = await client.commitArtifact(created.id, opts.signal);
  return { name: opts.name, version: version(committed.versionIndex ?? created.versionIndex), digest: committed.digest || digest };
}

export interface PullArtifactOptions {
  /** Pulled artifacts live in `<cacheDir>/wandb/<entity>/<project>/<name>/<digest>/`. */
  cacheDir: string;
  /** baseUrl and apiKey are used; entity/project come from the ref. */
  settings: Omit<WandbSettings, 'entity' | 'project'> & Partial<Pick<WandbSettings, 'entity' | 'project'>>;
  signal?: AbortSignal;
}

const CACHE_RECORD = '.wandb-artifact.json';

/** `entity/project/name:alias` (alias `vN` or a name such as `latest`, default `latest`). */
export function parseArtifactRef(ref: string): { entity: string; project: string; name: string; alias: string } {
  const m = /^([^/:\s]+)\/([^/:\s]+)\/([^/:\s]+)(?::([^/:\s]+))?$/.exec(ref);
  if (!m) throw new MinidalleError(`'${ref}' is not a W&B artifact reference: expected entity/project/name:alias, e.g. me/proj/model-abc123:latest`);
  return { entity: m[1]!, project: m[2]!, name: m[3]!, alias: m[4] ?? 'latest' };
}

/** A cached copy is used when its record matches the digest and every file has its recorded size and md5. */
async function cachedCopy(dir: string, digest: string): Promise<boolean> {
  let record: { digest?: string; contents?: ManifestContents };
  try {
    record = JSON.parse(await readFile(join(dir, CACHE_RECORD), 'utf8')) as typeof record;
  } catch {
    return false;
  }
  if (record.digest !== digest || !record.contents || manifestDigest(record.contents) !== digest) return false;
  for (const [p, want] of Object.entries(record.contents)) {
    try {
      if ((await stat(join(dir, p))).size !== want.size) return false;
      // md5 reads at disk speed: a cached file damaged since it was pulled is pulled again, not used.
      if ((await fileMd5(join(dir, p))).md5 !== want.digest) return false;
    } catch {
      return false;
    }
  }
  return true;
}

/** Downloads one file to `dest`, returning its base64 md5; a short or corrupt body is the caller's to judge. */
async function downloadTo(client: WandbClient, url: string, dest: string, what: string, signal?: AbortSignal): Promise<{ md5: string; size: number }> {
  const res = await client.download(url, what, signal);
  if (!res.body) throw new WandbError(`${what}: empty answer`, true);
  await mkdir(dirname(dest), { recursive: true });
  const hash = createHash('md5');
  let size = 0;
  const counted = Readable.fromWeb(res.body as import('node:stream/web').ReadableStream<Uint8Array>).map((chunk: Buffer) => {
    hash.update(chunk);
    size += chunk.length;
    return chunk;
  });
  await pipeline(counted, createWriteStream(dest));
  return { md5: hash.digest('base64'), size };
}

/**
 * Pulls an artifact version into the cache and returns its directory. Every file's md5 is checked against
 * the manifest, and the manifest against the artifact's digest: a corrupt download is retried once, then an
 * ArtifactDigestError, and nothing of it is left in the cache. A second pull of the same version downloads nothing.
 */
export async function pullArtifact(ref: string, opts: PullArtifactOptions): Promise<string> {
  const r = parseArtifactRef(ref);
  const client = new WandbClient({ ...opts.settings, entity: r.entity, project: r.project });
  const artifact = await client.artifactByName(`${r.name}:${r.alias}`, opts.signal);
  if (!artifact) throw new WandbError(`W&B has no artifact ${r.entity}/${r.project}/${r.name}:${r.alias} (check the name and alias, and that the key may read that project)`, false);
  if (artifact.state !== 'COMMITTED') throw new WandbError(`W&B artifact ${ref} is ${artifact.state}, not committed: it cannot be pulled yet`, false);
  if (!/^[0-9a-f]{32}$/.test(artifact.digest)) throw new WandbError(`W&B artifact ${ref}: unexpected digest '${artifact.digest}'`, false);
  const finalDir = join(opts.cacheDir, 'wandb', r.entity, r.project, r.name, artifact.digest);
  if (await cachedCopy(finalDir, artifact.digest)) return finalDir;

  const manifestRes = await client.download(await client.artifactManifestUrl(artifact.id, opts.signal), `download ${ref} manifest`, opts.signal);
  let contents: ManifestContents;
  try {
    contents = (JSON.parse(await manifestRes.text()) as { contents: ManifestContents }).contents;
  } catch (err) {
    throw new ArtifactDigestError(`${ref}: the manifest is not valid JSON (${(err as Error).message})`);
  }
  if (!contents || typeof contents !== 'object' || manifestDigest(contents) !== artifact.digest) {
    throw new ArtifactDigestError(`${ref}: the manifest does not match the artifact's digest ${artifact.digest}: not used`);
  }
  const urls = await client.artifactFileUrls(artifact.id, opts.signal);
  const tmp = `${finalDir}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  await rm(tmp, { recursive: true, force: true });
  try {
    for (const [p, want] of Object.entries(contents)) {
      checkArtifactPath(p, ref);
      const url = urls.get(p);
      if (!url) throw new WandbError(`${ref}: W&B lists no download URL for '${p}'`, false);
      const dest = join(tmp, p);
      let got = await downloadTo(client, url, dest, `download ${ref}/${p}`, opts.signal);
      if (got.md5 !== want.digest || got.size !== want.size) got = await downloadTo(client, url, dest, `download ${ref}/${p} (again)`, opts.signal);
      if (got.md5 !== want.digest || got.size !== want.size) {
        throw new ArtifactDigestError(`${ref}: '${p}' arrived corrupt twice (md5 ${got.md5}, ${got.size} bytes; the manifest says ${want.digest}, ${want.size} bytes): not used`);
      }
    }
    await writeFileAtomic(join(tmp, CACHE_RECORD), `${JSON.stringify({ ref, version: typeof artifact.versionIndex === 'number' ? `v${artifact.versionIndex}` : undefined, digest: artifact.digest, contents }, null, 2)}\n`);
    await rm(finalDir, { recursive: true, force: true });
    await mkdir(dirname(finalDir), { recursive: true });
    await rename(tmp, finalDir);
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
  return finalDir;
}

/** One artifact of a checkpoint: what to pass to pushArtifact besides settings and runId. */
export interface CheckpointArtifact {
  name: string;
  type: 'model' | 'state';
  files: ArtifactFile[];
  metadata: Record<string, unknown>;
  aliases: string[];
}

const TOKENIZER_FILES = new Set(['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'vocab.json', 'merges.txt', 'added_tokens.json']);
/** The checkpoint's own sha256 list: local bookkeeping, not part of either artifact. */
const CHECKPOINT_MANIFEST = 'manifest.json';

function isModelFile(p: string): boolean {
  if (p.includes('/')) return false;
  if (p.startsWith('optimizer.')) return false;
  return p.endsWith('.safetensors') || p === 'config.json' || p.endsWith('.config.json') || p === 'generation_config.json' || TOKENIZER_FILES.has(p);
}

async function listFiles(dir: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(join(dir, prefix), { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.name.startsWith('.')) continue;
    if (e.isDirectory()) out.push(...(await listFiles(dir, rel)));
    else if (e.isFile()) out.push(rel);
  }
  return out.sort();
}

/**
 * dalle-mini's split of a checkpoint folder: `model-<runid>` (weights, config.json, tokenizer files: a
 * loadable model folder) and `state-<runid>` (optimizer.*.safetensors, train_state.json and anything else
 * a resume needs), both with step/epoch/samples metadata and aliases `latest` + `step-N`.
 */
export async function checkpointArtifacts(dir: string, runId: string, info: { step?: number; epoch?: number; samples?: number } = {}): Promise<CheckpointArtifact[]> {
  const files = (await listFiles(dir)).filter((p) => p !== CHECKPOINT_MANIFEST);
  let trainState: { step?: unknown; samples?: unknown; data?: { epoch?: unknown } } = {};
  if (files.includes('train_state.json')) {
    try {
      trainState = JSON.parse(await readFile(join(dir, 'train_state.json'), 'utf8')) as typeof trainState;
    } catch (err) {
      throw new MinidalleError(`${join(dir, 'train_state.json')}: not valid JSON (${(err as Error).message})`);
    }
  }
  const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
  const step = info.step ?? num(trainState.step);
  if (step === undefined) throw new MinidalleError(`${dir}: no step given and no train_state.json with a step: cannot name the step-N alias`);
  const metadata: Record<string, unknown> = { step };
  const epoch = info.epoch ?? num(trainState.data?.epoch);
  const samples = info.samples ?? num(trainState.samples);
  if (epoch !== undefined) metadata.epoch = epoch;
  if (samples !== undefined) metadata.samples = samples;
  const aliases = ['latest', `step-${step}`];
  const model = files.filter(isModelFile);
  const state = files.filter((p) => !isModelFile(p));
  const entry = (p: string): ArtifactFile => ({ path: p, localPath: join(dir, ...p.split('/')) });
  const out: CheckpointArtifact[] = [];
  if (model.length > 0) out.push({ name: `model-${runId}`, type: 'model', files: model.map(entry), metadata: { ...metadata }, aliases });
  if (state.length > 0) out.push({ name: `state-${runId}`, type: 'state', files: state.map(entry), metadata: { ...metadata }, aliases: [...aliases] });
  if (out.length === 0) throw new MinidalleError(`${dir}: no files to push`);
  return out;
}
