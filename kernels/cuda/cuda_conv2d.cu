// cuda_conv2d.cu — 2-D convolution (cross-correlation, like F.conv2d), NHWC, through cuDNN.
//
// x (N, H, W, C), w (O, kh, kw, C) = cuDNN's KRSC filter layout for CUDNN_TENSOR_NHWC,
// y (N, Ho, Wo, O), Ho = (H + 2·pad − kh)/stride + 1.
//   * 1×1, stride 1, pad 0: x already is the (N·H·W, C) GEMM operand → ds_cuda_linear (cuBLAS).
//   * otherwise cudnnConvolutionForward. Descriptors and the algorithm are made ONCE per shape
//     (cudnnGetConvolutionForwardAlgorithm_v7's heuristic order, first one that runs within the
//     workspace cap) and cached on the backend; the workspace comes from ds_cuda_workspace.
// Bias and residual, two ways:
//   * fused: cudnnConvolutionBiasActivationForward (identity activation) computes
//     y = conv(x) + bias [+ residual as z] with one rounding and no extra pass over y. cuDNN runs
//     the identity activation only with IMPLICIT_PRECOMP_GEMM, so this is used when the
//     heuristic picked that algorithm anyway (and unless cuDNN refuses the shape on first use);
//   * otherwise y is prefilled with residual + bias (ds_cuda_prefill, as linear does) and the
//     convolution accumulates onto it with beta = 1 — also correct when residual aliases y.
// Compute type fp32 for every storage type; fp32 data uses FMA math (no TF32).
#include <limits.h>

#include <vector>

#include "cuda_common.cuh"

