import { existsSync } from 'node:fs';
import { dirname, relative, resolve, isAbsolute } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { ConfigError, type ConfigProblem } from '../errors.js';
import type { PluginRegistry } from '../plugins/registry.js';
import { applyOverrides, parseOverride, pluginDefaults, type Override } from './overrides.js';
import { checkSweepStages, SweepSchema } from '../sweep/schema.js';
import { ANY_HOST, ResourcesSchema, RetrySchema } from './stage-placement.js';
import { keysAt, objectDefaults } from './schema-keys.js';
import { didYouMean } from './suggest.js';
import { YamlSource } from './yaml-source.js';

const STAGE_NAME = /^[a-z][a-z0-9_-]*$/;

export const StageSchema = z
  .object({
    plugin: z.string().describe('name of the plugin that runs this stage'),
    needs: z.array(z.string()).default([]).describe('stages whose outputs this stage reads'),
    host: z.string().optional().describe(`host or host group of the project inventory that runs it (default: local; '${ANY_HOST}' when resources are declared)`),
    resources: ResourcesSchema.optional().describe('what the host must offer; without host, the scheduler picks a free host that has it'),
    retry: RetrySchema.optional().describe('retries after a crash, a lost host or a preemption, resuming from the latest checkpoint'),
    description: z.string().optional(),
    with: z.record(z.string(), z.unknown()).default({}).describe("the plugin's configuration"),
  })
  .strict();

/** An experiment-level observer: a plugin whose hooks watch stages it need not be part of. */
export const ObserverSchema = z
  .object({
    plugin: z.string().describe('name of a plugin with observer hooks'),
    stages: z.array(z.string()).optional().describe('the stages it watches (default: every stage)'),
    with: z.record(z.string(), z.unknown()).default({}).describe("the plugin's configuration, validated against its schema"),
  })
  .strict();

export const ExperimentSchema = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9][\w.-]*$/, 'expected letters, digits, ".", "_" or "-"'),
    description: z.string().optional(),
    seed: z.number().int().nonnegative().default(0),
    max_parallel: z.number().int().positive().optional().describe('stages run at once (default: project config)'),
    report: z.boolean().default(false).describe('when the pipeline finishes, write runs/<pipeline>/report.html (minidalle report) and print its path'),
    tracking: z
      .object({
        tags: z.array(z.string()).default([]),
        notes: z.string().optional(),
        wandb: z
          .object({
            project: z.string().min(1).describe('W&B project the stage runs go to'),
            entity: z.string().min(1).optional().describe("W&B entity (default: WANDB_ENTITY, else the API key's default entity)"),
            tags: z.array(z.string()).optional().describe('W&B tags (default: tracking.tags)'),
            notes: z.string().optional().describe('W&B notes (default: tracking.notes)'),
          })
          .strict()
          .optional()
          .describe('replicate every stage run to W&B (WANDB_API_KEY, WANDB_BASE_URL, WANDB_MODE=offline|disabled)'),
      })
      .strict()
      .default({ tags: [] }),
    stages: z.record(z.string(), StageSchema).refine((s) => Object.keys(s).length > 0, 'an experiment needs at least one stage'),
    observers: z.array(ObserverSchema).default([]).describe('plugins whose hooks watch running stages (e.g. checkpoint-push every Nth checkpoint)'),
    sweep: SweepSchema.optional().describe('a grid or random search over this experiment: `minidalle run` runs its members (`~sweep` runs the experiment alone)'),
  })
  .strict()
  .superRefine(checkSweepStages);

export type StageConfig = z.output<typeof StageSchema>;
export type Experiment = z.output<typeof ExperimentSchema>;

export interface LoadedExperiment {
  /** Absolute path of the experiment file. */
  file: string;
  experiment: Experiment;
  /** Stage names in an order that respects `needs`. */
  order: string[];
  /** Per stage, the `with:` values that differ from the plugin's defaults. */
  changedFromDefaults: Record<string, Record<string, unknown>>;
  /** The files read, the experiment itself first, then what it extends. */
  files: string[];
  /** `version` of each stage's plugin that declares one, by plugin name (part of the stage fingerprint). */
  pluginVersions: Record<string, string>;
}

