// bench_unet.c — times one UNet classifier-free-guidance step of diffscope on the CPU or the CUDA
// backend (a benchmark, not a test). Counterpart of `bench/bench_torch.py --mode unet`.
//
//   bench_unet --model DIR [--device cpu|cuda] [--precision fp32|fp16|bf16] [--gpu N]
//              [--iters N] [--warmup N] [--threads N] [--seed S] [--timestep T] [--size PX]
//              [--capture] [--capture-per-head] [--compare-capture]
//              [--profile] [--profile-sync] [--top N] [--save-out FILE.npy]
//
// Loads only the UNet of a diffusers folder (DIR/unet/config.json + diffusion_pytorch_model
// [.fp16].safetensors) through the internal API (weights.h, unet.h) and calls ds_unet_forward on a
// batch of 2 (what the pipeline does per step with CFG): latents (2, 4, h, w), timestep 981,
// context (2, 77, D). The inputs are torch.Generator().manual_seed(seed): x = randn(2, 4, h, w)
// (NCHW) then ctx = randn(2, 77, D), drawn with host/rng.h, i.e. the same numbers bench_torch.py
// uses, so --save-out (the output in NCHW) can be compared with `bench_torch.py --check`.
//
// --device cuda: the CUDA backend (ds_backend_cuda_create) storing activations and weights as
// --precision (default fp16; fp32 accumulation either way). Every timed step is bracketed by
// be->sync, so host clocks measure finished GPU work. Without a usable GPU (or in a build without
// the CUDA backend, or under the emulator) it prints the device error and that the benchmark
// needs a GPU, and exits 1. GPU memory: cudaMemGetInfo (host/cuda_info.h) sampled before the
// backend exists (the baseline: the CUDA context), after loading, after every step and, with
// --profile-sync, after every op; the peak is the largest "used" minus the baseline (device-wide: other
// processes on the same GPU count too).
//
// --capture runs the step with cross-attention capture on through the same path ds_generate uses
// (host/capture.c: ds_capture_create + the capture hooks on the run; the attention op adds the
// probabilities into fp32 buffers in the same pass): every attn2 layer, heads summed, the
// conditional half (DS_HEATMAP_MEAN's default plan; --capture-per-head keeps heads apart, as DAAM
// does). After the runs every layer's sum is checked: each probability row sums to 1, so a
// layer's total must be steps × heads × Lq ("capture_check" is the largest relative error).
// --compare-capture alternates capture-off and capture-on steps in one process (order swapped
// every pair) and reports both medians and the overhead.
//
// --profile runs one more step with timing shims on every ds_backend function pointer (the
// backend's vtable is wrapped in place — no library change): time, calls, FLOPs and estimated
// bytes moved (shapes × element size: each operand read once, each output written once — the
// least traffic the op needs) per op class (3×3 conv, 1×1 conv, linear, self/cross attention,
// norms, elementwise, layout, transfers) and the top shapes, with achieved TFLOP/s and GB/s,
// printed to stderr and added to the JSON. CPU: host clock around each op (ops run one at a time
// from the host thread). CUDA: a cudaEvent before and after each op on the backend's stream
// (GPU time, no synchronization between ops; "outside ops" is then the GPU's idle time between
// ops); --profile-sync instead synchronizes before and after each op and uses the host clock
// (per-op time then includes one launch and one synchronization).
//
// The last stdout line is one JSON object; progress and the profile go to stderr.
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "arena.h"
#include "backend.h"
#include "capture.h"
#include "common.h"
#include "cuda_info.h"
#include "diffscope/heatmap.h"
#include "io.h"
#include "model.h"
#include "observe.h"
#include "rng.h"
#include "unet.h"
#include "weights.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static long maxrss_kb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static int cmp_double(const void* a, const void* b) {
    double x = *(const double*)a, y = *(const double*)b;
    return x < y ? -1 : x > y;
}

static double median_of(const double* v, int n) {
    if (n <= 0) return 0;
    double* s = malloc((size_t)n * sizeof(double));
    memcpy(s, v, (size_t)n * sizeof(double));
    qsort(s, (size_t)n, sizeof(double), cmp_double);
    double m = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
    free(s);
    return m;
}

static double min_of(const double* v, int n) {
    double m = n > 0 ? v[0] : 0;
    for (int i = 1; i < n; i++)
        if (v[i] < m) m = v[i];
    return m;
}

static void die(const char* what, const ds_err* e) {
    fprintf(stderr, "bench_unet: %s: %s\n", what, e->msg[0] ? e->msg : "failed");
    exit(1);
}

// ---- GPU memory (cudaMemGetInfo through host/cuda_info.h) --------------------------------------

static struct {
    int on;                  // the CUDA backend is in use and cudaMemGetInfo answers
    size_t total, baseline;  // device total; "used" before the backend existed
    size_t peak_used;        // largest "used" seen
} G;

static void mem_sample(void) {
    if (!G.on) return;
    size_t f = 0, t = 0;
    if (ds_cuda_mem_info(&f, &t) != 0) return;
    size_t used = t - f;
    if (used > G.peak_used) G.peak_used = used;
}

static size_t mem_used_now(void) {
    size_t f = 0, t = 0;
    if (!G.on || ds_cuda_mem_info(&f, &t) != 0) return 0;
    return t - f;
}

// ---- profiling shims over the ds_backend vtable ------------------------------------------------

enum {
    C_CONV3,    // convolutions with a kernel > 1 (3×3, the stride-2 downsamplers)
    C_CONV1,    // 1×1 convolutions
    C_LINEAR,   // linear (incl. q/k/v/out projections, FFN, proj_in/out if bound as linear)
    C_ATTN_SELF,
    C_ATTN_CROSS,
    C_ATTN_CROSS_CAP,  // cross-attention calls that also accumulate the capture
    C_GROUPNORM,
    C_LAYERNORM,
    C_ELEMWISE,  // act, geglu, add, scale, add_channel_bias, column_stats
    C_LAYOUT,    // upsample, concat, nchw<->nhwc, device copies
    C_XFER,      // host <-> backend transfers (upload / download)
    C_EMBED,     // timestep embedding, token embedding
    C_N
};
static const char* kClassName[C_N] = {"conv 3x3 (k>1)", "conv 1x1", "linear", "attention self",
                                      "attention cross", "attn cross+capture", "group_norm",
                                      "layer_norm", "elementwise", "layout/resample",
                                      "host transfers", "embedding"};

