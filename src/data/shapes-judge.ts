/**
 * The shapes judge: reads back, from the pixels alone, what an image of the synthetic shapes dataset
 * (src/data/shapes.ts) shows — background, shape colour, position, size and shape — each with a
 * confidence, so generated images can be scored against the prompt that asked for them. Also the caption
 * parser (the attributes a prompt asks for, inverse of `shapeCaption`) and the scoring the trainer logs.
 *
 * How an image is judged (side `px`, RGB):
 *   1. background  — the palette colour (or the plain grey) most of the border ring is nearest to; the
 *                    ring is the dataset's margin, which no shape enters.
 *   2. colour      — the palette colour c that best explains the non-background pixels as blends of
 *                    background and c (a blurred edge is such a blend, so a reconstruction's soft edges
 *                    vote for the true colour, not for the third colour a blend happens to be near).
 *   3. mask        — each pixel's share of c along the background→c line, 0.3…0.7 mapped to 0…1 (soft),
 *                    and 0 for pixels far from that line.
 *   4. shape, position, size — the best soft IoU of that mask with the eight shapes rendered by the
 *                    generator itself (`shapeSvg`) in each of the 15 position × size boxes, each tried at
 *                    small integer shifts; or, if better, of the unthresholded share with the same masks
 *                    blurred by a 3×3 binomial kernel (a VQGAN reconstruction's edges and faded star points).
 *                    The masks are rendered once per image side and cached.
 * Confidences, each in [0, 1]: background — the share of the ring nearest to it; colour — 1 − the runner-up
 * colour's evidence / the best's; shape, position, size — a softmax (temperature 0.03 IoU) over the best fit
 * of each value, scaled down when the best fit is below 0.6 (to 0 at 0.3: noise fits ~0.1). Below
 * `minConfidence` (0.5) a value is `null` ("unsure") and `unsure` is set.
 */
import sharp from 'sharp';
import { DataError } from './errors.js';
import {
  COLOURS,
  COLOUR_NAMES,
  PLAIN_BACKGROUND,
  POSITIONS,
  POSITION_WORDS,
  SHAPES,
  SIZES,
  shapeBox,
  shapeSvg,
} from './shapes.js';
import type { ColourName, PositionName, ShapeAttributes, ShapeName, SizeName } from './shapes.js';

export class ShapesJudgeError extends DataError {}

export type BackgroundName = ShapeAttributes['background'];

/** One judged attribute: `value` is `null` ("unsure") when `confidence` is below the threshold; `guess` is the best candidate regardless. */
export interface JudgedAttribute<T extends string> {
  value: T | null;
  confidence: number;
  guess: T | null;
}

export interface ShapesJudgement {
  background: JudgedAttribute<BackgroundName>;
  colour: JudgedAttribute<ColourName>;
  shape: JudgedAttribute<ShapeName>;
  position: JudgedAttribute<PositionName>;
  size: JudgedAttribute<SizeName>;
  /** True when any attribute is unsure (its value is null). */
  unsure: boolean;
  /** Soft IoU of the foreground mask with the best-matching reference shape (0 when there is no foreground). */
  fit: number;
}

export interface ShapesJudgeOptions {
  /** Confidence below which an attribute is reported as `null` (unsure). */
  minConfidence: number;
  /** Largest shift (px) at which each reference shape is tried around its box; default max(1, round(px / 32)). */
  maxShift?: number;
}

export const DEFAULT_JUDGE_OPTIONS: ShapesJudgeOptions = { minConfidence: 0.5 };

// ---------------------------------------------------------------------------------------------------
// colours

type Rgb = readonly [number, number, number];

const BACKGROUND_NAMES: readonly BackgroundName[] = [...COLOUR_NAMES, 'plain'];
const BACKGROUND_RGB: readonly Rgb[] = BACKGROUND_NAMES.map((n) => (n === 'plain' ? PLAIN_BACKGROUND : COLOURS[n]));

function dist(a: Rgb, b: Rgb): number {
  return Math.hypot(a[0] - b[0], a[1] - b[1], a[2] - b[2]);
}

