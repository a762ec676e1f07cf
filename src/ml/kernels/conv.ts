/**
 * Conv2D gradients for the wasm backend, built on the stock XNNPACK forward conv.
 *
 * - Conv2DBackpropFilter (absent from tfjs-backend-wasm): the filter gradient is itself a stride-1
 *   convolution: batch↔channel-transposed x convolved with the transposed dy as filter, dilated by the
 *   forward stride.
 * - Conv2DBackpropInput (stock one is a plain loop, ~10× slower than the forward conv): stride 1 is a
 *   conv of dy with the spatially flipped, in/out-swapped filter; stride s splits into s² phase
 *   sub-convolutions whose outputs interleave into dx.
 * Only NHWC and dilation 1 in the forward conv (what tfjs' conv2d gradient itself supports).
 *
 * With the native kernels loaded, the forward conv and both gradients are im2col + OpenBLAS sgemm on
 * the heap instead (on every core; XNNPACK's conv runs on one).
 */
import * as tf from '@tensorflow/tfjs-core';
import { type ConvGeometry, nativeKernels } from './native.js';
import { asWasmBackend, f32, floatOffset, heapBuffer, KernelScope, WasmKernelError, withScope } from './wasm-heap.js';

type Pads = { top: number; bottom: number; left: number; right: number };

interface BackpropAttrs {
  strides: number | [number, number];
  pad: 'valid' | 'same' | number | tf.backend_util.ExplicitPadding;
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
  dataFormat?: 'NHWC' | 'NCHW';
}

function pair(v: number | [number, number]): [number, number] {
  return typeof v === 'number' ? [v, v] : v;
}

/** The forward conv's geometry (NHWC only); gradients pass dilation 1, as tfjs' conv2d gradient requires. */
function conv2DInfo(xShape: number[], filterShape: number[], a: BackpropAttrs & { dilations?: number | [number, number] }): tf.backend_util.Conv2DInfo {
  if (a.dataFormat != null && a.dataFormat !== 'NHWC') {
    throw new WasmKernelError('Conv2D', `dataFormat ${a.dataFormat} is not supported; use NHWC (channelsLast)`);
  }
  const shape4 = (v: number[]): [number, number, number, number] => v as [number, number, number, number];
  return tf.backend_util.computeConv2DInfo(shape4(xShape), shape4(filterShape), a.strides, a.dilations ?? 1, a.pad, a.dimRoundingMode, false, 'channelsLast');
}

function forwardPads(xShape: number[], filterShape: number[], a: BackpropAttrs): Pads {
  const p = conv2DInfo(xShape, filterShape, a).padInfo;
  return { top: p.top, bottom: p.bottom, left: p.left, right: p.right };
}

/** The native kernels' argument list for a conv. */
function geometry(info: tf.backend_util.Conv2DInfo): ConvGeometry {
  return [
    info.batchSize, info.inHeight, info.inWidth, info.inChannels,
    info.outHeight, info.outWidth, info.outChannels,
    info.filterHeight, info.filterWidth, info.strideHeight, info.strideWidth,
    info.padInfo.top, info.padInfo.left, info.dilationHeight, info.dilationWidth,
  ];
}

/** The forward conv: native when loaded, else the stock XNNPACK kernel. */
function conv2D(args: { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap }): tf.TensorInfo {
  const x = args.inputs['x'] as tf.TensorInfo;
  const filter = args.inputs['filter'] as tf.TensorInfo;
  const attrs = args.attrs as unknown as BackpropAttrs & { dilations?: number | [number, number] };
  const native = nativeKernels();
  if (native === null) return withScope(args.backend, (s) => s.run('Conv2D', { x, filter }, args.attrs));
  const info = conv2DInfo(x.shape, filter.shape, attrs);
  const backend = asWasmBackend(args.backend);
  const out = backend.makeOutput(info.outShape, 'float32');
  if (tf.util.sizeFromShape(info.outShape) === 0) return out;
  native.conv2d(heapBuffer(backend), floatOffset(backend, x, 'Conv2D'), floatOffset(backend, filter, 'Conv2D'), floatOffset(backend, out, 'Conv2D'), ...geometry(info));
  return out;
}

/**
 * Stride-1 conv of NHWC `x` with `filter` [fh, fw, ci, co] where pads may be negative: a negative pad
 * crops that many rows/columns of x first (XNNPACK only accepts non-negative padding).
 */
