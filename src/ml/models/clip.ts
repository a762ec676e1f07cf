/**
 * CLIP (Radford et al. 2021) as Hugging Face `CLIPModel`: config, the ViT image tower, the causal text tower,
 * the symmetric InfoNCE loss, preprocessing, and HF-style save/load. Read top to bottom.
 *
 *   image (B, H, W, 3) in [0, 1] → CLIP mean/std → patch embedding (a P×P stride-P conv, no bias)
 *     → [class token; patches] + positions → pre_layrnorm (HF's spelling) → pre-LN transformer
 *     → post_layernorm of the class token → visual_projection                          → (B, projection_dim)
 *   text ids (B, L ≤ 77) → token + position embeddings → causal pre-LN transformer → final_layer_norm
 *     → the hidden state at the end-of-text token → text_projection                    → (B, projection_dim)
 *   similarity = exp(logit_scale) · cos(image, text)
 *
 * Names are HF CLIP's (`vision_model.embeddings.patch_embedding.weight`,
 * `text_model.encoder.layers.0.self_attn.k_proj.weight`, `visual_projection.weight`, `logit_scale`), so a
 * folder with the config.json, model.safetensors and tokenizer.json of `openai/clip-vit-base-patch32` loads by
 * name, every shape asserted. Every size is config: the same code runs ViT-B/32 and the tiny shapes CLIP.
 *
 * Layout: sequences (B, T, C); Linear weights [in, out] inside, (out, in) on disk; the patch conv
 * [kh, kw, Cin, Cout] inside, (Cout, Cin, kh, kw) on disk (params.ts converts).
 */
import { mkdir } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { z } from 'zod';
import { parseHfConfig, readHfConfig, writeHfConfig, AnyConfigSchema } from '../hf-config.js';
import { attention, feedForward, layerNorm, linear, sparseCrossEntropy, type Activation as NnActivation } from '../nn.js';
import { fromTorchLayout, LoadParamsError, Params, saveParamsFile, shapeMismatches, type ParamKind } from '../params.js';
import { Rng } from '../rng.js';
import { type TextTokenizer, withSwappedIds } from '../tokenizers/index.js';
import { convertHint } from '../checkpoints/hint.js';
import { forEachCheckpointTensor, openHfCheckpoint } from './dallebart.js';

// ---------------------------------------------------------------------------------------------------
// config (HF `CLIPConfig`: a text_config and a vision_config)

/** nn.ts's activations and OpenAI's quick_gelu. */
export type Activation = NnActivation | 'quick_gelu';

export interface ClipTextConfig {
  vocab_size: number; // rows of the token embedding
  hidden_size: number; // width of the text transformer
  intermediate_size: number; // hidden width of its MLP
  num_hidden_layers: number;
  num_attention_heads: number;
  max_position_embeddings: number; // text positions (77 in OpenAI's CLIP)
  hidden_act: Activation; // 'quick_gelu' in OpenAI's CLIP
  layer_norm_eps: number;
  pad_token_id: number;
  bos_token_id: number;
  eos_token_id: number; // the pooled token; 2 means a legacy config (pool at the highest id, as HF does)
}

export interface ClipVisionConfig {
  hidden_size: number; // width of the ViT
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  image_size: number; // square input side in pixels
  patch_size: number; // P: the image is cut into (image_size / P)² patches
  num_channels: number; // 3
  hidden_act: Activation;
  layer_norm_eps: number;
}

export interface ClipConfig {
  projection_dim: number; // width of the joint embedding space
  logit_scale_init_value: number; // ln(1 / 0.07), CLIP's initial temperature
  initializer_factor: number; // scales HF's init stds (1 in every released model)
  text_config: ClipTextConfig;
  vision_config: ClipVisionConfig;
}

