import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import {
  AmbiguousRunIdError,
  newRunId,
  RunNotFoundError,
  RunRecordError,
  RunStore,
  RunUsageError,
  type RunRecord,
} from '../../src/core/runs/index.js';

let root: string;
beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'minidalle-runs-'));
});
afterEach(() => {
  rmSync(root, { recursive: true, force: true });
});

const quiet = { env: {}, onWarning: () => {} };

function readJsonl(file: string): Record<string, unknown>[] {
  return readFileSync(file, 'utf8').trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** A pid that certainly belonged to a process which has ended. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', '']);
  return r.pid!;
}

describe('newRunId', () => {
  it('generates 10k unique ids, 11 base36 chars, sorted in generation order, prefixed by the time', () => {
    const before = Date.now();
    const ids = Array.from({ length: 10_000 }, () => newRunId());
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids.every((id) => /^[0-9a-z]{11}$/.test(id))).toBe(true);
    expect([...ids].sort()).toEqual(ids);
    const ms = parseInt(ids[0]!.slice(0, 8), 36);
    expect(ms).toBeGreaterThanOrEqual(before - 1);
    expect(ms).toBeLessThanOrEqual(Date.now() + 1000);
  });

  it('stays unique and increasing when one millisecond holds more ids than the suffix space', () => {
    const now = Date.UTC(2030, 0, 1);
    const ids = Array.from({ length: 50_000 }, () => newRunId(now));
    expect(new Set(ids).size).toBe(ids.length);
    expect([...ids].sort()).toEqual(ids);
    expect(parseInt(ids.at(-1)!.slice(0, 8), 36)).toBeGreaterThan(now);
  });

  it('sorts ids of later milliseconds after earlier ones', () => {
    const a = newRunId(Date.UTC(2031, 0, 1));
    const b = newRunId(Date.UTC(2031, 0, 1) + 1);
    expect(a < b).toBe(true);
  });
});

