/**
 * `minidalle ui`'s server (Node's http): the front end, the Runs API over the run store, live history as
 * server-sent events, and the demo's generation API in front of one warm model.
 *
 * Safety: it binds 127.0.0.1 unless told otherwise, and any other address needs a token; with a token every
 * request must carry it (Authorization: Bearer, the cookie the page sets, or ?token= once); without one, a
 * request whose Host is not a loopback name is refused (DNS rebinding). Bodies, prompts and files are bounded;
 * files come only from inside run directories; configs are redacted and every string scrubbed of secrets.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, readFile, stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { scrub, scrubDeep, secretValues } from '../core/secrets.js';
import type { RunStore } from '../core/runs/index.js';
import { readWebAsset } from '../report/assets.js';
import { GenerateRequestError, type GenerateEvent, type WarmGenerator } from './generator.js';
import { uiPage, UI_CSP } from './page.js';
import { compareRuns, historyFile, HttpError, runDetail, runFile, runList } from './runs-api.js';

export class UiServerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UiServerError';
  }
}

export interface UiServerOptions {
  store: RunStore;
  /** default 127.0.0.1 */
  host?: string;
  /** default 7860; 0 picks a free port */
  port?: number;
  /** required for a non-loopback host; when set, every request must carry it */
  token?: string;
  generator?: WarmGenerator;
  /** shown on the demo tab */
  compute?: string;
  env?: Record<string, string | undefined>;
  /** how often the live stream looks at history.jsonl (default 500 ms) */
  pollMs?: number;
}

export interface UiServer {
  url: string;
  port: number;
  server: Server;
  close(): Promise<void>;
}

export const MAX_BODY = 64 * 1024;
const MAX_STREAMS = 32;
const COOKIE = 'minidalle_ui_token';

export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127(\.\d{1,3}){3}$/.test(h);
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

function tokenOf(req: IncomingMessage, url: URL): string | undefined {
  const auth = req.headers.authorization;
  if (auth?.startsWith('Bearer ')) return auth.slice(7).trim();
  const fromQuery = url.searchParams.get('token');
  if (fromQuery) return fromQuery;
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === COOKIE) return decodeURIComponent(v.join('='));
  }
  return undefined;
}

function send(res: ServerResponse, status: number, body: string | Buffer, type: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store', 'X-Content-Type-Options': 'nosniff', 'Referrer-Policy': 'no-referrer', ...headers });
  res.end(body);
}

function sendJson(res: ServerResponse, status: number, value: unknown): void {
  send(res, status, `${JSON.stringify(value)}\n`, 'application/json; charset=utf-8');
}

async function readBody(req: IncomingMessage): Promise<unknown> {
  const declared = Number(req.headers['content-length'] ?? '0');
  if (declared > MAX_BODY) throw new HttpError(413, `request body of ${declared} bytes; at most ${MAX_BODY}`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY) throw new HttpError(413, `request body over ${MAX_BODY} bytes`);
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new HttpError(400, `the body is not JSON (${(err as Error).message})`);
  }
}