/** openai/clip-vit-base-patch32: what HF's CLIPConfig means by keys a config.json leaves out. */
export const CLIP_VIT_B32: ClipConfig = {
  projection_dim: 512,
  logit_scale_init_value: 2.6592,
  initializer_factor: 1,
  text_config: {
    vocab_size: 49408,
    hidden_size: 512,
    intermediate_size: 2048,
    num_hidden_layers: 12,
    num_attention_heads: 8,
    max_position_embeddings: 77,
    hidden_act: 'quick_gelu',
    layer_norm_eps: 1e-5,
    pad_token_id: 1,
    bos_token_id: 49406,
    eos_token_id: 49407,
  },
  vision_config: {
    hidden_size: 768,
    intermediate_size: 3072,
    num_hidden_layers: 12,
    num_attention_heads: 12,
    image_size: 224,
    patch_size: 32,
    num_channels: 3,
    hidden_act: 'quick_gelu',
    layer_norm_eps: 1e-5,
  },
};

const posInt = z.number().int().positive();
const nonNegInt = z.number().int().nonnegative();
const act = z.enum(['gelu', 'gelu_new', 'quick_gelu', 'relu', 'swish', 'silu']);

/** The keys we read from an HF CLIP config.json (others are kept in the file and ignored). */
const ClipTextSchema = z.looseObject({
  vocab_size: posInt.optional(),
  hidden_size: posInt.optional(),
  intermediate_size: posInt.optional(),
  num_hidden_layers: nonNegInt.optional(),
  num_attention_heads: posInt.optional(),
  max_position_embeddings: posInt.optional(),
  hidden_act: act.optional(),
  layer_norm_eps: z.number().positive().optional(),
  pad_token_id: nonNegInt.nullable().optional(),
  bos_token_id: nonNegInt.nullable().optional(),
  eos_token_id: nonNegInt.nullable().optional(),
});
const ClipVisionSchema = z.looseObject({
  hidden_size: posInt.optional(),
  intermediate_size: posInt.optional(),
  num_hidden_layers: nonNegInt.optional(),
  num_attention_heads: posInt.optional(),
  image_size: posInt.optional(),
  patch_size: posInt.optional(),
  num_channels: posInt.optional(),
  hidden_act: act.optional(),
  layer_norm_eps: z.number().positive().optional(),
});
export const ClipConfigSchema = z.looseObject({
  model_type: z.string().optional(),
  projection_dim: posInt.optional(),
  logit_scale_init_value: z.number().optional(),
  initializer_factor: z.number().positive().optional(),
  text_config: ClipTextSchema.optional(),
  vision_config: ClipVisionSchema.optional(),
});

export class ClipConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ClipConfigError';
  }
}

type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? Partial<T[K]> : T[K] };
export type ClipConfigInput = DeepPartial<ClipConfig>;

function defined<T extends object>(o: T | undefined): Partial<T> {
  return Object.fromEntries(Object.entries(o ?? {}).filter(([, v]) => v !== undefined && v !== null)) as Partial<T>;
}

/** Defaults (ViT-B/32's) filled in and the arithmetic checked, before any tensor exists. */
export function resolveClipConfig(partial: ClipConfigInput = {}, file = '<config>'): ClipConfig {
  const parsed = parseHfConfig(partial, ClipConfigSchema, file);
  const c: ClipConfig = {
    projection_dim: parsed.projection_dim ?? CLIP_VIT_B32.projection_dim,
    logit_scale_init_value: parsed.logit_scale_init_value ?? CLIP_VIT_B32.logit_scale_init_value,
    initializer_factor: parsed.initializer_factor ?? 1,
    text_config: { ...CLIP_VIT_B32.text_config, ...(defined(parsed.text_config) as Partial<ClipTextConfig>) },
    vision_config: { ...CLIP_VIT_B32.vision_config, ...(defined(parsed.vision_config) as Partial<ClipVisionConfig>) },
  };
  const t = c.text_config;
  const v = c.vision_config;
  const bad = (field: string, problem: string): never => {
    throw new ClipConfigError(`${file}: CLIP config field "${field}": ${problem}`);
  };
  if (t.hidden_size % t.num_attention_heads !== 0) bad('text_config.num_attention_heads', `hidden_size ${t.hidden_size} is not divisible by ${t.num_attention_heads} heads`);
  if (v.hidden_size % v.num_attention_heads !== 0) bad('vision_config.num_attention_heads', `hidden_size ${v.hidden_size} is not divisible by ${v.num_attention_heads} heads`);
  if (v.image_size % v.patch_size !== 0) bad('vision_config.patch_size', `image_size ${v.image_size} is not a multiple of patch_size ${v.patch_size}`);
  for (const k of ['pad_token_id', 'bos_token_id', 'eos_token_id'] as const) if (t[k] >= t.vocab_size) bad(`text_config.${k}`, `${t[k]} is not a token of the vocabulary (vocab_size ${t.vocab_size})`);
  return c;
}

