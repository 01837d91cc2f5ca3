// cuda_attention_flash.cu — flash-attention-style self-attention (SD's 64² … 8² maps: Lq = Lk up
// to 4096, head dims 40 / 64 / 80 / 160). No Lq × Lk matrix ever exists: a block owns a tile of
// query rows and streams the keys through shared memory in tiles, keeping per row the running
// max m, the running sum l of exp(s − m) and the unnormalized output O (online softmax, fp32):
//   m' = max(m, max_j s_j)        c = exp(m − m')        p_j = exp(s_j − m')
//   l' = c·l + Σ_j p_j            O' = c·O + Σ_j p_j v_j
// and writes O / l at the end. Causal masks (key j > query i) skip whole key tiles past the
// block's last row and mask inside the diagonal tile.
//
// Variant 1 (scalar, any dtype / head size): plain fp32 arithmetic, one dot product per thread,
// one warp per row for the softmax. The reference for variant 2.
// Variant 2 (WMMA, fp16 / bf16): Q·Kᵀ and P·V on tensor cores through nvcuda::wmma m16n16k16
// with fp32 accumulation. 4 warps × 16 query rows; the head dim is padded with zeros to a
// multiple of 16 in shared memory (40 → 48, 80 → 96), so every head size of SD works. P is
// rounded to the input type for the tensor-core product, and l sums the rounded values, so the
// normalization matches what P·V actually used.
#include "cuda_attention.cuh"

#ifndef DS_EMULATOR
#include <mma.h>
#endif

// ================================================================================================
// Variant 1: scalar
// ================================================================================================
#define FS_THREADS 128
#define FS_BQ 32

static size_t fs_smem_floats(int bq, int bk, int dh) {
    // Q, K (padded rows), V, S, O, then m / l / c per row
    return (size_t)bq * dh + (size_t)bk * (dh + 1) + (size_t)bk * dh + (size_t)bq * bk +
           (size_t)bq * dh + 3 * (size_t)bq;
}

