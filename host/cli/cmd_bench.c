// cmd_bench.c — `diffscope bench`: times the denoising steps of real generations through the public
// API (ds_generate's progress callback marks the end of every step) on the chosen device, with the
// cross-attention capture off, on, or both alternately; prints ms per step (median over the timed
// generations' steps), it/s, the capture overhead and, on CUDA, the peak GPU memory.
//
// A step here is what the pipeline does per scheduler call: the batch-2 UNet CFG evaluation plus the
// scheduler update and the latents' round trip (small beside the UNet). The first generation(s) are
// warm-ups (weights upload, workspace growth, capture buffers). With --capture both, timed
// generations alternate off/on so drift falls on both. The capture plan is --plan's default
// layer set (mean: every attn2, heads summed, conditional half — what bench_unet --capture runs).
//
// --device cuda without a usable GPU (no GPU, driver too old, a build without the CUDA backend, the
// emulator): the device error, then a line saying the benchmark needs a GPU; exit 1.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "args.h"
#include "cli.h"
#include "cuda_info.h"
#include "diffscope/diffscope.h"
#include "diffscope/heatmap.h"

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void* a, const void* b) {
    double x = *(const double*)a, y = *(const double*)b;
    return x < y ? -1 : x > y;
}

static double median(double* v, int n) {
    if (n <= 0) return 0;
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// per-mode step times of the timed generations
typedef struct {
    double* step_s;
    int n, cap;
    double gen_s_sum;
    int gens;
} series;

typedef struct {
    double last;      // seconds_elapsed at the previous callback of this generation
    series* into;     // NULL during warm-up
    int gpu_mem;      // sample GPU memory at every step
    size_t peak_used;
} bench_state;

static void sample_mem(bench_state* st) {
    size_t f = 0, t = 0;
    if (st->gpu_mem && ds_cuda_mem_info(&f, &t) == 0 && t - f > st->peak_used) st->peak_used = t - f;
}

static int on_step(void* user, int done, int total, double seconds) {
    (void)done, (void)total;
    bench_state* st = user;
    double dt = seconds - st->last;
    st->last = seconds;
    sample_mem(st);
    series* s = st->into;
    if (!s) return 0;
    if (s->n == s->cap) {
        int nc = s->cap ? 2 * s->cap : 256;
        double* ns = realloc(s->step_s, sizeof(double) * (size_t)nc);
        if (!ns) return 0;
        s->step_s = ns, s->cap = nc;
    }
    s->step_s[s->n++] = dt;
    return 0;
}

int cmd_bench(int argc, char** argv) {
    const char *model = NULL, *capture = "off", *plan_name = "mean", *prompt = "a photograph of an astronaut riding a horse";
    int steps = 20, iters = 3, warmup = 1, size = 0, json = 0, quiet = 0;
    uint64_t seed = 1;
    const arg_spec specs[] = {
        {"model", ARG_STR, &model, "PATH", "diffusers folder or single-file .safetensors (default: the embedded model)", 1, 0, 0},
        {"steps", ARG_INT, &steps, "N", "denoising steps per generation, 1..1000 (default 20)", 1, 1000, 0},
        {"iters", ARG_INT, &iters, "N", "timed generations per capture setting, 1..1000 (default 3)", 1, 1000, 0},
        {"warmup", ARG_INT, &warmup, "N", "untimed generations first, 0..100 (default 1)", 0, 100, 0},
        {"capture", ARG_STR, &capture, "off|on|both", "cross-attention capture during the steps; both: alternate and report the overhead (default off)", 1, 0, 0},
        {"plan", ARG_STR, &plan_name, "mean|daam|p2p", "capture plan (layer set): mean = every attn2, heads summed (default); daam = daam's layers, per head", 1, 0, 0},
        {"prompt", ARG_STR, &prompt, "TEXT", "prompt of the generations (default: an astronaut riding a horse)", 1, 0, 0},
        {"seed", ARG_U64, &seed, "N", "seed (default 1)", 1, 0, 0},
        {"size", ARG_INT, &size, "PX", "square image side in pixels (default: the model's native size)", 8, 16384, 0},
        {"json", ARG_FLAG, &json, NULL, "also print the results as one JSON line (the last line of stdout)", 1, 0, 0},
        {"quiet", ARG_FLAG, &quiet, NULL, "no notices on stderr", 1, 0, 0},
    };
    const arg_command cmd = {"bench", "Time the denoising steps of generations (ms/step, it/s, capture overhead, GPU memory).",
                             "[--model PATH] [--steps N] [--iters N] [--capture off|on|both] [--device cpu|cuda] [options]",
                             specs, COUNT(specs)};
    int pr = args_parse(&cmd, argc, argv);
    if (pr) return pr > 0 ? 0 : 2;
    int modes[2], n_modes = 0;
    if (!strcmp(capture, "off")) modes[n_modes++] = 0;
    else if (!strcmp(capture, "on")) modes[n_modes++] = 1;
    else if (!strcmp(capture, "both")) modes[n_modes++] = 0, modes[n_modes++] = 1;
    else {
        fprintf(stderr, "diffscope bench: --capture expects off, on or both, got '%s'\n", capture);
        return 2;
    }
    ds_heatmap_mode pmode;
    if (!strcmp(plan_name, "mean")) pmode = DS_HEATMAP_MEAN;
    else if (!strcmp(plan_name, "daam")) pmode = DS_HEATMAP_DAAM;
    else if (!strcmp(plan_name, "p2p")) pmode = DS_HEATMAP_P2P;
    else {
        fprintf(stderr, "diffscope bench: --plan expects mean, daam or p2p, got '%s'\n", plan_name);
        return 2;
    }
    // GPU asked for (explicitly, or by fp16/bf16): the benchmark needs one
    const int want_gpu = (args_device && !strcmp(args_device, "cuda")) ||
                         (!args_device && args_precision && strcmp(args_precision, "fp32") != 0);
    const int cpu_only = args_device && !strcmp(args_device, "cpu");
    const char* env_dev = getenv("DIFFSCOPE_DEVICE");
    const int env_cpu = !args_device && env_dev && !strcmp(env_dev, "cpu");

    ds_context* ctx = ds_context_create();
    if (!ctx) {
        fprintf(stderr, "diffscope bench: out of memory\n");
        return 1;
    }
    // the GPU memory baseline: before the model exists (the CUDA context only)
    bench_state st;
    memset(&st, 0, sizeof st);
    size_t base_free = 0, base_total = 0;
    int have_base = !cpu_only && !env_cpu && ds_cuda_mem_info(&base_free, &base_total) == 0;
    ds_model* m = NULL;
    int rc = cli_load_model(ctx, model, quiet, &m);
    if (rc) {
        if (rc == 1 && (want_gpu || (env_dev && !strcmp(env_dev, "cuda") && !args_device)))
            fprintf(stderr, "diffscope bench: this benchmark needs a usable GPU for --device cuda "
                            "(run it with --device cpu to time the CPU backend)\n");
        ds_context_free(ctx);
        return rc;
    }
    ds_model_info info;
    if (ds_model_get_info(ctx, m, &info) != DS_OK) {
        fprintf(stderr, "diffscope bench: %s\n", ds_last_error(ctx));
        ds_model_free(m);
        ds_context_free(ctx);
        return 1;
    }
    const int on_gpu = info.device && !strcmp(info.device, "cuda");
    if (on_gpu && ds_cuda_is_emulated()) {
        fprintf(stderr, "diffscope bench: the CUDA device here is the test suite's SIMT emulator, whose timings "
                        "mean nothing: benchmarks need a real GPU (or --device cpu)\n");
        ds_model_free(m);
        ds_context_free(ctx);
        return 1;
    }
    st.gpu_mem = on_gpu && have_base;
    st.peak_used = base_total - base_free;
    sample_mem(&st);

    ds_capture* cap = NULL;
    if (modes[n_modes - 1] == 1) {
        ds_capture_plan plan;
        ds_capture_plan_init(&plan, pmode);
        if (ds_capture_create(ctx, m, &plan, &cap) != DS_OK) {
            fprintf(stderr, "diffscope bench: capture: %s\n", ds_last_error(ctx));
            ds_model_free(m);
            ds_context_free(ctx);
            return 1;
        }
    }
    ds_generate_params p;
    ds_generate_params_init(&p);
    p.prompt = prompt;
    p.steps = steps;
    p.seed = seed;
    p.width = p.height = size;
    p.progress = on_step;
    p.progress_user = &st;
    const int native = info.unet_sample_size * info.vae_scale_factor;
    const int px = size ? size : native;
    if (!quiet)
        fprintf(stderr, "diffscope bench: %s on %s (%s), %dx%d, %d steps, CFG %.1f, capture %s%s%s; %d warm-up + %d timed "
                        "generation%s per setting\n",
                model ? model : "the default model", info.device, info.precision, px, px, steps, p.guidance, capture,
                n_modes == 2 || modes[0] ? ", plan " : "", n_modes == 2 || modes[0] ? plan_name : "",
                warmup, iters, iters == 1 ? "" : "s");

    series ser[2];
    memset(ser, 0, sizeof ser);
    rc = 0;
    for (int g = 0; g < warmup + iters && !rc; g++) {
        for (int k = 0; k < n_modes && !rc; k++) {
            int mode = modes[(k + g) % n_modes];  // alternate the order with --capture both
            p.capture = mode ? cap : NULL;
            st.last = 0;
            st.into = g >= warmup ? &ser[mode] : NULL;
            ds_image img;
            double t0 = now_s();
            if (ds_generate(ctx, m, &p, &img) != DS_OK) {
                fprintf(stderr, "diffscope bench: %s\n", ds_last_error(ctx));
                rc = 1;
                break;
            }
            double gs = now_s() - t0;
            ds_image_free(&img);
            sample_mem(&st);
            if (g >= warmup) ser[mode].gen_s_sum += gs, ser[mode].gens++;
            if (!quiet)
                fprintf(stderr, "  generation %d/%d capture %s: %.3f s%s\n", g + 1, warmup + iters, mode ? "on" : "off",
                        gs, g < warmup ? " (warm-up)" : "");
        }
    }
    if (!rc) {
        double med[2] = {0, 0};
        printf("diffscope bench: %s, %s %s, %dx%d, %d steps (a step: one scheduler call, a batch-2 CFG UNet)\n",
               model ? model : "default model", info.device, info.precision, px, px, steps);
        printf("  %-8s %14s %10s %18s %11s\n", "capture", "ms/step (med)", "it/s", "generate s (mean)", "timed calls");
        for (int k = 0; k < n_modes; k++) {
            int mode = modes[k];
            series* s = &ser[mode];
            med[mode] = median(s->step_s, s->n);
            printf("  %-8s %14.3f %10.2f %18.3f %11d\n", mode ? "on" : "off", med[mode] * 1e3,
                   med[mode] > 0 ? 1.0 / med[mode] : 0, s->gens ? s->gen_s_sum / s->gens : 0, s->n);
        }
        double overhead = n_modes == 2 && med[0] > 0 ? 100.0 * (med[1] / med[0] - 1.0) : NAN;
        if (n_modes == 2) printf("  capture overhead: %+.2f%% per step\n", overhead);
        if (cap) printf("  capture buffers: %.2f MB (%d layers)\n", ds_capture_bytes(cap) / 1e6, ds_capture_layer_count(cap));
        double peak_mb = st.gpu_mem ? (st.peak_used - (base_total - base_free)) / 1e6 : NAN;
        if (st.gpu_mem) printf("  GPU memory peak: %.0f MB above the CUDA context (device-wide, cudaMemGetInfo)\n", peak_mb);
        if (json) {
            printf("{\"command\":\"bench\",\"device\":\"%s\",\"precision\":\"%s\",\"size\":%d,\"steps\":%d,\"iters\":%d,"
                   "\"warmup\":%d,\"capture\":\"%s\",\"plan\":\"%s\"",
                   info.device, info.precision, px, steps, iters, warmup, capture, plan_name);
            for (int k = 0; k < n_modes; k++) {
                int mode = modes[k];
                const char* tag = mode ? "on" : "off";
                printf(",\"ms_per_step_%s\":%.6f,\"it_s_%s\":%.4f,\"generate_s_%s\":%.6f", tag, med[mode] * 1e3, tag,
                       med[mode] > 0 ? 1.0 / med[mode] : 0, tag, ser[mode].gens ? ser[mode].gen_s_sum / ser[mode].gens : 0);
            }
            if (n_modes == 2) printf(",\"capture_overhead_pct\":%.4f", overhead);
            if (cap) printf(",\"capture_mb\":%.4f", ds_capture_bytes(cap) / 1e6);
            if (st.gpu_mem) printf(",\"gpu_mem_peak_mb\":%.1f", peak_mb);
            printf("}\n");
        }
    }
    for (int k = 0; k < 2; k++) free(ser[k].step_s);
    if (cap) ds_capture_free(cap);
    ds_model_free(m);
    ds_context_free(ctx);
    return rc;
}
