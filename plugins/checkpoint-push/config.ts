import { z } from 'zod';
import { REPO_ID } from '../../src/core/hub/settings.js';

export const CheckpointPushConfig = z
  .object({
    hub: z
      .string()
      .default('')
      .refine((v) => v === '' || REPO_ID.test(v), 'expected a Hub model repo <owner>/<name>')
      .describe("Hub model repo <owner>/<name> to push to ('' = not to the Hub); the token is HF_TOKEN from the environment"),
    hub_private: z.boolean().default(true).describe('visibility of a Hub repo this push creates (an existing repo keeps its own)'),
    hub_url: z.string().default('').describe("address of the Hub ('' = $HF_ENDPOINT, else https://huggingface.co)"),
    wandb: z
      .union([z.boolean(), z.object({ entity: z.string().default(''), project: z.string().default('') }).strict()])
      .default(false)
      .describe("push W&B artifacts model-<runid> (and state-<runid> for checkpoints) to the run's W&B run: true = the experiment's tracking.wandb (else WANDB_ENTITY/WANDB_PROJECT), or give { entity, project }; the key is WANDB_API_KEY"),
    from: z.string().default('').describe("as a stage: the stage in needs whose artifact is pushed ('' = the only one)"),
    artifact: z.string().default('model').describe("as a stage: that stage's artifact (a folder) to push"),
    every: z.number().int().min(1).default(1).describe('as an observer: push every Nth checkpoint of a watched run'),
  })
  .strict()
  .refine((c) => c.hub !== '' || c.wandb !== false, { message: 'nowhere to push: set hub: <owner>/<name>, wandb: true (or { entity, project }), or both', path: ['hub'] });

export type CheckpointPushConfig = z.output<typeof CheckpointPushConfig>;
