// emu_cudnn.cpp — test-only stand-in for the cuDNN (legacy convolution API) calls the CUDA backend
// makes.
//
// Compiled as ordinary C++ against the real cudnn.h (cuDNN 9: every signature and enum is checked)
// and exporting the real symbol names, so an emulated test program links this instead of
// libcudnn. Device memory is host memory under the emulator, so tensors are dereferenced directly
// after their extents have been checked against their cudaMalloc allocations (emu_mem_extent).
//
// Semantics follow the cuDNN documentation: 4-d NCHW / NHWC / explicitly strided tensors, KCRS /
// KRSC filters, padding, stride, dilation, groups, CONVOLUTION (flipped filter) vs
// CROSS_CORRELATION, y = alpha·conv(x, w) + beta·y with beta == 0 never reading y, fp32
// accumulation and one rounding to y's type, workspace sizes per algorithm. Invalid arguments
// return the documented statuses; a tensor reaching past its allocation, or a destroyed handle or
// descriptor, ends the program through emu_fail. docs/cuda_standins.md lists what is checked.
#include <cudnn.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <set>
#include <vector>

#include "emu_control.h"
#include "emu_mem.h"

struct cudnnContext {
    cudaStream_t stream = nullptr;
};
struct cudnnTensorStruct {
    bool set = false;
    cudnnDataType_t dt = CUDNN_DATA_FLOAT;
    bool vect_c = false;
    int n = 0, c = 0, h = 0, w = 0;
    int64_t ns = 0, cs = 0, hs = 0, ws = 0;  // strides in elements
};
struct cudnnFilterStruct {
    bool set = false;
    cudnnDataType_t dt = CUDNN_DATA_FLOAT;
    cudnnTensorFormat_t fmt = CUDNN_TENSOR_NCHW;
    int k = 0, c = 0, r = 0, s = 0;
};
struct cudnnConvolutionStruct {
    bool set = false;
    int ph = 0, pw = 0, u = 1, v = 1, dh = 1, dw = 1;
    cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
    cudnnDataType_t comp = CUDNN_DATA_FLOAT;
    int groups = 1;
    cudnnMathType_t math = CUDNN_DEFAULT_MATH;
};
struct cudnnActivationStruct {
    bool set = false;
    cudnnActivationMode_t mode = CUDNN_ACTIVATION_RELU;
    double coef = 0;
};

