// cuda_attention_cross.cu — attention with few keys (cross-attention over the 77 text tokens, the
// CLIP text encoder's causal 77 × 77 self-attention) and the in-kernel heatmap capture.
//
// One block = a tile of TQ query rows × all Lk keys of one head (or of every head in turn, see
// below). K and V of the head sit in shared memory (fp32 in the scalar kernel, the input type in
// the WMMA one), so a block computes exact softmax rows with no online rescaling, and the
// normalized probabilities P (TQ × Lk, shared memory) are at hand before they multiply V: the
// capture is a handful of adds per probability, in the same pass, without a probability tensor in
// global memory.
//
// Phases per head (each separated by __syncthreads):
//   1. stage K, V (Lk × dh) and the Q tile (TQ × dh) as fp32; K rows padded to dh + 1 floats so
//      that consecutive threads (consecutive keys) read different banks;
//   2. S = scale · Q Kᵀ, one dot product per thread (r, j), j fastest;
//   3. softmax: one warp per row, lanes over keys, shuffles for max and sum; causal keys j > i
//      get probability 0; capture: sum += weight · P (per head: straight into the global sum;
//      head-summed: into a per-block fp32 accumulator, added once at the end);
//   4. O = P · V, one output element per thread (r, d), d fastest (coalesced stores).
//
// Two variants with the same phases and the same capture: a scalar fp32 kernel (fp32 activations,
// odd head sizes) and, for fp16 / bf16, a tensor-core kernel (WMMA m16n16k16, fp32 accumulation)
// for Q·Kᵀ and P·V, with the keys padded to a multiple of 16 (77 → 80) and the head dim too
// (40 → 48). In both, the probabilities that are captured are the fp32 ones; the WMMA kernel
// rounds P to the input type only for P·V.
//
// Head-summed capture without atomics: when the capture sums heads (per_head == 0) a block loops
// over all heads of its query tile, so each element of the sum has exactly one writer and the
// head order is fixed: the result is the same on every run. Otherwise heads are spread over
// gridDim.y (more blocks, same arithmetic).
#include "cuda_attention.cuh"

#ifndef DS_EMULATOR
#include <mma.h>
#endif

#define CROSS_THREADS 256
#define CROSS_MAX_TQ 64

// Floats of dynamic shared memory for a tile of tq rows.
static size_t cross_smem_floats(int tq, int Lk, int dh, bool headsum) {
    size_t f = (size_t)Lk * (dh + 1) + (size_t)Lk * dh + (size_t)tq * dh + (size_t)tq * Lk;
    if (headsum) f += (size_t)tq * Lk;
    return f;
}

// The largest tile (64, 32 or 16 rows) whose shared memory fits; 0 when none does.
static int cross_tile_rows(ds_backend* be, int Lk, int dh, bool headsum) {
    const size_t lim = ds_cuda_max_smem(be);
    for (int tq = CROSS_MAX_TQ; tq >= 16; tq /= 2)
        if (cross_smem_floats(tq, Lk, dh, headsum) * sizeof(float) <= lim) return tq;
    return 0;
}

bool ds_attn_cross_fits(ds_backend* be, int Lk, int dh, bool headsum) {
    return cross_tile_rows(be, Lk, dh, headsum) > 0;
}

