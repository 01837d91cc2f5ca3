// test_emu_runtime.cu — kernels for the emulator's self-tests (driven by test_emu_runtime.cpp).
// Compiled through ds_emu_cuda_library, i.e. exactly like kernels/cuda/*.cu. Each host wrapper
// takes device pointers and launches through DS_LAUNCH.
#include "cuda_common.cuh"

#include <mma.h>

#include "test_emu_runtime.h"

// ---- block reduction: static shared memory + __syncthreads ----------------------------------------
template <int B>
__global__ void __launch_bounds__(B) reduce_k(const float* __restrict__ in, float* out, int n) {
    __shared__ float s[B];
    int t = threadIdx.x;
    float v = 0;
    for (int i = blockIdx.x * B + t; i < n; i += B * gridDim.x) v += in[i];
    s[t] = v;
    __syncthreads();
    for (int o = B / 2; o > 0; o >>= 1) {
        if (t < o) s[t] += s[t + o];
        __syncthreads();
    }
    if (t == 0) atomicAdd(out, s[0]);
}
void st_reduce(const float* in, float* out, int n, int blocks) {
    auto* k = reduce_k<256>;
    DS_LAUNCH(k, blocks, 256, 0, 0, in, out, n);
}

// ---- warp shuffles -----------------------------------------------------------------------------
// out[t*8 + ...]: xor butterfly sum, down-sum (valid in lane 0), inclusive up-scan, broadcast of
// lane 5, xor-sum within segments of 8, broadcast within segments of 8 (lane 3 of each), a __half
// and a double round trip.
__global__ void shuffle_k(float* out) {
    const unsigned full = 0xffffffffu;
    int lane = threadIdx.x % 32;
    float v = (float)(threadIdx.x + 1);
    float x = v, d = v, u = v;
    for (int o = 16; o; o >>= 1) x += __shfl_xor_sync(full, x, o);
    for (int o = 16; o; o >>= 1) d += __shfl_down_sync(full, d, o);
    for (int o = 1; o < 32; o <<= 1) {
        float y = __shfl_up_sync(full, u, o);
        if (lane >= o) u += y;
    }
    float b = __shfl_sync(full, v, 5);
    float x8 = v;
    for (int o = 4; o; o >>= 1) x8 += __shfl_xor_sync(full, x8, o, 8);
    float b8 = __shfl_sync(full, v, 3, 8);
    __half h = __shfl_xor_sync(full, __float2half(v), 1);
    double dd = __shfl_down_sync(full, (double)v * 0.5, 1);
    float* o = out + threadIdx.x * 8;
    o[0] = x; o[1] = d; o[2] = u; o[3] = b; o[4] = x8; o[5] = b8; o[6] = __half2float(h); o[7] = (float)dd;
}
void st_shuffle(float* out, int threads) { DS_LAUNCH(shuffle_k, 1, threads, 0, 0, out); }

// ---- votes and warp reductions -----------------------------------------------------------------
__global__ void vote_k(unsigned* out) {
    const unsigned full = 0xffffffffu;
    int lane = threadIdx.x % 32;
    unsigned* o = out + threadIdx.x * 8;
    o[0] = __ballot_sync(full, lane % 3 == 0);
    o[1] = __any_sync(full, lane == 7);
    o[2] = __all_sync(full, lane < 32);
    o[3] = __all_sync(full, lane < 31);
    o[4] = __match_any_sync(full, lane / 4);
    o[5] = (unsigned)__reduce_add_sync(full, lane);
    o[6] = __reduce_max_sync(full, (unsigned)lane * 7 % 32);
    // a partial group: the even lanes only
    o[7] = lane % 2 == 0 ? __ballot_sync(0x55555555u, lane < 10) : 0xdeadu;
    __syncwarp();
}
void st_vote(unsigned* out, int threads) { DS_LAUNCH(vote_k, 1, threads, 0, 0, out); }

__global__ void syncthreads_ops_k(int* out) {
    int t = threadIdx.x;
    int c = __syncthreads_count(t % 3 == 0);
    int a = __syncthreads_and(t < 1000);
    int o = __syncthreads_or(t == 17);
    int z = __syncthreads_and(t != 5);
    if (t == 0) { out[0] = c; out[1] = a; out[2] = o; out[3] = z; }
}
void st_syncthreads_ops(int* out, int threads) { DS_LAUNCH(syncthreads_ops_k, 1, threads, 0, 0, out); }

