/*
 * minidalle's native kernels: matrix products and convolutions for the wasm backend, computed with
 * OpenBLAS directly on the wasm heap (and, at the end, the fused kernels of one incremental decoding step).
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
 *
 * Threads: OpenBLAS always runs single-threaded, in whichever thread calls it; the parallelism is this
 * file's own pool (see "thread pool"), which splits each kernel's work into one part per thread. The
 * convolutions of a small model are many skinny GEMMs (N = 12…48 output channels) that OpenBLAS's own
 * threading cannot speed up, but whole row ranges of a conv, im2col included, split cleanly; and one pool
 * for every kernel means no second set of threads spinning against ours on a small machine.
 *
 * Same bits at any thread count: a stage's share of the cores changes as its neighbours start and end
 * (core/threads.ts), so no result may depend on how a job was split. Parts therefore take whole chunks whose
 * bounds follow from the shape alone (REDUCE_CHUNKS for sums over a split axis, the im2col chunk for convs),
 * every sgemm call has a shape fixed by the job, and partial sums are added in chunk order.
 */
#define NAPI_VERSION 8
#include <node_api.h>
#include <cblas.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>
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

#define MAX_THREADS 64

/* One scratch buffer per pool thread, grown on demand and kept: a fresh malloc of megabytes per conv is
 * an mmap whose page faults cost more than the im2col itself. Grown only from the JS thread, before a
 * job starts; JS calls in on one thread only. */
static float* scratch[MAX_THREADS];
static int64_t scratch_floats[MAX_THREADS];

/* Makes every thread's scratch at least `floats` long; 0 when memory runs out. */
static int reserve_scratch(int threads, int64_t floats) {
  for (int t = 0; t < threads; t++) {
    if (floats <= scratch_floats[t]) continue;
    float* grown = realloc(scratch[t], (size_t)floats * sizeof(float));
    if (grown == NULL) return 0;
    scratch[t] = grown;
    scratch_floats[t] = floats;
  }
  return 1;
}

/* A reduction split along its summed axis goes in this many chunks, fixed by the shape (never by the
 * thread count, so the rounding is the same with any number of threads): enough for the parts of a
 * small machine to balance, few enough that the partials stay small. */
#define REDUCE_CHUNKS 16

/* The chunks' partial results, grown on demand and kept (as scratch, from the JS thread only). */
static float* partials;
static int64_t partials_floats;

static float* reserve_partials(int64_t floats) {
  if (floats > partials_floats) {
    float* grown = realloc(partials, (size_t)floats * sizeof(float));
    if (grown == NULL) return NULL;
    partials = grown;
    partials_floats = floats;
  }
  return partials;
}

/* How many chunks of at least `min_per_chunk` units split `units` (1 … REDUCE_CHUNKS). */
static int64_t reduce_chunks(int64_t units, int64_t min_per_chunk) {
  int64_t c = units / min_per_chunk;
  return c < 1 ? 1 : c > REDUCE_CHUNKS ? REDUCE_CHUNKS : c;
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

/* Arguments (heap, `count` integers): the heap into heap/floats, the integers into v. On a mismatch it
 * throws "minidalle native <fn>: expected <usage>" and returns 0. */
static int heap_and_ints(napi_env env, napi_callback_info info, const char* fn, const char* usage, size_t count, float** heap, int64_t* floats,
                         int64_t* v) {
  napi_value argv[16];
  size_t argc = 16;
  int ok = count < 16 && napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc == count + 1 && heap_of(env, argv[0], heap, floats);
  for (size_t i = 0; ok && i < count; i++) ok = int_arg(env, argv[1 + i], &v[i]);
  if (!ok) {
    char msg[160];
    snprintf(msg, sizeof msg, "expected %s", usage);
    fail(env, fn, msg);
  }
  return ok;
}

/* [off, off + len) lies inside the heap. */
static int inside(int64_t off, int64_t len, int64_t floats) {
  return off >= 0 && len >= 0 && off <= floats && len <= floats - off;
}

/* ---------------------------------------------------------------- thread pool
 * `pool.size` threads in all: the JS thread and size − 1 persistent workers. A job is a function called
 * once per part, `fn(arg, part, parts)`, with parts = pool.size; each part works on its own slice of the
 * output, so parts never write the same memory. Any thread may run any part: a part is taken by moving
 * its ticket from the previous job's number to this job's (a compare-and-swap), so the JS thread runs
 * the parts of workers that have not woken up yet instead of waiting for them. Between jobs a worker
 * spins for a short while (the next kernel usually follows within microseconds), then sleeps. */

typedef void (*part_fn)(void* arg, int part, int parts);

/* Below this much work (multiply-adds or elements touched) a job runs in one part: even a spinning
 * worker costs more than the work. Tests set it to 1, so that tiny cases exercise every split. */
static int64_t parallel_min_work = (int64_t)1 << 15;
#define SPIN_NS ((int64_t)200 * 1000)

static struct {
  int size;
  pthread_t workers[MAX_THREADS];
  pthread_mutex_t mu;
  pthread_cond_t wake;
  part_fn fn;
  void* arg;
  atomic_uint generation;          /* the current job's number */
  atomic_uint ticket[MAX_THREADS]; /* per part: the number of the last job that took it */
  atomic_int done;                 /* parts of the current job finished */
  atomic_int sleepers;             /* workers waiting on `wake` */
  atomic_int quit;
} pool = {.size = 1, .mu = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

/* Runs every part of job `g` that nobody has taken yet, starting from `first`. Every part is taken once
 * per job, so its ticket moves from g − 1 to g exactly once; a worker still looking at an older job
 * finds no ticket at its g − 1 and does nothing. */
static void run_free_parts(unsigned g, int first, part_fn fn, void* arg, int parts) {
  for (int k = 0; k < parts; k++) {
    int t = (first + k) % parts;
    unsigned expected = g - 1;
    if (!atomic_compare_exchange_strong(&pool.ticket[t], &expected, g)) continue;
    fn(arg, t, parts);
    atomic_fetch_add_explicit(&pool.done, 1, memory_order_release);
  }
}

static void* pool_worker(void* arg) {
  int self = (int)(intptr_t)arg;
  unsigned seen = atomic_load(&pool.generation);
  for (;;) {
    int64_t deadline = now_ns() + SPIN_NS;
    for (int i = 1; atomic_load_explicit(&pool.generation, memory_order_acquire) == seen; i++) {
      cpu_relax();
      if ((i & 255) == 0 && now_ns() > deadline) {
        pthread_mutex_lock(&pool.mu);
        atomic_fetch_add(&pool.sleepers, 1);
        while (atomic_load(&pool.generation) == seen && !pool.quit) pthread_cond_wait(&pool.wake, &pool.mu);
        atomic_fetch_sub(&pool.sleepers, 1);
        pthread_mutex_unlock(&pool.mu);
        break;
      }
    }
    if (pool.quit) return NULL;
    unsigned g = atomic_load_explicit(&pool.generation, memory_order_acquire);
    seen = g;
    run_free_parts(g, self, pool.fn, pool.arg, pool.size);
  }
}

/* Runs fn over every part and returns when all are done: small jobs (see parallel_min_work) run in one, on
 * the JS thread. No result may depend on how many parts there were (see "Same bits" at the top). */
static void run_parallel(part_fn fn, void* arg, int64_t work) {
  if (pool.size == 1 || work < parallel_min_work) {
    fn(arg, 0, 1);
    return;
  }
  pool.fn = fn;
  pool.arg = arg;
  atomic_store(&pool.done, 0);
  unsigned g = atomic_load(&pool.generation) + 1;
  atomic_store(&pool.generation, g); /* publishes fn and arg */
  if (atomic_load(&pool.sleepers) > 0) {
    pthread_mutex_lock(&pool.mu);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.mu);
  }
  run_free_parts(g, 0, fn, arg, pool.size);
  /* what is left is parts a worker is running now, so this wait is short (unless the worker lost its
   * core to another process: then yield it ours) */
  for (int i = 1; atomic_load_explicit(&pool.done, memory_order_acquire) < pool.size; i++) {
    cpu_relax();
    if (i % 4096 == 0) sched_yield();
  }
}

/* Stops the workers and starts size − 1 new ones; 0 if a thread could not be started (the pool is then
 * left at the JS thread alone). */
static int resize_pool(int size) {
  pthread_mutex_lock(&pool.mu);
  pool.quit = 1;
  atomic_fetch_add(&pool.generation, 1);
  pthread_cond_broadcast(&pool.wake);
  pthread_mutex_unlock(&pool.mu);
  for (int t = 1; t < pool.size; t++) pthread_join(pool.workers[t], NULL);
  pool.quit = 0;
  pool.size = 1;
  unsigned g = atomic_load(&pool.generation);
  for (int t = 0; t < MAX_THREADS; t++) atomic_store(&pool.ticket[t], g);
  for (int t = 1; t < size; t++) {
    if (pthread_create(&pool.workers[t], NULL, pool_worker, (void*)(intptr_t)t) != 0) {
      pool.size = t;
      resize_pool(1);
      return 0;
    }
    pool.size = t + 1;
  }
  return 1;
}

/* The part-th of `parts` near-equal slices of [0, total), boundaries rounded to multiples of `align`. */
static void part_range(int64_t total, int part, int parts, int64_t align, int64_t* r0, int64_t* r1) {
  int64_t units = (total + align - 1) / align;
  int64_t u0 = units * part / parts, u1 = units * (part + 1) / parts;
  *r0 = u0 * align < total ? u0 * align : total;
  *r1 = u1 * align < total ? u1 * align : total;
}

typedef struct {
  bool ta, tb;
  int64_t m, n, k, batch, aStride, bStride;
  const float *a, *b;
  float* c;
} GemmJob;

/* Rows [r0, r1) and columns [c0, c1) of C_i = op(A_i) op(B_i). */
static void gemm_block(const GemmJob* j, int64_t i, int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
  int64_t lda = j->ta ? j->m : j->k, ldb = j->tb ? j->k : j->n;
  const float* a = j->a + i * j->aStride + (j->ta ? r0 : r0 * lda);
  const float* b = j->b + i * j->bStride + (j->tb ? c0 * ldb : c0);
  if (r1 - r0 == 1) {
    /* One row (a decoding step's lm head: [1, d] × [d, vocab]): a matrix-vector product. sgemm with m = 1
     * repacks the whole B on every call, about 3× slower here than reading it once. */
    float* y = j->c + i * j->m * j->n + r0 * j->n + c0;
    int incx = j->ta ? (int)lda : 1;
    if (j->tb)
      cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)(c1 - c0), (int)j->k, 1.0f, b, (int)ldb, a, incx, 0.0f, y, 1);
    else
      cblas_sgemv(CblasRowMajor, CblasTrans, (int)j->k, (int)(c1 - c0), 1.0f, b, (int)ldb, a, incx, 0.0f, y, 1);
    return;
  }
  cblas_sgemm(CblasRowMajor, j->ta ? CblasTrans : CblasNoTrans, j->tb ? CblasTrans : CblasNoTrans, (int)(r1 - r0), (int)(c1 - c0), (int)j->k, 1.0f, a,
              (int)lda, b, (int)ldb, 0.0f, j->c + i * j->m * j->n + r0 * j->n + c0, (int)j->n);
}

