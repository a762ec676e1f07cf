/**
 * PyTorch checkpoints written by real `torch.save` (Debian's python3-torch) convert into model folders:
 * Lightning `.ckpt`, plain and legacy-format state dicts, float16, transformers `.bin` and sharded `.bin`;
 * the weights come out bit for bit, our VQGAN decodes like a torch.nn.functional reference of the same
 * weights, a pickle that calls os.system is refused with nothing run, and a mismatched checkpoint lists
 * every mismatch.
 */
import { existsSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertCheckpoint, formatConvertReport } from '../../src/ml/checkpoints/convert.js';
import { CheckpointMismatchError } from '../../src/ml/checkpoints/maps/common.js';
import { PickleRefusedError } from '../../src/ml/checkpoints/pickle.js';
import { ConvertError } from '../../src/ml/checkpoints/sources.js';
import { loadLpips } from '../../src/ml/losses/lpips.js';
import { loadClip } from '../../src/ml/models/clip.js';
import { loadDalleBart } from '../../src/ml/models/dallebart.js';
import { loadVqgan } from '../../src/ml/models/vqgan.js';
import { cli } from '../support/cli.js';
import { makeCheckpoints, readDecodeReference, readReference, safetensorsBytes, torchUnavailable } from './convert-fixtures.js';
import { useCpu } from './helpers.js';

const skip = torchUnavailable();
// said once per file, so a skipped run shows why (the describe name carries it too)
if (skip) console.warn(`${import.meta.filename}: skipped: ${skip}`);
let dir = '';
let sideEffect = '';

beforeAll(async () => {
  if (skip) return;
  await useCpu();
  ({ dir, sideEffect } = makeCheckpoints());
});
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Every tensor of `out/model.safetensors` equals the reference bytes (names and shapes too). */
function expectBitExact(out: string, ref: string, skipNames: Set<string> = new Set()): void {
  const got = safetensorsBytes(join(out, 'model.safetensors'));
  const want = readReference(dir, ref);
  for (const [name, w] of want) {
    if (skipNames.has(name)) continue;
    const g = got.get(name);
    expect(g, name).toBeDefined();
    expect(g?.shape, name).toEqual(w.shape);
    expect(Buffer.compare(g?.bytes as Buffer, w.bytes), `${name} bytes`).toBe(0);
  }
}

async function decodeMaxError(modelDir: string): Promise<number> {
  const ref = readDecodeReference(dir);
  const model = await loadVqgan(modelDir);
  try {
    const codes = tf.tensor2d(ref.codes, undefined, 'int32');
    const out = model.decode(codes);
    expect(out.shape).toEqual(ref.shape);
    const px = out.dataSync();
    let max = 0;
    for (let i = 0; i < px.length; i++) max = Math.max(max, Math.abs((px[i] as number) - (ref.pixels[i] as number)));
    tf.dispose([codes, out]);
    return max;
  } finally {
    model.dispose();
  }
}

