import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { formatSweep } from '../../src/commands/sweep.js';
import { loadExperiment } from '../../src/core/config/experiment.js';
import { loadProjectConfig } from '../../src/core/config/project.js';
import { LocalExecutor } from '../../src/core/executors/local.js';
import { PluginRegistry } from '../../src/core/plugins/registry.js';
import type { Plugin } from '../../src/core/plugins/types.js';
import { ProgressBoard } from '../../src/core/progress.js';
import { RunStore, type RunRecord } from '../../src/core/runs/index.js';
import { planSweep, type SweepArguments } from '../../src/core/sweep/plan.js';
import { SweepStore } from '../../src/core/sweep/record.js';
import { rankSweep } from '../../src/core/sweep/results.js';
import { runSweep, type RunSweepOptions } from '../../src/core/sweep/run.js';
import { cli, FIXTURE_PLUGINS, ROOT, until } from '../support/cli.js';

const readSummary = (runsDir: string, id: string) => JSON.parse(readFileSync(join(runsDir, id, 'summary.json'), 'utf8')) as Record<string, unknown>;

const QUADRATIC = join(ROOT, 'tests/fixtures/plugins/sweep-quadratic.mjs');

async function setup(yaml: string) {
  const dir = mkdtempSync(join(tmpdir(), 'minidalle-sweep-'));
  writeFileSync(join(dir, 'minidalle.config.json'), JSON.stringify({ runs_dir: 'runs', plugins: [FIXTURE_PLUGINS, QUADRATIC] }));
  writeFileSync(join(dir, 'e.yaml'), yaml);
  const project = await loadProjectConfig(dir);
  const registry = new PluginRegistry();
  for (const file of [FIXTURE_PLUGINS, QUADRATIC]) {
    for (const p of (await import(file)).default as Plugin[]) registry.add(p, file);
  }
  const lines: string[] = [];
  const board = new ProgressBoard({ write: (s: string) => (lines.push(s), true) });
  const sweep = async (args: SweepArguments = {}, extra: Partial<RunSweepOptions> = {}) => {
    const base = loadExperiment(join(dir, 'e.yaml'), { registry, projectDir: dir });
    const plan = planSweep(base, args, { registry, overrides: [], projectDir: dir });
    return runSweep(plan, { project, executors: { local: new LocalExecutor() }, board, lockPollMs: 20, ...extra });
  };
  const runs = async (): Promise<RunRecord[]> => new RunStore(project.runsDir).list();
  return { dir, project, sweep, runs, lines };
}

const EXPERIMENT = `name: q
stages:
  data: { plugin: counter, with: { steps: 3 } }
  fit:
    plugin: quadratic
    needs: [data]
    with: { upstream: "\${stages.data.artifacts.result}", steps: 2 }
`;

