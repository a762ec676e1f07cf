/**
 * The `with:` fields a stage uses to read an image-caption dataset (vqgan-finetune, encode-dataset,
 * clip-train share them), as a zod schema with defaults, and its translation to pipeline options.
 */
import { z } from 'zod';
import type { CaptionOptions } from './captions.js';
import type { PrepareOptions } from './prepare.js';
import type { PreprocessOptions } from './preprocess.js';

export const DataReadConfig = z
  .object({
    source: z.string().min(1).describe('tar pattern (x-{00000..00009}.tar), parquet, .tsv/.csv/.jsonl file or image folder'),
    caption_fields: z.array(z.string().min(1)).min(1).default(['txt']).describe('caption fields tried in order: txt, or a JSON/column name such as title, description, tags'),
    lowercase: z.boolean().default(false).describe('lowercase captions'),
    max_caption_chars: z.number().int().min(0).default(0).describe('cut longer captions at a word boundary (0 = no limit)'),
    blank_caption_prob: z.number().min(0).max(1).default(0).describe('probability of an empty caption, for classifier-free guidance'),
    resolution: z.number().int().min(8).default(256).describe('square model resolution in pixels'),
    pixel_range: z.enum(['-1_1', '0_1']).default('-1_1').describe('float range of the pixels'),
    crop: z.enum(['centre', 'random']).default('centre').describe('centre crop, or seeded random crop for training'),
    background: z.tuple([z.number().int().min(0).max(255), z.number().int().min(0).max(255), z.number().int().min(0).max(255)]).default([255, 255, 255]).describe('RGB under transparent pixels'),
    strict: z.boolean().default(false).describe('fail on a truncated shard instead of skipping the rest of it'),
  })
  .strict();

export type DataReadConfig = z.output<typeof DataReadConfig>;

export function captionOptionsFrom(c: DataReadConfig): CaptionOptions {
  return { fields: c.caption_fields, lowercase: c.lowercase, maxChars: c.max_caption_chars, blankProb: c.blank_caption_prob };
}

export function preprocessOptionsFrom(c: DataReadConfig): PreprocessOptions {
  return { resolution: c.resolution, range: c.pixel_range, background: c.background, crop: c.crop };
}

/** Pipeline options for `prepareItems`; `epoch` changes random crops and blanking between epochs. */
export function prepareOptionsFrom(c: DataReadConfig, seed: number, epoch = 0): PrepareOptions {
  return { captions: captionOptionsFrom(c), image: preprocessOptionsFrom(c), seed, epoch, strict: c.strict };
}
