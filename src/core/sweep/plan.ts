/**
 * Planning a sweep: from the `sweep:` block and/or `--sweep` arguments to the list of members, each an ordinary
 * experiment loaded (and so validated against every plugin schema) with its parameter values as overrides.
 * Everything is checked before anything runs; a member whose values a plugin refuses is an error that names the
 * member, the value and where the parameter was written (file:line of the block, or the `--sweep` argument).
 */
import { createHash } from 'node:crypto';
import { relative } from 'node:path';
import { Rng } from '../../ml/rng.js';
import { loadExperiment, type LoadedExperiment, type LoadOptions } from '../config/experiment.js';
import { YamlSource } from '../config/yaml-source.js';
import { ConfigError, type ConfigProblem, type SourceLocation } from '../errors.js';
import { stableStringify, stageFingerprints } from '../pipeline/fingerprint.js';
import { describeParameter, parseParameter, ParameterError, type ParameterSpec } from './parameters.js';
import type { SweepMetric } from './record.js';
import { blockParameters, parameterKeyProblem } from './schema.js';

/** A grid bigger than this is a typo (a range with a tiny step), not a plan. */
export const MAX_MEMBERS = 1000;

export interface SweepArguments {
  /** `key=expression` items given after `--sweep`. */
  sweep?: string[];
  /** `--sweep-random N`: a random search of N members (over the block's parameters and/or `--sweep`'s). */
  random?: number;
  /** `--sweep-seed N`. */
  seed?: number;
  /** `--sweep-parallel N`: members at once. */
  parallel?: number;
}

export interface SweepMember {
  index: number;
  parameters: Record<string, unknown>;
  loaded: LoadedExperiment;
  /** Stage → fingerprint, for finding its finished (or running) runs. */
  fingerprints: Record<string, string>;
}

export interface SweepPlan {
  name: string;
  file: string;
  /** Experiment path as recorded (relative to the project when inside it). */
  experiment: string;
  method: 'grid' | 'random';
  seed?: number;
  parameters: Record<string, ParameterSpec>;
  overrides: string[];
  metric?: SweepMetric;
  maxParallel: number;
  earlyStop?: { rule: 'median'; step: number; min_members: number };
  stages: string[];
  members: SweepMember[];
  fingerprint: string;
}

/** Whether `run` should run a sweep: a `sweep:` block (not dropped with `~sweep`) or any `--sweep*` argument. */
export function wantsSweep(loaded: LoadedExperiment, args: SweepArguments): boolean {
  return loaded.experiment.sweep !== undefined || (args.sweep?.length ?? 0) > 0 || args.random !== undefined;
}

/** Every combination, the first parameter varying slowest (as itertools.product and Hydra's multirun). */
function gridOf(parameters: Record<string, ParameterSpec>): Record<string, unknown>[] {
  let combos: Record<string, unknown>[] = [{}];
  for (const [key, spec] of Object.entries(parameters)) {
    if (spec.kind !== 'values') throw new Error(`internal: ${key} is a distribution in a grid`);
    combos = combos.flatMap((c) => spec.values.map((v) => ({ ...c, [key]: v })));
    if (combos.length > MAX_MEMBERS) return combos;
  }
  return combos;
}

/** Six significant digits: enough for any hyperparameter, and values print and hash as shown. */
const round6 = (x: number) => Number(x.toPrecision(6));

/** One value drawn from a spec; bounds are inclusive, and rounding never leaves them. */
export function draw(spec: ParameterSpec, rng: Rng): unknown {
  const u = rng.uniform();
  switch (spec.kind) {
    case 'values':
      return spec.values[Math.min(spec.values.length - 1, Math.floor(u * spec.values.length))];
    case 'int':
      return Math.min(spec.max, spec.min + Math.floor(u * (spec.max - spec.min + 1)));
    case 'uniform':
      return Math.min(spec.max, Math.max(spec.min, round6(spec.min + u * (spec.max - spec.min))));
    case 'loguniform': {
      const [a, b] = [Math.log(spec.min), Math.log(spec.max)];
      return Math.min(spec.max, Math.max(spec.min, round6(Math.exp(a + u * (b - a)))));
    }
  }
}

/** `count` members, each parameter drawn in declaration order from one seeded stream: the same seed, the same values. */
export function randomOf(parameters: Record<string, ParameterSpec>, count: number, seed: number): Record<string, unknown>[] {
  const rng = new Rng(seed);
  return Array.from({ length: count }, () => Object.fromEntries(Object.entries(parameters).map(([k, spec]) => [k, draw(spec, rng)])));
}

/** Where `path` is written in the experiment's files (most derived first), if anywhere. */
function locateIn(files: string[], path: (string | number)[]): SourceLocation | undefined {
  for (const f of files) {
    try {
      const src = YamlSource.read(f);
      if (src.has(path)) return src.locate(path);
    } catch {
      // it loaded a moment ago; a file changed meanwhile is reported by the member load itself
    }
  }
  return undefined;
}

export interface PlanOptions extends Omit<LoadOptions, 'overrides'> {
  overrides: string[];
  projectDir: string;
}

/**
 * Plans the sweep of `base` (the experiment loaded with the plain overrides). The block's parameters come
 * first, `--sweep` ones after (replacing a block parameter of the same key); `--sweep-random N` makes it a
 * random search of N members.
 */
