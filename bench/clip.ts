/**
 * The `clip` section (issue #13): CLIP scoring throughput, images/s, for the quickstart's shapes CLIP (32 px,
 * 8 px patches, width 128, 2 layers) and ViT-B/32's vision tower at 224 px, random weights from `Clip.create`.
 * A repetition scores one batch: the image tower, unit embeddings, the cosine with a unit text embedding
 * (what re-ranking does per sample; the prompt's text embedding is computed once per prompt, so it is not in
 * the loop). Each row alternates (ABAB) with bench/peer/clip.py, the same computation in PyTorch.
 */
import { tf } from '../src/ml/backend.js';
import { Clip, l2normalize, type ClipConfigInput } from '../src/ml/models/clip.js';
import { interleave } from './peer.js';
import type { Ctx, Row } from './run.js';

const SIZES: Record<'shapes' | 'b32', { config: ClipConfigInput; batch: number; what: string }> = {
  shapes: {
    what: 'shapes CLIP (32 px, patch 8, width 128, 2 layers)',
    batch: 256,
    config: { projection_dim: 128, vision_config: { image_size: 32, patch_size: 8, hidden_size: 128, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 256 }, text_config: { vocab_size: 512, hidden_size: 128, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 256, max_position_embeddings: 24, pad_token_id: 1, bos_token_id: 0, eos_token_id: 2 } },
  },
  b32: { what: 'ViT-B/32 vision tower (224 px)', batch: 16, config: {} },
};

export async function benchClip(backend: string, ctx: Ctx): Promise<Row[]> {
  const rows: Row[] = [];
  for (const size of ['shapes', 'b32'] as const) {
    const { config, batch, what } = SIZES[size];
    const model = Clip.create(config, 0);
    const S = model.config.vision_config.image_size;
    const px = tf.randomUniform([batch, S, S, 3], 0, 1, 'float32', 1) as tf.Tensor4D;
    const text = l2normalize(tf.randomNormal([1, model.config.projection_dim], 0, 1, 'float32', 2) as tf.Tensor2D);
    const score = (): number => {
      const t0 = performance.now();
      const s = tf.tidy(() => tf.sum(tf.relu(tf.mul(tf.matMul(l2normalize(model.encodeImage(px)), text, false, true), 100))));
      s.dataSync();
      s.dispose();
      return performance.now() - t0;
    };
    score(); // warm-up
    const r = await interleave(score, Math.min(ctx.reps, size === 'b32' ? 3 : ctx.reps), ctx.peer, `clip:${size}:${batch}`, ctx.settleMs);
    const perS = (ms: number): number => +((batch * 1000) / ms).toFixed(1);
    rows.push({
      section: 'clip',
      name: `${what}: score a batch of ${batch} images`,
      backend,
      ms: r.ours.ms,
      spread: r.ours,
      ...(r.peer ? { peer: r.peer } : {}),
      ...(r.peerNote ? { peerNote: r.peerNote } : {}),
      extra: { imagesPerS: perS(r.ours.ms), ...(r.peer ? { peerImagesPerS: perS(r.peer.ms) } : {}), params: model.params.count() },
    });
    tf.dispose([px, text]);
    model.dispose();
  }
  return rows;
}
