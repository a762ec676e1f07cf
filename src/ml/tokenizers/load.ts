/**
 * Reading and writing tokenizers on disk, in the two layouts Hugging Face uses:
 * - `tokenizer.json` (the `tokenizers` library's file; merges as `"a b"` strings or `["a", "b"]` pairs);
 * - the older folder of `vocab.json` + `merges.txt` (GPT-2, RoBERTa, BART), turned into the tokenizer.json
 *   that transformers' converter would make from them (ByteLevel pre-tokenizer and decoder; RoBERTa's
 *   `<s> $A </s>` post-processor when the vocabulary has `<s>` and `</s>`).
 * A `tokenizer_config.json` (or `special_tokens_map.json`) beside either names the special tokens.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { TokenizerError } from './errors.js';
import { TextTokenizer, type AddedTokenJson, type ComponentJson, type SpecialTokenNames, type TokenizerJson } from './tokenizer.js';

const KEYS: Record<keyof SpecialTokenNames, string> = { bos: 'bos_token', eos: 'eos_token', pad: 'pad_token', unk: 'unk_token', mask: 'mask_token' };

async function readJson(file: string, what: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new TokenizerError(`cannot read ${what}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, file);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new TokenizerError(`not valid JSON (expected ${what}): ${(err as Error).message}`, file);
  }
}

function isObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/** Special-token names from tokenizer_config.json / special_tokens_map.json in `dir` (strings or {content}). */
async function readSpecialNames(dir: string): Promise<{ names: SpecialTokenNames; addPrefixSpace?: boolean }> {
  const names: SpecialTokenNames = {};
  let addPrefixSpace: boolean | undefined;
  for (const f of ['special_tokens_map.json', 'tokenizer_config.json']) {
    const file = join(dir, f);
    if (!existsSync(file)) continue;
    const cfg = await readJson(file, `a ${f} object`);
    if (!isObject(cfg)) throw new TokenizerError(`expected a JSON object (${f})`, file);
    for (const [key, field] of Object.entries(KEYS) as [keyof SpecialTokenNames, string][]) {
      const v = cfg[field];
      const name = typeof v === 'string' ? v : isObject(v) && typeof v['content'] === 'string' ? v['content'] : undefined;
      if (name !== undefined) names[key] = name;
    }
    if (typeof cfg['add_prefix_space'] === 'boolean') addPrefixSpace = cfg['add_prefix_space'];
  }
  return addPrefixSpace === undefined ? { names } : { names, addPrefixSpace };
}

/** Checks the parts of a tokenizer.json we rely on, naming the file and the field. */
export function validateTokenizerJson(x: unknown, file: string): TokenizerJson {
  if (!isObject(x)) throw new TokenizerError('expected a tokenizer.json object (with "model", "added_tokens", …)', file);
  const model = x['model'];
  if (!isObject(model)) throw new TokenizerError('no "model" object: expected a Hugging Face tokenizer.json', file);
  if (model['type'] === 'BPE' || model['type'] === undefined) {
    if (!isObject(model['vocab'])) throw new TokenizerError('model.vocab must be an object of token → id', file);
    const merges = model['merges'];
    if (!Array.isArray(merges)) throw new TokenizerError('model.merges must be a list of "a b" strings or ["a", "b"] pairs', file);
    merges.forEach((m: unknown, i) => {
      const ok = typeof m === 'string' ? m.split(' ').length === 2 : Array.isArray(m) && m.length === 2 && m.every((s) => typeof s === 'string');
      if (!ok) throw new TokenizerError(`model.merges[${i}] is ${JSON.stringify(m)}; expected "a b" or ["a", "b"]`, file);
    });
  }
  const added = x['added_tokens'] ?? [];
  if (!Array.isArray(added) || !added.every((t) => isObject(t) && typeof t['id'] === 'number' && typeof t['content'] === 'string')) {
    throw new TokenizerError('added_tokens must be a list of {id, content, …}', file);
  }
  const part = (k: string) => {
    const v = x[k] ?? null;
    if (v !== null && !(isObject(v) && typeof v['type'] === 'string')) throw new TokenizerError(`${k} must be null or an object with a "type"`, file);
    return v;
  };
  return {
    ...x,
    added_tokens: added as AddedTokenJson[],
    normalizer: part('normalizer'),
    pre_tokenizer: part('pre_tokenizer'),
    post_processor: part('post_processor'),
    decoder: part('decoder'),
  } as TokenizerJson;
}

