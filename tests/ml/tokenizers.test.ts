/**
 * Tokenizer ids against two references on a varied corpus:
 * - js-tiktoken's r50k_base (GPT-2's encoding, an independent implementation: tiktoken's algorithm, its own
 *   copy of the ranks) — identical ids everywhere except text with U+0085 / U+FEFF, where js-tiktoken uses
 *   JavaScript's `\s` and the Hugging Face library does not;
 * - the Hugging Face `tokenizers` library itself (Python 0.23.2), whose ids for the same corpus are in
 *   tokenizers-hf-reference.json (made by tokenizers-hf-reference.py), including those U+0085 / U+FEFF cases.
 * Then the vocab.json + merges.txt layout, BART post-processing, truncation, padding, batches and errors.
 */
import { mkdtempSync, readFileSync, writeFileSync, copyFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getEncoding } from 'js-tiktoken';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadTokenizer, saveTokenizer, TextTokenizer, tokenizerFromJson, TokenizerError, type TokenizerJson } from '../../src/ml/tokenizers/index.js';
import { GPT2_FILES, gpt2TokenizerJson, HAND_WRITTEN, mixedStrings, referenceCorpus, shapesCaptions } from './tokenizers-corpus.js';

const FIXTURE = new URL('./tokenizers-hf-reference.json', import.meta.url);
interface Reference {
  tokenizers: string;
  corpus: string[];
  gpt2: number[][];
  trained: { tokenizer: TokenizerJson; ids: number[][]; idsWithSpecial: number[][]; decoded: string[] };
  clip: { tokenizer: TokenizerJson; ids: number[][]; idsWithSpecial: number[][]; decoded: string[] };
}
const reference = JSON.parse(readFileSync(FIXTURE, 'utf8')) as Reference;

/** Text where JavaScript's `\s` and Oniguruma's disagree. */
const jsWhitespaceQuirk = (s: string) => /[\u0085\ufeff]/.test(s);

let gpt2: TextTokenizer;
beforeAll(() => {
  gpt2 = tokenizerFromJson(gpt2TokenizerJson('pairs'), 'gpt2 tokenizer.json');
});

describe('GPT-2 ids', () => {
  it('equal js-tiktoken r50k_base (an independent implementation) on 1,000+ varied strings', () => {
    const enc = getEncoding('r50k_base');
    const corpus = [...HAND_WRITTEN, ...mixedStrings(1000, 1), ...shapesCaptions(100, 2)].filter((s) => !jsWhitespaceQuirk(s));
    expect(corpus.length).toBeGreaterThan(1000);
    const mismatches = corpus
      .map((s) => ({ s, ours: gpt2.encode(s, { addSpecial: false }).ids, theirs: enc.encode(s, 'all') }))
      .filter((r) => JSON.stringify(r.ours) !== JSON.stringify(r.theirs));
    expect(mismatches).toEqual([]);
  });

  it('equal the Hugging Face library (fixture) on the reference corpus, U+0085 / U+FEFF included', () => {
    expect(reference.corpus).toEqual(referenceCorpus()); // else regenerate the fixture (see tokenizers-hf-reference.py)
    expect(reference.corpus.filter(jsWhitespaceQuirk).length).toBeGreaterThanOrEqual(4);
    const ours = reference.corpus.map((s) => gpt2.encode(s, { addSpecial: false }).ids);
    const diff = reference.corpus.map((s, i) => ({ s, ours: ours[i], hf: reference.gpt2[i] })).filter((r) => JSON.stringify(r.ours) !== JSON.stringify(r.hf));
    expect(diff).toEqual([]);
  });

  it('the JS-\\s quirk is real: js-tiktoken differs from the Hugging Face library there, and we follow HF', () => {
    const enc = getEncoding('r50k_base');
    const s = 'NEL a \u0085b and \u0085\u0085 twice';
    const hf = reference.gpt2[reference.corpus.indexOf(s)];
    expect(enc.encode(s)).not.toEqual(hf);
    expect(gpt2.encode(s, { addSpecial: false }).ids).toEqual(hf);
  });

  it('merges as "a b" strings and as ["a", "b"] pairs give the same tokenizer', () => {
    const strings = tokenizerFromJson(gpt2TokenizerJson('strings'));
    for (const s of HAND_WRITTEN) expect(strings.encode(s).ids).toEqual(gpt2.encode(s).ids);
  });

  it('decode inverts encode (byte-level: every string round-trips)', () => {
    for (const s of [...HAND_WRITTEN, ...mixedStrings(200, 3)]) expect(gpt2.decode(gpt2.encode(s).ids)).toBe(s);
  });

  it('knows <|endoftext|> as bos/eos, has no pad token, and adds nothing around the text', () => {
    expect(gpt2.vocabSize).toBe(50257);
    expect([gpt2.bosId, gpt2.eosId, gpt2.padId, gpt2.maskId]).toEqual([50256, 50256, null, null]);
    expect(gpt2.numSpecialAdded).toBe(0);
    expect(gpt2.encode('Hello world').ids).toEqual([15496, 995]);
    expect(gpt2.encode('a<|endoftext|>b').ids).toEqual([64, 50256, 65]);
    expect(gpt2.decode([64, 50256, 65], { skipSpecial: true })).toBe('ab');
    expect(() => gpt2.encodeBatch(['a', 'a b c'])).toThrow(/no pad token.*padId/);
    expect(Array.from(gpt2.encodeBatch(['a', 'a b c'], { padId: 50256 }).ids)).toEqual([64, 50256, 50256, 64, 275, 269]);
  });
});

