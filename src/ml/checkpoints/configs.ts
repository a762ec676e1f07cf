/**
 * The model config of a source checkpoint: taming's YAML (`model.params.ddconfig`, `n_embed`,
 * `embed_dim`), or the HF / vqgan-jax `config.json` beside the weights. Found next to the weights (or in
 * taming's `../configs/`, or the folder above) unless `--config` names it.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { ConvertError } from './sources.js';

export interface FoundConfig {
  file: string;
  /** the parsed document */
  value: Record<string, unknown>;
}

function parseConfigFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConvertError(`${file}: cannot read the config (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  let v: unknown;
  try {
    v = file.endsWith('.json') ? JSON.parse(text) : parseYaml(text);
  } catch (e) {
    throw new ConvertError(`${file}: not valid ${file.endsWith('.json') ? 'JSON' : 'YAML'} (${(e as Error).message})`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ConvertError(`${file}: a config must be a mapping`);
  return v as Record<string, unknown>;
}

const yamlsIn = (dir: string): string[] => (existsSync(dir) ? readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).map((f) => join(dir, f)) : []);

/**
 * The config for weights at `weightsFile`: `explicit` when given; else `config.json` beside it; else
 * (when `yaml` is allowed, for taming) the one YAML beside it, in `../configs/` or in `..`.
 */
export function findConfig(weightsFile: string, explicit: string | undefined, opts: { yaml: boolean; what: string }): FoundConfig {
  if (explicit) return { file: explicit, value: parseConfigFile(explicit) };
  const dir = dirname(weightsFile);
  const json = join(dir, 'config.json');
  if (existsSync(json)) return { file: json, value: parseConfigFile(json) };
  if (opts.yaml) {
    // taming's downloads: logs/<name>/checkpoints/last.ckpt with logs/<name>/configs/model.yaml
    const yamls = [...yamlsIn(dir), ...yamlsIn(join(dir, '..', 'configs')), ...yamlsIn(join(dir, '..'))];
    if (yamls.length === 1) return { file: yamls[0] as string, value: parseConfigFile(yamls[0] as string) };
    if (yamls.length > 1) throw new ConvertError(`${weightsFile}: several config files (${yamls.join(', ')}): name one with --config`);
  }
  throw new ConvertError(
    `${weightsFile}: no config found for the ${opts.what} (looked for config.json beside it${opts.yaml ? ', and *.yaml beside it, in ../configs/ and in ..' : ''}): pass --config <file>${opts.yaml ? ' (taming: its configs/model.yaml)' : ''}`,
  );
}

/** taming's `model: { params: { ddconfig: {...}, n_embed, embed_dim } }` → a flat VQGAN config (or null). */
export function tamingParams(doc: Record<string, unknown>): Record<string, unknown> | null {
  const model = doc.model as Record<string, unknown> | undefined;
  const params = (model && typeof model === 'object' ? model.params : doc.params) as Record<string, unknown> | undefined;
  if (!params || typeof params !== 'object' || typeof params.ddconfig !== 'object' || params.ddconfig === null) return null;
  return { ...(params.ddconfig as Record<string, unknown>), n_embed: params.n_embed, embed_dim: params.embed_dim };
}
