// cmd_localize.c — `diffscope localize`: where a concept lives in the UNet (docs/localization.md).
//
// Runs host/localize.h's ds_localize on prompt sets built around the concept (or given in files) and writes the
// run's folder: neurons.json (what `diffscope prune --neurons` reads), neurons.csv, neuron_norms.npy and
// neurons.png (ConceptPrune); layers.csv/png (LocoGen windows); heads.csv/png (ablations and concept attention
// mass); timesteps.csv/png; summary.json with everything. Every flag, both prompt files and the output folder are
// checked before the model is loaded; the concept is checked against every prompt before the first generation.
#include <cjson/cJSON.h>
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
#include "heatmap_render.h"
#include "io.h"
#include "localize.h"
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

// ---- plots ------------------------------------------------------------------------------------------

typedef struct canvas {
    uint8_t* px;
    int W, H;
} canvas;

static const uint8_t kBlack[3] = {0, 0, 0}, kGray[3] = {110, 110, 110}, kNan[3] = {205, 205, 205};

static int canvas_new(canvas* c, int W, int H) {
    c->W = W;
    c->H = H;
    c->px = malloc((size_t)W * H * 3);
    if (!c->px) return 0;
    memset(c->px, 255, (size_t)W * H * 3);
    return 1;
}

static void rect(canvas* c, int x0, int y0, int x1, int y1, const uint8_t col[3]) {
    if (x0 < 0) x0 = 0;
    if (y0 < 0) y0 = 0;
    if (x1 > c->W) x1 = c->W;
    if (y1 > c->H) y1 = c->H;
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++) memcpy(c->px + ((size_t)y * c->W + x) * 3, col, 3);
}

static void text(canvas* c, int x, int y, const char* s, int scale, const uint8_t col[3]) {
    ds_draw_text(c->px, c->W, c->H, x, y, s, scale, col);
}

static void fmt_value(double v, char* buf, size_t cap) {
    if (isnan(v)) snprintf(buf, cap, "n/a");
    else if (v != 0 && (fabs(v) < 1e-3 || fabs(v) >= 1e4)) snprintf(buf, cap, "%.2e", v);
    else snprintf(buf, cap, "%.4f", v);
}

// A labelled heat grid: rows × cols cells colored with jet over [vmin, vmax] (NaN gray); a vertical line
// before column mark_col (< 0: none); a color bar with its range under the grid.
static int plot_grid(canvas* out, const char* title, const char* subtitle, int nr, const char* const* rlab, int nc,
                     const char* const* clab, const char* col_axis, const double* v, const char* legend,
                     int mark_col) {
    double vmin = INFINITY, vmax = -INFINITY;
    for (int i = 0; i < nr * nc; i++)
        if (!isnan(v[i])) {
            if (v[i] < vmin) vmin = v[i];
            if (v[i] > vmax) vmax = v[i];
        }
    if (vmin > vmax) vmin = vmax = 0;
    if (vmin > 0) vmin = 0;
    int cw = 600 / (nc ? nc : 1), ch = 420 / (nr ? nr : 1);
    cw = cw < 14 ? 14 : cw > 44 ? 44 : cw;
    ch = ch < 14 ? 14 : ch > 30 ? 30 : ch;
    int lw = 0;
    for (int i = 0; i < nr; i++) {
        int w = ds_text_width(rlab[i], 1);
        if (w > lw) lw = w;
    }
    int pad = 12, left = pad + lw + 8, top = pad + 26 + (subtitle ? 14 : 0) + 16;
    int gw = nc * cw, gh = nr * ch;
    int W = left + gw + pad, titlew = ds_text_width(title, 2) + 2 * pad, subw = subtitle ? ds_text_width(subtitle, 1) + 2 * pad : 0;
    if (W < titlew) W = titlew;
    if (W < subw) W = subw;
    if (W < 420) W = 420;
    int H = top + gh + 18 + 60;
    if (!canvas_new(out, W, H)) return 0;
    text(out, pad, pad, title, 2, kBlack);
    if (subtitle) text(out, pad, pad + 26, subtitle, 1, kGray);
    // column labels: every k-th so they do not overlap
    int maxw = 0;
    for (int j = 0; j < nc; j++) {
        int w = ds_text_width(clab[j], 1);
        if (w > maxw) maxw = w;
    }
    int every = (maxw + 6) / cw + 1;
    for (int j = 0; j < nc; j += every) {
        int w = ds_text_width(clab[j], 1);
        text(out, left + j * cw + (cw - w) / 2, top - 13, clab[j], 1, kBlack);
    }
    for (int i = 0; i < nr; i++) {
        text(out, left - 8 - ds_text_width(rlab[i], 1), top + i * ch + (ch - 8) / 2, rlab[i], 1, kBlack);
        for (int j = 0; j < nc; j++) {
            double x = v[(size_t)i * nc + j];
            uint8_t col[3];
            if (isnan(x)) memcpy(col, kNan, 3);
            else ds_jet(vmax > vmin ? (float)((x - vmin) / (vmax - vmin)) : 0.0f, col);
            rect(out, left + j * cw + 1, top + i * ch + 1, left + (j + 1) * cw, top + (i + 1) * ch, col);
        }
    }
    if (mark_col > 0 && mark_col < nc) rect(out, left + mark_col * cw - 1, top - 2, left + mark_col * cw + 1, top + gh + 2, kBlack);
    if (col_axis) text(out, left, top + gh + 6, col_axis, 1, kGray);
    // color bar
    int by = top + gh + 24, bw = 256, bx = left;
    if (bx + bw + pad > W) bx = pad;
    for (int x = 0; x < bw; x++) {
        uint8_t col[3];
        ds_jet((x + 0.5f) / bw, col);
        rect(out, bx + x, by, bx + x + 1, by + 12, col);
    }
    char a[32], b[32];
    fmt_value(vmin, a, sizeof a);
    fmt_value(vmax, b, sizeof b);
    text(out, bx, by + 16, a, 1, kBlack);
    text(out, bx + bw - ds_text_width(b, 1), by + 16, b, 1, kBlack);
    if (legend) text(out, bx, by + 30, legend, 1, kGray);
    return 1;
}

