/**
 * Keeping credentials out of everything a run writes (config.yaml, run.json, history, summary, output.log).
 *
 * Two complementary defences:
 * - by key: a config/env key that names a credential has its whole value replaced (`redactConfig`);
 * - by value: the values of credential-named environment variables are replaced wherever they appear in
 *   text (`secretValues` + `scrub`), so a token pasted under an innocent key or echoed by a stage is caught too.
 */

export const REDACTED = '<redacted>';

/**
 * Words that make a key secret wherever they appear in it (`client_secret`, `db_password`, `GOOGLE_CREDENTIALS`,
 * `http_auth`). `author`, `tokenizer` or `passes` are different words, so they do not match.
 */
const SECRET_WORDS = new Set([
  'secret',
  'secrets',
  'password',
  'passwd',
  'passphrase',
  'credential',
  'credentials',
  'apikey',
  'auth',
  'oauth',
  'authorization',
  'cookie',
]);

/**
 * `token` names a credential when it ends the key (`hf_token`, `HF_TOKEN`, `authToken`), except for a
 * tokenizer's special tokens (`pad_token: "<pad>"`), which are model config, not secrets. `max_tokens` or
 * `bos_token_id` do not end in the word `token`.
 */
const SPECIAL_TOKEN_WORDS = new Set(['bos', 'eos', 'pad', 'unk', 'mask', 'sep', 'cls', 'start', 'end']);

/**
 * `key` alone is too common (`key_metric`, `cache_key`, `sort_key`), so it is secret only when it ends the key
 * right after one of these words (`api_key`, `WANDB_API_KEY`, `secret_access_key`, `private_key`).
 */
const KEY_QUALIFIERS = new Set([
  'api',
  'access',
  'private',
  'secret',
  'client',
  'ssh',
  'signing',
  'encryption',
  'account',
  'license',
  'master',
  'service',
  'session',
]);

/** Splits `WANDB_API_KEY`, `hf-token`, `apiKey`, `APIKey` into lower-case words. */
function words(key: string): string[] {
  return key
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .replace(/([A-Z]+)([A-Z][a-z])/g, '$1 $2')
    .split(/[^A-Za-z0-9]+/)
    .filter((w) => w.length > 0)
    .map((w) => w.toLowerCase());
}

/**
 * Whether a config key or environment variable name names a credential. Rule (by words of the key):
 * any word in {secret(s), password, passwd, passphrase, credential(s), apikey, auth, oauth, authorization, cookie};
 * or the last word is `token` (not a tokenizer special token such as `pad_token`);
 * or the key ends in `<qualifier>_key` with a qualifier such as api/access/private/secret/client/ssh.
 * So `api_key`, `hf_token`, `password`, `secret`, `WANDB_API_KEY`, `HF_TOKEN` are secret; `key_metric`,
 * `max_tokens`, `tokenizer`, `bos_token_id`, `author` are not.
 */
export function isSecretKey(key: string): boolean {
  const w = words(key);
  if (w.length === 0) return false;
  if (w.some((x) => SECRET_WORDS.has(x))) return true;
  const last = w[w.length - 1]!;
  const prev = w.length > 1 ? w[w.length - 2]! : undefined;
  if (last === 'token' || last === 'accesstoken') return prev === undefined || !SPECIAL_TOKEN_WORDS.has(prev);
  if (last === 'key') return prev !== undefined && KEY_QUALIFIERS.has(prev);
  return false;
}

/** Shorter values would scrub ordinary words and numbers out of logs. */
const MIN_SECRET_LENGTH = 6;

/**
 * Values of environment variables whose names are secret-like (`isSecretKey`), at least 6 characters long,
 * longest first (so a secret containing another is replaced whole).
 */
