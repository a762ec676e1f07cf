/**
 * DalleBart (dalle-mini) and text BART (HF `BartForConditionalGeneration`) in one file: config, the
 * encoder and decoder layers, the model with teacher forcing and incremental decoding, and HF-style
 * save/load. Read top to bottom.
 *
 * Two flavours, chosen by `model_type`:
 *   - 'dallebart': the encoder reads text tokens, the decoder predicts image codes. The decoder has its
 *     own embedding `model.decoder.embed_tokens.weight` of image_vocab_size + 1 rows (the last is BOS =
 *     image_vocab_size) and an untied `lm_head.weight` of image_vocab_size + 1 outputs, as dalle-mini:
 *     BOS is never a target, so a sampler masks logit `image_vocab_size` (see `bosTokenId`).
 *   - 'bart': text-to-text BART for denoising pre-training. Encoder, decoder and the lm head share
 *     `model.shared.weight`; `final_logits_bias` (1, vocab_size) is a non-trainable buffer as in HF.
 *     A bart-pretrain run saved with `saveDalleBart` is an HF BART folder whose encoder
 *     `warmStartEncoder` (warm-start.ts) copies into a DalleBart.
 * The encoder (names, shapes, computation) is the same in both flavours.
 *
 * Positions. HF BART's learned positional embeddings skip two rows (`offset = 2`, a fairseq legacy), so
 * `model.encoder.embed_positions.weight` has max_text_length + 2 rows and position i reads row i + 2;
 * we keep that layout for the encoder of both flavours and for the text decoder, so real facebook/bart-*
 * checkpoints load unchanged. The DalleBart decoder has no padding token and uses dalle-mini's layout:
 * image_length + 1 rows, offset 0 (teacher forcing uses rows 0 … image_length − 1: BOS + 255 codes).
 *
 * Layer norms. 'postln' is BART's (norm after each residual add: `self_attn_layer_norm`,
 * `encoder_attn_layer_norm`, `final_layer_norm`); 'preln' is mBART's (the same norms before each
 * sub-layer). `use_final_ln_encoder/decoder` add a norm after the last layer (dalle-mini's final LN,
 * mBART's `model.encoder.layer_norm` / `model.decoder.layer_norm`). The FFN is BART's `fc1`/`fc2`, or with
 * `use_glu` dalle-mini's GLU `fc0`/`fc1`/`fc2` (gelu(x·W0) ⊙ x·W1 → W2), both directly in the layer.
 *
 * Layout: sequences (B, T, C); Linear weights [in, out] inside, (out, in) on disk (params.ts converts).
 */