/* Products with fewer rows than this (a decoding step's) split by columns: each block then reads only its
 * slice of the (wide) weight, where a row split would have every part read all of it. */
#define FEW_ROWS ((int64_t)128)

/* Rows or columns of a block at least: every sgemm call packs the other operand whole, so a thin block
 * would pay that packing for little work (a weight gradient xᵀ·dy has few rows and a long inner side). */
#define MIN_BLOCK ((int64_t)64)

/* The job's blocks, fixed by its shape: up to REDUCE_CHUNKS slices of the batch's rows taken together (so a
 * batch of many small products splits as well as one tall product), or, with few rows, of every product's
 * columns (multiples of 16: no cache line of C is written by two threads). Block `b` is one sgemm per
 * product it touches, whatever part runs it. */
static int64_t gemm_unit(const GemmJob* j, int* by_rows) {
  const int64_t rows = j->batch * j->m;
  *by_rows = rows >= FEW_ROWS;
  int64_t unit = ((*by_rows ? rows : j->n) + REDUCE_CHUNKS - 1) / REDUCE_CHUNKS;
  if (unit < MIN_BLOCK) unit = MIN_BLOCK;
  return *by_rows ? unit : (unit + 15) / 16 * 16;
}

static void sgemm_part(void* arg, int part, int parts) {
  const GemmJob* j = arg;
  int by_rows;
  const int64_t unit = gemm_unit(j, &by_rows), total = by_rows ? j->batch * j->m : j->n;
  int64_t r0, r1;
  part_range(total, part, parts, unit, &r0, &r1);
  for (int64_t b0 = r0; b0 < r1; b0 += unit) {
    const int64_t b1 = b0 + unit < r1 ? b0 + unit : r1;
    if (!by_rows) {
      for (int64_t i = 0; i < j->batch; i++) gemm_block(j, i, 0, j->m, b0, b1);
      continue;
    }
    for (int64_t i = b0 / j->m; i * j->m < b1; i++) {
      int64_t lo = b0 > i * j->m ? b0 - i * j->m : 0, hi = b1 < (i + 1) * j->m ? b1 - i * j->m : j->m;
      if (hi > lo) gemm_block(j, i, lo, hi, 0, j->n);
    }
  }
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
  GemmJob job = {ta, tb, m, n, k, batch, aStride, bStride, heap + aOff, heap + bOff, heap + cOff};
  run_parallel(sgemm_part, &job, batch * m * n * k);
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

/* Rows per im2col chunk: about REDUCE_CHUNKS chunks in all, so that the parts balance (they take whole
 * chunks), but no more than CHUNK_FLOATS of im2col and no fewer than MIN_CHUNK_ROWS rows. */
static int64_t chunk_rows(const Geometry* g) {
  int64_t k = g->fh * g->fw * g->ci;
  int64_t total = g->n * g->oh * g->ow;
  int64_t rows = (total + REDUCE_CHUNKS - 1) / REDUCE_CHUNKS;
  if (rows > CHUNK_FLOATS / k) rows = CHUNK_FLOATS / k;
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

typedef struct {
  Geometry g;
  const float* x; /* conv2d, backprop filter: the input */
  const float* f; /* conv2d, backprop input: the filter */
  float* y;       /* conv2d: the output; backprop input: dx; backprop filter: df */
  const float* dy;
  int64_t step;   /* rows per im2col chunk */
} ConvJob;

/* Scratch per thread: one im2col chunk. */
static int reserve_conv_scratch(ConvJob* j) {
  j->step = chunk_rows(&j->g);
  return reserve_scratch(pool.size, j->step * j->g.fh * j->g.fw * j->g.ci);
}

/* Rows [c0, c1) of x's im2col matrix: x itself when the conv is pointwise, else built in the part's scratch. */
static const float* col_rows(const ConvJob* j, int part, int64_t c0, int64_t c1) {
  if (is_pointwise(&j->g)) return j->x + c0 * j->g.ci;
  im2col(&j->g, j->x, scratch[part], c0, c1);
  return scratch[part];
}

/* y[rows, co] = col[rows, K] · f[K, co], for this part's chunks of rows (chunks of step rows from row 0). */
static void conv2d_part(void* arg, int part, int parts) {
  const ConvJob* j = arg;
  const Geometry* g = &j->g;
  const int64_t k = g->fh * g->fw * g->ci;
  int64_t r0, r1;
  part_range(g->n * g->oh * g->ow, part, parts, j->step, &r0, &r1);
  for (int64_t c0 = r0; c0 < r1; c0 += j->step) {
    int64_t c1 = c0 + j->step < r1 ? c0 + j->step : r1;
    const float* col = col_rows(j, part, c0, c1);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(c1 - c0), (int)g->co, (int)k, 1.0f, col, (int)k, j->f, (int)g->co, 0.0f,
                j->y + c0 * g->co, (int)g->co);
  }
}

/* dcol[rows, K] = dy[rows, co] · fᵀ, scattered into dx with col2im (pointwise: dcol is dx itself). A part
 * owns whole groups of images, since the scatter of neighbouring rows of one image overlaps: a group is as
 * many whole images as fit in a chunk, or one image in chunks of step rows from its first. */
static void conv2d_backprop_input_part(void* arg, int part, int parts) {
  const ConvJob* j = arg;
  const Geometry* g = &j->g;
  const int64_t k = g->fh * g->fw * g->ci, per_image = g->oh * g->ow;
  const int64_t per_group = per_image >= j->step ? 1 : j->step / per_image;
  int64_t b0, b1;
  part_range(g->n, part, parts, per_group, &b0, &b1);
  if (!is_pointwise(g)) memset(j->y + b0 * g->h * g->w * g->ci, 0, (size_t)((b1 - b0) * g->h * g->w * g->ci) * sizeof(float));
  for (int64_t b = b0; b < b1; b += per_group) {
    const int64_t r1 = (b + per_group < b1 ? b + per_group : b1) * per_image;
    for (int64_t c0 = b * per_image; c0 < r1; c0 += j->step) {
      int64_t c1 = c0 + j->step < r1 ? c0 + j->step : r1;
      float* dcol = is_pointwise(g) ? j->y + c0 * k : scratch[part];
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(c1 - c0), (int)k, (int)g->co, 1.0f, j->dy + c0 * g->co, (int)g->co, j->f,
                  (int)g->co, 0.0f, dcol, (int)k);
      if (!is_pointwise(g)) col2im_add(g, dcol, j->y, c0, c1);
    }
  }
}