typedef struct {
    double s, flops, bytes;
    long calls;
} prof_acc;

#define MAX_SHAPES 512
typedef struct {
    char key[96];
    int cls;
    double s, flops, bytes;
    long calls;
} prof_shape;

// one op of the profiled step awaiting its GPU time (event mode)
typedef struct {
    int cls, m0, m1;
    double flops, bytes;
    char key[96];
} prof_rec;

static struct {
    int on;
    int events;      // 1: cudaEvent marks (CUDA), 0: host clock (synchronizing on CUDA)
    int depth;       // > 0 while inside a shimmed op (ops a backend calls through its own vtable
                     // are counted in the outer op)
    double esz;      // bytes per activation element on this backend
    ds_backend orig; // the backend's function pointers, called by the shims
    prof_acc cls[C_N];
    prof_shape shape[MAX_SHAPES];
    int n_shapes;
    prof_rec* rec;
    int n_rec, cap_rec, lost;  // lost: ops without marks (pool exhausted)
    double t0;
    int m0;
} P;

static void prof_add(int cls, double dt, double flops, double bytes, const char* key) {
    P.cls[cls].s += dt;
    P.cls[cls].flops += flops;
    P.cls[cls].bytes += bytes;
    P.cls[cls].calls++;
    if (!key || !key[0]) return;
    for (int i = 0; i < P.n_shapes; i++)
        if (P.shape[i].cls == cls && strcmp(P.shape[i].key, key) == 0) {
            P.shape[i].s += dt, P.shape[i].flops += flops, P.shape[i].bytes += bytes;
            P.shape[i].calls++;
            return;
        }
    if (P.n_shapes < MAX_SHAPES) {
        prof_shape* s = &P.shape[P.n_shapes++];
        snprintf(s->key, sizeof s->key, "%s", key);
        s->cls = cls, s->s = dt, s->flops = flops, s->bytes = bytes, s->calls = 1;
    }
}

// Returns 1 if this op is timed (outermost), 0 if it runs inside another shimmed op.
static int op_begin(ds_backend* be) {
    if (P.depth++ > 0) return 0;
    if (P.events) {
        P.m0 = ds_cuda_mark(be);
    } else {
        if (P.orig.sync) P.orig.sync(be);
        P.t0 = now_s();
    }
    return 1;
}

static void op_end(ds_backend* be, int timed, int cls, double flops, double bytes, const char* key) {
    P.depth--;
    if (!timed) return;
    if (P.events) {
        int m1 = ds_cuda_mark(be);
        if (P.m0 < 0 || m1 < 0) {
            P.lost++;
        } else {
            if (P.n_rec == P.cap_rec) {
                int nc = P.cap_rec ? 2 * P.cap_rec : 1024;
                prof_rec* nr = realloc(P.rec, sizeof(prof_rec) * (size_t)nc);
                if (!nr) { P.lost++; return; }
                P.rec = nr, P.cap_rec = nc;
            }
            prof_rec* r = &P.rec[P.n_rec++];
            r->cls = cls, r->m0 = P.m0, r->m1 = m1, r->flops = flops, r->bytes = bytes;
            snprintf(r->key, sizeof r->key, "%s", key ? key : "");
        }
    } else {
        if (P.orig.sync) P.orig.sync(be);
        prof_add(cls, now_s() - P.t0, flops, bytes, key);
        mem_sample();  // (not in event mode: the op stream stays free of host calls)
    }
}

// After the profiled step (be synchronized): event records → time per class and shape.
static void prof_collect(void) {
    for (int i = 0; i < P.n_rec; i++) {
        float ms = 0;
        if (ds_cuda_marks_elapsed(P.rec[i].m0, P.rec[i].m1, &ms) != 0) {
            P.lost++;
            continue;
        }
        prof_add(P.rec[i].cls, ms * 1e-3, P.rec[i].flops, P.rec[i].bytes, P.rec[i].key);
    }
}

#define TIMED(cls, flops, bytes, key, call)          \
    do {                                             \
        int on_ = op_begin(be);                      \
        call;                                        \
        op_end(be, on_, cls, flops, bytes, key);     \
    } while (0)

#define E(n) ((double)(n) * P.esz)  // bytes of n activation elements

