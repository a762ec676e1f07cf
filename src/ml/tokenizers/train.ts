/**
 * A byte-level BPE trainer (the algorithm of the `tokenizers` BpeTrainer behind `ByteLevelBPETokenizer.train`):
 *   1. normalize (optionally lowercase) and pre-tokenize every text with GPT-2's regex into byte-level words,
 *      counting each distinct word once with its frequency;
 *   2. start from all 256 byte symbols (so any text encodes, nothing is unknown) after the special tokens;
 *   3. repeatedly merge the most frequent adjacent pair (ties: the pair of lower symbol ids), until the
 *      vocabulary has `vocabSize` entries or the best pair occurs fewer than `minFrequency` times.
 * Pair counts are updated incrementally from the words a merge touches; a max-heap with lazy re-insertion
 * finds the best pair (counts of existing pairs only fall, so a stale heap entry is re-pushed with its count).
 *
 * The result is a real Hugging Face tokenizer.json (ByteLevel pre-tokenizer and decoder, RoBERTa's
 * `<s> $A </s>` post-processor), loadable by loadTokenizer, @huggingface/tokenizers and the Python library.
 */
import { BYTE_TO_CHAR, byteLevelPreTokens, lowercaseLikeRust } from './bytelevel.js';
import { TokenizerError } from './errors.js';
import { TextTokenizer, type AddedTokenJson, type TokenizerJson } from './tokenizer.js';

export interface TrainByteLevelBpeOptions {
  /** Final vocabulary size, special tokens and the 256 byte symbols included. */
  vocabSize: number;
  /** A pair seen fewer times than this is never merged. Default 2. */
  minFrequency?: number;
  /**
   * Special tokens, in id order from 0 (BART: `<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3), except those also in
   * `specialTokensLast`, which take the last ids (BART's `<mask>`). Default BART's five.
   */
  specialTokens?: string[];
  /** Special tokens given the highest ids instead of the lowest. Default `['<mask>']`. */
  specialTokensLast?: string[];
  /** Lowercase text before everything (a `Lowercase` normalizer in the tokenizer.json). Default false. */
  lowercase?: boolean;
  /** Beginning / end tokens of the `<s> $A </s>` post-processor; without both, none is added. */
  bos?: string;
  eos?: string;
}

export const BART_SPECIAL_TOKENS = ['<s>', '<pad>', '</s>', '<unk>', '<mask>'];

/** Max-heap of (count, left id, right id): higher count first, then lower left, then lower right id. */
class PairHeap {
  private readonly items: [number, number, number][] = [];
  get size(): number {
    return this.items.length;
  }
  private static before(a: [number, number, number], b: [number, number, number]): boolean {
    return a[0] !== b[0] ? a[0] > b[0] : a[1] !== b[1] ? a[1] < b[1] : a[2] < b[2];
  }
  push(item: [number, number, number]): void {
    const h = this.items;
    h.push(item);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!PairHeap.before(h[i] as [number, number, number], h[p] as [number, number, number])) break;
      [h[i], h[p]] = [h[p] as [number, number, number], h[i] as [number, number, number]];
      i = p;
    }
  }
  pop(): [number, number, number] | undefined {
    const h = this.items;
    const top = h[0];
    const last = h.pop();
    if (h.length > 0 && last !== undefined) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && PairHeap.before(h[l] as [number, number, number], h[m] as [number, number, number])) m = l;
        if (r < h.length && PairHeap.before(h[r] as [number, number, number], h[m] as [number, number, number])) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m] as [number, number, number], h[i] as [number, number, number]];
        i = m;
      }
    }
    return top;
  }
}

