/**
 * A fake Cloud Storage JSON API for the real `gcloud storage` CLI (CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE
 * points it here), enough for `gcloud storage rsync`, `ls` and `cp` in both directions, as gcloud 528 calls it:
 *   GET  /storage/v1/b/B/o/NAME                 object metadata (404: not an object, gcloud then lists)
 *   GET  /storage/v1/b/B/o?prefix=&delimiter=   listing, with prefixes for "directories"
 *   POST /upload/storage/v1/b/B/o?uploadType=multipart            small files (metadata part + media part)
 *   POST /resumable/upload/storage/v1/b/B/o?uploadType=resumable  big files: a session (Location header) …
 *   PUT  /upload/storage/v1/b/B/o?uploadType=resumable&upload_id=  … then the bytes (Content-Range)
 *   GET  /download/storage/v1/b/B/o/NAME?alt=media&generation=G   downloads (Range requests answered 206)
 *   DELETE /storage/v1/b/B/o/NAME
 * Objects carry size, generation, etag and md5Hash (no crc32c: gcloud then checks md5). It listens on several
 * addresses (loopback for the orchestrator, each test host's veth peer for its gcloud) with one store, and logs
 * every request with the address it came from.
 */
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface GcsObject {
  data: Buffer;
  generation: number;
  updated: string;
  metadata?: Record<string, string>;
}

export interface GcsRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  from: string;
  authorization?: string;
}

export class FakeGcs {
  /** `bucket/name` → object. */
  readonly objects = new Map<string, GcsObject>();
  readonly log: GcsRequest[] = [];
  private readonly servers: Server[] = [];
  private readonly sessions = new Map<string, { bucket: string; name: string; metadata?: Record<string, string>; data: Buffer }>();
  private generation = 0;
  port = 0;

  /** Listens on each address at one port; returns the port. */
  async start(addresses: string[]): Promise<number> {
    for (const address of addresses) {
      const server = createServer((req, res) => void this.handle(req, res).catch((err: Error) => this.send(res, 500, { error: { code: 500, message: err.message } })));
      await new Promise<void>((r) => server.listen(this.port, address, r));
      this.port = (server.address() as AddressInfo).port;
      this.servers.push(server);
    }
    return this.port;
  }

  async stop(): Promise<void> {
    await Promise.all(this.servers.map((s) => new Promise((r) => s.close(r))));
  }

  /** Object names under `bucket/prefix`. */
  names(bucket: string, prefix = ''): string[] {
    return [...this.objects.keys()].filter((k) => k.startsWith(`${bucket}/${prefix}`)).map((k) => k.slice(bucket.length + 1)).sort();
  }

  /** The kinds of calls served, as `METHOD path-pattern uploadType`, without names. */
  callKinds(): string[] {
    return [...new Set(this.log.map((r) => `${r.method} ${r.path.replace(/\/o\/.+$/, '/o/NAME').replace(/\/b\/[^/]+/, '/b/B')}${r.query.uploadType ? ` uploadType=${r.query.uploadType}` : ''}${r.query.alt === 'media' ? ' alt=media' : ''}`))].sort();
  }

  private meta(bucket: string, name: string, o: GcsObject): Record<string, unknown> {
    return {
      kind: 'storage#object',
      id: `${bucket}/${name}/${o.generation}`,
      bucket,
      name,
      size: String(o.data.length),
      generation: String(o.generation),
      metageneration: '1',
      etag: `e${o.generation}`,
      md5Hash: createHash('md5').update(o.data).digest('base64'),
      contentType: 'application/octet-stream',
      storageClass: 'STANDARD',
      timeCreated: o.updated,
      updated: o.updated,
      ...(o.metadata ? { metadata: o.metadata } : {}),
    };
  }

  private send(res: ServerResponse, status: number, body?: unknown, headers: Record<string, string> = {}): void {
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end(body === undefined ? undefined : JSON.stringify(body));
  }

  private store(res: ServerResponse, bucket: string, name: string, data: Buffer, metadata?: Record<string, string>): void {
    const o: GcsObject = { data, generation: ++this.generation, updated: new Date().toISOString(), ...(metadata ? { metadata } : {}) };
    this.objects.set(`${bucket}/${name}`, o);
    this.send(res, 200, this.meta(bucket, name, o));
  }

