import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { stages, cli, project } from '../support/cli.js';

describe('verified reuse', () => {
  it('a flipped byte or a deleted artifact is reported on reuse, names the file, and is not passed downstream', () => {
    const dir = project({ 'e.yaml': 'name: v\nstages:\n  a: { plugin: counter, with: { steps: 12 } }\n  b: { plugin: counter, needs: [a], with: { steps: 1 } }\n' });
    expect(cli(dir, ['run', 'e.yaml']).code).toBe(0);
    const a = stages(dir).find((r) => r.stage === 'a')!;
    const manifest = JSON.parse(readFileSync(join(dir, 'runs', a.id as string, 'artifacts.json'), 'utf8'));
    expect(Object.keys(manifest.artifacts.result.files)).toEqual(['out/result.txt']);
    const artifact = join(dir, 'runs', a.id as string, 'out/result.txt');
    expect(readFileSync(artifact, 'utf8')).toBe('12');
    writeFileSync(artifact, '13'); // one byte flipped, same size
    const flipped = cli(dir, ['run', 'e.yaml']);
    expect(flipped.code).toBe(1);
    expect(flipped.stdout).toContain(`a: cannot reuse run ${a.id}: artifact 'result': ${artifact} fails its sha256 check (changed since the stage finished); run it again with --rerun a`);
    expect(flipped.stdout).toMatch(/b: skipped \('a' did not finish\)/);
    expect(flipped.stdout).not.toContain('reusing');
    expect(stages(dir)).toHaveLength(2);

    writeFileSync(artifact, '12'); // restored: the content is what the manifest vouches for, --verify hashes it all
    const verified = cli(dir, ['run', 'e.yaml', '--verify']);
    expect(verified.code).toBe(0);
    expect(verified.stdout).toContain(`a: reusing run ${a.id}`);
    writeFileSync(artifact, '123');
    expect(cli(dir, ['run', 'e.yaml']).stdout).toContain(`${artifact} has 3 bytes, 2 when the stage finished`);
    rmSync(artifact);
    const deleted = cli(dir, ['run', 'e.yaml']);
    expect(deleted.stdout).toContain(`a: cannot reuse run ${a.id}: artifact 'result' (${artifact}) was deleted; run it again with --rerun a`);
    const rerun = cli(dir, ['run', 'e.yaml', '--rerun', 'a']);
    expect(rerun.code).toBe(0);
    expect(stages(dir).filter((r) => r.stage === 'a' && r.status === 'finished')).toHaveLength(2);
  }, 40_000);
});

