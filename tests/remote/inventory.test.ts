/** The host inventory's validation (file:line), placement, and the quoting of remote commands. */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadProjectConfig } from '../../src/core/config/project.js';
import { candidates, Placer } from '../../src/core/executors/placement.js';
import { mapPaths } from '../../src/core/executors/remote.js';
import { remoteCommand, sshOptions } from '../../src/core/executors/ssh.js';
import { cli, ROOT } from '../support/cli.js';
import { REMOTE_PLUGINS } from './helpers.js';

function projectWith(yaml: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'md-inventory-'));
  writeFileSync(join(dir, 'minidalle.config.yaml'), yaml);
  return dir;
}

async function problems(yaml: string): Promise<string> {
  const dir = projectWith(yaml);
  try {
    await loadProjectConfig(dir);
  } catch (err) {
    return (err as Error).message.replaceAll(dir, '<dir>');
  }
  throw new Error('expected the config to be refused');
}

const HOSTS = `hosts:
  tpu-a: { kind: tpu-vm, zone: us-central1-a, project: p, identity_file: key, resources: { accelerator: tpu-v3-8 } }
  tpu-b: { kind: tpu-vm, zone: us-central1-a, project: p, identity_file: key, resources: { accelerator: tpu-v3-8 } }
  box: { kind: ssh, host: 10.0.0.5, resources: { cpus: 64 } }
groups:
  tpus: [tpu-a, tpu-b]
`;

