/**
 * The train state: everything a step needs to continue after a crash, as one bundle that is written into
 * and read back from a checkpoint folder under fixed names, so every trainer's checkpoint looks the same:
 *
 *   config.json + model.safetensors     the main model (the folder then also loads as a model folder)
 *   <name>.safetensors                  any other model (e.g. discriminator.safetensors)
 *   optimizer.<name>.safetensors        optimizer slots + step (F32: a resume is bit-identical)
 *   train_state.json                    step, samples, RNG states, data position (its epoch included), the trainer's extra JSON
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeHfConfig } from '../hf-config.js';
import { loadOptimizerState, saveOptimizerState, type Optimizer } from '../optim/index.js';
import { loadParamsFile, saveParamsFile, type Params } from '../params.js';
import { Rng, type RngState } from '../rng.js';

export const TRAIN_STATE_FILE = 'train_state.json';
export const MAIN_MODEL = 'model';

export class TrainStateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TrainStateError';
  }
}

export interface ModelEntry {
  params: Params;
  /** HF-style config.json written beside the weights (main model: `config.json`, others `<name>.config.json`). */
  config?: Record<string, unknown>;
}

/** Something whose place in a stream is a small JSON value (a loader, a shuffled index). */
export interface Positioned {
  position(): unknown;
  restore(position: unknown): void;
}

export interface TrainStateParts {
  models: Record<string, ModelEntry>;
  /** each optimizer with the parameters it updates */
  optimizers?: Record<string, { optimizer: Optimizer; params: Params }>;
  rngs?: Record<string, Rng>;
  data?: Positioned;
  /** trainer-specific JSON (e.g. codebook usage counts) */
  extra?: { save(): unknown; restore(value: unknown): void };
}

interface TrainStateJson {
  step: number;
  samples: number;
  rngs: Record<string, RngState>;
  data: unknown;
  extra: unknown;
}

function weightsFile(name: string): string {
  return name === MAIN_MODEL ? 'model.safetensors' : `${name}.safetensors`;
}

function configFile(name: string): string {
  return name === MAIN_MODEL ? 'config.json' : `${name}.config.json`;
}

export class TrainState {
  /** optimizer updates applied so far */
  step = 0;
  /** training examples consumed so far */
  samples = 0;

  constructor(readonly parts: TrainStateParts) {
    if (!parts.models[MAIN_MODEL]) throw new TrainStateError(`a train state needs a '${MAIN_MODEL}' entry among its models (has ${Object.keys(parts.models).join(', ') || 'none'})`);
  }

  /** The main model's parameters. */
  get params(): Params {
    return this.parts.models[MAIN_MODEL]!.params;
  }

  /** Writes every part into `dir` (a fresh checkpoint folder). */
  async save(dir: string): Promise<void> {
    for (const [name, m] of Object.entries(this.parts.models)) {
      if (m.config) writeHfConfig(join(dir, configFile(name)), m.config);
      saveParamsFile(join(dir, weightsFile(name)), m.params);
    }
    for (const [name, o] of Object.entries(this.parts.optimizers ?? {})) saveOptimizerState(join(dir, `optimizer.${name}.safetensors`), o.optimizer);
    const json: TrainStateJson = {
      step: this.step,
      samples: this.samples,
      rngs: Object.fromEntries(Object.entries(this.parts.rngs ?? {}).map(([k, r]) => [k, r.state()])),
      data: this.parts.data?.position() ?? null,
      extra: this.parts.extra?.save() ?? null,
    };
    await writeFile(join(dir, TRAIN_STATE_FILE), `${JSON.stringify(json)}\n`);
  }

