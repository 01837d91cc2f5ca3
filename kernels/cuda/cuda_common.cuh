// cuda_common.cuh — included by every kernels/cuda file: error checks that carry file and line,
// the one launch macro, dynamic shared memory, element conversion, and the backend's internals
// (handle → device address, stream, library handles, workspace).
//
// The same sources build two ways:
//   * nvcc (sm_80, sm_90) into the real backend;
//   * g++ -std=c++17 with tests/emu/emu_cuda.h force-included (it defines DS_EMULATOR) into the
//     test-only emulated backend, which runs every kernel on the CPU (docs/cuda_emulator.md).
// Kernel rules (enforced by the emulator): launch only through DS_LAUNCH; dynamic shared memory
// only through DS_DYN_SHARED; no inline PTX; only *_sync warp collectives, reached by every lane
// of the mask; every live thread reaches each __syncthreads; no waiting on other blocks.
#ifndef DS_CUDA_COMMON_CUH
#define DS_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <stdint.h>

extern "C" {
#include "backend.h"
}

// ---- errors ------------------------------------------------------------------------------------
// Programmer errors and device failures inside ops (ops have no error channel): print file:line,
// the call and the library's message, then abort.
[[noreturn]] void ds_cuda_fatal(const char* file, int line, const char* call, const char* msg);

