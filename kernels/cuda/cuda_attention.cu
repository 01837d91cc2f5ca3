// cuda_attention.cu — the attention op of the CUDA backend (backend.h: attention). Chooses, per
// range of batches, one of three paths:
//
//   cross   (cuda_attention_cross.cu)  Lk ≤ CROSS_AUTO_MAX_LK (text tokens: cross-attention,
//           CLIP's causal self-attention), or any Lk whose K / V fit in shared memory when the
//           in-op capture is on: exact softmax with all keys in shared memory, capture in-kernel.
//   flash   (cuda_attention_flash.cu)  long keys without capture (the UNet's self-attention):
//           WMMA tensor cores for fp16 / bf16, the scalar kernel for fp32 and odd head sizes.
//   tile    (below) batches a host probe watches (b ≥ probe->batch_begin when on_probs is set),
//           and captured batches whose keys are too long for the cross kernel: per row tile,
//           P = softmax(scale · Q Kᵀ) for every head in a device buffer, the capture added
//           (head order, so the sum is deterministic), P downloaded for on_probs in (tile, head)
//           order and uploaded back if the probe changed it, then O = P · V.
//
// Semantics follow kernels/cpu/cpu_attention.c exactly, including the row tiling the probe sees
// (tr = min(128, 2²⁰ / Lk, Lq) rows), capture applied before on_probs sees a tile, and a probe
// returning 1 making P·V use its edited probabilities.
#include <stdlib.h>
#include <string.h>

#include "cuda_attention.cuh"

#define CROSS_AUTO_MAX_LK 128      // below this, all keys in shared memory beat streaming them
#define TILE_MAX_ROWS 128          // the CPU backend's tile bounds (cpu_attention.c)
#define TILE_MAX_FLOATS (1 << 20)
#define TILE_THREADS 128

static int g_force_path = 0;
void ds_cuda_attention_force_path(int path) { g_force_path = path; }
long ds_attn_path_launches[DS_ATTN_NPATHS];

// ------------------------------------------------------------------------------------------------
// Tile path kernels
// ------------------------------------------------------------------------------------------------

// Sum (op 0) or max (op 1) over the block; every thread gets the result. red: 32 floats of shared
// memory; the leading __syncthreads makes back-to-back calls safe.
__device__ float tile_block_reduce(float x, int op, float* red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1) {
        const float y = __shfl_xor_sync(0xffffffffu, x, o);
        x = op ? fmaxf(x, y) : x + y;
    }
    __syncthreads();
    if (lane == 0) red[warp] = x;
    __syncthreads();
    x = red[0];
    for (int w = 1; w < nw; w++) x = op ? fmaxf(x, red[w]) : x + red[w];
    return x;
}

// P rows for query rows [r0, r0 + nr) of batch b, every head: grid (nr, heads), TILE_THREADS.
// P (heads, tr, Lk) fp32, row r of head h at (h · tr + r) · Lk; causal keys j > i written as 0.
template <typename T>
__global__ void tile_probs_kernel(const T* __restrict__ q,  // (B, Lq, ·) stride qs
                                  const T* __restrict__ k,  // (B, Lk, ·) stride ks
                                  float* __restrict__ P, int64_t qs, int64_t ks, int b, int r0,
                                  int tr, int Lq, int Lk, int dh, float scale, int causal) {
    DS_DYN_SHARED(float, qrow);  // dh floats, then 32 for reductions
    float* red = qrow + dh;
    const int r = blockIdx.x, h = blockIdx.y, i = r0 + r;
    const T* qp = q + ((int64_t)b * Lq + i) * qs + (int64_t)h * dh;
    const T* kb = k + (int64_t)b * Lk * ks + (int64_t)h * dh;
    for (int d = threadIdx.x; d < dh; d += blockDim.x) qrow[d] = ds_to_f32(qp[d]);
    __syncthreads();
    float* pr = P + ((int64_t)h * tr + r) * Lk;
    const int valid = causal ? min(i + 1, Lk) : Lk;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < valid; j += blockDim.x) {
        const T* kr = kb + (int64_t)j * ks;
        float s = 0.0f;
        for (int d = 0; d < dh; d++) s += qrow[d] * ds_to_f32(kr[d]);
        s *= scale;
        pr[j] = s;
        mx = fmaxf(mx, s);
    }
    mx = tile_block_reduce(mx, 1, red);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < valid; j += blockDim.x) {
        const float e = expf(pr[j] - mx);
        pr[j] = e;
        sum += e;
    }
    sum = tile_block_reduce(sum, 0, red);
    const float inv = 1.0f / sum;
    for (int j = threadIdx.x; j < Lk; j += blockDim.x) pr[j] = j < valid ? pr[j] * inv : 0.0f;
}

