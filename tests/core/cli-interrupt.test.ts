import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CLI, cli, COUNTER, project, runRecords } from '../support/cli.js';

describe('minidalle run, interrupted', () => {
  async function interrupted(signal: 'SIGTERM' | 'SIGKILL') {
    const dir = project({ 'e.yaml': COUNTER(30, 100) });
    const child = spawn(process.execPath, [CLI, 'run', 'e.yaml'], { cwd: dir, env: { ...process.env, CI: '1' }, stdio: 'ignore' });
    const runs = join(dir, 'runs');
    // Wait until the stage has written a few checkpoints.
    for (let i = 0; i < 400; i++) {
      await new Promise((r) => setTimeout(r, 50));
      const stage = existsSync(runs) ? runRecords(dir).find((r) => r.kind === 'stage') : undefined;
      if (stage && existsSync(join(runs, stage.id as string, 'checkpoints/step-3'))) break;
    }
    child.kill(signal);
    await new Promise((r) => child.once('exit', r));
    if (signal === 'SIGKILL') {
      // The orchestrator died; its worker notices that stdin closed and stops by itself.
      await new Promise((r) => setTimeout(r, 1500));
    }
    return dir;
  }

  it.each(['SIGTERM', 'SIGKILL'] as const)('after %s mid-stage the store is consistent and the next run resumes from the last checkpoint', async (signal) => {
    const dir = await interrupted(signal);
    const ls = cli(dir, ['ls']);
    const expected = signal === 'SIGTERM' ? 'stopped' : 'crashed';
    expect(ls.stdout).toMatch(new RegExp(`count/a\\s+a\\s+${expected}`));
    const first = runRecords(dir).find((r) => r.kind === 'stage')!;
    const cps = readdirSync(join(dir, 'runs', first.id as string, 'checkpoints'));
    expect(cps.every((c) => /^step-\d+$/.test(c) || c.startsWith('.')), cps.join(',')).toBe(true);
    const lastStep = Math.max(...cps.filter((c) => c.startsWith('step-')).map((c) => Number(c.slice(5))));
    expect(lastStep).toBeGreaterThanOrEqual(3);
    expect(lastStep).toBeLessThan(30);

    const again = cli(dir, ['run', 'e.yaml']);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain(`resuming from run ${first.id}`);
    expect(again.stdout).not.toContain('reusing');
    const second = runRecords(dir).filter((r) => r.kind === 'stage' && r.resumed_from === first.id);
    expect(second).toHaveLength(1);
    const log = readFileSync(join(dir, 'runs', second[0]!.id as string, 'output.log'), 'utf8');
    expect(log).toMatch(new RegExp(`resumed at step (\\d+) from run ${first.id}`));
    const from = Number(/resumed at step (\d+)/.exec(log)![1]);
    expect(from).toBeGreaterThanOrEqual(lastStep - 1);
    const summary = JSON.parse(readFileSync(join(dir, 'runs', second[0]!.id as string, 'summary.json'), 'utf8'));
    expect(summary.final_step).toBe(30);
  }, 60_000);

});