  private notFound(res: ServerResponse, what: string): void {
    this.send(res, 404, { error: { code: 404, message: `No such object: ${what}`, errors: [{ reason: 'notFound', message: `No such object: ${what}` }] } });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    const url = new URL(req.url ?? '/', 'http://x');
    const method = req.method ?? '?';
    this.log.push({ method, path: url.pathname, query: Object.fromEntries(url.searchParams), from: req.socket.remoteAddress ?? '', ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}) });
    let m: RegExpExecArray | null;
    if ((m = /^\/storage\/v1\/b\/([^/]+)\/o$/.exec(url.pathname)) && method === 'GET') return this.list(res, m[1]!, url.searchParams);
    if ((m = /^\/(?:download\/)?storage\/v1\/b\/([^/]+)\/o\/(.+)$/.exec(url.pathname))) {
      const [bucket, name] = [m[1]!, decodeURIComponent(m[2]!)];
      const o = this.objects.get(`${bucket}/${name}`);
      if (!o) return this.notFound(res, `${bucket}/${name}`);
      if (method === 'DELETE') {
        this.objects.delete(`${bucket}/${name}`);
        return this.send(res, 204);
      }
      if (url.searchParams.get('alt') !== 'media') return this.send(res, 200, this.meta(bucket, name, o));
      const hash = { 'x-goog-hash': `md5=${createHash('md5').update(o.data).digest('base64')}`, 'x-goog-generation': String(o.generation), 'content-type': 'application/octet-stream' };
      const range = /bytes=(\d+)-(\d*)/.exec(req.headers.range ?? '');
      if (!range) {
        res.writeHead(200, hash);
        return void res.end(o.data);
      }
      const first = Number(range[1]);
      const last = range[2] ? Math.min(Number(range[2]), o.data.length - 1) : o.data.length - 1;
      res.writeHead(206, { ...hash, 'content-range': `bytes ${first}-${last}/${o.data.length}` });
      return void res.end(o.data.subarray(first, last + 1));
    }
    if ((m = /^\/(?:resumable\/)?upload\/storage\/v1\/b\/([^/]+)\/o$/.exec(url.pathname))) {
      const bucket = m[1]!;
      const type = url.searchParams.get('uploadType');
      if (type === 'multipart') {
        const boundary = /boundary=(["']?)([^"';]+)\1/.exec(req.headers['content-type'] ?? '')?.[2];
        if (!boundary) return this.send(res, 400, { error: { code: 400, message: 'multipart upload without a boundary' } });
        // parts: headers, a blank line, the content, a line break, then the next boundary (gcloud uses \n)
        const parts = body
          .toString('latin1')
          .split(`--${boundary}`)
          .slice(1, -1)
          .map((p) => {
            const head = /\r?\n\r?\n/.exec(p)!;
            return Buffer.from(p.slice(head.index + head[0].length).replace(/\r?\n$/, ''), 'latin1');
          });
        const md = JSON.parse(parts[0]!.toString('utf8')) as { name: string; metadata?: Record<string, string> };
        return this.store(res, bucket, md.name, parts[1]!, md.metadata);
      }
      if (type === 'resumable' && !url.searchParams.get('upload_id')) {
        const md = body.length ? (JSON.parse(body.toString('utf8')) as { name?: string; metadata?: Record<string, string> }) : {};
        const id = String(this.sessions.size + 1 + this.generation);
        this.sessions.set(id, { bucket, name: md.name ?? url.searchParams.get('name') ?? '', ...(md.metadata ? { metadata: md.metadata } : {}), data: Buffer.alloc(0) });
        res.writeHead(200, { location: `http://${req.headers.host}/upload/storage/v1/b/${bucket}/o?uploadType=resumable&upload_id=${id}` });
        return void res.end();
      }
      if (type === 'resumable') {
        const id = url.searchParams.get('upload_id')!;
        const s = this.sessions.get(id);
        if (!s) return this.send(res, 404, { error: { code: 404, message: `no upload session ${id}` } });
        s.data = Buffer.concat([s.data, body]);
        const total = /\/(\d+|\*)$/.exec(req.headers['content-range'] ?? '')?.[1];
        if (total === '*' || (total !== undefined && s.data.length < Number(total))) {
          res.writeHead(308, s.data.length ? { range: `bytes=0-${s.data.length - 1}` } : {});
          return void res.end();
        }
        this.sessions.delete(id);
        return this.store(res, bucket, s.name, s.data, s.metadata);
      }
      if (type === 'media') return this.store(res, bucket, url.searchParams.get('name') ?? '', body);
    }
    if ((m = /^\/storage\/v1\/b\/([^/]+)$/.exec(url.pathname))) return this.send(res, 200, { kind: 'storage#bucket', name: m[1], id: m[1], location: 'US', storageClass: 'STANDARD' });
    this.send(res, 404, { error: { code: 404, message: `the fake GCS does not serve ${method} ${url.pathname}` } });
  }

  private list(res: ServerResponse, bucket: string, q: URLSearchParams): void {
    const prefix = q.get('prefix') ?? '';
    const delimiter = q.get('delimiter');
    const items: Record<string, unknown>[] = [];
    const prefixes = new Set<string>();
    for (const name of this.names(bucket)) {
      if (!name.startsWith(prefix)) continue;
      const rest = name.slice(prefix.length);
      const cut = delimiter ? rest.indexOf(delimiter) : -1;
      if (cut >= 0) prefixes.add(prefix + rest.slice(0, cut + 1));
      else items.push(this.meta(bucket, name, this.objects.get(`${bucket}/${name}`)!));
    }
    this.send(res, 200, { kind: 'storage#objects', ...(items.length ? { items } : {}), ...(prefixes.size ? { prefixes: [...prefixes] } : {}) });
  }
}
