import { DataSourceError } from './errors.js';

/**
 * Expands shell/webdataset brace patterns: `data/{00000..00012}.tar` (numeric ranges keep the zero
 * padding of the first bound) and `{train,val}-0.tar` (alternatives). Several groups multiply out, in
 * order. A pattern without braces is returned as is.
 */
export function expandBraces(pattern: string): string[] {
  const open = pattern.indexOf('{');
  if (open < 0) return [pattern];
  const close = pattern.indexOf('}', open);
  if (close < 0) throw new DataSourceError(pattern, 'unbalanced "{" in brace pattern (expected e.g. {00000..00012})');
  const head = pattern.slice(0, open);
  const body = pattern.slice(open + 1, close);
  const tails = expandBraces(pattern.slice(close + 1));
  const range = /^(\d+)\.\.(\d+)$/.exec(body);
  let options: string[];
  if (range) {
    const [, a = '', b = ''] = range;
    const from = Number(a);
    const to = Number(b);
    if (to < from) throw new DataSourceError(pattern, `brace range {${body}} runs backwards`);
    const width = a.length;
    options = [];
    for (let i = from; i <= to; i++) options.push(String(i).padStart(width, '0'));
  } else {
    options = body.split(',');
  }
  const out: string[] = [];
  for (const o of options) for (const t of tails) out.push(head + o + t);
  return out;
}

/** Inverse for the common case: a numbered shard list `prefix{00000..000NN}suffix`. */
export function braceRange(prefix: string, count: number, suffix: string, width = 5): string {
  if (count <= 0) throw new RangeError('braceRange: count must be positive');
  if (count === 1) return `${prefix}${'0'.padStart(width, '0')}${suffix}`;
  return `${prefix}{${'0'.padStart(width, '0')}..${String(count - 1).padStart(width, '0')}}${suffix}`;
}
