/**
 * A shared bucket through the real `gcloud storage` against a fake Cloud Storage JSON API (tests/remote/
 * fake-gcs.ts): two ssh test hosts write a running stage's run directory to gs://minidalle-test/shared with
 * their own gcloud (reaching the fake over their veth peer); the orchestrator copies nothing back while the
 * stage runs (sync_interval: 3600), so when host a dies the only checkpoints are in the bucket, and the retry on
 * host b resumes from the newest one there, with the same run id and every step once.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { filesUnder, start } from '../support/cli.js';
import { loadProjectConfig } from '../../src/core/config/project.js';
import { FakeGcs } from './fake-gcs.js';
import { expectSteps, history, remoteProject, stageRuns, waitOrDump } from './helpers.js';
import { netnsUnavailable, TestNetwork, type TestHost } from './netns.js';

const noGcloud = spawnSync('sh', ['-c', 'command -v gcloud']).status === 0 ? '' : 'gcloud (Google Cloud SDK) is not installed';
const missing = netnsUnavailable() || noGcloud;
if (missing) console.warn(`tests/remote/bucket: 1 test skipped: ${missing}`);

const TOKEN = 'fake-storage-token-for-tests';

describe('the bucket setting', () => {
  it('takes gs://bucket/prefix (a trailing slash goes) and refuses anything else with the file, line and key', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'md-bucket-config-'));
    const write = (bucket: string) => writeFileSync(join(dir, 'minidalle.config.yaml'), `hosts:\n  box:\n    kind: ssh\n    host: 10.0.0.1\n    bucket: ${bucket}\n`);
    write('gs://my-bucket/minidalle/');
    const ok = await loadProjectConfig(dir);
    expect(ok.hosts.box).toMatchObject({ bucket: 'gs://my-bucket/minidalle', bucket_interval: 30 });
    write('s3://my-bucket/x');
    await expect(loadProjectConfig(dir)).rejects.toThrow(/minidalle\.config\.yaml:5.*hosts\.box\.bucket.*expected a Cloud Storage path: gs:\/\/bucket or gs:\/\/bucket\/prefix/s);
  });
});

describe.skipIf(missing !== '')('a shared bucket for remote stages', () => {
  let net: TestNetwork;
  let a: TestHost;
  let b: TestHost;
  let gcs: FakeGcs;
  beforeAll(async () => {
    net = new TestNetwork();
    a = net.addHost('bucket-a');
    b = net.addHost('bucket-b');
    await Promise.all([net.ready(a), net.ready(b)]);
    gcs = new FakeGcs();
    await gcs.start(['127.0.0.1', net.outerAddress(a), net.outerAddress(b)]);
  });
  afterAll(async () => {
    await gcs?.stop();
    net?.destroy();
  });

  it('a retry on another host resumes from the checkpoint the lost host wrote to the bucket', async () => {
    const host = (h: TestHost) => {
      const config = join(net.dir, `gcloud-${h.name}`);
      mkdirSync(config);
      return net.inventoryEntry(h, {
        bucket: 'gs://minidalle-test/shared/',
        bucket_interval: 0.3,
        sync_interval: 3600,
        reattach_timeout: 2,
        // the host's gcloud finds the fake over its veth; its credential comes from the orchestrator, on stdin
        env: { CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE: `http://${net.outerAddress(h)}:${gcs.port}/`, CLOUDSDK_CONFIG: config },
      });
    };
    const orchestratorGcloud = join(net.dir, 'gcloud-orchestrator');
    mkdirSync(orchestratorGcloud);
    const env = {
      MINIDALLE_SSH_CONTROL_DIR: join(net.dir, 'ctl'),
      CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE: `http://127.0.0.1:${gcs.port}/`,
      CLOUDSDK_AUTH_ACCESS_TOKEN: TOKEN,
      CLOUDSDK_CONFIG: orchestratorGcloud,
    };
    const dir = remoteProject(
      { hosts: { 'box-a': host(a), 'box-b': host(b) }, groups: { pair: ['box-a', 'box-b'] } },
      {
        'count.yaml': `name: bucket-count
stages:
  count:
    plugin: ticker
    host: pair
    retry: { max: 1, backoff: 0 }
    with: { steps: 20, delay_ms: 500 }
`,
      },
    );
    const run = start(dir, ['run', 'count.yaml'], { env });
    const runId = () => stageRuns(dir)[0]?.id ?? 'none';
    await waitOrDump(run, 'checkpoint 2 in the bucket', () => gcs.names("minidalle-test", `shared/runs/${runId()}/checkpoints/step-2/`).length === 2); // count.txt and manifest.json
    const worker = net.processes(a).find((p) => p.args.includes('cli.js worker'));
    // failed once on a loaded machine: say where the worker was, and what the run had printed
    const where = () => `host a: ${JSON.stringify(net.processes(a).map((p) => p.args))}\nhost b: ${JSON.stringify(net.processes(b).map((p) => p.args))}\n${run.output()}`;
    expect(worker, `the worker runs on host a\n${where()}`).toBeDefined();
    process.kill(worker!.pid, 'SIGKILL');
    net.killHost(a);
    const done = await run.exited;
    expect(done.code, done.stdout + done.stderr).toBe(0);
    const [only, ...more] = stageRuns(dir);
    expect(more).toHaveLength(0);
    expect(only!.record.status).toBe('finished');
    expect(only!.record.host).toBe('box-b');
    expect(only!.record.meta.attempts).toBe(2);
    // nothing had come back to the local store: the checkpoint came from the bucket
    expect(done.stdout).toMatch(/count: attempt 2 on box-b, from step 0 \(no checkpoint\)/);
    const resumed = /box-b: resuming from the bucket's checkpoint step (\d+) \(gs:\/\/minidalle-test\/shared\/runs\/\w+; the local store had none\)/.exec(done.stdout);
    expect(resumed, done.stdout).not.toBeNull();
    const step = Number(resumed![1]);
    expect(step).toBeGreaterThanOrEqual(2);
    expect(done.stdout).toContain(`[count] start at step ${step} in `);
    expectSteps(history(only!.dir), 20);

    // host b's last upload, after its worker ended: the finished run is in the bucket, without the agent's files
    const names = gcs.names('minidalle-test', `shared/runs/${only!.id}/`);
    expect(names).toContain(`shared/runs/${only!.id}/checkpoints/step-20/manifest.json`);
    expect(names).toContain(`shared/runs/${only!.id}/out/result.txt`);
    expect(names.filter((n) => /\/\.worker\/|\/\.tmp-/.test(n))).toEqual([]);
    // uploads came from the hosts' own gcloud, the look-up and download from the orchestrator's, all with the token
    const uploads = gcs.log.filter((r) => r.path.includes('/upload/'));
    expect(new Set(uploads.map((r) => r.from))).toEqual(new Set([a.address, b.address]));
    expect(gcs.log.filter((r) => r.query.alt === 'media').every((r) => r.from === '127.0.0.1')).toBe(true);
    expect(gcs.log.every((r) => r.authorization === `Bearer ${TOKEN}`)).toBe(true);
    // and no file the hosts or their gcloud wrote holds it (the synced tree holds this test's own source)
    const written = [a, b].flatMap((h) => [join(net.dir, h.name, 'work', 'runs'), join(net.dir, `gcloud-${h.name}`)]).flatMap((d) => filesUnder(d));
    expect(written.length).toBeGreaterThan(10);
    expect(written.filter((f) => readFileSync(f).includes(TOKEN))).toEqual([]);
    console.log(`gcloud storage calls served: ${gcs.callKinds().join('; ')}`);
  }, 90_000);
});