describe('RunStore layout', () => {
  it('writes run.json, config.yaml, history, summary, output.log, out/', async () => {
    const store = new RunStore(root, quiet);
    const run = await store.create(
      { name: 'vqgan', kind: 'stage', stage: 'vqgan', plugin: 'vqgan-finetune', fingerprint: 'f1', meta: { git: 'abc' } },
      { steps: 3, nested: { lr: 0.001 } },
    );
    expect(run.dir).toBe(join(root, run.id));
    expect(run.outDir).toBe(join(root, run.id, 'out'));
    expect(statSync(run.outDir).isDirectory()).toBe(true);

    const rec = JSON.parse(readFileSync(join(run.dir, 'run.json'), 'utf8')) as RunRecord;
    expect(rec).toMatchObject({ id: run.id, name: 'vqgan', kind: 'stage', status: 'running', host: hostname(), pid: process.pid, owner_host: hostname(), meta: { git: 'abc' } });
    expect(Number.isNaN(Date.parse(rec.created_at))).toBe(false);
    expect(parseYaml(readFileSync(join(run.dir, 'config.yaml'), 'utf8'))).toEqual({ steps: 3, nested: { lr: 0.001 } });

    run.defineMetric('train/loss', { goal: 'minimize', primary: true });
    run.defineMetric('eval/acc', { goal: 'maximize' });
    const losses = [3, 1.5, 2, 0.75, 1];
    losses.forEach((loss, step) => run.log({ 'train/loss': loss, 'eval/acc': step * 0.1 }, step));
    run.log({ 'train/loss': Number.NaN }, 5);
    run.summary({ images: 12, note: 'done' });
    await run.flush();

    const history = readJsonl(join(run.dir, 'history.jsonl'));
    expect(history).toHaveLength(6);
    expect(history.map((h) => h._step)).toEqual([0, 1, 2, 3, 4, 5]);
    expect(history.map((h) => h['train/loss'])).toEqual([...losses, 'NaN']);
    for (const h of history) {
      expect(typeof h._runtime).toBe('number');
      expect(h._runtime as number).toBeGreaterThanOrEqual(0);
      expect(Math.abs((h._timestamp as number) - Date.now() / 1000)).toBeLessThan(60);
    }

    const summary = JSON.parse(readFileSync(join(run.dir, 'summary.json'), 'utf8')) as Record<string, unknown>;
    expect(summary['train/loss']).toBe('NaN');
    expect(summary['eval/acc']).toBeCloseTo(0.4);
    expect(summary.images).toBe(12);
    expect(summary._step).toBe(5);
    expect(summary._best).toEqual({
      'train/loss': { value: 0.75, step: 3, goal: 'minimize', primary: true },
      'eval/acc': { value: 0.4, step: 4, goal: 'maximize' },
    });

    const out = run.output();
    out.line('hello\nworld\n');
    out.line('boom', 'stderr');
    out.line('10%\r50%\r100%');
    out.close();
    const lines = readFileSync(join(run.dir, 'output.log'), 'utf8').trimEnd().split('\n');
    expect(lines).toHaveLength(4);
    expect(lines.every((l) => /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z /.test(l))).toBe(true);
    expect(lines.map((l) => l.slice(25))).toEqual(['hello', 'world', 'ERROR boom', '100%']);

    const done = await run.finish('finished', { exit_code: 0, outputs: { artifacts: { model: 'out/model' } } });
    expect(done.status).toBe('finished');
    expect(done.key_metric).toBe('train/loss');
    expect(done.ended_at).toBeDefined();
    const onDisk = JSON.parse(readFileSync(join(run.dir, 'run.json'), 'utf8')) as RunRecord;
    expect(onDisk).toMatchObject({ status: 'finished', exit_code: 0, key_metric: 'train/loss', outputs: { artifacts: { model: 'out/model' } } });
  });

  it('a new handle continues the summary (best values and goals) from summary.json', async () => {
    const store = new RunStore(root, quiet);
    const run = await store.create({ name: 's', kind: 'stage' });
    run.defineMetric('loss', { goal: 'minimize' });
    run.log({ loss: 1 }, 0);
    run.log({ loss: 0.5 }, 1);
    await run.flush();
    const again = await store.open(run.id);
    again.log({ loss: 0.7 }, 2);
    again.log({ loss: 0.25 }, 3);
    again.summary({ extra: true });
    await again.flush();
    const summary = JSON.parse(readFileSync(join(run.dir, 'summary.json'), 'utf8')) as Record<string, unknown>;
    expect(summary).toMatchObject({ loss: 0.25, extra: true, _step: 3, _best: { loss: { value: 0.25, step: 3, goal: 'minimize' } } });
  });

  it('update merges meta shallowly, keeps id and created_at, drops undefined fields', async () => {
    const store = new RunStore(root, quiet);
    const run = await store.create({ name: 'p', kind: 'pipeline', meta: { a: 1, b: { x: 1 } } });
    const before = await run.read();
    const after = await run.update({ meta: { b: { y: 2 }, c: 3 }, error: 'x', id: 'zzz', created_at: '2000-01-01T00:00:00Z' });
    expect(after.meta).toEqual({ a: 1, b: { y: 2 }, c: 3 });
    expect(after.id).toBe(run.id);
    expect(after.created_at).toBe(before.created_at);
    const cleared = await run.update({ error: undefined });
    expect('error' in cleared).toBe(false);
    expect(await run.read()).toEqual(cleared);
  });

  it('rejects reserved metric names and bad steps with a usage error', async () => {
    const run = await new RunStore(root, quiet).create({ name: 's', kind: 'stage' });
    expect(() => run.log({ _step: 1 }, 0)).toThrow(RunUsageError);
    expect(() => run.log({ loss: 1 }, -1)).toThrow(/non-negative integer/);
    expect(() => run.log({ loss: 1 }, 1.5)).toThrow(RunUsageError);
    expect(() => run.summary({ _best: 1 })).toThrow(RunUsageError);
  });
});

