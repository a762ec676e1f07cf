/*
 * minidalle's native kernels: matrix products and convolutions for the wasm backend, computed with
 * OpenBLAS directly on the wasm heap.
 *
 * Why: tfjs-node cannot be installed without downloading libtensorflow, and 128-bit wasm SIMD on one
 * thread tops out near 25 GFLOPS, while the CPU does several times that with AVX2/AVX-512 on every
 * core. The tensors already live in the wasm heap, an ArrayBuffer this addon can see, so the kernels
 * read their inputs and write their outputs in place: no copies in or out.
 *
 * Every entry point receives the heap and float offsets into it, and checks every extent against the
 * heap size before touching memory: a bad offset is a thrown error, never an out-of-bounds access.
 * Convolutions are NHWC with filters [kh, kw, ci, co] (tfjs' layout), lowered to im2col + sgemm in
 * row chunks so the scratch buffer stays bounded whatever the batch.
 */
#define NAPI_VERSION 8
#include <node_api.h>
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* im2col rows per chunk: about this many floats (1 MiB, so a chunk is still in cache when sgemm reads
 * it back), but at least MIN_CHUNK_ROWS rows so each sgemm stays large enough to run at full speed. */
#ifndef CHUNK_FLOATS
#define CHUNK_FLOATS ((int64_t)256 * 1024)
#endif
#define MIN_CHUNK_ROWS ((int64_t)128)

/* One scratch buffer for every call, grown on demand and kept: a fresh malloc of megabytes per conv is
 * an mmap whose page faults cost more than the im2col itself. JS calls in on one thread only. */
static float* scratch = NULL;
static int64_t scratch_floats = 0;

static float* scratch_for(int64_t floats) {
  if (floats > scratch_floats) {
    float* grown = realloc(scratch, (size_t)floats * sizeof(float));
    if (grown == NULL) return NULL;
    scratch = grown;
    scratch_floats = floats;
  }
  return scratch;
}

#define CHECK(call)                                                                      \
  do {                                                                                   \
    if ((call) != napi_ok) {                                                             \
      napi_throw_error(env, "MINIDALLE_NATIVE", "N-API call failed: " #call);            \
      return NULL;                                                                       \
    }                                                                                    \
  } while (0)

static napi_value fail(napi_env env, const char* fn, const char* what) {
  char msg[512];
  snprintf(msg, sizeof msg, "minidalle native %s: %s", fn, what);
  napi_throw_error(env, "MINIDALLE_NATIVE", msg);
  return NULL;
}

/* The heap as floats: arg is the wasm memory's ArrayBuffer. */
static int heap_of(napi_env env, napi_value v, float** data, int64_t* floats) {
  bool is_ab = false;
  if (napi_is_arraybuffer(env, v, &is_ab) != napi_ok || !is_ab) return 0;
  void* p = NULL;
  size_t bytes = 0;
  if (napi_get_arraybuffer_info(env, v, &p, &bytes) != napi_ok) return 0;
  *data = (float*)p;
  *floats = (int64_t)(bytes / sizeof(float));
  return 1;
}

static int int_arg(napi_env env, napi_value v, int64_t* out) {
  return napi_get_value_int64(env, v, out) == napi_ok;
}

/* [off, off + len) lies inside the heap. */
static int inside(int64_t off, int64_t len, int64_t floats) {
  return off >= 0 && len >= 0 && off <= floats && len <= floats - off;
}

/*
 * sgemm(heap, transA, transB, m, n, k, batch, aOff, aStride, bOff, bStride, cOff)
 * For i < batch: C_i[m×n] = op(A_i) op(B_i), with A_i at aOff + i·aStride (stride 0 = shared operand),
 * B_i likewise, C_i at cOff + i·m·n. Stored shapes are row-major: A [m,k] or [k,m] when transposed.
 */
static napi_value sgemm(napi_env env, napi_callback_info info) {
  size_t argc = 12;
  napi_value argv[12];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc != 12) return fail(env, "sgemm", "expected 12 arguments");
  float* heap;
  int64_t floats;
  if (!heap_of(env, argv[0], &heap, &floats)) return fail(env, "sgemm", "argument 0 must be the wasm heap ArrayBuffer");
  bool ta, tb;
  CHECK(napi_get_value_bool(env, argv[1], &ta));
  CHECK(napi_get_value_bool(env, argv[2], &tb));
  int64_t a[9];
  for (int i = 0; i < 9; i++)
    if (!int_arg(env, argv[3 + i], &a[i])) return fail(env, "sgemm", "sizes and offsets must be integers");
  int64_t m = a[0], n = a[1], k = a[2], batch = a[3], aOff = a[4], aStride = a[5], bOff = a[6], bStride = a[7], cOff = a[8];
  if (m <= 0 || n <= 0 || k <= 0 || batch <= 0 || aStride < 0 || bStride < 0 || m > INT32_MAX || n > INT32_MAX || k > INT32_MAX)
    return fail(env, "sgemm", "sizes must be positive and fit in 32 bits");
  if (!inside(aOff, (batch - 1) * aStride + m * k, floats) || !inside(bOff, (batch - 1) * bStride + k * n, floats) ||
      !inside(cOff, batch * m * n, floats))
    return fail(env, "sgemm", "an operand lies outside the heap");
  int lda = ta ? (int)m : (int)k;
  int ldb = tb ? (int)k : (int)n;
  for (int64_t i = 0; i < batch; i++) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, 1.0f,
                heap + aOff + i * aStride, lda, heap + bOff + i * bStride, ldb, 0.0f, heap + cOff + i * m * n, (int)n);
  }
  return NULL;
}