namespace {

struct ConvKey {
    int64_t N, H, W, C;
    int O, kh, kw, stride, pad;
    ds_act_dtype dtype;
    bool operator==(const ConvKey& o) const {
        return N == o.N && H == o.H && W == o.W && C == o.C && O == o.O && kh == o.kh &&
               kw == o.kw && stride == o.stride && pad == o.pad && dtype == o.dtype;
    }
};

struct ConvPlan {
    ConvKey key;
    cudnnTensorDescriptor_t xd = nullptr, yd = nullptr;
    cudnnFilterDescriptor_t wd = nullptr;
    cudnnConvolutionDescriptor_t cd = nullptr;
    cudnnConvolutionFwdAlgo_t algo = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM;
    size_t ws_bytes = 0;
    cudnnTensorDescriptor_t bd = nullptr;      // bias (1, O, 1, 1), for the fused call
    cudnnActivationDescriptor_t ad = nullptr;  // identity
    bool fused_ok = false;                     // the fused call may be used for this shape
    bool fused_ran = false;                    // ... and has run at least once
};

bool g_force_unfused = false;  // test hook (ds_cuda_conv_force_unfused)

struct ConvCache {
    std::vector<ConvPlan> plans;  // a UNet + VAE has a few dozen distinct shapes
};

// Algorithms needing more scratch than this are skipped (the heuristic lists cheaper ones).
constexpr size_t WS_CAP = (size_t)512 << 20;

cudnnDataType_t cudnn_type(ds_act_dtype t) {
    switch (t) {
    case DS_ACT_F16: return CUDNN_DATA_HALF;
    case DS_ACT_BF16: return CUDNN_DATA_BFLOAT16;
    default: return CUDNN_DATA_FLOAT;
    }
}

void destroy_plan(ConvPlan& p) {
    if (p.xd) (void)cudnnDestroyTensorDescriptor(p.xd);
    if (p.yd) (void)cudnnDestroyTensorDescriptor(p.yd);
    if (p.wd) (void)cudnnDestroyFilterDescriptor(p.wd);
    if (p.cd) (void)cudnnDestroyConvolutionDescriptor(p.cd);
    if (p.bd) (void)cudnnDestroyTensorDescriptor(p.bd);
    if (p.ad) (void)cudnnDestroyActivationDescriptor(p.ad);
}

ConvPlan& get_plan(ds_backend* be, const ConvKey& k, int64_t Ho, int64_t Wo) {
    ConvCache*& cache = *(ConvCache**)ds_cuda_conv_cache_slot(be);
    if (!cache) cache = new ConvCache;
    for (ConvPlan& p : cache->plans)
        if (p.key == k) return p;

    if (k.N > INT_MAX || k.H > INT_MAX || k.W > INT_MAX || k.C > INT_MAX)
        ds_cuda_fatal(__FILE__, __LINE__, "conv2d", "tensor dimensions must fit in int");
    ConvPlan p;
    p.key = k;
    const cudnnDataType_t dt = cudnn_type(k.dtype);
    DS_CUDNN_CHECK(cudnnCreateTensorDescriptor(&p.xd));
    DS_CUDNN_CHECK(cudnnCreateTensorDescriptor(&p.yd));
    DS_CUDNN_CHECK(cudnnCreateFilterDescriptor(&p.wd));
    DS_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&p.cd));
    DS_CUDNN_CHECK(cudnnSetTensor4dDescriptor(p.xd, CUDNN_TENSOR_NHWC, dt, (int)k.N, (int)k.C,
                                              (int)k.H, (int)k.W));
    DS_CUDNN_CHECK(cudnnSetTensor4dDescriptor(p.yd, CUDNN_TENSOR_NHWC, dt, (int)k.N, k.O, (int)Ho,
                                              (int)Wo));
    // NHWC filter format = (K, R, S, C): exactly our (O, kh, kw, C) repacked weights
    DS_CUDNN_CHECK(cudnnSetFilter4dDescriptor(p.wd, dt, CUDNN_TENSOR_NHWC, k.O, (int)k.C, k.kh, k.kw));
    DS_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(p.cd, k.pad, k.pad, k.stride, k.stride, 1, 1,
                                                   CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    DS_CUDNN_CHECK(cudnnSetConvolutionMathType(
        p.cd, k.dtype == DS_ACT_F32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH));

    // the output shape cuDNN derives must be ours (catches a descriptor mix-up at plan time)
    int on, oc, oh, ow;
    DS_CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(p.cd, p.xd, p.wd, &on, &oc, &oh, &ow));
    if (on != k.N || oc != k.O || oh != Ho || ow != Wo)
        ds_cuda_fatal(__FILE__, __LINE__, "conv2d", "cuDNN's output shape differs from Ho/Wo");

    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int got = 0;
    DS_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(ds_cuda_cudnn(be), p.xd, p.wd, p.cd, p.yd,
                                                          CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got,
                                                          perf));
    bool found = false;
    for (int i = 0; i < got && !found; i++) {
        if (perf[i].status != CUDNN_STATUS_SUCCESS || perf[i].memory > WS_CAP) continue;
        // fp32: keep exact fp32 arithmetic (the heuristic may list tensor-op algorithms)
        if (k.dtype == DS_ACT_F32 && perf[i].mathType == CUDNN_TENSOR_OP_MATH) continue;
        p.algo = perf[i].algo;
        found = true;
    }
    if (!found) ds_cuda_fatal(__FILE__, __LINE__, "conv2d", "cuDNN offers no usable algorithm");
    DS_CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(ds_cuda_cudnn(be), p.xd, p.wd, p.cd, p.yd,
                                                           p.algo, &p.ws_bytes));
    DS_CUDNN_CHECK(cudnnCreateTensorDescriptor(&p.bd));
    DS_CUDNN_CHECK(cudnnSetTensor4dDescriptor(p.bd, CUDNN_TENSOR_NHWC, dt, 1, k.O, 1, 1));
    DS_CUDNN_CHECK(cudnnCreateActivationDescriptor(&p.ad));
    DS_CUDNN_CHECK(cudnnSetActivationDescriptor(p.ad, CUDNN_ACTIVATION_IDENTITY, CUDNN_NOT_PROPAGATE_NAN, 0.0));
    p.fused_ok = p.algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM;
    cache->plans.push_back(p);
    return cache->plans.back();
}

}  // namespace

void ds_cuda_conv_force_unfused(int on) { g_force_unfused = on != 0; }

void ds_cuda_conv_cache_free(ds_backend* be) {
    ConvCache*& cache = *(ConvCache**)ds_cuda_conv_cache_slot(be);
    if (!cache) return;
    for (ConvPlan& p : cache->plans) destroy_plan(p);
    delete cache;
    cache = nullptr;
}