// grid (ceil(Lq / tq), heads / hpb, nb), block CROSS_THREADS. Batch b = b0 + blockIdx.z; heads
// [blockIdx.y · hpb, + hpb). hpb = heads when the capture sums heads (headsum), else 1.
template <typename T>
__global__ void cross_attn_kernel(const T* __restrict__ q,  // (B, Lq, ·) stride qs
                                  const T* __restrict__ k,  // (B, Lk, ·) stride ks
                                  const T* __restrict__ v,  // (B, Lk, ·) stride vs
                                  T* __restrict__ out,      // (B, Lq, heads·dh)
                                  int64_t qs, int64_t ks, int64_t vs, int b0, int Lq, int Lk,
                                  int heads, int dh, float scale, int causal, int tq, int hpb,
                                  float* __restrict__ cap_sum,  // NULL: no capture
                                  int cap_per_head, uint64_t cap_mask, float cap_w, int cap_b0,
                                  int cap_b1) {
    DS_DYN_SHARED(float, smem);
    float* Ks = smem;                          // Lk × (dh + 1)
    float* Vs = Ks + (size_t)Lk * (dh + 1);    // Lk × dh
    float* Qs = Vs + (size_t)Lk * dh;          // tq × dh
    float* Ss = Qs + (size_t)tq * dh;          // tq × Lk: scores, then probabilities
    float* Acc = Ss + (size_t)tq * Lk;         // tq × Lk: head-summed capture (headsum only)

    const int tid = threadIdx.x, nt = blockDim.x;
    const int lane = tid & 31, warp = tid >> 5, nwarps = nt >> 5;
    const int b = b0 + blockIdx.z;
    const int q0 = blockIdx.x * tq;
    const int nr = min(tq, Lq - q0);
    const int64_t ldo = (int64_t)heads * dh;
    const bool cap_on = cap_sum != NULL && b >= cap_b0 && b < cap_b1;
    const bool headsum = cap_on && !cap_per_head;
    const int nh = cap_per_head ? heads : 1;

    if (headsum)
        for (int i = tid; i < nr * Lk; i += nt) Acc[i] = 0.0f;

    for (int hh = 0; hh < hpb; hh++) {
        const int h = blockIdx.y * hpb + hh;
        __syncthreads();  // the previous head's phase 4 is done with Ss and Vs
        // ---- 1. stage K, V, Q as fp32
        const T* kb = k + (int64_t)b * Lk * ks + (int64_t)h * dh;
        const T* vb = v + (int64_t)b * Lk * vs + (int64_t)h * dh;
        const T* qb = q + ((int64_t)b * Lq + q0) * qs + (int64_t)h * dh;
        for (int i = tid; i < Lk * dh; i += nt) {
            const int j = i / dh, d = i - j * dh;
            Ks[j * (dh + 1) + d] = ds_to_f32(kb[(int64_t)j * ks + d]);
            Vs[i] = ds_to_f32(vb[(int64_t)j * vs + d]);
        }
        for (int i = tid; i < nr * dh; i += nt) {
            const int r = i / dh, d = i - r * dh;
            Qs[i] = ds_to_f32(qb[(int64_t)r * qs + d]);
        }
        __syncthreads();
        // ---- 2. scores (masked entries are never read: phase 3 skips them)
        for (int i = tid; i < nr * Lk; i += nt) {
            const int r = i / Lk, j = i - r * Lk;
            const float* qr = Qs + r * dh;
            const float* kr = Ks + j * (dh + 1);
            float s = 0.0f;
            for (int d = 0; d < dh; d++) s += qr[d] * kr[d];
            Ss[i] = s * scale;
        }
        __syncthreads();
        // ---- 3. softmax per row (warp per row) + capture
        const bool cap_h = cap_on && ds_attn_cap_head(cap_mask, h);
        for (int r = warp; r < nr; r += nwarps) {
            float* sr = Ss + r * Lk;
            // keys j < valid are visible to query q0 + r (causal: j ≤ i)
            const int valid = causal ? min(q0 + r + 1, Lk) : Lk;
            float mx = -INFINITY;
            for (int j = lane; j < valid; j += 32) mx = fmaxf(mx, sr[j]);
            for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
            float sum = 0.0f;
            for (int j = lane; j < valid; j += 32) {
                const float e = expf(sr[j] - mx);
                sr[j] = e;
                sum += e;
            }
            for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
            const float inv = 1.0f / sum;  // sum ≥ 1: the max contributes e⁰
            for (int j = lane; j < Lk; j += 32) sr[j] = j < valid ? sr[j] * inv : 0.0f;
            if (cap_h) {
                if (headsum) {
                    float* ar = Acc + r * Lk;
                    for (int j = lane; j < Lk; j += 32) ar[j] += cap_w * sr[j];
                } else {
                    float* cs = cap_sum + ((((int64_t)(b - cap_b0) * nh + h) * Lq + q0 + r) * Lk);
                    for (int j = lane; j < Lk; j += 32) cs[j] += cap_w * sr[j];
                }
            }
        }
        __syncthreads();
        // ---- 4. O = P · V
        T* ob = out + ((int64_t)b * Lq + q0) * ldo + (int64_t)h * dh;
        for (int i = tid; i < nr * dh; i += nt) {
            const int r = i / dh, d = i - r * dh;
            const float* pr = Ss + r * Lk;
            const int valid = causal ? min(q0 + r + 1, Lk) : Lk;
            float o = 0.0f;
            for (int j = 0; j < valid; j++) o += pr[j] * Vs[j * dh + d];
            ob[(int64_t)r * ldo + d] = ds_from_f32<T>(o);
        }
    }
    if (headsum) {
        __syncthreads();
        float* cs = cap_sum + ((int64_t)(b - cap_b0) * Lq + q0) * Lk;
        for (int i = tid; i < nr * Lk; i += nt) cs[i] += Acc[i];
    }
}

