// test_cuda_ops.cpp — every non-attention op of the CUDA backend (kernels/cuda), run by the SIMT
// emulator with the cuBLAS / cuDNN stand-ins, against the CPU reference backend, for the
// activation types fp32, fp16 and bf16 (attention: test_cuda_attention.cpp). The same program
// runs natively on a GPU (bench/), where it also cross-checks the stand-ins.
//
// Inputs are random (never zero) and rounded once to the activation type — by an upload /
// download round trip through the CUDA backend — so both backends see the same numbers and the
// error measured is the op's own. Every output is poisoned (NaN) before the op runs, so an
// element left unwritten (or an output read before it is written) fails.
//
// Tolerances (NMSE = Σ(got − ref)² / Σ ref², see tests/util/testutil.h), from the storage type:
//   fp32 1e-10: fp32 arithmetic in another order / another libm (relative error ~1e-7 per
//               element, NMSE ~1e-13; 1e-10 catches any wrong element of O(1e-5) relative);
//   fp16 2e-6:  the result rounded once to fp16, relative ≤ 2⁻¹¹ (rms 2.8e-4, NMSE ~8e-8 over
//               many elements) — linear and the fused conv round once; conv2d's unfused path
//               rounds residual + bias first, and its tolerance is scaled by
//               1 + Σ(residual + bias)² / Σy² (that rounding is relative to those operands,
//               not to a y that may cancel). Single-element cases
//               (n = 1) have NMSE = that element's squared relative error: up to (2⁻¹¹)² ≈ 2.4e-7
//               with one rounding, ≈ 1e-6 with two. Measured over 12 seeds (DS_TEST_SEED):
//               ≤ 6.1e-7.
//   bf16 1e-4:  the same with bf16's 2⁻⁸: (2⁻⁸)² ≈ 1.5e-5 for one element, ≈ 6e-5 with two
//               roundings, NMSE ~5e-6 over many. Measured over 12 seeds: ≤ 1.9e-5.
//   timestep_embedding in fp32: 1e-8 — a GPU's expf may differ from glibc's by an ulp, and one
//               ulp of a frequency moves sin(t·f) by up to t·2⁻²³ (6e-5 at t = 999).
//   column_stats: 1e-10 in every type (fp32 sums of the same rounded inputs).
//   data movement (upsample, concat, transposes, copy): exact.
// Also: residual aliasing y, conv stride 2 / pad 1 / 1×1 / 3×3 (fused bias + residual and the
// prefill path, ds_cuda_conv_force_unfused), group norm with SiLU on / off
// and NULL affine, column_stats accumulating over two calls, upload / download round trips
// (also across the conversion chunk size), handle arithmetic (p + k) into the middle of an
// allocation, a huge alloc returning NULL (and the backend still working after it), creation
// errors, and SD-sized shapes (every grid-stride loop runs several rounds; also checked
// elementwise). EMU_STRICT=1 / EMU_REVERSE=1 (read by the emulator) give the strict and reversed
// runs.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <string>
#include <vector>

extern "C" {
#include "backend.h"
#include "edit.h"
#include "testutil.h"
}

static ds_backend* cpu;
static ds_backend* gpu;
static ds_act_dtype cur;
static tu_rng rng;
static double worst[3];  // worst NMSE per dtype (ops with the dtype tolerance)

static const char* dtype_name(ds_act_dtype d) {
    return d == DS_ACT_F16 ? "fp16" : d == DS_ACT_BF16 ? "bf16" : "fp32";
}
static double tol() { return cur == DS_ACT_F16 ? 2e-6 : cur == DS_ACT_BF16 ? 1e-4 : 1e-10; }

// ---- buffers: a host copy (already rounded to the storage type) and both backends' handles ---
struct buf {
    std::vector<float> h;
    float* g = nullptr;  // CUDA backend
    float* c = nullptr;  // CPU backend
    int64_t n = 0;
};
static std::vector<float*> g_live, c_live;

static float* gpu_alloc(int64_t n) {
    float* p = gpu->alloc(gpu, n);
    if (!p) {
        fprintf(stderr, "CUDA backend out of memory (%lld elements)\n", (long long)n);
        exit(2);
    }
    g_live.push_back(p);
    return p;
}
static float* cpu_alloc(int64_t n) {
    float* p = cpu->alloc(cpu, n > 0 ? n : 1);
    c_live.push_back(p);
    return p;
}
static void free_all() {
    for (float* p : g_live) gpu->free(gpu, p);
    for (float* p : c_live) cpu->free(cpu, p);
    g_live.clear();
    c_live.clear();
}

// random input N(mean, std), rounded to the storage type, on both backends
static buf input(int64_t n, float mean = 0.0f, float stdv = 1.0f) {
    buf b;
    b.n = n;
    b.h.resize((size_t)(n > 0 ? n : 1));
    tu_fill_normal(&rng, b.h.data(), n, mean, stdv);
    b.g = gpu_alloc(n);
    gpu->upload(gpu, b.g, b.h.data(), n);
    gpu->download(gpu, b.h.data(), b.g, n);  // now exactly the stored values
    b.c = cpu_alloc(n);
    cpu->upload(cpu, b.c, b.h.data(), n);
    return b;
}
// an output: NaN on both backends
static buf output(int64_t n) {
    buf b;
    b.n = n;
    b.h.assign((size_t)(n > 0 ? n : 1), NAN);
    b.g = gpu_alloc(n);
    gpu->upload(gpu, b.g, b.h.data(), n);
    b.c = cpu_alloc(n);
    cpu->upload(cpu, b.c, b.h.data(), n);
    return b;
}

