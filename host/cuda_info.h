// cuda_info.h — device facts and GPU-side op timing for the benchmarks, callable from C.
//
// Defined by kernels/cuda/cuda_info.cu when the CUDA backend is built with nvcc; host/device.c
// holds weak stand-ins (every call returns -1: "no GPU here") so CPU-only builds link, and the
// emulated build returns -1 too (the emulator has no device memory to report).
//
// Memory figures are cudaMemGetInfo's for the current device (the whole device: other
// processes' memory counts too). The timing marks are cudaEvents recorded on a CUDA backend's
// stream, so an op's time is measured on the GPU without synchronizing between ops.
#ifndef DS_CUDA_INFO_H
#define DS_CUDA_INFO_H

#include <stddef.h>

#include "backend.h"

// free and total bytes of the current device; 0, or -1 without a usable GPU
int ds_cuda_mem_info(size_t* free_b, size_t* total_b);
// the current device's name ("NVIDIA H100 80GB HBM3") into buf; 0, or -1
int ds_cuda_device_name(char* buf, int cap);
// 1 when the CUDA backend linked in is the test-only SIMT emulator (its timings mean nothing).
int ds_cuda_is_emulated(void);

// Event marks for profiling a CUDA backend (be->name "cuda"). begin: a pool of `n` events;
// mark: records the next one on be's stream and returns its index (-1 when the pool is used up
// or without CUDA); elapsed: milliseconds between marks i and j once they have completed (call
// be->sync first); end: frees the pool. Single-threaded, one pool at a time.
int ds_cuda_marks_begin(ds_backend* be, int n);
int ds_cuda_mark(ds_backend* be);
int ds_cuda_marks_elapsed(int i, int j, float* ms);
void ds_cuda_marks_end(void);

#endif
