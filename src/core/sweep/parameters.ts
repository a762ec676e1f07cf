/**
 * What a swept parameter ranges over, and the small expression grammar that writes it (on the command line
 * after `--sweep key=…`, or as a string in a `sweep:` block):
 *   `1e-3,2e-3,4e-3`       the listed values (YAML flow values: `[1,2],[1,2,2]` is two lists)
 *   `choice(a, b, c)`      the same, spelled as Hydra does
 *   `range(start, stop)`   start, start+step, … below stop (Hydra's / Python's range; `range(a, b, step)`)
 *   `uniform(a, b)`        random search: a real in [a, b]
 *   `loguniform(a, b)`     random search: a real in [a, b] whose logarithm is uniform (learning rates); 0 < a
 *   `int(a, b)`            random search: an integer in [a, b], both ends included
 */
import { parse as parseYaml } from 'yaml';

export type ParameterSpec =
  | { kind: 'values'; values: unknown[] }
  | { kind: 'uniform' | 'loguniform' | 'int'; min: number; max: number };

export const DISTRIBUTIONS = ['uniform', 'loguniform', 'int'] as const;
export type Distribution = (typeof DISTRIBUTIONS)[number];

export class ParameterError extends Error {
  override name = 'ParameterError';
}

/** Splits at commas outside brackets, braces, parentheses and quotes. */
export function splitTopLevel(text: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let quote: string | undefined;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quote) {
      if (c === '\\' && quote === '"') i++;
      else if (c === quote) quote = undefined;
    } else if (c === '"' || c === "'") quote = c;
    else if ('[{('.includes(c)) depth++;
    else if (']})'.includes(c)) depth--;
    else if (c === ',' && depth === 0) {
      parts.push(text.slice(start, i));
      start = i + 1;
    }
    if (depth < 0) throw new ParameterError(`unbalanced '${c}' at character ${i + 1}`);
  }
  if (quote) throw new ParameterError(`unterminated ${quote} quote`);
  if (depth !== 0) throw new ParameterError('unbalanced brackets');
  parts.push(text.slice(start));
  return parts.map((p) => p.trim());
}

function yamlValue(text: string): unknown {
  if (text === '') throw new ParameterError('an empty value (two commas in a row, or a trailing comma?)');
  try {
    return parseYaml(text, { schema: 'core' }) ?? null;
  } catch (err) {
    throw new ParameterError(`'${text}' is not a YAML value (${(err as Error).message.split('\n')[0]})`);
  }
}

function numberArg(fn: string, text: string): number {
  const v = yamlValue(text);
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new ParameterError(`${fn}(…) takes numbers, got '${text}'`);
  return v;
}

/** Rounds away float noise (0.1 + 0.2) so range values print and hash as written. */
const tidy = (x: number) => Number(x.toPrecision(12));

function range(args: number[]): unknown[] {
  if (args.length < 2 || args.length > 3) throw new ParameterError(`range(start, stop[, step]) takes 2 or 3 numbers, got ${args.length}`);
  const [start, stop, step = 1] = args as [number, number, number?];
  if (step === 0) throw new ParameterError('range(…): step must not be 0');
  const values: number[] = [];
  for (let i = 0; ; i++) {
    const v = tidy(start + i * step);
    if (step > 0 ? v >= stop : v <= stop) break;
    values.push(v);
    if (values.length > 10_000) throw new ParameterError('range(…) gives more than 10,000 values');
  }
  if (values.length === 0) throw new ParameterError(`range(${args.join(', ')}) is empty`);
  return values;
}

/** Checks bounds of a distribution; the message says what was expected. */
export function checkDistribution(kind: Distribution, min: number, max: number): void {
  if (!Number.isFinite(min) || !Number.isFinite(max)) throw new ParameterError(`${kind}: min and max must be finite numbers`);
  if (min >= max) throw new ParameterError(`${kind}(${min}, ${max}): min must be below max`);
  if (kind === 'loguniform' && min <= 0) throw new ParameterError(`loguniform(${min}, ${max}): both bounds must be > 0 (it is uniform in log space)`);
  if (kind === 'int' && (!Number.isInteger(min) || !Number.isInteger(max))) throw new ParameterError(`int(${min}, ${max}): bounds must be integers`);
}

const CALL = /^([a-z]+)\s*\(([\s\S]*)\)$/;

/** Parses one sweep expression (see the file comment). */
export function parseParameter(text: string): ParameterSpec {
  const expr = text.trim();
  const call = CALL.exec(expr);
  if (call) {
    const [, fn, inner] = call as unknown as [string, string, string];
    const args = inner.trim() === '' ? [] : splitTopLevel(inner);
    if (fn === 'choice') {
      if (args.length === 0) throw new ParameterError('choice() needs at least one value');
      return { kind: 'values', values: args.map(yamlValue) };
    }
    if (fn === 'range') return { kind: 'values', values: range(args.map((a) => numberArg('range', a))) };
    if ((DISTRIBUTIONS as readonly string[]).includes(fn)) {
      if (args.length !== 2) throw new ParameterError(`${fn}(min, max) takes 2 numbers, got ${args.length}`);
      const [min, max] = args.map((a) => numberArg(fn, a)) as [number, number];
      checkDistribution(fn as Distribution, min, max);
      return { kind: fn as Distribution, min, max };
    }
    throw new ParameterError(`unknown function '${fn}(…)': use choice, range, uniform, loguniform or int`);
  }
  return { kind: 'values', values: splitTopLevel(expr).map(yamlValue) };
}

export function describeParameter(p: ParameterSpec): string {
  return p.kind === 'values' ? p.values.map((v) => JSON.stringify(v)).join(', ') : `${p.kind}(${p.min}, ${p.max})`;
}