/* df [K, co] = Σ_rows col[rows, K]ᵀ · dy[rows, co] in `chunks` fixed slices of whole im2col chunks, each
 * slice into its own partial (slice 0 into df itself), added in slice order by the caller. */
typedef struct {
  ConvJob c;
  int64_t units;  /* im2col chunks of step rows in all */
  int64_t chunks; /* slices of whole units */
  float* partial; /* slices 1 … chunks − 1, K·co each */
} FilterGradJob;

static void conv2d_backprop_filter_part(void* arg, int part, int parts) {
  const FilterGradJob* fj = arg;
  const ConvJob* j = &fj->c;
  const Geometry* g = &j->g;
  const int64_t k = g->fh * g->fw * g->ci, total = g->n * g->oh * g->ow;
  int64_t s0, s1;
  part_range(fj->chunks, part, parts, 1, &s0, &s1);
  for (int64_t slice = s0; slice < s1; slice++) {
    float* df = slice == 0 ? j->y : fj->partial + (slice - 1) * k * g->co;
    int64_t u0, u1;
    part_range(fj->units, (int)slice, (int)fj->chunks, 1, &u0, &u1);
    const int64_t r0 = u0 * j->step, r1 = u1 * j->step < total ? u1 * j->step : total;
    if (r1 <= r0) memset(df, 0, (size_t)(k * g->co) * sizeof(float));
    for (int64_t c0 = r0; c0 < r1; c0 += j->step) {
      int64_t c1 = c0 + j->step < r1 ? c0 + j->step : r1;
      const float* col = col_rows(j, part, c0, c1);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)k, (int)g->co, (int)(c1 - c0), 1.0f, col, (int)k, j->dy + c0 * g->co, (int)g->co,
                  c0 == r0 ? 0.0f : 1.0f, df, (int)g->co);
    }
  }
}

static int64_t conv_work(const Geometry* g) {
  return g->n * g->oh * g->ow * g->fh * g->fw * g->ci * g->co;
}

/* The three conv entry points' common start: geometry and the three tensors (in argument order) from the
 * arguments, and every thread's scratch; 0 (with an error thrown) on bad arguments or no memory. */
static int conv_setup(napi_env env, napi_callback_info info, const char* fn, ConvJob* j, float* tensor[3]) {
  float* heap;
  int64_t off[3];
  if (!geometry_args(env, info, fn, &heap, off, &j->g)) return 0;
  for (int i = 0; i < 3; i++) tensor[i] = heap + off[i];
  if (!reserve_conv_scratch(j)) {
    fail(env, fn, "out of memory for the im2col buffers");
    return 0;
  }
  return 1;
}

/* conv2d(heap, xOff, fOff, yOff, geometry…): y = conv(x, f). */
static napi_value conv2d(napi_env env, napi_callback_info info) {
  ConvJob j = {0};
  float* t[3];
  if (!conv_setup(env, info, "conv2d", &j, t)) return NULL;
  j.x = t[0], j.f = t[1], j.y = t[2];
  run_parallel(conv2d_part, &j, conv_work(&j.g));
  return NULL;
}

/* conv2dBackpropInput(heap, dxOff, fOff, dyOff, geometry…): dx, the gradient of conv2d's input. */
static napi_value conv2d_backprop_input(napi_env env, napi_callback_info info) {
  ConvJob j = {0};
  float* t[3];
  if (!conv_setup(env, info, "conv2dBackpropInput", &j, t)) return NULL;
  j.y = t[0], j.f = t[1], j.dy = t[2];
  run_parallel(conv2d_backprop_input_part, &j, conv_work(&j.g));
  return NULL;
}

/* Partials of a filter gradient at most (floats), which bounds its slices for a wide filter. */
#define MAX_FILTER_PARTIALS ((int64_t)1 << 24)

/* conv2dBackpropFilter(heap, xOff, dfOff, dyOff, geometry…): df, the gradient of conv2d's filter. */
static napi_value conv2d_backprop_filter(napi_env env, napi_callback_info info) {
  FilterGradJob fj = {0};
  ConvJob* j = &fj.c;
  float* t[3];
  if (!conv_setup(env, info, "conv2dBackpropFilter", j, t)) return NULL;
  j->x = t[0], j->y = t[1], j->dy = t[2];
  const int64_t kc = j->g.fh * j->g.fw * j->g.ci * j->g.co;
  fj.units = (j->g.n * j->g.oh * j->g.ow + j->step - 1) / j->step;
  fj.chunks = reduce_chunks(fj.units, 1);
  while (fj.chunks > 1 && (fj.chunks - 1) * kc > MAX_FILTER_PARTIALS) fj.chunks--;
  if (fj.chunks > 1 && (fj.partial = reserve_partials((fj.chunks - 1) * kc)) == NULL) return fail(env, "conv2dBackpropFilter", "out of memory");
  run_parallel(conv2d_backprop_filter_part, &fj, conv_work(&j->g));
  for (int64_t c = 1; c < fj.chunks; c++) {
    const float* partial = fj.partial + (c - 1) * kc;
    for (int64_t i = 0; i < kc; i++) j->y[i] += partial[i];
  }
  return NULL;
}

/* ---------------------------------------------------------------- reductions and softmax cross-entropy
 * Memory-bound loops, vectorised by the compiler (AVX2 where the CPU has it, chosen at load time through
 * target_clones; SSE2 otherwise) and split across the pool by slices (sparse cross-entropy: one thread).
 * The addon is built with -ffast-math so that expf/sqrtf vectorise (glibc's libmvec); inputs are assumed
 * finite. Sums keep 8 partial accumulators, so their rounding differs from a sequential sum by float32
 * noise only. */

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

typedef struct {
  const float* x;
  float* y;
  int64_t outer, mid, inner;
  int64_t chunks;  /* > 1: mid goes in this many fixed slices, each summed into its own [outer, inner] partial */
  float* partial;
} SumJob;

/* y[o, i] = Σ_{m0 ≤ m < m1} x[o, m, i] for outer rows [o0, o1). */
static void sum_slice(const SumJob* j, float* y, int64_t o0, int64_t o1, int64_t m0, int64_t m1) {
  for (int64_t o = o0; o < o1; o++) {
    const float* x = j->x + (o * j->mid + m0) * j->inner;
    float* yo = y + o * j->inner;
    if (m1 == m0) memset(yo, 0, (size_t)j->inner * sizeof(float));
    else if (j->inner == 1) *yo = row_sum(x, m1 - m0);
    else add_rows(yo, x, m1 - m0, j->inner);
  }
}

static void sum_part(void* arg, int part, int parts) {
  const SumJob* j = arg;
  int64_t r0, r1;
  if (j->chunks > 1) {
    part_range(j->chunks, part, parts, 1, &r0, &r1);
    for (int64_t c = r0; c < r1; c++) {
      int64_t m0, m1;
      part_range(j->mid, (int)c, (int)j->chunks, 1, &m0, &m1);
      sum_slice(j, j->partial + c * j->outer * j->inner, 0, j->outer, m0, m1);
    }
  } else {
    part_range(j->outer, part, parts, 1, &r0, &r1);
    sum_slice(j, j->y, r0, r1, 0, j->mid);
  }
}

/* Rows of mid per chunk at least: a chunk's partial must be worth adding. */
#define MIN_SUM_CHUNK ((int64_t)64)

/* sum(heap, xOff, yOff, outer, mid, inner): y[o, i] = Σ_m x[o, m, i], i.e. a sum over contiguous axes.
 * With fewer outer rows than REDUCE_CHUNKS (a bias gradient has one), the parts share out chunks of mid. */
