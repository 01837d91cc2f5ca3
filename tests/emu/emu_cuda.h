// emu_cuda.h — force-included (g++ -include) into every .cu file the SIMT emulator runs on the CPU.
// See docs/cuda_emulator.md. Order matters:
//   1. the CUDA keywords, BEFORE any CUDA header (crt/host_defines.h defines only what is undefined);
//   2. the real CUDA headers (types, cudaError_t, dim3, __half, __nv_bfloat16 and their host code);
//   3. the built-in variables AFTER cuda_runtime.h (it uses `gridDim` as a parameter name);
//   4. what device code needs that the host headers lack: barriers, warp collectives, atomics,
//      fp16/bf16 intrinsics, fast-math intrinsics, min/max, nvcuda::wmma, and the launch entry.
#ifndef DS_EMU_CUDA_H
#define DS_EMU_CUDA_H

#ifndef __cplusplus
#error "emu_cuda.h is C++ (compile the .cu files with g++ -std=c++17 -x c++)"
#endif

#define DS_EMULATOR 1

// ---- 1. keywords -------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __launch_bounds__(...)
#define __grid_constant__
#define __managed__
#define __constant__  // a plain host global; cudaMemcpyToSymbol below copies into it
// A __shared__ variable becomes a function-local (or file-local) static in its own linker section:
// every fiber (CUDA thread) of the running block sees the same object (only one block runs at a
// time, so one copy per variable is enough), and the runtime finds the section through
// __start_emu_shared/__stop_emu_shared to poison it (0xFF) before each block. g++ drops the section
// of statics in template instantiations: those are found through the symbol table instead
// (emu_symbols.cpp).
#define __shared__ static __attribute__((section("emu_shared")))
// `extern __shared__` (dynamic shared memory) is not supported: use DS_DYN_SHARED.

// ---- 2. the real headers -----------------------------------------------------------------------
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>

// ---- 3. built-in variables ---------------------------------------------------------------------
#include "emu_abi.h"

#define threadIdx (static_cast<const uint3&>(emu_cur->tid))
#define blockIdx (static_cast<const uint3&>(emu_block_idx))
#define blockDim (static_cast<const dim3&>(emu_block_dim))
#define gridDim (static_cast<const dim3&>(emu_grid_dim))
// A constant, not a macro: cudaDeviceProp has a member named warpSize.
static constexpr int warpSize = 32;

// ---- 4. launch ----------------------------------------------------------------------------------
// emu_launch — what DS_LAUNCH becomes under DS_EMULATOR. The arguments are converted to the
// kernel's parameter types once (as the real runtime copies them at launch); each thread then
// calls the kernel with its own copy of every parameter.
template <typename... KArgs, typename... Args>
void emu_launch(const char* name, void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t dyn_smem,
                cudaStream_t stream, Args&&... args) {
    static_assert(sizeof...(KArgs) == sizeof...(Args), "DS_LAUNCH: wrong number of kernel arguments");
    using Tup = std::tuple<std::decay_t<KArgs>...>;
    auto params = std::make_shared<Tup>(std::forward<Args>(args)...);
    emu_launch_erased(name, (const void*)kernel, grid, block, dyn_smem, stream,
                      [kernel, params]() { std::apply(kernel, *params); });
}

