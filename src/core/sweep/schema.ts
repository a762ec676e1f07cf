/**
 * The `sweep:` block of an experiment: a grid or random search over override paths of the same experiment.
 *
 *   sweep:
 *     method: random                  # grid (every combination) | random (count draws)
 *     count: 4
 *     seed: 0                         # default: the experiment seed
 *     parameters:
 *       stages.vqgan.with.lr: { distribution: loguniform, min: 1.0e-3, max: 1.0e-2 }
 *       stages.vqgan.with.batch_size: { values: [8, 16] }      # or [8, 16], or "choice(8, 16)"
 *       stages.vqgan.with.model.ch: "range(16, 33, 8)"
 *     metric: { name: eval/psnr, goal: maximize, stage: vqgan }
 *     max_parallel: 1                 # members at once
 *     early_stop: { step: 500, min_members: 3 }   # median rule
 *
 * Parameters are validated here by hand (not by zod unions) so every problem names its key and says what was
 * expected; each member's values are validated again against the plugins' schemas when the members are planned.
 */
import { z } from 'zod';
import { didYouMean } from '../config/suggest.js';
import { keyPathProblem } from '../config/overrides.js';
import { checkDistribution, DISTRIBUTIONS, parseParameter, ParameterError, type Distribution, type ParameterSpec } from './parameters.js';

export const SweepMetricSchema = z
  .object({
    name: z.string().min(1).describe('summary metric to rank members by (e.g. eval/psnr)'),
    goal: z.enum(['minimize', 'maximize']).describe('whether lower or higher is better'),
    stage: z.string().optional().describe('stage whose summary holds it (default: the last stage in order that logged it)'),
  })
  .strict();

export const EarlyStopSchema = z
  .object({
    rule: z.literal('median').default('median').describe('median stopping rule: stop a member whose metric at `step` is worse than the median of the members that reached it before'),
    step: z.number().int().positive().describe('step at which a member is judged'),
    min_members: z.number().int().positive().default(3).describe('members that must have reached the step before any member is judged'),
  })
  .strict();

const PARAMETER_KEYS = ['values', 'value', 'distribution', 'min', 'max'];

type Tree = Record<string, unknown>;
const isTree = (v: unknown): v is Tree => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * A parameter as written in YAML → its spec, or the problem (relative key path + message). A string is an
 * expression (`loguniform(1e-4, 1e-2)`), a list its values, a mapping `values` / `value` / `distribution`+min+max.
 */
export function parameterFromYaml(raw: unknown): { spec: ParameterSpec } | { path: (string | number)[]; message: string } {
  const fail = (message: string, path: (string | number)[] = []) => ({ path, message });
  if (typeof raw === 'string') {
    try {
      return { spec: parseParameter(raw) };
    } catch (err) {
      if (err instanceof ParameterError) return fail(err.message);
      throw err;
    }
  }
  if (Array.isArray(raw)) return raw.length ? { spec: { kind: 'values', values: raw } } : fail('empty list of values: give at least one');
  if (!isTree(raw)) {
    return fail(`expected values ([a, b]), a mapping (values: / distribution: with min: and max:), or an expression such as "loguniform(1e-4, 1e-2)"; got ${raw === null ? 'null' : typeof raw}`);
  }
  for (const k of Object.keys(raw)) {
    if (!PARAMETER_KEYS.includes(k)) return fail(`unknown key '${k}'${didYouMean(k, PARAMETER_KEYS)} (valid keys: ${PARAMETER_KEYS.join(', ')})`, [k]);
  }
  const given = PARAMETER_KEYS.filter((k) => k in raw && k !== 'min' && k !== 'max');
  if (given.length !== 1) return fail(`give exactly one of values:, value: or distribution: (got ${given.length ? given.join(', ') : 'none'})`);
  if ('values' in raw) {
    if ('min' in raw || 'max' in raw) return fail('min/max belong to a distribution, not to values', ['min' in raw ? 'min' : 'max']);
    if (!Array.isArray(raw.values)) return fail('expected a list of values', ['values']);
    if (raw.values.length === 0) return fail('empty list of values: give at least one', ['values']);
    return { spec: { kind: 'values', values: raw.values } };
  }
  if ('value' in raw) return { spec: { kind: 'values', values: [raw.value] } };
  const dist = raw.distribution;
  if (typeof dist !== 'string' || !(DISTRIBUTIONS as readonly string[]).includes(dist)) {
    return fail(`unknown distribution '${String(dist)}'${typeof dist === 'string' ? didYouMean(dist, DISTRIBUTIONS) : ''} (valid: ${DISTRIBUTIONS.join(', ')})`, ['distribution']);
  }
  for (const k of ['min', 'max'] as const) {
    if (typeof raw[k] !== 'number') return fail(`${dist} needs a number ${k}:`, k in raw ? [k] : []);
  }
  try {
    checkDistribution(dist as Distribution, raw.min as number, raw.max as number);
  } catch (err) {
    if (err instanceof ParameterError) return fail(err.message, ['min']);
    throw err;
  }
  return { spec: { kind: dist as Distribution, min: raw.min as number, max: raw.max as number } };
}

