// cuda_attention.cuh — internals shared by the attention sources (kernels/cuda/cuda_attention*.cu).
//
//   cuda_attention.cu        ds_cuda_attention: picks a kernel per batch range; the host-probe /
//                            tile path (scores, softmax, capture, on_probs, P·V per row tile)
//   cuda_attention_flash.cu  flash self-attention: scalar fp32 kernel, WMMA tensor-core kernel
//   cuda_attention_cross.cu  short-key attention (text tokens) with the in-kernel capture
// docs/cuda_attention.md explains the tiling and shared memory use.
#ifndef DS_CUDA_ATTENTION_CUH
#define DS_CUDA_ATTENTION_CUH

#include "cuda_common.cuh"

// One attention call restricted to batches [b0, b0 + nb); pointers are typed device addresses
// (T* of the backend's activation type) already offset by nothing but the handle mapping.
struct ds_attn_args {
    const void* q;  // (B, Lq, ·) row stride qs elements; head h at column h·dh
    const void* k;  // (B, Lk, ·) row stride ks
    const void* v;  // (B, Lk, ·) row stride vs
    void* out;      // (B, Lq, heads·dh) dense
    int64_t qs, ks, vs;
    int b0, nb;
    int Lq, Lk, heads, dh;
    float scale;
    int causal;
};

// The in-op capture with the device address of its fp32 sum (backend.h's ds_attn_capture).
struct ds_attn_cap {
    float* sum;  // (batch_end − batch_begin, per_head ? heads : 1, Lq, Lk) fp32 device memory
    int per_head;
    uint64_t head_mask;  // bit h selects head h; heads ≥ 64 always selected
    float weight;
    int batch_begin, batch_end;
};

__host__ __device__ inline bool ds_attn_cap_head(uint64_t mask, int h) {
    return h >= 64 || ((mask >> h) & 1u);
}

// Shared tile dst (R × dp) = rows [0, n) of the strided global tile src (row stride `stride`,
// dh elements a row), zeros in rows ≥ n and columns ≥ dh, by the whole block. vec: 16-byte loads
// (dh and stride multiples of 8 elements, src 16-byte aligned: every SD shape).
template <typename T>
__device__ __forceinline__ void ds_attn_load_tile(T* dst, const T* src, int64_t stride, int n,
                                                  int R, int dh, int dp, bool vec) {
    const int tid = threadIdx.x, nt = blockDim.x;
    if (vec) {
        const int cpr = dp / 8;  // 16-byte chunks per shared row
        for (int i = tid; i < R * cpr; i += nt) {
            const int r = i / cpr, c = (i - r * cpr) * 8;
            uint4 x = make_uint4(0u, 0u, 0u, 0u);  // all-zero bits: +0 in fp16 and bf16
            if (r < n && c < dh) x = *(const uint4*)(src + (int64_t)r * stride + c);
            *(uint4*)(dst + (size_t)r * dp + c) = x;
        }
    } else {
        const T zero = ds_from_f32<T>(0.0f);
        for (int i = tid; i < R * dp; i += nt) {
            const int r = i / dp, d = i - r * dp;
            dst[i] = (r < n && d < dh) ? src[(int64_t)r * stride + d] : zero;
        }
    }
}

// Whether ds_attn_load_tile may use 16-byte loads for q, k and v of these arguments (2-byte types).
static inline bool ds_attn_vec_ok(const ds_attn_args& a) {
    auto al16 = [](const void* p) { return ((uintptr_t)p & 15) == 0; };
    return a.dh % 8 == 0 && a.qs % 8 == 0 && a.ks % 8 == 0 && a.vs % 8 == 0 && al16(a.q) &&
           al16(a.k) && al16(a.v);
}

// Flash self-attention (cuda_attention_flash.cu). variant: 1 scalar fp32, 2 WMMA (fp16/bf16 only).
void ds_attn_flash(ds_backend* be, const ds_attn_args& a, int variant);
// Whether the WMMA kernel applies to this dtype / head size.
bool ds_attn_flash_wmma_ok(ds_act_dtype dt, int dh);

// Short-key attention with capture (cuda_attention_cross.cu). cap may be NULL. Returns false
// (and launches nothing) when all Lk keys and values of a head do not fit in shared memory.
bool ds_attn_cross_fits(ds_backend* be, int Lk, int dh, bool headsum);
void ds_attn_cross(ds_backend* be, const ds_attn_args& a, const ds_attn_cap* cap);

// Sets the opt-in dynamic shared memory limit of `kernel` once it needs more than 48 KiB.
template <typename K> static inline void ds_attn_smem_optin(K* kernel, size_t bytes) {
    if (bytes > 48 * 1024)
        DS_CUDA_CHECK(cudaFuncSetAttribute((const void*)kernel,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

// Test hook: force a path for every following ds_cuda_attention call.
//   0 automatic; 1 flash scalar; 2 flash WMMA (falls back to scalar where it does not apply);
//   3 cross kernel (when it fits); 4 tile path (the host-probe path, without a callback)
void ds_cuda_attention_force_path(int path);
// Test hook: the flash WMMA kernel's lazy-rescaling threshold in log2 units (default 8; 0 makes it
// rescale whenever a row max grows, which exercises the rescale path on any input).
void ds_cuda_attention_set_rescale_threshold(float th);
// Test hook: how many kernel launches each path made since program start, indexed by
// ds_attn_path (lets the tests check which kernel actually ran a case).
enum ds_attn_path {
    DS_ATTN_PATH_CROSS,       // short-key kernel, scalar fp32
    DS_ATTN_PATH_SCALAR,      // flash, scalar
    DS_ATTN_PATH_WMMA,        // flash, tensor cores
    DS_ATTN_PATH_TILE,        // host-probe / tile path
    DS_ATTN_PATH_CROSS_WMMA,  // short-key kernel, tensor cores
    DS_ATTN_NPATHS
};
extern long ds_attn_path_launches[DS_ATTN_NPATHS];

#endif