static void sh_copy(ds_backend* be, float* dst, const float* src, int64_t n) {
    TIMED(C_LAYOUT, 0, 2 * E(n), "copy", P.orig.copy(be, dst, src, n));
}
static void sh_upload(ds_backend* be, float* dst, const float* src, int64_t n) {
    TIMED(C_XFER, 0, 4.0 * n, "upload", P.orig.upload(be, dst, src, n));
}
static void sh_download(ds_backend* be, float* dst, const float* src, int64_t n) {
    TIMED(C_XFER, 0, 4.0 * n, "download", P.orig.download(be, dst, src, n));
}
static void sh_linear(ds_backend* be, const float* x, const float* w, const float* bias,
                      const float* residual, float* y, int64_t M, int64_t N, int64_t K) {
    char key[96];
    snprintf(key, sizeof key, "linear M=%lld N=%lld K=%lld%s", (long long)M, (long long)N,
             (long long)K, residual ? " +res" : "");
    double by = E(M * K + N * K + M * N + (bias ? N : 0) + (residual ? M * N : 0));
    TIMED(C_LINEAR, 2.0 * M * N * K, by, key, P.orig.linear(be, x, w, bias, residual, y, M, N, K));
}
static void sh_conv2d(ds_backend* be, const ds_tensor* x, const float* w, const float* bias, int O,
                      int kh, int kw, int stride, int pad, const float* residual, ds_tensor* y) {
    const int64_t N = x->ne[0], H = x->ne[1], W = x->ne[2], C = x->ne[3];
    const int64_t Ho = (H + 2 * pad - kh) / stride + 1, Wo = (W + 2 * pad - kw) / stride + 1;
    char key[96];
    snprintf(key, sizeof key, "conv %dx%d/s%d %lldx%lldx%lld->%d%s", kh, kw, stride, (long long)H,
             (long long)W, (long long)C, O, residual ? " +res" : "");
    double fl = 2.0 * N * Ho * Wo * O * kh * kw * C;
    double by = E(N * H * W * C + (int64_t)O * kh * kw * C + N * Ho * Wo * O + (bias ? O : 0) +
                  (residual ? N * Ho * Wo * O : 0));
    int cls = (kh == 1 && kw == 1) ? C_CONV1 : C_CONV3;
    TIMED(cls, fl, by, key, P.orig.conv2d(be, x, w, bias, O, kh, kw, stride, pad, residual, y));
}
static void sh_group_norm(ds_backend* be, const float* x, const float* g, const float* b, float* y,
                          int64_t N, int64_t S, int64_t C, int groups, float eps, int silu) {
    char key[96];
    snprintf(key, sizeof key, "group_norm N=%lld S=%lld C=%lld%s", (long long)N, (long long)S,
             (long long)C, silu ? " +silu" : "");
    TIMED(C_GROUPNORM, 0, E(2 * N * S * C + 2 * C), key,
          P.orig.group_norm(be, x, g, b, y, N, S, C, groups, eps, silu));
}
static void sh_layer_norm(ds_backend* be, const float* x, const float* g, const float* b, float* y,
                          int64_t rows, int64_t cols, float eps) {
    char key[96];
    snprintf(key, sizeof key, "layer_norm %lldx%lld", (long long)rows, (long long)cols);
    TIMED(C_LAYERNORM, 0, E(2 * rows * cols + 2 * cols), key,
          P.orig.layer_norm(be, x, g, b, y, rows, cols, eps));
}
static void sh_attention(ds_backend* be, const float* q, int64_t qs, const float* k, int64_t ks,
                         const float* v, int64_t vs, float* out, int B, int Lq, int Lk, int heads,
                         int dh, float scale, int causal, const ds_attn_probe* probe) {
    const ds_attn_capture* cap = probe ? probe->capture : NULL;
    char key[96];
    snprintf(key, sizeof key, "attention B=%d Lq=%d Lk=%d heads=%d dh=%d%s", B, Lq, Lk, heads, dh,
             cap ? " +capture" : "");
    double fl = 4.0 * B * heads * (double)Lq * Lk * dh;
    double hd = (double)heads * dh;
    double by = E(2.0 * B * Lq * hd + 2.0 * B * Lk * hd);
    if (cap) {  // the fp32 sum is read and written once per call
        double nb = cap->batch_end - cap->batch_begin, nh = cap->per_head ? heads : 1;
        by += 2.0 * 4.0 * nb * nh * Lq * Lk;
    }
    int cls = Lq == Lk ? C_ATTN_SELF : cap ? C_ATTN_CROSS_CAP : C_ATTN_CROSS;
    TIMED(cls, fl, by, key,
          P.orig.attention(be, q, qs, k, ks, v, vs, out, B, Lq, Lk, heads, dh, scale, causal, probe));
}
static void sh_act(ds_backend* be, ds_act kind, const float* x, float* y, int64_t n) {
    TIMED(C_ELEMWISE, 0, 2 * E(n), "act", P.orig.act(be, kind, x, y, n));
}
static void sh_geglu(ds_backend* be, const float* x, float* y, int64_t rows, int64_t F) {
    char key[96];
    snprintf(key, sizeof key, "geglu %lldx%lld", (long long)rows, (long long)F);
    TIMED(C_ELEMWISE, 0, 3 * E(rows * F), key, P.orig.geglu(be, x, y, rows, F));
}
static void sh_add(ds_backend* be, const float* a, const float* b, float* y, int64_t n) {
    TIMED(C_ELEMWISE, 0, 3 * E(n), "add", P.orig.add(be, a, b, y, n));
}
static void sh_scale(ds_backend* be, const float* x, float s, float* y, int64_t n) {
    TIMED(C_ELEMWISE, 0, 2 * E(n), "scale", P.orig.scale(be, x, s, y, n));
}
static void sh_add_channel_bias(ds_backend* be, const float* x, const float* v, float* y, int64_t N,
                                int64_t S, int64_t C) {
    TIMED(C_ELEMWISE, 0, E(2 * N * S * C + N * C), "add_channel_bias",
          P.orig.add_channel_bias(be, x, v, y, N, S, C));
}
static void sh_column_stats(ds_backend* be, const float* x, int64_t rows, int64_t F, float* sum,
                            float* sumsq, int l2_rows) {
    TIMED(C_ELEMWISE, 0, E(rows * F) * (l2_rows ? 2 : 1) + 4.0 * 4 * F, "column_stats",
          P.orig.column_stats(be, x, rows, F, sum, sumsq, l2_rows));
}
static void sh_upsample(ds_backend* be, const float* x, float* y, int64_t N, int64_t H, int64_t W,
                        int64_t C) {
    TIMED(C_LAYOUT, 0, E(5 * N * H * W * C), "upsample_nearest2x",
          P.orig.upsample_nearest2x(be, x, y, N, H, W, C));
}
static void sh_concat(ds_backend* be, const float* a, const float* b, float* y, int64_t N, int64_t S,
                      int64_t Ca, int64_t Cb) {
    TIMED(C_LAYOUT, 0, E(2 * N * S * (Ca + Cb)), "concat_channels",
          P.orig.concat_channels(be, a, b, y, N, S, Ca, Cb));
}
static void sh_nchw_to_nhwc(ds_backend* be, const float* x, float* y, int64_t N, int64_t C,
                            int64_t H, int64_t W) {
    TIMED(C_LAYOUT, 0, E(2 * N * C * H * W), "nchw_to_nhwc", P.orig.nchw_to_nhwc(be, x, y, N, C, H, W));
}
static void sh_nhwc_to_nchw(ds_backend* be, const float* x, float* y, int64_t N, int64_t H,
                            int64_t W, int64_t C) {
    TIMED(C_LAYOUT, 0, E(2 * N * C * H * W), "nhwc_to_nchw", P.orig.nhwc_to_nchw(be, x, y, N, H, W, C));
}
static void sh_timestep_embedding(ds_backend* be, const float* t, int N, int dim, int flip,
                                  float shift, float* y) {
    TIMED(C_EMBED, 0, E((int64_t)N * dim), "timestep_embedding",
          P.orig.timestep_embedding(be, t, N, dim, flip, shift, y));
}
static void sh_embed_tokens(ds_backend* be, const int32_t* ids, int n, int L, const float* table,
                            const float* pos, int D, float* y) {
    TIMED(C_EMBED, 0, E(3 * (int64_t)n * D), "embed_tokens",
          P.orig.embed_tokens(be, ids, n, L, table, pos, D, y));
}
#undef E