/* Convolution geometry, NHWC input [n,h,w,ci], filter [fh,fw,ci,co], output [n,oh,ow,co]. */
typedef struct {
  int64_t n, h, w, ci, oh, ow, co, fh, fw, sh, sw, pt, pl, dh, dw;
} Geometry;

/* conv*(heap, xOff, fOff, yOff, n, h, w, ci, oh, ow, co, fh, fw, sh, sw, pt, pl, dh, dw) */
static int geometry_args(napi_env env, napi_callback_info info, const char* fn, float** heap, int64_t off[3], Geometry* g) {
  size_t argc = 19;
  napi_value argv[19];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 19) {
    fail(env, fn, "expected 19 arguments");
    return 0;
  }
  int64_t floats;
  if (!heap_of(env, argv[0], heap, &floats)) {
    fail(env, fn, "argument 0 must be the wasm heap ArrayBuffer");
    return 0;
  }
  int64_t v[18];
  for (int i = 0; i < 18; i++) {
    if (!int_arg(env, argv[1 + i], &v[i])) {
      fail(env, fn, "sizes and offsets must be integers");
      return 0;
    }
  }
  off[0] = v[0], off[1] = v[1], off[2] = v[2];
  *g = (Geometry){v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15], v[16], v[17]};
  if (g->n <= 0 || g->h <= 0 || g->w <= 0 || g->ci <= 0 || g->oh <= 0 || g->ow <= 0 || g->co <= 0 || g->fh <= 0 || g->fw <= 0 ||
      g->sh <= 0 || g->sw <= 0 || g->dh <= 0 || g->dw <= 0 || g->pt < 0 || g->pl < 0) {
    fail(env, fn, "sizes, strides and dilations must be positive and paddings non-negative");
    return 0;
  }
  int64_t k = g->fh * g->fw * g->ci;
  if (k > INT32_MAX || g->co > INT32_MAX || g->n * g->oh * g->ow > INT32_MAX) {
    fail(env, fn, "the problem is too large for 32-bit BLAS sizes");
    return 0;
  }
  if (!inside(off[0], g->n * g->h * g->w * g->ci, floats) || !inside(off[1], k * g->co, floats) ||
      !inside(off[2], g->n * g->oh * g->ow * g->co, floats)) {
    fail(env, fn, "a tensor lies outside the heap");
    return 0;
  }
  return 1;
}

/* A 1×1 stride-1 unpadded conv is a plain matmul over pixels: no im2col needed. */
static int is_pointwise(const Geometry* g) {
  return g->fh == 1 && g->fw == 1 && g->sh == 1 && g->sw == 1 && g->pt == 0 && g->pl == 0 && g->oh == g->h && g->ow == g->w;
}

/* Rows per im2col chunk (see CHUNK_FLOATS). */
static int64_t chunk_rows(const Geometry* g) {
  int64_t k = g->fh * g->fw * g->ci;
  int64_t rows = CHUNK_FLOATS / k;
  int64_t total = g->n * g->oh * g->ow;
  if (rows < MIN_CHUNK_ROWS) rows = MIN_CHUNK_ROWS;
  return rows < total ? rows : total;
}

/* col[r − r0][(kh·fw + kw)·ci + c] = x[b, oh·sh − pt + kh·dh, ow·sw − pl + kw·dw, c] (0 outside). */
static void im2col(const Geometry* g, const float* x, float* col, int64_t r0, int64_t r1) {
  const int64_t ci = g->ci, k = g->fh * g->fw * ci;
  for (int64_t r = r0; r < r1; r++) {
    int64_t b = r / (g->oh * g->ow), rem = r % (g->oh * g->ow), oy = rem / g->ow, ox = rem % g->ow;
    float* dst = col + (r - r0) * k;
    for (int64_t kh = 0; kh < g->fh; kh++) {
      int64_t iy = oy * g->sh - g->pt + kh * g->dh;
      for (int64_t kw = 0; kw < g->fw; kw++, dst += ci) {
        int64_t ix = ox * g->sw - g->pl + kw * g->dw;
        if (iy < 0 || iy >= g->h || ix < 0 || ix >= g->w) memset(dst, 0, (size_t)ci * sizeof(float));
        else memcpy(dst, x + ((b * g->h + iy) * g->w + ix) * ci, (size_t)ci * sizeof(float));
      }
    }
  }
}

