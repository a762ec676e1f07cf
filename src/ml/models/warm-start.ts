/**
 * Warm start of a DalleBart's encoder from a pretrained BART (dalle-mini's July 2021 recipe): the text
 * embeddings `model.shared`, the encoder positions, `layernorm_embedding`, every encoder layer and the
 * final encoder norm are copied bit-exactly from an HF BART folder (`config.json` + `model.safetensors`,
 * or shards listed by `model.safetensors.index.json`) — e.g. a downloaded `facebook/bart-large-cnn`, or
 * the folder a bart-pretrain run saved with `saveDalleBart`. The decoder and the lm head are never
 * touched.
 *
 * Like nanoGPT's `from_pretrained`, everything is planned from the headers and the source config first:
 * a checkpoint that does not fit is refused with the full list (WarmStartError) before any value moves.
 * Two differences are allowed and reported as `resized`: a different text vocabulary (the overlapping
 * rows of `model.shared` are copied, the rest initialised N(0, init_std)) and a longer position table
 * (the rows the model has are copied).
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { BartConfigSchema, readHfConfig } from '../hf-config.js';
import { Rng } from '../rng.js';
import type { RawTensor } from '../safetensors.js';
import {
  BART_POSITION_OFFSET,
  DALLEBART_CONFIG_FILE,
  DALLEBART_WEIGHTS_FILE,
  DALLEBART_WEIGHTS_INDEX,
  dalleBartConfigFromHf,
  encoderParamNames,
  openHfCheckpoint,
  forEachCheckpointTensor,
  type DalleBart,
  type DalleBartConfig,
  type HfCheckpoint,
} from './dallebart.js';

export interface WarmStartOptions {
  /** seed of the rows a resized `model.shared` adds (default 0) */
  seed?: number;
  /** false: copy what fits and report the rest in `mismatched` instead of refusing (default true) */
  strict?: boolean;
  /** receives the report's lines (e.g. the stage logger); nothing is printed when absent */
  log?: (line: string) => void;
}

export interface WarmStartMismatch {
  /** model parameter (or `config.<field>` for an architecture difference the shapes do not show) */
  name: string;
  /** what the model needs: PyTorch-layout shape, config value, or null when the model has no such tensor */
  expected: number[] | string | null;
  /** what the checkpoint has: shape, config value, or null when it lacks the tensor */
  got: number[] | string | null;
}

/** What a warm start did; JSON-serialisable, for the run's meta. */
export interface WarmStartReport {
  /** the folder read */
  source: string;
  /** its config's model_type ('bart' or 'dallebart') */
  sourceModelType: string;
  /** model parameters now equal to the checkpoint's tensors (bit-exact; resized ones on their overlap) */
  copied: string[];
  /** checkpoint tensors not used: decoder, lm head, HF's tied copies, … */
  skipped: string[];
  /** copied with a different row count: the text vocabulary or the number of positions differs */
  resized: { name: string; from: number[]; to: number[] }[];
  /** what did not fit (always empty after a strict warm start, which refuses instead) */
  mismatched: WarmStartMismatch[];
}

export class WarmStartError extends Error {
  constructor(
    readonly source: string,
    readonly mismatched: WarmStartMismatch[],
    detail?: string,
  ) {
    const lines = mismatched.slice(0, 25).map((m) => `  ${m.name}: checkpoint has ${fmt(m.got)}, model needs ${fmt(m.expected)}`);
    const more = mismatched.length > 25 ? `\n  … and ${mismatched.length - 25} more` : '';
    super(
      detail ??
        `${source}: cannot warm-start the encoder, ${mismatched.length} mismatch(es) (nothing was copied):\n${lines.join('\n')}${more}\n` +
          '  Make the encoder part of the model config (d_model, encoder_layers, encoder_attention_heads, encoder_ffn_dim, use_glu, use_bias, ln_positions, …) match the checkpoint\'s config.json.',
    );
    this.name = 'WarmStartError';
  }
}

function fmt(v: number[] | string | null): string {
  return v === null ? 'nothing' : Array.isArray(v) ? JSON.stringify(v) : JSON.stringify(v);
}

/**
 * The HF folder at `path`: `path` itself when it holds config.json and weights, otherwise the single
 * folder within two levels below that does (a run directory whose `out/` holds the saved model).
 */
export function resolveHfFolder(path: string): string {
  const isModel = (d: string): boolean => existsSync(join(d, DALLEBART_CONFIG_FILE)) && (existsSync(join(d, DALLEBART_WEIGHTS_FILE)) || existsSync(join(d, DALLEBART_WEIGHTS_INDEX)));
  if (!existsSync(path) || !statSync(path).isDirectory()) throw new WarmStartError(path, [], `${path}: not a folder (encoder_init needs an HF BART folder: config.json + model.safetensors)`);
  if (isModel(path)) return path;
  const found: string[] = [];
  const walk = (d: string, depth: number): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (!e.isDirectory()) continue;
      const sub = join(d, e.name);
      if (isModel(sub)) found.push(sub);
      else if (depth < 2) walk(sub, depth + 1);
    }
  };
  walk(path, 1);
  if (found.length === 1) return found[0] as string;
  throw new WarmStartError(
    path,
    [],
    found.length
      ? `${path}: holds ${found.length} model folders (${found.join(', ')}); name one of them`
      : `${path}: no ${DALLEBART_CONFIG_FILE} with ${DALLEBART_WEIGHTS_FILE} or ${DALLEBART_WEIGHTS_INDEX} here or two levels below`,
  );
}

