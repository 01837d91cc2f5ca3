// cuda_norm.cu — GroupNorm (optionally followed by SiLU) and LayerNorm, fp32 statistics.
//
// Statistics are two-pass (mean, then Σ(x − mean)², biased variance like PyTorch): the second
// pass subtracts the mean first, so a large mean does not cancel the variance away (a one-pass
// Σx² − (Σx)²/n in fp32 would).
//
// group_norm: per-channel two-pass partials over row slices, combined per group in double
//             (Chan et al.) — see below.
// layer_norm: one warp per row, LN_ROWS_PER_BLOCK rows per block; warp-shuffle sums in fp32.
#include "cuda_common.cuh"

namespace {

constexpr int LN_ROWS_PER_BLOCK = 4;  // warps per block

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }

// ---- group norm, in three launches so that the whole GPU works on it (one block per (n, group)
// would leave most SMs idle: SD has N·groups = 64 groups of 40 k values at 64×64):
//   1. gn_channel_partials, grid (P row slices, N): per (n, slice, channel) the slice's mean and
//      M2 = Σ(x − mean)², two passes over the slice (the second from L1/L2). Threads map to
//      channels, so a warp reads 32 consecutive channels of a row: coalesced.
//   2. gn_group_stats, one thread per (n, group): Chan's exact combination of those
//      (count, mean, M2) triples over slices and the group's channels, in double → mean, rstd.
//   3. gn_apply: y = (x − mean)·(rstd·gamma) + beta [then SiLU], blocks over rows, threads over
//      channels.
template <typename T>
__global__ void gn_channel_partials(const T* __restrict__ x,    // (N, S, C)
                                    float* __restrict__ part,   // (N, P, C, 2): mean, M2
                                    int64_t S, int64_t C, int64_t rows_per_slice) {
    const int64_t n = blockIdx.y, p = blockIdx.x, P = gridDim.x;
    const int64_t s0 = p * rows_per_slice;
    const int64_t s1 = s0 + rows_per_slice < S ? s0 + rows_per_slice : S;
    const T* xs = x + (n * S + s0) * C;
    const float inv = 1.0f / (float)(s1 - s0);  // slices are never empty (see the launcher)
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
        float sum = 0.0f;
        for (int64_t s = 0; s < s1 - s0; s++) sum += ds_to_f32(xs[s * C + c]);
        const float mean = sum * inv;
        float m2 = 0.0f;
        for (int64_t s = 0; s < s1 - s0; s++) {
            const float d = ds_to_f32(xs[s * C + c]) - mean;
            m2 += d * d;
        }
        float* o = part + ((n * P + p) * C + c) * 2;
        o[0] = mean;
        o[1] = m2;
    }
}

__global__ void gn_group_stats(const float* __restrict__ part,  // (N, P, C, 2)
                               float* __restrict__ stats,       // (N, groups, 2): mean, rstd
                               int N, int P, int64_t S, int64_t C, int groups,
                               int64_t rows_per_slice, float eps) {
    const int64_t Cg = C / groups;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (int64_t)N * groups;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t n = i / groups, g = i % groups;
        double cnt = 0.0, mean = 0.0, m2 = 0.0;
        for (int p = 0; p < P; p++) {
            const int64_t s0 = p * rows_per_slice;
            const double cb = (double)((s0 + rows_per_slice < S ? s0 + rows_per_slice : S) - s0);
            const float* q = part + (((int64_t)n * P + p) * C + g * Cg) * 2;
            for (int64_t c = 0; c < Cg; c++) {
                const double mb = q[2 * c], m2b = q[2 * c + 1];
                const double tot = cnt + cb, d = mb - mean;
                mean += d * (cb / tot);
                m2 += m2b + d * d * (cnt * cb / tot);
                cnt = tot;
            }
        }
        stats[2 * i] = (float)mean;
        stats[2 * i + 1] = (float)(1.0 / sqrt(m2 / cnt + (double)eps));
    }
}

template <typename T>
__global__ void gn_apply(const T* x,                     // (N, S, C)
                         const float* __restrict__ stats, // (N, groups, 2)
                         const T* __restrict__ gamma,     // (C) or NULL (1)
                         const T* __restrict__ beta,      // (C) or NULL (0)
                         T* y,                            // (N, S, C); may be x
                         int64_t rows, int64_t S, int64_t C, int groups, int silu_after) {
    const int64_t Cg = C / groups;
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* st = stats + (r / S) * groups * 2;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
            const int64_t g = c / Cg;
            const float a = st[2 * g + 1] * (gamma ? ds_to_f32(gamma[c]) : 1.0f);
            float v = (ds_to_f32(x[r * C + c]) - st[2 * g]) * a + (beta ? ds_to_f32(beta[c]) : 0.0f);
            if (silu_after) v = silu(v);
            y[r * C + c] = ds_from_f32<T>(v);
        }
    }
}

