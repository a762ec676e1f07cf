/**
 * A model's parameters: a flat, ordered map from Hugging Face / taming names
 * (`encoder.layers.0.self_attn.k_proj.weight`, `decoder.up.1.block.0.conv1.weight`) to tf.Variables.
 *
 * Internal layout (chosen for the fast paths of the wasm backend, converted explicitly at load/save):
 *   kind 'linear'  weight [in, out]            (PyTorch / HF stores [out, in])      → y = x @ W
 *   kind 'conv2d'  weight [kh, kw, in, out]    (PyTorch stores [out, in, kh, kw])    → tf.conv2d, NHWC
 *   kind 'plain'   anything else (biases, norms, embeddings [V, C]) — same layout in both.
 * `loadParams` and `exportParams` apply exactly these transposes, keyed by each parameter's kind, so a
 * checkpoint written by us reads in PyTorch with the names and shapes it expects.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Rng } from './rng.js';
import { forEachSafetensor, readSafetensorsHeader, writeSafetensors, type RawTensor, type WriteOptions } from './safetensors.js';

export type ParamKind = 'linear' | 'conv2d' | 'plain';

export class ParamError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ParamError';
  }
}

let nextParamsId = 0;

export class Params {
  private readonly vars = new Map<string, tf.Variable>();
  private readonly kinds = new Map<string, ParamKind>();
  /** tf variable names are global to the engine, so each Params gets its own namespace. */
  private readonly ns = `params${nextParamsId++}`;

  /** Adds a parameter, taking ownership of `value` (it becomes a trainable variable). */
  add(name: string, value: tf.Tensor, kind: ParamKind = 'plain', trainable = true): tf.Variable {
    if (this.vars.has(name)) throw new ParamError(`parameter "${name}" is already defined`);
    if (kind === 'linear' && value.rank !== 2) throw new ParamError(`linear parameter "${name}" must be 2-D [in, out], got ${JSON.stringify(value.shape)}`);
    if (kind === 'conv2d' && value.rank !== 4) throw new ParamError(`conv2d parameter "${name}" must be 4-D [kh, kw, in, out], got ${JSON.stringify(value.shape)}`);
    const v = tf.variable(value, trainable, `${this.ns}/${name}`);
    value.dispose();
    this.vars.set(name, v);
    this.kinds.set(name, kind);
    return v;
  }

  get(name: string): tf.Variable {
    const v = this.vars.get(name);
    if (!v) throw new ParamError(`parameter "${name}" does not exist (have ${this.vars.size} parameters${this.vars.size ? `, e.g. "${this.vars.keys().next().value}"` : ''})`);
    return v;
  }

  has(name: string): boolean {
    return this.vars.has(name);
  }

  kind(name: string): ParamKind {
    return this.kinds.get(name) ?? 'plain';
  }

  names(): string[] {
    return [...this.vars.keys()];
  }

  entries(): IterableIterator<[string, tf.Variable]> {
    return this.vars.entries();
  }

  get size(): number {
    return this.vars.size;
  }

  /** Total number of scalar parameters (optionally only names passing `filter`). */
  count(filter?: (name: string) => boolean): number {
    let n = 0;
    for (const [name, v] of this.vars) if (!filter || filter(name)) n += v.size;
    return n;
  }

  /** Trainable variables in insertion order (what `tf.variableGrads` needs). */
  trainable(): tf.Variable[] {
    return [...this.vars.values()].filter((v) => v.trainable);
  }

  /** The name of a variable from its tf name (maps `variableGrads` output back to our names). */
  nameOf(v: tf.Variable): string {
    const prefix = `${this.ns}/`;
    if (!v.name.startsWith(prefix)) throw new ParamError(`variable ${v.name} does not belong to this parameter set`);
    return v.name.slice(prefix.length);
  }

  dispose(): void {
    for (const v of this.vars.values()) v.dispose();
    this.vars.clear();
    this.kinds.clear();
  }
}

