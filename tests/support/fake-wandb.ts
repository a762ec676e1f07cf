/**
 * A local W&B server for the tests, on 127.0.0.1, following ../shared/reference/wandb/PROTOCOL.md and the
 * captured wandb-core traffic: GraphQL by operation name, file_stream with line offsets (re-sent lines at the
 * same offset replace themselves; a gap is refused), run file and artifact uploads, downloads. It records
 * every request and can be stopped (connection refused) and told to fail (500s, 429 + Retry-After).
 */
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakeRequest {
  method: string;
  path: string;
  op?: string;
  vars?: Record<string, unknown>;
  body?: string;
  authorization?: string;
  /** What the fake answered. */
  status: number;
}

export interface FakeRun {
  name: string;
  entity: string;
  project: string;
  displayName?: string;
  group?: string;
  jobType?: string;
  tags?: string[];
  notes?: string;
  config?: Record<string, unknown>;
  files: Record<string, string[]>;
  summary?: Record<string, unknown>;
  uploaded: Set<string>;
  runFiles: Map<string, Buffer>;
  complete: boolean;
  exitcode?: number;
  upserts: number;
}

export interface FakeArtifact {
  id: string;
  collection: string;
  type: string;
  digest: string;
  state: 'PENDING' | 'COMMITTED';
  metadata: string | null;
  versionIndex: number;
  aliases: string[];
  files: Map<string, Buffer>;
  manifest?: Buffer;
  runName: string;
}

/** Answer this request with a failure instead (status, optional Retry-After seconds), or undefined to serve it. */
export type FaultFn = (req: { method: string; path: string; op?: string }) => { status: number; retryAfter?: string } | undefined;

export class FakeWandb {
  readonly requests: FakeRequest[] = [];
  readonly runs = new Map<string, FakeRun>();
  readonly artifacts: FakeArtifact[] = [];
  /** Problems the fake saw in what the client sent (gaps in offsets, uploads nobody asked for, …). */
  readonly violations: string[] = [];
  fault: FaultFn | undefined;
  /** Downloads of these artifact file names arrive with one byte flipped. */
  readonly corrupt = new Set<string>();
  private server: Server | undefined;
  private port = 0;
  private readonly auth: string;