function convAnyPad(s: KernelScope, x: tf.TensorInfo, filter: tf.TensorInfo, pads: Pads, dilation: [number, number]): tf.TensorInfo {
  const [n, h, w, c] = x.shape as [number, number, number, number];
  const cropT = Math.max(0, -pads.top);
  const cropB = Math.max(0, -pads.bottom);
  const cropL = Math.max(0, -pads.left);
  const cropR = Math.max(0, -pads.right);
  let input = x;
  if (cropT + cropB + cropL + cropR > 0) {
    input = s.slice(x, [0, cropT, cropL, 0], [n, h - cropT - cropB, w - cropL - cropR, c]);
  }
  const explicit: tf.backend_util.ExplicitPadding = [
    [0, 0],
    [Math.max(0, pads.top), Math.max(0, pads.bottom)],
    [Math.max(0, pads.left), Math.max(0, pads.right)],
    [0, 0],
  ];
  return s.run('Conv2D', { x: input, filter }, { strides: [1, 1], pad: explicit, dilations: dilation, dataFormat: 'NHWC', dimRoundingMode: 'floor' });
}

/** dW[kh,kw,ci,co] = Σ_{n,oh,ow} x[n, oh·s+kh−pt, ow·s+kw−pl, ci] · dy[n,oh,ow,co]. */
function conv2DBackpropFilter(args: { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap }): tf.TensorInfo {
  const x = args.inputs['x'] as tf.TensorInfo;
  const dy = args.inputs['dy'] as tf.TensorInfo;
  const attrs = args.attrs as unknown as BackpropAttrs & { filterShape: [number, number, number, number] };
  const [fh, fw] = attrs.filterShape;
  const [sh, sw] = pair(attrs.strides);
  const xShape = x.shape as [number, number, number, number];
  const pads = forwardPads(xShape, attrs.filterShape, attrs);
  const [, h, w] = xShape;
  const [, oh, ow] = dy.shape as [number, number, number, number];
  const native = nativeKernels();
  if (native !== null) {
    const backend = asWasmBackend(args.backend);
    const out = backend.makeOutput(attrs.filterShape, 'float32');
    const info = conv2DInfo(xShape, attrs.filterShape, attrs);
    native.conv2dBackpropFilter(heapBuffer(backend), floatOffset(backend, x, 'Conv2DBackpropFilter'), floatOffset(backend, out, 'Conv2DBackpropFilter'), floatOffset(backend, dy, 'Conv2DBackpropFilter'), ...geometry(info));
    return out;
  }
  return withScope(args.backend, (s) => {
    const xt = s.transpose(x, [3, 1, 2, 0]); // [ci, h, w, n]: channels become the batch
    const dyt = s.transpose(dy, [1, 2, 0, 3]); // [oh, ow, n, co]: a filter over n
    // The conv output must be exactly fh×fw; bottom/right padding follows from that (negative = crop).
    const p: Pads = {
      top: pads.top,
      left: pads.left,
      bottom: fh + (oh - 1) * sh - h - pads.top,
      right: fw + (ow - 1) * sw - w - pads.left,
    };
    const out = convAnyPad(s, xt, dyt, p, [sh, sw]); // [ci, fh, fw, co]
    return s.transpose(out, [1, 2, 0, 3]);
  });
}

/**
 * The sub-filter of phase (k0, l0): taps kh = k0 + s·j (j < jh), kw = l0 + s·i (i < jw), flipped in both
 * spatial axes and with in/out channels swapped → [jh, jw, co, ci]. Filters are small, so a JS loop.
 */
function phaseFilter(s: KernelScope, filter: tf.TensorInfo, k0: number, l0: number, sh: number, sw: number): { info: tf.TensorInfo; jh: number; jw: number } {
  const [fh, fw, ci, co] = filter.shape as [number, number, number, number];
  const jh = Math.ceil((fh - k0) / sh);
  const jw = Math.ceil((fw - l0) / sw);
  const info = s.alloc([jh, jw, co, ci]);
  const src = f32(s.backend, filter);
  const dst = f32(s.backend, info);
  for (let a = 0; a < jh; a++) {
    const kh = k0 + sh * (jh - 1 - a);
    for (let b = 0; b < jw; b++) {
      const kw = l0 + sw * (jw - 1 - b);
      const srcBase = (kh * fw + kw) * ci * co;
      const dstBase = (a * jw + b) * co * ci;
      for (let i = 0; i < ci; i++) {
        for (let o = 0; o < co; o++) dst[dstBase + o * ci + i] = src[srcBase + i * co + o];
      }
    }
  }
  return { info, jh, jw };
}