/* The adjoint of im2col: dx[b, iy, ix, c] += dcol[r − r0][(kh·fw + kw)·ci + c]. */
static void col2im_add(const Geometry* g, const float* col, float* dx, int64_t r0, int64_t r1) {
  const int64_t ci = g->ci, k = g->fh * g->fw * ci;
  for (int64_t r = r0; r < r1; r++) {
    int64_t b = r / (g->oh * g->ow), rem = r % (g->oh * g->ow), oy = rem / g->ow, ox = rem % g->ow;
    const float* src = col + (r - r0) * k;
    for (int64_t kh = 0; kh < g->fh; kh++) {
      int64_t iy = oy * g->sh - g->pt + kh * g->dh;
      for (int64_t kw = 0; kw < g->fw; kw++, src += ci) {
        int64_t ix = ox * g->sw - g->pl + kw * g->dw;
        if (iy < 0 || iy >= g->h || ix < 0 || ix >= g->w) continue;
        float* dst = dx + ((b * g->h + iy) * g->w + ix) * ci;
        for (int64_t c = 0; c < ci; c++) dst[c] += src[c];
      }
    }
  }
}

/* y = conv(x, f): per row chunk, y[rows, co] = col[rows, K] · f[K, co]. */
static napi_value conv2d(napi_env env, napi_callback_info info) {
  float* heap;
  int64_t off[3];
  Geometry g;
  if (!geometry_args(env, info, "conv2d", &heap, off, &g)) return NULL;
  const float *x = heap + off[0], *f = heap + off[1];
  float* y = heap + off[2];
  const int64_t k = g.fh * g.fw * g.ci, total = g.n * g.oh * g.ow;
  if (is_pointwise(&g)) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)total, (int)g.co, (int)k, 1.0f, x, (int)k, f, (int)g.co, 0.0f, y, (int)g.co);
    return NULL;
  }
  int64_t step = chunk_rows(&g);
  float* col = scratch_for(step * k);
  if (col == NULL) return fail(env, "conv2d", "out of memory for the im2col buffer");
  for (int64_t r0 = 0; r0 < total; r0 += step) {
    int64_t r1 = r0 + step < total ? r0 + step : total;
    im2col(&g, x, col, r0, r1);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(r1 - r0), (int)g.co, (int)k, 1.0f, col, (int)k, f, (int)g.co, 0.0f,
                y + r0 * g.co, (int)g.co);
  }
  return NULL;
}

/* dx = conv input gradient: dcol[rows, K] = dy[rows, co] · fᵀ, scattered back with col2im. Args as conv2d with (dx, f, dy). */
static napi_value conv2d_backprop_input(napi_env env, napi_callback_info info) {
  float* heap;
  int64_t off[3];
  Geometry g;
  if (!geometry_args(env, info, "conv2dBackpropInput", &heap, off, &g)) return NULL;
  float* dx = heap + off[0];
  const float *f = heap + off[1], *dy = heap + off[2];
  const int64_t k = g.fh * g.fw * g.ci, total = g.n * g.oh * g.ow;
  if (is_pointwise(&g)) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)total, (int)k, (int)g.co, 1.0f, dy, (int)g.co, f, (int)g.co, 0.0f, dx, (int)k);
    return NULL;
  }
  memset(dx, 0, (size_t)(g.n * g.h * g.w * g.ci) * sizeof(float));
  int64_t step = chunk_rows(&g);
  float* col = scratch_for(step * k);
  if (col == NULL) return fail(env, "conv2dBackpropInput", "out of memory for the col2im buffer");
  for (int64_t r0 = 0; r0 < total; r0 += step) {
    int64_t r1 = r0 + step < total ? r0 + step : total;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(r1 - r0), (int)k, (int)g.co, 1.0f, dy + r0 * g.co, (int)g.co, f, (int)g.co,
                0.0f, col, (int)k);
    col2im_add(&g, col, dx, r0, r1);
  }
  return NULL;
}

/* df = conv filter gradient: df[K, co] = Σ_chunks col[rows, K]ᵀ · dy[rows, co]. Args as conv2d with (x, df, dy). */
static napi_value conv2d_backprop_filter(napi_env env, napi_callback_info info) {
  float* heap;
  int64_t off[3];
  Geometry g;
  if (!geometry_args(env, info, "conv2dBackpropFilter", &heap, off, &g)) return NULL;
  const float* x = heap + off[0];
  float* df = heap + off[1];
  const float* dy = heap + off[2];
  const int64_t k = g.fh * g.fw * g.ci, total = g.n * g.oh * g.ow;
  if (is_pointwise(&g)) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)k, (int)g.co, (int)total, 1.0f, x, (int)k, dy, (int)g.co, 0.0f, df, (int)g.co);
    return NULL;
  }
  int64_t step = chunk_rows(&g);
  float* col = scratch_for(step * k);
  if (col == NULL) return fail(env, "conv2dBackpropFilter", "out of memory for the im2col buffer");
  for (int64_t r0 = 0; r0 < total; r0 += step) {
    int64_t r1 = r0 + step < total ? r0 + step : total;
    im2col(&g, x, col, r0, r1);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)k, (int)g.co, (int)(r1 - r0), 1.0f, col, (int)k, dy + r0 * g.co, (int)g.co,
                r0 == 0 ? 0.0f : 1.0f, df, (int)g.co);
  }
  return NULL;
}

