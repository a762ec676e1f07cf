/** What a stage may declare about where it runs and how it is retried (the `resources:` and `retry:` keys of a stage). */
import { z } from 'zod';

export const ResourcesSchema = z
  .object({
    cpus: z.number().positive().optional().describe('CPUs the stage needs; a host qualifies when it declares at least as many'),
    memory_gb: z.number().positive().optional().describe('memory the stage needs (GiB)'),
    accelerator: z.string().optional().describe('accelerator the host must declare, e.g. tpu-v3-8'),
  })
  .strict();

export const RetrySchema = z
  .object({
    max: z.number().int().min(0).default(0).describe('attempts after the first one (0: never retried)'),
    backoff: z.number().min(0).default(5).describe('seconds before the first retry; doubled for each further one'),
    on_exit_codes: z
      .array(z.number().int())
      .default([])
      .describe('exit codes of a failed stage that are retried too (a crash, a lost host or a preemption always is)'),
  })
  .strict();

export type StageResources = z.output<typeof ResourcesSchema>;
export type RetryPolicy = z.output<typeof RetrySchema>;

/** A stage's `host:` value that lets the scheduler choose any host with the stage's resources. */
export const ANY_HOST = 'auto';
