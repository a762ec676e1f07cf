/** `minidalle hosts`: each host of the inventory, whether it answers, its state, and the stages running on it. */
import type { ProjectConfig } from '../core/config/project.js';
import { buildExecutors } from '../core/executors/inventory.js';
import { inventory } from '../core/executors/placement.js';
import { RunStore } from '../core/runs/index.js';
import { table } from './table.js';

function address(project: ProjectConfig, name: string): string {
  const h = project.hosts[name];
  if (!h || h.kind === 'local') return 'this machine';
  if (h.kind === 'ssh') return `${h.user ? `${h.user}@` : ''}${h.host}${h.port === 22 ? '' : `:${h.port}`}`;
  return `tpu ${h.name ?? name} (${h.accelerator_type}, ${h.zone}, ${h.project}${h.spot ? ', spot' : h.preemptible ? ', preemptible' : ''})`;
}

const oneLine = (s: string) => {
  const l = s.replace(/\s+/g, ' ').trim();
  return l.length > 120 ? `${l.slice(0, 117)}…` : l;
};

export async function hostsCommand(project: ProjectConfig): Promise<string> {
  const executors = buildExecutors(project);
  const running = (await new RunStore(project.runsDir).list()).filter((r) => r.kind === 'stage' && r.status === 'running');
  const rows = await Promise.all(
    inventory(project).map(async (h) => {
      const ex = executors[h.name];
      const probe = ex?.probe ? await ex.probe().catch((err: Error) => ({ answers: false, state: 'error', detail: err.message })) : { answers: true, state: 'ok' };
      const here = running.filter((r) => r.host === h.name).map((r) => `${r.stage ?? r.name} (${r.id})`);
      const res = Object.entries(h.resources).map(([k, v]) => `${k}=${v}`).join(' ');
      return [h.name, h.kind, address(project, h.name), probe.answers ? 'yes' : 'no', `${probe.state}${probe.detail && !probe.answers ? `: ${oneLine(probe.detail)}` : ''}`, String(h.concurrency), res || '-', here.join(', ') || '-'];
    }),
  );
  await Promise.all(Object.values(executors).map((e) => e.close?.()));
  const groups = Object.entries(project.groups).map(([g, m]) => `group ${g}: ${m.join(', ')}`);
  return [table(['host', 'kind', 'address', 'answers', 'state', 'slots', 'resources', 'running'], rows), ...groups].join('\n');
}
