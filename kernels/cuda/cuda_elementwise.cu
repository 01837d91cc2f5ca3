// cuda_elementwise.cu — activations, GEGLU, add, scale, per-channel bias, and column_stats (the
// per-neuron sums localization collects).
//
// Elementwise kernels are grid-stride loops over int64 indices (ds_cuda_grid sizes the grid to
// fill the GPU); arithmetic in fp32, one rounding to the storage type at the store. In-place
// calls (y == x) are allowed, so x / y are not __restrict__. The activation kind is a template
// argument: one switch per call, not per element.
//
// Activations use the accurate libdevice functions (expf, erfcf; nvcc without --use_fast_math):
//   silu x·σ(x) = x / (1 + e^−x), quick_gelu x / (1 + e^−1.702x),
//   gelu ½x·erfc(−x/√2) (no 1 + erf cancellation in the negative tail),
//   gelu_tanh ½x(1 + tanh u) = x / (1 + e^−2u), u = √(2/π)(x + 0.044715x³).
// Where e^… overflows to inf the quotient is −0, the value's limit.
#include "cuda_common.cuh"

namespace {

constexpr int THREADS = 256;

template <int KIND> __device__ __forceinline__ float act_f(float x);
template <> __device__ __forceinline__ float act_f<DS_ACT_SILU>(float x) { return x / (1.0f + expf(-x)); }
template <> __device__ __forceinline__ float act_f<DS_ACT_QUICK_GELU>(float x) {
    return x / (1.0f + expf(-1.702f * x));
}
template <> __device__ __forceinline__ float act_f<DS_ACT_GELU>(float x) {
    return 0.5f * x * erfcf(-0.70710678118654752f * x);
}
template <> __device__ __forceinline__ float act_f<DS_ACT_GELU_TANH>(float x) {
    const float u = 0.79788456080286536f * (x + 0.044715f * x * x * x);
    return x / (1.0f + expf(-2.0f * u));
}

template <typename T, int KIND>
__global__ void act_kernel(const T* x,  // (n)
                           T* y,        // (n); may be x
                           int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] = ds_from_f32<T>(act_f<KIND>(ds_to_f32(x[i])));
}

template <typename T>
__global__ void geglu_kernel(const T* __restrict__ x,  // (rows, 2F) = [a | g]
                             T* __restrict__ y,        // (rows, F)
                             int64_t rows, int64_t F) {
    const int64_t n = rows * F;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / F, j = i - r * F;
        const T* xr = x + r * 2 * F;
        y[i] = ds_from_f32<T>(ds_to_f32(xr[j]) * act_f<DS_ACT_GELU>(ds_to_f32(xr[F + j])));
    }
}

template <typename T>
__global__ void add_kernel(const T* a,  // (n)
                           const T* b,  // (n)
                           T* y,        // (n); may be a or b
                           int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] = ds_from_f32<T>(ds_to_f32(a[i]) + ds_to_f32(b[i]));
}

template <typename T>
__global__ void scale_kernel(const T* x,  // (n)
                             float s,
                             T* y,        // (n); may be x
                             int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] = ds_from_f32<T>(s * ds_to_f32(x[i]));
}

template <typename T>
__global__ void add_channel_bias_kernel(const T* x,                // (N, S, C)
                                        const T* __restrict__ v,   // (N, C)
                                        T* y,                      // (N, S, C); may be x
                                        int64_t S, int64_t C, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t c = i % C, img = i / (S * C);
        y[i] = ds_from_f32<T>(ds_to_f32(x[i]) + ds_to_f32(v[img * C + c]));
    }
}

// ---- column_stats ---------------------------------------------------------------------------------
// Deterministic (no atomics): block (32, CS_RY) covers 32 columns; blockIdx.y picks one of
// gridDim.y row slices. Each thread sums its rows (stride CS_RY) in fp32, the block reduces its
// CS_RY partial sums in shared memory in a fixed order, and writes one partial per (slice,
// column) into scratch. A second kernel adds the slices in order into sum / sumsq.
constexpr int CS_RY = 8;

template <typename T>
__global__ void column_partials_kernel(const T* __restrict__ x,     // (rows, F)
                                       float* __restrict__ part,    // (slices, 2, F)
                                       int64_t rows, int64_t F, int64_t rows_per_slice) {
    __shared__ float ss[CS_RY][32], sq[CS_RY][32];
    const int64_t f = (int64_t)blockIdx.x * 32 + threadIdx.x;
    const int64_t r0 = (int64_t)blockIdx.y * rows_per_slice;
    const int64_t r1 = r0 + rows_per_slice < rows ? r0 + rows_per_slice : rows;
    float s = 0.0f, q = 0.0f;
    if (f < F)
        for (int64_t r = r0 + threadIdx.y; r < r1; r += CS_RY) {
            const float v = ds_to_f32(x[r * F + f]);
            s += v;
            q += v * v;
        }
    ss[threadIdx.y][threadIdx.x] = s;
    sq[threadIdx.y][threadIdx.x] = q;
    __syncthreads();
    if (threadIdx.y == 0 && f < F) {
        for (int k = 1; k < CS_RY; k++) {
            s += ss[k][threadIdx.x];
            q += sq[k][threadIdx.x];
        }
        float* p = part + (int64_t)blockIdx.y * 2 * F;
        p[f] = s;
        p[F + f] = q;
    }
}