/** Patches per image side, and the vision sequence length (patches + the class token). */
export function clipVisionTokens(v: ClipVisionConfig): { side: number; tokens: number } {
  const side = v.image_size / v.patch_size;
  return { side, tokens: side * side + 1 };
}

// ---------------------------------------------------------------------------------------------------
// parameter tree (HF CLIP names)

type ParamInit = { std: number } | 'zeros' | 'ones';

export interface ClipParamSpec {
  name: string;
  shape: number[]; // internal layout
  kind: ParamKind;
  init: ParamInit;
}

/**
 * Every parameter of a config, in creation order, with HF's init (`CLIPPreTrainedModel._init_weights`):
 * the one list the builder and the load check read.
 */
export function clipParamSpecs(c: ClipConfig): ClipParamSpec[] {
  const specs: ClipParamSpec[] = [];
  const f = c.initializer_factor;
  const add = (name: string, shape: number[], kind: ParamKind, init: ParamInit): void => void specs.push({ name, shape, kind, init });
  const norm = (prefix: string, C: number): void => {
    add(`${prefix}.weight`, [C], 'plain', 'ones');
    add(`${prefix}.bias`, [C], 'plain', 'zeros');
  };
  const lin = (prefix: string, inDim: number, outDim: number, std: number, bias = true): void => {
    add(`${prefix}.weight`, [inDim, outDim], 'linear', { std });
    if (bias) add(`${prefix}.bias`, [outDim], 'plain', 'zeros');
  };
  const encoder = (tower: string, C: number, F: number, layers: number): void => {
    const inStd = C ** -0.5 * (2 * layers) ** -0.5 * f;
    for (let i = 0; i < layers; i++) {
      const l = `${tower}.encoder.layers.${i}`;
      for (const p of ['k_proj', 'v_proj', 'q_proj']) lin(`${l}.self_attn.${p}`, C, C, inStd);
      lin(`${l}.self_attn.out_proj`, C, C, C ** -0.5 * f);
      norm(`${l}.layer_norm1`, C);
      lin(`${l}.mlp.fc1`, C, F, (2 * C) ** -0.5 * f);
      lin(`${l}.mlp.fc2`, F, C, inStd);
      norm(`${l}.layer_norm2`, C);
    }
  };
  const t = c.text_config;
  add('text_model.embeddings.token_embedding.weight', [t.vocab_size, t.hidden_size], 'plain', { std: 0.02 * f });
  add('text_model.embeddings.position_embedding.weight', [t.max_position_embeddings, t.hidden_size], 'plain', { std: 0.02 * f });
  encoder('text_model', t.hidden_size, t.intermediate_size, t.num_hidden_layers);
  norm('text_model.final_layer_norm', t.hidden_size);
  const v = c.vision_config;
  const P = v.patch_size;
  add('vision_model.embeddings.class_embedding', [v.hidden_size], 'plain', { std: v.hidden_size ** -0.5 * f });
  add('vision_model.embeddings.patch_embedding.weight', [P, P, v.num_channels, v.hidden_size], 'conv2d', { std: 0.02 * f });
  add('vision_model.embeddings.position_embedding.weight', [clipVisionTokens(v).tokens, v.hidden_size], 'plain', { std: 0.02 * f });
  norm('vision_model.pre_layrnorm', v.hidden_size);
  encoder('vision_model', v.hidden_size, v.intermediate_size, v.num_hidden_layers);
  norm('vision_model.post_layernorm', v.hidden_size);
  lin('visual_projection', v.hidden_size, c.projection_dim, v.hidden_size ** -0.5 * f, false);
  lin('text_projection', t.hidden_size, c.projection_dim, t.hidden_size ** -0.5 * f, false);
  add('logit_scale', [], 'plain', 'zeros'); // filled with logit_scale_init_value by the builder
  return specs;
}