// compares the CUDA result with the CPU one (NMSE ≤ tolerance); tolerance < 0: the dtype's
static void check(const std::string& what, const buf& b, double t = -1.0, bool track = true) {
    std::vector<float> got((size_t)b.n), ref((size_t)b.n);
    gpu->download(gpu, got.data(), b.g, b.n);
    cpu->download(cpu, ref.data(), b.c, b.n);
    const double use = t < 0 ? tol() : t;
    std::string name = std::string(dtype_name(cur)) + " " + what;
    tu_diff_t d = tu_diff(got.data(), ref.data(), b.n);
    if (track && t < 0) {
        double& w = worst[cur];
        if (d.nonfinite) w = INFINITY;
        else if (d.nmse > w) w = d.nmse;
    }
    if (use == 0.0) {  // exact
        int bad = d.nonfinite > 0 || memcmp(got.data(), ref.data(), sizeof(float) * (size_t)b.n) != 0;
        CHECKF(!bad, "%s: not bit-exact (nmse %.3g, worst index %lld: got %g ref %g)", name.c_str(),
               d.nmse, (long long)d.worst, got[(size_t)d.worst], ref[(size_t)d.worst]);
        if (tu_verbose) printf("  %-60s exact\n", name.c_str());
        return;
    }
    tu_check_nmse(name.c_str(), got.data(), ref.data(), b.n, use);
    if (tu_verbose) printf("  %-60s nmse %.3g (tol %.0e)\n", name.c_str(), d.nmse, use);
}

// ---- ops -------------------------------------------------------------------------------------------
static void test_linear() {
    const int64_t shapes[][3] = {{1, 1, 1}, {5, 7, 3}, {33, 17, 40}, {64, 96, 77}, {3, 130, 257}};
    for (auto& s : shapes) {
        const int64_t M = s[0], N = s[1], K = s[2];
        buf x = input(M * K), w = input(N * K, 0.0f, 1.0f / sqrtf((float)K)), bias = input(N);
        buf r = input(M * N);
        char tag[96];
        for (int mode = 0; mode < 6; mode++) {
            // 0 plain, 1 bias, 2 residual, 3 bias + residual, 4 residual = y, 5 bias + residual = y
            const bool hb = mode == 1 || mode == 3 || mode == 5;
            buf y = mode >= 4 ? input(M * N) : output(M * N);
            const float* rg = mode == 2 || mode == 3 ? r.g : mode >= 4 ? y.g : nullptr;
            const float* rc = mode == 2 || mode == 3 ? r.c : mode >= 4 ? y.c : nullptr;
            gpu->linear(gpu, x.g, w.g, hb ? bias.g : nullptr, rg, y.g, M, N, K);
            cpu->linear(cpu, x.c, w.c, hb ? bias.c : nullptr, rc, y.c, M, N, K);
            snprintf(tag, sizeof tag, "linear M%lld N%lld K%lld mode %d", (long long)M, (long long)N,
                     (long long)K, mode);
            check(tag, y);
        }
    }
}

// kernels/cuda/cuda_common.cuh (C++ linkage): 1 = conv2d never uses cuDNN's fused
// conv + bias + residual call, but prefills y and accumulates (both paths are tested)
void ds_cuda_conv_force_unfused(int on);

