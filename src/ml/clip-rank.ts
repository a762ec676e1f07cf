/**
 * CLIP as a scorer: a model folder (config.json, model.safetensors, tokenizer.json) loaded once, images and
 * texts embedded in batches, each image's CLIP score for its prompt, and best-first re-ranking, as DALL·E mini
 * shows the best of many samples. The score is CLIP's usual `100 · max(cos, 0)`. Given groups of attribute words,
 * re-ranking can instead read each attribute the prompt asks for, zero-shot, against its alternatives.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { Clip, ClipError, clipTextBatch, l2normalize, loadClip, preprocessForClip } from './models/clip.js';
import type { WordSwapNegatives } from '../data/negatives.js';
import { loadTokenizer, type TextTokenizer } from './tokenizers/index.js';

export interface ClipScorer {
  clip: Clip;
  tokenizer: TextTokenizer;
  dir: string;
}

/** Loads a CLIP folder: the model (shapes asserted) and its tokenizer.json. */
export async function loadClipScorer(dir: string): Promise<ClipScorer> {
  const tokFile = join(dir, 'tokenizer.json');
  if (!existsSync(tokFile)) throw new ClipError(`${dir}: no tokenizer.json (a CLIP folder holds config.json, model.safetensors and tokenizer.json)`);
  const [clip, tokenizer] = await Promise.all([loadClip(dir), loadTokenizer(tokFile)]);
  return { clip, tokenizer, dir };
}

/** Row-normalised embeddings as one flat (N, D) array. */
function collect(parts: tf.Tensor2D[]): Float32Array {
  const all = tf.tidy(() => (parts.length === 1 ? (parts[0] as tf.Tensor2D) : tf.concat(parts, 0)));
  const out = all.dataSync() as Float32Array;
  tf.dispose([...parts, all]);
  return out;
}

/**
 * Unit image embeddings (N, D) of RGB images: each `side`×`side`×3, bytes (0…255) or floats in [0, 1],
 * preprocessed as CLIP's (shortest side to image_size, centre crop).
 */
export function embedImages(s: ClipScorer, images: readonly (Uint8Array | Float32Array)[], side: number, batchSize = 64): Float32Array {
  const S = s.clip.config.vision_config.image_size;
  const parts: tf.Tensor2D[] = [];
  for (let i = 0; i < images.length; i += batchSize) {
    const chunk = images.slice(i, i + batchSize);
    const buf = new Float32Array(chunk.length * S * S * 3);
    chunk.forEach((im, b) => {
      if (im.length !== side * side * 3) throw new ClipError(`image ${i + b} has ${im.length} values, expected ${side}×${side}×3`);
      const rgb = im instanceof Uint8Array ? Float32Array.from(im, (v) => v / 255) : im;
      buf.set(preprocessForClip(rgb, side, side, S), b * S * S * 3);
    });
    parts.push(tf.tidy(() => l2normalize(s.clip.encodeImage(tf.tensor4d(buf, [chunk.length, S, S, 3])))));
  }
  return collect(parts);
}

/** Unit text embeddings (N, D). */
export function embedTexts(s: ClipScorer, texts: readonly string[], batchSize = 256): Float32Array {
  const L = s.clip.config.text_config.max_position_embeddings;
  const parts: tf.Tensor2D[] = [];
  for (let i = 0; i < texts.length; i += batchSize) {
    const b = clipTextBatch(s.tokenizer, texts.slice(i, i + batchSize), L);
    parts.push(tf.tidy(() => l2normalize(s.clip.encodeText(b.ids, b.mask))));
    tf.dispose([b.ids, b.mask]);
  }
  return collect(parts);
}

/** Cosine of row i of `a` with row j of `b` (both unit, width `d`). */
export function cosine(a: Float32Array, i: number, b: Float32Array, j: number, d: number): number {
  let s = 0;
  for (let k = 0; k < d; k++) s += (a[i * d + k] as number) * (b[j * d + k] as number);
  return s;
}

/** Unit embeddings of some texts (each once) and of images, as the scores below read them. */
interface Embedded {
  texts: Float32Array;
  row: Map<string, number>;
  images: Float32Array;
  d: number;
}

function embedPairs(s: ClipScorer, texts: Iterable<string>, images: readonly (Uint8Array | Float32Array)[], side: number): Embedded {
  const unique = [...new Set(texts)];
  return { texts: embedTexts(s, unique), row: new Map(unique.map((u, i) => [u, i])), images: embedImages(s, images, side), d: s.clip.config.projection_dim };
}

const cosineOf = (e: Embedded, text: string, image: number): number => cosine(e.texts, e.row.get(text) as number, e.images, image, e.d);

function pairUp(what: string, texts: readonly string[], images: readonly unknown[]): void {
  if (texts.length !== images.length) throw new ClipError(`${what}: ${texts.length} texts for ${images.length} images; they pair up one to one`);
}

