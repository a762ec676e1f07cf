/**
 * Converts a published checkpoint into a minidalle model folder (`config.json` + `model.safetensors`
 * under our names, PyTorch layout):
 *
 *   find the weights → open them (torch zip / legacy / sharded, Flax msgpack) → recognise the model
 *   → its config → the name map → check every name and shape → stream the tensors out
 *
 * Nothing is written unless every tensor maps and fits: the error lists every mismatch. Tokenizer files
 * found beside the weights are copied, so an HF folder converts into a complete model folder.
 */
import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { initCompute } from '../backend.js';
import { writeHfConfig } from '../hf-config.js';
import { detectKind, kindByName } from './kinds.js';
import { checkMapped, CheckpointMismatchError, type DroppedTensor } from './maps/common.js';
import { ConvertError, findSourceFile, openSourceCheckpoint, type SourceFormat } from './sources.js';
import { writeSafetensorsStreaming, type OutputFloatDtype } from './writer.js';

export interface ConvertOptions {
  /** a checkpoint file or a folder holding one */
  input: string;
  /** the model folder to write */
  to: string;
  /** model kind (detected from the tensor names when absent) */
  kind?: string;
  /** storage dtype of float tensors (default float32) */
  dtype?: 'float32' | 'float16';
  /** the model config (taming YAML, config.json) when it is not beside the weights */
  config?: string;
  /** replace a model.safetensors already in `to` */
  force?: boolean;
  /** taming: also write the LPIPS network of its training loss to lpips.safetensors */
  keepLoss?: boolean;
  onTensor?: (done: number, total: number, name: string) => void;
}

export interface ConvertReport {
  source: string;
  format: SourceFormat;
  kind: string;
  /** where the state dict was in the file ('' top level, 'state_dict' for Lightning) */
  statePath: string;
  configFile: string;
  /** tensors written */
  converted: number;
  /** how many of them had their layout changed (Flax kernels transposed, norm scales reshaped) */
  relaid: number;
  dropped: DroppedTensor[];
  notes: string[];
  extras: string[];
  copied: string[];
  /** further files written (lpips.safetensors), with what they hold and their tensor count */
  sidecars: { file: string; what: string; tensors: number }[];
  bytes: number;
  dtype: OutputFloatDtype;
  out: string;
}

/** Files beside HF weights that belong in the model folder too. */
const COMPANION_FILES = ['tokenizer.json', 'vocab.json', 'merges.txt', 'tokenizer_config.json', 'special_tokens_map.json'];

export async function convertCheckpoint(opts: ConvertOptions): Promise<ConvertReport> {
  const file = findSourceFile(opts.input);
  const out = resolve(opts.to);
  const weights = join(out, 'model.safetensors');
  if (existsSync(weights) && !opts.force) throw new ConvertError(`${weights} exists already: pass --force to replace it, or choose another --to`);
  if (resolve(dirname(file)) === out) throw new ConvertError(`--to ${opts.to} is the folder of the source checkpoint: write the converted model to a folder of its own`);
  // The models' shape maps are read from throwaway parameter trees, which need a tf engine.
  await initCompute({ selfCheck: false });
  const src = await openSourceCheckpoint(file);
  try {
    const kind = opts.kind ? kindByName(opts.kind) : detectKind(src);
    const prepared = kind.prepare(src, { ...(opts.config ? { config: opts.config } : {}), ...(opts.keepLoss ? { keepLoss: true } : {}) });
    const { mapped, expected } = prepared;
    const shapes = new Map([...src.tensors].map(([n, t]) => [n, t.shape] as [string, number[]]));
    const check = (m: typeof mapped, want: Map<string, number[]>, what: string): void => {
      const mismatches = checkMapped(m, want, shapes);
      if (!mismatches.length) return;
      const froms = new Map([...m.tensors].map(([n, t]) => [n, t.from] as [string, string]));
      throw new CheckpointMismatchError(`${file} (as ${what}, config ${prepared.configFile})`, mismatches, froms);
    };
    check(mapped, expected, kind.name);
    for (const s of prepared.sidecars ?? []) check(s.mapped, s.expected, s.what);
    const dtype: OutputFloatDtype = opts.dtype === 'float16' ? 'F16' : 'F32';
    mkdirSync(out, { recursive: true });
    const tensors = [...mapped.tensors.values()];
    const metadata = { format: 'pt', converted_from: file.split('/').slice(-2).join('/') };
    const bytes = await writeSafetensorsStreaming(weights, tensors, { floatDtype: dtype, metadata, ...(opts.onTensor ? { onTensor: opts.onTensor } : {}) });
    const sidecars: ConvertReport['sidecars'] = [];
    for (const s of prepared.sidecars ?? []) {
      // F32 always: these are frozen loss networks, read by loaders that expect full precision
      await writeSafetensorsStreaming(join(out, s.file), [...s.mapped.tensors.values()], { floatDtype: 'F32', metadata });
      sidecars.push({ file: s.file, what: s.what, tensors: s.mapped.tensors.size });
    }
    writeHfConfig(join(out, 'config.json'), prepared.config);
    const copied: string[] = [];
    for (const f of COMPANION_FILES) {
      const p = join(dirname(file), f);
      if (existsSync(p)) {
        copyFileSync(p, join(out, f));
        copied.push(f);
      }
    }
    return {
      source: file,
      format: src.format,
      kind: kind.name,
      statePath: src.statePath,
      configFile: prepared.configFile,
      converted: tensors.length,
      relaid: tensors.filter((t) => t.perm || t.shape).length,
      dropped: mapped.dropped,
      notes: mapped.notes,
      extras: src.extras,
      copied,
      sidecars,
      bytes,
      dtype,
      out,
    };
  } finally {
    await src.close();
  }
}

/** The report as lines for the terminal: what was converted, what was dropped and why. */
export function formatConvertReport(r: ConvertReport): string[] {
  const lines = [
    `converted ${r.source} (${r.format}${r.statePath ? `, ${r.statePath}` : ''}) as ${r.kind} → ${r.out}`,
    `  ${r.converted} tensors written as ${r.dtype} (${(r.bytes / 2 ** 20).toFixed(1)} MiB)${r.relaid ? `, ${r.relaid} re-laid out (Flax kernels → PyTorch layout)` : ''}`,
    `  config: ${r.configFile} → config.json`,
  ];
  for (const s of r.sidecars) lines.push(`  ${s.file}: ${s.tensors} tensors, ${s.what}`);
  if (r.copied.length) lines.push(`  copied: ${r.copied.join(', ')}`);
  for (const n of r.notes) lines.push(`  note: ${n}`);
  if (r.dropped.length) {
    const byReason = new Map<string, string[]>();
    for (const d of r.dropped) byReason.set(d.reason, [...(byReason.get(d.reason) ?? []), d.name]);
    lines.push(`  dropped ${r.dropped.length} tensor(s):`);
    for (const [reason, names] of byReason) lines.push(`    ${reason} (${names.length}): ${names.slice(0, 6).join(', ')}${names.length > 6 ? `, … ${names.length - 6} more` : ''}`);
  } else lines.push('  dropped: nothing');
  for (const e of r.extras) lines.push(`  ${e}`);
  return lines;
}
