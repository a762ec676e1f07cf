/**
 * Where a training step of a reference workload spends its time, per kernel (tf.profile):
 *   node dist/bench/profile.js bart|vq [steps]
 * Prints kernels by total ms, with call counts; for finding what to optimise next, not a benchmark.
 */
import { initCompute, tf } from '../src/ml/backend.js';
import { AdamW, disposeGrads, valueAndGrads } from '../src/ml/optim/index.js';
import { bart, vqAutoencoder } from './models.js';

async function main(): Promise<void> {
  const which = process.argv[2] ?? 'bart';
  const steps = Number(process.argv[3] ?? 2);
  await initCompute();
  const w = which === 'vq' ? vqAutoencoder() : bart();
  const opt = new AdamW({ learningRate: 1e-4, weightDecay: 0 });
  const step = (): void => {
    const { loss, grads } = valueAndGrads(w.params, w.loss);
    opt.apply(w.params, grads);
    disposeGrads(grads);
    loss.dataSync();
    loss.dispose();
  };
  step(); // warm-up: XNNPACK packing, heap growth
  const totals = new Map<string, { ms: number; calls: number }>();
  let wall = 0;
  for (let i = 0; i < steps; i++) {
    const t0 = performance.now();
    const info = await tf.profile(step);
    wall += performance.now() - t0;
    for (const k of info.kernels) {
      const t = totals.get(k.name) ?? { ms: 0, calls: 0 };
      t.ms += Number(k.kernelTimeMs);
      t.calls += 1;
      totals.set(k.name, t);
    }
  }
  const rows = [...totals.entries()].sort((a, b) => b[1].ms - a[1].ms);
  const sum = rows.reduce((s, [, t]) => s + t.ms, 0);
  process.stdout.write(`${which}: ${(wall / steps).toFixed(0)} ms/step wall (profiled), kernels ${(sum / steps).toFixed(0)} ms/step\n`);
  for (const [name, t] of rows.slice(0, 30)) {
    process.stdout.write(`${name.padEnd(28)} ${(t.ms / steps).toFixed(1).padStart(8)} ms ${String(t.calls / steps).padStart(6)} calls\n`);
  }
  opt.dispose();
  w.dispose();
}

main().catch((err: unknown) => {
  process.stderr.write(`profile failed: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
