/**
 * TPU VMs through the `gcloud compute tpus tpu-vm …` CLI the user is already logged in with: describe, create
 * (spot/preemptible, the project's own public key in the node's `ssh-keys` metadata, or through a queued
 * resource), delete. Commands and file sync then go over plain OpenSSH to the node's network endpoints, as
 * SkyPilot does (`gcloud … tpu-vm ssh` would also need the Compute API and OS Login).
 */
import { readFileSync } from 'node:fs';
import { execa } from 'execa';
import type { TpuVmHostConfig } from '../config/project.js';
import { HostUnavailable, type HostAccess } from './remote.js';
import { localPath, sshRun, type SshTarget } from './ssh.js';
import type { HostProbe } from './types.js';

export interface TpuNode {
  name: string;
  state?: string;
  acceleratorType?: string;
  createTime?: string;
  networkEndpoints?: { ipAddress?: string; port?: number; accessConfig?: { externalIp?: string } }[];
}

/** States in which the node will not come back by itself: it has to be deleted (and recreated). */
const GONE_STATES = new Set(['PREEMPTED', 'TERMINATED', 'STOPPED', 'STOPPING', 'HIDDEN', 'HIDING']);
const READY_WAIT_MS = 20 * 60_000;

/** gcloud's error without its `ERROR: (gcloud.…)` prefix and advice paragraphs: the first sentence, on one line. */
export function gcloudMessage(stderr: string): string {
  const text = stderr.replace(/^ERROR: \(gcloud[^)]*\)\s*/m, '').trim();
  const first = text.split(/\n\s*\n/)[0]!.replace(/\s+/g, ' ');
  return first.length > 200 ? `${first.slice(0, 197)}…` : first || 'no message';
}

export class GcloudError extends Error {
  override name = 'GcloudError';
}

export class TpuVmAccess implements HostAccess {
  readonly node: string;

  constructor(
    readonly host: string,
    private readonly cfg: TpuVmHostConfig,
    private readonly projectDir: string,
    private readonly log: (line: string) => void = () => {},
  ) {
    this.node = cfg.name ?? host;
  }

  private where(): string[] {
    return [`--zone=${this.cfg.zone}`, `--project=${this.cfg.project}`];
  }

  private async gcloud(args: string[]): Promise<{ code: number | undefined; stdout: string; stderr: string }> {
    const r = await execa('gcloud', [...args, ...this.where(), '--quiet'], { reject: false, stdin: 'ignore', env: { CLOUDSDK_CORE_DISABLE_PROMPTS: '1' } });
    return { code: r.exitCode, stdout: String(r.stdout), stderr: String(r.stderr) };
  }

  /** The node, or undefined when it does not exist. */
  async describe(): Promise<TpuNode | undefined> {
    const r = await this.gcloud(['compute', 'tpus', 'tpu-vm', 'describe', this.node, '--format=json']);
    if (r.code === 0) return JSON.parse(r.stdout) as TpuNode;
    if (/NOT_FOUND|not found|404/i.test(r.stderr)) return undefined;
    throw new GcloudError(`gcloud compute tpus tpu-vm describe ${this.node} failed: ${gcloudMessage(r.stderr)}`);
  }

  private user(): string {
    return this.cfg.user ?? 'minidalle';
  }

  private publicKey(): string {
    if (!this.cfg.identity_file) throw new GcloudError(`host ${this.host}: identity_file is needed so the node is created with its public key`);
    const file = `${localPath(this.cfg.identity_file, this.projectDir)}.pub`;
    try {
      return readFileSync(file, 'utf8').trim();
    } catch {
      throw new GcloudError(`host ${this.host}: cannot read ${file} (the public half of identity_file)`);
    }
  }

  /** The create command (`queued_resources: true`: through a queued resource, which waits for spot capacity). */
  createArgs(): string[] {
    const sshKeys = `ssh-keys=${this.user()}:${this.publicKey()}`;
    const scheduling = [...(this.cfg.spot ? ['--spot'] : []), ...(this.cfg.preemptible && !this.cfg.spot ? ['--preemptible'] : [])];
    if (this.cfg.queued_resources) {
      return ['compute', 'tpus', 'queued-resources', 'create', this.node, `--node-id=${this.node}`, `--accelerator-type=${this.cfg.accelerator_type}`, `--runtime-version=${this.cfg.runtime_version}`, ...scheduling, `--metadata=${sshKeys}`];
    }
    return ['compute', 'tpus', 'tpu-vm', 'create', this.node, `--accelerator-type=${this.cfg.accelerator_type}`, `--version=${this.cfg.runtime_version}`, ...scheduling, `--metadata=${sshKeys}`];
  }

