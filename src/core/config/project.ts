import { dirname, resolve } from 'node:path';
import { z } from 'zod';
import { ConfigError, type ConfigProblem } from '../errors.js';
import { zodProblems } from './experiment.js';
import { ANY_HOST, ResourcesSchema } from './stage-placement.js';
import { didYouMean } from './suggest.js';
import { YamlSource } from './yaml-source.js';

const HOST_NAME = /^[a-z][a-z0-9_-]*$/;

/** What every host kind shares: how many stages it runs at once and what it offers to placement. */
const common = {
  description: z.string().optional(),
  concurrency: z.number().int().positive().optional().describe('stages it runs at once (local: max_parallel; remote: 1)'),
  resources: ResourcesSchema.default({}).describe('what the host offers (cpus, memory_gb, accelerator), matched against stages'),
};

/** What remote hosts share: where the project lives there and how the orchestrator talks to it. */
const remote = {
  ...common,
  user: z.string().optional().describe('login user (default: ssh config / current user; tpu-vm: minidalle)'),
  port: z.number().int().min(1).max(65535).default(22),
  identity_file: z.string().optional().describe('private key for ssh (relative to the project directory or ~/)'),
  known_hosts_file: z.string().optional().describe("ssh known_hosts file; default ssh's own (new hosts are accepted once, then checked)"),
  work_dir: z.string().default('minidalle').describe("the project's directory on the host (relative: under the login's home)"),
  env: z.record(z.string(), z.string()).default({}).describe('environment of the remote worker (no secrets here: they travel on stdin)'),
  node: z.string().default('node').describe('Node.js (≥ 20.19) on the host'),
  setup: z
    .array(z.string())
    .min(1)
    .default(['bash', 'scripts/setup.sh'])
    .describe('argument array run in the synced tree on first use (and when package-lock.json changes)'),
  sync_interval: z.number().positive().default(10).describe('seconds between copies of a running stage\'s run directory to the local store'),
  connect_timeout: z.number().int().positive().default(10).describe('ssh ConnectTimeout (seconds)'),
  reattach_timeout: z.number().positive().default(120).describe('seconds to keep trying to re-attach to a running stage before the attempt counts as lost'),
  bucket: z
    .string()
    .regex(/^gs:\/\/[a-z0-9][-a-z0-9_.]{1,220}[a-z0-9](\/[^\s]*)?$/, 'expected a Cloud Storage path: gs://bucket or gs://bucket/prefix')
    .transform((s) => s.replace(/\/+$/, ''))
    .optional()
    .describe("a Cloud Storage path the host writes each running stage's run directory to (gcloud storage rsync, on the host); a retry on any host resumes from the newest checkpoint there"),
  bucket_interval: z.number().positive().default(30).describe("seconds between uploads of a running stage's run directory to the bucket"),
};

export const LocalHostSchema = z.object({ kind: z.literal('local'), ...common }).strict();

export const SshHostSchema = z
  .object({
    kind: z.literal('ssh'),
    host: z.string({ error: 'expected the address or ssh alias of the host (a string; required)' }).min(1).describe('address or ssh alias of the host'),
    ...remote,
  })
  .strict();

export const TpuVmHostSchema = z
  .object({
    kind: z.literal('tpu-vm'),
    name: z.string().regex(/^[a-z]([-a-z0-9]*[a-z0-9])?$/, 'expected a TPU node name: lower-case letters, digits and "-"').optional().describe('TPU node name (default: the host name)'),
    zone: z.string({ error: 'expected the TPU zone, e.g. us-central1-a (required)' }).min(1),
    project: z.string({ error: 'expected the Google Cloud project id (required)' }).min(1).describe('Google Cloud project id'),
    accelerator_type: z.string().default('v3-8'),
    runtime_version: z.string().default('tpu-ubuntu2204-base'),
    spot: z.boolean().default(false),
    preemptible: z.boolean().default(false),
    queued_resources: z.boolean().default(false).describe('create through a queued resource (waits for capacity) instead of nodes create'),
    workers: z.union([z.literal('all'), z.array(z.number().int().min(0)).min(1)]).default('all').describe('workers of the slice that run each stage (all at once, each with the code and setup; worker 0 reports)'),
    recreate_on_preemption: z.boolean().default(false).describe('delete and recreate a PREEMPTED node before retrying on it'),
    create: z.boolean().default(true).describe('create the node when it does not exist'),
    external_ip: z.boolean().default(true).describe("connect to the workers' external IPs (false: internal IPs, from inside the VPC)"),
    ...remote,
  })
  .strict();

export const HostSchema = z.discriminatedUnion('kind', [LocalHostSchema, SshHostSchema, TpuVmHostSchema]);

export type HostConfig = z.output<typeof HostSchema>;
export type SshHostConfig = z.output<typeof SshHostSchema>;
export type TpuVmHostConfig = z.output<typeof TpuVmHostSchema>;

export const ProjectConfigSchema = z
  .object({
    runs_dir: z.string().default('runs').describe('local run store, relative to the project directory'),
    max_parallel: z.number().int().positive().default(2).describe('stages run at once'),
    hosts: z.record(z.string(), HostSchema).default({}).describe('hosts inventory: local, ssh and tpu-vm hosts; `local` always exists'),
    groups: z.record(z.string(), z.array(z.string()).min(1)).default({}).describe('named lists of hosts; a stage whose host is a group runs on a free member'),
    plugins: z.array(z.string()).default([]).describe('npm packages that provide more plugins'),
  })
  .strict();