  constructor(readonly apiKey: string, readonly defaultEntity = 'me') {
    this.auth = `Basic ${Buffer.from(`api:${apiKey}`).toString('base64')}`;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Starts listening (again, on the same port after stop()). */
  async start(): Promise<void> {
    const server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
  }

  /** Stops listening: clients now get ECONNREFUSED. */
  async stop(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  run(name: string): FakeRun {
    const r = this.runs.get(name);
    if (!r) throw new Error(`fake W&B has no run ${name} (has ${[...this.runs.keys()].join(', ') || 'none'})`);
    return r;
  }

  /** History lines of a run, parsed. */
  history(name: string): Record<string, unknown>[] {
    return (this.run(name).files['wandb-history.jsonl'] ?? []).map((l) => JSON.parse(l) as Record<string, unknown>);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const raw = Buffer.concat(chunks);
    const path = (req.url ?? '/').split('?')[0]!;
    const dec = decodeURIComponent;
    const entry: FakeRequest = { method: req.method ?? '?', path, status: 200, authorization: req.headers.authorization };
    let gql: { operationName?: string; query?: string; variables?: Record<string, unknown> } | undefined;
    if (path === '/graphql') {
      try {
        gql = JSON.parse(raw.toString('utf8')) as typeof gql;
        entry.op = gql!.operationName;
        entry.vars = gql!.variables;
      } catch {
        /* answered below */
      }
    } else entry.body = raw.length < 100_000 ? raw.toString('utf8') : `<${raw.length} bytes>`;
    this.requests.push(entry);
    const reply = (status: number, body: unknown, headers: Record<string, string> = {}) => {
      entry.status = status;
      const data = Buffer.isBuffer(body) ? body : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
      res.writeHead(status, { 'content-type': Buffer.isBuffer(body) ? 'application/octet-stream' : 'application/json', 'content-length': String(data.length), ...headers });
      res.end(data);
    };
    const fault = this.fault?.({ method: entry.method, path, op: entry.op });
    if (fault) return reply(fault.status, { error: `injected ${fault.status}` }, fault.retryAfter === undefined ? {} : { 'retry-after': fault.retryAfter });
    const needsAuth = path === '/graphql' || path.startsWith('/files/');
    if (needsAuth && req.headers.authorization !== this.auth) return reply(401, { error: 'invalid api key' });
    try {
      if (path === '/graphql') {
        if (!gql?.operationName) return reply(400, { errors: [{ message: 'no operationName' }] });
        return reply(200, { data: this.graphql(gql.operationName, gql.variables ?? {}) });
      }
      const fs = /^\/files\/([^/]+)\/([^/]+)\/([^/]+)\/file_stream$/.exec(path);
      if (fs && req.method === 'POST') {
        const problem = this.fileStream(dec(fs[1]!), dec(fs[2]!), dec(fs[3]!), JSON.parse(raw.toString('utf8')) as Record<string, unknown>);
        return problem ? reply(400, { error: problem }) : reply(200, { exitcode: null, limits: {} });
      }
      const up = /^\/upload\/run\/([^/]+)\/([^/]+)\/([^/]+)\/(.+)$/.exec(path);
      if (up && req.method === 'PUT') {
        this.run(dec(up[3]!)).runFiles.set(dec(up[4]!), raw);
        return reply(200, '');
      }
      const af = /^\/upload\/artifact\/([^/]+)\/(.+)$/.exec(path);
      if (af && req.method === 'PUT') {
        const a = this.artifact(af[1]!);
        a.files.set(dec(af[2]!), raw);
        return reply(200, '');
      }
      const mf = /^\/upload\/manifest\/([^/]+)$/.exec(path);
      if (mf && req.method === 'PUT') {
        this.artifact(mf[1]!).manifest = raw;
        return reply(200, '');
      }
      const dm = /^\/download\/manifest\/([^/]+)$/.exec(path);
      if (dm && req.method === 'GET') return reply(200, this.artifact(dm[1]!).manifest ?? Buffer.alloc(0));
      const df = /^\/download\/artifact\/([^/]+)\/(.+)$/.exec(path);
      if (df && req.method === 'GET') {
        const name = dec(df[2]!);
        const bytes = this.artifact(df[1]!).files.get(name);
        if (!bytes) return reply(404, { error: 'no such file' });
        const out = Buffer.from(bytes);
        if (this.corrupt.has(name) && out.length > 0) out[out.length >> 1] ^= 0xff;
        return reply(200, out);
      }
      return reply(404, { error: `fake W&B: no route ${req.method} ${path}` });
    } catch (err) {
      this.violations.push((err as Error).message);
      return reply(200, { errors: [{ message: (err as Error).message }] });
    }
  }

  private artifact(id: string): FakeArtifact {
    const a = this.artifacts.find((x) => x.id === id);
    if (!a) throw new Error(`no artifact ${id}`);
    return a;
  }

  private ensureRun(entity: string, project: string, name: string): FakeRun {
    let r = this.runs.get(name);
    if (!r) {
      r = { name, entity, project, files: {}, uploaded: new Set(), runFiles: new Map(), complete: false, upserts: 0 };
      this.runs.set(name, r);
    }
    return r;
  }

  private fileStream(entity: string, project: string, name: string, body: Record<string, unknown>): string | undefined {
    const run = this.runs.get(name);
    if (!run || run.entity !== entity || run.project !== project) return `file_stream for unknown run ${entity}/${project}/${name}`;
    const files = (body.files ?? {}) as Record<string, { offset: number; content: string[] }>;
    for (const [file, { offset, content }] of Object.entries(files)) {
      if (file === 'wandb-summary.json') {
        run.summary = JSON.parse(content[content.length - 1]!) as Record<string, unknown>;
        continue;
      }
      const lines = (run.files[file] ??= []);
      if (offset > lines.length) {
        this.violations.push(`${file}: offset ${offset} leaves a gap after line ${lines.length}`);
        return `offset ${offset} beyond ${lines.length} lines of ${file}`;
      }
      lines.splice(offset, content.length, ...content);
    }
    for (const u of (body.uploaded ?? []) as string[]) {
      if (!run.runFiles.has(u)) this.violations.push(`file_stream lists ${u} as uploaded, but it never was`);
      run.uploaded.add(u);
    }
    if (body.complete === true) {
      run.complete = true;
      run.exitcode = body.exitcode as number | undefined;
    }
    return undefined;
  }

  private graphql(op: string, v: Record<string, unknown>): unknown {
    switch (op) {
      case 'Viewer':
        return { viewer: { id: 'VXNlcjox', entity: this.defaultEntity, username: this.defaultEntity } };
      case 'UpsertBucket': {
        const r = this.ensureRun(v.entity as string, v.project as string, v.name as string);
        r.upserts++;
        if (v.config !== null && v.config !== undefined) r.config = JSON.parse(v.config as string) as Record<string, unknown>;
        for (const k of ['displayName', 'jobType', 'notes'] as const) if (v[k] !== null && v[k] !== undefined) r[k] = v[k] as string;
        if (v.groupName) r.group = v.groupName as string;
        if (v.tags) r.tags = v.tags as string[];
        const bucket = { id: Buffer.from(`Run:${r.name}`).toString('base64'), name: r.name, displayName: r.displayName ?? null, historyLineCount: r.files['wandb-history.jsonl']?.length ?? 0, project: { id: 'UHJvamVjdDox', name: r.project, entity: { id: 'RW50aXR5OjE=', name: r.entity } } };
        return { upsertBucket: { bucket, inserted: r.upserts === 1 } };
      }
      case 'RunResumeStatus': {
        const r = this.runs.get(v.name as string);
        const model = { id: 'UHJvamVjdDox', name: v.project, entity: { id: 'RW50aXR5OjE=', name: v.entity } };
        if (!r) return { model: { ...model, bucket: null } };
        const h = r.files['wandb-history.jsonl'] ?? [];
        const e = r.files['wandb-events.jsonl'] ?? [];
        return {
          model: {
            ...model,
            bucket: {
              id: 'UnVuOjE=',
              name: r.name,
              summaryMetrics: r.summary ? JSON.stringify(r.summary) : null,
              displayName: r.displayName ?? null,
              logLineCount: r.files['output.log']?.length ?? 0,
              historyLineCount: h.length,
              eventsLineCount: e.length,
              historyTail: JSON.stringify(h.slice(-10)),
              eventsTail: JSON.stringify(e.slice(-10)),
              config: r.config ? JSON.stringify(r.config) : null,
              tags: r.tags ?? [],
              notes: r.notes ?? null,
              wandbConfig: null,
            },
          },
        };
      }
      case 'CreateRunFiles': {
        const r = this.run(v.run as string);
        return {
          createRunFiles: {
            runID: r.name,
            uploadHeaders: ['x-fake-upload:1'],
            files: (v.files as string[]).map((name) => ({ name, uploadUrl: `${this.url}/upload/run/${r.entity}/${r.project}/${r.name}/${encodeURIComponent(name)}` })),
          },
        };
      }
      case 'CreateArtifact': {
        const input = v.input as Record<string, unknown>;
        const collection = input.artifactCollectionName as string;
        const same = this.artifacts.filter((a) => a.collection === collection);
        const aliases = (input.aliases as { alias: string }[]).map((a) => a.alias);
        const existing = same.find((a) => a.digest === input.digest && a.state === 'COMMITTED');
        if (existing) {
          this.moveAliases(collection, aliases, existing);
          return { createArtifact: { artifact: { id: existing.id, state: 'COMMITTED', digest: existing.digest, versionIndex: existing.versionIndex, artifactSequence: { latestArtifact: { id: existing.id } } } } };
        }
        const a: FakeArtifact = {
          id: Buffer.from(`Artifact:${this.artifacts.length + 1}`).toString('base64'),
          collection,
          type: input.artifactTypeName as string,
          digest: input.digest as string,
          state: 'PENDING',
          metadata: (input.metadata as string | null) ?? null,
          versionIndex: same.length,
          aliases: [],
          files: new Map(),
          runName: input.runName as string,
        };
        (a as FakeArtifact & { pendingAliases?: string[] }).pendingAliases = aliases;
        this.artifacts.push(a);
        return { createArtifact: { artifact: { id: a.id, state: a.state, digest: a.digest, versionIndex: a.versionIndex, artifactSequence: { latestArtifact: null } } } };
      }
      case 'CreateArtifactManifest': {
        const a = this.artifact(v.artifactID as string);
        const file = v.includeUpload ? { id: 'RmlsZTox', uploadUrl: `${this.url}/upload/manifest/${a.id}`, uploadHeaders: [] } : { id: 'RmlsZTox' };
        return { createArtifactManifest: { artifactManifest: { id: `m-${a.id}`, file } } };
      }
      case 'CreateArtifactFiles': {
        const input = v.input as { artifactFiles: { artifactID: string; name: string; md5: string }[]; storageLayout: string };
        if (input.storageLayout !== 'V2') this.violations.push(`storageLayout ${input.storageLayout}`);
        const edges = input.artifactFiles.map((f) => {
          const a = this.artifact(f.artifactID);
          // The server already stores these bytes (same md5 in an earlier version of any artifact): no upload.
          const have = this.artifacts.some((x) => x.state === 'COMMITTED' && [...x.files.entries()].some(([, b]) => createHash('md5').update(b).digest('base64') === f.md5));
          if (have) {
            const src = this.artifacts.flatMap((x) => [...x.files.values()]).find((b) => createHash('md5').update(b).digest('base64') === f.md5)!;
            a.files.set(f.name, src);
          }
          return { node: { storagePath: `wandb_artifacts/${f.md5}`, uploadUrl: have ? null : `${this.url}/upload/artifact/${a.id}/${encodeURIComponent(f.name)}`, uploadHeaders: [], artifact: { id: a.id } } };
        });
        return { createArtifactFiles: { files: { edges } } };
      }
      case 'CommitArtifact': {
        const a = this.artifact(v.artifactID as string);
        if (!a.manifest) throw new Error(`commit of ${a.id} before its manifest was uploaded`);
        const contents = (JSON.parse(a.manifest.toString('utf8')) as { contents: Record<string, { digest: string; size: number }> }).contents;
        for (const [p, want] of Object.entries(contents)) {
          const got = a.files.get(p);
          if (!got) throw new Error(`commit of ${a.id}: ${p} was never uploaded`);
          if (createHash('md5').update(got).digest('base64') !== want.digest) throw new Error(`commit of ${a.id}: ${p} has the wrong md5`);
        }
        a.state = 'COMMITTED';
        this.moveAliases(a.collection, (a as FakeArtifact & { pendingAliases?: string[] }).pendingAliases ?? [], a);
        return { commitArtifact: { artifact: { id: a.id, digest: a.digest, versionIndex: a.versionIndex } } };
      }
      case 'ArtifactMembershipByName': {
        const [collection, alias] = (v.name as string).split(':') as [string, string];
        const a = this.artifacts.find((x) => x.collection === collection && x.state === 'COMMITTED' && (x.aliases.includes(alias) || `v${x.versionIndex}` === alias));
        return { project: { artifactCollectionMembership: a ? { id: `mem-${a.id}`, versionIndex: a.versionIndex, artifact: { id: a.id, digest: a.digest, state: a.state, metadata: a.metadata, versionIndex: a.versionIndex } } : null } };
      }
      case 'ArtifactManifest': {
        const a = this.artifact(v.artifact_id as string);
        return { artifact: { currentManifest: a.manifest ? { file: { directUrl: `${this.url}/download/manifest/${a.id}` } } : null } };
      }
      case 'ArtifactFileURLs': {
        const a = this.artifact(v.id as string);
        const names = [...a.files.keys()].sort();
        const start = v.cursor ? Number(v.cursor) : 0;
        const per = (v.perPage as number | null) ?? 50;
        const page = names.slice(start, start + per);
        return {
          artifact: {
            files: {
              pageInfo: { hasNextPage: start + per < names.length, endCursor: String(start + per) },
              edges: page.map((name) => ({ node: { name, directUrl: `${this.url}/download/artifact/${a.id}/${encodeURIComponent(name)}` } })),
            },
          },
        };
      }
      default:
        throw new Error(`fake W&B does not know the operation ${op}`);
    }
  }

  private moveAliases(collection: string, aliases: string[], to: FakeArtifact): void {
    for (const a of this.artifacts) if (a.collection === collection) a.aliases = a.aliases.filter((x) => !aliases.includes(x));
    to.aliases.push(...aliases);
  }
}