describe('host inventory', () => {
  it('refuses bad entries with file:line and the key', async () => {
    expect(await problems('hosts:\n  a:\n    kind: ssh\n    port: 22\n')).toMatch(/<dir>\/minidalle\.config\.yaml:2:\d+: hosts\.a\.host: expected the address or ssh alias of the host/);
    expect(await problems('hosts:\n  a:\n    kind: sssh\n    host: x\n')).toMatch(/minidalle\.config\.yaml:\d+:\d+: hosts\.a(\.kind)?: /);
    expect(await problems('hosts:\n  a: { kind: ssh, host: x, prot: 22 }\n')).toMatch(/minidalle\.config\.yaml:2:\d+: hosts\.a\.prot: unknown key 'prot' for a ssh host — did you mean 'port'\? \(valid keys: kind, host, /);
    expect(await problems('hosts:\n  a: { kind: ssh, host: x }\ngroups:\n  g: [a, b]\n')).toMatch(/minidalle\.config\.yaml:4:\d+: groups\.g\[1\]: unknown host 'b'/);
    expect(await problems('hosts:\n  auto: { kind: ssh, host: x }\n')).toMatch(/minidalle\.config\.yaml:2:\d+: hosts\.auto: 'auto' is reserved/);
    expect(await problems('hosts:\n  t: { kind: tpu-vm, zone: z, project: p, name: Bad_Name }\n')).toMatch(/minidalle\.config\.yaml:2:\d+: hosts\.t\.name: expected a TPU node name/);
  });

  it('places stages by host, group or resources, and refuses a stage no host can run', async () => {
    const project = await loadProjectConfig(projectWith(HOSTS));
    expect(candidates(project, 's', { plugin: 'x', needs: [], with: {}, host: 'tpus' })).toEqual(['tpu-a', 'tpu-b']);
    expect(candidates(project, 's', { plugin: 'x', needs: [], with: {}, host: 'auto', resources: { accelerator: 'tpu-v3-8' } })).toEqual(['tpu-a', 'tpu-b']);
    expect(candidates(project, 's', { plugin: 'x', needs: [], with: {}, host: 'auto', resources: { cpus: 48 } })).toEqual(['box']);
    expect(() => candidates(project, 's', { plugin: 'x', needs: [], with: {}, host: 'box', resources: { accelerator: 'tpu-v3-8' } })).toThrow(
      /stage 's' \(host: box\) has no host offering its resources: box: accelerator tpu-v3-8 \(has none\)/,
    );
    // Two stages on the group run at once, one per VM; a third waits.
    const placer = new Placer(project);
    const stage = { plugin: 'x', needs: [], with: {}, host: 'tpus' };
    expect([placer.take('a', stage), placer.take('b', stage), placer.take('c', stage)]).toEqual(['tpu-a', 'tpu-b', undefined]);
    placer.release('tpu-a');
    expect(placer.take('c', stage, new Set(['tpu-a']))).toBe('tpu-a'); // avoided, but the only free one
  });

  it('validate prints the placement and refuses an impossible one', () => {
    const dir = projectWith(`${HOSTS}plugins: [${JSON.stringify(REMOTE_PLUGINS)}]\n`);
    writeFileSync(join(dir, 'e.yaml'), 'name: e\nstages:\n  a: { plugin: ticker, host: tpus }\n  b: { plugin: ticker, resources: { cpus: 32 } }\n  c: { plugin: ticker }\n');
    const ok = cli(dir, ['validate', 'e.yaml']);
    expect(ok.stdout).toMatch(/placement:\n\s+a: first free of tpu-a, tpu-b \(tpu-vm\)\n\s+b: box \(ssh\)\n\s+c: local \(local\)/);
    writeFileSync(join(dir, 'bad.yaml'), 'name: e\nstages:\n  a: { plugin: ticker, resources: { accelerator: tpu-v4-8 } }\n');
    const bad = cli(dir, ['validate', 'bad.yaml']);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/stage 'a' \(host: auto\) has no host offering its resources: local: accelerator tpu-v4-8 \(has none\); tpu-a: accelerator tpu-v4-8 \(has tpu-v3-8\)/);
    writeFileSync(join(dir, 'typo.yaml'), 'name: e\nstages:\n  a: { plugin: ticker, host: tpu-c }\n');
    expect(cli(dir, ['validate', 'typo.yaml']).stderr).toMatch(/typo\.yaml:3:\d+: stages\.a\.host: unknown host 'tpu-c' — did you mean 'tpu-a'\? \(hosts: local, tpu-a, tpu-b, box, tpus, auto/);
  });
});

describe('tpu/ and the two-VM plan', () => {
  it('experiments/two-vm-pipeline.yaml validates against tpu/hosts.example.yaml: VQGAN and encoding on tpu-a, DalleBart on tpu-b', () => {
    const dir = mkdtempSync(join(tmpdir(), 'md-two-vm-'));
    writeFileSync(join(dir, 'minidalle.config.yaml'), readFileSync(join(ROOT, 'tpu/hosts.example.yaml')));
    const r = cli(dir, ['validate', join(ROOT, 'experiments/two-vm-pipeline.yaml')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/placement:\n\s+vqgan: tpu-a \(tpu-vm\)\n\s+encode: tpu-a \(tpu-vm\)\n\s+seq2seq: tpu-b \(tpu-vm\)/);
  });

  it('the tpu scripts parse, and read their settings from hosts.example.yaml', () => {
    for (const s of ['create', 'setup', 'check', 'delete']) execFileSync('bash', ['-n', join(ROOT, `tpu/${s}.sh`)]);
    const vars = execFileSync(process.execPath, [join(ROOT, 'tpu/hosts.mjs'), 'tpu-b'], { encoding: 'utf8' });
    expect(vars).toContain("NAME='minidalle-tpu-b'");
    expect(vars).toContain("ACCEL='v3-8'");
    expect(vars).toContain("SPOT='spot'");
  });
});

describe('remote commands', () => {
  it('quotes every word so the remote shell gives the program exactly the argument array', () => {
    const argv = ['printf', '%s\\n', "'; touch pwned; echo '", '$(id)', '`id`', 'a b', '', '"q"', '\\', '*', 'x\ny', 'ünï'];
    const out = execFileSync('sh', ['-c', remoteCommand(argv)], { cwd: mkdtempSync(join(tmpdir(), 'md-quote-')), encoding: 'utf8' });
    expect(out).toBe(`${argv.slice(2).join('\n')}\n`);
  });

  it('uses BatchMode, ConnectTimeout, ServerAliveInterval and a multiplexed connection on a short %C ControlPath', () => {
    const o = sshOptions({ address: 'h', port: 2222, connectTimeout: 7, identityFile: '/k' }).join(' ');
    for (const want of ['BatchMode=yes', 'ConnectTimeout=7', 'ServerAliveInterval=5', 'ControlMaster=auto', 'ControlPersist=300s', 'StrictHostKeyChecking=accept-new', '-i /k', '-p 2222']) expect(o).toContain(want);
    expect(o).toMatch(/ControlPath=\S{1,60}\/%C/);
  });

  it('maps local paths of a stage spec to the host, longest prefix first', () => {
    const spec = { runsDir: '/p/runs', projectDir: '/p', config: { data: '/p/runs/abc/out/x.tar', other: '/px/y', rel: 'data/z' } };
    expect(mapPaths(spec, [['/p', '/w/project'], ['/p/runs', '/w/runs']])).toEqual({ runsDir: '/w/runs', projectDir: '/w/project', config: { data: '/w/runs/abc/out/x.tar', other: '/px/y', rel: 'data/z' } });
  });
});