import { existsSync, readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { z } from 'zod';
import { convertHint, convertProblem } from '../checkpoints/hint.js';
import { BartConfigSchema, readHfConfig, writeHfConfig, type BartConfig } from '../hf-config.js';
import { DecodeProgram, emptyKvCache, type ProgramRows } from '../kernels/decode.js';
import { nativeFusionActive } from '../kernels/ops.js';
import {
  attention,
  crossAttentionCache,
  dropout,
  embedding,
  feedForward,
  gluFeedForward,
  keyMaskBias,
  layerNorm,
  linear,
  sparseCrossEntropy,
  type Activation,
  type KVCache,
} from '../nn.js';
import { fromTorchLayout, LoadParamsError, Params, saveParamsFile, shapeMismatches, type LoadMismatch, type ParamKind } from '../params.js';
import { Rng } from '../rng.js';
import { forEachSafetensor, readSafetensorsHeader, type RawTensor } from '../safetensors.js';

// ---------------------------------------------------------------------------------------------------
// config

export type DalleBartFlavour = 'dallebart' | 'bart';
export type LnPositions = 'postln' | 'preln';

export interface DalleBartConfig {
  model_type: DalleBartFlavour; // 'dallebart': text → image codes; 'bart': text → text (denoising pre-training)
  vocab_size: number; // text vocabulary (rows of model.shared)
  d_model: number; // width of every layer
  encoder_layers: number; // encoder layer count
  decoder_layers: number; // decoder layer count
  encoder_attention_heads: number; // heads of encoder self-attention
  decoder_attention_heads: number; // heads of decoder self- and cross-attention
  encoder_ffn_dim: number; // hidden width of the encoder feed-forward
  decoder_ffn_dim: number; // hidden width of the decoder feed-forward
  use_glu: boolean; // GLU feed-forward (fc0, fc1, fc2) instead of BART's fc1 → act → fc2
  activation_function: Activation; // feed-forward activation ('gelu' is exact GELU, as HF)
  use_bias: boolean; // biases on attention and feed-forward linears (BART: true, dalle-mini: false)
  ln_positions: LnPositions; // 'postln' (BART) or 'preln' (mBART / dalle-mini-like)
  use_final_ln_encoder: boolean; // a layer norm after the last encoder layer (model.encoder.layer_norm)
  use_final_ln_decoder: boolean; // a layer norm after the last decoder layer (model.decoder.layer_norm)
  scale_embedding: boolean; // token embeddings × √d_model
  max_text_length: number; // text positions (encoder; also the text decoder's in 'bart')
  image_vocab_size: number; // codebook size; BOS = image_vocab_size ('dallebart')
  image_length: number; // codes per image; decoder positions = image_length + 1 ('dallebart')
  dropout: number; // dropout on embeddings and sub-layer outputs during training
  attention_dropout: number; // dropout on attention probabilities
  activation_dropout: number; // dropout after the feed-forward activation
  init_std: number; // std of the normal init of linears and embeddings
  pad_token_id: number; // text padding id (its embedding row starts at zero; ignored as a 'bart' target)
  bos_token_id: number; // text BOS id (BART: 0)
  eos_token_id: number; // text EOS id (BART: 2)
  decoder_start_token_id: number; // first decoder input of the text decoder ('bart'; BART: 2)
}

/** dalle-mini's "mini" sizes (12 + 12 layers, d 1024, 16 heads, GLU 2730, text 64, 256 codes of 16384). */
export const DALLEBART_DEFAULTS: DalleBartConfig = {
  model_type: 'dallebart',
  vocab_size: 50264,
  d_model: 1024,
  encoder_layers: 12,
  decoder_layers: 12,
  encoder_attention_heads: 16,
  decoder_attention_heads: 16,
  encoder_ffn_dim: 2730,
  decoder_ffn_dim: 2730,
  use_glu: true,
  activation_function: 'gelu',
  use_bias: false,
  ln_positions: 'postln',
  use_final_ln_encoder: false,
  use_final_ln_decoder: false,
  scale_embedding: false,
  max_text_length: 64,
  image_vocab_size: 16384,
  image_length: 256,
  dropout: 0,
  attention_dropout: 0,
  activation_dropout: 0,
  init_std: 0.02,
  pad_token_id: 1,
  bos_token_id: 0,
  eos_token_id: 2,
  decoder_start_token_id: 2,
};

/** HF `BartConfig` defaults: what an HF BART config.json means by the keys it leaves out. */
const HF_BART_DEFAULTS: Partial<DalleBartConfig> = {
  model_type: 'bart',
  vocab_size: 50265,
  encoder_ffn_dim: 4096,
  decoder_ffn_dim: 4096,
  use_glu: false,
  use_bias: true,
  ln_positions: 'postln',
  max_text_length: 1024,
  dropout: 0.1,
};

/** Learned-position rows HF BART skips (fairseq kept them for the padding index). */
export const BART_POSITION_OFFSET = 2;

const posInt = z.number().int().positive();
const nonNegInt = z.number().int().nonnegative();
const prob = z.number().min(0).lt(1);

/** Validates a partial config (every field optional, unknown keys refused so typos surface). */
export const DalleBartConfigSchema = z.strictObject({
  model_type: z.enum(['dallebart', 'bart']).optional(),
  vocab_size: posInt.optional(),
  d_model: posInt.optional(),
  encoder_layers: nonNegInt.optional(),
  decoder_layers: nonNegInt.optional(),
  encoder_attention_heads: posInt.optional(),
  decoder_attention_heads: posInt.optional(),
  encoder_ffn_dim: posInt.optional(),
  decoder_ffn_dim: posInt.optional(),
  use_glu: z.boolean().optional(),
  activation_function: z.enum(['gelu', 'gelu_new', 'relu', 'swish', 'silu']).optional(),
  use_bias: z.boolean().optional(),
  ln_positions: z.enum(['postln', 'preln']).optional(),
  use_final_ln_encoder: z.boolean().optional(),
  use_final_ln_decoder: z.boolean().optional(),
  scale_embedding: z.boolean().optional(),
  max_text_length: posInt.optional(),
  image_vocab_size: posInt.optional(),
  image_length: posInt.optional(),
  dropout: prob.optional(),
  attention_dropout: prob.optional(),
  activation_dropout: prob.optional(),
  init_std: z.number().nonnegative().optional(),
  pad_token_id: nonNegInt.optional(),
  bos_token_id: nonNegInt.optional(),
  eos_token_id: nonNegInt.optional(),
  decoder_start_token_id: nonNegInt.optional(),
});

export class DalleBartConfigError extends Error {
  constructor(
    readonly field: string | null,
    problem: string,
  ) {
    super(`DalleBart config${field ? ` field "${field}"` : ''}: ${problem}`);
    this.name = 'DalleBartConfigError';
  }
}

/** Defaults filled in, every field validated and the arithmetic checked, before any tensor exists. */
export function resolveDalleBartConfig(partial: Partial<DalleBartConfig> = {}): DalleBartConfig {
  const r = DalleBartConfigSchema.safeParse(partial);
  if (!r.success) {
    const issue = r.error.issues[0];
    const field = issue?.path.length ? issue.path.map(String).join('.') : issue?.code === 'unrecognized_keys' ? issue.keys.join(', ') : null;
    const more = r.error.issues.length > 1 ? ` (and ${r.error.issues.length - 1} more problem(s))` : '';
    throw new DalleBartConfigError(field, `${issue?.message ?? 'invalid'}${more}`);
  }
  const c: DalleBartConfig = { ...DALLEBART_DEFAULTS };
  for (const [k, v] of Object.entries(r.data)) if (v !== undefined) (c as unknown as Record<string, unknown>)[k] = v;
  for (const side of ['encoder', 'decoder'] as const) {
    const heads = c[`${side}_attention_heads`];
    if (c.d_model % heads !== 0) throw new DalleBartConfigError(`${side}_attention_heads`, `d_model ${c.d_model} is not divisible by ${heads} heads`);
  }
  for (const k of ['pad_token_id', 'bos_token_id', 'eos_token_id', 'decoder_start_token_id'] as const) {
    if (c[k] >= c.vocab_size) throw new DalleBartConfigError(k, `${c[k]} is not a token of the text vocabulary (vocab_size ${c.vocab_size})`);
  }
  return c;
}

/** The DalleBart decoder's BOS id (= image_vocab_size); its logit must never be sampled. */
export function bosTokenId(c: DalleBartConfig): number {
  return c.image_vocab_size;
}

/** Rows of the decoder embedding and outputs of the lm head. */
export function decoderVocabSize(c: DalleBartConfig): number {
  return c.model_type === 'dallebart' ? c.image_vocab_size + 1 : c.vocab_size;
}

/** Positions the decoder can read (rows of its position table minus the offset). */
export function decoderPositions(c: DalleBartConfig): number {
  return c.model_type === 'dallebart' ? c.image_length + 1 : c.max_text_length;
}

function decoderPositionOffset(c: DalleBartConfig): number {
  return c.model_type === 'dallebart' ? 0 : BART_POSITION_OFFSET;
}

// ---------------------------------------------------------------------------------------------------
// parameter tree (HF BART names)

const ENC = 'model.encoder';
const DEC = 'model.decoder';

/** How a parameter starts: N(0, init_std), zeros, ones, or the text embedding (normal, padding row zero). */
type ParamInit = 'normal' | 'zeros' | 'ones' | 'text_embedding';

/** One parameter of the tree: its HF name, internal shape ([in, out] for linears), kind and init. */
export interface DalleBartParamSpec {
  name: string;
  shape: number[];
  kind: ParamKind;
  init: ParamInit;
  trainable: boolean;
}

/**
 * Every parameter of a config, in creation order: the one list the builder, the load check and the
 * warm start read, so they can never disagree (and nothing is allocated to know a shape).
 */
export function dalleBartParamSpecs(c: DalleBartConfig): DalleBartParamSpec[] {
  const specs: DalleBartParamSpec[] = [];
  const C = c.d_model;
  const add = (name: string, shape: number[], kind: ParamKind, init: ParamInit, trainable = true): void => void specs.push({ name, shape, kind, init, trainable });
  const lin = (prefix: string, inDim: number, outDim: number, bias = c.use_bias): void => {
    add(`${prefix}.weight`, [inDim, outDim], 'linear', 'normal');
    if (bias) add(`${prefix}.bias`, [outDim], 'plain', 'zeros');
  };
  const norm = (prefix: string): void => {
    add(`${prefix}.weight`, [C], 'plain', 'ones');
    add(`${prefix}.bias`, [C], 'plain', 'zeros');
  };
  const attn = (prefix: string): void => ['q_proj', 'k_proj', 'v_proj', 'out_proj'].forEach((n) => lin(`${prefix}.${n}`, C, C));
  const ffn = (layer: string, F: number): void => {
    if (c.use_glu) lin(`${layer}.fc0`, C, F);
    lin(`${layer}.fc1`, C, F);
    lin(`${layer}.fc2`, F, C);
  };
  // encoder (identical in both flavours)
  add('model.shared.weight', [c.vocab_size, C], 'plain', 'text_embedding');
  add(`${ENC}.embed_positions.weight`, [c.max_text_length + BART_POSITION_OFFSET, C], 'plain', 'normal');
  norm(`${ENC}.layernorm_embedding`);
  for (let i = 0; i < c.encoder_layers; i++) {
    const l = `${ENC}.layers.${i}`;
    attn(`${l}.self_attn`);
    norm(`${l}.self_attn_layer_norm`);
    ffn(l, c.encoder_ffn_dim);
    norm(`${l}.final_layer_norm`);
  }
  if (c.use_final_ln_encoder) norm(`${ENC}.layer_norm`);
  // decoder
  if (c.model_type === 'dallebart') add(`${DEC}.embed_tokens.weight`, [decoderVocabSize(c), C], 'plain', 'normal');
  add(`${DEC}.embed_positions.weight`, [decoderPositions(c) + decoderPositionOffset(c), C], 'plain', 'normal');
  norm(`${DEC}.layernorm_embedding`);
  for (let i = 0; i < c.decoder_layers; i++) {
    const l = `${DEC}.layers.${i}`;
    attn(`${l}.self_attn`);
    norm(`${l}.self_attn_layer_norm`);
    attn(`${l}.encoder_attn`);
    norm(`${l}.encoder_attn_layer_norm`);
    ffn(l, c.decoder_ffn_dim);
    norm(`${l}.final_layer_norm`);
  }
  if (c.use_final_ln_decoder) norm(`${DEC}.layer_norm`);
  // head: untied for image codes; tied to model.shared (plus HF's non-trainable bias buffer) for text
  if (c.model_type === 'dallebart') lin('lm_head', C, decoderVocabSize(c), false);
  else add('final_logits_bias', [1, c.vocab_size], 'plain', 'zeros', false);
  return specs;
}

/** A spec's shape as stored on disk (PyTorch layout: Linear (out, in)). */
export function torchShapeOf(spec: Pick<DalleBartParamSpec, 'shape' | 'kind'>): number[] {
  return spec.kind === 'linear' ? [spec.shape[1] as number, spec.shape[0] as number] : spec.shape.slice();
}

/**
 * Builds the parameter tree with a seeded init (HF BART's: N(0, init_std) linears and embeddings with
 * the padding row at zero, zero biases, unit norms). `empty` fills zeros instead, skipping the random
 * draws, for a model whose every value is about to be loaded.
 */
export function buildDalleBartParams(c: DalleBartConfig, seed: number, opts: { empty?: boolean } = {}): Params {
  const rng = new Rng(seed);
  const p = new Params();
  for (const s of dalleBartParamSpecs(c)) {
    const n = s.shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    if (s.init === 'ones') data.fill(1);
    else if ((s.init === 'normal' || s.init === 'text_embedding') && !opts.empty) {
      rng.fillNormal(data, 0, c.init_std);
      if (s.init === 'text_embedding') data.fill(0, c.pad_token_id * c.d_model, (c.pad_token_id + 1) * c.d_model);
    }
    p.add(s.name, tf.tensor(data, s.shape, 'float32'), s.kind, s.trainable);
  }
  return p;
}

/**
 * Names of the encoder's parameters: `model.shared.weight` and everything under `model.encoder.`.
 * What `warmStartEncoder` copies, and what a trainer masks for `freeze_encoder_steps`. In the 'bart'
 * flavour `model.shared` is also the decoder's embedding and the lm head, so freezing it freezes those.
 */
export function encoderParamNames(model: DalleBart): string[] {
  return model.params.names().filter(isEncoderParam);
}

export function isEncoderParam(name: string): boolean {
  return name === 'model.shared.weight' || name.startsWith(`${ENC}.`);
}

// ---------------------------------------------------------------------------------------------------
// layers

interface Flags {
  training: boolean;
  rng?: Rng;
}

function drop(x: tf.Tensor, rate: number, f: Flags): tf.Tensor {
  return dropout(x, rate, f.rng, f.training);
}

/** The feed-forward sub-layer body (no norm, no residual): GLU or BART's FFN, then output dropout. */
function ffnBody(p: Params, c: DalleBartConfig, prefix: string, x: tf.Tensor, f: Flags): tf.Tensor {
  const opts = { activation: c.activation_function, dropout: c.activation_dropout, training: f.training, ...(f.rng ? { rng: f.rng } : {}) };
  const h = c.use_glu ? gluFeedForward(p, prefix, x, opts) : feedForward(p, prefix, x, opts); // (B, T, C)
  return drop(h, c.dropout, f);
}

/**
 * A residual sub-layer with the configured norm position:
 *   postln: LN(x + body(x))      preln: x + body(LN(x))
 */
function residual(p: Params, c: DalleBartConfig, norm: string, x: tf.Tensor3D, body: (h: tf.Tensor3D) => tf.Tensor): tf.Tensor3D {
  if (c.ln_positions === 'preln') return tf.add(x, body(layerNorm(p, norm, x) as tf.Tensor3D)) as tf.Tensor3D;
  return layerNorm(p, norm, tf.add(x, body(x))) as tf.Tensor3D;
}

/** Encoder layer: self-attention over the text (padding masked), then the feed-forward. (B, L, C) → (B, L, C). */
function encoderLayer(p: Params, c: DalleBartConfig, i: number, x: tf.Tensor3D, mask: tf.Tensor2D, f: Flags): tf.Tensor3D {
  const l = `${ENC}.layers.${i}`;
  const attnOpts = { numHeads: c.encoder_attention_heads, keyMask: mask, dropout: c.attention_dropout, training: f.training, ...(f.rng ? { rng: f.rng } : {}) };
  let h = residual(p, c, `${l}.self_attn_layer_norm`, x, (y) => drop(attention(p, `${l}.self_attn`, y, attnOpts).out, c.dropout, f));
  h = residual(p, c, `${l}.final_layer_norm`, h, (y) => ffnBody(p, c, l, y, f));
  return h;
}

/** What a decoder layer attends to: the encoder output (teacher forcing) or its precomputed K/V. */
interface CrossSource {
  enc?: tf.Tensor3D; // (B, S, C)
  cache?: KVCache; // (B, nh, S, hs) each, from crossAttentionCache
  mask: tf.Tensor2D; // (B, S) 1 = text token, 0 = padding
}

/**
 * Decoder layer: causal self-attention (appending to `selfCache` when decoding incrementally), cross-
 * attention to the text, feed-forward. (B, T, C) → (B, T, C) and the self-attention K/V it used.
 */
function decoderLayer(p: Params, c: DalleBartConfig, i: number, x: tf.Tensor3D, cross: CrossSource, selfCache: KVCache | undefined, f: Flags): { h: tf.Tensor3D; cache: KVCache } {
  const l = `${DEC}.layers.${i}`;
  const common = { numHeads: c.decoder_attention_heads, dropout: c.attention_dropout, training: f.training, ...(f.rng ? { rng: f.rng } : {}) };
  let cache: KVCache | undefined;
  let h = residual(p, c, `${l}.self_attn_layer_norm`, x, (y) => {
    const a = attention(p, `${l}.self_attn`, y, { ...common, causal: true, ...(selfCache ? { cache: selfCache } : {}) });
    cache = a.cache;
    return drop(a.out, c.dropout, f);
  });
  const src = cross.cache ? { contextCache: cross.cache } : { context: cross.enc as tf.Tensor3D };
  h = residual(p, c, `${l}.encoder_attn_layer_norm`, h, (y) => drop(attention(p, `${l}.encoder_attn`, y, { ...common, ...src, keyMask: cross.mask }).out, c.dropout, f));
  h = residual(p, c, `${l}.final_layer_norm`, h, (y) => ffnBody(p, c, l, y, f));
  return { h, cache: cache as KVCache };
}

/** A fused decoding step: its recorded program and the buffers it owns besides the parameters (see `DecodeState.fused`). */
interface FusedDecoding {
  /** the whole step, recorded once (kernels/decode.ts): tokens and position in, logits (B, V) out */
  program: DecodeProgram;
  /** per decoder layer: self-attention q|k|v projections side by side, (C, 3C), and their biases (3C) */
  qkv: { w: tf.Tensor2D; b?: tf.Tensor1D }[];
  /** per decoder layer: self-attention K/V of every position, (B, nh, positions, hs), filled in place step by step */
  cache: KVCache[];
  /** (B, S) cross-attention bias: 0 on text, −1e9 on padding (nn.ts's keyMaskBias) */
  crossBias: tf.Tensor2D;
}

/**
 * The residual stream of a fused step, (B, C) rows: `h`, plus `pending`, the last pre-LN sub-layer's output
 * not yet added. Pre-LN adds it inside the next norm's op (which returns the sum as well), so x + body(LN(x))
 * costs no op of its own; post-LN never leaves anything pending.
 */
interface ResidualRows {
  h: ProgramRows;
  pending?: ProgramRows;
}

/**
 * `decoderLayer` for one new position per row, recorded on `prog`, writing the position's keys/values into
 * `bufs.cache[i]`. The same computation as `decoderLayer` with a self cache and cross K/V, in ~11 ops instead of ~120.
 */
function decoderLayerStep(prog: DecodeProgram, p: Params, c: DalleBartConfig, i: number, x: ResidualRows, crossKv: KVCache, bufs: Omit<FusedDecoding, 'program'>): ResidualRows {
  const l = `${DEC}.layers.${i}`;
  const nh = c.decoder_attention_heads;
  const opt = (name: string): tf.Tensor1D | undefined => (p.has(name) ? (p.get(name) as tf.Tensor1D) : undefined);
  const lin = (prefix: string, y: ProgramRows, act: 'none' | Activation = 'none'): ProgramRows => prog.linear(y, p.get(`${prefix}.weight`) as tf.Tensor2D, opt(`${prefix}.bias`), act);
  const qkv = bufs.qkv[i] as FusedDecoding['qkv'][number];
  const selfAttn = (y: ProgramRows): ProgramRows => lin(`${l}.self_attn.out_proj`, prog.selfAttention(prog.linear(y, qkv.w, qkv.b), bufs.cache[i] as KVCache, nh));
  const crossAttn = (y: ProgramRows): ProgramRows => lin(`${l}.encoder_attn.out_proj`, prog.crossAttention(lin(`${l}.encoder_attn.q_proj`, y), crossKv, bufs.crossBias, nh));
  const ffn = (y: ProgramRows): ProgramRows => {
    if (!c.use_glu) return lin(`${l}.fc2`, lin(`${l}.fc1`, y, c.activation_function));
    return lin(`${l}.fc2`, prog.mul(lin(`${l}.fc0`, y, c.activation_function), lin(`${l}.fc1`, y)));
  };
  // postln: LN(x + body(x)), the add inside the norm's op; preln: x + body(LN(x)), the add left pending
  const sub = (norm: string, r: ResidualRows, body: (y: ProgramRows) => ProgramRows): ResidualRows => {
    const [w, b] = [opt(`${norm}.weight`), opt(`${norm}.bias`)];
    if (c.ln_positions === 'postln') return { h: prog.addLayerNorm(r.h, body(r.h), w, b) };
    const [y, h] = r.pending ? prog.addLayerNormKeepSum(r.h, r.pending, w, b) : [prog.addLayerNorm(r.h, undefined, w, b), r.h];
    return { h, pending: body(y) };
  };
  let r = sub(`${l}.self_attn_layer_norm`, x, selfAttn);
  r = sub(`${l}.encoder_attn_layer_norm`, r, crossAttn);
  return sub(`${l}.final_layer_norm`, r, ffn);
}

/**
 * `${stack}`'s input: token rows (× √d_model with scale_embedding) + position rows
 * [offset + start, offset + start + T), then `${stack}.layernorm_embedding` and dropout. ids (B, T) → (B, T, C).
 */
function embed(p: Params, c: DalleBartConfig, stack: string, tokenTable: string, offset: number, ids: tf.Tensor2D, start: number, f: Flags): tf.Tensor3D {
  const [, T] = ids.shape;
  let h = embedding(p, tokenTable, ids); // (B, T, C)
  if (c.scale_embedding) h = tf.mul(h, Math.sqrt(c.d_model));
  const pos = tf.slice(p.get(`${stack}.embed_positions.weight`), [offset + start, 0], [T, c.d_model]); // (T, C)
  h = layerNorm(p, `${stack}.layernorm_embedding`, tf.add(h, pos));
  return drop(h, c.dropout, f) as tf.Tensor3D;
}

// ---------------------------------------------------------------------------------------------------
// the model

export class DalleBartError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DalleBartError';
  }
}