/* ---------------------------------------------------------------- reductions and softmax cross-entropy
 * Memory-bound loops: one thread, vectorised by the compiler (AVX2 where the CPU has it, chosen at load
 * time through target_clones; SSE2 otherwise). The addon is built with -ffast-math so that expf/sqrtf
 * vectorise (glibc's libmvec); inputs are assumed finite. Sums keep 8 partial accumulators, so their
 * rounding differs from a sequential sum by float32 noise only. */

#define VECTORISED __attribute__((target_clones("avx2", "default")))

VECTORISED static float row_sum(const float* x, int64_t n) {
  float acc[8] = {0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; j++) acc[j] += x[i + j];
  float total = 0;
  for (; i < n; i++) total += x[i];
  for (int j = 0; j < 8; j++) total += acc[j];
  return total;
}

VECTORISED static void add_rows(float* y, const float* x, int64_t mid, int64_t inner) {
  memcpy(y, x, (size_t)inner * sizeof(float));
  for (int64_t m = 1; m < mid; m++) {
    const float* src = x + m * inner;
    for (int64_t i = 0; i < inner; i++) y[i] += src[i];
  }
}

/* sum(heap, xOff, yOff, outer, mid, inner): y[o, i] = Σ_m x[o, m, i], i.e. a sum over contiguous axes. */
static napi_value sum_axes(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  float* heap;
  int64_t floats, v[5];
  if (argc != 6 || !heap_of(env, argv[0], &heap, &floats)) return fail(env, "sum", "expected (heap, xOff, yOff, outer, mid, inner)");
  for (int i = 0; i < 5; i++)
    if (!int_arg(env, argv[1 + i], &v[i])) return fail(env, "sum", "sizes and offsets must be integers");
  int64_t xOff = v[0], yOff = v[1], outer = v[2], mid = v[3], inner = v[4];
  if (outer <= 0 || mid <= 0 || inner <= 0) return fail(env, "sum", "sizes must be positive");
  if (!inside(xOff, outer * mid * inner, floats) || !inside(yOff, outer * inner, floats)) return fail(env, "sum", "a tensor lies outside the heap");
  for (int64_t o = 0; o < outer; o++) {
    const float* x = heap + xOff + o * mid * inner;
    float* y = heap + yOff + o * inner;
    if (inner == 1) *y = row_sum(x, mid);
    else add_rows(y, x, mid, inner);
  }
  return NULL;
}

VECTORISED static float row_max(const float* x, int64_t n) {
  float m = x[0];
  for (int64_t i = 1; i < n; i++) m = x[i] > m ? x[i] : m;
  return m;
}

/* Σ exp(x − shift), vectorised through libmvec's expf. */
VECTORISED static float sum_exp(const float* x, int64_t n, float shift) {
  float acc[8] = {0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; j++) acc[j] += expf(x[i + j] - shift);
  float total = 0;
  for (; i < n; i++) total += expf(x[i] - shift);
  for (int j = 0; j < 8; j++) total += acc[j];
  return total;
}

VECTORISED static void softmax_scaled(float* dx, const float* x, int64_t n, float lse, float scale) {
  for (int64_t i = 0; i < n; i++) dx[i] = scale * expf(x[i] - lse);
}

/* (heap, offsets…, rows, vocab): the offsets, then rows and vocab, into v; extents are checked by the caller. */
static int xent_args(napi_env env, napi_callback_info info, const char* fn, size_t count, float** heap, int64_t* floats, int64_t* v) {
  napi_value argv[8];
  size_t argc = 8;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != count || !heap_of(env, argv[0], heap, floats)) {
    fail(env, fn, "expected the heap, the tensors' offsets, rows and vocab");
    return 0;
  }
  for (size_t i = 0; i + 1 < count; i++) {
    if (!int_arg(env, argv[1 + i], &v[i])) {
      fail(env, fn, "sizes and offsets must be integers");
      return 0;
    }
  }
  if (v[count - 3] <= 0 || v[count - 2] <= 0) {
    fail(env, fn, "rows and vocab must be positive");
    return 0;
  }
  return 1;
}

/*
 * sparseXent(heap, logitsOff, labelsOff, lossOff, lseOff, rows, vocab):
 * lse[r] = log Σ_v exp(x[r, v]); loss[r] = lse[r] − x[r, label[r]] (NaN for a label outside [0, vocab)).
 * labels are int32, so their offset is in 4-byte units like the floats'.
 */
