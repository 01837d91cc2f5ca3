// main.c — the `diffscope` command-line tool: subcommand dispatch and the core commands
// (generate, info, tokenize). Each command validates every flag before any heavy work.
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "cli.h"
#include "common.h"
#include "diffscope/diffscope.h"
#include "io.h"
#include "progress.h"
#include "tokenizer.h"

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

// ---- shared helpers ----------------------------------------------------------------------------

const char* cli_default_model(void) {
    static char buf[4096];
    const char* env = getenv("DIFFSCOPE_MODEL");
    if (env && *env) return env;
    char exe[2048];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char* dir = dirname(exe);
        const char* rel[] = {"/../models/default", "/../share/diffscope/models/default", "/models/default"};
        for (int i = 0; i < COUNT(rel); i++) {
            snprintf(buf, sizeof buf, "%s%s", dir, rel[i]);
            if (ds_is_dir(buf)) return buf;
        }
    }
    snprintf(buf, sizeof buf, "%s/models/default", DS_SOURCE_DIR);
    if (ds_is_dir(buf)) return buf;
    return NULL;
}

int cli_set_device(ds_context* ctx) {
    if (args_device || args_precision) {  // else $DIFFSCOPE_DEVICE / $DIFFSCOPE_PRECISION, else auto
        ds_precision prec = DS_PRECISION_DEFAULT;
        if (args_precision && !strcmp(args_precision, "fp32")) prec = DS_PRECISION_FP32;
        if (args_precision && !strcmp(args_precision, "fp16")) prec = DS_PRECISION_FP16;
        if (args_precision && !strcmp(args_precision, "bf16")) prec = DS_PRECISION_BF16;
        // fp16/bf16 exist only on the GPU: asking for them without --device asks for the GPU
        ds_device dev = prec == DS_PRECISION_FP16 || prec == DS_PRECISION_BF16 ? DS_DEVICE_CUDA : DS_DEVICE_AUTO;
        if (args_device && !strcmp(args_device, "auto")) dev = DS_DEVICE_AUTO;
        if (args_device && !strcmp(args_device, "cpu")) dev = DS_DEVICE_CPU;
        if (args_device && !strcmp(args_device, "cuda")) dev = DS_DEVICE_CUDA;
        if (ds_context_set_device(ctx, dev, prec) != DS_OK) {
            fprintf(stderr, "diffscope: %s\n", ds_last_error(ctx));
            return 2;
        }
    }
    return 0;
}

int cli_load_model(ds_context* ctx, const char* path, int quiet, ds_model** m) {
    if (!path) {
        path = cli_default_model();
        if (!path) {
            fprintf(stderr,
                    "diffscope: no --model given and the embedded default model (models/default/) is not "
                    "built yet; pass --model PATH, e.g. --model tests/fixtures/sd1_tiny\n");
            return 2;
        }
        if (!quiet) fprintf(stderr, "using the embedded default model %s\n", path);
    }
    if (cli_set_device(ctx) != 0) return 2;
    if (ds_model_load(ctx, path, m) != DS_OK) {
        fprintf(stderr, "diffscope: %s\n", ds_last_error(ctx));
        return 1;
    }
    const char* notice = ds_context_device_notice(ctx);
    if (notice && !quiet) fprintf(stderr, "diffscope: %s\n", notice);
    return 0;
}

float cli_guidance(ds_context* ctx, const ds_model* m, float g) {
    ds_model_info i;
    if (g >= 0) return g;
    return ds_model_get_info(ctx, m, &i) == DS_OK ? i.default_guidance : 7.5f;
}

int cli_check_writable_file(const char* cmd, const char* flag, const char* path) {
    char* copy = strdup(path);
    const char* dir = dirname(copy);
    int ok = access(dir, W_OK) == 0;
    if (!ok)
        fprintf(stderr, "diffscope %s: %s %s: cannot write into folder '%s' (%s)\n", cmd, flag, path, dir,
                strerror(errno));
    free(copy);
    if (ok && ds_is_dir(path)) {
        fprintf(stderr, "diffscope %s: %s %s is a folder, expected a file name\n", cmd, flag, path);
        ok = 0;
    }
    return ok;
}