describe.skipIf(skip !== null)(`PyTorch checkpoints → model folders${skip ? ` (skipped: ${skip})` : ''}`, () => {
  it('a Lightning .ckpt (taming VQGAN with its loss modules) converts bit for bit and decodes as torch does', async () => {
    const out = join(dir, 'out-vqgan');
    const r = await convertCheckpoint({ input: join(dir, 'vqgan'), to: out });
    expect(r.format).toBe('torch-zip');
    expect(r.kind).toBe('vqgan');
    expect(r.statePath).toBe('state_dict');
    expect(r.configFile).toBe(join(dir, 'vqgan', 'configs', 'model.yaml'));
    expect(r.dropped.map((d) => d.name).sort()).toEqual([
      'loss.discriminator.main.0.bias',
      'loss.discriminator.main.0.weight',
      'loss.logvar',
      'loss.perceptual_loss.lin0.model.1.weight',
      'loss.perceptual_loss.net.slice1.0.bias',
      'loss.perceptual_loss.net.slice1.0.weight',
      'loss.perceptual_loss.scaling_layer.scale',
      'loss.perceptual_loss.scaling_layer.shift',
    ]);
    const text = formatConvertReport(r).join('\n');
    expect(text).toContain("PatchGAN discriminator (training loss; taming's has BatchNorm, ours has none, so it is not converted) (2)");
    expect(text).toContain('LPIPS / VGG16 (training loss; --keep-loss writes it to lpips.safetensors) (5)');
    expect(text).toContain('global_step=1234');
    expect(text).toMatch(/also in the file \(not converted\): .*hyper_parameters, optimizer_states/);
    expectBitExact(out, 'vqgan');
    expect(await decodeMaxError(out)).toBeLessThan(1e-5);
  });

  it('--keep-loss writes the checkpoint\'s LPIPS network to lpips.safetensors, which our LPIPS loader reads', async () => {
    const out = join(dir, 'out-keep-loss');
    const r = await convertCheckpoint({ input: join(dir, 'vqgan'), to: out, keepLoss: true });
    expect(r.sidecars).toEqual([{ file: 'lpips.safetensors', what: "LPIPS (VGG16 + lin layers: vqgan-finetune's perceptual_weights)", tensors: 3 }]);
    expect(r.dropped.map((d) => d.name).filter((n) => n.startsWith('loss.perceptual_loss.')).sort()).toEqual(['loss.perceptual_loss.scaling_layer.scale', 'loss.perceptual_loss.scaling_layer.shift']);
    const got = safetensorsBytes(join(out, 'lpips.safetensors'));
    for (const [name, w] of readReference(dir, 'lpips')) expect(Buffer.compare(got.get(name)?.bytes as Buffer, w.bytes), name).toBe(0);
    const net = await loadLpips(join(out, 'lpips.safetensors'));
    expect(net.config).toEqual({ channels: [4], convsPerSlice: [1] });
    net.dispose();
    expectBitExact(out, 'vqgan');
  });

  it('plain and legacy-format (pre-zip) state dicts convert to the same bytes', async () => {
    const plain = join(dir, 'out-plain');
    const legacy = join(dir, 'out-legacy');
    expect((await convertCheckpoint({ input: join(dir, 'vqgan-plain', 'plain.pt'), to: plain })).format).toBe('torch-zip');
    expect((await convertCheckpoint({ input: join(dir, 'vqgan-legacy', 'legacy.pt'), to: legacy })).format).toBe('torch-legacy');
    expectBitExact(plain, 'vqgan');
    expectBitExact(legacy, 'vqgan');
  });

  it('float16 weights stay float16 bit for bit with --dtype float16, and float32 output is the exact widening', async () => {
    const f16 = join(dir, 'out-half16');
    const f32 = join(dir, 'out-half32');
    await convertCheckpoint({ input: join(dir, 'vqgan-half'), to: f16, dtype: 'float16' });
    await convertCheckpoint({ input: join(dir, 'vqgan-half'), to: f32 });
    expectBitExact(f16, 'vqgan-half');
    const wide = safetensorsBytes(join(f32, 'model.safetensors'));
    const half = readReference(dir, 'vqgan-half').get('quantize.embedding.weight');
    const w = wide.get('quantize.embedding.weight');
    expect(w?.dtype).toBe('F32');
    const hb = half?.bytes as Buffer;
    const wf = new Float32Array(new Uint8Array(w?.bytes as Buffer).buffer);
    const h = new Float32Array(hb.length / 2);
    // float16 → float32 by torch's own rule is exact: compare against ours decoded from the half bits
    const { f16BitsToFloat } = await import('../../src/ml/safetensors.js');
    for (let i = 0; i < h.length; i++) h[i] = f16BitsToFloat(hb.readUInt16LE(i * 2));
    expect(Array.from(wf)).toEqual(Array.from(h));
  });

  it('transformers pytorch_model.bin (tied copies, a non-contiguous tensor) converts bit for bit and loads', async () => {
    const out = join(dir, 'out-bart');
    const r = await convertCheckpoint({ input: join(dir, 'bart'), to: out });
    expect(r.kind).toBe('bart');
    expect(r.dropped.map((d) => d.name).sort()).toEqual(['lm_head.weight', 'model.decoder.embed_tokens.weight', 'model.encoder.embed_tokens.weight']);
    expect(r.copied).toEqual(['vocab.json']);
    const tied = new Set(['lm_head.weight', 'model.decoder.embed_tokens.weight', 'model.encoder.embed_tokens.weight']);
    expectBitExact(out, 'bart', tied);
    const model = await loadDalleBart(out);
    expect(model.config.d_model).toBe(16);
    model.dispose();
  });

  it('a sharded checkpoint (pytorch_model.bin.index.json) converts to the same bytes', async () => {
    const out = join(dir, 'out-bart-sharded');
    const r = await convertCheckpoint({ input: join(dir, 'bart-sharded'), to: out });
    expect(r.format).toBe('torch-sharded');
    const tied = new Set(['lm_head.weight', 'model.decoder.embed_tokens.weight', 'model.encoder.embed_tokens.weight']);
    expectBitExact(out, 'bart', tied);
  });

  it('transformers CLIP pytorch_model.bin converts bit for bit (position_ids buffers dropped) and loads', async () => {
    const out = join(dir, 'out-clip');
    const r = await convertCheckpoint({ input: join(dir, 'clip'), to: out });
    expect(r.kind).toBe('clip');
    expect(r.dropped.map((d) => d.name).sort()).toEqual(['text_model.embeddings.position_ids', 'vision_model.embeddings.position_ids']);
    expectBitExact(out, 'clip', new Set(['text_model.embeddings.position_ids', 'vision_model.embeddings.position_ids']));
    const model = await loadClip(out);
    expect(model.config.vision_config.patch_size).toBe(4);
    model.dispose();
  });

  it('a pickle whose __reduce__ calls os.system is refused, naming the global, and nothing runs', async () => {
    for (const f of ['evil.ckpt', 'evil.pt']) {
      const err = await convertCheckpoint({ input: join(dir, 'evil', f), to: join(dir, `out-${f}`) }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(PickleRefusedError);
      expect((err as Error).message).toMatch(/refused to call `(posix|os)\.system`/);
      expect((err as Error).message).toContain('nothing was executed');
      expect(existsSync(join(dir, `out-${f}`, 'model.safetensors'))).toBe(false);
    }
    expect(existsSync(sideEffect)).toBe(false);
  });

  it('a mismatched checkpoint lists every missing, unexpected and wrongly shaped tensor, and writes nothing', async () => {
    const out = join(dir, 'out-mismatch');
    const err = await convertCheckpoint({ input: join(dir, 'vqgan-mismatch', 'last.ckpt'), to: out }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CheckpointMismatchError);
    const m = (err as CheckpointMismatchError).mismatches;
    expect(m.map((x) => `${x.name}:${x.problem}`).sort()).toEqual(['decoder.conv_out.bias:missing', 'encoder.extra.weight:unexpected', 'quant_conv.weight:shape']);
    const msg = (err as Error).message;
    expect(msg).toContain('3 mismatch(es)');
    expect(msg).toContain('quant_conv.weight: shape [8,16,1,1], expected [8,32,1,1]');
    expect(msg).toContain('decoder.conv_out.bias: missing (expected [3])');
    expect(msg).toContain('encoder.extra.weight: not a parameter of the model');
    expect(existsSync(join(out, 'model.safetensors'))).toBe(false);
  });

  it('loaders (VQGAN, BART, CLIP) handed a .ckpt, a .bin or a .msgpack give the exact convert command, which works', async () => {
    const ckpt = join(dir, 'vqgan-mismatch', 'last.ckpt');
    await expect(loadVqgan(ckpt)).rejects.toThrow(`${ckpt} is a PyTorch/Flax checkpoint, not a model folder: convert it first with \`minidalle convert ${ckpt} --to ${join(dir, 'vqgan-mismatch', 'last')}-minidalle\``);
    await expect(loadVqgan(join(dir, 'vqgan-flax', 'flax_model.msgpack'))).rejects.toThrow(/flax_model\.msgpack is a PyTorch\/Flax checkpoint.*minidalle convert .*flax_model\.msgpack --to .*flax_model-minidalle/);
    const bart = join(dir, 'bart');
    const err = (await loadDalleBart(bart).catch((e: unknown) => e)) as Error;
    expect(err.message).toBe(`${bart}: has no model.safetensors, only pytorch_model.bin: convert it first with \`minidalle convert ${bart} --to ${bart}-minidalle\` and load the folder it writes`);
    await expect(loadClip(join(dir, 'clip', 'pytorch_model.bin'))).rejects.toThrow(`convert it first with \`minidalle convert ${join(dir, 'clip', 'pytorch_model.bin')} --to ${join(dir, 'clip', 'pytorch_model')}-minidalle\``);
    await expect(loadClip(join(dir, 'clip'))).rejects.toThrow(/has no model\.safetensors, only pytorch_model\.bin: convert it first/);
    const [, input, to] = /`minidalle convert (\S+) --to (\S+)`/.exec(err.message) ?? [];
    await convertCheckpoint({ input: input as string, to: to as string });
    const model = await loadDalleBart(to as string);
    model.dispose();
  });

  it('minidalle convert prints what it converted and dropped; a refused pickle exits 1 with the reason', () => {
    const ok = cli(dir, ['convert', 'vqgan/checkpoints/last.ckpt', '--to', 'cli-vqgan', '--dtype', 'float16']);
    expect(ok.stderr).toBe('');
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain(`converted ${join('vqgan', 'checkpoints', 'last.ckpt')} (torch-zip, state_dict) as vqgan → ${join(dir, 'cli-vqgan')}`);
    expect(ok.stdout).toMatch(/\d+ tensors written as F16/);
    expect(ok.stdout).toContain('dropped 8 tensor(s):');
    expect(safetensorsBytes(join(dir, 'cli-vqgan', 'model.safetensors')).get('quant_conv.weight')?.dtype).toBe('F16');
    const bad = cli(dir, ['convert', 'evil/evil.ckpt', '--to', 'cli-evil']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^error: .*evil\.ckpt:.*data\.pkl: refused to call `(posix|os)\.system`/);
    expect(existsSync(sideEffect)).toBe(false);
  });

  it('refuses to overwrite a model folder, and says what it needs when no config is found', async () => {
    const out = join(dir, 'out-vqgan');
    await expect(convertCheckpoint({ input: join(dir, 'vqgan'), to: out })).rejects.toThrow(/exists already: pass --force/);
    const lone = join(dir, 'lone');
    mkdirSync(lone);
    writeFileSync(join(lone, 'x.txt'), '');
    await expect(convertCheckpoint({ input: join(dir, 'vqgan-legacy', 'legacy.pt'), to: out, force: true, config: join(lone, 'missing.yaml') })).rejects.toThrow(ConvertError);
    await expect(convertCheckpoint({ input: lone, to: join(dir, 'out-lone') })).rejects.toThrow(/no checkpoint found/);
  });
});