/** Smallest distance between two of the eleven colours an image may hold (≈ 100). */
const MIN_PAIR_DISTANCE = Math.min(...BACKGROUND_RGB.flatMap((a, i) => BACKGROUND_RGB.slice(i + 1).map((b) => dist(a, b))));

/** A pixel within this distance of the background→colour segment is a blend of the two in the mask (fading out at twice it). */
const BLEND_RADIUS = 0.45 * MIN_PAIR_DISTANCE;

/** Blend shares below LOW are background, above HIGH foreground (reconstruction noise stays out of the mask). */
const MASK_LOW = 0.3;
const MASK_HIGH = 0.7;

/** Best fit below which shape/position/size get no confidence, and the fit at which they get full confidence. */
const FIT_NONE = 0.3;
const FIT_FULL = 0.6;

/** Softmax temperature (in IoU units) turning per-value fits into shape/position/size confidences. */
const FIT_TEMPERATURE = 0.03;

/** A template whose fit cannot come within this of the best fit found is not matched (softmax weight < e^-8). */
const PRUNE_MARGIN = 0.25;

/** Blend shares below this are left out of the unthresholded mask matched against the blurred references. */
const SOFT_FLOOR = 0.1;

/** Image as float RGB in [0, 255]. */
function toRgb255(pixels: Uint8Array | Float32Array, px: number): Float32Array {
  const n = px * px * 3;
  if (pixels.length !== n) throw new ShapesJudgeError(`judgeShapesImage: expected ${px}×${px}×3 = ${n} values (H·W·3 RGB), got ${pixels.length}`);
  const out = new Float32Array(n);
  if (pixels instanceof Uint8Array) {
    out.set(pixels);
    return out;
  }
  for (let i = 0; i < n; i++) {
    const v = ((pixels[i] as number) + 1) * 127.5;
    out[i] = v < 0 ? 0 : v > 255 ? 255 : Number.isNaN(v) ? 0 : v;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// reference shapes

interface Template {
  shape: ShapeName;
  position: PositionName;
  size: SizeName;
  /** Coordinates of the template's pixels in its canonical box. */
  xs: Int16Array;
  ys: Int16Array;
  /** The same mask blurred by a 3×3 binomial kernel: coordinates and weights (a reconstruction's soft edges). */
  bxs: Int16Array;
  bys: Int16Array;
  bws: Float32Array;
}

interface References {
  px: number;
  templates: Template[];
  /** Pixels of the smallest reference shape. */
  minArea: number;
}

const referenceCache = new Map<number, Promise<References>>();

/** [1, 2, 1] / 4 along rows (step 1) or columns (step px) of a px × px map; zero outside. */
function blur121(a: Float32Array, px: number, step: 1 | number): Float32Array {
  const out = new Float32Array(a.length);
  for (let y = 0; y < px; y++) {
    for (let x = 0; x < px; x++) {
      const i = y * px + x;
      const c = step === 1 ? x : y;
      out[i] = 0.5 * (a[i] as number) + (c > 0 ? 0.25 * (a[i - step] as number) : 0) + (c < px - 1 ? 0.25 * (a[i + step] as number) : 0);
    }
  }
  return out;
}

async function renderReferences(px: number): Promise<References> {
  const jobs: Array<Promise<Template>> = [];
  for (const size of SIZES) {
    for (const position of POSITIONS) {
      for (const shape of SHAPES) {
        // White on black; the generator's own SVG, so the references are its pixels exactly.
        const attrs: ShapeAttributes = { shape, colour: 'white', position, size, background: 'black' };
        jobs.push(
          sharp(Buffer.from(shapeSvg(attrs, px)))
            .removeAlpha()
            .raw()
            .toBuffer()
            .then((raw) => {
              const xs: number[] = [];
              const ys: number[] = [];
              const on = new Float32Array(px * px);
              for (let y = 0; y < px; y++) for (let x = 0; x < px; x++) if ((raw[(y * px + x) * 3] as number) > 128) (xs.push(x), ys.push(y), (on[y * px + x] = 1));
              const b = blur121(blur121(on, px, 1), px, px);
              const bxs: number[] = [];
              const bys: number[] = [];
              const bws: number[] = [];
              for (let y = 0; y < px; y++) for (let x = 0; x < px; x++) if ((b[y * px + x] as number) > 0) (bxs.push(x), bys.push(y), bws.push(b[y * px + x] as number));
              return { shape, position, size, xs: Int16Array.from(xs), ys: Int16Array.from(ys), bxs: Int16Array.from(bxs), bys: Int16Array.from(bys), bws: Float32Array.from(bws) };
            }),
        );
      }
    }
  }
  const templates = await Promise.all(jobs);
  const empty = templates.find((t) => t.xs.length === 0);
  if (empty) throw new ShapesJudgeError(`judgeShapesImage: a ${empty.size} ${empty.shape} renders no pixel at ${px} px`);
  return { px, templates, minArea: Math.min(...templates.map((t) => t.xs.length)) };
}

/** The 120 reference masks (8 shapes × 5 positions × 3 sizes) for images of side `px`, rendered once. */
function references(px: number): Promise<References> {
  let r = referenceCache.get(px);
  if (!r) {
    r = renderReferences(px);
    referenceCache.set(px, r);
    r.catch(() => referenceCache.delete(px));
  }
  return r;
}

// ---------------------------------------------------------------------------------------------------
// the judge

function attr<T extends string>(guess: T | null, confidence: number, min: number): JudgedAttribute<T> {
  const c = Math.max(0, Math.min(1, confidence));
  return { value: guess !== null && c >= min ? guess : null, confidence: c, guess };
}

/** Softmax over the best fit of each value of one attribute → (best value, its probability). */
function pickBySoftmax<T extends string>(best: Map<T, number>): { value: T | null; p: number; fit: number } {
  let top: T | null = null;
  let topFit = -Infinity;
  for (const [v, f] of best) if (f > topFit) (top = v), (topFit = f);
  if (top === null) return { value: null, p: 0, fit: 0 };
  let z = 0;
  for (const f of best.values()) z += Math.exp((f - topFit) / FIT_TEMPERATURE);
  return { value: top, p: 1 / z, fit: topFit };
}

/** `[x0, y0, x1, y1)`, may reach outside the image (clamped when read). */
type Rect = [number, number, number, number];

interface TemplateBound {
  box: Rect;
  blurBox: Rect;
  areaMin: number;
  weightMin: number;
}

/** Summed-area table of a px × px map: (px + 1)², S[y][x] = sum over [0, x) × [0, y). */
function summedArea(a: Float32Array, px: number): Float64Array {
  const w = px + 1;
  const S = new Float64Array(w * w);
  for (let y = 0; y < px; y++) {
    let row = 0;
    for (let x = 0; x < px; x++) {
      row += a[y * px + x] as number;
      S[(y + 1) * w + x + 1] = (S[y * w + x + 1] as number) + row;
    }
  }
  return S;
}

/** Sum of the map over a rectangle, clamped to the image. */
function rectMass(S: Float64Array, px: number, r: Rect): number {
  const w = px + 1;
  const x0 = Math.max(0, r[0]);
  const y0 = Math.max(0, r[1]);
  const x1 = Math.min(px, r[2]);
  const y1 = Math.min(px, r[3]);
  if (x1 <= x0 || y1 <= y0) return 0;
  return (S[y1 * w + x1] as number) - (S[y0 * w + x1] as number) - (S[y1 * w + x0] as number) + (S[y0 * w + x0] as number);
}

function isBorder(x: number, y: number, px: number, ring: number): boolean {
  return x < ring || y < ring || x >= px - ring || y >= px - ring;
}

/** Judges images of one side `px` (reference masks rendered once). */
export class ShapesJudge {
  private readonly ring: number;
  private readonly maxShift: number;
  /** Per template: the boxes its pixels can reach over the shifts, and its area (weight) that stays in frame under every shift. */
  private readonly bounds: TemplateBound[];

  private constructor(
    private readonly refs: References,
    readonly options: ShapesJudgeOptions,
  ) {
    const px = refs.px;
    // The generator's margin (MARGIN = 0.04 of the side in shapes.ts): shapeBox of a left shape starts there.
    this.ring = Math.max(1, shapeBox({ position: 'left', size: 'small' }, px)[0]);
    this.maxShift = options.maxShift ?? Math.max(1, Math.round(px / 32));
    const s = this.maxShift;
    const inFrame = (x: number, y: number): boolean => x - s >= 0 && y - s >= 0 && x + s < px && y + s < px;
    this.bounds = refs.templates.map((t) => {
      const box: Rect = [Math.min(...t.xs) - s, Math.min(...t.ys) - s, Math.max(...t.xs) + 1 + s, Math.max(...t.ys) + 1 + s];
      let areaMin = 0;
      for (let k = 0; k < t.xs.length; k++) if (inFrame(t.xs[k] as number, t.ys[k] as number)) areaMin++;
      let weightMin = 0;
      for (let k = 0; k < t.bxs.length; k++) if (inFrame(t.bxs[k] as number, t.bys[k] as number)) weightMin += t.bws[k] as number;
      return { box, blurBox: [box[0] - 1, box[1] - 1, box[2] + 1, box[3] + 1], areaMin, weightMin };
    });
  }

  static async create(px: number, options: Partial<ShapesJudgeOptions> = {}): Promise<ShapesJudge> {
    if (!Number.isInteger(px) || px < 16) throw new ShapesJudgeError(`judgeShapesImage: size must be an integer ≥ 16 px (the shapes dataset's minimum), got ${px}`);
    const o = { ...DEFAULT_JUDGE_OPTIONS, ...options };
    if (!(o.minConfidence >= 0 && o.minConfidence <= 1)) throw new ShapesJudgeError(`judgeShapesImage: minConfidence must be in [0, 1], got ${o.minConfidence}`);
    if (o.maxShift !== undefined && !(Number.isInteger(o.maxShift) && o.maxShift >= 0)) throw new ShapesJudgeError(`judgeShapesImage: maxShift must be an integer ≥ 0, got ${o.maxShift}`);
    return new ShapesJudge(await references(px), o);
  }

  get size(): number {
    return this.refs.px;
  }

  /**
   * Best fit of one reference over the shifts: the soft IoU of the mask with it, or of the unthresholded
   * share with it blurred (a reconstruction's thin, faded parts, such as a star's points, still count).
   */
  private fitTemplate(t: Template, mask: Float32Array, total: number, soft: Float32Array, softTotal: number): number {
    const px = this.refs.px;
    const s = this.maxShift;
    let best = 0;
    for (let dy = -s; dy <= s; dy++) {
      for (let dx = -s; dx <= s; dx++) {
        let inter = 0;
        let area = 0;
        for (let k = 0; k < t.xs.length; k++) {
          const x = (t.xs[k] as number) + dx;
          const y = (t.ys[k] as number) + dy;
          if (x < 0 || y < 0 || x >= px || y >= px) continue;
          inter += mask[y * px + x] as number;
          area++;
        }
        const iou = inter / (area + total - inter);
        if (iou > best) best = iou;
        let bi = 0;
        let bw = 0;
        for (let k = 0; k < t.bxs.length; k++) {
          const x = (t.bxs[k] as number) + dx;
          const y = (t.bys[k] as number) + dy;
          if (x < 0 || y < 0 || x >= px || y >= px) continue;
          const w = t.bws[k] as number;
          const v = soft[y * px + x] as number;
          bi += v < w ? v : w;
          bw += w;
        }
        const biou = bi / (bw + softTotal - bi);
        if (biou > best) best = biou;
      }
    }
    return best;
  }

  /** `pixels`: H·W·3 RGB, bytes or floats in [-1, 1], H = W = this.size. */
  judge(pixels: Uint8Array | Float32Array): ShapesJudgement {
    const px = this.refs.px;
    const min = this.options.minConfidence;
    const img = toRgb255(pixels, px);
    const n = px * px;

    // 1. background: the colour most border pixels are nearest to; its RGB as measured there.
    const votes = new Float64Array(BACKGROUND_NAMES.length);
    const sums = Array.from({ length: BACKGROUND_NAMES.length }, () => [0, 0, 0]);
    let borderCount = 0;
    for (let y = 0; y < px; y++) {
      for (let x = 0; x < px; x++) {
        if (!isBorder(x, y, px, this.ring)) continue;
        const i = (y * px + x) * 3;
        const p: Rgb = [img[i] as number, img[i + 1] as number, img[i + 2] as number];
        let k = 0;
        let dk = Infinity;
        BACKGROUND_RGB.forEach((c, j) => {
          const d = dist(p, c);
          if (d < dk) (k = j), (dk = d);
        });
        votes[k] = (votes[k] as number) + 1;
        const s = sums[k] as number[];
        s[0] = (s[0] as number) + p[0];
        s[1] = (s[1] as number) + p[1];
        s[2] = (s[2] as number) + p[2];
        borderCount++;
      }
    }
    let bgIdx = 0;
    for (let j = 1; j < votes.length; j++) if ((votes[j] as number) > (votes[bgIdx] as number)) bgIdx = j;
    const bgName = BACKGROUND_NAMES[bgIdx] as BackgroundName;
    const bgSum = sums[bgIdx] as number[];
    const bgVotes = votes[bgIdx] as number;
    const bg: Rgb = [(bgSum[0] as number) / bgVotes, (bgSum[1] as number) / bgVotes, (bgSum[2] as number) / bgVotes];
    const background = attr(bgName, bgVotes / borderCount, min);

    // 2. colour: the palette colour whose blends with the background explain the foreground best. The
    // evidence of a pixel fades fast with its distance from the blend line (a pixel that is exactly one
    // palette colour must not count much for another whose blends pass near it: orange lies near the
    // red→yellow line); the mask is lenient up to BLEND_RADIUS, so soft reconstructed edges stay whole.
    const blend = (c: Rgb, out: Float32Array | null, soft: Float32Array | null = null): number => {
      const d0 = c[0] - bg[0];
      const d1 = c[1] - bg[1];
      const d2 = c[2] - bg[2];
      const len2 = d0 * d0 + d1 * d1 + d2 * d2;
      let evidence = 0;
      for (let i = 0; i < n; i++) {
        const e0 = (img[3 * i] as number) - bg[0];
        const e1 = (img[3 * i + 1] as number) - bg[1];
        const e2 = (img[3 * i + 2] as number) - bg[2];
        let t = len2 > 0 ? (e0 * d0 + e1 * d1 + e2 * d2) / len2 : 0;
        t = t < 0 ? 0 : t > 1 ? 1 : t;
        let m = (t - MASK_LOW) / (MASK_HIGH - MASK_LOW);
        m = m < 0 ? 0 : m > 1 ? 1 : m;
        const r = Math.hypot(e0 - t * d0, e1 - t * d1, e2 - t * d2) / BLEND_RADIUS;
        const gate = r <= 1 ? 1 : r >= 2 ? 0 : 2 - r;
        if (soft) soft[i] = t < SOFT_FLOOR ? 0 : t * gate;
        if (m === 0) {
          if (out) out[i] = 0;
          continue;
        }
        evidence += m * Math.exp(-4 * r * r);
        if (out) out[i] = m * gate;
      }
      return evidence;
    };
    let fgName: ColourName | null = null;
    let e1 = 0;
    let e2 = 0;
    for (const c of COLOUR_NAMES) {
      if (c === bgName) continue;
      const e = blend(COLOURS[c], null);
      if (e > e1) (e2 = e1), (e1 = e), (fgName = c);
      else if (e > e2) e2 = e;
    }
    const mask = new Float32Array(n);
    const soft = new Float32Array(n);
    const total = fgName === null ? 0 : (blend(COLOURS[fgName], mask, soft), mask.reduce((a, b) => a + b, 0));
    const softTotal = soft.reduce((a, b) => a + b, 0);
    // Too little foreground to be a shape: a blank image has none.
    if (fgName === null || total < 0.5 * this.refs.minArea) {
      const none = <T extends string>(): JudgedAttribute<T> => attr<T>(null, 0, min);
      return { background, colour: none(), shape: none(), position: none(), size: none(), unsure: true, fit: 0 };
    }
    const colour = attr(fgName, 1 - e2 / e1, min);

    // 3–4. the soft mask of that colour, matched against the reference shapes.
    const bestShape = new Map<ShapeName, number>();
    const bestPos = new Map<PositionName, number>();
    const bestSize = new Map<SizeName, number>();
    // Templates in order of an upper bound on their fit; those that cannot come within PRUNE_MARGIN of
    // the best found are skipped (their softmax weight would be below e^-8).
    const massMask = summedArea(mask, px);
    const massSoft = summedArea(soft, px);
    const order = this.bounds
      .map((b, i) => {
        const m = rectMass(massMask, px, b.box);
        const ms = rectMass(massSoft, px, b.blurBox);
        return { i, ub: Math.max(m / (b.areaMin + total - m), ms / (b.weightMin + softTotal - ms)) };
      })
      .sort((a, b) => b.ub - a.ub);
    let top = 0;
    for (const { i, ub } of order) {
      if (ub < top - PRUNE_MARGIN) break;
      const t = this.refs.templates[i] as Template;
      const best = this.fitTemplate(t, mask, total, soft, softTotal);
      if (best > top) top = best;
      if (best > (bestShape.get(t.shape) ?? -1)) bestShape.set(t.shape, best);
      if (best > (bestPos.get(t.position) ?? -1)) bestPos.set(t.position, best);
      if (best > (bestSize.get(t.size) ?? -1)) bestSize.set(t.size, best);
    }
    const sh = pickBySoftmax(bestShape);
    const po = pickBySoftmax(bestPos);
    const si = pickBySoftmax(bestSize);
    const fit = sh.fit;
    const quality = Math.max(0, Math.min(1, (fit - FIT_NONE) / (FIT_FULL - FIT_NONE)));
    const j: ShapesJudgement = {
      background,
      colour,
      shape: attr(sh.value, sh.p * quality, min),
      position: attr(po.value, po.p * quality, min),
      size: attr(si.value, si.p * quality, min),
      unsure: false,
      fit,
    };
    j.unsure = [j.background, j.colour, j.shape, j.position, j.size].some((a) => a.value === null);
    return j;
  }
}

/** Judges one image of side `size` (H·W·3 RGB, bytes or floats in [-1, 1]); the reference masks are cached per side. */
export async function judgeShapesImage(pixels: Uint8Array | Float32Array, size: number, options: Partial<ShapesJudgeOptions> = {}): Promise<ShapesJudgement> {
  return (await ShapesJudge.create(size, options)).judge(pixels);
}

/** A judge for images of side `size` whose `judge(pixels)` is synchronous (for loops over many images). */
export function createShapesJudge(size: number, options: Partial<ShapesJudgeOptions> = {}): Promise<ShapesJudge> {
  return ShapesJudge.create(size, options);
}

// ---------------------------------------------------------------------------------------------------
// captions → asked attributes

export type AskedAttributes = Partial<ShapeAttributes>;

/** Size words beyond the dataset's own (`small`, `medium`, `large`). */
const SIZE_SYNONYMS: Readonly<Record<string, SizeName>> = { big: 'large', tiny: 'small', little: 'small' };
/** Words that name the plain grey background. */
const PLAIN_WORDS = new Set(['plain', 'grey', 'gray']);

const SHAPE_SET = new Set<string>(SHAPES);
const COLOUR_SET = new Set<string>(COLOUR_NAMES);
const SIZE_SET = new Set<string>(SIZES);
const POSITION_OF = new Map<string, PositionName>(POSITIONS.flatMap((p) => POSITION_WORDS[p].map((w) => [w, p] as [string, PositionName])));

function shapeWord(w: string): ShapeName | null {
  if (SHAPE_SET.has(w)) return w as ShapeName;
  // Plurals: circles, crosses.
  for (const stem of [w.replace(/es$/, ''), w.replace(/s$/, '')]) if (SHAPE_SET.has(stem)) return stem as ShapeName;
  return null;
}

/**
 * The attributes a prompt asks for: the inverse of `shapeCaption` over all its phrasings, case and
 * punctuation ignored, unknown words ignored. A colour is the background's when it is followed by
 * "background" or follows "on"/"against" (`on red`, `on a red background`, `red background`, `against a red
 * background`); otherwise it is the shape's (`red circle`, `circle in red`). "plain", "grey" or "gray"
 * ask for the plain background unless a colour names it. Of several words for one attribute the first wins.
 * A prompt that does not mention an attribute does not ask for it.
 */
export function parseShapesCaption(caption: string): AskedAttributes {
  const words = caption.toLowerCase().split(/[^a-z]+/).filter((w) => w.length > 0);
  const out: AskedAttributes = {};
  let plain = false;
  words.forEach((w, i) => {
    const prev = words[i - 1];
    const prev2 = words[i - 2];
    const next = words[i + 1];
    const shape = shapeWord(w);
    if (shape) {
      out.shape ??= shape;
      return;
    }
    if (COLOUR_SET.has(w)) {
      const c = w as ColourName;
      const onIt = prev === 'on' || prev === 'against' || ((prev === 'a' || prev === 'the') && (prev2 === 'on' || prev2 === 'against'));
      if (next === 'background' || onIt) out.background ??= c;
      else out.colour ??= c;
      return;
    }
    if (SIZE_SET.has(w)) out.size ??= w as SizeName;
    else if (SIZE_SYNONYMS[w]) out.size ??= SIZE_SYNONYMS[w];
    else if (POSITION_OF.has(w)) out.position ??= POSITION_OF.get(w) as PositionName;
    else if (PLAIN_WORDS.has(w)) plain = true;
  });
  if (plain) out.background ??= 'plain';
  return out;
}

// ---------------------------------------------------------------------------------------------------
// scoring

export const SCORED_ATTRIBUTES = ['shape', 'colour', 'position', 'size', 'background'] as const;
export type ScoredAttribute = (typeof SCORED_ATTRIBUTES)[number];

export interface ShapesScore {
  /** Per attribute: the share of prompts asking for it whose image shows it (unsure counts as wrong); null when no prompt asks for it. */
  attr_acc: Record<ScoredAttribute, number | null>;
  /** Share of prompts (asking for at least one attribute) whose every asked attribute is right; null when there are none. */
  all_correct: number | null;
  /** Prompts asking for each attribute. */
  asked: Record<ScoredAttribute, number>;
  /** Prompts asking for at least one attribute. */
  count: number;
}

/** Scores judged images against what their prompts asked (`parseShapesCaption`); only asked attributes count. */
export function scoreShapes(judgements: readonly ShapesJudgement[], asked: readonly AskedAttributes[]): ShapesScore {
  if (judgements.length !== asked.length) throw new ShapesJudgeError(`scoreShapes: ${judgements.length} judgements for ${asked.length} prompts; they must pair up one to one`);
  const right = { shape: 0, colour: 0, position: 0, size: 0, background: 0 };
  const n = { shape: 0, colour: 0, position: 0, size: 0, background: 0 };
  let count = 0;
  let allRight = 0;
  judgements.forEach((j, i) => {
    const a = asked[i] as AskedAttributes;
    let any = false;
    let all = true;
    for (const k of SCORED_ATTRIBUTES) {
      const want = a[k];
      if (want === undefined) continue;
      any = true;
      n[k]++;
      if (j[k].value === want) right[k]++;
      else all = false;
    }
    if (any) {
      count++;
      if (all) allRight++;
    }
  });
  const acc = (k: ScoredAttribute): number | null => (n[k] > 0 ? right[k] / n[k] : null);
  return {
    attr_acc: { shape: acc('shape'), colour: acc('colour'), position: acc('position'), size: acc('size'), background: acc('background') },
    all_correct: count > 0 ? allRight / count : null,
    asked: n,
    count,
  };
}