static void prof_install(ds_backend* be, int events, double esz) {
    P.orig = *be;
    P.events = events;
    P.esz = esz;
    P.depth = 0;
#define SHIM(field, fn) \
    if (be->field) be->field = fn
    SHIM(copy, sh_copy);
    SHIM(upload, sh_upload);
    SHIM(download, sh_download);
    SHIM(linear, sh_linear);
    SHIM(conv2d, sh_conv2d);
    SHIM(group_norm, sh_group_norm);
    SHIM(layer_norm, sh_layer_norm);
    SHIM(attention, sh_attention);
    SHIM(act, sh_act);
    SHIM(geglu, sh_geglu);
    SHIM(add, sh_add);
    SHIM(scale, sh_scale);
    SHIM(add_channel_bias, sh_add_channel_bias);
    SHIM(column_stats, sh_column_stats);
    SHIM(upsample_nearest2x, sh_upsample);
    SHIM(concat_channels, sh_concat);
    SHIM(nchw_to_nhwc, sh_nchw_to_nhwc);
    SHIM(nhwc_to_nchw, sh_nhwc_to_nchw);
    SHIM(timestep_embedding, sh_timestep_embedding);
    SHIM(embed_tokens, sh_embed_tokens);
#undef SHIM
    P.on = 1;
}

static void prof_uninstall(ds_backend* be) {
    if (P.on) *be = P.orig;
    P.on = 0;
}

static int cmp_shape_time(const void* a, const void* b) {
    double x = ((const prof_shape*)a)->s, y = ((const prof_shape*)b)->s;
    return x > y ? -1 : x < y;
}

static double rate(double amount, double s, double unit) {
    return amount > 0 && s > 0 ? amount / s / unit : 0;
}

// Prints the profile to stderr and returns it as a JSON object.
static cJSON* prof_report(double step_s, int top, const char* how) {
    double sum = 0;
    for (int c = 0; c < C_N; c++) sum += P.cls[c].s;
    fprintf(stderr, "\nper-op profile of one UNet CFG step (%.3f ms wall, ops %.3f ms; %s):\n",
            step_s * 1e3, sum * 1e3, how);
    fprintf(stderr, "  %-19s %10s %6s %7s %9s %9s\n", "class", "ms", "%", "calls", "TFLOP/s", "GB/s");
    cJSON* j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "step_s", step_s);
    cJSON_AddStringToObject(j, "timing", how);
    cJSON* cls = cJSON_AddObjectToObject(j, "classes");
    for (int c = 0; c < C_N; c++) {
        if (!P.cls[c].calls) continue;
        double tf = rate(P.cls[c].flops, P.cls[c].s, 1e12), gb = rate(P.cls[c].bytes, P.cls[c].s, 1e9);
        fprintf(stderr, "  %-19s %10.3f %6.1f %7ld", kClassName[c], P.cls[c].s * 1e3,
                100 * P.cls[c].s / step_s, P.cls[c].calls);
        if (tf > 0) fprintf(stderr, " %9.3f", tf);
        else fprintf(stderr, " %9s", "");
        fprintf(stderr, " %9.1f\n", gb);
        cJSON* o = cJSON_AddObjectToObject(cls, kClassName[c]);
        cJSON_AddNumberToObject(o, "s", P.cls[c].s);
        cJSON_AddNumberToObject(o, "calls", (double)P.cls[c].calls);
        cJSON_AddNumberToObject(o, "gflop", P.cls[c].flops / 1e9);
        cJSON_AddNumberToObject(o, "gbytes", P.cls[c].bytes / 1e9);
        cJSON_AddNumberToObject(o, "tflop_s", tf);
        cJSON_AddNumberToObject(o, "gb_s", gb);
    }
    fprintf(stderr, "  %-19s %10.3f %6.1f\n", "outside ops", (step_s - sum) * 1e3,
            100 * (step_s - sum) / step_s);
    cJSON_AddNumberToObject(j, "ops_s", sum);
    cJSON_AddNumberToObject(j, "outside_ops_s", step_s - sum);
    if (P.lost) {
        fprintf(stderr, "  (%d ops could not be timed: event pool exhausted)\n", P.lost);
        cJSON_AddNumberToObject(j, "untimed_ops", P.lost);
    }

    qsort(P.shape, (size_t)P.n_shapes, sizeof P.shape[0], cmp_shape_time);
    fprintf(stderr, "\n  top %d shapes by time:\n", top);
    cJSON* arr = cJSON_AddArrayToObject(j, "top_shapes");
    for (int i = 0; i < P.n_shapes && i < top; i++) {
        const prof_shape* s = &P.shape[i];
        double tf = rate(s->flops, s->s, 1e12), gb = rate(s->bytes, s->s, 1e9);
        fprintf(stderr, "  %9.3f ms %5.1f%% %4ldx  %-52s", s->s * 1e3, 100 * s->s / step_s, s->calls,
                s->key);
        if (tf > 0) fprintf(stderr, " %8.3f TFLOP/s", tf);
        fprintf(stderr, " %8.1f GB/s\n", gb);
        cJSON* o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "op", s->key);
        cJSON_AddStringToObject(o, "class", kClassName[s->cls]);
        cJSON_AddNumberToObject(o, "s", s->s);
        cJSON_AddNumberToObject(o, "calls", (double)s->calls);
        cJSON_AddNumberToObject(o, "gflop_s", tf * 1e3);
        cJSON_AddNumberToObject(o, "tflop_s", tf);
        cJSON_AddNumberToObject(o, "gb_s", gb);
        cJSON_AddItemToArray(arr, o);
    }
    return j;
}

