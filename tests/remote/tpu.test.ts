/**
 * TPU VMs with the real `gcloud` CLI against a fake TPU v2 API (tests/remote/fake-tpu.ts) whose node endpoint
 * is a network-namespace host with its own sshd. The node is created by the executor (spot, the project's key
 * in ssh-keys), preempted mid-stage (PREEMPTED, and its host dies), deleted and recreated; the stage resumes
 * on the new VM from its last synced checkpoint with the same run id.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, start } from '../support/cli.js';
import { TpuVmHostSchema } from '../../src/core/config/project.js';
import { TpuVmAccess } from '../../src/core/executors/tpu.js';
import { FakeTpuApi } from './fake-tpu.js';
import { expectSteps, fakeTpuEnv, history, remoteProject, stageRuns, waitOrDump } from './helpers.js';
import { netnsUnavailable, TestNetwork, type TestHost } from './netns.js';

const noGcloud = spawnSync('sh', ['-c', 'command -v gcloud']).status === 0 ? '' : 'gcloud (Google Cloud SDK) is not installed';
const missing = netnsUnavailable() || noGcloud;
if (missing) console.warn(`tests/remote/tpu: 1 test skipped: ${missing}`);
if (noGcloud) console.warn(`tests/remote/tpu: 1 more test skipped: ${noGcloud}`);

describe.skipIf(noGcloud !== '')('tpu-vm queued resources through gcloud', () => {
  it('creates through a queued resource, waits for its node instead of asking again, deletes it with the queued resource', async () => {
    const api = new FakeTpuApi(() => '10.250.0.2');
    const url = await api.start();
    const saved = { ...process.env };
    Object.assign(process.env, { CLOUDSDK_API_ENDPOINT_OVERRIDES_TPU: url, CLOUDSDK_AUTH_ACCESS_TOKEN: 'fake-token-qr', CLOUDSDK_CONFIG: mkdtempSync(join(tmpdir(), 'md-gcloud-')) });
    try {
      const dir = mkdtempSync(join(tmpdir(), 'md-qr-'));
      execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'key')]);
      const cfg = TpuVmHostSchema.parse({ kind: 'tpu-vm', name: 'tpu-q', zone: 'us-central1-a', project: 'p', spot: true, queued_resources: true, identity_file: join(dir, 'key') });
      const access = new TpuVmAccess('tpu-q', cfg, dir);
      const [target, ...more] = await access.targets();
      expect(more).toEqual([]);
      expect(target).toMatchObject({ address: '10.250.0.2', user: 'minidalle', ephemeral: true });
      const base = '/v2/projects/p/locations/us-central1-a';
      // gcloud reads the queued resource back after creating it; then the executor polls the node until it is READY.
      expect(api.calls()).toEqual([`GET ${base}/nodes/tpu-q`, `POST ${base}/queuedResources?queuedResourceId=tpu-q`, `GET ${base}/queuedResources/tpu-q`, `GET ${base}/nodes/tpu-q`, `GET ${base}/nodes/tpu-q`]);
      expect(api.log[1]!.body).toMatchObject({ spot: {}, tpu: { nodeSpec: [{ nodeId: 'tpu-q', node: { acceleratorType: 'v3-8', metadata: { 'ssh-keys': expect.stringMatching(/^minidalle:ssh-ed25519 /) } } }] } });
      await access.delete();
      expect(api.calls().at(-1)).toBe(`DELETE ${base}/queuedResources/tpu-q?force=True`);
      expect(api.nodes.size).toBe(0);
    } finally {
      process.env = saved;
      await api.stop();
    }
  }, 60_000);
});

describe.skipIf(missing !== '')('tpu-vm hosts through gcloud', () => {
  let net: TestNetwork;
  let vm: TestHost;
  let api: FakeTpuApi;
  let env: Record<string, string>;
  beforeAll(async () => {
    net = new TestNetwork();
    vm = net.addHost('tpu-a-vm');
    await net.ready(vm);
    // A created (or recreated) node is a host whose sshd answers.
    api = new FakeTpuApi(
      () => vm.address,
      async () => {
        if (net.processes(vm).length === 0) net.startSshd(vm);
        await net.ready(vm);
      },
    );
    const url = await api.start();
    env = fakeTpuEnv(net.dir, url);
  });
  afterAll(async () => {
    await api?.stop();
    net?.destroy();
  });

  it('creates the node, and after a preemption deletes, recreates and resumes on it with the same run id', async () => {
    const { kind: _, host: __, ...ssh } = net.inventoryEntry(vm) as Record<string, unknown>;
    const dir = remoteProject(
      { hosts: { 'tpu-a': { ...ssh, kind: 'tpu-vm', zone: 'us-central1-a', project: 'minidalle-test', accelerator_type: 'v3-8', spot: true, recreate_on_preemption: true, resources: { accelerator: 'tpu-v3-8' } } } },
      {
        'train.yaml': `name: tpu-train
stages:
  train:
    plugin: ticker
    resources: { accelerator: tpu-v3-8 }
    retry: { max: 1, backoff: 0 }
    with: { steps: 8, delay_ms: 300 }
`,
      },
    );
    expect(cli(dir, ['validate', 'train.yaml'], env).stdout).toMatch(/placement:\n\s+train: tpu-a \(tpu-vm\)/);
    const run = start(dir, ['run', 'train.yaml'], { env });
    await waitOrDump(run, 'three synced steps', () => stageRuns(dir).some((r) => history(r.dir).length >= 3), 90_000);
    api.preempt('tpu-a');
    net.killHost(vm);
    const done = await run.exited;
    expect(done.code, done.stdout + done.stderr).toBe(0);
    expect(done.stdout).toMatch(/train: attempt 1 on tpu-a crashed: tpu-a: TPU tpu-a is PREEMPTED/);
    expect(done.stdout).toContain('tpu-a: deleting TPU tpu-a');
    const [only, ...more] = stageRuns(dir);
    expect(more).toHaveLength(0);
    expect(only!.record.status).toBe('finished');
    expect(only!.record.meta.attempts).toBe(2);
    expectSteps(history(only!.dir), 8);

    // gcloud's own calls, as the fake server received them.
    const calls = api.calls();
    const node = '/v2/projects/minidalle-test/locations/us-central1-a/nodes';
    expect(calls.filter((c) => c === `POST ${node}?nodeId=tpu-a`)).toHaveLength(2);
    expect(calls).toContain(`DELETE ${node}/tpu-a`);
    expect(calls).toContain(`GET ${node}/tpu-a`);
    expect(calls.indexOf(`DELETE ${node}/tpu-a`)).toBeGreaterThan(calls.indexOf(`POST ${node}?nodeId=tpu-a`));
    const create = api.log.find((r) => r.method === 'POST')!;
    expect(create.authorization).toBe('Bearer fake-access-token-for-tests');
    expect(create.body).toMatchObject({ acceleratorType: 'v3-8', runtimeVersion: 'tpu-ubuntu2204-base', schedulingConfig: { spot: true } });
    const pub = readFileSync(`${net.key}.pub`, 'utf8').trim();
    expect((create.body as { metadata: Record<string, string> }).metadata['ssh-keys']).toBe(`root:${pub}`);

    // Not cli(): its spawnSync would block the fake API that gcloud asks.
    const hosts = await start(dir, ['hosts'], { env }).exited;
    expect(hosts.stdout, hosts.stderr).toMatch(/tpu-a\s+tpu-vm\s+tpu tpu-a \(v3-8, us-central1-a, minidalle-test, spot\)\s+yes\s+READY/);
  }, 150_000);
});
