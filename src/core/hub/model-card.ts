/**
 * The model card (README.md) of a pushed model folder: YAML front matter the Hub reads (library, tags), what
 * produced it (experiment, stage, plugin, run, step), its metrics from summary.json, and how to load it.
 */
import { stringify } from 'yaml';

export interface ModelCardInput {
  repo: string;
  /** Commit-independent revision to cite in the loading example (e.g. `main`). */
  revision?: string;
  experiment: string;
  stage: string;
  plugin: string;
  runId: string;
  step?: number;
  /** summary.json of the run (underscore keys are bookkeeping and left out). */
  summary: Record<string, unknown>;
  /** What the folder is: a finished model, or a checkpoint of a running stage. */
  kind: 'model' | 'checkpoint';
  /** Files in the commit, for the listing. */
  files: { path: string; size: number }[];
}

function formatMetric(v: unknown): string {
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : v.toPrecision(5).replace(/\.?0+$/, '');
  return typeof v === 'string' ? v.replace(/\|/g, '\\|').replace(/\n/g, ' ') : JSON.stringify(v);
}

function formatSize(bytes: number): string {
  const units = ['B', 'KB', 'MB', 'GB'];
  let v = bytes;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return `${u === 0 ? v : v.toFixed(1)} ${units[u]}`;
}

export function modelCard(c: ModelCardInput): string {
  const best = (c.summary._best ?? {}) as Record<string, { value: number; step: number; primary?: boolean }>;
  const metrics = Object.entries(c.summary).filter(([k, v]) => !k.startsWith('_') && v !== null && typeof v !== 'object');
  const front = stringify({ library_name: 'minidalle', tags: ['minidalle', 'dalle-mini', c.plugin, c.kind === 'checkpoint' ? 'checkpoint' : 'model'] }).trimEnd();
  const ref = `hf:${c.repo}${c.revision && c.revision !== 'main' ? `@${c.revision}` : ''}`;
  const what = c.kind === 'checkpoint' ? `a checkpoint (step ${c.step ?? '?'}) of the running` : 'the model folder of the';
  const lines = [
    '---',
    front,
    '---',
    '',
    `# ${c.repo}`,
    '',
    `This is ${what} \`${c.stage}\` stage (plugin \`${c.plugin}\`) of the minidalle experiment \`${c.experiment}\`, run \`${c.runId}\`${c.step !== undefined ? ` at step ${c.step}` : ''}. It was pushed by minidalle's \`checkpoint-push\` plugin.`,
    '',
    '## Metrics',
    '',
  ];
  if (metrics.length === 0) lines.push('The run recorded no metrics.');
  else {
    lines.push('| metric | last | best (step) |', '|---|---|---|');
    for (const [k, v] of metrics) lines.push(`| ${k} | ${formatMetric(v)} | ${best[k] ? `${formatMetric(best[k].value)} (${best[k].step})${best[k].primary ? ' — key metric' : ''}` : ''} |`);
  }
  lines.push('', '## Use it with minidalle', '', 'Anywhere minidalle takes a model or checkpoint folder, it takes this repo (downloaded once into the cache, verified by digest):', '');
  if (c.plugin === 'seq2seq-train') lines.push('```sh', `npx minidalle generate "a red circle on the left" --model ${ref} -n 8`);
  else if (c.plugin === 'vqgan-finetune') lines.push('```yaml', 'stages:', `  vqgan: { plugin: vqgan-finetune, with: { init: ${ref} } }`, `  encode: { plugin: encode-dataset, needs: [data], with: { vqgan: ${ref} } }`);
  else if (c.plugin === 'bart-pretrain') lines.push('```yaml', 'stages:', `  seq2seq: { plugin: seq2seq-train, needs: [encode], with: { encoder_init: ${ref} } }`);
  else lines.push('```yaml', `# any plugin field that takes a model folder: ${ref}`);
  lines.push('```', '', 'Pin a revision with `@<commit>` for a reproducible run.', '', '## Files', '', ...c.files.map((f) => `- \`${f.path}\` (${formatSize(f.size)})`), '');
  return lines.join('\n');
}