// ---- model loading -----------------------------------------------------------------------------

static char* join(const char* a, const char* b) { return ds_path_join(a, b); }

// VAE scale factor 2^(levels − 1) from DIR/vae/config.json (8 if absent).
static int vae_scale_factor(const char* dir) {
    char* p = join(dir, "vae/config.json");
    char* txt = NULL;
    ds_err e = {0};
    int f = 8;
    if (ds_file_exists(p) && ds_read_file(&e, p, &txt, NULL) == DS_OK) {
        cJSON* j = cJSON_Parse(txt);
        const cJSON* b = j ? cJSON_GetObjectItem(j, "block_out_channels") : NULL;
        if (cJSON_IsArray(b)) f = 1 << (cJSON_GetArraySize(b) - 1);
        cJSON_Delete(j);
    }
    free(txt);
    free(p);
    return f;
}

static void usage(void) {
    fprintf(stderr,
            "usage: bench_unet --model DIR [--device cpu|cuda (cpu)] [--precision fp32|fp16|bf16\n"
            "                  (cpu: fp32, cuda: fp16)] [--gpu N (0)] [--iters N (5)] [--warmup N (1)]\n"
            "                  [--threads N (cores)] [--seed S (1)] [--timestep T (981)] [--size PX (native)]\n"
            "                  [--capture] [--capture-per-head] [--compare-capture]\n"
            "                  [--profile] [--profile-sync] [--top N (15)] [--save-out FILE.npy]\n"
            "                  [--synthetic (random weights from DIR/unet/config.json alone, no weight file;\n"
            "                   e.g. --model bench/configs/sd15)]\n");
    exit(2);
}

// One timed UNet evaluation: synchronized before and after, so the host clock sees finished work.
static double timed_step(ds_backend* be, const ds_unet* u, ds_run* run, const ds_tensor* x,
                         const float* t_host, const ds_tensor* ctx, ds_tensor* out, ds_err* e) {
    if (be->sync) be->sync(be);
    double t0 = now_s();
    if (ds_unet_forward(u, run, x, t_host, ctx, out) != DS_OK) die("ds_unet_forward", e);
    if (be->sync) be->sync(be);
    double dt = now_s() - t0;
    mem_sample();
    return dt;
}

// Each captured layer's total must be (capture steps) × heads × Lq × (batches kept): every
// probability row sums to 1. Returns the largest relative error (-1 if nothing was captured).
static double capture_check(ds_context* ctx, ds_capture* cap, int steps, int* n_layers) {
    double worst = -1;
    *n_layers = ds_capture_layer_count(cap);
    for (int l = 0; l < *n_layers; l++) {
        ds_capture_layer_info li;
        float* buf = NULL;
        int64_t sh[4];
        if (ds_capture_layer_info_get(cap, l, &li) != DS_OK ||
            ds_capture_raw(ctx, cap, l, -1, &buf, sh) != DS_OK) {
            fprintf(stderr, "bench_unet: capture layer %d: %s\n", l, ds_last_error(ctx));
            return 1e9;
        }
        double sum = 0;
        int64_t n = sh[0] * sh[1] * sh[2] * sh[3];
        for (int64_t i = 0; i < n; i++) sum += buf[i];
        free(buf);
        double want = (double)steps * li.heads * sh[2] * sh[0];
        double err = fabs(sum - want) / want;
        if (!(err <= 1e300)) err = 1e9;  // NaN
        if (err > worst) worst = err;
    }
    return worst;
}

