/**
 * VQGAN name maps onto our taming names (src/ml/models/vqgan.ts).
 *
 * taming-transformers (PyTorch, Lightning `.ckpt`): the names are ours already. The training losses live
 * under `loss.` (`loss.discriminator.*` PatchGAN, `loss.perceptual_loss.*` LPIPS/VGG16): dropped, or
 * for LPIPS, on request, mapped to the names our LPIPS loader reads.
 *
 * vqgan-jax / dalle-mini (Flax msgpack): the same modules, with the converter's renames undone —
 *   encoder/down_0/block_1/norm1/scale       → encoder.down.0.block.1.norm1.weight
 *   encoder/down_0/downsample/conv/kernel    → encoder.down.0.downsample.conv.weight   (HWIO → OIHW)
 *   decoder/up_3/attn_0/q/kernel             → decoder.up.3.attn.0.q.weight
 *   encoder/mid/block_1/conv1/kernel         → encoder.mid.block_1.conv1.weight        (mid keeps `_1`)
 *   quantize/embedding/embedding             → quantize.embedding.weight
 * A top-level `model/` (the HF base-model prefix) is removed.
 */
import { emptyMapped, flaxLeafToTorch, leafOf, put, type MappedCheckpoint } from './common.js';
import type { SourceTensor } from '../tensor.js';

const DISCRIMINATOR_REASON = "PatchGAN discriminator (training loss; taming's has BatchNorm, ours has none, so it is not converted)";

/**
 * taming state dict → ours: the names stay, the `loss.*` training modules are dropped — except, with
 * `keepLpips`, the LPIPS network (`loss.perceptual_loss.net.sliceK.N.*`, `…lin{k}.model.1.weight`), which
 * comes back as a second map under the names `loadLpips` reads (its ScalingLayer constants are built in).
 */
export function mapTamingVqgan(tensors: Map<string, SourceTensor>, opts: { keepLpips?: boolean } = {}): { model: MappedCheckpoint; lpips: MappedCheckpoint | null } {
  const m = emptyMapped();
  const lpips = opts.keepLpips ? emptyMapped() : null;
  const LPIPS = 'loss.perceptual_loss.';
  for (const [name, t] of tensors) {
    if (lpips && name.startsWith(LPIPS)) {
      const short = name.slice(LPIPS.length);
      if (short.startsWith('scaling_layer.')) m.dropped.push({ name, reason: 'LPIPS ScalingLayer constants (built into our LPIPS)' });
      else put(lpips, short, name, t);
    } else if (name.startsWith('loss.')) {
      const reason = name.startsWith('loss.discriminator.') ? DISCRIMINATOR_REASON : name.startsWith(LPIPS) ? 'LPIPS / VGG16 (training loss; --keep-loss writes it to lpips.safetensors)' : 'training loss';
      m.dropped.push({ name, reason });
    } else put(m, name, name, t);
  }
  return { model: m, lpips };
}

const FLAX_TOP = new Set(['encoder', 'decoder', 'quantize', 'quant_conv', 'post_quant_conv']);
const FLAX_LEAVES = new Set(['kernel', 'bias', 'scale', 'embedding']);

/** One Flax module path → the taming module path. */
function flaxModuleToTaming(module: string): string {
  const parts = module.split('/');
  return parts
    .map((p, i) => {
      // lists in a Flax setup() are named `down_0`, `block_1`, …; taming's are ModuleLists (`down.0`), except
      // the mid block's own `block_1`/`attn_1`/`block_2`, which are attributes in both
      if (parts[i - 1] === 'mid') return p;
      const hit = /^(down|up|block|attn)_(\d+)$/.exec(p);
      return hit ? `${hit[1]}.${hit[2]}` : p;
    })
    .join('.');
}

/** vqgan-jax parameter tree (flattened with `/`) → taming names, kernels transposed. */
export function mapFlaxVqgan(tensors: Map<string, SourceTensor>): MappedCheckpoint {
  const m = emptyMapped();
  for (const [path, t] of tensors) {
    const p = path.startsWith('model/') ? path.slice('model/'.length) : path;
    const { module, leaf } = leafOf(p, '/');
    if (!FLAX_TOP.has(p.split('/')[0] as string) || !FLAX_LEAVES.has(leaf)) {
      m.unmapped.push(path);
      continue;
    }
    const r = flaxLeafToTorch(flaxModuleToTaming(module), leaf, t.shape);
    put(m, r.name, path, t, r);
  }
  return m;
}