static napi_value sum_axes(napi_env env, napi_callback_info info) {
  float* heap;
  int64_t floats, v[5];
  if (!heap_and_ints(env, info, "sum", "(heap, xOff, yOff, outer, mid, inner)", 5, &heap, &floats, v)) return NULL;
  int64_t xOff = v[0], yOff = v[1], outer = v[2], mid = v[3], inner = v[4];
  if (outer <= 0 || mid <= 0 || inner <= 0) return fail(env, "sum", "sizes must be positive");
  if (!inside(xOff, outer * mid * inner, floats) || !inside(yOff, outer * inner, floats)) return fail(env, "sum", "a tensor lies outside the heap");
  SumJob j = {heap + xOff, heap + yOff, outer, mid, inner, outer < REDUCE_CHUNKS ? reduce_chunks(mid, MIN_SUM_CHUNK) : 1, NULL};
  if (j.chunks > 1 && (j.partial = reserve_partials(j.chunks * outer * inner)) == NULL) return fail(env, "sum", "out of memory");
  run_parallel(sum_part, &j, outer * mid * inner);
  if (j.chunks > 1) {
    for (int64_t i = 0; i < outer * inner; i++) {
      float total = j.partial[i];
      for (int64_t c = 1; c < j.chunks; c++) total += j.partial[c * outer * inner + i];
      j.y[i] = total;
    }
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

/* An elementwise loop over n floats, run in slices; exactly one of the loop pointers is set. */
typedef struct ElementwiseJob {
  int64_t n;
  const float* in[4];
  float* out[3];
  float hyper[7];
  void (*unary)(const float* x, float* y, int64_t n);
  void (*binary)(const float* a, const float* b, float* y, int64_t n);
  int64_t b_period; /* binary: b repeats every b_period elements (= n when it does not broadcast) */
  void (*act_grad)(const float* x, const float* dy, float* dx, int64_t n); /* dx = dy · f'(x) */
  void (*adamw)(const float* p, const float* m, const float* v, const float* g, float* po, float* mo, float* vo, int64_t n, float lr, float b1,
                float b2, float c1, float c2, float eps, float wd);
} ElementwiseJob;

#define BINARY_TILE 4096

static void elementwise_part(void* arg, int part, int parts) {
  const ElementwiseJob* j = arg;
  int64_t i0, i1;
  part_range(j->n, part, parts, 16, &i0, &i1); /* 64-byte slices: no cache line is written by two threads */
  const int64_t n = i1 - i0;
  if (n <= 0) return;
  const float* const* in = j->in;
  float* const* out = j->out;
  const float* h = j->hyper;
  if (j->unary) j->unary(in[0] + i0, out[0] + i0, n);
  else if (j->binary) {
    /* A short period (a scalar, a bias of a few channels) is first repeated into a tile of whole
     * periods, so that each loop call still runs over thousands of elements. */
    const float* b = in[1];
    int64_t period = j->b_period;
    float tile[BINARY_TILE];
    if (period < BINARY_TILE / 4) {
      int64_t len = BINARY_TILE / period * period;
      for (int64_t t = 0; t < len; t++) tile[t] = b[t % period];
      b = tile;
      period = len;
    }
    for (int64_t i = i0; i < i1;) {
      int64_t at = i % period, len = period - at < i1 - i ? period - at : i1 - i;
      j->binary(in[0] + i, b + at, out[0] + i, len);
      i += len;
    }
  } else if (j->act_grad) j->act_grad(in[0] + i0, in[1] + i0, out[0] + i0, n);
  else j->adamw(in[0] + i0, in[1] + i0, in[2] + i0, in[3] + i0, out[0] + i0, out[1] + i0, out[2] + i0, n, h[0], h[1], h[2], h[3], h[4], h[5], h[6]);
}

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
VECTORISED static void unary_gelu(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = x[i] * (erff(x[i] * (float)M_SQRT1_2) + 1.0f) * 0.5f; /* nn.ts's order of operations */
}

/* unary(heap, op, xOff, yOff, n): y = f(x) with f = tanh (0), exp (1), erf (2), sigmoid (3), swish (4), exact GELU (5). */
static napi_value unary(napi_env env, napi_callback_info info) {
  float* heap;
  int64_t floats, v[4];
  if (!heap_and_ints(env, info, "unary", "(heap, op, xOff, yOff, n)", 4, &heap, &floats, v)) return NULL;
  int64_t op = v[0], n = v[3];
  if (n <= 0 || !inside(v[1], n, floats) || !inside(v[2], n, floats)) return fail(env, "unary", "a tensor lies outside the heap");
  static void (*const loops[])(const float*, float*, int64_t) = {unary_tanh, unary_exp, unary_erf, unary_sigmoid, unary_swish, unary_gelu};
  if (op < 0 || op >= (int64_t)(sizeof loops / sizeof loops[0])) return fail(env, "unary", "unknown op");
  ElementwiseJob j = {.n = n, .in = {heap + v[1]}, .out = {heap + v[2]}, .unary = loops[op]};
  run_parallel(elementwise_part, &j, n);
  return NULL;
}

VECTORISED static void binary_add(const float* a, const float* b, float* y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}
VECTORISED static void binary_sub(const float* a, const float* b, float* y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = a[i] - b[i];
}
VECTORISED static void binary_mul(const float* a, const float* b, float* y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = a[i] * b[i];
}

/* binary(heap, op, aOff, bOff, yOff, n, bn): y[i] = a[i] ∘ b[i mod bn] with ∘ = add (0), sub (1), mul (2);
 * bn divides n (bn < n: b broadcast along a's leading axes, e.g. a bias). */
static napi_value binary(napi_env env, napi_callback_info info) {
  float* heap;
  int64_t floats, v[6];
  if (!heap_and_ints(env, info, "binary", "(heap, op, aOff, bOff, yOff, n, bn)", 6, &heap, &floats, v)) return NULL;
  int64_t op = v[0], n = v[4], bn = v[5];
  if (n <= 0 || bn <= 0 || n % bn != 0) return fail(env, "binary", "sizes must be positive, and bn must divide n");
  if (!inside(v[1], n, floats) || !inside(v[2], bn, floats) || !inside(v[3], n, floats)) return fail(env, "binary", "a tensor lies outside the heap");
  static void (*const loops[])(const float*, const float*, float*, int64_t) = {binary_add, binary_sub, binary_mul};
  if (op < 0 || op >= (int64_t)(sizeof loops / sizeof loops[0])) return fail(env, "binary", "unknown op");
  ElementwiseJob j = {.n = n, .in = {heap + v[1], heap + v[2]}, .out = {heap + v[3]}, .binary = loops[op], .b_period = bn};
  run_parallel(elementwise_part, &j, n);
  return NULL;
}

/* ---------------------------------------------------------------- dropout mask
 * dropoutMask(heap, yOff, n, state, threshold, scale): y[i] = scale where (w >> 8) < threshold, else 0, for w the
 * next word of the xoshiro128** generator in state (a Uint32Array of 4, advanced in place). The same stream and
 * test as rng.ts's fillUniform and nn.ts's dropout, so both paths draw identical masks. Sequential: the
 * generator is. */
static inline uint32_t rotl32(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }

static napi_value dropout_mask(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  size_t argc = 6;
  float* heap;
  int64_t floats, y_off, n;
  double threshold, scale;
  napi_typedarray_type type;
  size_t length;
  void* data;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 6 || !heap_of(env, argv[0], &heap, &floats) || !int_arg(env, argv[1], &y_off) ||
      !int_arg(env, argv[2], &n) || napi_get_typedarray_info(env, argv[3], &type, &length, &data, NULL, NULL) != napi_ok || type != napi_uint32_array ||
      length != 4 || napi_get_value_double(env, argv[4], &threshold) != napi_ok || napi_get_value_double(env, argv[5], &scale) != napi_ok)
    return fail(env, "dropoutMask", "expected (heap, yOff, n, state: Uint32Array(4), threshold, scale)");
  if (n <= 0 || !inside(y_off, n, floats)) return fail(env, "dropoutMask", "a tensor lies outside the heap");
  uint32_t* st = data;
  uint32_t s0 = st[0], s1 = st[1], s2 = st[2], s3 = st[3];
  /* For the integer u = w >> 8 < 2^24, (double)u < threshold ⟺ u < ceil(threshold): the same test on integers,
   * and a mask select instead of a branch (a kept/dropped branch is mispredicted at every rate but 0 and 1). */
  const double limit = ceil(threshold);
  const uint32_t below = limit <= 0 ? 0u : limit >= 16777216.0 ? 16777216u : (uint32_t)limit;
  float kept = (float)scale;
  uint32_t kept_bits;
  memcpy(&kept_bits, &kept, sizeof kept_bits);
  uint32_t* y = (uint32_t*)(heap + y_off);
  for (int64_t i = 0; i < n; i++) {
    uint32_t w = rotl32(s1 * 5u, 7) * 9u, t = s1 << 9;
    s2 ^= s0, s3 ^= s1, s1 ^= s2, s0 ^= s3, s2 ^= t, s3 = rotl32(s3, 11);
    y[i] = kept_bits & (0u - (uint32_t)((w >> 8) < below));
  }
  st[0] = s0, st[1] = s1, st[2] = s2, st[3] = s3;
  return NULL;
}

/* dx = dy · (σ(x) + x·σ(x)·(1 − σ(x))), the gradient of swish x·σ(x). */
VECTORISED static void swish_grad_loop(const float* x, const float* dy, float* dx, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    float s = 1.0f / (1.0f + expf(-x[i]));
    dx[i] = dy[i] * (s + x[i] * s * (1.0f - s));
  }
}

