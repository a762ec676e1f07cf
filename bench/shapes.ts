/**
 * `npm run bench --only shapes`: the VQGAN quality target of experiments/vqgan-shapes.yaml, measured by
 * running that experiment through the CLI in a scratch project (its data and vqgan stages, as a user
 * would) and reading the vqgan run's summary: held-out PSNR, codebook perplexity, and training time.
 * The target (issue #4): held-out PSNR ≥ 28 dB and perplexity ≥ 25% of n_embed within 10 minutes of
 * training. `--quick` trains 300 steps instead: a smoke run whose figures are not the target's.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import type { DataRow } from './data.js';

interface VqganSummary {
  eval_psnr: number;
  eval_perplexity: number;
  steps: number;
  ms_per_step: number;
  _runtime: number;
  backend: string;
}

const QUICK_STEPS = 300;

export function benchShapesVqgan(root: string, quick: boolean): DataRow {
  const project = mkdtempSync(join(tmpdir(), 'minidalle-bench-shapes-'));
  try {
    const experiment = join(root, 'experiments', 'vqgan-shapes.yaml');
    const overrides = quick ? [`stages.vqgan.with.steps=${QUICK_STEPS}`, `stages.vqgan.with.disc_start=${QUICK_STEPS}`, 'stages.vqgan.with.lr_warmup_steps=10'] : [];
    const r = spawnSync(process.execPath, [join(root, 'bin', 'minidalle.js'), 'run', experiment, ...overrides], {
      cwd: project,
      encoding: 'utf8',
      env: { ...process.env, CI: 'true' }, // line-oriented progress
      maxBuffer: 1 << 26,
    });
    const run = /^vqgan: finished \(run (\S+)\)$/m.exec(r.stdout)?.[1];
    if (r.status !== 0 || run === undefined) {
      throw new Error(`vqgan-shapes run failed (exit ${r.status}): ${`${r.stdout}\n${r.stderr}`.trim().split('\n').slice(-5).join(' | ')}`);
    }
    const s = JSON.parse(readFileSync(join(project, 'runs', run, 'summary.json'), 'utf8')) as VqganSummary;
    const config = parse(readFileSync(join(project, 'runs', run, 'config.yaml'), 'utf8')) as { with: { model: { n_embed: number } } };
    const nEmbed = config.with.model.n_embed;
    return {
      section: 'shapes',
      name: `experiments/vqgan-shapes.yaml, vqgan stage (${s.steps} steps${quick ? ', --quick: not the target run' : ''})`,
      backend: s.backend,
      ms: s._runtime * 1000,
      extra: {
        training_min: +(s._runtime / 60).toFixed(2),
        ms_per_step: +s.ms_per_step.toFixed(1),
        heldout_psnr_db: +s.eval_psnr.toFixed(2),
        perplexity: +s.eval_perplexity.toFixed(1),
        perplexity_pct_of_codebook: +((100 * s.eval_perplexity) / nEmbed).toFixed(1),
        target: 'psnr ≥ 28 dB, perplexity ≥ 25%, ≤ 10 min',
      },
    };
  } finally {
    rmSync(project, { recursive: true, force: true });
  }
}