export type ProjectConfig = z.output<typeof ProjectConfigSchema> & {
  /** Directory of the config file (or the directory searched from). */
  projectDir: string;
  /** The file it came from, if any. */
  file?: string;
  /** Absolute runs directory. */
  runsDir: string;
};

const MODULE = 'minidalle';

/** Problems zod cannot see: names, the reserved `auto`, group members that are not hosts. */
function inventoryProblems(config: z.output<typeof ProjectConfigSchema>): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  const hosts = new Set(['local', ...Object.keys(config.hosts)]);
  for (const [name, host] of Object.entries(config.hosts)) {
    if (!HOST_NAME.test(name)) problems.push({ path: ['hosts', name], message: 'host names are lower-case letters, digits, "_" and "-"' });
    if (name === ANY_HOST) problems.push({ path: ['hosts', name], message: `'${ANY_HOST}' is reserved: a stage with host: ${ANY_HOST} lets the scheduler choose` });
    if (name === 'local' && host.kind !== 'local') problems.push({ path: ['hosts', name, 'kind'], message: "the host named 'local' is this machine: its kind must be local" });
  }
  for (const [name, members] of Object.entries(config.groups)) {
    if (!HOST_NAME.test(name)) problems.push({ path: ['groups', name], message: 'group names are lower-case letters, digits, "_" and "-"' });
    if (hosts.has(name) || name === ANY_HOST) problems.push({ path: ['groups', name], message: `'${name}' is already a host name; a group needs its own name` });
    members.forEach((m, i) => {
      if (!hosts.has(m)) problems.push({ path: ['groups', name, i], message: `unknown host '${m}' (hosts: ${[...hosts].join(', ')})` });
    });
  }
  return problems;
}

const HOST_SCHEMAS = { local: LocalHostSchema, ssh: SshHostSchema, 'tpu-vm': TpuVmHostSchema } as const;

/** An unknown key of a host entry, with the valid keys of that host's kind (zod cannot name them for a union). */
function withHostKeys(p: ConfigProblem, raw: unknown): ConfigProblem {
  const [top, name, key] = p.path;
  if (top !== 'hosts' || p.path.length !== 3 || typeof key !== 'string' || !p.message.startsWith('unknown key')) return p;
  const kind = ((raw as { hosts?: Record<string, { kind?: unknown }> }).hosts?.[String(name)]?.kind ?? '') as string;
  const schema = HOST_SCHEMAS[kind as keyof typeof HOST_SCHEMAS];
  if (!schema) return p;
  const valid = Object.keys(schema.shape);
  return { ...p, message: `unknown key '${key}' for a ${kind} host${didYouMean(key, valid)} (valid keys: ${valid.join(', ')})` };
}

/**
 * Finds the project config with cosmiconfig (`minidalle.config.{ts,js,mjs,json,yaml}`, `.minidallerc*`, or the
 * `minidalle` key of package.json), from `cwd` upwards. No file means the defaults.
 */
export async function loadProjectConfig(cwd = process.cwd()): Promise<ProjectConfig> {
  const { cosmiconfig } = await import('cosmiconfig');
  const explorer = cosmiconfig(MODULE, {
    searchStrategy: 'project',
    searchPlaces: [
      'package.json',
      `.${MODULE}rc`,
      `.${MODULE}rc.json`,
      `.${MODULE}rc.yaml`,
      `.${MODULE}rc.yml`,
      `.${MODULE}rc.js`,
      `.${MODULE}rc.mjs`,
      `${MODULE}.config.js`,
      `${MODULE}.config.mjs`,
      `${MODULE}.config.ts`,
      `${MODULE}.config.json`,
      `${MODULE}.config.yaml`,
      `${MODULE}.config.yml`,
    ],
  });
  let found: Awaited<ReturnType<typeof explorer.search>>;
  try {
    found = await explorer.search(cwd);
  } catch (err) {
    throw new ConfigError([{ path: [], message: `cannot read the project config: ${(err as Error).message.split('\n')[0]}`, location: { file: cwd } }]);
  }
  const raw: unknown = found?.isEmpty ? {} : (found?.config ?? {});
  const parsed = ProjectConfigSchema.safeParse(raw);
  const problems = parsed.success ? inventoryProblems(parsed.data) : zodProblems(parsed.error, ProjectConfigSchema, []).map((p) => withHostKeys(p, raw));
  if (problems.length > 0) {
    const file = found!.filepath;
    // YAML and JSON files can say the line; JS/TS configs only the key.
    const src = /\.(ya?ml|json)$|rc$/.test(file) && !file.endsWith('package.json') ? YamlSource.read(file) : undefined;
    throw new ConfigError(problems.map((p) => ({ ...p, location: src ? src.locate(p.path) : { file } })));
  }
  const data = parsed.data!;
  const projectDir = found ? dirname(found.filepath) : resolve(cwd);
  return { ...data, projectDir, file: found?.filepath, runsDir: resolve(projectDir, data.runs_dir) };
}

/** Host names and group names a stage's `host:` may name (`auto` included). */
export function placementTargets(project: ProjectConfig): string[] {
  return [...new Set(['local', ...Object.keys(project.hosts), ...Object.keys(project.groups), ANY_HOST])];
}
