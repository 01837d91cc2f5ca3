// cuda_elementwise.cu — activations, GEGLU, add, scale, per-channel bias, and column_stats (the
// per-neuron sums localization collects).
//
// Elementwise kernels are grid-stride loops over int64 indices (ds_cuda_grid sizes the grid to
// fill the GPU) with 16-byte packed loads and stores where alignment allows (below); arithmetic
// in fp32, one rounding to the storage type at the store. In-place calls (y == x) are allowed,
// so x / y are not __restrict__. The activation kind is a template argument (a functor): one
// switch per call, not per element.
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

// ---- packed access -------------------------------------------------------------------------------
// 16-byte packs of the storage type (8 fp16 / bf16 or 4 fp32 values) per load and store: a warp
// moves 512 bytes per instruction instead of 64 (fp16 one at a time). Used when every pointer
// involved is 16-byte aligned (handles offset by p + k may not be) and the row length allows;
// the scalar loop does the rest (tails, unaligned calls).
template <typename T> struct alignas(16) Pack {
    T v[16 / sizeof(T)];
};
template <typename T> __host__ __device__ constexpr int pack_len() { return (int)(16 / sizeof(T)); }
inline bool aligned16(const void* p) { return ((uintptr_t)p & 15) == 0; }

struct AddF {
    __device__ float operator()(float a, float b) const { return a + b; }
};
struct ScaleF {
    float s;
    __device__ float operator()(float a, float) const { return s * a; }
};
template <int KIND> struct ActF {
    __device__ float operator()(float a, float) const { return act_f<KIND>(a); }
};

// y[i] = f(a[i], b[i]) (b may be NULL: f gets 0). In place (y == a or b) is fine: every element
// is read and written by the same thread.
template <typename T, typename F>
__global__ void map_kernel(const T* a,  // (n)
                           const T* b,  // (n) or NULL
                           T* y,        // (n)
                           int64_t n, F f, int packed) {
    const int64_t tid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    int64_t done = 0;
    if (packed) {
        constexpr int V = pack_len<T>();
        const int64_t np = n / V;
        for (int64_t i = tid; i < np; i += stride) {
            const Pack<T> pa = ((const Pack<T>*)a)[i];
            const Pack<T> pb = b ? ((const Pack<T>*)b)[i] : pa;
            Pack<T> py;
#pragma unroll
            for (int k = 0; k < V; k++)
                py.v[k] = ds_from_f32<T>(f(ds_to_f32(pa.v[k]), b ? ds_to_f32(pb.v[k]) : 0.0f));
            ((Pack<T>*)y)[i] = py;
        }
        done = np * V;
    }
    for (int64_t i = done + tid; i < n; i += stride)
        y[i] = ds_from_f32<T>(f(ds_to_f32(a[i]), b ? ds_to_f32(b[i]) : 0.0f));
}

template <typename T, typename F>
void launch_map(ds_backend* be, const float* ah, const float* bh, float* yh, int64_t n, F f) {
    const T* a = ds_dev<T>(be, ah);
    const T* b = ds_dev<T>(be, bh);
    T* y = ds_dev<T>(be, yh);
    const int packed = aligned16(a) && aligned16(y) && (!b || aligned16(b));
    const int64_t work = packed ? n / pack_len<T>() + pack_len<T>() : n;
    auto* k = map_kernel<T, F>;
    DS_LAUNCH(k, ds_cuda_grid(be, work, THREADS), THREADS, 0, ds_cuda_stream(be), a, b, y, n, f,
              packed);
}

template <typename T>
__global__ void geglu_kernel(const T* __restrict__ x,  // (rows, 2F) = [a | g]
                             T* __restrict__ y,        // (rows, F)
                             int64_t rows, int64_t F, int packed) {
    const int64_t tid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    if (packed) {  // F is a multiple of the pack length: packs never straddle a row
        constexpr int V = pack_len<T>();
        const int64_t fp = F / V, np = rows * fp;
        for (int64_t i = tid; i < np; i += stride) {
            const int64_t r = i / fp, j = i - r * fp;
            const Pack<T>* xr = (const Pack<T>*)(x + r * 2 * F);
            const Pack<T> pa = xr[j], pg = xr[fp + j];
            Pack<T> py;
#pragma unroll
            for (int k = 0; k < V; k++)
                py.v[k] = ds_from_f32<T>(ds_to_f32(pa.v[k]) * act_f<DS_ACT_GELU>(ds_to_f32(pg.v[k])));
            ((Pack<T>*)y)[i] = py;
        }
        return;
    }
    const int64_t n = rows * F;
    for (int64_t i = tid; i < n; i += stride) {
        const int64_t r = i / F, j = i - r * F;
        const T* xr = x + r * 2 * F;
        y[i] = ds_from_f32<T>(ds_to_f32(xr[j]) * act_f<DS_ACT_GELU>(ds_to_f32(xr[F + j])));
    }
}

