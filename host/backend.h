// backend.h — the one op interface that model code is written against.
//
// A backend (CPU now, CUDA later) implements every op below on its own memory. Model code never
// touches tensor data directly; it calls `be->op(be, ...)`. Conventions:
//   * activations are fp32 on the CPU backend (fp16/bf16 on CUDA), feature maps in NHWC:
//     x (N, H, W, C) stored with C fastest; token sequences (B, L, C) with C fastest;
//   * linear weights use PyTorch's (out, in) layout; conv weights are repacked once at load
//     into (O, kh, kw, I) so an NHWC im2col row matches a weight row;
//   * every op writes its whole output (never reads it first) unless documented otherwise;
//   * sizes are int64 element counts; pointers are backend memory from be->alloc / the arena;
//   * a backend is used by one host thread at a time (ops share scratch memory); probes are
//     called from that thread, one call at a time, in (tile, head) order per batch.
#ifndef DS_BACKEND_H
#define DS_BACKEND_H

#include "common.h"

typedef struct ds_tensor {
    float* data;    // backend memory
    int ndim;
    int64_t ne[4];  // shape, outermost first: NHWC feature maps (N, H, W, C), sequences (B, L, C)
} ds_tensor;

static inline int64_t ds_tensor_numel(const ds_tensor* t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->ne[i];
    return n;
}

typedef enum ds_act { DS_ACT_SILU, DS_ACT_GELU, DS_ACT_GELU_TANH, DS_ACT_QUICK_GELU } ds_act;

// Receives attention probabilities in row tiles while the attention op runs, so capture never
// needs the whole (Lq × Lk) matrix. P holds rows row0..row0+nrows-1 of softmax(q·kᵀ·scale) for
// (batch b, head h), each row Lk long, in host memory. Return 1 if P was modified (the op then
// uses the modified probabilities for P·V), 0 otherwise.
typedef int (*ds_probs_fn)(void* user, int b, int h, int row0, int nrows, int Lk, float* P);

// In-op capture: the attention op itself adds weight · P into `sum` in the same pass that
// computes P (no second pass, no full probability tensor kept). Every backend implements it
// natively (the CUDA kernel too), unlike the host callback above.
//   sum layout: (nb, nh, Lq, Lk) with nb = batch_end − batch_begin and nh = per_head ? heads : 1;
//   for per_head == 0 the selected heads are summed. Only heads whose bit is set in head_mask
//   are accumulated (bit h for head h; heads ≥ 64 are always included). sum is backend memory.
typedef struct ds_attn_capture {
    float* sum;
    int per_head;
    uint64_t head_mask;
    float weight;
    int batch_begin, batch_end;
} ds_attn_capture;

typedef struct ds_attn_probe {
    ds_probs_fn on_probs;  // may be NULL
    void* user;
    int batch_begin;  // only batches b >= batch_begin are reported (e.g. the conditional half)
    const ds_attn_capture* capture;  // may be NULL; applied before on_probs sees the tile
} ds_attn_probe;

typedef struct ds_backend ds_backend;
struct ds_backend {
    const char* name;  // "cpu", "cuda"
    const char* memory_name;  // in messages: "memory" (CPU), "GPU memory"
    int act_bytes;            // bytes per element of alloc() memory (4 on the CPU, 2 for fp16/bf16)
    void* impl;
    void (*destroy)(ds_backend* be);  // frees the backend and everything it owns

