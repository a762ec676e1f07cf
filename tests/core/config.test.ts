import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { loadExperiment } from '../../src/core/config/experiment.js';
import { applyOverrides, parseOverride } from '../../src/core/config/overrides.js';
import { ConfigError } from '../../src/core/errors.js';
import { PluginRegistry } from '../../src/core/plugins/registry.js';
import { definePlugin } from '../../src/core/plugins/types.js';

function registry(): PluginRegistry {
  const r = new PluginRegistry();
  const noop = async () => ({});
  r.add(definePlugin({ name: 'shapes-data', description: 'd', config: z.object({ count: z.number().int().default(100), size: z.number().int().default(32) }).strict(), run: noop }), 'test');
  r.add(definePlugin({ name: 'vqgan-finetune', description: 'v', config: z.object({ steps: z.number().int().positive().default(10), data: z.string().default('') }).strict(), run: noop }), 'test');
  return r;
}

function dir(files: Record<string, string>): string {
  const d = mkdtempSync(join(tmpdir(), 'minidalle-config-'));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(d, name), text);
  return d;
}

const GOOD = `name: demo
stages:
  data:
    plugin: shapes-data
    with: { count: 40 }
  vqgan:
    plugin: vqgan-finetune
    needs: [data]
    with:
      steps: 5
      data: \${stages.data.artifacts.train}
`;

function problemOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error('expected a ConfigError');
}

