/**
 * Inputs of the text-side trainers at a toy size, built in-process: a shapes dataset (16 px), a random tiny VQGAN
 * (16 px, f2 → 8×8 = 64 codes of 16) and encoded shards whose codes follow a hash of the caption, so a
 * DalleBart has something learnable without a trained VQGAN.
 */
import { join } from 'node:path';
import type { StageOutputs } from '../../src/core/plugins/types.js';
import { EncodedShardWriter } from '../../src/data/encoded.js';
import { DEFAULT_HELDOUT_COMBOS, generateShapes } from '../../src/data/shapes.js';
import { saveVqgan, Vqgan } from '../../src/ml/models/vqgan.js';
import { loadCaptions } from '../../src/ml/train/data.js';

export async function tinyText2ImageInputs(root: string, o: { count?: number; heldoutCount?: number } = {}): Promise<{ data: StageOutputs; encode: StageOutputs; vqganDir: string }> {
  const shapes = await generateShapes(join(root, 'data'), { count: o.count ?? 40, heldoutCount: o.heldoutCount ?? 8, size: 16, seed: 2, samplesPerShard: 40, heldoutCombos: DEFAULT_HELDOUT_COMBOS.map((c) => ({ ...c })), plainBackgroundProb: 0.5 });
  const data: StageOutputs = { runId: 'd', outDir: root, artifacts: { train: shapes.train.pattern, heldout: shapes.heldout.pattern }, summary: {} };
  const vqgan = Vqgan.create({ ch: 4, ch_mult: [1, 2], num_res_blocks: 0, attn_resolutions: [], z_channels: 4, n_embed: 16, embed_dim: 4, num_groups: 2, resolution: 16 }, 1);
  const vqganDir = join(root, 'vqgan');
  await saveVqgan(vqgan, vqganDir);
  vqgan.dispose();
  const artifacts: Record<string, string> = {};
  for (const split of ['train', 'heldout'] as const) {
    const { captions } = await loadCaptions(data.artifacts[split]!, { signal: new AbortController().signal, warn: () => {} });
    const dir = join(root, 'encoded', split);
    const w = new EncodedShardWriter({ dir, rowsPerShard: 16, codeCount: 64, producer: { plugin: 'test', vqgan: vqganDir } });
    for (const [i, caption] of captions.entries()) {
      const h = [...caption].reduce((a, ch) => (a * 31 + ch.charCodeAt(0)) >>> 0, 7);
      await w.add({ key: `${split}-${i}`, caption, encoding: Int32Array.from({ length: 64 }, (_, k) => (h >>> (k % 24)) % 16) });
    }
    await w.finish();
    artifacts[split] = dir;
  }
  return { data, encode: { runId: 'e', outDir: root, artifacts, summary: {} }, vqganDir };
}
