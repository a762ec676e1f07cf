/**
 * Where the Hugging Face Hub is and who we are there. The token comes from the environment only (`HF_TOKEN`),
 * never from an experiment file, and every error this module raises has it scrubbed out.
 */
import { MinidalleError } from '../errors.js';
import { scrub } from '../secrets.js';

export const DEFAULT_HUB_URL = 'https://huggingface.co';

export interface HubSettings {
  /** Base URL of the Hub API (tests point it at a local server). */
  hubUrl: string;
  /** Access token (`hf_…`), when set. */
  token?: string;
}

/** `HF_TOKEN` and `HF_ENDPOINT` (the variables huggingface_hub reads); `hubUrl` overrides the endpoint. */
export function hubSettingsFromEnv(env: NodeJS.ProcessEnv = process.env, hubUrl?: string): HubSettings {
  const token = env.HF_TOKEN?.trim() || undefined;
  return { hubUrl: (hubUrl || env.HF_ENDPOINT || DEFAULT_HUB_URL).replace(/\/+$/, ''), ...(token ? { token } : {}) };
}

export class HubError extends MinidalleError {
  override name = 'HubError';
}

/** A HubError for `what` failing because of `cause`, with the token scrubbed from every part of the message. */
export function hubError(what: string, cause: unknown, settings: HubSettings): HubError {
  const message = cause instanceof Error ? cause.message : String(cause);
  const hint = /status 401|credentials|access token/i.test(message)
    ? ' (check HF_TOKEN: it must be a Hub access token with write access to this repo)'
    : '';
  return new HubError(scrub(`${what}: ${message}${hint}`, settings.token ? [settings.token] : []));
}

/** `owner/name`, as the Hub spells repo ids. */
export const REPO_ID = /^[A-Za-z0-9][\w.-]*\/[A-Za-z0-9][\w.-]*$/;

export function checkRepoId(repo: string): void {
  if (!REPO_ID.test(repo) || repo.includes('..')) {
    throw new HubError(`'${repo}' is not a Hub repo id: expected <owner>/<name> (letters, digits, '.', '_' and '-')`);
  }
}