describe("CLIP-style BPE (NFC + whitespace + lowercase normalizer, CLIP's Split regex, </w> suffix)", () => {
  it('ids with and without specials and decoded text equal the Hugging Face library (fixture)', () => {
    const clip = tokenizerFromJson(reference.clip.tokenizer, 'clip-style tokenizer.json');
    expect(clip.json.model.end_of_word_suffix).toBe('</w>');
    expect([clip.bosId, clip.eosId]).toEqual([0, 1]); // <|startoftext|>, <|endoftext|>
    reference.corpus.forEach((s, i) => {
      expect(clip.encode(s, { addSpecial: false }).ids, JSON.stringify(s)).toEqual(reference.clip.ids[i]);
      expect(clip.encode(s).ids).toEqual(reference.clip.idsWithSpecial[i]);
      expect(clip.decode(clip.encode(s).ids, { skipSpecial: true })).toBe(reference.clip.decoded[i]);
    });
  });
});

describe('vocab.json + merges.txt folder', () => {
  it('loads GPT-2 from the folder layout with the same ids as its tokenizer.json', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tok-gpt2-'));
    copyFileSync(join(GPT2_FILES, 'encoder.json'), join(dir, 'vocab.json'));
    copyFileSync(join(GPT2_FILES, 'vocab.bpe'), join(dir, 'merges.txt'));
    const tok = await loadTokenizer(dir);
    for (const s of HAND_WRITTEN) expect(tok.encode(s).ids).toEqual(gpt2.encode(s).ids);
    expect((await loadTokenizer(join(dir, 'vocab.json'))).vocabSize).toBe(50257);
  });

  it('a RoBERTa/BART-style folder gets <s> … </s>, truncation keeping </s>, padding and the mask', async () => {
    const dir = bartStyleFolder();
    const tok = await loadTokenizer(dir);
    expect([tok.bosId, tok.padId, tok.eosId, tok.unkId, tok.maskId]).toEqual([0, 1, 2, 3, 9]);
    const ab = tok.encode('ab ab').ids; // 'ab', 'Ġab'
    expect(ab).toEqual([0, 7, 8, 2]);
    expect(tok.encode('ab ab ab ab', { maxLength: 4 })).toEqual({ ids: [0, 7, 8, 2], attentionMask: [1, 1, 1, 1] });
    expect(tok.encode('ab', { padTo: 5 })).toEqual({ ids: [0, 7, 2, 1, 1], attentionMask: [1, 1, 1, 0, 0] });
    expect(tok.encode('ab ab', { addSpecial: false }).ids).toEqual([7, 8]);
    expect(tok.encode('ab<mask>').ids).toEqual([0, 7, 9, 2]);
    expect(tok.decode([0, 7, 8, 2, 1])).toBe('<s>ab ab</s><pad>');
    expect(tok.decode([0, 7, 8, 2, 1], { skipSpecial: true })).toBe('ab ab');
    expect(() => tok.encode('ab', { maxLength: 1 })).toThrow(/no room for the 2 special tokens/);
  });

  it('encodeBatch: fixed length, truncated with </s> last, padded with <pad>, mask 0 on padding', async () => {
    const tok = await loadTokenizer(bartStyleFolder());
    const b = tok.encodeBatch(['ab', 'ab ab ab ab', ''], { maxLength: 5 });
    expect([b.batch, b.length]).toEqual([3, 5]);
    expect(Array.from(b.ids)).toEqual([0, 7, 2, 1, 1, 0, 7, 8, 8, 2, 0, 2, 1, 1, 1]);
    expect(Array.from(b.mask)).toEqual([1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0]);
    const longest = tok.encodeBatch(['ab', 'ab ab']);
    expect(longest.length).toBe(4);
  });

  it('names special tokens from tokenizer_config.json', async () => {
    const dir = bartStyleFolder();
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ pad_token: { content: '<unk>' }, eos_token: '</s>' }));
    const tok = await loadTokenizer(dir);
    expect(tok.padId).toBe(3);
  });
});

