// cmd_testbed.c — `diffscope testbed eval` and `diffscope testbed make`: the scene-world testbed (docs/testbed.md,
// host/testbed.h).
//
//   eval   held-out scene captions → generate with a DAAM capture → detect the named objects (colour segmentation)
//          → IoU of each colour/shape word's DAAM mask against the detected masks; and the held-out scenes
//          themselves through the image-to-image path → IoU against their exact masks. Last line:
//          "testbed: detect=D miou_gen=G miou_real=R".
//   make   the held-out scenes on disk: images, captions, per-object masks, index.json.
//
// Every flag (and the prompts file, the output folder) is checked before the model is loaded or a file written.
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "args.h"
#include "cli.h"
#include "common.h"
#include "diffscope/diffscope.h"
#include "diffscope/heatmap.h"
#include "heatmap_render.h"
#include "scenes.h"
#include "testbed.h"

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))
#define MAX_N 100000
#define MAX_FIRST 1000000000LL

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// --n: at least 1 (a count of 0 or below is a mistake, not an empty run).
static int check_count(const char* sub, int n, int given) {
    if (!given) return 1;
    if (n < 1) {
        fprintf(stderr, "diffscope testbed %s: --n must be a positive number of prompts/scenes (1..%d), got %d\n", sub,
                MAX_N, n);
        return 0;
    }
    if (n > MAX_N) {
        fprintf(stderr, "diffscope testbed %s: --n %d is too many (at most %d)\n", sub, n, MAX_N);
        return 0;
    }
    return 1;
}

static int check_first(const char* sub, long long first) {
    if (first < 0 || first > MAX_FIRST) {
        fprintf(stderr, "diffscope testbed %s: --first expects a scene index 0..%lld, got %lld\n", sub, MAX_FIRST,
                first);
        return 0;
    }
    return 1;
}

// "--n" was given explicitly? (args_parse gives no "seen" flags back; scan argv.)
static int flag_given(int argc, char** argv, const char* name) {
    const size_t nl = strlen(name);
    for (int i = 0; i < argc; i++)
        if (!strncmp(argv[i], "--", 2) && !strncmp(argv[i] + 2, name, nl) && (argv[i][2 + nl] == 0 || argv[i][2 + nl] == '='))
            return 1;
    return 0;
}

static void fmt_rate(char* buf, size_t cap, double v) {
    if (isnan(v)) snprintf(buf, cap, "n/a");
    else snprintf(buf, cap, "%.3f", v);
}

// ---- prompts file --------------------------------------------------------------------------------

typedef struct prompt_list {
    char** v;
    int n;
    char* data;
} prompt_list;

static void prompts_free(prompt_list* p) {
    free(p->v);
    free(p->data);
    memset(p, 0, sizeof *p);
}

// One prompt a line; blank lines and lines starting with '#' are skipped.
static int read_prompts(const char* path, prompt_list* out) {
    memset(out, 0, sizeof *out);
    ds_err e = {0};
    if (ds_is_dir(path)) {
        fprintf(stderr, "diffscope testbed eval: --prompts %s is a folder, expected a text file (one prompt a line)\n", path);
        return 0;
    }
    if (ds_read_file(&e, path, &out->data, NULL) != DS_OK) {
        fprintf(stderr, "diffscope testbed eval: --prompts: %s\n", e.msg);
        return 0;
    }
    int cap = 0;
    for (char* s = out->data; s && *s;) {
        char* nl = strchr(s, '\n');
        if (nl) *nl = 0;
        size_t len = strlen(s);
        while (len && (s[len - 1] == '\r' || s[len - 1] == ' ' || s[len - 1] == '\t')) s[--len] = 0;
        while (*s == ' ' || *s == '\t') s++;
        if (*s && *s != '#') {
            if (out->n == cap) {
                cap = cap ? 2 * cap : 64;
                char** nv = realloc(out->v, (size_t)cap * sizeof *nv);
                if (!nv) {
                    fprintf(stderr, "diffscope testbed eval: out of memory reading %s\n", path);
                    prompts_free(out);
                    return 0;
                }
                out->v = nv;
            }
            out->v[out->n++] = s;
        }
        s = nl ? nl + 1 : NULL;
    }
    if (!out->n) {
        fprintf(stderr, "diffscope testbed eval: --prompts %s has no prompt (one a line; blank and # lines are skipped)\n", path);
        prompts_free(out);
        return 0;
    }
    return 1;
}

// ---- eval ----------------------------------------------------------------------------------------