// ---- atomics under contention ------------------------------------------------------------------
__global__ void atomics_k(int* cnt, float* fsum, unsigned* umax, unsigned long long* cas_cnt, double* dsum) {
    unsigned g = blockIdx.x * blockDim.x + threadIdx.x;
    atomicAdd(cnt, 1);
    atomicAdd(fsum, 0.5f);
    atomicMax(umax, g);
    atomicAdd(dsum, 0.25);
    // a CAS loop, as kernels write float max / custom atomics
    unsigned long long old = *cas_cnt, assumed;
    do {
        assumed = old;
        old = atomicCAS(cas_cnt, assumed, assumed + 2);
    } while (old != assumed);
    __syncthreads();
    atomicSub(cnt + 1, 1);
    atomicExch(cnt + 2, 7);
}
void st_atomics(int* cnt, float* fsum, unsigned* umax, unsigned long long* cas, double* dsum, int blocks, int threads) {
    DS_LAUNCH(atomics_k, blocks, threads, 0, 0, cnt, fsum, umax, cas, dsum);
}

// ---- dynamic shared memory: reverse each block's slice -----------------------------------------
__global__ void dyn_reverse_k(const float* in, float* out, int n) {
    DS_DYN_SHARED(float, buf);
    int t = threadIdx.x, base = blockIdx.x * blockDim.x;
    if (base + t < n) buf[t] = in[base + t];
    __syncthreads();
    int m = min(n - base, (int)blockDim.x);
    if (t < m) out[base + t] = buf[m - 1 - t];
}
void st_dyn_reverse(const float* in, float* out, int n, int threads) {
    DS_LAUNCH(dyn_reverse_k, ds_div_up(n, threads), threads, threads * sizeof(float), 0, in, out, n);
}
// A large dynamic allocation (needs cudaFuncSetAttribute above 48 KiB): fills and sums it.
__global__ void dyn_big_k(float* out, int words) {
    DS_DYN_SHARED(float, buf);
    for (int i = threadIdx.x; i < words; i += blockDim.x) buf[i] = 1.0f;
    __syncthreads();
    if (threadIdx.x == 0) {
        float s = 0;
        for (int i = 0; i < words; i++) s += buf[i];
        out[0] = s;
    }
}
cudaError_t st_dyn_big(float* out, size_t bytes, bool set_attribute) {
    // without: back to the default limit (the attribute persists from an earlier call)
    cudaError_t e = cudaFuncSetAttribute(dyn_big_k, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         set_attribute ? (int)bytes : 48 * 1024);
    if (e != cudaSuccess) return e;
    DS_LAUNCH(dyn_big_k, 1, 128, bytes, 0, out, (int)(bytes / 4));
    return cudaGetLastError();
}

// ---- odd block sizes: warp sums over a partial last warp, with an exact mask ----------------------
__global__ void odd_block_k(const int* in, int* out) {
    unsigned t = threadIdx.x, lane = t % 32, warp = t / 32;
    unsigned nlanes = min(32u, blockDim.x - warp * 32);
    unsigned mask = nlanes == 32 ? 0xffffffffu : (1u << nlanes) - 1;
    int v = in[blockIdx.x * blockDim.x + t];
    for (int o = 16; o; o >>= 1) {
        int y = __shfl_down_sync(mask, v, o);
        if (lane + o < nlanes) v += y;
    }
    __shared__ int wsum[32];
    if (lane == 0) wsum[warp] = v;
    __syncthreads();
    if (t == 0) {
        int s = 0;
        for (unsigned w = 0; w < (blockDim.x + 31) / 32; w++) s += wsum[w];
        out[blockIdx.x] = s;
    }
}
void st_odd_block(const int* in, int* out, int blocks, int threads) {
    DS_LAUNCH(odd_block_k, blocks, threads, 0, 0, in, out);
}

// ---- 2D / 3D grids and blocks: every element written exactly once -------------------------------
__global__ void grid3d_k(int* hits, int* coords, int nx, int ny, int nz) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    int z = blockIdx.z * blockDim.z + threadIdx.z;
    if (x >= nx || y >= ny || z >= nz) return;
    int i = (z * ny + y) * nx + x;
    atomicAdd(hits + i, 1);
    coords[i] = x + 1000 * y + 1000000 * z;
}
void st_grid3d(int* hits, int* coords, int nx, int ny, int nz, dim3 block) {
    dim3 grid(ds_div_up(nx, block.x), ds_div_up(ny, block.y), ds_div_up(nz, block.z));
    DS_LAUNCH(grid3d_k, grid, block, 0, 0, hits, coords, nx, ny, nz);
}