/** One planned copy: model parameter ← checkpoint tensor, with the rows to take when resizing. */
interface Copy {
  param: string;
  src: string;
  /** rows of the model parameter (dim 0) filled from the source; the rest are initialised */
  rows?: number;
}

/** Where each model encoder parameter lives in the checkpoint (first candidate present wins). */
function sourceCandidates(name: string, prefix: string): string[] {
  if (name === 'model.shared.weight') return [`${prefix}shared.weight`, `${prefix}encoder.embed_tokens.weight`];
  const rest = name.slice('model.'.length); // encoder.…
  // dalle-mini's final encoder norm was `final_ln`; mBART's (and ours) is `layer_norm`
  const m = /^encoder\.layer_norm\.(weight|bias)$/.exec(rest);
  if (m) return [`${prefix}${rest}`, `${prefix}encoder.final_ln.${m[1]}`];
  return [`${prefix}${rest}`];
}

/** Architecture fields that change what the copied weights compute without changing their shapes. */
const SEMANTIC_FIELDS = ['encoder_attention_heads', 'ln_positions', 'activation_function', 'scale_embedding', 'use_glu', 'use_bias', 'use_final_ln_encoder', 'd_model', 'encoder_layers', 'encoder_ffn_dim'] as const;

function planWarmStart(model: DalleBart, ckpt: HfCheckpoint, srcConfig: DalleBartConfig): { copies: Copy[]; report: Omit<WarmStartReport, 'source' | 'sourceModelType' | 'copied'> } {
  const c = model.config;
  const mismatched: WarmStartMismatch[] = [];
  const resized: WarmStartReport['resized'] = [];
  const copies: Copy[] = [];
  for (const f of SEMANTIC_FIELDS) {
    if (srcConfig[f] !== c[f]) mismatched.push({ name: `config.${f}`, expected: String(c[f]), got: String(srcConfig[f]) });
  }
  const names = [...ckpt.tensors.keys()];
  const prefix = names.some((n) => n.startsWith('model.encoder.')) ? 'model.' : names.some((n) => n.startsWith('encoder.')) ? '' : null;
  if (prefix === null) throw new WarmStartError(ckpt.dir, [], `${ckpt.dir}: no encoder tensors (expected names like model.encoder.layers.0.self_attn.q_proj.weight)`);
  const used = new Set<string>();
  for (const name of encoderParamNames(model)) {
    const v = model.params.get(name);
    const kind = model.params.kind(name);
    const expected = kind === 'linear' ? [v.shape[1] as number, v.shape[0] as number] : v.shape.slice();
    const src = sourceCandidates(name, prefix).find((s) => ckpt.tensors.has(s));
    if (!src) {
      mismatched.push({ name, expected, got: null });
      continue;
    }
    used.add(src);
    const got = (ckpt.tensors.get(src) as { shape: number[] }).shape;
    const sameRank = got.length === expected.length;
    const sameCols = sameRank && got.slice(1).every((d, i) => d === expected[i + 1]);
    if (sameRank && sameCols && got[0] === expected[0]) {
      copies.push({ param: name, src });
    } else if (sameCols && name === 'model.shared.weight') {
      // another tokenizer: keep the rows both have, initialise the others
      copies.push({ param: name, src, rows: Math.min(got[0] as number, expected[0] as number) });
      resized.push({ name, from: got.slice(), to: expected });
    } else if (sameCols && name === 'model.encoder.embed_positions.weight' && (got[0] as number) > (expected[0] as number)) {
      // a longer position table (BART has 1024 positions): the first max_text_length (+ offset) rows
      copies.push({ param: name, src, rows: expected[0] as number });
      resized.push({ name, from: got.slice(), to: expected });
    } else {
      mismatched.push({ name, expected, got: got.slice() });
    }
  }
  // encoder layers the model does not have are a mismatch (config.encoder_layers says so), not skipped silently
  const skipped = names.filter((n) => !used.has(n));
  return { copies, report: { skipped, resized, mismatched } };
}

/**
 * Copies a pretrained BART encoder into `model` (see the file comment). `source` is an HF folder or a
 * run directory holding exactly one (see `resolveHfFolder`). Refuses with WarmStartError, before
 * touching the model, when any encoder parameter is absent or shaped differently in the checkpoint or
 * the source config differs in an encoder field (heads, norm positions, activation, …); with
 * `strict: false` it copies what fits instead. Never touches a decoder or lm-head parameter.
 */
