/** Helpers for tests that run the built CLI in throwaway project directories. */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const CLI = join(ROOT, 'bin/minidalle.js');
export const FIXTURE_PLUGINS = join(ROOT, 'tests/fixtures/plugins/steps.mjs');

export function project(files: Record<string, string> = {}): string {
  const dir = mkdtempSync(join(tmpdir(), 'minidalle-cli-'));
  writeFileSync(join(dir, 'minidalle.config.json'), JSON.stringify({ runs_dir: 'runs', plugins: [FIXTURE_PLUGINS] }));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return dir;
}

export function cli(cwd: string, args: string[], env: Record<string, string> = {}, options: { timeout?: number } = {}) {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd, encoding: 'utf8', env: { ...process.env, CI: '1', ...env }, timeout: options.timeout ?? 60_000 });
  return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

export function runRecords(dir: string): Record<string, unknown>[] {
  const runs = join(dir, 'runs');
  return readdirSync(runs)
    .filter((id) => existsSync(join(runs, id, 'run.json')))
    .map((id) => JSON.parse(readFileSync(join(runs, id, 'run.json'), 'utf8')) as Record<string, unknown>);
}

export function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' }).map((f) => join(dir, f)).filter((f) => statSync(f).isFile());
}

export const COUNTER = (steps: number, delay = 0) => `name: count
stages:
  a:
    plugin: counter
    with: { steps: ${steps}, delay_ms: ${delay} }
`;

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
export const stages = (dir: string) => runRecords(dir).filter((r) => r.kind === 'stage');

/** Starts `minidalle run` without waiting; resolves with its exit code and output. */
export function start(dir: string, args: string[], options: { group?: boolean; env?: Record<string, string> } = {}) {
  // detached = setsid(): the CLI leads its own process group, like a shell's foreground job.
  const child = spawn(process.execPath, [CLI, ...args], { cwd: dir, env: { ...process.env, CI: '1', ...options.env }, detached: options.group ?? false, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<{ code: number | null; stdout: string; stderr: string }>((res) => child.once('close', (code) => res({ code, stdout, stderr })));
  return { child, exited, output: () => stdout };
}

export async function until(what: string, check: () => boolean, ms = 20_000): Promise<void> {
  for (let t = 0; t < ms; t += 50) {
    if (check()) return;
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what}`);
}

export function checkpointSteps(dir: string, runId: string): number[] {
  const cps = join(dir, 'runs', runId, 'checkpoints');
  return existsSync(cps) ? readdirSync(cps).filter((c) => /^step-\d+$/.test(c)).map((c) => Number(c.slice(5))).sort((a, b) => a - b) : [];
}
