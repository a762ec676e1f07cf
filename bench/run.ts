/**
 * `npm run bench`: compute-engine figures as JSON (stdout + bench/results/<timestamp>.json) and a table.
 *   --quick          fewer repetitions and steps (about a minute)
 *   --only a,b       sections: matmul, conv, vq, bart, generate, clip, cli, data, tokenizer, shapes (default: all;
 *                    shapes trains the vqgan-shapes experiment, ~10 min, or 300 steps with --quick)
 *   --only judge     (not in the default set) the shapes judge on a trained shapes VQGAN's reconstructions:
 *                    --vqgan <dir>, else the newest finished vqgan-finetune run in --runs <dir> (default runs/)
 *   --only mini      (not in the default set: ~10+ GB) one Adafactor step of DalleBart at dalle-mini's mini
 *                    size (DALLEBART_DEFAULTS, ≈0.4 B parameters) at batch 1: s/step, peak RSS (bench/mini.ts)
 *   --steps N        training steps per model (first is warm-up; default 6, quick 3)
 *   --reps N         repetitions per generate row (default 5, quick 3)
 *   --settle MS      quiet before each timed repetition when alternating with the peer (default 200)
 *   --no-peer        skip the PyTorch peer (bench/peer/models.py --serve via /usr/bin/python3)
 * With the peer, our repetitions and PyTorch's alternate (ABAB…, bench/peer.ts) in one long-lived Python
 * process, so the machine's drift lands on both; each row reports medians with min/quartiles/max.
 * GFLOPS of a training step = 3 × forward FLOPs / step time (forward + two backward products).
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initCompute, tf, type ComputeInfo } from '../src/ml/backend.js';
import { AdamW } from '../src/ml/optim/index.js';
import { randomTensor } from '../src/ml/selfcheck.js';
import { benchData } from './data.js';
import { benchGenerate } from './generate.js';
import { benchClip } from './clip.js';
import { benchShapesVqgan } from './shapes.js';
import { benchJudge } from './judge.js';
import { benchMini } from './mini.js';
import { benchTokenizer } from './tokenizer.js';
import { BART_REFERENCE, bart, trainStep, VQ_REFERENCE, vqAutoencoder, type Workload } from './models.js';
import { interleave, Peer, type Interleaved, type PeerFigures, type Spread } from './peer.js';

export interface Row {
  section: string;
  name: string;
  backend: string;
  /** our median */
  ms: number;
  gflops?: number;
  /** our repetitions: median, quartiles, range, count */
  spread?: Spread;
  /** PyTorch's, timed alternately with ours (ABAB), and speedVsPeer = its median / ours */
  peer?: PeerFigures & { gflops?: number };
  peerNote?: string;
  extra?: Record<string, number | string | boolean>;
}

/** What the timed sections share: the peer (or null) and the quiet before each repetition. */
export interface Ctx {
  peer: Peer | null;
  settleMs: number;
  quick: boolean;
  reps: number;
}

const here = dirname(fileURLToPath(import.meta.url));
// Compiled to dist/bench/run.js; sources and results live in <root>/bench.
const root = here.includes(`${join('dist', 'bench')}`) ? join(here, '..', '..') : join(here, '..');