/** The CLIP score of image i for text i: 100 · max(cos, 0). */
export function clipScores(s: ClipScorer, texts: readonly string[], images: readonly (Uint8Array | Float32Array)[], side: number): number[] {
  pairUp('clipScores', texts, images);
  const e = embedPairs(s, texts, images, side);
  return texts.map((t, i) => 100 * Math.max(0, cosineOf(e, t, i)));
}

/** Each text's alternatives (`WordSwapNegatives.alternatives`), computed once per distinct text. */
function alternativesOf(texts: readonly string[], words: WordSwapNegatives): Map<string, string[][]> {
  const out = new Map<string, string[][]>();
  for (const t of texts) if (!out.has(t)) out.set(t, words.alternatives(t));
  return out;
}

function attributeScoresOf(s: ClipScorer, e: Embedded, texts: readonly string[], alternatives: Map<string, string[][]>): number[] {
  const scale = tf.tidy(() => s.clip.logitScale().dataSync()[0] as number);
  return texts.map((t, i) => {
    const own = scale * cosineOf(e, t, i);
    let sum = 0;
    for (const alts of alternatives.get(t) as string[][]) {
      const logits = [own, ...alts.map((a) => scale * cosineOf(e, a, i))];
      const max = Math.max(...logits);
      sum += own - max - Math.log(logits.reduce((acc, l) => acc + Math.exp(l - max), 0));
    }
    return sum;
  });
}

/**
 * Attribute score of image i for text i: for each grouped word of the text (a colour, a shape, …), CLIP's
 * log-probability of the text against the text with that word replaced by each alternative of its group
 * (softmax over `exp(logit_scale) · cos`, as CLIP's zero-shot classification), summed over the words. 0 means
 * CLIP is sure of every attribute; a text without grouped words scores 0.
 *
 * Raw similarity rewards an image for looking like the prompt as a whole, so a sample with a clean background
 * and the wrong shape can beat one with the right shape; this score asks of each attribute whether the image
 * shows it rather than another.
 */
export function attributeScores(s: ClipScorer, texts: readonly string[], images: readonly (Uint8Array | Float32Array)[], side: number, words: WordSwapNegatives): number[] {
  pairUp('attributeScores', texts, images);
  const alternatives = alternativesOf(texts, words);
  const e = embedPairs(s, [...alternatives].flatMap(([t, alts]) => [t, ...alts.flat()]), images, side);
  return attributeScoresOf(s, e, texts, alternatives);
}

/** Indices of `scores` best first (ties keep their order). */
export function rankByScore(scores: readonly number[]): number[] {
  return scores.map((_, i) => i).sort((a, b) => (scores[b] as number) - (scores[a] as number) || a - b);
}

/** A generated sample with its CLIP score, its attribute score when ranked by attributes, and its rank among its prompt's samples (0 = best). */
export interface RankedSample<T> {
  item: T;
  score: number;
  attributeScore?: number;
  rank: number;
}

/**
 * Scores each item's image for its prompt and ranks the items of each prompt best first: DALL·E mini's
 * re-ranking by CLIP score, or with `attributes` by `attributeScores` (ties by CLIP score). Returns, per
 * prompt index (in order of first appearance), its items sorted best first.
 */
export function rerank<T extends { prompt: string; promptIndex: number; rgb: Uint8Array }>(
  s: ClipScorer,
  items: readonly T[],
  side: number,
  opts: { attributes?: WordSwapNegatives } = {},
): RankedSample<T>[][] {
  const prompts = items.map((it) => it.prompt);
  const alternatives = opts.attributes ? alternativesOf(prompts, opts.attributes) : new Map<string, string[][]>();
  const e = embedPairs(s, [...prompts, ...[...alternatives.values()].flat(2)], items.map((it) => it.rgb), side);
  const scores = prompts.map((t, i) => 100 * Math.max(0, cosineOf(e, t, i)));
  const attr = opts.attributes ? attributeScoresOf(s, e, prompts, alternatives) : undefined;
  const byPrompt = new Map<number, Omit<RankedSample<T>, 'rank'>[]>();
  items.forEach((item, i) => {
    const list = byPrompt.get(item.promptIndex) ?? [];
    list.push({ item, score: scores[i] as number, ...(attr ? { attributeScore: attr[i] as number } : {}) });
    byPrompt.set(item.promptIndex, list);
  });
  return [...byPrompt.values()].map((list) => {
    const order = list.map((_, i) => i).sort((a, b) => ((list[b]!.attributeScore ?? 0) - (list[a]!.attributeScore ?? 0)) || list[b]!.score - list[a]!.score || a - b);
    return order.map((k, rank) => ({ ...(list[k] as Omit<RankedSample<T>, 'rank'>), rank }));
  });
}
