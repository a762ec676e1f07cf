/**
 * Two ssh hosts (network namespaces with their own sshd): a two-stage pipeline runs one stage on each, the
 * remote output streams into the orchestrator's console while the stage runs, and the outputs come back to the
 * local store; the second stage reads the first one's artifact from a third place (its own host).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, start } from '../support/cli.js';
import { expectSteps, history, remoteProject, stageRuns, waitOrDump } from './helpers.js';
import { netnsUnavailable, TestNetwork, type TestHost } from './netns.js';

const missing = netnsUnavailable();
if (missing) console.warn(`tests/remote/ssh-pipeline: 1 test skipped: ${missing}`);

describe.skipIf(missing !== '')('ssh hosts', () => {
  let net: TestNetwork;
  let a: TestHost;
  let b: TestHost;
  beforeAll(async () => {
    net = new TestNetwork();
    a = net.addHost('host-a');
    b = net.addHost('host-b');
    await Promise.all([net.ready(a), net.ready(b)]);
  });
  afterAll(() => net?.destroy());

  it('runs one stage on each host, streams the logs live, brings the outputs back', async () => {
    const dir = remoteProject(
      { hosts: { 'box-a': net.inventoryEntry(a), 'box-b': net.inventoryEntry(b) } },
      {
        'two.yaml': `name: two
stages:
  first:
    plugin: ticker
    host: box-a
    with: { steps: 6, delay_ms: 300 }
  second:
    plugin: ticker
    host: box-b
    needs: [first]
    with: { steps: 2, upstream: "\${stages.first.artifacts.result}" }
`,
      },
    );
    const env = { MINIDALLE_SSH_CONTROL_DIR: join(net.dir, 'ctl') };
    const hosts = cli(dir, ['hosts'], env);
    expect(hosts.stdout, hosts.stderr).toMatch(/box-a\s+ssh\s+root@10\.\d+\.1\.2\s+yes\s+ok/);
    expect(hosts.stdout).toMatch(/box-b\s+ssh\s+root@10\.\d+\.2\.2\s+yes\s+ok/);
    const validate = cli(dir, ['validate', 'two.yaml'], env);
    expect(validate.stdout).toMatch(/placement:\n\s+first: box-a \(ssh\)\n\s+second: box-b \(ssh\)/);

    const run = start(dir, ['run', 'two.yaml'], { env });
    let exited = false;
    void run.exited.then(() => (exited = true));
    // Live: the remote worker's second line is on the console while the stage still runs.
    await waitOrDump(run, 'tick 2 on the console', () => run.output().includes('[first] tick 2'));
    expect(exited).toBe(false);
    expect(run.output()).not.toContain('[first] tick 6');
    expect(stageRuns(dir).find((r) => r.record.stage === 'first')?.record.status).toBe('running');
    const done = await run.exited;
    expect(done.code, done.stdout + done.stderr).toBe(0);

    const runs = stageRuns(dir);
    const first = runs.find((r) => r.record.stage === 'first')!;
    const second = runs.find((r) => r.record.stage === 'second')!;
    expect(first.record.host).toBe('box-a');
    expect(second.record.host).toBe('box-b');
    // The outputs are local now, written by the worker on each host (its cwd is that host's copy of the project).
    const firstResult = readFileSync(join(first.dir, 'out/result.txt'), 'utf8');
    expect(firstResult).toBe(`6 ${a.workDir}/project\n`);
    expect(readFileSync(join(second.dir, 'out/result.txt'), 'utf8')).toBe(`2 ${b.workDir}/project\n`);
    expect(readFileSync(join(second.dir, 'out/upstream.txt'), 'utf8')).toBe(firstResult);
    expectSteps(history(first.dir), 6);
    expect(readFileSync(join(first.dir, 'output.log'), 'utf8')).toContain('tick 6');
    // The code went over at this commit, and the setup ran once per host.
    expect(readFileSync(join(a.workDir, 'code/.minidalle-commit'), 'utf8')).toMatch(/^[0-9a-f]{40}/);
  });
});
