/**
 * `npm run bench -- --only judge [--vqgan <dir>] [--runs <dir>]`: the shapes judge (src/data/shapes-judge.ts)
 * on a trained shapes VQGAN's reconstructions. The held-out shape×colour pairs, rendered by the generator
 * in every position × size × background (the plain grey and each other palette colour), are judged as
 * rendered and after encode → decode through the VQGAN; so is a sample of train pairs. The target
 * (issue #12): ≥ 99% per attribute on the renders, ≥ 95% on the reconstructions.
 *
 * The VQGAN is `--vqgan <dir>` (a folder with config.json + model.safetensors: the `model` artifact of
 * experiments/vqgan-shapes.yaml or the quickstart, runs/<id>/out/vqgan), else the newest finished
 * vqgan-finetune run in `--runs <dir>` (default <root>/runs). When that run's data stage left its
 * shapes.json, its held-out pairs and image side are used; else the defaults (32 px).
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import sharp from 'sharp';
import { parse } from 'yaml';
import { RunStore } from '../src/core/runs/index.js';
import {
  COLOUR_NAMES,
  DEFAULT_HELDOUT_COMBOS,
  POSITIONS,
  SIZES,
  SeededRng,
  createShapesJudge,
  renderShape,
  sampleTrainAttributes,
  scoreShapes,
  SCORED_ATTRIBUTES,
} from '../src/data/index.js';
import type { HeldoutCombo, ShapeAttributes, ShapesJudge, ShapesJudgement } from '../src/data/index.js';
import { tf } from '../src/ml/backend.js';
import { loadVqgan } from '../src/ml/models/vqgan.js';
import type { DataRow } from './data.js';

export class JudgeBenchError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'JudgeBenchError';
  }
}

/** Train-pair images judged besides the held-out grid. */
const TRAIN_SAMPLE = 400;
const BATCH = 50;

interface Found {
  dir: string;
  /** Where it came from (flag or run id). */
  source: string;
  combos: readonly HeldoutCombo[];
  size: number;
  /** shapes.json used, or why the defaults were. */
  dataNote: string;
}

function flag(argv: readonly string[], name: string): string | undefined {
  const at = argv.indexOf(name);
  if (at < 0) return undefined;
  const v = argv[at + 1];
  if (v === undefined || v.startsWith('--')) throw new JudgeBenchError(`${name} needs a path`);
  return v;
}

/** The data stage's shapes.json next to the held-out shards a vqgan run trained against, if any. */
function manifestOf(runDir: string): { combos: readonly HeldoutCombo[]; size: number; path: string } | undefined {
  const configPath = join(runDir, 'config.yaml');
  if (!existsSync(configPath)) return undefined;
  const config = parse(readFileSync(configPath, 'utf8')) as { with?: { heldout?: unknown } };
  const heldout = config.with?.heldout;
  if (typeof heldout !== 'string') return undefined;
  // <data run>/out/heldout/heldout-{00000..0000N}.tar → <data run>/out/shapes.json
  const path = join(dirname(dirname(heldout)), 'shapes.json');
  if (!existsSync(path)) return undefined;
  const m = JSON.parse(readFileSync(path, 'utf8')) as { heldout_combos?: HeldoutCombo[]; size?: number };
  if (!Array.isArray(m.heldout_combos) || typeof m.size !== 'number') return undefined;
  return { combos: m.heldout_combos, size: m.size, path };
}

async function findVqgan(root: string, argv: readonly string[]): Promise<Found> {
  const given = flag(argv, '--vqgan');
  const defaults = { combos: DEFAULT_HELDOUT_COMBOS, size: 32, dataNote: 'default held-out pairs, 32 px' };
  if (given !== undefined) {
    const dir = resolve(given);
    if (!existsSync(join(dir, 'config.json'))) throw new JudgeBenchError(`--vqgan ${given}: no config.json there (a VQGAN folder holds config.json + model.safetensors)`);
    return { dir, source: '--vqgan', ...defaults };
  }
  const runs = resolve(flag(argv, '--runs') ?? join(root, 'runs'));
  const records = existsSync(runs) ? await new RunStore(runs).list() : [];
  const run = records.find((r) => r.plugin === 'vqgan-finetune' && r.status === 'finished' && r.outputs?.artifacts.model !== undefined);
  if (!run) {
    throw new JudgeBenchError(
      `no finished vqgan-finetune run in ${runs}: pass --vqgan <dir> (runs/<id>/out/vqgan of experiments/vqgan-shapes.yaml) or --runs <dir>, or train one with \`npx minidalle run experiments/vqgan-shapes.yaml\` (~10 min)`,
    );
  }
  const runDir = join(runs, run.id);
  const dir = resolve(runDir, run.outputs?.artifacts.model as string);
  const m = manifestOf(runDir);
  return m ? { dir, source: `run ${run.id}`, combos: m.combos, size: m.size, dataNote: `held-out pairs and side from ${m.path}` } : { dir, source: `run ${run.id}`, ...defaults };
}

/** Every held-out pair in every position, size and background the generator uses. */
function heldoutGrid(combos: readonly HeldoutCombo[]): ShapeAttributes[] {
  const out: ShapeAttributes[] = [];
  for (const { shape, colour } of combos) {
    for (const background of ['plain' as const, ...COLOUR_NAMES.filter((c) => c !== colour)]) {
      for (const position of POSITIONS) for (const size of SIZES) out.push({ shape, colour, position, size, background });
    }
  }
  return out;
}

