// cuda_linear.cu — nn.Linear: y(M, N) = x(M, K) · w(N, K)ᵀ + bias [+ residual], through
// cublasGemmEx (fp32 accumulation, tensor cores for fp16 / bf16), and the bias / residual
// prefill that conv2d shares.
//
// Row-major through column-major cuBLAS: a row-major (R × C) matrix is a column-major (C × R)
// one. So y(M, N) row-major = y_cm(N, M) = w_cm(K, N)ᵀ · x_cm(K, M), i.e.
// gemm(OP_T, OP_N, m = N, n = M, k = K, A = w (lda K), B = x (ldb K), C = y (ldc N)).
//
// Epilogue as on the CPU: y is first set to residual + bias (one small kernel), then the GEMM
// accumulates with beta = 1. The GEMM rounds its fp32 result to the storage type once; bias
// alone (already of the storage type) is copied exactly, a residual aliasing y costs nothing.
// With neither, beta = 0 and cuBLAS never reads y (a NaN-poisoned output cannot leak through).
#include <limits.h>

#include "cuda_common.cuh"

namespace {

template <typename T>
__global__ void prefill_kernel(T* __restrict__ y,                // (rows, cols)
                               const T* __restrict__ bias,       // (cols) or NULL
                               const T* residual,                // (rows, cols) or NULL; may be y
                               int64_t rows, int64_t cols) {
    const int64_t n = rows * cols;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float v = residual ? ds_to_f32(residual[i]) : 0.0f;
        if (bias) v += ds_to_f32(bias[i % cols]);
        y[i] = ds_from_f32<T>(v);
    }
}

template <typename T> cudaDataType_t cuda_type();
template <> cudaDataType_t cuda_type<__half>() { return CUDA_R_16F; }
template <> cudaDataType_t cuda_type<__nv_bfloat16>() { return CUDA_R_16BF; }
template <> cudaDataType_t cuda_type<float>() { return CUDA_R_32F; }

template <typename T>
void linear_t(ds_backend* be, const float* xh, const float* wh, const float* bh, const float* rh,
              float* yh, int64_t M, int64_t N, int64_t K) {
    const T* x = ds_dev<T>(be, xh);
    const T* w = ds_dev<T>(be, wh);
    T* y = ds_dev<T>(be, yh);
    int acc = ds_cuda_prefill(be, yh, bh, rh, M, N);
    if (K == 0) {  // empty product: y = prefill, or zeros
        if (!acc) DS_CUDA_CHECK(cudaMemsetAsync(y, 0, (size_t)(M * N) * sizeof(T), ds_cuda_stream(be)));
        return;
    }
    const float alpha = 1.0f, beta = acc ? 1.0f : 0.0f;
    // fp32 data: plain fp32 FMA math (the handle's math mode forbids TF32); fp16/bf16: tensor
    // cores with fp32 accumulation
    DS_CUBLAS_CHECK(cublasGemmEx(ds_cuda_cublas(be), CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)M, (int)K,
                                 &alpha, w, cuda_type<T>(), (int)K, x, cuda_type<T>(), (int)K, &beta,
                                 y, cuda_type<T>(), (int)N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace

int ds_cuda_prefill(ds_backend* be, float* yh, const float* bh, const float* rh, int64_t rows,
                    int64_t cols) {
    if (!bh && !rh) return 0;
    if (!bh && rh == yh) return 1;  // y already holds the residual
    if (rows <= 0 || cols <= 0) return 1;
    const int64_t n = rows * cols;
    unsigned grid = ds_div_up(n, 256), cap = (unsigned)ds_cuda_sm_count(be) * 16;
    if (grid > cap) grid = cap;
    DS_DISPATCH(ds_cuda_act_dtype(be), T, {
        auto* k = prefill_kernel<T>;
        DS_LAUNCH(k, grid, 256, 0, ds_cuda_stream(be), ds_dev<T>(be, yh), ds_dev<T>(be, bh),
                  ds_dev<T>(be, rh), rows, cols);
    });
    return 1;
}

void ds_cuda_linear(ds_backend* be, const float* x, const float* w, const float* bias,
                    const float* residual, float* y, int64_t M, int64_t N, int64_t K) {
    if (M <= 0 || N <= 0) return;
    if (M > INT_MAX || N > INT_MAX || K > INT_MAX || K < 0)
        ds_cuda_fatal(__FILE__, __LINE__, "linear", "GEMM dimensions must fit in int");
    DS_DISPATCH(ds_cuda_act_dtype(be), T, linear_t<T>(be, x, w, bias, residual, y, M, N, K));
}
