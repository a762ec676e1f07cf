import { describe, it, expect } from 'vitest';
import sharp from 'sharp';
import {
  COLOUR_NAMES,
  DEFAULT_HELDOUT_COMBOS,
  POSITIONS,
  SHAPES,
  SIZES,
  SeededRng,
  renderShape,
  sampleHeldoutAttributes,
  sampleTrainAttributes,
  shapeCaption,
  ShapesJudgeError,
  createShapesJudge,
  judgeShapesImage,
  parseShapesCaption,
  scoreShapes,
} from '../../src/data/index.js';
import type { AskedAttributes, ShapeAttributes, ShapesJudgement, ShapesJudge } from '../../src/data/index.js';
import * as shapesPlugin from '../../plugins/shapes-data/index.js';

const ATTRS = ['shape', 'colour', 'position', 'size', 'background'] as const;

async function pixelsOf(a: ShapeAttributes, px: number): Promise<Uint8Array> {
  const { png } = await renderShape(a, px);
  const raw = await sharp(png).removeAlpha().raw().toBuffer();
  return new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength);
}

/** Every shape × colour × position × size, once on the plain grey and once on a palette colour (cycled). */
function fullGrid(): ShapeAttributes[] {
  const out: ShapeAttributes[] = [];
  let k = 0;
  for (const shape of SHAPES) {
    for (const colour of COLOUR_NAMES) {
      const others = COLOUR_NAMES.filter((c) => c !== colour);
      for (const position of POSITIONS) {
        for (const size of SIZES) {
          out.push({ shape, colour, position, size, background: 'plain' });
          out.push({ shape, colour, position, size, background: others[k++ % others.length] as ShapeAttributes['background'] });
        }
      }
    }
  }
  return out;
}

function sample(n: number, seed: number): ShapeAttributes[] {
  const rng = new SeededRng(seed);
  return Array.from({ length: n }, () => sampleTrainAttributes(rng, [], 0.5));
}

interface Accuracy {
  acc: Record<(typeof ATTRS)[number], number>;
  wrong: string[];
}

async function accuracy(judge: ShapesJudge, cases: ShapeAttributes[], degrade?: (p: Uint8Array, i: number) => Uint8Array): Promise<Accuracy> {
  const right = { shape: 0, colour: 0, position: 0, size: 0, background: 0 };
  const wrong: string[] = [];
  for (let i = 0; i < cases.length; i += 64) {
    const batch = cases.slice(i, i + 64);
    const pixels = await Promise.all(batch.map((a) => pixelsOf(a, judge.size)));
    batch.forEach((a, b) => {
      const j = judge.judge(degrade ? degrade(pixels[b] as Uint8Array, i + b) : (pixels[b] as Uint8Array));
      for (const k of ATTRS) {
        if (j[k].value === a[k]) right[k]++;
        else if (wrong.length < 20) wrong.push(`${JSON.stringify(a)} → ${k} ${j[k].guess} (${j[k].confidence.toFixed(2)})`);
      }
    });
  }
  const acc = Object.fromEntries(ATTRS.map((k) => [k, right[k] / cases.length])) as Accuracy['acc'];
  return { acc, wrong };
}

function report(label: string, n: number, a: Accuracy): void {
  console.log(`shapes judge, ${label} (${n} images): ${ATTRS.map((k) => `${k} ${(100 * a.acc[k]).toFixed(2)}%`).join(', ')}`);
  if (a.wrong.length > 0) console.log(`  first misses:\n  ${a.wrong.join('\n  ')}`);
}

