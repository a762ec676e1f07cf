/**
 * CLIP as a scorer: a model folder (config.json, model.safetensors, tokenizer.json) loaded once, images and
 * texts embedded in batches, each image's CLIP score for its prompt, and best-first re-ranking, as DALL·E mini
 * shows the best of many samples. The score is CLIP's usual `100 · max(cos, 0)`.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { Clip, ClipError, clipTextBatch, l2normalize, loadClip, preprocessForClip } from './models/clip.js';
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

/** The CLIP score of image i for text i: 100 · max(cos, 0). */
export function clipScores(s: ClipScorer, texts: readonly string[], images: readonly (Uint8Array | Float32Array)[], side: number): number[] {
  if (texts.length !== images.length) throw new ClipError(`clipScores: ${texts.length} texts for ${images.length} images; they pair up one to one`);
  const d = s.clip.config.projection_dim;
  const unique = [...new Set(texts)];
  const t = embedTexts(s, unique);
  const at = new Map(unique.map((u, i) => [u, i]));
  const im = embedImages(s, images, side);
  return texts.map((txt, i) => 100 * Math.max(0, cosine(t, at.get(txt) as number, im, i, d)));
}

/** Indices of `scores` best first (ties keep their order). */
export function rankByScore(scores: readonly number[]): number[] {
  return scores.map((_, i) => i).sort((a, b) => (scores[b] as number) - (scores[a] as number) || a - b);
}

/** A generated sample with its CLIP score and its rank among its prompt's samples (0 = best). */
export interface RankedSample<T> {
  item: T;
  score: number;
  rank: number;
}

/**
 * Scores each item's image for its prompt and ranks the items of each prompt best first: DALL·E mini's
 * re-ranking. Returns, per prompt index (in order of first appearance), its items sorted by score.
 */
export function rerank<T extends { prompt: string; promptIndex: number; rgb: Uint8Array }>(s: ClipScorer, items: readonly T[], side: number): RankedSample<T>[][] {
  const scores = clipScores(s, items.map((it) => it.prompt), items.map((it) => it.rgb), side);
  const byPrompt = new Map<number, { item: T; score: number }[]>();
  items.forEach((item, i) => {
    const list = byPrompt.get(item.promptIndex) ?? [];
    list.push({ item, score: scores[i] as number });
    byPrompt.set(item.promptIndex, list);
  });
  return [...byPrompt.values()].map((list) => rankByScore(list.map((x) => x.score)).map((k, rank) => ({ ...(list[k] as { item: T; score: number }), rank })));
}
