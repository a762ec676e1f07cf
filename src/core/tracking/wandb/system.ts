/**
 * System metrics of a running stage, sampled by the orchestrator (not the worker) and appended to
 * `runs/<id>/sync/system.jsonl`, which the replica sends as W&B events: machine CPU and memory, the worker
 * process's CPU, RSS and threads (from /proc on Linux; elsewhere only the machine-wide figures), and the
 * compute backend recorded in run.json meta.
 */
import { appendFileSync, mkdirSync, readFileSync } from 'node:fs';
import { cpus, freemem, totalmem } from 'node:os';
import { join } from 'node:path';
import { SYSTEM_FILE, syncDir } from './state.js';

/** Linux's USER_HZ, the unit of utime/stime in /proc/<pid>/stat, is 100 on every mainstream kernel build. */
const CLOCK_TICKS = 100;

interface CpuTimes {
  idle: number;
  total: number;
}

function machineCpu(): CpuTimes {
  let idle = 0;
  let total = 0;
  for (const c of cpus()) {
    idle += c.times.idle;
    total += c.times.user + c.times.nice + c.times.sys + c.times.irq + c.times.idle;
  }
  return { idle, total };
}

function procStat(pid: number): { cpuSeconds: number; threads: number; rssMB: number } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: fields are counted after its last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const utime = Number(fields[11]);
    const stime = Number(fields[12]);
    const threads = Number(fields[17]);
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const rssKb = Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? NaN);
    if (!Number.isFinite(utime) || !Number.isFinite(rssKb)) return undefined;
    return { cpuSeconds: (utime + stime) / CLOCK_TICKS, threads, rssMB: rssKb / 1024 };
  } catch {
    return undefined; // not Linux, or the worker has just exited
  }
}

export class SystemSampler {
  private lastMachine = machineCpu();
  private lastProc: { pid: number; cpuSeconds: number; at: number } | undefined;
  private readonly file: string;

  constructor(private readonly runDir: string) {
    this.file = join(syncDir(runDir), SYSTEM_FILE);
  }

  /** Appends one sample; the worker pid, start time and backend are read from run.json each time. */
  sample(now = Date.now()): void {
    let meta: { worker_pid?: unknown; backend?: unknown } = {};
    let startedAt = now;
    try {
      const record = JSON.parse(readFileSync(join(this.runDir, 'run.json'), 'utf8')) as { meta?: typeof meta; started_at?: string; created_at?: string };
      meta = record.meta ?? {};
      startedAt = Date.parse(record.started_at ?? record.created_at ?? '') || now;
    } catch {
      return; // run.json being replaced: the next sample reads it
    }
    const row: Record<string, unknown> = {};
    const machine = machineCpu();
    const dt = machine.total - this.lastMachine.total;
    if (dt > 0) row['system.cpu'] = round(100 * (1 - (machine.idle - this.lastMachine.idle) / dt));
    this.lastMachine = machine;
    row['system.memory_percent'] = round(100 * (1 - freemem() / totalmem()));
    const pid = typeof meta.worker_pid === 'number' ? meta.worker_pid : undefined;
    const proc = pid === undefined ? undefined : procStat(pid);
    if (pid !== undefined && proc) {
      if (this.lastProc?.pid === pid && now > this.lastProc.at) {
        row['system.proc.cpu.percent'] = round((100 * (proc.cpuSeconds - this.lastProc.cpuSeconds)) / ((now - this.lastProc.at) / 1000));
      }
      this.lastProc = { pid, cpuSeconds: proc.cpuSeconds, at: now };
      row['system.proc.memory.rssMB'] = round(proc.rssMB);
      row['system.proc.memory.percent'] = round((100 * proc.rssMB * 1024 * 1024) / totalmem());
      row['system.proc.cpu.threads'] = proc.threads;
    }
    if (meta.backend !== undefined) row['system.compute_backend'] = typeof meta.backend === 'string' ? meta.backend : JSON.stringify(meta.backend);
    row._runtime = Math.max(0, (now - startedAt) / 1000);
    row._timestamp = now / 1000;
    mkdirSync(syncDir(this.runDir), { recursive: true });
    appendFileSync(this.file, `${JSON.stringify(row)}\n`);
  }
}

function round(v: number): number {
  return Math.round(v * 100) / 100;
}
