/**
 * What checkpoint-push sends where: a model folder (or the model part of a checkpoint) to a Hub repo as one
 * commit with a model card, and W&B artifacts (`model-<runid>`, and `state-<runid>` for a checkpoint).
 * Credentials come from the environment only: HF_TOKEN, WANDB_API_KEY.
 */
import { existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { folderFiles, hubSettingsFromEnv, modelCard, pushFolder, type PushResult } from '../../src/core/hub/index.js';
import { MinidalleError } from '../../src/core/errors.js';
import { RunStore, type RunRecord } from '../../src/core/runs/index.js';
import {
  baseUrlFrom,
  checkpointArtifacts,
  pushArtifact,
  readState,
  recordArtifact,
  trackingOfRun,
  wandbMode,
  wandbRunIdFor,
  WandbClient,
  type CheckpointArtifact,
  type PushedArtifact,
  type WandbSettings,
} from '../../src/core/tracking/wandb/index.js';
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

/** Where W&B artifacts of a run go: the settings, and the W&B run (and collection suffix) they belong to. */
export interface WandbTarget {
  settings: WandbSettings;
  /** The W&B run id: the live replica's (a resumed run keeps its first run's), else the run's own id. */
  wandbRunId: string;
  /** The run directory whose sync state records pushed artifacts, when the replica has one. */
  runDir: string;
  replicated: boolean;
}

/**
 * W&B target of the run in `runDir`, from (first that is set) the plugin's `wandb: { entity, project }`, the
 * run's W&B sync state (the live replica's), the experiment's `tracking.wandb`, WANDB_ENTITY / WANDB_PROJECT;
 * an entity still unknown is the API key's default entity. Or why W&B is skipped (WANDB_MODE).
 */
export async function wandbTarget(c: CheckpointPushConfig, runDir: string, env: NodeJS.ProcessEnv = process.env, signal?: AbortSignal): Promise<WandbTarget | { skipped: string }> {
  const mode = wandbMode(env);
  if (mode !== 'online') return { skipped: `WANDB_MODE=${env.WANDB_MODE}: W&B artifacts are not pushed` };
  const apiKey = env.WANDB_API_KEY?.trim();
  if (!apiKey) throw new CheckpointPushError('checkpoint-push: pushing to W&B needs WANDB_API_KEY in the environment');
  const given = typeof c.wandb === 'object' ? c.wandb : { entity: '', project: '' };
  const record = JSON.parse(await readFile(join(runDir, 'run.json'), 'utf8')) as RunRecord;
  const runsDir = dirname(runDir);
  const state = await readState(runDir);
  const tracking = trackingOfRun(new RunStore(runsDir, { onWarning: () => {} }), record);
  const project = given.project || state?.project || tracking?.project || env.WANDB_PROJECT || '';
  if (!project) throw new CheckpointPushError('checkpoint-push: no W&B project: set with.wandb: { project }, tracking.wandb.project, or WANDB_PROJECT');
  const baseUrl = baseUrlFrom(env);
  let entity = given.entity || state?.entity || tracking?.entity || env.WANDB_ENTITY || '';
  if (!entity) entity = await new WandbClient({ baseUrl, apiKey, entity: '', project }).viewerEntity(signal);
  const wandbRunId = state?.wandb_run_id ?? (await wandbRunIdFor(runsDir, record));
  return { settings: { baseUrl, apiKey, entity, project }, wandbRunId, runDir, replicated: state !== undefined };
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

/** Pushes artifacts under the target's W&B run, and records them in the run's sync state when it has one. */
export async function pushToWandb(target: WandbTarget, artifacts: CheckpointArtifact[], signal?: AbortSignal): Promise<PushedArtifact[]> {
  const out: PushedArtifact[] = [];
  for (const a of artifacts) {
    const pushed = await pushArtifact({ settings: target.settings, runId: target.wandbRunId, ...a, ...(signal ? { signal } : {}) });
    if (target.replicated) await recordArtifact(target.runDir, pushed);
    out.push(pushed);
  }
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