/* dx = dy · (Φ(x) + x·φ(x)), the gradient of exact GELU x·Φ(x). */
VECTORISED static void gelu_grad_loop(const float* x, const float* dy, float* dx, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    float cdf = 0.5f * (1.0f + erff(x[i] * (float)M_SQRT1_2));
    float pdf = 0.39894228040143268f * expf(-0.5f * x[i] * x[i]);
    dx[i] = dy[i] * (cdf + x[i] * pdf);
  }
}

/* fn(heap, xOff, dyOff, dxOff, n): dx = dy · f'(x), for swishGrad and geluGrad. */
static napi_value activation_grad(napi_env env, napi_callback_info info, const char* fn, void (*loop)(const float*, const float*, float*, int64_t)) {
  float* heap;
  int64_t floats, v[4];
  if (!heap_and_ints(env, info, fn, "(heap, xOff, dyOff, dxOff, n)", 4, &heap, &floats, v)) return NULL;
  int64_t n = v[3];
  if (n <= 0 || !inside(v[0], n, floats) || !inside(v[1], n, floats) || !inside(v[2], n, floats)) return fail(env, fn, "a tensor lies outside the heap");
  ElementwiseJob j = {.n = n, .in = {heap + v[0], heap + v[1]}, .out = {heap + v[2]}, .act_grad = loop};
  run_parallel(elementwise_part, &j, n);
  return NULL;
}
static napi_value swish_grad(napi_env env, napi_callback_info info) { return activation_grad(env, info, "swishGrad", swish_grad_loop); }
static napi_value gelu_grad(napi_env env, napi_callback_info info) { return activation_grad(env, info, "geluGrad", gelu_grad_loop); }

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

typedef struct {
  NormShape s;
  double eps;
  const float *x, *w, *bias, *mean, *rstd, *dy;
  float *y, *mean_out, *rstd_out;
  double* sums;   /* per part: one image's channel sums, 2·c */
  double* grads;  /* groupNormGrad, per chunk of images: its dw and dbias partials, 2·c */
  int64_t chunks; /* groupNormGrad: images go in this many fixed chunks (dw, dbias added in chunk order) */
  float* coef;    /* per part: 3·c */
} NormJob;

/* Allocates the per-part and per-chunk buffers of a NormJob; 0 when memory runs out. */
static int norm_buffers(NormJob* j) {
  j->sums = malloc((size_t)((pool.size + REDUCE_CHUNKS) * 2 * j->s.c) * sizeof(double));
  j->grads = j->sums ? j->sums + pool.size * 2 * j->s.c : NULL;
  j->coef = malloc((size_t)(pool.size * 3 * j->s.c) * sizeof(float));
  if (j->sums != NULL && j->coef != NULL) return 1;
  free(j->sums);
  free(j->coef);
  return 0;
}

/* One group over one pixel is a layer norm of a row of c channels: the row stays in registers and cache, so it
 * goes in float, two passes (mean, then the mean square about it), without the per-channel double sums and
 * coefficient arrays a group over many pixels needs (on rows of 128, forward and gradient took 1.8× as long). */
VECTORISED static void layer_norm_row(const float* x, const float* w, const float* bias, float* y, int64_t c, float eps, float* mean, float* rstd) {
  float m = row_sum(x, c) / (float)c;
  float acc[8] = {0};
  int64_t k = 0;
  for (; k + 8 <= c; k += 8)
    for (int l = 0; l < 8; l++) acc[l] += (x[k + l] - m) * (x[k + l] - m);
  float var = 0;
  for (; k < c; k++) var += (x[k] - m) * (x[k] - m);
  for (int l = 0; l < 8; l++) var += acc[l];
  float r = 1.0f / sqrtf(var / (float)c + eps);
  for (k = 0; k < c; k++) y[k] = (x[k] - m) * r * w[k] + bias[k];
  *mean = m;
  *rstd = r;
}

/* The layer norm row's gradient: with x̂ = (x − m)·r and g = dy·w, dx = r·(g − mean(g) − x̂·mean(g·x̂)); its dy·x̂
 * and dy are added to the chunk's dw and dbias partials. */
VECTORISED static void layer_norm_grad_row(const float* x, const float* dy, const float* w, float m, float r, float* dx, double* dw_acc, double* db_acc,
                                           int64_t c) {
  float sg[8] = {0}, sgx[8] = {0};
  int64_t k = 0;
  for (; k + 8 <= c; k += 8)
    for (int l = 0; l < 8; l++) {
      float g = dy[k + l] * w[k + l];
      sg[l] += g;
      sgx[l] += g * (x[k + l] - m) * r;
    }
  float sum_g = 0, sum_gx = 0;
  for (; k < c; k++) sum_g += dy[k] * w[k], sum_gx += dy[k] * w[k] * (x[k] - m) * r;
  for (int l = 0; l < 8; l++) sum_g += sg[l], sum_gx += sgx[l];
  const float mg = sum_g / (float)c, mgx = sum_gx / (float)c;
  for (k = 0; k < c; k++) {
    float xh = (x[k] - m) * r;
    dx[k] = r * (dy[k] * w[k] - mg - xh * mgx);
    dw_acc[k] += (double)(dy[k] * xh);
    db_acc[k] += (double)dy[k];
  }
}

/* This part's images: y = a[c]·x + s[c] with a = rstd·w, s = bias − mean·a. */
static void group_norm_part(void* arg, int part, int parts) {
  const NormJob* j = arg;
  const NormShape s = j->s;
  const int64_t cg = s.c / s.g;
  double* sums = j->sums + part * 2 * s.c;
  float* coef = j->coef + part * 3 * s.c;
  const double count = (double)(s.hw * cg);
  int64_t b0, b1;
  part_range(s.b, part, parts, 1, &b0, &b1);
  for (int64_t b = b0; b < b1; b++) {
    const float* xb = j->x + b * s.hw * s.c;
    if (s.hw == 1 && s.g == 1) {
      layer_norm_row(xb, j->w, j->bias, j->y + b * s.c, s.c, (float)j->eps, j->mean_out + b, j->rstd_out + b);
      continue;
    }
    channel_sums(xb, xb, s.hw, s.c, sums, sums + s.c);
    for (int64_t g = 0; g < s.g; g++) {
      double m = 0, sq = 0;
      for (int64_t k = g * cg; k < (g + 1) * cg; k++) m += sums[k], sq += sums[s.c + k];
      m /= count;
      double var = sq / count - m * m;
      float r = (float)(1.0 / sqrt((var > 0 ? var : 0) + j->eps));
      j->mean_out[b * s.g + g] = (float)m;
      j->rstd_out[b * s.g + g] = r;
      for (int64_t k = g * cg; k < (g + 1) * cg; k++) {
        coef[k] = r * j->w[k];
        coef[s.c + k] = j->bias[k] - (float)m * coef[k];
      }
    }
    channel_affine(j->y + b * s.hw * s.c, xb, coef, coef + s.c, NULL, NULL, s.hw, s.c);
  }
}

/* groupNorm(heap, xOff, wOff, bOff, yOff, meanOff, rstdOff, b, hw, c, groups, eps):
 * y = (x − mean)·rstd·w + bias; mean and rstd [b, groups] are kept for the gradient. Variance is
 * E[x²] − mean², accumulated in double. Parts split the images. */
