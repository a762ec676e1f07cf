/**
 * `npm run bench`: compute-engine figures as JSON (stdout + bench/results/<timestamp>.json) and a table.
 *   --quick          fewer repetitions and steps (about a minute)
 *   --only a,b       sections: matmul, conv, vq, bart, cli, data, tokenizer, shapes (default: all; shapes trains
 *                    the vqgan-shapes experiment, ~10 min, or 300 steps with --quick)
 *   --only judge     (not in the default set) the shapes judge on a trained shapes VQGAN's reconstructions:
 *                    --vqgan <dir>, else the newest finished vqgan-finetune run in --runs <dir> (default runs/)
 *   --steps N        training steps per model (first is warm-up; default 4, quick 3)
 *   --no-peer        skip the PyTorch peer (bench/peer/models.py via /usr/bin/python3)
 * GFLOPS of a training step = 3 × forward FLOPs / step time (forward + two backward products).
 */
import { spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initCompute, tf, type ComputeInfo } from '../src/ml/backend.js';
import { AdamW } from '../src/ml/optim/index.js';
import { randomTensor } from '../src/ml/selfcheck.js';
import { benchData } from './data.js';
import { benchShapesVqgan } from './shapes.js';
import { benchJudge } from './judge.js';
import { benchTokenizer } from './tokenizer.js';
import { BART_REFERENCE, bart, trainStep, VQ_REFERENCE, vqAutoencoder, type Workload } from './models.js';

interface Row {
  section: string;
  name: string;
  backend: string;
  ms: number;
  gflops?: number;
  extra?: Record<string, number | string>;
}

const here = dirname(fileURLToPath(import.meta.url));
// Compiled to dist/bench/run.js; sources and results live in <root>/bench.
const root = here.includes(`${join('dist', 'bench')}`) ? join(here, '..', '..') : join(here, '..');

