/**
 * What goes wrong on remote hosts, on real sshd hosts in network namespaces: a worker killed alone (a crash,
 * retried on the other host); a worker killed with its host
 * (the stage resumes on the other host from its last synced checkpoint, same run id, every step once); a
 * dropped ssh connection (the detached worker keeps running, the orchestrator re-attaches at its offset).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { start } from '../support/cli.js';
import { expectSteps, history, localProcesses, remoteProject, stageRuns, waitOrDump } from './helpers.js';
import { netnsUnavailable, TestNetwork, type TestHost } from './netns.js';

const missing = netnsUnavailable();
if (missing) console.warn(`tests/remote/failures: 3 tests skipped: ${missing}`);

describe.skipIf(missing !== '')('remote failures', () => {
  let net: TestNetwork;
  let a: TestHost;
  let b: TestHost;
  let env: Record<string, string>;
  beforeAll(async () => {
    net = new TestNetwork();
    a = net.addHost('host-a');
    b = net.addHost('host-b');
    await Promise.all([net.ready(a), net.ready(b)]);
    env = { MINIDALLE_SSH_CONTROL_DIR: join(net.dir, 'ctl') };
  });
  afterAll(() => net?.destroy());

  const inventory = () => ({ hosts: { 'box-a': net.inventoryEntry(a), 'box-b': net.inventoryEntry(b) }, groups: { pair: ['box-a', 'box-b'] } });

  it('a worker killed alone (as by the OOM killer) is a crash, retried on the other host from its last synced step', async () => {
    // first: the next test takes host a away for good
    const dir = remoteProject(inventory(), {
      'count.yaml': `name: count3
stages:
  count:
    plugin: ticker
    host: pair
    retry: { max: 1, backoff: 0 }
    with: { steps: 6, delay_ms: 300 }
`,
    });
    const run = start(dir, ['run', 'count.yaml'], { env });
    await waitOrDump(run, 'two synced steps', () => stageRuns(dir).some((r) => history(r.dir).length >= 2));
    const worker = net.processes(a).find((p) => p.args.includes('cli.js worker'));
    expect(worker, 'the worker runs on host a').toBeDefined();
    process.kill(worker!.pid, 'SIGKILL');
    const done = await run.exited;
    expect(done.code, done.stdout + done.stderr).toBe(0);
    expect(done.stdout).toMatch(/count: attempt 1 on box-a crashed: worker exited with signal SIGKILL; retrying/);
    expect(done.stdout).toMatch(/count: attempt 2 on box-b, resuming from step [2-5]/);
    const [only] = stageRuns(dir);
    expect(only!.record).toMatchObject({ status: 'finished', host: 'box-b', meta: { attempts: 2 } });
    expectSteps(history(only!.dir), 6);
  });

  it('kill -9 of the worker and its host: the stage resumes on the other host, same run id, no gap, no duplicate step', async () => {
    const dir = remoteProject(inventory(), {
      'count.yaml': `name: count
stages:
  count:
    plugin: ticker
    host: pair
    retry: { max: 2, backoff: 0 }
    with: { steps: 10, delay_ms: 300 }
`,
    });
    const run = start(dir, ['run', 'count.yaml'], { env });
    // Wait for checkpoints to have come back to the local store, then take host a away with its worker.
    await waitOrDump(run, 'three synced steps', () => stageRuns(dir).some((r) => history(r.dir).length >= 3));
    const worker = net.processes(a).find((p) => p.args.includes('cli.js worker'));
    expect(worker, 'the worker runs on host a').toBeDefined();
    // the whole host at once, its supervisor with the worker (a worker killed alone first could be reported as
    // a plain crash by its supervisor before the host goes)
    net.killHost(a);
    const done = await run.exited;
    expect(done.code, done.stdout + done.stderr).toBe(0);
    const [only, ...more] = stageRuns(dir);
    expect(more).toHaveLength(0); // one run id for both attempts
    expect(only!.record.status).toBe('finished');
    expect(only!.record.host).toBe('box-b');
    expect(only!.record.meta.attempts).toBe(2);
    expect(done.stdout).toMatch(/count: attempt 1 on box-a crashed: box-a: .*retrying in 0 s \(1\/2\), same run/);
    expect(done.stdout).toMatch(/count: attempt 2 on box-b, resuming from step [3-9]/);
    expect(done.stdout).toMatch(/\[count\] start at step [3-9] in .*host-b\/work\/project \(resumed from run /);
    expectSteps(history(only!.dir), 10);
    expect(readFileSync(join(only!.dir, 'out/result.txt'), 'utf8')).toBe(`10 ${b.workDir}/project\n`);
  });

  it('a killed ssh client does not stop the worker: the orchestrator re-attaches and the stage finishes once', async () => {
    const dir = remoteProject(inventory(), {
      'count.yaml': `name: count2
stages:
  count:
    plugin: ticker
    host: box-b
    with: { steps: 10, delay_ms: 300 }
`,
    });
    const run = start(dir, ['run', 'count.yaml'], { env });
    await waitOrDump(run, 'tick 3', () => run.output().includes('[count] tick 3'));
    const followers = localProcesses((args) => args.startsWith('ssh ') && args.includes(b.address) && args.includes('remote-agent.js follow'));
    expect(followers).toHaveLength(1);
    process.kill(followers[0]!, 'SIGKILL');
    const done = await run.exited;
    expect(done.code, done.stdout + done.stderr).toBe(0);
    expect(done.stdout).toMatch(/box-b: connection lost .*re-attaching at byte \d+/);
    expect(done.stdout).toContain('box-b: re-attached to the worker');
    const [only, ...more] = stageRuns(dir);
    expect(more).toHaveLength(0);
    expect(only!.record.meta.attempts).toBe(1);
    expectSteps(history(only!.dir), 10);
    // One worker, started once, whose every line arrived once.
    const agentDir = join(b.workDir, 'runs', only!.id, '.worker');
    expect(readdirSync(agentDir).filter((f) => f.endsWith('.old'))).toEqual([]);
    const log = readFileSync(join(only!.dir, 'output.log'), 'utf8');
    for (let i = 1; i <= 10; i++) expect(log.split(`tick ${i}\n`).length - 1, `tick ${i}`).toBe(1);
  });

});