/** Buffers transformers saves beside the parameters (older versions): accepted when loading, never required. */
const IGNORED_BUFFERS = new Set(['text_model.embeddings.position_ids', 'vision_model.embeddings.position_ids']);

function torchShape(s: ClipParamSpec): number[] {
  if (s.kind === 'linear') return [s.shape[1] as number, s.shape[0] as number];
  if (s.kind === 'conv2d') return [s.shape[3] as number, s.shape[2] as number, s.shape[0] as number, s.shape[1] as number];
  return s.shape.slice();
}

/** Builds the parameter tree with a seeded init; `empty` skips the random draws for a model about to be loaded. */
export function buildClipParams(c: ClipConfig, seed: number, opts: { empty?: boolean } = {}): Params {
  const rng = new Rng(seed);
  const p = new Params();
  for (const s of clipParamSpecs(c)) {
    const data = new Float32Array(s.shape.reduce((a, b) => a * b, 1));
    if (s.name === 'logit_scale') data[0] = c.logit_scale_init_value;
    else if (s.init === 'ones') data.fill(1);
    else if (s.init !== 'zeros' && !opts.empty) rng.fillNormal(data, 0, s.init.std);
    p.add(s.name, tf.tensor(data, s.shape, 'float32'), s.kind);
  }
  return p;
}

// ---------------------------------------------------------------------------------------------------
// the towers

/** CLIP's normalisation of [0, 1] RGB (the mean/std of its training images). */
export const CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073] as const;
export const CLIP_STD = [0.26862954, 0.26130258, 0.27577711] as const;

export class ClipError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ClipError';
  }
}

/** quick_gelu (OpenAI's CLIP): x·σ(1.702x). The other activations are nn.ts's. */
function mlp(p: Params, prefix: string, x: tf.Tensor, name: Activation): tf.Tensor {
  if (name !== 'quick_gelu') return feedForward(p, prefix, x, { activation: name });
  const h = linear(p, `${prefix}.fc1`, x);
  return linear(p, `${prefix}.fc2`, tf.mul(h, tf.sigmoid(tf.mul(h, 1.702))));
}

/** Pre-LN encoder layer: x + attn(LN1 x), then + mlp(LN2 x). (B, T, C) → (B, T, C). */
function encoderLayer(p: Params, prefix: string, x: tf.Tensor3D, o: { heads: number; act: Activation; eps: number; causal: boolean; keyMask?: tf.Tensor2D }): tf.Tensor3D {
  const a = attention(p, `${prefix}.self_attn`, layerNorm(p, `${prefix}.layer_norm1`, x, o.eps) as tf.Tensor3D, { numHeads: o.heads, causal: o.causal, ...(o.keyMask ? { keyMask: o.keyMask } : {}) });
  const h = tf.add(x, a.out) as tf.Tensor3D;
  return tf.add(h, mlp(p, `${prefix}.mlp`, layerNorm(p, `${prefix}.layer_norm2`, h, o.eps), o.act)) as tf.Tensor3D;
}

export class Clip {
  constructor(
    readonly config: ClipConfig,
    readonly params: Params,
  ) {}

  static create(config: ClipConfigInput = {}, seed = 0): Clip {
    const c = resolveClipConfig(config);
    return new Clip(c, buildClipParams(c, seed));
  }

