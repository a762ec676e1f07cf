/**
 * A host's shared bucket (`bucket: gs://bucket/prefix`): the host itself writes each running stage's run
 * directory to `<bucket>/runs/<run id>/` as it goes (remote-agent's supervisor, `gcloud storage rsync`), so
 * what a lost host wrote since the orchestrator's last copy is not lost with it. Before an attempt starts, the
 * orchestrator looks there (with the user's own `gcloud storage`) for a checkpoint newer than the local
 * store's, and when one verifies against its manifest, brings it and the history up to it into the local run
 * directory, which then goes to the host as usual.
 */
import { mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { runCheckpoints } from '../runs/checkpoints.js';
import { gcloudMessage } from './tpu.js';

export function bucketRunUrl(bucket: string, runId: string): string {
  return `${bucket}/runs/${runId}`;
}

async function gcloudStorage(args: string[]): Promise<{ code: number | undefined; stdout: string; stderr: string }> {
  const r = await execa('gcloud', ['storage', ...args], { reject: false, stdin: 'ignore', env: { CLOUDSDK_CORE_DISABLE_PROMPTS: '1' } });
  return { code: r.exitCode, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/** The checkpoint steps under `<run url>/checkpoints/`, newest first (none when the run has nothing there yet). */
async function bucketSteps(runUrl: string): Promise<number[]> {
  const r = await gcloudStorage(['ls', `${runUrl}/checkpoints/`]);
  if (r.code !== 0) {
    if (/matched no objects|not found|No URLs matched/i.test(r.stderr)) return [];
    throw new Error(`gcloud storage ls ${runUrl}/checkpoints/ failed: ${gcloudMessage(r.stderr)}`);
  }
  const steps = r.stdout
    .split('\n')
    .map((l) => /\/checkpoints\/step-(\d+)\/$/.exec(l.trim()))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]));
  return [...new Set(steps)].sort((a, b) => b - a);
}

/** History lines up to `step` (a line cut by the upload goes). */
function historyUpTo(text: string, step: number): string {
  return text
    .split('\n')
    .filter((l) => {
      try {
        const s = (JSON.parse(l) as { _step?: unknown })._step;
        return typeof s === 'number' && s <= step;
      } catch {
        return false;
      }
    })
    .map((l) => `${l}\n`)
    .join('');
}

/**
 * Brings the bucket's newest checkpoint of `runId` into `runDir` when it is newer than the local store's and
 * verifies, with the history up to it. Returns what it did, for the log: undefined when the local store is as
 * new; throws when the bucket cannot be read.
 */
export async function restoreFromBucket(bucket: string, runId: string, runDir: string, warn: (m: string) => void): Promise<{ step: number; local?: number } | undefined> {
  const runUrl = bucketRunUrl(bucket, runId);
  const own = { runId, dir: runDir, parent: async () => undefined };
  const local = (await runCheckpoints(own, warn).latest())?.step;
  const newer = (await bucketSteps(runUrl)).filter((s) => local === undefined || s > local);
  if (newer.length === 0) return undefined;
  // beside the checkpoints (same file system: a rename brings one in); `.tmp-` names are never pushed or pulled
  await mkdir(join(runDir, 'checkpoints'), { recursive: true });
  const staging = await mkdtemp(join(runDir, 'checkpoints', `.tmp-bucket-${process.pid}-`));
  try {
    for (const step of newer) {
      // that checkpoint and the history in one call (gcloud 528's cp and cat of one object crash against an
      // endpoint override, a bytes/str mix-up in apitools' FinalizeTransferUrl; rsync takes another path)
      const wanted = String.raw`(?!checkpoints/step-${step}/|history\.jsonl$).*`;
      const r = await gcloudStorage(['rsync', '--recursive', `--exclude=${wanted}`, runUrl, staging]);
      if (r.code !== 0) throw new Error(`gcloud storage rsync of ${runUrl}/checkpoints/step-${step} failed: ${gcloudMessage(r.stderr)}`);
      // a checkpoint whose upload was cut short fails its manifest: the next older one is tried
      const verified = await runCheckpoints({ runId, dir: staging, parent: async () => undefined }, warn).latest();
      const dest = join(staging, 'checkpoints', `step-${step}`);
      if (verified?.step !== step) {
        await rm(dest, { recursive: true, force: true });
        continue;
      }
      const history = historyUpTo(await readFile(join(staging, 'history.jsonl'), 'utf8').catch(() => ''), step);
      await rm(join(runDir, 'checkpoints', `step-${step}`), { recursive: true, force: true });
      await rename(dest, join(runDir, 'checkpoints', `step-${step}`));
      await writeFile(join(staging, 'history.kept'), history);
      await rename(join(staging, 'history.kept'), join(runDir, 'history.jsonl'));
      return { step, ...(local === undefined ? {} : { local }) };
    }
    return undefined;
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}
