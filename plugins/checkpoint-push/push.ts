/**
 * What checkpoint-push sends where: a model folder (or the model part of a checkpoint) to a Hub repo as one
 * commit with a model card, and W&B artifacts (`model-<runid>`, and `state-<runid>` for a checkpoint).
 * Credentials come from the environment only: HF_TOKEN, WANDB_API_KEY.
 */
import { existsSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { folderFiles, hubSettingsFromEnv, modelCard, pushFolder, type PushResult } from '../../src/core/hub/index.js';
import { MinidalleError } from '../../src/core/errors.js';
import { baseUrlFrom, checkpointArtifacts, pushArtifact, wandbMode, type CheckpointArtifact, type PushedArtifact, type WandbSettings } from '../../src/core/tracking/wandb/index.js';
import type { CheckpointPushConfig } from './config.js';

export class CheckpointPushError extends MinidalleError {
  override name = 'CheckpointPushError';
}

/** What was pushed, as the stage records it in pushed.json and the observer logs it. */
export interface PushRecord {
  step?: number;
  hub?: { repo: string; commit: string; url: string; files: number };
  wandb?: { name: string; version: string; digest: string }[];
}

/** W&B settings from the config and the environment, or why W&B is skipped (WANDB_MODE). */
export function wandbSettings(c: CheckpointPushConfig, env: NodeJS.ProcessEnv = process.env): WandbSettings | { skipped: string } {
  const mode = wandbMode(env);
  if (mode !== 'online') return { skipped: `WANDB_MODE=${env.WANDB_MODE}: W&B artifacts are not pushed` };
  const given = typeof c.wandb === 'object' ? c.wandb : { entity: '', project: '' };
  const entity = given.entity || env.WANDB_ENTITY || '';
  const project = given.project || env.WANDB_PROJECT || '';
  if (!entity || !project) throw new CheckpointPushError(`checkpoint-push: W&B needs an entity and a project: set with.wandb: { entity, project } or WANDB_ENTITY and WANDB_PROJECT`);
  const apiKey = env.WANDB_API_KEY?.trim();
  if (!apiKey) throw new CheckpointPushError('checkpoint-push: pushing to W&B needs WANDB_API_KEY in the environment');
  return { baseUrl: baseUrlFrom(env), apiKey, entity, project };
}

/**
 * A text → image model folder names its VQGAN by path and digests (vqgan.json); pushed, it carries the VQGAN
 * itself as `vqgan/` (verified against those digests first), so the pushed model loads on any machine.
 */
export async function movableVqgan(dir: string): Promise<{ path: string; localPath: string }[]> {
  if (!existsSync(join(dir, 'vqgan.json')) || existsSync(join(dir, 'vqgan', 'model.safetensors'))) return [];
  const { resolveVqgan } = await import('../../src/ml/text2image.js');
  const vqgan = await resolveVqgan(dir);
  return ['config.json', 'model.safetensors'].map((f) => ({ path: `vqgan/${f}`, localPath: join(vqgan, f) }));
}

export interface CardFacts {
  experiment: string;
  stage: string;
  plugin: string;
  runId: string;
  step?: number;
  summary: Record<string, unknown>;
}

/** Pushes the files of `dir` (all, or `files`) with a generated README.md as one commit. */
export async function pushToHub(
  c: CheckpointPushConfig,
  dir: string,
  facts: CardFacts,
  kind: 'model' | 'checkpoint',
  o: { files?: string[]; extraFiles?: { path: string; localPath: string }[]; onFileDone?: (p: string) => void; signal?: AbortSignal } = {},
): Promise<PushResult> {
  const settings = hubSettingsFromEnv(process.env, c.hub_url || undefined);
  const paths = o.files ?? (await folderFiles(dir));
  const extraFiles = o.extraFiles ?? [];
  const files = [
    ...(await Promise.all(paths.map(async (path) => ({ path, size: (await stat(join(dir, path))).size })))),
    ...(await Promise.all(extraFiles.map(async (f) => ({ path: f.path, size: (await stat(f.localPath)).size })))),
  ].sort((x, y) => (x.path < y.path ? -1 : 1));
  const card = modelCard({ repo: c.hub, ...facts, kind, files });
  const step = facts.step === undefined ? '' : `, step ${facts.step}`;
  return pushFolder({
    repo: c.hub,
    dir,
    files: paths,
    extraFiles,
    extra: { 'README.md': card },
    title: `minidalle: ${kind === 'checkpoint' ? 'checkpoint of ' : ''}${facts.experiment}/${facts.stage} run ${facts.runId}${step}`,
    description: `Pushed by minidalle checkpoint-push: ${kind === 'checkpoint' ? 'a checkpoint' : 'the final model folder'} of stage '${facts.stage}' (plugin ${facts.plugin}).`,
    private: c.hub_private,
    settings,
    ...(o.signal ? { signal: o.signal } : {}),
    ...(o.onFileDone ? { onFileDone: o.onFileDone } : {}),
  });
}

/** The model folder of a finished stage as `model-<runid>` (every file: it is the loadable folder, plus `extraFiles`). */
export async function modelArtifact(dir: string, runId: string, step: number | undefined, extraFiles: { path: string; localPath: string }[] = []): Promise<CheckpointArtifact> {
  const files = [...(await folderFiles(dir)).map((p) => ({ path: p, localPath: join(dir, ...p.split('/')) })), ...extraFiles];
  if (files.length === 0) throw new CheckpointPushError(`checkpoint-push: ${dir} holds no files to push`);
  return { name: `model-${runId}`, type: 'model', files, metadata: step === undefined ? {} : { step }, aliases: step === undefined ? ['latest'] : ['latest', `step-${step}`] };
}

export async function pushToWandb(settings: WandbSettings, runId: string, artifacts: CheckpointArtifact[], signal?: AbortSignal): Promise<PushedArtifact[]> {
  const out: PushedArtifact[] = [];
  for (const a of artifacts) out.push(await pushArtifact({ settings, runId, ...a, ...(signal ? { signal } : {}) }));
  return out;
}

/** dalle-mini's split of a checkpoint folder (model-<runid> / state-<runid>). */
export const splitCheckpoint = checkpointArtifacts;

export function describePush(r: PushRecord): string {
  const parts: string[] = [];
  if (r.hub) parts.push(`hf:${r.hub.repo}@${r.hub.commit.slice(0, 12)} (${r.hub.files} files)`);
  for (const a of r.wandb ?? []) parts.push(`W&B ${a.name}:${a.version}`);
  return parts.join(', ') || 'nothing';
}
