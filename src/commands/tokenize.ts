/**
 * `minidalle tokenize --tokenizer <dir|tokenizer.json> [--no-special] [--max-length N] [--decode] [text…]`:
 * one JSON array of ids per text (stdin lines when no text is given), so a user can check a tokenizer.
 * With --decode each input is a list of ids (a JSON array, or integers separated by spaces or commas) and
 * each output line is the decoded text as a JSON string (so newlines and spaces stay visible).
 */
import { createInterface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';
import { TokenizerError } from '../ml/tokenizers/errors.js';
import { loadTokenizer } from '../ml/tokenizers/load.js';

export interface TokenizeArgs {
  tokenizer: string;
  /** Texts (or, with decode, id lists); empty: read lines from `input`. */
  texts: string[];
  /** Add special tokens when encoding / keep them when decoding. */
  special: boolean;
  maxLength?: number;
  decode: boolean;
  input?: Readable;
  output?: Writable;
}

/** "[0, 5, 2]" or "0 5 2" or "0,5,2" → ids. */
export function parseIds(text: string, where: string): number[] {
  const t = text.trim();
  let values: unknown;
  try {
    values = t.startsWith('[') ? JSON.parse(t) : t === '' ? [] : t.split(/[\s,]+/).map(Number);
  } catch {
    values = undefined;
  }
  if (!Array.isArray(values) || !values.every((v) => Number.isInteger(v) && v >= 0)) {
    throw new TokenizerError(`${where}: expected ids to decode (a JSON array like [0, 9, 2] or integers separated by spaces), got ${JSON.stringify(text)}`);
  }
  return values as number[];
}

async function* lines(input: Readable): AsyncGenerator<string> {
  const rl = createInterface({ input, crlfDelay: Infinity });
  for await (const line of rl) yield line;
}

export async function tokenizeCommand(args: TokenizeArgs): Promise<void> {
  const output = args.output ?? process.stdout;
  if (args.maxLength !== undefined && (!Number.isInteger(args.maxLength) || args.maxLength < 1)) {
    throw new TokenizerError(`--max-length must be a positive integer, got ${args.maxLength}`);
  }
  const tok = await loadTokenizer(args.tokenizer);
  const one = (text: string, n: number): string => {
    if (args.decode) return JSON.stringify(tok.decode(parseIds(text, `input ${n}`), { skipSpecial: !args.special }));
    const ids = tok.encode(text, args.maxLength === undefined ? { addSpecial: args.special } : { addSpecial: args.special, maxLength: args.maxLength }).ids;
    return JSON.stringify(ids);
  };
  const source: AsyncIterable<string> | Iterable<string> = args.texts.length > 0 ? args.texts : lines(args.input ?? process.stdin);
  let n = 0;
  let chunk = '';
  for await (const text of source) {
    chunk += `${one(text, ++n)}\n`;
    if (chunk.length > 1 << 16) {
      output.write(chunk);
      chunk = '';
    }
  }
  output.write(chunk);
}
