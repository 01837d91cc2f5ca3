// device.c — the CUDA backend's entry point when diffscope is built without it.
//
// The CUDA objects (kernels/cuda, built by nvcc, or by g++ under the test emulator) define a
// strong ds_backend_cuda_create that replaces this weak one when they are linked in.
#include "backend.h"

__attribute__((weak)) ds_backend* ds_backend_cuda_create(ds_err* e, const ds_cuda_options* opt) {
    (void)opt;
    ds_errf(e, DS_ERR_DEVICE,
            "--device cuda: this diffscope was built without the CUDA backend (configure with "
            "-DDS_CUDA=ON on a machine with the CUDA toolkit)");
    return NULL;
}

// Stand-ins for kernels/cuda/cuda_info.cu (host/cuda_info.h): no GPU.
#include "cuda_info.h"

__attribute__((weak)) int ds_cuda_mem_info(size_t* free_b, size_t* total_b) {
    if (free_b) *free_b = 0;
    if (total_b) *total_b = 0;
    return -1;
}
__attribute__((weak)) int ds_cuda_is_emulated(void) { return 0; }
__attribute__((weak)) int ds_cuda_device_name(char* buf, int cap) {
    if (buf && cap > 0) buf[0] = 0;
    return -1;
}
__attribute__((weak)) int ds_cuda_marks_begin(ds_backend* be, int n) {
    (void)be, (void)n;
    return -1;
}
__attribute__((weak)) int ds_cuda_mark(ds_backend* be) {
    (void)be;
    return -1;
}
__attribute__((weak)) int ds_cuda_marks_elapsed(int i, int j, float* ms) {
    (void)i, (void)j;
    if (ms) *ms = 0;
    return -1;
}
__attribute__((weak)) void ds_cuda_marks_end(void) {}
