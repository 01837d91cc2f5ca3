// bench_peak.cu — what this GPU can do, measured: device-to-device copy bandwidth and the cuBLAS
// GEMM rate, so bench_unet's per-kernel GB/s and TFLOP/s can be shown beside them (bench/gpu.sh).
//
//   bench_peak [--gpu N (0)] [--copy-mb MB (1024)] [--gemm N (8192)] [--iters N (20)]
//
//   copy   cudaMemcpyAsync device → device of MB megabytes, 3 warm-ups, then --iters timed copies
//          (cudaEvents); "copy_gb_s" counts bytes read + bytes written (2 × size per copy), the same
//          convention as bench_unet's per-op GB/s (every operand read once, every output written
//          once); "copy_gb_s_one_way" is size / time.
//   gemm   cublasGemmEx N×N×N (2·N³ flops), C = A·B, random operands (not zeros: an all-zero GEMM
//          draws less power and runs faster than real data), 3 warm-ups, median of --iters
//          (cudaEvents around each call): fp16 and bf16 inputs/outputs with fp32 accumulation on
//          the tensor cores (CUBLAS_COMPUTE_32F, what the CUDA backend uses), tf32
//          (CUBLAS_COMPUTE_32F_FAST_TF32) and plain fp32 (CUBLAS_COMPUTE_32F, fp32 operands).
//
// Built only where the CUDA backend is built natively (bench/CMakeLists.txt: `if(TARGET
// diffscope_cuda)`), linked with CUDA::cudart and CUDA::cublas. Without a usable GPU it says so
// and exits 1. The last stdout line is one JSON object; progress goes to stderr.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

