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
import { parseParameter } from '../../src/core/sweep/parameters.js';
import { planSweep, randomOf } from '../../src/core/sweep/plan.js';

function registry(): PluginRegistry {
  const r = new PluginRegistry();
  const noop = async () => ({});
  r.add(definePlugin({ name: 'data', description: 'd', config: z.object({ count: z.number().int().default(10) }).strict(), run: noop }), 'test');
  r.add(
    definePlugin({
      name: 'train',
      description: 't',
      config: z
        .object({
          lr: z.number().positive().max(0.1).default(1e-3),
          batch_size: z.number().int().positive().default(8),
          model: z.object({ ch: z.number().int().default(16), ch_mult: z.array(z.number().int()).default([1, 2, 2]) }).strict().default({ ch: 16, ch_mult: [1, 2, 2] }),
          name: z.string().default(''),
        })
        .strict(),
      run: noop,
    }),
    'test',
  );
  return r;
}

function dir(files: Record<string, string>): string {
  const d = mkdtempSync(join(tmpdir(), 'minidalle-sweep-config-'));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(d, name), text);
  return d;
}

const BASE = `name: s
stages:
  data: { plugin: data }
  train:
    plugin: train
    needs: [data]
    with: { lr: 0.001 }
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

function plan(files: Record<string, string>, args: Parameters<typeof planSweep>[1] = {}, overrides: string[] = []) {
  const d = dir(files);
  const file = join(d, Object.keys(files)[0]!);
  const base = loadExperiment(file, { registry: registry(), overrides });
  return planSweep(base, args, { registry: registry(), overrides, projectDir: d });
}

describe('overrides: list indices and ++', () => {
  it('an index sets, and ~ removes, one item of a list; ++ adds or overwrites', () => {
    const tree = { a: { list: [1, 2, 3], nested: [{ x: 1 }, { x: 2 }] }, b: 1 };
    expect(applyOverrides(tree, [parseOverride('a.list.1=20')]).a).toEqual({ list: [1, 20, 3], nested: [{ x: 1 }, { x: 2 }] });
    expect(applyOverrides(tree, [parseOverride('a.nested.1.x=5')]).a).toMatchObject({ nested: [{ x: 1 }, { x: 5 }] });
    expect(applyOverrides(tree, [parseOverride('~a.list.0')]).a).toMatchObject({ list: [2, 3] });
    expect(applyOverrides(tree, [parseOverride('++b=2'), parseOverride('++c.d=3')])).toMatchObject({ b: 2, c: { d: 3 } });
    expect(parseOverride('++x.y=1')).toMatchObject({ op: 'upsert', path: ['x', 'y'], value: 1 });
    expect(tree.a.list).toEqual([1, 2, 3]); // the input is not changed
  });

  it('refuses indices past the end, keys on lists, + on list items, and a leading index', () => {
    const tree = { a: { list: [1, 2, 3] } };
    expect(() => applyOverrides(tree, [parseOverride('a.list.3=1')])).toThrow(/'a\.list' has 3 items \(0…2\), so it has no item 3/);
    expect(() => applyOverrides(tree, [parseOverride('a.list.x=1')])).toThrow(/'a\.list' is a list, so it has items 0…2, not a key 'x'/);
    expect(() => applyOverrides(tree, [parseOverride('+a.list.1=1')])).toThrow(/items are not added by index/);
    expect(() => applyOverrides(tree, [parseOverride('a.missing.0=1')])).toThrow(/'a\.missing' is not set \(and has no default list\), so it has no item 0/);
    expect(() => parseOverride('0.a=1')).toThrow(/starts with a key, not a list index/);
    expect(() => applyOverrides({ a: 1 }, [parseOverride('+a=2')])).toThrow(/already set; use 'a=…' \(or '\+\+a=…'\)/);
  });

  it("an index into a list the file leaves to the plugin edits the plugin's default", () => {
    const d = dir({ 'e.yaml': BASE });
    const loaded = loadExperiment(join(d, 'e.yaml'), { registry: registry(), overrides: ['stages.train.with.model.ch_mult.1=4', '++stages.train.with.batch_size=32'] });
    expect(loaded.experiment.stages.train!.with).toMatchObject({ model: { ch: 16, ch_mult: [1, 4, 2] }, batch_size: 32, lr: 0.001 });
    const message = problemOf(() => loadExperiment(join(d, 'e.yaml'), { registry: registry(), overrides: ['stages.train.with.model.ch_mult.5=4'] }));
    expect(message).toMatch(/command-line override 'stages\.train\.with\.model\.ch_mult\.5=4'.*has 3 items/);
  });
});

describe('sweep expressions', () => {
  it('values, choice, range; distributions with their bounds checked', () => {
    expect(parseParameter('1e-3,2e-3,4e-3')).toEqual({ kind: 'values', values: [0.001, 0.002, 0.004] });
    expect(parseParameter('[1,2],[1,2,2]')).toEqual({ kind: 'values', values: [[1, 2], [1, 2, 2]] });
    expect(parseParameter('choice(a, "b,c", 3)')).toEqual({ kind: 'values', values: ['a', 'b,c', 3] });
    expect(parseParameter('range(1,5)')).toEqual({ kind: 'values', values: [1, 2, 3, 4] });
    expect(parseParameter('range(0, 0.35, 0.1)')).toEqual({ kind: 'values', values: [0, 0.1, 0.2, 0.3] });
    expect(parseParameter('loguniform(1e-4, 1e-2)')).toEqual({ kind: 'loguniform', min: 1e-4, max: 1e-2 });
    expect(parseParameter('int(8, 32)')).toEqual({ kind: 'int', min: 8, max: 32 });
    expect(() => parseParameter('loguniform(0, 1)')).toThrow(/both bounds must be > 0/);
    expect(() => parseParameter('uniform(2, 1)')).toThrow(/min must be below max/);
    expect(() => parseParameter('int(1.5, 4)')).toThrow(/bounds must be integers/);
    expect(() => parseParameter('normal(0, 1)')).toThrow(/unknown function 'normal/);
    expect(() => parseParameter('1,,2')).toThrow(/empty value/);
    expect(() => parseParameter('range(3, 1)')).toThrow(/is empty/);
  });
});

describe('planning a sweep', () => {
  it('a 2 × 3 grid from --sweep gives 6 members with every combination, first parameter slowest', () => {
    const p = plan({ 'e.yaml': BASE }, { sweep: ['stages.train.with.batch_size=8,16', 'stages.train.with.lr=1e-3,2e-3,4e-3'] });
    expect(p.method).toBe('grid');
    expect(p.members.map((m) => m.parameters)).toEqual([
      { 'stages.train.with.batch_size': 8, 'stages.train.with.lr': 0.001 },
      { 'stages.train.with.batch_size': 8, 'stages.train.with.lr': 0.002 },
      { 'stages.train.with.batch_size': 8, 'stages.train.with.lr': 0.004 },
      { 'stages.train.with.batch_size': 16, 'stages.train.with.lr': 0.001 },
      { 'stages.train.with.batch_size': 16, 'stages.train.with.lr': 0.002 },
      { 'stages.train.with.batch_size': 16, 'stages.train.with.lr': 0.004 },
    ]);
    expect(p.members.map((m) => [m.loaded.experiment.stages.train!.with.batch_size, m.loaded.experiment.stages.train!.with.lr])).toEqual([
      [8, 0.001], [8, 0.002], [8, 0.004], [16, 0.001], [16, 0.002], [16, 0.004],
    ]);
    // The data stage is the same in every member: one fingerprint, so it runs once and is reused.
    expect(new Set(p.members.map((m) => m.fingerprints.data)).size).toBe(1);
    expect(new Set(p.members.map((m) => m.fingerprints.train)).size).toBe(6);
  });

  it('a random sweep with the same seed draws the same values, inside their distributions', () => {
    const block = `${BASE}sweep:
  method: random
  count: 40
  seed: 7
  parameters:
    stages.train.with.lr: { distribution: loguniform, min: 1.0e-4, max: 1.0e-2 }
    stages.train.with.batch_size: "int(4, 9)"
    stages.train.with.name: [a, b]
    stages.train.with.model.ch: { distribution: uniform, min: 10, max: 20 }
  metric: { name: loss, goal: minimize }