/**
 * dx[n,h,w,ci] = Σ dy[n,oh,ow,co] · W[kh,kw,ci,co] over h = oh·s+kh−pt. Rows with h ≡ ph (mod s) only
 * see taps kh ≡ ph+pt (mod s): each phase is a stride-1 conv of dy with a flipped sub-filter.
 */
function conv2DBackpropInput(args: { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap }): tf.TensorInfo {
  const dy = args.inputs['dy'] as tf.TensorInfo;
  const filter = args.inputs['filter'] as tf.TensorInfo;
  const attrs = args.attrs as unknown as BackpropAttrs & { inputShape: [number, number, number, number] };
  const inputShape = attrs.inputShape;
  const [n, h, w, ci] = inputShape;
  const [sh, sw] = pair(attrs.strides);
  const pads = forwardPads(inputShape, filter.shape, attrs);
  const [, oh, ow] = dy.shape as [number, number, number, number];
  const native = nativeKernels();
  if (native !== null) {
    const backend = asWasmBackend(args.backend);
    const out = backend.makeOutput(inputShape, 'float32');
    const info = conv2DInfo(inputShape, filter.shape, attrs);
    native.conv2dBackpropInput(heapBuffer(backend), floatOffset(backend, out, 'Conv2DBackpropInput'), floatOffset(backend, filter, 'Conv2DBackpropInput'), floatOffset(backend, dy, 'Conv2DBackpropInput'), ...geometry(info));
    return out;
  }
  return withScope(args.backend, (s) => {
    const phases: { ph: number; pw: number; out: tf.TensorInfo | null; hp: number; wp: number }[] = [];
    for (let ph = 0; ph < Math.min(sh, h); ph++) {
      for (let pw = 0; pw < Math.min(sw, w); pw++) {
        const hp = Math.ceil((h - ph) / sh);
        const wp = Math.ceil((w - pw) / sw);
        const k0 = (ph + pads.top) % sh;
        const l0 = (pw + pads.left) % sw;
        const { info: g, jh, jw } = phaseFilter(s, filter, k0, l0, sh, sw);
        if (jh <= 0 || jw <= 0) {
          phases.push({ ph, pw, out: null, hp, wp }); // no tap reaches this phase: its gradient is zero
          continue;
        }
        const ch = (ph + pads.top - k0) / sh;
        const cw = (pw + pads.left - l0) / sw;
        const top = jh - 1 - ch;
        const left = jw - 1 - cw;
        const p: Pads = { top, left, bottom: hp + jh - 1 - oh - top, right: wp + jw - 1 - ow - left };
        phases.push({ ph, pw, out: convAnyPad(s, dy, g, p, [1, 1]), hp, wp });
      }
    }
    if (sh === 1 && sw === 1 && phases[0]?.out != null) return phases[0].out;
    const dx = s.alloc([n, h, w, ci]);
    const out = f32(s.backend, dx);
    out.fill(0);
    for (const { ph, pw, out: phase, hp, wp } of phases) {
      if (phase == null) continue;
      const src = f32(s.backend, phase);
      for (let b = 0; b < n; b++) {
        for (let i = 0; i < hp; i++) {
          const row = ph + sh * i;
          for (let j = 0; j < wp; j++) {
            const col = pw + sw * j;
            const from = ((b * hp + i) * wp + j) * ci;
            out.set(src.subarray(from, from + ci), ((b * h + row) * w + col) * ci);
          }
        }
      }
    }
    return dx;
  });
}

export const conv2DConfig: tf.KernelConfig = {
  kernelName: tf.Conv2D,
  backendName: 'wasm',
  kernelFunc: conv2D as unknown as tf.KernelFunc,
};

export const conv2DBackpropFilterConfig: tf.KernelConfig = {
  kernelName: tf.Conv2DBackpropFilter,
  backendName: 'wasm',
  kernelFunc: conv2DBackpropFilter as unknown as tf.KernelFunc,
};

export const conv2DBackpropInputConfig: tf.KernelConfig = {
  kernelName: tf.Conv2DBackpropInput,
  backendName: 'wasm',
  kernelFunc: conv2DBackpropInput as unknown as tf.KernelFunc,
};