describe('saveTokenizer', () => {
  it('writes a tokenizer.json that loads back to the same ids and specials', async () => {
    const tok = await loadTokenizer(bartStyleFolder());
    const dir = mkdtempSync(join(tmpdir(), 'tok-save-'));
    saveTokenizer(tok, dir);
    const back = await loadTokenizer(dir);
    expect(back.encode('ab ab<mask>').ids).toEqual(tok.encode('ab ab<mask>').ids);
    expect([back.padId, back.maskId, back.vocabSize]).toEqual([tok.padId, tok.maskId, tok.vocabSize]);
    expect(JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8'))).toMatchObject({ pad_token: '<pad>', mask_token: '<mask>' });
  });
});

describe('errors name the file and what was expected', () => {
  const dir = () => mkdtempSync(join(tmpdir(), 'tok-err-'));
  it('missing path', async () => {
    await expect(loadTokenizer('/nonexistent/tok.json')).rejects.toThrow(/\/nonexistent\/tok\.json: no such file or folder; expected a tokenizer\.json/);
  });
  it('folder without tokenizer files', async () => {
    const d = dir();
    writeFileSync(join(d, 'vocab.json'), '{}');
    await expect(loadTokenizer(d)).rejects.toThrow(/no tokenizer here: expected tokenizer\.json, or vocab\.json \+ merges\.txt \(found vocab\.json\)/);
  });
  it('invalid JSON', async () => {
    const f = join(dir(), 'tokenizer.json');
    writeFileSync(f, '{"model": ');
    await expect(loadTokenizer(f)).rejects.toThrow(new RegExp(`${f}: not valid JSON \\(expected a Hugging Face tokenizer.json\\)`));
  });
  it('no model / bad merges / bad merges.txt line', async () => {
    const f = join(dir(), 'tokenizer.json');
    writeFileSync(f, JSON.stringify({ added_tokens: [] }));
    await expect(loadTokenizer(f)).rejects.toThrow(/no "model" object/);
    writeFileSync(f, JSON.stringify({ model: { type: 'BPE', vocab: { a: 0 }, merges: ['a b c'] } }));
    await expect(loadTokenizer(f)).rejects.toThrow(/model\.merges\[0\] is "a b c"; expected "a b" or \["a", "b"\]/);
    const d = bartStyleFolder();
    writeFileSync(join(d, 'merges.txt'), '#version: 0.2\na b\nbad\n');
    await expect(loadTokenizer(d)).rejects.toThrow(/merges\.txt: line 3: expected "left right"/);
    const err = await loadTokenizer(f).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TokenizerError);
  });
  it('decoding an id outside the vocabulary', () => {
    expect(() => gpt2.decode([50257])).toThrow(/cannot decode id 50257: not in the vocabulary \(size 50257\)/);
  });
});

/** A tiny RoBERTa/BART-style folder: specials 0–3, a, b, Ġ, ab, Ġab, <mask>=9. */
function bartStyleFolder(): string {
  const dir = mkdtempSync(join(tmpdir(), 'tok-bart-'));
  mkdirSync(dir, { recursive: true });
  const vocab = { '<s>': 0, '<pad>': 1, '</s>': 2, '<unk>': 3, a: 4, b: 5, 'Ġ': 6, ab: 7, 'Ġab': 8, '<mask>': 9 };
  writeFileSync(join(dir, 'vocab.json'), JSON.stringify(vocab));
  writeFileSync(join(dir, 'merges.txt'), '#version: 0.2\na b\nĠ ab\n');
  return dir;
}