export function secretValues(env: Record<string, string | undefined> = process.env): string[] {
  const found = new Set<string>();
  for (const [name, value] of Object.entries(env)) {
    if (value === undefined || value.length < MIN_SECRET_LENGTH) continue;
    if (isSecretKey(name)) found.add(value);
  }
  return sortLongestFirst(found);
}

/**
 * String values (at least 6 characters) found under secret-named keys anywhere in a config tree, e.g. a token
 * written into a stage's `with:`: scrubbed by value too, so the token is caught wherever a stage echoes it.
 */
export function configSecretValues(tree: unknown): string[] {
  const found = new Set<string>();
  const take = (v: unknown): void => {
    if (typeof v === 'string') {
      if (v.length >= MIN_SECRET_LENGTH) found.add(v);
    } else if (Array.isArray(v)) v.forEach(take);
    else if (typeof v === 'object' && v !== null) Object.values(v).forEach(take);
  };
  const walk = (v: unknown, seen: Set<object>): void => {
    if (typeof v !== 'object' || v === null || seen.has(v)) return;
    seen.add(v);
    if (Array.isArray(v)) v.forEach((x) => walk(x, seen));
    else for (const [k, x] of Object.entries(v)) isSecretKey(k) ? take(x) : walk(x, seen);
  };
  walk(tree, new Set());
  return sortLongestFirst(found);
}

/**
 * What every console path scrubs: the secret values of the environment and of the config (when given), and
 * the config itself redacted by key. `run`, `validate` and the error printer all go through it.
 */
export function consoleSecrets(config?: unknown, env: Record<string, string | undefined> = process.env): string[] {
  return sortLongestFirst([...secretValues(env), ...(config === undefined ? [] : configSecretValues(config))]);
}

function sortLongestFirst(values: Iterable<string>): string[] {
  return [...new Set(values)].filter((v) => v.length > 0).sort((a, b) => b.length - a.length || (a < b ? -1 : 1));
}

/** Replaces every occurrence of each secret value in `text` by `<redacted>`. */
export function scrub(text: string, values: readonly string[]): string {
  let out = text;
  for (const v of sortLongestFirst(values)) {
    if (out.includes(v)) out = out.split(v).join(REDACTED);
  }
  return out;
}

/**
 * Deep copy of a JSON-like value where every string (values and object keys) is scrubbed of `values`.
 * Used for summary values and run.json, whose keys are not credential names but whose strings might
 * carry one (an error message, a git diff).
 */
export function scrubDeep<T>(value: T, values: readonly string[]): T {
  if (values.length === 0) return value;
  return copy(value, values, false, new WeakSet()) as T;
}

/**
 * Deep copy of a config with the value of every secret-named key (`isSecretKey`) replaced by `<redacted>`
 * (whole subtrees too: `auth: { user, pass }`), and every remaining string scrubbed of the secret values
 * (default: `secretValues()` of this process's environment), so config is redacted by key and by value.
 */
export function redactConfig<T>(value: T, values: readonly string[] = secretValues()): T {
  return copy(value, sortLongestFirst(values), true, new WeakSet()) as T;
}

function copy(value: unknown, values: readonly string[], byKey: boolean, seen: WeakSet<object>): unknown {
  if (typeof value === 'string') return scrub(value, values);
  if (value === null || typeof value !== 'object') return value;
  if (seen.has(value)) return '[circular]';
  seen.add(value);
  try {
    if (Array.isArray(value)) return value.map((v) => copy(v, values, byKey, seen));
    const proto = Object.getPrototypeOf(value) as unknown;
    // Dates, buffers and class instances are not config trees: keep them as they are.
    if (proto !== Object.prototype && proto !== null) return value;
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
      // An unset credential (null, '') stays visible: it tells the reader nothing was configured.
      const hide = byKey && isSecretKey(k) && v !== null && v !== undefined && v !== '';
      out[scrub(k, values)] = hide ? REDACTED : copy(v, values, byKey, seen);
    }
    return out;
  } finally {
    seen.delete(value);
  }
}
