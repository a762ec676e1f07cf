/**
 * Placement: which hosts may run a stage (its `host:` names a host or a group, or `auto` / declared
 * resources let the scheduler choose), and which of them is free now. Each host runs up to its
 * `concurrency` stages at once (local: max_parallel; remote hosts: 1).
 */
import { cpus, totalmem } from 'node:os';
import type { StageConfig } from '../config/experiment.js';
import type { LoadedExperiment } from '../config/experiment.js';
import type { ProjectConfig } from '../config/project.js';
import { ANY_HOST, type StageResources } from '../config/stage-placement.js';
import { MinidalleError } from '../errors.js';

export interface HostSlots {
  name: string;
  kind: string;
  concurrency: number;
  resources: StageResources;
}

export class PlacementError extends MinidalleError {
  override name = 'PlacementError';
}

/** Every host of the inventory, `local` first, with its concurrency and what it offers. */
export function inventory(project: ProjectConfig): HostSlots[] {
  const local = project.hosts.local;
  const out: HostSlots[] = [
    {
      name: 'local',
      kind: 'local',
      concurrency: local?.concurrency ?? project.max_parallel,
      resources: { cpus: cpus().length, memory_gb: Math.floor(totalmem() / 2 ** 30), ...(local?.resources ?? {}) },
    },
  ];
  for (const [name, h] of Object.entries(project.hosts)) {
    if (name !== 'local') out.push({ name, kind: h.kind, concurrency: h.concurrency ?? (h.kind === 'local' ? project.max_parallel : 1), resources: h.resources });
  }
  return out;
}

/** Why a host cannot offer what a stage declares, or '' when it can. */
export function missingResources(host: StageResources, need: StageResources | undefined): string {
  if (!need) return '';
  const missing: string[] = [];
  if (need.cpus !== undefined && (host.cpus ?? 0) < need.cpus) missing.push(`cpus ${need.cpus} (has ${host.cpus ?? 'none declared'})`);
  if (need.memory_gb !== undefined && (host.memory_gb ?? 0) < need.memory_gb) missing.push(`memory_gb ${need.memory_gb} (has ${host.memory_gb ?? 'none declared'})`);
  if (need.accelerator !== undefined && host.accelerator !== need.accelerator) missing.push(`accelerator ${need.accelerator} (has ${host.accelerator ?? 'none'})`);
  return missing.join(', ');
}

/** The hosts that may run a stage, in the order the scheduler tries them; throws when none can. */
export function candidates(project: ProjectConfig, stageName: string, stage: StageConfig): string[] {
  const hosts = inventory(project);
  const target = stage.host ?? 'local';
  const named = target === ANY_HOST ? hosts.map((h) => h.name) : project.groups[target] ?? [target];
  const fit = named.filter((n) => {
    const h = hosts.find((x) => x.name === n);
    return h !== undefined && missingResources(h.resources, stage.resources) === '';
  });
  if (fit.length === 0) {
    const why = named.map((n) => `${n}: ${missingResources(hosts.find((x) => x.name === n)?.resources ?? {}, stage.resources) || 'not in the inventory'}`).join('; ');
    throw new PlacementError(`stage '${stageName}' (host: ${target}) has no host offering its resources: ${why}`);
  }
  return fit;
}

/** Candidates of every stage of an experiment (what `minidalle validate` prints); throws on the first stage without one. */
export function planPlacement(loaded: LoadedExperiment, project: ProjectConfig): Record<string, string[]> {
  return Object.fromEntries(loaded.order.map((n) => [n, candidates(project, n, loaded.experiment.stages[n]!)]));
}

export function formatPlacement(plan: Record<string, string[]>, project: ProjectConfig): string {
  const kinds = Object.fromEntries(inventory(project).map((h) => [h.name, h.kind]));
  const lines = ['placement:'];
  for (const [stage, hosts] of Object.entries(plan)) {
    lines.push(`  ${stage}: ${hosts.length === 1 ? hosts[0] : `first free of ${hosts.join(', ')}`} (${[...new Set(hosts.map((h) => kinds[h]))].join('/')})`);
  }
  return lines.join('\n');
}

/** Free slots per host while a pipeline runs. */
export class Placer {
  private readonly busy = new Map<string, number>();
  private readonly slots: Map<string, HostSlots>;

  /**
   * `shared`: one Placer for several pipelines at once (a sweep's members). Configured slots are then shared
   * (a remote host's 1, a host's `concurrency`), while this machine without a configured `hosts.local.concurrency`
   * leaves each pipeline its own `max_parallel`, as separate runs would have.
   */
  constructor(
    private readonly project: ProjectConfig,
    options: { shared?: boolean } = {},
  ) {
    this.slots = new Map(inventory(project).map((h) => [h.name, h]));
    if (options.shared && project.hosts.local?.concurrency === undefined) this.slots.set('local', { ...this.slots.get('local')!, concurrency: Number.POSITIVE_INFINITY });
  }

  /** Takes a slot on the first free candidate (hosts in `avoid` only when nothing else is free); undefined when all are busy. */
  take(stageName: string, stage: StageConfig, avoid: ReadonlySet<string> = new Set()): string | undefined {
    const all = candidates(this.project, stageName, stage);
    const order = [...all.filter((h) => !avoid.has(h)), ...all.filter((h) => avoid.has(h))];
    const free = order.find((h) => (this.busy.get(h) ?? 0) < this.slots.get(h)!.concurrency);
    if (free !== undefined) this.busy.set(free, (this.busy.get(free) ?? 0) + 1);
    return free;
  }

  /** Takes a slot on a given host whether or not it is free (re-attaching to a worker that already runs there). */
  claim(host: string): void {
    this.busy.set(host, (this.busy.get(host) ?? 0) + 1);
  }

  release(host: string): void {
    this.busy.set(host, Math.max(0, (this.busy.get(host) ?? 0) - 1));
  }
}
