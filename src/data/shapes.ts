/**
 * Synthetic captioned shapes: one crisp shape (no anti-aliasing, palette colours only) on a plain or
 * coloured background, fully determined by a seed. Images are meant to be judged by their pixels, so
 * the JSON of each sample records the exact RGB values and the shape's bounding box.
 */
import sharp from 'sharp';
import { DataError } from './errors.js';
import type { WordGroups } from './negatives.js';
import { SeededRng, hashSeed } from './rng.js';
import { WebdatasetShardWriter } from './webdataset-writer.js';

export const SHAPES = ['circle', 'square', 'triangle', 'star', 'hexagon', 'heart', 'cross', 'diamond'] as const;
export type ShapeName = (typeof SHAPES)[number];

/** Palette chosen so every pair differs by at least ~100 in some channel (pixel judging stays unambiguous). */
export const COLOURS = {
  red: [220, 30, 30],
  orange: [250, 140, 0],
  yellow: [250, 230, 30],
  green: [30, 170, 50],
  cyan: [0, 200, 220],
  blue: [30, 70, 230],
  purple: [140, 40, 190],
  pink: [250, 120, 200],
  white: [250, 250, 250],
  black: [15, 15, 15],
} as const satisfies Record<string, readonly [number, number, number]>;
export type ColourName = keyof typeof COLOURS;
export const COLOUR_NAMES = Object.keys(COLOURS) as ColourName[];

/** The "plain" background: a neutral grey that is not a shape colour. */
export const PLAIN_BACKGROUND: readonly [number, number, number] = [128, 128, 128];

export const POSITIONS = ['left', 'right', 'top', 'bottom', 'centre'] as const;
export type PositionName = (typeof POSITIONS)[number];

export const SIZES = ['small', 'medium', 'large'] as const;
export type SizeName = (typeof SIZES)[number];

/** Side of the shape's bounding box as a fraction of the image side. */
export const SIZE_FRACTION: Record<SizeName, number> = { small: 0.3, medium: 0.45, large: 0.6 };

/** Words a caption may use for each position (tests and evaluators accept any of them). */
export const POSITION_WORDS: Record<PositionName, readonly string[]> = {
  left: ['left'],
  right: ['right'],
  top: ['top', 'upper'],
  bottom: ['bottom', 'lower'],
  centre: ['centre', 'center', 'middle'],
};

/**
 * The attribute words of shapes captions as hard-negative word groups (negatives.ts): shapes, colours (object
 * and background alike, so exchanging the two is a negative too), sizes, and positions with their synonyms.
 */
export const SHAPES_WORD_GROUPS: WordGroups = [SHAPES, COLOUR_NAMES, SIZES, POSITIONS.map((p) => POSITION_WORDS[p])];

export interface ShapeAttributes {
  shape: ShapeName;
  colour: ColourName;
  position: PositionName;
  size: SizeName;
  /** A palette colour, or `plain` for the neutral grey. */
  background: ColourName | 'plain';
}

export interface HeldoutCombo {
  shape: ShapeName;
  colour: ColourName;
}

/** Default held-out shape×colour pairs: a fixed handful that covers several shapes and colours. */
export const DEFAULT_HELDOUT_COMBOS: readonly HeldoutCombo[] = [
  { shape: 'star', colour: 'green' },
  { shape: 'heart', colour: 'blue' },
  { shape: 'triangle', colour: 'yellow' },
  { shape: 'hexagon', colour: 'red' },
];

const MARGIN = 0.04;

/** Samples rendered ahead of the writer (sharp renders on its own threads). */
const RENDER_AHEAD = 4;

/** Pixel bounding box `[x0, y0, x1, y1)` of the shape in an image of side `px`. */
export function shapeBox(attrs: Pick<ShapeAttributes, 'position' | 'size'>, px: number): [number, number, number, number] {
  const side = Math.round(SIZE_FRACTION[attrs.size] * px);
  const margin = Math.round(MARGIN * px);
  const mid = Math.round((px - side) / 2);
  let x = mid;
  let y = mid;
  if (attrs.position === 'left') x = margin;
  if (attrs.position === 'right') x = px - margin - side;
  if (attrs.position === 'top') y = margin;
  if (attrs.position === 'bottom') y = px - margin - side;
  return [x, y, x + side, y + side];
}

function polygon(points: Array<[number, number]>): string {
  return `<polygon points="${points.map(([x, y]) => `${x.toFixed(3)},${y.toFixed(3)}`).join(' ')}"/>`;
}

