// test_emu_runtime.cu — kernels for the emulator self-tests (test_emu_runtime.cpp).
#include "cuda_common.cuh"
template <int B>
__global__ void __launch_bounds__(256) reduce_k(const float* __restrict__ in, float* out, int n) {
    __shared__ float s[B];
    int t = threadIdx.x;
    float v = 0;
    for (int i = blockIdx.x * B + t; i < n; i += B * gridDim.x) v += in[i];
    s[t] = v;
    __syncthreads();
    for (int o = B / 2; o > 0; o >>= 1) { if (t < o) s[t] += s[t + o]; __syncthreads(); }
    if (t == 0) atomicAdd(out, s[0]);
}
__global__ void warp_k(float* out) {
    float v = threadIdx.x;
    for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    DS_DYN_SHARED(float, dyn);
    dyn[threadIdx.x] = v;
    __syncwarp();
    out[threadIdx.x] = dyn[threadIdx.x ^ 1] + min(1, 2u);
}
void selftest_run(const float* in, float* out, int n, float* o2) {
    auto* k = reduce_k<256>;
    DS_LAUNCH(k, 8, 256, 0, 0, in, out, n);
    DS_LAUNCH(warp_k, 1, 32, 128, 0, o2);
}