static napi_value group_norm(napi_env env, napi_callback_info info) {
  float* heap;
  int64_t off[6];
  NormJob j = {0};
  int64_t floats;
  if (!norm_args(env, info, "groupNorm", 12, &heap, &floats, off, &j.s, &j.eps)) return NULL;
  int64_t n = j.s.b * j.s.hw * j.s.c;
  if (!inside(off[0], n, floats) || !inside(off[1], j.s.c, floats) || !inside(off[2], j.s.c, floats) || !inside(off[3], n, floats) ||
      !inside(off[4], j.s.b * j.s.g, floats) || !inside(off[5], j.s.b * j.s.g, floats))
    return fail(env, "groupNorm", "a tensor lies outside the heap");
  j.x = heap + off[0], j.w = heap + off[1], j.bias = heap + off[2];
  j.y = heap + off[3], j.mean_out = heap + off[4], j.rstd_out = heap + off[5];
  if (!norm_buffers(&j)) return fail(env, "groupNorm", "out of memory");
  run_parallel(group_norm_part, &j, n);
  free(j.sums);
  free(j.coef);
  return NULL;
}

/* This part's chunks of images: dx = A·dy + B·x + C per channel; each chunk's dw and dbias partials into grads. */
static void group_norm_grad_part(void* arg, int part, int parts) {
  const NormJob* j = arg;
  const NormShape s = j->s;
  const int64_t cg = s.c / s.g;
  double *s1 = j->sums + part * 2 * s.c, *s2 = s1 + s.c;
  float* coef = j->coef + part * 3 * s.c;
  const double count = (double)(s.hw * cg);
  int64_t k0, k1;
  part_range(j->chunks, part, parts, 1, &k0, &k1);
  for (int64_t chunk = k0; chunk < k1; chunk++) {
    double *dw_acc = j->grads + chunk * 2 * s.c, *db_acc = dw_acc + s.c;
    memset(dw_acc, 0, (size_t)(2 * s.c) * sizeof(double));
    int64_t b0, b1;
    part_range(s.b, (int)chunk, (int)j->chunks, 1, &b0, &b1);
    for (int64_t b = b0; b < b1; b++) {
      const float *xb = j->x + b * s.hw * s.c, *dyb = j->dy + b * s.hw * s.c;
      if (s.hw == 1 && s.g == 1) {
        layer_norm_grad_row(xb, dyb, j->w, j->mean[b], j->rstd[b], j->y + b * s.c, dw_acc, db_acc, s.c);
        continue;
      }
      channel_sums(dyb, xb, s.hw, s.c, s1, s2);
      for (int64_t g = 0; g < s.g; g++) {
        double m = j->mean[b * s.g + g], r = j->rstd[b * s.g + g], sum_g = 0, sum_gx = 0;
        for (int64_t k = g * cg; k < (g + 1) * cg; k++) {
          double dyxh = r * (s2[k] - m * s1[k]); /* Σ_p dy·x̂ for channel k */
          dw_acc[k] += dyxh;
          db_acc[k] += s1[k];
          sum_g += j->w[k] * s1[k];
          sum_gx += j->w[k] * dyxh;
        }
        double mg = sum_g / count, mgx = sum_gx / count;
        for (int64_t k = g * cg; k < (g + 1) * cg; k++) {
          coef[k] = (float)(r * j->w[k]);                     /* A: times dy */
          coef[s.c + k] = (float)(-r * r * mgx);              /* B: times x */
          coef[2 * s.c + k] = (float)(r * (m * r * mgx - mg)); /* C */
        }
      }
      channel_affine(j->y + b * s.hw * s.c, xb, coef + s.c, coef + 2 * s.c, dyb, coef, s.hw, s.c);
    }
  }
}

/* groupNormGrad(heap, xOff, wOff, meanOff, rstdOff, dyOff, dxOff, dwOff, dbOff, b, hw, c, groups):
 * with x̂ = (x − m)·r and g = dy·w, per group: dx = r·(g − mean(g) − x̂·mean(g·x̂)), which is the
 * per-channel map dx = A·dy + B·x + C; dw = Σ dy·x̂ and dbias = Σ dy over images and pixels. Every
 * group sum follows from the channel sums S1 = Σ dy and S2 = Σ dy·x. Parts take whole chunks of images. */
static napi_value group_norm_grad(napi_env env, napi_callback_info info) {
  float* heap;
  int64_t off[8];
  NormJob j = {0};
  int64_t floats;
  if (!norm_args(env, info, "groupNormGrad", 13, &heap, &floats, off, &j.s, NULL)) return NULL;
  const NormShape s = j.s;
  int64_t n = s.b * s.hw * s.c;
  if (!inside(off[0], n, floats) || !inside(off[1], s.c, floats) || !inside(off[2], s.b * s.g, floats) || !inside(off[3], s.b * s.g, floats) ||
      !inside(off[4], n, floats) || !inside(off[5], n, floats) || !inside(off[6], s.c, floats) || !inside(off[7], s.c, floats))
    return fail(env, "groupNormGrad", "a tensor lies outside the heap");
  j.x = heap + off[0], j.w = heap + off[1], j.mean = heap + off[2], j.rstd = heap + off[3], j.dy = heap + off[4], j.y = heap + off[5];
  float *dw = heap + off[6], *db = heap + off[7];
  if (!norm_buffers(&j)) return fail(env, "groupNormGrad", "out of memory");
  j.chunks = reduce_chunks(s.b, 1);
  run_parallel(group_norm_grad_part, &j, n);
  for (int64_t k = 0; k < s.c; k++) {
    double dw_k = 0, db_k = 0;
    for (int64_t t = 0; t < j.chunks; t++) dw_k += j.grads[t * 2 * s.c + k], db_k += j.grads[t * 2 * s.c + s.c + k];
    dw[k] = (float)dw_k;
    db[k] = (float)db_k;
  }
  free(j.sums);
  free(j.coef);
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
  ElementwiseJob j = {.n = n, .in = {heap + off[0], heap + off[1], heap + off[2], heap + off[3]}, .out = {heap + off[4], heap + off[5], heap + off[6]},
                      .adamw = adamw_loop};
  for (int i = 0; i < 7; i++) j.hyper[i] = (float)h[i];
  run_parallel(elementwise_part, &j, n);
  return NULL;
}

/* ---------------------------------------------------------------- incremental decoding
 * The ops of one decoding step (DalleBart.decodeStep with the fused path), run from a recorded program
 * (decodeProgram below): there every tensor is a few rows of d_model floats, so a stock op costs more in
 * dispatch than in arithmetic, and ~500 of them made a step. These fuse what a step does between two
 * weight reads: a linear layer with its bias and activation, a residual add with its layer norm, and
 * attention of one new query per row over cached keys/values (writing the new key/value row into the
 * preallocated cache first). */

enum { ACT_NONE = 0, ACT_GELU = 1, ACT_GELU_TANH = 2, ACT_RELU = 3, ACT_SWISH = 4 };

/* The same formulas as nn.ts's activations, in the same order of operations. */
VECTORISED static void act_gelu(float* y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = y[i] * (erff(y[i] * (float)M_SQRT1_2) + 1.0f) * 0.5f;
}
VECTORISED static void act_gelu_tanh(float* y, int64_t n) {
  const float c = (float)sqrt(2.0 / M_PI);
  for (int64_t i = 0; i < n; i++) {
    float x = y[i], cube = x * x * x;
    y[i] = x * (tanhf((x + cube * 0.044715f) * c) + 1.0f) * 0.5f;
  }
}
VECTORISED static void act_relu(float* y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = y[i] > 0.0f ? y[i] : 0.0f;
}
VECTORISED static void act_swish(float* y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = y[i] / (1.0f + expf(-y[i]));
}
VECTORISED static void add_bias(float* y, const float* b, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] += b[i];
}

typedef struct {
  float* y;
  const float* b;
  int64_t rows, n;
  int act;
} EpilogueJob;

static void epilogue_part(void* arg, int part, int parts) {
  const EpilogueJob* e = arg;
  int64_t r0, r1;
  part_range(e->rows, part, parts, 1, &r0, &r1);
  static void (*const acts[])(float*, int64_t) = {NULL, act_gelu, act_gelu_tanh, act_relu, act_swish};
  for (int64_t r = r0; r < r1; r++) {
    float* y = e->y + r * e->n;
    if (e->b) add_bias(y, e->b, e->n);
    if (e->act != ACT_NONE) acts[e->act](y, e->n);
  }
}