/** SVG element for a shape filling the box (x, y, side). */
function shapeElement(shape: ShapeName, x: number, y: number, s: number): string {
  const cx = x + s / 2;
  const cy = y + s / 2;
  const r = s / 2;
  switch (shape) {
    case 'circle':
      return `<circle cx="${cx}" cy="${cy}" r="${r}"/>`;
    case 'square':
      return `<rect x="${x}" y="${y}" width="${s}" height="${s}"/>`;
    case 'triangle':
      return polygon([
        [cx, y],
        [x + s, y + s],
        [x, y + s],
      ]);
    case 'diamond':
      return polygon([
        [cx, y],
        [x + s, cy],
        [cx, y + s],
        [x, cy],
      ]);
    case 'hexagon': {
      const pts: Array<[number, number]> = [];
      for (let i = 0; i < 6; i++) pts.push([cx + r * Math.cos((Math.PI / 3) * i), cy + r * Math.sin((Math.PI / 3) * i)]);
      return polygon(pts);
    }
    case 'star': {
      const pts: Array<[number, number]> = [];
      for (let i = 0; i < 10; i++) {
        const rr = i % 2 === 0 ? r : r * 0.45;
        const a = -Math.PI / 2 + (Math.PI / 5) * i;
        pts.push([cx + rr * Math.cos(a), cy + 0.08 * s + rr * Math.sin(a)]);
      }
      return polygon(pts);
    }
    case 'cross': {
      const t = s / 3;
      return `<rect x="${x + t}" y="${y}" width="${t}" height="${s}"/><rect x="${x}" y="${y + t}" width="${s}" height="${t}"/>`;
    }
    case 'heart': {
      // Classic parametric heart, scaled so its extent (32 × ~29 units) fills the box width.
      const pts: Array<[number, number]> = [];
      for (let i = 0; i < 64; i++) {
        const t = (2 * Math.PI * i) / 64;
        const hx = 16 * Math.sin(t) ** 3;
        const hy = 13 * Math.cos(t) - 5 * Math.cos(2 * t) - 2 * Math.cos(3 * t) - Math.cos(4 * t);
        pts.push([cx + (hx / 32) * s, cy - ((hy + 2.5) / 32) * s]);
      }
      return polygon(pts);
    }
  }
}

function rgb(c: readonly [number, number, number]): string {
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

export function backgroundRgb(bg: ShapeAttributes['background']): readonly [number, number, number] {
  return bg === 'plain' ? PLAIN_BACKGROUND : COLOURS[bg];
}

/** SVG source of one sample; crispEdges turns anti-aliasing off so every pixel is a palette colour. */
export function shapeSvg(attrs: ShapeAttributes, px: number): string {
  const [x0, y0, x1] = shapeBox(attrs, px);
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${px}" height="${px}" viewBox="0 0 ${px} ${px}" shape-rendering="crispEdges">` +
    `<rect x="0" y="0" width="${px}" height="${px}" fill="${rgb(backgroundRgb(attrs.background))}"/>` +
    `<g fill="${rgb(COLOURS[attrs.colour])}">${shapeElement(attrs.shape, x0, y0, x1 - x0)}</g></svg>`
  );
}

export interface RenderedShape {
  png: Uint8Array;
  /** Fraction of the bounding box's pixels painted in the shape colour. */
  coverage: number;
}

/** Renders one sample to PNG and measures how much of its box the shape covers. */
export async function renderShape(attrs: ShapeAttributes, px: number): Promise<RenderedShape> {
  const raw = await sharp(Buffer.from(shapeSvg(attrs, px))).removeAlpha().raw().toBuffer();
  const [x0, y0, x1, y1] = shapeBox(attrs, px);
  const [r, g, b] = COLOURS[attrs.colour];
  let hit = 0;
  for (let y = y0; y < y1; y++) {
    for (let x = x0; x < x1; x++) {
      const i = (y * px + x) * 3;
      if (raw[i] === r && raw[i + 1] === g && raw[i + 2] === b) hit++;
    }
  }
  const png = await sharp(raw, { raw: { width: px, height: px, channels: 3 } })
    .png({ compressionLevel: 9, adaptiveFiltering: false, palette: false })
    .toBuffer();
  return { png: new Uint8Array(png.buffer, png.byteOffset, png.byteLength), coverage: hit / ((x1 - x0) * (y1 - y0)) };
}