int cli_start_step_for_timestep(ds_context* ctx, const ds_model* m, ds_sampler sampler, int steps,
                                float t, const char* cmd, int* start_step) {
    float ts[1024];
    int n = 0;
    if (ds_model_timesteps(ctx, m, sampler, steps, ts, 1024, &n) != DS_OK) {
        fprintf(stderr, "diffscope %s: --timestep: %s\n", cmd, ds_last_error(ctx));
        return 1;
    }
    for (int i = 0; i < n && i < 1024; i++)
        if (ts[i] <= t) {
            *start_step = i;
            return 0;
        }
    fprintf(stderr, "diffscope %s: --timestep %g is below the last timestep of this schedule (%g)\n", cmd, t,
            n > 0 ? ts[n - 1] : 0.0);
    return 1;
}

int cli_parse_sampler(const char* s, ds_sampler* out) {
    static const struct { const char* name; ds_sampler v; } k[] = {
        {"default", DS_SAMPLER_DEFAULT}, {"ddim", DS_SAMPLER_DDIM}, {"euler", DS_SAMPLER_EULER},
        {"euler_a", DS_SAMPLER_EULER_A}, {"dpmpp_2m", DS_SAMPLER_DPMPP_2M}, {"pndm", DS_SAMPLER_PNDM}};
    for (int i = 0; i < COUNT(k); i++)
        if (strcmp(s, k[i].name) == 0) { *out = k[i].v; return 1; }
    return 0;
}

// ---- generate ----------------------------------------------------------------------------------