describe('loadExperiment', () => {
  it('loads a valid file: order, defaults applied, diff vs defaults', () => {
    const d = dir({ 'e.yaml': GOOD });
    const loaded = loadExperiment(join(d, 'e.yaml'), { registry: registry() });
    expect(loaded.order).toEqual(['data', 'vqgan']);
    expect(loaded.experiment.stages.data!.with).toEqual({ count: 40, size: 32 });
    expect(loaded.changedFromDefaults.data).toEqual({ count: 40 });
    expect(loaded.experiment.stages.vqgan!.host).toBe('local');
  });

  it('merges extends chains (derived wins, lists replaced) and applies overrides', () => {
    const d = dir({
      'base.yaml': 'name: base\nseed: 3\ntracking: { tags: [a] }\nstages:\n  data: { plugin: shapes-data, with: { count: 10, size: 16 } }\n',
      'mid.yaml': 'extends: ./base.yaml\nstages:\n  data: { with: { count: 20 } }\n',
      'top.yaml': 'extends: mid.yaml\nname: top\n',
    });
    const loaded = loadExperiment(join(d, 'top.yaml'), { registry: registry(), overrides: ['stages.data.with.size=8', '+tracking.notes=hello', 'tracking.tags=[x,y]'] });
    expect(loaded.experiment.name).toBe('top');
    expect(loaded.experiment.seed).toBe(3);
    expect(loaded.experiment.stages.data!.with).toEqual({ count: 20, size: 8 });
    expect(loaded.experiment.tracking).toEqual({ tags: ['x', 'y'], notes: 'hello' });
    expect(loaded.files.map((f) => f.replace(/^.*\//, ''))).toEqual(['top.yaml', 'mid.yaml', 'base.yaml']);
  });

  it('a YAML alias is a copy: overriding one stage does not change the stage whose anchor it shares', () => {
    const d = dir({ 'e.yaml': 'name: e\nstages:\n  a: { plugin: shapes-data, with: &w { count: 10, size: 16 } }\n  b: { plugin: shapes-data, with: *w }\n' });
    const loaded = loadExperiment(join(d, 'e.yaml'), { registry: registry(), overrides: ['stages.b.with.size=8'] });
    expect(loaded.experiment.stages.a!.with).toEqual({ count: 10, size: 16 });
    expect(loaded.experiment.stages.b!.with).toEqual({ count: 10, size: 8 });
  });

  it('a << merge key reuses a block with changes, and a problem in a merged key points where the block writes it', () => {
    const d = dir({ 'e.yaml': 'name: e\nstages:\n  a: { plugin: shapes-data, with: &w { count: 10, size: 16 } }\n  b: { plugin: shapes-data, with: { <<: *w, size: 8 } }\n' });
    const loaded = loadExperiment(join(d, 'e.yaml'), { registry: registry(), overrides: ['stages.b.with.count=12'] });
    expect(loaded.experiment.stages.a!.with).toEqual({ count: 10, size: 16 });
    expect(loaded.experiment.stages.b!.with).toEqual({ count: 12, size: 8 });
    const bad = dir({ 'e.yaml': 'name: e\nstages:\n  a:\n    plugin: shapes-data\n    with: &w\n      count: 10\n  b:\n    plugin: vqgan-finetune\n    with:\n      <<: *w\n      steps: 3\n' });
    expect(problemOf(() => loadExperiment(join(bad, 'e.yaml'), { registry: registry() }))).toMatch(/e\.yaml:6:7: stages\.b\.with\.count: unknown key 'count'/);
  });

  it('resolves ${env:…} with types and defaults', () => {
    const d = dir({ 'e.yaml': 'name: e\nstages:\n  data: { plugin: shapes-data, with: { count: "${env:N}", size: "${env:MISSING:-24}" } }\n' });
    const loaded = loadExperiment(join(d, 'e.yaml'), { registry: registry(), env: { N: '7' } });
    expect(loaded.experiment.stages.data!.with).toEqual({ count: 7, size: 24 });
  });

  it('drops a stage with ~', () => {
    const d = dir({ 'e.yaml': GOOD });
    const loaded = loadExperiment(join(d, 'e.yaml'), { registry: registry(), overrides: ['~stages.vqgan'] });
    expect(loaded.order).toEqual(['data']);
  });

  const broken: [string, Record<string, string>, string[], RegExp][] = [
    ['bad YAML', { 'e.yaml': 'name: e\nstages:\n  data: { plugin: shapes-data\n' }, [], /e\.yaml:\d+:\d+: invalid YAML/],
    ['duplicate key', { 'e.yaml': 'name: e\nname: f\nstages: {}\n' }, [], /e\.yaml:2:\d+: invalid YAML/],
    ['unknown top-level key', { 'e.yaml': 'name: e\nstagez: {}\nstages:\n  data: { plugin: shapes-data }\n' }, [], /e\.yaml:2:1: stagez: unknown key 'stagez' — did you mean 'stages'\?/],
    ['wrong type', { 'e.yaml': 'name: e\nseed: many\nstages:\n  data: { plugin: shapes-data }\n' }, [], /e\.yaml:2:1: seed: .*expected number/i],
    ['unknown plugin', { 'e.yaml': 'name: e\nstages:\n  data:\n    plugin: shapes-dat\n' }, [], /e\.yaml:4:5: stages\.data\.plugin: unknown plugin 'shapes-dat' — did you mean 'shapes-data'\?/],
    ['unknown plugin key', { 'e.yaml': 'name: e\nstages:\n  data:\n    plugin: shapes-data\n    with:\n      cont: 3\n' }, [], /e\.yaml:6:7: stages\.data\.with\.cont: unknown key 'cont' — did you mean 'count'\?/],
    ['wrong plugin value type', { 'e.yaml': 'name: e\nstages:\n  data:\n    plugin: shapes-data\n    with:\n      count: lots\n' }, [], /e\.yaml:6:7: stages\.data\.with\.count: .*expected number/i],
    ['cycle', { 'e.yaml': 'name: e\nstages:\n  a: { plugin: shapes-data, needs: [b] }\n  b: { plugin: shapes-data, needs: [a] }\n' }, [], /e\.yaml:3:\d+: stages\.a\.needs: stages form a cycle: a → b → a/],
    ['missing needs', { 'e.yaml': 'name: e\nstages:\n  data: { plugin: shapes-data }\n  v:\n    plugin: vqgan-finetune\n    needs: [dat]\n' }, [], /e\.yaml:6:\d+: stages\.v\.needs\[0\]: unknown stage 'dat' — did you mean 'data'\?/],
    ['extends cycle', { 'a.yaml': 'extends: b.yaml\nname: a\n', 'b.yaml': 'extends: ./a.yaml\n' }, [], /b\.yaml:1:\d+: extends: 'extends' forms a cycle/],
    ['extends missing file', { 'e.yaml': 'extends: nope.yaml\nname: e\n' }, [], /e\.yaml:1:\d+: extends: 'nope\.yaml' does not exist/],
    ['bad override path', { 'e.yaml': GOOD }, ['stages.data.with.cuont=3'], /command-line override 'stages\.data\.with\.cuont=3': stages\.data\.with\.cuont: unknown key 'cuont' — did you mean 'count'\?/],
    ['override into a scalar', { 'e.yaml': GOOD }, ['name.x=1'], /command-line override 'name\.x=1'.*'name' is not a mapping/],
    ['reference outside needs', { 'e.yaml': 'name: e\nstages:\n  data: { plugin: shapes-data }\n  v:\n    plugin: vqgan-finetune\n    with: { data: "${stages.data.out}" }\n' }, [], /e\.yaml:6:\d+: stages\.v\.with: refers to \$\{stages\.data…\} but 'data' is not in needs/],
    ['unset env var', { 'e.yaml': 'name: e\nstages:\n  data: { plugin: shapes-data, with: { count: "${env:MINIDALLE_TEST_UNSET}" } }\n' }, [], /e\.yaml:3:\d+: stages\.data\.with\.count: environment variable MINIDALLE_TEST_UNSET is not set/],
    ['unknown host', { 'e.yaml': 'name: e\nstages:\n  data: { plugin: shapes-data, host: tpu-a }\n' }, [], /stages\.data\.host: unknown host 'tpu-a'/],
    ['custom tag', { 'e.yaml': 'name: !!js/function "x"\nstages: {}\n' }, [], /e\.yaml:1:\d+: invalid YAML/],
  ];
  it.each(broken)('refuses %s with file:line and key', (_label, files, overrides, expected) => {
    const d = dir(files);
    const entry = Object.keys(files)[0]!;
    const message = problemOf(() => loadExperiment(join(d, entry), { registry: registry(), overrides }));
    expect(message).toMatch(expected);
  });

  it('locates a key inherited through extends in the file that defines it', () => {
    const d = dir({ 'base.yaml': 'name: b\nstages:\n  data:\n    plugin: shapes-data\n    with: { count: nope }\n', 'top.yaml': 'extends: base.yaml\nname: t\n' });
    expect(problemOf(() => loadExperiment(join(d, 'top.yaml'), { registry: registry() }))).toMatch(/base\.yaml:5:\d+: stages\.data\.with\.count/);
  });
});

describe('overrides', () => {
  it('parses values as YAML and refuses bad syntax', () => {
    expect(parseOverride('a.b=[1, 2]')).toMatchObject({ op: 'set', path: ['a', 'b'], value: [1, 2] });
    expect(parseOverride('+x=true')).toMatchObject({ op: 'add', value: true });
    expect(parseOverride('~stages.push')).toMatchObject({ op: 'delete', path: ['stages', 'push'] });
    expect(() => parseOverride('novalue')).toThrow(/expected 'key.path=value'/);
    expect(() => parseOverride('a..b=1')).toThrow(/not a valid key/);
    expect(() => applyOverrides({ a: 1 }, [parseOverride('+a=2')])).toThrow(/already set/);
    expect(() => applyOverrides({}, [parseOverride('~a')])).toThrow(/not set/);
  });
});