async function renderAll(cases: readonly ShapeAttributes[], px: number): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for (let i = 0; i < cases.length; i += 64) {
    const batch = await Promise.all(
      cases.slice(i, i + 64).map(async (a) => {
        const raw = await sharp((await renderShape(a, px)).png).removeAlpha().raw().toBuffer();
        return new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength);
      }),
    );
    out.push(...batch);
  }
  return out;
}

interface Judged {
  judgements: ShapesJudgement[];
  ms: number;
  /** PSNR (dB) of reconstructions against the renders; absent for the renders themselves. */
  psnr?: number;
}

function judgeAll(judge: ShapesJudge, images: ReadonlyArray<Uint8Array | Float32Array>): Judged {
  const t0 = performance.now();
  const judgements = images.map((p) => judge.judge(p));
  return { judgements, ms: performance.now() - t0 };
}

/** encode → decode through the VQGAN, in batches; each result in [-1, 1]. */
function reconstructAll(model: Awaited<ReturnType<typeof loadVqgan>>, images: readonly Uint8Array[], px: number): { recs: Float32Array[]; psnr: number } {
  const per = px * px * 3;
  const recs: Float32Array[] = [];
  let se = 0;
  for (let i = 0; i < images.length; i += BATCH) {
    const batch = images.slice(i, i + BATCH);
    const x = new Float32Array(batch.length * per);
    batch.forEach((p, b) => {
      for (let k = 0; k < per; k++) x[b * per + k] = ((p[k] as number) * 2) / 255 - 1;
    });
    const out = tf.tidy(() => model.reconstruct(tf.tensor4d(x, [batch.length, px, px, 3])).dataSync() as Float32Array);
    for (let b = 0; b < batch.length; b++) {
      const rec = out.slice(b * per, (b + 1) * per);
      for (let k = 0; k < per; k++) se += (((rec[k] as number) - (x[b * per + k] as number)) / 2) ** 2;
      recs.push(rec);
    }
  }
  return { recs, psnr: 10 * Math.log10(1 / (se / (images.length * per))) };
}

/** The commonest wrong readings, e.g. `shape star→diamond ×3; size large→medium ×1`. */
function misses(cases: readonly ShapeAttributes[], judgements: readonly ShapesJudgement[], top = 6): string {
  const counts = new Map<string, number>();
  judgements.forEach((j, i) => {
    const a = cases[i] as ShapeAttributes;
    for (const k of SCORED_ATTRIBUTES) {
      if (j[k].value === a[k]) continue;
      const key = `${k} ${a[k]}→${j[k].value ?? `unsure(${j[k].guess ?? '-'})`}`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
  });
  const list = [...counts].sort((x, y) => y[1] - x[1]).slice(0, top);
  return list.length === 0 ? 'none' : list.map(([k, n]) => `${k} ×${n}`).join('; ');
}

function row(name: string, backend: string, cases: readonly ShapeAttributes[], j: Judged, extra: Record<string, number | string>): DataRow {
  const s = scoreShapes(j.judgements, cases);
  const pct = (v: number | null): number => (v === null ? Number.NaN : +(100 * v).toFixed(2));
  const acc: Record<string, number> = {};
  for (const k of SCORED_ATTRIBUTES) acc[`${k}_pct`] = pct(s.attr_acc[k]);
  return {
    section: 'judge',
    name,
    backend,
    ms: j.ms,
    extra: {
      images: cases.length,
      ...acc,
      all_correct_pct: pct(s.all_correct),
      unsure_pct: +((100 * j.judgements.filter((x) => x.unsure).length) / cases.length).toFixed(2),
      mean_fit: +(j.judgements.reduce((a, x) => a + x.fit, 0) / cases.length).toFixed(3),
      ...(j.psnr !== undefined ? { psnr_db: +j.psnr.toFixed(2) } : {}),
      misses: misses(cases, j.judgements),
      ...extra,
    },
  };
}

export async function benchJudge(root: string, backend: string, argv: readonly string[]): Promise<DataRow[]> {
  const found = await findVqgan(root, argv);
  const px = found.size;
  const judge = await createShapesJudge(px);
  const heldout = heldoutGrid(found.combos);
  const rng = new SeededRng(12);
  const train = Array.from({ length: TRAIN_SAMPLE }, () => sampleTrainAttributes(rng, found.combos, 0.5));
  const [heldoutPx, trainPx] = [await renderAll(heldout, px), await renderAll(train, px)];
  const model = await loadVqgan(found.dir);
  try {
    const where = { vqgan: found.dir, from: found.source, data: found.dataNote, target: 'renders ≥ 99%, reconstructions ≥ 95% per attribute' };
    const rows: DataRow[] = [row(`held-out pairs, every position × size × background (${heldout.length} at ${px} px): renders`, backend, heldout, judgeAll(judge, heldoutPx), where)];
    const h = reconstructAll(model, heldoutPx, px);
    rows.push(row(`held-out pairs (${heldout.length} at ${px} px): VQGAN reconstructions`, backend, heldout, { ...judgeAll(judge, h.recs), psnr: h.psnr }, where));
    const t = reconstructAll(model, trainPx, px);
    rows.push(row(`train pairs, a seeded sample (${train.length} at ${px} px): VQGAN reconstructions`, backend, train, { ...judgeAll(judge, t.recs), psnr: t.psnr }, where));
    return rows;
  } finally {
    model.dispose();
  }
}