// Horizontal bars: one row per item (label + rank), one panel per metric (zero line, value printed).
static int plot_bars(canvas* out, const char* title, const char* subtitle, int n, const char* const* labels,
                     const int* ranks, int nm, const char* const* mnames, const double* vals) {
    int lw = 0;
    for (int i = 0; i < n; i++) {
        int w = ds_text_width(labels[i], 1);
        if (w > lw) lw = w;
    }
    int pad = 12, rankw = 30, left = pad + rankw + lw + 10, pw = 230, valw = 56, rh = 16;
    int top = pad + 26 + (subtitle ? 14 : 0) + 18;
    int W = left + nm * (pw + valw + 14) + pad, H = top + n * rh + pad + 4;
    int tw = ds_text_width(title, 2) + 2 * pad, sw = subtitle ? ds_text_width(subtitle, 1) + 2 * pad : 0;
    if (W < tw) W = tw;
    if (W < sw) W = sw;
    if (!canvas_new(out, W, H)) return 0;
    text(out, pad, pad, title, 2, kBlack);
    if (subtitle) text(out, pad, pad + 26, subtitle, 1, kGray);
    text(out, pad, top - 14, "rank", 1, kGray);
    static const uint8_t colors[4][3] = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44}, {148, 103, 189}};
    for (int m = 0; m < nm; m++) {
        int x0 = left + m * (pw + valw + 14);
        double lo = 0, hi = 0;
        for (int i = 0; i < n; i++) {
            double v = vals[(size_t)i * nm + m];
            if (isnan(v)) continue;
            if (v < lo) lo = v;
            if (v > hi) hi = v;
        }
        double span = hi - lo > 0 ? hi - lo : 1;
        int zx = x0 + (int)lround(-lo / span * pw);
        text(out, x0, top - 14, mnames[m], 1, kBlack);
        rect(out, zx, top - 2, zx + 1, top + n * rh, kGray);
        for (int i = 0; i < n; i++) {
            double v = vals[(size_t)i * nm + m];
            int y = top + i * rh;
            char buf[32];
            fmt_value(v, buf, sizeof buf);
            if (!isnan(v)) {
                int vx = x0 + (int)lround((v - lo) / span * pw);
                rect(out, vx < zx ? vx : zx, y + 2, vx < zx ? zx : (vx == zx ? zx + 1 : vx), y + rh - 2, colors[m % 4]);
            }
            text(out, x0 + pw + 6, y + 4, buf, 1, kBlack);
        }
    }
    for (int i = 0; i < n; i++) {
        char rk[16];
        snprintf(rk, sizeof rk, "%d", ranks ? ranks[i] : i + 1);
        text(out, pad, top + i * rh + 4, rk, 1, ranks && ranks[i] == 1 ? (const uint8_t[3]){200, 0, 0} : kBlack);
        text(out, pad + rankw, top + i * rh + 4, labels[i], 1, kBlack);
    }
    return 1;
}

// Stacks canvases vertically and writes a PNG.
static int write_stack(ds_err* e, const char* path, canvas* cs, int n) {
    int W = 0, H = 0;
    for (int i = 0; i < n; i++) {
        if (cs[i].W > W) W = cs[i].W;
        H += cs[i].H;
    }
    canvas all;
    if (!canvas_new(&all, W, H)) return ds_errf(e, DS_ERR_OOM, "out of memory drawing %s", path);
    int y = 0;
    for (int i = 0; i < n; i++) {
        for (int r = 0; r < cs[i].H; r++)
            memcpy(all.px + ((size_t)(y + r) * W) * 3, cs[i].px + (size_t)r * cs[i].W * 3, (size_t)cs[i].W * 3);
        y += cs[i].H;
    }
    int rc = ds_png_write(e, path, all.px, W, H, 3);
    free(all.px);
    return rc;
}

// ---- outputs ------------------------------------------------------------------------------------------

