/**
 * One owner per stage fingerprint at a time: `<runs>/.locks/<fingerprint>.json` holds { pid, host, what, since }.
 * It is created whole with link(2), which fails when the file exists, so two processes never both own it. The lock
 * is advisory (only minidalle honours it). An owner on this host whose process is gone is stale and is taken over;
 * an owner on another host cannot be checked from here and is reported by name.
 */
import { randomBytes } from 'node:crypto';
import { linkSync, mkdirSync, readFileSync, rmdirSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { isErrnoCode } from './fs-util.js';

export interface LockOwner {
  pid: number;
  host: string;
  /** What holds it (`<experiment>/<stage>`, the pipeline run id). */
  what: string;
  since: string;
}

/** A takeover left behind by a process that died inside it (a few file operations) is this old at most. */
const TAKEOVER_STALE_MS = 10_000;

const held = new Set<string>();
let exitHook = false;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return !isErrnoCode(err, 'ESRCH');
  }
}

function readOwner(file: string): LockOwner | undefined {
  try {
    const o = JSON.parse(readFileSync(file, 'utf8')) as Partial<LockOwner>;
    if (typeof o.pid === 'number' && typeof o.host === 'string') return { pid: o.pid, host: o.host, what: String(o.what ?? '?'), since: String(o.since ?? '?') };
  } catch (err) {
    if (isErrnoCode(err, 'ENOENT')) return undefined;
  }
  // Files are written whole before they are linked into place, so an unreadable one was damaged by hand.
  return { pid: -1, host: '?', what: 'an unreadable lock file', since: '?' };
}

export class FingerprintLock {
  constructor(
    readonly file: string,
    readonly owner: LockOwner,
  ) {}

  /** Gives the lock up (only if this process still holds it). */
  release(): void {
    held.delete(this.file);
    const cur = readOwner(this.file);
    if (cur?.pid === process.pid && cur.host === this.owner.host) unlinkSync(this.file);
  }
}

export type LockAttempt = { lock: FingerprintLock } | { owner: LockOwner; file: string };

/** Takes the lock of `fingerprint` in the store at `root`, or says who holds it. A stale owner's lock is taken over. */
export function tryLockFingerprint(root: string, fingerprint: string, what: string): LockAttempt {
  const dir = join(root, '.locks');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${fingerprint}.json`);
  const me: LockOwner = { pid: process.pid, host: hostname(), what, since: new Date().toISOString() };
  for (let attempt = 0; attempt < 3; attempt++) {
    const tmp = join(dir, `.${fingerprint}.${process.pid}-${randomBytes(4).toString('hex')}`);
    writeFileSync(tmp, `${JSON.stringify(me)}\n`);
    try {
      linkSync(tmp, file);
      if (!exitHook) {
        exitHook = true;
        // A process that exits (even by process.exit) gives its locks up; a killed one leaves them stale.
        process.once('exit', () => {
          for (const f of held) {
            try {
              if (readOwner(f)?.pid === process.pid) unlinkSync(f);
            } catch {
              // nothing more can be done at exit
            }
          }
        });
      }
      held.add(file);
      return { lock: new FingerprintLock(file, me) };
    } catch (err) {
      if (!isErrnoCode(err, 'EEXIST')) throw err;
    } finally {
      unlinkSync(tmp);
    }
    const owner = readOwner(file);
    if (!owner) continue; // released meanwhile
    const stale = owner.host === me.host && owner.pid !== process.pid && (owner.pid <= 0 || !alive(owner.pid));
    if (!stale) return { owner, file };
    takeOver(file, owner);
  }
  const owner = readOwner(file);
  return { owner: owner ?? { pid: -1, host: '?', what: '?', since: '?' }, file };
}

/** Removes a stale lock, under a takeover mutex so that two processes never remove each other's fresh lock. */
function takeOver(file: string, stale: LockOwner): void {
  const mutex = `${file}.takeover`;
  try {
    mkdirSync(mutex);
  } catch (err) {
    if (!isErrnoCode(err, 'EEXIST')) throw err;
    try {
      if (Date.now() - statSync(mutex).mtimeMs > TAKEOVER_STALE_MS) rmdirSync(mutex);
    } catch {
      // someone else finished it
    }
    return;
  }
  try {
    const cur = readOwner(file);
    if (cur && cur.pid === stale.pid && cur.host === stale.host && cur.since === stale.since) unlinkSync(file);
  } finally {
    rmdirSync(mutex);
  }
}