// ---- wmma m16n16k16: C(16x16, float) = A(16x16 half, row-major) * B(16x16 half, col-major) + C ---
__global__ void wmma_k(const __half* a, const __half* b, float* c, float* c_col) {
    using namespace nvcuda;
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> fc;
    wmma::load_matrix_sync(fa, a, 16);
    wmma::load_matrix_sync(fb, b, 16);
    wmma::load_matrix_sync(fc, c, 16, wmma::mem_row_major);
    wmma::mma_sync(fc, fa, fb, fc);
    for (int i = 0; i < fc.num_elements; i++) fc.x[i] *= 2.0f;  // element-wise: consistent in every lane
    wmma::store_matrix_sync(c, fc, 16, wmma::mem_row_major);
    wmma::store_matrix_sync(c_col, fc, 16, wmma::mem_col_major);
}
void st_wmma(const __half* a, const __half* b, float* c, float* c_col) { DS_LAUNCH(wmma_k, 1, 32, 0, 0, a, b, c, c_col); }

// ---- fp16 / bf16 intrinsics (device code path) ---------------------------------------------------
__global__ void half_math_k(const float* in, float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float x = in[i];
    __half h = __float2half_rn(x);
    __nv_bfloat16 b = __float2bfloat16_rn(x);
    float* o = out + i * 12;
    o[0] = __half2float(hexp(h));
    o[1] = __half2float(hlog(h));
    o[2] = __half2float(hsqrt(h));
    o[3] = __half2float(hrsqrt(h));
    o[4] = __half2float(hrcp(h));
    o[5] = __half2float(__hfma(h, h, h));
    o[6] = __low2float(h2exp(__halves2half2(h, h)));
    o[7] = __bfloat162float(hexp(b));
    o[8] = __bfloat162float(__hfma(b, b, b));
    o[9] = __half2float(__hmax(h, __float2half(1.0f)));
    o[10] = __half2float(htanh(h));
    o[11] = __expf(x) * rsqrtf(x) + __fdividef(x, 3.0f) + erff(x) + tanhf(x) + exp2f(x) + __frcp_rn(x) + fmaxf(x, 0.5f);
}
void st_half_math(const float* in, float* out, int n) { DS_LAUNCH(half_math_k, ds_div_up(n, 64), 64, 0, 0, in, out, n); }

// ---- shared memory poisoning: read before writing --------------------------------------------------
__global__ void poison_k(unsigned* out) {
    __shared__ unsigned s[64];
    DS_DYN_SHARED(unsigned, dyn);
    if (threadIdx.x == 0) {
        out[blockIdx.x * 2] = s[13];
        out[blockIdx.x * 2 + 1] = dyn[5];
    }
    __syncthreads();
    s[threadIdx.x] = 1234;  // dirties the block's copy: the next block must see poison again
    dyn[threadIdx.x] = 99;
}
// The same in a template kernel (g++ drops the section attribute there: found by symbol instead).
template <typename T>
__global__ void poison_tk(unsigned* out) {
    __shared__ T s[64];
    if (threadIdx.x == 0) out[blockIdx.x] = s[21];
    __syncthreads();
    s[threadIdx.x] = (T)5;
}
void st_poison(unsigned* out, int blocks) {
    DS_LAUNCH(poison_k, blocks, 64, 64 * sizeof(unsigned), 0, out);
    auto* k = poison_tk<unsigned>;
    DS_LAUNCH(k, blocks, 64, 0, 0, out + 2 * blocks);
}

// ---- a race the forward order hides: no barrier between the write and the neighbour's read --------
__global__ void racy_k(int* out) {
    __shared__ int s[64];
    s[threadIdx.x] = (int)threadIdx.x;
    // missing __syncthreads()
    out[threadIdx.x] = s[(threadIdx.x + 1) % 64];
}
void st_racy(int* out) { DS_LAUNCH(racy_k, 1, 64, 0, 0, out); }