export interface LoadOptions {
  overrides?: string[];
  registry: PluginRegistry;
  /** Host names the project inventory defines (`local` always exists). */
  hosts?: string[];
  env?: NodeJS.ProcessEnv;
  /** Project directory: YAML errors in files outside it name the position and kind of error, never the file's text. Default: the experiment's folder. */
  projectDir?: string;
}

type Tree = Record<string, unknown>;
const isTree = (v: unknown): v is Tree => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Deep merge for `extends`: mappings merge key by key, everything else (lists included) is replaced. */
function merge(base: Tree, over: Tree): Tree {
  const out: Tree = { ...base };
  for (const [k, v] of Object.entries(over)) out[k] = isTree(v) && isTree(out[k]) ? merge(out[k] as Tree, v) : v;
  return out;
}

/**
 * Whether errors about `file` may quote its keys and text: it lies inside the project, or is named as YAML.
 * Anything else (`extends: /etc/shadow`) is named by position and kind of error only.
 */
function mayQuote(projectDir: string, file: string): boolean {
  const rel = relative(projectDir, file);
  return /\.ya?ml$/i.test(file) || (rel !== '' && !rel.startsWith('..') && !isAbsolute(rel));
}

/** Reads a file and the chain it extends; `sources` lists the most derived file first. */
function readChain(file: string, stack: string[], sources: YamlSource[], projectDir: string): Tree {
  const src = YamlSource.read(file, undefined, { quote: mayQuote(projectDir, file) });
  sources.push(src);
  const value = src.value();
  const ext = value.extends;
  delete value.extends;
  if (ext === undefined) return value;
  const list = typeof ext === 'string' ? [ext] : ext;
  if (!Array.isArray(list) || list.some((e) => typeof e !== 'string')) {
    throw new ConfigError([{ path: ['extends'], message: 'expected a file path or a list of file paths', location: src.locate(['extends']) }]);
  }
  let base: Tree = {};
  (list as string[]).forEach((rel, i) => {
    const target = resolve(dirname(file), rel);
    const location = src.locate(typeof ext === 'string' ? ['extends'] : ['extends', i]);
    if (stack.includes(target) || target === file) {
      const cycle = [...stack, file, target].slice(stack.indexOf(target) >= 0 ? stack.indexOf(target) : 0);
      throw new ConfigError([{ path: ['extends'], message: `'extends' forms a cycle: ${cycle.join(' → ')}`, location }]);
    }
    if (!existsSync(target)) throw new ConfigError([{ path: ['extends'], message: `'${rel}' does not exist (resolved to ${target})`, location }]);
    base = merge(base, readChain(target, [...stack, file], sources, projectDir));
  });
  return merge(base, value);
}

const INTERPOLATION = /\$\{([^}]*)\}/g;
const STAGE_REF = /^stages\.([a-z][a-z0-9_-]*)\.(out|artifacts\.[\w.-]+)$/;

/** Resolves `${env:NAME}` / `${env:NAME:-default}` now; checks `${stages.x.…}` references (resolved when x has run). */
function interpolate(value: unknown, path: (string | number)[], env: NodeJS.ProcessEnv, problems: ConfigProblem[]): unknown {
  if (Array.isArray(value)) return value.map((v, i) => interpolate(v, [...path, i], env, problems));
  if (isTree(value)) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, interpolate(v, [...path, k], env, problems)]));
  if (typeof value !== 'string' || !value.includes('${')) return value;
  let whole = false;
  const out = value.replace(INTERPOLATION, (match, expr: string, offset: number) => {
    whole = match.length === value.length && offset === 0;
    if (expr.startsWith('env:')) {
      const [name, fallback] = expr.slice(4).split(':-', 2) as [string, string | undefined];
      const v = env[name];
      if (v !== undefined) return v;
      if (fallback !== undefined) return fallback;
      problems.push({ path, message: `environment variable ${name} is not set (write \${env:${name}:-default} for a default)` });
      return match;
    }
    const ref = STAGE_REF.exec(expr);
    if (ref && path[0] === 'stages') return match; // checked against `needs` by the caller
    problems.push({ path, message: `unknown interpolation '${match}': use \${env:NAME} or \${stages.<stage>.out} / \${stages.<stage>.artifacts.<name>} inside a stage's with:` });
    return match;
  });
  // A value that is one env interpolation takes the YAML type of what it expands to (steps: ${env:STEPS} → number).
  return whole && value.startsWith('${env:') ? parseYaml(out, { schema: 'core' }) ?? out : out;
}