`;
    const a = plan({ 'e.yaml': block.replace('stages.train.with.model.ch: { distribution: uniform, min: 10, max: 20 }', 'stages.train.with.model.ch: "int(10, 20)"') });
    const b = plan({ 'e.yaml': block.replace('stages.train.with.model.ch: { distribution: uniform, min: 10, max: 20 }', 'stages.train.with.model.ch: "int(10, 20)"') });
    expect(a.members.map((m) => m.parameters)).toEqual(b.members.map((m) => m.parameters));
    expect(a.fingerprint).toBe(b.fingerprint);
    const other = plan({ 'e.yaml': block.replace('stages.train.with.model.ch: { distribution: uniform, min: 10, max: 20 }', 'stages.train.with.model.ch: "int(10, 20)"') }, { seed: 8 });
    expect(other.members.map((m) => m.parameters)).not.toEqual(a.members.map((m) => m.parameters));
    const lrs = a.members.map((m) => m.parameters['stages.train.with.lr'] as number);
    expect(lrs.every((v) => v >= 1e-4 && v <= 1e-2)).toBe(true);
    // Log-uniform: about half of the draws below the geometric middle 1e-3 (not ~9% as a uniform draw would give).
    expect(lrs.filter((v) => v < 1e-3).length).toBeGreaterThan(10);
    const sizes = a.members.map((m) => m.parameters['stages.train.with.batch_size'] as number);
    expect(sizes.every((v) => Number.isInteger(v) && v >= 4 && v <= 9)).toBe(true);
    expect(new Set(sizes).size).toBeGreaterThan(3);
    expect(new Set(a.members.map((m) => m.parameters['stages.train.with.name']))).toEqual(new Set(['a', 'b']));
    expect(a.members[0]!.loaded.experiment.sweep).toBeUndefined(); // members are plain experiments

    // Uniform reals over many draws: inside [10, 20], spread over the range.
    const u = randomOf({ x: { kind: 'uniform', min: 10, max: 20 } }, 500, 1).map((v) => v.x as number);
    expect(Math.min(...u)).toBeGreaterThanOrEqual(10);
    expect(Math.max(...u)).toBeLessThanOrEqual(20);
    expect(u.filter((v) => v < 15).length).toBeGreaterThan(200);
    expect(u.filter((v) => v < 15).length).toBeLessThan(300);
  });

  it('--sweep-random turns --sweep distributions into a random search; a grid refuses them', () => {
    const p = plan({ 'e.yaml': BASE }, { sweep: ['stages.train.with.lr=loguniform(1e-4,1e-2)'], random: 3, seed: 1 });
    expect(p.method).toBe('random');
    expect(p.members).toHaveLength(3);
    expect(() => plan({ 'e.yaml': BASE }, { sweep: ['stages.train.with.lr=loguniform(1e-4,1e-2)'] })).toThrow(/--sweep 'stages\.train\.with\.lr=loguniform\(1e-4,1e-2\)'.*is a distribution: a grid takes values; add --sweep-random N/);
    expect(() => plan({ 'e.yaml': BASE }, { sweep: ['stages.train.with.lr'] })).toThrow(/--sweep 'stages\.train\.with\.lr': expected 'key\.path=values'/);
  });

  const SWEEP = (block: string) => `${BASE}sweep:\n${block}`;
  const bad: [string, string, RegExp][] = [
    ['unknown key', '  method: grid\n  paramters: {}\n', /e\.yaml:8:1: sweep\.parameters: a sweep needs parameters:.*\n.*e\.yaml:10:3: sweep\.paramters: unknown key 'paramters' — did you mean 'parameters'\?/],
    ['empty values', '  parameters:\n    stages.train.with.lr: []\n', /e\.yaml:10:5: sweep\.parameters\.stages\.train\.with\.lr: empty list of values/],
    ['empty values: mapping', '  parameters:\n    stages.train.with.lr:\n      values: []\n', /e\.yaml:11:7: sweep\.parameters\.stages\.train\.with\.lr\.values: empty list of values/],
    ['bad distribution', '  method: random\n  count: 2\n  parameters:\n    stages.train.with.lr: { distribution: log_uniform, min: 1, max: 2 }\n', /e\.yaml:12:29: sweep\.parameters\.stages\.train\.with\.lr\.distribution: unknown distribution 'log_uniform' — did you mean 'loguniform'\?/],
    ['bad bounds', '  method: random\n  count: 2\n  parameters:\n    stages.train.with.lr: "loguniform(0, 1)"\n', /e\.yaml:12:5: sweep\.parameters\.stages\.train\.with\.lr: loguniform\(0, 1\): both bounds must be > 0/],
    ['distribution in a grid', '  parameters:\n    stages.train.with.lr: "uniform(0.1, 0.2)"\n', /e\.yaml:10:5: .*uniform\(…\) is a distribution: it needs method: random/],
    ['random without count', '  method: random\n  parameters:\n    stages.train.with.lr: [0.1]\n', /e\.yaml:8:1: sweep\.count: a random sweep needs count:/],
    ['unknown parameter key', '  parameters:\n    stages.train.with.lr:\n      vals: [1]\n', /e\.yaml:11:7: sweep\.parameters\.stages\.train\.with\.lr\.vals: unknown key 'vals' — did you mean 'values'\?/],
    ['unknown stage', '  parameters:\n    stages.trian.with.lr: [0.1]\n', /e\.yaml:10:5: sweep\.parameters\.stages\.trian\.with\.lr: no stage 'trian' — did you mean 'train'\?/],
    ['no parameters', '  parameters: {}\n', /e\.yaml:9:3: sweep\.parameters: a sweep needs at least one parameter/],
    ['metric of an unknown stage', '  parameters:\n    stages.train.with.lr: [0.1]\n  metric: { name: loss, goal: minimize, stage: fit }\n', /e\.yaml:11:\d+: sweep\.metric\.stage: unknown stage 'fit'/],
    ['early stop without metric', '  parameters:\n    stages.train.with.lr: [0.1]\n  early_stop: { step: 3 }\n', /e\.yaml:11:3: sweep\.early_stop: early stopping judges members by the metric/],
  ];
  it.each(bad)('a bad sweep block (%s) is an error with file:line', (_label, block, expected) => {
    const d = dir({ 'e.yaml': SWEEP(block) });
    expect(problemOf(() => loadExperiment(join(d, 'e.yaml'), { registry: registry() }))).toMatch(expected);
  });

  it("a member value a plugin refuses is reported at the parameter's line, naming the member", () => {
    const message = problemOf(() => plan({ 'e.yaml': SWEEP('  parameters:\n    stages.train.with.lr: [0.01, 0.5]\n    stages.train.with.batch_size: [8, 16]\n') }));
    expect(message).toMatch(/e\.yaml:10:5: stages\.train\.with\.lr: sweep member 2 \(stages\.train\.with\.lr=0\.5, stages\.train\.with\.batch_size=8\): .*(<=|≤|too big).*0\.1/i);
    expect(message.split('\n')).toHaveLength(1); // member 3 has the same problem: said once
    const typo = problemOf(() => plan({ 'e.yaml': BASE }, { sweep: ['stages.train.with.lrr=1,2'] }));
    expect(typo).toMatch(/--sweep 'stages\.train\.with\.lrr=1,2': stages\.train\.with\.lrr: sweep member 0 .*unknown key 'lrr' — did you mean 'lr'\?/);
  });

  it('--sweep parameters join and replace those of the block; ~sweep runs the experiment alone', () => {
    const file = SWEEP('  parameters:\n    stages.train.with.lr: [0.01, 0.02]\n    stages.train.with.batch_size: [8, 16]\n');
    const p = plan({ 'e.yaml': file }, { sweep: ['stages.train.with.batch_size=4'] });
    expect(p.members.map((m) => m.parameters)).toEqual([
      { 'stages.train.with.lr': 0.01, 'stages.train.with.batch_size': 4 },
      { 'stages.train.with.lr': 0.02, 'stages.train.with.batch_size': 4 },
    ]);
    const d = dir({ 'e.yaml': file });
    expect(loadExperiment(join(d, 'e.yaml'), { registry: registry(), overrides: ['~sweep'] }).experiment.sweep).toBeUndefined();
  });
});