template <typename T>
__global__ void add_channel_bias_kernel(const T* x,                // (N, S, C)
                                        const T* __restrict__ v,   // (N, C)
                                        T* y,                      // (N, S, C); may be x
                                        int64_t S, int64_t C, int64_t n, int packed) {
    const int64_t tid = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    if (packed) {  // C is a multiple of the pack length: a pack is one image's channel run
        constexpr int V = pack_len<T>();
        for (int64_t i = tid; i < n / V; i += stride) {
            const int64_t e = i * V, c = e % C, img = e / (S * C);
            const Pack<T> px = ((const Pack<T>*)x)[i];
            const Pack<T> pv = *(const Pack<T>*)(v + img * C + c);
            Pack<T> py;
#pragma unroll
            for (int k = 0; k < V; k++) py.v[k] = ds_from_f32<T>(ds_to_f32(px.v[k]) + ds_to_f32(pv.v[k]));
            ((Pack<T>*)y)[i] = py;
        }
        return;
    }
    for (int64_t i = tid; i < n; i += stride) {
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
                                       const float* __restrict__ inv,  // (rows) 1/‖row‖, or NULL
                                       float* __restrict__ part,    // (slices, 2, F)
                                       int64_t rows, int64_t F, int64_t rows_per_slice) {
    __shared__ float ss[CS_RY][32], sq[CS_RY][32];
    const int64_t f = (int64_t)blockIdx.x * 32 + threadIdx.x;
    const int64_t r0 = (int64_t)blockIdx.y * rows_per_slice;
    const int64_t r1 = r0 + rows_per_slice < rows ? r0 + rows_per_slice : rows;
    float s = 0.0f, q = 0.0f;
    if (f < F)
        for (int64_t r = r0 + threadIdx.y; r < r1; r += CS_RY) {
            const float v = ds_to_f32(x[r * F + f]) * (inv ? inv[r] : 1.0f);
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

// inv[r] = 1 / ‖x[r]‖₂ (0 for a zero row): one warp per row, fp32 sums of squares.
template <typename T>
__global__ void row_inv_norm_kernel(const T* __restrict__ x,  // (rows, F)
                                    float* __restrict__ inv,   // (rows)
                                    int64_t rows, int64_t F) {
    const int64_t r = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    float ss = 0.0f;
    if (r < rows)
        for (int64_t f = lane; f < F; f += 32) {
            const float v = ds_to_f32(x[r * F + f]);
            ss += v * v;
        }
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if (r < rows && lane == 0) inv[r] = ss > 0.0f ? 1.0f / sqrtf(ss) : 0.0f;
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

template <typename T> void act_t(ds_backend* be, ds_act kind, const float* x, float* y, int64_t n) {
    switch (kind) {
    case DS_ACT_SILU: launch_map<T>(be, x, nullptr, y, n, ActF<DS_ACT_SILU>{}); break;
    case DS_ACT_GELU: launch_map<T>(be, x, nullptr, y, n, ActF<DS_ACT_GELU>{}); break;
    case DS_ACT_GELU_TANH: launch_map<T>(be, x, nullptr, y, n, ActF<DS_ACT_GELU_TANH>{}); break;
    case DS_ACT_QUICK_GELU: launch_map<T>(be, x, nullptr, y, n, ActF<DS_ACT_QUICK_GELU>{}); break;
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
        const T* xd = ds_dev<T>(be, x);
        T* yd = ds_dev<T>(be, y);
        const int packed = F % pack_len<T>() == 0 && aligned16(xd) && aligned16(yd);
        auto* k = geglu_kernel<T>;
        DS_LAUNCH(k, ds_cuda_grid(be, packed ? rows * F / pack_len<T>() : rows * F, THREADS),
                  THREADS, 0, ds_cuda_stream(be), xd, yd, rows, F, packed);
    });
}

void ds_cuda_add(ds_backend* be, const float* a, const float* b, float* y, int64_t n) {
    if (n <= 0) return;
    DS_DISPATCH(ds_cuda_act_dtype(be), T, launch_map<T>(be, a, b, y, n, AddF{}));
}

void ds_cuda_scale(ds_backend* be, const float* x, float s, float* y, int64_t n) {
    if (n <= 0) return;
    DS_DISPATCH(ds_cuda_act_dtype(be), T, launch_map<T>(be, x, nullptr, y, n, ScaleF{s}));
}

void ds_cuda_add_channel_bias(ds_backend* be, const float* x, const float* v, float* y, int64_t N,
                              int64_t S, int64_t C) {
    const int64_t n = N * S * C;
    if (n <= 0) return;
    DS_DISPATCH(ds_cuda_act_dtype(be), T, {
        const T* xd = ds_dev<T>(be, x);
        const T* vd = ds_dev<T>(be, v);
        T* yd = ds_dev<T>(be, y);
        const int packed = C % pack_len<T>() == 0 && aligned16(xd) && aligned16(vd) && aligned16(yd);
        auto* k = add_channel_bias_kernel<T>;
        DS_LAUNCH(k, ds_cuda_grid(be, packed ? n / pack_len<T>() : n, THREADS), THREADS, 0,
                  ds_cuda_stream(be), xd, vd, yd, S, C, n, packed);
    });
}

void ds_cuda_column_stats(ds_backend* be, const float* x, int64_t rows, int64_t F, float* sum,
                          float* sumsq, int l2_rows) {
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
    // workspace: the partial sums, then (l2_rows) the rows' inverse norms
    float* part = (float*)ds_cuda_workspace(
        be, ((size_t)slices * 2 * F + (l2_rows ? (size_t)rows : 0)) * sizeof(float));
    if (!part) return;  // out of GPU memory: recorded, be->failure reports it
    float* inv = l2_rows ? part + (size_t)slices * 2 * F : nullptr;
    cudaStream_t s = ds_cuda_stream(be);
    DS_DISPATCH(ds_cuda_act_dtype(be), T, {
        if (inv) {
            auto* kn = row_inv_norm_kernel<T>;
            DS_LAUNCH(kn, ds_div_up(rows, THREADS / 32), THREADS, 0, s, ds_dev<T>(be, x), inv, rows, F);
        }
        auto* k = column_partials_kernel<T>;
        DS_LAUNCH(k, dim3(gx, (unsigned)slices), dim3(32, CS_RY), 0, s, ds_dev<T>(be, x), inv, part,
                  rows, F, per);
    });
    DS_LAUNCH(column_finish_kernel, ds_cuda_grid(be, F, THREADS), THREADS, 0, s, part,
              ds_dev<float>(be, sum), ds_dev<float>(be, sumsq), F, (int)slices);
}
