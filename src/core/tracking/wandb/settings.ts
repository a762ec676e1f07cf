/**
 * Where and how the W&B replica sends: the experiment's `tracking.wandb` plus the environment
 * (`WANDB_API_KEY`, `WANDB_BASE_URL`, `WANDB_MODE`, `WANDB_ENTITY`, `WANDB_PROJECT`).
 */
import { MinidalleError } from '../../errors.js';
import { DEFAULT_RETRY, type RetryPolicy } from './http.js';

/** What the client needs to talk to one W&B project. */
export interface WandbSettings {
  /** `https://api.wandb.ai` or a W&B server's address. */
  baseUrl: string;
  apiKey: string;
  entity: string;
  project: string;
  /** Default: DEFAULT_RETRY. */
  retry?: Partial<RetryPolicy>;
}

/** The experiment's `tracking.wandb` block. */
export interface WandbTracking {
  project: string;
  entity?: string;
  tags?: string[];
  notes?: string;
}

export type WandbMode = 'online' | 'offline' | 'disabled';

export const DEFAULT_BASE_URL = 'https://api.wandb.ai';

export class WandbConfigError extends MinidalleError {
  override name = 'WandbConfigError';
  override exitCode = 2;
}

export function wandbMode(env: Record<string, string | undefined> = process.env): WandbMode {
  const raw = (env.WANDB_MODE ?? '').trim().toLowerCase();
  if (raw === '' || raw === 'online' || raw === 'run') return 'online';
  if (raw === 'offline' || raw === 'dryrun') return 'offline';
  if (raw === 'disabled') return 'disabled';
  throw new WandbConfigError(`WANDB_MODE='${env.WANDB_MODE}' is not a mode minidalle knows: use online, offline or disabled`);
}

export function retryPolicy(settings: Pick<WandbSettings, 'retry'>): RetryPolicy {
  return { ...DEFAULT_RETRY, ...settings.retry };
}

/** The base URL without a trailing slash; refuses anything but http(s). */
export function baseUrlFrom(env: Record<string, string | undefined> = process.env): string {
  const raw = (env.WANDB_BASE_URL ?? '').trim() || DEFAULT_BASE_URL;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new WandbConfigError(`WANDB_BASE_URL='${raw}' is not a URL (expected e.g. ${DEFAULT_BASE_URL})`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new WandbConfigError(`WANDB_BASE_URL='${raw}': expected an http(s) URL`);
  return url.href.replace(/\/+$/, '');
}

/**
 * The web address of a run or a group: api.wandb.ai's pages are on wandb.ai; a W&B server serves both at
 * its one address.
 */
export function appUrl(baseUrl: string): string {
  const url = new URL(baseUrl);
  if (url.hostname.startsWith('api.')) url.hostname = url.hostname.slice(4);
  return url.href.replace(/\/+$/, '');
}

export function runUrl(d: { baseUrl: string; entity: string; project: string; runId: string }): string {
  return `${appUrl(d.baseUrl)}/${encodeURIComponent(d.entity)}/${encodeURIComponent(d.project)}/runs/${encodeURIComponent(d.runId)}`;
}

export function groupUrl(d: { baseUrl: string; entity: string; project: string; group: string }): string {
  return `${appUrl(d.baseUrl)}/${encodeURIComponent(d.entity)}/${encodeURIComponent(d.project)}/groups/${encodeURIComponent(d.group)}`;
}
