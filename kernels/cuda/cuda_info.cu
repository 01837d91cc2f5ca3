// cuda_info.cu — device facts and GPU-side op timing for the benchmarks, callable from C
// (host/cuda_info.h): cudaMemGetInfo, the device name, and a pool of cudaEvents recorded on a
// CUDA backend's stream (bench/bench_unet.c --profile times every op on the GPU with them, no
// synchronization between ops). Overrides the weak stand-ins of host/device.c.
//
// Under the SIMT emulator (DS_EMULATOR) there is no device: every call reports -1, so the
// benchmarks print that they need a GPU.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_common.cuh"

extern "C" {
#include "cuda_info.h"
}

#ifdef DS_EMULATOR
extern "C" int ds_cuda_is_emulated(void) { return 1; }
#else
extern "C" int ds_cuda_is_emulated(void) { return 0; }
#endif

#ifdef DS_EMULATOR

extern "C" int ds_cuda_mem_info(size_t* free_b, size_t* total_b) {
    if (free_b) *free_b = 0;
    if (total_b) *total_b = 0;
    return -1;
}
extern "C" int ds_cuda_device_name(char* buf, int cap) {
    if (buf && cap > 0) buf[0] = 0;
    return -1;
}
extern "C" int ds_cuda_marks_begin(ds_backend*, int) { return -1; }
extern "C" int ds_cuda_mark(ds_backend*) { return -1; }
extern "C" int ds_cuda_marks_elapsed(int, int, float* ms) {
    if (ms) *ms = 0;
    return -1;
}
extern "C" void ds_cuda_marks_end(void) {}

#else

extern "C" int ds_cuda_mem_info(size_t* free_b, size_t* total_b) {
    size_t f = 0, t = 0;
    if (cudaMemGetInfo(&f, &t) != cudaSuccess) {
        cudaGetLastError();  // clear the error so that later calls do not report it
        if (free_b) *free_b = 0;
        if (total_b) *total_b = 0;
        return -1;
    }
    if (free_b) *free_b = f;
    if (total_b) *total_b = t;
    return 0;
}

extern "C" int ds_cuda_device_name(char* buf, int cap) {
    if (!buf || cap <= 0) return -1;
    buf[0] = 0;
    int dev = 0;
    cudaDeviceProp p;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&p, dev) != cudaSuccess) {
        cudaGetLastError();
        return -1;
    }
    snprintf(buf, (size_t)cap, "%s (sm_%d%d, %d SMs, %.1f GiB)", p.name, p.major, p.minor,
             p.multiProcessorCount, (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    return 0;
}

static struct {
    cudaEvent_t* ev;
    int n, used;
} g_marks;

extern "C" void ds_cuda_marks_end(void) {
    for (int i = 0; i < g_marks.n; i++) cudaEventDestroy(g_marks.ev[i]);
    free(g_marks.ev);
    memset(&g_marks, 0, sizeof g_marks);
}

extern "C" int ds_cuda_marks_begin(ds_backend* be, int n) {
    ds_cuda_marks_end();
    if (!be || !be->name || strcmp(be->name, "cuda") != 0 || n <= 0) return -1;
    g_marks.ev = (cudaEvent_t*)calloc((size_t)n, sizeof(cudaEvent_t));
    if (!g_marks.ev) return -1;
    for (int i = 0; i < n; i++) {
        if (cudaEventCreate(&g_marks.ev[i]) != cudaSuccess) {
            cudaGetLastError();
            ds_cuda_marks_end();
            return -1;
        }
        g_marks.n = i + 1;
    }
    g_marks.used = 0;
    return 0;
}

extern "C" int ds_cuda_mark(ds_backend* be) {
    if (g_marks.used >= g_marks.n) return -1;
    int i = g_marks.used;
    if (cudaEventRecord(g_marks.ev[i], ds_cuda_stream(be)) != cudaSuccess) {
        cudaGetLastError();
        return -1;
    }
    g_marks.used++;
    return i;
}

extern "C" int ds_cuda_marks_elapsed(int i, int j, float* ms) {
    if (ms) *ms = 0;
    if (i < 0 || j < 0 || i >= g_marks.used || j >= g_marks.used) return -1;
    float t = 0;
    if (cudaEventElapsedTime(&t, g_marks.ev[i], g_marks.ev[j]) != cudaSuccess) {
        cudaGetLastError();
        return -1;
    }
    if (ms) *ms = t;
    return 0;
}

#endif
