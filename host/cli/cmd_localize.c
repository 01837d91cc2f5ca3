// cmd_localize.c — `diffscope localize`: where a concept lives in the UNet (docs/localization.md).
//
// Runs host/localize.h's ds_localize on prompt sets built around the concept (or given in files) and writes the
// run's folder with localize_out.c: neurons.json (what `diffscope prune --neurons` reads), neurons.csv,
// neuron_norms.npy and neurons.png (ConceptPrune); layers.csv/png (LocoGen windows); heads.csv/png (ablations and
// concept attention mass); timesteps.csv/png; prompts.csv (every prompt's own numbers); summary.json with
// everything. Every flag, both prompt files and the output folder are checked before the model is loaded; the
// concept is checked against every prompt before the first generation.
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "args.h"
#include "cli.h"
#include "common.h"
#include "detect.h"
#include "diffscope/diffscope.h"
#include "io.h"
#include "localize.h"
#include "localize_out.h"
#include "progress.h"
#include "scenes.h"

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

static int fail(int rc, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("diffscope localize: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return rc;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// ---- prompts files --------------------------------------------------------------------------------

typedef struct plist {
    char* text;
    char** v;
    int n;
    int owned;  // v[i] malloc'd (templates)
} plist;

static void plist_free(plist* p) {
    if (p->owned)
        for (int i = 0; i < p->n; i++) free(p->v[i]);
    free(p->v);
    free(p->text);
    memset(p, 0, sizeof *p);
}

static char* trim(char* p) {
    while (*p == ' ' || *p == '\t') p++;
    char* e = p + strlen(p);
    while (e > p && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n')) *--e = 0;
    return p;
}

// One prompt a line; blank lines and lines starting with '#' are skipped.
static int read_prompts(const char* flag, const char* path, plist* out) {
    memset(out, 0, sizeof *out);
    ds_err e = {0};
    size_t len = 0;
    if (ds_read_file(&e, path, &out->text, &len) != DS_OK) return fail(2, "%s: %s", flag, e.msg);
    if (memchr(out->text, 0, len)) {
        plist_free(out);
        return fail(2, "%s: %s: not a text file (it contains NUL bytes)", flag, path);
    }
    int cap = 16;
    out->v = malloc(sizeof(char*) * (size_t)cap);
    char* save = NULL;
    for (char* line = out->text; line; line = save) {
        char* nl = strchr(line, '\n');
        save = nl ? nl + 1 : NULL;
        if (nl) *nl = 0;
        line = trim(line);
        if (!*line || *line == '#') continue;
        if (out->n == cap) {
            cap *= 2;
            char** nv = realloc(out->v, sizeof(char*) * (size_t)cap);
            if (!nv) { plist_free(out); return fail(1, "out of memory"); }
            out->v = nv;
        }
        out->v[out->n++] = line;
    }
    if (!out->n) {
        plist_free(out);
        return fail(2, "%s: %s: no prompts in the file (one a line; '#' starts a comment)", flag, path);
    }
    return 0;
}

// ---- output folder ----------------------------------------------------------------------------------

static int make_out_dir(const char* path) {
    char why[4200];
    char* created = NULL;
    if (!ds_make_dirs(path, &created, why, sizeof why) || !ds_dir_writable(path, why, sizeof why)) {
        free(created);
        return fail(2, "--out %s: %s", path, why);
    }
    free(created);
    return 0;
}

// ---- the scene-world detector (detect.h) --------------------------------------------------------------

// A concept "red circle" is that object; a single colour or shape word ("red") is every object of the
// prompt that word describes ("a red star and a blue ring" → the red star), so the presence is the share of
// them the detector still finds.
typedef struct shapes_det {
    ds_scene_query objs[8];
    int n;
    int word_kind;   // -1: the objects above; 0: a colour word, 1: a shape word
    int word_index;
} shapes_det;

static int shapes_word(const char* concept, int* kind, int* index) {
    for (int i = 0; i < DS_SCENE_N_COLORS; i++)
        if (!strcasecmp(concept, ds_scene_color_names[i])) { *kind = 0; *index = i; return 1; }
    for (int i = 0; i < DS_SCENE_N_SHAPES; i++)
        if (!strcasecmp(concept, ds_scene_shape_names[i])) { *kind = 1; *index = i; return 1; }
    return 0;
}

static int shapes_detect(void* user, const uint8_t* rgb, int w, int h, const char* prompt, const char* concept,
                         float* presence) {
    (void)concept;
    shapes_det* d = user;
    ds_scene_query objs[8];
    int n = d->n;
    memcpy(objs, d->objs, sizeof objs);
    if (d->word_kind >= 0) {
        ds_scene_query all[8];
        int bg = -1, na = ds_scene_parse_caption(prompt, all, 8, &bg);
        n = 0;
        for (int i = 0; i < na; i++)
            if ((d->word_kind == 0 ? all[i].color : all[i].shape) == d->word_index) objs[n++] = all[i];
    }
    if (n == 0) {
        *presence = 0.0f;  // the prompt does not name it: nothing to lose
        return DS_OK;
    }
    ds_err e = {0};
    ds_detection det;
    int rc = ds_detect_analyze(&e, rgb, w, h, &det);
    if (rc) return rc;
    ds_detect_match match[8];
    ds_detect_match_objects(&det, objs, n, match);
    int found = 0;
    for (int i = 0; i < n; i++) found += match[i].found;
    ds_detection_free(&det);
    *presence = (float)found / (float)n;
    return DS_OK;
}

// ---- progress -----------------------------------------------------------------------------------------

typedef struct prog_state {
    progress bar;
    double t0;
    int last_pct;
} prog_state;

static int on_progress(void* user, int done, int total, const char* what) {
    prog_state* ps = user;
    if (ps->bar.quiet) return 0;
    int pct = total ? 100 * done / total : 100;
    if (!ps->bar.is_tty && done < total && pct / 10 == ps->last_pct / 10) return 0;
    ps->last_pct = pct;
    return progress_update(&ps->bar, done, total, now_s() - ps->t0);
}

static void on_log(void* user, const char* msg) {
    if (!*(int*)user) fprintf(stderr, "localize: %s\n", msg);
}

static int parse_parts(const char* s, int* out) {
    *out = 0;
    char* copy = strdup(s);
    int ok = 1;
    for (char* tok = strtok(copy, ","); tok && ok; tok = strtok(NULL, ",")) {
        tok = trim(tok);
        if (!strcmp(tok, "all")) *out |= DS_LOC_ALL;
        else if (!strcmp(tok, "neurons")) *out |= DS_LOC_NEURONS;
        else if (!strcmp(tok, "layers")) *out |= DS_LOC_LAYERS;
        else if (!strcmp(tok, "heads")) *out |= DS_LOC_HEADS;
        else if (!strcmp(tok, "timesteps")) *out |= DS_LOC_TIMESTEPS;
        else ok = 0;
    }
    free(copy);
    return ok && *out;
}

// ---- the command --------------------------------------------------------------------------------------

int cmd_localize(int argc, char** argv) {
    const char *model = NULL, *concept_arg = NULL, *kind = "object", *with_file = NULL, *without_file = NULL,
               *neutral = NULL, *negative = "", *parts_s = "all", *sampler = "default", *rank_by = "auto",
               *detector = "none", *out = NULL, *head_layers = NULL;
    int per_side = 10, steps = 20, width = 0, height = 0, tau = 0, window = 0, tw = 0, head_prompts = 2, quiet = 0;
    float guidance = -1.0f, ratio = -1.0f, union_min = 0.0f;
    uint64_t seed = 0;
    int seed_per_prompt = 0;
    const arg_spec specs[] = {
        {"model", ARG_STR, &model, "PATH", "diffusers folder or single-file .safetensors (default: the embedded model)", 1, 0, 0},
        {"concept", ARG_STR, &concept_arg, "TEXT", "the concept to localize (a word or phrase of the prompts)", 1, 0, 1},
        {"kind", ARG_STR, &kind, "object|style", "prompt templates and default ratio: object (0.02) or style (0.01) (default object)", 1, 0, 0},
        {"with", ARG_STR, &with_file, "FILE", "prompts with the concept, one a line (default: templates around the concept)", 1, 0, 0},
        {"without", ARG_STR, &without_file, "FILE", "base prompts without it, one a line (default: the templates without the concept)", 1, 0, 0},
        {"neutral", ARG_STR, &neutral, "TEXT", "LocoGen's neutral prompt for every window (default: each concept prompt's base prompt)", 1, 0, 0},
        {"negative", ARG_STR, &negative, "TEXT", "negative prompt of every generation (default empty)", 1, 0, 0},
        {"prompts-per-side", ARG_INT, &per_side, "N", "template prompts per side, 1..20 (default 10)", 1, DS_LOC_MAX_TEMPLATES, 0},
        {"parts", ARG_STR, &parts_s, "LIST", "neurons,layers,heads,timesteps or all (default all)", 1, 0, 0},
        {"steps", ARG_INT, &steps, "N", "denoising steps of every generation, 1..1000 (default 20)", 1, 1000, 0},
        {"guidance", ARG_FLOAT, &guidance, "F", "classifier-free guidance scale (default: the model's recommendation; 7.5 for SD, 2 for the embedded model)", 0, 100, 0},
        {"seed", ARG_U64, &seed, "N", "seed of every generation (default 0)", 1, 0, 0},
        {"seed-per-prompt", ARG_FLAG, &seed_per_prompt, NULL, "prompt i of each side starts from seed + i (its interventions too): rankings average over the starting noise", 1, 0, 0},
        {"sampler", ARG_STR, &sampler, "NAME", "default|ddim|euler|euler_a|dpmpp_2m|pndm", 1, 0, 0},
        {"width", ARG_INT, &width, "W", "image width (default: the model's native size)", 8, 16384, 0},
        {"height", ARG_INT, &height, "H", "image height", 8, 16384, 0},
        {"ratio", ARG_FLOAT, &ratio, "F", "neurons: top ratio x F columns per output row, (0, 1] (default 0.02 objects, 0.01 styles)", 0, 1, 0},
        {"tau", ARG_INT, &tau, "N", "neurons: union over the first N UNet calls, 1..255 (default: 20% of the calls)", 1, 255, 0},
        {"union-min", ARG_FLOAT, &union_min, "F", "neurons: keep entries selected at more than F x tau of those calls, [0, 1) (default 0: union)", 0, 0.999999, 0},
        {"window", ARG_INT, &window, "N", "layers: attn2 layers per LocoGen window (default max(1, round(3·L/16)) of the model's L: 3 on SD1.x)", 1, 1000, 0},
        {"timestep-window", ARG_INT, &tw, "N", "timesteps: UNet calls per window (default: a fifth of the calls)", 1, 1000, 0},
        {"head-prompts", ARG_INT, &head_prompts, "N", "heads: concept prompts used for the ablations, 0 = all (default 2)", 0, 100000, 0},
        {"head-layers", ARG_STR, &head_layers, "LIST", "heads: ablate only these attn2 layers' heads: path prefixes (up_blocks.1) or labels (u1, u1.a0.t0)", 1, 0, 0},
        {"rank-by", ARG_STR, &rank_by, "METRIC", "auto|mass|image|detector (auto: detector when given, else mass)", 1, 0, 0},
        {"detector", ARG_STR, &detector, "NAME", "none|shapes (shapes: the scene-world detector, for concepts like 'red circle', 'red' or 'circle')", 1, 0, 0},
        {"out", ARG_STR, &out, "DIR", "output folder (created; files in it are replaced)", 1, 0, 1},
        {"quiet", ARG_FLAG, &quiet, NULL, "no progress output", 1, 0, 0},
    };
    const arg_command cmd = {"localize", "Localize a concept: FFN neurons (ConceptPrune), layers (LocoGen), heads, timesteps.",
                             "--concept TEXT --out DIR [--with FILE --without FILE] [options]", specs, COUNT(specs)};
    int pr = args_parse(&cmd, argc, argv);
    if (pr) return pr > 0 ? 0 : 2;

    // ---- flags
    char* concept = strdup(concept_arg);
    char* c = trim(concept);
    if (!*c) { free(concept); return fail(2, "--concept is empty: give the word or phrase to localize"); }
    memmove(concept, c, strlen(c) + 1);
    int rc = 0;
    int parts = 0, k_style = 0, rb = DS_LOC_RANK_AUTO;
    ds_sampler smp = DS_SAMPLER_DEFAULT;
    shapes_det det = {0};
    if (!parse_parts(parts_s, &parts))
        rc = fail(2, "--parts expects a comma-separated list of neurons, layers, heads, timesteps or all; got '%s'", parts_s);
    else if (strcmp(kind, "object") && strcmp(kind, "style"))
        rc = fail(2, "--kind expects object or style; got '%s'", kind);
    else if (!cli_parse_sampler(sampler, &smp))
        rc = fail(2, "--sampler expects one of default, ddim, euler, euler_a, dpmpp_2m, pndm; got '%s'", sampler);
    else if ((width == 0) != (height == 0))
        rc = fail(2, "give both --width and --height, or neither");
    else if (strcmp(rank_by, "auto") && strcmp(rank_by, "mass") && strcmp(rank_by, "image") && strcmp(rank_by, "detector"))
        rc = fail(2, "--rank-by expects auto, mass, image or detector; got '%s'", rank_by);
    else if (strcmp(detector, "none") && strcmp(detector, "shapes"))
        rc = fail(2, "--detector expects none or shapes; got '%s'", detector);
    else if (!strcmp(rank_by, "detector") && !strcmp(detector, "none"))
        rc = fail(2, "--rank-by detector needs --detector");
    else if (ratio == 0.0f)
        rc = fail(2, "--ratio must be > 0");
    if (rc) { free(concept); return rc; }
    k_style = !strcmp(kind, "style");
    rb = !strcmp(rank_by, "mass") ? DS_LOC_RANK_MASS : !strcmp(rank_by, "image") ? DS_LOC_RANK_IMAGE
       : !strcmp(rank_by, "detector") ? DS_LOC_RANK_DETECTOR : DS_LOC_RANK_AUTO;
    det.word_kind = -1;
    if (!strcmp(detector, "shapes") && shapes_word(concept, &det.word_kind, &det.word_index)) {
        // a single colour or shape word: the prompts' own objects with that word
    } else if (!strcmp(detector, "shapes")) {
        char* cap = malloc(strlen(concept) + 4);
        sprintf(cap, "a %s", concept);
        int bg = -1;
        det.n = ds_scene_parse_caption(cap, det.objs, COUNT(det.objs), &bg);
        free(cap);
        if (det.n < 1) {
            free(concept);
            return fail(2, "--detector shapes: the concept '%s' names no scene-world object (a colour and a shape, e.g. 'red circle', or one colour or shape word)",
                        concept_arg);
        }
    }
    // ---- prompts
    plist with = {0}, without = {0};
    if (with_file && (rc = read_prompts("--with", with_file, &with))) { free(concept); return rc; }
    if (without_file && (rc = read_prompts("--without", without_file, &without))) {
        plist_free(&with);
        free(concept);
        return rc;
    }
    if (!with_file || !without_file) {
        ds_err e = {0};
        char **tw_ = NULL, **two = NULL;
        if (ds_loc_templates(&e, concept, k_style ? DS_LOC_KIND_STYLE : DS_LOC_KIND_OBJECT, per_side, &tw_, &two) != DS_OK) {
            plist_free(&with);
            plist_free(&without);
            free(concept);
            return fail(2, "%s", e.msg);
        }
        if (!with_file) { with.v = tw_; with.n = per_side; with.owned = 1; }
        else { for (int i = 0; i < per_side; i++) free(tw_[i]); free(tw_); }
        if (!without_file) { without.v = two; without.n = per_side; without.owned = 1; }
        else { for (int i = 0; i < per_side; i++) free(two[i]); free(two); }
    }
    // ---- output folder
    if ((rc = make_out_dir(out))) {
        plist_free(&with);
        plist_free(&without);
        free(concept);
        return rc;
    }

    // ---- run
    ds_context* ctx = ds_context_create();
    ds_model* m = NULL;
    rc = cli_load_model(ctx, model, quiet, &m);
    if (rc) {
        plist_free(&with);
        plist_free(&without);
        free(concept);
        ds_context_free(ctx);
        return rc;
    }
    ds_model_info info;
    ds_model_get_info(ctx, m, &info);
    ds_loc_params p;
    ds_loc_params_init(&p);
    p.concept = concept;
    p.with = (const char* const*)with.v;
    p.n_with = with.n;
    p.without = (const char* const*)without.v;
    p.n_without = without.n;
    const char* neutral_v[1] = {neutral};
    if (neutral) {
        p.neutral = neutral_v;
        p.n_neutral = 1;
    }
    p.negative = negative;
    p.parts = parts;
    p.steps = steps;
    p.guidance = cli_guidance(ctx, m, guidance);
    p.seed = seed;
    p.seed_per_prompt = seed_per_prompt;
    p.sampler = smp;
    p.width = width;
    p.height = height;
    p.ratio = ratio > 0 ? ratio : (k_style ? 0.01 : 0.02);
    p.tau = tau;
    p.union_min = union_min;
    p.window = window;
    p.timestep_window = tw;
    p.head_prompts = head_prompts;
    p.head_layers = head_layers;
    p.rank_by = rb;
    if (det.n || det.word_kind >= 0) {
        p.detector = shapes_detect;
        p.detector_user = &det;
    }
    p.log = on_log;
    p.log_user = &quiet;
    prog_state ps = {.t0 = now_s(), .last_pct = -100};
    progress_init(&ps.bar, "localize", quiet);
    p.progress = on_progress;
    p.progress_user = &ps;
    ds_loc_result r;
    if (ds_localize(ctx, m, &p, &r) != DS_OK) {
        const char* msg = ds_last_error(ctx);
        rc = fail(1, "%s", strncmp(msg, "localize: ", 10) ? msg : msg + 10);
    } else {
        loc_out o = {.dir = out, .r = &r, .p = &p, .model = model ? model : "(embedded default)", .arch = info.arch_name,
                  .kind = kind, .detector = (det.n || det.word_kind >= 0) ? "shapes" : NULL};
        int nf = 0;
        if (!rc) rc = loc_write_all(&o, &nf);
        if (rc) rc = fail(1, "%s", o.e.msg);
        else {
            // the report on stdout
            printf("concept '%s' (%s) in %s: %d generations in %.1f s, %d UNet calls each\n", concept, kind,
                   o.model, r.runs, r.seconds, r.n_calls);
            if (r.has_neurons) {
                int64_t total = 0;
                int nb = 0;
                for (int b = 0; b < r.sites.n_ffn; b++) {
                    total += r.neurons.kept[b];
                    nb += r.neurons.kept[b] > 0;
                }
                printf("neurons: %lld (row, neuron) pairs in %d of %d blocks (ratio %g, union over the first %d calls) -> %s/neurons.json\n",
                       (long long)total, nb, r.sites.n_ffn, p.ratio, r.tau, out);
                if (!total)
                    fprintf(stderr, "diffscope localize: warning: no neuron passed S(concept) > S(base); neurons.json lists no block "
                                    "(prune would refuse it)\n");
            }
            const ds_loc_score* sets[3] = {r.windows, r.heads, r.tsteps};
            int ns[3] = {r.n_windows, r.n_heads, r.n_tsteps};
            const char* names[3] = {"layer windows", "heads", "timestep windows"};
            for (int si = 0; si < 3; si++) {
                if (!ns[si]) continue;
                printf("%s (by %s):\n", names[si], loc_metric_name(&r));
                for (int rk = 1; rk <= (ns[si] < 5 ? ns[si] : 5); rk++)
                    for (int i = 0; i < ns[si]; i++) {
                        const ds_loc_score* sc = &sets[si][i];
                        if (sc->rank != rk) continue;
                        char a[32], b[32], d[32], se[48] = "";
                        loc_fmt_value(sc->mass_drop, a, sizeof a);
                        loc_fmt_value(sc->image_change, b, sizeof b);
                        loc_fmt_value(sc->detector_drop, d, sizeof d);
                        if (!isnan(sc->score_se)) {  // the ranked metric's standard error over the prompts
                            char v[32];
                            loc_fmt_value(sc->score_se, v, sizeof v);
                            snprintf(se, sizeof se, "  (%s ± %s s.e.)", loc_metric_name(&r), v);
                        }
                        printf("  %d. %-28s mass drop %s  image change %s%s%s%s\n", rk, sc->label, a, b,
                               r.has_detector ? "  detector drop " : "", r.has_detector ? d : "", se);
                    }
            }
            if (!quiet) fprintf(stderr, "localize: wrote %d files to %s\n", nf, out);
        }
        ds_loc_result_free(&r);
    }
    ds_model_free(m);
    ds_context_free(ctx);
    plist_free(&with);
    plist_free(&without);
    free(concept);
    return rc;
}