/**
 * Teacher-forced decoder inputs (B·T, rows of T, each starting with the BOS) with every code after the BOS
 * replaced by a uniformly drawn code of `vocab` with probability `p`, drawn from `rng` in row order. A new array.
 * Why: with clean inputs the decoder reads the shape off the codes before it as much as off the caption, and
 * training taught it that green codes never form a star (a held-out pair). Noisy inputs make the caption the
 * reliable source, and held-out shape × colour pairs come out right far more often (README, *Text → image on shapes*).
 */
export function noisyDecoderInput(ids: Int32Array, T: number, p: number, vocab: number, rng: Rng): Int32Array {
  if (!(p >= 0 && p <= 1)) throw new DalleBartError(`inputNoise must be in [0, 1], got ${p}`);
  if (ids.length % T !== 0) throw new DalleBartError(`decoder inputs of ${ids.length} ids are not rows of ${T}`);
  const out = ids.slice();
  for (let i = 0; i < out.length; i++) if (i % T !== 0 && rng.uniform() < p) out[i] = rng.int(vocab);
  return out;
}

/** Options of the differentiable passes. */
export interface DalleBartRunOptions {
  /** apply dropout (needs `rng` when any dropout rate is above 0) */
  training?: boolean;
  /** the seeded stream dropout masks are drawn from (checkpoint it to resume exactly) */
  rng?: Rng;
}