static void test_conv2d() {
    for (int unfused = 0; unfused < 2; unfused++) {
        ds_cuda_conv_force_unfused(unfused);
        struct cs {
            int64_t N, H, W, C;
            int O, kh, kw, stride, pad;
        };
        const cs cases[] = {
            {2, 5, 7, 6, 5, 3, 3, 1, 1},   // 3×3 pad 1 ("same")
            {1, 9, 8, 12, 8, 3, 3, 2, 1},  // SD's downsampler: stride 2, pad 1, odd H
            {1, 6, 6, 4, 3, 3, 3, 1, 0},   // no padding (C = 4: SD's conv_in)
            {2, 4, 5, 13, 9, 1, 1, 1, 0},  // 1×1 → the linear path, odd C
            {1, 7, 6, 10, 7, 1, 1, 2, 0},  // 1×1 stride 2 → cuDNN
            {1, 1, 1, 3, 2, 3, 3, 1, 1},   // a single pixel, all taps but the centre padding
            {1, 6, 5, 9, 11, 3, 1, 1, 1},  // non-square kernel, O > C
        };
        for (const cs& k : cases) {
            const int64_t Ho = (k.H + 2 * k.pad - k.kh) / k.stride + 1;
            const int64_t Wo = (k.W + 2 * k.pad - k.kw) / k.stride + 1;
            const int64_t ny = k.N * Ho * Wo * k.O, nx = k.N * k.H * k.W * k.C;
            const int64_t kk = (int64_t)k.kh * k.kw * k.C;
            buf x = input(nx), w = input(k.O * kk, 0.0f, 1.0f / sqrtf((float)kk)), bias = input(k.O);
            buf r = input(ny);
            for (int mode = 0; mode < 4; mode++) {
                // 0 plain, 1 bias, 2 bias + residual, 3 bias + residual = y
                const bool hb = mode >= 1;
                buf y = mode == 3 ? input(ny) : output(ny);
                const float* rg = mode == 2 ? r.g : mode == 3 ? y.g : nullptr;
                const float* rc = mode == 2 ? r.c : mode == 3 ? y.c : nullptr;
                ds_tensor xg = {x.g, 4, {k.N, k.H, k.W, k.C}}, xc = {x.c, 4, {k.N, k.H, k.W, k.C}};
                ds_tensor yg = {y.g, 0, {0, 0, 0, 0}};  // the op fills in the shape
                ds_tensor yc = {y.c, 4, {k.N, Ho, Wo, k.O}};
                gpu->conv2d(gpu, &xg, w.g, hb ? bias.g : nullptr, k.O, k.kh, k.kw, k.stride, k.pad, rg, &yg);
                cpu->conv2d(cpu, &xc, w.c, hb ? bias.c : nullptr, k.O, k.kh, k.kw, k.stride, k.pad, rc, &yc);
                CHECK(yg.ndim == 4 && yg.ne[0] == k.N && yg.ne[1] == Ho && yg.ne[2] == Wo && yg.ne[3] == k.O);
                char tag[128];
                snprintf(tag, sizeof tag, "conv2d %lldx%lldx%lldx%lld O%d k%dx%d s%d p%d mode %d%s",
                         (long long)k.N, (long long)k.H, (long long)k.W, (long long)k.C, k.O, k.kh,
                         k.kw, k.stride, k.pad, mode, unfused ? " unfused" : "");
                // unfused with a residual: residual + bias is rounded to the storage type before
                // the convolution adds to it, an error relative to |residual + bias| rather than
                // to |y|: the tolerance scales with their energy ratio (≥ 1; matters where y
                // cancels)
                double t = -1.0;
                if (unfused && mode >= 2 && cur != DS_ACT_F32) {
                    std::vector<float> yr((size_t)ny);
                    cpu->download(cpu, yr.data(), y.c, ny);
                    const std::vector<float>& rh = mode == 2 ? r.h : y.h;
                    double e_rb = 0.0, e_y = 0.0;
                    for (int64_t i = 0; i < ny; i++) {
                        const double rb = (double)rh[(size_t)i] + bias.h[(size_t)(i % k.O)];
                        e_rb += rb * rb;
                        e_y += (double)yr[(size_t)i] * yr[(size_t)i];
                    }
                    t = tol() * (1.0 + e_rb / (e_y > 0 ? e_y : 1e-30));
                }
                check(tag, y, t);
            }
        }
        // the same shape again (the cached plan) on new data
        buf x = input(2 * 5 * 7 * 6), w = input(5 * 9 * 6, 0.0f, 0.15f), y = output(2 * 5 * 7 * 5);
        ds_tensor xg = {x.g, 4, {2, 5, 7, 6}}, xc = {x.c, 4, {2, 5, 7, 6}};
        ds_tensor yg = {y.g, 4, {2, 5, 7, 5}}, yc = {y.c, 4, {2, 5, 7, 5}};
        gpu->conv2d(gpu, &xg, w.g, nullptr, 5, 3, 3, 1, 1, nullptr, &yg);
        cpu->conv2d(cpu, &xc, w.c, nullptr, 5, 3, 3, 1, 1, nullptr, &yc);
        check(unfused ? "conv2d cached plan, new data, unfused" : "conv2d cached plan, new data",
              y);
    }
    ds_cuda_conv_force_unfused(0);
}

