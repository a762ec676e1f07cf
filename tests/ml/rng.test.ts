import { describe, expect, it } from 'vitest';
import { Rng, RngStateError } from '../../src/ml/rng.js';

describe('Rng', () => {
  it('same seed gives the same stream, different seeds differ', () => {
    const a = new Rng(42), b = new Rng(42), c = new Rng(43);
    const xs = Array.from({ length: 8 }, () => a.nextUint32());
    expect(Array.from({ length: 8 }, () => b.nextUint32())).toEqual(xs);
    expect(Array.from({ length: 8 }, () => c.nextUint32())).not.toEqual(xs);
    expect(new Rng(2 ** 40).nextUint32()).not.toBe(new Rng(0).nextUint32());
  });

  it('state()/restore() resumes exactly, through JSON', () => {
    const a = new Rng(7);
    for (let i = 0; i < 13; i++) a.normal();
    const saved = JSON.parse(JSON.stringify(a.state()));
    const next = [a.uniform(), a.normal(), a.int(10), ...a.fillNormal(new Float32Array(5))];
    const b = Rng.fromState(saved);
    expect([b.uniform(), b.normal(), b.int(10), ...b.fillNormal(new Float32Array(5))]).toEqual(next);
  });

  it('refuses malformed state', () => {
    expect(() => new Rng(1).restore({ algorithm: 'xoshiro128**', s: [0, 0, 0, 0] })).toThrow(RngStateError);
    expect(() => new Rng(1).restore({ algorithm: 'xoshiro128**', s: [1, 2, 3] as unknown as [number, number, number, number] })).toThrow(/4 uint32/);
    expect(() => new Rng(1).restore({ algorithm: 'xoshiro128**', s: [1, 2, 3, 2 ** 32] })).toThrow(/\[0, 2\^32\)/);
  });

  it('uniform/normal have the right moments and ranges', () => {
    const r = new Rng(3);
    const n = 20000;
    const u = r.fillUniform(new Float32Array(n));
    const z = r.fillNormal(new Float32Array(n), 1, 2);
    const mean = (a: Float32Array) => a.reduce((s, x) => s + x, 0) / a.length;
    const variance = (a: Float32Array) => { const m = mean(a); return a.reduce((s, x) => s + (x - m) ** 2, 0) / a.length; };
    expect(Math.min(...u)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...u)).toBeLessThan(1);
    expect(mean(u)).toBeCloseTo(0.5, 1);
    expect(mean(z)).toBeCloseTo(1, 1);
    expect(variance(z)).toBeGreaterThan(3.8);
    expect(variance(z)).toBeLessThan(4.2);
    const counts = new Array(5).fill(0);
    for (let i = 0; i < 5000; i++) counts[r.int(5)]++;
    for (const c of counts) expect(Math.abs(c - 1000)).toBeLessThan(150);
  });

  it('split() children are independent of each other and determined by the parent', () => {
    const p1 = new Rng(9), p2 = new Rng(9);
    const c1 = p1.split(), d1 = p1.split();
    const c2 = p2.split();
    expect(c1.nextUint32()).toBe(c2.nextUint32());
    expect(d1.state()).not.toEqual(c1.state());
    expect(p1.nextUint32()).not.toBe(p2.nextUint32()); // p1 advanced by two splits, p2 by one
  });

  it('shuffle is a permutation and reproducible', () => {
    const a = new Rng(5).shuffle([...Array(20).keys()]);
    expect([...a].sort((x, y) => x - y)).toEqual([...Array(20).keys()]);
    expect(new Rng(5).shuffle([...Array(20).keys()])).toEqual(a);
    expect(a).not.toEqual([...Array(20).keys()]);
  });
});