export interface DalleBartLossOptions extends DalleBartRunOptions {
  /** label smoothing ε of the cross-entropy */
  labelSmoothing?: number;
  /**
   * 'dallebart', training only: each decoder input code (never the BOS) is replaced by a uniformly drawn
   * code with this probability (drawn from `rng`); the labels stay the true codes
   */
  inputNoise?: number;
}

/**
 * Incremental decoding state. Every tensor in it belongs to the state: `decodeStep` consumes a state
 * (disposing its self-attention K/V and moving the rest into the state it returns), and the last state
 * is released with `disposeDecodeState`. Never use a state after passing it to `decodeStep`.
 */
export interface DecodeState {
  /** tokens consumed so far = the position of the next token */
  readonly position: number;
  /** (B, S) text mask, a copy owned by the state */
  readonly encMask: tf.Tensor2D;
  /** per decoder layer: cross-attention K/V of the encoder output, (B, nh, S, hs) each */
  readonly cross: readonly KVCache[];
  /** per decoder layer: self-attention K/V of the consumed tokens, (B, nh, position, hs); empty before the first step (and on the fused path) */
  readonly self: readonly KVCache[];
  /**
   * The fused path (native kernels): the step recorded as one native program over preallocated
   * self-attention K/V for every position, written in place (so a step copies no past), q|k|v weights side
   * by side and the cross-attention bias; `self` stays empty. It passes from state to state unchanged.
   */
  readonly fused?: FusedDecoding;
}

