// cuda_norm.cu — GroupNorm (optionally followed by SiLU) and LayerNorm, fp32 statistics.
//
// Both are two-pass in fp32 (mean, then Σ(x − mean)², biased variance like PyTorch): the second
// pass subtracts the mean first, so a large mean does not cancel the variance away (a one-pass
// Σx² − (Σx)²/n in fp32 would). Block sums are tree reductions (warp shuffles, then one value
// per warp in shared memory), whose rounding grows like log n, not n.
//
// group_norm: one block per (n, group); the group is S × Cg values at stride C. Three sweeps
// over it (mean, variance, normalize) — the second and third mostly hit L2.
// layer_norm: one warp per row, ROWS_PER_BLOCK rows per block.
#include "cuda_common.cuh"

namespace {

constexpr int GN_THREADS = 256;
constexpr int LN_ROWS_PER_BLOCK = 4;  // warps per block

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, ≤ 1024); every thread gets the result.
// `red` is 32 floats of shared memory; the trailing barrier lets the caller reuse it at once.
__device__ float block_sum(float v, float* red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float t = lane < nw ? red[lane] : 0.0f;
    t = warp_sum(t);
    __syncthreads();
    return t;
}

__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }

template <typename T>
__global__ void group_norm_kernel(const T* x,                    // (N, S, C)
                                  const T* __restrict__ gamma,  // (C) or NULL (1)
                                  const T* __restrict__ beta,   // (C) or NULL (0)
                                  T* y,                         // (N, S, C); may be x
                                  int64_t S, int64_t C, int groups, float eps, int silu_after) {
    __shared__ float red[32];
    const int g = blockIdx.x % groups;
    const int64_t n = blockIdx.x / groups;
    const int64_t Cg = C / groups, cnt = S * Cg;
    const T* xg = x + n * S * C + g * Cg;  // element (s, c) of the group at s·C + c
    T* yg = y + n * S * C + g * Cg;

    float s = 0.0f;
    for (int64_t i = threadIdx.x; i < cnt; i += blockDim.x) s += ds_to_f32(xg[(i / Cg) * C + i % Cg]);
    const float mean = block_sum(s, red) / (float)cnt;

    float q = 0.0f;
    for (int64_t i = threadIdx.x; i < cnt; i += blockDim.x) {
        float d = ds_to_f32(xg[(i / Cg) * C + i % Cg]) - mean;
        q += d * d;
    }
    const float rstd = rsqrtf(block_sum(q, red) / (float)cnt + eps);

    for (int64_t i = threadIdx.x; i < cnt; i += blockDim.x) {
        const int64_t c = i % Cg, off = (i / Cg) * C + c;
        const int64_t ch = g * Cg + c;
        float v = (ds_to_f32(xg[off]) - mean) * (rstd * (gamma ? ds_to_f32(gamma[ch]) : 1.0f)) +
                  (beta ? ds_to_f32(beta[ch]) : 0.0f);
        if (silu_after) v = silu(v);
        yg[off] = ds_from_f32<T>(v);
    }
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
    if (N * groups > 0x7fffffff) ds_cuda_fatal(__FILE__, __LINE__, "group_norm", "too many groups");
    DS_DISPATCH(ds_cuda_act_dtype(be), T, {
        auto* k = group_norm_kernel<T>;
        DS_LAUNCH(k, (unsigned)(N * groups), GN_THREADS, 0, ds_cuda_stream(be), ds_dev<T>(be, x),
                  ds_dev<T>(be, gamma), ds_dev<T>(be, beta), ds_dev<T>(be, y), S, C, groups, eps,
                  silu);
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