static napi_value sparse_xent(napi_env env, napi_callback_info info) {
  float* heap;
  int64_t floats, v[6];
  if (!xent_args(env, info, "sparseXent", 7, &heap, &floats, v)) return NULL;
  int64_t rows = v[4], vocab = v[5];
  if (!inside(v[0], rows * vocab, floats) || !inside(v[1], rows, floats) || !inside(v[2], rows, floats) || !inside(v[3], rows, floats))
    return fail(env, "sparseXent", "a tensor lies outside the heap");
  const float* x = heap + v[0];
  const int32_t* labels = (const int32_t*)(heap + v[1]);
  float *loss = heap + v[2], *lse = heap + v[3];
  for (int64_t r = 0; r < rows; r++) {
    const float* row = x + r * vocab;
    float m = row_max(row, vocab);
    lse[r] = m + logf(sum_exp(row, vocab, m));
    int32_t label = labels[r];
    loss[r] = label >= 0 && label < vocab ? lse[r] - row[label] : NAN;
  }
  return NULL;
}

/* sparseXentGrad(heap, logitsOff, labelsOff, lseOff, dyOff, dxOff, rows, vocab):
 * dx[r, v] = dy[r] · (exp(x[r, v] − lse[r]) − [v = label[r]]). */
static napi_value sparse_xent_grad(napi_env env, napi_callback_info info) {
  float* heap;
  int64_t floats, v[7];
  if (!xent_args(env, info, "sparseXentGrad", 8, &heap, &floats, v)) return NULL;
  int64_t rows = v[5], vocab = v[6];
  if (!inside(v[0], rows * vocab, floats) || !inside(v[1], rows, floats) || !inside(v[2], rows, floats) || !inside(v[3], rows, floats) ||
      !inside(v[4], rows * vocab, floats))
    return fail(env, "sparseXentGrad", "a tensor lies outside the heap");
  const float *x = heap + v[0], *lse = heap + v[2], *dy = heap + v[3];
  const int32_t* labels = (const int32_t*)(heap + v[1]);
  float* dx = heap + v[4];
  for (int64_t r = 0; r < rows; r++) {
    softmax_scaled(dx + r * vocab, x + r * vocab, vocab, lse[r], dy[r]);
    int32_t label = labels[r];
    if (label >= 0 && label < vocab) dx[r * vocab + label] -= dy[r];
  }
  return NULL;
}

/* ---------------------------------------------------------------- unary functions */

VECTORISED static void unary_tanh(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = tanhf(x[i]);
}
VECTORISED static void unary_exp(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = expf(x[i]);
}
VECTORISED static void unary_erf(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = erff(x[i]);
}
VECTORISED static void unary_sigmoid(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = 1.0f / (1.0f + expf(-x[i]));
}

VECTORISED static void unary_swish(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = x[i] / (1.0f + expf(-x[i]));
}

/* unary(heap, op, xOff, yOff, n): y = f(x) with f = tanh (0), exp (1), erf (2), sigmoid (3), swish (4). */
static napi_value unary(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  float* heap;
  int64_t floats, v[4];
  if (argc != 5 || !heap_of(env, argv[0], &heap, &floats)) return fail(env, "unary", "expected (heap, op, xOff, yOff, n)");
  for (int i = 0; i < 4; i++)
    if (!int_arg(env, argv[1 + i], &v[i])) return fail(env, "unary", "op, offsets and size must be integers");
  int64_t op = v[0], n = v[3];
  if (n <= 0 || !inside(v[1], n, floats) || !inside(v[2], n, floats)) return fail(env, "unary", "a tensor lies outside the heap");
  const float* x = heap + v[1];
  float* y = heap + v[2];
  switch (op) {
    case 0: unary_tanh(x, y, n); break;
    case 1: unary_exp(x, y, n); break;
    case 2: unary_erf(x, y, n); break;
    case 3: unary_sigmoid(x, y, n); break;
    case 4: unary_swish(x, y, n); break;
    default: return fail(env, "unary", "unknown op");
  }
  return NULL;
}

/* swishGrad(heap, xOff, dyOff, dxOff, n): dx = dy · (σ(x) + x·σ(x)·(1 − σ(x))), the gradient of x·σ(x). */
VECTORISED static void swish_grad_loop(const float* x, const float* dy, float* dx, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    float s = 1.0f / (1.0f + expf(-x[i]));
    dx[i] = dy[i] * (s + x[i] * s * (1.0f - s));
  }
}

static napi_value swish_grad(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  float* heap;
  int64_t floats, v[4];
  if (argc != 5 || !heap_of(env, argv[0], &heap, &floats)) return fail(env, "swishGrad", "expected (heap, xOff, dyOff, dxOff, n)");
  for (int i = 0; i < 4; i++)
    if (!int_arg(env, argv[1 + i], &v[i])) return fail(env, "swishGrad", "offsets and size must be integers");
  int64_t n = v[3];
  if (n <= 0 || !inside(v[0], n, floats) || !inside(v[1], n, floats) || !inside(v[2], n, floats)) return fail(env, "swishGrad", "a tensor lies outside the heap");
  swish_grad_loop(heap + v[0], heap + v[1], heap + v[2], n);
  return NULL;
}

