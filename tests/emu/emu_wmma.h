// emu_wmma.h — a host-side nvcuda::wmma (mma.h declares nothing for a host compiler).
// Included by emu_cuda.h only.
//
// The layout of a fragment across the lanes of a warp is unspecified by CUDA, so the emulator
// chooses the simplest consistent one: EVERY LANE HOLDS THE WHOLE TILE. num_elements is M*K (a),
// K*N (b) or M*N (accumulator), and x[] is the tile in row-major logical order whatever the memory
// layout it was loaded from: a: x[i*K + k], b: x[k*N + j], accumulator: x[i*N + j]. Element-wise
// code over frag.x[0..num_elements) (scaling, activation, conversion) is therefore consistent: each
// lane applies it to its own full copy. load_matrix_sync reads the whole tile in every lane;
// store_matrix_sync writes it from every lane (the same values); mma_sync computes the full product
// in every lane (32x redundant work; fine at test sizes). Every *_sync operation begins with a
// __syncwarp over the warp's live lanes, as the hardware executes them warp-wide: no lane stores a
// tile before every lane has loaded its inputs (a kernel may load C and store D in place). Supported: m16n16k16, m32n8k16, m8n32k16
// with a/b in half or __nv_bfloat16, accumulators in float or half; ldm counts elements.
#ifndef DS_EMU_WMMA_H
#define DS_EMU_WMMA_H

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };
namespace precision { struct tf32 {}; }

template <typename Use, int M, int N, int K> struct emu_dims_;
template <int M, int N, int K> struct emu_dims_<matrix_a, M, N, K> { enum { R = M, C = K }; };
template <int M, int N, int K> struct emu_dims_<matrix_b, M, N, K> { enum { R = K, C = N }; };
template <int M, int N, int K> struct emu_dims_<accumulator, M, N, K> { enum { R = M, C = N }; };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
class fragment {
    static_assert((M == 16 && N == 16 && K == 16) || (M == 32 && N == 8 && K == 16) ||
                  (M == 8 && N == 32 && K == 16), "emulated wmma: m16n16k16, m32n8k16, m8n32k16");
public:
    enum { rows = emu_dims_<Use, M, N, K>::R, cols = emu_dims_<Use, M, N, K>::C,
           num_elements = rows * cols };
    typedef T element_type;
    typedef T storage_element_type;
    T x[num_elements];
};

inline void emu_wsync_() { __syncwarp(__activemask()); }

template <typename T> inline float emu_wf_(T v) { return (float)v; }
template <> inline float emu_wf_<__half>(__half v) { return __half2float(v); }
template <> inline float emu_wf_<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> inline T emu_wt_(float v) { return (T)v; }
template <> inline __half emu_wt_<__half>(float v) { return __float2half_rn(v); }
template <> inline __nv_bfloat16 emu_wt_<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

template <typename Use, int M, int N, int K, typename T, typename L, typename V>
inline void fill_fragment(fragment<Use, M, N, K, T, L>& f, const V& v) {
    for (int i = 0; i < f.num_elements; i++) f.x[i] = (T)v;
}

// a / b: the layout is part of the fragment type.
template <typename Use, int M, int N, int K, typename T, typename L>
inline void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const T* p, unsigned ldm) {
    emu_wsync_();
    static_assert(!std::is_same<L, void>::value, "matrix_a/matrix_b fragments need a layout");
    typedef fragment<Use, M, N, K, T, L> F;
    for (int r = 0; r < F::rows; r++)
        for (int c = 0; c < F::cols; c++)
            f.x[r * F::cols + c] = std::is_same<L, row_major>::value ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r];
}
// accumulator: the layout is an argument.
template <int M, int N, int K, typename T>
inline void load_matrix_sync(fragment<accumulator, M, N, K, T>& f, const T* p, unsigned ldm, layout_t l) {
    emu_wsync_();
    for (int r = 0; r < M; r++)
        for (int c = 0; c < N; c++)
            f.x[r * N + c] = l == mem_row_major ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r];
}
template <int M, int N, int K, typename T>
inline void store_matrix_sync(T* p, const fragment<accumulator, M, N, K, T>& f, unsigned ldm, layout_t l) {
    emu_wsync_();
    for (int r = 0; r < M; r++)
        for (int c = 0; c < N; c++)
            (l == mem_row_major ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r]) = f.x[r * N + c];
}

// d = a*b + c, accumulated in fp32 (both for float and half accumulators), rounded once to Td.
template <int M, int N, int K, typename Tab, typename La, typename Lb, typename Tc, typename Td>
inline void mma_sync(fragment<accumulator, M, N, K, Td>& d, const fragment<matrix_a, M, N, K, Tab, La>& a,
                     const fragment<matrix_b, M, N, K, Tab, Lb>& b, const fragment<accumulator, M, N, K, Tc>& c) {
    emu_wsync_();
    float fa[M * K], fb[K * N], acc[M * N];
    for (int i = 0; i < M * K; i++) fa[i] = emu_wf_(a.x[i]);
    for (int i = 0; i < K * N; i++) fb[i] = emu_wf_(b.x[i]);
    for (int i = 0; i < M * N; i++) acc[i] = emu_wf_(c.x[i]);
    for (int i = 0; i < M; i++)
        for (int k = 0; k < K; k++) {
            float av = fa[i * K + k];
            for (int j = 0; j < N; j++) acc[i * N + j] += av * fb[k * N + j];
        }
    for (int i = 0; i < M * N; i++) d.x[i] = emu_wt_<Td>(acc[i]);
}

}  // namespace wmma
}  // namespace nvcuda

#endif
