/**
 * A Hugging Face Hub stand-in on 127.0.0.1 for tests: the calls `@huggingface/hub` makes to create a repo,
 * upload a folder in one commit (preupload → LFS batch → PUT, or multipart → commit as NDJSON), list a tree
 * and download files (a `Range: bytes=0-0` probe, then the bytes), as described in
 * shared/reference/hub/PROTOCOL.md. State lives in memory; every request is recorded (method, path, whether
 * it carried the right token — never the token itself).
 */
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakeHubOptions {
  /** The one token accepted (`Authorization: Bearer <token>`). */
  token: string;
  /** LFS objects larger than this are uploaded in parts (multipart), the rest with one PUT. */
  multipartAbove?: number;
  /** Part size of multipart uploads. */
  chunkSize?: number;
}

export interface HubRequest {
  method: string;
  /** Path and query, e.g. `/api/models/me/m/preupload/main`. */
  path: string;
  auth: 'none' | 'valid' | 'invalid';
}

interface StoredFile {
  size: number;
  /** Regular file: its bytes. LFS file: undefined (the bytes are in the LFS store). */
  content?: Buffer;
  /** sha256 of an LFS file. */
  lfsOid?: string;
}

interface Commit {
  oid: string;
  parent?: string;
  title: string;
  description: string;
  files: Map<string, StoredFile>;
  date: string;
}

interface Repo {
  name: string;
  private: boolean;
  commits: Map<string, Commit>;
  branches: Map<string, string>;
}

/** Patterns of the Hub's default `.gitattributes` that matter here (files stored with LFS). */
const DEFAULT_GITATTRIBUTES = ['*.safetensors', '*.bin', '*.msgpack', '*.pt', '*.pth', '*.ckpt', '*.h5', '*.onnx', '*.npy', '*.parquet', '*.zip', '*.tar']
  .map((p) => `${p} filter=lfs diff=lfs merge=lfs -text`)
  .join('\n')
  .concat('\n');

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
/** Git's object id of a blob: sha1 of `blob <size>\0<bytes>`. */
export const gitBlobOid = (b: Buffer) => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');
const lfsPointer = (oid: string, size: number) => Buffer.from(`version https://git-lfs.github.com/spec/v1\noid sha256:${oid}\nsize ${size}\n`);

function globToRegExp(glob: string): RegExp {
  const body = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]');
  return new RegExp(glob.includes('/') ? `^${body}$` : `(^|/)${body}$`);
}