// grid (ceil(Lq / bq), heads, nb), block FS_THREADS.
template <typename T>
__global__ void flash_scalar_kernel(const T* __restrict__ q,  // (B, Lq, ·) stride qs
                                    const T* __restrict__ k,  // (B, Lk, ·) stride ks
                                    const T* __restrict__ v,  // (B, Lk, ·) stride vs
                                    T* __restrict__ out,      // (B, Lq, heads·dh)
                                    int64_t qs, int64_t ks, int64_t vs, int b0, int Lq, int Lk,
                                    int heads, int dh, float scale, int causal, int bq, int bk) {
    DS_DYN_SHARED(float, smem);
    float* Qs = smem;                        // bq × dh
    float* Ks = Qs + (size_t)bq * dh;        // bk × (dh + 1): padded against bank conflicts
    float* Vs = Ks + (size_t)bk * (dh + 1);  // bk × dh
    float* Ss = Vs + (size_t)bk * dh;        // bq × bk: scores, then p
    float* Os = Ss + (size_t)bq * bk;        // bq × dh: unnormalized output
    float* Ms = Os + (size_t)bq * dh;        // bq running max
    float* Ls = Ms + bq;                     // bq running sum
    float* Cs = Ls + bq;                     // bq rescale factor of this key tile

    const int tid = threadIdx.x, nt = blockDim.x;
    const int lane = tid & 31, warp = tid >> 5, nwarps = nt >> 5;
    const int b = b0 + blockIdx.z, h = blockIdx.y;
    const int q0 = blockIdx.x * bq;
    const int nr = min(bq, Lq - q0);
    const T* qb = q + ((int64_t)b * Lq + q0) * qs + (int64_t)h * dh;
    const T* kb = k + (int64_t)b * Lk * ks + (int64_t)h * dh;
    const T* vb = v + (int64_t)b * Lk * vs + (int64_t)h * dh;

    for (int i = tid; i < nr * dh; i += nt) {
        const int r = i / dh, d = i - r * dh;
        Qs[i] = ds_to_f32(qb[(int64_t)r * qs + d]);
        Os[i] = 0.0f;
    }
    for (int r = tid; r < nr; r += nt) {
        Ms[r] = -INFINITY;
        Ls[r] = 0.0f;
    }
    // causal: no key beyond the block's last query row is visible
    const int kend = causal ? min(Lk, q0 + nr) : Lk;
    for (int k0 = 0; k0 < kend; k0 += bk) {
        const int kn = min(bk, kend - k0);
        __syncthreads();  // the previous tile's P·V is done with Vs and Ss
        for (int i = tid; i < kn * dh; i += nt) {
            const int j = i / dh, d = i - j * dh;
            Ks[j * (dh + 1) + d] = ds_to_f32(kb[(int64_t)(k0 + j) * ks + d]);
            Vs[i] = ds_to_f32(vb[(int64_t)(k0 + j) * vs + d]);
        }
        __syncthreads();
        for (int i = tid; i < nr * kn; i += nt) {
            const int r = i / kn, c = i - r * kn;
            float s;
            if (causal && k0 + c > q0 + r) {
                s = -INFINITY;
            } else {
                const float* qr = Qs + r * dh;
                const float* kr = Ks + c * (dh + 1);
                s = 0.0f;
                for (int d = 0; d < dh; d++) s += qr[d] * kr[d];
                s *= scale;
            }
            Ss[r * bk + c] = s;
        }
        __syncthreads();
        for (int r = warp; r < nr; r += nwarps) {
            float* sr = Ss + r * bk;
            float mx = -INFINITY;
            for (int c = lane; c < kn; c += 32) mx = fmaxf(mx, sr[c]);
            for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
            const float m_old = Ms[r];
            const float m_new = fmaxf(m_old, mx);
            // m_new = −∞: every key so far is masked for this row (p = 0, nothing to rescale)
            const bool none = m_new == -INFINITY;
            float sum = 0.0f;
            for (int c = lane; c < kn; c += 32) {
                const float p = none ? 0.0f : expf(sr[c] - m_new);
                sr[c] = p;
                sum += p;
            }
            for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
            const float corr = none ? 1.0f : expf(m_old - m_new);  // exp(−∞) = 0 on the first tile
            __syncwarp();  // every lane has read Ms[r] before lane 0 rewrites it
            if (lane == 0) {
                Ms[r] = m_new;
                Ls[r] = Ls[r] * corr + sum;
                Cs[r] = corr;
            }
        }
        __syncthreads();
        for (int i = tid; i < nr * dh; i += nt) {
            const int r = i / dh, d = i - r * dh;
            const float* pr = Ss + r * bk;
            float o = 0.0f;
            for (int c = 0; c < kn; c++) o += pr[c] * Vs[c * dh + d];
            Os[i] = Os[i] * Cs[r] + o;
        }
    }
    __syncthreads();
    const int64_t ldo = (int64_t)heads * dh;
    T* ob = out + ((int64_t)b * Lq + q0) * ldo + (int64_t)h * dh;
    for (int i = tid; i < nr * dh; i += nt) {
        const int r = i / dh, d = i - r * dh;
        ob[(int64_t)r * ldo + d] = ds_from_f32<T>(Os[i] / Ls[r]);
    }
}

template <typename T> static void flash_scalar_launch(ds_backend* be, const ds_attn_args& a) {
    const size_t lim = ds_cuda_max_smem(be);
    int bk = 64;
    while (bk > 8 && fs_smem_floats(FS_BQ, bk, a.dh) * sizeof(float) > lim) bk /= 2;
    const size_t smem = fs_smem_floats(FS_BQ, bk, a.dh) * sizeof(float);
    DS_ASSERT(smem <= lim);
    auto* kern = flash_scalar_kernel<T>;
    ds_attn_smem_optin(kern, smem);
    dim3 grid(ds_div_up(a.Lq, FS_BQ), a.heads, a.nb);
    ds_attn_path_launches[DS_ATTN_PATH_SCALAR]++;
    DS_LAUNCH(kern, grid, FS_THREADS, smem, ds_cuda_stream(be), (const T*)a.q, (const T*)a.k,
              (const T*)a.v, (T*)a.out, a.qs, a.ks, a.vs, a.b0, a.Lq, a.Lk, a.heads, a.dh, a.scale,
              a.causal, FS_BQ, bk);
}

// ================================================================================================
// Variant 2: tensor cores (WMMA)
// ================================================================================================
#define FW_WARPS 4
#define FW_BQ (16 * FW_WARPS)  // query rows per block: 16 per warp
#define FW_BK 64               // keys per tile
#define FW_MAX_DH 160  // 10 output fragments per warp at most

