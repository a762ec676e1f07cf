import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { sleep, stages, start, until, checkpointSteps, COUNTER, project } from '../support/cli.js';

describe('Ctrl-C from a terminal (SIGINT to the whole foreground process group)', () => {
  it('once: the stage stops with a checkpoint at the step it reached; twice: it is killed', async () => {
    const dir = project({ 'e.yaml': COUNTER(60, 100), 'slow.yaml': COUNTER(60, 2000).replace('name: count', 'name: slow') });
    const run = start(dir, ['run', 'e.yaml'], { group: true });
    await until('step 3', () => existsSync(join(dir, 'runs')) && stages(dir).some((r) => checkpointSteps(dir, r.id as string).includes(3)));
    process.kill(-run.child.pid!, 'SIGINT');
    const { code } = await run.exited;
    expect(code).toBe(130);
    const stage = stages(dir)[0]!;
    expect(stage.status, String(stage.error)).toBe('stopped');
    const history = readFileSync(join(dir, 'runs', stage.id as string, 'history.jsonl'), 'utf8').trim().split('\n');
    const reached = JSON.parse(history.at(-1)!)._step as number;
    expect(checkpointSteps(dir, stage.id as string).at(-1)).toBe(reached);

    // A step takes 2 s here, so the graceful stop is still under way when the second Ctrl-C comes.
    const slow = start(dir, ['run', 'slow.yaml'], { group: true });
    await until('the slow stage to save step 1', () => stages(dir).some((r) => r.name === 'slow/a' && checkpointSteps(dir, r.id as string).includes(1)));
    process.kill(-slow.child.pid!, 'SIGINT');
    await sleep(300);
    process.kill(-slow.child.pid!, 'SIGINT');
    const second = await slow.exited;
    expect(second.code).toBe(130);
    const killed = stages(dir).find((r) => r.name === 'slow/a')!;
    expect(killed).toMatchObject({ status: 'crashed', error: 'worker exited with signal SIGKILL' });
  }, 40_000);
});

