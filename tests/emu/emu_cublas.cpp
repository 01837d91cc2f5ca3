// emu_cublas.cpp — test-only stand-in for the cuBLAS calls the CUDA backend makes.
//
// Compiled as ordinary C++ against the real cublas_v2.h (every signature and enum is checked by
// the compiler) and exporting the real symbol names (cublasCreate_v2, cublasGemmEx, ...), so an
// emulated test program links this instead of libcublas. Device memory is host memory under the
// emulator (tests/emu/emu_runtime.cpp), so operands are dereferenced directly after their extents
// have been checked against their cudaMalloc allocations (emu_mem_extent).
//
// Semantics follow the cuBLAS documentation: column-major storage, op(X) = X or Xᵀ (OP_C = OP_T
// for real types), C = alpha·op(A)·op(B) + beta·C with beta == 0 never reading C, fp32
// accumulation and one rounding to C's type. Invalid arguments return the documented statuses;
// an operand reaching past its allocation (which the real library would read or write as
// garbage) ends the program through emu_fail. docs/cuda_standins.md lists what is checked.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <set>
#include <vector>

#include "emu_control.h"
#include "emu_handles.h"
#include "emu_mem.h"

struct cublasContext {
    cudaStream_t stream = nullptr;
    cublasMath_t math = CUBLAS_DEFAULT_MATH;
    cublasPointerMode_t pointer_mode = CUBLAS_POINTER_MODE_HOST;
    void* workspace = nullptr;
    size_t workspace_bytes = 0;
};

namespace {

emu_handles<cublasHandle_t>& handles() {
    static emu_handles<cublasHandle_t> h;
    return h;
}
bool is_live(cublasHandle_t h) { return handles().live(h); }

// ---- element access ----------------------------------------------------------------------------
// How inputs are rounded before the multiply, as tensor cores may (FAST_* compute types, TF32 math
// mode): the emulator takes the least precise choice the library is allowed, so tolerances found
// here hold on the GPU.
enum class Round { none, tf32, f16, bf16 };

inline float round_tf32(float x) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    if ((u & 0x7f800000u) != 0x7f800000u) {  // finite: round to nearest even at 10 mantissa bits
        u += 0xfffu + ((u >> 13) & 1u);
        u &= ~0x1fffu;
    }
    std::memcpy(&x, &u, 4);
    return x;
}
inline float apply_round(float x, Round r) {
    switch (r) {
    case Round::none: return x;
    case Round::tf32: return round_tf32(x);
    case Round::f16: return __half2float(__float2half_rn(x));
    case Round::bf16: return __bfloat162float(__float2bfloat16_rn(x));
    }
    return x;
}

size_t elem_size(cudaDataType t) {
    switch (t) {
    case CUDA_R_32F: return 4;
    case CUDA_R_16F: return 2;
    case CUDA_R_16BF: return 2;
    default: return 0;
    }
}
inline float load(const void* p, cudaDataType t, size_t i) {
    switch (t) {
    case CUDA_R_16F: return __half2float(((const __half*)p)[i]);
    case CUDA_R_16BF: return __bfloat162float(((const __nv_bfloat16*)p)[i]);
    default: return ((const float*)p)[i];
    }
}
inline void store(void* p, cudaDataType t, size_t i, float v) {
    switch (t) {
    case CUDA_R_16F: ((__half*)p)[i] = __float2half_rn(v); break;
    case CUDA_R_16BF: ((__nv_bfloat16*)p)[i] = __float2bfloat16_rn(v); break;
    default: ((float*)p)[i] = v; break;
    }
}

// op(X) is rows × cols; X is stored column-major with leading dimension ld, transposed when
// `trans`. Packs op(X) into dst, column-major rows × cols, as fp32 (rounded as `r` says).
void pack(const void* src, cudaDataType t, bool trans, int64_t rows, int64_t cols, int64_t ld,
          Round r, float* dst) {
    for (int64_t c = 0; c < cols; c++)
        for (int64_t i = 0; i < rows; i++) {
            size_t at = trans ? (size_t)(c + i * ld) : (size_t)(i + c * ld);
            dst[c * rows + i] = apply_round(load(src, t, at), r);
        }
}