describe('RunStore open / list', () => {
  it('opens by full id or unique prefix; errors list candidates or say none', async () => {
    let n = 0;
    const ids = ['abc00000001', 'abc00000002', 'abd00000003'];
    const store = new RunStore(root, { ...quiet, newId: () => ids[n++]! });
    for (let i = 0; i < 3; i++) await store.create({ name: `r${i}`, kind: 'stage' });
    expect((await store.open('abd')).id).toBe('abd00000003');
    expect((await store.open('abc00000001')).id).toBe('abc00000001');
    const amb = await store.open('abc').catch((e: unknown) => e);
    expect(amb).toBeInstanceOf(AmbiguousRunIdError);
    expect((amb as Error).message).toContain('abc00000001, abc00000002');
    await expect(store.open('zzz')).rejects.toBeInstanceOf(RunNotFoundError);
    await expect(store.open('../etc')).rejects.toBeInstanceOf(RunUsageError);
    expect(new RunStore('some/relative/dir', quiet).root).toBe(resolve('some/relative/dir'));
  });

  it('lists newest first and ignores non-run entries; a broken run.json is warned about and skipped', async () => {
    const warnings: string[] = [];
    const store = new RunStore(root, { env: {}, onWarning: (m) => warnings.push(m) });
    const a = await store.create({ name: 'a', kind: 'stage' });
    await new Promise((r) => setTimeout(r, 5));
    const b = await store.create({ name: 'b', kind: 'stage' });
    mkdirSync(join(root, 'not-a-run'));
    mkdirSync(join(root, '.hidden'));
    writeFileSync(join(root, 'stray.txt'), 'x');
    mkdirSync(join(root, 'broken'));
    writeFileSync(join(root, 'broken', 'run.json'), JSON.stringify({ id: 'broken', name: 'x', kind: 'stage', status: 'weird', host: 'h', created_at: new Date().toISOString(), meta: {} }));
    const list = await store.list();
    expect(list.map((r) => r.id)).toEqual([b.id, a.id]);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain(join(root, 'broken', 'run.json'));
    expect(warnings[0]).toContain("'status'");
    const err = await store.open('broken').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RunRecordError);
    expect((err as RunRecordError).field).toBe('status');
  });

  it('reports and rewrites a running run whose owner process is gone as crashed', async () => {
    const store = new RunStore(root, quiet);
    const pid = deadPid();
    const dead = await store.create({ name: 'dead', kind: 'stage', pid });
    const alive = await store.create({ name: 'alive', kind: 'stage' });
    const elsewhere = await store.create({ name: 'remote', kind: 'stage', pid, owner_host: `${hostname()}-other` });
    const finished = await store.create({ name: 'fin', kind: 'stage', pid, status: 'finished' });

    const byName = Object.fromEntries((await store.list()).map((r) => [r.name, r]));
    expect(byName.dead!.status).toBe('crashed');
    expect(byName.dead!.error).toBe(`owner process ${pid} ended without finishing the run`);
    expect(byName.dead!.ended_at).toBeDefined();
    expect(byName.alive!.status).toBe('running');
    expect(byName.remote!.status).toBe('running');
    expect(byName.fin!.status).toBe('finished');
    const onDisk = JSON.parse(readFileSync(join(dead.dir, 'run.json'), 'utf8')) as RunRecord;
    expect(onDisk.status).toBe('crashed');
    expect((await (await store.open(dead.id)).read()).status).toBe('crashed');
    expect((await alive.read()).status).toBe('running');
    expect((await elsewhere.read()).status).toBe('running');
    expect(finished.id).toBeDefined();
  });

  it('findReusable / findResumable pick the newest matching run', async () => {
    const store = new RunStore(root, quiet);
    const old = await store.create({ name: 'o', kind: 'stage', fingerprint: 'fp' });
    await old.finish('finished');
    await new Promise((r) => setTimeout(r, 5));
    const newer = await store.create({ name: 'n', kind: 'stage', fingerprint: 'fp' });
    await newer.finish('finished');
    const failedNoCkpt = await store.create({ name: 'f', kind: 'stage', fingerprint: 'fp' });
    await failedNoCkpt.finish('failed');
    await store.create({ name: 'other', kind: 'stage', fingerprint: 'fp2' }).then((r) => r.finish('finished'));
    expect((await store.findReusable('fp'))?.id).toBe(newer.id);
    expect(await store.findReusable('nope')).toBeUndefined();
    expect(await store.findResumable('fp')).toBeUndefined();

    const crashed = await store.create({ name: 'c', kind: 'stage', fingerprint: 'fp' });
    await crashed.checkpoints().save(1, async (d) => writeFileSync(join(d, 'w.bin'), 'w'));
    await crashed.finish('crashed');
    const resumedNoOwn = await store.create({ name: 'c2', kind: 'stage', fingerprint: 'fp', resumed_from: crashed.id });
    await resumedNoOwn.finish('stopped');
    // The newest stopped run has no checkpoint of its own, but continues one: it is the one to resume.
    expect((await store.findResumable('fp'))?.id).toBe(resumedNoOwn.id);
  });
});