// ---------------------------------------------------------------------------------------------------
// initialisers: values come from our seeded Rng, so init is identical on every backend

export function normalInit(rng: Rng, shape: number[], std: number, mean = 0): tf.Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return tf.tensor(rng.fillNormal(new Float32Array(n), mean, std), shape, 'float32');
}

export function uniformInit(rng: Rng, shape: number[], lo: number, hi: number): tf.Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return tf.tensor(rng.fillUniform(new Float32Array(n), lo, hi), shape, 'float32');
}

export function zerosInit(shape: number[]): tf.Tensor {
  return tf.zeros(shape, 'float32');
}

export function onesInit(shape: number[]): tf.Tensor {
  return tf.ones(shape, 'float32');
}

// ---------------------------------------------------------------------------------------------------
// declaring common parameter groups (names follow HF / taming)

export interface LinearSpec {
  bias?: boolean;
  std?: number;
}

/** `${prefix}.weight` [in, out] ~ N(0, std) and optional zero `${prefix}.bias` [out]. */
export function addLinear(p: Params, rng: Rng, prefix: string, inDim: number, outDim: number, spec: LinearSpec = {}): void {
  p.add(`${prefix}.weight`, normalInit(rng, [inDim, outDim], spec.std ?? 0.02), 'linear');
  if (spec.bias ?? true) p.add(`${prefix}.bias`, zerosInit([outDim]));
}

/** `${prefix}.weight` [kh, kw, in, out] (He-normal by default) and zero `${prefix}.bias`. */
export function addConv2d(p: Params, rng: Rng, prefix: string, inCh: number, outCh: number, k: number, spec: LinearSpec = {}): void {
  const std = spec.std ?? Math.sqrt(2 / (k * k * inCh));
  p.add(`${prefix}.weight`, normalInit(rng, [k, k, inCh, outCh], std), 'conv2d');
  if (spec.bias ?? true) p.add(`${prefix}.bias`, zerosInit([outCh]));
}

/** LayerNorm/GroupNorm affine: `${prefix}.weight` = 1, `${prefix}.bias` = 0 (either can be left out). */
export function addNorm(p: Params, prefix: string, dim: number, spec: { weight?: boolean; bias?: boolean } = {}): void {
  if (spec.weight ?? true) p.add(`${prefix}.weight`, onesInit([dim]));
  if (spec.bias ?? true) p.add(`${prefix}.bias`, zerosInit([dim]));
}

export function addEmbedding(p: Params, rng: Rng, prefix: string, vocab: number, dim: number, std = 0.02): void {
  p.add(`${prefix}.weight`, normalInit(rng, [vocab, dim], std));
}

// ---------------------------------------------------------------------------------------------------
// layout conversion and loading

/** PyTorch/HF layout → internal layout for a parameter of `kind` (a new tensor; input untouched). */
export function fromTorchLayout(t: tf.Tensor, kind: ParamKind): tf.Tensor {
  if (kind === 'linear') return tf.transpose(t, [1, 0]);
  if (kind === 'conv2d') return tf.transpose(t, [2, 3, 1, 0]);
  return tf.clone(t);
}

/** Internal layout → PyTorch/HF layout. */
export function toTorchLayout(t: tf.Tensor, kind: ParamKind): tf.Tensor {
  if (kind === 'linear') return tf.transpose(t, [1, 0]);
  if (kind === 'conv2d') return tf.transpose(t, [3, 2, 0, 1]);
  return tf.clone(t);
}

function torchShape(shape: number[], kind: ParamKind): number[] {
  if (kind === 'linear') return [shape[1] as number, shape[0] as number];
  if (kind === 'conv2d') return [shape[3] as number, shape[2] as number, shape[0] as number, shape[1] as number];
  return shape.slice();
}

export interface LoadMismatch {
  name: string;
  problem: 'missing' | 'unexpected' | 'shape';
  /** expected shape in the file's (PyTorch) layout, for 'shape' and 'missing' */
  expected?: number[];
  got?: number[];
}