// capture of one tile, every head: grid ceil(nr · Lk / 256), 256 threads, one (r, j) per thread.
// Head-summed: the heads are added one after another in head order, like the CPU backend.
__global__ void tile_capture_kernel(const float* __restrict__ P,  // (heads, tr, Lk)
                                    float* __restrict__ sum,      // capture sum, batch bb
                                    int bb, int r0, int nr, int tr, int Lq, int Lk, int heads,
                                    int per_head, uint64_t mask, float w) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)nr * Lk) return;
    const int r = (int)(i / Lk), j = (int)(i - (int64_t)r * Lk);
    const int nh = per_head ? heads : 1;
    for (int h = 0; h < heads; h++) {
        if (!ds_attn_cap_head(mask, h)) continue;
        float* s = sum + (((int64_t)bb * nh + (per_head ? h : 0)) * Lq + r0 + r) * Lk + j;
        *s += w * P[((int64_t)h * tr + r) * Lk + j];
    }
}

// out rows [r0, r0 + nr) of batch b = P · V: grid (nr, heads), threads over the head's dh.
template <typename T>
__global__ void tile_pv_kernel(const float* __restrict__ P,  // (heads, tr, Lk)
                               const T* __restrict__ v,      // (B, Lk, ·) stride vs
                               T* __restrict__ out,          // (B, Lq, heads·dh)
                               int64_t vs, int b, int r0, int tr, int Lq, int Lk, int heads,
                               int dh) {
    const int r = blockIdx.x, h = blockIdx.y;
    const float* pr = P + ((int64_t)h * tr + r) * Lk;
    const T* vb = v + (int64_t)b * Lk * vs + (int64_t)h * dh;
    T* ob = out + ((int64_t)b * Lq + r0 + r) * heads * dh + (int64_t)h * dh;
    for (int d = threadIdx.x; d < dh; d += blockDim.x) {
        float o = 0.0f;
        for (int j = 0; j < Lk; j++) o += pr[j] * ds_to_f32(vb[(int64_t)j * vs + d]);
        ob[d] = ds_from_f32<T>(o);
    }
}

// Batches [a.b0, a.b0 + a.nb) through the tile path. on_probs may be NULL (capture only).
template <typename T>
static void tile_path(ds_backend* be, const ds_attn_args& a, const ds_attn_cap* cap,
                      ds_probs_fn on_probs, void* user) {
    const int Lq = a.Lq, Lk = a.Lk, heads = a.heads;
    int64_t tr = TILE_MAX_FLOATS / Lk;  // the CPU backend's default tiling: same (row0, nrows)
    if (tr > TILE_MAX_ROWS) tr = TILE_MAX_ROWS;
    if (tr > Lq) tr = Lq;
    if (tr < 1) tr = 1;
    const int64_t nP = (int64_t)heads * tr * Lk;
    float* P = (float*)ds_cuda_workspace(be, sizeof(float) * (size_t)nP);
    if (!P) return;  // out of GPU memory: recorded, be->failure reports it
    float* host = NULL;
    if (on_probs) {
        host = (float*)malloc(sizeof(float) * (size_t)nP);
        DS_ASSERT(host != NULL);
    }
    cudaStream_t st = ds_cuda_stream(be);
    const T* q = (const T*)a.q;
    const T* k = (const T*)a.k;
    const T* v = (const T*)a.v;
    T* out = (T*)a.out;
    auto* kprobs = tile_probs_kernel<T>;
    auto* kpv = tile_pv_kernel<T>;
    const size_t probs_smem = sizeof(float) * (size_t)(a.dh + 32);
    ds_attn_smem_optin(kprobs, probs_smem);
    const int pv_threads = a.dh < 32 ? 32 : (a.dh < 128 ? (a.dh + 31) / 32 * 32 : 128);
    for (int b = a.b0; b < a.b0 + a.nb; b++) {
        const bool capb = cap && b >= cap->batch_begin && b < cap->batch_end;
        for (int r0 = 0; r0 < Lq; r0 += (int)tr) {
            const int nr = (int)(Lq - r0 < tr ? Lq - r0 : tr);
            ds_attn_path_launches[DS_ATTN_PATH_TILE]++;
            DS_LAUNCH(kprobs, dim3(nr, heads), TILE_THREADS, probs_smem, st, q, k, P, a.qs, a.ks,
                      b, r0, (int)tr, Lq, Lk, a.dh, a.scale, a.causal);
            if (capb)
                DS_LAUNCH(tile_capture_kernel, ds_div_up((int64_t)nr * Lk, 256), 256, 0, st, P,
                          cap->sum, b - cap->batch_begin, r0, nr, (int)tr, Lq, Lk, heads,
                          cap->per_head, cap->head_mask, cap->weight);
            if (on_probs) {
                // rows nr..tr of each head are stale: copy the whole buffer, hand out nr rows
                DS_CUDA_CHECK(cudaMemcpyAsync(host, P, sizeof(float) * (size_t)nP,
                                              cudaMemcpyDeviceToHost, st));
                DS_CUDA_CHECK(cudaStreamSynchronize(st));
                int changed = 0;
                for (int h = 0; h < heads; h++)
                    changed |= on_probs(user, b, h, r0, nr, Lk, host + (int64_t)h * tr * Lk) != 0;
                if (changed)
                    DS_CUDA_CHECK(cudaMemcpyAsync(P, host, sizeof(float) * (size_t)nP,
                                                  cudaMemcpyHostToDevice, st));
            }
            DS_LAUNCH(kpv, dim3(nr, heads), pv_threads, 0, st, P, v, out, a.vs, b, r0, (int)tr, Lq,
                      Lk, heads, a.dh);
        }
    }
    if (host) {
        // the upload reads `host` asynchronously: wait before freeing it
        DS_CUDA_CHECK(cudaStreamSynchronize(st));
        free(host);
    }
}