/* ---------------------------------------------------------------- GroupNorm (NHWC), forward and backward
 * x is [b, hw, c] with c = groups · cg; statistics per (image, group) over hw · cg values, in double. */

typedef struct {
  int64_t b, hw, c, g;
} NormShape;

/* (heap, offsets…, b, hw, c, groups[, eps]): offsets into off, sizes into s; extents are checked by the caller. */
static int norm_args(napi_env env, napi_callback_info info, const char* fn, size_t count, float** heap, int64_t* floats, int64_t* off, NormShape* s,
                     double* eps) {
  napi_value argv[13];
  size_t argc = 13;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != count || !heap_of(env, argv[0], heap, floats)) {
    fail(env, fn, "wrong arguments");
    return 0;
  }
  size_t offsets = count - (eps ? 6 : 5);
  int64_t v[13];
  for (size_t i = 0; i < offsets + 4; i++) {
    if (!int_arg(env, argv[1 + i], &v[i])) {
      fail(env, fn, "offsets and sizes must be integers");
      return 0;
    }
  }
  if (eps && napi_get_value_double(env, argv[count - 1], eps) != napi_ok) {
    fail(env, fn, "eps must be a number");
    return 0;
  }
  *s = (NormShape){v[offsets], v[offsets + 1], v[offsets + 2], v[offsets + 3]};
  if (s->b <= 0 || s->hw <= 0 || s->c <= 0 || s->g <= 0 || s->c % s->g != 0) {
    fail(env, fn, "sizes must be positive and channels divisible by groups");
    return 0;
  }
  for (size_t i = 0; i < offsets; i++) off[i] = v[i];
  return 1;
}

/* Per-channel sums over the pixels of one image: s1[c] = Σ_p x[p, c] and, when s2, s2[c] = Σ_p x[p, c]·y[p, c].
 * The inner loop runs along contiguous channels, so it vectorises; accumulation is in double. */
VECTORISED static void channel_sums(const float* x, const float* y, int64_t hw, int64_t c, double* s1, double* s2) {
  memset(s1, 0, (size_t)c * sizeof(double));
  if (s2) memset(s2, 0, (size_t)c * sizeof(double));
  for (int64_t p = 0; p < hw; p++) {
    const float *xp = x + p * c, *yp = y ? y + p * c : NULL;
    for (int64_t k = 0; k < c; k++) s1[k] += xp[k];
    if (s2)
      for (int64_t k = 0; k < c; k++) s2[k] += (double)xp[k] * yp[k];
  }
}

/* out[p, c] = a[c]·x[p, c] + b[c] (+ d[c]·z[p, c] when z): the per-channel affine maps both passes end with. */
VECTORISED static void channel_affine(float* out, const float* x, const float* a, const float* b, const float* z, const float* d, int64_t hw, int64_t c) {
  for (int64_t p = 0; p < hw; p++) {
    const float* xp = x + p * c;
    float* op = out + p * c;
    if (z) {
      const float* zp = z + p * c;
      for (int64_t k = 0; k < c; k++) op[k] = a[k] * xp[k] + d[k] * zp[k] + b[k];
    } else {
      for (int64_t k = 0; k < c; k++) op[k] = a[k] * xp[k] + b[k];
    }
  }
}

/* groupNorm(heap, xOff, wOff, bOff, yOff, meanOff, rstdOff, b, hw, c, groups, eps):
 * y = (x − mean)·rstd·w + bias, as y = a[c]·x + s[c] with a = rstd·w, s = bias − mean·a; mean and rstd
 * [b, groups] are kept for the gradient. Variance is E[x²] − mean², accumulated in double. */
static napi_value group_norm(napi_env env, napi_callback_info info) {
  float* heap;
  int64_t off[6];
  NormShape s;
  int64_t floats;
  double eps;
  if (!norm_args(env, info, "groupNorm", 12, &heap, &floats, off, &s, &eps)) return NULL;
  int64_t n = s.b * s.hw * s.c, cg = s.c / s.g;
  if (!inside(off[0], n, floats) || !inside(off[1], s.c, floats) || !inside(off[2], s.c, floats) || !inside(off[3], n, floats) ||
      !inside(off[4], s.b * s.g, floats) || !inside(off[5], s.b * s.g, floats))
    return fail(env, "groupNorm", "a tensor lies outside the heap");
  const float *x = heap + off[0], *w = heap + off[1], *bias = heap + off[2];
  float *y = heap + off[3], *mean = heap + off[4], *rstd = heap + off[5];
  double* sums = malloc((size_t)(2 * s.c) * sizeof(double));
  float* coef = malloc((size_t)(2 * s.c) * sizeof(float));
  if (sums == NULL || coef == NULL) {
    free(sums);
    free(coef);
    return fail(env, "groupNorm", "out of memory");
  }
  const double count = (double)(s.hw * cg);
  for (int64_t b = 0; b < s.b; b++) {
    const float* xb = x + b * s.hw * s.c;
    channel_sums(xb, xb, s.hw, s.c, sums, sums + s.c);
    for (int64_t g = 0; g < s.g; g++) {
      double m = 0, sq = 0;
      for (int64_t k = g * cg; k < (g + 1) * cg; k++) m += sums[k], sq += sums[s.c + k];
      m /= count;
      double var = sq / count - m * m;
      float r = (float)(1.0 / sqrt((var > 0 ? var : 0) + eps));
      mean[b * s.g + g] = (float)m;
      rstd[b * s.g + g] = r;
      for (int64_t k = g * cg; k < (g + 1) * cg; k++) {
        coef[k] = r * w[k];
        coef[s.c + k] = bias[k] - (float)m * coef[k];
      }
    }
    channel_affine(y + b * s.hw * s.c, xb, coef, coef + s.c, NULL, NULL, s.hw, s.c);
  }
  free(sums);
  free(coef);
  return NULL;
}