/** Why `key` cannot be swept ('' when it can): it must be a plain override path. */
export function parameterKeyProblem(key: string): string {
  if (/^[+~]/.test(key)) return `'${key}': a parameter is a key path (stages.vqgan.with.lr), without '+', '++' or '~'`;
  const problem = keyPathProblem(key);
  if (problem) return `'${key}' is not a key path: ${problem}`;
  if (key === 'sweep' || key.startsWith('sweep.')) return 'the sweep block itself cannot be swept';
  return '';
}

export const SweepSchema = z
  .object({
    method: z.enum(['grid', 'random']).default('grid').describe('grid: every combination of the values; random: `count` draws from the distributions'),
    parameters: z
      .record(z.string(), z.unknown(), {
        error: (iss) => (iss.input === undefined ? 'a sweep needs parameters: (override path → values, distribution or expression)' : 'expected a mapping of override paths (stages.vqgan.with.lr: …)'),
      })
      .describe('override path → values, distribution or expression'),
    count: z.number().int().positive().optional().describe('members of a random sweep'),
    seed: z.number().int().nonnegative().optional().describe('seed of a random sweep (default: the experiment seed)'),
    metric: SweepMetricSchema.optional().describe('what `minidalle sweep <id>` ranks by'),
    max_parallel: z.number().int().positive().default(1).describe('members run at once'),
    early_stop: EarlyStopSchema.optional().describe('stop members that trail the median at a step'),
  })
  .strict()
  .superRefine((sweep, ctx) => {
    const issue = (path: (string | number)[], message: string) => ctx.addIssue({ code: 'custom', path, message });
    const keys = Object.keys(sweep.parameters);
    if (keys.length === 0) issue(['parameters'], 'a sweep needs at least one parameter (an override path such as stages.vqgan.with.lr)');
    for (const key of keys) {
      const keyProblem = parameterKeyProblem(key);
      if (keyProblem) {
        issue(['parameters', key], keyProblem);
        continue;
      }
      const r = parameterFromYaml(sweep.parameters[key]);
      if ('message' in r) issue(['parameters', key, ...r.path], r.message);
      else if (sweep.method === 'grid' && r.spec.kind !== 'values') {
        issue(['parameters', key], `${r.spec.kind}(…) is a distribution: it needs method: random (a grid takes lists of values)`);
      }
    }
    if (sweep.method === 'random' && sweep.count === undefined) issue(['count'], 'a random sweep needs count: (how many members to draw)');
    if (sweep.method === 'grid' && sweep.count !== undefined) issue(['count'], 'count: is for method: random; a grid runs every combination');
    if (sweep.method === 'grid' && sweep.seed !== undefined) issue(['seed'], 'seed: is for method: random; a grid draws nothing');
    if (sweep.early_stop && !sweep.metric) issue(['early_stop'], 'early stopping judges members by the metric: add metric: { name, goal }');
  });

export type SweepBlock = z.output<typeof SweepSchema>;

/** Cross-checks of the sweep block against the stages (for the experiment schema's superRefine). */
export function checkSweepStages(exp: { stages: Record<string, unknown>; sweep?: SweepBlock }, ctx: z.RefinementCtx): void {
  if (!exp.sweep) return;
  const stages = Object.keys(exp.stages);
  const stage = exp.sweep.metric?.stage;
  if (stage !== undefined && !stages.includes(stage)) {
    ctx.addIssue({ code: 'custom', path: ['sweep', 'metric', 'stage'], message: `unknown stage '${stage}'${didYouMean(stage, stages)} (stages: ${stages.join(', ')})` });
  }
  for (const key of Object.keys(exp.sweep.parameters)) {
    const [top, name] = key.split('.');
    if (top === 'stages' && name !== undefined && !stages.includes(name)) {
      ctx.addIssue({ code: 'custom', path: ['sweep', 'parameters', key], message: `no stage '${name}'${didYouMean(name, stages)} (stages: ${stages.join(', ')})` });
    }
  }
}

/** The validated block's parameters as specs (the schema has checked them). */
export function blockParameters(block: SweepBlock): Record<string, ParameterSpec> {
  return Object.fromEntries(
    Object.entries(block.parameters).map(([k, raw]) => {
      const r = parameterFromYaml(raw);
      if ('message' in r) throw new Error(`internal: sweep parameter ${k} was not validated: ${r.message}`);
      return [k, r.spec];
    }),
  );
}