typedef struct ctxo {
    const char* dir;
    const ds_loc_result* r;
    const ds_loc_params* p;
    const char* model;
    const char* arch;
    const char* kind;
    const char* detector;
    ds_err e;
} ctxo;

static int write_text(ctxo* o, const char* name, char* buf, size_t len) {
    char* path = ds_path_join(o->dir, name);
    int rc = ds_write_file_atomic(&o->e, path, buf, len);
    free(path);
    free(buf);
    return rc;
}

static void csv_num(FILE* f, double v) {
    if (isnan(v)) fputs("nan", f);
    else fprintf(f, "%.9g", v);
}

static int write_png(ctxo* o, const char* name, canvas* cs, int n) {
    char* path = ds_path_join(o->dir, name);
    int rc = write_stack(&o->e, path, cs, n);
    for (int i = 0; i < n; i++) free(cs[i].px);
    free(path);
    return rc;
}

static const char* metric_name(const ds_loc_result* r) {
    int rb = r->rank_by == DS_LOC_RANK_AUTO ? (r->has_detector ? DS_LOC_RANK_DETECTOR : DS_LOC_RANK_MASS) : r->rank_by;
    return rb == DS_LOC_RANK_IMAGE ? "image change" : rb == DS_LOC_RANK_DETECTOR ? "detector drop" : "concept mass drop";
}

// Members of the provenance object, without braces, for neurons.json.
static char* provenance(const ctxo* o) {
    const ds_loc_params* p = o->p;
    cJSON* j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "model", o->model);
    cJSON_AddStringToObject(j, "concept", p->concept);
    cJSON_AddStringToObject(j, "kind", o->kind);
    cJSON_AddNumberToObject(j, "calls", o->r->n_calls);
    cJSON_AddNumberToObject(j, "steps", p->steps);
    cJSON_AddNumberToObject(j, "guidance", p->guidance);
    cJSON_AddNumberToObject(j, "seed", (double)p->seed);
    cJSON_AddNumberToObject(j, "prompts_with", p->n_with);
    cJSON_AddNumberToObject(j, "prompts_without", p->n_without);
    cJSON_AddStringToObject(j, "norm", "per-prompt column norm sqrt(sum over prompts and rows of (h_rj/|h_r|)^2 / prompts), conditional half");
    char* s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!s) return NULL;
    size_t n = strlen(s);
    if (n >= 2) {  // strip { }
        memmove(s, s + 1, n - 2);
        s[n - 2] = 0;
    }
    return s;
}

