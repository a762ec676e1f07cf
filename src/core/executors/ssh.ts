/**
 * Talking to a remote host with the system OpenSSH and rsync (as SkyPilot and Ray do): argument arrays through
 * execa, the remote command quoted word by word for the remote shell, one multiplexed connection per host
 * (ControlMaster/ControlPersist on a short `%C` ControlPath), BatchMode (never a password prompt),
 * ConnectTimeout and ServerAliveInterval so a dead link is noticed within seconds.
 */
import { mkdirSync } from 'node:fs';
import { homedir, userInfo } from 'node:os';
import { isAbsolute, resolve } from 'node:path';
import { execa, type ResultPromise } from 'execa';

export interface SshTarget {
  /** Address or ssh alias. */
  address: string;
  user?: string;
  port: number;
  identityFile?: string;
  knownHostsFile?: string;
  /** Host keys are not checked (TPU VMs: every recreated node has a new key at a reused address). */
  ephemeral?: boolean;
  /** Which machine answers at the address (a recreated TPU node has a new one): what was synced there is per instance. */
  instance?: string;
  connectTimeout: number;
}

/** Short and per user: a unix socket path must stay under ~104 bytes, and `%C` (a 40-hex hash) goes inside. */
export function controlDir(): string {
  const dir = process.env.MINIDALLE_SSH_CONTROL_DIR ?? `/tmp/minidalle-ssh-${userInfo().uid}`;
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return dir;
}

/** `~/x` and project-relative paths of the inventory as absolute local paths. */
export function localPath(p: string, projectDir: string): string {
  if (p === '~' || p.startsWith('~/')) return resolve(homedir(), p.slice(2));
  return isAbsolute(p) ? p : resolve(projectDir, p);
}

/** Quotes one word for a POSIX shell: `it's` → `'it'\''s'`. Nothing inside single quotes is special. */
export function shellQuote(word: string): string {
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(word)) return word;
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/** An argument array as one remote command line (sshd hands it to the login shell, which splits it back). */
export function remoteCommand(argv: readonly string[]): string {
  return argv.map(shellQuote).join(' ');
}

/** ssh options (`-o` pairs and flags) for a target, without the destination. */
export function sshOptions(t: SshTarget): string[] {
  const o = (k: string, v: string | number) => ['-o', `${k}=${v}`];
  return [
    ...o('BatchMode', 'yes'),
    ...o('ConnectTimeout', t.connectTimeout),
    ...o('ServerAliveInterval', 5),
    ...o('ServerAliveCountMax', 3),
    ...o('ControlMaster', 'auto'),
    ...o('ControlPath', `${controlDir()}/%C`),
    ...o('ControlPersist', '300s'),
    ...o('LogLevel', 'ERROR'),
    ...(t.ephemeral
      ? [...o('StrictHostKeyChecking', 'no'), ...o('UserKnownHostsFile', '/dev/null')]
      : [...o('StrictHostKeyChecking', 'accept-new'), ...(t.knownHostsFile ? o('UserKnownHostsFile', t.knownHostsFile) : [])]),
    ...(t.identityFile ? [...o('IdentitiesOnly', 'yes'), '-i', t.identityFile] : []),
    '-p',
    String(t.port),
  ];
}

export function destination(t: SshTarget): string {
  return t.user ? `${t.user}@${t.address}` : t.address;
}

/** Starts `argv` on the host; the promise settles when it ends (never rejects: look at exitCode). */
export function sshSpawn(t: SshTarget, argv: readonly string[]): ResultPromise<{ reject: false; buffer: false; stdin: 'ignore' }> {
  return execa('ssh', [...sshOptions(t), destination(t), '--', remoteCommand(argv)], { reject: false, buffer: false, stdin: 'ignore' });
}

export interface CommandResult {
  code: number | undefined;
  stdout: string;
  stderr: string;
}

/** Runs `argv` on the host and collects its output. ssh's own failures come back as code 255. */
export async function sshRun(t: SshTarget, argv: readonly string[], options: { input?: string; timeoutMs?: number } = {}): Promise<CommandResult> {
  const r = await execa('ssh', [...sshOptions(t), destination(t), '--', remoteCommand(argv)], {
    reject: false,
    ...(options.input !== undefined ? { input: options.input } : { stdin: 'ignore' as const }),
    ...(options.timeoutMs ? { timeout: options.timeoutMs } : {}),
  });
  return { code: r.exitCode, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/**
 * rsync over the same multiplexed ssh. `-e` is parsed by rsync itself (split on spaces, quotes honoured), so
 * every option word is quoted for it.
 */
export async function rsync(t: SshTarget, args: { from: string; to: string; excludes?: string[]; delete?: boolean; push: boolean; timeoutMs?: number }): Promise<CommandResult> {
  const e = ['ssh', ...sshOptions(t)].map(shellQuote).join(' ');
  const remote = (p: string) => `${destination(t)}:${p}`;
  const argv = [
    '-a',
    '--mkpath',
    '--partial-dir=.rsync-partial',
    ...(args.delete ? ['--delete'] : []),
    ...(args.excludes ?? []).map((x) => `--exclude=${x}`),
    '-e',
    e,
    args.push ? args.from : remote(args.from),
    args.push ? remote(args.to) : args.to,
  ];
  const r = await execa('rsync', argv, { reject: false, stdin: 'ignore', ...(args.timeoutMs ? { timeout: args.timeoutMs } : {}) });
  return { code: r.exitCode, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/** Closes the shared connection to a host (tests, and `minidalle hosts` when it is done). */
export async function closeMaster(t: SshTarget): Promise<void> {
  await execa('ssh', [...sshOptions(t), '-O', 'exit', destination(t)], { reject: false, stdin: 'ignore', timeout: 5000 });
}