export function planSweep(base: LoadedExperiment, args: SweepArguments, options: PlanOptions): SweepPlan {
  const block = base.experiment.sweep;
  const fromCli = new Map<string, string>();
  const cliProblems: ConfigProblem[] = [];
  const parameters: Record<string, ParameterSpec> = block ? blockParameters(block) : {};
  for (const item of args.sweep ?? []) {
    const origin = `--sweep '${item}'`;
    const eq = item.indexOf('=');
    const key = eq < 0 ? '' : item.slice(0, eq);
    const keyProblem = eq < 0 ? "expected 'key.path=values' (e.g. stages.vqgan.with.lr=1e-3,2e-3)" : parameterKeyProblem(key);
    if (keyProblem) {
      cliProblems.push({ path: [], message: keyProblem, origin });
      continue;
    }
    try {
      parameters[key] = parseParameter(item.slice(eq + 1));
      fromCli.set(key, item);
    } catch (err) {
      if (!(err instanceof ParameterError)) throw err;
      cliProblems.push({ path: [], message: err.message, origin });
    }
  }
  if (cliProblems.length) throw new ConfigError(cliProblems);
  const keys = Object.keys(parameters);
  if (keys.length === 0) throw new ConfigError([{ path: [], message: 'a sweep needs parameters: --sweep key.path=a,b,… or a sweep: block with parameters', origin: 'command line' }]);

  const method = args.random !== undefined ? 'random' : (block?.method ?? 'grid');
  const where = (key: string): Pick<ConfigProblem, 'origin' | 'location'> =>
    fromCli.has(key) ? { origin: `--sweep '${fromCli.get(key)}'` } : { location: locateIn(base.files, ['sweep', 'parameters', key]) ?? { file: base.file } };
  if (method === 'grid') {
    const dists = keys.filter((k) => parameters[k]!.kind !== 'values');
    if (dists.length) {
      throw new ConfigError(dists.map((k) => ({ path: ['sweep', 'parameters', k], message: `${describeParameter(parameters[k]!)} is a distribution: a grid takes values; add --sweep-random N (or method: random) for a random search`, ...where(k) })));
    }
  }
  const count = args.random ?? block?.count;
  if (method === 'random' && (count === undefined || !Number.isInteger(count) || count < 1)) {
    throw new ConfigError([{ path: [], message: `a random sweep needs a positive member count (--sweep-random N, or count: in the sweep block); got ${String(count)}`, origin: 'command line' }]);
  }
  const seed = method === 'random' ? (args.seed ?? block?.seed ?? base.experiment.seed) : undefined;
  const combos = method === 'grid' ? gridOf(parameters) : randomOf(parameters, count!, seed!);
  if (combos.length > MAX_MEMBERS) {
    throw new ConfigError([{ path: [], message: `the sweep has more than ${MAX_MEMBERS} members: narrow its parameters (${keys.map((k) => `${k}: ${describeParameter(parameters[k]!)}`).join('; ')})`, origin: 'command line' }]);
  }

  const problems: ConfigProblem[] = [];
  const members: SweepMember[] = [];
  combos.forEach((values, index) => {
    const valueOverrides = Object.entries(values).map(([k, v]) => `${k}=${JSON.stringify(v)}`);
    const overrides = [...options.overrides, ...(block ? ['~sweep'] : []), ...valueOverrides];
    try {
      const loaded = loadExperiment(base.file, { ...options, overrides });
      members.push({ index, parameters: values, loaded, fingerprints: stageFingerprints(loaded) });
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      for (const p of err.problems) {
        // A problem that one of this member's values caused is reported where that parameter was written.
        const key = keys.find((k, i) => p.origin === `command-line override '${valueOverrides[i]}'`);
        const member = `sweep member ${index} (${Object.entries(values).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(', ')})`;
        problems.push(key ? { ...p, origin: undefined, location: undefined, ...where(key), message: `${member}: ${p.message}` } : { ...p, message: `${member}: ${p.message}` });
      }
    }
  });
  if (problems.length) {
    // The same problem for every member (a key that no plugin accepts) is said once.
    const seen = new Set<string>();
    throw new ConfigError(problems.filter((p) => {
      const k = `${p.origin}|${p.location?.file}:${p.location?.line}|${p.path.join('.')}|${p.message.replace(/^sweep member \d+ \([^)]*\): /, '')}`;
      return !seen.has(k) && seen.add(k);
    }));
  }

  const inProject = relative(options.projectDir, base.file);
  const experiment = inProject.startsWith('..') ? base.file : inProject;
  const fingerprint = createHash('sha256')
    .update(stableStringify({ name: base.experiment.name, experiment, method, members: members.map((m) => ({ parameters: m.parameters, stages: m.fingerprints })) }))
    .digest('hex');
  return {
    name: base.experiment.name,
    file: base.file,
    experiment,
    method,
    seed,
    parameters,
    overrides: options.overrides,
    metric: block?.metric,
    maxParallel: args.parallel ?? block?.max_parallel ?? 1,
    earlyStop: block?.early_stop,
    stages: members[0]!.loaded.order,
    members,
    fingerprint,
  };
}