/* groupNormGrad(heap, xOff, wOff, meanOff, rstdOff, dyOff, dxOff, dwOff, dbOff, b, hw, c, groups):
 * with x̂ = (x − m)·r and g = dy·w, per group: dx = r·(g − mean(g) − x̂·mean(g·x̂)), which is the
 * per-channel map dx = A·dy + B·x + C; dw = Σ dy·x̂ and dbias = Σ dy over images and pixels. Every
 * group sum follows from the channel sums S1 = Σ dy and S2 = Σ dy·x. */
static napi_value group_norm_grad(napi_env env, napi_callback_info info) {
  float* heap;
  int64_t off[8];
  NormShape s;
  int64_t floats;
  if (!norm_args(env, info, "groupNormGrad", 13, &heap, &floats, off, &s, NULL)) return NULL;
  int64_t n = s.b * s.hw * s.c, cg = s.c / s.g;
  if (!inside(off[0], n, floats) || !inside(off[1], s.c, floats) || !inside(off[2], s.b * s.g, floats) || !inside(off[3], s.b * s.g, floats) ||
      !inside(off[4], n, floats) || !inside(off[5], n, floats) || !inside(off[6], s.c, floats) || !inside(off[7], s.c, floats))
    return fail(env, "groupNormGrad", "a tensor lies outside the heap");
  const float *x = heap + off[0], *w = heap + off[1], *mean = heap + off[2], *rstd = heap + off[3], *dy = heap + off[4];
  float *dx = heap + off[5], *dw = heap + off[6], *db = heap + off[7];
  double* sums = malloc((size_t)(4 * s.c) * sizeof(double));
  float* coef = malloc((size_t)(3 * s.c) * sizeof(float));
  if (sums == NULL || coef == NULL) {
    free(sums);
    free(coef);
    return fail(env, "groupNormGrad", "out of memory");
  }
  double *s1 = sums, *s2 = sums + s.c, *dw_acc = sums + 2 * s.c, *db_acc = sums + 3 * s.c;
  memset(dw_acc, 0, (size_t)(2 * s.c) * sizeof(double));
  const double count = (double)(s.hw * cg);
  for (int64_t b = 0; b < s.b; b++) {
    const float *xb = x + b * s.hw * s.c, *dyb = dy + b * s.hw * s.c;
    channel_sums(dyb, xb, s.hw, s.c, s1, s2);
    for (int64_t g = 0; g < s.g; g++) {
      double m = mean[b * s.g + g], r = rstd[b * s.g + g], sum_g = 0, sum_gx = 0;
      for (int64_t k = g * cg; k < (g + 1) * cg; k++) {
        double dyxh = r * (s2[k] - m * s1[k]); /* Σ_p dy·x̂ for channel k */
        dw_acc[k] += dyxh;
        db_acc[k] += s1[k];
        sum_g += w[k] * s1[k];
        sum_gx += w[k] * dyxh;
      }
      double mg = sum_g / count, mgx = sum_gx / count;
      for (int64_t k = g * cg; k < (g + 1) * cg; k++) {
        coef[k] = (float)(r * w[k]);                        /* A: times dy */
        coef[s.c + k] = (float)(-r * r * mgx);              /* B: times x */
        coef[2 * s.c + k] = (float)(r * (m * r * mgx - mg)); /* C */
      }
    }
    channel_affine(dx + b * s.hw * s.c, xb, coef + s.c, coef + 2 * s.c, dyb, coef, s.hw, s.c);
  }
  for (int64_t k = 0; k < s.c; k++) {
    dw[k] = (float)dw_acc[k];
    db[k] = (float)db_acc[k];
  }
  free(sums);
  free(coef);
  return NULL;
}

/* ---------------------------------------------------------------- AdamW, one pass per parameter */