// A stored matrix of `rows` × `cols` (as stored) with leading dimension ld must lie inside the
// allocation p points into.
void check_extent(const char* fn, const char* what, const void* p, int64_t rows, int64_t cols,
                  int64_t ld, size_t es) {
    if (rows == 0 || cols == 0) return;
    size_t have = 0;
    if (!emu_mem_extent(p, &have))
        emu_fail("%s: %s = %p is not inside any live cudaMalloc allocation", fn, what, p);
    size_t need = ((size_t)(cols - 1) * (size_t)ld + (size_t)rows) * es;
    if (have < need)
        emu_fail("%s: %s (%lld x %lld as stored, ld %lld, %zu-byte elements) needs %zu bytes from %p "
                 "but its allocation ends %zu bytes after it",
                 fn, what, (long long)rows, (long long)cols, (long long)ld, es, need, p, have);
}

// Reads a scalar (alpha, beta) as float: host mode at the call (a captured graph keeps the value),
// device mode when the work runs.
float read_scalar(const char* fn, const char* what, bool device_mode, const void* p, bool half) {
    if (device_mode) {
        size_t have = 0;
        if (!emu_mem_extent(p, &have) || have < (half ? 2u : 4u))
            emu_fail("%s: pointer mode is DEVICE but %s = %p is not device memory", fn, what, p);
    }
    return half ? __half2float(*(const __half*)p) : *(const float*)p;
}

bool valid_op(cublasOperation_t op) {
    return op == CUBLAS_OP_N || op == CUBLAS_OP_T || op == CUBLAS_OP_C;
}
bool valid_algo(cublasGemmAlgo_t a) {
    int v = (int)a;
    return v == -1 || (v >= 0 && v <= 23) || (v >= 99 && v <= 115) || v == 999;
}