describe('judgeShapesImage on the generator’s renders', () => {
  it('reads every shape, colour, position and size at 32 px, on plain and coloured backgrounds (≥ 99% per attribute)', async () => {
    const judge = await createShapesJudge(32);
    const cases = fullGrid();
    expect(cases.length).toBe(8 * 10 * 5 * 3 * 2);
    const a = await accuracy(judge, cases);
    report('32 px full grid', cases.length, a);
    for (const k of ATTRS) expect(a.acc[k], k).toBeGreaterThanOrEqual(0.99);
  });

  it.each([16, 64])('reads a sample at %i px (≥ 99% per attribute)', async (px) => {
    const judge = await createShapesJudge(px);
    const cases = sample(px === 16 ? 400 : 160, px);
    const a = await accuracy(judge, cases);
    report(`${px} px sample`, cases.length, a);
    for (const k of ATTRS) expect(a.acc[k], k).toBeGreaterThanOrEqual(0.99);
  });

  it('is confident and sure on a clean render, and reads float pixels in [-1, 1] the same as bytes', async () => {
    const a: ShapeAttributes = { shape: 'star', colour: 'green', position: 'top', size: 'small', background: 'pink' };
    const bytes = await pixelsOf(a, 32);
    const j = await judgeShapesImage(bytes, 32);
    expect(j.unsure).toBe(false);
    expect({ shape: j.shape.value, colour: j.colour.value, position: j.position.value, size: j.size.value, background: j.background.value }).toEqual({ ...a });
    for (const k of ATTRS) expect(j[k].confidence, k).toBeGreaterThan(0.9);
    expect(j.fit).toBeCloseTo(1, 6);
    const floats = Float32Array.from(bytes, (v) => (v * 2) / 255 - 1);
    expect(await judgeShapesImage(floats, 32)).toEqual(j);
  });

  it('survives blur and noise (a stand-in for VQGAN reconstructions): ≥ 95% per attribute at 32 px', async () => {
    const judge = await createShapesJudge(32);
    const px = 32;
    const degrade = (p: Uint8Array, seed: number): Uint8Array => {
      const rng = new SeededRng(1000 + seed);
      const out = new Uint8Array(p.length);
      for (let y = 0; y < px; y++) {
        for (let x = 0; x < px; x++) {
          for (let c = 0; c < 3; c++) {
            // The 3×3 neighbourhood mean (edges two pixels wide, all blends), plus uniform noise of ±12.
            let s = 0;
            let m = 0;
            for (let yy = Math.max(0, y - 1); yy <= Math.min(px - 1, y + 1); yy++) for (let xx = Math.max(0, x - 1); xx <= Math.min(px - 1, x + 1); xx++) (s += p[(yy * px + xx) * 3 + c] as number), m++;
            const v = s / m + (rng.next() - 0.5) * 24;
            out[(y * px + x) * 3 + c] = Math.max(0, Math.min(255, Math.round(v)));
          }
        }
      }
      return out;
    };
    const cases = sample(300, 5);
    const a = await accuracy(judge, cases, degrade);
    report('32 px blurred + noisy', cases.length, a);
    for (const k of ATTRS) expect(a.acc[k], k).toBeGreaterThanOrEqual(0.95);
  });
});

describe('judgeShapesImage says unsure', () => {
  it('on pure noise (bytes and floats)', async () => {
    const judge = await createShapesJudge(32);
    const rng = new SeededRng(3);
    for (let i = 0; i < 20; i++) {
      const bytes = Uint8Array.from({ length: 32 * 32 * 3 }, () => rng.int(256));
      const floats = Float32Array.from({ length: 32 * 32 * 3 }, () => rng.next() * 2 - 1);
      for (const j of [judge.judge(bytes), judge.judge(floats)]) {
        expect(j.unsure).toBe(true);
        expect(j.shape.value).toBeNull();
        expect(j.background.value).toBeNull();
      }
    }
  });

  it('on a blank image: the background is read, there is no shape', async () => {
    const judge = await createShapesJudge(32);
    for (const rgb of [[128, 128, 128], [30, 70, 230]]) {
      const blank = Uint8Array.from({ length: 32 * 32 * 3 }, (_, i) => rgb[i % 3] as number);
      const j = judge.judge(blank);
      expect(j.unsure).toBe(true);
      expect(j.background.value).toBe(rgb[0] === 128 ? 'plain' : 'blue');
      for (const k of ['shape', 'colour', 'position', 'size'] as const) {
        expect(j[k].value, k).toBeNull();
        expect(j[k].confidence, k).toBe(0);
      }
    }
  });

  it('is what the shapes-data plugin exports', () => {
    expect(shapesPlugin.judgeShapesImage).toBe(judgeShapesImage);
    expect(shapesPlugin.parseShapesCaption).toBe(parseShapesCaption);
    expect(shapesPlugin.scoreShapes).toBe(scoreShapes);
  });

  it('refuses pixels of the wrong length and sizes below 16 px with a ShapesJudgeError', async () => {
    await expect(judgeShapesImage(new Uint8Array(10), 32)).rejects.toThrow(ShapesJudgeError);
    await expect(judgeShapesImage(new Uint8Array(8 * 8 * 3), 8)).rejects.toThrow(/≥ 16/);
  });
});