// Shared memory layout of the WMMA kernel; every region starts 128-byte aligned (WMMA needs 32).
struct fw_layout {
    size_t q, k, v, s, p, o, l, total;  // byte offsets
};
static inline size_t fw_align(size_t x) { return (x + 127) & ~(size_t)127; }
template <typename T> static fw_layout fw_make_layout(int dp) {
    fw_layout L;
    size_t off = 0;
    L.q = off; off = fw_align(off + sizeof(T) * FW_BQ * dp);                    // Q tile (bq × dp)
    L.k = off; off = fw_align(off + sizeof(T) * FW_BK * dp);                    // K tile (bk × dp)
    L.v = off; off = fw_align(off + sizeof(T) * FW_BK * dp);                    // V tile (bk × dp)
    L.s = off; off = fw_align(off + sizeof(float) * FW_WARPS * 16 * FW_BK);     // S per warp
    L.p = off; off = fw_align(off + sizeof(T) * FW_WARPS * 16 * FW_BK);         // P per warp
    L.o = off; off = fw_align(off + sizeof(float) * FW_BQ * dp);                // O (bq × dp)
    L.l = off; off = fw_align(off + sizeof(float) * FW_BQ);                     // l per row
    L.total = off;
    return L;
}

// grid (ceil(Lq / FW_BQ), heads, nb), block 32 · FW_WARPS. ND = dp / 16 with dp = dh rounded up
// to 16: the warp's 16 × dp output stays in ND accumulator fragments for the whole key loop.
// rescale_th: lazy rescaling threshold in log2 units (see flash_wmma_launch); 0 = rescale O
// whenever a row's max grows (the textbook online softmax).
template <typename T, int ND>
__global__ void flash_wmma_kernel(const T* __restrict__ q,  // (B, Lq, ·) stride qs
                                  const T* __restrict__ k,  // (B, Lk, ·) stride ks
                                  const T* __restrict__ v,  // (B, Lk, ·) stride vs
                                  T* __restrict__ out,      // (B, Lq, heads·dh)
                                  int64_t qs, int64_t ks, int64_t vs, int b0, int Lq, int Lk,
                                  int heads, int dh, float scale, int causal, int vec,
                                  float rescale_th, fw_layout lay) {
    using namespace nvcuda;
    constexpr int dp = 16 * ND;
    DS_DYN_SHARED(unsigned char, smem);
    T* Qs = (T*)(smem + lay.q);      // FW_BQ × dp, zero-padded rows and columns
    T* Ks = (T*)(smem + lay.k);      // FW_BK × dp
    T* Vs = (T*)(smem + lay.v);      // FW_BK × dp
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float* Sw = (float*)(smem + lay.s) + warp * 16 * FW_BK;  // this warp's 16 × FW_BK scores
    T* Pw = (T*)(smem + lay.p) + warp * 16 * FW_BK;          // its probabilities
    float* Ow = (float*)(smem + lay.o) + (size_t)warp * 16 * dp;  // its 16 × dp outputs (spills)
    float* Lw = (float*)(smem + lay.l) + warp * 16;

    const int b = b0 + blockIdx.z, h = blockIdx.y;
    const int q0 = blockIdx.x * FW_BQ;
    const int nr = min(FW_BQ, Lq - q0);
    const T* qb = q + ((int64_t)b * Lq + q0) * qs + (int64_t)h * dh;
    const T* kb = k + (int64_t)b * Lk * ks + (int64_t)h * dh;
    const T* vb = v + (int64_t)b * Lk * vs + (int64_t)h * dh;
    ds_attn_load_tile(Qs, qb, qs, nr, FW_BQ, dh, dp, vec);

    // O_w (16 × dp, fp32) in registers, unnormalized, relative to the row's reference max mr
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> oacc[ND];
#pragma unroll
    for (int n = 0; n < ND; n++) wmma::fill_fragment(oacc[n], 0.0f);
    // Softmax ownership: lane pair (2r, 2r+1) owns row r of the warp's 16, each lane one half of
    // the key tile's columns; both lanes keep the row's mr and l. Scores are kept in base 2
    // (s · scale · log2 e), so every exponential is one exp2f.
    const int row = lane >> 1, half = lane & 1;
    const int qi = q0 + warp * 16 + row;  // this lane's query row
    const float sl2 = scale * 1.4426950408889634f;
    float mr = -INFINITY, l = 0.0f;

    const int kend = causal ? min(Lk, q0 + nr) : Lk;
    for (int k0 = 0; k0 < kend; k0 += FW_BK) {
        const int kn = min(FW_BK, kend - k0);
        __syncthreads();  // every warp is done with the previous K / V tile
        // zero rows past kn: their scores are masked, and 0 · V must stay finite
        ds_attn_load_tile(Ks, kb + (int64_t)k0 * ks, ks, kn, FW_BK, dh, dp, vec);
        ds_attn_load_tile(Vs, vb + (int64_t)k0 * vs, vs, kn, FW_BK, dh, dp, vec);
        __syncthreads();
        // ---- S (16 × FW_BK) = Q_w (16 × dp) · Kᵀ (dp × FW_BK): each Q fragment loaded once and
        // used for the tile's 4 key blocks
        {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> sacc[FW_BK / 16];
#pragma unroll
            for (int n = 0; n < FW_BK / 16; n++) wmma::fill_fragment(sacc[n], 0.0f);
#pragma unroll
            for (int kk = 0; kk < ND; kk++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
                wmma::load_matrix_sync(fa, Qs + (size_t)warp * 16 * dp + kk * 16, dp);
#pragma unroll
                for (int n = 0; n < FW_BK / 16; n++) {
                    // Kᵀ as a column-major (dp × keys) matrix is K row-major: column n = key n
                    wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb;
                    wmma::load_matrix_sync(fb, Ks + (size_t)n * 16 * dp + kk * 16, dp);
                    wmma::mma_sync(sacc[n], fa, fb, sacc[n]);
                }
            }
#pragma unroll
            for (int n = 0; n < FW_BK / 16; n++)
                wmma::store_matrix_sync(Sw + n * 16, sacc[n], FW_BK, wmma::mem_row_major);
        }
        __syncwarp();
        // ---- softmax of row `row`, columns [c0, c0 + 32), scores held in registers.
        // Lazy rescaling: p = exp2(s − mr) against the row's reference max mr, which moves only
        // when the tile max exceeds it by more than rescale_th (p ≤ 2^rescale_th stays far inside
        // fp16 / bf16 range; the final O / l is the same softmax). A moved reference needs
        // O · exp2(mr_old − mr_new) for that row; as a fragment's element-to-lane layout is
        // unspecified, the warp then rescales O through shared memory — rare after the first
        // tiles, so O otherwise never leaves the registers.
        const int c0 = half * (FW_BK / 2);
        const float* sr = Sw + row * FW_BK + c0;
        float sv[FW_BK / 2];
        float mx = -INFINITY;
#pragma unroll
        for (int c = 0; c < FW_BK / 2; c++) {
            const bool vis = c0 + c < kn && !(causal && k0 + c0 + c > qi);
            sv[c] = vis ? sr[c] * sl2 : -INFINITY;
            mx = fmaxf(mx, sv[c]);
        }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        float corr = 1.0f;
        bool moved = false;
        if (mx > mr + rescale_th || mr == -INFINITY) {  // the first visible keys set mr: l = O = 0
            if (mr != -INFINITY) {
                corr = exp2f(mr - mx);
                moved = true;
            }
            mr = mx;
        }
        const bool none = mr == -INFINITY;  // no visible key yet (a padded or masked row)
        float sum = 0.0f;
        T* pr = Pw + row * FW_BK + c0;
#pragma unroll
        for (int c = 0; c < FW_BK / 2; c++) {
            const T p = ds_from_f32<T>(none ? 0.0f : exp2f(sv[c] - mr));
            pr[c] = p;
            sum += ds_to_f32(p);  // the rounded value: what P·V will use
        }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        l = l * corr + sum;
        if (__any_sync(0xffffffffu, moved)) {
#pragma unroll
            for (int n = 0; n < ND; n++)
                wmma::store_matrix_sync(Ow + n * 16, oacc[n], dp, wmma::mem_row_major);
            __syncwarp();
            float* orow = Ow + (size_t)row * dp;
            for (int d = half * (dp / 2); d < (half + 1) * (dp / 2); d++) orow[d] *= corr;
            __syncwarp();
#pragma unroll
            for (int n = 0; n < ND; n++)
                wmma::load_matrix_sync(oacc[n], Ow + n * 16, dp, wmma::mem_row_major);
        }
        __syncwarp();  // P_w is complete
        // ---- O_w (16 × dp) += P_w (16 × FW_BK) · V (FW_BK × dp), accumulated in the fragments
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> pa[FW_BK / 16];
#pragma unroll
        for (int kk = 0; kk < FW_BK / 16; kk++) wmma::load_matrix_sync(pa[kk], Pw + kk * 16, FW_BK);
#pragma unroll
        for (int n = 0; n < ND; n++) {
#pragma unroll
            for (int kk = 0; kk < FW_BK / 16; kk++) {
                wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> fb;
                wmma::load_matrix_sync(fb, Vs + (size_t)kk * 16 * dp + n * 16, dp);
                wmma::mma_sync(oacc[n], pa[kk], fb, oacc[n]);
            }
        }
        __syncwarp();  // S_w and P_w are rewritten by the next tile
    }
#pragma unroll
    for (int n = 0; n < ND; n++)
        wmma::store_matrix_sync(Ow + n * 16, oacc[n], dp, wmma::mem_row_major);
    if (half == 0) Lw[row] = l;
    __syncwarp();
    const int64_t ldo = (int64_t)heads * dh;
    for (int i = lane; i < 16 * dh; i += 32) {
        const int r = i / dh, d = i - r * dh;
        const int qr = q0 + warp * 16 + r;
        if (qr < Lq)
            out[((int64_t)b * Lq + qr) * ldo + (int64_t)h * dh + d] =
                ds_from_f32<T>(Ow[(size_t)r * dp + d] / Lw[r]);
    }
}

