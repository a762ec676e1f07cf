/**
 * `TextTokenizer`: a Hugging Face `tokenizer.json` run by `@huggingface/tokenizers` (pure JS, the same
 * components as the Rust library), plus what that package leaves out and the trainers need: truncation that
 * keeps the post-processor's special tokens (`<s> … </s>`, `</s>` stays last), padding, the attention mask,
 * fixed-length batches as flat Int32Arrays, and the special-token ids (`<pad>`, `<s>`, `</s>`, `<unk>`, `<mask>`).
 *
 * Two corrections are applied to the package, found by comparing with the Python library: its ByteLevel
 * pre-tokenizer splits with JavaScript's `\s`, which is not Oniguruma's (see bytelevel.ts), so it is replaced
 * by byteLevelPreTokens (ids then equal the Rust library's also for text with U+0085 or U+FEFF); and
 * its Lowercase normalizer applies JavaScript's final-sigma rule, which Rust's does not (lowercaseLikeRust).
 * And decode is the Rust library's: no clean-up of spaces, and an end-of-word suffix (CLIP's `</w>`) is left to
 * the decoder (a ByteLevel decoder keeps it; transformers' CLIPTokenizerFast then replaces it with spaces).
 */
import * as hf from '@huggingface/tokenizers';
import { byteLevelPreTokens, lowercaseLikeRust } from './bytelevel.js';
import { TokenizerError } from './errors.js';

// The package's .d.ts files use extensionless relative imports, which NodeNext resolution does not follow, so
// its types arrive as `any`. These are the parts we use, as its sources declare them (types/core/*.d.ts).
interface HfTokenizer {
  encode(text: string, options: { add_special_tokens: boolean }): { ids: number[]; tokens: string[] };
  decode(ids: number[], options: { skip_special_tokens: boolean; clean_up_tokenization_spaces: boolean }): string;
  token_to_id(token: string): number | undefined;
  id_to_token(id: number): string | undefined;
  get_vocab(withAddedTokens: boolean): Map<string, number>;
  pre_tokenizer: unknown;
  normalizer: unknown;
  decoder: { end_of_word_suffix?: string | null } | null;
}
type Ctor<T> = abstract new (...args: never[]) => T;
const lib = hf as unknown as {
  Tokenizer: new (json: object, config: object) => HfTokenizer;
  ByteLevelPreTokenizer: Ctor<{ add_prefix_space: boolean; use_regex: boolean; pre_tokenize_text: (text: string) => string[] }>;
  SequencePreTokenizer: Ctor<{ tokenizers: unknown[] }>;
  LowercaseNormalizer: Ctor<{ normalize: (text: string) => string }>;
  SequenceNormalizer: Ctor<{ normalizers: unknown[] }>;
};
for (const k of ['Tokenizer', 'ByteLevelPreTokenizer', 'SequencePreTokenizer', 'LowercaseNormalizer', 'SequenceNormalizer'] as const) {
  if (typeof lib[k] !== 'function') throw new Error(`@huggingface/tokenizers has no ${k} export: a version this code was not written for`);
}

/** One entry of `added_tokens` in a tokenizer.json. */
export interface AddedTokenJson {
  id: number;
  content: string;
  single_word?: boolean;
  lstrip?: boolean;
  rstrip?: boolean;
  normalized?: boolean;
  special?: boolean;
}

/** A component (normalizer, pre-tokenizer, post-processor, decoder): `type` plus its own fields. */
export interface ComponentJson {
  type: string;
  [key: string]: unknown;
}

/** The BPE model section (the only model type we write; others load if the package supports them). */
export interface ModelJson {
  type?: string;
  vocab: Record<string, number> | unknown;
  /** `"a b"` strings (older files) or `["a", "b"]` pairs (tokenizers ≥ 0.20). */
  merges?: string[] | [string, string][];
  unk_token?: string | null;
  end_of_word_suffix?: string | null;
  continuing_subword_prefix?: string | null;
  [key: string]: unknown;
}

/** A Hugging Face `tokenizer.json`, as the Rust library writes it. Unknown keys are kept as they are. */
export interface TokenizerJson {
  version?: string;
  truncation?: unknown;
  padding?: unknown;
  added_tokens: AddedTokenJson[];
  normalizer: ComponentJson | null;
  pre_tokenizer: ComponentJson | null;
  post_processor: ComponentJson | null;
  decoder: ComponentJson | null;
  model: ModelJson;
  [key: string]: unknown;
}

/** Names of the special tokens (as in tokenizer_config.json's `bos_token`, … fields). */
export interface SpecialTokenNames {
  bos?: string;
  eos?: string;
  pad?: string;
  unk?: string;
  mask?: string;
}

export interface EncodeOptions {
  /** Add the post-processor's special tokens (BART: `<s> … </s>`). Default true. */
  addSpecial?: boolean;
  /** Truncate to this many ids, special tokens included (they are kept; the text is cut). */
  maxLength?: number;
  /** Pad with the pad id up to this length (attention mask 0 there). */
  padTo?: number;
}