VECTORISED static void adamw_loop(const float* p, const float* m, const float* v, const float* g, float* po, float* mo, float* vo, int64_t n,
                                  float lr, float b1, float b2, float c1, float c2, float eps, float wd) {
  for (int64_t i = 0; i < n; i++) {
    float mn = b1 * m[i] + (1.0f - b1) * g[i];
    float vn = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
    float u = (mn / c1) / (sqrtf(vn / c2) + eps) + wd * p[i];
    mo[i] = mn;
    vo[i] = vn;
    po[i] = p[i] - lr * u;
  }
}

/*
 * adamw(heap, pOff, mOff, vOff, gOff, pOutOff, mOutOff, vOutOff, n, lr, b1, b2, c1, c2, eps, wd):
 * m' = β1·m + (1−β1)·g, v' = β2·v + (1−β2)·g², p' = p − lr·((m'/c1) / (√(v'/c2) + ε) + wd·p),
 * with c1, c2 the bias corrections 1 − βᵗ. Outputs are new tensors: tfjs tensors are immutable.
 */
static napi_value adamw(napi_env env, napi_callback_info info) {
  size_t argc = 16;
  napi_value argv[16];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  float* heap;
  int64_t floats, off[8];
  double h[7];
  if (argc != 16 || !heap_of(env, argv[0], &heap, &floats)) return fail(env, "adamw", "expected (heap, 7 offsets, n, lr, b1, b2, c1, c2, eps, wd)");
  for (int i = 0; i < 8; i++)
    if (!int_arg(env, argv[1 + i], &off[i])) return fail(env, "adamw", "offsets and size must be integers");
  for (int i = 0; i < 7; i++)
    if (napi_get_value_double(env, argv[9 + i], &h[i]) != napi_ok) return fail(env, "adamw", "hyperparameters must be numbers");
  int64_t n = off[7];
  if (n <= 0) return fail(env, "adamw", "size must be positive");
  for (int i = 0; i < 7; i++)
    if (!inside(off[i], n, floats)) return fail(env, "adamw", "a tensor lies outside the heap");
  adamw_loop(heap + off[0], heap + off[1], heap + off[2], heap + off[3], heap + off[4], heap + off[5], heap + off[6], n, (float)h[0], (float)h[1],
             (float)h[2], (float)h[3], (float)h[4], (float)h[5], (float)h[6]);
  return NULL;
}

/* setThreads(n): OpenBLAS worker threads (≥ 1). */
static napi_value set_threads(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int64_t n;
  if (argc != 1 || !int_arg(env, argv[0], &n) || n < 1 || n > 1024) return fail(env, "setThreads", "expected a thread count ≥ 1");
  openblas_set_num_threads((int)n);
  return NULL;
}

/* info() → { blas: config string, core: CPU kernel set, threads } */
static napi_value blas_info(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value obj, s;
  CHECK(napi_create_object(env, &obj));
  CHECK(napi_create_string_utf8(env, openblas_get_config(), NAPI_AUTO_LENGTH, &s));
  CHECK(napi_set_named_property(env, obj, "blas", s));
  CHECK(napi_create_string_utf8(env, openblas_get_corename(), NAPI_AUTO_LENGTH, &s));
  CHECK(napi_set_named_property(env, obj, "core", s));
  CHECK(napi_create_int32(env, openblas_get_num_threads(), &s));
  CHECK(napi_set_named_property(env, obj, "threads", s));
  return obj;
}

static napi_value init(napi_env env, napi_value exports) {
  const napi_property_descriptor fns[] = {
      {"sgemm", NULL, sgemm, NULL, NULL, NULL, napi_enumerable, NULL},
      {"conv2d", NULL, conv2d, NULL, NULL, NULL, napi_enumerable, NULL},
      {"conv2dBackpropInput", NULL, conv2d_backprop_input, NULL, NULL, NULL, napi_enumerable, NULL},
      {"conv2dBackpropFilter", NULL, conv2d_backprop_filter, NULL, NULL, NULL, napi_enumerable, NULL},
      {"sum", NULL, sum_axes, NULL, NULL, NULL, napi_enumerable, NULL},
      {"sparseXent", NULL, sparse_xent, NULL, NULL, NULL, napi_enumerable, NULL},
      {"sparseXentGrad", NULL, sparse_xent_grad, NULL, NULL, NULL, napi_enumerable, NULL},
      {"unary", NULL, unary, NULL, NULL, NULL, napi_enumerable, NULL},
      {"swishGrad", NULL, swish_grad, NULL, NULL, NULL, napi_enumerable, NULL},
      {"groupNorm", NULL, group_norm, NULL, NULL, NULL, napi_enumerable, NULL},
      {"groupNormGrad", NULL, group_norm_grad, NULL, NULL, NULL, napi_enumerable, NULL},
      {"adamw", NULL, adamw, NULL, NULL, NULL, napi_enumerable, NULL},
      {"setThreads", NULL, set_threads, NULL, NULL, NULL, napi_enumerable, NULL},
      {"info", NULL, blas_info, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  CHECK(napi_define_properties(env, exports, sizeof fns / sizeof fns[0], fns));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