/**
 * Every difference between the tensors a model expects (name → shape in the file's layout) and the ones a file
 * holds: missing, wrongly shaped, and unexpected (unless `accepted`, e.g. tied copies or old buffers).
 */
export function shapeMismatches(expected: Map<string, number[]>, found: Map<string, { shape: number[] }>, accepted: ReadonlySet<string> = new Set()): LoadMismatch[] {
  const out: LoadMismatch[] = [];
  for (const [name, shape] of expected) {
    const got = found.get(name)?.shape;
    if (!got) out.push({ name, problem: 'missing', expected: shape });
    else if (got.length !== shape.length || got.some((d, i) => d !== shape[i])) out.push({ name, problem: 'shape', expected: shape, got });
  }
  for (const [name, { shape }] of found) if (!expected.has(name) && !accepted.has(name)) out.push({ name, problem: 'unexpected', got: shape });
  return out;
}

export class LoadParamsError extends ParamError {
  constructor(
    readonly source: string,
    readonly mismatches: LoadMismatch[],
  ) {
    const lines = mismatches.slice(0, 20).map((m) =>
      m.problem === 'shape'
        ? `  ${m.name}: shape ${JSON.stringify(m.got)} in file, expected ${JSON.stringify(m.expected)}`
        : m.problem === 'missing'
          ? `  ${m.name}: missing from file (expected ${JSON.stringify(m.expected)})`
          : `  ${m.name}: in file but not in the model`,
    );
    const more = mismatches.length > 20 ? `\n  … and ${mismatches.length - 20} more` : '';
    super(`${source}: ${mismatches.length} parameter mismatch(es):\n${lines.join('\n')}${more}`);
    this.name = 'LoadParamsError';
  }
}

export interface LoadOptions {
  /**
   * Model name → file name, for checkpoints whose names differ (e.g. `model.encoder.` prefixes, or
   * loading BART's `shared.weight` into `encoder.embed_tokens.weight`). Unmapped names are used as is.
   */
  nameMap?: Map<string, string> | Record<string, string> | ((name: string) => string | undefined);
  /** strict: any mismatch throws (default). Non-strict: loads what matches and returns the rest. */
  strict?: boolean;
  /** only load these model parameters (warm-starting part of a model); others count as neither missing nor loaded */
  only?: (name: string) => boolean;
  /** named in the error message */
  source?: string;
  /** file tensors are in PyTorch layout (default true); false when they were saved in internal layout */
  torchLayout?: boolean;
}

export interface LoadReport {
  loaded: string[];
  mismatches: LoadMismatch[];
}

interface LoadPlan {
  /** [model name, file name] pairs that pass every check */
  pairs: [string, string][];
  mismatches: LoadMismatch[];
}

/** Matches model parameters against file tensor shapes (no data needed): the from_pretrained checks. */
function planLoad(params: Params, fileShapes: Map<string, number[]>, opts: LoadOptions): LoadPlan {
  const torch = opts.torchLayout ?? true;
  const map = opts.nameMap;
  const fileName = (n: string): string => {
    if (!map) return n;
    if (typeof map === 'function') return map(n) ?? n;
    if (map instanceof Map) return map.get(n) ?? n;
    return Object.hasOwn(map, n) ? (map[n] as string) : n;
  };
  const mismatches: LoadMismatch[] = [];
  const pairs: [string, string][] = [];
  const used = new Set<string>();
  for (const name of params.names()) {
    if (opts.only && !opts.only(name)) continue;
    const v = params.get(name);
    const expected = torch ? torchShape(v.shape, params.kind(name)) : v.shape.slice();
    const src = fileName(name);
    const got = fileShapes.get(src);
    if (!got) {
      mismatches.push({ name: src, problem: 'missing', expected });
      continue;
    }
    used.add(src);
    if (got.length !== expected.length || got.some((d, i) => d !== expected[i])) {
      mismatches.push({ name: src, problem: 'shape', expected, got: got.slice() });
      continue;
    }
    pairs.push([name, src]);
  }
  if (!opts.only) {
    for (const [src, shape] of fileShapes) if (!used.has(src)) mismatches.push({ name: src, problem: 'unexpected', got: shape.slice() });
  }
  return { pairs, mismatches };
}

