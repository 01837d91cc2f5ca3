// cpu_ops.h — internals of the CPU reference backend (kernels/cpu), shared by its op files.
//
// One op family per .c file: cpu_backend.c (vtable, memory, scratch), cpu_linear.c, cpu_conv2d.c,
// cpu_norm.c, cpu_attention.c, cpu_elementwise.c, cpu_layout.c, cpu_embed.c. Everything is fp32.
//
// Threading: one pool. OpenBLAS is set to a single thread and every op splits its work (GEMMs
// included) over OpenMP threads, `threads` of them (ds_backend_cpu_create). Attention probes are
// always called from the calling thread, one call at a time. docs/ops.md has the details.
#ifndef DS_CPU_OPS_H
#define DS_CPU_OPS_H

#include <math.h>
#include <string.h>

#include "backend.h"

typedef struct ds_cpu_impl {
    int threads;              // OpenMP threads for every op, GEMMs included (≥ 1)
    float* scratch;           // grown on demand, 64-byte aligned; reused between ops (one stream)
    int64_t scratch_cap;      // floats
    int64_t conv_scratch_max; // im2col budget, all threads together, floats (16 Mi = 64 MB)
    int64_t attn_tile_max;    // one probability tile at most, floats (1 Mi = 4 MB; tiles are also
                              // ≤ 128 rows, and all threads' tiles ≤ 16 Mi floats)
} ds_cpu_impl;

static inline ds_cpu_impl* ds_cpu(ds_backend* be) { return (ds_cpu_impl*)be->impl; }

// Scratch of at least n floats (contents undefined); aborts on out-of-memory like other
// programmer-visible invariants, because ops have no error channel.
float* ds_cpu_scratch(ds_backend* be, int64_t n);

// Loops shorter than this run on one thread (thread start-up costs more than the work).
#define DS_CPU_PAR_MIN 32768

