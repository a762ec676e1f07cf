/**
 * The demo's model, loaded once and kept warm, behind a queue of one: a request waits for the one before it
 * (compute is one machine's cores; two at once would only both be slow). Images are decoded a few at a time
 * and handed out as they come, each with its codes, seed and — when a CLIP model is loaded — its CLIP score;
 * at the end the samples are ranked best first. Sample s uses `sampleSeed(seed, 0, s)`, so an image is the
 * one `minidalle generate` draws for the same prompt, seed and settings.
 */
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import type { ClipScorer } from '../ml/clip-rank.js';
import type { SamplingOptions } from '../ml/sampling/index.js';
import type { Text2Image } from '../ml/text2image.js';

export class GenerateRequestError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GenerateRequestError';
  }
}

export const LIMITS = { promptChars: 256, samples: 16, waiting: 8, condScale: 100 } as const;

export interface GenerateParams {
  prompt: string;
  samples: number;
  seed: number;
  condScale: number;
  topK: number;
  topP: number;
  temperature: number;
}

export interface GeneratedSample {
  sample: number;
  seed: number;
  codes: number[];
  /** base64 PNG */
  png: string;
  /** CLIP score 100·max(cos, 0), when a CLIP model is loaded */
  score?: number;
}

export type GenerateEvent =
  | { type: 'queued'; position: number }
  | { type: 'start'; started_ms: number }
  | { type: 'image'; image: GeneratedSample }
  | { type: 'done'; ranking?: number[]; started_ms: number; finished_ms: number; seconds: number };

/** Checks and completes a request body; a bad field is a clear error naming it. */
export function parseGenerateBody(body: unknown, defaults: Omit<GenerateParams, 'prompt' | 'samples' | 'seed'>, topKMax: number): GenerateParams {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new GenerateRequestError('expected a JSON object such as {"prompt": "a red circle", "samples": 4}');
  const b = body as Record<string, unknown>;
  const known = new Set(['prompt', 'samples', 'seed', 'cond_scale', 'top_k', 'top_p', 'temperature']);
  for (const k of Object.keys(b)) if (!known.has(k)) throw new GenerateRequestError(`unknown field '${k}' (fields: ${[...known].join(', ')})`);
  if (typeof b.prompt !== 'string') throw new GenerateRequestError("field 'prompt' must be a string");
  const prompt = b.prompt.trim();
  if (prompt.length > LIMITS.promptChars) throw new GenerateRequestError(`field 'prompt' has ${prompt.length} characters; at most ${LIMITS.promptChars}`);
  const num = (k: string, fallback: number, check: (v: number) => boolean, want: string): number => {
    const v = b[k];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'number' || !Number.isFinite(v) || !check(v)) throw new GenerateRequestError(`field '${k}' must be ${want}, got ${JSON.stringify(v)}`);
    return v;
  };
  return {
    prompt,
    samples: num('samples', 4, (v) => Number.isInteger(v) && v >= 1 && v <= LIMITS.samples, `an integer from 1 to ${LIMITS.samples}`),
    seed: num('seed', 1, (v) => Number.isSafeInteger(v) && v >= 0, 'a non-negative integer'),
    condScale: num('cond_scale', defaults.condScale, (v) => v >= 0 && v <= LIMITS.condScale, `a number from 0 to ${LIMITS.condScale}`),
    topK: num('top_k', defaults.topK, (v) => Number.isInteger(v) && v >= 0 && v <= topKMax, `an integer from 0 (off) to ${topKMax}`),
    topP: num('top_p', defaults.topP, (v) => v > 0 && v <= 1, 'a number in (0, 1]'),
    temperature: num('temperature', defaults.temperature, (v) => v > 0 && v <= 10, 'a number in (0, 10]'),
  };
}

export interface WarmModelInfo {
  dir: string;
  parameters: number;
  codes: number;
  side: number;
  defaults: Omit<GenerateParams, 'prompt' | 'samples' | 'seed'>;
  clip?: string;
}

export class WarmGenerator {
  private tail: Promise<unknown> = Promise.resolve();
  private waiting = 0;
  private running = false;
  private readonly t0 = performance.now();