describe('RunStore concurrency', () => {
  it('many concurrent creates get distinct ids even when the generator repeats itself', async () => {
    let n = 0;
    const pool = ['aaaaaaaa000', 'aaaaaaaa001', 'aaaaaaaa002'];
    // Every id is handed out several times: only mkdir's EEXIST keeps creators apart.
    const dupes = new RunStore(root, { ...quiet, newId: () => (n < 30 ? pool[n++ % 3]! : newRunId()) });
    const runs = await Promise.all(Array.from({ length: 40 }, (_, i) => dupes.create({ name: `r${i}`, kind: 'stage' }, { i })));
    expect(new Set(runs.map((r) => r.id)).size).toBe(40);
    const list = await dupes.list();
    expect(list).toHaveLength(40);
    for (const r of runs) {
      const rec = await r.read();
      expect(parseYaml(readFileSync(join(r.dir, 'config.yaml'), 'utf8'))).toEqual({ i: Number(rec.name.slice(1)) });
    }
  });

  it('concurrent updates of one run all land; interleaved logging to two runs stays separate', async () => {
    const store = new RunStore(root, quiet);
    const [a, b] = await Promise.all([store.create({ name: 'a', kind: 'stage' }), store.create({ name: 'b', kind: 'stage' })]);
    await Promise.all(Array.from({ length: 50 }, (_, i) => a!.update({ meta: { [`k${i}`]: i } })));
    expect(Object.keys((await a!.read()).meta)).toHaveLength(50);
    for (let s = 0; s < 100; s++) {
      a!.log({ a: s }, s);
      b!.log({ b: -s }, s);
    }
    const ha = readJsonl(join(a!.dir, 'history.jsonl'));
    const hb = readJsonl(join(b!.dir, 'history.jsonl'));
    expect(ha.map((h) => h.a)).toEqual(Array.from({ length: 100 }, (_, s) => s));
    expect(hb.every((h) => !('a' in h))).toBe(true);
    await Promise.all([a!.flush(), b!.flush()]);
  });

  it('two child processes creating runs in one store do not collide', async () => {
    const script = `
      const { RunStore } = await import(${JSON.stringify(distRuns())});
      const store = new RunStore(process.argv[1], { env: {} });
      for (let i = 0; i < 25; i++) {
        const r = await store.create({ name: process.argv[2] + i, kind: 'stage' }, { i });
        r.log({ x: i }, 0);
        await r.finish('finished');
      }`;
    const results = await Promise.all([runNode(script, [root, 'p']), runNode(script, [root, 'q'])]);
    expect(results.map((r) => r.code)).toEqual([0, 0]);
    const runs = await new RunStore(root, quiet).list();
    expect(runs).toHaveLength(50);
    expect(new Set(runs.map((r) => r.id)).size).toBe(50);
    expect(runs.every((r) => r.status === 'finished')).toBe(true);
    for (const r of runs) expect(readJsonl(join(root, r.id, 'history.jsonl'))).toHaveLength(1);
  });

  it('a process that exits without flush still leaves its summary; its run then reads as crashed', async () => {
    const script = `
      const { RunStore } = await import(${JSON.stringify(distRuns())});
      const r = await new RunStore(process.argv[1], { env: {} }).create({ name: 'quitter', kind: 'stage' });
      r.log({ loss: 1 }, 0);
      r.log({ loss: 0.5 }, 1); // within the coalescing interval: only the exit hook writes it
      process.stdout.write(r.id);`;
    const child = await runNode(script, [root]);
    expect(child.code).toBe(0);
    const summary = JSON.parse(readFileSync(join(root, child.stdout, 'summary.json'), 'utf8')) as Record<string, unknown>;
    expect(summary).toMatchObject({ loss: 0.5, _step: 1 });
    const rec = await (await new RunStore(root, quiet).open(child.stdout)).read();
    expect(rec.status).toBe('crashed');
  });
});

