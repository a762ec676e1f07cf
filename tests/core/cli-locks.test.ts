import { spawn } from 'node:child_process';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { stages, start, until, cli, COUNTER, project } from '../support/cli.js';

describe('one run per fingerprint at a time', () => {
  it('two concurrent runs of one experiment: one trains, the other waits and reuses it', async () => {
    const dir = project({ 'e.yaml': COUNTER(8, 100) });
    const one = start(dir, ['run', 'e.yaml']);
    await until('the first run to start its stage', () => existsSync(join(dir, 'runs')) && stages(dir).length === 1);
    const two = start(dir, ['run', 'e.yaml']);
    const [a, b] = await Promise.all([one.exited, two.exited]);
    expect(a.code).toBe(0);
    expect(b.code).toBe(0);
    expect(b.stdout).toMatch(new RegExp(`a: waiting for pid ${one.child.pid} on \\S+ \\(count/a`));
    const finished = stages(dir).filter((r) => r.status === 'finished');
    expect(finished).toHaveLength(1);
    expect(stages(dir)).toHaveLength(1);
    expect(b.stdout).toContain(`a: reusing run ${finished[0]!.id}`);
    expect(readdirSync(join(dir, 'runs/.locks')).filter((f) => !f.startsWith('.'))).toEqual([]);
  }, 30_000);

  it('--no-wait refuses, naming the owner; a lock left by a dead process is taken over', async () => {
    // 60 × 150 ms: the stage must still run when the refused CLI has started, which takes seconds on a loaded machine
    const dir = project({ 'e.yaml': COUNTER(60, 150) });
    const one = start(dir, ['run', 'e.yaml']);
    await until('the first run to start its stage', () => existsSync(join(dir, 'runs')) && stages(dir).length === 1);
    const refused = cli(dir, ['run', 'e.yaml', '--no-wait']);
    expect(refused.code).toBe(1);
    expect(refused.stdout).toMatch(new RegExp(`a: not started: pid ${one.child.pid} on \\S+ \\(count/a .*\\) is running this same stage`));
    expect((await one.exited).code).toBe(0);

    // A lock whose owner died (kill -9) does not hold the fingerprint forever.
    const fingerprint = stages(dir)[0]!.fingerprint as string;
    const dead = spawn(process.execPath, ['-e', '']);
    await new Promise((r) => dead.once('exit', r));
    const host = (stages(dir)[0]!.owner_host as string);
    writeFileSync(join(dir, 'runs/.locks', `${fingerprint}.json`), JSON.stringify({ pid: dead.pid, host, what: 'count/a', since: new Date().toISOString() }));
    const again = cli(dir, ['run', 'e.yaml']);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain('a: reusing run');
  }, 30_000);
});

