import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { stages, cli, FIXTURE_PLUGINS, project, ROOT } from '../support/cli.js';

describe('plugin version in the fingerprint', () => {
  it('a bumped plugin version is not reused; the same version is', () => {
    const dir = project({ 'e.yaml': 'name: ver\nstages:\n  a: { plugin: versioned }\n' });
    writeFileSync(join(dir, 'minidalle.config.json'), JSON.stringify({ plugins: [FIXTURE_PLUGINS, join(ROOT, 'tests/fixtures/plugins/versioned.mjs')] }));
    const v1 = { MINIDALLE_TEST_PLUGIN_VERSION: '1' };
    expect(cli(dir, ['run', 'e.yaml'], v1).code).toBe(0);
    const first = stages(dir)[0]!;
    expect(first.meta).toMatchObject({ plugin_version: '1' });
    expect(cli(dir, ['run', 'e.yaml'], v1).stdout).toContain(`a: reusing run ${first.id}`);
    const v2 = cli(dir, ['run', 'e.yaml'], { MINIDALLE_TEST_PLUGIN_VERSION: '2' });
    expect(v2.code).toBe(0);
    expect(v2.stdout).not.toContain('reusing');
    expect(stages(dir).filter((r) => r.status === 'finished')).toHaveLength(2);
  });
});