function parseArgs(argv: string[]): { quick: boolean; only: Set<string>; steps: number; reps: number; settleMs: number; peer: boolean } {
  const quick = argv.includes('--quick');
  const onlyAt = argv.indexOf('--only');
  const stepsAt = argv.indexOf('--steps');
  const all = ['matmul', 'conv', 'vq', 'bart', 'generate', 'clip', 'cli', 'data', 'tokenizer', 'shapes'];
  const only = new Set(onlyAt >= 0 ? (argv[onlyAt + 1] ?? '').split(',') : all);
  // asked for by name only: judge needs a trained shapes VQGAN (bench/judge.ts), mini ~10+ GB (bench/mini.ts)
  const optIn = ['judge', 'mini'];
  for (const s of only) if (!all.includes(s) && !optIn.includes(s)) throw new Error(`--only: unknown section '${s}'; expected some of ${[...all, ...optIn].join(', ')}`);
  const steps = stepsAt >= 0 ? Number(argv[stepsAt + 1]) : quick ? 3 : 6;
  if (!Number.isInteger(steps) || steps < 3) throw new Error('--steps must be an integer ≥ 3 (warm-up, step 2, last step)');
  const num = (flag: string, dflt: number): number => {
    const at = argv.indexOf(flag);
    const v = at >= 0 ? Number(argv[at + 1]) : dflt;
    if (!Number.isInteger(v) || v < 0) throw new Error(`${flag} must be a non-negative integer`);
    return v;
  };
  const reps = num('--reps', quick ? 3 : 5);
  if (reps < 1) throw new Error('--reps must be at least 1');
  return { quick, only, steps, reps, settleMs: num('--settle', 200), peer: !argv.includes('--no-peer') };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

const MATMULS: [string, number[], number[], boolean, boolean][] = [
  ['2-D 1024×1024 @ 1024×1024', [1024, 1024], [1024, 1024], false, false],
  ['weight grad aᵀb 2048×256ᵀ @ 2048×1024', [2048, 256], [2048, 1024], true, false],
  ['input grad abᵀ 2048×1024 @ 256×1024ᵀ', [2048, 1024], [256, 1024], false, true],
  ['attention q·kᵀ 8×4×256×64 @ 8×4×256×64ᵀ', [8, 4, 256, 64], [8, 4, 256, 64], false, true],
  ['attention p·v 8×4×256×256 @ 8×4×256×64', [8, 4, 256, 256], [8, 4, 256, 64], false, false],
  ['shared weight 8×256×256 @ 256×1024', [8, 256, 256], [256, 1024], false, false],
]; // the same list, in the same order, as MATMULS in bench/peer/models.py (peer ids matmul:0 … matmul:5)

/** One timed call of `fn`, its result read back so lazy work is included. */
function timeOnce(fn: () => tf.Tensor): number {
  const t0 = performance.now();
  const out = fn();
  out.dataSync();
  const ms = performance.now() - t0;
  out.dispose();
  return ms;
}

/** A row from interleaved timings: our median as `ms`, spreads and the peer's figures beside it. */
function rowOf(section: string, name: string, backend: string, r: Interleaved, flops?: number, extra?: Record<string, number | string>): Row {
  const row: Row = { section, name, backend, ms: r.ours.ms, spread: r.ours };
  if (flops !== undefined) row.gflops = +(flops / r.ours.ms / 1e6).toFixed(2);
  if (r.peer) row.peer = flops !== undefined ? { ...r.peer, gflops: +(flops / r.peer.ms / 1e6).toFixed(2) } : r.peer;
  if (r.peerNote) row.peerNote = r.peerNote;
  if (extra) row.extra = extra;
  return row;
}

async function benchMatmul(backend: string, quick: boolean, ctx: Ctx): Promise<Row[]> {
  const reps = quick ? 5 : 9;
  const burst = 5; // a repetition is the mean of 5 calls (on both sides): one ~10 ms call is mostly noise here
  const rows: Row[] = [];
  for (const [i, [name, as, bs, ta, tb]] of MATMULS.entries()) {
    const a = randomTensor(as, 1);
    const b = randomTensor(bs, 2);
    const fn = (): tf.Tensor => tf.matMul(a, b, ta, tb);
    timeOnce(fn); // warm-up
    const r = await interleave(() => Array.from({ length: burst }, () => timeOnce(fn)).reduce((x, y) => x + y) / burst, reps, ctx.peer, `matmul:${i}`, ctx.settleMs, burst);
    const ar = as.length;
    const m = (ta ? as[ar - 1] : as[ar - 2]) as number;
    const k = (ta ? as[ar - 2] : as[ar - 1]) as number;
    const n = (tb ? bs[bs.length - 2] : bs[bs.length - 1]) as number;
    const batch = Math.max(tf.util.sizeFromShape(as.slice(0, -2)), tf.util.sizeFromShape(bs.slice(0, -2)));
    tf.dispose([a, b]);
    rows.push(rowOf('matmul', name, backend, r, 2 * batch * m * n * k));
  }
  return rows;
}

/** Median wall time of `fn` (result read back, so lazy work is included), after one warm-up call. */
function timeOp(fn: () => tf.Tensor, reps: number): number {
  timeOnce(fn);
  return median(Array.from({ length: reps }, () => timeOnce(fn)));
}

function benchConv(backend: string, quick: boolean): Row[] {
  const reps = quick ? 2 : 3;
  const cases: [string, [number, number, number, number], [number, number, number, number], number, 'same' | tf.backend_util.ExplicitPadding][] = [
    ['3×3 s1 8×64×64×64→64', [8, 64, 64, 64], [3, 3, 64, 64], 1, 'same'],
    ['4×4 s2 8×64×64×32→64', [8, 64, 64, 32], [4, 4, 32, 64], 2, [[0, 0], [1, 1], [1, 1], [0, 0]]],
  ];
  const rows: Row[] = [];
  for (const [name, xs, fs, stride, pad] of cases) {
    const info = tf.backend_util.computeConv2DInfo(xs, fs, stride, 1, pad, 'floor');
    const flops = 2 * info.batchSize * info.outHeight * info.outWidth * fs[0] * fs[1] * fs[2] * fs[3];
    const x = randomTensor(xs, 3) as tf.Tensor4D;
    const f = randomTensor(fs, 4) as tf.Tensor4D;
    const dy = randomTensor(info.outShape, 5) as tf.Tensor4D;
    const attrs = { strides: stride, pad, dataFormat: 'NHWC', dimRoundingMode: 'floor' };
    const fwd = timeOp(() => tf.conv2d(x, f, stride, pad), reps);
    const filt = timeOp(() => tf.engine().runKernel('Conv2DBackpropFilter', { x, dy }, { ...attrs, filterShape: fs }) as tf.Tensor, reps);
    const inp = timeOp(() => tf.engine().runKernel('Conv2DBackpropInput', { dy, filter: f }, { ...attrs, inputShape: xs }) as tf.Tensor, reps);
    rows.push(
      { section: 'conv', name: `${name} forward`, backend, ms: fwd, gflops: flops / fwd / 1e6 },
      { section: 'conv', name: `${name} filter grad`, backend, ms: filt, gflops: flops / filt / 1e6 },
      { section: 'conv', name: `${name} input grad`, backend, ms: inp, gflops: flops / inp / 1e6 },
    );
    tf.dispose([x, f, dy]);
  }
  return rows;
}

/** Adam steps of a workload: step 1 is the warm-up, steps 2… alternate with the peer's (ABAB). */
async function benchTraining(make: () => Workload, peerId: string, backend: string, steps: number, ctx: Ctx): Promise<Row> {
  const w = make();
  // Our AdamW (no decay = Adam), as the plugins train; the PyTorch peer uses torch.optim.Adam.
  const opt = new AdamW({ learningRate: 1e-4, weightDecay: 0 });
  let afterTwo = 0;
  let done = 0;
  let loss = Number.NaN;
  const step = (): number => {
    const t0 = performance.now();
    loss = trainStep(w, opt);
    const ms = performance.now() - t0;
    if (++done === 2) afterTwo = tf.memory().numTensors;
    return ms;
  };
  const first = step();
  const r = await interleave(step, steps - 1, ctx.peer, peerId, ctx.settleMs);
  const afterLast = tf.memory().numTensors;
  opt.dispose();
  w.dispose();
  return rowOf('train', `${w.name} Adam step`, backend, r, 3 * w.forwardFlops, {
    forwardGflop: +(w.forwardFlops / 1e9).toFixed(2), firstStepMs: Math.round(first), numTensorsAfterStep2: afterTwo, numTensorsAfterLast: afterLast, loss: +loss.toFixed(4),
  });
}

function benchCliStartup(): Row {
  const cli = join(root, 'bin', 'minidalle.js');
  const times: number[] = [];
  let status: number | null = 0;
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    const r = spawnSync(process.execPath, [cli, '--help'], { encoding: 'utf8' });
    times.push(performance.now() - t0);
    status = r.status;
  }
  return { section: 'cli', name: 'node bin/minidalle.js --help (median of 5)', backend: 'node', ms: median(times), extra: { exitStatus: status ?? -1 } };
}