/* y[rows, out] = act(x[rows, in] · W + b), W [in, out] (or, transposed, [out, in]: a tied lm head); b may be NULL. */
static void linear_core(const float* x, const float* w, const float* b, float* y, int64_t rows, int64_t in, int64_t out, int act, bool transposed) {
  GemmJob job = {false, transposed, rows, out, in, 1, 0, 0, x, w, y};
  run_parallel(sgemm_part, &job, rows * out * in); /* a decoding step's few rows: column blocks */
  if (b || act != ACT_NONE) {
    EpilogueJob e = {y, b, rows, out, act};
    run_parallel(epilogue_part, &e, rows * out * (act == ACT_NONE ? 1 : 16));
  }
}

/* The operands of linear_core lie in the heap; NULL when they do, else what is wrong. */
static const char* linear_check(int64_t floats, int64_t x, int64_t w, int64_t b, int64_t y, int64_t rows, int64_t in, int64_t out, int64_t act) {
  if (rows <= 0 || in <= 0 || out <= 0 || rows > INT32_MAX || in > INT32_MAX || out > INT32_MAX) return "sizes must be positive and fit in 32 bits";
  if (act < ACT_NONE || act > ACT_SWISH) return "unknown activation";
  if (!inside(x, rows * in, floats) || !inside(w, in * out, floats) || (b != -1 && !inside(b, out, floats)) || !inside(y, rows * out, floats))
    return "a tensor lies outside the heap";
  return NULL;
}

/* Per row s = x + r (r NULL: s = x; rRows = rows rows, or 1 row added to every row of x), y = (s − mean(s)) /
 * √(var(s) + eps) · w + b (w, b NULL: absent); keep, when given, also gets s (the pre-LN residual stream).
 * Statistics in double. */
static void add_layer_norm_core(const float* x, const float* r, int64_t rRows, const float* w, const float* b, float* y, float* keep, int64_t rows, int64_t c,
                                double eps) {
  for (int64_t row = 0; row < rows; row++) {
    const float *xr = x + row * c, *rr = r ? r + (rRows == 1 ? 0 : row * c) : NULL;
    float* yr = y + row * c;
    double mean = 0, var = 0;
    for (int64_t i = 0; i < c; i++) {
      float s = rr ? xr[i] + rr[i] : xr[i];
      yr[i] = s;
      mean += s;
    }
    mean /= (double)c;
    for (int64_t i = 0; i < c; i++) var += (yr[i] - mean) * (yr[i] - mean);
    float rstd = (float)(1.0 / sqrt(var / (double)c + eps)), m = (float)mean;
    if (keep) memcpy(keep + row * c, yr, (size_t)c * sizeof(float));
    for (int64_t i = 0; i < c; i++) {
      float z = (yr[i] - m) * rstd;
      if (w) z *= w[i];
      if (b) z += b[i];
      yr[i] = z;
    }
  }
}

static const char* add_layer_norm_check(int64_t floats, int64_t x, int64_t r, int64_t rRows, int64_t w, int64_t b, int64_t y, int64_t s, int64_t rows, int64_t c) {
  const int64_t n = rows * c;
  if (rows <= 0 || c <= 0 || (rRows != rows && rRows != 1)) return "sizes must be positive, and r must have 1 row or as many as x";
  if (!inside(x, n, floats) || (r != -1 && !inside(r, rRows * c, floats)) || (w != -1 && !inside(w, c, floats)) || (b != -1 && !inside(b, c, floats)) ||
      !inside(y, n, floats) || (s != -1 && !inside(s, n, floats)))
    return "a tensor lies outside the heap";
  return NULL;
}

#define AT(off) ((off) != -1 ? heap + (off) : NULL)

typedef struct {
  const float *q, *bias;
  float *k, *v, *y;
  const float *knew, *vnew;
  int64_t q_stride, new_stride, cap, keys, heads, hs, pos, rows_heads;
  float scale;
} AttendJob;

/* Rows × heads split into parts; each (row, head) writes its new key/value row (when given), then attends. */
static void attend_part(void* arg, int part, int parts) {
  const AttendJob* j = arg;
  const int64_t hs = j->hs, C = j->heads * hs;
  float* s = scratch[part];
  int64_t u0, u1;
  part_range(j->rows_heads, part, parts, 1, &u0, &u1);
  for (int64_t u = u0; u < u1; u++) {
    int64_t b = u / j->heads, h = u % j->heads;
    float* kb = j->k + u * j->cap * hs;
    float* vb = j->v + u * j->cap * hs;
    if (j->knew) {
      memcpy(kb + j->pos * hs, j->knew + b * j->new_stride + h * hs, (size_t)hs * sizeof(float));
      memcpy(vb + j->pos * hs, j->vnew + b * j->new_stride + h * hs, (size_t)hs * sizeof(float));
    }
    float q[hs];
    const float* qr = j->q + b * j->q_stride + h * hs;
    for (int64_t d = 0; d < hs; d++) q[d] = qr[d] * j->scale;
    float max = -FLT_MAX;
    for (int64_t t = 0; t < j->keys; t++) {
      const float* kr = kb + t * hs;
      float dot = 0;
      for (int64_t d = 0; d < hs; d++) dot += q[d] * kr[d];
      if (j->bias) dot += j->bias[b * j->keys + t];
      s[t] = dot;
      if (dot > max) max = dot;
    }
    float total = 0;
    for (int64_t t = 0; t < j->keys; t++) total += (s[t] = expf(s[t] - max));
    float* yr = j->y + b * C + h * hs;
    for (int64_t d = 0; d < hs; d++) yr[d] = 0;
    for (int64_t t = 0; t < j->keys; t++) {
      const float p = s[t] / total, *vr = vb + t * hs;
      for (int64_t d = 0; d < hs; d++) yr[d] += p * vr[d];
    }
  }
}

/* The attention op's checks (and its scratch); v = qOff, qStride, kOff, vOff, cap, keys, biasOff, yOff, rows, heads, hs, kNewOff, vNewOff, newStride, pos. */
static const char* attend_check(int64_t floats, const int64_t* v) {
  int64_t qOff = v[0], qStride = v[1], kOff = v[2], vOff = v[3], cap = v[4], keys = v[5], biasOff = v[6], yOff = v[7], rows = v[8], heads = v[9], hs = v[10];
  int64_t kNew = v[11], vNew = v[12], newStride = v[13], pos = v[14];
  if (rows <= 0 || heads <= 0 || hs <= 0 || hs > 4096 || keys <= 0 || keys > cap || qStride < heads * hs) return "sizes must be positive, with keys ≤ cap and hs ≤ 4096";
  if ((kNew != -1) != (vNew != -1) || (kNew != -1 && (pos < 0 || pos >= keys || newStride < heads * hs))) return "a new key/value row needs both offsets and 0 ≤ pos < keys";
  if (!inside(qOff, (rows - 1) * qStride + heads * hs, floats) || !inside(kOff, rows * heads * cap * hs, floats) || !inside(vOff, rows * heads * cap * hs, floats) ||
      (biasOff != -1 && !inside(biasOff, rows * keys, floats)) || !inside(yOff, rows * heads * hs, floats) ||
      (kNew != -1 && (!inside(kNew, (rows - 1) * newStride + heads * hs, floats) || !inside(vNew, (rows - 1) * newStride + heads * hs, floats))))
    return "a tensor lies outside the heap";
  if (!reserve_scratch(pool.size, keys)) return "out of memory";
  return NULL;
}

/* After attend_check: the job of `v` (as there) with query scale `scale`. */
static void attend_core(float* heap, const int64_t* v, float scale) {
  AttendJob j = {heap + v[0], AT(v[6]), heap + v[2], heap + v[3], heap + v[7], AT(v[11]), AT(v[12]), v[1], v[13], v[4], v[5], v[9], v[10], v[14], v[8] * v[9], scale};
  run_parallel(attend_part, &j, v[8] * v[9] * v[5] * v[10] * 2);
}

