/**
 * HTTP with real retries for the W&B client: exponential backoff with full jitter, `429` + `Retry-After`
 * honoured, connection errors and 5xx retried, 4xx (a request W&B will never accept) not. Every error message
 * is scrubbed of the API key; request headers never reach a message.
 */
import { MinidalleError } from '../../errors.js';
import { scrub } from '../../secrets.js';

export interface RetryPolicy {
  /** Attempts per request, the first included. */
  maxAttempts: number;
  /** Delay before the first retry; doubles per attempt up to maxDelayMs (then jittered down to half). */
  baseDelayMs: number;
  maxDelayMs: number;
  /** A server's Retry-After is honoured up to this long. */
  maxRetryAfterMs: number;
  /** Per-request time limit. */
  timeoutMs: number;
  /** Injectable so tests are fast and deterministic. */
  sleep: (ms: number, signal?: AbortSignal) => Promise<void>;
  random: () => number;
  /** Told about every retry (the replica turns it into one quiet line). */
  onRetry?: (info: { what: string; attempt: number; delayMs: number; reason: string }) => void;
}

export function abortableSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason as Error);
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal!.reason as Error);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** About 4.5 minutes of retrying in the worst case before a request is given up (and left for later). */
export const DEFAULT_RETRY: RetryPolicy = {
  maxAttempts: 10,
  baseDelayMs: 1000,
  maxDelayMs: 60_000,
  maxRetryAfterMs: 5 * 60_000,
  timeoutMs: 120_000,
  sleep: abortableSleep,
  random: Math.random,
};

/** W&B answered, or could not be reached; `retryable` says whether trying again later can help. */
export class WandbError extends MinidalleError {
  override name = 'WandbError';
  constructor(
    message: string,
    readonly retryable: boolean,
    readonly status?: number,
  ) {
    super(message);
  }
}

/** Thrown by an attempt to ask for another one (after `retryAfterMs` when the server said so). */
export class RetryableFailure extends Error {
  constructor(
    message: string,
    readonly retryAfterMs?: number,
    readonly status?: number,
  ) {
    super(message);
  }
}

/** Exponential backoff with jitter: attempt 1 waits in [base/2, base], attempt 2 in [base, 2·base], … (capped). */
export function backoffDelay(policy: RetryPolicy, attempt: number): number {
  const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (attempt - 1));
  return Math.round(ceiling / 2 + (ceiling / 2) * policy.random());
}

/** `Retry-After` as seconds or an HTTP date, in ms; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | null, now = Date.now()): number | undefined {
  if (value === null || value.trim() === '') return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/** Runs `attempt` until it succeeds, fails for good, or the attempts are used up (then a retryable WandbError). */
export async function withRetries<T>(what: string, policy: RetryPolicy, secrets: readonly string[], attempt: () => Promise<T>, signal?: AbortSignal): Promise<T> {
  for (let n = 1; ; n++) {
    try {
      return await attempt();
    } catch (err) {
      if (signal?.aborted) throw err;
      if (!(err instanceof RetryableFailure)) throw err;
      const reason = scrub(err.message, secrets);
      if (n >= policy.maxAttempts) {
        throw new WandbError(`${what}: W&B unavailable after ${n} attempts (last: ${reason}); nothing was lost: \`minidalle sync\` sends it later`, true, err.status);
      }
      const delayMs = err.retryAfterMs !== undefined ? Math.min(err.retryAfterMs, policy.maxRetryAfterMs) : backoffDelay(policy, n);
      policy.onRetry?.({ what, attempt: n, delayMs, reason });
      await policy.sleep(delayMs, signal);
    }
  }
}

const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']);

/** The errno-like code of a failed fetch (`fetch failed` hides it in `cause`). */
function networkCode(err: unknown): string | undefined {
  for (let e: unknown = err, depth = 0; e && depth < 4; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}

type RequestBody = NonNullable<RequestInit['body']>;

export interface HttpRequest {
  method: 'GET' | 'POST' | 'PUT';
  url: string;
  headers?: Record<string, string>;
  /** Called per attempt, so a streamed body is opened afresh for every retry. */
  body?: () => Promise<{ body: RequestBody; length?: number }> | { body: RequestBody; length?: number };
  /** Short name for messages (`GraphQL UpsertBucket`, `upload media/images/a.png`). */
  what: string;
}

/**
 * One request with retries; resolves with a 2xx response. The caller reads its body (inside the same attempt
 * when the body itself can fail: use `attempt` for that).
 */
export async function send(req: HttpRequest, policy: RetryPolicy, secrets: readonly string[], signal?: AbortSignal): Promise<Response> {
  return withRetries(req.what, policy, secrets, () => sendOnce(req, policy, secrets, signal), signal);
}

/** One attempt: a 2xx response, a RetryableFailure, or a final WandbError. */
export async function sendOnce(req: HttpRequest, policy: RetryPolicy, secrets: readonly string[], signal?: AbortSignal): Promise<Response> {
  const timeout = AbortSignal.timeout(policy.timeoutMs);
  const combined = signal ? AbortSignal.any([signal, timeout]) : timeout;
  let res: Response;
  try {
    const payload = req.body ? await req.body() : undefined;
    const headers: Record<string, string> = { ...req.headers };
    if (payload?.length !== undefined) headers['content-length'] = String(payload.length);
    const init: RequestInit & { duplex?: 'half' } = { method: req.method, headers, signal: combined };
    if (payload) {
      init.body = payload.body;
      if (payload.body instanceof ReadableStream) init.duplex = 'half';
    }
    res = await fetch(req.url, init);
  } catch (err) {
    if (signal?.aborted) throw err;
    if (timeout.aborted) throw new RetryableFailure(`no answer within ${policy.timeoutMs} ms`);
    const code = networkCode(err);
    if (code && NETWORK_CODES.has(code)) throw new RetryableFailure(`${code} (${originOf(req.url)})`);
    if (err instanceof TypeError) throw new RetryableFailure(`network error: ${(err.cause as Error | undefined)?.message ?? err.message}`);
    throw err;
  }
  if (res.ok) return res;
  const text = await res.text().catch(() => '');
  const detail = scrub(text.replace(/\s+/g, ' ').slice(0, 300), secrets);
  if (res.status === 429 || res.status === 408 || res.status >= 500) {
    throw new RetryableFailure(`HTTP ${res.status}${detail ? `: ${detail}` : ''}`, res.status === 429 || res.status === 503 ? parseRetryAfter(res.headers.get('retry-after')) : undefined, res.status);
  }
  const hint = res.status === 401 || res.status === 403 ? ' (check WANDB_API_KEY and that it may write to this entity/project)' : '';
  throw new WandbError(`${req.what}: W&B answered HTTP ${res.status}${hint}${detail ? `: ${detail}` : ''}`, false, res.status);
}

function originOf(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return 'invalid URL';
  }
}
