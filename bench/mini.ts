/**
 * The `mini` section (issue #11, opt-in: ~10+ GB): DalleBart at dalle-mini's mini size (DALLEBART_DEFAULTS,
 * ≈0.4 B parameters) trained at batch 1 with Adafactor (factored second moments, as dalle-mini), random
 * weights and data. Reports s/step and peak RSS, the sizes of parameters, gradients and optimizer state,
 * and the wasm heap; when a stage does not fit in the 32-bit (4 GiB) wasm heap, the stage that failed
 * and the figures at that point, instead of a time. The peer (bench/peer/mini.py) runs the same model
 * and optimizer in PyTorch, alternating with ours when both fit.
 */
import { availableParallelism } from 'node:os';
import { tf } from '../src/ml/backend.js';
import { DALLEBART_DEFAULTS, DalleBart, dalleBartParamSpecs } from '../src/ml/models/dallebart.js';
import { Adafactor, disposeGrads, factoredDims, type Grads, valueAndGrads } from '../src/ml/optim/index.js';
import { interleave, spread } from './peer.js';
import type { Ctx, Row } from './run.js';

const GiB = 2 ** 30;
const gib = (bytes: number): number => +(bytes / GiB).toFixed(3);

/** The wasm module's linear memory, in bytes (0 on another backend). */
function wasmHeapBytes(): number {
  const b = tf.backend() as unknown as { wasm?: { HEAPU8?: Uint8Array } };
  return b.wasm?.HEAPU8?.buffer.byteLength ?? 0;
}

const rssGiB = (): number => gib(process.resourceUsage().maxRSS * 1024);

export async function benchMini(backend: string, ctx: Ctx): Promise<Row[]> {
  const c = DALLEBART_DEFAULTS;
  const extra: Record<string, number | string | boolean> = { config: 'DALLEBART_DEFAULTS (12+12 layers, d 1024, 16 heads, GLU 2730, text 64, 256 codes of 16384)', batch: 1, optimizer: 'Adafactor (factored, no momentum)' };
  // what the optimizer state would take, from the shapes alone (known before anything is allocated)
  const specs = dalleBartParamSpecs(c).filter((p) => p.trainable);
  const n = specs.reduce((t, p) => t + p.shape.reduce((a, b) => a * b, 1), 0);
  const factoredFloats = specs.reduce((t, p) => {
    const dims = factoredDims(p.shape, true, 128);
    const size = p.shape.reduce((a, b) => a * b, 1);
    return t + (dims ? size / (p.shape[dims[1]] as number) + size / (p.shape[dims[0]] as number) : size);
  }, 0);
  extra['adafactorStateGiB'] = gib(4 * factoredFloats);
  extra['adamwStateGiB'] = gib(8 * n);
  extra['wasmHeapLimitGiB'] = 4;
  let stage = 'create';
  let model: DalleBart | null = null;
  let grads: Grads | null = null;
  const mark = (what: string): void => {
    extra[`${what}WasmHeapGiB`] = gib(wasmHeapBytes());
    extra[`${what}TensorGiB`] = gib(tf.memory().numBytes);
    extra[`${what}MaxRssGiB`] = rssGiB();
  };
  try {
    const t0 = performance.now();
    model = DalleBart.create(c, 0);
    const m = model;
    extra['createS'] = +((performance.now() - t0) / 1000).toFixed(1);
    const nParams = m.params.trainable().reduce((s, v) => s + v.size, 0);
    extra['params'] = nParams;
    extra['paramsGiB'] = gib(4 * nParams);
    extra['gradsGiB'] = gib(4 * nParams);
    mark('afterCreate');
    const opt = new Adafactor({ learningRate: 1e-4 });
    const L = c.max_text_length;
    const text = tf.tensor2d(Int32Array.from({ length: L }, (_, i) => (i < 24 ? 3 + ((i * 7919) % (c.vocab_size - 3)) : 1)), [1, L], 'int32');
    const mask = tf.tensor2d(Int32Array.from({ length: L }, (_, i) => (i < 24 ? 1 : 0)), [1, L], 'int32');
    const codes = tf.tensor2d(Int32Array.from({ length: c.image_length }, (_, i) => (i * 104729) % c.image_vocab_size), [1, c.image_length], 'int32');
    let loss = Number.NaN;
    let optimizerGiB = 0;
    const step = (): number => {
      const s0 = performance.now();
      stage = 'forward+backward';
      const r = valueAndGrads(m.params, () => m.loss(text, mask, codes));
      grads = r.grads;
      loss = r.loss.dataSync()[0] as number;
      r.loss.dispose();
      mark('afterBackward');
      stage = 'optimizer';
      opt.apply(m.params, grads);
      disposeGrads(grads);
      grads = null;
      optimizerGiB = gib(tf.memory().numBytes - 4 * nParams - 4 * (L * 2 + c.image_length));
      mark('afterStep');
      stage = 'done';
      return performance.now() - s0;
    };
    const first = step();
    extra['firstStepS'] = +(first / 1000).toFixed(2);
    extra['optimizerStateGiB'] = optimizerGiB;
    // the peer: one warm-up step and one trial on every core (a mini step takes tens of seconds)
    const r = await interleave(step, ctx.quick ? 1 : 2, ctx.peer, 'mini', ctx.settleMs, 1, { trials: 1, threads: [availableParallelism()] });
    extra['loss'] = +loss.toFixed(4);
    extra['sPerStep'] = +(r.ours.ms / 1000).toFixed(2);
    extra['maxRssGiB'] = rssGiB();
    if (r.info) for (const [k, v] of Object.entries(r.info)) extra[`peer_${k}`] = v;
    tf.dispose([text, mask, codes]);
    opt.dispose();
    return [{ section: 'mini', name: 'DalleBart mini (≈0.4 B) Adafactor step, batch 1', backend, ms: r.ours.ms, spread: r.ours, ...(r.peer ? { peer: r.peer } : {}), ...(r.peerNote ? { peerNote: r.peerNote } : {}), extra }];
  } catch (e) {
    extra['failedAt'] = stage;
    extra['error'] = String((e as Error).message ?? e).slice(0, 300);
    mark('atFailure');
    // ours did not fit: PyTorch's figures alone (warm-up step, then 2 timed steps on every core)
    if (ctx.peer) {
      try {
        const { info } = await ctx.peer.prepare('mini', { trials: 1, threads: [availableParallelism()] });
        const times = [await ctx.peer.rep('mini'), await ctx.peer.rep('mini')];
        await ctx.peer.drop('mini');
        extra['peerSPerStep'] = +(spread(times).ms / 1000).toFixed(2);
        extra['peerStepsS'] = times.map((t) => (t / 1000).toFixed(2)).join(', ');
        if (info) for (const [k, v] of Object.entries(info)) extra[`peer_${k}`] = v;
      } catch (pe) {
        extra['peerError'] = String((pe as Error).message).slice(0, 200);
      }
    }
    return [{ section: 'mini', name: 'DalleBart mini (≈0.4 B) Adafactor step, batch 1', backend, ms: Number.NaN, extra }];
  } finally {
    if (grads) disposeGrads(grads);
    try {
      model?.dispose();
    } catch {
      // a wasm heap that failed to grow may refuse further calls; the figures are already taken
    }
  }
}