// ---- launch configuration errors -----------------------------------------------------------------
__global__ void noop_k(int* p) {
    if (p) p[0] = 1;
}
// 16 KiB of static shared memory: with 40 KiB dynamic it exceeds the default 48 KiB budget.
__global__ void static16k_k(float* p) {
    __shared__ float big[4096];
    big[threadIdx.x] = 1.0f;
    __syncthreads();
    if (p) p[threadIdx.x] = big[(threadIdx.x + 1) % blockDim.x];
}
cudaError_t st_static_plus_dynamic(size_t dyn, size_t* static_bytes) {
    cudaFuncAttributes a;
    cudaFuncGetAttributes(&a, static16k_k);
    *static_bytes = a.sharedSizeBytes;
    DS_LAUNCH(static16k_k, 1, 32, dyn, 0, (float*)nullptr);
    return cudaGetLastError();
}
cudaError_t st_launch_config(dim3 grid, dim3 block, size_t smem) {
    DS_LAUNCH(noop_k, grid, block, smem, 0, (int*)nullptr);
    return cudaGetLastError();
}

// ---- graph capture: an increment recorded once, replayed several times ----------------------------
__global__ void inc_k(float* p, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) p[i] += 1.0f;
}
void st_inc(float* p, int n, cudaStream_t s) { DS_LAUNCH(inc_k, ds_div_up(n, 128), 128, 0, s, p, n); }