static void test_norms() {
    struct gs {
        int64_t N, S, C;
        int G;
        float mean;
    };
    // S = 17 and 64 split into 2 and 4 row slices, S = 300 into 19 (the combination of many
    // partials); C = 1280 needs two channels per thread; S = 1 one slice of one row
    const gs gcases[] = {{2, 17, 12, 4, 0.0f}, {1, 1, 32, 32, 0.5f}, {2, 64, 40, 8, 3.0f},
                         {1, 9, 30, 3, -2.0f}, {3, 5, 7, 1, 10.0f},  {1, 300, 64, 32, 5.0f},
                         {1, 3, 1280, 32, 0.0f}};
    for (const gs& g : gcases) {
        const int64_t n = g.N * g.S * g.C;
        buf x = input(n, g.mean, 1.5f), gamma = input(g.C, 1.0f, 0.3f), beta = input(g.C);
        for (int variant = 0; variant < 3; variant++) {  // 0 plain, 1 silu, 2 silu + NULL affine
            buf y = output(n);
            const bool aff = variant < 2;
            gpu->group_norm(gpu, x.g, aff ? gamma.g : nullptr, aff ? beta.g : nullptr, y.g, g.N, g.S,
                            g.C, g.G, 1e-5f, variant > 0);
            cpu->group_norm(cpu, x.c, aff ? gamma.c : nullptr, aff ? beta.c : nullptr, y.c, g.N, g.S,
                            g.C, g.G, 1e-5f, variant > 0);
            char tag[96];
            snprintf(tag, sizeof tag, "group_norm N%lld S%lld C%lld G%d silu %d affine %d",
                     (long long)g.N, (long long)g.S, (long long)g.C, g.G, variant > 0, aff);
            check(tag, y);
        }
    }
    const int64_t lcases[][2] = {{1, 1}, {7, 33}, {5, 768}, {3, 1000}, {9, 40}};
    for (auto& l : lcases) {
        const int64_t n = l[0] * l[1];
        buf x = input(n, 2.0f, 1.0f), gamma = input(l[1], 1.0f, 0.3f), beta = input(l[1]);
        for (int aff = 0; aff < 2; aff++) {
            buf y = output(n);
            gpu->layer_norm(gpu, x.g, aff ? gamma.g : nullptr, aff ? beta.g : nullptr, y.g, l[0], l[1], 1e-5f);
            cpu->layer_norm(cpu, x.c, aff ? gamma.c : nullptr, aff ? beta.c : nullptr, y.c, l[0], l[1], 1e-5f);
            char tag[80];
            snprintf(tag, sizeof tag, "layer_norm %lldx%lld affine %d", (long long)l[0], (long long)l[1], aff);
            // cols = 1: x − mean is exactly 0 and y = beta (or 0) on both sides
            check(tag, y, l[1] == 1 && !aff ? 0.0 : -1.0);
        }
    }
    // in place (y = x)
    buf x = input(6 * 50, 1.0f, 2.0f);
    gpu->layer_norm(gpu, x.g, nullptr, nullptr, x.g, 6, 50, 1e-5f);
    cpu->layer_norm(cpu, x.c, nullptr, nullptr, x.c, 6, 50, 1e-5f);
    check("layer_norm in place", x);
    buf z = input(2 * 10 * 8, -1.0f, 2.0f);
    gpu->group_norm(gpu, z.g, nullptr, nullptr, z.g, 2, 10, 8, 2, 1e-6f, 1);
    cpu->group_norm(cpu, z.c, nullptr, nullptr, z.c, 2, 10, 8, 2, 1e-6f, 1);
    check("group_norm in place + silu", z);
}

static void test_elementwise() {
    const ds_act kinds[] = {DS_ACT_SILU, DS_ACT_GELU, DS_ACT_GELU_TANH, DS_ACT_QUICK_GELU};
    const char* names[] = {"silu", "gelu", "gelu_tanh", "quick_gelu"};
    const int64_t sizes[] = {1, 1000, 4099};
    for (int k = 0; k < 4; k++)
        for (int64_t n : sizes) {
            // wide inputs reach the tails; a single element stays where fp16 can represent
            // the result (gelu_tanh(−6) ≈ −5e-15 is −0 in fp16: right, but NMSE 1)
            buf x = input(n, 0.0f, n > 1 ? 4.0f : 1.0f), y = output(n);
            gpu->act(gpu, kinds[k], x.g, y.g, n);
            cpu->act(cpu, kinds[k], x.c, y.c, n);
            check(std::string("act ") + names[k] + " n" + std::to_string(n), y);
            gpu->act(gpu, kinds[k], x.g, x.g, n);  // in place
            cpu->act(cpu, kinds[k], x.c, x.c, n);
            check(std::string("act ") + names[k] + " in place n" + std::to_string(n), x);
        }
    const int64_t gcases[][2] = {{1, 1}, {5, 37}, {16, 160}};
    for (auto& g : gcases) {
        buf x = input(g[0] * 2 * g[1], 0.0f, 2.0f), y = output(g[0] * g[1]);
        gpu->geglu(gpu, x.g, y.g, g[0], g[1]);
        cpu->geglu(cpu, x.c, y.c, g[0], g[1]);
        check("geglu " + std::to_string(g[0]) + "x" + std::to_string(g[1]), y);
    }
    for (int64_t n : {(int64_t)1, (int64_t)777}) {
        buf a = input(n), b = input(n), y = output(n), z = output(n);
        gpu->add(gpu, a.g, b.g, y.g, n);
        cpu->add(cpu, a.c, b.c, y.c, n);
        check("add n" + std::to_string(n), y);
        gpu->scale(gpu, a.g, -0.37f, z.g, n);
        cpu->scale(cpu, a.c, -0.37f, z.c, n);
        check("scale n" + std::to_string(n), z);
        gpu->add(gpu, a.g, b.g, a.g, n);  // y = a in place
        cpu->add(cpu, a.c, b.c, a.c, n);
        check("add in place n" + std::to_string(n), a);
    }
    const int64_t bcases[][3] = {{2, 7, 13}, {1, 1, 5}, {3, 16, 40}};
    for (auto& c : bcases) {
        const int64_t n = c[0] * c[1] * c[2];
        buf x = input(n), v = input(c[0] * c[2]), y = output(n);
        gpu->add_channel_bias(gpu, x.g, v.g, y.g, c[0], c[1], c[2]);
        cpu->add_channel_bias(cpu, x.c, v.c, y.c, c[0], c[1], c[2]);
        check("add_channel_bias " + std::to_string(c[0]) + "x" + std::to_string(c[1]) + "x" +
                  std::to_string(c[2]), y);
    }
}