static int write_neurons(ctxo* o) {
    const ds_loc_result* r = o->r;
    const ds_loc_neurons* nr = &r->neurons;
    const ds_loc_sites* s = &r->sites;
    int rc;
    // neurons.json
    char* prov = provenance(o);
    char* json = NULL;
    rc = ds_loc_neurons_json(&o->e, nr, o->arch, prov, &json);
    free(prov);
    if (rc) return rc;
    if ((rc = write_text(o, "neurons.json", json, strlen(json)))) return rc;
    // neurons.csv
    char* buf = NULL;
    size_t len = 0;
    FILE* f = open_memstream(&buf, &len);
    if (!f) return ds_errf(&o->e, DS_ERR_OOM, "out of memory");
    fprintf(f, "block,label,neuron,rows,calls,norm_with,norm_without\n");
    for (int b = 0; b < s->n_ffn; b++) {
        const ds_loc_ffn* ff = &s->ffn[b];
        double* nw = calloc((size_t)ff->F, sizeof(double));
        double* nb = calloc((size_t)ff->F, sizeof(double));
        double* t = malloc(sizeof(double) * (size_t)ff->F);
        if (!nw || !nb || !t) { free(nw); free(nb); free(t); fclose(f); free(buf); return ds_errf(&o->e, DS_ERR_OOM, "out of memory"); }
        for (int c = 0; c < nr->tau; c++) {
            ds_loc_neurons_norms(nr, 0, c, b, t);
            for (int j = 0; j < ff->F; j++) nw[j] += t[j] / nr->tau;
            ds_loc_neurons_norms(nr, 1, c, b, t);
            for (int j = 0; j < ff->F; j++) nb[j] += t[j] / nr->tau;
        }
        char label[32];
        ds_loc_short_label(ff->block, label, sizeof label);
        for (int j = 0; j < ff->F; j++) {
            int rows = 0;
            for (int i = 0; i < ff->C; i++) rows += nr->keep[b][(size_t)i * ff->F + j];
            if (!rows) continue;
            fprintf(f, "%s,%s,%d,%d,%d,", ff->block, label, j, rows, nr->ncalls_col[b][j]);
            csv_num(f, nw[j]);
            fputc(',', f);
            csv_num(f, nb[j]);
            fputc('\n', f);
        }
        free(nw);
        free(nb);
        free(t);
    }
    fclose(f);
    if ((rc = write_text(o, "neurons.csv", buf, len))) return rc;
    // neuron_norms.npy: (2, calls, total_F)
    size_t per = (size_t)r->n_calls * (size_t)s->total_F;
    int maxF = 0;
    for (int b = 0; b < s->n_ffn; b++) maxF = s->ffn[b].F > maxF ? s->ffn[b].F : maxF;
    float* norms = malloc(sizeof(float) * per * 2);
    double* t = malloc(sizeof(double) * (size_t)maxF);
    if (!norms || !t) { free(norms); free(t); return ds_errf(&o->e, DS_ERR_OOM, "out of memory"); }
    for (int side = 0; side < 2; side++)
        for (int c = 0; c < r->n_calls; c++)
            for (int b = 0; b < s->n_ffn; b++) {
                ds_loc_neurons_norms(nr, side, c, b, t);
                for (int j = 0; j < s->ffn[b].F; j++)
                    norms[side * per + (size_t)c * s->total_F + s->ffn[b].off + j] = (float)t[j];
            }
    free(t);
    int64_t shape[3] = {2, r->n_calls, s->total_F};
    char* path = ds_path_join(o->dir, "neuron_norms.npy");
    rc = ds_npy_write(&o->e, path, norms, 3, shape);
    free(path);
    free(norms);
    if (rc) return rc;
    // neurons.png: per block × call, the fraction of the top-k budget selected
    double* v = malloc(sizeof(double) * (size_t)s->n_ffn * r->n_calls);
    const char** rl = malloc(sizeof(char*) * (size_t)s->n_ffn);
    char (*rlb)[48] = malloc(sizeof *rlb * (size_t)s->n_ffn);
    const char** cl = malloc(sizeof(char*) * (size_t)r->n_calls);
    char (*clb)[16] = malloc(sizeof *clb * (size_t)r->n_calls);
    if (!v || !rl || !rlb || !cl || !clb) { free(v); free(rl); free(rlb); free(cl); free(clb); return ds_errf(&o->e, DS_ERR_OOM, "out of memory"); }
    for (int b = 0; b < s->n_ffn; b++) {
        char lab[32];
        ds_loc_short_label(s->ffn[b].block, lab, sizeof lab);
        snprintf(rlb[b], sizeof rlb[b], "%s (%lld)", lab, (long long)nr->kept[b]);
        rl[b] = rlb[b];
        int k = (int)(nr->ratio * s->ffn[b].F);
        for (int c = 0; c < r->n_calls; c++)
            v[(size_t)b * r->n_calls + c] = k > 0 ? (double)nr->n_selected[(size_t)c * s->n_ffn + b] / ((double)k * s->ffn[b].C) : NAN;
    }
    for (int c = 0; c < r->n_calls; c++) {
        snprintf(clb[c], sizeof clb[c], "%d", c);
        cl[c] = clb[c];
    }
    char title[300], sub[300], axis[200];
    snprintf(title, sizeof title, "FFN concept neurons: '%.120s'", o->p->concept);
    snprintf(sub, sizeof sub, "share of each block's top-k (k = %g x F per row) with S(concept) > S(base); union over calls left of the line (tau = %d); (n) = kept",
             nr->ratio, nr->tau);
    snprintf(axis, sizeof axis, "UNet call (t = %.0f ... %.0f)", r->timesteps[0], r->timesteps[r->n_calls - 1]);
    canvas cv;
    rc = plot_grid(&cv, title, sub, s->n_ffn, rl, r->n_calls, cl, axis, v, "share of the top-k budget selected", nr->tau)
             ? write_png(o, "neurons.png", &cv, 1)
             : ds_errf(&o->e, DS_ERR_OOM, "out of memory drawing neurons.png");
    free(v);
    free(rl);
    free(rlb);
    free(cl);
    free(clb);
    return rc;
}

static void score_csv_fields(FILE* f, const ds_loc_score* sc) {
    csv_num(f, sc->mass_drop);
    fputc(',', f);
    csv_num(f, sc->image_change);
    fputc(',', f);
    csv_num(f, sc->detector_drop);
    fputc(',', f);
    csv_num(f, sc->score);
}

// bars of a score set (in rank order) with mass drop, image change (and the detector's drop)
static int score_bars(canvas* cv, const ds_loc_result* r, const char* title, const char* sub, const ds_loc_score* sc,
                      int n, const double* extra, const char* extra_name) {
    int* order = malloc(sizeof(int) * (size_t)(n ? n : 1));
    const char** labels = malloc(sizeof(char*) * (size_t)(n ? n : 1));
    int* ranks = malloc(sizeof(int) * (size_t)(n ? n : 1));
    int nm = 2 + (r->has_detector ? 1 : 0) + (extra ? 1 : 0);
    double* vals = malloc(sizeof(double) * (size_t)(n ? n : 1) * nm);
    const char* names[4];
    int ok = order && labels && ranks && vals;
    if (ok) {
        for (int i = 0; i < n; i++) order[sc[i].rank - 1] = i;
        int m = 0;
        names[m++] = "concept mass drop";
        names[m++] = "image change";
        if (r->has_detector) names[m++] = "detector drop";
        if (extra) names[m++] = extra_name;
        for (int q = 0; q < n; q++) {
            const ds_loc_score* x = &sc[order[q]];
            labels[q] = x->label;
            ranks[q] = x->rank;
            double* row = vals + (size_t)q * nm;
            int k = 0;
            row[k++] = x->mass_drop;
            row[k++] = x->image_change;
            if (r->has_detector) row[k++] = x->detector_drop;
            if (extra) row[k++] = extra[order[q]];
        }
        ok = plot_bars(cv, title, sub, n, labels, ranks, nm, names, vals);
    }
    free(order);
    free(labels);
    free(ranks);
    free(vals);
    return ok;
}

