// emu_half.h — the fp16/bf16 device intrinsics that cuda_fp16.hpp / cuda_bf16.hpp (CUDA 13) do not
// provide to a host compiler. Included by emu_cuda.h only. Everything goes through fp32 and rounds
// once to the storage type (round-to-nearest-even), as the GPU's fp16 math is specified to.
// Conversions, +-*/, comparisons, __hadd/__hmul/__hmax/__hmin/__habs/__hneg and the *2 variants
// already exist on the host; defining them again would be an overload conflict.
#ifndef DS_EMU_HALF_H
#define DS_EMU_HALF_H

// Unary math, generated for __half and __nv_bfloat16 and their pairs.
// h2<name> for the pair types takes the scalar name without its leading "h": h2exp, h2sqrt, ...
#define EMU_H_UNARY2(hname, sname, expr)                                                            \
    inline __half hname(__half a) { float x = __half2float(a); return __float2half_rn(expr); }      \
    inline __nv_bfloat16 hname(__nv_bfloat16 a) {                                                   \
        float x = __bfloat162float(a); return __float2bfloat16_rn(expr);                            \
    }                                                                                               \
    inline __half2 h2##sname(__half2 a) { return __halves2half2(hname(__low2half(a)), hname(__high2half(a))); } \
    inline __nv_bfloat162 h2##sname(__nv_bfloat162 a) {                                             \
        return __halves2bfloat162(hname(__low2bfloat16(a)), hname(__high2bfloat16(a)));            \
    }
EMU_H_UNARY2(hexp, exp, expf(x))
EMU_H_UNARY2(hexp2, exp2, exp2f(x))
EMU_H_UNARY2(hexp10, exp10, exp10f(x))
EMU_H_UNARY2(hlog, log, logf(x))
EMU_H_UNARY2(hlog2, log2, log2f(x))
EMU_H_UNARY2(hlog10, log10, log10f(x))
EMU_H_UNARY2(hsqrt, sqrt, sqrtf(x))
EMU_H_UNARY2(hrsqrt, rsqrt, 1.0f / sqrtf(x))
EMU_H_UNARY2(hrcp, rcp, 1.0f / x)
EMU_H_UNARY2(hsin, sin, sinf(x))
EMU_H_UNARY2(hcos, cos, cosf(x))
EMU_H_UNARY2(htanh, tanh, tanhf(x))
EMU_H_UNARY2(hfloor, floor, floorf(x))
EMU_H_UNARY2(hceil, ceil, ceilf(x))
EMU_H_UNARY2(htrunc, trunc, truncf(x))
EMU_H_UNARY2(hrint, rint, nearbyintf(x))
#undef EMU_H_UNARY2

// fma: one rounding of the exact a*b+c (fp32 fma of fp16 inputs is exact enough: the product of
// two 11-bit mantissas fits in fp32's 24 bits).
inline __half __hfma(__half a, __half b, __half c) {
    return __float2half_rn(fmaf(__half2float(a), __half2float(b), __half2float(c)));
}
inline __nv_bfloat16 __hfma(__nv_bfloat16 a, __nv_bfloat16 b, __nv_bfloat16 c) {
    return __float2bfloat16_rn(fmaf(__bfloat162float(a), __bfloat162float(b), __bfloat162float(c)));
}
inline float emu_sat_(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : (x != x ? 0.f : x)); }
inline __half __hfma_sat(__half a, __half b, __half c) {
    return __float2half_rn(emu_sat_(fmaf(__half2float(a), __half2float(b), __half2float(c))));
}
inline __half __hfma_relu(__half a, __half b, __half c) {
    float r = fmaf(__half2float(a), __half2float(b), __half2float(c));
    return __float2half_rn(r < 0.f ? 0.f : r);
}
inline __nv_bfloat16 __hfma_relu(__nv_bfloat16 a, __nv_bfloat16 b, __nv_bfloat16 c) {
    float r = fmaf(__bfloat162float(a), __bfloat162float(b), __bfloat162float(c));
    return __float2bfloat16_rn(r < 0.f ? 0.f : r);
}
inline __half2 __hfma2(__half2 a, __half2 b, __half2 c) {
    return __halves2half2(__hfma(__low2half(a), __low2half(b), __low2half(c)),
                          __hfma(__high2half(a), __high2half(b), __high2half(c)));
}
inline __nv_bfloat162 __hfma2(__nv_bfloat162 a, __nv_bfloat162 b, __nv_bfloat162 c) {
    return __halves2bfloat162(__hfma(__low2bfloat16(a), __low2bfloat16(b), __low2bfloat16(c)),
                              __hfma(__high2bfloat16(a), __high2bfloat16(b), __high2bfloat16(c)));
}
inline __half2 __hfma2_sat(__half2 a, __half2 b, __half2 c) {
    return __halves2half2(__hfma_sat(__low2half(a), __low2half(b), __low2half(c)),
                          __hfma_sat(__high2half(a), __high2half(b), __high2half(c)));
}

// Conversions to integers the host headers lack (round-to-nearest-even, saturating like the GPU).
inline long long emu_h2ll_(float x, long long lo, long long hi) {
    if (x != x) return 0;
    float r = nearbyintf(x);
    return r <= (float)lo ? lo : (r >= (float)hi ? hi : (long long)r);
}
inline int __half2int_rn(__half a) { return (int)emu_h2ll_(__half2float(a), INT32_MIN, INT32_MAX); }
inline unsigned __half2uint_rn(__half a) { return (unsigned)emu_h2ll_(__half2float(a), 0, UINT32_MAX); }
inline short __half2short_rn(__half a) { return (short)emu_h2ll_(__half2float(a), INT16_MIN, INT16_MAX); }
inline unsigned short __half2ushort_rn(__half a) { return (unsigned short)emu_h2ll_(__half2float(a), 0, UINT16_MAX); }
inline long long __half2ll_rn(__half a) { return emu_h2ll_(__half2float(a), INT64_MIN, INT64_MAX); }
inline int __bfloat162int_rn(__nv_bfloat16 a) { return (int)emu_h2ll_(__bfloat162float(a), INT32_MIN, INT32_MAX); }

#endif
