/**
 * The byte-level BPE trainer: round trips through its own tokenizer.json, BART's special-token ids, merges and
 * minFrequency, lowercasing, determinism, and the Hugging Face library's ids for a trained tokenizer.json
 * (fixture made by tokenizers-hf-reference.py: the Python library loads what we write and agrees with us).
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadTokenizer, saveTokenizer, tokenizerFromJson, trainByteLevelBpe, trainByteLevelBpeJson, type TokenizerJson } from '../../src/ml/tokenizers/index.js';
import { HAND_WRITTEN, mixedStrings, REFERENCE_TRAINING, referenceCorpus, shapesCaptions } from './tokenizers-corpus.js';

const captions = shapesCaptions(3000, 21);

describe('trainByteLevelBpe', () => {
  it('round-trips decode(encode(x)) = x through its own saved tokenizer.json, on seen and unseen text', async () => {
    const tok = trainByteLevelBpe(captions, { vocabSize: 400, minFrequency: 2 });
    const dir = mkdtempSync(join(tmpdir(), 'tok-train-'));
    saveTokenizer(tok, dir);
    const back = await loadTokenizer(dir);
    const unseen = [...HAND_WRITTEN, ...mixedStrings(200, 22), ...shapesCaptions(200, 23)];
    for (const s of [...captions.slice(0, 500), ...unseen]) {
      const ids = back.encode(s).ids;
      expect(back.decode(ids, { skipSpecial: true })).toBe(s);
      expect(ids).toEqual(tok.encode(s).ids);
    }
    expect(back.unkId).toBe(3);
    expect(back.encode('a small red circle 🤗').ids).not.toContain(3); // 256 byte symbols: nothing is unknown
  });

  it("uses BART's special-token ids and fills the vocabulary to vocabSize", () => {
    const tok = trainByteLevelBpe(captions, { vocabSize: 400 });
    expect([tok.bosId, tok.padId, tok.eosId, tok.unkId, tok.maskId]).toEqual([0, 1, 2, 3, 399]);
    expect(tok.vocabSize).toBe(400);
    expect(tok.json.model.merges).toHaveLength(400 - 5 - 256);
    const ids = tok.encode('a small red circle').ids;
    expect([ids[0], ids[ids.length - 1]]).toEqual([0, 2]);
    expect(tok.tokens(' circle')).toEqual(['Ġcircle']); // frequent words become single tokens
    expect(tok.encode('a large blue hexagon in the centre', { addSpecial: false }).ids.length).toBeLessThan(10);
    expect(tok.encode('x<mask>y').ids).toEqual([0, tok.tokenToId('x'), 399, tok.tokenToId('y'), 2]);
  });

  it('stops at minFrequency: only pairs seen that often are merged', () => {
    const json = trainByteLevelBpeJson(['ab ab', 'cd'], { vocabSize: 1000, minFrequency: 2 });
    expect(json.model.merges).toEqual([['a', 'b']]);
    const once = trainByteLevelBpeJson(['ab ab', 'cd'], { vocabSize: 1000, minFrequency: 1 });
    expect(once.model.merges).toEqual([['a', 'b'], ['Ġ', 'ab'], ['c', 'd']]); // ties: lower symbol ids first
    expect(Object.keys(json.model.vocab as object)).toHaveLength(5 + 256 + 1);
  });

  it('is deterministic', () => {
    const a = trainByteLevelBpeJson(captions, { vocabSize: 350 });
    const b = trainByteLevelBpeJson(captions, { vocabSize: 350 });
    expect(JSON.stringify(a)).toBe(JSON.stringify(b));
  });

  it('lowercases when asked (a Lowercase normalizer in the tokenizer.json)', () => {
    const tok = trainByteLevelBpe(captions, { vocabSize: 350, lowercase: true });
    expect(tok.json.normalizer).toEqual({ type: 'Lowercase' });
    expect(tok.encode('A SMALL Red Circle').ids).toEqual(tok.encode('a small red circle').ids);
    expect(tok.encode('<s>').ids).toEqual([0, 0, 2]); // special tokens are matched before normalization
  });

  it('rejects a vocabulary too small for the specials and bytes, and unknown bos/eos', () => {
    expect(() => trainByteLevelBpe(captions, { vocabSize: 200 })).toThrow(/vocabSize must be an integer ≥ 261/);
    expect(() => trainByteLevelBpe(captions, { vocabSize: 300, specialTokens: ['<pad>'], bos: '<s>', eos: '</s>' })).toThrow(/bos\/eos "<s>" must be one of specialTokens/);
  });

  it('a tokenizer without <s>/</s> adds nothing around the text', () => {
    const tok = trainByteLevelBpe(captions, { vocabSize: 300, specialTokens: ['<pad>'] });
    expect(tok.numSpecialAdded).toBe(0);
    expect(tok.padId).toBe(0);
  });
});

describe('the Hugging Face library and we agree on a trained tokenizer.json', () => {
  interface Reference {
    corpus: string[];
    trained: { tokenizer: TokenizerJson; ids: number[][]; idsWithSpecial: number[][]; decoded: string[] };
  }
  const ref = JSON.parse(readFileSync(new URL('./tokenizers-hf-reference.json', import.meta.url), 'utf8')) as Reference;

  it('the fixture was made from what the trainer writes today', () => {
    const json = trainByteLevelBpeJson(REFERENCE_TRAINING.texts(), REFERENCE_TRAINING.options);
    expect(json).toEqual(ref.trained.tokenizer);
  });

  it('ids with and without specials and decoded text equal the Python library’s', () => {
    const tok = tokenizerFromJson(ref.trained.tokenizer);
    ref.corpus.forEach((s, i) => {
      expect(tok.encode(s, { addSpecial: false }).ids, JSON.stringify(s)).toEqual(ref.trained.ids[i]);
      expect(tok.encode(s).ids).toEqual(ref.trained.idsWithSpecial[i]);
      expect(tok.decode(tok.encode(s).ids, { skipSpecial: true })).toBe(ref.trained.decoded[i]);
    });
  });

  it("applies the tokenizer.json's own truncation, as the Rust library does (values from Python)", () => {
    const s = 'a small red circle on a blue background';
    const json = { ...ref.trained.tokenizer, truncation: { direction: 'Left', max_length: 5, strategy: 'LongestFirst', stride: 0 } };
    const tok = tokenizerFromJson(json);
    expect(tok.encode(s).ids).toEqual([0, 265, 324, 281, 2]);
    expect(tok.encode(s, { addSpecial: false }).ids).toEqual([349, 283, 265, 324, 281]);
    expect(tok.encode(s, { maxLength: 5 }).ids).toEqual([0, 101, 304, 317, 2]); // an explicit maxLength cuts on the right
    expect(tokenizerFromJson(ref.trained.tokenizer).encode(s).ids).toEqual([0, 101, 304, 317, 349, 283, 265, 324, 281, 2]);
  });

  // Writes the input of tokenizers-hf-reference.py when asked (see its docstring); skipped otherwise.
  it.runIf(process.env['MINIDALLE_TOKENIZER_REFERENCE_INPUT'] !== undefined)('writes the fixture input', () => {
    const trained = trainByteLevelBpeJson(REFERENCE_TRAINING.texts(), REFERENCE_TRAINING.options);
    writeFileSync(process.env['MINIDALLE_TOKENIZER_REFERENCE_INPUT'] as string, JSON.stringify({ corpus: referenceCorpus(), trained }));
  });
});