// Row-major C(M, N) = alpha · A(M, K) · op(B) + beta · C with op(B) = Bᵀ (B is N × K, trans_b = 1)
// or B (K × N, trans_b = 0); beta = 0 never reads C. Single-threaded (OpenBLAS runs with one
// thread; callers split work over OpenMP threads). Checks the int range cblas needs.
void ds_cpu_sgemm(int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                  int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// y(m, n) (row stride ldy) = residual (row stride ldr; may alias y; may be NULL) + bias(n) (may
// be NULL). Returns 1 when y now holds a value to accumulate into (sgemm beta = 1), 0 when
// neither was given and y is untouched.
int ds_cpu_prefill(float* y, int64_t ldy, const float* bias, const float* residual, int64_t ldr,
                   int64_t m, int64_t n);

// One single-threaded block of a linear layer: y(m, n) (row stride ldy) = residual (same
// stride) + bias + x(m, K; row stride ldx) · w(n, K)ᵀ.
void ds_cpu_gemm_block(const float* x, int64_t ldx, const float* w, const float* bias,
                       const float* residual, float* y, int64_t m, int64_t n, int64_t ldy,
                       int64_t K);

// Test / tuning hook: sets the im2col scratch budget and the attention tile budget in floats
// (0 keeps the current value). Small budgets force many tiles so tests cover the tile edges.
void ds_cpu_set_budgets(ds_backend* be, int64_t conv_scratch_floats, int64_t attn_tile_floats);

// ---- ops (the ds_backend function pointers)
void ds_cpu_linear(ds_backend* be, const float* x, const float* w, const float* bias,
                   const float* residual, float* y, int64_t M, int64_t N, int64_t K);
void ds_cpu_conv2d(ds_backend* be, const ds_tensor* x, const float* w, const float* bias, int O,
                   int kh, int kw, int stride, int pad, const float* residual, ds_tensor* y);
void ds_cpu_group_norm(ds_backend* be, const float* x, const float* gamma, const float* beta,
                       float* y, int64_t N, int64_t S, int64_t C, int groups, float eps, int silu);
void ds_cpu_layer_norm(ds_backend* be, const float* x, const float* gamma, const float* beta,
                       float* y, int64_t rows, int64_t cols, float eps);
void ds_cpu_attention(ds_backend* be, const float* q, int64_t q_stride, const float* k,
                      int64_t k_stride, const float* v, int64_t v_stride, float* out, int B, int Lq,
                      int Lk, int heads, int dh, float scale, int causal,
                      const ds_attn_probe* probe);
void ds_cpu_act(ds_backend* be, ds_act kind, const float* x, float* y, int64_t n);
void ds_cpu_column_stats(ds_backend* be, const float* x, int64_t rows, int64_t F, float* sum,
                         float* sumsq, int l2_rows);
void ds_cpu_geglu(ds_backend* be, const float* x, float* y, int64_t rows, int64_t F);
void ds_cpu_add(ds_backend* be, const float* a, const float* b, float* y, int64_t n);
void ds_cpu_scale(ds_backend* be, const float* x, float s, float* y, int64_t n);
void ds_cpu_add_channel_bias(ds_backend* be, const float* x, const float* v, float* y, int64_t N,
                             int64_t S, int64_t C);
void ds_cpu_upsample_nearest2x(ds_backend* be, const float* x, float* y, int64_t N, int64_t H,
                               int64_t W, int64_t C);
void ds_cpu_concat_channels(ds_backend* be, const float* a, const float* b, float* y, int64_t N,
                            int64_t S, int64_t Ca, int64_t Cb);
void ds_cpu_nchw_to_nhwc(ds_backend* be, const float* x, float* y, int64_t N, int64_t C, int64_t H,
                         int64_t W);
void ds_cpu_nhwc_to_nchw(ds_backend* be, const float* x, float* y, int64_t N, int64_t H, int64_t W,
                         int64_t C);
void ds_cpu_timestep_embedding(ds_backend* be, const float* t_host, int N, int dim,
                               int flip_sin_to_cos, float freq_shift, float* y);
void ds_cpu_embed_tokens(ds_backend* be, const int32_t* ids_host, int n, int L, const float* table,
                         const float* pos, int D, float* y);

// ---- vectorizable math (inlined into the loops; no libm calls, no branches)
//
// GCC only vectorizes these loops without -ffast-math if nothing can trap conditionally: no
// libm call, no float → int conversion, and no `?:` whose arms compute (GCC then threads the
// branch and duplicates the arithmetic into it). Hence the bit-mask selects below.

static inline float ds_cpu_bits_f(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
static inline uint32_t ds_cpu_f_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}
// a where mask is all ones, else b
static inline float ds_cpu_select(uint32_t mask, float a, float b) {
    return ds_cpu_bits_f((ds_cpu_f_bits(a) & mask) | (ds_cpu_f_bits(b) & ~mask));
}

// e^x for x ≤ 0.34 (softmax arguments after max subtraction, −|x| in the activations):
// Cody–Waite reduction x = n·ln2 + r, |r| ≤ ln2/2, n rounded with the 1.5·2^23 trick and read
// back as bits (n is then rebuilt from the integer, so -fassociative-math cannot fold it away),
// Cephes' polynomial for e^r. Measured ≤ 0.66 ulp against exp() over [−87, 0]. Returns exactly 0
// below −87.3 (where e^x would be subnormal) and for NaN.
static inline float ds_cpu_exp_nonpos(float x) {
    const float lo = -87.3f;
    const uint32_t keep = 0u - (uint32_t)(x >= lo);  // all ones unless x < lo (or NaN)
    const float xc = ds_cpu_select(keep, x, lo);
    const float z = xc * 1.44269504088896341f + 12582912.0f;  // round(x·log2 e) in z's low bits
    const int32_t ni = (int32_t)ds_cpu_f_bits(z) - 0x4B400000;  // in [−126, 0]
    const float n = (float)ni;
    float r = xc - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const float e = p * ds_cpu_bits_f((uint32_t)(ni + 127) << 23);  // · 2^n, normal: n ≥ −126
    return ds_cpu_bits_f(ds_cpu_f_bits(e) & keep);
}

// σ(x) = 1/(1 + e^−x) from e = e^−|x| ≤ 1: σ = 1/(1+e) for x ≥ 0, e/(1+e) for x < 0.
static inline float ds_cpu_sigmoid(float x) {
    const float e = ds_cpu_exp_nonpos(-fabsf(x));
    const uint32_t neg = 0u - (uint32_t)(x < 0.0f);
    return ds_cpu_select(neg, e, 1.0f) / (1.0f + e);
}

// SiLU x·σ(x) (torch.nn.functional.silu); QuickGELU x·σ(1.702x) (CLIP)
static inline float ds_cpu_silu(float x) { return x * ds_cpu_sigmoid(x); }
static inline float ds_cpu_quick_gelu(float x) { return x * ds_cpu_sigmoid(1.702f * x); }

// erfc(z) for z ≥ 0 (Numerical Recipes' erfcc, a Chebyshev fit: relative error < 1.2e-7):
// t = 1/(1 + z/2), erfc = t·exp(−z² − 1.26551223 + t·P(t)). z² is split exactly (hi + lo, with
// an FMA) so the exponent's rounding does not grow with z².
static inline float ds_cpu_erfc_nonneg(float z) {
    const float t = 1.0f / (1.0f + 0.5f * z);
    float p = 0.17087277f;
    p = p * t - 0.82215223f;
    p = p * t + 1.48851587f;
    p = p * t - 1.13520398f;
    p = p * t + 0.27886807f;
    p = p * t - 0.18628806f;
    p = p * t + 0.09678418f;
    p = p * t + 0.37409196f;
    p = p * t + 1.00002368f;
    const float hi = z * z;
    const float lo = fmaf(z, z, -hi);
    return t * ds_cpu_exp_nonpos((t * p - 1.26551223f - hi) - lo);
}

// GELU, exact (erf) form as torch's F.gelu(approximate="none"): x·Φ(x) = ½x·erfc(−x/√2),
// with erfc(−u) = 2 − erfc(u) for x ≥ 0 — every branch keeps ~1e-7 relative accuracy, also in
// the far negative tail where 1 + erf(x/√2) would cancel.
static inline float ds_cpu_gelu(float x) {
    const float c = ds_cpu_erfc_nonneg(fabsf(x) * 0.70710678118654752f);
    const uint32_t pos = 0u - (uint32_t)(x >= 0.0f);
    return 0.5f * x * ds_cpu_select(pos, 2.0f - c, c);
}

// GELU, tanh form (F.gelu(approximate="tanh")): ½x(1 + tanh(u)), u = √(2/π)(x + 0.044715x³);
// 1 + tanh(u) = 2/(1 + e^−2u), from e = e^−2|u|: 2/(1+e) for u ≥ 0, 2e/(1+e) for u < 0.
static inline float ds_cpu_gelu_tanh(float x) {
    const float u = 0.79788456080286536f * (x + 0.044715f * x * x * x);
    const float e = ds_cpu_exp_nonpos(-2.0f * fabsf(u));
    const uint32_t neg = 0u - (uint32_t)(u < 0.0f);
    return x * ds_cpu_select(neg, e, 1.0f) / (1.0f + e);
}

#endif
