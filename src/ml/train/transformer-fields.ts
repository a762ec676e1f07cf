/**
 * The `model:` block of the BART-style trainers (bart-pretrain, seq2seq-train): the sizes a user picks.
 * Vocabulary sizes and the image length come from the tokenizer and the data, never from this block.
 */
import { z } from 'zod';
import type { DalleBartConfig } from '../models/dallebart.js';

const posInt = z.number().int().min(1);
const prob = z.number().min(0).max(0.9);

export const TransformerFields = z
  .object({
    d_model: posInt.default(256).describe('width of every layer'),
    encoder_layers: z.number().int().min(0).default(2).describe('encoder layers'),
    decoder_layers: z.number().int().min(0).default(2).describe('decoder layers'),
    attention_heads: posInt.default(4).describe('heads of every attention (encoder and decoder)'),
    ffn_dim: posInt.default(512).describe('feed-forward hidden width'),
    use_glu: z.boolean().default(true).describe("GLU feed-forward (dalle-mini) instead of BART's fc1 → act → fc2"),
    activation_function: z.enum(['gelu', 'gelu_new', 'relu', 'swish', 'silu']).default('gelu').describe('feed-forward activation'),
    use_bias: z.boolean().default(false).describe('biases on attention and feed-forward linears (BART true, dalle-mini false)'),
    ln_positions: z.enum(['postln', 'preln']).default('preln').describe("'postln' (BART) or 'preln'"),
    final_ln: z.boolean().default(true).describe('a layer norm after the last encoder and decoder layer (with preln)'),
    scale_embedding: z.boolean().default(false).describe('token embeddings × √d_model'),
    max_text_length: posInt.default(32).describe('text positions (prompts are cut to this many tokens)'),
    dropout: prob.default(0).describe('dropout on embeddings and sub-layer outputs'),
    attention_dropout: prob.default(0).describe('dropout on attention probabilities'),
    init_std: z.number().positive().default(0.02).describe('std of the normal init'),
  })
  .strict();

export type TransformerFields = z.output<typeof TransformerFields>;

/** The DalleBart config of `m` with the vocabulary and image facts the trainer found. */
export function dalleBartConfigOf(
  m: TransformerFields,
  facts: Pick<DalleBartConfig, 'model_type' | 'vocab_size' | 'pad_token_id' | 'bos_token_id' | 'eos_token_id' | 'decoder_start_token_id'> & Partial<Pick<DalleBartConfig, 'image_vocab_size' | 'image_length'>>,
): Partial<DalleBartConfig> {
  return {
    ...facts,
    d_model: m.d_model,
    encoder_layers: m.encoder_layers,
    decoder_layers: m.decoder_layers,
    encoder_attention_heads: m.attention_heads,
    decoder_attention_heads: m.attention_heads,
    encoder_ffn_dim: m.ffn_dim,
    decoder_ffn_dim: m.ffn_dim,
    use_glu: m.use_glu,
    activation_function: m.activation_function,
    use_bias: m.use_bias,
    ln_positions: m.ln_positions,
    use_final_ln_encoder: m.final_ln,
    use_final_ln_decoder: m.final_ln,
    scale_embedding: m.scale_embedding,
    max_text_length: m.max_text_length,
    dropout: m.dropout,
    attention_dropout: m.attention_dropout,
    init_std: m.init_std,
  };
}

/**
 * Per-layer norms for the log, as dalle-mini groups them: `model.encoder.layers.3.fc1.weight` counts in
 * `model.encoder.layers.3`, everything else in its first two name parts (`model.shared`, `lm_head`).
 */
export function layerGroup(name: string): string {
  const m = /^(.*?\.layers\.\d+)\./.exec(name);
  if (m) return m[1] as string;
  const parts = name.split('.');
  return parts.slice(0, Math.min(2, parts.length - 1) || 1).join('.');
}

/** √Σ of squared per-tensor norms, by layer group, as `<prefix>/<group>` (grad_norm/…, param_norm/…). */
export function groupNorms(prefix: string, norms: Map<string, number>): Record<string, number> {
  const sq: Record<string, number> = {};
  for (const [name, n] of norms) {
    const g = `${prefix}/${layerGroup(name)}`;
    sq[g] = (sq[g] ?? 0) + n * n;
  }
  return Object.fromEntries(Object.entries(sq).map(([g, v]) => [g, Math.sqrt(v)]));
}