namespace {

// ---- object registry: a destroyed or never-created handle/descriptor is a program error --------
std::mutex g_mu;
std::set<const void*>& live() {
    static std::set<const void*> s;
    return s;
}
template <class T> cudnnStatus_t create(T** out) {
    if (!out) return CUDNN_STATUS_BAD_PARAM;
    T* p = new T();
    std::lock_guard<std::mutex> lk(g_mu);
    live().insert(p);
    *out = p;
    return CUDNN_STATUS_SUCCESS;
}
template <class T> cudnnStatus_t destroy(T* p) {
    if (!p) return CUDNN_STATUS_SUCCESS;  // destroying NULL is a no-op
    {
        std::lock_guard<std::mutex> lk(g_mu);
        if (!live().erase(p)) emu_fail("cuDNN: destroying %p twice (or something never created)", (const void*)p);
    }
    delete p;
    return CUDNN_STATUS_SUCCESS;
}
void require_live(const char* fn, const char* what, const void* p) {
    std::lock_guard<std::mutex> lk(g_mu);
    if (!live().count(p)) emu_fail("%s: %s %p was destroyed or never created", fn, what, p);
}
// NULL → BAD_PARAM; destroyed → emu_fail; created but never set → BAD_PARAM.
template <class T> bool usable(const char* fn, const char* what, const T* p) {
    if (!p) return false;
    require_live(fn, what, p);
    return p->set;
}
bool handle_ok(const char* fn, cudnnHandle_t h) {
    if (!h) return false;
    require_live(fn, "handle", h);
    return true;
}

size_t elem_size(cudnnDataType_t t) {
    switch (t) {
    case CUDNN_DATA_FLOAT: return 4;
    case CUDNN_DATA_HALF: return 2;
    case CUDNN_DATA_BFLOAT16: return 2;
    default: return 0;  // types the stand-in does not compute on
    }
}
bool valid_dtype(cudnnDataType_t t) { return (int)t >= 0 && (int)t <= (int)CUDNN_DATA_COMPLEX_FP64; }

inline float load(const void* p, cudnnDataType_t t, int64_t i) {
    switch (t) {
    case CUDNN_DATA_HALF: return __half2float(((const __half*)p)[i]);
    case CUDNN_DATA_BFLOAT16: return __bfloat162float(((const __nv_bfloat16*)p)[i]);
    default: return ((const float*)p)[i];
    }
}
inline void store(void* p, cudnnDataType_t t, int64_t i, float v) {
    switch (t) {
    case CUDNN_DATA_HALF: ((__half*)p)[i] = __float2half_rn(v); break;
    case CUDNN_DATA_BFLOAT16: ((__nv_bfloat16*)p)[i] = __float2bfloat16_rn(v); break;
    default: ((float*)p)[i] = v; break;
    }
}

// Input rounding the library may apply (tensor cores): FLOAT data under DEFAULT / TENSOR_OP math
// may run as TF32, under TENSOR_OP_MATH_ALLOW_CONVERSION as fp16; FMA_MATH is exact fp32. The
// emulator takes the least precise choice so tolerances found here hold on the GPU.
enum class Round { none, tf32, f16 };
inline float apply_round(float x, Round r) {
    if (r == Round::f16) return __half2float(__float2half_rn(x));
    if (r == Round::tf32) {
        uint32_t u;
        std::memcpy(&u, &x, 4);
        if ((u & 0x7f800000u) != 0x7f800000u) {
            u += 0xfffu + ((u >> 13) & 1u);
            u &= ~0x1fffu;
        }
        std::memcpy(&x, &u, 4);
    }
    return x;
}

void check_bytes(const char* fn, const char* what, const void* p, size_t need) {
    if (need == 0) return;
    size_t have = 0;
    if (!emu_mem_extent(p, &have))
        emu_fail("%s: %s = %p is not inside any live cudaMalloc allocation", fn, what, p);
    if (have < need)
        emu_fail("%s: %s needs %zu bytes from %p but its allocation ends %zu bytes after it", fn,
                 what, need, p, have);
}
void check_tensor(const char* fn, const char* what, const void* p, const cudnnTensorStruct* t) {
    int64_t last = (int64_t)(t->n - 1) * t->ns + (int64_t)(t->c - 1) * t->cs +
                   (int64_t)(t->h - 1) * t->hs + (int64_t)(t->w - 1) * t->ws;
    check_bytes(fn, what, p, (size_t)(last + 1) * elem_size(t->dt));
}
bool negative_strides(const cudnnTensorStruct* t) { return t->ns < 0 || t->cs < 0 || t->hs < 0 || t->ws < 0; }

// Filter element (k, c, r, s) offset: KCRS for NCHW, KRSC for NHWC.
inline int64_t filter_at(const cudnnFilterStruct* f, int k, int c, int r, int s) {
    if (f->fmt == CUDNN_TENSOR_NHWC) return (((int64_t)k * f->r + r) * f->s + s) * f->c + c;
    return (((int64_t)k * f->c + c) * f->r + r) * f->s + s;
}

// ---- convolution shape and argument checks -----------------------------------------------------
struct Shape {
    int N, C, H, W, K, R, S, P, Q, G, Cg, Kg;
};

// x, w, conv: BAD_PARAM for NULL / unset descriptors, channels that do not divide into the groups,
// a dilated filter larger than the padded input. Fills the output size.
cudnnStatus_t conv_shape(const char* fn, const cudnnTensorStruct* x, const cudnnFilterStruct* w,
                         const cudnnConvolutionStruct* cv, Shape* sh) {
    if (!usable(fn, "xDesc", x) || !usable(fn, "wDesc", w) || !usable(fn, "convDesc", cv))
        return CUDNN_STATUS_BAD_PARAM;
    Shape s{};
    s.N = x->n, s.C = x->c, s.H = x->h, s.W = x->w, s.K = w->k, s.R = w->r, s.S = w->s, s.G = cv->groups;
    if (s.C != w->c * s.G || s.K % s.G) return CUDNN_STATUS_BAD_PARAM;
    int eff_r = (s.R - 1) * cv->dh + 1, eff_s = (s.S - 1) * cv->dw + 1;
    if (eff_r > s.H + 2 * cv->ph || eff_s > s.W + 2 * cv->pw) return CUDNN_STATUS_BAD_PARAM;
    s.P = 1 + (s.H + 2 * cv->ph - eff_r) / cv->u;
    s.Q = 1 + (s.W + 2 * cv->pw - eff_s) / cv->v;
    s.Cg = w->c, s.Kg = s.K / s.G;
    *sh = s;
    return CUDNN_STATUS_SUCCESS;
}

// Adds y: matching data types (BAD_PARAM), y's N and C (BAD_PARAM), y's spatial size
// (NOT_SUPPORTED, as documented for cudnnConvolutionForward), layouts, the data-type config.
cudnnStatus_t conv_check(const char* fn, const cudnnTensorStruct* x, const cudnnFilterStruct* w,
                         const cudnnConvolutionStruct* cv, const cudnnTensorStruct* y, Shape* sh) {
    cudnnStatus_t st = conv_shape(fn, x, w, cv, sh);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    if (!usable(fn, "yDesc", y)) return CUDNN_STATUS_BAD_PARAM;
    if (x->dt != w->dt || x->dt != y->dt) return CUDNN_STATUS_BAD_PARAM;
    if (y->n != sh->N || y->c != sh->K) return CUDNN_STATUS_BAD_PARAM;
    if (y->h != sh->P || y->w != sh->Q) return CUDNN_STATUS_NOT_SUPPORTED;
    if (negative_strides(x) || negative_strides(y) || x->vect_c || y->vect_c ||
        w->fmt == CUDNN_TENSOR_NCHW_VECT_C)
        return CUDNN_STATUS_NOT_SUPPORTED;
    // Configs: FLOAT (float compute), PSEUDO_HALF (half data, float compute), TRUE_HALF (half
    // compute), PSEUDO_BFLOAT16 (bf16 data, float compute). DOUBLE and INT8 are valid in cuDNN but
    // not implemented here.
    bool ok = (x->dt == CUDNN_DATA_FLOAT && cv->comp == CUDNN_DATA_FLOAT) ||
              (x->dt == CUDNN_DATA_HALF && (cv->comp == CUDNN_DATA_FLOAT || cv->comp == CUDNN_DATA_HALF)) ||
              (x->dt == CUDNN_DATA_BFLOAT16 && cv->comp == CUDNN_DATA_FLOAT);
    return ok ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_NOT_SUPPORTED;
}

size_t round_up(size_t v, size_t to) { return (v + to - 1) / to * to; }

// Which algorithms the stand-in offers, and their workspace (plausible sizes of the same order as
// the library's; callers must query them, never assume 0).
bool algo_workspace(cudnnConvolutionFwdAlgo_t algo, const Shape& s, const cudnnConvolutionStruct* cv,
                    size_t es, size_t* bytes) {
    bool winograd_shape = s.R == 3 && s.S == 3 && cv->u == 1 && cv->v == 1 && cv->dh == 1 && cv->dw == 1;
    switch (algo) {
    case CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM: *bytes = 0; return true;
    case CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM:
        *bytes = round_up((size_t)s.Cg * s.R * s.S * 8, 256);  // precomputed input offsets
        return true;
    case CUDNN_CONVOLUTION_FWD_ALGO_GEMM:  // im2col of one image and group
        *bytes = round_up((size_t)s.Cg * s.R * s.S * s.P * s.Q * es, 256);
        return true;
    case CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD:
        *bytes = 0;
        return winograd_shape && s.G == 1;
    case CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED:
        *bytes = round_up((size_t)36 * ((s.P + 3) / 4) * ((s.Q + 3) / 4) * (s.C + s.K) * s.N * 4, 256);
        return winograd_shape;
    default:  // DIRECT, FFT, FFT_TILING: not offered by the stand-in
        *bytes = 0;
        return false;
    }
}
bool valid_algo(cudnnConvolutionFwdAlgo_t a) { return (int)a >= 0 && (int)a < (int)CUDNN_CONVOLUTION_FWD_ALGO_COUNT; }

// conv(x, w) for every output element, fp32, planar [N][K][P][Q].
void conv_compute(const Shape& s, const cudnnTensorStruct* xd, const void* x,
                  const cudnnFilterStruct* wd, const void* w, const cudnnConvolutionStruct* cv,
                  std::vector<float>& out) {
    Round rnd = Round::none;
    if (xd->dt == CUDNN_DATA_FLOAT) {
        if (cv->math == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) rnd = Round::f16;
        else if (cv->math != CUDNN_FMA_MATH) rnd = Round::tf32;
    }
    const bool flip = cv->mode == CUDNN_CONVOLUTION;
    std::vector<float> wf((size_t)s.K * s.Cg * s.R * s.S);  // [K][Cg][R][S], flipped when CONVOLUTION
    for (int k = 0; k < s.K; k++)
        for (int c = 0; c < s.Cg; c++)
            for (int r = 0; r < s.R; r++)
                for (int q = 0; q < s.S; q++) {
                    int rr = flip ? s.R - 1 - r : r, qq = flip ? s.S - 1 - q : q;
                    wf[(((size_t)k * s.Cg + c) * s.R + r) * s.S + q] =
                        apply_round(load(w, wd->dt, filter_at(wd, k, c, rr, qq)), rnd);
                }
    out.assign((size_t)s.N * s.K * s.P * s.Q, 0.f);
    std::vector<float> xs((size_t)s.Cg * s.H * s.W);
    for (int n = 0; n < s.N; n++)
        for (int g = 0; g < s.G; g++) {
            for (int c = 0; c < s.Cg; c++)  // this group's input channels, planar fp32
                for (int h = 0; h < s.H; h++)
                    for (int ww = 0; ww < s.W; ww++)
                        xs[((size_t)c * s.H + h) * s.W + ww] = apply_round(
                            load(x, xd->dt, n * xd->ns + (int64_t)(g * s.Cg + c) * xd->cs + h * xd->hs + ww * xd->ws), rnd);
            for (int kk = 0; kk < s.Kg; kk++) {
                const int k = g * s.Kg + kk;
                float* o = out.data() + ((size_t)n * s.K + k) * s.P * s.Q;
                for (int c = 0; c < s.Cg; c++)
                    for (int r = 0; r < s.R; r++)
                        for (int q = 0; q < s.S; q++) {
                            const float wv = wf[(((size_t)k * s.Cg + c) * s.R + r) * s.S + q];
                            const int off_w = q * cv->dw - cv->pw;  // iw = ow·v + off_w
                            int q_lo = off_w >= 0 ? 0 : (-off_w + cv->v - 1) / cv->v;
                            int q_hi = (s.W - 1 - off_w) < 0 ? -1 : (s.W - 1 - off_w) / cv->v;
                            if (q_hi > s.Q - 1) q_hi = s.Q - 1;
                            for (int p = 0; p < s.P; p++) {
                                const int ih = p * cv->u - cv->ph + r * cv->dh;
                                if (ih < 0 || ih >= s.H) continue;
                                const float* __restrict__ xr = xs.data() + ((size_t)c * s.H + ih) * s.W;
                                float* __restrict__ orow = o + (size_t)p * s.Q;
                                if (cv->v == 1)
                                    for (int ow = q_lo; ow <= q_hi; ow++) orow[ow] += wv * xr[ow + off_w];
                                else
                                    for (int ow = q_lo; ow <= q_hi; ow++) orow[ow] += wv * xr[ow * cv->v + off_w];
                            }
                        }
            }
        }
}

inline int64_t tensor_at(const cudnnTensorStruct* t, int n, int c, int h, int w) {
    return n * t->ns + c * t->cs + h * t->hs + w * t->ws;
}

// Shared by ConvolutionForward and ConvolutionBiasActivationForward: descriptor and config
// checks, algorithm and workspace size.
cudnnStatus_t conv_prologue(const char* fn, cudnnHandle_t handle, const cudnnTensorStruct* xd,
                            const void* x, const cudnnFilterStruct* wd, const void* w,
                            const cudnnConvolutionStruct* cv, cudnnConvolutionFwdAlgo_t algo,
                            void* ws, size_t ws_bytes, const cudnnTensorStruct* yd, void* y,
                            Shape* s) {
    if (!handle_ok(fn, handle)) return CUDNN_STATUS_BAD_PARAM;
    cudnnStatus_t st = conv_check(fn, xd, wd, cv, yd, s);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    if (!x || !w || !y) return CUDNN_STATUS_BAD_PARAM;
    if (!valid_algo(algo)) return CUDNN_STATUS_BAD_PARAM;
    size_t need = 0;
    if (!algo_workspace(algo, *s, cv, elem_size(xd->dt), &need)) return CUDNN_STATUS_NOT_SUPPORTED;
    if (ws_bytes < need) return CUDNN_STATUS_BAD_PARAM;
    return CUDNN_STATUS_SUCCESS;
}

// When the work runs: x, w, y and the workspace inside their allocations.
void conv_extents(const char* fn, const cudnnTensorStruct* xd, const void* x, const cudnnFilterStruct* wd,
                  const void* w, const cudnnTensorStruct* yd, const void* y, const void* ws, size_t ws_bytes) {
    if (ws_bytes) check_bytes(fn, "workSpace", ws, ws_bytes);
    check_tensor(fn, "x", x, xd);
    check_bytes(fn, "w", w, (size_t)wd->k * wd->c * wd->r * wd->s * elem_size(wd->dt));
    check_tensor(fn, "y", y, yd);
}

cudnnStatus_t set_tensor(cudnnTensorStruct* t, cudnnDataType_t dt, bool vect_c, int n, int c, int h,
                         int w, int64_t ns, int64_t cs, int64_t hs, int64_t ws) {
    if (!t) return CUDNN_STATUS_BAD_PARAM;
    require_live("cudnnSetTensor4dDescriptor", "tensorDesc", t);
    if (!valid_dtype(dt) || n <= 0 || c <= 0 || h <= 0 || w <= 0) return CUDNN_STATUS_BAD_PARAM;
    if ((double)n * c * h * w > 2147483647.0) return CUDNN_STATUS_NOT_SUPPORTED;
    t->dt = dt, t->vect_c = vect_c, t->n = n, t->c = c, t->h = h, t->w = w;
    t->ns = ns, t->cs = cs, t->hs = hs, t->ws = ws;
    t->set = true;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t algo_list(const char* fn, cudnnHandle_t handle, const cudnnTensorStruct* x,
                        const cudnnFilterStruct* w, const cudnnConvolutionStruct* cv,
                        const cudnnTensorStruct* y, int requested, int* returned,
                        cudnnConvolutionFwdAlgoPerf_t* perf) {
    if (!handle_ok(fn, handle) || !returned || !perf || requested < 1) return CUDNN_STATUS_BAD_PARAM;
    Shape s;
    cudnnStatus_t st = conv_check(fn, x, w, cv, y, &s);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    // Heuristic order; the algorithms the stand-in does not offer come last, NOT_SUPPORTED.
    static const cudnnConvolutionFwdAlgo_t order[] = {
        CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
        CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED,     CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD,
        CUDNN_CONVOLUTION_FWD_ALGO_GEMM,                  CUDNN_CONVOLUTION_FWD_ALGO_DIRECT,
        CUDNN_CONVOLUTION_FWD_ALGO_FFT,                   CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING};
    std::vector<cudnnConvolutionFwdAlgoPerf_t> ok, bad;
    for (cudnnConvolutionFwdAlgo_t a : order) {
        cudnnConvolutionFwdAlgoPerf_t p{};
        p.algo = a;
        bool sup = algo_workspace(a, s, cv, elem_size(x->dt), &p.memory);
        p.status = sup ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_NOT_SUPPORTED;
        p.time = sup ? 0.1f * (float)(ok.size() + 1) : -1.f;
        p.determinism = CUDNN_DETERMINISTIC;
        p.mathType = cv->math;
        (sup ? ok : bad).push_back(p);
    }
    ok.insert(ok.end(), bad.begin(), bad.end());
    int cnt = requested < (int)ok.size() ? requested : (int)ok.size();
    for (int i = 0; i < cnt; i++) perf[i] = ok[i];
    *returned = cnt;
    return CUDNN_STATUS_SUCCESS;
}

}  // namespace

extern "C" {

// ---- library, handle ---------------------------------------------------------------------------
size_t CUDNNWINAPI cudnnGetVersion(void) { return CUDNN_VERSION; }

const char* CUDNNWINAPI cudnnGetErrorString(cudnnStatus_t status) {
    switch ((int)status) {
#define DS_S(x) case x: return #x;
        DS_S(CUDNN_STATUS_SUCCESS) DS_S(CUDNN_STATUS_NOT_INITIALIZED)
        DS_S(CUDNN_STATUS_SUBLIBRARY_VERSION_MISMATCH) DS_S(CUDNN_STATUS_SERIALIZATION_VERSION_MISMATCH)
        DS_S(CUDNN_STATUS_DEPRECATED) DS_S(CUDNN_STATUS_LICENSE_ERROR) DS_S(CUDNN_STATUS_RUNTIME_IN_PROGRESS)
        DS_S(CUDNN_STATUS_RUNTIME_FP_OVERFLOW) DS_S(CUDNN_STATUS_SUBLIBRARY_LOADING_FAILED)
        DS_S(CUDNN_STATUS_BAD_PARAM) DS_S(CUDNN_STATUS_BAD_PARAM_NULL_POINTER)
        DS_S(CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER) DS_S(CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED)
        DS_S(CUDNN_STATUS_BAD_PARAM_OUT_OF_BOUND) DS_S(CUDNN_STATUS_BAD_PARAM_SIZE_INSUFFICIENT)
        DS_S(CUDNN_STATUS_BAD_PARAM_STREAM_MISMATCH) DS_S(CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH)
        DS_S(CUDNN_STATUS_BAD_PARAM_DUPLICATED_ENTRIES) DS_S(CUDNN_STATUS_BAD_PARAM_ATTRIBUTE_TYPE)
        DS_S(CUDNN_STATUS_BAD_PARAM_CUDA_GRAPH_MISMATCH) DS_S(CUDNN_STATUS_BAD_PARAM_DESCRIPTOR_TYPE)
        DS_S(CUDNN_STATUS_NOT_SUPPORTED) DS_S(CUDNN_STATUS_NOT_SUPPORTED_GRAPH_PATTERN)
        DS_S(CUDNN_STATUS_NOT_SUPPORTED_SHAPE) DS_S(CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE)
        DS_S(CUDNN_STATUS_NOT_SUPPORTED_LAYOUT) DS_S(CUDNN_STATUS_NOT_SUPPORTED_INCOMPATIBLE_CUDA_DRIVER)
        DS_S(CUDNN_STATUS_NOT_SUPPORTED_INCOMPATIBLE_CUDART) DS_S(CUDNN_STATUS_NOT_SUPPORTED_ARCH_MISMATCH)
        DS_S(CUDNN_STATUS_NOT_SUPPORTED_RUNTIME_PREREQUISITE_MISSING)
        DS_S(CUDNN_STATUS_NOT_SUPPORTED_SUBLIBRARY_UNAVAILABLE)
        DS_S(CUDNN_STATUS_NOT_SUPPORTED_SHARED_MEMORY_INSUFFICIENT) DS_S(CUDNN_STATUS_NOT_SUPPORTED_PADDING)
        DS_S(CUDNN_STATUS_NOT_SUPPORTED_BAD_LAUNCH_PARAM) DS_S(CUDNN_STATUS_NOT_SUPPORTED_CUDA_GRAPH_NATIVE_API)
        DS_S(CUDNN_STATUS_NOT_SUPPORTED_INVALID_DYNAMIC_SHAPE) DS_S(CUDNN_STATUS_INTERNAL_ERROR)
        DS_S(CUDNN_STATUS_INTERNAL_ERROR_COMPILATION_FAILED) DS_S(CUDNN_STATUS_INTERNAL_ERROR_UNEXPECTED_VALUE)
        DS_S(CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED)
        DS_S(CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED)
        DS_S(CUDNN_STATUS_INTERNAL_ERROR_BAD_LAUNCH_PARAM) DS_S(CUDNN_STATUS_INTERNAL_ERROR_TEXTURE_CREATION_FAILED)
        DS_S(CUDNN_STATUS_EXECUTION_FAILED) DS_S(CUDNN_STATUS_EXECUTION_FAILED_CUDA_DRIVER)
        DS_S(CUDNN_STATUS_EXECUTION_FAILED_CUBLAS) DS_S(CUDNN_STATUS_EXECUTION_FAILED_CUDART)
        DS_S(CUDNN_STATUS_EXECUTION_FAILED_CURAND) case 2001: return "CUDNN_STATUS_INVALID_VALUE";
#undef DS_S
    }
    return "CUDNN_STATUS_UNKNOWN";
}

cudnnStatus_t CUDNNWINAPI cudnnCreate(cudnnHandle_t* handle) { return create(handle); }
cudnnStatus_t CUDNNWINAPI cudnnDestroy(cudnnHandle_t handle) {
    if (!handle) return CUDNN_STATUS_BAD_PARAM;
    return destroy(handle);
}
cudnnStatus_t CUDNNWINAPI cudnnSetStream(cudnnHandle_t handle, cudaStream_t streamId) {
    if (!handle_ok("cudnnSetStream", handle)) return CUDNN_STATUS_BAD_PARAM;
    handle->stream = streamId;
    return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t CUDNNWINAPI cudnnGetStream(cudnnHandle_t handle, cudaStream_t* streamId) {
    if (!handle_ok("cudnnGetStream", handle) || !streamId) return CUDNN_STATUS_BAD_PARAM;
    *streamId = handle->stream;
    return CUDNN_STATUS_SUCCESS;
}

// ---- tensor descriptors ------------------------------------------------------------------------
cudnnStatus_t CUDNNWINAPI cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t* d) { return create(d); }
cudnnStatus_t CUDNNWINAPI cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t d) { return destroy(d); }

cudnnStatus_t CUDNNWINAPI cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t d, cudnnTensorFormat_t format,
                                                     cudnnDataType_t dataType, int n, int c, int h, int w) {
    switch (format) {
    case CUDNN_TENSOR_NCHW:
        return set_tensor(d, dataType, false, n, c, h, w, (int64_t)c * h * w, (int64_t)h * w, w, 1);
    case CUDNN_TENSOR_NHWC:
        return set_tensor(d, dataType, false, n, c, h, w, (int64_t)h * w * c, 1, (int64_t)w * c, c);
    case CUDNN_TENSOR_NCHW_VECT_C:  // valid, but the stand-in's ops reject it (NOT_SUPPORTED)
        return set_tensor(d, dataType, true, n, c, h, w, (int64_t)c * h * w, (int64_t)h * w, w, 1);
    }
    return CUDNN_STATUS_BAD_PARAM;
}