// The cublasGemmEx type table (cuBLAS docs), restricted to the real floating types the stand-in
// implements. Sets the input rounding and whether alpha/beta are __half.
cublasStatus_t check_types(cublasHandle_t h, cudaDataType at, cudaDataType bt, cudaDataType ct,
                           cublasComputeType_t comp, Round* rnd, bool* half_scale) {
    *rnd = Round::none;
    *half_scale = false;
    if (at != bt) return CUBLAS_STATUS_NOT_SUPPORTED;
    bool pedantic_math = (h->math & 0xf) == CUBLAS_PEDANTIC_MATH;
    bool tf32_math = (h->math & 0xf) == CUBLAS_TF32_TENSOR_OP_MATH;
    switch (comp) {
    case CUBLAS_COMPUTE_16F:
    case CUBLAS_COMPUTE_16F_PEDANTIC:
        // Real cuBLAS accumulates in fp16 here; the stand-in accumulates in fp32 (more precise).
        if (at == CUDA_R_16F && ct == CUDA_R_16F) {
            *half_scale = true;
            return CUBLAS_STATUS_SUCCESS;
        }
        return CUBLAS_STATUS_NOT_SUPPORTED;
    case CUBLAS_COMPUTE_32F:
    case CUBLAS_COMPUTE_32F_PEDANTIC:
        if ((at == CUDA_R_16F || at == CUDA_R_16BF) && (ct == at || ct == CUDA_R_32F))
            return CUBLAS_STATUS_SUCCESS;
        if (at == CUDA_R_32F && ct == CUDA_R_32F) {
            if (comp == CUBLAS_COMPUTE_32F && tf32_math && !pedantic_math) *rnd = Round::tf32;
            return CUBLAS_STATUS_SUCCESS;
        }
        return CUBLAS_STATUS_NOT_SUPPORTED;
    case CUBLAS_COMPUTE_32F_FAST_16F:
        // The documented table lists 32F data only; fp16 inputs with FAST_16F are accepted by
        // the library in practice (and are already half, so nothing is rounded).
        if (at == CUDA_R_16F && (ct == CUDA_R_16F || ct == CUDA_R_32F)) return CUBLAS_STATUS_SUCCESS;
        if (at == CUDA_R_32F && ct == CUDA_R_32F) {
            *rnd = Round::f16;
            return CUBLAS_STATUS_SUCCESS;
        }
        return CUBLAS_STATUS_NOT_SUPPORTED;
    case CUBLAS_COMPUTE_32F_FAST_16BF:
        if (at == CUDA_R_32F && ct == CUDA_R_32F) {
            *rnd = Round::bf16;
            return CUBLAS_STATUS_SUCCESS;
        }
        return CUBLAS_STATUS_NOT_SUPPORTED;
    case CUBLAS_COMPUTE_32F_FAST_TF32:
        if (at == CUDA_R_32F && ct == CUDA_R_32F) {
            *rnd = Round::tf32;
            return CUBLAS_STATUS_SUCCESS;
        }
        return CUBLAS_STATUS_NOT_SUPPORTED;
    case CUBLAS_COMPUTE_32F_EMULATED_16BFX9:  // ≈ fp32 accuracy
        return (at == CUDA_R_32F && ct == CUDA_R_32F) ? CUBLAS_STATUS_SUCCESS
                                                      : CUBLAS_STATUS_NOT_SUPPORTED;
    default:  // 64F, 32I, complex: valid in cuBLAS, not implemented by the stand-in
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
}

// Batch b's operand: from a pointer array (GemmBatchedEx) or base + b·stride elements.
struct Operand {
    const void* base;
    const void* const* array;
    long long stride;
    size_t es;
    const void* at(int b) const {
        if (array) return array[b];
        return (const char*)base + (ptrdiff_t)((long long)b * stride * (long long)es);
    }
};

cublasStatus_t gemm(const char* fn, cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb,
                    int m, int n, int k, const void* alpha, Operand A, cudaDataType at, int lda,
                    Operand B, cudaDataType bt, int ldb, const void* beta, Operand C,
                    cudaDataType ct, int ldc, int batch, cublasComputeType_t comp,
                    cublasGemmAlgo_t algo) {
    if (!is_live(h)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (m < 0 || n < 0 || k < 0 || batch < 0 || !valid_op(ta) || !valid_op(tb))
        return CUBLAS_STATUS_INVALID_VALUE;
    const bool tA = ta != CUBLAS_OP_N, tB = tb != CUBLAS_OP_N;
    const int a_rows = tA ? k : m, a_cols = tA ? m : k;  // A as stored
    const int b_rows = tB ? n : k, b_cols = tB ? k : n;  // B as stored
    if (lda < (a_rows > 1 ? a_rows : 1) || ldb < (b_rows > 1 ? b_rows : 1) ||
        ldc < (m > 1 ? m : 1))
        return CUBLAS_STATUS_INVALID_VALUE;
    if (!alpha || !beta) return CUBLAS_STATUS_INVALID_VALUE;
    Round rnd;
    bool half_scale;
    cublasStatus_t st = check_types(h, at, bt, ct, comp, &rnd, &half_scale);
    if (st != CUBLAS_STATUS_SUCCESS) return st;
    if (!valid_algo(algo)) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (m == 0 || n == 0 || batch == 0) return CUBLAS_STATUS_SUCCESS;

    const bool dev_mode = h->pointer_mode == CUBLAS_POINTER_MODE_DEVICE;
    float al_host = 0.f, be_host = 0.f;
    if (!dev_mode) {
        al_host = read_scalar(fn, "alpha", false, alpha, half_scale);
        be_host = read_scalar(fn, "beta", false, beta, half_scale);
    }
    // The work runs now, or when the graph the handle's stream is capturing is launched.
    emu_stream_submit(h->stream, [=]() mutable {
        const float al = dev_mode ? read_scalar(fn, "alpha", true, alpha, half_scale) : al_host;
        const float be = dev_mode ? read_scalar(fn, "beta", true, beta, half_scale) : be_host;
        A.es = elem_size(at);
        B.es = elem_size(bt);
        C.es = elem_size(ct);
        if (A.array || B.array || C.array) {  // the pointer arrays themselves live in device memory
            const void* arrs[3] = {A.array, B.array, C.array};
            const char* names[3] = {"Aarray", "Barray", "Carray"};
            for (int i = 0; i < 3; i++) check_extent(fn, names[i], arrs[i], batch, 1, batch, sizeof(void*));
        }
        // Every batch of a pointer array; the first and last batch of a strided operand.
        for (int b = 0; b < batch; b++) {
            if (!A.array && b != 0 && b != batch - 1) continue;
            char what[64];
            snprintf(what, sizeof what, "A (batch %d)", b);
            check_extent(fn, what, A.at(b), k ? a_rows : 0, a_cols, lda, A.es);
            snprintf(what, sizeof what, "B (batch %d)", b);
            check_extent(fn, what, B.at(b), k ? b_rows : 0, b_cols, ldb, B.es);
            snprintf(what, sizeof what, "C (batch %d)", b);
            check_extent(fn, what, C.at(b), m, n, ldc, C.es);
        }

        std::vector<float> ap((size_t)m * k), bp((size_t)k * n), acc((size_t)m);
        const void* packed_a = nullptr;
        const void* packed_b = nullptr;
        for (int b = 0; b < batch; b++) {
            const void* pa = A.at(b);
            const void* pb = B.at(b);
            char* pc = (char*)C.at(b);
            if (pa != packed_a) pack(pa, at, tA, m, k, lda, rnd, ap.data()), packed_a = pa;  // stride 0: once
            if (pb != packed_b) pack(pb, bt, tB, k, n, ldb, rnd, bp.data()), packed_b = pb;
            for (int j = 0; j < n; j++) {
                float* __restrict__ ac = acc.data();
                for (int i = 0; i < m; i++) ac[i] = 0.f;
                for (int p = 0; p < k; p++) {
                    const float bv = bp[(size_t)j * k + p];
                    const float* __restrict__ col = ap.data() + (size_t)p * m;
                    for (int i = 0; i < m; i++) ac[i] += col[i] * bv;
                }
                for (int i = 0; i < m; i++) {
                    size_t ci = (size_t)i + (size_t)j * ldc;
                    float v = al * ac[i];
                    if (be != 0.f) v += be * load(pc, ct, ci);  // beta == 0: C is never read
                    store(pc, ct, ci, v);
                }
            }
        }
    });
    return CUBLAS_STATUS_SUCCESS;
}

Operand strided(const void* p, long long stride) { return Operand{p, nullptr, stride, 0}; }

cublasComputeType_t sgemm_compute(cublasHandle_t h) {
    return (is_live(h) && (h->math & 0xf) == CUBLAS_PEDANTIC_MATH) ? CUBLAS_COMPUTE_32F_PEDANTIC
                                                         : CUBLAS_COMPUTE_32F;
}

}  // namespace

extern "C" {

// ---- handle ------------------------------------------------------------------------------------
cublasStatus_t CUBLASWINAPI cublasCreate_v2(cublasHandle_t* handle) {
    return handles().create(handle, CUBLAS_STATUS_SUCCESS, CUBLAS_STATUS_INVALID_VALUE);
}

cublasStatus_t CUBLASWINAPI cublasDestroy_v2(cublasHandle_t handle) {
    return handles().destroy(handle, CUBLAS_STATUS_SUCCESS, CUBLAS_STATUS_NOT_INITIALIZED);
}

cublasStatus_t CUBLASWINAPI cublasSetStream_v2(cublasHandle_t handle, cudaStream_t streamId) {
    return handles().set_stream(handle, streamId, CUBLAS_STATUS_SUCCESS, CUBLAS_STATUS_NOT_INITIALIZED);
}

cublasStatus_t CUBLASWINAPI cublasGetStream_v2(cublasHandle_t handle, cudaStream_t* streamId) {
    if (!is_live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!streamId) return CUBLAS_STATUS_INVALID_VALUE;
    *streamId = handle->stream;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
    if (!is_live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
    int base = (int)mode & 0xf, flags = (int)mode & ~0xf;
    bool ok_base = base == CUBLAS_DEFAULT_MATH || base == CUBLAS_TENSOR_OP_MATH ||
                   base == CUBLAS_PEDANTIC_MATH || base == CUBLAS_TF32_TENSOR_OP_MATH ||
                   base == CUBLAS_FP32_EMULATED_BF16X9_MATH || base == CUBLAS_FP64_EMULATED_FIXEDPOINT_MATH;
    if (!ok_base || (flags & ~(int)CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION))
        return CUBLAS_STATUS_INVALID_VALUE;
    handle->math = mode;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasGetMathMode(cublasHandle_t handle, cublasMath_t* mode) {
    if (!is_live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!mode) return CUBLAS_STATUS_INVALID_VALUE;
    *mode = handle->math;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasSetPointerMode_v2(cublasHandle_t handle, cublasPointerMode_t mode) {
    if (!is_live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (mode != CUBLAS_POINTER_MODE_HOST && mode != CUBLAS_POINTER_MODE_DEVICE)
        return CUBLAS_STATUS_INVALID_VALUE;
    handle->pointer_mode = mode;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasGetPointerMode_v2(cublasHandle_t handle, cublasPointerMode_t* mode) {
    if (!is_live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!mode) return CUBLAS_STATUS_INVALID_VALUE;
    *mode = handle->pointer_mode;
    return CUBLAS_STATUS_SUCCESS;
}

// The stand-in needs no workspace; it checks what the caller hands over as the library would use
// it: 256-byte alignment (INVALID_VALUE otherwise) and the whole size inside one allocation.
cublasStatus_t CUBLASWINAPI cublasSetWorkspace_v2(cublasHandle_t handle, void* workspace,
                                                  size_t workspaceSizeInBytes) {
    if (!is_live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (workspace && workspaceSizeInBytes) {
        if ((uintptr_t)workspace % 256) return CUBLAS_STATUS_INVALID_VALUE;
        size_t have = 0;
        if (!emu_mem_extent(workspace, &have) || have < workspaceSizeInBytes)
            emu_fail("cublasSetWorkspace: %zu bytes at %p are not inside one cudaMalloc allocation",
                     workspaceSizeInBytes, workspace);
    }
    handle->workspace = workspace;
    handle->workspace_bytes = workspace ? workspaceSizeInBytes : 0;
    return CUBLAS_STATUS_SUCCESS;
}

const char* CUBLASWINAPI cublasGetStatusName(cublasStatus_t status) {
    switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    }
    return "CUBLAS_STATUS_UNKNOWN";
}

const char* CUBLASWINAPI cublasGetStatusString(cublasStatus_t status) {
    switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "an absent device architectural feature is required";
    case CUBLAS_STATUS_MAPPING_ERROR: return "an access to GPU memory space failed";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "an internal operation failed";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
    case CUBLAS_STATUS_LICENSE_ERROR: return "an error was detected when checking the current licensing";
    }
    return "unknown error";
}

// ---- GEMM --------------------------------------------------------------------------------------
cublasStatus_t CUBLASWINAPI cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa,
                                         cublasOperation_t transb, int m, int n, int k,
                                         const void* alpha, const void* A, cudaDataType Atype,
                                         int lda, const void* B, cudaDataType Btype, int ldb,
                                         const void* beta, void* C, cudaDataType Ctype, int ldc,
                                         cublasComputeType_t computeType, cublasGemmAlgo_t algo) {
    return gemm("cublasGemmEx", handle, transa, transb, m, n, k, alpha, strided(A, 0), Atype, lda,
                strided(B, 0), Btype, ldb, beta, strided(C, 0), Ctype, ldc, 1, computeType, algo);
}

cublasStatus_t CUBLASWINAPI cublasGemmStridedBatchedEx(
    cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k,
    const void* alpha, const void* A, cudaDataType Atype, int lda, long long int strideA,
    const void* B, cudaDataType Btype, int ldb, long long int strideB, const void* beta, void* C,
    cudaDataType Ctype, int ldc, long long int strideC, int batchCount,
    cublasComputeType_t computeType, cublasGemmAlgo_t algo) {
    return gemm("cublasGemmStridedBatchedEx", handle, transa, transb, m, n, k, alpha,
                strided(A, strideA), Atype, lda, strided(B, strideB), Btype, ldb, beta,
                strided(C, strideC), Ctype, ldc, batchCount, computeType, algo);
}

cublasStatus_t CUBLASWINAPI cublasGemmBatchedEx(
    cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k,
    const void* alpha, const void* const Aarray[], cudaDataType Atype, int lda,
    const void* const Barray[], cudaDataType Btype, int ldb, const void* beta,
    void* const Carray[], cudaDataType Ctype, int ldc, int batchCount,
    cublasComputeType_t computeType, cublasGemmAlgo_t algo) {
    return gemm("cublasGemmBatchedEx", handle, transa, transb, m, n, k, alpha,
                Operand{nullptr, Aarray, 0, 0}, Atype, lda, Operand{nullptr, Barray, 0, 0}, Btype,
                ldb, beta, Operand{nullptr, (const void* const*)Carray, 0, 0}, Ctype, ldc,
                batchCount, computeType, algo);
}

cublasStatus_t CUBLASWINAPI cublasSgemm_v2(cublasHandle_t handle, cublasOperation_t transa,
                                           cublasOperation_t transb, int m, int n, int k,
                                           const float* alpha, const float* A, int lda,
                                           const float* B, int ldb, const float* beta, float* C,
                                           int ldc) {
    return gemm("cublasSgemm", handle, transa, transb, m, n, k, alpha, strided(A, 0), CUDA_R_32F,
                lda, strided(B, 0), CUDA_R_32F, ldb, beta, strided(C, 0), CUDA_R_32F, ldc, 1,
                sgemm_compute(handle), CUBLAS_GEMM_DEFAULT);
}

cublasStatus_t CUBLASWINAPI cublasSgemmStridedBatched(
    cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k,
    const float* alpha, const float* A, int lda, long long int strideA, const float* B, int ldb,
    long long int strideB, const float* beta, float* C, int ldc, long long int strideC,
    int batchCount) {
    return gemm("cublasSgemmStridedBatched", handle, transa, transb, m, n, k, alpha,
                strided(A, strideA), CUDA_R_32F, lda, strided(B, strideB), CUDA_R_32F, ldb, beta,
                strided(C, strideC), CUDA_R_32F, ldc, batchCount, sgemm_compute(handle),
                CUBLAS_GEMM_DEFAULT);
}

}  // extern "C"