static int cmd_generate(int argc, char** argv) {
    const char *model = NULL, *prompt = NULL, *negative = "", *sampler = "default", *out = NULL,
               *latents = NULL, *save_latents = NULL, *image = NULL;
    int steps = 20, width = 0, height = 0, quiet = 0, clip_skip = 0, start_step = -1, inversion = 0;
    float guidance = -1.0f, strength = 0.8f, timestep = -1;
    uint64_t seed = 0;
    const arg_spec specs[] = {
        {"model", ARG_STR, &model, "PATH", "diffusers folder or single-file .safetensors (default: the embedded model)", 1, 0, 0},
        {"prompt", ARG_STR, &prompt, "TEXT", "what to generate", 1, 0, 1},
        {"negative", ARG_STR, &negative, "TEXT", "negative prompt (default empty)", 1, 0, 0},
        {"steps", ARG_INT, &steps, "N", "denoising steps, 1..1000 (default 20)", 1, 1000, 0},
        {"guidance", ARG_FLOAT, &guidance, "F", "classifier-free guidance scale, 0..100; <= 1 disables CFG (default: the model's recommendation; 7.5 for SD, 2 for the embedded model)", 0, 100, 0},
        {"seed", ARG_U64, &seed, "N", "seed, same latents as torch.Generator('cpu').manual_seed(N) (default 0)", 1, 0, 0},
        {"sampler", ARG_STR, &sampler, "NAME", "default|ddim|euler|euler_a|dpmpp_2m|pndm (default: the model's scheduler)", 1, 0, 0},
        {"width", ARG_INT, &width, "W", "image width in pixels (default: the model's native size)", 8, 16384, 0},
        {"height", ARG_INT, &height, "H", "image height in pixels", 8, 16384, 0},
        {"clip-skip", ARG_INT, &clip_skip, "N", "use the text encoder's output N-1 layers early (0/1 = the model's default)", 0, 12, 0},
        {"latents", ARG_STR, &latents, "FILE.npy", "start from these latents (1, C, h, w) instead of seeded noise", 1, 0, 0},
        {"save-latents", ARG_STR, &save_latents, "FILE.npy", "also write the final latents (1, C, h, w) as .npy", 1, 0, 0},
        {"image", ARG_STR, &image, "FILE", "start from this PNG/JPEG (image-to-image; its size is the output size)", 1, 0, 0},
        {"strength", ARG_FLOAT, &strength, "F", "with --image: fraction of the schedule re-run, 0..1 (default 0.8)", 0, 1, 0},
        {"start-step", ARG_INT, &start_step, "N", "with --image: start at scheduler call N instead of --strength", 0, 1000, 0},
        {"timestep", ARG_FLOAT, &timestep, "T", "with --image: start at the first scheduler call with timestep <= T (0..1000)", 0, 1000, 0},
        {"ddim-inversion", ARG_FLAG, &inversion, NULL, "with --image: reach the start by DDIM inversion instead of seeded noise", 1, 0, 0},
        {"out", ARG_STR, &out, "FILE.png", "where to write the image", 1, 0, 1},
        {"quiet", ARG_FLAG, &quiet, NULL, "no progress output", 1, 0, 0},
    };
    const arg_command cmd = {"generate", "Generate an image from a prompt.", "--prompt TEXT --out FILE.png [options]", specs, COUNT(specs)};
    int pr = args_parse(&cmd, argc, argv);
    if (pr) return pr > 0 ? 0 : 2;
    ds_generate_params p;
    ds_generate_params_init(&p);
    if (!cli_parse_sampler(sampler, &p.sampler)) {
        fprintf(stderr, "diffscope generate: --sampler expects one of default, ddim, euler, euler_a, dpmpp_2m, pndm; got '%s'\n", sampler);
        return 2;
    }
    if ((width == 0) != (height == 0)) {
        fprintf(stderr, "diffscope generate: give both --width and --height, or neither\n");
        return 2;
    }
    if (!cli_check_writable_file("generate", "--out", out)) return 2;
    if (save_latents && !cli_check_writable_file("generate", "--save-latents", save_latents)) return 2;
    if (model && strcmp(model, out) == 0) {
        fprintf(stderr, "diffscope generate: --out %s is the input model; refusing to overwrite it\n", out);
        return 2;
    }
    if (!image && (start_step >= 0 || inversion || timestep >= 0)) {
        fprintf(stderr, "diffscope generate: --start-step, --timestep and --ddim-inversion need --image\n");
        return 2;
    }
    if (start_step >= 0 && timestep >= 0) {
        fprintf(stderr, "diffscope generate: give --start-step or --timestep, not both\n");
        return 2;
    }
    if (image && latents) {
        fprintf(stderr, "diffscope generate: give --image or --latents, not both\n");
        return 2;
    }
    ds_err e = {0};
    uint8_t* pixels = NULL;
    int iw = 0, ih = 0;
    if (image) {
        if (ds_image_load_rgb(&e, image, &pixels, &iw, &ih) != DS_OK) {
            fprintf(stderr, "diffscope generate: --image: %s\n", e.msg);
            return 2;
        }
        if ((width && width != iw) || (height && height != ih)) {
            fprintf(stderr, "diffscope generate: --image %s is %dx%d but --width/--height ask for %dx%d\n", image, iw, ih, width, height);
            free(pixels);
            return 2;
        }
        width = iw;
        height = ih;
    }
    float* init = NULL;
    if (latents) {
        int nd;
        int64_t sh[8];
        if (ds_npy_read(&e, latents, &init, &nd, sh) != DS_OK) {
            fprintf(stderr, "diffscope generate: --latents: %s\n", e.msg);
            return 2;
        }
        if (nd == 3) { sh[3] = sh[2]; sh[2] = sh[1]; sh[1] = sh[0]; sh[0] = 1; nd = 4; }
        if (nd != 4 || sh[0] != 1) {
            fprintf(stderr, "diffscope generate: --latents %s: expected shape (1, C, h, w), got %d dims\n", latents, nd);
            free(init);
            return 2;
        }
        memcpy(p.init_latents_shape, sh, sizeof p.init_latents_shape);
        p.init_latents = init;
    }
    ds_context* ctx = ds_context_create();
    ds_model* m = NULL;
    int rc = cli_load_model(ctx, model, quiet, &m);
    if (rc) { free(init); free(pixels); ds_context_free(ctx); return rc; }
    guidance = cli_guidance(ctx, m, guidance);
    if (timestep >= 0 && cli_start_step_for_timestep(ctx, m, p.sampler, steps, timestep, "generate", &start_step)) {
        free(init); free(pixels); ds_model_free(m); ds_context_free(ctx);
        return 2;
    }
    ds_model_info info;
    ds_model_get_info(ctx, m, &info);
    int lw = (width ? width : info.unet_sample_size * info.vae_scale_factor) / info.vae_scale_factor;
    int lh = (height ? height : info.unet_sample_size * info.vae_scale_factor) / info.vae_scale_factor;
    float* final_latents = save_latents ? calloc((size_t)info.latent_channels * (size_t)lw * (size_t)lh, sizeof(float)) : NULL;
    progress prog;
    progress_init(&prog, "generate", quiet);
    p.prompt = prompt;
    p.negative_prompt = negative;
    p.steps = steps;
    p.guidance = guidance;
    p.seed = seed;
    p.width = width;
    p.height = height;
    p.clip_skip = clip_skip;
    p.progress = progress_update;
    p.progress_user = &prog;
    p.out_latents = final_latents;
    p.init_image = pixels;
    p.init_image_width = iw;
    p.init_image_height = ih;
    p.strength = strength;
    p.start_step = start_step;
    p.ddim_inversion = inversion;
    ds_image img = {0};
    if (ds_generate(ctx, m, &p, &img) != DS_OK) {
        fprintf(stderr, "diffscope generate: %s\n", ds_last_error(ctx));
        rc = 1;
    } else if (ds_image_write_png(ctx, &img, out) != DS_OK) {
        fprintf(stderr, "diffscope generate: %s\n", ds_last_error(ctx));
        rc = 1;
    } else {
        if (save_latents) {
            int64_t sh[4] = {1, info.latent_channels, img.height / info.vae_scale_factor, img.width / info.vae_scale_factor};
            if (ds_npy_write(&e, save_latents, final_latents, 4, sh) != DS_OK) {
                fprintf(stderr, "diffscope generate: %s\n", e.msg);
                rc = 1;
            }
        }
        if (!rc) progress_note(&prog, "wrote %s (%dx%d)", out, img.width, img.height);
    }
    ds_image_free(&img);
    free(final_latents);
    free(init);
    free(pixels);
    ds_model_free(m);
    ds_context_free(ctx);
    return rc;
}