describe('parseShapesCaption', () => {
  it('recovers exactly the attributes of every caption shapeCaption writes, over many seeds', () => {
    const skeletons = new Set<string>();
    for (let seed = 0; seed < 4000; seed++) {
      const rng = new SeededRng(seed);
      const a = seed % 4 === 0 ? sampleHeldoutAttributes(rng, DEFAULT_HELDOUT_COMBOS, 0.5) : sampleTrainAttributes(rng, DEFAULT_HELDOUT_COMBOS, 0.5);
      const caption = shapeCaption(a, rng);
      const text = seed % 3 === 0 ? caption.toUpperCase() + '.' : caption;
      const mentionsBackground = a.background !== 'plain' || /plain|grey/.test(caption);
      const expected: AskedAttributes = { shape: a.shape, colour: a.colour, position: a.position, size: a.size, ...(mentionsBackground ? { background: a.background } : {}) };
      expect(parseShapesCaption(text), caption).toEqual(expected);
      // The phrasing with the attribute words taken out: which templates and position phrases were seen.
      skeletons.add(caption.replace(new RegExp(`\\b(${[a.shape, a.colour, a.size, a.background].join('|')})\\b`, 'g'), '_').replace(/\b(left|right|top|bottom|upper|lower|centre|center|middle)\b/, 'P'));
    }
    // 7 templates × position phrases × background tails: 138 distinct phrasings over these seeds.
    expect(skeletons.size).toBeGreaterThanOrEqual(120);
  });

  it('reads case, punctuation, plurals, synonyms and every position word; ignores unknown words', () => {
    expect(parseShapesCaption('A SMALL Red CIRCLE -- on the LEFT!!')).toEqual({ size: 'small', colour: 'red', shape: 'circle', position: 'left' });
    expect(parseShapesCaption('two big fluffy orange crosses, lower half, against a Black background')).toEqual({ size: 'large', colour: 'orange', shape: 'cross', position: 'bottom', background: 'black' });
    expect(parseShapesCaption('a cyan background with a tiny pink heart in the upper part')).toEqual({ background: 'cyan', size: 'small', colour: 'pink', shape: 'heart', position: 'top' });
    expect(parseShapesCaption('medium hexagon in purple, center, white background')).toEqual({ size: 'medium', shape: 'hexagon', colour: 'purple', position: 'centre', background: 'white' });
    expect(parseShapesCaption('a yellow diamond in the middle on a gray background')).toEqual({ colour: 'yellow', shape: 'diamond', position: 'centre', background: 'plain' });
    expect(parseShapesCaption('green star on blue')).toEqual({ colour: 'green', shape: 'star', background: 'blue' });
    expect(parseShapesCaption('a square to the right')).toEqual({ shape: 'square', position: 'right' });
    expect(parseShapesCaption('a triangle at the top')).toEqual({ shape: 'triangle', position: 'top' });
    expect(parseShapesCaption('hello, world')).toEqual({});
    expect(parseShapesCaption('')).toEqual({});
  });
});

describe('scoreShapes', () => {
  const judged = (v: Partial<Record<(typeof ATTRS)[number], string | null>>): ShapesJudgement => {
    const one = (k: (typeof ATTRS)[number]): { value: never; confidence: number; guess: never } => ({ value: (v[k] ?? null) as never, confidence: v[k] ? 1 : 0, guess: (v[k] ?? null) as never });
    return { background: one('background'), colour: one('colour'), shape: one('shape'), position: one('position'), size: one('size'), unsure: ATTRS.some((k) => !v[k]), fit: 1 };
  };

  it('counts only the attributes each prompt asks for; unsure is wrong', () => {
    const js = [
      judged({ shape: 'circle', colour: 'red', position: 'left', size: 'small', background: 'plain' }),
      judged({ shape: 'square', colour: 'red', position: 'top', size: 'large', background: 'blue' }),
      judged({ shape: null, colour: 'green', position: 'centre', size: 'medium', background: 'plain' }),
      judged({ shape: 'star', colour: 'pink', position: 'right', size: 'small', background: 'plain' }),
    ];
    const asked: AskedAttributes[] = [
      { shape: 'circle', colour: 'red', position: 'left', size: 'small' }, // all right
      { shape: 'circle', colour: 'red', background: 'blue' }, // shape wrong
      { shape: 'star', colour: 'green' }, // shape unsure
      {}, // asks nothing: not counted
    ];
    const s = scoreShapes(js, asked);
    expect(s.count).toBe(3);
    expect(s.asked).toEqual({ shape: 3, colour: 3, position: 1, size: 1, background: 1 });
    expect(s.attr_acc).toEqual({ shape: 1 / 3, colour: 1, position: 1, size: 1, background: 1 });
    expect(s.all_correct).toBeCloseTo(1 / 3, 12);
  });

  it('gives null, not NaN, when nothing is asked, and refuses unpaired lists', () => {
    const s = scoreShapes([judged({})], [{}]);
    expect(s.attr_acc).toEqual({ shape: null, colour: null, position: null, size: null, background: null });
    expect(s.all_correct).toBeNull();
    expect(() => scoreShapes([judged({})], [])).toThrow(ShapesJudgeError);
  });
});