function parseArgs(argv: string[]): { quick: boolean; only: Set<string>; steps: number; peer: boolean } {
  const quick = argv.includes('--quick');
  const onlyAt = argv.indexOf('--only');
  const stepsAt = argv.indexOf('--steps');
  const all = ['matmul', 'conv', 'vq', 'bart', 'cli', 'data', 'tokenizer', 'shapes'];
  const only = new Set(onlyAt >= 0 ? (argv[onlyAt + 1] ?? '').split(',') : all);
  const optIn = ['judge']; // asked for by name only: it needs a trained shapes VQGAN (bench/judge.ts)
  for (const s of only) if (!all.includes(s) && !optIn.includes(s)) throw new Error(`--only: unknown section '${s}'; expected some of ${[...all, ...optIn].join(', ')}`);
  const steps = stepsAt >= 0 ? Number(argv[stepsAt + 1]) : quick ? 3 : 4;
  if (!Number.isInteger(steps) || steps < 3) throw new Error('--steps must be an integer ≥ 3 (warm-up, step 2, last step)');
  return { quick, only, steps, peer: !argv.includes('--no-peer') };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

/** Median wall time of `fn` (result read back, so lazy work is included), after one warm-up call. */
function timeOp(fn: () => tf.Tensor, reps: number): number {
  const once = (): number => {
    const t0 = performance.now();
    const out = fn();
    out.dataSync();
    const ms = performance.now() - t0;
    out.dispose();
    return ms;
  };
  once();
  return median(Array.from({ length: reps }, once));
}

function benchMatmul(backend: string, quick: boolean): Row[] {
  const reps = quick ? 3 : 5;
  const cases: [string, number[], number[], boolean, boolean][] = [
    ['2-D 1024×1024 @ 1024×1024', [1024, 1024], [1024, 1024], false, false],
    ['weight grad aᵀb 2048×256ᵀ @ 2048×1024', [2048, 256], [2048, 1024], true, false],
    ['input grad abᵀ 2048×1024 @ 256×1024ᵀ', [2048, 1024], [256, 1024], false, true],
    ['attention q·kᵀ 8×4×256×64 @ 8×4×256×64ᵀ', [8, 4, 256, 64], [8, 4, 256, 64], false, true],
    ['attention p·v 8×4×256×256 @ 8×4×256×64', [8, 4, 256, 256], [8, 4, 256, 64], false, false],
    ['shared weight 8×256×256 @ 256×1024', [8, 256, 256], [256, 1024], false, false],
  ];
  return cases.map(([name, as, bs, ta, tb]) => {
    const a = randomTensor(as, 1);
    const b = randomTensor(bs, 2);
    const ms = timeOp(() => tf.matMul(a, b, ta, tb), reps);
    const ar = as.length;
    const m = (ta ? as[ar - 1] : as[ar - 2]) as number;
    const k = (ta ? as[ar - 2] : as[ar - 1]) as number;
    const n = (tb ? bs[bs.length - 2] : bs[bs.length - 1]) as number;
    const batch = Math.max(tf.util.sizeFromShape(as.slice(0, -2)), tf.util.sizeFromShape(bs.slice(0, -2)));
    tf.dispose([a, b]);
    return { section: 'matmul', name, backend, ms, gflops: (2 * batch * m * n * k) / ms / 1e6 };
  });
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

function benchTraining(make: () => Workload, backend: string, steps: number): Row {
  const w = make();
  // Our AdamW (no decay = Adam), as the plugins train; the PyTorch peer uses torch.optim.Adam.
  const opt = new AdamW({ learningRate: 1e-4, weightDecay: 0 });
  const times: number[] = [];
  let afterTwo = 0;
  let loss = Number.NaN;
  for (let i = 0; i < steps; i++) {
    const t0 = performance.now();
    loss = trainStep(w, opt);
    times.push(performance.now() - t0);
    if (i === 1) afterTwo = tf.memory().numTensors;
  }
  const afterLast = tf.memory().numTensors;
  const ms = median(times.slice(1));
  opt.dispose();
  w.dispose();
  return {
    section: 'train',
    name: `${w.name} Adam step`,
    backend,
    ms,
    gflops: (3 * w.forwardFlops) / ms / 1e6,
    extra: { forwardGflop: +(w.forwardFlops / 1e9).toFixed(2), firstStepMs: Math.round(times[0] as number), numTensorsAfterStep2: afterTwo, numTensorsAfterLast: afterLast, loss: +loss.toFixed(4) },
  };
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

interface PeerRow {
  name: string;
  ms: number;
  gflops?: number;
}

/**
 * The PyTorch peer, when Debian's python3-torch is importable by /usr/bin/python3. It runs twice, with 1
 * and with every-core intra-op threads (its BLAS has threads of its own, and the two oversubscribe the
 * cores on some workloads but not others), and each row keeps PyTorch's faster time.
 */
function runPeer(only: Set<string>, steps: number): { rows: PeerRow[]; note: string } {
  const python = '/usr/bin/python3';
  const probe = spawnSync(python, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8' });
  if (probe.status !== 0) return { rows: [], note: `peer skipped: ${python} cannot import torch (apt-get install python3-torch libopenblas0-pthread)` };
  const models = ['vq', 'bart', 'matmul'].filter((m) => only.has(m));
  if (models.length === 0) return { rows: [], note: 'peer skipped: no section with a peer selected' };
  const best = new Map<string, PeerRow & { threads: number }>();
  for (const threads of [...new Set([1, availableParallelism()])]) {
    const args = [join(root, 'bench', 'peer', 'models.py'), '--steps', String(steps), '--only', models.join(','), '--threads', String(threads)];
    const r = spawnSync(python, args, { encoding: 'utf8', maxBuffer: 1 << 24 });
    if (r.status !== 0) return { rows: [], note: `peer failed (exit ${r.status}): ${(r.stderr ?? '').trim().split('\n').slice(-3).join(' | ')}` };
    const out = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { threads: number; rows: PeerRow[] };
    for (const row of out.rows) {
      const prev = best.get(row.name);
      if (prev === undefined || row.ms < prev.ms) best.set(row.name, { ...row, threads: out.threads });
    }
  }
  const rows = [...best.values()];
  const used = rows.map((r) => `${r.name.split(' ')[0]}: ${r.threads}`).join(', ');
  return { rows, note: `PyTorch ${probe.stdout.trim()}, each row its faster run of 1 and ${availableParallelism()} intra-op threads (BLAS threads of its own); intra-op threads used: ${used}` };
}

function table(rows: Row[], peer: PeerRow[]): string {
  const lines = ['section | name | backend | ms | GFLOPS | PyTorch ms | ours/PyTorch (time) | notes', '---|---|---|---|---|---|---|---'];
  for (const r of rows) {
    const p = peer.find((x) => x.name === r.name);
    const notes = r.extra ? Object.entries(r.extra).map(([k, v]) => `${k}=${v}`).join(' ') : '';
    lines.push([r.section, r.name, r.backend, r.ms.toFixed(1), r.gflops?.toFixed(2) ?? '', p ? p.ms.toFixed(1) : '', p ? (r.ms / p.ms).toFixed(2) : '', notes].join(' | '));
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
  if (args.only.has('matmul')) rows.push(...benchMatmul(backend, args.quick));
  if (args.only.has('conv')) rows.push(...benchConv(backend, args.quick));
  if (args.only.has('vq')) rows.push(benchTraining(() => vqAutoencoder(VQ_REFERENCE), backend, args.steps));
  if (args.only.has('bart')) rows.push(benchTraining(() => bart(BART_REFERENCE), backend, args.steps));
  if (args.only.has('data')) rows.push(...(await benchData(backend, args.quick)));
  if (args.only.has('tokenizer')) rows.push(...benchTokenizer(args.quick));
  if (args.only.has('shapes')) rows.push(benchShapesVqgan(root, args.quick));
  if (args.only.has('judge')) rows.push(...(await benchJudge(root, backend, process.argv.slice(2))));
  const peer = args.peer ? runPeer(args.only, args.steps) : { rows: [], note: 'peer skipped: --no-peer' };
  const result = {
    timestamp: new Date().toISOString(),
    compute: info,
    initComputeMs: Math.round(initMs),
    node: process.version,
    cpu: { cores: (await import('node:os')).cpus().length },
    cpuBackend: 'not timed on models: ~0.05 GFLOPS, i.e. ~13 min (VQ) and ~33 min (BART) per step',
    rows,
    peer: { note: peer.note, rows: peer.rows },
  };
  const dir = join(root, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${result.timestamp.replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(`${JSON.stringify(result)}\n\n${table(rows, peer.rows)}\n\n${peer.note}\ninitCompute ${Math.round(initMs)} ms; written ${file}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? (process.env["MINIDALLE_DEBUG"] ? String(err.stack) + "\n" + (err.stack ?? "") : err.message) : String(err)}\n`);
  process.exitCode = 1;
});