// ================================================================================================
// Tensor-core variant (fp16 / bf16)
// ================================================================================================
#define CW_WARPS 4
#define CW_BQ (16 * CW_WARPS)  // query rows per block: 16 per warp
#define CW_MAX_LKP 256         // padded keys: S is CW_BQ × Lkp fp32 in shared memory

struct cw_layout {
    size_t k, v, q, s, p, acc, total;  // byte offsets, 128-byte aligned (WMMA needs 32)
};
static inline size_t cw_align(size_t x) { return (x + 127) & ~(size_t)127; }
template <typename T> static cw_layout cw_make_layout(int Lk, int Lkp, int dp, bool headsum) {
    cw_layout L;
    size_t off = 0;
    L.k = off; off = cw_align(off + sizeof(T) * Lkp * dp);            // K (Lkp × dp)
    L.v = off; off = cw_align(off + sizeof(T) * Lkp * dp);            // V (Lkp × dp)
    L.q = off; off = cw_align(off + sizeof(T) * CW_BQ * dp);          // Q tile (CW_BQ × dp)
    L.s = off; off = cw_align(off + sizeof(float) * CW_BQ * Lkp);     // S, then fp32 P, then P·V
    L.p = off; off = cw_align(off + sizeof(T) * CW_BQ * Lkp);         // P in the input type
    L.acc = off;
    if (headsum) off = cw_align(off + sizeof(float) * CW_BQ * Lk);    // head-summed capture
    L.total = off;
    return L;
}