describe('running sweeps', () => {
  it('a 2 × 3 grid runs 6 members with the right values; the shared data stage runs once although members run 3 at once', async () => {
    const { sweep, runs, project, lines } = await setup(EXPERIMENT);
    const result = await sweep({ sweep: ['stages.fit.with.y=0,-1', 'stages.fit.with.x=1,2,3'], parallel: 3 });
    expect(result.status).toBe('finished');
    const all = await runs();
    const data = all.filter((r) => r.stage === 'data');
    expect(data).toHaveLength(1);
    const fits = all.filter((r) => r.stage === 'fit');
    expect(fits).toHaveLength(6);
    // The members that started while the data stage ran waited for it and reused it.
    expect(lines.join('')).toMatch(/data: waiting for pid \d+/);
    expect(lines.join('').match(/data: reusing run/g)!.length).toBe(5);
    const record = await new SweepStore(project.runsDir).read(result.id);
    expect(record.members.map((m) => m.status)).toEqual(Array(6).fill('finished'));
    const expected = [0, -1].flatMap((y) => [1, 2, 3].map((x) => ({ 'stages.fit.with.y': y, 'stages.fit.with.x': x })));
    expect(record.members.map((m) => m.parameters)).toEqual(expected);
    for (const m of record.members) {
      expect(m.stage_runs.data).toBe(data[0]!.id);
      const fit = fits.find((r) => r.id === m.stage_runs.fit)!;
      // Each member's values are in its run: the resolved config, and run.json's sweep meta.
      const config = readFileSync(join(project.runsDir, fit.id, 'config.yaml'), 'utf8');
      expect(config).toMatch(new RegExp(`\\n  x: ${m.parameters['stages.fit.with.x']}\\n`));
      expect(config).toMatch(new RegExp(`\\n  y: ${m.parameters['stages.fit.with.y']}\\n`));
      expect(fit.meta.sweep).toEqual({ id: record.id, member: m.index, parameters: m.parameters });
      const pipeline = all.find((r) => r.id === m.pipeline_runs[0])!;
      expect(pipeline.kind).toBe('pipeline');
      expect(pipeline.meta.sweep).toEqual({ id: record.id, member: m.index, parameters: m.parameters });
    }
    // Ranked by the key metric (loss, minimize): (x - 3)² + (y + 1)² + 1/2; ties keep member order.
    const ranked = rankSweep(record, new RunStore(project.runsDir));
    expect(ranked.metric).toMatchObject({ name: 'loss', goal: 'minimize', stage: 'fit' });
    expect(ranked.members.map((m) => [m.parameters['stages.fit.with.x'], m.parameters['stages.fit.with.y'], m.value])).toEqual([
      [3, -1, 0.5], [3, 0, 1.5], [2, -1, 1.5], [2, 0, 2.5], [1, -1, 4.5], [1, 0, 5.5],
    ]);
  }, 60_000);

  it('stopped part-way (one member mid-stage), the same sweep run again resumes that member and runs only the missing ones', async () => {
    const { sweep, runs, project } = await setup(EXPERIMENT.replace('steps: 2 }', 'steps: 3 }'));
    const stop = new AbortController();
    // Members 1 and 3 take 0.6 s per step, so member 1 is stopped before its last step (it checks the stop after each).
    const args = { sweep: ['stages.fit.with.x=1,2', 'stages.fit.with.delay_ms=0,600'] };
    const first = sweep(args, { signal: stop.signal });
    const member1Logged = () =>
      existsSync(project.runsDir) &&
      readdirSync(project.runsDir).some((id) => {
        const dir = join(project.runsDir, id);
        if (!existsSync(join(dir, 'history.jsonl'))) return false;
        const r = JSON.parse(readFileSync(join(dir, 'run.json'), 'utf8')) as RunRecord;
        return r.stage === 'fit' && (r.meta.sweep as { member: number }).member === 1;
      });
    await until('member 1 to log its first step', member1Logged);
    stop.abort();
    const stopped = await first;
    expect(stopped.status).toBe('stopped');
    expect(stopped.ran).toEqual([0, 1]);
    expect(stopped.record.members.map((m) => m.status)).toEqual(['finished', 'stopped', 'pending', 'pending']);
    const interrupted = (await runs()).find((r) => r.id === stopped.record.members[1]!.stage_runs.fit)!;
    expect(interrupted.status).toBe('stopped');

    const second = await sweep(args);
    expect(second.id).toBe(stopped.id); // the same sweep, continued
    expect(second.ran).toEqual([1, 2, 3]);
    expect(second.status).toBe('finished');
    const all = await runs();
    const resumed = all.find((r) => r.id === second.record.members[1]!.stage_runs.fit)!;
    expect(resumed.resumed_from).toBe(interrupted.id); // from its checkpoint, not from step 0
    expect(readSummary(project.runsDir, resumed.id).final_step).toBe(3);
    expect(all.filter((r) => r.stage === 'fit')).toHaveLength(5); // member 0 did not run again
    expect(all.filter((r) => r.stage === 'data')).toHaveLength(1);
    expect(second.record.members.map((m) => m.pipeline_runs.length)).toEqual([1, 2, 1, 1]);
    const third = await sweep(args);
    expect(third.ran).toEqual([]);
    expect(await new SweepStore(project.runsDir).list()).toHaveLength(1);
  }, 60_000);

  it('early stopping by the median rule stops a member that trails the median at the step', async () => {
    const yaml = `${EXPERIMENT.replace('steps: 2 }', 'steps: 150, delay_ms: 20 }')}sweep:
  parameters:
    stages.fit.with.x: [3, 2.5, 3.5, 0]
  metric: { name: loss, goal: minimize, stage: fit }
  max_parallel: 3
  early_stop: { step: 2, min_members: 3 }
`;
    const { sweep, runs, project } = await setup(yaml);
    const result = await sweep({}, { earlyStopPollMs: 50 });
    const [m0, m1, m2, m3] = result.record.members;
    expect([m0!.status, m1!.status, m2!.status]).toEqual(['finished', 'finished', 'finished']);
    expect(m3!.status).toBe('early_stopped');
    // loss at step 2 = (x - 3)² + 0.5 + 1: members 0–2 give 1.5, 1.75, 1.75 (median 1.75); member 3 gives 10.5.
    expect(m3!.early_stop).toEqual({ step: 2, value: 10.5, median: 1.75, over: [0, 1, 2], stopped: true });
    const fit = (await runs()).find((r) => r.id === m3!.stage_runs.fit)!;
    expect(fit.status).toBe('stopped');
    expect(result.status).toBe('finished'); // an early-stopped member is done
    const table = formatSweep(result.record, rankSweep(result.record, new RunStore(project.runsDir)));
    expect(table).toContain('early stopped (median rule):');
  }, 60_000);

  it("members running at once share the hosts: a host with concurrency 1 runs one member's stage at a time", async () => {
    const yaml = `name: q
stages:
  fit: { plugin: quadratic, host: one, with: { steps: 4, delay_ms: 150 } }
sweep:
  parameters:
    stages.fit.with.x: [1, 2]
  max_parallel: 2
`;
    const { dir } = await setup(yaml);
    writeFileSync(join(dir, 'minidalle.config.json'), JSON.stringify({ runs_dir: 'runs', plugins: [FIXTURE_PLUGINS, QUADRATIC], hosts: { one: { kind: 'local', concurrency: 1 } } }));
    const project = await loadProjectConfig(dir);
    const registry = new PluginRegistry();
    for (const file of [FIXTURE_PLUGINS, QUADRATIC]) for (const p of (await import(file)).default as Plugin[]) registry.add(p, file);
    const hosts = ['local', 'one'];
    const base = loadExperiment(join(dir, 'e.yaml'), { registry, projectDir: dir, hosts });
    const plan = planSweep(base, {}, { registry, overrides: [], projectDir: dir, hosts });
    const board = new ProgressBoard({ write: () => true });
    const result = await runSweep(plan, { project, executors: { local: new LocalExecutor(), one: new LocalExecutor() }, board, lockPollMs: 20 });
    expect(result.record.members.map((m) => m.status)).toEqual(['finished', 'finished']);
    const fits = (await new RunStore(project.runsDir).list()).filter((r) => r.stage === 'fit').sort((a, b) => Date.parse(a.started_at!) - Date.parse(b.started_at!));
    expect(fits).toHaveLength(2);
    expect(fits.map((r) => r.host)).toEqual(['one', 'one']);
    expect(Date.parse(fits[1]!.started_at!)).toBeGreaterThanOrEqual(Date.parse(fits[0]!.ended_at!)); // no overlap
  }, 60_000);

  it('minidalle run --sweep and minidalle sweep <id> rank by the metric and goal; --plot writes a PNG', async () => {
    const yaml = `${EXPERIMENT}sweep:
  parameters:
    stages.fit.with.x: [1, 5, 3]
  metric: { name: loss, goal: maximize }
`;
    const { dir } = await setup(yaml);
    const run = cli(dir, ['run', 'e.yaml']);
    expect(run.code, run.stderr).toBe(0);
    const id = /sweep (\w+) \(q\): grid, 3 members/.exec(run.stdout)![1]!;
    const shown = cli(dir, ['sweep', id.slice(0, 9), '--plot', 'plot.png']);
    expect(shown.code, shown.stderr).toBe(0);
    const rows = shown.stdout.split('\n').filter((l) => /^\d+\s+\d+\s+finished/.test(l));
    // maximize: x = 1 and 5 both give (x - 3)² + 1 + 1/2 = 5.5, x = 3 gives 1.5; ties keep member order.
    expect(rows.map((r) => r.split(/\s+/).slice(0, 5))).toEqual([
      ['1', '0', 'finished', '5.500', '1'],
      ['2', '1', 'finished', '5.500', '5'],
      ['3', '2', 'finished', '1.500', '3'],
    ]);
    expect(shown.stdout).toContain('ranked by loss (maximize)');
    expect(readFileSync(join(dir, 'plot.png')).subarray(1, 4).toString()).toBe('PNG');
    // the report of a sweep: the ranking, then each member's run best first
    const report = cli(dir, ['report', id.slice(0, 9), '--out', 'sweep.html']);
    expect(report.code, report.stderr).toBe(0);
    const html = readFileSync(join(dir, 'sweep.html'), 'utf8');
    expect(html).toContain('Sweep ranking');
    expect(html).toMatch(/by loss \(maximize\)/);
    const order = ['#1 · member 0', '#2 · member 1', '#3 · member 2'].map((s) => html.indexOf(s));
    expect(order.every((i) => i > 0)).toBe(true);
    expect([...order].sort((x, y) => x - y)).toEqual(order);
    expect(cli(dir, ['sweep']).stdout).toMatch(new RegExp(`${id}\\s+q\\s+grid\\s+finished\\s+3/3\\s+fit\\.x`));
    const again = cli(dir, ['run', 'e.yaml']);
    expect(again.stdout).toContain(`sweep ${id} (q): finished already`);
    expect(cli(dir, ['run', 'e.yaml', '--rerun']).stderr).toMatch(/--rerun applies to one pipeline, not to a sweep/);
  }, 60_000);
});