export interface Encoded {
  ids: number[];
  /** 1 for real tokens, 0 for padding. */
  attentionMask: number[];
}

export interface EncodeBatchOptions {
  /** Every row has this length (truncated and padded); default: the longest row of the batch. */
  maxLength?: number;
  /** Add the post-processor's special tokens. Default true. */
  addSpecial?: boolean;
  /** Pad with this id instead of the tokenizer's pad token (needed when it has none, as GPT-2). */
  padId?: number;
}

export interface EncodedBatch {
  /** Row-major (batch, length) ids. */
  ids: Int32Array;
  /** Row-major (batch, length) attention mask: 1 real token, 0 padding. */
  mask: Int32Array;
  batch: number;
  length: number;
}

export interface DecodeOptions {
  /** Leave out special tokens (`<s>`, `</s>`, `<pad>`, …). Default false. */
  skipSpecial?: boolean;
}

const CONVENTIONAL: Record<keyof SpecialTokenNames, string[]> = {
  bos: ['<s>', '<|startoftext|>', '[CLS]', '<|endoftext|>'],
  eos: ['</s>', '<|endoftext|>', '[SEP]'],
  pad: ['<pad>', '[PAD]', '<|pad|>'],
  unk: ['<unk>', '[UNK]', '<|unk|>'],
  mask: ['<mask>', '[MASK]', '<|mask|>'],
};

/** Our ByteLevel pre-tokenizer (Oniguruma's `\s`, and faster) in place of the package's, also inside a Sequence. */
function exactByteLevel(pre: unknown): void {
  if (pre instanceof lib.ByteLevelPreTokenizer) {
    const { add_prefix_space: prefix, use_regex: regex } = pre;
    pre.pre_tokenize_text = (text: string) => byteLevelPreTokens(text, prefix, regex);
  } else if (pre instanceof lib.SequencePreTokenizer) for (const p of pre.tokenizers) exactByteLevel(p);
}

/** Lowercase as the Rust library does (per character; see lowercaseLikeRust), also inside a Sequence. */
function exactLowercase(norm: unknown): void {
  if (norm instanceof lib.LowercaseNormalizer) norm.normalize = lowercaseLikeRust;
  else if (norm instanceof lib.SequenceNormalizer) for (const n of norm.normalizers) exactLowercase(n);
}

function checkLength(name: string, n: number | undefined): void {
  if (n !== undefined && (!Number.isInteger(n) || n < 0)) throw new TokenizerError(`${name} must be a non-negative integer, got ${n}`);
}

export class TextTokenizer {
  /** Embedding rows needed: highest id (vocabulary or added token) + 1. */
  readonly vocabSize: number;
  readonly bosId: number | null;
  readonly eosId: number | null;
  readonly padId: number | null;
  readonly unkId: number | null;
  readonly maskId: number | null;
  /** The special-token names found (tokenizer_config.json, else the conventional names present). */
  readonly specialTokens: SpecialTokenNames;
  private readonly impl: HfTokenizer;
  /** Ids the post-processor puts before / after the text of a single sequence. */
  private readonly prefix: number[];
  private readonly suffix: number[];
  private readonly specialIds: Set<number>;
  /** The file's own `truncation` (the Rust library applies it on every encode): max length and side. */
  private readonly fileTruncation: { maxLength: number; left: boolean } | null;

  /**
   * @param json a parsed tokenizer.json (kept as given, and written back by saveTokenizer)
   * @param source the file it came from, named in errors
   * @param names special-token names from tokenizer_config.json, when there is one
   */
  constructor(
    readonly json: TokenizerJson,
    readonly source = '<tokenizer.json>',
    names: SpecialTokenNames = {},
  ) {
    try {
      this.impl = new lib.Tokenizer(json, {});
    } catch (err) {
      throw new TokenizerError(`not a tokenizer.json that @huggingface/tokenizers can load: ${(err as Error).message}`, source);
    }
    exactByteLevel(this.impl.pre_tokenizer);
    exactLowercase(this.impl.normalizer);
    // The package's decode replaces the model's end-of-word suffix (CLIP's `</w>`) with spaces, as transformers'
    // CLIPTokenizerFast does after decoding; the Rust library's decode leaves that to the decoder, and so do we.
    if (this.impl.decoder) this.impl.decoder.end_of_word_suffix = null;
    const vocab = this.impl.get_vocab(true);
    let top = -1;
    for (const id of vocab.values()) top = Math.max(top, id);
    this.vocabSize = top + 1;
    const special = new Set(json.added_tokens.filter((t) => t.special === true).map((t) => t.content));
    const find = (key: keyof SpecialTokenNames): string | undefined => {
      const named = names[key];
      if (named !== undefined) {
        if (!vocab.has(named)) throw new TokenizerError(`special token ${key}="${named}" is not in the vocabulary`, source);
        return named;
      }
      return CONVENTIONAL[key].find((t) => special.has(t)) ?? CONVENTIONAL[key].find((t) => vocab.has(t));
    };
    this.specialTokens = {};
    const idOf = (key: keyof SpecialTokenNames): number | null => {
      const tok = find(key);
      if (tok === undefined) return null;
      this.specialTokens[key] = tok;
      return vocab.get(tok) as number;
    };
    this.bosId = idOf('bos');
    this.eosId = idOf('eos');
    this.padId = idOf('pad');
    this.unkId = idOf('unk');
    this.maskId = idOf('mask');
    this.specialIds = new Set(json.added_tokens.filter((t) => t.special === true).map((t) => t.id));
    // Where the post-processor puts the text: find the probe's plain ids inside its ids with specials.
    const probe = 'a';
    const plain = this.impl.encode(probe, { add_special_tokens: false }).ids;
    const full = this.impl.encode(probe, { add_special_tokens: true }).ids;
    let at = -1;
    for (let i = 0; i + plain.length <= full.length && at < 0; i++) if (plain.every((id, j) => full[i + j] === id)) at = i;
    if (at < 0) throw new TokenizerError('the post-processor does not keep the text as one span; only template-like post-processors are supported', source);
    this.prefix = full.slice(0, at);
    this.suffix = full.slice(at + plain.length);
    const t = json.truncation as { max_length?: unknown; direction?: unknown } | null | undefined;
    this.fileTruncation = typeof t?.max_length === 'number' ? { maxLength: t.max_length, left: t.direction === 'Left' } : null;
  }

