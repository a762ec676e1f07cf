/**
 * Hugging Face `config.json` files: read with validation (zod), write back with every key preserved.
 *
 * The schemas list the fields our models use, all optional where HF configs omit them, and keep unknown
 * keys (`z.looseObject`), so reading and writing a config written by transformers or dalle-mini changes
 * nothing in it. Defaults are applied by the model code, not here, for the same reason.
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { z } from 'zod';

export class HfConfigError extends Error {
  constructor(
    readonly file: string,
    readonly field: string | null,
    problem: string,
  ) {
    super(`${file}${field ? `: field "${field}"` : ''}: ${problem}`);
    this.name = 'HfConfigError';
  }
}

const posInt = z.number().int().positive();
const nonNegInt = z.number().int().nonnegative();
const prob = z.number().min(0).max(1);

/** BART (transformers `BartConfig`) plus the DalleBart additions of dalle-mini. */
export const BartConfigSchema = z.looseObject({
  model_type: z.string().optional(),
  vocab_size: posInt.optional(),
  d_model: posInt.optional(),
  encoder_layers: nonNegInt.optional(),
  decoder_layers: nonNegInt.optional(),
  encoder_attention_heads: posInt.optional(),
  decoder_attention_heads: posInt.optional(),
  encoder_ffn_dim: posInt.optional(),
  decoder_ffn_dim: posInt.optional(),
  max_position_embeddings: posInt.optional(),
  activation_function: z.string().optional(),
  dropout: prob.optional(),
  attention_dropout: prob.optional(),
  activation_dropout: prob.optional(),
  init_std: z.number().nonnegative().optional(),
  scale_embedding: z.boolean().optional(),
  pad_token_id: z.number().int().nullable().optional(),
  bos_token_id: z.number().int().nullable().optional(),
  eos_token_id: z.number().int().nullable().optional(),
  decoder_start_token_id: z.number().int().nullable().optional(),
  // DalleBart (dalle-mini `DalleBartConfig`)
  encoder_vocab_size: posInt.optional(),
  image_vocab_size: posInt.optional(),
  image_length: posInt.optional(),
  max_text_length: posInt.optional(),
  use_bias: z.boolean().optional(),
  use_glu: z.boolean().optional(),
  ln_type: z.enum(['layernorm', 'rmsnorm']).optional(),
  ln_positions: z.string().optional(),
  tie_word_embeddings: z.boolean().optional(),
  use_final_ln_encoder: z.boolean().optional(),
  use_final_ln_decoder: z.boolean().optional(),
  // mBART's spelling of pre-LN and the final layer norms
  normalize_before: z.boolean().optional(),
  add_final_layer_norm: z.boolean().optional(),
});
export type BartConfig = z.infer<typeof BartConfigSchema>;

/** VQGAN as in vqgan-jax / taming (`VQGANConfig`). */
export const VqganConfigSchema = z.looseObject({
  ch: posInt.optional(),
  out_ch: posInt.optional(),
  in_channels: posInt.optional(),
  ch_mult: z.array(posInt).nonempty().optional(),
  num_res_blocks: nonNegInt.optional(),
  attn_resolutions: z.array(posInt).optional(),
  resolution: posInt.optional(),
  z_channels: posInt.optional(),
  n_embed: posInt.optional(),
  embed_dim: posInt.optional(),
  dropout: prob.optional(),
  double_z: z.boolean().optional(),
  resamp_with_conv: z.boolean().optional(),
  give_pre_end: z.boolean().optional(),
  codebook_l2: z.boolean().optional(),
});
export type VqganConfig = z.infer<typeof VqganConfigSchema>;

/** Any JSON object (for configs we only carry around). */
export const AnyConfigSchema = z.looseObject({});

/** Validates an already-parsed config; `file` names it in errors. */
export function parseHfConfig<S extends z.ZodType>(value: unknown, schema: S, file = '<config>'): z.infer<S> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new HfConfigError(file, null, `a config must be a JSON object, got ${Array.isArray(value) ? 'an array' : typeof value}`);
  }
  const r = schema.safeParse(value);
  if (!r.success) {
    const issue = r.error.issues[0];
    const field = issue && issue.path.length ? issue.path.map(String).join('.') : null;
    const more = r.error.issues.length > 1 ? ` (and ${r.error.issues.length - 1} more problem(s))` : '';
    throw new HfConfigError(file, field, `${issue?.message ?? 'invalid'}${more}`);
  }
  return r.data;
}

/** Reads and validates a `config.json`. */
export function readHfConfig<S extends z.ZodType>(path: string, schema: S): z.infer<S> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new HfConfigError(path, null, `cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new HfConfigError(path, null, `not valid JSON (${(e as Error).message})`);
  }
  return parseHfConfig(value, schema, path);
}

/**
 * Writes a config as transformers does (2-space JSON, trailing newline), atomically. It is validated
 * first when a schema is given, so an invalid config never reaches disk.
 */
export function writeHfConfig(path: string, config: Record<string, unknown>, schema?: z.ZodType): void {
  if (schema) parseHfConfig(config, schema, path);
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, `${JSON.stringify(config, null, 2)}\n`);
  renameSync(tmp, path);
}
