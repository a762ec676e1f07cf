import { describe, expect, it } from 'vitest';
import { ScheduleConfigError, makeSchedule } from '../../src/ml/schedule.js';
import { z } from 'zod';
import { optimizerFields, scheduleFields, trainerConfig } from '../../src/ml/train/config.js';

describe('learning-rate schedules', () => {
  it('warmup then constant', () => {
    const f = makeSchedule({ lr: 1, warmupSteps: 3 });
    expect([0, 1, 2, 3, 100].map(f)).toEqual([0.25, 0.5, 0.75, 1, 1]);
  });

  it('linear decay to endLr at totalSteps, then flat', () => {
    const f = makeSchedule({ lr: 1, warmupSteps: 2, decay: 'linear', totalSteps: 12, endLr: 0.1 });
    expect(f(2)).toBeCloseTo(1, 12);
    expect(f(7)).toBeCloseTo(0.55, 12);
    expect(f(12)).toBeCloseTo(0.1, 12);
    expect(f(50)).toBeCloseTo(0.1, 12);
  });

  it('cosine decay', () => {
    const f = makeSchedule({ lr: 2, decay: 'cosine', totalSteps: 10 });
    expect(f(0)).toBeCloseTo(2, 12);
    expect(f(5)).toBeCloseTo(1, 12);
    expect(f(10)).toBeCloseTo(0, 12);
    expect(f(2)).toBeCloseTo(1 + Math.cos(Math.PI * 0.2), 12);
  });

  it('exponential decay, smooth and staircase, floored at endLr', () => {
    const smooth = makeSchedule({ lr: 1, decay: 'exponential', decayRate: 0.5, transitionSteps: 4 });
    expect(smooth(4)).toBeCloseTo(0.5, 12);
    expect(smooth(2)).toBeCloseTo(Math.SQRT1_2, 12);
    const stair = makeSchedule({ lr: 1, decay: 'exponential', decayRate: 0.5, transitionSteps: 4, staircase: true, endLr: 0.2 });
    expect([0, 3, 4, 7, 8, 12].map(stair)).toEqual([1, 1, 0.5, 0.5, 0.25, 0.2]);
  });

  it('lrOffset keeps lr at 0 and restarts the schedule after the offset', () => {
    const f = makeSchedule({ lr: 1, warmupSteps: 1, lrOffset: 10 });
    expect([0, 9, 10, 11, 12].map(f)).toEqual([0, 0, 0.5, 1, 1]);
  });

  it('invalid configurations name the field', () => {
    expect(() => makeSchedule({ lr: -1 })).toThrow(/lr:/);
    expect(() => makeSchedule({ lr: 1, decay: 'linear' })).toThrow(/totalSteps must be set/);
    expect(() => makeSchedule({ lr: 1, decay: 'linear', warmupSteps: 5, totalSteps: 5 })).toThrow(ScheduleConfigError);
    expect(() => makeSchedule({ lr: 1, decay: 'exponential' })).toThrow(/decayRate and transitionSteps/);
    expect(() => makeSchedule({ lr: 1, warmupSteps: 1.5 })).toThrow(/warmupSteps/);
    expect(() => makeSchedule({ lr: 1 })(-1)).toThrow(/steps start at 0/);
  });
});

describe('trainerConfig', () => {
  const Config = trainerConfig({ steps: z.number().int().default(10), batch_size: z.number().int().default(8), ...scheduleFields({ lr: 1e-3, lr_warmup_steps: 2, lr_decay: 'cosine' }), ...optimizerFields() });

  it('is strict and checks the schedule and the accumulation', () => {
    expect(Config.safeParse({}).success).toBe(true);
    expect(Config.safeParse({ bogus: 1 }).error?.issues[0]).toMatchObject({ code: 'unrecognized_keys' });
    expect(Config.safeParse({ lr_warmup_steps: 10 }).error?.issues[0]).toMatchObject({ path: ['lr_warmup_steps'], message: expect.stringMatching(/must be less than steps \(10\)/) });
    expect(Config.safeParse({ batch_size: 10, grad_accumulation: 3 }).error?.issues[0]).toMatchObject({ path: ['grad_accumulation'], message: 'must divide batch_size (10), is 3' });
    expect(Config.safeParse({ batch_size: 12, grad_accumulation: 3 }).success).toBe(true);
  });
});
