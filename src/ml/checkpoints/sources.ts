/**
 * Finding and opening a source checkpoint: a file (`.ckpt`, `.bin`, `.pt`, `.pth`, `.msgpack`,
 * `pytorch_model.bin.index.json`) or a folder holding one (HF layout, or taming's `checkpoints/last.ckpt`).
 * Every format comes out as one flat map of lazily read tensors.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { MinidalleError } from '../../core/errors.js';
import { readFlaxCheckpoint } from './flax.js';
import type { SourceTensor } from './tensor.js';
import { openTorchCheckpoint, torchStateDict, type TorchCheckpoint } from './torch.js';

export class ConvertError extends MinidalleError {
  override name = 'ConvertError';
}

export type SourceFormat = 'torch-zip' | 'torch-legacy' | 'torch-sharded' | 'flax-msgpack';

export interface SourceCheckpoint {
  /** the file read (the index file for a sharded checkpoint) */
  file: string;
  format: SourceFormat;
  /** name → tensor ('.'-joined for PyTorch, '/'-joined paths for Flax) */
  tensors: Map<string, SourceTensor>;
  /** where the state dict sat in the file ('' = top level, 'state_dict' = Lightning) */
  statePath: string;
  /** what the file holds besides the tensors, for the report */
  extras: string[];
  close(): Promise<void>;
}

/** Weight files looked for in a folder, in this order. */
const FOLDER_CANDIDATES = ['pytorch_model.bin.index.json', 'pytorch_model.bin', 'flax_model.msgpack', 'model.ckpt', 'checkpoints/last.ckpt', 'last.ckpt'];

/** The weight file of `input` (itself when it is a file). */
export function findSourceFile(input: string): string {
  if (!existsSync(input)) throw new ConvertError(`${input}: no such file or folder`);
  if (!statSync(input).isDirectory()) return input;
  for (const c of FOLDER_CANDIDATES) if (existsSync(join(input, c))) return join(input, c);
  const loose = readdirSync(input).filter((f) => /\.(ckpt|pt|pth|bin|msgpack)$/.test(f));
  if (loose.length === 1) return join(input, loose[0] as string);
  if (existsSync(join(input, 'model.safetensors'))) throw new ConvertError(`${input}: holds model.safetensors already — a minidalle model folder needs no conversion`);
  throw new ConvertError(
    loose.length
      ? `${input}: several checkpoints (${loose.join(', ')}): name the one to convert`
      : `${input}: no checkpoint found (looked for ${FOLDER_CANDIDATES.join(', ')}, *.ckpt, *.pt, *.pth, *.bin, *.msgpack)`,
  );
}

async function openTorchFile(file: string): Promise<SourceCheckpoint> {
  const ckpt = await openTorchCheckpoint(file);
  try {
    const sd = torchStateDict(ckpt);
    const extras: string[] = [];
    if (sd.otherTopKeys.length) extras.push(`also in the file (not converted): ${sd.otherTopKeys.join(', ')}`);
    if (Object.keys(sd.scalars).length) extras.push(Object.entries(sd.scalars).map(([k, v]) => `${k}=${v}`).join(' '));
    if (sd.nonTensors.length) extras.push(`non-tensor entries of the state dict (skipped): ${sd.nonTensors.join(', ')}`);
    return { file, format: ckpt.format === 'zip' ? 'torch-zip' : 'torch-legacy', tensors: sd.tensors, statePath: sd.path, extras, close: () => ckpt.close() };
  } catch (e) {
    await ckpt.close();
    throw e;
  }
}

/** transformers' sharded checkpoint: `weight_map` (tensor → shard file) in the index, shards beside it. */
async function openShardedTorch(index: string): Promise<SourceCheckpoint> {
  let weightMap: Record<string, unknown>;
  try {
    const parsed = JSON.parse(readFileSync(index, 'utf8')) as { weight_map?: unknown };
    if (typeof parsed.weight_map !== 'object' || parsed.weight_map === null) throw new Error('no "weight_map" object');
    weightMap = parsed.weight_map as Record<string, unknown>;
  } catch (e) {
    throw new ConvertError(`${index}: not a valid checkpoint index: ${(e as Error).message}`);
  }
  const byShard = new Map<string, string[]>();
  for (const [name, shard] of Object.entries(weightMap)) {
    if (typeof shard !== 'string' || shard.includes('/') || shard.includes('\\')) throw new ConvertError(`${index}: "${name}" maps to ${JSON.stringify(shard)}, not a file name in the folder`);
    byShard.set(shard, [...(byShard.get(shard) ?? []), name]);
  }
  const opened: TorchCheckpoint[] = [];
  const closeAll = async (): Promise<void> => void (await Promise.all(opened.map((c) => c.close())));
  const tensors = new Map<string, SourceTensor>();
  try {
    for (const [shard, names] of byShard) {
      const file = join(dirname(index), shard);
      if (!existsSync(file)) throw new ConvertError(`${index}: shard ${shard} is missing`);
      const ckpt = await openTorchCheckpoint(file);
      opened.push(ckpt);
      const sd = torchStateDict(ckpt);
      for (const name of names) {
        const t = sd.tensors.get(name);
        if (!t) throw new ConvertError(`${index} puts "${name}" in ${shard}, which does not hold it`);
        tensors.set(name, t);
      }
      const extra = [...sd.tensors.keys()].filter((n) => weightMap[n] !== shard);
      if (extra.length) throw new ConvertError(`${file}: holds tensors the index does not place there: ${extra.join(', ')}`);
    }
  } catch (e) {
    await closeAll();
    throw e;
  }
  return { file: index, format: 'torch-sharded', tensors, statePath: '', extras: [`${byShard.size} shard(s)`], close: closeAll };
}

/** Opens any supported checkpoint file. */
export async function openSourceCheckpoint(file: string): Promise<SourceCheckpoint> {
  if (basename(file).endsWith('.index.json')) return openShardedTorch(file);
  if (file.endsWith('.msgpack')) {
    const f = await readFlaxCheckpoint(file);
    const extras = f.nonTensors.length ? [`non-array leaves (skipped): ${f.nonTensors.join(', ')}`] : [];
    return { file, format: 'flax-msgpack', tensors: f.tensors, statePath: '', extras, close: async () => undefined };
  }
  if (file.endsWith('.safetensors')) throw new ConvertError(`${file}: already safetensors (a minidalle folder is config.json + model.safetensors under the model's names)`);
  return openTorchFile(file);
}