static void print_words(const ds_testbed_result* r) {
    for (int k = 0; k < r->n_words; k++) {
        const ds_testbed_word* w = &r->words[k];
        if (k && w->kind != r->words[k - 1].kind) printf(" |");
        if (isnan(w->iou)) printf(" %s=-", w->text);
        else printf(" %s=%.3f", w->text, w->iou);
    }
}

// A growing text buffer for --objects (written atomically at the end).
typedef struct text_buf {
    char* s;
    size_t n, cap;
    int oom;
} text_buf;

static void tb_printf(text_buf* b, const char* fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void tb_printf(text_buf* b, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (k < 0 || b->oom) return;
    if (b->n + (size_t)k + 1 > b->cap) {
        size_t cap = 2 * (b->n + (size_t)k + 1) + 4096;
        char* ns = realloc(b->s, cap);
        if (!ns) { b->oom = 1; return; }
        b->s = ns;
        b->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->n, b->cap - b->n, fmt, ap);
    va_end(ap);
    b->n += (size_t)k;
}

// CSV field: quoted, inner quotes doubled.
static void tb_csv_text(text_buf* b, const char* t) {
    tb_printf(b, "\"");
    for (; *t; t++) tb_printf(b, *t == '"' ? "\"\"" : "%c", *t);
    tb_printf(b, "\"");
}

static int cmd_testbed_eval(int argc, char** argv) {
    const char *model = NULL, *prompts_path = NULL, *sampler = "default", *objects_path = NULL;
    int n = 50, quiet = 0, per_word = 0, steps = 20;
    int first = 0;
    uint64_t seed = 0;
    float guidance = -1.0f, strength = DS_TESTBED_STRENGTH, tau = DS_HEATMAP_TAU;
    const arg_spec specs[] = {
        {"model", ARG_STR, &model, "PATH", "diffusers folder or single-file .safetensors (default: the embedded model)", 1, 0, 0},
        {"n", ARG_INT, &n, "N", "held-out prompts (scenes) to evaluate, >= 1 (default 50)", 1, 0, 0},
        {"seed", ARG_U64, &seed, "S", "generation seed of prompt i is S + i; the real-image noise too (default 0)", 1, 0, 0},
        {"first", ARG_INT, &first, "K", "start at held-out scene K (scene seeds 10^12 + K ...; default 0)", 1, 0, 0},
        {"prompts", ARG_STR, &prompts_path, "FILE", "your own prompts instead (one a line): generated images only; words outside the scene world are not scored", 1, 0, 0},
        {"steps", ARG_INT, &steps, "N", "denoising steps, 1..1000 (default 20)", 1, 1000, 0},
        {"guidance", ARG_FLOAT, &guidance, "F", "classifier-free guidance scale, 0..100 (default: the model's recommendation; 7.5 for SD, 2 for the embedded model)", 0, 100, 0},
        {"sampler", ARG_STR, &sampler, "NAME", "default|ddim|euler|euler_a|dpmpp_2m|pndm (default: the model's scheduler)", 1, 0, 0},
        {"strength", ARG_FLOAT, &strength, "F", "real images: fraction of the schedule re-run, 0.05..1 (default 0.5)", 0.05, 1, 0},
        {"tau", ARG_FLOAT, &tau, "F", "mask threshold on the min-max normalized DAAM map, 0..1 (default 0.4)", 0, 1, 0},
        {"per-word", ARG_FLAG, &per_word, NULL, "also print WORD=RATE (detection rate) for every colour and shape word", 1, 0, 0},
        {"objects", ARG_STR, &objects_path, "FILE", "also write one CSV row per named object of the generated images: prompt,seed,object,color,shape,found", 1, 0, 0},
        {"quiet", ARG_FLAG, &quiet, NULL, "no per-image lines and no notes: only --per-word lines and the summary", 1, 0, 0},
    };
    const arg_command cmd = {"testbed eval",
                             "Score a model on held-out prompts of the scene world: detection of the named objects, and "
                             "DAAM heatmap mIoU (tau 0.4) on generated images and on real scene images.",
                             "[--model PATH] [--n N] [--seed S] [--per-word] [--quiet]", specs, COUNT(specs)};
    int pr = args_parse(&cmd, argc, argv);
    if (pr) return pr > 0 ? 0 : 2;
    const int n_given = flag_given(argc, argv, "n");
    if (!check_count("eval", n, n_given)) return 2;
    if (!check_first("eval", first)) return 2;
    ds_testbed_params tp;
    ds_testbed_params_init(&tp);
    if (!cli_parse_sampler(sampler, &tp.sampler)) {
        fprintf(stderr, "diffscope testbed eval: --sampler expects one of default, ddim, euler, euler_a, dpmpp_2m, pndm; got '%s'\n", sampler);
        return 2;
    }
    if (prompts_path && flag_given(argc, argv, "first")) {
        fprintf(stderr, "diffscope testbed eval: --first picks held-out scenes; it does not apply to --prompts\n");
        return 2;
    }
    if (objects_path && !cli_check_writable_file("testbed eval", "--objects", objects_path)) return 2;
    tp.steps = steps;
    tp.guidance = guidance;
    tp.strength = strength;
    tp.tau = tau;
    prompt_list pl = {0};
    if (prompts_path) {
        if (!read_prompts(prompts_path, &pl)) return 2;
        if (n_given && n < pl.n) pl.n = n;
        n = pl.n;
    }

    ds_context* ctx = ds_context_create();
    ds_model* m = NULL;
    int rc = cli_load_model(ctx, model, quiet, &m);
    if (rc) {
        prompts_free(&pl);
        ds_context_free(ctx);
        return rc;
    }
    guidance = tp.guidance = cli_guidance(ctx, m, guidance);
    ds_model_info info;
    ds_model_get_info(ctx, m, &info);
    const int size = info.unet_sample_size * info.vae_scale_factor;
    if (!prompts_path && (size < DS_SCENE_MIN_SIZE || size > DS_SCENE_MAX_SIZE)) {
        fprintf(stderr, "diffscope testbed eval: the model's native size %dx%d is outside the scene world's %d..%d px; "
                        "use --prompts FILE for generated images only\n", size, size, DS_SCENE_MIN_SIZE, DS_SCENE_MAX_SIZE);
        ds_model_free(m);
        ds_context_free(ctx);
        return 2;
    }
    ds_capture_plan plan;
    ds_capture_plan_init(&plan, DS_HEATMAP_DAAM);
    ds_capture* cap = NULL;
    if (ds_capture_create(ctx, m, &plan, &cap) != DS_OK) {
        fprintf(stderr, "diffscope testbed eval: %s\n", ds_last_error(ctx));
        ds_model_free(m);
        ds_context_free(ctx);
        prompts_free(&pl);
        return 1;
    }
    if (!quiet) {
        if (prompts_path)
            fprintf(stderr, "testbed: %d prompts from %s, generation seeds %llu.., %d steps, guidance %g, tau %g\n", n,
                    prompts_path, (unsigned long long)seed, steps, guidance, tau);
        else
            fprintf(stderr, "testbed: held-out scenes %llu..%llu (training used seeds 0..%d), generation seeds %llu.., "
                            "%d steps, guidance %g, real images at strength %g, tau %g\n",
                    (unsigned long long)(DS_TESTBED_SEED0 + (uint64_t)first),
                    (unsigned long long)(DS_TESTBED_SEED0 + (uint64_t)first + (uint64_t)n - 1),
                    DS_TESTBED_TRAIN_SEEDS - 1, (unsigned long long)seed, steps, guidance, strength, tau);
    }
    ds_testbed_totals tot;
    memset(&tot, 0, sizeof tot);
    text_buf objs = {0};
    if (objects_path) tb_printf(&objs, "prompt,seed,object,color,shape,found\n");
    double t0 = now_s();
    int outside = 0;
    for (int i = 0; i < n && !rc; i++) {
        const uint64_t scene_seed = DS_TESTBED_SEED0 + (uint64_t)first + (uint64_t)i;
        char caption[256];
        const char* prompt = caption;
        if (prompts_path) prompt = pl.v[i];
        else {
            ds_scene sc;
            ds_scene_sample(scene_seed, size, &sc);  // as ds_testbed_eval_real samples it (objects depend on the size)
            ds_scene_caption(&sc, caption, sizeof caption);
        }
        ds_err e = {0};
        ds_testbed_result g, r;
        if (ds_testbed_eval_generated(&e, ctx, m, cap, prompt, seed + (uint64_t)i, &tp, &g, NULL) != DS_OK) {
            fprintf(stderr, "diffscope testbed eval: prompt %d \"%s\": %s\n", i + 1, prompt, e.msg);
            rc = 1;
            break;
        }
        ds_testbed_totals_add(&tot, &g, 0);
        outside += g.n_named == 0;
        for (int k = 0; objects_path && k < g.n_named; k++) {
            tb_csv_text(&objs, prompt);
            tb_printf(&objs, ",%llu,%d,%s,%s,%d\n", (unsigned long long)(seed + (uint64_t)i), k,
                      ds_scene_color_names[g.named[k].color], ds_scene_shape_names[g.named[k].shape], g.found[k]);
        }
        int have_real = 0;
        if (!prompts_path) {
            if (ds_testbed_eval_real(&e, ctx, m, cap, scene_seed, seed + (uint64_t)i, &tp, &r, NULL) != DS_OK) {
                fprintf(stderr, "diffscope testbed eval: scene %llu (real image): %s\n", (unsigned long long)scene_seed, e.msg);
                rc = 1;
                break;
            }
            ds_testbed_totals_add(&tot, &r, 1);
            have_real = 1;
        }
        if (!quiet) {
            printf("[%d/%d]", i + 1, n);
            if (!prompts_path) printf(" scene=%llu", (unsigned long long)scene_seed);
            printf(" seed=%llu", (unsigned long long)(seed + (uint64_t)i));
            if (g.n_named == 0) printf(" detect=- (no scene-world object named)");
            else {
                printf(" detect=%d/%d extra=%d gen:", g.n_found, g.n_named, g.extra);
                print_words(&g);
                if (have_real) {
                    printf(" real:");
                    print_words(&r);
                }
            }
            printf(" \"%s\"\n", prompt);
            fflush(stdout);
        }
    }
    double dt = now_s() - t0;
    if (!rc) {
        char a[16], b[16], c[16];
        if (!quiet) {
            if (outside)
                fprintf(stderr, "testbed: %d of %d prompts name no scene-world object (\"a <colour> <shape>\"): they ran "
                                "but score nothing\n", outside, n);
            fmt_rate(a, sizeof a, ds_testbed_miou(&tot, 0, DS_TESTBED_COLOR));
            fmt_rate(b, sizeof b, ds_testbed_miou(&tot, 1, DS_TESTBED_COLOR));
            printf("colour words: miou_gen=%s miou_real=%s (%d and %d words scored)\n", a, b, tot.iou_n[0][0],
                   tot.iou_n[1][0]);
            printf("shape words: %d and %d scored, %d generated-image words not scored (object not detected)\n",
                   tot.iou_n[0][1], tot.iou_n[1][1], tot.unscored[0][1]);
            printf("miou by shape word (gen/real):");
            for (int s = 0; s < DS_SCENE_N_SHAPES; s++) {
                fmt_rate(a, sizeof a, ds_testbed_word_miou(&tot, 0, DS_TESTBED_SHAPE, s));
                fmt_rate(b, sizeof b, ds_testbed_word_miou(&tot, 1, DS_TESTBED_SHAPE, s));
                printf(" %s=%s/%s", ds_scene_shape_names[s], a, b);
            }
            printf("\n");
            fprintf(stderr, "testbed: %d prompts in %.1f s\n", n, dt);
        }
        if (per_word)
            for (int kind = DS_TESTBED_COLOR; kind <= DS_TESTBED_SHAPE; kind++) {
                const int nk = kind == DS_TESTBED_COLOR ? DS_SCENE_N_COLORS : DS_SCENE_N_SHAPES;
                for (int k = 0; k < nk; k++) {
                    fmt_rate(a, sizeof a, ds_testbed_word_detect_rate(&tot, kind, k));
                    printf("%s=%s\n", ds_testbed_word_name(kind, k), a);
                }
            }
        if (objects_path) {
            ds_err e = {0};
            if (objs.oom) {
                fprintf(stderr, "diffscope testbed eval: --objects %s: out of memory\n", objects_path);
                rc = 1;
            } else if (ds_write_file_atomic(&e, objects_path, objs.s, objs.n) != DS_OK) {
                fprintf(stderr, "diffscope testbed eval: --objects: %s\n", e.msg);
                rc = 1;
            }
        }
        fmt_rate(a, sizeof a, ds_testbed_detect_rate(&tot));
        fmt_rate(b, sizeof b, ds_testbed_miou(&tot, 0, DS_TESTBED_SHAPE));
        fmt_rate(c, sizeof c, ds_testbed_miou(&tot, 1, DS_TESTBED_SHAPE));
        printf("testbed: detect=%s miou_gen=%s miou_real=%s\n", a, b, c);
        fflush(stdout);
    }
    free(objs.s);
    ds_capture_free(cap);
    ds_model_free(m);
    ds_context_free(ctx);
    prompts_free(&pl);
    return rc;
}

// ---- make ----------------------------------------------------------------------------------------

typedef struct make_progress {
    int quiet, is_tty;
} make_progress;

static int make_progress_fn(void* user, int done, int total) {
    make_progress* p = user;
    if (p->quiet || !p->is_tty) return 0;
    fprintf(stderr, "\rtestbed make: %d/%d", done, total);
    if (done == total) fputc('\n', stderr);
    return 0;
}

// The output folder: an existing writable folder, or a new one (its parent must exist and be writable).
static int prepare_dir(const char* dir, int* created) {
    *created = 0;
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) {
            fprintf(stderr, "diffscope testbed make: --out %s exists and is not a folder\n", dir);
            return 0;
        }
        if (access(dir, W_OK | X_OK) != 0) {
            fprintf(stderr, "diffscope testbed make: --out %s: cannot write into this folder (%s)\n", dir, strerror(errno));
            return 0;
        }
        return 1;
    }
    if (mkdir(dir, 0777) != 0) {
        fprintf(stderr, "diffscope testbed make: --out %s: cannot create the folder (%s)\n", dir, strerror(errno));
        return 0;
    }
    *created = 1;
    return 1;
}

