import { describe, expect, it } from 'vitest';
import { isSecretKey, redactConfig, scrub, scrubDeep, secretValues } from '../../src/core/secrets.js';

describe('isSecretKey', () => {
  it.each(['api_key', 'hf_token', 'password', 'secret', 'WANDB_API_KEY', 'HF_TOKEN', 'apiKey', 'authToken', 'client_secret',
    'AWS_SECRET_ACCESS_KEY', 'GOOGLE_APPLICATION_CREDENTIALS', 'db-passwd', 'token', 'http_auth', 'APIKey'])('%s is secret', (k) => {
    expect(isSecretKey(k)).toBe(true);
  });
  it.each(['key_metric', 'max_tokens', 'tokenizer', 'bos_token_id', 'pad_token', 'author', 'cache_key', 'key', 'steps',
    'TOKENIZERS_PARALLELISM', 'PWD', 'monkey', 'passes'])('%s is not secret', (k) => {
    expect(isSecretKey(k)).toBe(false);
  });
});

describe('secretValues', () => {
  it('takes values of secret-named variables of at least 6 characters, longest first', () => {
    const v = secretValues({ HF_TOKEN: 'hf_abcdef', WANDB_API_KEY: 'w'.repeat(40), PASSWORD: 'short', HOME: '/home/someone', X: undefined });
    expect(v).toEqual(['w'.repeat(40), 'hf_abcdef']);
  });
});

describe('scrub', () => {
  it('replaces every occurrence, the longer secret first', () => {
    expect(scrub('a=sekret123 b=sekret123456 c', ['sekret123', 'sekret123456'])).toBe('a=<redacted> b=<redacted> c');
  });
  it('leaves text without secrets unchanged', () => {
    expect(scrub('nothing here', ['sekret123'])).toBe('nothing here');
  });
});

describe('redactConfig', () => {
  it('redacts by key (whole subtree) and by value, without touching the input', () => {
    const input = {
      tracking: { wandb: { project: 'p', api_key: 'k-123456789' } },
      hub: { repo: 'u/r', token: { value: 'x' } },
      stages: [{ with: { note: 'uses tok_ABCDEFGH inside', key_metric: 'loss', steps: 3, hf_token: null } }],
    };
    const out = redactConfig(input, ['tok_ABCDEFGH']);
    expect(out.tracking.wandb).toEqual({ project: 'p', api_key: '<redacted>' });
    expect(out.hub.token).toBe('<redacted>');
    expect(out.stages[0]!.with).toEqual({ note: 'uses <redacted> inside', key_metric: 'loss', steps: 3, hf_token: null });
    expect(input.tracking.wandb.api_key).toBe('k-123456789');
  });
  it('defaults to the secret values of the environment', () => {
    process.env.MINIDALLE_TEST_TOKEN = 'env-secret-value-42';
    try {
      expect(redactConfig({ url: 'https://x/?t=env-secret-value-42' })).toEqual({ url: 'https://x/?t=<redacted>' });
    } finally {
      delete process.env.MINIDALLE_TEST_TOKEN;
    }
  });
  it('scrubDeep scrubs keys and values but keeps non-string leaves', () => {
    expect(scrubDeep({ 'k-sekret99': ['sekret99!', 1, true] }, ['sekret99'])).toEqual({ 'k-<redacted>': ['<redacted>!', 1, true] });
  });
});