export async function warmStartEncoder(model: DalleBart, source: string, opts: WarmStartOptions = {}): Promise<WarmStartReport> {
  const dir = resolveHfFolder(source);
  const configFile = join(dir, DALLEBART_CONFIG_FILE);
  const raw = readHfConfig(configFile, BartConfigSchema);
  let srcConfig: DalleBartConfig;
  try {
    srcConfig = dalleBartConfigFromHf(raw, configFile);
  } catch (e) {
    throw new WarmStartError(dir, [], `${dir}: its config.json does not describe a BART this code can run: ${(e as Error).message}`);
  }
  const ckpt = openHfCheckpoint(dir);
  const { copies, report } = planWarmStart(model, ckpt, srcConfig);
  if ((opts.strict ?? true) && report.mismatched.length) throw new WarmStartError(dir, report.mismatched);

  const bySource = new Map(copies.map((cp) => [cp.src, cp]));
  const rng = new Rng(opts.seed ?? 0);
  await forEachCheckpointTensor(ckpt, bySource.keys(), (src, t) => {
    const cp = bySource.get(src) as Copy;
    assignCopy(model, cp, t, rng);
  });
  const out: WarmStartReport = { source: dir, sourceModelType: raw.model_type ?? 'bart', copied: copies.map((cp) => cp.param), ...report };
  if (opts.log) for (const line of formatWarmStartReport(out, model.config)) opts.log(line);
  return out;
}

function assignCopy(model: DalleBart, cp: Copy, t: RawTensor, rng: Rng): void {
  const v = model.params.get(cp.param);
  const kind = model.params.kind(cp.param);
  if (cp.rows === undefined) {
    tf.tidy(() => {
      const x = tf.tensor(t.data, t.shape, 'float32');
      v.assign(kind === 'linear' ? tf.transpose(x, [1, 0]) : x);
    });
    return;
  }
  // row-resized plain table (embeddings): rows [0, cp.rows) from the file, the rest N(0, init_std)
  const [R, C] = v.shape as [number, number];
  const data = new Float32Array(R * C);
  data.set(t.data.subarray(0, cp.rows * C));
  if (cp.rows < R) rng.fillNormal(data.subarray(cp.rows * C), 0, model.config.init_std);
  tf.tidy(() => v.assign(tf.tensor(data, [R, C], 'float32')));
}

/** Compresses `model.encoder.layers.N.…` names into ranges for printing. */
function summarise(names: string[]): string {
  const layers = new Map<string, Set<number>>();
  const other: string[] = [];
  for (const n of names) {
    const m = /^(.*?\blayers)\.(\d+)\./.exec(n);
    if (m) {
      const key = m[1] as string;
      layers.set(key, (layers.get(key) ?? new Set()).add(Number(m[2])));
    } else other.push(n);
  }
  const parts = [...layers].map(([k, s]) => {
    const ix = [...s].sort((a, b) => a - b);
    return ix.length === 1 ? `${k}.${ix[0]}.*` : `${k}.${ix[0]}–${ix[ix.length - 1]}.*`;
  });
  const shown = other.slice(0, 6);
  return [...parts, ...shown, ...(other.length > shown.length ? [`… ${other.length - shown.length} more`] : [])].join(', ');
}

/** The report as the lines a stage prints. */
export function formatWarmStartReport(r: WarmStartReport, config?: DalleBartConfig): string[] {
  const lines = [`warm start from ${r.source} (${r.sourceModelType}): copied ${r.copied.length} encoder tensors bit-exactly: ${summarise(r.copied)}`];
  for (const z of r.resized) {
    const why = z.name === 'model.shared.weight'
      ? `the text vocabulary differs (checkpoint ${z.from[0]} tokens, model ${z.to[0]})${(z.from[0] as number) < (z.to[0] as number) ? `; rows ${z.from[0]}–${(z.to[0] as number) - 1} initialised N(0, ${config?.init_std ?? 'init_std'})` : ''}: the tokenizer must agree with the checkpoint's on the shared ids`
      : `the checkpoint has ${(z.from[0] as number) - BART_POSITION_OFFSET} positions, the model ${(z.to[0] as number) - BART_POSITION_OFFSET}: the first ones copied`;
    lines.push(`  resized ${z.name} ${JSON.stringify(z.from)} → ${JSON.stringify(z.to)}: ${why}`);
  }
  if (r.mismatched.length) lines.push(`  NOT copied (${r.mismatched.length} mismatch(es)): ${r.mismatched.map((m) => `${m.name} (${fmt(m.got)} vs ${fmt(m.expected)})`).join('; ')}`);
  lines.push(`  skipped ${r.skipped.length} checkpoint tensors: ${summarise(r.skipped)}`);
  lines.push('  decoder and lm head left at their initialisation');
  return lines;
}