// grid (ceil(Lq / CW_BQ), heads / hpb, nb), block 32 · CW_WARPS; as cross_attn_kernel otherwise.
// Lkp = Lk rounded up to 16, dp = dh rounded up to 16.
template <typename T>
__global__ void cross_wmma_kernel(const T* __restrict__ q,  // (B, Lq, ·) stride qs
                                  const T* __restrict__ k,  // (B, Lk, ·) stride ks
                                  const T* __restrict__ v,  // (B, Lk, ·) stride vs
                                  T* __restrict__ out,      // (B, Lq, heads·dh)
                                  int64_t qs, int64_t ks, int64_t vs, int b0, int Lq, int Lk,
                                  int Lkp, int heads, int dh, int dp, float scale, int causal,
                                  int hpb, int vec, cw_layout lay,
                                  float* __restrict__ cap_sum,  // NULL: no capture
                                  int cap_per_head, uint64_t cap_mask, float cap_w, int cap_b0,
                                  int cap_b1) {
    using namespace nvcuda;
    DS_DYN_SHARED(unsigned char, smem);
    T* Ks = (T*)(smem + lay.k);
    T* Vs = (T*)(smem + lay.v);
    T* Qs = (T*)(smem + lay.q);
    float* Acc = (float*)(smem + lay.acc);
    const int tid = threadIdx.x, nt = blockDim.x;
    const int lane = tid & 31, warp = tid >> 5;
    float* Sw = (float*)(smem + lay.s) + (size_t)warp * 16 * Lkp;  // this warp's 16 rows
    T* Pw = (T*)(smem + lay.p) + (size_t)warp * 16 * Lkp;

    const int b = b0 + blockIdx.z;
    const int q0 = blockIdx.x * CW_BQ;
    const int nr = min(CW_BQ, Lq - q0);
    const int64_t ldo = (int64_t)heads * dh;
    const bool cap_on = cap_sum != NULL && b >= cap_b0 && b < cap_b1;
    const bool headsum = cap_on && !cap_per_head;
    const int nh = cap_per_head ? heads : 1;
    const T tzero = ds_from_f32<T>(0.0f);

    if (headsum)
        for (int i = tid; i < nr * Lk; i += nt) Acc[i] = 0.0f;

    for (int hh = 0; hh < hpb; hh++) {
        const int h = blockIdx.y * hpb + hh;
        __syncthreads();  // every warp is done with the previous head's K and V
        ds_attn_load_tile(Ks, k + (int64_t)b * Lk * ks + (int64_t)h * dh, ks, Lk, Lkp, dh, dp, vec);
        ds_attn_load_tile(Vs, v + (int64_t)b * Lk * vs + (int64_t)h * dh, vs, Lk, Lkp, dh, dp, vec);
        ds_attn_load_tile(Qs, q + ((int64_t)b * Lq + q0) * qs + (int64_t)h * dh, qs, nr, CW_BQ, dh,
                          dp, vec);
        __syncthreads();
        // ---- S_w (16 × Lkp) = Q_w (16 × dp) · Kᵀ (dp × Lkp)
        for (int n = 0; n < Lkp / 16; n++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::fill_fragment(acc, 0.0f);
            for (int kk = 0; kk < dp / 16; kk++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb;
                wmma::load_matrix_sync(fa, Qs + (size_t)warp * 16 * dp + kk * 16, dp);
                wmma::load_matrix_sync(fb, Ks + (size_t)n * 16 * dp + kk * 16, dp);
                wmma::mma_sync(acc, fa, fb, acc);
            }
            wmma::store_matrix_sync(Sw + n * 16, acc, Lkp, wmma::mem_row_major);
        }
        __syncwarp();
        // ---- exact softmax row by row (the whole warp on a row: coalesced capture), capture
        const bool cap_h = cap_on && ds_attn_cap_head(cap_mask, h);
        for (int r = 0; r < 16; r++) {
            const int rb = warp * 16 + r;  // row in the block
            float* sr = Sw + (size_t)r * Lkp;
            T* pr = Pw + (size_t)r * Lkp;
            if (rb >= nr) {  // past Lq (warp-uniform): P·V must still read finite zeros
                for (int j = lane; j < Lkp; j += 32) pr[j] = tzero;
                continue;
            }
            const int valid = causal ? min(q0 + rb + 1, Lk) : Lk;
            float mx = -INFINITY;
            for (int j = lane; j < valid; j += 32) mx = fmaxf(mx, sr[j] * scale);
            for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
            float sum = 0.0f;
            for (int j = lane; j < valid; j += 32) {
                const float e = expf(sr[j] * scale - mx);
                sr[j] = e;
                sum += e;
            }
            for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
            const float inv = 1.0f / sum;  // sum ≥ 1: the max contributes e⁰
            for (int j = lane; j < Lkp; j += 32) {
                const float p = j < valid ? sr[j] * inv : 0.0f;
                sr[j] = p;
                pr[j] = ds_from_f32<T>(p);
            }
            if (cap_h) {
                if (headsum) {
                    float* ar = Acc + (size_t)rb * Lk;
                    for (int j = lane; j < Lk; j += 32) ar[j] += cap_w * sr[j];
                } else {
                    float* cs = cap_sum + (((int64_t)(b - cap_b0) * nh + h) * Lq + q0 + rb) * Lk;
                    for (int j = lane; j < Lk; j += 32) cs[j] += cap_w * sr[j];
                }
            }
        }
        __syncwarp();
        // ---- O_w = P_w (16 × Lkp) · V (Lkp × dp), in column chunks of ≤ Lkp through S_w
        T* ob = out + ((int64_t)b * Lq + q0 + warp * 16) * ldo + (int64_t)h * dh;
        for (int d0 = 0; d0 < dp; d0 += Lkp) {
            const int w = min(Lkp, dp - d0);
            for (int n = 0; n < w / 16; n++) {
                wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
                wmma::fill_fragment(acc, 0.0f);
                for (int kk = 0; kk < Lkp / 16; kk++) {
                    wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
                    wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> fb;
                    wmma::load_matrix_sync(fa, Pw + kk * 16, Lkp);
                    wmma::load_matrix_sync(fb, Vs + (size_t)kk * 16 * dp + d0 + n * 16, dp);
                    wmma::mma_sync(acc, fa, fb, acc);
                }
                wmma::store_matrix_sync(Sw + n * 16, acc, Lkp, wmma::mem_row_major);
            }
            __syncwarp();
            for (int i = lane; i < 16 * w; i += 32) {
                const int r = i / w, c = i - r * w;
                if (warp * 16 + r < nr && d0 + c < dh)
                    ob[(int64_t)r * ldo + d0 + c] = ds_from_f32<T>(Sw[(size_t)r * Lkp + c]);
            }
            __syncwarp();  // S_w is rewritten by the next chunk / head
        }
    }
    if (headsum) {
        __syncthreads();
        float* cs = cap_sum + ((int64_t)(b - cap_b0) * Lq + q0) * Lk;
        for (int i = tid; i < nr * Lk; i += nt) cs[i] += Acc[i];
    }
}