__global__ void column_finish_kernel(const float* __restrict__ part,  // (slices, 2, F)
                                     float* __restrict__ sum,         // (F), accumulated into
                                     float* __restrict__ sumsq,       // (F), accumulated into
                                     int64_t F, int slices) {
    for (int64_t f = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; f < F;
         f += (int64_t)gridDim.x * blockDim.x) {
        float s = 0.0f, q = 0.0f;
        for (int k = 0; k < slices; k++) {
            s += part[(int64_t)k * 2 * F + f];
            q += part[(int64_t)k * 2 * F + F + f];
        }
        sum[f] += s;
        sumsq[f] += q;
    }
}

template <typename T, int KIND> void launch_act(ds_backend* be, const T* x, T* y, int64_t n) {
    auto* k = act_kernel<T, KIND>;
    DS_LAUNCH(k, ds_cuda_grid(be, n, THREADS), THREADS, 0, ds_cuda_stream(be), x, y, n);
}

template <typename T> void act_t(ds_backend* be, ds_act kind, const float* x, float* y, int64_t n) {
    const T* xd = ds_dev<T>(be, x);
    T* yd = ds_dev<T>(be, y);
    switch (kind) {
    case DS_ACT_SILU: launch_act<T, DS_ACT_SILU>(be, xd, yd, n); break;
    case DS_ACT_GELU: launch_act<T, DS_ACT_GELU>(be, xd, yd, n); break;
    case DS_ACT_GELU_TANH: launch_act<T, DS_ACT_GELU_TANH>(be, xd, yd, n); break;
    case DS_ACT_QUICK_GELU: launch_act<T, DS_ACT_QUICK_GELU>(be, xd, yd, n); break;
    default: ds_cuda_fatal(__FILE__, __LINE__, "act", "unknown ds_act");
    }
}

}  // namespace

void ds_cuda_act(ds_backend* be, ds_act kind, const float* x, float* y, int64_t n) {
    if (n <= 0) return;
    DS_DISPATCH(ds_cuda_act_dtype(be), T, act_t<T>(be, kind, x, y, n));
}

void ds_cuda_geglu(ds_backend* be, const float* x, float* y, int64_t rows, int64_t F) {
    if (rows <= 0 || F <= 0) return;
    DS_DISPATCH(ds_cuda_act_dtype(be), T, {
        auto* k = geglu_kernel<T>;
        DS_LAUNCH(k, ds_cuda_grid(be, rows * F, THREADS), THREADS, 0, ds_cuda_stream(be),
                  ds_dev<T>(be, x), ds_dev<T>(be, y), rows, F);
    });
}

void ds_cuda_add(ds_backend* be, const float* a, const float* b, float* y, int64_t n) {
    if (n <= 0) return;
    DS_DISPATCH(ds_cuda_act_dtype(be), T, {
        auto* k = add_kernel<T>;
        DS_LAUNCH(k, ds_cuda_grid(be, n, THREADS), THREADS, 0, ds_cuda_stream(be), ds_dev<T>(be, a),
                  ds_dev<T>(be, b), ds_dev<T>(be, y), n);
    });
}

void ds_cuda_scale(ds_backend* be, const float* x, float s, float* y, int64_t n) {
    if (n <= 0) return;
    DS_DISPATCH(ds_cuda_act_dtype(be), T, {
        auto* k = scale_kernel<T>;
        DS_LAUNCH(k, ds_cuda_grid(be, n, THREADS), THREADS, 0, ds_cuda_stream(be), ds_dev<T>(be, x),
                  s, ds_dev<T>(be, y), n);
    });
}

void ds_cuda_add_channel_bias(ds_backend* be, const float* x, const float* v, float* y, int64_t N,
                              int64_t S, int64_t C) {
    const int64_t n = N * S * C;
    if (n <= 0) return;
    DS_DISPATCH(ds_cuda_act_dtype(be), T, {
        auto* k = add_channel_bias_kernel<T>;
        DS_LAUNCH(k, ds_cuda_grid(be, n, THREADS), THREADS, 0, ds_cuda_stream(be), ds_dev<T>(be, x),
                  ds_dev<T>(be, v), ds_dev<T>(be, y), S, C, n);
    });
}

void ds_cuda_column_stats(ds_backend* be, const float* x, int64_t rows, int64_t F, float* sum,
                          float* sumsq) {
    if (rows <= 0 || F <= 0) return;
    const unsigned gx = ds_div_up(F, 32);
    // row slices: enough blocks to fill the GPU (4 per SM), each slice ≥ 64 rows
    int64_t slices = ((int64_t)ds_cuda_sm_count(be) * 4 + gx - 1) / gx;
    const int64_t max_slices = (rows + 63) / 64;
    if (slices > max_slices) slices = max_slices;
    if (slices > 65535) slices = 65535;
    if (slices < 1) slices = 1;
    const int64_t per = (rows + slices - 1) / slices;
    slices = (rows + per - 1) / per;  // no empty slice
    float* part = (float*)ds_cuda_workspace(be, (size_t)slices * 2 * F * sizeof(float));
    cudaStream_t s = ds_cuda_stream(be);
    DS_DISPATCH(ds_cuda_act_dtype(be), T, {
        auto* k = column_partials_kernel<T>;
        DS_LAUNCH(k, dim3(gx, (unsigned)slices), dim3(32, CS_RY), 0, s, ds_dev<T>(be, x), part, rows,
                  F, per);
    });
    DS_LAUNCH(column_finish_kernel, ds_cuda_grid(be, F, THREADS), THREADS, 0, s, part,
              ds_dev<float>(be, sum), ds_dev<float>(be, sumsq), F, (int)slices);
}
