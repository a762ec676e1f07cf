/**
 * Learning-rate schedules: linear warmup, then constant / linear / exponential / cosine decay.
 *
 *   s = step − lrOffset                (step = updates already applied; lr is 0 while s < 0)
 *   warmup  (s < warmupSteps):  lr · (s + 1) / (warmupSteps + 1)      (nanoGPT's form: no wasted zero step)
 *   after,  d = s − warmupSteps, D = totalSteps − warmupSteps:
 *     constant     lr
 *     linear       lr + (endLr − lr) · min(1, d / D)
 *     cosine       endLr + ½ (lr − endLr) (1 + cos(π · min(1, d / D)))
 *     exponential  max(endLr, lr · decayRate^(d / transitionSteps))   (⌊d / transitionSteps⌋ if staircase)
 *
 * `lrOffset` is dalle-mini's option for resumed runs whose optimizer step continues from a checkpoint but
 * whose schedule should start over (e.g. a new warmup after changing the data or batch size).
 */
import { z } from 'zod';

export const ScheduleConfig = z.object({
  /** peak learning rate */
  lr: z.number().positive(),
  /** linear warmup steps (0 = none) */
  warmupSteps: z.number().int().nonnegative().default(0),
  /** decay after warmup */
  decay: z.enum(['constant', 'linear', 'exponential', 'cosine']).default('constant'),
  /** step at which linear/cosine decay reaches endLr (counted from the schedule's start, incl. warmup) */
  totalSteps: z.number().int().positive().optional(),
  /** final learning rate of linear/cosine decay, floor of exponential decay */
  endLr: z.number().nonnegative().default(0),
  /** exponential: factor per transitionSteps */
  decayRate: z.number().positive().optional(),
  /** exponential: steps per decayRate factor */
  transitionSteps: z.number().int().positive().optional(),
  /** exponential: decay in whole transitions */
  staircase: z.boolean().default(false),
  /** steps before the schedule starts (lr 0 until then) */
  lrOffset: z.number().int().nonnegative().default(0),
});
export type ScheduleConfig = z.input<typeof ScheduleConfig>;

export class ScheduleConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ScheduleConfigError';
  }
}

/** Builds step → learning rate; throws a ScheduleConfigError naming the field that is wrong. */
export function makeSchedule(config: ScheduleConfig): (step: number) => number {
  const parsed = ScheduleConfig.safeParse(config);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ScheduleConfigError(`learning-rate schedule: ${issue?.path.join('.') || '(root)'}: ${issue?.message}`);
  }
  const c = parsed.data;
  if ((c.decay === 'linear' || c.decay === 'cosine') && (c.totalSteps === undefined || c.totalSteps <= c.warmupSteps)) {
    throw new ScheduleConfigError(`learning-rate schedule: totalSteps must be set and greater than warmupSteps (${c.warmupSteps}) for ${c.decay} decay, got ${c.totalSteps}`);
  }
  if (c.decay === 'exponential' && (c.decayRate === undefined || c.transitionSteps === undefined)) {
    throw new ScheduleConfigError('learning-rate schedule: exponential decay needs decayRate and transitionSteps');
  }
  return (step: number): number => {
    if (!Number.isFinite(step) || step < 0) throw new ScheduleConfigError(`learning-rate schedule evaluated at step ${step}; steps start at 0`);
    const s = step - c.lrOffset;
    if (s < 0) return 0;
    if (s < c.warmupSteps) return (c.lr * (s + 1)) / (c.warmupSteps + 1);
    const d = s - c.warmupSteps;
    switch (c.decay) {
      case 'constant':
        return c.lr;
      case 'linear': {
        const f = Math.min(1, d / ((c.totalSteps as number) - c.warmupSteps));
        return c.lr + (c.endLr - c.lr) * f;
      }
      case 'cosine': {
        const f = Math.min(1, d / ((c.totalSteps as number) - c.warmupSteps));
        return c.endLr + 0.5 * (c.lr - c.endLr) * (1 + Math.cos(Math.PI * f));
      }
      case 'exponential': {
        const k = d / (c.transitionSteps as number);
        return Math.max(c.endLr, c.lr * (c.decayRate as number) ** (c.staircase ? Math.floor(k) : k));
      }
    }
  };
}
