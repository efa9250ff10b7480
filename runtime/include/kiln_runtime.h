/* kiln runtime: the functions kiln's generated code calls, and that a host
   program may call. Link with libkiln_runtime.a
   (`cargo build --release -p kiln-runtime [--features std] [--target TRIPLE]`);
   on Linux also -lpthread -ldl -lm. */
#ifndef KILN_RUNTIME_H
#define KILN_RUNTIME_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A loop body: runs iterations [begin, end) of a loop over ctx. */
typedef void (*kiln_task_fn)(void *ctx, size_t begin, size_t end);

/* Runs task over disjoint ranges covering [0, n) and returns when all are
   done. Without the runtime's `std` feature this is task(ctx, 0, n); with it,
   the range is cut into a fixed number of chunks (four per thread of a
   persistent pool, the calling thread included), each thread runs the chunks
   of its own share and then helps with the others'. Calls made from inside a
   task, or while another thread is using the pool, run inline. task must
   tolerate running concurrently on disjoint ranges. */
void kiln_parallel_for(size_t n, kiln_task_fn task, void *ctx);

/* Threads kiln_parallel_for uses, the caller's included: 1 without `std`;
   with it KILN_NUM_THREADS (read once, when the pool starts) or all cores. */
int kiln_runtime_num_threads(void);

/* f32 GEMM with a fused epilogue: C = clamp(f(A.B + (accumulate ? C : R)
   + bias), act_min, act_max), A m x k (row stride lda), C m x n (row stride
   ldc), B pre-packed for the variant (the layout of kiln_runtime::gemm::pack_b,
   kiln_sgemm_packed_b_len floats). flags: bit 0 accumulate, bit 1 one bias
   per row (m floats) instead of per column (n floats), bit 2 A stored
   transposed (element (i, p) at a[p * lda + i], lda >= m), bits 8-11 the
   function f: 0 none, 1 sigmoid, 2 SiLU, 3 GELU (erf), 4 tanh (another code
   returns -8); bias may be NULL;
   residual R (m x n, row stride ldr) or NULL, unused when accumulating;
   scratch at least
   MR * min(k, KC) floats (kiln_sgemm_scratch_len for full speed). Returns 0,
   or a negative code (null pointer -1, short stride -2, short buffer -3,
   variant not built -4, overflow -5, CPU lacks the instructions -6,
   residual while accumulating -7, unknown function -8).
   avx2/avx512 exist on x86_64 only, neon on aarch64 only. */
#define KILN_SGEMM_ARGS                                                     \
  size_t m, size_t n, size_t k, const float *a, size_t lda,                 \
      const float *b_packed, float *c, size_t ldc, uint32_t flags,          \
      const float *bias, const float *residual, size_t ldr, float act_min,  \
      float act_max, float *scratch, size_t scratch_len
int kiln_sgemm_scalar(KILN_SGEMM_ARGS);
#if defined(__x86_64__) || defined(_M_X64)
int kiln_sgemm_avx2(KILN_SGEMM_ARGS);
int kiln_sgemm_avx512(KILN_SGEMM_ARGS);
#endif
#if defined(__aarch64__) || defined(_M_ARM64)
int kiln_sgemm_neon(KILN_SGEMM_ARGS);
#endif
#undef KILN_SGEMM_ARGS

/* The same GEMM with A packed ahead of time (kiln_runtime::gemm::pack_a; a
   convolution's weights) and B raw, k rows of n floats ldb apart, packed by
   the call: scratch at least NR * min(k, KC) floats. */
#define KILN_SGEMM_PA_ARGS                                                  \
  size_t m, size_t n, size_t k, const float *a_packed, size_t ldb,          \
      const float *b, float *c, size_t ldc, uint32_t flags,                 \
      const float *bias, const float *residual, size_t ldr, float act_min,  \
      float act_max, float *scratch, size_t scratch_len
/* And with both operands raw (two activations, as attention's Q.K^T): B
   element (p, j) at b[p * b_rs + j * b_cs]; scratch at least
   (MR + NR) * min(k, KC) floats. */
#define KILN_SGEMM_RAW_ARGS                                                 \
  size_t m, size_t n, size_t k, const float *a, size_t lda, const float *b, \
      float *c, size_t ldc, uint32_t flags, const float *bias,              \
      const float *residual, size_t ldr, float act_min, float act_max,      \
      float *scratch, size_t scratch_len, size_t b_rs, size_t b_cs
int kiln_sgemm_pa_scalar(KILN_SGEMM_PA_ARGS);
int kiln_sgemm_raw_scalar(KILN_SGEMM_RAW_ARGS);
#if defined(__x86_64__) || defined(_M_X64)
int kiln_sgemm_pa_avx2(KILN_SGEMM_PA_ARGS);
int kiln_sgemm_pa_avx512(KILN_SGEMM_PA_ARGS);
int kiln_sgemm_raw_avx2(KILN_SGEMM_RAW_ARGS);
int kiln_sgemm_raw_avx512(KILN_SGEMM_RAW_ARGS);
#endif
#if defined(__aarch64__) || defined(_M_ARM64)
int kiln_sgemm_pa_neon(KILN_SGEMM_PA_ARGS);
int kiln_sgemm_raw_neon(KILN_SGEMM_RAW_ARGS);
#endif
#undef KILN_SGEMM_PA_ARGS
#undef KILN_SGEMM_RAW_ARGS

/* Floats of packed B, and of scratch for full speed, for variant code
   0 scalar, 1 avx2, 2 avx512, 3 neon (0 for an unknown code). */
size_t kiln_sgemm_packed_b_len(uint32_t variant, size_t k, size_t n);
size_t kiln_sgemm_scratch_len(uint32_t variant, size_t m, size_t k);

