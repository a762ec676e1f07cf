/** Projects whose hosts are the test network's namespaces, and the checks the remote tests share. */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT, until, type start } from '../support/cli.js';

export const REMOTE_PLUGINS = join(ROOT, 'tests/remote/fixtures/remote-plugins.mjs');

export function remoteProject(config: Record<string, unknown>, files: Record<string, string> = {}): string {
  const dir = mkdtempSync(join(tmpdir(), 'md-remote-project-'));
  writeFileSync(join(dir, 'minidalle.config.json'), JSON.stringify({ runs_dir: 'runs', plugins: [REMOTE_PLUGINS], ...config }, null, 2));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return dir;
}

export interface StageRun {
  id: string;
  dir: string;
  record: Record<string, unknown> & { status: string; host: string; stage?: string; meta: Record<string, unknown> };
}

export function stageRuns(project: string): StageRun[] {
  const runs = join(project, 'runs');
  if (!existsSync(runs)) return [];
  return readdirSync(runs)
    .filter((id) => existsSync(join(runs, id, 'run.json')))
    .map((id) => ({ id, dir: join(runs, id), record: JSON.parse(readFileSync(join(runs, id, 'run.json'), 'utf8')) }))
    .filter((r) => r.record.kind === 'stage');
}

export function history(runDir: string): { _step: number; value: number }[] {
  const file = join(runDir, 'history.jsonl');
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

/** Every step from 1 to n exactly once, in order. */
export function expectSteps(h: { _step: number }[], n: number): void {
  const steps = h.map((l) => l._step);
  const want = Array.from({ length: n }, (_, i) => i + 1);
  if (JSON.stringify(steps) !== JSON.stringify(want)) throw new Error(`history steps ${JSON.stringify(steps)}, expected ${JSON.stringify(want)}`);
}

/** Waits for `check`; on a timeout kills the run and fails with everything it printed. */
export async function waitOrDump(run: ReturnType<typeof start>, what: string, check: () => boolean, ms = 45_000): Promise<void> {
  let ended = false;
  void run.exited.then(() => (ended = true));
  await until(what, () => check() || ended, ms).then(() => {
    if (!check()) throw new Error(`the run ended before ${what}`);
  }).catch(async (err: Error) => {
    run.child.kill('SIGKILL');
    const r = await run.exited;
    throw new Error(`${err.message}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`);
  });
}

/** Local processes (this machine's pid namespace sees the hosts' too) whose command line matches. */
export function localProcesses(match: (args: string) => boolean): number[] {
  return readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        return match(readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').join(' '));
      } catch {
        return false;
      }
    })
    .map(Number);
}

/** The orchestrator's env for the real gcloud against the fake TPU API at `tpuUrl`, with its own config dir under `dir`. */
export function fakeTpuEnv(dir: string, tpuUrl: string): Record<string, string> {
  const gcloudConfig = join(dir, 'gcloud');
  mkdirSync(gcloudConfig, { recursive: true });
  return {
    MINIDALLE_SSH_CONTROL_DIR: join(dir, 'ctl'),
    CLOUDSDK_API_ENDPOINT_OVERRIDES_TPU: tpuUrl,
    CLOUDSDK_AUTH_ACCESS_TOKEN: 'fake-access-token-for-tests',
    CLOUDSDK_CORE_DISABLE_PROMPTS: '1',
    CLOUDSDK_CONFIG: gcloudConfig,
  };
}