static int write_layers(ctxo* o) {
    const ds_loc_result* r = o->r;
    char* buf = NULL;
    size_t len = 0;
    FILE* f = open_memstream(&buf, &len);
    if (!f) return ds_errf(&o->e, DS_ERR_OOM, "out of memory");
    fprintf(f, "rank,window,first_layer,last_layer,label,mass_drop,image_change,detector_drop,score\n");
    for (int w = 0; w < r->n_windows; w++) {
        const ds_loc_score* sc = &r->windows[w];
        fprintf(f, "%d,%d,%s,%s,%s,", sc->rank, w, r->sites.attn[sc->layer_begin].path, r->sites.attn[sc->layer_end - 1].path,
                sc->label);
        score_csv_fields(f, sc);
        fputc('\n', f);
    }
    fclose(f);
    int rc = write_text(o, "layers.csv", buf, len);
    if (rc) return rc;
    char title[300], sub[300];
    snprintf(title, sizeof title, "Cross-attention layer windows: '%.120s'", o->p->concept);
    snprintf(sub, sizeof sub, "LocoGen: %d consecutive attn2 layers take K/V from the neutral prompt; ranked by %s", r->window,
             metric_name(r));
    canvas cv;
    if (!score_bars(&cv, r, title, sub, r->windows, r->n_windows, NULL, NULL))
        return ds_errf(&o->e, DS_ERR_OOM, "out of memory drawing layers.png");
    return write_png(o, "layers.png", &cv, 1);
}

static int write_heads(ctxo* o) {
    const ds_loc_result* r = o->r;
    const ds_loc_sites* s = &r->sites;
    int H = s->max_heads, L = s->n_attn;
    // mass ranks
    int n = 0;
    for (int l = 0; l < L; l++) n += s->attn[l].heads;
    ds_loc_score* mr = calloc((size_t)n + 1, sizeof *mr);
    if (!mr) return ds_errf(&o->e, DS_ERR_OOM, "out of memory");
    for (int l = 0, k = 0; l < L; l++)
        for (int h = 0; h < s->attn[l].heads; h++, k++) mr[k].mass_drop = r->head_mass[(size_t)l * H + h];
    ds_loc_rank(mr, n, DS_LOC_RANK_MASS, 0);
    char* buf = NULL;
    size_t len = 0;
    FILE* f = open_memstream(&buf, &len);
    if (!f) { free(mr); return ds_errf(&o->e, DS_ERR_OOM, "out of memory"); }
    fprintf(f, "layer,path,label,head,attention_mass,mass_rank,ablation_rank,mass_drop,image_change,detector_drop,score\n");
    for (int l = 0, k = 0; l < L; l++)
        for (int h = 0; h < s->attn[l].heads; h++, k++) {
            fprintf(f, "%d,%s,%s,%d,", l, s->attn[l].path, s->attn[l].label, h);
            csv_num(f, r->head_mass[(size_t)l * H + h]);
            fprintf(f, ",%d,", mr[k].rank);
            const ds_loc_score* sc = NULL;
            for (int q = 0; q < r->n_heads && !sc; q++)
                if (r->heads[q].layer_begin == l && r->heads[q].head == h) sc = &r->heads[q];
            if (sc) {
                fprintf(f, "%d,", sc->rank);
                score_csv_fields(f, sc);
            } else {
                fputs(",nan,nan,nan,nan", f);  // not ablated: no ablation rank
            }
            fputc('\n', f);
        }
    fclose(f);
    free(mr);
    int rc = write_text(o, "heads.csv", buf, len);
    if (rc) return rc;
    // heads.png: ablation score grid (when ablated) and the concept attention mass grid
    const char** rl = malloc(sizeof(char*) * (size_t)L);
    const char** cl = malloc(sizeof(char*) * (size_t)H);
    char (*clb)[16] = malloc(sizeof *clb * (size_t)H);
    double* v = malloc(sizeof(double) * (size_t)L * H);
    canvas cv[2];
    int ncv = 0;
    if (!rl || !cl || !clb || !v) rc = ds_errf(&o->e, DS_ERR_OOM, "out of memory");
    for (int l = 0; !rc && l < L; l++) rl[l] = s->attn[l].label;
    for (int h = 0; !rc && h < H; h++) {
        snprintf(clb[h], sizeof clb[h], "h%d", h);
        cl[h] = clb[h];
    }
    char title[300], sub[300];
    if (!rc && r->n_heads) {
        for (int i = 0; i < L * H; i++) v[i] = NAN;
        for (int k = 0; k < r->n_heads; k++) v[(size_t)r->heads[k].layer_begin * H + r->heads[k].head] = r->heads[k].score;
        snprintf(title, sizeof title, "Head ablation: '%.120s'", o->p->concept);
        snprintf(sub, sizeof sub, "each attn2 head's conditional probabilities zeroed; %s", metric_name(r));
        if (plot_grid(&cv[ncv], title, sub, L, rl, H, cl, "head", v, metric_name(r), -1)) ncv++;
        else rc = ds_errf(&o->e, DS_ERR_OOM, "out of memory drawing heads.png");
    }
    if (!rc) {
        for (int l = 0; l < L; l++)
            for (int h = 0; h < H; h++) v[(size_t)l * H + h] = h < s->attn[l].heads ? r->head_mass[(size_t)l * H + h] : NAN;
        snprintf(title, sizeof title, "Attention on the concept tokens: '%.120s'", o->p->concept);
        snprintf(sub, sizeof sub, "mean over prompts and calls of the attn2 probability mass on the concept's tokens (baseline runs)");
        if (plot_grid(&cv[ncv], title, sub, L, rl, H, cl, "head", v, "probability mass per query", -1)) ncv++;
        else rc = ds_errf(&o->e, DS_ERR_OOM, "out of memory drawing heads.png");
    }
    if (!rc) rc = write_png(o, "heads.png", cv, ncv);
    else
        for (int i = 0; i < ncv; i++) free(cv[i].px);
    free(rl);
    free(cl);
    free(clb);
    free(v);
    return rc;
}

