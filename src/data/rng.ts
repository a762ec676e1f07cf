/**
 * A small seeded PRNG (mulberry32) whose whole state is one uint32, so it can be saved in a checkpoint
 * or a loader position as a plain number and restored exactly. Not cryptographic; only reproducible.
 */
export class SeededRng {
  private s: number;

  constructor(seed: number) {
    // Mix the seed once so that neighbouring seeds (0, 1, 2…) give unrelated streams.
    this.s = hashSeed(seed);
  }

  /** Rebuilds a generator from a value returned by `state()`. */
  static fromState(state: number): SeededRng {
    const rng = new SeededRng(0);
    rng.s = state >>> 0;
    return rng;
  }

  state(): number {
    return this.s >>> 0;
  }

  /** Uniform float in [0, 1). */
  next(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new RangeError('SeededRng.pick: empty list');
    return items[this.int(items.length)] as T;
  }

  /** Fisher–Yates shuffle in place; returns the same array. */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const tmp = items[i] as T;
      items[i] = items[j] as T;
      items[j] = tmp;
    }
    return items;
  }
}

/** Deterministic 32-bit mix of any number of integers (seed derivation: seed, epoch, window…). */
export function hashSeed(...parts: number[]): number {
  let h = 0x811c9dc5;
  for (const p of parts) {
    // Split into two 32-bit halves so seeds above 2^32 still matter.
    const lo = p >>> 0;
    const hi = Math.floor(p / 4294967296) >>> 0;
    for (const v of [lo, hi]) {
      h = Math.imul(h ^ v, 0x01000193) >>> 0;
      h ^= h >>> 15;
      h = Math.imul(h, 0x2c1b3c6d) >>> 0;
      h ^= h >>> 12;
    }
  }
  return h >>> 0;
}
