import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { GenerateError, resolveModelDir } from '../../src/commands/generate.js';
import { pushFolder } from '../../src/core/hub/index.js';
import { minidalleCacheDir, modelPath, modelPathKeys, parseModelRef, resolveConfigRefs } from '../../src/core/refs.js';
import { FakeHub } from '../support/fake-hub.js';

const TOKEN = `hf_${randomBytes(12).toString('hex')}`;

describe('model references', () => {
  it('parses hf: and wandb: references, and says the grammar of a malformed one', () => {
    expect(parseModelRef('./models/bart')).toBeUndefined();
    expect(parseModelRef('hf:me/bart')).toMatchObject({ kind: 'hf', repo: 'me/bart', revision: 'main' });
    expect(parseModelRef('hf:me/bart@v1.0')).toMatchObject({ kind: 'hf', repo: 'me/bart', revision: 'v1.0' });
    expect(parseModelRef('wandb:me/proj/model-abc:step-300')).toMatchObject({ kind: 'wandb', entity: 'me', project: 'proj', name: 'model-abc', alias: 'step-300' });
    expect(parseModelRef('wandb:me/proj/model-abc')).toMatchObject({ alias: 'latest' });
    expect(() => parseModelRef('hf:bart')).toThrow("'hf:bart' is not a Hub reference: expected hf:<owner>/<repo> or hf:<owner>/<repo>@<revision>");
    expect(() => parseModelRef('hf:me/../x')).toThrow(/not a Hub reference/);
    expect(() => parseModelRef('wandb:model-abc:latest')).toThrow(/expected wandb:<entity>\/<project>\/<name>:<alias>/);
  });

  it('caches under $MINIDALLE_CACHE, else $XDG_CACHE_HOME/minidalle, else ~/.cache/minidalle', () => {
    expect(minidalleCacheDir({ MINIDALLE_CACHE: '/data/c', XDG_CACHE_HOME: '/x' })).toBe('/data/c');
    expect(minidalleCacheDir({ XDG_CACHE_HOME: '/x' })).toBe('/x/minidalle');
    expect(minidalleCacheDir({})).toBe(join(homedir(), '.cache', 'minidalle'));
  });

  it("finds the model-path fields of the built-in plugins' schemas", async () => {
    const { Seq2SeqTrainConfig } = await import('../../plugins/seq2seq-train/index.js');
    const { VqganFinetuneConfig } = await import('../../plugins/vqgan-finetune/index.js');
    const { EncodeDatasetConfig } = await import('../../plugins/encode-dataset/index.js');
    expect(modelPathKeys(Seq2SeqTrainConfig).map((k) => k.join('.')).sort()).toEqual(['encoder_init', 'vqgan']);
    expect(modelPathKeys(VqganFinetuneConfig)).toEqual([['init']]);
    expect(modelPathKeys(EncodeDatasetConfig)).toEqual([['vqgan']]);
    // A malformed reference fails validation like any bad value.
    const bad = Seq2SeqTrainConfig.safeParse({ encoder_init: 'hf:nope' });
    expect(bad.success).toBe(false);
    expect(bad.error!.issues[0]).toMatchObject({ path: ['encoder_init'], message: expect.stringContaining('expected hf:<owner>/<repo>') });
  });

  describe('against a local Hub', () => {
    let hub: FakeHub;
    const saved = { ...process.env };
    let cache: string;
    beforeAll(async () => {
      hub = await FakeHub.start({ token: TOKEN });
      const model = mkdtempSync(join(tmpdir(), 'refs-model-'));
      writeFileSync(join(model, 'config.json'), '{"model_type":"dallebart"}');
      writeFileSync(join(model, 'model.safetensors'), randomBytes(4000));
      await pushFolder({ repo: 'me/model', dir: model, title: 'model', settings: { hubUrl: hub.url, token: TOKEN } });
      const other = mkdtempSync(join(tmpdir(), 'refs-other-'));
      writeFileSync(join(other, 'notes.txt'), 'no model here');
      await pushFolder({ repo: 'me/notes', dir: other, title: 'notes', settings: { hubUrl: hub.url, token: TOKEN } });
      cache = mkdtempSync(join(tmpdir(), 'refs-cache-'));
      Object.assign(process.env, { HF_ENDPOINT: hub.url, HF_TOKEN: TOKEN, MINIDALLE_CACHE: cache });
    });
    afterAll(async () => {
      for (const k of ['HF_ENDPOINT', 'HF_TOKEN', 'MINIDALLE_CACHE']) if (saved[k] === undefined) delete process.env[k];
      Object.assign(process.env, saved);
      await hub.close();
    });

    it('resolves only the marked fields of a config, keeps the rest, and reports progress in bytes', async () => {
      const schema = z.object({ init: modelPath('a model'), prompt: z.string(), nested: z.object({ vq: modelPath('a VQGAN') }) });
      const ticks: number[] = [];
      let total = 0;
      const lines: string[] = [];
      const config = { init: 'hf:me/model', prompt: 'hf:me/model', nested: { vq: '' } };
      const r = await resolveConfigRefs(schema, config, { log: (l) => lines.push(l), progress: { start: (t) => void (total = t), tick: (n = 1) => void ticks.push(n), end: () => {} } });
      expect(r.config.init.startsWith(join(cache, 'hf', 'me--model'))).toBe(true);
      expect(r.config.prompt).toBe('hf:me/model'); // not a model-path field: left alone
      expect(r.config.nested.vq).toBe('');
      expect(config.init).toBe('hf:me/model'); // the input is not changed
      expect(r.resolved.init).toMatchObject({ ref: 'hf:me/model', version: hub.log('me/model')[0]!.oid });
      expect(readFileSync(join(r.config.init, 'model.safetensors')).equals(hub.file('me/model', 'model.safetensors')!.bytes)).toBe(true);
      expect(ticks.reduce((a, b) => a + b, 0)).toBe(total);
      expect(total).toBeGreaterThan(4000);
      expect(lines.at(-1)).toBe(`init: hf:me/model → ${r.config.init}`);
      const missing = resolveConfigRefs(schema, { ...config, init: 'hf:me/absent' });
      await expect(missing).rejects.toThrow(/^init: cannot resolve hf:me\/absent@main/);
    });

    it('minidalle generate --model takes an hf: reference to a model folder, and refuses one without config.json', async () => {
      const dir = await resolveModelDir('hf:me/model', '/nonexistent-runs');
      expect(dir.startsWith(join(cache, 'hf', 'me--model'))).toBe(true);
      await expect(resolveModelDir('hf:me/notes', '/nonexistent-runs')).rejects.toThrow(GenerateError);
      await expect(resolveModelDir('hf:me/notes', '/nonexistent-runs')).rejects.toThrow(/--model hf:me\/notes: what it names \(pulled into .*\) has no config\.json/);
    });
  });
});