function lfsPatterns(gitattributes: string): RegExp[] {
  return gitattributes
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .filter((parts) => parts.length > 1 && parts.includes('filter=lfs'))
    .map((parts) => globToRegExp(parts[0]!));
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

export class FakeHub {
  readonly requests: HubRequest[] = [];
  private readonly repos = new Map<string, Repo>();
  /** LFS store: sha256 → bytes. */
  private readonly lfs = new Map<string, Buffer>();
  /** Multipart uploads in progress: sha256 → parts. */
  private readonly parts = new Map<string, Map<number, Buffer>>();
  /** Files served with flipped bytes (repo/path), to test that a client notices. */
  private readonly corrupted = new Set<string>();
  private server!: Server;
  url = '';
  /** Quote the Authorization header received in 401 error bodies (a careless server), to test scrubbing. */
  echoAuthorization = false;

  private constructor(private readonly options: FakeHubOptions) {}

  static async start(options: FakeHubOptions): Promise<FakeHub> {
    const hub = new FakeHub(options);
    hub.server = createServer((req, res) => void hub.handle(req, res));
    await new Promise<void>((res) => hub.server.listen(0, '127.0.0.1', res));
    hub.url = `http://127.0.0.1:${(hub.server.address() as AddressInfo).port}`;
    return hub;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((res) => this.server.close(() => res()));
  }

  /** Commits of a repo's branch, newest first. */
  log(repo: string, branch = 'main'): { oid: string; title: string; description: string; paths: string[] }[] {
    const r = this.repo(repo);
    const out = [];
    for (let oid = r.branches.get(branch); oid; oid = r.commits.get(oid)!.parent) {
      const c = r.commits.get(oid)!;
      out.push({ oid: c.oid, title: c.title, description: c.description, paths: [...c.files.keys()].sort() });
    }
    return out;
  }

  /** The bytes of `path` at a revision, and whether it is stored with LFS. */
  file(repo: string, path: string, rev = 'main'): { bytes: Buffer; lfs: boolean } | undefined {
    const f = this.commitAt(this.repo(repo), rev).files.get(path);
    if (!f) return undefined;
    return { bytes: f.content ?? this.lfs.get(f.lfsOid!)!, lfs: f.lfsOid !== undefined };
  }

  hasRepo(repo: string): boolean {
    return this.repos.has(repo);
  }

  /** From now on, downloads of `path` in `repo` return bytes that differ from what was uploaded. */
  corrupt(repo: string, path: string): void {
    this.corrupted.add(`${repo}/${path}`);
  }

  private repo(name: string): Repo {
    const r = this.repos.get(name);
    if (!r) throw new HttpError(404, 'Repository not found', { 'X-Error-Code': 'RepoNotFound' });
    return r;
  }

  private commitAt(repo: Repo, rev: string): Commit {
    const oid = repo.branches.get(rev) ?? (repo.commits.has(rev) ? rev : undefined);
    if (!oid) throw new HttpError(404, `Invalid rev id: ${rev}`, { 'X-Error-Code': 'RevisionNotFound' });
    return repo.commits.get(oid)!;
  }

  private newCommit(repo: Repo, branch: string, title: string, description: string, files: Map<string, StoredFile>): Commit {
    const parent = repo.branches.get(branch);
    const oid = createHash('sha1').update(`${repo.name}\0${parent ?? ''}\0${title}\0${randomBytes(8).toString('hex')}`).digest('hex');
    const commit: Commit = { oid, parent, title, description, files, date: new Date().toISOString() };
    repo.commits.set(oid, commit);
    repo.branches.set(branch, oid);
    return commit;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', this.url);
    const header = req.headers.authorization;
    const auth = header === undefined ? 'none' : header === `Bearer ${this.options.token}` ? 'valid' : 'invalid';
    this.requests.push({ method: req.method ?? 'GET', path: `${url.pathname}${url.search}`, auth });
    try {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      const body = Buffer.concat(chunks);
      if (auth === 'invalid') throw new HttpError(401, `Invalid credentials in Authorization header${this.echoAuthorization ? ` '${header}'` : ''}`);
      await this.route(req.method ?? 'GET', url, body, auth === 'valid', req, res);
    } catch (err) {
      const e = err instanceof HttpError ? err : new HttpError(500, (err as Error).message);
      if (res.headersSent) return void res.destroy();
      res.writeHead(e.status, { 'Content-Type': 'application/json', ...e.headers });
      res.end(JSON.stringify({ error: e.message }));
    }
  }

  private json(res: ServerResponse, value: unknown, status = 200, type = 'application/json'): void {
    res.writeHead(status, { 'Content-Type': type });
    res.end(JSON.stringify(value));
  }

  private readable(name: string, authed: boolean): Repo {
    const repo = this.repo(name);
    if (repo.private && !authed) throw new HttpError(404, 'Repository not found', { 'X-Error-Code': 'RepoNotFound' });
    return repo;
  }

  private async route(method: string, url: URL, body: Buffer, authed: boolean, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const p = decodeURIComponent(url.pathname);
    const write = () => {
      if (!authed) throw new HttpError(401, 'Authorization header is required for this operation');
    };
    let m: RegExpExecArray | null;

    if (method === 'POST' && p === '/api/repos/create') {
      write();
      const b = JSON.parse(body.toString()) as { name: string; organization?: string; type?: string; visibility?: string; private?: boolean };
      if (b.type !== undefined && b.type !== 'model') throw new HttpError(400, 'this fake Hub holds model repos only');
      const name = `${b.organization}/${b.name}`;
      if (this.repos.has(name)) throw new HttpError(409, 'You already created this model repo');
      const repo: Repo = { name, private: b.visibility === 'private' || b.private === true, commits: new Map(), branches: new Map() };
      this.repos.set(name, repo);
      const gitattributes = Buffer.from(DEFAULT_GITATTRIBUTES);
      this.newCommit(repo, 'main', 'initial commit', '', new Map([['.gitattributes', { size: gitattributes.length, content: gitattributes }]]));
      return this.json(res, { url: `${this.url}/${name}`, name, id: createHash('sha1').update(name).digest('hex').slice(0, 24) });
    }

    if ((m = /^\/api\/models\/([^/]+\/[^/]+)\/preupload\/(.+)$/.exec(p)) && method === 'POST') {
      write();
      const repo = this.repo(m[1]!);
      const head = this.commitAt(repo, m[2]!);
      const b = JSON.parse(body.toString()) as { files: { path: string; size: number; sample: string }[]; gitAttributes?: string };
      const attrs = b.gitAttributes ?? head.files.get('.gitattributes')?.content?.toString() ?? '';
      const patterns = lfsPatterns(attrs);
      const files = b.files.map((f) => {
        const binary = Buffer.from(f.sample, 'base64').includes(0);
        const lfs = binary || f.size > 10 * 1024 * 1024 || patterns.some((re) => re.test(f.path));
        return { path: f.path, uploadMode: lfs ? 'lfs' : 'regular', shouldIgnore: false };
      });
      return this.json(res, { files, commitOid: head.oid });
    }

    if ((m = /^\/([^/]+\/[^/]+)\.git\/info\/lfs\/objects\/batch$/.exec(p)) && method === 'POST') {
      write();
      this.repo(m[1]!);
      const b = JSON.parse(body.toString()) as { operation: string; transfers: string[]; objects: { oid: string; size: number }[] };
      if (b.operation !== 'upload' || !b.transfers.includes('basic')) throw new HttpError(400, 'expected an upload batch offering the basic transfer');
      const objects = b.objects.map(({ oid, size }) => {
        if (this.lfs.has(oid)) return { oid, size }; // already stored: no actions
        const above = this.options.multipartAbove;
        if (above !== undefined && size > above) {
          const chunk = this.options.chunkSize ?? Math.ceil(size / 2);
          const header: Record<string, string> = { chunk_size: String(chunk) };
          for (let i = 1; i <= Math.ceil(size / chunk); i++) header[String(i)] = `${this.url}/lfs-parts/${oid}/${i}`;
          return { oid, size, authenticated: true, actions: { upload: { href: `${this.url}/lfs-complete/${oid}/${size}`, header } } };
        }
        return { oid, size, authenticated: true, actions: { upload: { href: `${this.url}/lfs-storage/${oid}/${size}` } } };
      });
      // 'basic', not 'xet': the client then uploads with plain PUTs, as the protocol notes.
      return this.json(res, { transfer: 'basic', objects }, 200, 'application/vnd.git-lfs+json');
    }

    if ((m = /^\/lfs-storage\/([0-9a-f]{64})\/(\d+)$/.exec(p)) && method === 'PUT') {
      if (body.length !== Number(m[2]) || sha256(body) !== m[1]) throw new HttpError(400, 'uploaded bytes do not match the announced sha256 and size');
      this.lfs.set(m[1]!, body);
      res.writeHead(200);
      return void res.end();
    }

    if ((m = /^\/lfs-parts\/([0-9a-f]{64})\/(\d+)$/.exec(p)) && method === 'PUT') {
      const parts = this.parts.get(m[1]!) ?? new Map<number, Buffer>();
      this.parts.set(m[1]!, parts);
      parts.set(Number(m[2]), body);
      res.writeHead(200, { ETag: `"${createHash('md5').update(body).digest('hex')}"` });
      return void res.end();
    }

    if ((m = /^\/lfs-complete\/([0-9a-f]{64})\/(\d+)$/.exec(p)) && method === 'POST') {
      const b = JSON.parse(body.toString()) as { oid: string; parts: { partNumber: number; etag: string }[] };
      const parts = this.parts.get(m[1]!);
      if (!parts || b.oid !== m[1]) throw new HttpError(400, 'no multipart upload of this object');
      for (const part of b.parts) {
        const bytes = parts.get(part.partNumber);
        if (!bytes || part.etag !== `"${createHash('md5').update(bytes).digest('hex')}"`) throw new HttpError(400, `part ${part.partNumber}: missing or wrong etag`);
      }
      const whole = Buffer.concat(b.parts.sort((x, y) => x.partNumber - y.partNumber).map((x) => parts.get(x.partNumber)!));
      if (whole.length !== Number(m[2]) || sha256(whole) !== m[1]) throw new HttpError(400, 'assembled parts do not match the announced sha256 and size');
      this.parts.delete(m[1]!);
      this.lfs.set(m[1]!, whole);
      return this.json(res, {});
    }

    if ((m = /^\/api\/models\/([^/]+\/[^/]+)\/commit\/(.+)$/.exec(p)) && method === 'POST') {
      write();
      const repo = this.repo(m[1]!);
      const branch = m[2]!;
      const head = repo.branches.has(branch) ? this.commitAt(repo, branch) : undefined;
      if (req.headers['content-type'] !== 'application/x-ndjson') throw new HttpError(400, 'expected application/x-ndjson');
      const lines = body.toString().split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as { key: string; value: Record<string, unknown> });
      const headerLine = lines[0];
      if (headerLine?.key !== 'header') throw new HttpError(400, 'the first line must be the header');
      const h = headerLine.value as { summary?: string; description?: string; parentCommit?: string };
      if (!h.summary) throw new HttpError(400, 'a commit needs a summary');
      if (h.parentCommit && h.parentCommit !== head?.oid) throw new HttpError(412, 'A commit has happened since. Please refresh and try again.');
      const files = new Map(head?.files ?? []);
      for (const { key, value } of lines.slice(1)) {
        const path = String(value.path);
        if (key === 'file') {
          if (value.encoding !== 'base64') throw new HttpError(400, `${path}: expected base64 content`);
          const content = Buffer.from(String(value.content), 'base64');
          files.set(path, { size: content.length, content });
        } else if (key === 'lfsFile') {
          const oid = String(value.oid);
          const stored = this.lfs.get(oid);
          if (value.algo !== 'sha256' || !stored || stored.length !== Number(value.size)) throw new HttpError(422, `${path}: LFS object ${oid} was not uploaded`);
          files.set(path, { size: stored.length, lfsOid: oid });
        } else if (key === 'deletedFile') {
          if (!files.delete(path)) throw new HttpError(404, `${path}: no such file to delete`);
        } else throw new HttpError(400, `unknown commit line '${key}'`);
      }
      const commit = this.newCommit(repo, branch, h.summary, h.description ?? '', files);
      return this.json(res, { commitOid: commit.oid, commitUrl: `${this.url}/${repo.name}/commit/${commit.oid}`, hookOutput: '' });
    }

    if ((m = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/(.+)$/.exec(p)) && method === 'GET') {
      const repo = this.readable(m[1]!, authed);
      const commit = this.commitAt(repo, m[2]!);
      return this.json(res, {
        _id: repo.name,
        id: repo.name,
        sha: commit.oid,
        private: repo.private,
        downloads: 0,
        likes: 0,
        lastModified: commit.date,
        siblings: [...commit.files.keys()].map((rfilename) => ({ rfilename })),
      });
    }

    if ((m = /^\/api\/models\/([^/]+\/[^/]+)\/tree\/([^/]+)(?:\/(.*))?$/.exec(p)) && method === 'GET') {
      const repo = this.readable(m[1]!, authed);
      const commit = this.commitAt(repo, m[2]!);
      const prefix = m[3] ? `${m[3].replace(/\/$/, '')}/` : '';
      const recursive = url.searchParams.get('recursive') === 'true';
      const entries: unknown[] = [];
      const dirs = new Set<string>();
      for (const [path, f] of [...commit.files].sort(([a], [b]) => (a < b ? -1 : 1))) {
        if (!path.startsWith(prefix)) continue;
        const rest = path.slice(prefix.length);
        const parts = rest.split('/');
        for (let i = 1; i < parts.length; i++) {
          const dir = prefix + parts.slice(0, i).join('/');
          if ((recursive || i === 1) && !dirs.has(dir)) {
            dirs.add(dir);
            entries.push({ type: 'directory', path: dir, size: 0, oid: createHash('sha1').update(dir).digest('hex') });
          }
        }
        if (!recursive && parts.length > 1) continue;
        if (f.lfsOid) {
          const pointer = lfsPointer(f.lfsOid, f.size);
          entries.push({ type: 'file', path, size: f.size, oid: gitBlobOid(pointer), lfs: { oid: f.lfsOid, size: f.size, pointerSize: pointer.length } });
        } else entries.push({ type: 'file', path, size: f.size, oid: gitBlobOid(f.content!) });
      }
      return this.json(res, entries);
    }

    if ((m = /^\/api\/models\/([^/]+\/[^/]+)$/.exec(p)) && method === 'GET') {
      const repo = this.readable(m[1]!, authed);
      return this.json(res, { _id: repo.name, id: repo.name, private: repo.private, likes: 0 });
    }

    if ((m = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(p)) && (method === 'GET' || method === 'HEAD')) {
      const repo = this.readable(m[1]!, authed);
      const commit = this.commitAt(repo, m[2]!);
      const path = m[3]!;
      const f = commit.files.get(path);
      if (!f) throw new HttpError(404, `Entry not found: ${path}`, { 'X-Error-Code': 'EntryNotFound' });
      let bytes = f.content ?? this.lfs.get(f.lfsOid!)!;
      if (this.corrupted.has(`${repo.name}/${path}`)) {
        bytes = Buffer.from(bytes);
        bytes[bytes.length >> 1] ^= 0xff;
      }
      const etag = `"${f.lfsOid ?? gitBlobOid(f.content!)}"`;
      const headers: Record<string, string> = { ETag: etag, 'X-Repo-Commit': commit.oid, 'Accept-Ranges': 'bytes', 'Content-Type': 'application/octet-stream' };
      const range = /^bytes=(\d+)-(\d*)$/.exec(String(req.headers.range ?? ''));
      if (range) {
        const start = Number(range[1]);
        const end = range[2] === '' ? bytes.length - 1 : Math.min(Number(range[2]), bytes.length - 1);
        res.writeHead(206, { ...headers, 'Content-Range': `bytes ${start}-${end}/${bytes.length}`, 'Content-Length': String(end - start + 1) });
        return void res.end(method === 'HEAD' ? undefined : bytes.subarray(start, end + 1));
      }
      res.writeHead(200, { ...headers, 'Content-Length': String(bytes.length) });
      return void res.end(method === 'HEAD' ? undefined : bytes);
    }

    throw new HttpError(404, `fake Hub: no route for ${method} ${p}`);
  }
}