  /** Number of special ids `encode` adds around a text (BART: 2). */
  get numSpecialAdded(): number {
    return this.prefix.length + this.suffix.length;
  }

  /**
   * Text → ids (and attention mask), as `tokenizer(text, truncation=True, max_length=…, padding="max_length")`.
   * Without `maxLength`, the tokenizer.json's own `truncation` applies, as in the Rust library.
   */
  encode(text: string, options: EncodeOptions = {}): Encoded {
    const { addSpecial = true, padTo } = options;
    const maxLength = options.maxLength ?? this.fileTruncation?.maxLength;
    const left = options.maxLength === undefined && this.fileTruncation?.left === true;
    checkLength('maxLength', maxLength);
    checkLength('padTo', padTo);
    let body = this.impl.encode(text, { add_special_tokens: false }).ids;
    const extra = addSpecial ? this.numSpecialAdded : 0;
    if (maxLength !== undefined) {
      if (maxLength < extra) throw new TokenizerError(`maxLength ${maxLength} leaves no room for the ${extra} special tokens`, this.source);
      const room = maxLength - extra;
      if (body.length > room) body = left ? body.slice(body.length - room) : body.slice(0, room);
    }
    const ids = addSpecial ? [...this.prefix, ...body, ...this.suffix] : body;
    const attentionMask = new Array<number>(ids.length).fill(1);
    if (padTo !== undefined && ids.length < padTo) {
      const pad = this.requirePad();
      while (ids.length < padTo) {
        ids.push(pad);
        attentionMask.push(0);
      }
    }
    return { ids, attentionMask };
  }

  /** Texts → one (batch, length) block of ids and mask, truncated and right-padded. */
  encodeBatch(texts: readonly string[], options: EncodeBatchOptions = {}): EncodedBatch {
    const { maxLength, addSpecial = true } = options;
    checkLength('maxLength', maxLength);
    const rows = texts.map((t) => this.encode(t, { addSpecial, maxLength }).ids);
    const length = maxLength ?? rows.reduce((m, r) => Math.max(m, r.length), 0);
    const pad = options.padId ?? (rows.some((r) => r.length < length) ? this.requirePad() : 0);
    const ids = new Int32Array(texts.length * length).fill(pad);
    const mask = new Int32Array(texts.length * length);
    rows.forEach((r, b) => {
      ids.set(r, b * length);
      mask.fill(1, b * length, b * length + r.length);
    });
    return { ids, mask, batch: texts.length, length };
  }

  /** Ids → text, as the Hugging Face library decodes (no clean-up of spaces). */
  decode(ids: ArrayLike<number>, options: DecodeOptions = {}): string {
    const list = Array.from(ids);
    for (const id of list) {
      if (!Number.isInteger(id) || id < 0 || this.impl.id_to_token(id) === undefined) {
        throw new TokenizerError(`cannot decode id ${id}: not in the vocabulary (size ${this.vocabSize})`, this.source);
      }
    }
    const kept = options.skipSpecial ? list.filter((id) => !this.specialIds.has(id)) : list;
    if (kept.length === 0) return '';
    return this.impl.decode(kept, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
  }

  /** The token strings of a text (byte-level alphabet: `Ġ` is a space). */
  tokens(text: string, addSpecial = false): string[] {
    return this.impl.encode(text, { add_special_tokens: addSpecial }).tokens;
  }

  tokenToId(token: string): number | undefined {
    return this.impl.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    return this.impl.id_to_token(id);
  }

  private requirePad(): number {
    if (this.padId === null) {
      throw new TokenizerError('this tokenizer has no pad token (no <pad> and none named in tokenizer_config.json); pass padId to pad', this.source);
    }
    return this.padId;
  }
}
