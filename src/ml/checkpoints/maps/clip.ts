/**
 * HF CLIP name maps onto ours (src/ml/models/clip.ts uses transformers' PyTorch names).
 *
 * PyTorch (`pytorch_model.bin`, `CLIPModel`): the names are ours; the `position_ids` buffers older
 * transformers saved (`text_model.embeddings.position_ids`, `vision_model.embeddings.position_ids`) are
 * dropped.
 *
 * Flax (`flax_model.msgpack`, `FlaxCLIPModel`): `vision_model/encoder/layers/0/mlp/fc1/kernel` →
 * `vision_model.encoder.layers.0.mlp.fc1.weight` (Dense transposed), `patch_embedding/kernel` HWIO → OIHW,
 * LayerNorm `scale` → `weight`, Embed `embedding` → `weight`; `class_embedding` and `logit_scale` keep
 * their names and shapes.
 */
import { emptyMapped, flaxLeafToTorch, leafOf, put, type MappedCheckpoint } from './common.js';
import type { SourceTensor } from '../tensor.js';

const POSITION_IDS = /^(text_model|vision_model)\.embeddings\.position_ids$/;

export function mapTorchClip(tensors: Map<string, SourceTensor>): MappedCheckpoint {
  const m = emptyMapped();
  for (const [name, t] of tensors) {
    if (POSITION_IDS.test(name)) m.dropped.push({ name, reason: 'position_ids buffer (positions are 0…n−1)' });
    else put(m, name, name, t);
  }
  return m;
}

export function mapFlaxClip(tensors: Map<string, SourceTensor>): MappedCheckpoint {
  const m = emptyMapped();
  for (const [path, t] of tensors) {
    const { module, leaf } = leafOf(path, '/');
    if (!module && leaf !== 'logit_scale') {
      m.unmapped.push(path);
      continue;
    }
    const r = flaxLeafToTorch(module.replaceAll('/', '.'), leaf, t.shape);
    put(m, r.name, path, t, r);
  }
  return m;
}