static void tile_run(ds_backend* be, const ds_attn_args& a, const ds_attn_cap* cap,
                     ds_probs_fn on_probs, void* user) {
    if (a.nb <= 0) return;
    DS_DISPATCH(ds_cuda_act_dtype(be), T, tile_path<T>(be, a, cap, on_probs, user));
}

// ------------------------------------------------------------------------------------------------
// The op
// ------------------------------------------------------------------------------------------------

// Batches [b0, b1) without a host probe.
static void run_unprobed(ds_backend* be, ds_attn_args a, int b0, int b1, const ds_attn_cap* cap) {
    if (b0 >= b1) return;
    a.b0 = b0;
    a.nb = b1 - b0;
    const bool capped = cap && cap->batch_begin < b1 && cap->batch_end > b0;
    const bool headsum = capped && !cap->per_head;
    const bool cross_fits = ds_attn_cross_fits(be, a.Lk, a.dh, headsum);
    const int force = g_force_path;
    if (force == 4) {
        tile_run(be, a, cap, NULL, NULL);
        return;
    }
    if (cross_fits && (force == 3 || (force == 0 && (a.Lk <= CROSS_AUTO_MAX_LK || capped)))) {
        ds_attn_cross(be, a, cap);
        return;
    }
    if (capped) {
        // keys too long for the cross kernel: captured batches through the tile path, the rest
        // (outside the capture window) through flash
        const int c0 = cap->batch_begin > b0 ? cap->batch_begin : b0;
        const int c1 = cap->batch_end < b1 ? cap->batch_end : b1;
        run_unprobed(be, a, b0, c0, NULL);
        ds_attn_args t = a;
        t.b0 = c0;
        t.nb = c1 - c0;
        tile_run(be, t, cap, NULL, NULL);
        run_unprobed(be, a, c1, b1, NULL);
        return;
    }
    const int variant = force == 1 ? 1 : 2;  // 2 falls back to scalar where WMMA does not apply
    ds_attn_flash(be, a, variant);
}

void ds_cuda_attention(ds_backend* be, const float* q, int64_t q_stride, const float* k,
                       int64_t k_stride, const float* v, int64_t v_stride, float* out, int B,
                       int Lq, int Lk, int heads, int dh, float scale, int causal,
                       const ds_attn_probe* probe) {
    if (B <= 0 || Lq <= 0 || heads <= 0 || dh <= 0) return;
    DS_ASSERT(Lk > 0);
    DS_ASSERT(q_stride >= (int64_t)heads * dh && k_stride >= (int64_t)heads * dh &&
              v_stride >= (int64_t)heads * dh);
    const ds_attn_capture* c = probe ? probe->capture : NULL;
    ds_attn_cap cap_dev;
    const ds_attn_cap* cap = NULL;
    if (c) {
        DS_ASSERT(c->sum != NULL && c->batch_begin <= c->batch_end);
        DS_ASSERT(ds_cuda_dtype_of(be, c->sum) == DS_ACT_F32);  // alloc_f32 memory
        cap_dev.sum = ds_dev<float>(be, c->sum);
        cap_dev.per_head = c->per_head;
        cap_dev.head_mask = c->head_mask;
        cap_dev.weight = c->weight;
        cap_dev.batch_begin = c->batch_begin;
        cap_dev.batch_end = c->batch_end;
        if (c->batch_begin < c->batch_end) cap = &cap_dev;
    }
    const ds_act_dtype dt = ds_cuda_act_dtype(be);
    ds_attn_args a;
    // typed device addresses: the handle → address map knows each allocation's element type
    DS_DISPATCH(dt, T, {
        a.q = ds_dev<T>(be, q);
        a.k = ds_dev<T>(be, k);
        a.v = ds_dev<T>(be, v);
        a.out = ds_dev<T>(be, out);
    });
    a.qs = q_stride;
    a.ks = k_stride;
    a.vs = v_stride;
    a.b0 = 0;
    a.nb = B;
    a.Lq = Lq;
    a.Lk = Lk;
    a.heads = heads;
    a.dh = dh;
    a.scale = scale;
    a.causal = causal;

    // batches [probed_from, B) go through the host probe
    int probed_from = B;
    if (probe && probe->on_probs) probed_from = probe->batch_begin > 0 ? probe->batch_begin : 0;
    if (probed_from > B) probed_from = B;
    run_unprobed(be, a, 0, probed_from, cap);
    if (probed_from < B) {
        ds_attn_args t = a;
        t.b0 = probed_from;
        t.nb = B - probed_from;
        tile_run(be, t, cap, probe->on_probs, probe->user);
    }
}
