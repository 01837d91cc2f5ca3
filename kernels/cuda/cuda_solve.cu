// cuda_solve.cu — fp64 Cholesky solves for the closed-form edits (backend.h solve_spd_f64), through
// cuSOLVER: potrf factors A = L Lᵀ, potrs solves with the factor. One d × d system per edit (the
// shared solve of host/edit.c), so this is a plain synchronous call: upload, factor, solve, download.
//
// A cuSOLVER handle is made on first use, bound to the backend's stream, and kept on the backend
// (ds_cuda_solver_slot) until its destroy. Running out of device memory returns −1 (the caller
// solves on the host instead); a matrix that is not numerically positive definite returns potrf's
// info (> 0); any other failure is a device failure and aborts like every other op.
#include <cusolverDn.h>

#include "cuda_common.cuh"

#define DS_CUSOLVER_CHECK(call)                                                              \
    do {                                                                                     \
        cusolverStatus_t ds_s_ = (call);                                                     \
        if (ds_s_ != CUSOLVER_STATUS_SUCCESS) {                                              \
            char ds_m_[64];                                                                  \
            snprintf(ds_m_, sizeof ds_m_, "cusolverStatus_t %d", (int)ds_s_);                \
            ds_cuda_fatal(__FILE__, __LINE__, #call, ds_m_);                                 \
        }                                                                                    \
    } while (0)

namespace {

cusolverDnHandle_t solver_handle(ds_backend* be) {
    cusolverDnHandle_t& h = *(cusolverDnHandle_t*)ds_cuda_solver_slot(be);
    if (!h) {
        DS_CUSOLVER_CHECK(cusolverDnCreate(&h));
        DS_CUSOLVER_CHECK(cusolverDnSetStream(h, ds_cuda_stream(be)));
    }
    return h;
}

// cudaMalloc that reports running out of memory instead of aborting.
bool dev_alloc(void** p, size_t bytes) {
    cudaError_t err = cudaMalloc(p, bytes);
    if (err == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();  // clear it: later checks must not see this failure
        *p = nullptr;
        return false;
    }
    DS_CUDA_CHECK(err);
    return true;
}

}  // namespace

int ds_cuda_solve_spd_f64(ds_backend* be, int n, int nrhs, double* A, double* B) {
    if (n <= 0 || nrhs <= 0) return 0;
    cusolverDnHandle_t h = solver_handle(be);
    cudaStream_t st = ds_cuda_stream(be);
    int lwork = 0;
    double *dA = nullptr, *dB = nullptr, *work = nullptr;
    int* dinfo = nullptr;
    const size_t a_bytes = sizeof(double) * (size_t)n * n, b_bytes = sizeof(double) * (size_t)n * nrhs;
    int rc = -1;
    if (dev_alloc((void**)&dA, a_bytes) && dev_alloc((void**)&dB, b_bytes) && dev_alloc((void**)&dinfo, sizeof(int))) {
        DS_CUSOLVER_CHECK(cusolverDnDpotrf_bufferSize(h, CUBLAS_FILL_MODE_LOWER, n, dA, n, &lwork));
        if (dev_alloc((void**)&work, sizeof(double) * (size_t)(lwork > 0 ? lwork : 1))) {
            DS_CUDA_CHECK(cudaMemcpyAsync(dA, A, a_bytes, cudaMemcpyHostToDevice, st));
            DS_CUDA_CHECK(cudaMemcpyAsync(dB, B, b_bytes, cudaMemcpyHostToDevice, st));
            DS_CUSOLVER_CHECK(cusolverDnDpotrf(h, CUBLAS_FILL_MODE_LOWER, n, dA, n, work, lwork, dinfo));
            int info = 0;
            DS_CUDA_CHECK(cudaMemcpyAsync(&info, dinfo, sizeof(int), cudaMemcpyDeviceToHost, st));
            DS_CUDA_CHECK(cudaStreamSynchronize(st));
            if (info < 0) ds_cuda_fatal(__FILE__, __LINE__, "cusolverDnDpotrf", "invalid argument");
            if (info > 0) {
                rc = info;  // not positive definite: the caller falls back to LU
            } else {
                DS_CUSOLVER_CHECK(cusolverDnDpotrs(h, CUBLAS_FILL_MODE_LOWER, n, nrhs, dA, n, dB, n, dinfo));
                DS_CUDA_CHECK(cudaMemcpyAsync(&info, dinfo, sizeof(int), cudaMemcpyDeviceToHost, st));
                DS_CUDA_CHECK(cudaMemcpyAsync(B, dB, b_bytes, cudaMemcpyDeviceToHost, st));
                DS_CUDA_CHECK(cudaStreamSynchronize(st));
                if (info != 0) ds_cuda_fatal(__FILE__, __LINE__, "cusolverDnDpotrs", "invalid argument");
                rc = 0;
            }
        }
    }
    if (work) DS_CUDA_CHECK(cudaFree(work));
    if (dinfo) DS_CUDA_CHECK(cudaFree(dinfo));
    if (dB) DS_CUDA_CHECK(cudaFree(dB));
    if (dA) DS_CUDA_CHECK(cudaFree(dA));
    return rc;
}

void ds_cuda_solver_free(ds_backend* be) {
    cusolverDnHandle_t& h = *(cusolverDnHandle_t*)ds_cuda_solver_slot(be);
    if (h) (void)cusolverDnDestroy(h);
    h = nullptr;
}
