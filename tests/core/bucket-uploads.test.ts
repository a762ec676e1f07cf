/**
 * The order of a host's bucket upload (remote-agent's bucketUploads), with a `gcloud` on PATH that records its
 * arguments: the history goes first, then only the checkpoints that were complete when the upload began. The
 * stand-in publishes a checkpoint while the first rsync runs, as a training step would; it must wait for the
 * next upload, whose history then covers it.
 */
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { bucketUploads } from '../../src/core/executors/remote-agent.js';

let dir: string;
let savedPath: string | undefined;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'md-bucket-uploads-'));
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  // one JSON line of arguments per call; the first call also publishes checkpoint step-3
  writeFileSync(
    join(bin, 'gcloud'),
    `#!/bin/sh
node -e 'process.stdout.write(JSON.stringify(process.argv.slice(1)) + "\\n")' -- "$@" >> "${join(dir, 'calls.jsonl')}"
[ -e "${join(dir, 'published')}" ] || { mkdir -p "${join(dir, 'run', 'checkpoints', 'step-3')}"; touch "${join(dir, 'published')}"; }
`,
  );
  chmodSync(join(bin, 'gcloud'), 0o755);
  savedPath = process.env.PATH;
  process.env.PATH = `${bin}:${savedPath ?? ''}`;
  for (const step of [1, 2]) mkdirSync(join(dir, 'run', 'checkpoints', `step-${step}`), { recursive: true });
  mkdirSync(join(dir, 'run', 'checkpoints', '.tmp-123-abc'));
  writeFileSync(join(dir, 'run', 'history.jsonl'), '{"_step":1}\n{"_step":2}\n');
});
afterEach(() => {
  process.env.PATH = savedPath;
});

/** What gcloud's rsync would leave out of `exclude`: re.match against the path relative to the source. */
function excluded(exclude: string, path: string): boolean {
  return new RegExp(`^(?:${exclude})`).test(path);
}

it('sends the history first, then the checkpoints complete when the upload began; a newer one waits for the next upload', async () => {
  const said: string[] = [];
  const uploads = bucketUploads(join(dir, 'run'), 'gs://b/runs/r1', 3600, {}, (l) => said.push(l));
  await uploads.final(); // one upload (the interval never fires in this test)
  await uploads.final(); // and the next
  const calls = readFileSync(join(dir, 'calls.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as string[]);
  expect(said).toEqual([]);
  expect(calls.map((c) => c.slice(-2))).toEqual([
    [join(dir, 'run'), 'gs://b/runs/r1'],
    [join(dir, 'run', 'checkpoints'), 'gs://b/runs/r1/checkpoints'],
    [join(dir, 'run'), 'gs://b/runs/r1'],
    [join(dir, 'run', 'checkpoints'), 'gs://b/runs/r1/checkpoints'],
  ]);
  const exclude = (c: string[]) => c.find((a) => a.startsWith('--exclude='))!.slice('--exclude='.length);
  // everything but the checkpoints (and the agent's own files) in the first rsync of each upload
  expect(excluded(exclude(calls[0]!), 'history.jsonl')).toBe(false);
  expect(excluded(exclude(calls[0]!), 'checkpoints/step-1/count.txt')).toBe(true);
  expect(excluded(exclude(calls[0]!), '.worker/stream.jsonl')).toBe(true);
  // step-3 appeared during the first upload's history rsync: not in its checkpoint rsync, in the next one's
  for (const [call, want] of [[calls[1]!, [false, false, true]], [calls[3]!, [false, false, false]]] as const) {
    expect(['step-1/count.txt', 'step-2/count.txt', 'step-3/count.txt'].map((p) => excluded(exclude(call), p))).toEqual(want);
    expect(excluded(exclude(call), '.tmp-123-abc/count.txt')).toBe(true);
    expect(excluded(exclude(call), 'step-10/count.txt')).toBe(true); // step-1 is not a prefix of step-10
  }
});
