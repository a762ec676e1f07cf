/**
 * checkpoint-push: sends models to the Hugging Face Hub, to W&B, or both.
 *
 * - As a stage, it pushes the final artifact (a model folder) of a stage in its `needs`: one Hub commit
 *   naming the run and step, with a model card; the W&B artifact `model-<runid>` (aliases latest, step-N).
 * - As an observer (an experiment's `observers:` entry), it pushes every Nth checkpoint of the stages it
 *   watches while they run: the model part to the Hub, and dalle-mini's `model-<runid>` / `state-<runid>`
 *   artifacts to W&B. A failed push is a warning in the run's log; the stage goes on.
 *
 * Tokens come from the environment only (HF_TOKEN, WANDB_API_KEY).
 */
import { existsSync, statSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { folderFiles } from '../../src/core/hub/index.js';
import { definePlugin, type StageOutputs } from '../../src/core/plugins/types.js';
import { CheckpointPushConfig } from './config.js';
import { CheckpointPushError, describePush, modelArtifact, movableVqgan, pushToHub, pushToWandb, splitCheckpoint, wandbTarget, type PushRecord } from './push.js';

const NAME = 'checkpoint-push';

async function readJson(file: string): Promise<Record<string, unknown>> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
  } catch {
    return {};
  }
}

/** The upstream stage and its folder artifact this stage pushes. */
function source(inputs: Record<string, StageOutputs>, c: CheckpointPushConfig): { stage: string; input: StageOutputs; dir: string } {
  const names = Object.keys(inputs);
  const stage = c.from || (names.length === 1 ? names[0]! : '');
  if (!stage) throw new CheckpointPushError(`${NAME}: ${names.length === 0 ? 'no stage in needs' : `several stages in needs (${names.join(', ')})`}: set with.from to the stage whose artifact is pushed`);
  const input = inputs[stage];
  if (!input) throw new CheckpointPushError(`${NAME}: with.from '${stage}' is not in needs (${names.join(', ') || 'none'})`);
  const dir = input.artifacts[c.artifact];
  if (!dir) throw new CheckpointPushError(`${NAME}: stage '${stage}' has no artifact '${c.artifact}' (it has: ${Object.keys(input.artifacts).join(', ') || 'none'}); set with.artifact`);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new CheckpointPushError(`${NAME}: artifact '${c.artifact}' of stage '${stage}' (${dir}) is not a folder: only model folders are pushed`);
  return { stage, input, dir };
}

/** Checkpoints seen per observed run, for `every`. */
const seen = new Map<string, number>();

export default definePlugin({
  name: NAME,
  version: '1',
  description: 'Push a model folder (as a stage) or every Nth checkpoint (as an observer) to the Hugging Face Hub and/or W&B',
  config: CheckpointPushConfig,
  async run(ctx) {
    const c = ctx.config;
    const { stage, input, dir } = source(ctx.inputs, c);
    // Everything W&B needs is checked before the Hub push, so a missing key does not leave a half-done push.
    const wandb = c.wandb === false ? undefined : await wandbTarget(c, dirname(input.outDir), process.env, ctx.signal);
    // The producing run's record and full summary (with `_best`) from its run directory, for the model card.
    const producer = await readJson(join(dirname(input.outDir), 'run.json'));
    const summary = { ...input.summary, ...(await readJson(join(dirname(input.outDir), 'summary.json'))) };
    const step = typeof input.summary._step === 'number' ? input.summary._step : undefined;
    const facts = {
      experiment: String(producer.name ?? stage).split('/')[0]!,
      stage,
      plugin: String(producer.plugin ?? 'unknown'),
      runId: input.runId,
      ...(step === undefined ? {} : { step }),
      summary,
    };
    const record: PushRecord = step === undefined ? {} : { step };
    const vqgan = await movableVqgan(dir);
    if (c.hub) {
      const total = (await folderFiles(dir)).length + vqgan.length + 1;
      ctx.progress.start(total, 'file');
      const pushed = await pushToHub(c, dir, facts, 'model', { extraFiles: vqgan, onFileDone: () => ctx.progress.tick(1), signal: ctx.signal });
      ctx.progress.end();
      record.hub = { repo: pushed.repo, commit: pushed.commit, url: pushed.commitUrl, files: pushed.files.length };
      ctx.logger.info(`${NAME}: ${dir} → hf:${pushed.repo}@${pushed.commit} (${pushed.files.length} files${pushed.created ? ', repo created' : ''}${pushed.deleted.length ? `, ${pushed.deleted.length} removed` : ''})`);
    }
    if (wandb && 'skipped' in wandb) ctx.logger.warn(`${NAME}: ${wandb.skipped}`);
    else if (wandb) {
      record.wandb = await pushToWandb(wandb, [await modelArtifact(dir, wandb.wandbRunId, step, vqgan)], ctx.signal);
      ctx.logger.info(`${NAME}: ${dir} → W&B ${wandb.settings.entity}/${wandb.settings.project}/${record.wandb.map((a) => `${a.name}:${a.version}`).join(', ')}`);
    }
    await writeFile(join(ctx.outDir, 'pushed.json'), `${JSON.stringify(record, null, 1)}\n`);
    return {
      artifacts: { pushed: 'pushed.json' },
      summary: {
        ...(record.hub ? { hub_repo: record.hub.repo, hub_commit: record.hub.commit } : {}),
        ...(record.wandb ? { wandb_artifacts: record.wandb.map((a) => `${a.name}:${a.version}`).join(', ') } : {}),
      },
    };
  },
  hooks: {
    async checkpoint(event, ctx) {
      const c = ctx.config;
      const n = (seen.get(event.runId) ?? 0) + 1;
      seen.set(event.runId, n);
      if (n % c.every !== 0) return;
      const { dir, step } = event.checkpoint;
      const wandb = c.wandb === false ? undefined : await wandbTarget(c, ctx.runDir);
      // dalle-mini names the artifacts after the W&B run (a resumed run keeps its first run's id).
      const parts = await splitCheckpoint(dir, wandb && !('skipped' in wandb) ? wandb.wandbRunId : event.runId, { step });
      const record: PushRecord = { step };
      if (c.hub) {
        const model = parts.find((p) => p.type === 'model');
        if (!model) throw new CheckpointPushError(`${NAME}: checkpoint step-${step} of run ${event.runId} has no model files (config.json, *.safetensors) to push to the Hub`);
        const summary = await readJson(join(ctx.runDir, 'summary.json'));
        const [experiment = ctx.runName, stage = ctx.stage] = ctx.runName.split('/');
        const pushed = await pushToHub(c, dir, { experiment, stage, plugin: ctx.plugin, runId: event.runId, step, summary }, 'checkpoint', { files: model.files.map((f) => f.path) });
        record.hub = { repo: pushed.repo, commit: pushed.commit, url: pushed.commitUrl, files: pushed.files.length };
      }
      if (wandb && 'skipped' in wandb) ctx.logger.warn(`${NAME}: ${wandb.skipped}`);
      else if (wandb) record.wandb = await pushToWandb(wandb, parts);
      ctx.logger.info(`${NAME}: checkpoint step-${step} of run ${event.runId} → ${describePush(record)}`);
    },
  },
});