/* ---------------------------------------------------------------- a recorded decoding step
 * decodeProgram(heap, program, tokens, position) runs a whole decoding step recorded once per decoding state
 * (kernels/decode.ts, DecodeProgram): a Float64Array of PROGRAM_SLOTS-number records, one per op, whose
 * operands are heap offsets (−1: absent) fixed for the state's life, and whose only inputs that change
 * from step to step are the rows' tokens (Int32Array) and the position. One call per step instead of one per
 * op: the ~50 calls of a step each cost more in JS than in arithmetic. Every record's operands are checked
 * (the *_check functions) before it runs. Records:
 *   1 linear:     x, w, b, y, rows, in, out, act, transposed
 *   2 add + norm: x, r, rRows, w, b, y, s, rows, c, eps
 *   3 attention:  q, qStride, k, v, cap, keys, bias, y, rows, heads, hs, kNew, vNew, newStride, scale
 *                 (kNew ≥ 0: self-attention, keys = position + 1 and the new row goes at the position)
 *   4 embedding:  table, tableRows, positions, positionRows, y, rows, c, scale: y[r] = table[token r]·scale + positions[position]
 *   5 multiply:   a, b, y, n (y = a ⊙ b)
 *   6 add:        a, b, y, n */
#define PROGRAM_SLOTS 16
enum { OP_LINEAR = 1, OP_ADD_LAYER_NORM = 2, OP_ATTEND = 3, OP_EMBED = 4, OP_MUL = 5, OP_ADD = 6 };

static napi_value decode_program(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  float* heap;
  int64_t floats, position;
  if (argc != 4 || !heap_of(env, argv[0], &heap, &floats) || !int_arg(env, argv[3], &position)) return fail(env, "decodeProgram", "expected (heap, program, tokens, position)");
  napi_typedarray_type kind, tokKind;
  size_t slots, nTokens;
  void *progData, *tokData;
  if (napi_get_typedarray_info(env, argv[1], &kind, &slots, &progData, NULL, NULL) != napi_ok || kind != napi_float64_array || slots % PROGRAM_SLOTS != 0)
    return fail(env, "decodeProgram", "the program must be a Float64Array of whole records");
  if (napi_get_typedarray_info(env, argv[2], &tokKind, &nTokens, &tokData, NULL, NULL) != napi_ok || tokKind != napi_int32_array)
    return fail(env, "decodeProgram", "the tokens must be an Int32Array");
  const double* prog = progData;
  const int32_t* tokens = tokData;
  char msg[256];
  for (size_t at = 0; at < slots; at += PROGRAM_SLOTS) {
    const double* rec = prog + at;
    int64_t a[PROGRAM_SLOTS - 1];
    for (int i = 0; i < PROGRAM_SLOTS - 1; i++) a[i] = (int64_t)rec[1 + i];
    const char* bad = NULL;
    switch ((int)rec[0]) {
      case OP_LINEAR:
        if (!(bad = linear_check(floats, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7])))
          linear_core(heap + a[0], heap + a[1], AT(a[2]), heap + a[3], a[4], a[5], a[6], (int)a[7], a[8] != 0);
        break;
      case OP_ADD_LAYER_NORM:
        if (!(bad = add_layer_norm_check(floats, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8])))
          add_layer_norm_core(heap + a[0], AT(a[1]), a[2], AT(a[3]), AT(a[4]), heap + a[5], AT(a[6]), a[7], a[8], rec[10]);
        break;
      case OP_ATTEND: {
        const bool append = a[11] != -1;
        /* attend_check's order: q, qStride, k, v, cap, keys, bias, y, rows, heads, hs, kNew, vNew, newStride, pos */
        int64_t v[15] = {a[0], a[1], a[2], a[3], a[4], append ? position + 1 : a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12], a[13], append ? position : 0};
        if (!(bad = attend_check(floats, v))) attend_core(heap, v, (float)rec[15]);
        break;
      }
      case OP_EMBED: {
        const int64_t table = a[0], tableRows = a[1], pos = a[2], posRows = a[3], y = a[4], rows = a[5], c = a[6];
        const float scale = (float)rec[8];
        if (rows <= 0 || c <= 0 || (int64_t)nTokens != rows) bad = "one token per row is needed";
        else if (position < 0 || position >= posRows) bad = "the position is past the position table";
        else if (!inside(table, tableRows * c, floats) || !inside(pos, posRows * c, floats) || !inside(y, rows * c, floats)) bad = "a tensor lies outside the heap";
        for (int64_t r = 0; !bad && r < rows; r++) {
          if (tokens[r] < 0 || tokens[r] >= tableRows) {
            bad = "a token is outside the embedding table";
            break;
          }
          const float *t = heap + table + (int64_t)tokens[r] * c, *p = heap + pos + position * c;
          float* yr = heap + y + r * c;
          for (int64_t i = 0; i < c; i++) yr[i] = t[i] * scale + p[i];
        }
        break;
      }
      case OP_MUL:
      case OP_ADD: {
        const int64_t x = a[0], z = a[1], y = a[2], n = a[3];
        if (n <= 0 || !inside(x, n, floats) || !inside(z, n, floats) || !inside(y, n, floats)) bad = "a tensor lies outside the heap";
        else if ((int)rec[0] == OP_MUL)
          for (int64_t i = 0; i < n; i++) heap[y + i] = heap[x + i] * heap[z + i];
        else
          for (int64_t i = 0; i < n; i++) heap[y + i] = heap[x + i] + heap[z + i];
        break;
      }
      default:
        bad = "unknown op";
    }
    if (bad) {
      snprintf(msg, sizeof msg, "op %zu (code %d): %s", at / PROGRAM_SLOTS, (int)rec[0], bad);
      return fail(env, "decodeProgram", msg);
    }
  }
  return NULL;
}

/* setThreads(n[, minParallelWork]): threads of the pool, the JS thread included (1 … MAX_THREADS), and
 * optionally the work below which a job runs in one part. */
static napi_value set_threads(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int64_t n, min_work = parallel_min_work;
  if (argc < 1 || !int_arg(env, argv[0], &n) || n < 1 || n > MAX_THREADS) return fail(env, "setThreads", "expected a thread count from 1 to 64");
  napi_valuetype second = napi_undefined;
  if (argc > 1) CHECK(napi_typeof(env, argv[1], &second));
  if (second != napi_undefined && (!int_arg(env, argv[1], &min_work) || min_work < 1)) return fail(env, "setThreads", "minParallelWork must be a whole number ≥ 1");
  if (n != pool.size && !resize_pool((int)n)) return fail(env, "setThreads", "could not start the worker threads");
  parallel_min_work = min_work;
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
  CHECK(napi_create_int32(env, pool.size, &s));
  CHECK(napi_set_named_property(env, obj, "threads", s));
  return obj;
}

static napi_value init(napi_env env, napi_value exports) {
  openblas_set_num_threads(1); /* see "Threads" at the top */
  const napi_property_descriptor fns[] = {
      {"sgemm", NULL, sgemm, NULL, NULL, NULL, napi_enumerable, NULL},
      {"conv2d", NULL, conv2d, NULL, NULL, NULL, napi_enumerable, NULL},
      {"conv2dBackpropInput", NULL, conv2d_backprop_input, NULL, NULL, NULL, napi_enumerable, NULL},
      {"conv2dBackpropFilter", NULL, conv2d_backprop_filter, NULL, NULL, NULL, napi_enumerable, NULL},
      {"sum", NULL, sum_axes, NULL, NULL, NULL, napi_enumerable, NULL},
      {"sparseXent", NULL, sparse_xent, NULL, NULL, NULL, napi_enumerable, NULL},
      {"sparseXentGrad", NULL, sparse_xent_grad, NULL, NULL, NULL, napi_enumerable, NULL},
      {"unary", NULL, unary, NULL, NULL, NULL, napi_enumerable, NULL},
      {"binary", NULL, binary, NULL, NULL, NULL, napi_enumerable, NULL},
      {"swishGrad", NULL, swish_grad, NULL, NULL, NULL, napi_enumerable, NULL},
      {"geluGrad", NULL, gelu_grad, NULL, NULL, NULL, napi_enumerable, NULL},
      {"dropoutMask", NULL, dropout_mask, NULL, NULL, NULL, napi_enumerable, NULL},
      {"groupNorm", NULL, group_norm, NULL, NULL, NULL, napi_enumerable, NULL},
      {"groupNormGrad", NULL, group_norm_grad, NULL, NULL, NULL, napi_enumerable, NULL},
      {"adamw", NULL, adamw, NULL, NULL, NULL, napi_enumerable, NULL},
      {"decodeProgram", NULL, decode_program, NULL, NULL, NULL, napi_enumerable, NULL},
      {"setThreads", NULL, set_threads, NULL, NULL, NULL, napi_enumerable, NULL},
      {"info", NULL, blas_info, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  CHECK(napi_define_properties(env, exports, sizeof fns / sizeof fns[0], fns));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