static int write_timesteps(ctxo* o) {
    const ds_loc_result* r = o->r;
    double* wm = malloc(sizeof(double) * (size_t)(r->n_tsteps + 1));
    if (!wm) return ds_errf(&o->e, DS_ERR_OOM, "out of memory");
    for (int w = 0; w < r->n_tsteps; w++) {
        double s = 0;
        for (int c = r->tsteps[w].call_begin; c < r->tsteps[w].call_end; c++) s += r->call_mass[c];
        wm[w] = s / (r->tsteps[w].call_end - r->tsteps[w].call_begin);
    }
    char* buf = NULL;
    size_t len = 0;
    FILE* f = open_memstream(&buf, &len);
    if (!f) { free(wm); return ds_errf(&o->e, DS_ERR_OOM, "out of memory"); }
    fprintf(f, "rank,window,call_begin,call_end,t_begin,t_end,attention_mass,mass_drop,image_change,detector_drop,score\n");
    for (int w = 0; w < r->n_tsteps; w++) {
        const ds_loc_score* sc = &r->tsteps[w];
        fprintf(f, "%d,%d,%d,%d,%g,%g,", sc->rank, w, sc->call_begin, sc->call_end, r->timesteps[sc->call_begin],
                r->timesteps[sc->call_end - 1]);
        csv_num(f, wm[w]);
        fputc(',', f);
        score_csv_fields(f, sc);
        fputc('\n', f);
    }
    fclose(f);
    int rc = write_text(o, "timesteps.csv", buf, len);
    if (!rc) {
        char title[300], sub[300];
        snprintf(title, sizeof title, "Timestep windows: '%.120s'", o->p->concept);
        snprintf(sub, sizeof sub, "every attn2 takes K/V from the neutral prompt during %d calls; ranked by %s",
                 r->timestep_window, metric_name(r));
        canvas cv;
        if (!score_bars(&cv, r, title, sub, r->tsteps, r->n_tsteps, wm, "concept attention (baseline)"))
            rc = ds_errf(&o->e, DS_ERR_OOM, "out of memory drawing timesteps.png");
        else rc = write_png(o, "timesteps.png", &cv, 1);
    }
    free(wm);
    return rc;
}

static void add_num(cJSON* o, const char* k, double v) {
    if (isnan(v) || isinf(v)) cJSON_AddNullToObject(o, k);
    else cJSON_AddNumberToObject(o, k, v);
}

static cJSON* scores_json(const ds_loc_score* s, int n) {
    cJSON* a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) {
        cJSON* x = cJSON_CreateObject();
        cJSON_AddStringToObject(x, "label", s[i].label);
        cJSON_AddNumberToObject(x, "rank", s[i].rank);
        cJSON_AddNumberToObject(x, "layer_begin", s[i].layer_begin);
        cJSON_AddNumberToObject(x, "layer_end", s[i].layer_end);
        if (s[i].head >= 0) cJSON_AddNumberToObject(x, "head", s[i].head);
        cJSON_AddNumberToObject(x, "call_begin", s[i].call_begin);
        cJSON_AddNumberToObject(x, "call_end", s[i].call_end);
        add_num(x, "mass_drop", s[i].mass_drop);
        add_num(x, "image_change", s[i].image_change);
        add_num(x, "detector_drop", s[i].detector_drop);
        add_num(x, "score", s[i].score);
        cJSON_AddNumberToObject(x, "prompts", s[i].n_prompts);
        cJSON_AddItemToArray(a, x);
    }
    return a;
}