/* The runtime version, e.g. "0.1.0" (static storage). */
const char *kiln_runtime_version(void);

/* f32 depthwise convolution (NCHW, one input channel per output channel)
   with a fused bias and clamp, single-threaded (split channels over
   threads by offsetting x, w, bias, y and channels). For c < channels,
   oy < out_h, ox < out_w:
     y[(c*out_h + oy)*out_w + ox] = clamp(f(bias[c] + sum over ky < k_h,
       kx < k_w of w[(c*k_h + ky)*k_w + kx] * X(c, oy*stride_h - pad_top
       + ky*dil_h, ox*stride_w - pad_left + kx*dil_w)), act_min, act_max)
   with X the input x (channels planes of in_h x in_w) and 0 outside it;
   bottom/right padding follow from out_h/out_w; bias may be NULL (0);
   clamp(v, lo, hi) = min(max(v, lo), hi), NaN passing through, +-INFINITY
   for no bound; f by func as in the GEMM flags' bits 8-11 (0 none,
   1 sigmoid, 2 SiLU, 3 GELU, 4 tanh). y must not overlap x, w or bias.
   Returns 0, or a negative code (null args/x/w/y -1, zero kernel size,
   stride or dilation -2, variant not built -4, overflow -5, CPU lacks the
   instructions -6, unknown func -7);
   nothing is read or written when channels*out_h*out_w is 0.
   avx2/avx512 exist on x86_64 only, neon on aarch64 only. */
typedef struct KilnDwArgs {
  const float *x;
  const float *w;
  const float *bias;
  float *y;
  size_t channels, in_h, in_w, out_h, out_w, k_h, k_w;
  size_t stride_h, stride_w, pad_top, pad_left, dil_h, dil_w;
  float act_min, act_max;
  uint32_t func;
} KilnDwArgs;
int kiln_dwconv_f32_scalar(const KilnDwArgs *args);
#if defined(__x86_64__) || defined(_M_X64)
int kiln_dwconv_f32_avx2(const KilnDwArgs *args);
int kiln_dwconv_f32_avx512(const KilnDwArgs *args);
#endif
#if defined(__aarch64__) || defined(_M_ARM64)
int kiln_dwconv_f32_neon(const KilnDwArgs *args);
#endif

/* Softmax's exponentials: y[r*len + j] = exp(x[r*len + j] - m[r]) for
   r < rows, j < len (m holds each row's maximum; y may be x). Returns 0,
   -1 for a null pointer (nothing is read when rows*len is 0), -6 when the
   CPU lacks the instructions. avx512 exists on x86_64 only. */
int kiln_exp_rows_f32_scalar(const float *x, const float *m, float *y,
                             size_t rows, size_t len);
#if defined(__x86_64__) || defined(_M_X64)
int kiln_exp_rows_f32_avx512(const float *x, const float *m, float *y,
                             size_t rows, size_t len);
#endif

/* Direct 2-D convolution of one group over an input already padded, output
   channels in the vector lanes (what generated code calls for dense convs
   on AVX-512 targets). x holds cin planes of hp x wp; w the weights packed
   in panels of 32 output channels (element (co, p), p = (ci*kh + ky)*kw +
   kx, at (co/32)*depth*32 + p*32 + co%32, depth = cin*kh*kw, channels past
   cout zero); bias cout values or NULL; y cout planes of oh x ow. For
   co < cout, oy < oh, ox < ow:
     y[(co*oh + oy)*ow + ox] = clamp(f(bias[co] + sum over ci, ky, kx of
       w(co, ci, ky, kx) * x[(ci*hp + oy*sh + ky*dh)*wp + ox*sw + kx*dw]))
   with clamp and f as for the depthwise routine; with phases > 1 (then
   equal to sw) each padded row of x is stored phase-split, column p at
   (p % phases)*(wp/phases) + p/phases. Only work items
   begin..end are computed, item r*ceil(cout/32) + b being output row r of
   channel block b. Returns 0, or a negative code (null args/x/w/y -1, a
   zero size, overflow or bad phases -2, a window past the padded input -3, a bad item
   range -4, unknown func -5, CPU lacks AVX-512F -6). x86_64 only. */
typedef struct KilnConvArgs {
  const float *x;
  const float *w;
  const float *bias;
  float *y;
  size_t cin, hp, wp, cout, oh, ow, kh, kw, sh, sw, dh, dw, phases;
  size_t begin, end;
  float act_min, act_max;
  uint32_t func;
} KilnConvArgs;
#if defined(__x86_64__) || defined(_M_X64)
int kiln_conv2d_f32_avx512(const KilnConvArgs *args);
#endif

/* 2-D max pooling over planes already padded (with -INFINITY, and past
   the end for ceil_mode): for p in begin..end, oy < oh, ox < ow,
     y[(p*oh + oy)*ow + ox] = max over ky < kh, kx < kw of
       x[(p*hp + oy*sh + ky*dh)*wp + ox*sw + kx*dw]
   Returns 0, or a negative code (null args/x/y -1, a zero size, overflow
   or a row reading more than 4096 columns -2, a window past the padded
   input -3, a bad plane range -4, CPU lacks AVX-512F -6). x86_64 only. */
typedef struct KilnMaxPoolArgs {
  const float *x;
  float *y;
  size_t hp, wp, oh, ow, kh, kw, sh, sw, dh, dw, planes;
  size_t begin, end;
} KilnMaxPoolArgs;
#if defined(__x86_64__) || defined(_M_X64)
int kiln_maxpool2d_f32_avx512(const KilnMaxPoolArgs *args);
#endif

#ifdef __cplusplus
}
#endif
#endif