// The C++ overloads cuda_runtime.h offers only to nvcc (#if __CUDACC__): kernels passed by
// pointer, __constant__/__device__ symbols passed by reference (plain host globals here).
template <typename T> inline cudaError_t cudaFuncSetAttribute(T* fn, cudaFuncAttribute attr, int value) {
    return ::cudaFuncSetAttribute((const void*)fn, attr, value);
}
template <typename T> inline cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* a, T* fn) {
    return ::cudaFuncGetAttributes(a, (const void*)fn);
}
template <typename T> inline cudaError_t cudaFuncSetCacheConfig(T*, cudaFuncCache) { return cudaSuccess; }
template <typename T>
inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, T* fn, int block, size_t dyn_smem) {
    return ::cudaOccupancyMaxActiveBlocksPerMultiprocessor(n, (const void*)fn, block, dyn_smem);
}
template <typename T>
inline cudaError_t cudaMemcpyToSymbol(const T& sym, const void* src, size_t n, size_t off = 0,
                                      cudaMemcpyKind = cudaMemcpyHostToDevice) {
    if (off + n > sizeof(T)) return cudaErrorInvalidValue;
    std::memcpy((char*)&sym + off, src, n);
    return cudaSuccess;
}
template <typename T>
inline cudaError_t cudaMemcpyToSymbolAsync(const T& sym, const void* src, size_t n, size_t off = 0,
                                           cudaMemcpyKind k = cudaMemcpyHostToDevice, cudaStream_t = 0) {
    return cudaMemcpyToSymbol(sym, src, n, off, k);
}
template <typename T>
inline cudaError_t cudaMemcpyFromSymbol(void* dst, const T& sym, size_t n, size_t off = 0,
                                        cudaMemcpyKind = cudaMemcpyDeviceToHost) {
    if (off + n > sizeof(T)) return cudaErrorInvalidValue;
    std::memcpy(dst, (const char*)&sym + off, n);
    return cudaSuccess;
}
template <typename T> inline cudaError_t cudaGetSymbolAddress(void** p, const T& sym) {
    *p = (void*)&sym;
    return cudaSuccess;
}
template <typename T> inline cudaError_t cudaGetSymbolSize(size_t* n, const T&) {
    *n = sizeof(T);
    return cudaSuccess;
}

// ---- barriers, fences --------------------------------------------------------------------------
// Macros, so each barrier knows its source line: deadlock reports say where threads wait, and strict
// mode rejects one barrier reached from different __syncthreads calls (divergent barriers).
#define __syncthreads() emu_syncthreads_op(0, 0, __FILE__, __LINE__)
#define __syncthreads_count(p) emu_syncthreads_op(0, (p), __FILE__, __LINE__)
#define __syncthreads_and(p) emu_syncthreads_op(1, (p), __FILE__, __LINE__)
#define __syncthreads_or(p) emu_syncthreads_op(2, (p), __FILE__, __LINE__)
// One OS thread runs every fiber and switches only at barriers/collectives: fences only need to
// stop the compiler from caching memory across them.
inline void __threadfence() { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_system() { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
[[noreturn]] inline void __trap() { emu_fail("__trap() called"); }
inline long long clock64() { static long long c; return c += 1000; }
// A spin loop backing off with __nanosleep lets the other threads of the block run (a yield); a
// plain spin on memory never does (docs/cuda_emulator.md, kernel rules).
inline void __nanosleep(unsigned) { emu_yield(); }

// ---- warp collectives --------------------------------------------------------------------------
template <typename T> inline unsigned long long emu_bits_(T v) {
    static_assert(sizeof(T) <= 8, "warp collectives move at most 8 bytes");
    unsigned long long b = 0;
    std::memcpy(&b, &v, sizeof(T));
    return b;
}
template <typename T> inline T emu_from_bits_(unsigned long long b) {
    T v;
    std::memcpy((void*)&v, &b, sizeof(T));
    return v;
}
inline void __syncwarp(unsigned mask = 0xffffffffu) { emu_warp_op(EMU_W_SYNC, mask, 0, 0, 32); }
template <typename T> inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    return emu_from_bits_<T>(emu_warp_op(EMU_W_SHFL, mask, emu_bits_(v), src, width));
}
template <typename T> inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return emu_from_bits_<T>(emu_warp_op(EMU_W_UP, mask, emu_bits_(v), (int)delta, width));
}
template <typename T> inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return emu_from_bits_<T>(emu_warp_op(EMU_W_DOWN, mask, emu_bits_(v), (int)delta, width));
}
template <typename T> inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    return emu_from_bits_<T>(emu_warp_op(EMU_W_XOR, mask, emu_bits_(v), lane_mask, width));
}
inline unsigned __ballot_sync(unsigned mask, int p) { return (unsigned)emu_warp_op(EMU_W_BALLOT, mask, p != 0, 0, 32); }
inline int __any_sync(unsigned mask, int p) { return (int)emu_warp_op(EMU_W_ANY, mask, p != 0, 0, 32); }
inline int __all_sync(unsigned mask, int p) { return (int)emu_warp_op(EMU_W_ALL, mask, p != 0, 0, 32); }
inline unsigned __activemask() { return emu_activemask(); }
template <typename T> inline unsigned __match_any_sync(unsigned mask, T v) {
    return (unsigned)emu_warp_op(EMU_W_MATCH_ANY, mask, emu_bits_(v), 0, 32);
}
inline int __reduce_add_sync(unsigned m, int v) { return (int)emu_warp_op(EMU_W_RED_ADD, m, (unsigned)v, 0, 32); }
inline unsigned __reduce_add_sync(unsigned m, unsigned v) { return (unsigned)emu_warp_op(EMU_W_RED_ADD, m, v, 0, 32); }
inline int __reduce_min_sync(unsigned m, int v) { return (int)emu_warp_op(EMU_W_RED_MIN, m, (unsigned)v, 0, 32); }
inline unsigned __reduce_min_sync(unsigned m, unsigned v) { return (unsigned)emu_warp_op(EMU_W_RED_UMIN, m, v, 0, 32); }
inline int __reduce_max_sync(unsigned m, int v) { return (int)emu_warp_op(EMU_W_RED_MAX, m, (unsigned)v, 0, 32); }
inline unsigned __reduce_max_sync(unsigned m, unsigned v) { return (unsigned)emu_warp_op(EMU_W_RED_UMAX, m, v, 0, 32); }
inline unsigned __reduce_and_sync(unsigned m, unsigned v) { return (unsigned)emu_warp_op(EMU_W_RED_AND, m, v, 0, 32); }
inline unsigned __reduce_or_sync(unsigned m, unsigned v) { return (unsigned)emu_warp_op(EMU_W_RED_OR, m, v, 0, 32); }
inline unsigned __reduce_xor_sync(unsigned m, unsigned v) { return (unsigned)emu_warp_op(EMU_W_RED_XOR, m, v, 0, 32); }