static cJSON* strings_json(const char* const* v, int n) {
    cJSON* a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateString(v[i]));
    return a;
}

static int write_summary(ctxo* o, const char* const* files, int n_files) {
    const ds_loc_result* r = o->r;
    const ds_loc_params* p = o->p;
    const ds_loc_sites* s = &r->sites;
    cJSON* j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "format", "diffscope-localize");
    cJSON_AddNumberToObject(j, "version", 1);
    cJSON_AddStringToObject(j, "diffscope", ds_version());
    cJSON_AddStringToObject(j, "model", o->model);
    cJSON_AddStringToObject(j, "arch", o->arch);
    cJSON_AddStringToObject(j, "concept", p->concept);
    cJSON_AddStringToObject(j, "kind", o->kind);
    cJSON* parts = cJSON_AddArrayToObject(j, "parts");
    const char* pn[4] = {"neurons", "layers", "heads", "timesteps"};
    for (int i = 0; i < 4; i++)
        if (p->parts & (1 << i)) cJSON_AddItemToArray(parts, cJSON_CreateString(pn[i]));
    cJSON_AddNumberToObject(j, "steps", p->steps);
    cJSON_AddNumberToObject(j, "guidance", p->guidance);
    cJSON_AddNumberToObject(j, "seed", (double)p->seed);
    cJSON_AddStringToObject(j, "negative", p->negative ? p->negative : "");
    cJSON_AddNumberToObject(j, "calls", r->n_calls);
    cJSON* ts = cJSON_AddArrayToObject(j, "timesteps");
    for (int c = 0; c < r->n_calls; c++) cJSON_AddItemToArray(ts, cJSON_CreateNumber(r->timesteps[c]));
    cJSON* pr = cJSON_AddObjectToObject(j, "prompts");
    cJSON_AddItemToObject(pr, "with", strings_json(p->with, p->n_with));
    cJSON_AddItemToObject(pr, "without", strings_json(p->without, p->n_without));
    if (p->n_neutral) cJSON_AddItemToObject(pr, "neutral", strings_json(p->neutral, p->n_neutral));
    else cJSON_AddStringToObject(pr, "neutral", "the base prompts, paired by index (cycled)");
    cJSON* layers = cJSON_AddArrayToObject(j, "cross_attention_layers");
    for (int l = 0; l < s->n_attn; l++) {
        cJSON* x = cJSON_CreateObject();
        cJSON_AddStringToObject(x, "path", s->attn[l].path);
        cJSON_AddStringToObject(x, "label", s->attn[l].label);
        cJSON_AddNumberToObject(x, "heads", s->attn[l].heads);
        cJSON_AddItemToArray(layers, x);
    }
    cJSON* blocks = cJSON_AddArrayToObject(j, "ffn_blocks");
    for (int b = 0; b < s->n_ffn; b++) {
        cJSON* x = cJSON_CreateObject();
        cJSON_AddStringToObject(x, "block", s->ffn[b].block);
        cJSON_AddNumberToObject(x, "in_features", s->ffn[b].F);
        cJSON_AddNumberToObject(x, "out_features", s->ffn[b].C);
        cJSON_AddNumberToObject(x, "offset", (double)s->ffn[b].off);
        if (r->has_neurons) cJSON_AddNumberToObject(x, "kept", (double)r->neurons.kept[b]);
        cJSON_AddItemToArray(blocks, x);
    }
    if (r->has_neurons) {
        const ds_loc_neurons* nr = &r->neurons;
        cJSON* x = cJSON_AddObjectToObject(j, "neurons");
        cJSON_AddNumberToObject(x, "ratio", nr->ratio);
        cJSON_AddNumberToObject(x, "tau", nr->tau);
        cJSON_AddNumberToObject(x, "union_min", nr->union_min);
        int64_t total = 0;
        for (int b = 0; b < s->n_ffn; b++) total += nr->kept[b];
        cJSON_AddNumberToObject(x, "kept", (double)total);
        cJSON* sel = cJSON_AddArrayToObject(x, "selected_per_call");  // (calls, blocks)
        for (int c = 0; c < r->n_calls; c++) {
            cJSON* row = cJSON_CreateArray();
            for (int b = 0; b < s->n_ffn; b++)
                cJSON_AddItemToArray(row, cJSON_CreateNumber((double)nr->n_selected[(size_t)c * s->n_ffn + b]));
            cJSON_AddItemToArray(sel, row);
        }
    }
    cJSON_AddStringToObject(j, "rank_by", metric_name(r));
    if (r->n_windows) {
        cJSON_AddNumberToObject(j, "window", r->window);
        cJSON_AddItemToObject(j, "layer_windows", scores_json(r->windows, r->n_windows));
    }
    if (r->n_heads) cJSON_AddItemToObject(j, "head_ablations", scores_json(r->heads, r->n_heads));
    if (r->n_tsteps) {
        cJSON_AddNumberToObject(j, "timestep_window", r->timestep_window);
        cJSON_AddItemToObject(j, "timestep_windows", scores_json(r->tsteps, r->n_tsteps));
    }
    if (p->parts & (DS_LOC_LAYERS | DS_LOC_HEADS | DS_LOC_TIMESTEPS)) {
        cJSON* hm = cJSON_AddArrayToObject(j, "head_attention_mass");  // (layers, heads)
        for (int l = 0; l < s->n_attn; l++) {
            cJSON* row = cJSON_CreateArray();
            for (int h = 0; h < s->attn[l].heads; h++)
                cJSON_AddItemToArray(row, cJSON_CreateNumber(r->head_mass[(size_t)l * s->max_heads + h]));
            cJSON_AddItemToArray(hm, row);
        }
        cJSON* cm = cJSON_AddArrayToObject(j, "call_attention_mass");
        for (int c = 0; c < r->n_calls; c++) cJSON_AddItemToArray(cm, cJSON_CreateNumber(r->call_mass[c]));
    }
    if (o->detector) {
        cJSON_AddStringToObject(j, "detector", o->detector);
        add_num(j, "detector_presence_baseline", r->detector_base);
    } else {
        cJSON_AddNullToObject(j, "detector");
    }
    cJSON_AddNumberToObject(j, "generations", r->runs);
    cJSON_AddNumberToObject(j, "seconds", r->seconds);
    cJSON_AddItemToObject(j, "files", strings_json(files, n_files));
    char* text = cJSON_Print(j);
    cJSON_Delete(j);
    if (!text) return ds_errf(&o->e, DS_ERR_OOM, "out of memory");
    size_t n = strlen(text);
    char* t2 = realloc(text, n + 2);
    if (t2) { text = t2; text[n++] = '\n'; text[n] = 0; }
    return write_text(o, "summary.json", text, n);
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
    int per_side = 10, steps = 20, width = 0, height = 0, tau = 0, window = 3, tw = 0, head_prompts = 2, quiet = 0;
    float guidance = -1.0f, ratio = -1.0f, union_min = 0.0f;
    uint64_t seed = 0;
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
        {"sampler", ARG_STR, &sampler, "NAME", "default|ddim|euler|euler_a|dpmpp_2m|pndm", 1, 0, 0},
        {"width", ARG_INT, &width, "W", "image width (default: the model's native size)", 8, 16384, 0},
        {"height", ARG_INT, &height, "H", "image height", 8, 16384, 0},
        {"ratio", ARG_FLOAT, &ratio, "F", "neurons: top ratio x F columns per output row, (0, 1] (default 0.02 objects, 0.01 styles)", 0, 1, 0},
        {"tau", ARG_INT, &tau, "N", "neurons: union over the first N UNet calls, 1..255 (default: 20% of the calls)", 1, 255, 0},
        {"union-min", ARG_FLOAT, &union_min, "F", "neurons: keep entries selected at more than F x tau of those calls, [0, 1) (default 0: union)", 0, 0.999999, 0},
        {"window", ARG_INT, &window, "N", "layers: cross-attention layers per LocoGen window (default 3)", 1, 1000, 0},
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
        ctxo o = {.dir = out, .r = &r, .p = &p, .model = model ? model : "(embedded default)", .arch = info.arch_name,
                  .kind = kind, .detector = (det.n || det.word_kind >= 0) ? "shapes" : NULL};
        const char* files[16];
        int nf = 0;
        if (!rc && r.has_neurons) {
            rc = write_neurons(&o);
            files[nf++] = "neurons.json";
            files[nf++] = "neurons.csv";
            files[nf++] = "neuron_norms.npy";
            files[nf++] = "neurons.png";
        }
        if (!rc && r.n_windows) {
            rc = write_layers(&o);
            files[nf++] = "layers.csv";
            files[nf++] = "layers.png";
        }
        if (!rc && (parts & (DS_LOC_LAYERS | DS_LOC_HEADS | DS_LOC_TIMESTEPS))) {
            rc = write_heads(&o);
            files[nf++] = "heads.csv";
            files[nf++] = "heads.png";
        }
        if (!rc && r.n_tsteps) {
            rc = write_timesteps(&o);
            files[nf++] = "timesteps.csv";
            files[nf++] = "timesteps.png";
        }
        files[nf++] = "summary.json";
        if (!rc) rc = write_summary(&o, files, nf);
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
                printf("%s (by %s):\n", names[si], metric_name(&r));
                for (int rk = 1; rk <= (ns[si] < 5 ? ns[si] : 5); rk++)
                    for (int i = 0; i < ns[si]; i++) {
                        const ds_loc_score* sc = &sets[si][i];
                        if (sc->rank != rk) continue;
                        char a[32], b[32], d[32];
                        fmt_value(sc->mass_drop, a, sizeof a);
                        fmt_value(sc->image_change, b, sizeof b);
                        fmt_value(sc->detector_drop, d, sizeof d);
                        printf("  %d. %-28s mass drop %s  image change %s%s%s\n", rk, sc->label, a, b,
                               r.has_detector ? "  detector drop " : "", r.has_detector ? d : "");
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