function assignFrom(params: Params, name: string, t: tf.Tensor, torch: boolean): void {
  const v = params.get(name);
  tf.tidy(() => v.assign(tf.cast(torch ? fromTorchLayout(t, params.kind(name)) : t, 'float32')));
}

/**
 * Copies `tensors` into `params`, converting layouts and asserting every shape. Nothing is assigned
 * unless the strict check passes, so a failed load leaves the model untouched.
 */
export function loadParams(params: Params, tensors: Map<string, tf.Tensor>, opts: LoadOptions = {}): LoadReport {
  const shapes = new Map([...tensors].map(([n, t]) => [n, t.shape] as [string, number[]]));
  const { pairs, mismatches } = planLoad(params, shapes, opts);
  if ((opts.strict ?? true) && mismatches.length) throw new LoadParamsError(opts.source ?? '<tensors>', mismatches);
  for (const [name, src] of pairs) assignFrom(params, name, tensors.get(src) as tf.Tensor, opts.torchLayout ?? true);
  return { loaded: pairs.map(([n]) => n), mismatches };
}

/** Parameters in PyTorch/HF layout under their names, ready for `writeSafetensors` (caller disposes). */
export function exportParams(params: Params, opts: { torchLayout?: boolean } = {}): Map<string, tf.Tensor> {
  const torch = opts.torchLayout ?? true;
  const out = new Map<string, tf.Tensor>();
  for (const [name, v] of params.entries()) out.set(name, torch ? toTorchLayout(v, params.kind(name)) : tf.clone(v));
  return out;
}

/** Writes parameters to a safetensors file in PyTorch/HF layout (F32 unless `floatDtype` says otherwise). */
export function saveParamsFile(path: string, params: Params, opts: WriteOptions = {}): void {
  // One transposed copy at a time on the backend (its heap may be the 4 GiB wasm one); data goes to JS.
  const raw = new Map<string, RawTensor>();
  for (const [name, v] of params.entries()) {
    const t = toTorchLayout(v, params.kind(name));
    raw.set(name, { dtype: 'float32', shape: t.shape.slice(), data: Float32Array.from(t.dataSync() as Float32Array) });
    t.dispose();
  }
  writeSafetensors(path, raw, { ...opts, metadata: { format: 'pt', ...opts.metadata } });
}

/**
 * Loads a safetensors file into `params` with `loadParams`' checks, done on the header before any data
 * is read; then streams tensor by tensor, so peak memory is the model plus one tensor (a checkpoint
 * the size of the model would not fit twice in the 4 GiB wasm heap). Mismatches name the file.
 */
export async function loadParamsFile(path: string, params: Params, opts: LoadOptions = {}): Promise<LoadReport> {
  const header = readSafetensorsHeader(path);
  const shapes = new Map(header.tensors.map((t) => [t.name, t.shape] as [string, number[]]));
  const { pairs, mismatches } = planLoad(params, shapes, opts);
  if ((opts.strict ?? true) && mismatches.length) throw new LoadParamsError(opts.source ?? path, mismatches);
  const targets = new Map<string, string[]>(); // file name → model names (one file tensor may feed tied params)
  for (const [name, src] of pairs) targets.set(src, [...(targets.get(src) ?? []), name]);
  const torch = opts.torchLayout ?? true;
  await forEachSafetensor(
    path,
    (src, raw) => {
      const t = tf.tensor(raw.data, raw.shape, raw.dtype);
      try {
        for (const name of targets.get(src) ?? []) assignFrom(params, name, t, torch);
      } finally {
        t.dispose();
      }
    },
    { names: targets.keys() },
  );
  return { loaded: pairs.map(([n]) => n), mismatches };
}