// column sums into fp32 (alloc_f32) memory, starting from random values, over two calls
static void test_column_stats() {
    const int64_t cases[][2] = {{1, 5}, {37, 45}, {300, 70}, {1000, 33}};
    for (int l2 = 0; l2 <= 1; l2++)
    for (auto& cs : cases) {
        const int64_t rows = cs[0], F = cs[1];
        std::vector<float> s0((size_t)F), q0((size_t)F);
        tu_fill_normal(&rng, s0.data(), F, 0.0f, 1.0f);
        tu_fill_uniform(&rng, q0.data(), F, 1.0f, 2.0f);
        buf s, q;
        s.n = q.n = F;
        s.g = gpu->alloc_f32(gpu, F);
        q.g = gpu->alloc_f32(gpu, F);
        g_live.push_back(s.g);
        g_live.push_back(q.g);
        CHECK(s.g && q.g);
        s.c = cpu_alloc(F);
        q.c = cpu_alloc(F);
        gpu->upload(gpu, s.g, s0.data(), F);
        gpu->upload(gpu, q.g, q0.data(), F);
        cpu->upload(cpu, s.c, s0.data(), F);
        cpu->upload(cpu, q.c, q0.data(), F);
        for (int call = 0; call < 2; call++) {
            buf x = input(rows * F, call ? 0.5f : 0.0f, 1.0f);
            gpu->column_stats(gpu, x.g, rows, F, s.g, q.g, l2);
            cpu->column_stats(cpu, x.c, rows, F, s.c, q.c, l2);
        }
        std::string tag = std::string(l2 ? "column_stats l2 " : "column_stats ") + std::to_string(rows) + "x" + std::to_string(F);
        check(tag + " sum (2 calls)", s, 1e-10);
        check(tag + " sumsq (2 calls)", q, 1e-10);
    }
}

static void test_layout() {
    const int64_t ucases[][4] = {{2, 3, 5, 7}, {1, 1, 1, 1}, {1, 4, 4, 16}};
    for (auto& u : ucases) {
        buf x = input(u[0] * u[1] * u[2] * u[3]), y = output(u[0] * 4 * u[1] * u[2] * u[3]);
        gpu->upsample_nearest2x(gpu, x.g, y.g, u[0], u[1], u[2], u[3]);
        cpu->upsample_nearest2x(cpu, x.c, y.c, u[0], u[1], u[2], u[3]);
        check("upsample_nearest2x " + std::to_string(u[1]) + "x" + std::to_string(u[2]) + "x" +
                  std::to_string(u[3]), y, 0.0);
    }
    const int64_t ccases[][4] = {{2, 5, 3, 6}, {1, 1, 1, 1}, {1, 9, 8, 13}};
    for (auto& c : ccases) {
        buf a = input(c[0] * c[1] * c[2]), b = input(c[0] * c[1] * c[3]);
        buf y = output(c[0] * c[1] * (c[2] + c[3]));
        gpu->concat_channels(gpu, a.g, b.g, y.g, c[0], c[1], c[2], c[3]);
        cpu->concat_channels(cpu, a.c, b.c, y.c, c[0], c[1], c[2], c[3]);
        check("concat_channels Ca" + std::to_string(c[2]) + " Cb" + std::to_string(c[3]), y, 0.0);
    }
    const int64_t tcases[][4] = {{2, 5, 33, 35}, {1, 4, 8, 8}, {1, 1, 1, 3}, {1, 70, 3, 11}};
    for (auto& t : tcases) {  // N, C, H, W
        const int64_t n = t[0] * t[1] * t[2] * t[3];
        buf x = input(n), y = output(n), z = output(n);
        gpu->nchw_to_nhwc(gpu, x.g, y.g, t[0], t[1], t[2], t[3]);
        cpu->nchw_to_nhwc(cpu, x.c, y.c, t[0], t[1], t[2], t[3]);
        std::string tag = std::to_string(t[0]) + "x" + std::to_string(t[1]) + "x" +
                          std::to_string(t[2]) + "x" + std::to_string(t[3]);
        check("nchw_to_nhwc " + tag, y, 0.0);
        gpu->nhwc_to_nchw(gpu, y.g, z.g, t[0], t[2], t[3], t[1]);
        cpu->nhwc_to_nchw(cpu, y.c, z.c, t[0], t[2], t[3], t[1]);
        check("nhwc_to_nchw " + tag, z, 0.0);
    }
}