    // ---- memory
    // Pointers are handles in units of elements: model code may do `p + k` (k elements further)
    // but never dereferences them. The CUDA backend stores activations as fp16/bf16 behind
    // these handles (it maps a handle to its own typed device address).
    float* (*alloc)(ds_backend* be, int64_t n);  // n elements of the activation type; NULL on failure
    // n elements that stay fp32 on every backend (capture sums, neuron statistics)
    float* (*alloc_f32)(ds_backend* be, int64_t n);
    void (*free)(ds_backend* be, float* p);
    void (*upload)(ds_backend* be, float* dst, const float* src_host, int64_t n);
    void (*download)(ds_backend* be, float* dst_host, const float* src, int64_t n);
    void (*copy)(ds_backend* be, float* dst, const float* src, int64_t n);
    // waits until every op issued so far has finished (timing; the CPU backend is synchronous)
    void (*sync)(ds_backend* be);
    // NULL while every op has done its work; else why one could not (out of GPU memory for its
    // scratch: the op skipped its work and later results are meaningless). Ops have no error
    // channel, so the host asks here at its check points (ds_backend_check). May be NULL.
    const char* (*failure)(ds_backend* be);

    // ---- dense
    // y(M, N) = x(M, K) · w(N, K)ᵀ + bias(N)      [nn.Linear; bias may be NULL]
    // if residual != NULL: y = residual + (x·wᵀ + bias)   (residual may alias y)
    void (*linear)(ds_backend* be, const float* x, const float* w, const float* bias,
                   const float* residual, float* y, int64_t M, int64_t N, int64_t K);
    // y = conv2d(x, w) + bias, NHWC. x (N, H, W, C), w (O, kh, kw, C), y (N, Ho, Wo, O);
    // Ho = (H + 2·pad − kh)/stride + 1. if residual != NULL it is added (same shape as y).
    void (*conv2d)(ds_backend* be, const ds_tensor* x, const float* w, const float* bias,
                   int O, int kh, int kw, int stride, int pad, const float* residual, ds_tensor* y);

    // ---- normalization
    // GroupNorm over (N, S, C) with S = H·W (or L): C split into `groups` contiguous groups,
    // statistics over S × C/groups per (n, group); y = (x−μ)/√(σ²+eps)·gamma + beta; silu after if asked.
    void (*group_norm)(ds_backend* be, const float* x, const float* gamma, const float* beta,
                       float* y, int64_t N, int64_t S, int64_t C, int groups, float eps, int silu);
    // LayerNorm over the last dim of (rows, cols).
    void (*layer_norm)(ds_backend* be, const float* x, const float* gamma, const float* beta,
                       float* y, int64_t rows, int64_t cols, float eps);

    // ---- attention
    // out = softmax(q·kᵀ·scale [+ causal mask]) · v per (batch, head).
    // q (B, Lq, heads·dh) with row stride q_stride floats (≥ heads·dh, lets q/k/v live in one
    // fused projection buffer); k, v (B, Lk, ...) with strides k_stride / v_stride;
    // out (B, Lq, heads·dh) dense. causal: key j > query i masked (CLIP text).
    // probe (optional) sees each probability tile before it multiplies v.
    void (*attention)(ds_backend* be, const float* q, int64_t q_stride, const float* k,
                      int64_t k_stride, const float* v, int64_t v_stride, float* out, int B,
                      int Lq, int Lk, int heads, int dh, float scale, int causal,
                      const ds_attn_probe* probe);

    // ---- elementwise
    void (*act)(ds_backend* be, ds_act kind, const float* x, float* y, int64_t n);
    // GEGLU: x (rows, 2F) = [a | g] → y (rows, F) = a ⊙ gelu(g)   (diffusers' GEGLU order)
    void (*geglu)(ds_backend* be, const float* x, float* y, int64_t rows, int64_t F);
    void (*add)(ds_backend* be, const float* a, const float* b, float* y, int64_t n);  // y = a + b
    void (*scale)(ds_backend* be, const float* x, float s, float* y, int64_t n);      // y = s·x
    // y(N, S, C) = x + v(N, C) broadcast over S (a ResNet's time-embedding add)
    void (*add_channel_bias)(ds_backend* be, const float* x, const float* v, float* y,
                             int64_t N, int64_t S, int64_t C);

