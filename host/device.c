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
