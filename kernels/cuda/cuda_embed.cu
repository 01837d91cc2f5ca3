// cuda_embed.cu — sinusoidal timestep embedding and token + position embedding. Both take small
// host arrays. Up to T_INLINE timesteps (a CFG batch has 2) travel as a kernel argument: no copy,
// nothing to wait for, and a CUDA graph can hold the launch (a pageable copy cannot be
// captured). Longer arrays, and the token ids, are copied into the backend's scratch on the stream
// (from pageable memory cudaMemcpyAsync returns once the data is staged, so the caller may reuse
// its array at once); then one kernel writes the output.
#include "cuda_common.cuh"

namespace {

constexpr int THREADS = 256;
constexpr int T_INLINE = 16;

struct TInline {
    float t[T_INLINE];
};

// diffusers' get_timestep_embedding in torch's fp32 steps (as kernels/cpu/cpu_embed.c):
// exponent_i = (fp32(−ln 10000)·i) / (half − shift), arg = t·expf(exponent_i),
// y = [sin, cos] (or [cos, sin] flipped), a trailing zero for odd dim.
template <typename T>
__global__ void timestep_kernel(const float* __restrict__ t,  // (N) timesteps, or NULL: tin
                                TInline tin,                  // (N ≤ T_INLINE) timesteps
                                T* __restrict__ y,            // (N, dim)
                                int N, int dim, int flip, float denom) {
    const int half = dim / 2;
    const int64_t n_out = (int64_t)N * dim;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n_out;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int n = (int)(i / dim), j = (int)(i % dim);
        float v = 0.0f;
        if (j < 2 * half) {
            const int k = j < half ? j : j - half;
            const float expo = (-9.210340371976184f * (float)k) / denom;
            const float arg = (t ? t[n] : tin.t[n]) * expf(expo);
            const bool first = j < half;  // first half: sin, or cos when flipped
            v = (first != (flip != 0)) ? sinf(arg) : cosf(arg);
        }
        y[i] = ds_from_f32<T>(v);
    }
}

template <typename T>
__global__ void embed_tokens_kernel(const int32_t* __restrict__ ids,  // (n)
                                    const T* __restrict__ table,      // (vocab, D)
                                    const T* __restrict__ pos,        // (L, D)
                                    T* __restrict__ y,                // (n, D)
                                    int n, int L, int D) {
    const int64_t n_out = (int64_t)n * D;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n_out;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int r = (int)(i / D), j = (int)(i % D);
        const float v = ds_to_f32(table[(int64_t)ids[r] * D + j]) + ds_to_f32(pos[(int64_t)(r % L) * D + j]);
        y[i] = ds_from_f32<T>(v);
    }
}

}  // namespace

void ds_cuda_timestep_embedding(ds_backend* be, const float* t_host, int N, int dim,
                                int flip_sin_to_cos, float freq_shift, float* y) {
    if (N <= 0 || dim <= 0) return;
    cudaStream_t s = ds_cuda_stream(be);
    TInline tin = {};
    float* t = nullptr;
    if (N <= T_INLINE) {
        for (int i = 0; i < N; i++) tin.t[i] = t_host[i];
    } else {
        t = (float*)ds_cuda_workspace(be, (size_t)N * sizeof(float));
        if (!t) return;  // out of GPU memory: recorded, be->failure reports it
        DS_CUDA_CHECK(cudaMemcpyAsync(t, t_host, (size_t)N * sizeof(float), cudaMemcpyHostToDevice, s));
    }
    const float denom = (float)((double)(dim / 2) - (double)freq_shift);  // Python float, then fp32
    DS_DISPATCH(ds_cuda_act_dtype(be), T, {
        auto* k = timestep_kernel<T>;
        DS_LAUNCH(k, ds_cuda_grid(be, (int64_t)N * dim, THREADS), THREADS, 0, s, (const float*)t,
                  tin, ds_dev<T>(be, y), N, dim, flip_sin_to_cos, denom);
    });
}

void ds_cuda_embed_tokens(ds_backend* be, const int32_t* ids_host, int n, int L, const float* table,
                          const float* pos, int D, float* y) {
    if (n <= 0 || D <= 0) return;
    if (L <= 0) ds_cuda_fatal(__FILE__, __LINE__, "embed_tokens", "L must be positive");
    for (int i = 0; i < n; i++)  // the table size is unknown here; negative ids are caught
        if (ids_host[i] < 0) ds_cuda_fatal(__FILE__, __LINE__, "embed_tokens", "negative token id");
    cudaStream_t s = ds_cuda_stream(be);
    int32_t* ids = (int32_t*)ds_cuda_workspace(be, (size_t)n * sizeof(int32_t));
    if (!ids) return;  // out of GPU memory: recorded, be->failure reports it
    DS_CUDA_CHECK(cudaMemcpyAsync(ids, ids_host, (size_t)n * sizeof(int32_t), cudaMemcpyHostToDevice, s));
    DS_DISPATCH(ds_cuda_act_dtype(be), T, {
        auto* k = embed_tokens_kernel<T>;
        DS_LAUNCH(k, ds_cuda_grid(be, (int64_t)n * D, THREADS), THREADS, 0, s, (const int32_t*)ids,
                  ds_dev<T>(be, table), ds_dev<T>(be, pos), ds_dev<T>(be, y), n, L, D);
    });
}