/** Stage names referenced as `${stages.<name>.…}` anywhere inside `value`. */
export function stageReferences(value: unknown): Set<string> {
  const found = new Set<string>();
  const walk = (v: unknown): void => {
    if (typeof v === 'string') for (const m of v.matchAll(INTERPOLATION)) STAGE_REF.exec(m[1]!)?.[1] && found.add(STAGE_REF.exec(m[1]!)![1]!);
    else if (Array.isArray(v)) v.forEach(walk);
    else if (isTree(v)) Object.values(v).forEach(walk);
  };
  walk(value);
  return found;
}

/** Stage order respecting `needs` (declaration order among equals), or the cycle found. */
function topologicalOrder(stages: Record<string, StageConfig>): { order: string[]; cycle?: string[] } {
  const order: string[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  let cycle: string[] | undefined;
  const visit = (name: string, trail: string[]): void => {
    if (cycle || state.get(name) === 'done' || !stages[name]) return;
    if (state.get(name) === 'visiting') {
      cycle = [...trail.slice(trail.indexOf(name)), name];
      return;
    }
    state.set(name, 'visiting');
    for (const dep of stages[name]!.needs) visit(dep, [...trail, name]);
    state.set(name, 'done');
    order.push(name);
  };
  for (const name of Object.keys(stages)) visit(name, []);
  return { order, cycle };
}

/**
 * Loads an experiment: reads the `extends` chain, applies command-line overrides, resolves `${env:…}`,
 * validates the whole file and every stage's `with:` against its plugin's schema. Nothing runs before this
 * succeeds; every problem names its file, line and key.
 */
export function loadExperiment(file: string, options: LoadOptions): LoadedExperiment {
  const path = resolve(file);
  if (!existsSync(path)) throw new ConfigError([{ path: [], message: 'experiment file not found', location: { file } }]);
  const sources: YamlSource[] = [];
  const base = readChain(path, [], sources, resolve(options.projectDir ?? dirname(path)));
  const overrides: Override[] = (options.overrides ?? []).map(parseOverride);
  const merged = applyOverrides(base, overrides, { defaultAt: pluginDefaults(options.registry) });

  const locate = (problem: ConfigProblem): ConfigProblem => {
    // The last override that set this value (or a mapping above it), or that created the mapping the problem is in.
    const o = overrides.findLast((ov) => {
      let common = 0;
      while (common < ov.path.length && common < problem.path.length && ov.path[common] === String(problem.path[common])) common++;
      if (common === ov.path.length) return ov.op !== 'delete';
      return common > 0 && !sources.some((s) => s.has(problem.path.slice(0, common)));
    });
    if (o) return { ...problem, origin: `command-line override '${o.text}'` };
    for (let n = problem.path.length; n >= 0; n--) {
      const src = sources.find((s) => s.has(problem.path.slice(0, n)));
      if (src && !src.quote) {
        // A file outside the project (`extends: /etc/…`): its keys and text are not echoed.
        const message = 'not valid experiment config (the file is outside the project and not named .yaml, so its content is not shown; is it an experiment YAML file?)';
        return { path: [], message, location: src.locate(problem.path.slice(0, n)) };
      }
      if (src) return { ...problem, location: src.locate(problem.path.slice(0, n)) };
    }
    return { ...problem, location: { file: path } };
  };
  const fail = (problems: ConfigProblem[]): never => {
    throw new ConfigError(problems.map(locate));
  };

  const envProblems: ConfigProblem[] = [];
  const interpolated = interpolate(merged, [], options.env ?? process.env, envProblems) as Tree;
  if (envProblems.length) fail(envProblems);
  if (interpolated.name === undefined) interpolated.name = path.replace(/^.*\//, '').replace(/\.ya?ml$/, '');

  const parsed = ExperimentSchema.safeParse(interpolated);
  if (!parsed.success) fail(zodProblems(parsed.error, ExperimentSchema, []));
  const experiment = parsed.data!;

  const problems: ConfigProblem[] = [];
  const hosts = new Set(['local', ...(options.hosts ?? [])]);
  const stageNames = Object.keys(experiment.stages);
  const changedFromDefaults: Record<string, Record<string, unknown>> = {};
  const pluginVersions: Record<string, string> = {};
  for (const [name, stage] of Object.entries(experiment.stages)) {
    const at = (...rest: (string | number)[]) => ['stages', name, ...rest];
    if (!STAGE_NAME.test(name)) problems.push({ path: at(), message: `stage names are lower-case letters, digits, '_' and '-'` });
    stage.needs.forEach((dep, i) => {
      if (!experiment.stages[dep]) problems.push({ path: at('needs', i), message: `unknown stage '${dep}'${didYouMean(dep, stageNames)}` });
    });
    for (const ref of stageReferences(stage.with)) {
      if (!stage.needs.includes(ref)) problems.push({ path: at('with'), message: `refers to \${stages.${ref}…} but '${ref}' is not in needs: add it to needs` });
    }
    stage.host ??= stage.resources ? ANY_HOST : 'local';
    if (!hosts.has(stage.host)) {
      problems.push({ path: at('host'), message: `unknown host '${stage.host}'${didYouMean(stage.host, hosts)} (hosts: ${[...hosts].join(', ')}; define hosts in the project config)` });
    }
    const plugin = options.registry.get(stage.plugin);
    if (!plugin) {
      problems.push({ path: at('plugin'), message: `unknown plugin '${stage.plugin}'${didYouMean(stage.plugin, options.registry.names())} (see \`minidalle plugins\`)` });
      continue;
    }
    if (plugin.version !== undefined) pluginVersions[plugin.name] = String(plugin.version);
    const withParsed = plugin.config.safeParse(stage.with);
    if (!withParsed.success) {
      problems.push(...zodProblems(withParsed.error, plugin.config, at('with')));
      continue;
    }
    stage.with = withParsed.data as Record<string, unknown>;
    const defaults = objectDefaults(plugin.config);
    changedFromDefaults[name] = Object.fromEntries(
      Object.entries(stage.with).filter(([k, v]) => JSON.stringify(v) !== JSON.stringify(defaults[k])),
    );
  }
  experiment.observers.forEach((o, i) => {
    const at = (...rest: (string | number)[]) => ['observers', i, ...rest];
    o.stages?.forEach((s, j) => {
      if (!experiment.stages[s]) problems.push({ path: at('stages', j), message: `unknown stage '${s}'${didYouMean(s, stageNames)}` });
    });
    const plugin = options.registry.get(o.plugin);
    if (!plugin) {
      problems.push({ path: at('plugin'), message: `unknown plugin '${o.plugin}'${didYouMean(o.plugin, options.registry.names())} (see \`minidalle plugins\`)` });
      return;
    }
    if (Object.keys(plugin.hooks ?? {}).length === 0) {
      problems.push({ path: at('plugin'), message: `plugin '${o.plugin}' has no observer hooks: it can run as a stage, not watch one` });
      return;
    }
    const withParsed = plugin.config.safeParse(o.with);
    if (!withParsed.success) problems.push(...zodProblems(withParsed.error, plugin.config, at('with')));
    else o.with = withParsed.data as Record<string, unknown>;
  });
  const { order, cycle } = topologicalOrder(experiment.stages);
  if (cycle) problems.push({ path: ['stages', cycle[0]!, 'needs'], message: `stages form a cycle: ${cycle.join(' → ')}` });
  if (problems.length) fail(problems);
  return { file: path, experiment, order, changedFromDefaults, files: sources.map((s) => s.file), pluginVersions };
}

/** zod issues as problems with key paths and, for unknown keys, the nearest valid key. */
export function zodProblems(error: z.ZodError, schema: z.ZodType, prefix: (string | number)[]): ConfigProblem[] {
  const out: ConfigProblem[] = [];
  for (const issue of error.issues) {
    const path = [...prefix, ...(issue.path as (string | number)[])];
    if (issue.code === 'unrecognized_keys') {
      const valid = keysAt(schema, issue.path as (string | number)[]);
      for (const key of issue.keys) {
        out.push({ path: [...path, key], message: `unknown key '${key}'${didYouMean(key, valid)}${valid.length ? ` (valid keys: ${valid.join(', ')})` : ''}` });
      }
    } else {
      out.push({ path, message: issue.message });
    }
  }
  return out;
}
