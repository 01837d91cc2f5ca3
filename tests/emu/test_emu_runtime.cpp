// test_emu_runtime.cpp — self-tests of the SIMT emulator (kernels in test_emu_runtime.cu).
#include <cuda_runtime.h>
#include <cstdio>
#include <cstdlib>
void selftest_run(const float* in, float* out, int n, float* o2);
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #c); exit(1); } } while (0)
int main() {
    int n = 1 << 20;
    float *in, *out, *o2;
    CHECK(cudaMalloc((void**)&in, n * 4) == cudaSuccess);
    CHECK(cudaMalloc((void**)&out, 4) == cudaSuccess);
    CHECK(cudaMalloc((void**)&o2, 128) == cudaSuccess);
    float* h = new float[n];
    for (int i = 0; i < n; i++) h[i] = 1.0f;
    cudaMemcpy(in, h, (size_t)n * 4, cudaMemcpyHostToDevice);
    cudaMemset(out, 0, 4);
    selftest_run(in, out, n, o2);
    float r, w[32];
    cudaMemcpy(&r, out, 4, cudaMemcpyDeviceToHost);
    cudaMemcpy(w, o2, 128, cudaMemcpyDeviceToHost);
    CHECK(r == (float)n);
    CHECK(w[0] == 497.f);
    printf("ok\n");
    return 0;
}