static int cmd_testbed_make(int argc, char** argv) {
    const char* out = NULL;
    int n = 0, size = 64, first = 0, quiet = 0;
    const arg_spec specs[] = {
        {"n", ARG_INT, &n, "N", "scenes to write, >= 1", 1, 0, 1},
        {"out", ARG_STR, &out, "DIR", "folder to write into (created if missing; its parent must exist)", 1, 0, 1},
        {"size", ARG_INT, &size, "PX", "image side in pixels, 16..4096 (default 64, the default model's size)", 16, 4096, 0},
        {"first", ARG_INT, &first, "K", "start at held-out scene K (scene seeds 10^12 + K ...; default 0)", 1, 0, 0},
        {"quiet", ARG_FLAG, &quiet, NULL, "no progress or notes", 1, 0, 0},
    };
    const arg_command cmd = {"testbed make",
                             "Write held-out scenes of the scene world: scene_XXXX.png, scene_XXXX.txt (caption), "
                             "scene_XXXX_mask_K_<color>_<shape>.png and index.json.",
                             "--n N --out DIR [--size PX] [--first K]", specs, COUNT(specs)};
    int pr = args_parse(&cmd, argc, argv);
    if (pr) return pr > 0 ? 0 : 2;
    if (!check_count("make", n, 1)) return 2;
    if (!check_first("make", first)) return 2;
    if (!*out) {
        fprintf(stderr, "diffscope testbed make: --out needs a folder name\n");
        return 2;
    }
    int created = 0;
    if (!prepare_dir(out, &created)) return 2;
    make_progress mp = {quiet, isatty(2)};
    ds_err e = {0};
    double t0 = now_s();
    if (ds_testbed_make(&e, out, n, first, size, make_progress_fn, &mp) != DS_OK) {
        fprintf(stderr, "diffscope testbed make: %s\n", e.msg);
        if (created) rmdir(out);  // only succeeds when nothing was written
        return 1;
    }
    if (!quiet)
        fprintf(stderr, "testbed make: wrote %d scenes (%dx%d, seeds %llu..%llu) and index.json to %s in %.1f s\n", n, size,
                size, (unsigned long long)(DS_TESTBED_SEED0 + (uint64_t)first),
                (unsigned long long)(DS_TESTBED_SEED0 + (uint64_t)first + (uint64_t)n - 1), out, now_s() - t0);
    return 0;
}