cudnnStatus_t CUDNNWINAPI cudnnSetTensor4dDescriptorEx(cudnnTensorDescriptor_t d, cudnnDataType_t dataType,
                                                       int n, int c, int h, int w, int nStride,
                                                       int cStride, int hStride, int wStride) {
    return set_tensor(d, dataType, false, n, c, h, w, nStride, cStride, hStride, wStride);
}

// ---- filter descriptors ------------------------------------------------------------------------
cudnnStatus_t CUDNNWINAPI cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t* d) { return create(d); }
cudnnStatus_t CUDNNWINAPI cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t d) { return destroy(d); }

cudnnStatus_t CUDNNWINAPI cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t d, cudnnDataType_t dataType,
                                                     cudnnTensorFormat_t format, int k, int c, int h, int w) {
    if (!d) return CUDNN_STATUS_BAD_PARAM;
    require_live("cudnnSetFilter4dDescriptor", "filterDesc", d);
    if (!valid_dtype(dataType) || k <= 0 || c <= 0 || h <= 0 || w <= 0) return CUDNN_STATUS_BAD_PARAM;
    if (format != CUDNN_TENSOR_NCHW && format != CUDNN_TENSOR_NHWC && format != CUDNN_TENSOR_NCHW_VECT_C)
        return CUDNN_STATUS_BAD_PARAM;
    d->dt = dataType, d->fmt = format, d->k = k, d->c = c, d->r = h, d->s = w;
    d->set = true;
    return CUDNN_STATUS_SUCCESS;
}