// threads for a block whose threads cover C channels: ≤ 1024, a multiple of 32, balanced
static unsigned channel_threads(int64_t C) {
    const int64_t per = (C + 1023) / 1024;
    const int64_t t = ((C + per - 1) / per + 31) / 32 * 32;
    return (unsigned)(t < 32 ? 32 : t);
}

template <typename T>
__global__ void layer_norm_kernel(const T* x,                    // (rows, cols)
                                  const T* __restrict__ gamma,  // (cols) or NULL
                                  const T* __restrict__ beta,   // (cols) or NULL
                                  T* y,                         // (rows, cols); may be x
                                  int64_t rows, int64_t cols, float eps) {
    const int lane = threadIdx.x & 31;
    const int64_t r = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (r >= rows) return;  // a whole warp leaves together: no collective is left half-reached
    const T* xr = x + r * cols;
    T* yr = y + r * cols;
    float s = 0.0f;
    for (int64_t j = lane; j < cols; j += 32) s += ds_to_f32(xr[j]);
    const float mean = warp_sum(s) / (float)cols;
    float q = 0.0f;
    for (int64_t j = lane; j < cols; j += 32) {
        float d = ds_to_f32(xr[j]) - mean;
        q += d * d;
    }
    const float rstd = rsqrtf(warp_sum(q) / (float)cols + eps);
    for (int64_t j = lane; j < cols; j += 32) {
        float v = (ds_to_f32(xr[j]) - mean) * rstd;
        if (gamma) v *= ds_to_f32(gamma[j]);
        if (beta) v += ds_to_f32(beta[j]);
        yr[j] = ds_from_f32<T>(v);
    }
}

}  // namespace

void ds_cuda_group_norm(ds_backend* be, const float* x, const float* gamma, const float* beta,
                        float* y, int64_t N, int64_t S, int64_t C, int groups, float eps, int silu) {
    if (groups <= 0 || C % groups != 0)
        ds_cuda_fatal(__FILE__, __LINE__, "group_norm", "C must be a multiple of groups");
    if (N <= 0 || S <= 0 || C <= 0) return;
    if (N > 65535) ds_cuda_fatal(__FILE__, __LINE__, "group_norm", "N > 65535");
    // row slices: about 4 blocks per SM in all, each slice ≥ 16 rows, none empty
    const int64_t want = ((int64_t)ds_cuda_sm_count(be) * 4 + N - 1) / N;
    int64_t P = want < (S + 15) / 16 ? want : (S + 15) / 16;
    if (P < 1) P = 1;
    const int64_t rps = (S + P - 1) / P;
    P = (S + rps - 1) / rps;
    float* part = (float*)ds_cuda_workspace(be, sizeof(float) * (size_t)(N * P * C * 2 + N * groups * 2));
    if (!part) return;  // out of GPU memory: recorded, be->failure reports it
    float* stats = part + N * P * C * 2;
    cudaStream_t st = ds_cuda_stream(be);
    const unsigned ct = channel_threads(C);
    DS_DISPATCH(ds_cuda_act_dtype(be), T, {
        auto* k1 = gn_channel_partials<T>;
        DS_LAUNCH(k1, dim3((unsigned)P, (unsigned)N), ct, 0, st, ds_dev<T>(be, x), part, S, C, rps);
        DS_LAUNCH(gn_group_stats, ds_cuda_grid(be, N * groups, 64), 64, 0, st, (const float*)part,
                  stats, (int)N, (int)P, S, C, groups, rps, eps);
        auto* k3 = gn_apply<T>;
        const int64_t rows = N * S;
        const int64_t cap = (int64_t)ds_cuda_sm_count(be) * 16;
        DS_LAUNCH(k3, (unsigned)(rows < cap ? rows : cap), ct, 0, st, ds_dev<T>(be, x),
                  (const float*)stats, ds_dev<T>(be, gamma), ds_dev<T>(be, beta), ds_dev<T>(be, y),
                  rows, S, C, groups, silu);
    });
}

void ds_cuda_layer_norm(ds_backend* be, const float* x, const float* gamma, const float* beta,
                        float* y, int64_t rows, int64_t cols, float eps) {
    if (rows <= 0 || cols <= 0) return;
    DS_DISPATCH(ds_cuda_act_dtype(be), T, {
        auto* k = layer_norm_kernel<T>;
        DS_LAUNCH(k, ds_div_up(rows, LN_ROWS_PER_BLOCK), 32 * LN_ROWS_PER_BLOCK, 0,
                  ds_cuda_stream(be), ds_dev<T>(be, x), ds_dev<T>(be, gamma), ds_dev<T>(be, beta),
                  ds_dev<T>(be, y), rows, cols, eps);
    });
}
