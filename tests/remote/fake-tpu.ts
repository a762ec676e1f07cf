/**
 * A fake Cloud TPU v2 REST API on 127.0.0.1 for the real `gcloud compute tpus tpu-vm …` CLI
 * (CLOUDSDK_API_ENDPOINT_OVERRIDES_TPU points it here): nodes list/get/create/delete, long-running
 * operations, and a `preempt()` that flips a node to PREEMPTED as Google does to a spot VM. Every request is
 * logged as gcloud sent it. A node's network endpoint is whatever address the test gives it (a netns sshd).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakeNode {
  name: string;
  state: string;
  acceleratorType: string;
  runtimeVersion: string;
  schedulingConfig?: Record<string, unknown>;
  metadata?: Record<string, string>;
  networkEndpoints: { ipAddress: string; port: number; accessConfig: { externalIp: string } }[];
  createTime: string;
}

export interface LoggedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  body?: unknown;
  authorization?: string;
}

export class FakeTpuApi {
  readonly log: LoggedRequest[] = [];
  readonly nodes = new Map<string, FakeNode>();
  /** Queued resources by full name; their node appears (READY) at the first GET of it that finds none. */
  readonly queued = new Map<string, { name: string; state: { state: string }; nodeId: string; spec: Record<string, unknown> }>();
  private readonly operations = new Map<string, Record<string, unknown>>();
  private server?: Server;
  private ops = 0;
  private creates = 0;

  /** `address(nodeId)`: the IP a created node answers at (one per worker of a slice); `onCreate`: bring that host up. */
  constructor(
    private readonly address: (nodeId: string) => string | string[],
    private readonly onCreate: (nodeId: string) => Promise<void> | void = () => {},
  ) {}

  async start(): Promise<string> {
    this.server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/`;
  }

  async stop(): Promise<void> {
    await new Promise((r) => this.server?.close(r));
  }

  /** A node that exists before the test (as if tpu/create.sh had made it): READY, with its endpoints. */
  async seed(project: string, zone: string, nodeId: string, acceleratorType: string): Promise<void> {
    await this.addNode(`projects/${project}/locations/${zone}`, nodeId, { acceleratorType, runtimeVersion: 'tpu-ubuntu2204-base' });
  }

  preempt(nodeId: string): void {
    const n = [...this.nodes.values()].find((x) => x.name.endsWith(`/nodes/${nodeId}`));
    if (!n) throw new Error(`no node ${nodeId}`);
    n.state = 'PREEMPTED';
  }

  /** The calls gcloud made, as `METHOD path` (query strings other than alt=json kept). */
  calls(): string[] {
    return this.log.map((r) => {
      const q = Object.entries(r.query).filter(([k]) => k !== 'alt');
      return `${r.method} ${r.path}${q.length ? `?${q.map(([k, v]) => `${k}=${v}`).join('&')}` : ''}`;
    });
  }

  private send(res: ServerResponse, status: number, body: unknown): void {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  }

  private operation(parent: string, response?: unknown): Record<string, unknown> {
    const name = `${parent}/operations/operation-${++this.ops}`;
    const op = { name, done: true, metadata: { '@type': 'type.googleapis.com/google.cloud.common.OperationMetadata', verb: 'create' }, response: { '@type': 'type.googleapis.com/google.cloud.tpu.v2.Node', ...(response as object) } };
    this.operations.set(name, op);
    return op;
  }

  private async addNode(parent: string, nodeId: string, body: Record<string, unknown>): Promise<FakeNode> {
    const ips = [this.address(nodeId)].flat();
    await this.onCreate(nodeId);
    const node: FakeNode = {
      name: `${parent}/nodes/${nodeId}`,
      state: 'READY',
      acceleratorType: String(body.acceleratorType),
      runtimeVersion: String(body.runtimeVersion),
      schedulingConfig: body.schedulingConfig as Record<string, unknown>,
      metadata: body.metadata as Record<string, string>,
      networkEndpoints: ips.map((ip) => ({ ipAddress: ip, port: 8470, accessConfig: { externalIp: ip } })),
      createTime: new Date(Date.now() + ++this.creates).toISOString(),
    };
    this.nodes.set(node.name, node);
    return node;
  }

  private async handleQueued(method: string, parent: string, id: string | undefined, url: URL, body: Record<string, unknown> | undefined, res: ServerResponse): Promise<void> {
    if (method === 'POST' && !id) {
      const qid = url.searchParams.get('queuedResourceId')!;
      const spec = (body?.tpu as { nodeSpec: { nodeId: string; node: Record<string, unknown> }[] }).nodeSpec[0]!;
      const qr = { name: `${parent}/queuedResources/${qid}`, state: { state: 'WAITING_FOR_RESOURCES' }, nodeId: spec.nodeId, spec: spec.node };
      this.queued.set(qr.name, qr);
      return this.send(res, 200, this.operation(parent, qr));
    }
    const full = `${parent}/queuedResources/${id}`;
    const qr = this.queued.get(full);
    if (!qr) return this.send(res, 404, { error: { code: 404, message: `Resource '${full}' was not found`, status: 'NOT_FOUND' } });
    if (method === 'GET') return this.send(res, 200, qr);
    if (method === 'DELETE') {
      this.queued.delete(full);
      this.nodes.delete(`${parent}/nodes/${qr.nodeId}`);
      return this.send(res, 200, this.operation(parent));
    }
    return this.send(res, 405, { error: { code: 405, message: 'method not allowed', status: 'UNIMPLEMENTED' } });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    let raw = '';
    for await (const chunk of req) raw += chunk;
    const body = raw ? (JSON.parse(raw) as Record<string, unknown>) : undefined;
    this.log.push({ method: req.method ?? '?', path: url.pathname, query: Object.fromEntries(url.searchParams), ...(body ? { body } : {}), authorization: req.headers.authorization });
    const q = /^\/v2\/(projects\/[^/]+\/locations\/[^/]+)\/queuedResources(?:\/([^/:]+))?$/.exec(url.pathname);
    if (q) return this.handleQueued(req.method ?? '', q[1]!, q[2], url, body, res);
    const m = /^\/v2\/(projects\/[^/]+\/locations\/[^/]+)\/(nodes|operations)(?:\/([^/:]+))?$/.exec(url.pathname);
    if (!m) return this.send(res, 404, { error: { code: 404, message: `unknown path ${url.pathname}`, status: 'NOT_FOUND' } });
    const [, parent, kind, id] = m as unknown as [string, string, string, string | undefined];
    if (kind === 'operations') {
      const op = this.operations.get(`${parent}/operations/${id}`);
      return op ? this.send(res, 200, op) : this.send(res, 404, { error: { code: 404, message: 'operation not found', status: 'NOT_FOUND' } });
    }
    const full = id ? `${parent}/nodes/${id}` : '';
    if (req.method === 'GET' && !id) return this.send(res, 200, { nodes: [...this.nodes.values()].filter((n) => n.name.startsWith(parent)) });
    if (req.method === 'GET') {
      const waiting = [...this.queued.values()].find((x) => x.nodeId === id && x.state.state === 'WAITING_FOR_RESOURCES');
      if (waiting && !this.nodes.has(full)) {
        // Capacity is found now: the node will be there at the next look.
        waiting.state.state = 'ACTIVE';
        await this.addNode(parent, id!, waiting.spec);
        return this.send(res, 404, { error: { code: 404, message: `Resource '${full}' was not found`, status: 'NOT_FOUND' } });
      }
      const n = this.nodes.get(full);
      return n ? this.send(res, 200, n) : this.send(res, 404, { error: { code: 404, message: `Resource '${full}' was not found`, status: 'NOT_FOUND' } });
    }
    if (req.method === 'POST' && !id) {
      const nodeId = url.searchParams.get('nodeId')!;
      const name = `${parent}/nodes/${nodeId}`;
      if (this.nodes.has(name)) return this.send(res, 409, { error: { code: 409, message: `${name} already exists`, status: 'ALREADY_EXISTS' } });
      return this.send(res, 200, this.operation(parent, await this.addNode(parent, nodeId, body ?? {})));
    }
    if (req.method === 'DELETE' && id) {
      if (!this.nodes.delete(full)) return this.send(res, 404, { error: { code: 404, message: `Resource '${full}' was not found`, status: 'NOT_FOUND' } });
      return this.send(res, 200, this.operation(parent));
    }
    return this.send(res, 405, { error: { code: 405, message: 'method not allowed', status: 'UNIMPLEMENTED' } });
  }
}