// Lazy-rescaling threshold (log2 units): 8 keeps P ≤ 256. Test hook: 0 exercises the rescale.
static float g_rescale_th = 8.0f;
void ds_cuda_attention_set_rescale_threshold(float th) { g_rescale_th = th; }

template <typename T, int ND> static void flash_wmma_launch_nd(ds_backend* be, const ds_attn_args& a) {
    const fw_layout lay = fw_make_layout<T>(16 * ND);
    DS_ASSERT(lay.total <= ds_cuda_max_smem(be));
    auto* kern = flash_wmma_kernel<T, ND>;
    ds_attn_smem_optin(kern, lay.total);
    const int vec = ds_attn_vec_ok(a);  // 16-byte loads when every row start is aligned
    dim3 grid(ds_div_up(a.Lq, FW_BQ), a.heads, a.nb);
    ds_attn_path_launches[DS_ATTN_PATH_WMMA]++;
    DS_LAUNCH(kern, grid, 32 * FW_WARPS, lay.total, ds_cuda_stream(be), (const T*)a.q,
              (const T*)a.k, (const T*)a.v, (T*)a.out, a.qs, a.ks, a.vs, a.b0, a.Lq, a.Lk, a.heads,
              a.dh, a.scale, a.causal, vec, g_rescale_th, lay);
}