// ---- atomics -----------------------------------------------------------------------------------
// All fibers run on one OS thread and switch only inside barriers and collectives, so a plain
// read-modify-write cannot be interleaved: it is atomic with respect to every other CUDA thread.
template <typename T> struct emu_nd_ { typedef T type; };  // non-deduced: atomicAdd(float*, 1.0) converts
template <typename T> using emu_nd = typename emu_nd_<T>::type;
template <typename T> inline T atomicAdd(T* p, emu_nd<T> v) { T o = *p; *p = o + v; return o; }
inline __half2 atomicAdd(__half2* p, __half2 v) { __half2 o = *p; *p = __hadd2(o, v); return o; }
inline __nv_bfloat162 atomicAdd(__nv_bfloat162* p, __nv_bfloat162 v) {
    __nv_bfloat162 o = *p; *p = __hadd2(o, v); return o;
}
template <typename T> inline T atomicSub(T* p, emu_nd<T> v) { T o = *p; *p = o - v; return o; }
template <typename T> inline T atomicExch(T* p, emu_nd<T> v) { T o = *p; *p = v; return o; }
template <typename T> inline T atomicMin(T* p, emu_nd<T> v) { T o = *p; *p = v < o ? v : o; return o; }
template <typename T> inline T atomicMax(T* p, emu_nd<T> v) { T o = *p; *p = v > o ? v : o; return o; }
template <typename T> inline T atomicAnd(T* p, emu_nd<T> v) { T o = *p; *p = o & v; return o; }
template <typename T> inline T atomicOr(T* p, emu_nd<T> v) { T o = *p; *p = o | v; return o; }
template <typename T> inline T atomicXor(T* p, emu_nd<T> v) { T o = *p; *p = o ^ v; return o; }
template <typename T> inline T atomicCAS(T* p, emu_nd<T> cmp, emu_nd<T> v) { T o = *p; if (o == cmp) *p = v; return o; }
inline unsigned atomicInc(unsigned* p, unsigned lim) { unsigned o = *p; *p = o >= lim ? 0 : o + 1; return o; }
inline unsigned atomicDec(unsigned* p, unsigned lim) { unsigned o = *p; *p = (o == 0 || o > lim) ? lim : o - 1; return o; }
#define atomicAdd_block atomicAdd
#define atomicAdd_system atomicAdd
#define atomicMax_block atomicMax
#define atomicMin_block atomicMin
#define atomicCAS_block atomicCAS
#define atomicExch_block atomicExch

