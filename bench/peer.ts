/**
 * The PyTorch peer as one long-lived process (bench/peer/models.py --serve, JSON lines on stdin/stdout),
 * and the ABAB timing that alternates our repetitions with its: a shared machine's drift then lands on
 * both sides alike, and each row reports medians with their spread.
 */
import { type ChildProcessWithoutNullStreams, spawn, spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { createInterface, type Interface } from 'node:readline';

/** Median, quartiles and range of a sample of times (ms). */
export interface Spread {
  ms: number;
  min: number;
  q1: number;
  q3: number;
  max: number;
  n: number;
}

function quantile(sorted: number[], q: number): number {
  const at = (sorted.length - 1) * q;
  const lo = Math.floor(at);
  const hi = Math.ceil(at);
  return (sorted[lo] as number) + ((sorted[hi] as number) - (sorted[lo] as number)) * (at - lo);
}

export function spread(xs: number[]): Spread {
  const s = [...xs].sort((a, b) => a - b);
  const r = (v: number): number => +v.toFixed(2);
  return { ms: r(quantile(s, 0.5)), min: r(s[0] as number), q1: r(quantile(s, 0.25)), q3: r(quantile(s, 0.75)), max: r(s[s.length - 1] as number), n: s.length };
}

interface Reply {
  error?: string;
  id?: string;
  ms?: number | Record<string, number>;
  threads?: number;
  info?: Record<string, number>;
}

export class PeerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PeerError';
  }
}

export class Peer {
  private readonly lines: AsyncIterator<string>;
  private readonly rl: Interface;
  private stderr = '';

  private constructor(
    private readonly proc: ChildProcessWithoutNullStreams,
    readonly version: string,
  ) {
    this.rl = createInterface({ input: proc.stdout });
    this.lines = this.rl[Symbol.asyncIterator]();
    proc.stderr.on('data', (d: Buffer) => { this.stderr = (this.stderr + d.toString()).slice(-4000); });
  }

  /** The peer, or why there is none (python3-torch not importable). */
  static start(root: string): Peer | string {
    const python = '/usr/bin/python3';
    const probe = spawnSync(python, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8' });
    if (probe.status !== 0) return `peer skipped: ${python} cannot import torch (apt-get install python3-torch libopenblas0-pthread)`;
    const proc = spawn(python, [join(root, 'bench', 'peer', 'models.py'), '--serve'], { stdio: ['pipe', 'pipe', 'pipe'] });
    return new Peer(proc, probe.stdout.trim());
  }

  private async request(req: Record<string, unknown>): Promise<Reply> {
    this.proc.stdin.write(`${JSON.stringify(req)}\n`);
    const next = await this.lines.next();
    if (next.done) throw new PeerError(`the peer exited (${this.proc.exitCode}): ${this.stderr.trim().split('\n').slice(-3).join(' | ')}`);
    const r = JSON.parse(next.value) as Reply;
    if (r.error) throw new PeerError(`peer ${String(req['op'])} ${String(req['id'] ?? '')}: ${r.error}`);
    return r;
  }

  /** Builds and warms up workload `id`, choosing the faster of 1 and every-core intra-op threads. */
  async prepare(id: string, opts: { trials?: number; threads?: number[] } = {}): Promise<{ threads: number; info?: Record<string, number> }> {
    const r = await this.request({ op: 'prepare', id, threads: opts.threads ?? [...new Set([1, availableParallelism()])], trials: opts.trials ?? 2 });
    return { threads: r.threads ?? 0, ...(r.info ? { info: r.info } : {}) };
  }

  /** One timed repetition (ms, timed inside the peer: no pipe latency): the mean of a burst of `n` calls. */
  async rep(id: string, n = 1): Promise<number> {
    return (await this.request({ op: 'rep', id, n })).ms as number;
  }

  async drop(id: string): Promise<void> {
    await this.request({ op: 'drop', id });
  }

  async close(): Promise<void> {
    this.proc.stdin.write(`${JSON.stringify({ op: 'quit' })}\n`);
    this.proc.stdin.end();
    this.rl.close();
    await new Promise<void>((resolve) => (this.proc.exitCode !== null ? resolve() : this.proc.once('exit', () => resolve())));
  }
}

/** What a row reports of the peer: its median and spread, thread count, and our speed relative to it. */
export interface PeerFigures extends Spread {
  threads: number;
  /** PyTorch's median time / ours: ≥ 1 means we are at least as fast */
  speedVsPeer: number;
}

export interface Interleaved {
  ours: Spread;
  peer?: PeerFigures;
  /** why the peer has no figures for this row, when it has none */
  peerNote?: string;
  info?: Record<string, number>;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * `reps` repetitions of `ours` (a synchronous run returning its ms) alternating with the peer's workload
 * `peerId`: A B A B …, with `settleMs` of quiet before each, so neither side's BLAS threads still spin
 * while the other is timed. `ours` is warmed up by the caller. A peer failure is reported, not thrown.
 * `burst` > 1: `ours` is already the mean of that many calls, and the peer's repetition is too.
 */
export async function interleave(ours: () => number, reps: number, peer: Peer | null, peerId: string | null, settleMs: number, burst = 1, prep: { trials?: number; threads?: number[] } = {}): Promise<Interleaved> {
  const a: number[] = [];
  const b: number[] = [];
  let threads = 0;
  let info: Record<string, number> | undefined;
  let peerNote: string | undefined;
  let usePeer = peer !== null && peerId !== null;
  if (usePeer) {
    try {
      ({ threads, info } = await (peer as Peer).prepare(peerId as string, prep));
    } catch (e) {
      peerNote = (e as Error).message;
      usePeer = false;
    }
  }
  for (let i = 0; i < reps; i++) {
    if (usePeer) await sleep(settleMs);
    a.push(ours());
    if (!usePeer) continue;
    await sleep(settleMs);
    try {
      b.push(await (peer as Peer).rep(peerId as string, burst));
    } catch (e) {
      peerNote = (e as Error).message;
      usePeer = false;
    }
  }
  if (peer && peerId && !peerNote) await peer.drop(peerId).catch(() => undefined);
  const out: Interleaved = { ours: spread(a) };
  if (b.length > 0) {
    const p = spread(b);
    out.peer = { ...p, threads, speedVsPeer: +(p.ms / out.ours.ms).toFixed(3) };
  }
  if (peerNote) out.peerNote = peerNote;
  if (info) out.info = info;
  return out;
}