  /**
   * Image tower: pixels (B, S, S, 3) in [0, 1] at S = image_size (see `preprocessForClip`) → image
   * embeddings (B, projection_dim), not normalised. The result belongs to the caller.
   */
  encodeImage(pixels: tf.Tensor4D): tf.Tensor2D {
    const v = this.config.vision_config;
    const [B, H, W, Cin] = pixels.shape;
    if (H !== v.image_size || W !== v.image_size || Cin !== v.num_channels) {
      throw new ClipError(`images must be (B, ${v.image_size}, ${v.image_size}, ${v.num_channels}), got ${JSON.stringify(pixels.shape)}`);
    }
    const P = v.patch_size;
    const { side } = clipVisionTokens(v);
    const C = v.hidden_size;
    const p = this.params;
    return tf.tidy(() => {
      const x = tf.div(tf.sub(pixels, tf.tensor1d(CLIP_MEAN.slice(0, Cin))), tf.tensor1d(CLIP_STD.slice(0, Cin))); // (B, S, S, 3)
      // the stride-P conv as one matmul over flattened patches: (B, side, P, side, P, Cin) → (B·N, P·P·Cin)
      const patches = tf.reshape(tf.transpose(tf.reshape(x, [B, side, P, side, P, Cin]), [0, 1, 3, 2, 4, 5]), [B * side * side, P * P * Cin]);
      const kernel = tf.reshape(p.get('vision_model.embeddings.patch_embedding.weight'), [P * P * Cin, C]); // (kh, kw, Cin) rows, as the patches
      const emb = tf.reshape(tf.matMul(patches, kernel), [B, side * side, C]); // (B, N, C)
      const cls = tf.tile(tf.reshape(p.get('vision_model.embeddings.class_embedding'), [1, 1, C]), [B, 1, 1]); // (B, 1, C)
      let h = tf.add(tf.concat([cls, emb], 1), p.get('vision_model.embeddings.position_embedding.weight')) as tf.Tensor3D; // (B, N + 1, C)
      h = layerNorm(p, 'vision_model.pre_layrnorm', h, v.layer_norm_eps) as tf.Tensor3D;
      const o = { heads: v.num_attention_heads, act: v.hidden_act, eps: v.layer_norm_eps, causal: false };
      for (let i = 0; i < v.num_hidden_layers; i++) h = encoderLayer(p, `vision_model.encoder.layers.${i}`, h, o);
      const pooled = layerNorm(p, 'vision_model.post_layernorm', tf.reshape(tf.slice(h, [0, 0, 0], [B, 1, C]), [B, C]), v.layer_norm_eps); // (B, C)
      return linear(p, 'visual_projection', pooled) as tf.Tensor2D; // (B, projection_dim)
    });
  }

  /**
   * Text tower: ids (B, L ≤ max_position_embeddings) int32 with its mask (1 = token) → text embeddings
   * (B, projection_dim), not normalised, read at each row's end-of-text token. The result belongs to the caller.
   */
  encodeText(ids: tf.Tensor2D, mask: tf.Tensor2D): tf.Tensor2D {
    const t = this.config.text_config;
    const [B, L] = ids.shape;
    if (ids.dtype !== 'int32') throw new ClipError(`text ids must be int32, got ${ids.dtype}`);
    if (L > t.max_position_embeddings) throw new ClipError(`text has ${L} positions, the model has ${t.max_position_embeddings}`);
    const eot = this.eotPositions(ids);
    const p = this.params;
    return tf.tidy(() => {
      const pos = tf.slice(p.get('text_model.embeddings.position_embedding.weight'), [0, 0], [L, t.hidden_size]); // (L, C)
      let h = tf.add(tf.gather(p.get('text_model.embeddings.token_embedding.weight'), ids), pos) as tf.Tensor3D; // (B, L, C)
      const o = { heads: t.num_attention_heads, act: t.hidden_act, eps: t.layer_norm_eps, causal: true, keyMask: mask };
      for (let i = 0; i < t.num_hidden_layers; i++) h = encoderLayer(p, `text_model.encoder.layers.${i}`, h, o);
      h = layerNorm(p, 'text_model.final_layer_norm', h, t.layer_norm_eps) as tf.Tensor3D;
      const flat = tf.reshape(h, [B * L, t.hidden_size]);
      const pooled = tf.gather(flat, tf.tensor1d(eot.map((e, b) => b * L + e), 'int32')); // (B, C)
      return linear(p, 'text_projection', pooled) as tf.Tensor2D;
    });
  }