export async function startUiServer(o: UiServerOptions): Promise<UiServer> {
  const host = o.host ?? '127.0.0.1';
  const token = o.token === undefined || o.token === '' ? undefined : o.token;
  if (!isLoopback(host) && token === undefined) {
    throw new UiServerError(`refusing to listen on ${host} without a token: other machines could reach the runs and the model. Give --token <secret> (or MINIDALLE_UI_TOKEN), or bind 127.0.0.1`);
  }
  if (token !== undefined && token.length < 8) throw new UiServerError('the UI token must be at least 8 characters');
  const secrets = [...new Set([...o.store.secrets, ...secretValues(o.env ?? process.env), ...(token ? [token] : [])])].filter((s) => s.length > 0);
  const wantDigest = token ? digest(token) : undefined;
  const pollMs = o.pollMs ?? 500;
  let streams = 0;
  const openStreams = new Set<ServerResponse>();

  const page = (): string => uiPage({ hasModel: o.generator !== undefined });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://ui.invalid');
    const hostHeader = req.headers.host ?? '';
    if (wantDigest) {
      const got = tokenOf(req, url);
      if (got === undefined || !timingSafeEqual(digest(got), wantDigest)) {
        send(res, 401, 'a valid token is required (Authorization: Bearer <token>, or open the page with ?token=<token>)\n', 'text/plain; charset=utf-8', { 'WWW-Authenticate': 'Bearer' });
        return;
      }
    } else if (!isLoopback(hostHeader.replace(/:\d+$/, ''))) {
      send(res, 403, 'this server answers only requests addressed to a loopback name (127.0.0.1, localhost)\n', 'text/plain; charset=utf-8');
      return;
    }
    const path = url.pathname;
    const method = req.method ?? 'GET';

    if (method === 'GET' && (path === '/' || path === '/index.html')) {
      // a token that came in the query becomes a cookie, so the page's own requests carry it
      const cookie: Record<string, string> = wantDigest && url.searchParams.get('token') ? { 'Set-Cookie': `${COOKIE}=${encodeURIComponent(url.searchParams.get('token')!)}; HttpOnly; SameSite=Strict; Path=/` } : {};
      send(res, 200, page(), 'text/html; charset=utf-8', { 'Content-Security-Policy': UI_CSP, 'X-Frame-Options': 'DENY', ...cookie });
      return;
    }
    if (method === 'GET' && path === '/favicon.ico') return send(res, 204, '', 'image/x-icon');
    if (method === 'GET' && path === '/assets/ui.js') return send(res, 200, readWebAsset('ui.js'), 'text/javascript; charset=utf-8');
    if (method === 'GET' && path === '/assets/uplot.css') return send(res, 200, readWebAsset('uplot.css'), 'text/css; charset=utf-8');

    if (method === 'GET' && path === '/api/info') {
      return sendJson(res, 200, scrubDeep({ model: o.generator?.info() ?? null, queue: o.generator?.load ?? 0, compute: o.compute ?? null, runs_dir: o.store.root }, secrets));
    }
    if (method === 'GET' && path === '/api/runs') return sendJson(res, 200, await runList(o.store, secrets));
    if (method === 'GET' && path === '/api/compare') {
      const ids = (url.searchParams.get('runs') ?? '').split(',').filter((s) => s !== '');
      return sendJson(res, 200, await compareRuns(o.store, ids, url.searchParams.get('metric') ?? undefined, secrets));
    }
    const m = /^\/api\/runs\/([^/]+)(\/file|\/events)?$/.exec(path);
    if (method === 'GET' && m) {
      const id = decodeURIComponent(m[1]!);
      if (m[2] === undefined) return sendJson(res, 200, await runDetail(o.store, id, secrets));
      if (m[2] === '/file') {
        const f = await runFile(o.store, id, url.searchParams.get('path') ?? '');
        if (f.type === 'application/json') return send(res, 200, scrub(await readFile(f.file, 'utf8'), secrets), 'application/json; charset=utf-8');
        res.writeHead(200, { 'Content-Type': f.type, 'Content-Length': f.size, 'Cache-Control': 'max-age=3600', 'X-Content-Type-Options': 'nosniff' });
        createReadStream(f.file).pipe(res);
        return;
      }
      return follow(req, res, id, Number(url.searchParams.get('offset') ?? '0'));
    }
    if (method === 'POST' && (path === '/api/generate' || path === '/api/generate/stream')) return generate(req, res, path.endsWith('/stream'));
    if (path.startsWith('/api/')) throw new HttpError(method === 'GET' || method === 'POST' ? 404 : 405, `${method} ${path.slice(0, 100)}: no such endpoint`);
    throw new HttpError(404, 'not found');
  }

  /** Server-sent events: new complete lines of history.jsonl as `rows`, and the run's status when it changes. */
  async function follow(req: IncomingMessage, res: ServerResponse, id: string, from: number): Promise<void> {
    const { file, record } = await historyFile(o.store, id);
    if (streams >= MAX_STREAMS) throw new HttpError(503, `${MAX_STREAMS} live streams are open already`);
    streams++;
    openStreams.add(res);
    res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-store', Connection: 'keep-alive', 'X-Content-Type-Options': 'nosniff' });
    res.write(`retry: 2000\n\n`);
    let offset = Number.isSafeInteger(from) && from >= 0 ? from : 0;
    let status = record.status;
    let busy = false;
    const tick = async (): Promise<void> => {
      if (busy) return;
      busy = true;
      try {
        const size = await stat(file).then((s) => s.size, () => 0);
        if (size < offset) offset = 0; // replaced: start over
        if (size > offset) {
          const fh = await open(file, 'r');
          try {
            const buf = Buffer.alloc(Math.min(size - offset, 4 * 1024 * 1024));
            const { bytesRead } = await fh.read(buf, 0, buf.length, offset);
            const text = buf.subarray(0, bytesRead).toString('utf8');
            const end = text.lastIndexOf('\n');
            if (end >= 0) {
              const rows = text.slice(0, end).split('\n').flatMap((l) => {
                try {
                  return l.trim() ? [JSON.parse(l) as unknown] : [];
                } catch {
                  return [];
                }
              });
              offset += Buffer.byteLength(text.slice(0, end + 1));
              if (rows.length) res.write(`event: rows\ndata: ${JSON.stringify(scrubDeep(rows, secrets))}\n\n`);
            }
          } finally {
            await fh.close();
          }
        }
        const now = await o.store.readRecord(id).then((r) => r.status, () => status);
        if (now !== status) {
          status = now;
          res.write(`event: status\ndata: ${JSON.stringify({ status })}\n\n`);
        }
      } finally {
        busy = false;
      }
    };
    const timer = setInterval(() => void tick().catch(() => undefined), pollMs);
    const beat = setInterval(() => res.write(': keep-alive\n\n'), 15_000);
    void tick().catch(() => undefined);
    const stop = (): void => {
      clearInterval(timer);
      clearInterval(beat);
      streams--;
      openStreams.delete(res);
    };
    req.on('close', stop);
  }

  async function generate(req: IncomingMessage, res: ServerResponse, stream: boolean): Promise<void> {
    const body = await readBody(req);
    if (!o.generator) throw new HttpError(503, 'no model is loaded: start the UI with --model <seq2seq run | model folder>');
    let params;
    try {
      params = o.generator.parse(body);
    } catch (err) {
      if (err instanceof GenerateRequestError) throw new HttpError(400, err.message);
      throw err;
    }
    if (params.prompt === '') throw new HttpError(400, "field 'prompt' is empty: write what the image should show");
    const gone = new AbortController();
    res.on('close', () => !res.writableFinished && gone.abort());
    const meta = { prompt: params.prompt, seed: params.seed, sampling: { cond_scale: params.condScale, top_k: params.topK, top_p: params.topP, temperature: params.temperature } };
    if (stream) {
      res.writeHead(200, { 'Content-Type': 'application/x-ndjson; charset=utf-8', 'Cache-Control': 'no-store', 'X-Content-Type-Options': 'nosniff' });
      res.write(`${JSON.stringify({ type: 'request', ...meta, samples: params.samples })}\n`);
      const emit = (e: GenerateEvent): void => void res.write(`${JSON.stringify(e)}\n`);
      try {
        await o.generator.generate(params, emit, gone.signal);
      } catch (err) {
        res.write(`${JSON.stringify({ type: 'error', message: scrub((err as Error).message, secrets) })}\n`);
      }
      res.end();
      return;
    }
    const images: unknown[] = [];
    let done: Extract<GenerateEvent, { type: 'done' }> | undefined;
    let queued = 0;
    try {
      await o.generator.generate(
        params,
        (e) => {
          if (e.type === 'image') images.push(e.image);
          else if (e.type === 'done') done = e;
          else if (e.type === 'queued') queued = e.position;
        },
        gone.signal,
      );
    } catch (err) {
      if (err instanceof GenerateRequestError) throw new HttpError(503, err.message);
      throw err;
    }
    if (!done) return; // the client left
    sendJson(res, 200, { ...meta, queued_behind: queued, images, ...(done.ranking ? { ranking: done.ranking } : {}), started_ms: done.started_ms, finished_ms: done.finished_ms, seconds: done.seconds });
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      const status = err instanceof HttpError ? err.status : 500;
      const message = scrub(err instanceof Error ? err.message : String(err), secrets);
      if (res.headersSent) {
        res.end();
        return;
      }
      sendJson(res, status, { error: message });
      if (status === 413) req.destroy();
    });
  });
  server.requestTimeout = 120_000;
  server.headersTimeout = 20_000;
  server.maxHeadersCount = 64;
  await new Promise<void>((resolveListen, reject) => {
    server.once('error', reject);
    server.listen(o.port ?? 7860, host, () => resolveListen());
  });
  const port = (server.address() as AddressInfo).port;
  const shown = host.includes(':') ? `[${host}]` : host;
  return {
    url: `http://${shown}:${port}`,
    port,
    server,
    close: () =>
      new Promise<void>((res) => {
        for (const s of openStreams) s.end();
        server.closeAllConnections();
        server.close(() => res());
      }),
  };
}
