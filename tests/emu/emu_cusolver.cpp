// emu_cusolver.cpp — test-only stand-in for the cuSOLVER calls the CUDA backend makes
// (kernels/cuda/cuda_solve.cu): the dense Cholesky pair potrf / potrs in fp64.
//
// Like emu_cublas.cpp: compiled against the real cusolverDn.h (signatures and enums checked by the
// compiler), exporting the real symbol names, device memory = host memory under the emulator. The
// numbers come from LAPACK's dpotrf / dpotrs (the routines cuSOLVER implements), called on the
// operands in place after their extents are checked against their cudaMalloc allocations; the
// work runs in stream order (emu_stream_submit). Documented statuses for invalid arguments:
// NOT_INITIALIZED for a null or destroyed handle, INVALID_VALUE for n < 0, nrhs < 0, lda/ldb < max(1, n)
// or a fill mode other than lower/upper; devInfo receives LAPACK's info (> 0: the leading minor of
// that order is not positive definite).
#include <cusolverDn.h>

#include <cstdint>

#include "emu_control.h"
#include "emu_handles.h"
#include "emu_mem.h"

extern "C" {
void dpotrf_(const char* uplo, const int* n, double* a, const int* lda, int* info, size_t uplo_len);
void dpotrs_(const char* uplo, const int* n, const int* nrhs, const double* a, const int* lda, double* b,
             const int* ldb, int* info, size_t uplo_len);
}

struct cusolverDnContext {
    cudaStream_t stream = nullptr;
};

namespace {

emu_handles<cusolverDnHandle_t>& handles() {
    static emu_handles<cusolverDnHandle_t> h;
    return h;
}
bool is_live(cusolverDnHandle_t h) { return handles().live(h); }

void check_extent(const char* fn, const char* what, const void* p, int64_t rows, int64_t cols, int64_t ld,
                  size_t es) {
    if (rows == 0 || cols == 0) return;
    size_t have = 0;
    if (!emu_mem_extent(p, &have)) emu_fail("%s: %s = %p is not inside any live cudaMalloc allocation", fn, what, p);
    size_t need = ((size_t)(cols - 1) * (size_t)ld + (size_t)rows) * es;
    if (have < need)
        emu_fail("%s: %s (%lld x %lld, ld %lld) needs %zu bytes from %p but its allocation ends %zu bytes after it", fn,
                 what, (long long)rows, (long long)cols, (long long)ld, need, p, have);
}

bool fill_ok(cublasFillMode_t uplo) { return uplo == CUBLAS_FILL_MODE_LOWER || uplo == CUBLAS_FILL_MODE_UPPER; }
const char* fill_char(cublasFillMode_t uplo) { return uplo == CUBLAS_FILL_MODE_LOWER ? "L" : "U"; }

}  // namespace

extern "C" {

cusolverStatus_t CUSOLVERAPI cusolverDnCreate(cusolverDnHandle_t* handle) {
    return handles().create(handle, CUSOLVER_STATUS_SUCCESS, CUSOLVER_STATUS_INVALID_VALUE);
}

cusolverStatus_t CUSOLVERAPI cusolverDnDestroy(cusolverDnHandle_t handle) {
    return handles().destroy(handle, CUSOLVER_STATUS_SUCCESS, CUSOLVER_STATUS_NOT_INITIALIZED);
}

cusolverStatus_t CUSOLVERAPI cusolverDnSetStream(cusolverDnHandle_t handle, cudaStream_t streamId) {
    return handles().set_stream(handle, streamId, CUSOLVER_STATUS_SUCCESS, CUSOLVER_STATUS_NOT_INITIALIZED);
}

cusolverStatus_t CUSOLVERAPI cusolverDnDpotrf_bufferSize(cusolverDnHandle_t handle, cublasFillMode_t uplo, int n,
                                                        double* A, int lda, int* Lwork) {
    (void)A;
    if (!is_live(handle)) return CUSOLVER_STATUS_NOT_INITIALIZED;
    if (!Lwork || n < 0 || lda < (n > 1 ? n : 1) || !fill_ok(uplo)) return CUSOLVER_STATUS_INVALID_VALUE;
    *Lwork = n > 0 ? n : 1;  // the stand-in needs none; callers must still pass what it asks for
    return CUSOLVER_STATUS_SUCCESS;
}

cusolverStatus_t CUSOLVERAPI cusolverDnDpotrf(cusolverDnHandle_t handle, cublasFillMode_t uplo, int n, double* A,
                                             int lda, double* Workspace, int Lwork, int* devInfo) {
    if (!is_live(handle)) return CUSOLVER_STATUS_NOT_INITIALIZED;
    if (n < 0 || lda < (n > 1 ? n : 1) || !fill_ok(uplo) || Lwork < (n > 0 ? n : 1)) return CUSOLVER_STATUS_INVALID_VALUE;
    emu_stream_submit(handle->stream, [=]() {
        check_extent("cusolverDnDpotrf", "A", A, n, n, lda, sizeof(double));
        check_extent("cusolverDnDpotrf", "Workspace", Workspace, Lwork, 1, Lwork, sizeof(double));
        check_extent("cusolverDnDpotrf", "devInfo", devInfo, 1, 1, 1, sizeof(int));
        int info = 0;
        if (n > 0) dpotrf_(fill_char(uplo), &n, A, &lda, &info, 1);
        *devInfo = info;
    });
    return CUSOLVER_STATUS_SUCCESS;
}

cusolverStatus_t CUSOLVERAPI cusolverDnDpotrs(cusolverDnHandle_t handle, cublasFillMode_t uplo, int n, int nrhs,
                                             const double* A, int lda, double* B, int ldb, int* devInfo) {
    if (!is_live(handle)) return CUSOLVER_STATUS_NOT_INITIALIZED;
    if (n < 0 || nrhs < 0 || lda < (n > 1 ? n : 1) || ldb < (n > 1 ? n : 1) || !fill_ok(uplo))
        return CUSOLVER_STATUS_INVALID_VALUE;
    emu_stream_submit(handle->stream, [=]() {
        check_extent("cusolverDnDpotrs", "A", A, n, n, lda, sizeof(double));
        check_extent("cusolverDnDpotrs", "B", B, n, nrhs, ldb, sizeof(double));
        check_extent("cusolverDnDpotrs", "devInfo", devInfo, 1, 1, 1, sizeof(int));
        int info = 0;
        if (n > 0 && nrhs > 0) dpotrs_(fill_char(uplo), &n, &nrhs, A, &lda, B, &ldb, &info, 1);
        *devInfo = info;
    });
    return CUSOLVER_STATUS_SUCCESS;
}

}  // extern "C"
