/**
 * Progress of running stages. On a TTY: one status line redrawn in place (units/s, ETA); elsewhere (CI, pipes):
 * a plain line at most every `interval` ms per stage, so logs stay quiet and line-oriented.
 */
export interface ProgressState {
  total: number;
  unit: string;
  done: number;
  startDone: number;
  startedAt: number;
  lastPrinted: number;
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

export function describeProgress(name: string, p: ProgressState, now: number): string {
  const elapsed = (now - p.startedAt) / 1000;
  const rate = elapsed > 0 ? (p.done - p.startDone) / elapsed : 0;
  const eta = rate > 0 ? (p.total - p.done) / rate : Infinity;
  const speed = `${rate.toFixed(rate < 10 ? 2 : 0)} ${p.unit}/s`;
  if (p.total <= 0) return `${name}: ${p.done} ${p.unit}, ${speed}`; // a stream of unknown length
  const pct = Math.floor((100 * p.done) / p.total);
  return `${name}: ${p.done}/${p.total} ${p.unit} (${pct}%), ${speed}, ETA ${formatDuration(eta)}`;
}

export class ProgressBoard {
  private readonly bars = new Map<string, ProgressState>();
  private drawn = false;

  constructor(
    private readonly out: NodeJS.WriteStream | { write(s: string): boolean; isTTY?: boolean },
    private readonly interval = 10_000,
    private readonly now: () => number = Date.now,
  ) {}

  private get tty(): boolean {
    return Boolean(this.out.isTTY) && process.env.CI === undefined;
  }

  /** `total` ≤ 0: length unknown (shows count and rate, no ETA). */
  start(name: string, total: number, unit: string, done = 0): void {
    const t = this.now();
    this.bars.set(name, { total, unit, done, startDone: done, startedAt: t, lastPrinted: -Infinity });
    this.render(name);
  }

  tick(name: string, n = 1): void {
    const bar = this.bars.get(name);
    if (!bar) return;
    bar.done = bar.total > 0 ? Math.min(bar.total, bar.done + n) : bar.done + n;
    this.render(name);
  }

  end(name: string): void {
    const bar = this.bars.get(name);
    if (!bar) return;
    this.bars.delete(name);
    this.clear();
    this.out.write(`${describeProgress(name, bar, this.now())}\n`);
    this.redraw();
  }

  /** Prints a log line without tearing the TTY status line. */
  line(text: string): void {
    this.clear();
    this.out.write(`${text}\n`);
    this.redraw();
  }

  private render(name: string): void {
    const bar = this.bars.get(name)!;
    const t = this.now();
    if (this.tty) {
      if (t - bar.lastPrinted < 100) return;
      bar.lastPrinted = t;
      this.clear();
      this.redraw();
    } else if (t - bar.lastPrinted >= this.interval) {
      bar.lastPrinted = t;
      this.out.write(`${describeProgress(name, bar, t)}\n`);
    }
  }

  private clear(): void {
    if (this.tty && this.drawn) this.out.write('\r\u001b[K');
    this.drawn = false;
  }

  private redraw(): void {
    if (!this.tty || this.bars.size === 0) return;
    const t = this.now();
    const cols = (this.out as NodeJS.WriteStream).columns ?? 120;
    const text = [...this.bars].map(([n, b]) => describeProgress(n, b, t)).join(' | ');
    this.out.write(text.slice(0, cols - 1));
    this.drawn = true;
  }
}