export interface StartDecodingOptions {
  /** decode on the fused kernels (kernels/decode.ts); default: whenever the native kernels are active */
  fused?: boolean;
}

/** Releases every tensor of a decoding state. */
export function disposeDecodeState(state: DecodeState): void {
  state.encMask.dispose();
  for (const kv of [...state.cross, ...state.self]) tf.dispose([kv.k, kv.v]);
  if (state.fused) {
    state.fused.program.dispose();
    for (const kv of state.fused.cache) tf.dispose([kv.k, kv.v]);
    for (const p of state.fused.qkv) tf.dispose([p.w, ...(p.b ? [p.b] : [])]);
    state.fused.crossBias.dispose();
  }
}

/** [k0, v0, k1, v1, …] → [{k: k0, v: v0}, …] */
function pairUp(flat: tf.Tensor[]): KVCache[] {
  const out: KVCache[] = [];
  for (let i = 0; i < flat.length; i += 2) out.push({ k: flat[i] as tf.Tensor4D, v: flat[i + 1] as tf.Tensor4D });
  return out;
}

export class DalleBart {
  constructor(
    readonly config: DalleBartConfig,
    readonly params: Params,
  ) {}

  static create(config: Partial<DalleBartConfig> = {}, seed = 0): DalleBart {
    const c = resolveDalleBartConfig(config);
    return new DalleBart(c, buildDalleBartParams(c, seed));
  }

  private flags(o: DalleBartRunOptions): Flags {
    return { training: o.training ?? false, ...(o.rng ? { rng: o.rng } : {}) };
  }

  private checkIds(what: string, ids: tf.Tensor, B: number | null, maxLen: number): void {
    if (ids.rank !== 2 || ids.dtype !== 'int32') throw new DalleBartError(`${what} must be int32 (B, T), got ${ids.dtype} ${JSON.stringify(ids.shape)}`);
    if (B !== null && ids.shape[0] !== B) throw new DalleBartError(`${what} has batch ${ids.shape[0]}, expected ${B}`);
    if ((ids.shape[1] as number) > maxLen) throw new DalleBartError(`${what} has ${ids.shape[1]} positions, the model has ${maxLen}`);
  }

  /**
   * Encoder: text ids (B, L) int32 with mask (B, L) (1 = token, 0 = padding) → hidden states (B, L, C).
   * The result belongs to the caller; intermediates are released (gradients still flow inside
   * `valueAndGrads`).
   */
  encode(textIds: tf.Tensor2D, mask: tf.Tensor2D, opts: DalleBartRunOptions = {}): tf.Tensor3D {
    const c = this.config;
    this.checkIds('textIds', textIds, null, c.max_text_length);
    if (mask.shape[0] !== textIds.shape[0] || mask.shape[1] !== textIds.shape[1]) throw new DalleBartError(`mask shape ${JSON.stringify(mask.shape)} ≠ textIds shape ${JSON.stringify(textIds.shape)}`);
    const f = this.flags(opts);
    return tf.tidy(() => {
      let h = embed(this.params, c, ENC, 'model.shared', BART_POSITION_OFFSET, textIds, 0, f); // (B, L, C)
      for (let i = 0; i < c.encoder_layers; i++) h = encoderLayer(this.params, c, i, h, mask, f);
      if (c.use_final_ln_encoder) h = layerNorm(this.params, `${ENC}.layer_norm`, h) as tf.Tensor3D;
      return h;
    });
  }

  /** Decoder hidden states (B, T, C) → logits (B, T, V). */
  private head(h: tf.Tensor3D): tf.Tensor3D {
    const c = this.config;
    const [B, T, C] = h.shape;
    if (c.model_type === 'dallebart') return linear(this.params, 'lm_head', h) as tf.Tensor3D;
    const w = this.params.get('model.shared.weight'); // (V, C), tied
    const logits = tf.add(tf.matMul(tf.reshape(h, [B * T, C]), w, false, true), this.params.get('final_logits_bias')); // (B·T, V)
    return tf.reshape(logits, [B, T, c.vocab_size]) as tf.Tensor3D;
  }

  private decoderTokenTable(): string {
    return this.config.model_type === 'dallebart' ? `${DEC}.embed_tokens` : 'model.shared';
  }

  /**
   * Teacher forcing: encoder output (B, S, C) and its mask (B, S), decoder input ids (B, T) starting
   * with BOS / decoder_start_token_id → logits (B, T, V), V = `decoderVocabSize(config)`. Causal: the
   * logits at t depend on inputs 0…t only. The result belongs to the caller.
   */
  decoderForward(enc: tf.Tensor3D, encMask: tf.Tensor2D, decoderInput: tf.Tensor2D, opts: DalleBartRunOptions = {}): tf.Tensor3D {
    const c = this.config;
    this.checkIds('decoderInput', decoderInput, enc.shape[0], decoderPositions(c));
    const f = this.flags(opts);
    return tf.tidy(() => {
      let h = embed(this.params, c, DEC, this.decoderTokenTable(), decoderPositionOffset(c), decoderInput, 0, f); // (B, T, C)
      for (let i = 0; i < c.decoder_layers; i++) h = decoderLayer(this.params, c, i, h, { enc, mask: encMask }, undefined, f).h;
      if (c.use_final_ln_decoder) h = layerNorm(this.params, `${DEC}.layer_norm`, h) as tf.Tensor3D;
      return this.head(h);
    });
  }

  /**
   * Teacher-forcing inputs and labels from targets (B, T): input = [start, targets[:, :-1]] with start
   * = BOS ('dallebart') or decoder_start_token_id ('bart'); labels = targets, flattened (B·T), with
   * text padding replaced by −100 (ignored) in 'bart'. Both belong to the caller.
   */
  teacherForcing(targets: tf.Tensor2D): { decoderInput: tf.Tensor2D; labels: tf.Tensor1D } {
    const c = this.config;
    const [B, T] = targets.shape;
    if (targets.dtype !== 'int32') throw new DalleBartError(`targets must be int32, got ${targets.dtype}`);
    return tf.tidy(() => {
      const start = c.model_type === 'dallebart' ? bosTokenId(c) : c.decoder_start_token_id;
      const decoderInput = tf.concat([tf.fill([B, 1], start, 'int32'), tf.slice(targets, [0, 0], [B, T - 1])], 1) as tf.Tensor2D; // (B, T)
      let labels = tf.reshape(targets, [B * T]) as tf.Tensor1D;
      if (c.model_type === 'bart') labels = tf.where(tf.equal(labels, c.pad_token_id), tf.fill([B * T], -100, 'int32'), labels) as tf.Tensor1D;
      return { decoderInput, labels };
    });
  }