/** Trains a byte-level BPE tokenizer on `texts` and returns its tokenizer.json. */
export function trainByteLevelBpeJson(texts: Iterable<string>, options: TrainByteLevelBpeOptions): TokenizerJson {
  const { vocabSize, minFrequency = 2, specialTokens = BART_SPECIAL_TOKENS, specialTokensLast = ['<mask>'], lowercase = false } = options;
  const bos = options.bos ?? (specialTokens.includes('<s>') ? '<s>' : undefined);
  const eos = options.eos ?? (specialTokens.includes('</s>') ? '</s>' : undefined);
  if (new Set(specialTokens).size !== specialTokens.length) throw new TokenizerError(`specialTokens has duplicates: ${specialTokens.join(', ')}`);
  for (const t of [bos, eos]) if (t !== undefined && !specialTokens.includes(t)) throw new TokenizerError(`bos/eos "${t}" must be one of specialTokens (${specialTokens.join(', ')})`);
  if (!Number.isInteger(minFrequency) || minFrequency < 1) throw new TokenizerError(`minFrequency must be an integer ≥ 1, got ${minFrequency}`);
  const first = specialTokens.filter((t) => !specialTokensLast.includes(t));
  const last = specialTokens.filter((t) => specialTokensLast.includes(t));
  const base = first.length + 256 + last.length;
  if (!Number.isInteger(vocabSize) || vocabSize < base) {
    throw new TokenizerError(`vocabSize must be an integer ≥ ${base} (${specialTokens.length} special tokens + 256 byte symbols), got ${vocabSize}`);
  }

  // Symbols: ids 0..255 are the bytes in byte order; merged symbols follow. (Vocabulary ids are assigned at the end.)
  const symbols: string[] = [...BYTE_TO_CHAR];
  const symbolOf = new Map<string, number>(symbols.map((s, i) => [s, i]));

  // 1. Distinct words with their frequencies.
  const freq = new Map<string, number>();
  for (const raw of texts) {
    for (const w of byteLevelPreTokens(lowercase ? lowercaseLikeRust(raw) : raw)) freq.set(w, (freq.get(w) ?? 0) + 1);
  }
  const words: number[][] = [];
  const counts: number[] = [];
  for (const [w, c] of freq) {
    words.push(Array.from(w, (ch) => symbolOf.get(ch) as number));
    counts.push(c);
  }

  // 2. Pair counts and, per pair, the words it occurs in. Key = left * 2^21 + right (ids stay below 2^21).
  const SHIFT = 2 ** 21;
  if (vocabSize >= SHIFT) throw new TokenizerError(`vocabSize must be below ${SHIFT}`);
  const pairCount = new Map<number, number>();
  const pairWords = new Map<number, Set<number>>();
  const addPair = (key: number, wi: number, c: number) => {
    pairCount.set(key, (pairCount.get(key) ?? 0) + c);
    let s = pairWords.get(key);
    if (s === undefined) pairWords.set(key, (s = new Set()));
    s.add(wi);
  };
  words.forEach((w, wi) => {
    for (let i = 0; i + 1 < w.length; i++) addPair((w[i] as number) * SHIFT + (w[i + 1] as number), wi, counts[wi] as number);
  });
  const heap = new PairHeap();
  for (const [key, c] of pairCount) heap.push([c, Math.floor(key / SHIFT), key % SHIFT]);

  // 3. Merge until the vocabulary is full.
  const merges: [string, string][] = [];
  const target = vocabSize - specialTokens.length;
  while (symbols.length < target && heap.size > 0) {
    const top = heap.pop() as [number, number, number];
    const key = top[1] * SHIFT + top[2];
    const now = pairCount.get(key) ?? 0;
    if (now !== top[0]) {
      if (now > 0) heap.push([now, top[1], top[2]]);
      continue;
    }
    if (now < minFrequency) break;
    const [a, b] = [top[1], top[2]];
    const merged = symbols.length;
    const text = (symbols[a] as string) + (symbols[b] as string);
    symbols.push(text);
    symbolOf.set(text, merged);
    merges.push([symbols[a] as string, symbols[b] as string]);
    const touched = new Set<number>();
    for (const wi of pairWords.get(key) ?? []) {
      const w = words[wi] as number[];
      const c = counts[wi] as number;
      for (let i = 0; i + 1 < w.length; i++) {
        if (w[i] !== a || w[i + 1] !== b) continue;
        // Remove the pairs around the occurrence, merge it, add the new pairs.
        if (i > 0) {
          const k = (w[i - 1] as number) * SHIFT + a;
          pairCount.set(k, (pairCount.get(k) as number) - c);
        }
        if (i + 2 < w.length) {
          const k = b * SHIFT + (w[i + 2] as number);
          pairCount.set(k, (pairCount.get(k) as number) - c);
        }
        w.splice(i, 2, merged);
        if (i > 0) {
          const k = (w[i - 1] as number) * SHIFT + merged;
          addPair(k, wi, c);
          touched.add(k);
        }
        if (i + 1 < w.length) {
          const k = merged * SHIFT + (w[i + 1] as number);
          addPair(k, wi, c);
          touched.add(k);
        }
      }
    }
    pairCount.delete(key);
    pairWords.delete(key);
    for (const k of touched) {
      const c = pairCount.get(k) as number;
      if (c > 0) heap.push([c, Math.floor(k / SHIFT), k % SHIFT]);
    }
  }

  // Vocabulary: leading specials, the symbols, trailing specials.
  const vocab: Record<string, number> = {};
  const added: AddedTokenJson[] = [];
  let id = 0;
  const special = (content: string) => {
    added.push({ id, content, single_word: false, lstrip: content === '<mask>', rstrip: false, normalized: false, special: true });
    vocab[content] = id++;
  };
  first.forEach(special);
  for (const s of symbols) vocab[s] = id++;
  last.forEach(special);
  const withEnds = bos !== undefined && eos !== undefined;
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: lowercase ? { type: 'Lowercase' } : null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: withEnds
      ? { type: 'RobertaProcessing', sep: [eos, vocab[eos]], cls: [bos, vocab[bos]], trim_offsets: true, add_prefix_space: false }
      : { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
}

/** Trains a byte-level BPE tokenizer on `texts` (see trainByteLevelBpeJson); save it with saveTokenizer. */
export function trainByteLevelBpe(texts: Iterable<string>, options: TrainByteLevelBpeOptions): TextTokenizer {
  return new TextTokenizer(trainByteLevelBpeJson(texts, options), '<trained tokenizer>');
}
