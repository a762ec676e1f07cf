/**
 * The models a checkpoint can be converted into. Each kind is a small object: how to recognise its
 * tensor names, where its config comes from, the name map for each source format, and the expected
 * names and PyTorch-layout shapes (read from the model file itself, so the two cannot disagree).
 */
import { BartConfigSchema, parseHfConfig, VqganConfigSchema } from '../hf-config.js';
import { clipParamSpecs, resolveClipConfig, type ClipConfigInput } from '../models/clip.js';
import { dalleBartConfigFromHf, dalleBartParamSpecs, torchShapeOf } from '../models/dallebart.js';
import { inferLpipsConfig, lpipsParamShapes } from '../losses/lpips.js';
import { resolveVqganConfig, vqganParamShapes, type VqganModelConfig } from '../models/vqgan.js';
import { findConfig, tamingParams } from './configs.js';
import { mapFlaxBart, mapTorchBart } from './maps/bart.js';
import { mapFlaxClip, mapTorchClip } from './maps/clip.js';
import type { MappedCheckpoint } from './maps/common.js';
import { mapFlaxVqgan, mapTamingVqgan } from './maps/vqgan.js';
import { ConvertError, type SourceCheckpoint } from './sources.js';
import { outputShape } from './writer.js';

export interface PreparedConversion {
  /** config.json to write */
  config: Record<string, unknown>;
  /** where the config came from */
  configFile: string;
  mapped: MappedCheckpoint;
  /** model name → PyTorch-layout shape */
  expected: Map<string, number[]>;
  /** further files written beside model.safetensors (taming's LPIPS weights), checked the same way */
  sidecars?: { file: string; what: string; mapped: MappedCheckpoint; expected: Map<string, number[]> }[];
}

export interface ModelKind {
  name: string;
  description: string;
  /** true when the tensor names look like this model's */
  detect(names: string[]): boolean;
  prepare(src: SourceCheckpoint, opts: { config?: string; keepLoss?: boolean }): PreparedConversion;
}

const isFlax = (src: SourceCheckpoint): boolean => src.format === 'flax-msgpack';

/** VQGAN config from taming YAML or an HF/vqgan-jax config.json. */
function vqganConfigFrom(doc: Record<string, unknown>, file: string): VqganModelConfig {
  const flat = tamingParams(doc) ?? doc;
  const raw = parseHfConfig(flat, VqganConfigSchema, file);
  if (raw.double_z === true) throw new ConvertError(`${file}: double_z is true — a VQGAN's encoder has z_channels outputs (double_z is for KL autoencoders)`);
  if (raw.ch === undefined || raw.ch_mult === undefined) throw new ConvertError(`${file}: not a VQGAN config (no ch / ch_mult${tamingParams(doc) === null && !file.endsWith('.json') ? '; a taming YAML has them under model.params.ddconfig' : ''})`);
  const known: Partial<VqganModelConfig> = {};
  for (const k of ['ch', 'ch_mult', 'num_res_blocks', 'attn_resolutions', 'z_channels', 'n_embed', 'embed_dim', 'resolution', 'in_channels', 'out_ch', 'dropout', 'codebook_l2'] as const) {
    if (raw[k] !== undefined) (known as Record<string, unknown>)[k] = raw[k];
  }
  const groups = (flat as { num_groups?: unknown }).num_groups;
  if (typeof groups === 'number') known.num_groups = groups;
  try {
    return resolveVqganConfig(known);
  } catch (e) {
    throw new ConvertError(`${file}: ${(e as Error).message}`);
  }
}

export const VQGAN_KIND: ModelKind = {
  name: 'vqgan',
  description: 'VQGAN (taming-transformers .ckpt, vqgan-jax / dalle-mini flax_model.msgpack)',
  detect: (names) =>
    names.some((n) => n === 'encoder.conv_in.weight' || /^(model\/)?encoder\/conv_in\/kernel$/.test(n)) && names.some((n) => n.startsWith('quantize') || n.startsWith('model/quantize')),
  prepare(src, opts) {
    const found = findConfig(src.file, opts.config, { yaml: !isFlax(src), what: 'VQGAN' });
    const config = vqganConfigFrom(found.value, found.file);
    const base = { config: { model_type: 'vqgan', ...config }, configFile: found.file, expected: vqganParamShapes(config) };
    if (isFlax(src)) {
      if (opts.keepLoss) throw new ConvertError(`${src.file}: --keep-loss: a Flax VQGAN file holds no training losses`);
      return { ...base, mapped: mapFlaxVqgan(src.tensors) };
    }
    const { model, lpips } = mapTamingVqgan(src.tensors, { keepLpips: opts.keepLoss ?? false });
    if (!lpips) return { ...base, mapped: model };
    if (lpips.tensors.size === 0) throw new ConvertError(`${src.file}: --keep-loss: no loss.perceptual_loss.* tensors (LPIPS) in the checkpoint`);
    const shapes = new Map([...lpips.tensors].map(([n, t]) => [n, outputShape(t)] as [string, number[]]));
    return { ...base, mapped: model, sidecars: [{ file: 'lpips.safetensors', what: "LPIPS (VGG16 + lin layers: vqgan-finetune's perceptual_weights)", mapped: lpips, expected: lpipsParamShapes(inferLpipsConfig(shapes)) }] };
  },
};

