/**
 * On a real sshd host in a network namespace: a killed orchestrator's next run re-attaches to the detached
 * worker; shell metacharacters in experiment values reach the program as literal arguments; a secret from the
 * orchestrator's environment reaches the stage, but no remote file and no command line.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { filesUnder, ROOT, start } from '../support/cli.js';
import { expectSteps, history, localProcesses, remoteProject, stageRuns, waitOrDump } from './helpers.js';
import { netnsUnavailable, TestNetwork, type TestHost } from './netns.js';

const missing = netnsUnavailable();
if (missing) console.warn(`tests/remote/safety: 2 tests skipped: ${missing}`);

describe.skipIf(missing !== '')('remote safety', () => {
  let net: TestNetwork;
  let b: TestHost;
  let env: Record<string, string>;
  beforeAll(async () => {
    net = new TestNetwork();
    b = net.addHost('host-b');
    await net.ready(b);
    env = { MINIDALLE_SSH_CONTROL_DIR: join(net.dir, 'ctl') };
  });
  afterAll(() => net?.destroy());

  const inventory = () => ({ hosts: { 'box-b': net.inventoryEntry(b) } });

  it('after the orchestrator itself is killed, the next `minidalle run` re-attaches to the running worker', async () => {
    const dir = remoteProject(inventory(), {
      'count.yaml': `name: count3
stages:
  count:
    plugin: ticker
    host: box-b
    with: { steps: 10, delay_ms: 300 }
`,
    });
    const first = start(dir, ['run', 'count.yaml'], { env });
    await waitOrDump(first, 'tick 3', () => first.output().includes('[count] tick 3'));
    first.child.kill('SIGKILL');
    await first.exited;
    const second = start(dir, ['run', 'count.yaml'], { env });
    const done = await second.exited;
    expect(done.code, done.stdout + done.stderr).toBe(0);
    const [only, ...more] = stageRuns(dir);
    expect(more).toHaveLength(0);
    expect(done.stdout).toContain(`count: re-attaching to run ${only!.id} on box-b (its orchestrator ended while the worker ran)`);
    expect(only!.record.status).toBe('finished');
    expectSteps(history(only!.dir), 10);
    expect(readdirSync(join(b.workDir, 'runs', only!.id, '.worker')).filter((f) => f.endsWith('.old'))).toEqual([]);
    const log = readFileSync(join(only!.dir, 'output.log'), 'utf8');
    for (let i = 1; i <= 10; i++) expect(log.split(`tick ${i}\n`).length - 1, `tick ${i}`).toBe(1);
  });

  it('shell metacharacters reach the remote program as literal arguments; a secret reaches the stage but no file or command line', async () => {
    const evil = "'; touch pwned; echo '";
    const subst = '$(id)';
    const secret = 'sk-remote-secret-4b1d93f0';
    const dir = remoteProject(inventory(), {
      'safe.yaml': `name: safe
stages:
  args:
    plugin: command
    host: box-b
    with:
      command: [node, ${JSON.stringify(join(ROOT, 'tests/remote/fixtures/argv.mjs'))}, "{out_dir}/argv.json", ${JSON.stringify(evil)}, ${JSON.stringify(subst)}]
      params: { label: ${JSON.stringify(`${evil}${subst}`)} }
      outputs: { argv: argv.json }
  secret:
    plugin: ticker
    host: box-b
    needs: [args]
    with: { steps: 4, delay_ms: 600, secret_env: MD_TEST_API_KEY }
`,
    });
    const run = start(dir, ['run', 'safe.yaml'], { env: { ...env, MD_TEST_API_KEY: secret } });
    await waitOrDump(run, 'the secret stage runs', () => run.output().includes('[secret] tick 1'));
    // What `ps` shows on the host while the stage runs: no process has the secret on its command line.
    const shown = net.processes(b);
    expect(shown.some((p) => p.args.includes('cli.js worker'))).toBe(true);
    for (const p of shown) expect(p.args).not.toContain(secret);
    for (const pid of localProcesses((args) => args.includes(secret))) expect.fail(`process ${pid} has the secret on its command line`);
    const done = await run.exited;
    expect(done.code, done.stdout + done.stderr).toBe(0);

    const runs = stageRuns(dir);
    const args = runs.find((r) => r.record.stage === 'args')!;
    expect(JSON.parse(readFileSync(join(args.dir, 'out/argv.json'), 'utf8'))).toEqual([evil, subst, `--label=${evil}${subst}`]);
    const pwned = filesUnder(net.dir).filter((f) => f.endsWith('/pwned'));
    expect(pwned).toEqual([]);
    expect(existsSync(join(ROOT, 'pwned'))).toBe(false);

    const secretRun = runs.find((r) => r.record.stage === 'secret')!;
    expect(readFileSync(join(secretRun.dir, 'out/secret.sha256'), 'utf8')).toBe(createHash('sha256').update(secret).digest('hex'));
    const leaks = [...filesUnder(b.workDir).filter((f) => !f.includes('/code/') || f.includes('/code/runs/')), ...filesUnder(dir)].filter((f) => {
      try {
        return readFileSync(f).includes(secret);
      } catch {
        return false;
      }
    });
    expect(leaks).toEqual([]);
  });
});