/** merges.txt → pairs: an optional `#version` first line, then one `a b` per line. */
export function parseMergesTxt(text: string, file = 'merges.txt'): [string, string][] {
  const lines = text.split('\n');
  const out: [string, string][] = [];
  lines.forEach((raw, i) => {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (line === '' || (i === 0 && line.startsWith('#version'))) return;
    const parts = line.split(' ');
    if (parts.length !== 2 || parts[0] === '' || parts[1] === '') throw new TokenizerError(`line ${i + 1}: expected "left right" (two tokens, one space), got ${JSON.stringify(line)}`, file);
    out.push(parts as [string, string]);
  });
  return out;
}

/** vocab.json + merges.txt → the tokenizer.json transformers' GPT-2 / RoBERTa converters produce. */
export function byteLevelJsonFromVocab(
  vocab: Record<string, number>,
  merges: [string, string][],
  names: SpecialTokenNames = {},
  addPrefixSpace = false,
): TokenizerJson {
  const pick = (key: keyof SpecialTokenNames, conventional: string[]) => names[key] ?? conventional.find((t) => t in vocab);
  const bos = pick('bos', ['<s>', '<|endoftext|>']);
  const eos = pick('eos', ['</s>', '<|endoftext|>']);
  const specials = [...new Set([bos, pick('pad', ['<pad>']), eos, pick('unk', ['<unk>']), pick('mask', ['<mask>'])])].filter((t): t is string => t !== undefined);
  const added: AddedTokenJson[] = specials
    .map((content) => {
      const id = vocab[content];
      if (id === undefined) throw new TokenizerError(`special token "${content}" is not in vocab.json`);
      return { id, content, single_word: false, lstrip: content === names.mask || content === '<mask>', rstrip: false, normalized: false, special: true };
    })
    .sort((a, b) => a.id - b.id);
  const roberta = bos !== undefined && eos !== undefined && bos !== eos;
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: addPrefixSpace, trim_offsets: true, use_regex: true },
    post_processor: roberta
      ? { type: 'RobertaProcessing', sep: [eos, vocab[eos]], cls: [bos, vocab[bos]], trim_offsets: true, add_prefix_space: addPrefixSpace }
      : { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
}

/**
 * A tokenizer from a `tokenizer.json` file, or a folder holding `tokenizer.json` or `vocab.json` +
 * `merges.txt` (a path to that vocab.json works too).
 */
export async function loadTokenizer(pathOrDir: string): Promise<TextTokenizer> {
  if (!existsSync(pathOrDir)) throw new TokenizerError('no such file or folder; expected a tokenizer.json, or a folder with tokenizer.json or vocab.json + merges.txt', pathOrDir);
  const isDir = statSync(pathOrDir).isDirectory();
  const dir = isDir ? pathOrDir : dirname(pathOrDir);
  const { names, addPrefixSpace } = await readSpecialNames(dir);
  const tokenizerFile = isDir ? join(dir, 'tokenizer.json') : basename(pathOrDir) === 'vocab.json' ? undefined : pathOrDir;
  if (tokenizerFile !== undefined && existsSync(tokenizerFile)) {
    const json = validateTokenizerJson(await readJson(tokenizerFile, 'a Hugging Face tokenizer.json'), tokenizerFile);
    return new TextTokenizer(json, tokenizerFile, names);
  }
  const vocabFile = join(dir, 'vocab.json');
  const mergesFile = join(dir, 'merges.txt');
  if (!existsSync(vocabFile) || !existsSync(mergesFile)) {
    throw new TokenizerError(
      `no tokenizer here: expected tokenizer.json, or vocab.json + merges.txt (found ${['tokenizer.json', 'vocab.json', 'merges.txt'].filter((f) => existsSync(join(dir, f))).join(', ') || 'none of them'})`,
      dir,
    );
  }
  const vocab = await readJson(vocabFile, 'vocab.json (an object of token → id)');
  if (!isObject(vocab) || !Object.values(vocab).every((v) => Number.isInteger(v))) throw new TokenizerError('expected an object of token → integer id', vocabFile);
  const merges = parseMergesTxt(await readFile(mergesFile, 'utf8'), mergesFile);
  return new TextTokenizer(byteLevelJsonFromVocab(vocab as Record<string, number>, merges, names, addPrefixSpace), vocabFile, names);
}

