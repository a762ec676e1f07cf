/**
 * Config fragments every trainer's `with:` block is built from, so the same knob has the same name,
 * default semantics and validation in vqgan-finetune, bart-pretrain, seq2seq-train and clip-train:
 *
 *   trainerConfig({ steps, ...scheduleFields({ lr: 2e-4 }), ...optimizerFields({ beta1: 0.5 }), ...cadenceFields(), …model fields })
 *
 * and the builders that turn those fields into an optimizer and a learning-rate schedule.
 */
import { z } from 'zod';
import { Adafactor, AdamW, type Optimizer } from '../optim/index.js';
import { matrixDecayMask } from '../optim/types.js';
import type { Params } from '../params.js';
import { makeSchedule } from '../schedule.js';

const posInt = z.number().int().min(1);

export interface ScheduleDefaults {
  lr: number;
  lr_warmup_steps?: number;
  lr_decay?: 'constant' | 'linear' | 'cosine' | 'exponential';
}

/** Learning rate and its schedule: linear warmup, then constant / linear / cosine / exponential decay. */
export function scheduleFields(d: ScheduleDefaults) {
  return {
    lr: z.number().positive().default(d.lr).describe('peak learning rate (after warmup)'),
    lr_warmup_steps: z.number().int().min(0).default(d.lr_warmup_steps ?? 0).describe('linear warmup steps to lr'),
    lr_decay: z.enum(['constant', 'linear', 'cosine', 'exponential']).default(d.lr_decay ?? 'constant').describe('decay from lr after warmup'),
    lr_end: z.number().min(0).default(0).describe('learning rate at the last step (linear/cosine), floor of exponential decay'),
    lr_decay_rate: z.number().positive().max(1).default(0.5).describe('exponential decay: factor per lr_transition_steps'),
    lr_transition_steps: posInt.default(1000).describe('exponential decay: steps per lr_decay_rate factor'),
  };
}

export interface OptimizerDefaults {
  optimizer?: 'adamw' | 'adafactor';
  beta1?: number;
  beta2?: number;
  weight_decay?: number;
  grad_clip?: number;
}

/** The optimizer (AdamW or Adafactor as dalle-mini used it), gradient clipping and accumulation. */
export function optimizerFields(d: OptimizerDefaults = {}) {
  return {
    optimizer: z.enum(['adamw', 'adafactor']).default(d.optimizer ?? 'adamw').describe('adamw, or adafactor (factored second moments: far less optimizer memory)'),
    beta1: z.number().min(0).max(0.999).default(d.beta1 ?? 0.9).describe('AdamW β1'),
    beta2: z.number().min(0).max(0.9999).default(d.beta2 ?? 0.999).describe('AdamW β2'),
    weight_decay: z.number().min(0).default(d.weight_decay ?? 0).describe('decoupled weight decay of matrices (biases and norm scales are not decayed)'),
    grad_clip: z.number().min(0).default(d.grad_clip ?? 0).describe('clip gradients to this global norm (0 = off)'),
    grad_accumulation: posInt.default(1).describe('micro-batches per optimizer step (batch_size is split into this many)'),
  };
}

/** How often the loop logs, evaluates, renders media and checkpoints, and how many checkpoints it keeps. */
export function cadenceFields(d: { log_every?: number; eval_every?: number; media_every?: number; checkpoint_every?: number } = {}) {
  return {
    log_every: posInt.default(d.log_every ?? 10).describe('steps between train/* logs'),
    eval_every: posInt.default(d.eval_every ?? 250).describe('steps between held-out evaluations (and the last step)'),
    media_every: posInt.default(d.media_every ?? 250).describe('steps between media (image grids) (and the last step)'),
    checkpoint_every: posInt.default(d.checkpoint_every ?? 500).describe('steps between checkpoints (and the last step)'),
    keep_checkpoints: z.number().int().min(0).default(3).describe("checkpoints this run keeps: the newest N plus the best by the key metric (0 = all)"),
  };
}

type ScheduleValues = { lr: number; lr_warmup_steps: number; lr_decay: 'constant' | 'linear' | 'cosine' | 'exponential'; lr_end: number; lr_decay_rate: number; lr_transition_steps: number };
type OptimizerValues = { optimizer: 'adamw' | 'adafactor'; beta1: number; beta2: number; weight_decay: number };

/** zod superRefine: a decaying schedule needs warmup < steps (so `validate` reports it at the warmup's line). */
export function checkSchedule(c: Pick<ScheduleValues, 'lr_warmup_steps' | 'lr_decay'> & { steps: number }, ctx: z.RefinementCtx): void {
  if ((c.lr_decay === 'linear' || c.lr_decay === 'cosine') && c.lr_warmup_steps >= c.steps) {
    ctx.addIssue({
      code: 'custom',
      path: ['lr_warmup_steps'],
      message: `must be less than steps (${c.steps}) for lr_decay ${c.lr_decay}, is ${c.lr_warmup_steps}; lower lr_warmup_steps or set lr_decay: constant`,
    });
  }
}

/** zod superRefine: the batch splits into `grad_accumulation` equal micro-batches. */
export function checkAccumulation(c: { batch_size: number; grad_accumulation: number }, ctx: z.RefinementCtx): void {
  if (c.batch_size % c.grad_accumulation !== 0) {
    ctx.addIssue({ code: 'custom', path: ['grad_accumulation'], message: `must divide batch_size (${c.batch_size}), is ${c.grad_accumulation}` });
  }
}

/**
 * A trainer's `with:` block from its fields: strict (a misspelt key is an error at its line), with the schedule
 * check, and the accumulation check when the trainer accumulates gradients.
 */
export function trainerConfig<T extends z.ZodRawShape & { steps: z.ZodTypeAny; lr_warmup_steps: z.ZodTypeAny; lr_decay: z.ZodTypeAny }>(fields: T) {
  return z
    .object(fields)
    .strict()
    .superRefine((c, ctx) => {
      const v = c as unknown as Pick<ScheduleValues, 'lr_warmup_steps' | 'lr_decay'> & { steps: number; batch_size?: number; grad_accumulation?: number };
      checkSchedule(v, ctx);
      if (v.batch_size !== undefined && v.grad_accumulation !== undefined) checkAccumulation({ batch_size: v.batch_size, grad_accumulation: v.grad_accumulation }, ctx);
    });
}

/** step (updates already applied) → learning rate, from the schedule fields. */
export function scheduleFrom(c: ScheduleValues, totalSteps: number): (step: number) => number {
  return makeSchedule({
    lr: c.lr,
    warmupSteps: c.lr_warmup_steps,
    decay: c.lr_decay,
    totalSteps,
    endLr: c.lr_end,
    decayRate: c.lr_decay_rate,
    transitionSteps: c.lr_transition_steps,
  });
}

/**
 * The optimizer the fields ask for. Its learning rate follows `lrAt(step)` of the optimizer's own update
 * count, which the checkpoint restores, so a resumed run continues the schedule exactly.
 */
export function optimizerFrom(c: OptimizerValues, lrAt: (step: number) => number, params: Params): Optimizer {
  const decayMask = matrixDecayMask(params);
  if (c.optimizer === 'adafactor') return new Adafactor({ learningRate: lrAt, weightDecay: c.weight_decay, decayMask });
  return new AdamW({ learningRate: lrAt, beta1: c.beta1, beta2: c.beta2, weightDecay: c.weight_decay, decayMask });
}
