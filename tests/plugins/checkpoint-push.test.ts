import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cli, project, runRecords } from '../support/cli.js';

const hookCalls = (file: string) => readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);

describe('experiment-level observers', () => {
  it('calls runEnd when the observed stage fails, with the error, and watches only the stages it names', () => {
    const dir = project({
      'e.yaml': `name: obs
stages:
  bad: { plugin: counter, with: { steps: 3, fail_at: 2 } }
  good: { plugin: counter, with: { steps: 1 } }
observers:
  - { plugin: observer, stages: [bad] }
`,
    });
    const hooks = join(dir, 'hooks.jsonl');
    const r = cli(dir, ['run', 'e.yaml'], { MINIDALLE_TEST_HOOKS: hooks });
    expect(r.code).toBe(1);
    const bad = runRecords(dir).find((x) => x.stage === 'bad')!;
    const calls = hookCalls(hooks);
    expect(calls.every((c) => c.runId === bad.id)).toBe(true); // 'good' is not watched
    expect(calls.map((c) => `${c.hook}${c.step ?? ''}`)).toEqual(['runStart', 'metrics1', 'checkpoint1', 'runEnd']);
    expect(calls.at(-1)).toMatchObject({ status: 'failed', error: 'failing at step 2 as configured', artifacts: {} });
  });

  it('validates observers like stages: unknown plugin, plugin without hooks, unknown stage, bad with: — each with file:line', () => {
    const dir = project({
      'e.yaml': `name: obs
stages:
  a: { plugin: counter }
observers:
  - { plugin: observr }
  - { plugin: counter }
  - plugin: observer
    stages: [b]
    with: { nope: 1 }
`,
    });
    const r = cli(dir, ['validate', 'e.yaml']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/e\.yaml:5:\d+: observers\[0\]\.plugin: unknown plugin 'observr' — did you mean 'observer'\?/);
    expect(r.stderr).toMatch(/e\.yaml:6:\d+: observers\[1\]\.plugin: plugin 'counter' has no observer hooks/);
    expect(r.stderr).toMatch(/e\.yaml:8:\d+: observers\[2\]\.stages\[0\]: unknown stage 'b'/);
    expect(r.stderr).toMatch(/e\.yaml:9:\d+: observers\[2\]\.with\.nope: unknown key 'nope'/);
  });
});