  /** Restores every part from a checkpoint folder written by `save` (the manifest was verified by the store). */
  async restore(dir: string): Promise<void> {
    const file = join(dir, TRAIN_STATE_FILE);
    let json: TrainStateJson;
    try {
      json = JSON.parse(await readFile(file, 'utf8')) as TrainStateJson;
    } catch (err) {
      throw new TrainStateError(`${file}: ${(err as Error).message}; the checkpoint was not written by this version's training loop`);
    }
    if (!Number.isSafeInteger(json.step) || json.step < 0) throw new TrainStateError(`${file}: field 'step' must be a non-negative integer, got ${JSON.stringify(json.step)}`);
    for (const [name, m] of Object.entries(this.parts.models)) {
      const w = join(dir, weightsFile(name));
      await loadParamsFile(w, m.params, { source: w });
    }
    for (const [name, o] of Object.entries(this.parts.optimizers ?? {})) await loadOptimizerState(join(dir, `optimizer.${name}.safetensors`), o.optimizer, o.params);
    for (const [name, rng] of Object.entries(this.parts.rngs ?? {})) {
      const s = json.rngs?.[name];
      if (!s) throw new TrainStateError(`${file}: no state for RNG '${name}' (has ${Object.keys(json.rngs ?? {}).join(', ') || 'none'})`);
      rng.restore(s);
    }
    if (this.parts.data) this.parts.data.restore(json.data);
    if (this.parts.extra) this.parts.extra.restore(json.extra);
    this.step = json.step;
    this.samples = json.samples ?? 0;
  }

  /** Releases every model and optimizer of the bundle. */
  dispose(): void {
    for (const o of Object.values(this.parts.optimizers ?? {})) o.optimizer.dispose();
    for (const m of Object.values(this.parts.models)) m.params.dispose();
  }
}

/**
 * Epoch-wise shuffled order over N in-memory items, as a small position: the permutation of epoch e comes
 * from the data seed and e alone, so (epoch, index) is the whole state. A batch never straddles epochs
 * (the tail of an epoch that is shorter than a batch is dropped, as `drop_last`).
 */
export class ShuffledOrder implements Positioned {
  private epoch = 0;
  private index = 0;
  private perm: number[] = [];
  private permEpoch = -1;

  constructor(
    readonly count: number,
    private readonly seed: number,
  ) {
    if (!(count > 0)) throw new TrainStateError(`ShuffledOrder needs at least one item, got ${count}`);
  }

  get currentEpoch(): number {
    return this.epoch;
  }

  /** The next `batch` item indices. */
  next(batch: number): number[] {
    if (batch > this.count) throw new TrainStateError(`batch of ${batch} is larger than the ${this.count} items`);
    if (this.index + batch > this.count) {
      this.epoch++;
      this.index = 0;
    }
    if (this.permEpoch !== this.epoch) {
      this.permEpoch = this.epoch;
      this.perm = new Rng(deriveSeed(this.seed, this.epoch)).shuffle(Array.from({ length: this.count }, (_, i) => i));
    }
    const out = this.perm.slice(this.index, this.index + batch);
    this.index += batch;
    return out;
  }

  position(): { epoch: number; index: number } {
    return { epoch: this.epoch, index: this.index };
  }

  restore(position: unknown): void {
    const p = position as { epoch?: unknown; index?: unknown } | null;
    if (!p || !Number.isInteger(p.epoch) || !Number.isInteger(p.index) || (p.epoch as number) < 0 || (p.index as number) < 0) {
      throw new TrainStateError(`data position must be {epoch, index} (non-negative integers), got ${JSON.stringify(position)}`);
    }
    this.epoch = p.epoch as number;
    this.index = p.index as number;
  }
}

/**
 * A seed for a named stream of a run (`deriveSeed(seed, 'data')`, `deriveSeed(seed, 'dropout')`): every
 * random stream of training comes from the run's one seed through this, instead of seeds mixed by hand.
 */
export function deriveSeed(seed: number, ...labels: (string | number)[]): number {
  const r = new Rng(seed);
  let h = r.nextUint32();
  for (const l of labels) {
    const s = String(l);
    for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
    h = Math.imul(h ^ 0xff, 0x01000193) >>> 0; // label separator: ('ab') ≠ ('a', 'b')
  }
  return new Rng(h).nextUint32();
}