#define DS_CUDA_CHECK(call)                                                             \
    do {                                                                                \
        cudaError_t ds_e_ = (call);                                                     \
        if (ds_e_ != cudaSuccess) ds_cuda_fatal(__FILE__, __LINE__, #call, cudaGetErrorString(ds_e_)); \
    } while (0)
#define DS_CUBLAS_CHECK(call)                                                           \
    do {                                                                                \
        cublasStatus_t ds_s_ = (call);                                                  \
        if (ds_s_ != CUBLAS_STATUS_SUCCESS)                                             \
            ds_cuda_fatal(__FILE__, __LINE__, #call, cublasGetStatusName(ds_s_));     \
    } while (0)
#define DS_CUDNN_CHECK(call)                                                            \
    do {                                                                                \
        cudnnStatus_t ds_s_ = (call);                                                   \
        if (ds_s_ != CUDNN_STATUS_SUCCESS)                                              \
            ds_cuda_fatal(__FILE__, __LINE__, #call, cudnnGetErrorString(ds_s_));       \
    } while (0)

// ---- launching ---------------------------------------------------------------------------------
// DS_LAUNCH(kernel, grid, block, dynamic_smem_bytes, stream, args...) — every launch, checked.
// A kernel with several template arguments: take its address first
// (`auto* k = my_kernel<T, 64>; DS_LAUNCH(k, ...)`) so the commas do not split the macro.
#ifdef DS_EMULATOR
#define DS_LAUNCH(kernel, grid, block, smem, stream, ...) \
    emu_launch(#kernel, kernel, dim3(grid), dim3(block), (size_t)(smem), (stream), ##__VA_ARGS__)
#define DS_DYN_SHARED(T, name) T* name = (T*)emu_dynamic_shared()
#else
#define DS_LAUNCH(kernel, grid, block, smem, stream, ...)                   \
    do {                                                                    \
        kernel<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__);         \
        DS_CUDA_CHECK(cudaGetLastError());                                  \
    } while (0)
#define DS_DYN_SHARED(T, name)                                  \
    extern __shared__ __align__(16) unsigned char ds_dyn_smem_[]; \
    T* name = (T*)ds_dyn_smem_
#endif

static inline unsigned ds_div_up(int64_t a, int64_t b) { return (unsigned)((a + b - 1) / b); }
// Blocks for a grid-stride loop over n elements with `threads` per block: enough to fill the
// GPU (16 blocks per SM), no more — the kernel loops over the rest.
int ds_cuda_sm_count(ds_backend* be);
static inline unsigned ds_cuda_grid(ds_backend* be, int64_t n, int threads) {
    int64_t g = (n + threads - 1) / threads, cap = (int64_t)ds_cuda_sm_count(be) * 16;
    if (g > cap) g = cap;
    return (unsigned)(g > 0 ? g : 1);
}

// ---- element types -----------------------------------------------------------------------------
// Activations and weights are stored as T ∈ {__half, __nv_bfloat16, float}; arithmetic is fp32.
__device__ __forceinline__ float ds_to_f32(float x) { return x; }
__device__ __forceinline__ float ds_to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float ds_to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T ds_from_f32(float x);
template <> __device__ __forceinline__ float ds_from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ __half ds_from_f32<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 ds_from_f32<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

// DS_DISPATCH(dtype, T, body): runs body with T bound to the storage type of `dtype`.
#define DS_DISPATCH(dtype, T, ...)                                              \
    do {                                                                        \
        switch (dtype) {                                                        \
        case DS_ACT_F16: { typedef __half T; __VA_ARGS__; } break;              \
        case DS_ACT_BF16: { typedef __nv_bfloat16 T; __VA_ARGS__; } break;      \
        case DS_ACT_F32: { typedef float T; __VA_ARGS__; } break;               \
        default: ds_cuda_fatal(__FILE__, __LINE__, "DS_DISPATCH", "unknown dtype"); \
        }                                                                       \
    } while (0)

// ---- backend internals (cuda_backend.cu) -------------------------------------------------------
// Handles (the float* the model code holds, see backend.h) count elements; each allocation maps
// its handle range onto device memory of its own element type (the activation type, or fp32 for
// alloc_f32 memory).
// ds_cuda_dev(be, NULL) is NULL (optional operands); any other unknown handle aborts.
void* ds_cuda_dev(ds_backend* be, const float* handle);
ds_act_dtype ds_cuda_dtype_of(ds_backend* be, const float* handle);
ds_act_dtype ds_cuda_act_dtype(ds_backend* be);                // the backend's activation type
template <typename T> struct ds_dtype_tag;
template <> struct ds_dtype_tag<__half> { static constexpr ds_act_dtype value = DS_ACT_F16; };
template <> struct ds_dtype_tag<__nv_bfloat16> { static constexpr ds_act_dtype value = DS_ACT_BF16; };
template <> struct ds_dtype_tag<float> { static constexpr ds_act_dtype value = DS_ACT_F32; };
// The typed device address of a handle; aborts when the allocation's element type is not T
// (e.g. an alloc_f32 buffer passed where activations are expected). NULL stays NULL.
template <typename T> static inline T* ds_dev(ds_backend* be, const float* h) {
    if (!h) return (T*)0;
    if (ds_cuda_dtype_of(be, h) != ds_dtype_tag<T>::value)
        ds_cuda_fatal(__FILE__, __LINE__, "ds_dev", "handle's element type does not match the op's");
    return (T*)ds_cuda_dev(be, h);
}
cudaStream_t ds_cuda_stream(ds_backend* be);
cublasHandle_t ds_cuda_cublas(ds_backend* be);
cudnnHandle_t ds_cuda_cudnn(ds_backend* be);
// Device scratch of at least `bytes` (contents undefined), reused between ops on the one stream.
// Grows only when a larger request comes (the first UNet step), never inside a steady loop.
void* ds_cuda_workspace(ds_backend* be, size_t bytes);
// Device properties the kernels tune for (shared memory per block, SM count).
int ds_cuda_sm_count(ds_backend* be);
size_t ds_cuda_max_smem(ds_backend* be);

// The conv2d algorithm / descriptor cache (cuda_conv2d.cu), freed by the backend's destroy.
void ds_cuda_conv_cache_free(ds_backend* be);
void** ds_cuda_conv_cache_slot(ds_backend* be);  // where cuda_conv2d.cu keeps its cache
// The cuSOLVER handle (cuda_solve.cu), made on first use and freed by the backend's destroy.
void** ds_cuda_solver_slot(ds_backend* be);
void ds_cuda_solver_free(ds_backend* be);
int ds_cuda_solve_spd_f64(ds_backend* be, int n, int nrhs, double* A, double* B);
// Test hook: 1 = never use the fused conv + bias + residual call (tests cover both paths).
void ds_cuda_conv_force_unfused(int on);

// ---- ops (backend.h signatures), one family per file ---------------------------------------------
void ds_cuda_linear(ds_backend* be, const float* x, const float* w, const float* bias,
                    const float* residual, float* y, int64_t M, int64_t N, int64_t K);
void ds_cuda_conv2d(ds_backend* be, const ds_tensor* x, const float* w, const float* bias, int O,
                    int kh, int kw, int stride, int pad, const float* residual, ds_tensor* y);
void ds_cuda_group_norm(ds_backend* be, const float* x, const float* gamma, const float* beta,
                        float* y, int64_t N, int64_t S, int64_t C, int groups, float eps, int silu);
void ds_cuda_layer_norm(ds_backend* be, const float* x, const float* gamma, const float* beta,
                        float* y, int64_t rows, int64_t cols, float eps);
void ds_cuda_act(ds_backend* be, ds_act kind, const float* x, float* y, int64_t n);
void ds_cuda_geglu(ds_backend* be, const float* x, float* y, int64_t rows, int64_t F);
void ds_cuda_add(ds_backend* be, const float* a, const float* b, float* y, int64_t n);
void ds_cuda_scale(ds_backend* be, const float* x, float s, float* y, int64_t n);
void ds_cuda_add_channel_bias(ds_backend* be, const float* x, const float* v, float* y, int64_t N,
                              int64_t S, int64_t C);
void ds_cuda_column_stats(ds_backend* be, const float* x, int64_t rows, int64_t F, float* sum,
                          float* sumsq, int l2_rows);
void ds_cuda_upsample_nearest2x(ds_backend* be, const float* x, float* y, int64_t N, int64_t H,
                                int64_t W, int64_t C);
void ds_cuda_concat_channels(ds_backend* be, const float* a, const float* b, float* y, int64_t N,
                             int64_t S, int64_t Ca, int64_t Cb);
void ds_cuda_nchw_to_nhwc(ds_backend* be, const float* x, float* y, int64_t N, int64_t C,
                          int64_t H, int64_t W);
void ds_cuda_nhwc_to_nchw(ds_backend* be, const float* x, float* y, int64_t N, int64_t H,
                          int64_t W, int64_t C);
void ds_cuda_timestep_embedding(ds_backend* be, const float* t_host, int N, int dim,
                                int flip_sin_to_cos, float freq_shift, float* y);
void ds_cuda_embed_tokens(ds_backend* be, const int32_t* ids_host, int n, int L,
                          const float* table, const float* pos, int D, float* y);
// Elementwise helper shared by linear and conv2d: y = residual + bias broadcast over rows
// (either may be NULL; residual may alias y), all of the activation type. Returns 1 when y now
// holds a value the GEMM / convolution should accumulate onto (beta = 1), 0 when neither was
// given and y is untouched.
int ds_cuda_prefill(ds_backend* be, float* y, const float* bias, const float* residual,
                    int64_t rows, int64_t cols);
// The attention op (kernels/cuda/cuda_attention.cu): exactly backend.h's attention signature.
void ds_cuda_attention(ds_backend* be, const float* q, int64_t q_stride, const float* k,
                       int64_t k_stride, const float* v, int64_t v_stride, float* out, int B,
                       int Lq, int Lk, int heads, int dh, float scale, int causal,
                       const ds_attn_probe* probe);

#endif
