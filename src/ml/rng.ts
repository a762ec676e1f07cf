/**
 * Seeded, checkpointable random numbers (xoshiro128** seeded through splitmix32).
 *
 * Why our own generator instead of tf.random*: tfjs seeds differ between backends and there is no way to
 * read a generator's state back. Everything random in training (init, dropout, data order) draws from an
 * `Rng`, whose 4×uint32 state goes into the checkpoint, so a resumed run continues the exact same stream.
 */

/** JSON-serialisable generator state (four unsigned 32-bit words). */
export interface RngState {
  algorithm: 'xoshiro128**';
  s: [number, number, number, number];
}

export class RngStateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RngStateError';
  }
}

/** splitmix32: spreads a small integer seed over full 32-bit words (xoshiro must not start all-zero). */
function splitmix32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x9e3779b9) >>> 0;
    let z = a;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

const TWO_POW_32 = 4294967296;

export class Rng {
  private s0 = 0;
  private s1 = 0;
  private s2 = 0;
  private s3 = 0;

  /** `seed` is any integer; the low and high 32 bits both matter for seeds up to 2^53. */
  constructor(seed: number) {
    if (!Number.isSafeInteger(seed)) throw new RngStateError(`Rng seed must be a safe integer, got ${seed}`);
    const hi = Math.floor(seed / TWO_POW_32) >>> 0;
    const sm = splitmix32((seed >>> 0) ^ Math.imul(hi, 0x27d4eb2d));
    this.s0 = sm();
    this.s1 = sm();
    this.s2 = sm();
    this.s3 = sm();
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  /** Restores a generator from `state()` output (e.g. read back from a checkpoint's JSON). */
  static fromState(state: RngState): Rng {
    const r = new Rng(0);
    r.restore(state);
    return r;
  }

  /** Next unsigned 32-bit integer. */
  nextUint32(): number {
    const s0 = this.s0, s1 = this.s1, s2 = this.s2, s3 = this.s3;
    const result = Math.imul(rotl(Math.imul(s1, 5) >>> 0, 7), 9) >>> 0;
    const t = (s1 << 9) >>> 0;
    let n2 = (s2 ^ s0) >>> 0;
    let n3 = (s3 ^ s1) >>> 0;
    const n1 = (s1 ^ n2) >>> 0;
    const n0 = (s0 ^ n3) >>> 0;
    n2 = (n2 ^ t) >>> 0;
    n3 = rotl(n3, 11);
    this.s0 = n0;
    this.s1 = n1;
    this.s2 = n2;
    this.s3 = n3;
    return result;
  }

  /** Uniform float in [0, 1) with 53 random bits. */
  uniform(): number {
    const hi = this.nextUint32() >>> 5; // 27 bits
    const lo = this.nextUint32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** Uniform integer in [0, n) without modulo bias. */
  int(n: number): number {
    if (!Number.isInteger(n) || n <= 0 || n > TWO_POW_32) throw new RngStateError(`Rng.int(n) needs 0 < n ≤ 2^32, got ${n}`);
    const limit = TWO_POW_32 - (TWO_POW_32 % n);
    for (;;) {
      const x = this.nextUint32();
      if (x < limit) return x % n;
    }
  }

  /** Standard normal sample (Box–Muller; one of the pair is dropped so the state stays 4 words). */
  normal(mean = 0, std = 1): number {
    const u1 = 1 - this.uniform(); // (0, 1]: log is finite
    const u2 = this.uniform();
    return mean + std * Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  }

  /** Fills `out` with float32 uniforms in [lo, hi); uses 24-bit draws (one word per value) for speed. */
  fillUniform(out: Float32Array, lo = 0, hi = 1): Float32Array {
    const span = hi - lo;
    for (let i = 0; i < out.length; i++) out[i] = lo + span * ((this.nextUint32() >>> 8) / 16777216);
    return out;
  }

  /** Fills `out` with normal samples, using both values of each Box–Muller pair. */
  fillNormal(out: Float32Array, mean = 0, std = 1): Float32Array {
    for (let i = 0; i < out.length; i += 2) {
      const u1 = 1 - (this.nextUint32() >>> 8) / 16777216; // (0, 1]
      const u2 = (this.nextUint32() >>> 8) / 16777216;
      const r = Math.sqrt(-2 * Math.log(u1));
      out[i] = mean + std * r * Math.cos(2 * Math.PI * u2);
      if (i + 1 < out.length) out[i + 1] = mean + std * r * Math.sin(2 * Math.PI * u2);
    }
    return out;
  }

  /** A 31-bit seed for APIs that take one (tf.random* ops, sharp, …). Advances this stream. */
  seed(): number {
    return this.nextUint32() >>> 1;
  }

  /**
   * An independent child generator (e.g. one for dropout, one for data order) that advances this
   * stream by four words, so the parent's checkpointed state still determines every child.
   */
  split(): Rng {
    const child = new Rng(0);
    child.s0 = this.nextUint32();
    child.s1 = this.nextUint32();
    child.s2 = this.nextUint32();
    child.s3 = this.nextUint32();
    if ((child.s0 | child.s1 | child.s2 | child.s3) === 0) child.s0 = 1;
    return child;
  }

  /** Fisher–Yates shuffle in place. */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const tmp = items[i] as T;
      items[i] = items[j] as T;
      items[j] = tmp;
    }
    return items;
  }

  state(): RngState {
    return { algorithm: 'xoshiro128**', s: [this.s0, this.s1, this.s2, this.s3] };
  }

  restore(state: RngState): void {
    const s = (state as Partial<RngState> | null)?.s;
    if (state?.algorithm !== 'xoshiro128**' || !Array.isArray(s) || s.length !== 4) {
      throw new RngStateError(`RNG state must be {"algorithm":"xoshiro128**","s":[4 uint32]}, got ${JSON.stringify(state)}`);
    }
    for (const w of s) {
      if (!Number.isInteger(w) || w < 0 || w >= TWO_POW_32) {
        throw new RngStateError(`RNG state words must be integers in [0, 2^32), got ${JSON.stringify(s)}`);
      }
    }
    if ((s[0] | s[1] | s[2] | s[3]) === 0) throw new RngStateError('RNG state is all zeros, which xoshiro cannot leave');
    [this.s0, this.s1, this.s2, this.s3] = s;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}