// One kernel instance per padded head size (dp = 16 … 160): the output fragments are a
// fixed-size register array.
template <typename T> static void flash_wmma_launch(ds_backend* be, const ds_attn_args& a) {
    switch ((a.dh + 15) / 16) {
    case 1: flash_wmma_launch_nd<T, 1>(be, a); break;
    case 2: flash_wmma_launch_nd<T, 2>(be, a); break;
    case 3: flash_wmma_launch_nd<T, 3>(be, a); break;
    case 4: flash_wmma_launch_nd<T, 4>(be, a); break;
    case 5: flash_wmma_launch_nd<T, 5>(be, a); break;
    case 6: flash_wmma_launch_nd<T, 6>(be, a); break;
    case 7: flash_wmma_launch_nd<T, 7>(be, a); break;
    case 8: flash_wmma_launch_nd<T, 8>(be, a); break;
    case 9: flash_wmma_launch_nd<T, 9>(be, a); break;
    case 10: flash_wmma_launch_nd<T, 10>(be, a); break;
    default: ds_cuda_fatal(__FILE__, __LINE__, "flash_wmma_launch", "head size above 160");
    }
}

bool ds_attn_flash_wmma_ok(ds_act_dtype dt, int dh) {
    // odd head sizes stay scalar (the padded tile would waste most of the tensor-core work)
    return (dt == DS_ACT_F16 || dt == DS_ACT_BF16) && dh % 2 == 0 && dh <= FW_MAX_DH;
}

void ds_attn_flash(ds_backend* be, const ds_attn_args& a, int variant) {
    if (a.nb <= 0) return;
    const ds_act_dtype dt = ds_cuda_act_dtype(be);
    if (variant == 2 && ds_attn_flash_wmma_ok(dt, a.dh)) {
        if (dt == DS_ACT_F16) flash_wmma_launch<__half>(be, a);
        else flash_wmma_launch<__nv_bfloat16>(be, a);
        return;
    }
    DS_DISPATCH(dt, T, flash_scalar_launch<T>(be, a));
}