// ---- info --------------------------------------------------------------------------------------

static int cmd_info(int argc, char** argv) {
    const char* model = NULL;
    int quiet = 0;
    const arg_spec specs[] = {
        {"model", ARG_STR, &model, "PATH", "diffusers folder or single-file .safetensors (default: the embedded model)", 1, 0, 0},
        {"quiet", ARG_FLAG, &quiet, NULL, "no notices on stderr", 1, 0, 0},
    };
    const arg_command cmd = {"info", "Show a model's detected architecture, dtypes and parameter counts.", "[--model PATH]", specs, COUNT(specs)};
    int pr = args_parse(&cmd, argc, argv);
    if (pr) return pr > 0 ? 0 : 2;
    ds_context* ctx = ds_context_create();
    ds_model* m = NULL;
    int rc = cli_load_model(ctx, model, quiet, &m);
    if (rc) { ds_context_free(ctx); return rc; }
    ds_model_info i;
    ds_model_get_info(ctx, m, &i);
    printf("architecture:        %s\n", i.arch_name);
    printf("format:              %s\n", i.source_format);
    printf("weights dtype:       %s\n", i.weight_dtype);
    printf("device:              %s (%s)\n", i.device, i.precision);
    printf("guidance (default):  %g\n", i.default_guidance);
    printf("prediction type:     %s\n", i.prediction_type);
    printf("default sampler:     %s\n", i.default_sampler);
    printf("text encoder:        %lld parameters, %d layers, hidden %d\n", (long long)i.params_text_encoder, i.text_layers, i.text_hidden);
    printf("unet:                %lld parameters, cross-attention dim %d, sample size %d\n", (long long)i.params_unet, i.cross_attention_dim, i.unet_sample_size);
    printf("vae:                 %lld parameters, %d latent channels, scale factor %d\n", (long long)i.params_vae, i.latent_channels, i.vae_scale_factor);
    printf("native image size:   %dx%d\n", i.unet_sample_size * i.vae_scale_factor, i.unet_sample_size * i.vae_scale_factor);
    ds_model_free(m);
    ds_context_free(ctx);
    return 0;
}

// ---- tokenize ----------------------------------------------------------------------------------

