import { describe, it, expect } from 'vitest';
import { fixMojibake, normalizeCaption, pickCaption, processCaption } from '../../src/data/captions.js';
import type { CaptionOptions } from '../../src/data/captions.js';
import { SeededRng, hashSeed } from '../../src/data/rng.js';

const base: CaptionOptions = { fields: ['txt'], lowercase: false, maxChars: 0, blankProb: 0 };

describe('captions', () => {
  it('repairs UTF-8 read as cp1252/latin-1 and leaves correct text alone', () => {
    const garbled = Buffer.from('café – don’t', 'utf8').toString('latin1');
    expect(fixMojibake('cafÃ©')).toBe('café');
    expect(fixMojibake('donâ€™t')).toBe('don’t');
    expect(fixMojibake(garbled.replace('\u0080', '€').replace('\u0093', '“').replace('\u0099', '™'))).toBe('café – don’t');
    expect(fixMojibake('Ãlvaro, a real name')).toBe('Ãlvaro, a real name');
    expect(fixMojibake('naïve café')).toBe('naïve café');
  });

  it('normalises unicode (NFKC), entities and whitespace; optional lowercase and length limit', () => {
    expect(normalizeCaption('  ﬁne  ＡＢＣ\tdog\n\u200bcat ')).toBe('fine ABC dog cat');
    expect(normalizeCaption('Tom &amp; Jerry &#39;s')).toBe("Tom & Jerry 's");
    expect(normalizeCaption('A Red Fox', { lowercase: true, maxChars: 0 })).toBe('a red fox');
    expect(normalizeCaption('one two three four', { lowercase: false, maxChars: 10 })).toBe('one two');
  });

  it('chooses the first non-empty configured field', () => {
    const item = { caption: '  ', meta: { title: '', description: 'A description', tags: ['red', 'fox'] } };
    expect(pickCaption(item, { ...base, fields: ['txt', 'title', 'description'] })).toBe('A description');
    expect(pickCaption(item, { ...base, fields: ['tags'] })).toBe('red, fox');
    expect(pickCaption(item, { ...base, fields: ['txt', 'title'] })).toBeUndefined();
  });

  it('blanks captions with the configured probability, deterministically per seed', () => {
    const run = (seed: number) => {
      let blanks = 0;
      const flags: boolean[] = [];
      for (let i = 0; i < 4000; i++) {
        const r = processCaption({ caption: 'a dog', meta: {} }, { ...base, blankProb: 0.2 }, new SeededRng(hashSeed(seed, i)));
        flags.push(r?.blanked ?? false);
        if (r?.blanked) blanks++;
        if (r?.blanked) expect(r.caption).toBe('');
      }
      return { blanks, flags };
    };
    const a = run(1);
    expect(a.blanks / 4000).toBeGreaterThan(0.17);
    expect(a.blanks / 4000).toBeLessThan(0.23);
    expect(run(1).flags).toEqual(a.flags);
    expect(run(2).flags).not.toEqual(a.flags);
  });
});