// ---- convolution descriptors -------------------------------------------------------------------
cudnnStatus_t CUDNNWINAPI cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t* d) { return create(d); }
cudnnStatus_t CUDNNWINAPI cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t d) { return destroy(d); }

cudnnStatus_t CUDNNWINAPI cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t d, int pad_h, int pad_w,
                                                          int u, int v, int dilation_h, int dilation_w,
                                                          cudnnConvolutionMode_t mode,
                                                          cudnnDataType_t computeType) {
    if (!d) return CUDNN_STATUS_BAD_PARAM;
    require_live("cudnnSetConvolution2dDescriptor", "convDesc", d);
    if (pad_h < 0 || pad_w < 0 || u <= 0 || v <= 0 || dilation_h <= 0 || dilation_w <= 0 ||
        (mode != CUDNN_CONVOLUTION && mode != CUDNN_CROSS_CORRELATION) || !valid_dtype(computeType))
        return CUDNN_STATUS_BAD_PARAM;
    d->ph = pad_h, d->pw = pad_w, d->u = u, d->v = v, d->dh = dilation_h, d->dw = dilation_w;
    d->mode = mode, d->comp = computeType;
    d->set = true;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t CUDNNWINAPI cudnnSetConvolutionGroupCount(cudnnConvolutionDescriptor_t d, int groupCount) {
    if (!d || groupCount < 1) return CUDNN_STATUS_BAD_PARAM;
    require_live("cudnnSetConvolutionGroupCount", "convDesc", d);
    d->groups = groupCount;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t CUDNNWINAPI cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t d, cudnnMathType_t mathType) {
    if (!d) return CUDNN_STATUS_BAD_PARAM;
    require_live("cudnnSetConvolutionMathType", "convDesc", d);
    if (mathType != CUDNN_DEFAULT_MATH && mathType != CUDNN_TENSOR_OP_MATH &&
        mathType != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION && mathType != CUDNN_FMA_MATH)
        return CUDNN_STATUS_BAD_PARAM;
    d->math = mathType;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t CUDNNWINAPI cudnnGetConvolution2dForwardOutputDim(const cudnnConvolutionDescriptor_t convDesc,
                                                                const cudnnTensorDescriptor_t inputTensorDesc,
                                                                const cudnnFilterDescriptor_t filterDesc,
                                                                int* n, int* c, int* h, int* w) {
    if (!n || !c || !h || !w) return CUDNN_STATUS_BAD_PARAM;
    Shape s;
    cudnnStatus_t st = conv_shape("cudnnGetConvolution2dForwardOutputDim", inputTensorDesc, filterDesc, convDesc, &s);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    *n = s.N, *c = s.K, *h = s.P, *w = s.Q;
    return CUDNN_STATUS_SUCCESS;
}

// ---- algorithms and workspace ------------------------------------------------------------------
cudnnStatus_t CUDNNWINAPI cudnnGetConvolutionForwardAlgorithmMaxCount(cudnnHandle_t handle, int* count) {
    if (!handle_ok("cudnnGetConvolutionForwardAlgorithmMaxCount", handle) || !count) return CUDNN_STATUS_BAD_PARAM;
    *count = CUDNN_CONVOLUTION_FWD_ALGO_COUNT;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t CUDNNWINAPI cudnnGetConvolutionForwardAlgorithm_v7(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t srcDesc, const cudnnFilterDescriptor_t filterDesc,
    const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t destDesc,
    const int requestedAlgoCount, int* returnedAlgoCount, cudnnConvolutionFwdAlgoPerf_t* perfResults) {
    return algo_list("cudnnGetConvolutionForwardAlgorithm_v7", handle, srcDesc, filterDesc, convDesc,
                     destDesc, requestedAlgoCount, returnedAlgoCount, perfResults);
}

// Nothing is timed: the heuristic order of _v7 is returned.
cudnnStatus_t CUDNNWINAPI cudnnFindConvolutionForwardAlgorithm(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc, const cudnnFilterDescriptor_t wDesc,
    const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t yDesc,
    const int requestedAlgoCount, int* returnedAlgoCount, cudnnConvolutionFwdAlgoPerf_t* perfResults) {
    return algo_list("cudnnFindConvolutionForwardAlgorithm", handle, xDesc, wDesc, convDesc, yDesc,
                     requestedAlgoCount, returnedAlgoCount, perfResults);
}

cudnnStatus_t CUDNNWINAPI cudnnFindConvolutionForwardAlgorithmEx(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc, const void* x,
    const cudnnFilterDescriptor_t wDesc, const void* w, const cudnnConvolutionDescriptor_t convDesc,
    const cudnnTensorDescriptor_t yDesc, void* y, const int requestedAlgoCount, int* returnedAlgoCount,
    cudnnConvolutionFwdAlgoPerf_t* perfResults, void* workSpace, size_t workSpaceSizeInBytes) {
    const char* fn = "cudnnFindConvolutionForwardAlgorithmEx";
    cudnnStatus_t st = algo_list(fn, handle, xDesc, wDesc, convDesc, yDesc, requestedAlgoCount,
                                 returnedAlgoCount, perfResults);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    if (!x || !w || !y) return CUDNN_STATUS_BAD_PARAM;
    check_tensor(fn, "x", x, xDesc);
    check_bytes(fn, "w", w, (size_t)wDesc->k * wDesc->c * wDesc->r * wDesc->s * elem_size(wDesc->dt));
    check_tensor(fn, "y", y, yDesc);
    if (workSpaceSizeInBytes) check_bytes(fn, "workSpace", workSpace, workSpaceSizeInBytes);
    for (int i = 0; i < *returnedAlgoCount; i++)  // an algorithm needing more workspace is not runnable
        if (perfResults[i].status == CUDNN_STATUS_SUCCESS && perfResults[i].memory > workSpaceSizeInBytes)
            perfResults[i].status = CUDNN_STATUS_ALLOC_FAILED;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t CUDNNWINAPI cudnnGetConvolutionForwardWorkspaceSize(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc, const cudnnFilterDescriptor_t wDesc,
    const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t yDesc,
    cudnnConvolutionFwdAlgo_t algo, size_t* sizeInBytes) {
    const char* fn = "cudnnGetConvolutionForwardWorkspaceSize";
    if (!handle_ok(fn, handle) || !sizeInBytes || !valid_algo(algo)) return CUDNN_STATUS_BAD_PARAM;
    Shape s;
    cudnnStatus_t st = conv_check(fn, xDesc, wDesc, convDesc, yDesc, &s);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    return algo_workspace(algo, s, convDesc, elem_size(xDesc->dt), sizeInBytes) ? CUDNN_STATUS_SUCCESS
                                                                              : CUDNN_STATUS_NOT_SUPPORTED;
}

// ---- convolution -------------------------------------------------------------------------------
cudnnStatus_t CUDNNWINAPI cudnnConvolutionForward(cudnnHandle_t handle, const void* alpha,
                                                  const cudnnTensorDescriptor_t xDesc, const void* x,
                                                  const cudnnFilterDescriptor_t wDesc, const void* w,
                                                  const cudnnConvolutionDescriptor_t convDesc,
                                                  cudnnConvolutionFwdAlgo_t algo, void* workSpace,
                                                  size_t workSpaceSizeInBytes, const void* beta,
                                                  const cudnnTensorDescriptor_t yDesc, void* y) {
    Shape s;
    cudnnStatus_t st = conv_prologue("cudnnConvolutionForward", handle, xDesc, x, wDesc, w, convDesc, algo,
                                     workSpace, workSpaceSizeInBytes, yDesc, y, &s);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    if (!alpha || !beta) return CUDNN_STATUS_BAD_PARAM;
    const float al = *(const float*)alpha, be = *(const float*)beta;  // float for half/bf16/float data
    // Descriptors copied: the work runs now, or when the graph the stream is capturing is launched.
    const cudnnTensorStruct xd = *xDesc, yd = *yDesc;
    const cudnnFilterStruct wd = *wDesc;
    const cudnnConvolutionStruct cd = *convDesc;
    emu_stream_submit(handle->stream, [=]() {
        conv_extents("cudnnConvolutionForward", &xd, x, &wd, w, &yd, y, workSpace, workSpaceSizeInBytes);
        std::vector<float> acc;
        conv_compute(s, &xd, x, &wd, w, &cd, acc);
        const float* a = acc.data();
        for (int n = 0; n < s.N; n++)
            for (int k = 0; k < s.K; k++)
                for (int p = 0; p < s.P; p++)
                    for (int q = 0; q < s.Q; q++, a++) {
                        int64_t i = tensor_at(&yd, n, k, p, q);
                        float v = al * *a;
                        if (be != 0.f) v += be * load(y, yd.dt, i);  // beta == 0: y is never read
                        store(y, yd.dt, i, v);
                    }
    });
    return CUDNN_STATUS_SUCCESS;
}

// y = act(alpha1·conv(x, w) + alpha2·z + bias). The library documents IDENTITY for the
// IMPLICIT_PRECOMP_GEMM algorithm only; the stand-in accepts it with every algorithm it offers.
// z may alias y; alpha2 == 0 never reads z.
cudnnStatus_t CUDNNWINAPI cudnnConvolutionBiasActivationForward(
    cudnnHandle_t handle, const void* alpha1, const cudnnTensorDescriptor_t xDesc, const void* x,
    const cudnnFilterDescriptor_t wDesc, const void* w, const cudnnConvolutionDescriptor_t convDesc,
    cudnnConvolutionFwdAlgo_t algo, void* workSpace, size_t workSpaceSizeInBytes, const void* alpha2,
    const cudnnTensorDescriptor_t zDesc, const void* z, const cudnnTensorDescriptor_t biasDesc,
    const void* bias, const cudnnActivationDescriptor_t activationDesc, const cudnnTensorDescriptor_t yDesc,
    void* y) {
    const char* fn = "cudnnConvolutionBiasActivationForward";
    Shape s;
    cudnnStatus_t st = conv_prologue(fn, handle, xDesc, x, wDesc, w, convDesc, algo, workSpace,
                                     workSpaceSizeInBytes, yDesc, y, &s);
    if (st != CUDNN_STATUS_SUCCESS) return st;
    if (!alpha1 || !alpha2 || !z || !bias || !usable(fn, "zDesc", zDesc) || !usable(fn, "biasDesc", biasDesc) ||
        !usable(fn, "activationDesc", activationDesc))
        return CUDNN_STATUS_BAD_PARAM;
    if (zDesc->n != yDesc->n || zDesc->c != yDesc->c || zDesc->h != yDesc->h || zDesc->w != yDesc->w ||
        zDesc->dt != yDesc->dt)
        return CUDNN_STATUS_BAD_PARAM;
    if (biasDesc->n != 1 || biasDesc->c != s.K || biasDesc->h != 1 || biasDesc->w != 1)
        return CUDNN_STATUS_BAD_PARAM;
    if (biasDesc->dt != yDesc->dt || negative_strides(zDesc) || negative_strides(biasDesc) || zDesc->vect_c || biasDesc->vect_c)
        return CUDNN_STATUS_NOT_SUPPORTED;
    const cudnnActivationMode_t mode = activationDesc->mode;
    if (mode != CUDNN_ACTIVATION_RELU && mode != CUDNN_ACTIVATION_IDENTITY) return CUDNN_STATUS_NOT_SUPPORTED;
    const float a1 = *(const float*)alpha1, a2 = *(const float*)alpha2;
    const cudnnTensorStruct xd = *xDesc, yd = *yDesc, zd = *zDesc, bd = *biasDesc;
    const cudnnFilterStruct wd = *wDesc;
    const cudnnConvolutionStruct cd = *convDesc;
    emu_stream_submit(handle->stream, [=]() {
        conv_extents(fn, &xd, x, &wd, w, &yd, y, workSpace, workSpaceSizeInBytes);
        if (a2 != 0.f) check_tensor(fn, "z", z, &zd);
        check_bytes(fn, "bias", bias, ((size_t)(s.K - 1) * (size_t)bd.cs + 1) * elem_size(bd.dt));
        std::vector<float> acc;
        conv_compute(s, &xd, x, &wd, w, &cd, acc);
        const float* a = acc.data();
        for (int n = 0; n < s.N; n++)
            for (int k = 0; k < s.K; k++) {
                const float b = load(bias, bd.dt, (int64_t)k * bd.cs);
                for (int p = 0; p < s.P; p++)
                    for (int q = 0; q < s.Q; q++, a++) {
                        float v = a1 * *a + b;
                        if (a2 != 0.f) v += a2 * load(z, zd.dt, tensor_at(&zd, n, k, p, q));
                        if (mode == CUDNN_ACTIVATION_RELU && v < 0.f) v = 0.f;  // NaN propagates
                        store(y, yd.dt, tensor_at(&yd, n, k, p, q), v);
                    }
            }
    });
    return CUDNN_STATUS_SUCCESS;
}

// C = alpha·A + beta·C; each dimension of A equals C's or is 1 (broadcast).
cudnnStatus_t CUDNNWINAPI cudnnAddTensor(cudnnHandle_t handle, const void* alpha, const cudnnTensorDescriptor_t aDesc,
                                         const void* A, const void* beta, const cudnnTensorDescriptor_t cDesc,
                                         void* C) {
    const char* fn = "cudnnAddTensor";
    if (!handle_ok(fn, handle) || !usable(fn, "aDesc", aDesc) || !usable(fn, "cDesc", cDesc) || !alpha ||
        !beta || !A || !C)
        return CUDNN_STATUS_BAD_PARAM;
    const int adim[4] = {aDesc->n, aDesc->c, aDesc->h, aDesc->w}, cdim[4] = {cDesc->n, cDesc->c, cDesc->h, cDesc->w};
    for (int i = 0; i < 4; i++)
        if (adim[i] != cdim[i] && adim[i] != 1) return CUDNN_STATUS_BAD_PARAM;
    if (aDesc->dt != cDesc->dt) return CUDNN_STATUS_BAD_PARAM;
    if (!elem_size(cDesc->dt) || negative_strides(aDesc) || negative_strides(cDesc) || aDesc->vect_c ||
        cDesc->vect_c)
        return CUDNN_STATUS_NOT_SUPPORTED;
    const float al = *(const float*)alpha, be = *(const float*)beta;
    const cudnnTensorStruct ad = *aDesc, cd = *cDesc;
    emu_stream_submit(handle->stream, [=]() {
        check_tensor(fn, "A", A, &ad);
        check_tensor(fn, "C", C, &cd);
        const int64_t sn = ad.n == 1 ? 0 : ad.ns, sc = ad.c == 1 ? 0 : ad.cs;
        const int64_t sh = ad.h == 1 ? 0 : ad.hs, sw = ad.w == 1 ? 0 : ad.ws;
        for (int n = 0; n < cd.n; n++)
            for (int c = 0; c < cd.c; c++)
                for (int h = 0; h < cd.h; h++)
                    for (int w = 0; w < cd.w; w++) {
                        int64_t ci = tensor_at(&cd, n, c, h, w);
                        float v = al * load(A, ad.dt, n * sn + c * sc + h * sh + w * sw);
                        if (be != 0.f) v += be * load(C, cd.dt, ci);  // beta == 0: C is never read
                        store(C, cd.dt, ci, v);
                    }
    });
    return CUDNN_STATUS_SUCCESS;
}

// ---- activation descriptors --------------------------------------------------------------------
cudnnStatus_t CUDNNWINAPI cudnnCreateActivationDescriptor(cudnnActivationDescriptor_t* d) { return create(d); }
cudnnStatus_t CUDNNWINAPI cudnnDestroyActivationDescriptor(cudnnActivationDescriptor_t d) { return destroy(d); }

cudnnStatus_t CUDNNWINAPI cudnnSetActivationDescriptor(cudnnActivationDescriptor_t d, cudnnActivationMode_t mode,
                                                       cudnnNanPropagation_t reluNanOpt, double coef) {
    if (!d) return CUDNN_STATUS_BAD_PARAM;
    require_live("cudnnSetActivationDescriptor", "activationDesc", d);
    if ((int)mode < (int)CUDNN_ACTIVATION_SIGMOID || (int)mode > (int)CUDNN_ACTIVATION_SWISH ||
        (reluNanOpt != CUDNN_NOT_PROPAGATE_NAN && reluNanOpt != CUDNN_PROPAGATE_NAN))
        return CUDNN_STATUS_BAD_PARAM;
    d->mode = mode, d->coef = coef;
    d->set = true;
    return CUDNN_STATUS_SUCCESS;
}

}  // extern "C"