  /**
   * Where each row's end-of-text token is, as HF CLIP finds it: the first `eos_token_id`, or for a legacy
   * config (eos_token_id 2) the highest id, OpenAI's own rule (its EOT is the last vocabulary entry).
   * A CLIP trained here never has a real end-of-text token at 2: see `clipTokenizer`.
   */
  private eotPositions(ids: tf.Tensor2D): number[] {
    const [B, L] = ids.shape;
    const data = ids.dataSync();
    const eos = this.config.text_config.eos_token_id;
    return Array.from({ length: B }, (_, b) => {
      const row = data.subarray(b * L, (b + 1) * L);
      if (eos === LEGACY_EOS_ID) return row.indexOf(Math.max(...row));
      const at = row.indexOf(eos);
      if (at < 0) throw new ClipError(`text row ${b} has no end-of-text token (id ${eos}); encode it with clipTextBatch`);
      return at;
    });
  }

  /** exp(logit_scale), capped at 100 as OpenAI's training does. */
  logitScale(): tf.Scalar {
    return tf.tidy(() => tf.minimum(tf.exp(this.params.get('logit_scale')), 100) as tf.Scalar);
  }

  /**
   * Symmetric InfoNCE of a batch of B matching (image, text) pairs: the mean of the cross-entropies of
   * text→image and image→text similarities with the pairs on the diagonal. Texts past the first B rows are
   * extra negatives (NegCLIP's hard negatives): every image is also scored against them, no text is.
   * Use inside `valueAndGrads`.
   */
  loss(pixels: tf.Tensor4D, ids: tf.Tensor2D, mask: tf.Tensor2D): tf.Scalar {
    const b = pixels.shape[0];
    if (ids.shape[0] < b) throw new ClipError(`loss: ${b} images but ${ids.shape[0]} texts; the first ${b} texts are the images' captions`);
    return tf.tidy(() => {
      const img = l2normalize(this.encodeImage(pixels));
      const txt = l2normalize(this.encodeText(ids, mask));
      const logits = tf.mul(tf.matMul(img, txt, false, true), this.logitScale()) as tf.Tensor2D; // (B images, B + extra texts)
      const labels = tf.range(0, b, 1, 'int32') as tf.Tensor1D;
      const textToImage = tf.transpose(ids.shape[0] > b ? tf.slice(logits, [0, 0], [b, b]) : logits) as tf.Tensor2D; // (B texts, B images)
      return tf.div(tf.add(sparseCrossEntropy(logits, labels), sparseCrossEntropy(textToImage, labels)), 2) as tf.Scalar;
    });
  }

  dispose(): void {
    this.params.dispose();
  }
}

/** Rows scaled to unit length. */
export function l2normalize(x: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => tf.div(x, tf.maximum(tf.norm(x, 2, -1, true), 1e-12)) as tf.Tensor2D);
}

// ---------------------------------------------------------------------------------------------------
// inputs: text batches and image preprocessing

/** The eos_token_id that HF CLIP reads as a legacy config (pooling at the highest id instead of that token). */
export const LEGACY_EOS_ID = 2;

/**
 * The tokenizer a CLIP trained here reads. CLIP pools its text at the end-of-text token, and HF's
 * CLIPTextTransformer reads eos_token_id 2 as a legacy config and pools at the highest id instead. A
 * BART-style tokenizer has `</s>` at 2: a CLIP on it pooled at the caption's highest-id token and, its text
 * tower being causal, never saw the words after it (on shapes, mostly the background). So the CLIP's copy
 * has `</s>` and the highest id exchanged, and both rules find the end of the text. Other tokenizers are
 * returned as they are.
 */
export function clipTokenizer(tok: TextTokenizer): TextTokenizer {
  if (tok.eosId !== LEGACY_EOS_ID) return tok;
  return withSwappedIds(tok, LEGACY_EOS_ID, tok.vocabSize - 1);
}

/**
 * Text ids for the text tower: each text with the tokenizer's specials (CLIP: `<|startoftext|> … <|endoftext|>`),
 * cut to `length` keeping the end-of-text token last, padded with the pad id. (B, length) int32 and its mask.
 */
