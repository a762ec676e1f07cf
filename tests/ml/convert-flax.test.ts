/**
 * Flax checkpoints (`flax.serialization` msgpack: ndarray ext type 1, a chunked array) in vqgan-jax's and
 * transformers' module layouts convert with the right renames and transposes: the VQGAN's weights equal
 * the PyTorch originals bit for bit, and our decode of fixed codes matches its PyTorch-converted twin and
 * the torch.nn.functional reference; the BART's and CLIP's weights equal the PyTorch originals.
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertCheckpoint } from '../../src/ml/checkpoints/convert.js';
import { CheckpointMismatchError } from '../../src/ml/checkpoints/maps/common.js';
import { loadVqgan } from '../../src/ml/models/vqgan.js';
import { makeCheckpoints, readDecodeReference, readReference, safetensorsBytes, torchUnavailable } from './convert-fixtures.js';
import { useCpu } from './helpers.js';

const skip = torchUnavailable();
// said once per file, so a skipped run shows why (the describe name carries it too)
if (skip) console.warn(`${import.meta.filename}: skipped: ${skip}`);
let dir = '';

beforeAll(async () => {
  if (skip) return;
  await useCpu();
  ({ dir } = makeCheckpoints());
});
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function decode(modelDir: string, codes: number[][]): Promise<Float32Array> {
  const model = await loadVqgan(modelDir);
  try {
    return tf.tidy(() => model.decode(tf.tensor2d(codes, undefined, 'int32')).dataSync() as Float32Array);
  } finally {
    model.dispose();
  }
}

describe.skipIf(skip !== null)(`Flax msgpack checkpoints → model folders${skip ? ` (skipped: ${skip})` : ''}`, () => {
  it('a vqgan-jax VQGAN converts with HWIO → OIHW kernels, scale → weight and [1,1,1,C] norms squeezed, bit for bit', async () => {
    const out = join(dir, 'out-flax');
    const r = await convertCheckpoint({ input: join(dir, 'vqgan-flax'), to: out });
    expect(r.format).toBe('flax-msgpack');
    expect(r.kind).toBe('vqgan');
    expect(r.configFile).toBe(join(dir, 'vqgan-flax', 'config.json'));
    expect(r.dropped).toEqual([]);
    // every conv kernel is transposed and the decoder.mid norms reshaped
    expect(r.relaid).toBeGreaterThan(40);
    const got = safetensorsBytes(join(out, 'model.safetensors'));
    const want = readReference(dir, 'vqgan');
    expect([...got.keys()].sort()).toEqual([...want.keys()].sort());
    for (const [name, w] of want) {
      expect(got.get(name)?.shape, name).toEqual(w.shape);
      expect(Buffer.compare(got.get(name)?.bytes as Buffer, w.bytes), name).toBe(0);
    }
  });

  it("our decode of fixed codes from the Flax-converted weights matches the PyTorch-converted twin and torch's reference", async () => {
    const flax = join(dir, 'out-flax-twin');
    const torch = join(dir, 'out-torch-twin');
    await convertCheckpoint({ input: join(dir, 'vqgan-flax', 'flax_model.msgpack'), to: flax });
    await convertCheckpoint({ input: join(dir, 'vqgan', 'checkpoints', 'last.ckpt'), to: torch });
    const ref = readDecodeReference(dir);
    const a = await decode(flax, ref.codes);
    const b = await decode(torch, ref.codes);
    expect(Array.from(a)).toEqual(Array.from(b));
    let max = 0;
    for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs((a[i] as number) - (ref.pixels[i] as number)));
    expect(max).toBeLessThan(1e-5);
  });

  it('a transformers Flax BART converts to the PyTorch names and layouts bit for bit', async () => {
    const out = join(dir, 'out-bart-flax');
    const r = await convertCheckpoint({ input: join(dir, 'bart-flax'), to: out });
    expect(r.kind).toBe('bart');
    const got = safetensorsBytes(join(out, 'model.safetensors'));
    const want = readReference(dir, 'bart');
    const tied = new Set(['lm_head.weight', 'model.decoder.embed_tokens.weight', 'model.encoder.embed_tokens.weight']);
    expect([...got.keys()].sort()).toEqual([...want.keys()].filter((k) => !tied.has(k)).sort());
    for (const [name, w] of want) {
      if (tied.has(name)) continue;
      expect(got.get(name)?.shape, name).toEqual(w.shape);
      expect(Buffer.compare(got.get(name)?.bytes as Buffer, w.bytes), name).toBe(0);
    }
  });

  it('a transformers Flax CLIP converts to the PyTorch names and layouts bit for bit (patch conv HWIO → OIHW, scalar logit_scale)', async () => {
    const out = join(dir, 'out-clip-flax');
    const r = await convertCheckpoint({ input: join(dir, 'clip-flax'), to: out });
    expect(r.kind).toBe('clip');
    const got = safetensorsBytes(join(out, 'model.safetensors'));
    const want = readReference(dir, 'clip');
    const buffers = new Set(['text_model.embeddings.position_ids', 'vision_model.embeddings.position_ids']);
    expect([...got.keys()].sort()).toEqual([...want.keys()].filter((k) => !buffers.has(k)).sort());
    for (const [name, w] of want) {
      if (buffers.has(name)) continue;
      expect(got.get(name)?.shape, name).toEqual(w.shape);
      expect(Buffer.compare(got.get(name)?.bytes as Buffer, w.bytes), name).toBe(0);
    }
  });

  it('a Flax file named as the wrong kind lists what does not map', async () => {
    const err = await convertCheckpoint({ input: join(dir, 'vqgan-flax'), to: join(dir, 'out-wrong'), kind: 'bart', config: join(dir, 'bart', 'config.json') }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CheckpointMismatchError);
    const msg = (err as Error).message;
    expect(msg).toContain('model.shared.weight: missing');
    expect(msg).toMatch(/encoder\.conv_in\.weight \(from "encoder\/conv_in\/kernel"\): not a parameter of the model/);
  });
});