    // ---- layout / resampling
    // nearest 2× upsample, NHWC: (N, H, W, C) → (N, 2H, 2W, C)
    void (*upsample_nearest2x)(ds_backend* be, const float* x, float* y, int64_t N, int64_t H,
                               int64_t W, int64_t C);
    // channel concat, NHWC: a (N, S, Ca), b (N, S, Cb) → y (N, S, Ca+Cb)
    void (*concat_channels)(ds_backend* be, const float* a, const float* b, float* y, int64_t N,
                            int64_t S, int64_t Ca, int64_t Cb);
    // NCHW ↔ NHWC for model inputs and outputs
    void (*nchw_to_nhwc)(ds_backend* be, const float* x, float* y, int64_t N, int64_t C,
                         int64_t H, int64_t W);
    void (*nhwc_to_nchw)(ds_backend* be, const float* x, float* y, int64_t N, int64_t H,
                         int64_t W, int64_t C);

    // ---- embeddings
    // diffusers' get_timestep_embedding: y(N, dim) from t(N) (host values),
    // flip_sin_to_cos, downscale_freq_shift, max_period 10000, scale 1.
    void (*timestep_embedding)(ds_backend* be, const float* t_host, int N, int dim,
                               int flip_sin_to_cos, float freq_shift, float* y);
    // y(n, D) = table[ids[i]] + pos[i % L]  (token + position embedding); ids host int32
    void (*embed_tokens)(ds_backend* be, const int32_t* ids_host, int n, int L,
                         const float* table, const float* pos, int D, float* y);

    // ---- statistics (localization)
    // per-column sums over rows of x (rows, F): sum[f] += Σ_r x̂[r,f], sumsq[f] += Σ_r x̂[r,f]²
    // with x̂ = x, or with l2_rows x̂[r] = x[r] / ‖x[r]‖₂ (rows of norm 0 add nothing: ConceptPrune's
    // statistic). Accumulates; sum and sumsq are alloc_f32 memory.
    void (*column_stats)(ds_backend* be, const float* x, int64_t rows, int64_t F, float* sum,
                         float* sumsq, int l2_rows);

    // ---- fp64 linear algebra (closed-form edits)
    // Solves A X = B for a symmetric positive definite A (n × n, column-major; the lower triangle
    // is used) and nrhs right-hand sides B (n × nrhs, column-major); X overwrites B. Host memory in
    // and out, fp64 throughout (Cholesky). Returns 0; k > 0 when A is not numerically positive
    // definite (its order-k minor), A and B then unspecified; < 0 when the device cannot take it
    // (out of its memory). Optional: NULL means the caller solves on the host (LAPACK).
    int (*solve_spd_f64)(ds_backend* be, int n, int nrhs, double* A, double* B);
    const char* solver_name;  // what solve_spd_f64 uses, for reports ("cuSOLVER potrf/potrs")
};

// DS_OK, or the backend's failure recorded in e (DS_ERR_OOM: the one failure ops record) — call
// after a batch of ops.
static inline int ds_backend_check(ds_backend* be, ds_err* e) {
    const char* why = be->failure ? be->failure(be) : NULL;
    return why ? ds_errf(e, DS_ERR_OOM, "%s", why) : DS_OK;
}

// The CPU reference backend (kernels/cpu). threads = 0: OpenMP's default.
ds_backend* ds_backend_cpu_create(int threads);
void ds_backend_cpu_free(ds_backend* be);

// The CUDA backend (kernels/cuda). Returns NULL with the reason in e (no GPU, driver too old,
// out of memory, or a diffscope built without CUDA: host/device.c holds a weak stand-in that
// the CUDA objects override when they are linked in).
typedef enum ds_act_dtype { DS_ACT_F16 = 0, DS_ACT_BF16 = 1, DS_ACT_F32 = 2 } ds_act_dtype;
typedef struct ds_cuda_options {
    int device;          // CUDA device ordinal
    ds_act_dtype dtype;  // activation and weight storage type; accumulation is always fp32
} ds_cuda_options;
ds_backend* ds_backend_cuda_create(ds_err* e, const ds_cuda_options* opt);

#endif