// ---- loads/stores with cache hints: plain memory on the host -----------------------------------
template <typename T> inline T __ldg(const T* p) { return *p; }
template <typename T> inline T __ldca(const T* p) { return *p; }
template <typename T> inline T __ldcg(const T* p) { return *p; }
template <typename T> inline T __ldcs(const T* p) { return *p; }
template <typename T> inline T __ldlu(const T* p) { return *p; }
template <typename T> inline T __ldcv(const T* p) { return *p; }
template <typename T> inline void __stcg(T* p, T v) { *p = v; }
template <typename T> inline void __stcs(T* p, T v) { *p = v; }
template <typename T> inline void __stwb(T* p, T v) { *p = v; }
template <typename T> inline void __stwt(T* p, T v) { *p = v; }

// ---- float intrinsics (exact host math: the emulator is more precise than the GPU) -------------
inline float __expf(float x) { return expf(x); }
inline float __exp10f(float x) { return exp10f(x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __log10f(float x) { return log10f(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline void __sincosf(float x, float* s, float* c) { *s = sinf(x); *c = cosf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float rcbrtf(float x) { return 1.0f / cbrtf(x); }
inline float normcdff(float x) { return 0.5f * erfcf(-x * 0.70710678118654752f); }
inline double normcdf(double x) { return 0.5 * erfc(-x * 0.70710678118654752); }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : (x != x ? 0.f : x)); }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __frsqrt_rn(float x) { return 1.0f / sqrtf(x); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
inline int __float2int_rn(float x) { return (int)nearbyintf(x); }
inline int __float2int_rz(float x) { return (int)x; }
inline int __float2int_rd(float x) { return (int)floorf(x); }
inline int __float2int_ru(float x) { return (int)ceilf(x); }
inline unsigned __float2uint_rn(float x) { return (unsigned)nearbyintf(x); }
inline unsigned __float2uint_rz(float x) { return (unsigned)x; }
inline long long __float2ll_rn(float x) { return (long long)nearbyintf(x); }
inline float __int2float_rn(int x) { return (float)x; }
inline float __uint2float_rn(unsigned x) { return (float)x; }
inline int __float_as_int(float x) { return emu_from_bits_<int>(emu_bits_(x)); }
inline unsigned __float_as_uint(float x) { return emu_from_bits_<unsigned>(emu_bits_(x)); }
inline float __int_as_float(int x) { return emu_from_bits_<float>(emu_bits_(x)); }
inline float __uint_as_float(unsigned x) { return emu_from_bits_<float>(emu_bits_(x)); }
inline long long __double_as_longlong(double x) { return emu_from_bits_<long long>(emu_bits_(x)); }
inline double __longlong_as_double(long long x) { return emu_from_bits_<double>(emu_bits_(x)); }

// ---- integer intrinsics ------------------------------------------------------------------------
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x ? __builtin_clz((unsigned)x) : 32; }
inline int __clzll(long long x) { return x ? __builtin_clzll((unsigned long long)x) : 64; }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
    unsigned r = 0;
    for (int i = 0; i < 32; i++) r |= ((x >> i) & 1u) << (31 - i);
    return r;
}
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
inline int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
inline int __mul24(int a, int b) { return ((a << 8) >> 8) * ((b << 8) >> 8); }
inline unsigned __umul24(unsigned a, unsigned b) { return (a & 0xffffffu) * (b & 0xffffffu); }
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
    unsigned long long v = ((unsigned long long)y << 32) | x;
    unsigned r = 0;
    for (int i = 0; i < 4; i++) r |= (unsigned)((v >> (8 * ((s >> (4 * i)) & 7))) & 0xff) << (8 * i);
    return r;
}

// ---- min / max (CUDA's device overloads; std::min would reject mixed types) --------------------
template <typename A, typename B,
          typename = std::enable_if_t<std::is_arithmetic<A>::value && std::is_arithmetic<B>::value>>
inline std::common_type_t<A, B> min(A a, B b) {
    using C = std::common_type_t<A, B>;
    if constexpr (std::is_floating_point<C>::value) return std::fmin((C)a, (C)b);
    else return (C)a < (C)b ? (C)a : (C)b;
}
template <typename A, typename B,
          typename = std::enable_if_t<std::is_arithmetic<A>::value && std::is_arithmetic<B>::value>>
inline std::common_type_t<A, B> max(A a, B b) {
    using C = std::common_type_t<A, B>;
    if constexpr (std::is_floating_point<C>::value) return std::fmax((C)a, (C)b);
    else return (C)a > (C)b ? (C)a : (C)b;
}

#include "emu_half.h"
#include "emu_wmma.h"

#endif