export function clipTextBatch(tok: TextTokenizer, texts: readonly string[], maxLength: number): { ids: tf.Tensor2D; mask: tf.Tensor2D } {
  // rows are as long as the longest text needs (≤ maxLength): positions after the end-of-text token never
  // reach it through the causal mask, so padding to 77 would only cost time
  const length = texts.reduce((m, t) => Math.max(m, tok.encode(t, { maxLength }).ids.length), 1);
  const padId = tok.padId ?? tok.eosId; // OpenAI's CLIP pads with <|endoftext|>
  if (padId === null) throw new ClipError(`tokenizer ${tok.source} has neither a pad nor an end-of-text token`);
  const enc = tok.encodeBatch(texts, { maxLength: length, padId });
  return { ids: tf.tensor2d(enc.ids, [texts.length, length], 'int32'), mask: tf.tensor2d(enc.mask, [texts.length, length], 'int32') };
}

/**
 * CLIP's preprocessing of one RGB image (H, W, 3) in [0, 1]: the shortest side resized to `size` (bicubic,
 * as CLIPImageProcessor; when it already is `size`, untouched), then the centre `size`×`size` crop. The
 * mean/std normalisation is inside `encodeImage`. Returns (size, size, 3) in [0, 1].
 */
export function preprocessForClip(rgb: Float32Array, height: number, width: number, size: number): Float32Array {
  let h = height;
  let w = width;
  let src = rgb;
  if (Math.min(h, w) !== size) {
    const scale = size / Math.min(h, w);
    const nh = Math.max(size, Math.round(h * scale));
    const nw = Math.max(size, Math.round(w * scale));
    src = resizeBicubic(src, h, w, nh, nw);
    h = nh;
    w = nw;
  }
  const top = Math.floor((h - size) / 2);
  const left = Math.floor((w - size) / 2);
  if (top === 0 && left === 0 && h === size && w === size) return src;
  const out = new Float32Array(size * size * 3);
  for (let y = 0; y < size; y++) out.set(src.subarray(((top + y) * w + left) * 3, ((top + y) * w + left + size) * 3), y * size * 3);
  return out;
}

/**
 * Separable bicubic resampling (Keys' a = −0.5, PIL's BICUBIC) with PIL's antialiasing: when shrinking, the
 * kernel is stretched by the scale, so every source pixel contributes. (h, w, 3) → (nh, nw, 3), clamped to [0, 1].
 */