#define CK(call)                                                                               \
    do {                                                                                       \
        cudaError_t e_ = (call);                                                               \
        if (e_ != cudaSuccess) {                                                               \
            fprintf(stderr, "bench_peak: %s:%d: %s: %s\n", __FILE__, __LINE__, #call,          \
                    cudaGetErrorString(e_));                                                   \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)
#define CKB(call)                                                                              \
    do {                                                                                       \
        cublasStatus_t s_ = (call);                                                            \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                     \
            fprintf(stderr, "bench_peak: %s:%d: %s: cuBLAS status %d\n", __FILE__, __LINE__,   \
                    #call, (int)s_);                                                           \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

// uniform in [-1, 1) from a hash of the index: every element non-zero-ish, no host transfer
__device__ __forceinline__ float rnd(uint64_t i, uint32_t seed) {
    uint32_t x = (uint32_t)(i * 2654435761u) ^ seed;
    x ^= x >> 16, x *= 0x7feb352du, x ^= x >> 15, x *= 0x846ca68bu, x ^= x >> 16;
    return (float)(x >> 8) * (2.0f / 16777216.0f) - 1.0f;
}
template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) {
    return __float2bfloat16_rn(v);
}
template <typename T> __global__ void fill(T* p, uint64_t n, uint32_t seed) {
    for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n;
         i += (uint64_t)gridDim.x * blockDim.x)
        p[i] = from_f<T>(rnd(i, seed));
}

static double median(std::vector<float> v) {
    std::sort(v.begin(), v.end());
    size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct gemm_kind {
    const char* name;
    cudaDataType_t ab, c;
    cublasComputeType_t compute;
    size_t esz;
};

template <typename T> static void fill_dev(void* p, uint64_t n, uint32_t seed) {
    fill<T><<<1024, 256>>>((T*)p, n, seed);
    CK(cudaGetLastError());
}

// Median milliseconds of one N×N×N GEMM of this kind.
static double time_gemm(cublasHandle_t h, const gemm_kind& k, int n, int iters, int* ok) {
    const uint64_t nn = (uint64_t)n * n;
    void *A = NULL, *B = NULL, *C = NULL;
    *ok = 0;
    if (cudaMalloc(&A, nn * k.esz) != cudaSuccess || cudaMalloc(&B, nn * k.esz) != cudaSuccess ||
        cudaMalloc(&C, nn * k.esz) != cudaSuccess) {
        cudaGetLastError();
        fprintf(stderr, "bench_peak: gemm %s: out of GPU memory for N=%d\n", k.name, n);
        cudaFree(A), cudaFree(B), cudaFree(C);
        return 0;
    }
    if (k.ab == CUDA_R_16F) fill_dev<__half>(A, nn, 1), fill_dev<__half>(B, nn, 2);
    else if (k.ab == CUDA_R_16BF) fill_dev<__nv_bfloat16>(A, nn, 1), fill_dev<__nv_bfloat16>(B, nn, 2);
    else fill_dev<float>(A, nn, 1), fill_dev<float>(B, nn, 2);
    // alpha 1/n keeps C within range of fp16 (sums of n products of values in [-1, 1))
    const float alpha = 1.0f / (float)n, beta = 0.0f;
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    std::vector<float> ms;
    for (int i = 0; i < 3 + iters; i++) {
        CK(cudaEventRecord(e0, 0));
        cublasStatus_t s = cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha, A, k.ab, n, B, k.ab,
                                        n, &beta, C, k.c, n, k.compute, CUBLAS_GEMM_DEFAULT);
        if (s != CUBLAS_STATUS_SUCCESS) {
            fprintf(stderr, "bench_peak: gemm %s: cublasGemmEx status %d\n", k.name, (int)s);
            ms.clear();
            break;
        }
        CK(cudaEventRecord(e1, 0));
        CK(cudaEventSynchronize(e1));
        float t = 0;
        CK(cudaEventElapsedTime(&t, e0, e1));
        if (i >= 3) ms.push_back(t);
    }
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    cudaFree(A), cudaFree(B), cudaFree(C);
    if (ms.empty()) return 0;
    *ok = 1;
    return median(ms);
}

int main(int argc, char** argv) {
    int gpu = 0, gemm_n = 8192, iters = 20;
    double copy_mb = 1024;
    for (int i = 1; i < argc; i++) {
        const char* a = argv[i];
        const char* v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--gpu") && v) gpu = atoi(v), i++;
        else if (!strcmp(a, "--copy-mb") && v) copy_mb = atof(v), i++;
        else if (!strcmp(a, "--gemm") && v) gemm_n = atoi(v), i++;
        else if (!strcmp(a, "--iters") && v) iters = atoi(v), i++;
        else {
            fprintf(stderr, "usage: bench_peak [--gpu N (0)] [--copy-mb MB (1024)] [--gemm N (8192)] "
                            "[--iters N (20)]\n");
            return 2;
        }
    }
    if (iters < 1 || gemm_n < 16 || copy_mb <= 0 || gpu < 0) {
        fprintf(stderr, "bench_peak: --iters >= 1, --gemm >= 16, --copy-mb > 0, --gpu >= 0\n");
        return 2;
    }
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess || count <= gpu) {
        fprintf(stderr, "bench_peak: no usable GPU (%s); this benchmark needs one\n",
                err != cudaSuccess ? cudaGetErrorString(err) : "no such device ordinal");
        return 1;
    }
    CK(cudaSetDevice(gpu));
    cudaDeviceProp p;
    CK(cudaGetDeviceProperties(&p, gpu));
    int driver = 0, runtime = 0;
    cudaDriverGetVersion(&driver);
    cudaRuntimeGetVersion(&runtime);
    fprintf(stderr, "bench_peak: %s, sm_%d%d, %d SMs, %.1f GiB, driver %d, runtime %d\n", p.name, p.major,
            p.minor, p.multiProcessorCount, p.totalGlobalMem / 1073741824.0, driver, runtime);

    // ---- copy
    const size_t bytes = (size_t)(copy_mb * 1e6) & ~(size_t)255;
    void *src = NULL, *dst = NULL;
    CK(cudaMalloc(&src, bytes));
    CK(cudaMalloc(&dst, bytes));
    fill_dev<float>(src, bytes / 4, 3);
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    for (int i = 0; i < 3; i++) CK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, 0));
    std::vector<float> cms;
    for (int i = 0; i < iters; i++) {
        CK(cudaEventRecord(e0, 0));
        CK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, 0));
        CK(cudaEventRecord(e1, 0));
        CK(cudaEventSynchronize(e1));
        float t = 0;
        CK(cudaEventElapsedTime(&t, e0, e1));
        cms.push_back(t);
    }
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    CK(cudaFree(src));
    CK(cudaFree(dst));
    const double copy_ms = median(cms);
    const double copy_gbs = 2.0 * bytes / (copy_ms * 1e-3) / 1e9;
    fprintf(stderr, "  copy %.0f MB device->device: %.3f ms, %.0f GB/s read+write (%.0f GB/s one way)\n",
            bytes / 1e6, copy_ms, copy_gbs, copy_gbs / 2);

    // ---- gemm
    cublasHandle_t h;
    CKB(cublasCreate(&h));
    const gemm_kind kinds[] = {
        {"fp16", CUDA_R_16F, CUDA_R_16F, CUBLAS_COMPUTE_32F, 2},
        {"bf16", CUDA_R_16BF, CUDA_R_16BF, CUBLAS_COMPUTE_32F, 2},
        {"tf32", CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F_FAST_TF32, 4},
        {"fp32", CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F, 4},
    };
    const double flops = 2.0 * (double)gemm_n * gemm_n * gemm_n;
    double tf[4] = {0, 0, 0, 0}, gms[4] = {0, 0, 0, 0};
    for (int k = 0; k < 4; k++) {
        int ok = 0;
        gms[k] = time_gemm(h, kinds[k], gemm_n, iters, &ok);
        tf[k] = ok && gms[k] > 0 ? flops / (gms[k] * 1e-3) / 1e12 : 0;
        fprintf(stderr, "  gemm %s %d^3: %.3f ms, %.1f TFLOP/s\n", kinds[k].name, gemm_n, gms[k], tf[k]);
    }
    CKB(cublasDestroy(h));

    printf("{\"side\":\"peak\",\"gpu\":\"%s\",\"sm\":\"sm_%d%d\",\"sms\":%d,\"mem_total_mb\":%.0f,"
           "\"driver\":%d,\"runtime\":%d,\"copy_mb\":%.0f,\"copy_ms\":%.4f,\"copy_gb_s\":%.1f,"
           "\"copy_gb_s_one_way\":%.1f,\"gemm_n\":%d,\"gemm_fp16_ms\":%.4f,\"gemm_fp16_tflop_s\":%.2f,"
           "\"gemm_bf16_ms\":%.4f,\"gemm_bf16_tflop_s\":%.2f,\"gemm_tf32_ms\":%.4f,\"gemm_tf32_tflop_s\":%.2f,"
           "\"gemm_fp32_ms\":%.4f,\"gemm_fp32_tflop_s\":%.2f,\"iters\":%d}\n",
           p.name, p.major, p.minor, p.multiProcessorCount, p.totalGlobalMem / 1e6, driver, runtime,
           bytes / 1e6, copy_ms, copy_gbs, copy_gbs / 2, gemm_n, gms[0], tf[0], gms[1], tf[1], gms[2], tf[2],
           gms[3], tf[3], iters);
    return 0;
}
