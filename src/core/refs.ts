/**
 * Model and checkpoint references: wherever minidalle takes a model or checkpoint folder it also takes
 *
 *   hf:<owner>/<repo>[@<revision>]                      a Hugging Face Hub model repo (default revision: main)
 *   wandb:<entity>/<project>/<name>[:<alias>]          a W&B artifact (default alias: latest)
 *
 * and resolves them to a local folder in the cache: `$MINIDALLE_CACHE`, else `$XDG_CACHE_HOME/minidalle`,
 * else `~/.cache/minidalle`. Pulls are verified by digest (sha256/git blob ids for the Hub, md5 for W&B) and
 * kept, so a second use downloads nothing. Credentials come from the environment only (HF_TOKEN,
 * WANDB_API_KEY; HF_ENDPOINT and WANDB_BASE_URL say where).
 *
 * A plugin marks a config field as such a path with `modelPath(…)`; the worker resolves marked fields before
 * the stage runs, so the plugin sees a folder and the run's config keeps the reference.
 */
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { MinidalleError } from './errors.js';
import type { Progress } from './plugins/types.js';

export class RefError extends MinidalleError {
  override name = 'RefError';
}

const HF = /^hf:([A-Za-z0-9][\w.-]*\/[A-Za-z0-9][\w.-]*)(?:@([^\s@]+))?$/;
const WANDB = /^wandb:([^/:\s]+)\/([^/:\s]+)\/([^/:\s]+)(?::([^/:\s]+))?$/;

export type ModelRef =
  | { kind: 'hf'; text: string; repo: string; revision: string }
  | { kind: 'wandb'; text: string; entity: string; project: string; name: string; alias: string };

/** Whether a value is meant as a reference (it may still be malformed: see parseModelRef). */
export const isModelRef = (value: string): boolean => value.startsWith('hf:') || value.startsWith('wandb:');

/** The reference in `value`, or undefined for a plain path. A malformed reference is an error saying the grammar. */
export function parseModelRef(value: string): ModelRef | undefined {
  if (!isModelRef(value)) return undefined;
  const hf = HF.exec(value);
  if (hf && !hf[1]!.includes('..') && !(hf[2] ?? '').includes('..')) return { kind: 'hf', text: value, repo: hf[1]!, revision: hf[2] ?? 'main' };
  const wb = WANDB.exec(value);
  if (wb) return { kind: 'wandb', text: value, entity: wb[1]!, project: wb[2]!, name: wb[3]!, alias: wb[4] ?? 'latest' };
  throw new RefError(
    value.startsWith('hf:')
      ? `'${value}' is not a Hub reference: expected hf:<owner>/<repo> or hf:<owner>/<repo>@<revision>`
      : `'${value}' is not a W&B reference: expected wandb:<entity>/<project>/<name>:<alias>, e.g. wandb:me/shapes/model-abc123:latest`,
  );
}

/** The cache root: $MINIDALLE_CACHE, else $XDG_CACHE_HOME/minidalle, else ~/.cache/minidalle. */
export function minidalleCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.MINIDALLE_CACHE) return resolve(env.MINIDALLE_CACHE);
  if (env.XDG_CACHE_HOME) return join(resolve(env.XDG_CACHE_HOME), 'minidalle');
  return join(homedir(), '.cache', 'minidalle');
}

export interface ResolveOptions {
  env?: NodeJS.ProcessEnv;
  /** Default: minidalleCacheDir(env). */
  cacheDir?: string;
  log?: (line: string) => void;
  /** Download progress (Hub pulls, in bytes). */
  progress?: Progress;
  signal?: AbortSignal;
}

export interface ResolvedRef {
  /** The local folder. */
  dir: string;
  ref: string;
  /** The commit (Hub) or the artifact digest (W&B) the reference resolved to. */
  version: string;
}