static void test_embed() {
    // 3 timesteps travel as a kernel argument, 20 through device scratch
    float t[20] = {999.0f, 0.5f, 500.25f};
    for (int i = 3; i < 20; i++) t[i] = (float)(tu_rng_uniform(&rng) * 1000.0);
    const int dims[][4] = {{320, 1, 0, 3}, {33, 0, 1, 3}, {2, 1, 0, 3}, {64, 1, 0, 20}};
    for (auto& d : dims) {  // dim, flip, shift, N
        buf y = output((int64_t)d[3] * d[0]);
        gpu->timestep_embedding(gpu, t, d[3], d[0], d[1], (float)d[2], y.g);
        cpu->timestep_embedding(cpu, t, d[3], d[0], d[1], (float)d[2], y.c);
        check("timestep_embedding dim " + std::to_string(d[0]) + " N " + std::to_string(d[3]), y,
              cur == DS_ACT_F32 ? 1e-8 : -1.0);
    }
    const int vocab = 20, D = 13, L = 4, n = 10;
    buf table = input((int64_t)vocab * D), pos = input((int64_t)L * D), y = output((int64_t)n * D);
    int32_t ids[n];
    for (int i = 0; i < n; i++) ids[i] = (int32_t)(tu_rng_u64(&rng) % vocab);
    ids[0] = vocab - 1;
    gpu->embed_tokens(gpu, ids, n, L, table.g, pos.g, D, y.g);
    cpu->embed_tokens(cpu, ids, n, L, table.c, pos.c, D, y.c);
    check("embed_tokens", y);
}

// ---- SD-sized shapes: grids capped at 16 blocks per SM, so every grid-stride loop (packed and
// scalar) runs several rounds, group norm uses hundreds of slices. Over millions of elements a
// few wrong ones barely move the NMSE, so these are also checked elementwise: max_rel (relative
// to max(|ref|, rms(ref)), testutil.h) ≤ 2 half-ulps of the storage type (one rounding of the
// result, plus fp32 noise): fp16 2·2⁻¹¹ ≈ 1e-3, bf16 2·2⁻⁸ ≈ 8e-3, fp32 1e-5.
static void check_large(const std::string& what, const buf& b) {
    check(what, b);
    std::vector<float> got((size_t)b.n), ref((size_t)b.n);
    gpu->download(gpu, got.data(), b.g, b.n);
    cpu->download(cpu, ref.data(), b.c, b.n);
    const double t = cur == DS_ACT_F16 ? 1e-3 : cur == DS_ACT_BF16 ? 8e-3 : 1e-5;
    tu_check_rel((std::string(dtype_name(cur)) + " " + what + " (elementwise)").c_str(), got.data(),
                 ref.data(), b.n, t);
}

static void test_large() {
    {
        const int64_t n = ((int64_t)5 << 20) + 3;  // > 16·132·256 packs of 8: several rounds
        buf x = input(n, 0.0f, 3.0f), y = output(n);
        gpu->act(gpu, DS_ACT_SILU, x.g, y.g, n);
        cpu->act(cpu, DS_ACT_SILU, x.c, y.c, n);
        check_large("large act silu n=5Mi+3", y);
        gpu->add(gpu, x.g, y.g, y.g, n);
        cpu->add(cpu, x.c, y.c, y.c, n);
        check_large("large add n=5Mi+3", y);
    }
    {
        const int64_t rows = 2048, F = 2560;  // SD's FFN at 1280 channels: F = 5120
        buf x = input(rows * 2 * F), y = output(rows * F);
        gpu->geglu(gpu, x.g, y.g, rows, F);
        cpu->geglu(cpu, x.c, y.c, rows, F);
        check_large("large geglu 2048x2560", y);
    }
    {
        const int64_t N = 2, S = 4096, C = 320;  // SD's first level at 512 px, CFG batch
        buf x = input(N * S * C, 0.5f, 2.0f), g = input(C, 1.0f, 0.2f), b = input(C), y = output(N * S * C);
        gpu->group_norm(gpu, x.g, g.g, b.g, y.g, N, S, C, 32, 1e-5f, 1);
        cpu->group_norm(cpu, x.c, g.c, b.c, y.c, N, S, C, 32, 1e-5f, 1);
        check_large("large group_norm 2x4096x320 G32 silu", y);
        buf z = output(N * S * C);
        gpu->layer_norm(gpu, x.g, g.g, b.g, z.g, N * S, C, 1e-5f);
        cpu->layer_norm(cpu, x.c, g.c, b.c, z.c, N * S, C, 1e-5f);
        check_large("large layer_norm 8192x320", z);
        buf v = input(N * C), w = output(N * S * C);
        gpu->add_channel_bias(gpu, x.g, v.g, w.g, N, S, C);
        cpu->add_channel_bias(cpu, x.c, v.c, w.c, N, S, C);
        check_large("large add_channel_bias 2x4096x320", w);
    }
}