  private withInputNoise(decoderInput: tf.Tensor2D, p: number, rng: Rng | undefined): tf.Tensor2D {
    const c = this.config;
    if (c.model_type !== 'dallebart') throw new DalleBartError('inputNoise applies to dallebart models (image codes) only');
    if (!rng) throw new DalleBartError('inputNoise needs opts.rng, the seeded stream its replacements are drawn from');
    const [B, T] = decoderInput.shape;
    return tf.tensor2d(noisyDecoderInput(decoderInput.dataSync() as Int32Array, T, p, c.image_vocab_size, rng), [B, T], 'int32');
  }

  /**
   * Mean cross-entropy of the targets given the text: 'dallebart' targets are the codes
   * (B, image_length) in [0, image_vocab_size); 'bart' targets are text ids (B, T ≤ max_text_length)
   * whose padding is not scored. A scalar the caller owns; use inside `valueAndGrads` to train.
   */
  loss(textIds: tf.Tensor2D, mask: tf.Tensor2D, targets: tf.Tensor2D, opts: DalleBartLossOptions = {}): tf.Scalar {
    const c = this.config;
    if (c.model_type === 'dallebart' && targets.shape[1] !== c.image_length) throw new DalleBartError(`codes must be (B, ${c.image_length}), got ${JSON.stringify(targets.shape)}`);
    return tf.tidy(() => {
      const { decoderInput: clean, labels } = this.teacherForcing(targets);
      const decoderInput = opts.training && opts.inputNoise ? this.withInputNoise(clean, opts.inputNoise, opts.rng) : clean;
      const enc = this.encode(textIds, mask, opts);
      const logits = this.decoderForward(enc, mask, decoderInput, opts); // (B, T, V)
      const [B, T, V] = logits.shape;
      return sparseCrossEntropy(tf.reshape(logits, [B * T, V]) as tf.Tensor2D, labels, opts.labelSmoothing !== undefined ? { labelSmoothing: opts.labelSmoothing } : {});
    });
  }

  /**
   * Starts incremental decoding from an encoder output (B, S, C) and its mask (B, S): computes each
   * decoder layer's cross-attention K/V once. The state owns copies of everything it needs, so the
   * caller may dispose `enc` and `encMask` right after.
   */
  startDecoding(enc: tf.Tensor3D, encMask: tf.Tensor2D, opts: StartDecodingOptions = {}): DecodeState {
    const c = this.config;
    if (encMask.shape[0] !== enc.shape[0] || encMask.shape[1] !== enc.shape[1]) throw new DalleBartError(`encMask shape ${JSON.stringify(encMask.shape)} does not match enc ${JSON.stringify(enc.shape)}`);
    const fused = opts.fused ?? nativeFusionActive();
    if (fused && !nativeFusionActive()) throw new DalleBartError('fused decoding needs the wasm backend with the native kernels active');
    const flat = tf.tidy(() => Array.from({ length: c.decoder_layers }, (_, i) => {
      const kv = crossAttentionCache(this.params, `${DEC}.layers.${i}.encoder_attn`, enc, c.decoder_attention_heads);
      return [kv.k, kv.v];
    }).flat());
    const cross = pairUp(flat);
    const state = { position: 0, encMask: tf.clone(encMask), cross, self: [] };
    return fused ? { ...state, fused: this.fusedDecoding(encMask, cross) } : state;
  }

  /**
   * The fused path's buffers for B rows (q|k|v weights side by side, empty self caches, the padding bias)
   * and the step recorded on them: embedding → decoder layers → final norm → lm head, rows (B, C) throughout.
   */
  private fusedDecoding(encMask: tf.Tensor2D, cross: readonly KVCache[]): FusedDecoding {
    const c = this.config;
    const p = this.params;
    const B = encMask.shape[0];
    const nh = c.decoder_attention_heads;
    const bufs = tf.tidy(() => {
      const qkv = Array.from({ length: c.decoder_layers }, (_, i) => {
        const a = `${DEC}.layers.${i}.self_attn`;
        const w = tf.concat(['q_proj', 'k_proj', 'v_proj'].map((n) => p.get(`${a}.${n}.weight`)), 1) as tf.Tensor2D; // (C, 3C)
        const b = c.use_bias ? (tf.concat(['q_proj', 'k_proj', 'v_proj'].map((n) => p.get(`${a}.${n}.bias`)), 0) as tf.Tensor1D) : undefined; // (3C)
        return b ? { w, b } : { w };
      });
      const cache = Array.from({ length: c.decoder_layers }, () => emptyKvCache(B, nh, decoderPositions(c), c.d_model / nh));
      const crossBias = keyMaskBias(encMask); // (B, S)
      return { qkv, cache, crossBias };
    });
    const prog = new DecodeProgram();
    const norm = (prefix: string, x: ProgramRows, r?: ProgramRows): ProgramRows => prog.addLayerNorm(x, r, p.get(`${prefix}.weight`) as tf.Tensor1D, p.get(`${prefix}.bias`) as tf.Tensor1D);
    // token rows (× √d_model) + the position's row, then layernorm_embedding
    const tokens = prog.embed(B, p.get(`${this.decoderTokenTable()}.weight`) as tf.Tensor2D, p.get(`${DEC}.embed_positions.weight`) as tf.Tensor2D, decoderPositionOffset(c), c.scale_embedding ? Math.sqrt(c.d_model) : 1);
    let r: ResidualRows = { h: norm(`${DEC}.layernorm_embedding`, tokens) };
    for (let i = 0; i < c.decoder_layers; i++) r = decoderLayerStep(prog, p, c, i, r, cross[i] as KVCache, bufs);
    const h = c.use_final_ln_decoder ? norm(`${DEC}.layer_norm`, r.h, r.pending) : r.pending ? prog.add(r.h, r.pending) : r.h;
    const logits =
      c.model_type === 'dallebart'
        ? prog.linear(h, p.get('lm_head.weight') as tf.Tensor2D) // (B, V)
        : prog.linear(h, p.get('model.shared.weight') as tf.Tensor2D, p.get('final_logits_bias'), 'none', true); // tied head, (B, V)
    prog.compile(logits);
    return { program: prog, ...bufs };
  }

  /**
   * One decoding step: the next input token per sequence (B, 1) int32 (BOS first) → the logits of the
   * following token (B, V) and the new state. Consumes `state` (see DecodeState). Equals the last row
   * of `decoderForward` over all tokens fed so far. The logits belong to the caller.
   */
  decodeStep(state: DecodeState, tokens: tf.Tensor2D): { logits: tf.Tensor2D; state: DecodeState } {
    const c = this.config;
    const B = state.encMask.shape[0];
    if (tokens.rank !== 2 || tokens.shape[0] !== B || tokens.shape[1] !== 1 || tokens.dtype !== 'int32') {
      throw new DalleBartError(`decodeStep tokens must be int32 (${B}, 1), got ${tokens.dtype} ${JSON.stringify(tokens.shape)}`);
    }
    if (state.position >= decoderPositions(c)) throw new DalleBartError(`decodeStep at position ${state.position}: the decoder has ${decoderPositions(c)} positions`);
    if (state.fused) return { logits: this.decodeStepFused(state, state.fused, tokens), state: { ...state, position: state.position + 1 } };
    const f: Flags = { training: false };
    // tidy returns tensors only: [logits, k0, v0, k1, v1, …]
    const [logits, ...kv] = tf.tidy(() => {
      let h = embed(this.params, c, DEC, this.decoderTokenTable(), decoderPositionOffset(c), tokens, state.position, f); // (B, 1, C)
      const caches: KVCache[] = [];
      for (let i = 0; i < c.decoder_layers; i++) {
        const r = decoderLayer(this.params, c, i, h, { cache: state.cross[i] as KVCache, mask: state.encMask }, state.self[i], f);
        h = r.h;
        caches.push(r.cache);
      }
      if (c.use_final_ln_decoder) h = layerNorm(this.params, `${DEC}.layer_norm`, h) as tf.Tensor3D;
      return [tf.reshape(this.head(h), [B, decoderVocabSize(c)]), ...caches.flatMap((x) => [x.k, x.v])];
    });
    for (const old of state.self) tf.dispose([old.k, old.v]);
    return { logits: logits as tf.Tensor2D, state: { position: state.position + 1, encMask: state.encMask, cross: state.cross, self: pairUp(kv) } };
  }