function table(rows: Row[]): string {
  const f = (s?: Spread): string => (s ? `${s.ms.toFixed(1)} [${s.min.toFixed(1)}–${s.max.toFixed(1)}]` : '');
  const lines = ['section | name | backend | ms median [min–max] | GFLOPS | PyTorch ms median [min–max] | speed vs PyTorch (its median / ours) | notes', '---|---|---|---|---|---|---|---'];
  for (const r of rows) {
    const notes = [...(r.extra ? Object.entries(r.extra).map(([k, v]) => `${k}=${v}`) : []), ...(r.peer ? [`peerThreads=${r.peer.threads}`] : []), ...(r.peerNote ? [`peer: ${r.peerNote}`] : [])].join(' ');
    lines.push([r.section, r.name, r.backend, r.spread ? f(r.spread) : r.ms.toFixed(1), r.gflops?.toFixed(2) ?? '', f(r.peer), r.peer ? `${r.peer.speedVsPeer.toFixed(2)}×` : '', notes].join(' | '));
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const rows: Row[] = [];
  if (args.only.has('cli')) rows.push(benchCliStartup()); // before tfjs warms anything in this process
  const t0 = performance.now();
  const info: ComputeInfo = await initCompute();
  const initMs = performance.now() - t0;
  const backend = info.backend;
  const peered = ['matmul', 'vq', 'bart', 'generate', 'clip', 'mini'].some((s) => args.only.has(s));
  const started = !args.peer ? 'peer skipped: --no-peer' : !peered ? 'peer skipped: no section with a peer selected' : Peer.start(root);
  const peer = typeof started === 'string' ? null : started;
  const ctx: Ctx = { peer, settleMs: args.settleMs, quick: args.quick, reps: args.reps };
  try {
    if (args.only.has('matmul')) rows.push(...(await benchMatmul(backend, args.quick, ctx)));
    if (args.only.has('conv')) rows.push(...benchConv(backend, args.quick));
    if (args.only.has('vq')) rows.push(await benchTraining(() => vqAutoencoder(VQ_REFERENCE), 'vq', backend, args.steps, ctx));
    if (args.only.has('bart')) rows.push(await benchTraining(() => bart(BART_REFERENCE), 'bart', backend, args.steps, ctx));
    if (args.only.has('generate')) rows.push(...(await benchGenerate(backend, ctx)));
    if (args.only.has('clip')) rows.push(...(await benchClip(backend, ctx)));
    if (args.only.has('mini')) rows.push(...(await benchMini(backend, ctx)));
  } finally {
    await peer?.close();
  }
  if (args.only.has('data')) rows.push(...(await benchData(backend, args.quick)));
  if (args.only.has('tokenizer')) rows.push(...benchTokenizer(args.quick));
  if (args.only.has('shapes')) rows.push(benchShapesVqgan(root, args.quick));
  if (args.only.has('judge')) rows.push(...(await benchJudge(root, backend, process.argv.slice(2))));
  const peerNote = peer
    ? `PyTorch ${peer.version} in one long-lived process; its repetitions alternate with ours (ABAB, ${args.settleMs} ms of quiet before each); each workload keeps the faster of 1 and ${availableParallelism()} intra-op threads, chosen at warm-up (its BLAS has threads of its own)`
    : (started as string);
  const result = {
    timestamp: new Date().toISOString(),
    compute: info,
    initComputeMs: Math.round(initMs),
    node: process.version,
    cpu: { cores: (await import('node:os')).cpus().length },
    cpuBackend: 'not timed on models: ~0.05 GFLOPS, i.e. ~13 min (VQ) and ~33 min (BART) per step',
    rows,
    peer: { note: peerNote, rows: rows.filter((r) => r.peer).map((r) => ({ name: r.name, ms: r.peer?.ms, gflops: r.peer?.gflops, threads: r.peer?.threads })) },
  };
  const dir = join(root, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${result.timestamp.replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(`${JSON.stringify(result)}\n\n${table(rows)}\n\n${peerNote}\ninitCompute ${Math.round(initMs)} ms; written ${file}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? (process.env["MINIDALLE_DEBUG"] ? String(err.stack) + "\n" + (err.stack ?? "") : err.message) : String(err)}\n`);
  process.exitCode = 1;
});