// ---- memory: round trips, copies, handle arithmetic, failures ------------------------------------
static void test_memory() {
    const double q = cur == DS_ACT_F16 ? 1.0 / 2048 : cur == DS_ACT_BF16 ? 1.0 / 256 : 0.0;
    // round trip: fp32 exact; fp16 / bf16 within half an ulp (relative 2⁻¹¹ / 2⁻⁸ bounds it)
    for (int64_t n : {(int64_t)1, (int64_t)1000, ((int64_t)4 << 20) + 3}) {  // the last spans 2 chunks
        std::vector<float> h((size_t)n), back((size_t)n, NAN);
        tu_fill_normal(&rng, h.data(), n, 0.0f, 3.0f);
        float* p = gpu_alloc(n);
        gpu->upload(gpu, p, h.data(), n);
        gpu->download(gpu, back.data(), p, n);
        int bad = 0;
        // fp16 subnormals (|x| < 2⁻¹⁴) have an absolute half-ulp of 2⁻²⁵ instead
        const double sub = cur == DS_ACT_F16 ? ldexp(1.0, -25) : 0.0;
        for (int64_t i = 0; i < n && !bad; i++)
            bad = !(fabs((double)back[i] - h[i]) <= q * fabs((double)h[i]) + sub);
        CHECKF(!bad, "%s round trip n=%lld", dtype_name(cur), (long long)n);
        // a second round trip is exact: stored values convert to fp32 and back unchanged
        std::vector<float> again((size_t)n, NAN);
        gpu->upload(gpu, p, back.data(), n);
        gpu->download(gpu, again.data(), p, n);
        CHECKF(!memcmp(again.data(), back.data(), sizeof(float) * (size_t)n), "%s second round trip",
               dtype_name(cur));
    }
    // handle arithmetic: p + k into the middle of an allocation
    {
        const int64_t n = 100, k = 37, m = 20;
        buf x = input(n);
        std::vector<float> mid((size_t)m), got((size_t)n);
        tu_fill_uniform(&rng, mid.data(), m, 5.0f, 6.0f);
        gpu->upload(gpu, x.g + k, mid.data(), m);  // upload into the middle
        std::vector<float> part((size_t)m, NAN);
        gpu->download(gpu, part.data(), x.g + k, m);
        int ok = 1;
        for (int64_t i = 0; i < m; i++) ok &= fabs(part[(size_t)i] - mid[(size_t)i]) <= 6.0 * (q + 1e-7);
        CHECKF(ok, "%s upload / download at p + k", dtype_name(cur));
        // an op on the middle: scale in place, the rest untouched
        gpu->download(gpu, x.h.data(), x.g, n);
        cpu->upload(cpu, x.c, x.h.data(), n);
        gpu->scale(gpu, x.g + k, 2.0f, x.g + k, m);
        cpu->scale(cpu, x.c + k, 2.0f, x.c + k, m);
        check("scale on p + k (rest untouched)", x, 0.0);
        // copy between two offsets of different allocations, then the end pointer
        buf y = input(n);
        gpu->copy(gpu, y.g + 3, x.g + k, m);
        cpu->copy(cpu, y.c + 3, x.c + k, m);
        check("copy p + k → q + 3", y, 0.0);
        gpu->copy(gpu, y.g + n, x.g, 0);  // n = 0 at the end pointer: nothing happens
        // fp32 memory copied into activation memory converts (capture sums → activations)
        float* f = gpu->alloc_f32(gpu, m);
        CHECK(f != nullptr);
        g_live.push_back(f);
        gpu->upload(gpu, f, mid.data(), m);
        gpu->copy(gpu, y.g, f, m);
        gpu->download(gpu, part.data(), y.g, m);
        ok = 1;
        for (int64_t i = 0; i < m; i++) ok &= fabs(part[(size_t)i] - mid[(size_t)i]) <= 6.0 * (q + 1e-7);
        CHECKF(ok, "%s copy fp32 → activation type", dtype_name(cur));
    }
    // failures: negative size, a size beyond any GPU (NULL, and the backend still works after)
    CHECK(gpu->alloc(gpu, -1) == nullptr);
    CHECK(gpu->alloc(gpu, (int64_t)1 << 38) == nullptr);      // 512 GiB / 1 TiB: cudaMalloc fails
    CHECK(gpu->alloc_f32(gpu, (int64_t)1 << 41) == nullptr);  // beyond the handle space
    buf a = input(50), b = output(50);
    gpu->scale(gpu, a.g, 3.0f, b.g, 50);
    cpu->scale(cpu, a.c, 3.0f, b.c, 50);
    check("scale after a failed alloc", b);
    // free then allocate again
    float* p = gpu->alloc(gpu, 10);
    CHECK(p != nullptr);
    gpu->free(gpu, p);
    gpu->free(gpu, nullptr);
    gpu->sync(gpu);
}

