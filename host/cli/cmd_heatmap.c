// cmd_heatmap.c — `diffscope heatmap`: generate (or re-noise a real image) with the cross-attention
// capture on, turn it into per-word maps and write the run's folder (docs/heatmap_outputs.md): image,
// overlays, masks, grid, maps*.npy, meta.json and report.html. `--prompts FILE` runs a batch with one
// model load, one folder per prompt.
//
// Every flag, the prompts file, the init image and the output folder are checked before the model is
// loaded; the words of every prompt and the layer/head selectors are checked against the model before
// the first step runs.
#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "args.h"
#include "capture.h"
#include "cli.h"
#include "common.h"
#include "diffscope/diffscope.h"
#include "diffscope/heatmap.h"
#include "heatmap_render.h"
#include "io.h"
#include "model.h"
#include "progress.h"
#include "tokenizer.h"

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))
#define MAX_WEIGHTS 100000

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int fail(int rc, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("diffscope heatmap: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return rc;
}

// ---- flag values ---------------------------------------------------------------------------------

static int parse_mode(const char* s, ds_heatmap_mode* m) {
    if (!strcmp(s, "daam")) *m = DS_HEATMAP_DAAM;
    else if (!strcmp(s, "p2p")) *m = DS_HEATMAP_P2P;
    else if (!strcmp(s, "mean")) *m = DS_HEATMAP_MEAN;
    else return 0;
    return 1;
}
static const char* mode_name(ds_heatmap_mode m) {
    return m == DS_HEATMAP_DAAM ? "daam" : m == DS_HEATMAP_P2P ? "p2p" : "mean";
}

// "A:B", "A:", ":B", "A" (call A only), ":" → [begin, end) with end 0 = to the last call.
static int parse_window(const char* s, int* begin, int* end) {
    char* e;
    const char* colon = strchr(s, ':');
    long a = 0, b = 0;
    if (!colon) {
        a = strtol(s, &e, 10);
        if (e == s || *e || a < 0 || a > 100000) return 0;
        *begin = (int)a;
        *end = (int)a + 1;
        return 1;
    }
    if (colon != s) {
        a = strtol(s, &e, 10);
        if (e != colon || a < 0 || a > 100000) return 0;
    }
    if (colon[1]) {
        b = strtol(colon + 1, &e, 10);
        if (e == colon + 1 || *e || b <= 0 || b > 100001 || b <= a) return 0;
    }
    *begin = (int)a;
    *end = (int)b;
    return 1;
}

// "1,1,0.5,0" → malloc'd weights (≥ 0, finite).
static float* parse_weights(const char* s, int* n) {
    *n = 0;
    float* w = malloc(sizeof(float) * 64);
    int cap = 64;
    const char* p = s;
    while (*p) {
        while (*p == ' ') p++;
        char* e;
        double v = strtod(p, &e);
        if (e == p || !isfinite(v) || v < 0 || *n >= MAX_WEIGHTS) { free(w); return NULL; }
        if (*n == cap) {
            cap *= 2;
            float* nw = realloc(w, sizeof(float) * (size_t)cap);
            if (!nw) { free(w); return NULL; }
            w = nw;
        }
        w[(*n)++] = (float)v;
        p = e;
        while (*p == ' ') p++;
        if (*p == ',') {
            p++;
            if (!*p) { free(w); return NULL; }
        } else if (*p) { free(w); return NULL; }
    }
    if (!*n) { free(w); return NULL; }
    return w;
}

// ---- output folders ------------------------------------------------------------------------------

// Removes the folders make_dirs created (only if they are still empty).
static void remove_created(const char* created, const char* leaf) {
    if (!created) return;
    char* p = strdup(leaf);
    for (;;) {
        if (rmdir(p) != 0) break;
        if (strcmp(p, created) == 0) break;
        char* slash = strrchr(p, '/');
        if (!slash || slash == p) break;
        *slash = 0;
    }
    free(p);
}

// ---- jobs (prompts) ------------------------------------------------------------------------------

typedef struct job {
    char* prompt;
    char* words;      // csv or NULL (the prompt's words)
    int line;         // line in the prompts file (0: --prompt)
    char dir[4096];
    ds_heatmap_wordlist wl;
} job;

static void trim(char** s) {
    char* p = *s;
    while (*p == ' ' || *p == '\t') p++;
    char* e = p + strlen(p);
    while (e > p && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n')) *--e = 0;
    *s = p;
}

// One prompt a line; blank lines and lines starting with '#' are skipped; "PROMPT | w1, w2" gives
// that prompt its own words.
static int read_prompts(const char* path, char** text_out, job** jobs, int* n, char* why, size_t cap) {
    ds_err e = {0};
    char* text = NULL;
    size_t len = 0;
    if (ds_read_file(&e, path, &text, &len) != DS_OK) {
        snprintf(why, cap, "%s", e.msg);
        return 0;
    }
    if (memchr(text, 0, len)) {
        snprintf(why, cap, "%s: not a text file (it contains NUL bytes)", path);
        free(text);
        return 0;
    }
    int cap_j = 16, count = 0, lineno = 0;
    job* v = calloc((size_t)cap_j, sizeof *v);
    char* save = NULL;
    for (char* line = text; line; line = save) {
        char* nl = strchr(line, '\n');
        save = nl ? nl + 1 : NULL;
        if (nl) *nl = 0;
        lineno++;
        trim(&line);
        if (!*line || *line == '#') continue;
        char* words = NULL;
        char* bar = strstr(line, " | ");
        if (bar) {
            *bar = 0;
            words = bar + 3;
            trim(&words);
            trim(&line);
            if (!*words) words = NULL;
            if (!*line) {
                snprintf(why, cap, "%s:%d: a line with words but no prompt", path, lineno);
                free(v);
                free(text);
                return 0;
            }
        }
        if (count == cap_j) {
            cap_j *= 2;
            job* nv = realloc(v, (size_t)cap_j * sizeof *v);
            if (!nv) { free(v); free(text); snprintf(why, cap, "out of memory"); return 0; }
            memset(nv + count, 0, (size_t)(cap_j - count) * sizeof *nv);
            v = nv;
        }
        v[count].prompt = line;
        v[count].words = words;
        v[count].line = lineno;
        count++;
    }
    if (!count) {
        snprintf(why, cap, "%s: no prompts (one a line; blank lines and lines starting with # are skipped)", path);
        free(v);
        free(text);
        return 0;
    }
    *text_out = text;
    *jobs = v;
    *n = count;
    return 1;
}

// ---- meta.json additions -------------------------------------------------------------------------

typedef struct run_info {
    const char* model;
    const ds_model_info* info;
    ds_heatmap_mode mode;
    const char* negative;
    uint64_t seed;
    int steps;
    float guidance;
    const char* sampler;
    const char* layers_sel;
    const char* heads_sel;
    const char* window;
    const float* weights;
    int n_weights;
    int per_timestep, per_head, per_layer, normalize, absolute, low_memory, token_maps;
    const char* image;
    float strength;
    int start_step, inversion;
    int clip_skip;
} run_info;

static cJSON* json_u64(uint64_t v) {
    if (v <= (1ull << 53)) return cJSON_CreateNumber((double)v);
    char b[32];
    snprintf(b, sizeof b, "%llu", (unsigned long long)v);
    return cJSON_CreateString(b);
}

// Adds what the render's meta.json does not know: the run's settings, tokens, word spans, the
// captured layers and calls, timings, and the extra files.
static int augment_meta(ds_err* e, const char* dir, const run_info* ri, const job* jb, const ds_model* m,
                        const ds_capture* cap, const ds_heatmap* hm, int n_heads, int wrote_heads,
                        int wrote_tokens, size_t cap_bytes, const double t[4], double load_s) {
    char* path = ds_path_join(dir, "meta.json");
    char* text = NULL;
    int rc = ds_read_file(e, path, &text, NULL);
    if (rc) { free(path); return rc; }
    cJSON* o = cJSON_Parse(text);
    free(text);
    if (!o) {
        rc = ds_errf(e, DS_ERR_FORMAT, "%s: not valid JSON", path);
        free(path);
        return rc;
    }

    cJSON_AddStringToObject(o, "diffscope_version", ds_version());
    cJSON_AddStringToObject(o, "negative_prompt", ri->negative);
    cJSON_AddStringToObject(o, "mode", mode_name(ri->mode));
    cJSON_AddStringToObject(o, "model", ri->model ? ri->model : "(embedded default)");
    cJSON_AddStringToObject(o, "model_arch", ri->info->arch_name);
    cJSON_AddItemToObject(o, "seed", json_u64(ri->seed));
    cJSON_AddNumberToObject(o, "steps", ri->steps);
    cJSON_AddNumberToObject(o, "guidance", ri->guidance);
    cJSON_AddStringToObject(o, "sampler", ri->sampler);
    cJSON_AddNumberToObject(o, "clip_skip", ri->clip_skip);
    if (ri->image) {
        cJSON* im = cJSON_AddObjectToObject(o, "init_image");
        cJSON_AddStringToObject(im, "path", ri->image);
        if (ri->start_step >= 0) cJSON_AddNumberToObject(im, "start_step", ri->start_step);
        else cJSON_AddNumberToObject(im, "strength", ri->strength);
        cJSON_AddBoolToObject(im, "ddim_inversion", ri->inversion);
    }

    // tokens: every context row of the prompt (SOS, the tokens, EOS of each 75-token chunk)
    ds_tok_encoding enc = {0};
    ds_err te = {0};
    cJSON* toks = cJSON_AddArrayToObject(o, "tokens");
    if (ds_tokenizer_encode_ex(m->tok, &te, jb->prompt, &enc) == DS_OK) {
        int chunks = enc.n_tokens ? (enc.n_tokens + 74) / 75 : 1;
        for (int c = 0; c < chunks; c++) {
            int first = c * 75, last = first + 75 < enc.n_tokens ? first + 75 : enc.n_tokens;
            cJSON* s = cJSON_CreateObject();
            cJSON_AddNumberToObject(s, "row", c * 77);
            cJSON_AddNumberToObject(s, "id", 49406);
            cJSON_AddStringToObject(s, "piece", "<|startoftext|>");
            cJSON_AddItemToArray(toks, s);
            for (int i = first; i < last; i++) {
                cJSON* it = cJSON_CreateObject();
                cJSON_AddNumberToObject(it, "row", c * 77 + 1 + (i - first));
                cJSON_AddNumberToObject(it, "id", enc.ids[i]);
                const char* pc = ds_tokenizer_piece(m->tok, enc.ids[i]);
                cJSON_AddStringToObject(it, "piece", pc ? pc : "");
                cJSON* sp = cJSON_AddArrayToObject(it, "span");
                cJSON_AddItemToArray(sp, cJSON_CreateNumber((double)enc.token_start[i]));
                cJSON_AddItemToArray(sp, cJSON_CreateNumber((double)enc.token_end[i]));
                cJSON_AddItemToArray(toks, it);
            }
            cJSON* eo = cJSON_CreateObject();
            cJSON_AddNumberToObject(eo, "row", c * 77 + 1 + (last - first));
            cJSON_AddNumberToObject(eo, "id", 49407);
            cJSON_AddStringToObject(eo, "piece", "<|endoftext|>");
            cJSON_AddItemToArray(toks, eo);
        }
    }
    ds_tok_encoding_free(&enc);

    // words → context rows and byte spans in the prompt
    cJSON* ws = cJSON_AddArrayToObject(o, "word_spans");
    for (int i = 0; i < jb->wl.n; i++) {
        const ds_heatmap_word* w = &jb->wl.words[i];
        cJSON* it = cJSON_CreateObject();
        cJSON_AddStringToObject(it, "word", w->text);
        cJSON* rows = cJSON_AddArrayToObject(it, "rows");
        for (int k = 0; k < w->n_tokens; k++) cJSON_AddItemToArray(rows, cJSON_CreateNumber(w->tokens[k]));
        cJSON* sp = cJSON_AddArrayToObject(it, "spans");
        cJSON* tx = cJSON_AddArrayToObject(it, "text");
        for (int k = 0; k < w->n_spans; k++) {
            cJSON* pair = cJSON_CreateArray();
            size_t a = w->spans[2 * k], b = w->spans[2 * k + 1];
            cJSON_AddItemToArray(pair, cJSON_CreateNumber((double)a));
            cJSON_AddItemToArray(pair, cJSON_CreateNumber((double)b));
            cJSON_AddItemToArray(sp, pair);
            size_t L = strlen(jb->prompt);
            if (a <= b && b <= L) {
                char* sub = strndup(jb->prompt + a, b - a);
                cJSON_AddItemToArray(tx, cJSON_CreateString(sub ? sub : ""));
                free(sub);
            }
        }
        cJSON_AddItemToArray(ws, it);
    }

    // the capture
    cJSON* c = cJSON_AddObjectToObject(o, "capture");
    cJSON_AddStringToObject(c, "layers_selector", ri->layers_sel && *ri->layers_sel ? ri->layers_sel : "(mode default)");
    cJSON_AddStringToObject(c, "heads_selector", ri->heads_sel && *ri->heads_sel ? ri->heads_sel : "all");
    cJSON_AddStringToObject(c, "timesteps_selector", ri->window ? ri->window : "all");
    if (ri->n_weights) {
        cJSON* wa = cJSON_AddArrayToObject(c, "timestep_weights");
        for (int i = 0; i < ri->n_weights; i++) cJSON_AddItemToArray(wa, cJSON_CreateNumber(ri->weights[i]));
    } else {
        cJSON_AddNullToObject(c, "timestep_weights");
    }
    cJSON_AddBoolToObject(c, "per_head", ri->per_head || ri->mode == DS_HEATMAP_DAAM);
    cJSON_AddBoolToObject(c, "per_timestep", ri->per_timestep);
    cJSON_AddBoolToObject(c, "low_memory", ri->low_memory);
    cJSON_AddNumberToObject(c, "bytes", (double)cap_bytes);
    cJSON* la = cJSON_AddArrayToObject(c, "layers");
    int nl = ds_capture_layer_count(cap);
    for (int l = 0; l < nl; l++) {
        ds_capture_layer_info li;
        if (ds_capture_layer_info_get(cap, l, &li) != DS_OK) continue;
        cJSON* it = cJSON_CreateObject();
        cJSON_AddStringToObject(it, "path", li.path);
        cJSON_AddNumberToObject(it, "height", li.height);
        cJSON_AddNumberToObject(it, "width", li.width);
        cJSON_AddNumberToObject(it, "heads", li.heads);
        cJSON_AddNumberToObject(it, "keys", li.keys);
        if (ri->mode == DS_HEATMAP_DAAM) cJSON_AddNumberToObject(it, "factor", li.factor);
        cJSON_AddItemToArray(la, it);
    }
    cJSON* ca = cJSON_AddArrayToObject(c, "calls");
    int nc = ds_capture_call_count(cap);
    for (int k = 0; k < nc; k++) {
        int call = 0;
        float ts = 0;
        if (ds_capture_call_info(cap, k, &call, &ts) != DS_OK) continue;
        cJSON* it = cJSON_CreateObject();
        cJSON_AddNumberToObject(it, "call", call);
        cJSON_AddNumberToObject(it, "t", ts);
        cJSON_AddNumberToObject(it, "weight", call < ri->n_weights ? ri->weights[call] : 1.0);
        cJSON_AddItemToArray(ca, it);
    }
    cJSON_AddNumberToObject(c, "heads", n_heads);
    cJSON* mp = cJSON_AddObjectToObject(o, "maps_info");
    cJSON_AddStringToObject(mp, "values", ri->normalize ? "daam normalize=True: divided by the sum over the prompt tokens"
                                                         : "raw recipe values (no normalization)");
    cJSON_AddNumberToObject(mp, "height", hm->height);
    cJSON_AddNumberToObject(mp, "width", hm->width);
    cJSON_AddNumberToObject(mp, "layers_used", hm->n_layers);
    cJSON_AddNumberToObject(mp, "heads_used", hm->n_heads);
    cJSON* files = cJSON_GetObjectItemCaseSensitive(o, "files");
    if (cJSON_IsObject(files)) {
        if (wrote_heads) cJSON_AddStringToObject(files, "maps_heads", "maps_heads.npy");
        if (wrote_tokens) cJSON_AddStringToObject(files, "token_maps", "token_maps.npy");
    }
    cJSON* tm = cJSON_AddObjectToObject(o, "timings");
    cJSON_AddNumberToObject(tm, "load_s", load_s);
    cJSON_AddNumberToObject(tm, "generate_s", t[0]);
    cJSON_AddNumberToObject(tm, "maps_s", t[1]);
    cJSON_AddNumberToObject(tm, "outputs_s", t[2]);
    cJSON_AddNumberToObject(tm, "total_s", t[3]);
    cJSON_AddNumberToObject(o, "capture_bytes", (double)cap_bytes);

    char* s = cJSON_Print(o);
    cJSON_Delete(o);
    if (!s) {
        rc = ds_errf(e, DS_ERR_OOM, "%s: out of memory", path);
        free(path);
        return rc;
    }
    rc = ds_write_file_atomic(e, path, s, strlen(s));
    free(s);
    free(path);
    return rc;
}

// ---- one prompt ----------------------------------------------------------------------------------

typedef struct hm_ctx {
    ds_context* ctx;
    ds_model* m;
    ds_model_info info;
    ds_capture* cap;
    const run_info* ri;
    ds_generate_params base;
    ds_heatmap_opts opts;   // the base options (words, normalize, display raw, size)
    int map_size_image;
    float tau, alpha;
    int quiet;
    double load_s;
} hm_ctx;

// Computes the maps of `o` into a malloc'd copy at (w, h); 0 on success.
static int compute_into(hm_ctx* H, const ds_heatmap_opts* o, int w, int h, float* dst, int n, char* why, size_t cap) {
    ds_heatmap hm = {0};
    ds_heatmap_opts oo = *o;
    oo.out_width = w;
    oo.out_height = h;
    if (ds_heatmap_compute(H->ctx, H->cap, &oo, &hm) != DS_OK) {
        snprintf(why, cap, "%s", ds_last_error(H->ctx));
        return 1;
    }
    if (hm.n_maps != n || hm.width != w || hm.height != h) {
        snprintf(why, cap, "maps came back %d×%d×%d, expected %d×%d×%d", hm.n_maps, hm.height, hm.width, n, h, w);
        ds_heatmap_free(&hm);
        return 1;
    }
    memcpy(dst, hm.maps, sizeof(float) * (size_t)n * w * h);
    ds_heatmap_free(&hm);
    return 0;
}

static int run_job(hm_ctx* H, job* jb, const char* label, const uint8_t* init_rgb, int iw, int ih) {
    const run_info* ri = H->ri;
    progress prog;
    progress_init(&prog, label, H->quiet);
    ds_generate_params p = H->base;
    p.prompt = jb->prompt;
    p.progress = progress_update;
    p.progress_user = &prog;
    p.capture = H->cap;
    p.init_image = init_rgb;
    p.init_image_width = iw;
    p.init_image_height = ih;
    ds_image img = {0};
    ds_heatmap hm = {0};
    float *layer_maps = NULL, *step_maps = NULL, *head_maps = NULL;
    char** layer_names = NULL;
    int* step_index = NULL;
    double* step_t = NULL;
    int nl = 0, ns = 0, nh = 0, rc = 0, max_heads = 0;
    double t[4] = {0}, t0 = now_s();
    char why[1024];
    ds_err e = {0};

    if (ds_generate(H->ctx, H->m, &p, &img) != DS_OK) {
        fprintf(stderr, "diffscope heatmap: %s\n", ds_last_error(H->ctx));
        return 1;
    }
    size_t cap_bytes = ds_capture_bytes(H->cap);
    double t1 = now_s();
    t[0] = t1 - t0;

    // the aggregate maps
    ds_heatmap_opts o = H->opts;
    o.words = &jb->wl;
    if (H->map_size_image) { o.out_width = img.width; o.out_height = img.height; }
    if (ds_heatmap_compute(H->ctx, H->cap, &o, &hm) != DS_OK) {
        fprintf(stderr, "diffscope heatmap: %s\n", ds_last_error(H->ctx));
        rc = 1;
        goto done;
    }
    const int n = hm.n_maps, mw = hm.width, mh = hm.height;
    const size_t per = (size_t)n * mw * mh;
    // per layer (report's layer slider, maps_layers.npy)
    int n_cap_layers = ds_capture_layer_count(H->cap);
    for (int l = 0; l < n_cap_layers; l++) {
        ds_capture_layer_info li;
        if (ds_capture_layer_info_get(H->cap, l, &li) == DS_OK && li.heads > max_heads) max_heads = li.heads;
    }
    if (ri->per_layer && n_cap_layers > 1) {
        layer_maps = malloc(sizeof(float) * per * (size_t)n_cap_layers);
        layer_names = calloc((size_t)n_cap_layers, sizeof *layer_names);
        if (!layer_maps || !layer_names) { rc = fail(1, "out of memory (per-layer maps)"); goto done; }
        for (int l = 0; l < n_cap_layers; l++) {
            ds_capture_layer_info li;
            if (ds_capture_layer_info_get(H->cap, l, &li) != DS_OK) continue;
            ds_heatmap_opts ol = o;
            ol.layers = li.path;
            if (compute_into(H, &ol, mw, mh, layer_maps + (size_t)nl * per, n, why, sizeof why)) {
                // e.g. a layer daam keeps in the capture but filters out of its maps
                if (!H->quiet) fprintf(stderr, "note: no per-layer map for %s: %s\n", li.path, why);
                continue;
            }
            layer_names[nl++] = strdup(li.path);
        }
    }
    // per timestep (stored calls)
    if (ri->per_timestep) {
        int nc = ds_capture_call_count(H->cap);
        step_maps = malloc(sizeof(float) * per * (size_t)(nc ? nc : 1));
        step_index = calloc((size_t)(nc ? nc : 1), sizeof *step_index);
        step_t = calloc((size_t)(nc ? nc : 1), sizeof *step_t);
        if (!step_maps || !step_index || !step_t) { rc = fail(1, "out of memory (per-timestep maps)"); goto done; }
        for (int k = 0; k < nc; k++) {
            int call = 0;
            float ts = 0;
            ds_capture_call_info(H->cap, k, &call, &ts);
            ds_heatmap_opts os = o;
            os.call = k;
            if (compute_into(H, &os, mw, mh, step_maps + (size_t)ns * per, n, why, sizeof why)) {
                rc = fail(1, "per-timestep maps of call %d: %s", call, why);
                goto done;
            }
            step_index[ns] = call;
            step_t[ns] = ts;
            ns++;
        }
    }
    // per head (maps_heads.npy)
    if (ri->per_head) {
        nh = max_heads;
        head_maps = calloc(per * (size_t)(nh ? nh : 1), sizeof(float));
        if (!head_maps) { rc = fail(1, "out of memory (per-head maps)"); goto done; }
        uint64_t mask = ~0ull;
        if (ri->heads_sel && *ri->heads_sel) ds_cap_parse_heads(&e, ri->heads_sel, &mask);
        for (int h = 0; h < nh; h++) {
            if (h < 64 && !(mask >> h & 1)) {  // not selected: leave NaN
                for (size_t i = 0; i < per; i++) head_maps[(size_t)h * per + i] = NAN;
                continue;
            }
            char hs[16];
            snprintf(hs, sizeof hs, "%d", h);
            ds_heatmap_opts oh = o;
            oh.heads = hs;
            if (compute_into(H, &oh, mw, mh, head_maps + (size_t)h * per, n, why, sizeof why)) {
                rc = fail(1, "per-head maps of head %d: %s", h, why);
                goto done;
            }
        }
    }
    double t2 = now_s();
    t[1] = t2 - t1;

    // the folder
    char seed_s[32], steps_s[16], guid_s[32], layers_s[64], calls_s[160], heads_s[64];
    snprintf(seed_s, sizeof seed_s, "%llu", (unsigned long long)ri->seed);
    snprintf(steps_s, sizeof steps_s, "%d", ri->steps);
    snprintf(guid_s, sizeof guid_s, "%g", ri->guidance);
    snprintf(layers_s, sizeof layers_s, "%d of %d captured%s%s", hm.n_layers, n_cap_layers,
             ri->layers_sel && *ri->layers_sel ? ": " : "", ri->layers_sel && *ri->layers_sel ? ri->layers_sel : "");
    snprintf(heads_s, sizeof heads_s, "%s", ri->heads_sel && *ri->heads_sel ? ri->heads_sel : "all");
    {
        int nc = ds_capture_call_count(H->cap), c0 = 0, c1 = 0;
        float t0v = 0, t1v = 0;
        if (nc) {
            ds_capture_call_info(H->cap, 0, &c0, &t0v);
            ds_capture_call_info(H->cap, nc - 1, &c1, &t1v);
        }
        snprintf(calls_s, sizeof calls_s, "%d UNet call%s%s (t %g … %g)%s%s", nc, nc == 1 ? "" : "s",
                 ri->window ? " in the window" : "", t0v, t1v, ri->n_weights ? ", weighted" : "",
                 ri->per_timestep ? ", per-timestep maps kept" : "");
    }
    // words → context rows ("dog: 2, 5; beach: 8")
    char rows_s[512] = "";
    for (int i = 0; i < n; i++) {
        const ds_heatmap_word* w = &jb->wl.words[i];
        size_t L = strlen(rows_s);
        snprintf(rows_s + L, sizeof rows_s - L, "%s%s:", i ? "; " : "", w->text);
        for (int k = 0; k < w->n_tokens; k++) {
            L = strlen(rows_s);
            snprintf(rows_s + L, sizeof rows_s - L, "%s%d", k ? ", " : " ", w->tokens[k]);
        }
    }
    char init_s[1200] = "";
    if (ri->image) {
        if (ri->start_step >= 0) snprintf(init_s, sizeof init_s, "%s (start step %d%s)", ri->image, ri->start_step, ri->inversion ? ", DDIM inversion" : "");
        else snprintf(init_s, sizeof init_s, "%s (strength %g%s)", ri->image, ri->strength, ri->inversion ? ", DDIM inversion" : "");
    }
    const char* keys[] = {"model", "mode", "seed", "steps", "sampler", "guidance", "negative prompt",
                          "layers", "heads", "timesteps", "word → context rows", "init image"};
    const char* vals[] = {ri->model ? ri->model : "(embedded default)", mode_name(ri->mode), seed_s, steps_s,
                          ri->sampler, guid_s, *ri->negative ? ri->negative : "(none)", layers_s, heads_s,
                          calls_s, rows_s, init_s};
    int n_meta = ri->image ? COUNT(keys) : COUNT(keys) - 1;
    const char** words = calloc((size_t)n, sizeof *words);
    for (int i = 0; i < n; i++) words[i] = jb->wl.words[i].text;
    ds_heatmap_run run = {
        .rgb = img.pixels, .W = img.width, .H = img.height, .prompt = jb->prompt, .title = NULL,
        .n_words = n, .words = words, .map_w = mw, .map_h = mh, .maps = hm.maps,
        .absolute = ri->absolute, .tau = H->tau, .alpha = H->alpha,
        .n_layers = nl, .layer_names = (const char* const*)layer_names, .layer_maps = layer_maps,
        .n_steps = ns, .step_index = step_index, .step_t = step_t, .step_maps = step_maps,
        .n_meta = n_meta, .meta_keys = keys, .meta_values = vals,
    };
    if (ds_heatmap_write_outputs(&e, jb->dir, &run) != DS_OK) {
        free(words);
        rc = fail(1, "%s", e.msg);
        goto done;
    }
    free(words);
    int wrote_heads = 0, wrote_tokens = 0;
    if (head_maps && nh) {
        int64_t sh[4] = {nh, n, mh, mw};
        char* path = ds_path_join(jb->dir, "maps_heads.npy");
        int w = ds_npy_write(&e, path, head_maps, 4, sh);
        free(path);
        if (w != DS_OK) { rc = fail(1, "%s", e.msg); goto done; }
        wrote_heads = 1;
    }
    if (ri->token_maps) {
        ds_heatmap tk = {0};
        ds_heatmap_opts ot = o;
        ot.words = NULL;
        ot.out_width = mw;
        ot.out_height = mh;
        if (ds_heatmap_compute(H->ctx, H->cap, &ot, &tk) != DS_OK) {
            rc = fail(1, "token maps: %s", ds_last_error(H->ctx));
            goto done;
        }
        int64_t sh[3] = {tk.n_maps, tk.height, tk.width};
        char* path = ds_path_join(jb->dir, "token_maps.npy");
        int w = ds_npy_write(&e, path, tk.maps, 3, sh);
        free(path);
        ds_heatmap_free(&tk);
        if (w != DS_OK) { rc = fail(1, "%s", e.msg); goto done; }
        wrote_tokens = 1;
    }
    double t3 = now_s();
    t[2] = t3 - t2;
    t[3] = t3 - t0;
    if (augment_meta(&e, jb->dir, ri, jb, H->m, H->cap, &hm, max_heads, wrote_heads, wrote_tokens, cap_bytes, t, H->load_s) != DS_OK) {
        rc = fail(1, "%s", e.msg);
        goto done;
    }
    progress_note(&prog, "%s: %d word%s, %d layer%s%s, maps %dx%d, image %dx%d -> %s (generate %.1fs, maps %.2fs, outputs %.2fs)",
                  label, n, n == 1 ? "" : "s", hm.n_layers, hm.n_layers == 1 ? "" : "s",
                  ns ? ", per timestep" : "", mw, mh, img.width, img.height, jb->dir, t[0], t[1], t[2]);
done:
    ds_heatmap_free(&hm);
    ds_image_free(&img);
    if (layer_names)
        for (int l = 0; l < n_cap_layers; l++) free(layer_names[l]);
    free(layer_names);
    free(layer_maps);
    free(step_maps);
    free(step_index);
    free(step_t);
    free(head_maps);
    return rc;
}

// ---- the command ---------------------------------------------------------------------------------

int cmd_heatmap(int argc, char** argv) {
    const char *model = NULL, *prompt = NULL, *prompts = NULL, *words = NULL, *mode_s = "daam", *layers = NULL,
               *heads = NULL, *window = NULL, *weights_s = NULL, *image = NULL, *negative = "",
               *sampler_s = "default", *out = NULL, *map_size = "grid";
    int steps = 20, width = 0, height = 0, quiet = 0, clip_skip = 0, start_step = -1, inversion = 0,
        per_timestep = 0, per_head = 0, no_per_layer = 0, normalize = 0, absolute = 0, low_memory = 0,
        token_maps = 0;
    float guidance = -1.0f, strength = 0.8f, tau = DS_HEATMAP_TAU, alpha = DS_OVERLAY_ALPHA, timestep = -1;
    uint64_t seed = 0;
    const arg_spec specs[] = {
        {"model", ARG_STR, &model, "PATH", "diffusers folder or single-file .safetensors (default: the embedded model)", 1, 0, 0},
        {"prompt", ARG_STR, &prompt, "TEXT", "what to generate (or, with --image, what the image shows)", 1, 0, 0},
        {"prompts", ARG_STR, &prompts, "FILE", "batch: one prompt a line ('PROMPT | w1, w2' sets its words; blank and # lines skipped), one folder each, one model load", 1, 0, 0},
        {"words", ARG_STR, &words, "LIST", "comma-separated words or phrases to map (default: every word of the prompt that is not a stop word)", 1, 0, 0},
        {"mode", ARG_STR, &mode_s, "daam|p2p|mean", "recipe: daam (daam 0.2.0, default), p2p (prompt-to-prompt), mean (mean over layers and heads)", 1, 0, 0},
        {"layers", ARG_STR, &layers, "SEL", "cross-attention layers: down, mid, up, a module prefix (up_blocks.1), res:N or res:HxW; comma-separated", 1, 0, 0},
        {"heads", ARG_STR, &heads, "LIST", "attention heads, e.g. 0-3,6 (default: all)", 1, 0, 0},
        {"timesteps", ARG_STR, &window, "A:B", "capture UNet calls A..B-1 only (0-based, either end may be left out; PNDM makes steps+1 calls)", 1, 0, 0},
        {"timestep-weights", ARG_STR, &weights_s, "W0,W1,..", "weight of each UNet call in the aggregate (calls beyond the list weigh 1; 0 skips a call)", 1, 0, 0},
        {"per-timestep", ARG_FLAG, &per_timestep, NULL, "also keep each call's maps: maps_steps.npy and the report's timestep slider (memory grows with the steps)", 1, 0, 0},
        {"per-head", ARG_FLAG, &per_head, NULL, "also write maps_heads.npy [heads, words, h, w]", 1, 0, 0},
        {"no-per-layer", ARG_FLAG, &no_per_layer, NULL, "skip the per-layer maps (maps_layers.npy and the report's layer slider)", 1, 0, 0},
        {"token-maps", ARG_FLAG, &token_maps, NULL, "also write token_maps.npy: one map per context row (SOS, tokens, EOS)", 1, 0, 0},
        {"normalize", ARG_FLAG, &normalize, NULL, "daam's normalize=True: divide the maps by their sum over the prompt's tokens", 1, 0, 0},
        {"absolute", ARG_FLAG, &absolute, NULL, "draw the raw map values (clipped to 0..1) instead of min-max per word", 1, 0, 0},
        {"low-memory", ARG_FLAG, &low_memory, NULL, "daam's low_memory: only the first transformer block of each UNet block", 1, 0, 0},
        {"map-size", ARG_STR, &map_size, "grid|image", "maps.npy at the recipe's grid (daam: 64x64 for 512 px; default) or resized to the image", 1, 0, 0},
        {"tau", ARG_FLOAT, &tau, "F", "mask threshold on the normalized map, 0..1 (default 0.4)", 0, 1, 0},
        {"alpha", ARG_FLOAT, &alpha, "F", "overlay opacity, 0.01..1 (default 0.5)", 0.01, 1, 0},
        {"negative", ARG_STR, &negative, "TEXT", "negative prompt (default empty)", 1, 0, 0},
        {"steps", ARG_INT, &steps, "N", "denoising steps, 1..1000 (default 20)", 1, 1000, 0},
        {"guidance", ARG_FLOAT, &guidance, "F", "classifier-free guidance scale, 0..100; <= 1 disables CFG (default: the model's recommendation; 7.5 for SD, 2 for the embedded model)", 0, 100, 0},
        {"seed", ARG_U64, &seed, "N", "seed, same latents as torch.Generator('cpu').manual_seed(N) (default 0)", 1, 0, 0},
        {"sampler", ARG_STR, &sampler_s, "NAME", "default|ddim|euler|euler_a|dpmpp_2m|pndm (default: the model's scheduler)", 1, 0, 0},
        {"width", ARG_INT, &width, "W", "image width in pixels (default: the model's native size)", 8, 16384, 0},
        {"height", ARG_INT, &height, "H", "image height in pixels", 8, 16384, 0},
        {"clip-skip", ARG_INT, &clip_skip, "N", "use the text encoder's output N-1 layers early (0/1 = the model's default)", 0, 12, 0},
        {"image", ARG_STR, &image, "FILE", "a real image (PNG/JPEG): maps of re-noising and denoising it (its size is the output size)", 1, 0, 0},
        {"strength", ARG_FLOAT, &strength, "F", "with --image: fraction of the schedule re-run, 0..1 (default 0.8)", 0, 1, 0},
        {"start-step", ARG_INT, &start_step, "N", "with --image: start at scheduler call N instead of --strength", 0, 1000, 0},
        {"timestep", ARG_FLOAT, &timestep, "T", "with --image: start at the first scheduler call with timestep <= T (0..1000)", 0, 1000, 0},
        {"ddim-inversion", ARG_FLAG, &inversion, NULL, "with --image: reach the start by DDIM inversion instead of seeded noise", 1, 0, 0},
        {"out", ARG_STR, &out, "DIR", "output folder (created if missing; with --prompts one sub-folder per prompt)", 1, 0, 1},
        {"quiet", ARG_FLAG, &quiet, NULL, "no progress output", 1, 0, 0},
    };
    const arg_command cmd = {"heatmap",
                             "Generate with cross-attention capture and write per-word heatmaps: overlays, masks, grid, maps.npy, meta.json, report.html.",
                             "(--prompt TEXT | --prompts FILE) --out DIR [--words LIST] [--mode daam|p2p|mean] [options]",
                             specs, COUNT(specs)};
    int pr = args_parse(&cmd, argc, argv);
    if (pr) return pr > 0 ? 0 : 2;

    // ---- every flag, before anything else
    run_info ri = {0};
    ds_heatmap_mode mode;
    ds_sampler sampler;
    int call_begin = 0, call_end = 0, n_weights = 0;
    float* weights = NULL;
    if (!parse_mode(mode_s, &mode)) return fail(2, "--mode expects daam, p2p or mean; got '%s'", mode_s);
    if (!cli_parse_sampler(sampler_s, &sampler))
        return fail(2, "--sampler expects one of default, ddim, euler, euler_a, dpmpp_2m, pndm; got '%s'", sampler_s);
    if (!prompt == !prompts) return fail(2, "give --prompt TEXT or --prompts FILE (one of them)");
    if (prompt && !*prompt) return fail(2, "--prompt is empty");
    if ((width == 0) != (height == 0)) return fail(2, "give both --width and --height, or neither");
    if (strcmp(map_size, "grid") && strcmp(map_size, "image")) return fail(2, "--map-size expects grid or image; got '%s'", map_size);
    if (window && !parse_window(window, &call_begin, &call_end))
        return fail(2, "--timesteps expects A:B (UNet calls A..B-1, 0 <= A < B), A:, :B or A; got '%s'", window);
    if (weights_s && !(weights = parse_weights(weights_s, &n_weights)))
        return fail(2, "--timestep-weights expects comma-separated numbers >= 0 (one per UNet call), got '%s'", weights_s);
    if (heads && *heads) {
        ds_err he = {0};
        uint64_t mask;
        if (ds_cap_parse_heads(&he, heads, &mask) != DS_OK) { free(weights); return fail(2, "--heads: %s", he.msg); }
    } else if (heads) {
        free(weights);
        return fail(2, "--heads is empty (leave it out for all heads)");
    }
    if (layers && !*layers) { free(weights); return fail(2, "--layers is empty (leave it out for the mode's default)"); }
    if (layers) {
        ds_err le = {0};
        if (ds_cap_sel_match(&le, layers, "", 0, 0, NULL, NULL) < 0) { free(weights); return fail(2, "--layers: %s", le.msg); }
    }
    if (low_memory && mode != DS_HEATMAP_DAAM) { free(weights); return fail(2, "--low-memory is daam's option: use it with --mode daam"); }
    if (!image && (start_step >= 0 || inversion || timestep >= 0)) { free(weights); return fail(2, "--start-step, --timestep and --ddim-inversion need --image"); }
    if (start_step >= 0 && timestep >= 0) { free(weights); return fail(2, "give --start-step or --timestep, not both"); }

    // the init image
    ds_err e = {0};
    uint8_t* pixels = NULL;
    int iw = 0, ih = 0;
    if (image) {
        if (ds_image_load_rgb(&e, image, &pixels, &iw, &ih) != DS_OK) { free(weights); return fail(2, "--image: %s", e.msg); }
        if ((width && width != iw) || (height && height != ih)) {
            free(pixels);
            free(weights);
            return fail(2, "--image %s is %dx%d but --width/--height ask for %dx%d", image, iw, ih, width, height);
        }
    }
    // the jobs
    job* jobs = NULL;
    int n_jobs = 0;
    char* prompts_text = NULL;
    char why[1024];
    if (prompts) {
        if (!read_prompts(prompts, &prompts_text, &jobs, &n_jobs, why, sizeof why)) {
            free(pixels);
            free(weights);
            return fail(2, "--prompts: %s", why);
        }
        for (int i = 0; i < n_jobs; i++)
            if (!jobs[i].words && words) jobs[i].words = (char*)words;
    } else {
        jobs = calloc(1, sizeof *jobs);
        jobs[0].prompt = (char*)prompt;
        jobs[0].words = (char*)words;
        n_jobs = 1;
    }
    // the output folder: created (if missing) and written into before the model is loaded
    int rc = 0;
    char* created = NULL;
    if (model) {
        char a[PATH_MAX], b[PATH_MAX];
        if (realpath(model, a) && realpath(out, b) && !strcmp(a, b)) {
            rc = fail(2, "--out %s is the input model; refusing to write into it", out);
            goto cleanup_early;
        }
    }
    if (!ds_make_dirs(out, &created, why, sizeof why) || !ds_dir_writable(out, why, sizeof why)) {
        rc = fail(2, "--out %s: %s", out, why);
        goto cleanup_early;
    }
    for (int i = 0; i < n_jobs; i++) {
        if (prompts) {
            char stem[64];
            const char* one[1] = {jobs[i].prompt};
            ds_word_file_stem(one, 1, 0, stem, sizeof stem);
            if (!strncmp(stem, "word", 4) && isdigit((unsigned char)stem[4])) snprintf(stem, sizeof stem, "prompt");
            snprintf(jobs[i].dir, sizeof jobs[i].dir, "%s/%03d_%s", out, i, stem);
        } else {
            snprintf(jobs[i].dir, sizeof jobs[i].dir, "%s", out);
        }
    }

    // ---- the model, then everything that needs it (still before any compute)
    double tl = now_s();
    ds_context* ctx = ds_context_create();
    ds_model* m = NULL;
    rc = cli_load_model(ctx, model, quiet, &m);
    if (rc) { ds_context_free(ctx); goto cleanup_early; }
    guidance = cli_guidance(ctx, m, guidance);
    hm_ctx H = {.ctx = ctx, .m = m, .ri = &ri, .quiet = quiet, .tau = tau, .alpha = alpha,
                .map_size_image = !strcmp(map_size, "image")};
    H.load_s = now_s() - tl;
    if (!rc && timestep >= 0 && cli_start_step_for_timestep(ctx, m, sampler, steps, timestep, "heatmap", &start_step)) rc = 2;
    ds_model_get_info(ctx, m, &H.info);
    char sampler_name[64];
    if (sampler == DS_SAMPLER_DEFAULT) snprintf(sampler_name, sizeof sampler_name, "default (%s)", H.info.default_sampler);
    else snprintf(sampler_name, sizeof sampler_name, "%s", sampler_s);
    for (int i = 0; i < n_jobs && !rc; i++) {
        if (ds_heatmap_words(ctx, m, jobs[i].prompt, jobs[i].words, &jobs[i].wl) != DS_OK) {
            if (prompts) rc = fail(2, "--prompts %s:%d: %s", prompts, jobs[i].line, ds_last_error(ctx));
            else rc = fail(2, "%s", ds_last_error(ctx));
        } else if (jobs[i].wl.n == 0) {
            rc = fail(2, "%s%s: no words to map (every word is a stop word); name them with --words",
                      prompts ? "--prompts " : "--prompt", prompts ? prompts : "");
        }
    }
    ds_capture_plan plan;
    ds_capture_plan_init(&plan, mode);
    plan.layers = layers;
    plan.heads = heads;
    plan.call_begin = call_begin;
    plan.call_end = call_end;
    plan.call_weights = weights;
    plan.n_call_weights = n_weights;
    plan.per_call = per_timestep;
    if (per_head) plan.per_head = 1;
    plan.daam_low_memory = low_memory;
    if (!rc && ds_capture_create(ctx, m, &plan, &H.cap) != DS_OK) rc = fail(2, "%s", ds_last_error(ctx));
    if (!rc) {
        // the size, and the plan at that size (p2p's grid, daam's factors), before any step runs
        int native = H.info.unet_sample_size * H.info.vae_scale_factor;
        int W = image ? iw : width ? width : native, Hh = image ? ih : height ? height : native;
        int f = H.info.vae_scale_factor * (1 << (m->unet_cfg.n_levels - 1));
        size_t est = 0;
        if (W % f || Hh % f)
            rc = fail(2, "%s%dx%d: this model needs image sizes that are multiples of %d (the VAE factor %d x 2^%d UNet levels)",
                      image ? "--image is " : "--width/--height ", W, Hh, f, H.info.vae_scale_factor, m->unet_cfg.n_levels - 1);
        else if (ds_capture_estimate_bytes(ctx, m, &plan, W, Hh, steps + 1, &est) != DS_OK)
            rc = fail(2, "%s", ds_last_error(ctx));
        else if (!quiet)
            fprintf(stderr, "capture: %s mode, about %.1f MiB of accumulators%s\n", mode_name(mode), est / 1048576.0,
                    per_timestep ? " (per-timestep: grows with the steps)" : " (independent of the steps)");
    }

    if (!rc) {
        ri = (run_info){.model = model, .info = &H.info, .mode = mode, .negative = negative, .seed = seed,
                        .steps = steps, .guidance = guidance, .sampler = sampler_name, .layers_sel = layers,
                        .heads_sel = heads, .window = window, .weights = weights, .n_weights = n_weights,
                        .per_timestep = per_timestep, .per_head = per_head, .per_layer = !no_per_layer,
                        .normalize = normalize, .absolute = absolute, .low_memory = low_memory,
                        .token_maps = token_maps, .image = image, .strength = strength,
                        .start_step = start_step, .inversion = inversion, .clip_skip = clip_skip};
        ds_generate_params_init(&H.base);
        H.base.negative_prompt = negative;
        H.base.steps = steps;
        H.base.guidance = guidance;
        H.base.seed = seed;
        H.base.sampler = sampler;
        H.base.width = image ? iw : width;
        H.base.height = image ? ih : height;
        H.base.clip_skip = clip_skip;
        H.base.strength = strength;
        H.base.start_step = start_step;
        H.base.ddim_inversion = inversion;
        ds_heatmap_opts_init(&H.opts);
        H.opts.normalize = normalize;
        H.opts.display = DS_HEATMAP_DISPLAY_RAW;
        if (!quiet && n_jobs > 1) fprintf(stderr, "%d prompts from %s -> %s/\n", n_jobs, prompts, out);
        int failed = 0;
        for (int i = 0; i < n_jobs; i++) {
            char label[64];
            if (n_jobs > 1) snprintf(label, sizeof label, "[%d/%d] heatmap", i + 1, n_jobs);
            else snprintf(label, sizeof label, "heatmap");
            if (prompts) {
                char* made = NULL;
                if (!ds_make_dirs(jobs[i].dir, &made, why, sizeof why)) {
                    rc = fail(1, "%s", why);
                    break;
                }
                free(made);
            }
            int r = run_job(&H, &jobs[i], label, pixels, iw, ih);
            if (r) {
                failed++;
                rc = r;
                if (!prompts) break;  // a batch goes on with the next prompt
                fprintf(stderr, "diffscope heatmap: prompt %d (line %d) failed; going on\n", i, jobs[i].line);
            }
        }
        if (prompts) {
            // the batch's index: prompt → folder
            cJSON* idx = cJSON_CreateArray();
            for (int i = 0; i < n_jobs; i++) {
                cJSON* it = cJSON_CreateObject();
                cJSON_AddNumberToObject(it, "index", i);
                cJSON_AddStringToObject(it, "prompt", jobs[i].prompt);
                const char* slash = strrchr(jobs[i].dir, '/');
                cJSON_AddStringToObject(it, "folder", slash ? slash + 1 : jobs[i].dir);
                cJSON* wa = cJSON_AddArrayToObject(it, "words");
                for (int k = 0; k < jobs[i].wl.n; k++) cJSON_AddItemToArray(wa, cJSON_CreateString(jobs[i].wl.words[k].text));
                cJSON_AddItemToArray(idx, it);
            }
            char* s = cJSON_Print(idx);
            cJSON_Delete(idx);
            char* path = ds_path_join(out, "batch.json");
            ds_err be = {0};
            if (!s || ds_write_file_atomic(&be, path, s, strlen(s)) != DS_OK) rc = fail(1, "%s", s ? be.msg : "out of memory");
            free(s);
            free(path);
            if (failed) fprintf(stderr, "diffscope heatmap: %d of %d prompts failed\n", failed, n_jobs);
        }
    } else {
        remove_created(created, out);  // nothing was computed: leave no empty folder behind
    }
    for (int i = 0; i < n_jobs; i++) ds_heatmap_words_free(&jobs[i].wl);
    ds_capture_free(H.cap);
    ds_model_free(m);
    ds_context_free(ctx);
    free(created);
    free(jobs);
    free(prompts_text);
    free(pixels);
    free(weights);
    return rc;

cleanup_early:
    remove_created(created, out);
    free(created);
    free(jobs);
    free(prompts_text);
    free(pixels);
    free(weights);
    return rc;
}