static int cmd_tokenize(int argc, char** argv) {
    const char *prompt = NULL, *arch = "sd1";
    int pad = -1, full = 0;
    const arg_spec specs[] = {
        {"prompt", ARG_STR, &prompt, "TEXT", "the text to tokenize", 1, 0, 1},
        {"arch", ARG_STR, &arch, "sd1|sd2", "tokenizer flavour: sd1 (pads with 49407) or sd2 (pads with '!' = 0, and every '!' is id 0)", 1, 0, 0},
        {"pad-id", ARG_INT, &pad, "ID", "override the pad id of the 77-position chunks", 0, 49407, 0},
        {"full", ARG_FLAG, &full, NULL, "print the padded 77-position chunks too", 1, 0, 0},
    };
    const arg_command cmd = {"tokenize", "Show the CLIP BPE tokens (ids and pieces) of a prompt.", "--prompt TEXT [--full]", specs, COUNT(specs)};
    int pr = args_parse(&cmd, argc, argv);
    if (pr) return pr > 0 ? 0 : 2;
    if (strcmp(arch, "sd1") && strcmp(arch, "sd2")) {
        fprintf(stderr, "diffscope tokenize: --arch expects sd1 or sd2, got '%s'\n", arch);
        return 2;
    }
    ds_err e = {0};
    ds_tokenizer* t = NULL;
    int32_t* ids = NULL;
    int n = 0;
    if (ds_tokenizer_create_flavor(&e, strcmp(arch, "sd2") == 0 ? DS_TOKENIZER_SD2 : DS_TOKENIZER_SD1, &t) != DS_OK || ds_tokenizer_encode(t, &e, prompt, &ids, &n) != DS_OK) {
        fprintf(stderr, "diffscope tokenize: %s\n", e.msg);
        ds_tokenizer_free(t);
        return 1;
    }
    printf("%d tokens (+ BOS/EOS)\n", n);
    printf("%6s  %s\n", "id", "piece");
    for (int i = 0; i < n; i++) printf("%6d  %s\n", ids[i], ds_tokenizer_piece(t, ids[i]));
    if (full) {
        int32_t* chunks = NULL;
        int nc = 0, dropped = 0;
        if (ds_tokenizer_encode_chunks(t, &e, prompt, pad, 0, &chunks, &nc, &dropped) != DS_OK) {
            fprintf(stderr, "diffscope tokenize: %s\n", e.msg);
        } else {
            for (int c = 0; c < nc; c++) {
                printf("chunk %d:", c);
                for (int k = 0; k < 77; k++) printf(" %d", chunks[c * 77 + k]);
                printf("\n");
            }
            free(chunks);
        }
    }
    free(ids);
    ds_tokenizer_free(t);
    return 0;
}

// ---- dispatch ----------------------------------------------------------------------------------

typedef struct { const char* name; int (*fn)(int, char**); const char* summary; } command;
int cmd_heatmap(int argc, char** argv);    // cmd_heatmap.c
int cmd_eval_maps(int argc, char** argv);  // cmd_eval_maps.c
int cmd_erase(int argc, char** argv);      // cmd_edit.c
int cmd_edit(int argc, char** argv);       // cmd_edit.c
int cmd_prune(int argc, char** argv);      // cmd_edit.c
int cmd_apply(int argc, char** argv);      // cmd_edit.c
int cmd_testbed(int argc, char** argv);    // cmd_testbed.c
int cmd_localize(int argc, char** argv);   // cmd_localize.c
int cmd_bench(int argc, char** argv);      // cmd_bench.c
static const command kCommands[] = {
    {"generate", cmd_generate, "generate an image from a prompt"},
    {"info", cmd_info, "show a model's architecture, dtypes and parameter counts"},
    {"tokenize", cmd_tokenize, "show the CLIP tokens of a prompt"},
    {"heatmap", cmd_heatmap, "generate with cross-attention heatmaps per word (overlays, masks, report.html)"},
    {"eval-maps", cmd_eval_maps, "score heatmaps against ground-truth masks (IoU, mIoU, tau sweep)"},
    {"erase", cmd_erase, "erase concepts with UCE (closed-form cross-attention edit)"},
    {"edit", cmd_edit, "edit an assumption with TIME (--from TEXT --to TEXT)"},
    {"prune", cmd_prune, "zero localized FFN neurons (ConceptPrune neurons.json)"},
    {"apply", cmd_apply, "apply a delta file to a model"},
    {"testbed", cmd_testbed, "scene-world testbed: detection rate and heatmap mIoU (eval), held-out scenes (make)"},
    {"localize", cmd_localize, "localize a concept: FFN neurons (ConceptPrune), layers, heads, timesteps"},
    {"bench", cmd_bench, "time generation steps on the chosen device (ms/step, it/s, capture overhead, GPU memory)"},
};

static void usage(FILE* f) {
    fprintf(f, "diffscope %s — Stable Diffusion on its own kernels, opened up for interpretability\n\n"
               "usage: diffscope COMMAND [options]   (diffscope COMMAND --help for a command's flags)\n\ncommands:\n",
            ds_version());
    for (int i = 0; i < COUNT(kCommands); i++) fprintf(f, "  %-10s %s\n", kCommands[i].name, kCommands[i].summary);
    fprintf(f, "\nWithout --model the embedded default model is used (or $DIFFSCOPE_MODEL).\n");
}

int main(int argc, char** argv) {
    if (argc < 2) { usage(stderr); return 2; }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) { usage(stdout); return 0; }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) { printf("diffscope %s\n", ds_version()); return 0; }
    for (int i = 0; i < COUNT(kCommands); i++)
        if (strcmp(argv[1], kCommands[i].name) == 0) return kCommands[i].fn(argc - 2, argv + 2);
    fprintf(stderr, "diffscope: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
