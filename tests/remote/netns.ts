/**
 * Test hosts: each one a network namespace (veth pair, 10.x addresses, loopback) running its own sshd with a
 * host key, an authorized key and a config this file writes. The file system is shared with this machine,
 * so each host gets its own work directory. Everything is torn down by `destroy()`, and also when the test
 * process exits; namespaces left by a dead test process are removed on the next start.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT } from '../support/cli.js';

const SSHD = '/usr/sbin/sshd';

/** Why these tests cannot run here (no `ip`, no sshd, not root), or '' when they can. */
export function netnsUnavailable(): string {
  if (process.getuid?.() !== 0) return 'network namespaces need root';
  if (!existsSync(SSHD)) return `${SSHD} is missing (Debian openssh-server)`;
  for (const tool of ['ip', 'ssh', 'rsync', 'ssh-keygen']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) return `${tool} is missing`;
  }
  return '';
}

export interface TestHost {
  name: string;
  ns: string;
  address: string;
  workDir: string;
  /** The veth end on this machine's side (gone with the namespace, unless setup failed half-way). */
  outer: string;
  /**
   * Bind mounts seen only by this host's sshd and its sessions (its own mount namespace): a path that is the
   * same on every worker of a TPU slice but is each worker's own disk.
   */
  mounts: { source: string; target: string }[];
  sshd?: ChildProcess;
}

const ip = (...args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Namespaces named mdt<pid>h<i> whose test process is gone. */
function removeStale(): void {
  for (const line of ip('netns', 'list').split('\n')) {
    const m = /^(mdt(\d+)h\d+)/.exec(line);
    if (m && !alive(Number(m[2]))) killNamespace(m[1]!);
  }
}

function nsPids(ns: string): number[] {
  try {
    return ip('netns', 'pids', ns).split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

function killNamespace(ns: string): void {
  for (const pid of nsPids(ns)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  spawnSync('ip', ['netns', 'del', ns]);
}

export class TestNetwork {
  readonly dir: string;
  readonly key: string;
  readonly knownHosts: string;
  readonly hosts: TestHost[] = [];
  private readonly subnet: number;
  private readonly onExit = () => this.destroySync();

  constructor() {
    removeStale();
    this.dir = mkdtempSync(join(tmpdir(), 'md-remote-'));
    this.key = join(this.dir, 'id_ed25519');
    this.knownHosts = join(this.dir, 'known_hosts');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'minidalle-test', '-f', this.key]);
    this.subnet = 20 + (process.pid % 200);
    mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
    process.once('exit', this.onExit);
  }

  /** A host named `name` at 10.<subnet>.<index>.2, with sshd listening on port 22 there. */
  addHost(name: string, options: { mounts?: { source: string; target: string }[] } = {}): TestHost {
    const i = this.hosts.length + 1;
    const ns = `mdt${process.pid}h${i}`;
    const outer = `mdo${process.pid % 100000}${i}`;
    const inner = `mdi${process.pid % 100000}${i}`;
    const address = `10.${this.subnet}.${i}.2`;
    const host: TestHost = { name, ns, address, outer, workDir: join(this.dir, name, 'work'), mounts: options.mounts ?? [] };
    this.hosts.push(host);
    ip('netns', 'add', ns);
    ip('link', 'add', outer, 'type', 'veth', 'peer', 'name', inner);
    ip('link', 'set', inner, 'netns', ns);
    ip('addr', 'add', `10.${this.subnet}.${i}.1/30`, 'dev', outer);
    ip('link', 'set', outer, 'up');
    ip('-n', ns, 'addr', 'add', `${address}/30`, 'dev', inner);
    ip('-n', ns, 'link', 'set', inner, 'up');
    ip('-n', ns, 'link', 'set', 'lo', 'up');
    const hostDir = join(this.dir, name);
    mkdirSync(host.workDir, { recursive: true });
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(hostDir, 'host_key')]);
    writeFileSync(join(hostDir, 'authorized_keys'), readFileSync(`${this.key}.pub`));
    this.startSshd(host);
    return host;
  }

  startSshd(host: TestHost): void {
    const hostDir = join(this.dir, host.name);
    const config = join(hostDir, 'sshd_config');
    writeFileSync(
      config,
      [
        'Port 22',
        `ListenAddress ${host.address}`,
        `HostKey ${join(hostDir, 'host_key')}`,
        `PidFile ${join(hostDir, 'sshd.pid')}`,
        `AuthorizedKeysFile ${join(hostDir, 'authorized_keys')}`,
        'PermitRootLogin prohibit-password',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'UsePAM no',
        'StrictModes no',
        'PrintMotd no',
        'MaxSessions 50',
        'MaxStartups 50',
        'Subsystem sftp internal-sftp',
        '',
      ].join('\n'),
    );
    // `ip netns exec` gives the command its own mount namespace (with / as a slave): the bind mounts made
    // there stay inside it
    const bindThenSshd = 'sshd=$1 config=$2; shift 2; while [ $# -gt 0 ]; do mount --bind "$1" "$2" || exit 1; shift 2; done; exec "$sshd" -D -e -f "$config"';
    const argv = ['netns', 'exec', host.ns, 'sh', '-c', bindThenSshd, 'sh', SSHD, config, ...host.mounts.flatMap((m) => [m.source, m.target])];
    for (const m of host.mounts) mkdirSync(m.target, { recursive: true });
    host.sshd = spawn('ip', argv, { stdio: ['ignore', 'ignore', 'pipe'] });
    host.sshd.stderr!.on('data', () => {});
  }

  /** Waits until the host's sshd accepts logins. */
  async ready(host: TestHost): Promise<void> {
    for (let t = 0; t < 100; t++) {
      const r = spawnSync('ssh', [...this.sshArgs(), `root@${host.address}`, 'true'], { timeout: 5000 });
      if (r.status === 0) return;
      await new Promise((res) => setTimeout(res, 100));
    }
    throw new Error(`sshd on ${host.address} never answered`);
  }

  /** This machine's end of the host's veth pair: where the host reaches a server the test runs here. */
  outerAddress(host: TestHost): string {
    return `10.${this.subnet}.${this.hosts.indexOf(host) + 1}.1`;
  }

  sshArgs(): string[] {
    return ['-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', '-i', this.key];
  }

  /** Every process of the host (sshd, its sessions, the supervisor and worker), killed: the host is gone. */
  killHost(host: TestHost): void {
    for (const pid of nsPids(host.ns)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }

  /** Processes of the host with their command lines (what `ps` would show). */
  processes(host: TestHost): { pid: number; args: string }[] {
    return nsPids(host.ns).map((pid) => {
      try {
        return { pid, args: readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ') };
      } catch {
        return { pid, args: '' };
      }
    });
  }

  /** A project-config entry for a host. */
  inventoryEntry(host: TestHost, extra: Record<string, unknown> = {}): Record<string, unknown> {
    return {
      kind: 'ssh',
      host: host.address,
      user: 'root',
      identity_file: this.key,
      known_hosts_file: this.knownHosts,
      work_dir: host.workDir,
      node: process.execPath,
      setup: ['ln', '-sfn', join(ROOT, 'node_modules'), 'node_modules'],
      sync_interval: 0.5,
      connect_timeout: 3,
      reattach_timeout: 4,
      ...extra,
    };
  }

  destroySync(): void {
    for (const h of this.hosts) {
      killNamespace(h.ns);
      spawnSync('ip', ['link', 'del', h.outer], { stdio: 'ignore' });
    }
    process.removeListener('exit', this.onExit);
  }

  async destroy(): Promise<void> {
    this.destroySync();
  }
}