/** Downloads (or finds in the cache) what a reference names and returns its folder. */
export async function resolveModelRef(ref: ModelRef, o: ResolveOptions = {}): Promise<ResolvedRef> {
  const env = o.env ?? process.env;
  const cacheDir = o.cacheDir ?? minidalleCacheDir(env);
  if (ref.kind === 'hf') {
    const { hubSettingsFromEnv, pullHubRepo } = await import('./hub/index.js');
    const pulled = await pullHubRepo({ repo: ref.repo, revision: ref.revision }, { cacheDir, settings: hubSettingsFromEnv(env), ...(o.log ? { log: o.log } : {}), ...(o.progress ? { progress: o.progress } : {}) });
    return { dir: pulled.dir, ref: ref.text, version: pulled.commit };
  }
  const { baseUrlFrom, pullArtifact } = await import('./tracking/wandb/index.js');
  const apiKey = env.WANDB_API_KEY?.trim();
  if (!apiKey) throw new RefError(`${ref.text}: pulling a W&B artifact needs WANDB_API_KEY in the environment`);
  const dir = await pullArtifact(`${ref.entity}/${ref.project}/${ref.name}:${ref.alias}`, {
    cacheDir,
    settings: { baseUrl: baseUrlFrom(env), apiKey },
    ...(o.signal ? { signal: o.signal } : {}),
  });
  return { dir, ref: ref.text, version: dir.slice(dir.lastIndexOf('/') + 1) };
}

/** Config fields that hold a model or checkpoint folder (or a reference to one). */
const modelPathFields = z.registry<{ modelPath: true }>();

const REF_HINT = ' — or hf:<owner>/<repo>[@rev], wandb:<entity>/<project>/<name>:<alias>';

/**
 * A config field holding a model or checkpoint folder, which may also be an `hf:`/`wandb:` reference
 * (checked when the experiment is validated, resolved to a cached folder before the stage runs).
 * Optional fields default to '' (= unset).
 */
export function modelPath(description: string, options: { required?: boolean } = {}): z.ZodType<string, string | undefined> {
  const checked = z.string().superRefine((value, ctx) => {
    try {
      parseModelRef(value);
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: (err as Error).message });
    }
  });
  const field = (options.required ? checked.min(1) : checked.default('')).describe(`${description}${REF_HINT}`);
  modelPathFields.add(field, { modelPath: true });
  return field as z.ZodType<string, string | undefined>;
}

interface Walkable {
  shape?: Record<string, z.ZodType>;
  def?: { innerType?: z.ZodType; type?: string };
}

/** Key paths of the modelPath fields of an object schema (nested objects included). */
export function modelPathKeys(schema: z.ZodType, prefix: string[] = []): string[][] {
  let s = schema as unknown as Walkable;
  for (let i = 0; i < 10 && !s.shape && s.def?.innerType; i++) s = s.def.innerType as unknown as Walkable;
  const out: string[][] = [];
  for (const [key, field] of Object.entries(s.shape ?? {})) {
    if (modelPathFields.has(field)) out.push([...prefix, key]);
    else out.push(...modelPathKeys(field, [...prefix, key]));
  }
  return out;
}

/**
 * A copy of a validated config whose modelPath fields holding references are replaced by their cached
 * folders, and what each resolved to (for run.json).
 */
export async function resolveConfigRefs<C>(schema: z.ZodType, config: C, o: ResolveOptions = {}): Promise<{ config: C; resolved: Record<string, ResolvedRef> }> {
  const out = structuredClone(config) as unknown as Record<string, unknown>;
  const resolved: Record<string, ResolvedRef> = {};
  for (const path of modelPathKeys(schema)) {
    let parent: Record<string, unknown> | undefined = out;
    for (const k of path.slice(0, -1)) parent = (parent?.[k] ?? undefined) as Record<string, unknown> | undefined;
    const key = path.at(-1)!;
    const value = parent?.[key];
    if (typeof value !== 'string') continue;
    const ref = parseModelRef(value);
    if (!ref) continue;
    const field = path.join('.');
    try {
      const r = await resolveModelRef(ref, o);
      o.log?.(`${field}: ${ref.text} → ${r.dir}`);
      parent![key] = r.dir;
      resolved[field] = r;
    } catch (err) {
      throw new RefError(`${field}: ${(err as Error).message}`);
    }
  }
  return { config: out as unknown as C, resolved };
}