  constructor(
    private readonly t2i: Text2Image,
    private readonly defaults: WarmModelInfo['defaults'],
    private readonly clip: ClipScorer | undefined,
    /** rows decoded together: images are handed out after each batch */
    private readonly batchSize = 4,
  ) {}

  info(): WarmModelInfo {
    return {
      dir: this.t2i.dir,
      parameters: this.t2i.model.params.count(),
      codes: this.t2i.model.config.image_length,
      side: this.t2i.vqgan.config.resolution,
      defaults: this.defaults,
      ...(this.clip ? { clip: this.clip.dir } : {}),
    };
  }

  parse(body: unknown): GenerateParams {
    return parseGenerateBody(body, this.defaults, this.t2i.model.config.image_vocab_size);
  }

  /** Requests in the queue, the running one included. */
  get load(): number {
    return this.waiting + (this.running ? 1 : 0);
  }

  /**
   * Runs `p` after every earlier request, calling `emit` with each event. Refused when too many wait already.
   * `signal` (the client went away) skips a request still waiting and stops one running after its batch.
   */
  generate(p: GenerateParams, emit: (e: GenerateEvent) => void, signal?: AbortSignal): Promise<void> {
    if (this.waiting >= LIMITS.waiting) throw new GenerateRequestError(`${this.waiting} requests are waiting already; try again later`);
    const position = this.load;
    this.waiting++;
    if (position > 0) emit({ type: 'queued', position });
    const run = this.tail.then(async () => {
      this.waiting--;
      if (signal?.aborted) return;
      this.running = true;
      try {
        await this.run(p, emit, signal);
      } finally {
        this.running = false;
      }
    });
    this.tail = run.catch(() => undefined);
    return run;
  }

  private now(): number {
    return Math.round((performance.now() - this.t0) * 1000) / 1000;
  }

  private async run(p: GenerateParams, emit: (e: GenerateEvent) => void, signal?: AbortSignal): Promise<void> {
    const { generateCodes, sampleSeed } = await import('../ml/sampling/index.js');
    const { decodeToRgb, rgbToPng, textBatch } = await import('../ml/text2image.js');
    const started = this.now();
    emit({ type: 'start', started_ms: started });
    const t2i = this.t2i;
    const L = t2i.model.config.max_text_length;
    const side = t2i.vqgan.config.resolution;
    const sampling: SamplingOptions = { topK: p.topK, topP: p.topP, temperature: p.temperature, condScale: p.condScale };
    const uncond = p.condScale !== 1 ? textBatch(t2i.tokenizer, [''], L) : undefined;
    const scores: number[] = [];
    for (let s0 = 0; s0 < p.samples; s0 += this.batchSize) {
      if (signal?.aborted) return;
      const n = Math.min(this.batchSize, p.samples - s0);
      const seeds = Array.from({ length: n }, (_, k) => sampleSeed(p.seed, 0, s0 + k));
      const text = textBatch(t2i.tokenizer, new Array<string>(n).fill(p.prompt), L);
      const codes = generateCodes(t2i.model, { text, ...(uncond ? { uncond } : {}), seeds, sampling });
      const rgb = decodeToRgb(t2i.vqgan, codes);
      let batchScores: number[] | undefined;
      if (this.clip) {
        const { clipScores } = await import('../ml/clip-rank.js');
        batchScores = clipScores(this.clip, new Array<string>(n).fill(p.prompt), rgb, side);
      }
      for (let k = 0; k < n; k++) {
        const image: GeneratedSample = { sample: s0 + k, seed: seeds[k]!, codes: Array.from(codes[k]!), png: Buffer.from(await rgbToPng(rgb[k]!, side)).toString('base64') };
        if (batchScores) {
          image.score = batchScores[k]!;
          scores.push(image.score);
        }
        emit({ type: 'image', image });
      }
      // let the server answer other requests (the runs pages, a queued request's "waiting") between batches
      await yieldToEventLoop();
    }
    const finished = this.now();
    let ranking: number[] | undefined;
    if (this.clip) {
      const { rankByScore } = await import('../ml/clip-rank.js');
      ranking = rankByScore(scores);
    }
    emit({ type: 'done', ...(ranking ? { ranking } : {}), started_ms: started, finished_ms: finished, seconds: (finished - started) / 1000 });
  }

  dispose(): void {
    this.t2i.dispose();
    this.clip?.clip.dispose();
  }
}