const POSITION_PHRASES: Record<PositionName, readonly string[]> = {
  left: ['on the left', 'to the left', 'on the left side'],
  right: ['on the right', 'to the right', 'on the right side'],
  top: ['at the top', 'near the top', 'in the upper part'],
  bottom: ['at the bottom', 'near the bottom', 'in the lower part'],
  centre: ['in the centre', 'in the middle', 'in the center'],
};
const POSITION_SHORT: Record<PositionName, readonly string[]> = {
  left: ['left side', 'left'],
  right: ['right side', 'right'],
  top: ['top', 'upper half'],
  bottom: ['bottom', 'lower half'],
  centre: ['centre', 'middle', 'center'],
};

/** Varied natural-English caption; every template names size, colour, shape, position and a coloured background. */
export function shapeCaption(a: ShapeAttributes, rng: SeededRng): string {
  const pos = rng.pick(POSITION_PHRASES[a.position]);
  const short = rng.pick(POSITION_SHORT[a.position]);
  const plain = a.background === 'plain';
  const bgTail = plain ? rng.pick(['', '', ' on a plain background', ' on grey']) : rng.pick([` on a ${a.background} background`, ` on ${a.background}`, ` against a ${a.background} background`]);
  const templates: Array<() => string> = [
    () => `a ${a.size} ${a.colour} ${a.shape} ${pos}${bgTail}`,
    () => `${a.size} ${a.colour} ${a.shape}, ${short}${plain ? '' : `, on ${a.background}`}`,
    () => (plain ? `a ${a.size} ${a.colour} ${a.shape} ${pos} of a plain grey background` : `a ${a.size} ${a.colour} ${a.shape} ${pos} of a ${a.background} background`),
    () => (plain ? `a plain background with a ${a.size} ${a.colour} ${a.shape} ${pos}` : `a ${a.background} background with a ${a.size} ${a.colour} ${a.shape} ${pos}`),
    () => `there is a ${a.size} ${a.colour} ${a.shape} ${pos}${bgTail}`,
    () => `${a.size} ${a.shape} in ${a.colour}, ${short}${plain ? '' : `, ${a.background} background`}`,
    () => `a ${a.colour} ${a.shape}, ${a.size}, placed ${pos}${bgTail}`,
  ];
  return rng.pick(templates)();
}

export interface ShapesOptions {
  /** Training samples. */
  count: number;
  /** Held-out samples (drawn only from the held-out combinations). */
  heldoutCount: number;
  /** Image side in pixels. */
  size: number;
  seed: number;
  samplesPerShard: number;
  heldoutCombos: readonly HeldoutCombo[];
  /** Probability of the plain grey background (else a second palette colour). */
  plainBackgroundProb: number;
}

export function isHeldout(a: Pick<ShapeAttributes, 'shape' | 'colour'>, combos: readonly HeldoutCombo[]): boolean {
  return combos.some((c) => c.shape === a.shape && c.colour === a.colour);
}

function sampleRest(rng: SeededRng, shape: ShapeName, colour: ColourName, plainProb: number): ShapeAttributes {
  const position = rng.pick(POSITIONS);
  const size = rng.pick(SIZES);
  let background: ShapeAttributes['background'] = 'plain';
  if (rng.next() >= plainProb) background = rng.pick(COLOUR_NAMES.filter((c) => c !== colour));
  return { shape, colour, position, size, background };
}

/** Draws training attributes, rejecting held-out shape×colour pairs. */
export function sampleTrainAttributes(rng: SeededRng, combos: readonly HeldoutCombo[], plainProb: number): ShapeAttributes {
  for (;;) {
    const shape = rng.pick(SHAPES);
    const colour = rng.pick(COLOUR_NAMES);
    if (!isHeldout({ shape, colour }, combos)) return sampleRest(rng, shape, colour, plainProb);
  }
}

export function sampleHeldoutAttributes(rng: SeededRng, combos: readonly HeldoutCombo[], plainProb: number): ShapeAttributes {
  const c = rng.pick(combos);
  return sampleRest(rng, c.shape, c.colour, plainProb);
}

export interface ShapesSplitResult {
  /** Brace pattern of the shards, e.g. `/out/train/train-{00000..00003}.tar`. */
  pattern: string;
  shards: string[];
  count: number;
}

export interface ShapesResult {
  train: ShapesSplitResult;
  heldout: ShapesSplitResult;
  /** Samples per shape / colour / position / size / background in train (for the summary). */
  histogram: Record<string, Record<string, number>>;
  aborted: boolean;
}

export interface ShapesHooks {
  signal?: AbortSignal;
  /** Called after each written sample. */
  onItem?: () => void;
}

export class ShapesConfigError extends DataError {}

