/**
 * HF BART name maps onto ours (src/ml/models/dallebart.ts uses transformers' PyTorch names).
 *
 * PyTorch (`pytorch_model.bin`, `BartForConditionalGeneration`): the names are ours. A `BartModel`
 * checkpoint lacks the `model.` prefix (`encoder.layers.0…`, `shared.weight`): it is added. transformers
 * writes tied copies of `model.shared.weight` (`model.encoder.embed_tokens.weight`, and in text BART
 * `model.decoder.embed_tokens.weight` and `lm_head.weight`): dropped, since the model ties them again.
 * `final_logits_bias`, a zero buffer transformers adds when a checkpoint lacks it, is added as zeros
 * (said so in the report).
 *
 * Flax (`flax_model.msgpack`, `FlaxBartForConditionalGeneration`): `model/encoder/layers/0/self_attn/
 * q_proj/kernel` → `model.encoder.layers.0.self_attn.q_proj.weight` (Dense [in, out] → [out, in]),
 * LayerNorm `scale` → `weight`, Embed `embedding` → `weight`.
 */
import { emptyMapped, flaxLeafToTorch, leafOf, put, type MappedCheckpoint } from './common.js';
import type { SourceTensor } from '../tensor.js';

const BASE_MODULES = ['shared', 'encoder', 'decoder'];

/** Names transformers writes as copies of `model.shared.weight` (for a flavour). */
export function bartTiedCopies(flavour: 'bart' | 'dallebart'): string[] {
  return flavour === 'bart' ? ['model.encoder.embed_tokens.weight', 'model.decoder.embed_tokens.weight', 'lm_head.weight'] : ['model.encoder.embed_tokens.weight'];
}

function withModelPrefix(name: string, sep: string): string {
  const first = name.split(sep)[0] as string;
  return BASE_MODULES.includes(first) ? `model${sep}${name}` : name;
}

/** Ties, aliases and the zero bias, shared by both source formats. */
function finish(m: MappedCheckpoint, flavour: 'bart' | 'dallebart', vocab: number): void {
  const tied = bartTiedCopies(flavour);
  if (!m.tensors.has('model.shared.weight')) {
    // some exports keep only the encoder's copy of the shared embedding
    const alias = tied.find((n) => n !== 'lm_head.weight' && m.tensors.has(n));
    if (alias) {
      const t = m.tensors.get(alias) as NonNullable<ReturnType<typeof m.tensors.get>>;
      m.tensors.delete(alias);
      m.tensors.set('model.shared.weight', { ...t, name: 'model.shared.weight' });
      m.notes.push(`model.shared.weight taken from ${alias} (the checkpoint has no separate shared embedding)`);
    }
  }
  for (const n of tied) {
    const t = m.tensors.get(n);
    if (!t) continue;
    m.tensors.delete(n);
    m.dropped.push({ name: t.from, reason: 'tied copy of model.shared.weight' });
  }
  if (flavour === 'bart' && !m.tensors.has('final_logits_bias')) {
    const zeros: SourceTensor = { dtype: 'F32', shape: [1, vocab], read: async () => new Uint8Array(vocab * 4) };
    put(m, 'final_logits_bias', '(zeros)', zeros);
    m.notes.push(`final_logits_bias added as zeros [1, ${vocab}] (transformers' buffer; the checkpoint has none)`);
  }
}

/** transformers' PyTorch BART state dict → ours. */
export function mapTorchBart(tensors: Map<string, SourceTensor>, flavour: 'bart' | 'dallebart', vocab: number): MappedCheckpoint {
  const m = emptyMapped();
  for (const [name, t] of tensors) {
    if (name.endsWith('.embed_positions._float_tensor') || name === 'model.encoder.version' || name === 'model.decoder.version') {
      m.dropped.push({ name, reason: 'fairseq buffer' });
      continue;
    }
    put(m, withModelPrefix(name, '.'), name, t);
  }
  finish(m, flavour, vocab);
  return m;
}

/** transformers' Flax BART parameter tree (flattened with `/`) → ours. */
export function mapFlaxBart(tensors: Map<string, SourceTensor>, flavour: 'bart' | 'dallebart', vocab: number): MappedCheckpoint {
  const m = emptyMapped();
  for (const [path, t] of tensors) {
    const p = withModelPrefix(path, '/');
    const { module, leaf } = leafOf(p, '/');
    if (p === 'final_logits_bias') {
      put(m, 'final_logits_bias', path, t);
      continue;
    }
    if (!['kernel', 'bias', 'scale', 'embedding'].includes(leaf)) {
      m.unmapped.push(path);
      continue;
    }
    const r = flaxLeafToTorch(module.replaceAll('/', '.'), leaf, t.shape);
    put(m, r.name, path, t, r);
  }
  finish(m, flavour, vocab);
  return m;
}