/** A tokenizer from a parsed tokenizer.json object (validated as loadTokenizer does). */
export function tokenizerFromJson(json: unknown, source = '<tokenizer.json>', names: SpecialTokenNames = {}): TextTokenizer {
  return new TextTokenizer(validateTokenizerJson(json, source), source, names);
}

/**
 * Writes `dir/tokenizer.json` (atomically) and a `tokenizer_config.json` naming its special tokens, so a model
 * folder carries its tokenizer and transformers' `AutoTokenizer` (via PreTrainedTokenizerFast) loads it too.
 */
export function saveTokenizer(tok: TextTokenizer, dir: string): string {
  mkdirSync(dir, { recursive: true });
  const file = join(dir, 'tokenizer.json');
  const write = (f: string, data: unknown) => {
    writeFileSync(`${f}.tmp`, `${JSON.stringify(data, null, 2)}\n`);
    renameSync(`${f}.tmp`, f);
  };
  write(file, tok.json);
  const config: Record<string, unknown> = { tokenizer_class: 'PreTrainedTokenizerFast', clean_up_tokenization_spaces: false };
  for (const [key, field] of Object.entries(KEYS) as [keyof SpecialTokenNames, string][]) {
    const name = tok.specialTokens[key];
    if (name !== undefined) config[field] = name;
  }
  write(join(dir, 'tokenizer_config.json'), config);
  return file;
}

/**
 * The same tokenizer with the ids of two tokens exchanged (`a` ↔ `b`) everywhere a tokenizer.json holds an id:
 * the model's vocabulary, the added tokens, the post-processor's special tokens and the padding id. Merges
 * name tokens, not ids, so they stay. For a model that needs a token at another id (clip.ts: CLIP's
 * end-of-text token must not be id 2).
 */
export function withSwappedIds(tok: TextTokenizer, a: number, b: number): TextTokenizer {
  const json = structuredClone(tok.json) as TokenizerJson;
  const swap = (id: unknown): unknown => (id === a ? b : id === b ? a : id);
  const vocab = json.model.vocab as Record<string, number>; // a map: validateTokenizerJson admits no other
  for (const k of Object.keys(vocab)) vocab[k] = swap(vocab[k]) as number;
  for (const t of json.added_tokens) t.id = swap(t.id) as number;
  const processor = (p: ComponentJson | null): void => {
    if (p === null) return;
    if (p.type === 'Sequence') for (const q of (p['processors'] as ComponentJson[] | undefined) ?? []) processor(q);
    for (const key of ['sep', 'cls']) {
      const pair = p[key];
      if (Array.isArray(pair)) pair[1] = swap(pair[1]);
    }
    const specials = p['special_tokens'];
    if (specials && typeof specials === 'object') {
      for (const s of Object.values(specials as Record<string, { ids?: unknown[] }>)) if (Array.isArray(s.ids)) s.ids = s.ids.map(swap);
    }
  };
  processor(json.post_processor);
  const padding = json.padding as { pad_id?: unknown } | null | undefined;
  if (padding && typeof padding === 'object' && 'pad_id' in padding) padding.pad_id = swap(padding.pad_id);
  return tokenizerFromJson(json, tok.source, tok.specialTokens);
}
