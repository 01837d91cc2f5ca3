// cuda_linear.cu — nn.Linear: y(M, N) = x(M, K) · w(N, K)ᵀ + bias [+ residual], through
// cublasGemmEx (fp32 accumulation, tensor cores for fp16 / bf16), and the bias / residual
// prefill that conv2d shares.
//
// Row-major through column-major cuBLAS: a row-major (R × C) matrix is a column-major (C × R)
// one. So y(M, N) row-major = y_cm(N, M) = w_cm(K, N)ᵀ · x_cm(K, M), i.e.
// gemm(OP_T, OP_N, m = N, n = M, k = K, A = w (lda K), B = x (ldb K), C = y (ldc N)).
//
// Epilogue: with bias OR residual, y is first set to it (one small kernel; nothing at all for a
// residual aliasing y) and the GEMM accumulates onto it with beta = 1 — the copied values are
// exact, so the result is rounded to the storage type once. With bias AND residual in fp16 /
// bf16, residual + bias would itself be rounded first (and a result that cancels against it
// would carry that rounding), so the product goes to fp32 scratch and one kernel writes
// y = product + bias + residual, rounded once. With neither, beta = 0 and cuBLAS never reads y
// (a NaN-poisoned output cannot leak through).
#include <limits.h>

#include "cuda_common.cuh"

namespace {

// Blocks over rows (grid-stride), threads over columns: no 64-bit division per element.
template <typename T>
__global__ void prefill_kernel(T* y,                          // (rows, cols)
                               const T* __restrict__ bias,    // (cols) or NULL
                               const T* residual,             // (rows, cols) or NULL; may be y
                               int64_t rows, int64_t cols) {
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x)
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
            float v = residual ? ds_to_f32(residual[r * cols + c]) : 0.0f;
            if (bias) v += ds_to_f32(bias[c]);
            y[r * cols + c] = ds_from_f32<T>(v);
        }
}

// y = acc + bias + residual with one rounding (fp16 / bf16 with both bias and residual: a
// prefilled residual + bias would be rounded once more before the GEMM adds to it).
template <typename T>
__global__ void epilogue_kernel(const float* __restrict__ acc,  // (rows, cols) x·wᵀ in fp32
                                const T* __restrict__ bias,     // (cols)
                                const T* residual,              // (rows, cols); may be y
                                T* y,                           // (rows, cols)
                                int64_t rows, int64_t cols) {
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x)
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
            const int64_t i = r * cols + c;
            y[i] = ds_from_f32<T>(acc[i] + (ds_to_f32(residual[i]) + ds_to_f32(bias[c])));
        }
}

unsigned row_blocks(ds_backend* be, int64_t rows) {
    const int64_t cap = (int64_t)ds_cuda_sm_count(be) * 16;
    return (unsigned)(rows < cap ? rows : cap);
}
unsigned col_threads(int64_t cols) { return cols >= 256 ? 256 : cols > 64 ? 128 : 64; }

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
    const float alpha = 1.0f;
    if (bh && rh && ds_dtype_tag<T>::value != DS_ACT_F32 && K > 0) {
        // fp32 product into scratch, then one rounding of product + bias + residual
        float* acc = (float*)ds_cuda_workspace(be, sizeof(float) * (size_t)(M * N));
        if (!acc) return;  // out of GPU memory: recorded, be->failure reports it
        const float beta = 0.0f;
        DS_CUBLAS_CHECK(cublasGemmEx(ds_cuda_cublas(be), CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)M,
                                     (int)K, &alpha, w, cuda_type<T>(), (int)K, x, cuda_type<T>(),
                                     (int)K, &beta, acc, CUDA_R_32F, (int)N, CUBLAS_COMPUTE_32F,
                                     CUBLAS_GEMM_DEFAULT));
        auto* k = epilogue_kernel<T>;
        DS_LAUNCH(k, row_blocks(be, M), col_threads(N), 0, ds_cuda_stream(be), (const float*)acc,
                  ds_dev<T>(be, bh), ds_dev<T>(be, rh), y, M, N);
        return;
    }
    const int acc = ds_cuda_prefill(be, yh, bh, rh, M, N);
    if (K == 0) {  // empty product: y = prefill, or zeros
        if (!acc) DS_CUDA_CHECK(cudaMemsetAsync(y, 0, (size_t)(M * N) * sizeof(T), ds_cuda_stream(be)));
        return;
    }
    const float beta = acc ? 1.0f : 0.0f;
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
    DS_DISPATCH(ds_cuda_act_dtype(be), T, {
        auto* k = prefill_kernel<T>;
        DS_LAUNCH(k, row_blocks(be, rows), col_threads(cols), 0, ds_cuda_stream(be),
                  ds_dev<T>(be, yh), ds_dev<T>(be, bh), ds_dev<T>(be, rh), rows, cols);
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