/** The compiled store (child processes run plain node, as users and the worker do). */
function distRuns(): string {
  const dist = join(process.cwd(), 'dist', 'src', 'core', 'runs', 'index.js');
  if (!existsSync(dist)) throw new Error(`${dist} is missing: run \`npm run build\` (npm test does it for you)`);
  return dist;
}

function runNode(script: string, args: string[]): Promise<{ code: number; stdout: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['--input-type=module', '-e', script, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let stdout = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.on('close', (code) => resolve({ code: code ?? -1, stdout }));
  });
}

describe('secrets never reach a run directory', () => {
  it('config, run.json, history, summary, output and media captions are scrubbed', async () => {
    const secret = 'hf_SeCrEt_0123456789';
    const other = 'wandb-key-abcdefghijkl';
    const store = new RunStore(root, { env: { HF_TOKEN: secret, WANDB_API_KEY: other, HOME: '/home/x' }, onWarning: () => {} });
    const run = await store.create(
      { name: 'leaky', kind: 'stage', meta: { diff: `+token = "${secret}"` } },
      { hub: { token: 'literal-token-in-config' }, note: `use ${secret} please`, list: [other] },
    );
    run.log({ [`loss_${secret}`]: 1 }, 0);
    run.summary({ msg: `saw ${secret}`, nested: { deep: [other] } });
    const out = run.output();
    out.line(`token is ${secret}`);
    out.line(`Bearer ${other}`, 'stderr');
    out.close();
    const png = onePixelPng();
    await run.media('img', png, 1, `caption ${secret}`);
    await run.update({ error: `failed with ${other}` });
    await run.finish('failed');

    const config = readFileSync(join(run.dir, 'config.yaml'), 'utf8');
    expect(config).not.toContain('literal-token-in-config');
    expect(config).toContain('<redacted>');
    let files = 0;
    const visit = (dir: string): void => {
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        const p = join(dir, e.name);
        if (e.isDirectory()) visit(p);
        else {
          files++;
          const text = readFileSync(p).toString('latin1');
          expect(text, p).not.toContain(secret);
          expect(text, p).not.toContain(other);
        }
      }
    };
    visit(run.dir);
    expect(files).toBeGreaterThanOrEqual(6);
    expect(readFileSync(join(run.dir, 'output.log'), 'utf8')).toContain('ERROR Bearer <redacted>');
    expect(readFileSync(join(run.dir, 'summary.json'), 'utf8')).toContain('saw <redacted>');
  });
});

/** Smallest valid PNG: 1×1 grey, built by hand (signature, IHDR, IDAT, IEND with CRCs). */
function onePixelPng(): Uint8Array {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf: Buffer) => {
    let c = 0xffffffff;
    for (const b of buf) c = crcTable[(c ^ b) & 0xff]! ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type: string, data: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const c = Buffer.alloc(4);
    c.writeUInt32BE(crc(td));
    return Buffer.concat([len, td, c]);
  };
  const ihdr = Buffer.from([0, 0, 0, 1, 0, 0, 0, 1, 8, 0, 0, 0, 0]);
  // zlib stream of the single scanline [filter 0, value 0x80], stored uncompressed.
  const raw = Buffer.from([0, 0x80]);
  const adler = Buffer.alloc(4);
  adler.writeUInt32BE(130 * 65536 + 129); // adler32 of [0, 0x80]: b = 130, a = 129
  const idat = Buffer.concat([Buffer.from([0x78, 0x01, 0x01, 0x02, 0x00, 0xfd, 0xff]), raw, adler]);
  return new Uint8Array(Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('IDAT', idat), chunk('IEND', Buffer.alloc(0))]));
}