int main(int argc, char** argv) {
    const char *model = NULL, *save_out = NULL, *device = "cpu", *precision = NULL;
    int iters = 5, warmup = 1, threads = 0, size = 0, profile = 0, top = 15, gpu = 0, synthetic = 0;
    int capture = 0, per_head = 0, compare = 0, profile_sync = 0;
    uint64_t seed = 1;
    float timestep = 981.0f;
    for (int i = 1; i < argc; i++) {
        const char* a = argv[i];
        const char* v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARGV(name) (strcmp(a, name) == 0 && v && (i++, 1))
        if (ARGV("--model")) model = v;
        else if (ARGV("--device")) device = v;
        else if (ARGV("--precision")) precision = v;
        else if (ARGV("--gpu")) gpu = atoi(v);
        else if (ARGV("--iters")) iters = atoi(v);
        else if (ARGV("--warmup")) warmup = atoi(v);
        else if (ARGV("--threads")) threads = atoi(v);
        else if (ARGV("--seed")) seed = strtoull(v, NULL, 10);
        else if (ARGV("--timestep")) timestep = (float)atof(v);
        else if (ARGV("--size")) size = atoi(v);
        else if (ARGV("--top")) top = atoi(v);
        else if (ARGV("--save-out")) save_out = v;
        else if (strcmp(a, "--profile") == 0) profile = 1;
        else if (strcmp(a, "--synthetic") == 0) synthetic = 1;
        else if (strcmp(a, "--profile-sync") == 0) profile = profile_sync = 1;
        else if (strcmp(a, "--capture") == 0) capture = 1;
        else if (strcmp(a, "--capture-per-head") == 0) capture = per_head = 1;
        else if (strcmp(a, "--compare-capture") == 0) compare = 1;
        else usage();
#undef ARGV
    }
    if (!model || iters < 1 || warmup < 0 || gpu < 0) usage();
    const int cuda = strcmp(device, "cuda") == 0;
    if (!cuda && strcmp(device, "cpu") != 0) {
        fprintf(stderr, "bench_unet: --device expects cpu or cuda, got '%s'\n", device);
        return 2;
    }
    if (!precision) precision = cuda ? "fp16" : "fp32";
    ds_act_dtype dtype;
    if (!strcmp(precision, "fp16")) dtype = DS_ACT_F16;
    else if (!strcmp(precision, "bf16")) dtype = DS_ACT_BF16;
    else if (!strcmp(precision, "fp32")) dtype = DS_ACT_F32;
    else {
        fprintf(stderr, "bench_unet: --precision expects fp32, fp16 or bf16, got '%s'\n", precision);
        return 2;
    }
    if (!cuda && dtype != DS_ACT_F32) {
        fprintf(stderr, "bench_unet: --precision %s: the CPU backend computes in fp32 only (use --device cuda)\n",
                precision);
        return 2;
    }
    if (threads <= 0) {
        const char* env = getenv("OMP_NUM_THREADS");
        threads = env && atoi(env) > 0 ? atoi(env) : (int)sysconf(_SC_NPROCESSORS_ONLN);
    }
    if (compare) capture = 1;

    ds_err e = {0};
    double t_load = now_s();
    ds_backend* be = NULL;
    char gpu_name[256] = "";
    if (cuda) {
        // the baseline: what the device holds before the backend exists (the CUDA context; with
        // --gpu N > 0 it is taken after the backend has selected its device, see below)
        size_t f = 0, t = 0;
        G.on = gpu == 0 && ds_cuda_mem_info(&f, &t) == 0;
        if (G.on) G.total = t, G.baseline = G.peak_used = t - f;
        ds_cuda_options o = {gpu, dtype};
        be = ds_backend_cuda_create(&e, &o);
        if (!be) {
            fprintf(stderr, "bench_unet: %s\n", e.msg[0] ? e.msg : "--device cuda: no usable GPU");
            fprintf(stderr, "bench_unet: the CUDA benchmark needs a GPU (no result)\n");
            return 1;
        }
        if (!G.on && ds_cuda_mem_info(&f, &t) == 0) {
            G.on = 1;
            G.total = t, G.baseline = G.peak_used = t - f;
        }
        ds_cuda_device_name(gpu_name, sizeof gpu_name);
    } else {
        be = ds_backend_cpu_create(threads);
        if (!be) die("backend", &e);
    }
    const double esz = dtype == DS_ACT_F32 ? 4 : 2;
    ds_weights* ws = ds_weights_create(be);
    char* unet_dir = join(model, "unet");
    char* wfile = join(unet_dir, "diffusion_pytorch_model.safetensors");
    if (!ds_file_exists(wfile)) {
        free(wfile);
        wfile = join(unet_dir, "diffusion_pytorch_model.fp16.safetensors");
    }
    char* cfile = join(unet_dir, "config.json");
    char* cjson = NULL;
    if (synthetic) ds_weights_synthesize(ws, seed);  // random weights of the config's shapes, no file
    else if (ds_weights_add_file(ws, &e, wfile, "unet.") != DS_OK) die(wfile, &e);
    if (ds_read_file(&e, cfile, &cjson, NULL) != DS_OK) die(cfile, &e);
    ds_unet_config cfg;
    if (ds_unet_config_from_json(&e, cjson, cfile, &cfg) != DS_OK) die(cfile, &e);
    // A bare model around the UNet: the capture module (host/capture.c) reads its backend, UNet
    // and latent scale. It must stay put until materialize (the weight store fills its slots).
    static ds_model M;
    M.be = be;
    M.ws = ws;
    M.unet_cfg = cfg;
    M.precision = precision;
    ds_unet* u = &M.unet;
    if (ds_unet_bind(u, &cfg, ws, "unet.", &e) != DS_OK) die("bind", &e);
    if (ds_weights_materialize(ws, &e) != DS_OK) die("materialize", &e);
    if (be->sync) be->sync(be);
    t_load = now_s() - t_load;
    mem_sample();
    const size_t used_after_load = mem_used_now();

    const int vsf = vae_scale_factor(model);
    M.vae_scale_factor = vsf;
    const int lat = size > 0 ? size / vsf : (cfg.sample_size > 0 ? cfg.sample_size : 64);
    const int B = 2, Cin = cfg.in_channels, Cout = cfg.out_channels, L = 77,
              D = cfg.cross_attention_dim;
    const int64_t nx = (int64_t)B * Cin * lat * lat, nctx = (int64_t)B * L * D,
                  nout = (int64_t)B * Cout * lat * lat;

    // Inputs: torch.Generator().manual_seed(seed); x = randn(2, C, h, w); ctx = randn(2, 77, D).
    float* hx = malloc((size_t)nx * sizeof(float));
    float* hctx = malloc((size_t)nctx * sizeof(float));
    float* hout = malloc((size_t)nout * sizeof(float));
    ds_torch_rng rng;
    ds_torch_rng_seed(&rng, seed);
    ds_torch_randn(&rng, hx, (size_t)nx);
    ds_torch_randn(&rng, hctx, (size_t)nctx);

    float* x_nchw = be->alloc(be, nx);
    ds_tensor x = {be->alloc(be, nx), 4, {B, lat, lat, Cin}};
    ds_tensor ctx = {be->alloc(be, nctx), 3, {B, L, D}};
    ds_tensor out = {be->alloc(be, nout), 4, {B, lat, lat, Cout}};
    float* out_nchw = be->alloc(be, nout);
    if (!x_nchw || !x.data || !ctx.data || !out.data || !out_nchw) {
        fprintf(stderr, "bench_unet: out of memory for the inputs\n");
        return 1;
    }
    be->upload(be, x_nchw, hx, nx);
    be->nchw_to_nhwc(be, x_nchw, x.data, B, Cin, lat, lat);
    be->upload(be, ctx.data, hctx, nctx);
    const float t_host[2] = {timestep, timestep};

    ds_arena arena;
    ds_arena_init(&arena, be, 0);
    ds_run run;
    memset(&run, 0, sizeof run);
    run.be = be;
    run.arena = &arena;
    run.err = &e;
    run.step = 0;
    run.timestep = timestep;
    run.cond_batch_begin = 1;

    // capture: the same plan machinery and hooks as ds_generate (host/capture.c)
    ds_context* dctx = NULL;
    ds_capture* cap = NULL;
    const ds_capture_hooks* hooks = NULL;
    if (capture) {
        dctx = ds_context_create();
        ds_capture_plan plan;
        ds_capture_plan_init(&plan, DS_HEATMAP_MEAN);  // every attn2, conditional half
        plan.per_head = per_head;
        if (!dctx || ds_capture_create(dctx, &M, &plan, &cap) != DS_OK) {
            fprintf(stderr, "bench_unet: capture: %s\n", dctx ? ds_last_error(dctx) : "out of memory");
            return 1;
        }
        if (ds_capture_attach_unet(cap, &e, &run, B, lat * vsf, lat * vsf) != DS_OK) die("capture", &e);
        hooks = run.capture;
        if (compare) run.capture = NULL;
    }

    fprintf(stderr, "bench_unet: %s on %s%s%s (%s), latents (%d, %d, %d, %d), context (%d, %d, %d), "
                    "%s, weights loaded in %.2f s (%.0f MB as %s)\n",
            model, cuda ? "cuda" : "cpu", gpu_name[0] ? " " : "", gpu_name, precision, B, Cin, lat, lat,
            B, L, D, compare ? "capture off and on, alternating" : capture ? "capture on" : "capture off",
            t_load, ds_weights_bytes(ws) / 4.0 * esz / 1e6, precision);
    if (!cuda) fprintf(stderr, "bench_unet: %d threads\n", threads);

    double* times = calloc((size_t)iters, sizeof(double));
    double* times_cap = calloc((size_t)iters, sizeof(double));
    int cap_steps = 0;  // UNet evaluations that ran with the capture on
    for (int i = 0; i < warmup + iters; i++) {
        if (!compare) {
            double dt = timed_step(be, u, &run, &x, t_host, &ctx, &out, &e);
            cap_steps += capture;
            if (i >= warmup) times[i - warmup] = dt;
            fprintf(stderr, "  unet step %d/%d: %.3f ms%s\n", i + 1, warmup + iters, dt * 1e3,
                    i < warmup ? " (warm-up)" : "");
            continue;
        }
        // a pair: off then on, or on then off (alternating, so drift falls on both)
        double d[2];
        for (int k = 0; k < 2; k++) {
            int on = (k + i) % 2;
            run.capture = on ? hooks : NULL;
            d[on] = timed_step(be, u, &run, &x, t_host, &ctx, &out, &e);
            cap_steps += on;
        }
        run.capture = NULL;
        if (i >= warmup) times[i - warmup] = d[0], times_cap[i - warmup] = d[1];
        fprintf(stderr, "  unet step pair %d/%d: capture off %.3f ms, on %.3f ms%s\n", i + 1, warmup + iters,
                d[0] * 1e3, d[1] * 1e3, i < warmup ? " (warm-up)" : "");
    }
    const double median = median_of(times, iters);

    be->nhwc_to_nchw(be, out.data, out_nchw, B, lat, lat, Cout);
    be->download(be, hout, out_nchw, nout);
    double mean = 0, sq = 0;
    int finite = 1;
    for (int64_t i = 0; i < nout; i++) {
        if (!isfinite(hout[i])) finite = 0;
        mean += hout[i];
    }
    mean /= (double)nout;
    for (int64_t i = 0; i < nout; i++) sq += (hout[i] - mean) * (hout[i] - mean);
    double out_std = sqrt(sq / (double)(nout > 1 ? nout - 1 : 1));
    if (save_out) {
        int64_t sh[4] = {B, Cout, lat, lat};
        if (ds_npy_write(&e, save_out, hout, 4, sh) != DS_OK) die(save_out, &e);
    }

    cJSON* res = cJSON_CreateObject();
    cJSON_AddStringToObject(res, "side", "diffscope");
    cJSON_AddStringToObject(res, "mode", "unet");
    cJSON_AddStringToObject(res, "model", model);
    cJSON_AddStringToObject(res, "device", cuda ? "cuda" : "cpu");
    cJSON_AddStringToObject(res, "precision", precision);
    if (gpu_name[0]) cJSON_AddStringToObject(res, "gpu", gpu_name);
    cJSON_AddNumberToObject(res, "median_s", median);
    cJSON_AddNumberToObject(res, "min_s", min_of(times, iters));
    cJSON* ta = cJSON_AddArrayToObject(res, "times_s");
    for (int i = 0; i < iters; i++) cJSON_AddItemToArray(ta, cJSON_CreateNumber(times[i]));
    cJSON_AddBoolToObject(res, "capture", capture && !compare);
    if (compare) {
        double mc = median_of(times_cap, iters);
        cJSON_AddStringToObject(res, "capture_compare", "alternating off/on steps, median_s = off");
        cJSON_AddNumberToObject(res, "capture_median_s", mc);
        cJSON_AddNumberToObject(res, "capture_min_s", min_of(times_cap, iters));
        cJSON* tc = cJSON_AddArrayToObject(res, "capture_times_s");
        for (int i = 0; i < iters; i++) cJSON_AddItemToArray(tc, cJSON_CreateNumber(times_cap[i]));
        cJSON_AddNumberToObject(res, "capture_overhead_pct", 100.0 * (mc / median - 1.0));
        const double m0 = min_of(times, iters), m1 = min_of(times_cap, iters);
        cJSON_AddNumberToObject(res, "capture_overhead_min_pct", 100.0 * (m1 / m0 - 1.0));
        fprintf(stderr, "bench_unet: median %.3f ms capture off, %.3f ms on: overhead %+.2f%% (of the minima: %.3f → "
                        "%.3f ms, %+.2f%%)\n",
                median * 1e3, mc * 1e3, 100.0 * (mc / median - 1.0), m0 * 1e3, m1 * 1e3, 100.0 * (m1 / m0 - 1.0));
    } else {
        fprintf(stderr, "bench_unet: median %.3f ms per CFG step (%s)\n", median * 1e3,
                capture ? "capture on" : "capture off");
    }
    cJSON_AddNumberToObject(res, "load_s", t_load);
    int lat_shape[4] = {B, Cin, lat, lat}, ctx_shape[3] = {B, L, D};
    cJSON_AddItemToObject(res, "latent", cJSON_CreateIntArray(lat_shape, 4));
    cJSON_AddItemToObject(res, "context", cJSON_CreateIntArray(ctx_shape, 3));
    cJSON_AddNumberToObject(res, "size_px", lat * vsf);
    if (!cuda) cJSON_AddNumberToObject(res, "threads", threads);
    cJSON_AddStringToObject(res, "dtype",
                            dtype == DS_ACT_F16 ? "float16" : dtype == DS_ACT_BF16 ? "bfloat16" : "float32");
    cJSON_AddNumberToObject(res, "out_std", out_std);
    cJSON_AddBoolToObject(res, "out_finite", finite);
    cJSON_AddNumberToObject(res, "weights_mb", ds_weights_bytes(ws) / 4.0 * esz / 1e6);
    cJSON_AddNumberToObject(res, "arena_mb", ds_arena_bytes_reserved(&arena) / 4.0 * esz / 1e6);

    if (profile) {
        int events = 0;
        const char* how = "host clock per op";
        if (cuda && !profile_sync && ds_cuda_marks_begin(be, 16384) == 0) {
            events = 1;
            how = "GPU time per op (cudaEvents)";
        } else if (cuda) {
            how = "host clock per op, synchronized before and after each";
        }
        run.capture = capture ? hooks : NULL;
        prof_install(be, events, esz);
        if (be->sync) P.orig.sync(be);
        double t0 = now_s();
        if (ds_unet_forward(u, &run, &x, t_host, &ctx, &out) != DS_OK) die("ds_unet_forward", &e);
        if (be->sync) P.orig.sync(be);
        double dt = now_s() - t0;
        prof_uninstall(be);
        cap_steps += capture;
        if (events) {
            prof_collect();
            ds_cuda_marks_end();
        }
        run.capture = compare ? NULL : run.capture;
        cJSON* pj = prof_report(dt, top, how);
        cJSON_AddBoolToObject(pj, "capture", capture);
        cJSON_AddItemToObject(res, "profile", pj);
    }
    if (capture) {
        int n_layers = 0;
        double err = capture_check(dctx, cap, cap_steps, &n_layers);
        cJSON* cj = cJSON_AddObjectToObject(res, "capture_info");
        cJSON_AddStringToObject(cj, "plan", per_head ? "every attn2, per head, conditional half"
                                                     : "every attn2, heads summed, conditional half");
        cJSON_AddNumberToObject(cj, "layers", n_layers);
        cJSON_AddNumberToObject(cj, "steps", cap_steps);
        cJSON_AddNumberToObject(cj, "mb", ds_capture_bytes(cap) / 1e6);
        cJSON_AddNumberToObject(cj, "check_max_rel_err", err);
        fprintf(stderr, "bench_unet: capture %d layers, %.2f MB; sums vs steps×heads×rows: max rel. error %.2e\n",
                n_layers, ds_capture_bytes(cap) / 1e6, err);
        if (!(err >= 0 && err < 1e-3)) {
            fprintf(stderr, "bench_unet: the capture sums are wrong (see above)\n");
            finite = 0;
        }
    }
    if (G.on) {
        cJSON* gj = cJSON_AddObjectToObject(res, "gpu_mem");
        cJSON_AddNumberToObject(gj, "total_mb", G.total / 1e6);
        cJSON_AddNumberToObject(gj, "baseline_mb", G.baseline / 1e6);
        cJSON_AddNumberToObject(gj, "after_load_mb", (used_after_load - G.baseline) / 1e6);
        cJSON_AddNumberToObject(gj, "peak_mb", (G.peak_used - G.baseline) / 1e6);
        cJSON_AddStringToObject(gj, "how", "cudaMemGetInfo used minus the baseline before the backend "
                                           "(device-wide), sampled after load, each step (and each op with --profile-sync)");
        cJSON_AddNumberToObject(res, "gpu_mem_peak_mb", (G.peak_used - G.baseline) / 1e6);
        fprintf(stderr, "bench_unet: GPU memory peak %.0f MB above the %.0f MB baseline (weights+workspace after "
                        "load %.0f MB; device total %.0f MB)\n",
                (G.peak_used - G.baseline) / 1e6, G.baseline / 1e6, (used_after_load - G.baseline) / 1e6,
                G.total / 1e6);
    }
    cJSON_AddNumberToObject(res, "maxrss_kb", (double)maxrss_kb());

    char* js = cJSON_PrintUnformatted(res);
    printf("%s\n", js);
    fflush(stdout);
    free(js);
    cJSON_Delete(res);

    if (cap) ds_capture_free(cap);
    if (dctx) ds_context_free(dctx);
    be->free(be, x_nchw);
    be->free(be, x.data);
    be->free(be, ctx.data);
    be->free(be, out.data);
    be->free(be, out_nchw);
    ds_arena_release(&arena);
    ds_unet_release(u);
    ds_weights_free(ws);
    if (be->destroy) be->destroy(be);
    else ds_backend_cpu_free(be);
    free(P.rec);
    free(times);
    free(times_cap);
    free(hx);
    free(hctx);
    free(hout);
    free(cjson);
    free(wfile);
    free(cfile);
    free(unet_dir);
    return finite ? 0 : 3;
}
