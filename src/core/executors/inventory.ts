/** Executors built from the project's host inventory: one per host, `local` always. */
import type { ProjectConfig, SshHostConfig, TpuVmHostConfig } from '../config/project.js';
import { LocalExecutor } from './local.js';
import { RemoteExecutor, type HostAccess, type RemoteSettings } from './remote.js';
import { localPath, sshRun, type SshTarget } from './ssh.js';
import { TpuVmAccess } from './tpu.js';
import type { Executor, HostProbe } from './types.js';

function remoteSettings(h: SshHostConfig | TpuVmHostConfig): RemoteSettings {
  return {
    workDir: h.work_dir,
    env: h.env,
    node: h.node,
    setup: h.setup,
    syncInterval: h.sync_interval,
    reattachTimeout: h.reattach_timeout,
    ...(h.bucket ? { bucket: h.bucket } : {}),
    bucketInterval: h.bucket_interval,
  };
}

export function sshTarget(h: SshHostConfig, projectDir: string): SshTarget {
  return {
    address: h.host,
    port: h.port,
    ...(h.user ? { user: h.user } : {}),
    ...(h.identity_file ? { identityFile: localPath(h.identity_file, projectDir) } : {}),
    ...(h.known_hosts_file ? { knownHostsFile: localPath(h.known_hosts_file, projectDir) } : {}),
    connectTimeout: h.connect_timeout,
  };
}

class SshAccess implements HostAccess {
  constructor(private readonly target: SshTarget) {}
  async targets(): Promise<SshTarget[]> {
    return [this.target];
  }
  async probe(): Promise<HostProbe> {
    const r = await sshRun(this.target, ['true'], { timeoutMs: (this.target.connectTimeout + 10) * 1000 });
    return r.code === 0 ? { answers: true, state: 'ok' } : { answers: false, state: 'unreachable', detail: r.stderr.trim().split('\n').pop() };
  }
}

export function hostAccess(name: string, project: ProjectConfig, log?: (line: string) => void): HostAccess | undefined {
  const h = project.hosts[name];
  if (h?.kind === 'ssh') return new SshAccess(sshTarget(h, project.projectDir));
  if (h?.kind === 'tpu-vm') return new TpuVmAccess(name, h, project.projectDir, log);
  return undefined;
}

export function buildExecutors(project: ProjectConfig, log?: (line: string) => void): Record<string, Executor> {
  const out: Record<string, Executor> = { local: new LocalExecutor() };
  for (const [name, h] of Object.entries(project.hosts)) {
    if (h.kind === 'local') {
      out[name] = new LocalExecutor();
      continue;
    }
    out[name] = new RemoteExecutor(name, remoteSettings(h), hostAccess(name, project, log)!, { projectDir: project.projectDir, runsDir: project.runsDir });
  }
  return out;
}
