import { describe, it, expect } from 'vitest';
import { NegativesError, WordSwapNegatives } from '../../src/data/negatives.js';
import { SHAPES_WORD_GROUPS } from '../../src/data/shapes.js';
import { parseShapesCaption } from '../../src/data/shapes-judge.js';
import { Rng } from '../../src/ml/rng.js';

/** A uniform source that returns the given draws in turn. */
const draws = (...xs: number[]) => {
  let i = 0;
  return () => xs[i++ % xs.length] as number;
};

describe('WordSwapNegatives', () => {
  const groups = [['red', 'green', 'blue'], ['circle', 'square'], [['top', 'upper'], ['bottom', 'lower']]];

  it('replaces one grouped word by a word of another entry, keeping the rest of the caption byte for byte', () => {
    const n = new WordSwapNegatives(groups);
    // edits in order: replace red, replace circle, replace top, exchange — none here (one word per group)
    expect(n.negative('A red circle, at the top!', draws(0, 0))).toBe('A green circle, at the top!');
    expect(n.negative('A red circle, at the top!', draws(0.4, 0))).toBe('A red square, at the top!');
    expect(n.negative('A red circle, at the top!', draws(0.9, 0))).toBe('A red circle, at the bottom!');
  });

  it('never swaps a word for its synonym or for a word the caption already uses', () => {
    const n = new WordSwapNegatives(groups);
    const rng = new Rng(3);
    for (let i = 0; i < 200; i++) {
      const neg = n.negative('a red circle in the upper half on blue', () => rng.uniform()) as string;
      expect(neg).not.toMatch(/\btop\b/);
      expect(neg).not.toBe('a red circle in the upper half on blue');
      expect(neg).not.toBe('a blue circle in the upper half on blue'); // the caption's other colour is not a replacement
    }
  });

  it('exchanges two words of one group that mean different things (colour ↔ background)', () => {
    const n = new WordSwapNegatives(groups);
    // edits: replace red, replace circle, replace blue, exchange red/blue — the last one is drawn
    expect(n.negative('a red circle on blue', draws(0.99))).toBe('a blue circle on red');
    const seen = new Set<string>();
    const rng = new Rng(1);
    for (let i = 0; i < 400; i++) seen.add(n.negative('a red circle on blue', () => rng.uniform()) as string);
    expect([...seen].sort()).toEqual(['a blue circle on red', 'a green circle on blue', 'a red circle on green', 'a red square on blue'].sort());
  });

  it('returns null when no word of the caption is in a group, and matches whole words only', () => {
    const n = new WordSwapNegatives(groups);
    expect(n.negative('a cat on a mat', draws(0))).toBeNull();
    expect(n.negative('reddish circles', draws(0))).toBeNull();
  });

  it('refuses groups that cannot make a negative, naming the group and the word', () => {
    expect(() => new WordSwapNegatives([])).toThrow(NegativesError);
    expect(() => new WordSwapNegatives([['red']])).toThrow(/word group 1 has 1 entry/);
    expect(() => new WordSwapNegatives([['red', 'blue'], ['blue', 'square']])).toThrow(/"blue" is in word group 1 and word group 2/);
    expect(() => new WordSwapNegatives([['red', 'dark blue']])).toThrow(/"dark blue" is not a single word/);
  });

  it("the shapes groups give every shapes caption a negative that changes what it asks", () => {
    const n = new WordSwapNegatives(SHAPES_WORD_GROUPS);
    const rng = new Rng(7);
    for (const caption of ['a small green star on the left on blue', 'medium heart in blue, upper half, red background', 'a large red hexagon in the middle of a plain grey background']) {
      const asked = parseShapesCaption(caption);
      for (let i = 0; i < 50; i++) {
        const neg = n.negative(caption, () => rng.uniform()) as string;
        expect(parseShapesCaption(neg)).not.toEqual(asked);
      }
    }
  });
});
