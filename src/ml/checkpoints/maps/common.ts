/**
 * What every name map produces, and the one check that follows it: the mapped tensors against the
 * model's expected names and PyTorch-layout shapes (nanoGPT's `from_pretrained` asserts), listing every
 * missing, unexpected and wrongly shaped tensor rather than guessing.
 */
import type { LoadMismatch } from '../../params.js';
import type { SourceTensor } from '../tensor.js';
import { outputShape, type OutputTensor } from '../writer.js';

export interface DroppedTensor {
  name: string;
  reason: string;
}

export interface MappedCheckpoint {
  /** target name → how to write it */
  tensors: Map<string, OutputTensor>;
  /** source tensors left out on purpose, each with its reason */
  dropped: DroppedTensor[];
  /** source names no rule of the map covers (they count as mismatches) */
  unmapped: string[];
  /** things the map did besides renaming (added a zero buffer, used an alias), for the report */
  notes: string[];
}

export function emptyMapped(): MappedCheckpoint {
  return { tensors: new Map(), dropped: [], unmapped: [], notes: [] };
}

/** Adds one mapped tensor; two sources mapping to one name is a mismatch of the map, said so. */
export function put(m: MappedCheckpoint, name: string, from: string, source: SourceTensor, layout: { perm?: number[]; shape?: number[] } = {}): void {
  const prior = m.tensors.get(name);
  if (prior) throw new Error(`both "${prior.from}" and "${from}" map to "${name}"`);
  m.tensors.set(name, { name, from, source, ...(layout.perm ? { perm: layout.perm } : {}), ...(layout.shape ? { shape: layout.shape } : {}) });
}

export class CheckpointMismatchError extends Error {
  constructor(
    readonly source: string,
    readonly mismatches: LoadMismatch[],
    readonly froms: Map<string, string>,
  ) {
    const lines = mismatches.map((m) => {
      const from = froms.get(m.name);
      const via = from && from !== m.name ? ` (from "${from}")` : '';
      if (m.problem === 'shape') return `  ${m.name}${via}: shape ${JSON.stringify(m.got)}, expected ${JSON.stringify(m.expected)}`;
      if (m.problem === 'missing') return `  ${m.name}: missing (expected ${JSON.stringify(m.expected)})`;
      return `  ${m.name}${via}: not a parameter of the model${m.got ? ` (shape ${JSON.stringify(m.got)})` : ''}`;
    });
    super(`${source}: ${mismatches.length} mismatch(es) against the model's parameters, nothing written:\n${lines.join('\n')}`);
    this.name = 'CheckpointMismatchError';
  }
}

/**
 * Every mismatch between mapped tensors (and unmapped source names) and `expected`
 * (name → PyTorch-layout shape). Empty when the checkpoint fits the model exactly.
 */
export function checkMapped(m: MappedCheckpoint, expected: Map<string, number[]>, sourceShapes: Map<string, number[]>): LoadMismatch[] {
  const out: LoadMismatch[] = [];
  for (const [name, shape] of expected) {
    const t = m.tensors.get(name);
    if (!t) {
      out.push({ name, problem: 'missing', expected: shape });
      continue;
    }
    const got = outputShape(t);
    if (got.length !== shape.length || got.some((d, i) => d !== shape[i])) out.push({ name, problem: 'shape', expected: shape, got });
  }
  for (const [name, t] of m.tensors) if (!expected.has(name)) out.push({ name, problem: 'unexpected', got: outputShape(t) });
  for (const name of m.unmapped) out.push({ name, problem: 'unexpected', got: sourceShapes.get(name) ?? [] });
  return out;
}

/** Splits `a.b.c` / `a/b/c` names into the leaf and the module path. */
export function leafOf(path: string, sep: string): { module: string; leaf: string } {
  const i = path.lastIndexOf(sep);
  return i < 0 ? { module: '', leaf: path } : { module: path.slice(0, i), leaf: path.slice(i + 1) };
}

/**
 * Flax parameter leaf → PyTorch name and layout: `kernel` → `weight` (Dense [in, out] → [out, in];
 * Conv HWIO → OIHW), `scale` → `weight`, `embedding` → `weight`; `bias` and anything else keep their
 * name. Norm scales/biases written as [1, 1, 1, C] (older Flax GroupNorm) become [C].
 */
export function flaxLeafToTorch(module: string, leaf: string, shape: number[]): { name: string; perm?: number[]; shape?: number[] } {
  const prefix = module ? `${module}.` : '';
  const squeeze = shape.length > 1 && shape.slice(0, -1).every((d) => d === 1) ? { shape: [shape[shape.length - 1] as number] } : {};
  if (leaf === 'kernel') {
    if (shape.length === 4) return { name: `${prefix}weight`, perm: [3, 2, 0, 1] };
    if (shape.length === 2) return { name: `${prefix}weight`, perm: [1, 0] };
    return { name: `${prefix}weight` };
  }
  if (leaf === 'scale') return { name: `${prefix}weight`, ...squeeze };
  if (leaf === 'embedding') return { name: `${prefix}weight` };
  if (leaf === 'bias') return { name: `${prefix}bias`, ...squeeze };
  return { name: `${prefix}${leaf}` };
}
