/**
 * A multi-worker TPU slice (a v4-16: two workers) through the real `gcloud` against the fake TPU API, whose node
 * lists two network endpoints that are two network-namespace sshd hosts. Each worker has its own disk at the
 * same path (a bind mount only its sshd sees), as on a real slice. One command stage runs on both workers at
 * once: worker 0's metrics are the history, both workers' lines are in the log, a dropped connection to one
 * worker or a restarted orchestrator re-attaches to each, and a failing worker 1 stops worker 0 and fails the
 * attempt.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { start } from '../support/cli.js';
import { FakeTpuApi } from './fake-tpu.js';
import { fakeTpuEnv, history, localProcesses, remoteProject, stageRuns, waitOrDump } from './helpers.js';
import { netnsUnavailable, TestNetwork, type TestHost } from './netns.js';

const noGcloud = spawnSync('sh', ['-c', 'command -v gcloud']).status === 0 ? '' : 'gcloud (Google Cloud SDK) is not installed';
const missing = netnsUnavailable() || noGcloud;
if (missing) console.warn(`tests/remote/tpu-slice: 2 tests skipped: ${missing}`);

// Every worker runs this: it says which worker it is, logs a metric per step (worker 1's would be 100 more) and
// announces a checkpoint; `--fail-worker I --fail-at N` makes worker I exit with code 7 at step N.
const PROGRAM = `import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
const { values } = parseArgs({ options: { steps: { type: 'string' }, out: { type: 'string' }, 'delay-ms': { type: 'string' }, 'fail-worker': { type: 'string' }, 'fail-at': { type: 'string' } } });
const index = Number(process.env.MINIDALLE_WORKER_INDEX);
console.log(\`hello from worker \${index} of \${process.env.MINIDALLE_WORKER_COUNT}\`);
for (let step = 1; step <= Number(values.steps); step++) {
  await new Promise((r) => setTimeout(r, Number(values['delay-ms'] ?? 0)));
  if (String(index) === values['fail-worker'] && step === Number(values['fail-at'])) process.exit(7);
  console.log(JSON.stringify({ step, loss: index * 100 + step }));
  console.log(\`worker \${index} at step \${step}\`);
  const dir = join(values.out, 'ckpt', \`step-\${step}\`);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'worker.txt'), String(index));
  console.log(JSON.stringify({ checkpoint: dir, step }));
}
writeFileSync(join(values.out, 'final.txt'), \`worker \${index}\`);
`;

const experiment = (name: string, params: string) => `name: ${name}
stages:
  train:
    plugin: command
    host: slice
    with:
      command: [${JSON.stringify(process.execPath)}, slice-program.mjs, --out, "{out_dir}"]
      params: { ${params} }
      param_style: space
      outputs: { final: final.txt }
`;

describe.skipIf(missing !== '')('a multi-worker TPU slice', () => {
  let net: TestNetwork;
  let w0: TestHost;
  let w1: TestHost;
  let api: FakeTpuApi;
  let env: Record<string, string>;
  let dir: string;
  /** The path every worker uses, each on its own disk (`<host>/work` here). */
  let sliceWork: string;
  const disk = (h: TestHost) => join(net.dir, h.name, 'work');

  beforeAll(async () => {
    net = new TestNetwork();
    sliceWork = join(net.dir, 'slice-work');
    mkdirSync(sliceWork);
    w0 = net.addHost('slice-w0', { mounts: [{ source: join(net.dir, 'slice-w0', 'work'), target: sliceWork }] });
    w1 = net.addHost('slice-w1', { mounts: [{ source: join(net.dir, 'slice-w1', 'work'), target: sliceWork }] });
    await Promise.all([net.ready(w0), net.ready(w1)]);
    api = new FakeTpuApi(() => [w0.address, w1.address]);
    const url = await api.start();
    await api.seed('minidalle-test', 'us-central2-b', 'slice', 'v4-16'); // made beforehand, as by tpu/create.sh
    env = fakeTpuEnv(net.dir, url);
    const { kind: _, host: __, ...ssh } = net.inventoryEntry(w0) as Record<string, unknown>;
    dir = remoteProject(
      { hosts: { slice: { ...ssh, kind: 'tpu-vm', zone: 'us-central2-b', project: 'minidalle-test', accelerator_type: 'v4-16', workers: 'all', create: false, work_dir: sliceWork } } },
      {
        'slice-program.mjs': PROGRAM,
        'ok.yaml': experiment('slice-ok', 'steps: 6, delay-ms: 300'),
        // worker 0 would run a minute: a restarted orchestrator that is slow to start on a loaded machine still
        // finds it running, to stop
        'fail.yaml': experiment('slice-fail', 'steps: 300, delay-ms: 200, fail-worker: 1, fail-at: 8'),
      },
    );
  });
  afterAll(async () => {
    await api?.stop();
    net?.destroy();
  });

  it('runs the stage on both workers at once: worker 0 is the history, both are in the log, each has its own stream and exit, and re-attaches per worker', async () => {
    const started = start(dir, ['run', 'ok.yaml'], { env });
    await waitOrDump(started, "worker 1's second step", () => started.output().includes('[worker 1] worker 1 at step 2'));
    // drop the connection that follows worker 1 only
    const followers = localProcesses((args) => args.startsWith('ssh ') && args.includes(w1.address) && args.includes('remote-agent.js follow'));
    expect(followers).toHaveLength(1);
    process.kill(followers[0]!, 'SIGKILL');
    const run = await started.exited;
    expect(run.code, run.stdout + run.stderr).toBe(0);
    const [only, ...more] = stageRuns(dir);
    expect(more).toHaveLength(0);
    expect(only!.record.status).toBe('finished');
    expect(run.stdout).toContain(`slice: the stage runs on 2 workers (${w0.address}, ${w1.address})`);
    // worker 0's metrics and checkpoints only
    expect(run.stdout).toMatch(new RegExp(`slice worker 1 \\(${w1.address.replaceAll('.', '\\.')}\\): connection lost .*re-attaching at byte \\d+`));
    expect(run.stdout).toContain(`slice worker 1 (${w1.address}): re-attached to the worker`);
    expect(history(only!.dir).map((h) => [h._step, (h as unknown as { loss: number }).loss])).toEqual([1, 2, 3, 4, 5, 6].map((s) => [s, s]));
    expect(readFileSync(join(only!.dir, 'checkpoints/step-6/worker.txt'), 'utf8')).toBe('0');
    expect(readFileSync(join(only!.dir, 'out/final.txt'), 'utf8')).toBe('worker 0');
    const log = readFileSync(join(only!.dir, 'output.log'), 'utf8');
    expect(log).toContain('[worker 0] hello from worker 0 of 2');
    expect(log).toContain('[worker 1] hello from worker 1 of 2');
    // worker 1's every line arrived once across the re-attach
    for (let i = 1; i <= 6; i++) expect(log.split(`[worker 1] worker 1 at step ${i}\n`).length - 1, `worker 1 step ${i}`).toBe(1);
    // each worker's own supervisor, stream and exit, on its own disk; nothing in the shared path itself
    for (const h of [w0, w1]) {
      const agent = join(disk(h), 'runs', only!.id, '.worker');
      expect(JSON.parse(readFileSync(join(agent, 'exit.json'), 'utf8'))).toMatchObject({ code: 0 });
      expect(readFileSync(join(agent, 'stream.jsonl'), 'utf8')).toContain(`hello from worker ${h === w0 ? 0 : 1} of 2`);
    }
    expect(readdirSync(sliceWork)).toEqual([]);
    const attachment = JSON.parse(readFileSync(join(only!.dir, 'remote.json'), 'utf8'));
    expect(attachment.target.address).toBe(w0.address);
    expect(attachment.others.map((o: { target: { address: string } }) => o.target.address)).toEqual([w1.address]);
    expect(api.calls()).toContain('GET /v2/projects/minidalle-test/locations/us-central2-b/nodes/slice');
  }, 90_000);

  it('after an orchestrator restart it re-attaches to both workers; a failing worker 1 stops worker 0 and fails the attempt', async () => {
    const first = start(dir, ['run', 'fail.yaml'], { env });
    await waitOrDump(first, "worker 1's second step", () => first.output().includes('[worker 1] worker 1 at step 2'));
    first.child.kill('SIGKILL');
    await first.exited;
    // worker 1 fails (step 8) while no orchestrator follows the slice, or just after the next one re-attached
    const run = await start(dir, ['run', 'fail.yaml'], { env }).exited;
    expect(run.code, run.stdout + run.stderr).toBe(1);
    const failed = stageRuns(dir).find((r) => r.record.name === 'slice-fail/train')!;
    expect(run.stdout).toContain(`train: re-attaching to run ${failed.id} on slice (its orchestrator ended while the worker ran)`);
    expect(failed.record.status).toBe('failed');
    expect(run.stdout).toMatch(new RegExp(`slice: worker 1 \\(${w1.address.replaceAll('.', '\\.')}\\) ended \\(exit code 1\\): stopping the other workers`));
    expect(run.stdout).toMatch(new RegExp(`train: failed: worker 1 \\(${w1.address.replaceAll('.', '\\.')}\\) failed: .* exited with code 7`));
    // worker 0 was stopped gracefully (exit 3) long before its 300 steps
    const agent0 = join(disk(w0), 'runs', failed.id, '.worker');
    expect(JSON.parse(readFileSync(join(agent0, 'exit.json'), 'utf8'))).toMatchObject({ code: 3 });
    expect(history(failed.dir).length).toBeLessThan(300);
    expect(existsSync(join(failed.dir, 'out/final.txt'))).toBe(false);
    const log = readFileSync(join(failed.dir, 'output.log'), 'utf8');
    expect(log).toMatch(/\[worker 1\] error: .* exited with code 7/);
    // both streams were followed on from their saved offsets: each line once
    for (let i = 1; i < 8; i++) expect(log.split(`[worker 1] worker 1 at step ${i}\n`).length - 1, `worker 1 step ${i}`).toBe(1);
    for (let i = 1; i <= 3; i++) expect(log.split(`[worker 0] worker 0 at step ${i}\n`).length - 1, `worker 0 step ${i}`).toBe(1);
  }, 90_000);
});