// The WMMA variant's shared memory, or 0 when it does not apply (type, head size, key count).
template <typename T> static size_t cross_wmma_smem(ds_backend* be, int Lk, int dh, bool headsum) {
    const int Lkp = (Lk + 15) / 16 * 16, dp = (dh + 15) / 16 * 16;
    if (sizeof(T) != 2 || dh % 2 != 0 || Lkp > CW_MAX_LKP) return 0;
    const size_t bytes = cw_make_layout<T>(Lk, Lkp, dp, headsum).total;
    return bytes <= ds_cuda_max_smem(be) ? bytes : 0;
}

template <typename T> static void cross_launch(ds_backend* be, const ds_attn_args& a,
                                               const ds_attn_cap* cap) {
    // The capture sums heads inside one block only when some batch of this launch is captured.
    const bool any_cap = cap && cap->batch_begin < a.b0 + a.nb && cap->batch_end > a.b0 &&
                         cap->batch_begin < cap->batch_end;
    const bool headsum = any_cap && !cap->per_head;
    const int hpb = headsum ? a.heads : 1;
    // (if constexpr: WMMA has no fp32 fragments of this shape, the kernel exists for 2-byte types)
    if constexpr (sizeof(T) == 2) {
        if (cross_wmma_smem<T>(be, a.Lk, a.dh, headsum) > 0) {
            const int Lkp = (a.Lk + 15) / 16 * 16, dp = (a.dh + 15) / 16 * 16;
            const cw_layout lay = cw_make_layout<T>(a.Lk, Lkp, dp, headsum);
            auto* kern = cross_wmma_kernel<T>;
            ds_attn_smem_optin(kern, lay.total);
            dim3 grid(ds_div_up(a.Lq, CW_BQ), a.heads / hpb, a.nb);
            ds_attn_path_launches[DS_ATTN_PATH_CROSS_WMMA]++;
            DS_LAUNCH(kern, grid, 32 * CW_WARPS, lay.total, ds_cuda_stream(be), (const T*)a.q,
                      (const T*)a.k, (const T*)a.v, (T*)a.out, a.qs, a.ks, a.vs, a.b0, a.Lq,
                      a.Lk, Lkp, a.heads, a.dh, dp, a.scale, a.causal, hpb,
                      (int)ds_attn_vec_ok(a), lay,
                      any_cap ? cap->sum : (float*)NULL, any_cap ? cap->per_head : 0,
                      any_cap ? cap->head_mask : (uint64_t)0, any_cap ? cap->weight : 0.0f,
                      any_cap ? cap->batch_begin : 0, any_cap ? cap->batch_end : 0);
            return;
        }
    }
    const int tq = cross_tile_rows(be, a.Lk, a.dh, headsum);
    DS_ASSERT(tq > 0);
    const size_t smem = cross_smem_floats(tq, a.Lk, a.dh, headsum) * sizeof(float);
    auto* kern = cross_attn_kernel<T>;
    ds_attn_smem_optin(kern, smem);
    dim3 grid(ds_div_up(a.Lq, tq), a.heads / hpb, a.nb);
    ds_attn_path_launches[DS_ATTN_PATH_CROSS]++;
    DS_LAUNCH(kern, grid, CROSS_THREADS, smem, ds_cuda_stream(be), (const T*)a.q, (const T*)a.k,
              (const T*)a.v, (T*)a.out, a.qs, a.ks, a.vs, a.b0, a.Lq, a.Lk, a.heads, a.dh, a.scale,
              a.causal, tq, hpb, any_cap ? cap->sum : (float*)NULL, any_cap ? cap->per_head : 0,
              any_cap ? cap->head_mask : (uint64_t)0, any_cap ? cap->weight : 0.0f,
              any_cap ? cap->batch_begin : 0, any_cap ? cap->batch_end : 0);
}

void ds_attn_cross(ds_backend* be, const ds_attn_args& a, const ds_attn_cap* cap) {
    if (a.nb <= 0) return;
    DS_DISPATCH(ds_cuda_act_dtype(be), T, cross_launch<T>(be, a, cap));
}
