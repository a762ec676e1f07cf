import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CheckpointError, RunStore, RunUsageError, type CheckpointManifest } from '../../src/core/runs/index.js';

let root: string;
let warnings: string[];
let store: RunStore;
beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'minidalle-ckpt-'));
  warnings = [];
  store = new RunStore(root, { env: {}, onWarning: (m) => warnings.push(m) });
});
afterEach(() => {
  rmSync(root, { recursive: true, force: true });
});

/** Writes `weights.bin` (bytes derived from `seed`) and `state/opt.json`. */
function writer(seed: number) {
  return async (dir: string) => {
    await writeFile(join(dir, 'weights.bin'), Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 31 + seed) & 0xff)));
    mkdirSync(join(dir, 'state'));
    await writeFile(join(dir, 'state', 'opt.json'), JSON.stringify({ seed }));
  };
}

function sha(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

function flipByte(path: string, at: number): void {
  const buf = readFileSync(path);
  buf[at] = buf[at]! ^ 0xff;
  writeFileSync(path, buf);
}

describe('checkpoint save', () => {
  it('writes step-<N>/ with a manifest holding sha256 and size of every file', async () => {
    const run = await store.create({ name: 'r', kind: 'stage' });
    const info = await run.checkpoints().save(7, writer(1), { note: 'hi' });
    expect(info).toEqual({ step: 7, dir: join(run.dir, 'checkpoints', 'step-7'), meta: { note: 'hi' }, runId: run.id });
    const manifest = JSON.parse(readFileSync(join(info.dir, 'manifest.json'), 'utf8')) as CheckpointManifest;
    expect(manifest.step).toBe(7);
    expect(manifest.meta).toEqual({ note: 'hi' });
    expect(Number.isNaN(Date.parse(manifest.created_at))).toBe(false);
    expect(manifest.files).toEqual({
      'state/opt.json': { sha256: sha(join(info.dir, 'state', 'opt.json')), size: 10 },
      'weights.bin': { sha256: sha(join(info.dir, 'weights.bin')), size: 4096 },
    });
    expect(readdirSync(join(run.dir, 'checkpoints'))).toEqual(['step-7']);
  });

  it('a save that throws mid-write leaves nothing visible and rethrows', async () => {
    const run = await store.create({ name: 'r', kind: 'stage' });
    const cps = run.checkpoints();
    const boom = new Error('disk full (simulated)');
    await expect(
      cps.save(3, async (dir) => {
        await writeFile(join(dir, 'weights.bin'), 'partial');
        throw boom;
      }),
    ).rejects.toBe(boom);
    expect(readdirSync(join(run.dir, 'checkpoints'))).toEqual([]);
    expect(await cps.latest()).toBeUndefined();
    expect(await cps.list()).toEqual([]);
  });

  it('refuses a file named manifest.json and bad steps', async () => {
    const run = await store.create({ name: 'r', kind: 'stage' });
    const cps = run.checkpoints();
    await expect(cps.save(1, async (d) => writeFile(join(d, 'manifest.json'), '{}'))).rejects.toBeInstanceOf(CheckpointError);
    await expect(cps.save(-1, writer(0))).rejects.toBeInstanceOf(RunUsageError);
    await expect(cps.save(1.5, writer(0))).rejects.toBeInstanceOf(RunUsageError);
    expect(readdirSync(join(run.dir, 'checkpoints'))).toEqual([]);
  });

  it('saving an existing step replaces it whole', async () => {
    const run = await store.create({ name: 'r', kind: 'stage' });
    const cps = run.checkpoints();
    await cps.save(5, writer(1), { v: 1 });
    await cps.save(5, async (d) => writeFile(join(d, 'only.bin'), 'new'), { v: 2 });
    expect(readdirSync(join(run.dir, 'checkpoints'))).toEqual(['step-5']);
    expect(readdirSync(join(run.dir, 'checkpoints', 'step-5')).sort()).toEqual(['manifest.json', 'only.bin']);
    expect(await cps.latest()).toMatchObject({ step: 5, meta: { v: 2 } });
  });

  it('leftover temp dirs are never listed and are removed on the next save; a set-aside checkpoint is restored', async () => {
    const run = await store.create({ name: 'r', kind: 'stage' });
    await run.checkpoints().save(4, writer(4));
    const ck = join(run.dir, 'checkpoints');
    // A crash mid-write, and a crash between "rename old aside" and "rename new in" of step 4.
    mkdirSync(join(ck, '.tmp-99999-deadbeef'));
    writeFileSync(join(ck, '.tmp-99999-deadbeef', 'weights.bin'), 'half');
    const { renameSync } = await import('node:fs');
    renameSync(join(ck, 'step-4'), join(ck, '.tmp-replaced-step-4-abcdef'));

    const fresh = (await store.open(run.id)).checkpoints();
    expect(await fresh.list()).toEqual([]);
    expect(await fresh.latest()).toBeUndefined();
    await fresh.save(6, writer(6));
    expect(readdirSync(ck).sort()).toEqual(['step-4', 'step-6']);
    expect((await fresh.list()).map((c) => c.step)).toEqual([4, 6]);
    expect(warnings).toEqual([]);
  });

  it('prune keeps the newest N of this run only', async () => {
    const parent = await store.create({ name: 'p', kind: 'stage' });
    await parent.checkpoints().save(1, writer(1));
    const child = await store.create({ name: 'c', kind: 'stage', resumed_from: parent.id });
    const cps = child.checkpoints();
    for (const s of [2, 10, 3]) await cps.save(s, writer(s));
    await cps.prune(2);
    expect(readdirSync(join(child.dir, 'checkpoints')).sort()).toEqual(['step-10', 'step-3']);
    expect((await cps.list()).map((c) => [c.runId, c.step])).toEqual([[parent.id, 1], [child.id, 3], [child.id, 10]]);
    await expect(cps.prune(-1)).rejects.toBeInstanceOf(RunUsageError);
  });
});

describe('checkpoint verification', () => {
  it('latest() skips a checkpoint with a flipped byte, warns, and returns the previous good one', async () => {
    const run = await store.create({ name: 'r', kind: 'stage' });
    const cps = run.checkpoints();
    await cps.save(1, writer(1), { n: 1 });
    await cps.save(2, writer(2), { n: 2 });
    expect(await cps.latest()).toMatchObject({ step: 2, meta: { n: 2 } });
    expect(warnings).toEqual([]);

    const bad = join(run.dir, 'checkpoints', 'step-2');
    flipByte(join(bad, 'weights.bin'), 1234);
    const got = await cps.latest();
    expect(got).toEqual({ step: 1, dir: join(run.dir, 'checkpoints', 'step-1'), meta: { n: 1 }, runId: run.id });
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain(bad);
    expect(warnings[0]).toContain("'weights.bin' fails its sha256 check");

    // The only checkpoint corrupt too: nothing is returned rather than a bad one.
    flipByte(join(run.dir, 'checkpoints', 'step-1', 'state', 'opt.json'), 0);
    expect(await cps.latest()).toBeUndefined();
  });

  it.each([
    ['a missing file', (d: string) => rmSync(join(d, 'weights.bin')), 'is missing'],
    ['an extra file', (d: string) => writeFileSync(join(d, 'extra.bin'), 'x'), 'not in the manifest'],
    ['a truncated file', (d: string) => writeFileSync(join(d, 'weights.bin'), 'short'), 'bytes, manifest says'],
    ['a missing manifest', (d: string) => rmSync(join(d, 'manifest.json')), 'missing'],
    ['a manifest for another step', (d: string) => {
      const m = JSON.parse(readFileSync(join(d, 'manifest.json'), 'utf8')) as CheckpointManifest;
      writeFileSync(join(d, 'manifest.json'), JSON.stringify({ ...m, step: 99 }));
    }, "field 'step' is 99"],
  ])('rejects %s', async (_what, damage, message) => {
    const run = await store.create({ name: 'r', kind: 'stage' });
    const cps = run.checkpoints();
    await cps.save(1, writer(1));
    await cps.save(2, writer(2));
    damage(join(run.dir, 'checkpoints', 'step-2'));
    expect((await cps.latest())?.step).toBe(1);
    expect(warnings.join('\n')).toContain(message);
  });

  it('the onWarning option of checkpoints() overrides the store default', async () => {
    const run = await store.create({ name: 'r', kind: 'stage' });
    const mine: string[] = [];
    const cps = run.checkpoints({ onWarning: (m) => mine.push(m) });
    await cps.save(1, writer(1));
    flipByte(join(run.dir, 'checkpoints', 'step-1', 'weights.bin'), 0);
    expect(await cps.latest()).toBeUndefined();
    expect(mine).toHaveLength(1);
    expect(warnings).toEqual([]);
  });
});

describe('resumed_from lineage', () => {
  it('latest() searches this run, then the runs it resumed from, newest first', async () => {
    const a = await store.create({ name: 'a', kind: 'stage' });
    await a.checkpoints().save(1, writer(1));
    await a.checkpoints().save(2, writer(2));
    await a.finish('crashed');
    const b = await store.create({ name: 'b', kind: 'stage', resumed_from: a.id });
    const c = await store.create({ name: 'c', kind: 'stage', resumed_from: b.id });
    const cc = c.checkpoints();
    expect(await cc.latest()).toMatchObject({ step: 2, runId: a.id, dir: join(a.dir, 'checkpoints', 'step-2') });

    await b.checkpoints().save(3, writer(3));
    expect(await cc.latest()).toMatchObject({ step: 3, runId: b.id });
    await cc.save(4, writer(4));
    expect(await cc.latest()).toMatchObject({ step: 4, runId: c.id });
    expect((await cc.list()).map((x) => [x.runId, x.step])).toEqual([[a.id, 1], [a.id, 2], [b.id, 3], [c.id, 4]]);

    // Corrupt the newest two: the search falls back along the chain.
    flipByte(join(c.dir, 'checkpoints', 'step-4', 'weights.bin'), 7);
    flipByte(join(b.dir, 'checkpoints', 'step-3', 'weights.bin'), 7);
    expect(await cc.latest()).toMatchObject({ step: 2, runId: a.id });
    expect(warnings).toHaveLength(2);
  });

  it('stops at a missing ancestor or a loop, with a warning', async () => {
    const a = await store.create({ name: 'a', kind: 'stage', resumed_from: 'gone0000000' });
    await a.checkpoints().save(1, writer(1));
    const b = await store.create({ name: 'b', kind: 'stage', resumed_from: a.id });
    expect((await b.checkpoints().latest())?.runId).toBe(a.id);
    expect(warnings.some((w) => w.includes('gone0000000'))).toBe(true);

    warnings.length = 0;
    await a.update({ resumed_from: b.id });
    expect((await b.checkpoints().latest())?.runId).toBe(a.id);
    expect(warnings.some((w) => w.includes('loops'))).toBe(true);
  });

  it('a checkpoint dir is only ever created by rename (no partial step dir during write)', async () => {
    const run = await store.create({ name: 'r', kind: 'stage' });
    const cps = run.checkpoints();
    let seenDuringWrite: string[] = [];
    await cps.save(9, async (dir) => {
      await writer(9)(dir);
      seenDuringWrite = readdirSync(join(run.dir, 'checkpoints')).filter((n) => !n.startsWith('.'));
    });
    expect(seenDuringWrite).toEqual([]);
    expect(existsSync(join(run.dir, 'checkpoints', 'step-9', 'manifest.json'))).toBe(true);
  });
});