  /** `decodeStep`'s logits on the fused path: the recorded step, run at this position, the caches written in place. */
  private decodeStepFused(state: DecodeState, fused: FusedDecoding, tokens: tf.Tensor2D): tf.Tensor2D {
    const logits = fused.program.run(tokens.dataSync() as Int32Array, state.position);
    return tf.tensor2d(logits, [tokens.shape[0], decoderVocabSize(this.config)]);
  }

  dispose(): void {
    this.params.dispose();
  }
}

// ---------------------------------------------------------------------------------------------------
// HF config.json

/** The config as an HF-style config.json object (BART keys, dalle-mini's additions, ours). */
export function dalleBartConfigToHf(c: DalleBartConfig): Record<string, unknown> {
  const common = {
    d_model: c.d_model,
    encoder_layers: c.encoder_layers,
    decoder_layers: c.decoder_layers,
    encoder_attention_heads: c.encoder_attention_heads,
    decoder_attention_heads: c.decoder_attention_heads,
    encoder_ffn_dim: c.encoder_ffn_dim,
    decoder_ffn_dim: c.decoder_ffn_dim,
    activation_function: c.activation_function,
    dropout: c.dropout,
    attention_dropout: c.attention_dropout,
    activation_dropout: c.activation_dropout,
    init_std: c.init_std,
    scale_embedding: c.scale_embedding,
    use_glu: c.use_glu,
    use_bias: c.use_bias,
    ln_type: 'layernorm',
    ln_positions: c.ln_positions,
    use_final_ln_encoder: c.use_final_ln_encoder,
    use_final_ln_decoder: c.use_final_ln_decoder,
    max_text_length: c.max_text_length,
    is_encoder_decoder: true,
  };
  if (c.model_type === 'bart') {
    return {
      model_type: 'bart',
      architectures: ['BartForConditionalGeneration'],
      vocab_size: c.vocab_size,
      max_position_embeddings: c.max_text_length,
      ...common,
      // mBART's spelling of the same options, so transformers reads pre-LN checkpoints as what they are
      normalize_before: c.ln_positions === 'preln',
      add_final_layer_norm: c.use_final_ln_encoder && c.use_final_ln_decoder,
      pad_token_id: c.pad_token_id,
      bos_token_id: c.bos_token_id,
      eos_token_id: c.eos_token_id,
      decoder_start_token_id: c.decoder_start_token_id,
      tie_word_embeddings: true,
      image_vocab_size: c.image_vocab_size,
      image_length: c.image_length,
    };
  }
  return {
    model_type: 'dallebart',
    architectures: ['DalleBart'],
    vocab_size: c.vocab_size,
    encoder_vocab_size: c.vocab_size,
    image_vocab_size: c.image_vocab_size,
    image_length: c.image_length,
    ...common,
    tie_word_embeddings: false,
    // dalle-mini's special ids: the decoder starts from (and pads with) BOS = image_vocab_size
    decoder_start_token_id: c.image_vocab_size,
    bos_token_id: c.image_vocab_size,
    text_pad_token_id: c.pad_token_id,
    text_bos_token_id: c.bos_token_id,
    text_eos_token_id: c.eos_token_id,
    max_length: c.image_length + 1,
  };
}

/**
 * Reads our config from an HF config.json object. Keys it leaves out mean what they mean to its
 * writer: HF `BartConfig` defaults for model_type 'bart' (post-LN, biases, no GLU, 1024 positions),
 * ours for 'dallebart'. dalle-mini's `encoder_vocab_size` is the text vocabulary.
 */