export function resizeBicubic(src: Float32Array, h: number, w: number, nh: number, nw: number): Float32Array {
  const cubic = (x: number): number => {
    const a = -0.5;
    const t = Math.abs(x);
    if (t < 1) return ((a + 2) * t - (a + 3)) * t * t + 1;
    if (t < 2) return (((t - 5) * t + 8) * t - 4) * a;
    return 0;
  };
  // per output coordinate: the source indices and normalised weights along one axis
  const axis = (n: number, m: number): { idx: Int32Array[]; wt: Float32Array[] } => {
    const scale = n / m;
    const support = 2 * Math.max(scale, 1);
    const idx: Int32Array[] = [];
    const wt: Float32Array[] = [];
    for (let o = 0; o < m; o++) {
      const centre = (o + 0.5) * scale;
      const lo = Math.max(0, Math.floor(centre - support));
      const hi = Math.min(n, Math.ceil(centre + support));
      const is: number[] = [];
      const ws: number[] = [];
      for (let i = lo; i < hi; i++) {
        const k = cubic((i + 0.5 - centre) / Math.max(scale, 1));
        if (k !== 0) {
          is.push(i);
          ws.push(k);
        }
      }
      const sum = ws.reduce((a, b) => a + b, 0);
      idx.push(Int32Array.from(is));
      wt.push(Float32Array.from(ws.map((x) => x / sum)));
    }
    return { idx, wt };
  };
  const ax = axis(w, nw);
  const ay = axis(h, nh);
  const tmp = new Float32Array(h * nw * 3); // horizontal pass
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < nw; x++) {
      const is = ax.idx[x] as Int32Array;
      const ws = ax.wt[x] as Float32Array;
      for (let ch = 0; ch < 3; ch++) {
        let s = 0;
        for (let k = 0; k < is.length; k++) s += (ws[k] as number) * (src[(y * w + (is[k] as number)) * 3 + ch] as number);
        tmp[(y * nw + x) * 3 + ch] = s;
      }
    }
  }
  const out = new Float32Array(nh * nw * 3); // vertical pass
  for (let y = 0; y < nh; y++) {
    const is = ay.idx[y] as Int32Array;
    const ws = ay.wt[y] as Float32Array;
    for (let x = 0; x < nw; x++) {
      for (let ch = 0; ch < 3; ch++) {
        let s = 0;
        for (let k = 0; k < is.length; k++) s += (ws[k] as number) * (tmp[((is[k] as number) * nw + x) * 3 + ch] as number);
        out[(y * nw + x) * 3 + ch] = Math.min(1, Math.max(0, s));
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// HF config.json and weights

export const CLIP_CONFIG_FILE = 'config.json';
export const CLIP_WEIGHTS_FILE = 'model.safetensors';

export function clipConfigToHf(c: ClipConfig): Record<string, unknown> {
  return {
    model_type: 'clip',
    architectures: ['CLIPModel'],
    projection_dim: c.projection_dim,
    logit_scale_init_value: c.logit_scale_init_value,
    initializer_factor: c.initializer_factor,
    text_config: { model_type: 'clip_text_model', projection_dim: c.projection_dim, ...c.text_config },
    vision_config: { model_type: 'clip_vision_model', projection_dim: c.projection_dim, ...c.vision_config },
  };
}

/** Reads a folder's config.json (HF CLIP) into a resolved config. */
export function readClipConfig(dir: string): ClipConfig {
  const file = join(dir, CLIP_CONFIG_FILE);
  const raw = readHfConfig(file, AnyConfigSchema) as Record<string, unknown>;
  if (raw.model_type !== undefined && raw.model_type !== 'clip') throw new ClipConfigError(`${file}: model_type "${String(raw.model_type)}" is not "clip"`);
  return resolveClipConfig(raw as ClipConfigInput, file);
}

/** Writes `dir/config.json` (HF CLIP) and `dir/model.safetensors` (F32, PyTorch layout, HF names). */
export async function saveClip(model: Clip, dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  writeHfConfig(join(dir, CLIP_CONFIG_FILE), clipConfigToHf(model.config), ClipConfigSchema);
  saveParamsFile(join(dir, CLIP_WEIGHTS_FILE), model.params);
}

/**
 * Loads an HF CLIP folder (ours, or a converted openai/clip-vit-*): every tensor is checked against
 * `clipParamSpecs(config)` before any data is read; a missing, unexpected or wrongly shaped tensor refuses the
 * load with the whole list (LoadParamsError).
 */
export async function loadClip(dir: string): Promise<Clip> {
  if (!existsSync(join(dir, CLIP_CONFIG_FILE))) throw new ClipError(convertHint(dir) ?? `${dir}: no ${CLIP_CONFIG_FILE} (a CLIP model folder has config.json, model.safetensors and tokenizer.json)`);
  const config = readClipConfig(dir);
  const ckpt = openHfCheckpoint(dir);
  const specs = clipParamSpecs(config);
  const expected = new Map(specs.map((s) => [s.name, torchShape(s)] as [string, number[]]));
  const mismatches = shapeMismatches(expected, ckpt.tensors, IGNORED_BUFFERS);
  if (mismatches.length) throw new LoadParamsError(dir, mismatches);
  const model = new Clip(config, buildClipParams(config, 0, { empty: true }));
  try {
    await forEachCheckpointTensor(ckpt, expected.keys(), (name, raw) => {
      tf.tidy(() => model.params.get(name).assign(tf.cast(fromTorchLayout(tf.tensor(raw.data, raw.shape, raw.dtype), model.params.kind(name)), 'float32')));
    });
  } catch (e) {
    model.dispose();
    throw e;
  }
  return model;
}