export const BART_KIND: ModelKind = {
  name: 'bart',
  description: 'BART / DalleBart (transformers pytorch_model.bin, sharded .bin, flax_model.msgpack)',
  detect: (names) => names.some((n) => /^(model[./])?encoder[./]layers[./]0[./]self_attn[./]q_proj[./]/.test(n)) && names.some((n) => /^(model[./])?decoder[./]/.test(n)),
  prepare(src, opts) {
    const found = findConfig(src.file, opts.config, { yaml: false, what: 'BART' });
    const hf = parseHfConfig(found.value, BartConfigSchema, found.file);
    let config;
    try {
      config = dalleBartConfigFromHf(hf, found.file);
    } catch (e) {
      throw new ConvertError((e as Error).message);
    }
    const map = isFlax(src) ? mapFlaxBart : mapTorchBart;
    return {
      // the source's config.json as it is (every key kept), since it is what describes these weights
      config: found.value,
      configFile: found.file,
      mapped: map(src.tensors, config.model_type, config.vocab_size),
      expected: new Map(dalleBartParamSpecs(config).map((s) => [s.name, torchShapeOf(s)] as [string, number[]])),
    };
  },
};

export const CLIP_KIND: ModelKind = {
  name: 'clip',
  description: 'CLIP (transformers pytorch_model.bin, sharded .bin, flax_model.msgpack)',
  detect: (names) => names.some((n) => /^text_model[./]/.test(n)) && names.some((n) => /^vision_model[./]/.test(n)),
  prepare(src, opts) {
    const found = findConfig(src.file, opts.config, { yaml: false, what: 'CLIP' });
    if (found.value.model_type !== undefined && found.value.model_type !== 'clip') throw new ConvertError(`${found.file}: model_type "${String(found.value.model_type)}" is not "clip"`);
    let config;
    try {
      config = resolveClipConfig(found.value as ClipConfigInput, found.file);
    } catch (e) {
      throw new ConvertError((e as Error).message);
    }
    const torchShape = (s: { shape: number[]; kind: string }): number[] =>
      s.kind === 'linear' ? [s.shape[1] as number, s.shape[0] as number] : s.kind === 'conv2d' ? [s.shape[3], s.shape[2], s.shape[0], s.shape[1]] as number[] : s.shape.slice();
    return {
      config: found.value,
      configFile: found.file,
      mapped: isFlax(src) ? mapFlaxClip(src.tensors) : mapTorchClip(src.tensors),
      expected: new Map(clipParamSpecs(config).map((s) => [s.name, torchShape(s)] as [string, number[]])),
    };
  },
};

export const MODEL_KINDS: ModelKind[] = [VQGAN_KIND, BART_KIND, CLIP_KIND];

export function kindByName(name: string): ModelKind {
  const k = MODEL_KINDS.find((m) => m.name === name);
  if (!k) throw new ConvertError(`unknown --kind "${name}" (one of ${MODEL_KINDS.map((m) => m.name).join(', ')})`);
  return k;
}

/** The kind whose names the checkpoint has; an error naming a few of its tensors when none fits. */
export function detectKind(src: SourceCheckpoint): ModelKind {
  const names = [...src.tensors.keys()];
  const hits = MODEL_KINDS.filter((k) => k.detect(names));
  if (hits.length === 1) return hits[0] as ModelKind;
  throw new ConvertError(
    `${src.file}: ${hits.length ? `looks like ${hits.map((h) => h.name).join(' and ')}` : 'not recognised as any of ' + MODEL_KINDS.map((k) => k.name).join(', ')} (tensors: ${names.slice(0, 4).join(', ')}${names.length > 4 ? ', …' : ''}): pass --kind`,
  );
}