  async create(): Promise<void> {
    this.log(`${this.host}: creating TPU ${this.node} (${this.cfg.accelerator_type}${this.cfg.spot ? ', spot' : this.cfg.preemptible ? ', preemptible' : ''})`);
    const r = await this.gcloud(this.createArgs());
    if (r.code !== 0) throw new HostUnavailable(`cannot create TPU ${this.node}: ${gcloudMessage(r.stderr)}`);
  }

  async delete(): Promise<void> {
    this.log(`${this.host}: deleting TPU ${this.node}`);
    const r = this.cfg.queued_resources
      ? await this.gcloud(['compute', 'tpus', 'queued-resources', 'delete', this.node, '--force'])
      : await this.gcloud(['compute', 'tpus', 'tpu-vm', 'delete', this.node]);
    if (r.code !== 0 && !/NOT_FOUND|not found/i.test(r.stderr)) throw new HostUnavailable(`cannot delete TPU ${this.node}: ${gcloudMessage(r.stderr)}`);
  }

  /** A READY node: creates a missing one and replaces a preempted one when the inventory allows it. */
  private async ready(): Promise<TpuNode> {
    const deadline = Date.now() + READY_WAIT_MS;
    // A queued resource's node appears only once capacity is found: after asking, wait for it instead of asking again.
    let requested = false;
    for (;;) {
      const node = await this.describe();
      if (!node && !requested) {
        if (!this.cfg.create) throw new HostUnavailable(`TPU ${this.node} does not exist (create it with tpu/create.sh, or set create: true)`);
        await this.create();
        requested = true;
        continue;
      }
      if (node?.state === 'READY') return node;
      if (node && GONE_STATES.has(node.state ?? '')) {
        if (!this.cfg.recreate_on_preemption) throw new HostUnavailable(`TPU ${this.node} is ${node.state} (set recreate_on_preemption: true to replace it)`);
        await this.delete();
        await this.create();
        requested = true;
        continue;
      }
      if (Date.now() > deadline) throw new HostUnavailable(`TPU ${this.node} is still ${node?.state ?? 'not created'} after ${READY_WAIT_MS / 60_000} min`);
      await new Promise((r) => setTimeout(r, 5000));
    }
  }

  private targetsOf(node: TpuNode): SshTarget[] {
    const endpoints = node.networkEndpoints ?? [];
    const chosen = this.cfg.workers === 'all' ? endpoints : this.cfg.workers.map((i) => endpoints[i]).filter((e) => e !== undefined);
    if (chosen.length === 0) throw new HostUnavailable(`TPU ${this.node} lists no network endpoints for workers ${JSON.stringify(this.cfg.workers)}`);
    return chosen.map((e) => {
      const address = this.cfg.external_ip ? e.accessConfig?.externalIp : e.ipAddress;
      if (!address) throw new HostUnavailable(`TPU ${this.node}: an endpoint has no ${this.cfg.external_ip ? 'external' : 'internal'} IP`);
      return {
        address,
        port: this.cfg.port,
        user: this.user(),
        ...(this.cfg.identity_file ? { identityFile: localPath(this.cfg.identity_file, this.projectDir) } : {}),
        ephemeral: true,
        instance: node.createTime ?? '',
        connectTimeout: this.cfg.connect_timeout,
      } satisfies SshTarget;
    });
  }

  async targets(): Promise<SshTarget[]> {
    return this.targetsOf(await this.ready());
  }

  async whyLost(): Promise<string | undefined> {
    const node = await this.describe();
    if (!node) return `TPU ${this.node} no longer exists`;
    if (GONE_STATES.has(node.state ?? '')) return `TPU ${this.node} is ${node.state}`;
    return undefined;
  }

  async probe(): Promise<HostProbe> {
    let node: TpuNode | undefined;
    try {
      node = await this.describe();
    } catch (err) {
      return { answers: false, state: 'UNKNOWN', detail: (err as Error).message };
    }
    if (!node) return { answers: false, state: 'NOT_FOUND' };
    if (node.state !== 'READY') return { answers: false, state: node.state ?? 'UNKNOWN' };
    const [t] = this.targetsOf(node);
    const r = await sshRun(t!, ['true'], { timeoutMs: (t!.connectTimeout + 10) * 1000 });
    return { answers: r.code === 0, state: 'READY', detail: r.code === 0 ? t!.address : r.stderr.trim() };
  }
}