// solve_spd_f64 (cuSOLVER potrf/potrs; the emulator's stand-in, tests/emu/emu_cusolver.cpp): the residual
// ‖A X − B‖ / ‖B‖ by a plain loop (independent of LAPACK), column-major layout with n ≠ nrhs, B poisoned
// copies not touched; an indefinite matrix returns the order of its first non-positive minor; and the
// closed-form edit's shared solve through the backend equals the host's LAPACK solve.
static void test_solve() {
    CHECK(gpu->solve_spd_f64 != nullptr && gpu->solver_name && strstr(gpu->solver_name, "cuSOLVER"));
    if (!gpu->solve_spd_f64) return;
    const int n = 37, nrhs = 5;
    std::vector<double> G((size_t)n * n), A((size_t)n * n), B((size_t)n * nrhs), X;
    for (double& g : G) g = tu_rng_normal(&rng);
    for (int i = 0; i < n; i++)  // A = G Gᵀ + n I, column-major (symmetric)
        for (int j = 0; j < n; j++) {
            double v = i == j ? n : 0.0;
            for (int k = 0; k < n; k++) v += G[(size_t)k * n + i] * G[(size_t)k * n + j];
            A[(size_t)j * n + i] = v;
        }
    for (double& b : B) b = tu_rng_normal(&rng);
    std::vector<double> Af = A;
    X = B;
    CHECK(gpu->solve_spd_f64(gpu, n, nrhs, Af.data(), X.data()) == 0);
    double num = 0, den = 0;
    for (int c = 0; c < nrhs; c++)
        for (int i = 0; i < n; i++) {
            double v = -B[(size_t)c * n + i];
            for (int k = 0; k < n; k++) v += A[(size_t)k * n + i] * X[(size_t)c * n + k];
            num += v * v;
            den += B[(size_t)c * n + i] * B[(size_t)c * n + i];
        }
    CHECKF(sqrt(num / den) < 1e-13, "solve_spd_f64: relative residual %.3g", sqrt(num / den));
    // indefinite: diag(2, 3, -1, 4) → the order-3 leading minor is not positive definite
    double D[16] = {2, 0, 0, 0, 0, 3, 0, 0, 0, 0, -1, 0, 0, 0, 0, 4}, y[4] = {1, 2, 3, 4};
    CHECK(gpu->solve_spd_f64(gpu, 4, 1, D, y) == 3);
    // the edit's shared solve: keys through the backend vs the host (LAPACK)
    ds_edit_keys k;
    ds_edit_keys_init(&k, 24, 0.5);
    ds_err e;
    ds_err_clear(&e);
    std::vector<double> key(24), tgt(24);
    for (int i = 0; i < 60; i++) {
        for (int j = 0; j < 24; j++) key[j] = tu_rng_normal(&rng), tgt[j] = tu_rng_normal(&rng);
        ds_edit_keys_add(&k, &e, key.data(), tgt.data(), i % 3 ? 1.0 : 0.7, "k");
    }
    ds_edit_solution host, dev;
    CHECK(ds_edit_shared_solve(&e, &k, 1, &host) == DS_OK && host.solver && !strcmp(host.solver, "LAPACK dposv"));
    k.solver = gpu;
    CHECK(ds_edit_shared_solve(&e, &k, 1, &dev) == DS_OK && dev.solver && strstr(dev.solver, "cuSOLVER"));
    double worst_d = 0, scale = 0;
    for (int i = 0; i < 24 * 24; i++) {
        worst_d = fmax(worst_d, fabs(dev.Dm[i] - host.Dm[i]));
        scale = fmax(scale, fabs(host.Dm[i]));
    }
    CHECKF(worst_d <= 1e-12 * scale, "edit solve on the device vs LAPACK: max |Δ| %.3g (scale %.3g)", worst_d, scale);
    ds_edit_solution_free(&host);
    ds_edit_solution_free(&dev);
    ds_edit_keys_free(&k);
}

static void test_create_errors() {
    ds_err e;
    ds_err_clear(&e);
    ds_cuda_options o = {99, DS_ACT_F16};
    ds_backend* b = ds_backend_cuda_create(&e, &o);
    CHECK(b == nullptr);
    CHECKF(e.code == DS_ERR_DEVICE && strstr(e.msg, "--device cuda") && strstr(e.msg, "99"),
           "device 99: %s", e.msg);
    ds_err_clear(&e);
    o = {0, (ds_act_dtype)7};
    CHECK(ds_backend_cuda_create(&e, &o) == nullptr);
    CHECKF(e.code == DS_ERR_DEVICE, "bad dtype: %s", e.msg);
}

int main() {
    if (getenv("DS_TEST_VERBOSE")) tu_verbose = 1;
    const char* seed = getenv("DS_TEST_SEED");  // other random inputs (tolerance checks)
    tu_rng_seed(&rng, seed ? strtoull(seed, NULL, 10) : 20261124);
    cpu = ds_backend_cpu_create(1);
    test_create_errors();
    const ds_act_dtype types[] = {DS_ACT_F32, DS_ACT_F16, DS_ACT_BF16};
    for (ds_act_dtype dt : types) {
        cur = dt;
        ds_err e;
        ds_err_clear(&e);
        ds_cuda_options o = {0, dt};
        gpu = ds_backend_cuda_create(&e, &o);
        if (!gpu) {
            fprintf(stderr, "FAIL: ds_backend_cuda_create(%s): %s\n", dtype_name(dt), e.msg);
            return 1;
        }
        test_memory();
        free_all();
        test_linear();
        free_all();
        test_conv2d();
        free_all();
        test_norms();
        free_all();
        test_elementwise();
        free_all();
        test_column_stats();
        free_all();
        test_layout();
        free_all();
        test_embed();
        free_all();
        test_large();
        free_all();
        if (dt == DS_ACT_F32) test_solve();  // fp64 throughout: once is enough
        gpu->destroy(gpu);
        gpu = nullptr;
        printf("%s: worst NMSE %.3g (tolerance %.0e)\n", dtype_name(dt), worst[dt], tol());
    }
    ds_backend_cpu_free(cpu);
    return tu_exit_code("test_cuda_ops");
}
