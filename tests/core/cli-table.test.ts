import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { solidImage } from '../data/fixtures.js';
import { cli, FIXTURE_PLUGINS, project, ROOT, stages } from '../support/cli.js';

describe('minidalle run over a broken CSV', () => {
  it('keeps every good row around a stray and an unterminated quote, and reports each bad row with file:line', async () => {
    const dir = project({
      'e.yaml': 'name: t\nstages:\n  read: { plugin: read-table, with: { source: ./captions.csv } }\n',
      'captions.csv': [
        'key,image_path,caption',
        'k1,img.png,a 12" vinyl record',
        'k2,img.png,"unterminated caption',
        'k3,img.png,fine',
        'k4,img.png,"a quoted, comma"',
        'k5,img.png,"never closed',
        'k6,img.png,last',
      ].join('\n'),
    });
    writeFileSync(join(dir, 'img.png'), await solidImage('png', [255, 0, 0]));
    writeFileSync(join(dir, 'minidalle.config.json'), JSON.stringify({ plugins: [FIXTURE_PLUGINS, join(ROOT, 'tests/fixtures/plugins/read-table.mjs')] }));
    const r = cli(dir, ['run', 'e.yaml']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('read 4 items, 2 skipped');
    const run = stages(dir)[0]!;
    const summary = JSON.parse(readFileSync(join(dir, 'runs', run.id as string, 'summary.json'), 'utf8'));
    expect(summary.keys).toEqual(['k1', 'k3', 'k4', 'k6']);
    const csv = './captions.csv'; // as the config names it
    expect(summary.skipped).toMatchObject({ total: 2, by_reason: { bad_row: 2 } });
    expect(summary.skipped.messages).toEqual([expect.stringMatching(/^\.\/captions\.csv:3: a quoted field is followed by more text/), expect.stringMatching(/^\.\/captions\.csv:6: a quoted field is never closed/)]);
    expect(r.stdout).toContain(`[read] warning: ${csv}:3: a quoted field`);
  });
});