// ---- dispatch ------------------------------------------------------------------------------------

static void testbed_usage(FILE* f) {
    fprintf(f, "usage: diffscope testbed eval [--model PATH] [--n N] [--seed S] [--per-word] [--quiet]\n"
               "       diffscope testbed make --n N --out DIR [--size PX] [--first K]\n\n"
               "The scene-world testbed (docs/testbed.md):\n"
               "  eval   score a model on held-out scene captions: detection rate of the named objects and DAAM\n"
               "         heatmap mIoU (tau 0.4) of the shape words on generated and on real scene images;\n"
               "         last line: testbed: detect=D miou_gen=G miou_real=R\n"
               "  make   write held-out scenes with captions and exact per-object masks\n\n"
               "diffscope testbed eval --help / make --help for the flags.\n");
}

int cmd_testbed(int argc, char** argv) {
    if (argc < 1) {
        testbed_usage(stderr);
        return 2;
    }
    if (!strcmp(argv[0], "--help") || !strcmp(argv[0], "-h") || !strcmp(argv[0], "help")) {
        testbed_usage(stdout);
        return 0;
    }
    if (!strcmp(argv[0], "eval")) return cmd_testbed_eval(argc - 1, argv + 1);
    if (!strcmp(argv[0], "make")) return cmd_testbed_make(argc - 1, argv + 1);
    fprintf(stderr, "diffscope testbed: unknown subcommand '%s' (expected eval or make)\n\n", argv[0]);
    testbed_usage(stderr);
    return 2;
}
