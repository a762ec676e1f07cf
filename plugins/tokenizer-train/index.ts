/**
 * tokenizer-train: a byte-level BPE tokenizer (GPT-2/BART style, BART's special tokens) trained on the
 * captions of any dataset source, written as a Hugging Face `tokenizer.json` that the text trainers,
 * `minidalle tokenize` and the Python tokenizers library all load. For caption domains whose words a
 * pretrained tokenizer splits badly or that have no pretrained tokenizer at all (the shapes world).
 */
import { join } from 'node:path';
import { z } from 'zod';
import { definePlugin } from '../../src/core/plugins/types.js';
import { saveTokenizer, trainByteLevelBpe } from '../../src/ml/tokenizers/index.js';
import { loadCaptions, resolveInput } from '../../src/ml/train/data.js';

export const TokenizerTrainConfig = z
  .object({
    source: z.string().default('').describe("captions to learn from (tar pattern, folder, .tsv/.csv/.jsonl, parquet); '' = the upstream stage's train artifact"),
    caption_fields: z.array(z.string().min(1)).min(1).default(['txt']).describe('caption fields tried in order'),
    vocab_size: z.number().int().min(262).default(1024).describe('vocabulary size: the 256 bytes, the 5 special tokens and the merges'),
    min_frequency: z.number().int().min(1).default(2).describe('a pair seen fewer times is never merged'),
    lowercase: z.boolean().default(false).describe('lowercase text first (a Lowercase normalizer in tokenizer.json)'),
    max_captions: z.number().int().min(0).default(0).describe('learn from at most this many captions (0 = all)'),
  })
  .strict();

export type TokenizerTrainConfig = z.output<typeof TokenizerTrainConfig>;

const NAME = 'tokenizer-train';

export default definePlugin({
  name: NAME,
  version: '1',
  description: 'Train a byte-level BPE tokenizer (BART special tokens) on a caption source; writes an HF tokenizer.json',
  config: TokenizerTrainConfig,
  async run(ctx) {
    const c = ctx.config;
    const spec = resolveInput(ctx, NAME, 'source', c.source, 'train', 'a caption source, or add needs: [data]');
    const { captions, skips } = await loadCaptions(spec, { fields: c.caption_fields, limit: c.max_captions, signal: ctx.signal, warn: (m) => ctx.logger.warn(m) });
    if (ctx.signal.aborted) return {};
    const t0 = performance.now();
    const tok = trainByteLevelBpe(captions, { vocabSize: c.vocab_size, minFrequency: c.min_frequency, lowercase: c.lowercase });
    const seconds = (performance.now() - t0) / 1000;
    const dir = join(ctx.outDir, 'tokenizer');
    saveTokenizer(tok, dir);
    // what a caption costs in tokens, so the text trainers' max_text_length can be chosen from it
    const lengths = captions.map((t) => tok.encode(t).ids.length).sort((a, b) => a - b);
    const summary = {
      captions: captions.length,
      vocab_size: tok.vocabSize,
      train_s: seconds,
      tokens_mean: lengths.reduce((s, n) => s + n, 0) / Math.max(1, lengths.length),
      tokens_max: lengths[lengths.length - 1] ?? 0,
      skipped: skips.toJSON(),
    };
    ctx.logger.info(`${NAME}: ${tok.vocabSize} tokens from ${captions.length} captions in ${seconds.toFixed(1)} s; a caption is ${summary.tokens_mean.toFixed(1)} tokens on average, ${summary.tokens_max} at most (special tokens included)`);
    return { artifacts: { tokenizer: dir }, summary };
  },
});