// ---- timing: a 4096-row softmax (256 threads per row: shuffles + shared + 2 barriers) -------------
__global__ void softmax_rows_k(const float* in, float* out, int cols) {
    __shared__ float red[8];
    const float* x = in + (size_t)blockIdx.x * cols;
    float* y = out + (size_t)blockIdx.x * cols;
    int t = threadIdx.x, lane = t % 32, warp = t / 32;
    float m = -INFINITY;
    for (int c = t; c < cols; c += blockDim.x) m = fmaxf(m, x[c]);
    for (int o = 16; o; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    if (lane == 0) red[warp] = m;
    __syncthreads();
    m = red[0];
    for (int w = 1; w < (int)blockDim.x / 32; w++) m = fmaxf(m, red[w]);
    __syncthreads();
    float s = 0;
    for (int c = t; c < cols; c += blockDim.x) s += __expf(x[c] - m);
    for (int o = 16; o; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) red[warp] = s;
    __syncthreads();
    s = 0;
    for (int w = 0; w < (int)blockDim.x / 32; w++) s += red[w];
    float inv = 1.0f / s;
    for (int c = t; c < cols; c += blockDim.x) y[c] = __expf(x[c] - m) * inv;
}
void st_softmax_rows(const float* in, float* out, int rows, int cols) {
    DS_LAUNCH(softmax_rows_k, rows, 256, 0, 0, in, out, cols);
}
// Pure switching: `iters` barriers per thread, nothing else.
__global__ void barrier_loop_k(int iters, int* out) {
    for (int i = 0; i < iters; i++) __syncthreads();
    if (threadIdx.x == 0 && blockIdx.x == 0) out[0] = iters;
}
void st_barrier_loop(int blocks, int threads, int iters, int* out) {
    DS_LAUNCH(barrier_loop_k, blocks, threads, 0, 0, iters, out);
}

// ---- negative tests (run in a forked child; each must abort with a clear message) ---------------
// Half of warp 0 skips the barrier and waits in a full-warp shuffle for lanes that wait at the
// barrier for them: a genuine deadlock.
__global__ void deadlock_k(float* out) {
    float v = threadIdx.x;
    if (threadIdx.x < 16) v = __shfl_sync(0xffffffffu, v, 20);
    else __syncthreads();
    out[threadIdx.x] = v;
}
void st_deadlock(float* out) { DS_LAUNCH(deadlock_k, 1, 64, 0, 0, out); }
__global__ void oob_write_k(float* p, int n, int beyond) {
    if (threadIdx.x == 3) p[n + beyond] = 1.0f;
}
void st_oob_write(float* p, int n, int beyond) { DS_LAUNCH(oob_write_k, 2, 32, 0, 0, p, n, beyond); }
// Lanes 16..31 exit; lanes 0..15 shuffle with a full mask (names the exited lanes).
__global__ void exited_lane_k(float* out) {
    if (threadIdx.x >= 16) return;
    float v = __shfl_xor_sync(0xffffffffu, (float)threadIdx.x, 1);
    out[threadIdx.x] = v;
}
void st_exited_lane(float* out) { DS_LAUNCH(exited_lane_k, 1, 32, 0, 0, out); }
// Early return before a barrier the others wait at (permitted by the permissive mode).
__global__ void early_exit_k(float* out) {
    __shared__ float s[64];
    if (threadIdx.x >= 48) return;
    s[threadIdx.x] = 1.0f;
    __syncthreads();
    out[threadIdx.x] = s[(threadIdx.x + 1) % 48];
}
void st_early_exit(float* out) { DS_LAUNCH(early_exit_k, 1, 64, 0, 0, out); }
// The same with a counting barrier: released by the last exit (forward order) or the last arrival.
__global__ void early_exit_count_k(int* out) {
    if (threadIdx.x >= 48) return;
    out[threadIdx.x] = __syncthreads_count(threadIdx.x % 2);
}
void st_early_exit_count(int* out) { DS_LAUNCH(early_exit_count_k, 1, 64, 0, 0, out); }
// A deep local array: overflows the 64 KiB fiber stack.
__global__ void stack_overflow_k(float* out) {
    volatile float big[64 * 1024];
    for (int i = 0; i < 64 * 1024; i += 1024) big[i] = (float)i;
    out[threadIdx.x] = big[threadIdx.x];
}
void st_stack_overflow(float* out) { DS_LAUNCH(stack_overflow_k, 1, 32, 0, 0, out); }
// Two different __syncthreads calls meet (allowed by the permissive mode, as by the hardware;
// strict mode rejects divergent barriers).
__global__ void divergent_barrier_k(float* out) {
    if (threadIdx.x < 32) {
        __syncthreads();
    } else {
        __syncthreads();
    }
    out[threadIdx.x] = 1.0f;
}
void st_divergent_barrier(float* out) { DS_LAUNCH(divergent_barrier_k, 1, 64, 0, 0, out); }
// A failed assert() inside a kernel (asserts on even in a Release build).
#undef NDEBUG
#include <assert.h>
__global__ void assert_k(int* p) { assert(p[threadIdx.x] == 0); }
void st_assert(int* p) { DS_LAUNCH(assert_k, 1, 8, 0, 0, p); }

// ---- compile coverage: intrinsics kernels commonly use (run once, results checked loosely) -------
__global__ void intrinsics_k(float* out, const float4* v4, __half2* h2acc) {
    float x = 0.75f;
    __half h = __float2half(x), g = __float2half(0.5f);
    __half2 h2 = __floats2half2_rn(x, 0.5f);
    __nv_bfloat16 b = __float2bfloat16(x);
    __nv_bfloat162 b2 = __floats2bfloat162_rn(x, 0.5f);
    float acc = 0;
    acc += __half2float(__hadd(h, g)) + __half2float(__hsub(h, g)) + __half2float(__hmul(h, g));
    acc += __half2float(__hdiv(h, g)) + __half2float(__hneg(h)) + __half2float(__habs(h));
    acc += __half2float(__hmin(h, g)) + __half2float(__hfma_relu(h, g, h)) + (__hlt(h, g) ? 1.f : 0.f);
    float2 f2 = __half22float2(__hfma2(h2, h2, h2));
    acc += f2.x + f2.y + __low2float(h2exp(h2)) + __high2float(h2rsqrt(h2)) + __low2float(__hmax2(h2, h2));
    acc += __bfloat162float(hsqrt(b)) + __bfloat162float(__hmax(b, b)) + __low2float(__hfma2(b2, b2, b2));
    acc += __low2float(h2tanh(b2)) + (float)__half2int_rn(__float2half(2.5f)) + __bfloat162float(hrcp(b));
    acc += __int_as_float(__float_as_int(1.0f)) + __uint_as_float(__float_as_uint(1.0f)) + (float)__popc(7u);
    acc += (float)__clz(1) + (float)__ffs(8) + __saturatef(2.0f) + __log2f(4.0f) + __powf(2.0f, 3.0f);
    acc += (float)min(3, 4u) + max(1.5f, 2.0) + fminf(1.f, 2.f) + copysignf(1.f, -2.f) + (float)__float2int_rn(2.5f);
    float4 q = __ldg(v4 + threadIdx.x % 2);
    acc += q.x + q.w;
    float s, c;
    __sincosf(0.f, &s, &c);
    acc += s + c;
    __half2 sh = __shfl_xor_sync(0xffffffffu, h2, 1);
    __nv_bfloat16 sb = __shfl_down_sync(0xffffffffu, b, 1);
    acc += __low2float(sh) + __bfloat162float(sb) + (float)__shfl_sync(0xffffffffu, 7LL, 0);
    atomicAdd(h2acc, __floats2half2_rn(1.0f, 2.0f));
    atomicAdd(out + 32, 1.0);  // a double argument converts, as with CUDA's overloads
    out[threadIdx.x] = acc;
}
float st_intrinsics() {
    float* out;
    float4* v4;
    __half2* h2;
    cudaMalloc((void**)&out, 33 * sizeof(float));
    cudaMalloc((void**)&v4, 2 * sizeof(float4));
    cudaMalloc((void**)&h2, sizeof(__half2));
    cudaMemset(out, 0, 33 * sizeof(float));
    cudaMemset(v4, 0, 2 * sizeof(float4));
    cudaMemset(h2, 0, sizeof(__half2));
    DS_LAUNCH(intrinsics_k, 1, 32, 0, 0, out, (const float4*)v4, h2);
    float r[33];
    __half2 hh;
    cudaMemcpy(r, out, sizeof r, cudaMemcpyDeviceToHost);
    cudaMemcpy(&hh, h2, sizeof hh, cudaMemcpyDeviceToHost);
    cudaFree(out);
    cudaFree(v4);
    cudaFree(h2);
    // lanes agree, the float atomics counted 32, the __half2 atomics summed (32, 64)
    for (int i = 1; i < 32; i++)
        if (r[i] != r[0]) return -1.0f;
    if (r[32] != 32.0f || __low2float(hh) != 32.0f || __high2float(hh) != 64.0f) return -2.0f;
    return r[0];
}

// A spin-wait on shared memory with __nanosleep back-off: thread 0 waits for thread 37's flag.
__global__ void spin_k(int* out) {
    __shared__ volatile int flag;
    if (threadIdx.x == 0) flag = 0;
    __syncthreads();
    if (threadIdx.x == 0) {
        int spins = 0;
        while (flag == 0) { __nanosleep(100); spins++; }
        out[0] = flag;
        out[1] = spins > 0;
    } else if (threadIdx.x == 37) {
        flag = 42;
    }
}
void st_spin(int* out) { DS_LAUNCH(spin_k, 1, 64, 0, 0, out); }

// __constant__ memory through cudaMemcpyToSymbol, and cudaMemcpy2D of a sub-matrix.
__constant__ float c_coef[4];
__global__ void constant_k(float* out) { out[threadIdx.x] = c_coef[threadIdx.x % 4] * 2.0f; }
bool st_constant_and_2d() {
    const float coef[4] = {1, 2, 3, 4};
    if (cudaMemcpyToSymbol(c_coef, coef, sizeof coef) != cudaSuccess) return false;
    float back[4] = {0};
    if (cudaMemcpyFromSymbol(back, c_coef, sizeof back) != cudaSuccess || back[3] != 4.0f) return false;
    float* out;
    cudaMalloc((void**)&out, 8 * sizeof(float));
    DS_LAUNCH(constant_k, 1, 8, 0, 0, out);
    float h[8];
    cudaMemcpy(h, out, sizeof h, cudaMemcpyDeviceToHost);
    bool ok = h[0] == 2.0f && h[7] == 8.0f;
    // a 3x2 window of a 5x4 host matrix into a 3-wide device matrix, and back
    float m[20], w[6] = {0};
    for (int i = 0; i < 20; i++) m[i] = (float)i;
    float* d;
    cudaMalloc((void**)&d, 6 * sizeof(float));
    ok = ok && cudaMemcpy2D(d, 3 * sizeof(float), m + 1, 5 * sizeof(float), 3 * sizeof(float), 2,
                            cudaMemcpyHostToDevice) == cudaSuccess;
    ok = ok && cudaMemcpy(w, d, sizeof w, cudaMemcpyDeviceToHost) == cudaSuccess;
    ok = ok && w[0] == 1 && w[2] == 3 && w[3] == 6 && w[5] == 8;
    cudaFree(d);
    cudaFree(out);
    return ok;
}
