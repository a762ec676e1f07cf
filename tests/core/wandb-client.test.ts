import { describe, expect, it } from 'vitest';
import { backoffDelay, DEFAULT_RETRY, parseRetryAfter, WandbError } from '../../src/core/tracking/wandb/http.js';
import { WandbClient } from '../../src/core/tracking/wandb/client.js';
import { appUrl, baseUrlFrom, groupUrl, runUrl, wandbMode } from '../../src/core/tracking/wandb/settings.js';
import { FakeWandb } from '../support/fake-wandb.js';

const KEY = 'wandb-client-key-00112233445566778899aabbccddeeff';

describe('W&B client', () => {
  it('backs off exponentially with jitter, capped, and reads Retry-After as seconds or a date', () => {
    const p = { ...DEFAULT_RETRY, baseDelayMs: 1000, maxDelayMs: 8000 };
    expect([1, 2, 3, 4, 5, 6].map((n) => backoffDelay({ ...p, random: () => 0 }, n))).toEqual([500, 1000, 2000, 4000, 4000, 4000]);
    expect([1, 2, 3, 4, 5, 6].map((n) => backoffDelay({ ...p, random: () => 1 }, n))).toEqual([1000, 2000, 4000, 8000, 8000, 8000]);
    expect(parseRetryAfter('7')).toBe(7000);
    expect(parseRetryAfter(new Date(Date.parse('2030-01-01T00:00:10Z')).toUTCString(), Date.parse('2030-01-01T00:00:00Z'))).toBe(10_000);
    expect(parseRetryAfter('soon')).toBeUndefined();
    expect(parseRetryAfter(null)).toBeUndefined();
  });

  it('gives up after maxAttempts with a retryable error that says sync sends it later; a 4xx is not retried', async () => {
    const fake = new FakeWandb(KEY);
    await fake.start();
    const sleeps: number[] = [];
    const client = new WandbClient({ baseUrl: fake.url, apiKey: KEY, entity: 'me', project: 'proj', retry: { maxAttempts: 4, sleep: async (ms) => void sleeps.push(ms), random: () => 0.5 } });
    try {
      fake.fault = () => ({ status: 503 });
      const err = (await client.upsertRun({ name: 'r1' }).catch((e: unknown) => e)) as WandbError;
      expect(err).toBeInstanceOf(WandbError);
      expect(err.retryable).toBe(true);
      expect(err.message).toMatch(/UpsertBucket: W&B unavailable after 4 attempts \(last: HTTP 503.*`minidalle sync` sends it later/);
      expect(sleeps).toEqual([750, 1500, 3000]);
      expect(fake.requests).toHaveLength(4);
      fake.fault = () => ({ status: 400 });
      const bad = (await client.upsertRun({ name: 'r1' }).catch((e: unknown) => e)) as WandbError;
      expect(bad.retryable).toBe(false);
      expect(fake.requests).toHaveLength(5);
      fake.fault = undefined;
      expect(await client.resumeStatus('nope')).toBeUndefined();
      await client.upsertRun({ name: 'r1', config: { lr: { value: 0.1 } }, tags: ['a'] });
      expect(fake.requests.at(-1)!.authorization).toBe(`Basic ${Buffer.from(`api:${KEY}`).toString('base64')}`);
      expect(fake.run('r1').config).toEqual({ lr: { value: 0.1 } });
    } finally {
      await fake.stop();
    }
    // Connection refused is retried too, and its message names no key.
    sleeps.length = 0;
    const err = (await client.viewerEntity().catch((e: unknown) => e)) as WandbError;
    expect(err.message).toMatch(/ECONNREFUSED/);
    expect(sleeps).toHaveLength(3);
    expect(err.message + err.stack).not.toContain(KEY);
  });

  it('reads its settings from the environment and builds W&B page addresses', () => {
    expect(wandbMode({})).toBe('online');
    expect(wandbMode({ WANDB_MODE: 'offline' })).toBe('offline');
    expect(wandbMode({ WANDB_MODE: 'disabled' })).toBe('disabled');
    expect(() => wandbMode({ WANDB_MODE: 'sometimes' })).toThrow(/use online, offline or disabled/);
    expect(baseUrlFrom({})).toBe('https://api.wandb.ai');
    expect(baseUrlFrom({ WANDB_BASE_URL: 'http://wandb.local:8080/' })).toBe('http://wandb.local:8080');
    expect(() => baseUrlFrom({ WANDB_BASE_URL: 'ftp://x' })).toThrow(/expected an http\(s\) URL/);
    expect(appUrl('https://api.wandb.ai')).toBe('https://wandb.ai');
    expect(runUrl({ baseUrl: 'https://api.wandb.ai', entity: 'me', project: 'p', runId: 'abc' })).toBe('https://wandb.ai/me/p/runs/abc');
    expect(groupUrl({ baseUrl: 'http://wandb.local:8080', entity: 'me', project: 'p', group: 'g1' })).toBe('http://wandb.local:8080/me/p/groups/g1');
  });
});