export function dalleBartConfigFromHf(raw: BartConfig, file = '<config>'): DalleBartConfig {
  const type = raw.model_type ?? 'bart';
  if (type !== 'bart' && type !== 'dallebart') throw new DalleBartConfigError('model_type', `${file}: "${type}" is neither "bart" nor "dallebart"`);
  const out: Partial<DalleBartConfig> = type === 'bart' ? { ...HF_BART_DEFAULTS } : { model_type: 'dallebart' };
  const r = raw as Record<string, unknown>;
  const take = <K extends keyof DalleBartConfig>(k: K, v: unknown): void => {
    if (v !== undefined && v !== null) (out as Record<string, unknown>)[k] = v;
  };
  for (const k of [
    'd_model', 'encoder_layers', 'decoder_layers', 'encoder_attention_heads', 'decoder_attention_heads', 'encoder_ffn_dim', 'decoder_ffn_dim',
    'use_glu', 'activation_function', 'use_bias', 'scale_embedding', 'image_vocab_size', 'image_length', 'dropout', 'attention_dropout',
    'activation_dropout', 'init_std', 'use_final_ln_encoder', 'use_final_ln_decoder',
  ] as const) take(k, r[k]);
  if (type === 'bart') {
    take('vocab_size', raw.vocab_size);
    take('max_text_length', raw.max_text_length ?? raw.max_position_embeddings);
    for (const k of ['pad_token_id', 'bos_token_id', 'eos_token_id', 'decoder_start_token_id'] as const) take(k, raw[k]);
    if (r.ln_positions === undefined && r.normalize_before === true) out.ln_positions = 'preln';
    if (r.add_final_layer_norm === true) {
      out.use_final_ln_encoder ??= true;
      out.use_final_ln_decoder ??= true;
    }
  } else {
    take('vocab_size', raw.encoder_vocab_size ?? raw.vocab_size);
    take('max_text_length', raw.max_text_length);
    take('pad_token_id', r.text_pad_token_id);
    take('bos_token_id', r.text_bos_token_id);
    take('eos_token_id', r.text_eos_token_id);
  }
  if (r.ln_positions !== undefined) {
    if (r.ln_positions !== 'postln' && r.ln_positions !== 'preln') {
      throw new DalleBartConfigError('ln_positions', `${file}: "${String(r.ln_positions)}" is not supported (only "postln" and "preln"; dalle-mini's "normformer"/"swinv2" are not implemented)`);
    }
    out.ln_positions = r.ln_positions;
  }
  if (r.ln_type !== undefined && r.ln_type !== 'layernorm') throw new DalleBartConfigError('ln_type', `${file}: "${String(r.ln_type)}" is not supported (only "layernorm")`);
  try {
    return resolveDalleBartConfig(out);
  } catch (e) {
    if (e instanceof DalleBartConfigError) throw new DalleBartConfigError(e.field, `${file}: ${e.message}`);
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------------
// HF weights folders (single file or sharded), read by header first

export const DALLEBART_CONFIG_FILE = 'config.json';
export const DALLEBART_WEIGHTS_FILE = 'model.safetensors';
export const DALLEBART_WEIGHTS_INDEX = 'model.safetensors.index.json';

export class HfCheckpointError extends Error {
  constructor(
    readonly dir: string,
    problem: string,
  ) {
    super(`${dir}: ${problem}`);
    this.name = 'HfCheckpointError';
  }
}

/** The tensors of an HF weights folder, known from headers only (no data read yet). */
export interface HfCheckpoint {
  dir: string;
  /** tensor name → its file (absolute path) and shape as stored */
  tensors: Map<string, { file: string; shape: number[] }>;
}

/**
 * Lists the tensors of `dir/model.safetensors`, or of the shards named by
 * `dir/model.safetensors.index.json` (`weight_map`: tensor → shard file), checking that every shard
 * holds what the index says.
 */
export function openHfCheckpoint(dir: string): HfCheckpoint {
  const single = join(dir, DALLEBART_WEIGHTS_FILE);
  const index = join(dir, DALLEBART_WEIGHTS_INDEX);
  const tensors = new Map<string, { file: string; shape: number[] }>();
  if (existsSync(single)) {
    for (const t of readSafetensorsHeader(single).tensors) tensors.set(t.name, { file: single, shape: t.shape });
    return { dir, tensors };
  }
  if (!existsSync(index)) {
    const problem = convertProblem(dir);
    if (problem) throw new HfCheckpointError(dir, problem);
    throw new HfCheckpointError(dir, `no ${DALLEBART_WEIGHTS_FILE} and no ${DALLEBART_WEIGHTS_INDEX}`);
  }
  let weightMap: Record<string, unknown>;
  try {
    const parsed = JSON.parse(readFileSync(index, 'utf8')) as { weight_map?: unknown };
    if (typeof parsed.weight_map !== 'object' || parsed.weight_map === null) throw new Error('no "weight_map" object');
    weightMap = parsed.weight_map as Record<string, unknown>;
  } catch (e) {
    throw new HfCheckpointError(dir, `${DALLEBART_WEIGHTS_INDEX} is not a valid index: ${(e as Error).message}`);
  }
  const byShard = new Map<string, string[]>();
  for (const [name, shard] of Object.entries(weightMap)) {
    if (typeof shard !== 'string' || shard.includes('/') || shard.includes('\\')) throw new HfCheckpointError(dir, `${DALLEBART_WEIGHTS_INDEX}: "${name}" maps to ${JSON.stringify(shard)}, not a file name in the folder`);
    byShard.set(shard, [...(byShard.get(shard) ?? []), name]);
  }
  for (const [shard, names] of byShard) {
    const file = join(dir, shard);
    if (!existsSync(file)) throw new HfCheckpointError(dir, `shard ${shard} named by ${DALLEBART_WEIGHTS_INDEX} is missing`);
    const shapes = new Map(readSafetensorsHeader(file).tensors.map((t) => [t.name, t.shape] as [string, number[]]));
    for (const name of names) {
      const shape = shapes.get(name);
      if (!shape) throw new HfCheckpointError(dir, `${DALLEBART_WEIGHTS_INDEX} puts "${name}" in ${shard}, which does not hold it`);
      tensors.set(name, { file, shape });
    }
  }
  return { dir, tensors };
}

/** Streams the named tensors of a checkpoint, one at a time, file by file. */
export async function forEachCheckpointTensor(ckpt: HfCheckpoint, names: Iterable<string>, onTensor: (name: string, t: RawTensor) => void): Promise<void> {
  const byFile = new Map<string, string[]>();
  for (const n of names) {
    const info = ckpt.tensors.get(n);
    if (!info) throw new HfCheckpointError(ckpt.dir, `no tensor "${n}"`);
    byFile.set(info.file, [...(byFile.get(info.file) ?? []), n]);
  }
  for (const [file, ns] of byFile) await forEachSafetensor(file, onTensor, { names: ns });
}

/**
 * Tensors HF writes besides the ones we keep, each a tied copy of one of ours: accepted when loading,
 * never required.
 */
function tiedAliases(c: DalleBartConfig): Set<string> {
  const s = new Set(['model.encoder.embed_tokens.weight']);
  if (c.model_type === 'bart') ['model.decoder.embed_tokens.weight', 'lm_head.weight'].forEach((n) => s.add(n));
  return s;
}

// ---------------------------------------------------------------------------------------------------
// save / load

/** Writes `dir/config.json` (HF-style) and `dir/model.safetensors` (F32, PyTorch layout, HF names). */
export async function saveDalleBart(model: DalleBart, dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  writeHfConfig(join(dir, DALLEBART_CONFIG_FILE), dalleBartConfigToHf(model.config), BartConfigSchema);
  saveParamsFile(join(dir, DALLEBART_WEIGHTS_FILE), model.params);
}

/** Reads a folder's config.json into a resolved config. */
export function readDalleBartConfig(dir: string): DalleBartConfig {
  const file = join(dir, DALLEBART_CONFIG_FILE);
  return dalleBartConfigFromHf(readHfConfig(file, BartConfigSchema), file);
}

/**
 * Loads a folder written by `saveDalleBart` (or an HF BART folder, single or sharded). Every tensor is
 * checked against `dalleBartParamSpecs(config)` before any data is read: a missing, unexpected or
 * wrongly shaped tensor refuses the load with the full list (LoadParamsError). HF's tied copies of
 * `model.shared` are accepted and skipped. `overrides` may change the dropout rates.
 */
export async function loadDalleBart(dir: string, overrides: Partial<Pick<DalleBartConfig, 'dropout' | 'attention_dropout' | 'activation_dropout'>> = {}): Promise<DalleBart> {
  if (!existsSync(join(dir, DALLEBART_CONFIG_FILE))) {
    const hint = convertHint(dir);
    if (hint) throw new DalleBartError(hint);
  }
  const config = resolveDalleBartConfig({ ...readDalleBartConfig(dir), ...overrides });
  const ckpt = openHfCheckpoint(dir);
  const aliases = tiedAliases(config);
  const expected = new Map(dalleBartParamSpecs(config).map((s) => [s.name, torchShapeOf(s)] as [string, number[]]));
  const mismatches = shapeMismatches(expected, ckpt.tensors, aliases);
  if (mismatches.length) throw new LoadParamsError(dir, mismatches);
  const model = new DalleBart(config, buildDalleBartParams(config, 0, { empty: true }));
  try {
    await forEachCheckpointTensor(ckpt, expected.keys(), (name, raw) => {
      const v = model.params.get(name);
      tf.tidy(() => {
        const t = tf.tensor(raw.data, raw.shape, raw.dtype);
        v.assign(tf.cast(fromTorchLayout(t, model.params.kind(name)), 'float32'));
      });
    });
  } catch (e) {
    model.dispose();
    throw e;
  }
  return model;
}

export type { KVCache, LoadMismatch };
