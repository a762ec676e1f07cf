import { randomInt } from 'node:crypto';

const TIME_CHARS = 8;
const RAND_CHARS = 3;
const RAND_SPACE = 36 ** RAND_CHARS; // 46656

let lastMs = -1;
let lastRand = 0;

/**
 * A short run id, unique and sortable by creation time: 8 base36 characters of the millisecond timestamp
 * followed by 3 base36 characters. Within one process ids are strictly increasing: a second id in the same
 * millisecond increments the previous suffix (as ULID's monotonic mode), and when the suffix space is used up
 * the timestamp part moves on by one millisecond. Across processes the store's `mkdir` (which fails on an
 * existing directory) settles the rare collision, so ids are sortable to the millisecond.
 */
export function newRunId(now: number = Date.now()): string {
  let ms = Math.max(now, lastMs);
  let rand: number;
  if (ms === lastMs) {
    rand = lastRand + 1;
    if (rand >= RAND_SPACE) {
      ms += 1;
      rand = randomInt(RAND_SPACE / 2);
    }
  } else {
    // Start in the lower half so many ids in one millisecond rarely spill into the next.
    rand = randomInt(RAND_SPACE / 2);
  }
  lastMs = ms;
  lastRand = rand;
  return ms.toString(36).padStart(TIME_CHARS, '0').slice(-TIME_CHARS) + rand.toString(36).padStart(RAND_CHARS, '0');
}

/** Whether a directory name looks like a run id (11 lower-case base36 characters). */
export function isRunId(name: string): boolean {
  return /^[0-9a-z]{11}$/.test(name);
}