void ds_cuda_conv2d(ds_backend* be, const ds_tensor* x, const float* w, const float* bias, int O,
                    int kh, int kw, int stride, int pad, const float* residual, ds_tensor* y) {
    if (!(x->ndim == 4 && O > 0 && kh > 0 && kw > 0 && stride > 0 && pad >= 0))
        ds_cuda_fatal(__FILE__, __LINE__, "conv2d", "bad arguments");
    const int64_t N = x->ne[0], H = x->ne[1], W = x->ne[2], C = x->ne[3];
    if (H + 2 * pad < kh || W + 2 * pad < kw)
        ds_cuda_fatal(__FILE__, __LINE__, "conv2d", "kernel larger than the padded input");
    const int64_t Ho = (H + 2 * pad - kh) / stride + 1, Wo = (W + 2 * pad - kw) / stride + 1;
    if (y->ndim == 0) {  // the caller may leave the shape to us
        y->ndim = 4;
        y->ne[0] = N, y->ne[1] = Ho, y->ne[2] = Wo, y->ne[3] = O;
    }
    if (!(y->ndim == 4 && y->ne[0] == N && y->ne[1] == Ho && y->ne[2] == Wo && y->ne[3] == O))
        ds_cuda_fatal(__FILE__, __LINE__, "conv2d", "output shape mismatch");
    const int64_t P = N * Ho * Wo;
    if (P == 0) return;

    if (kh == 1 && kw == 1 && stride == 1 && pad == 0) {
        ds_cuda_linear(be, x->data, w, bias, residual, y->data, P, O, C);
        return;
    }

    const ds_act_dtype dt = ds_cuda_act_dtype(be);
    ConvPlan& p = get_plan(be, ConvKey{N, H, W, C, O, kh, kw, stride, pad, dt}, Ho, Wo);
    void* ws = p.ws_bytes ? ds_cuda_workspace(be, p.ws_bytes) : nullptr;
    if (p.ws_bytes && !ws) return;  // out of GPU memory: recorded, be->failure reports it
    if (bias && p.fused_ok && !g_force_unfused) {
        // y = 1·conv(x) + alpha2·z + bias; without a residual alpha2 = 0 and z (= y) is not read
        const float one = 1.0f, alpha2 = residual ? 1.0f : 0.0f;
        cudnnStatus_t st = CUDNN_STATUS_SUCCESS;
        DS_DISPATCH(dt, T, {
            T* yd = ds_dev<T>(be, y->data);
            st = cudnnConvolutionBiasActivationForward(
                ds_cuda_cudnn(be), &one, p.xd, ds_dev<T>(be, x->data), p.wd, ds_dev<T>(be, w), p.cd,
                p.algo, ws, p.ws_bytes, &alpha2, p.yd, residual ? ds_dev<T>(be, residual) : yd, p.bd,
                ds_dev<T>(be, bias), p.ad, p.yd, yd);
        });
        if (st == CUDNN_STATUS_SUCCESS) {
            p.fused_ran = true;
            return;
        }
        // The fused call's configuration rules (bias type, layouts) vary between cuDNN versions:
        // a refusal the first time a shape is seen sends that shape to the prefill path for
        // good; once it has run, a failure is a real error.
        if (p.fused_ran || (st != CUDNN_STATUS_NOT_SUPPORTED && st != CUDNN_STATUS_BAD_PARAM))
            ds_cuda_fatal(__FILE__, __LINE__, "cudnnConvolutionBiasActivationForward",
                          cudnnGetErrorString(st));
        p.fused_ok = false;
    }
    const int acc = ds_cuda_prefill(be, y->data, bias, residual, P, O);
    const float alpha = 1.0f, beta = acc ? 1.0f : 0.0f;  // float scaling for every data type
    DS_DISPATCH(dt, T, {
        DS_CUDNN_CHECK(cudnnConvolutionForward(ds_cuda_cudnn(be), &alpha, p.xd, ds_dev<T>(be, x->data),
                                               p.wd, ds_dev<T>(be, w), p.cd, p.algo, ws, p.ws_bytes,
                                               &beta, p.yd, ds_dev<T>(be, y->data)));
    });
}