export function validateShapesOptions(o: ShapesOptions): void {
  if (!Number.isInteger(o.size) || o.size < 16) throw new ShapesConfigError(`shapes-data: size must be an integer ≥ 16 px (got ${o.size}); smaller images make shapes ambiguous`);
  if (o.heldoutCount > 0 && o.heldoutCombos.length === 0) throw new ShapesConfigError('shapes-data: heldout_count > 0 needs at least one heldout_combos entry');
  const allPairs = SHAPES.length * COLOUR_NAMES.length;
  const distinct = new Set(o.heldoutCombos.map((c) => `${c.shape}/${c.colour}`)).size;
  if (distinct >= allPairs) throw new ShapesConfigError('shapes-data: heldout_combos hold out every shape×colour pair; nothing is left for train');
}

/**
 * Generates `train/` and `heldout/` webdataset shards under `outDir`. Train and held-out draw from
 * separate seeded streams, so changing `count` leaves the held-out set unchanged.
 */
export async function generateShapes(outDir: string, o: ShapesOptions, hooks: ShapesHooks = {}): Promise<ShapesResult> {
  validateShapesOptions(o);
  const histogram: Record<string, Record<string, number>> = { shape: {}, colour: {}, position: {}, size: {}, background: {} };
  const splits: Array<{ name: 'train' | 'heldout'; n: number; rng: SeededRng; draw: (r: SeededRng) => ShapeAttributes }> = [
    { name: 'train', n: o.count, rng: new SeededRng(hashSeed(o.seed, 1)), draw: (r) => sampleTrainAttributes(r, o.heldoutCombos, o.plainBackgroundProb) },
    { name: 'heldout', n: o.heldoutCount, rng: new SeededRng(hashSeed(o.seed, 2)), draw: (r) => sampleHeldoutAttributes(r, o.heldoutCombos, o.plainBackgroundProb) },
  ];
  const results: Partial<Record<'train' | 'heldout', ShapesSplitResult>> = {};
  let aborted = false;
  for (const split of splits) {
    const writer = new WebdatasetShardWriter({ dir: `${outDir}/${split.name}`, prefix: split.name, samplesPerShard: o.samplesPerShard });
    let written = 0;
    // Attributes and captions are drawn in order (that fixes the bytes); rendering runs a few ahead in
    // parallel through sharp's thread pool, and samples are written back in order.
    const inFlight: Array<{ attrs: ShapeAttributes; caption: string; render: Promise<RenderedShape> }> = [];
    let drawn = 0;
    const fill = (): void => {
      while (inFlight.length < RENDER_AHEAD && drawn < split.n) {
        const attrs = split.draw(split.rng);
        const caption = shapeCaption(attrs, split.rng);
        const render = renderShape(attrs, o.size);
        render.catch(() => undefined); // awaited below; avoids an unhandled rejection if we stop early
        inFlight.push({ attrs, caption, render });
        drawn++;
      }
    };
    try {
      for (let i = 0; i < split.n; i++) {
        if (hooks.signal?.aborted) {
          aborted = true;
          break;
        }
        fill();
        const next = inFlight.shift() as { attrs: ShapeAttributes; caption: string; render: Promise<RenderedShape> };
        const { attrs, caption } = next;
        const { png, coverage } = await next.render;
        const key = String(i).padStart(5, '0');
        const meta = {
          key,
          split: split.name,
          caption,
          ...attrs,
          colour_rgb: [...COLOURS[attrs.colour]],
          background_rgb: [...backgroundRgb(attrs.background)],
          bbox: shapeBox(attrs, o.size),
          coverage: Math.round(coverage * 1e4) / 1e4,
          width: o.size,
          height: o.size,
        };
        await writer.add({ key, files: { png, txt: caption, json: JSON.stringify(meta) } });
        written++;
        if (split.name === 'train') {
          for (const k of ['shape', 'colour', 'position', 'size', 'background'] as const) {
            const h = histogram[k] as Record<string, number>;
            h[attrs[k]] = (h[attrs[k]] ?? 0) + 1;
          }
        }
        hooks.onItem?.();
      }
    } catch (err) {
      await writer.abort();
      throw err;
    } finally {
      await Promise.allSettled(inFlight.map((f) => f.render));
    }
    const { pattern, shards } = await writer.finish();
    results[split.name] = { pattern, shards, count: written };
    if (aborted) break;
  }
  return {
    train: results.train ?? { pattern: '', shards: [], count: 0 },
    heldout: results.heldout ?? { pattern: '', shards: [], count: 0 },
    histogram,
    aborted,
  };
}
