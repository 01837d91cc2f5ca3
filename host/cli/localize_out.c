// localize_out.c — the files of a `diffscope localize` run: neurons.json / neurons.csv / neuron_norms.npy /
// neurons.png, layers.csv/png, heads.csv/png, timesteps.csv/png, prompts.csv (every score on every concept
// prompt, for paired comparisons) and summary.json; plots drawn with the 8×8 font of heatmap_render.h. Every
// file is written to a temporary name and renamed. Formats: docs/localization.md.
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "diffscope/diffscope.h"
#include "heatmap_render.h"
#include "io.h"
#include "localize_out.h"

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

void loc_fmt_value(double v, char* buf, size_t cap) {
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
    loc_fmt_value(vmin, a, sizeof a);
    loc_fmt_value(vmax, b, sizeof b);
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
            loc_fmt_value(v, buf, sizeof buf);
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

static int write_text(loc_out* o, const char* name, char* buf, size_t len) {
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

static int write_png(loc_out* o, const char* name, canvas* cs, int n) {
    char* path = ds_path_join(o->dir, name);
    int rc = write_stack(&o->e, path, cs, n);
    for (int i = 0; i < n; i++) free(cs[i].px);
    free(path);
    return rc;
}

const char* loc_metric_name(const ds_loc_result* r) {
    int rb = r->rank_by == DS_LOC_RANK_AUTO ? (r->has_detector ? DS_LOC_RANK_DETECTOR : DS_LOC_RANK_MASS) : r->rank_by;
    return rb == DS_LOC_RANK_IMAGE ? "image change" : rb == DS_LOC_RANK_DETECTOR ? "detector drop" : "concept mass drop";
}

// Members of the provenance object, without braces, for neurons.json.
static char* provenance(const loc_out* o) {
    const ds_loc_params* p = o->p;
    cJSON* j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "model", o->model);
    cJSON_AddStringToObject(j, "concept", p->concept);
    cJSON_AddStringToObject(j, "kind", o->kind);
    cJSON_AddNumberToObject(j, "calls", o->r->n_calls);
    cJSON_AddNumberToObject(j, "steps", p->steps);
    cJSON_AddNumberToObject(j, "guidance", p->guidance);
    cJSON_AddNumberToObject(j, "seed", (double)p->seed);
    cJSON_AddBoolToObject(j, "seed_per_prompt", p->seed_per_prompt);
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

static int write_neurons(loc_out* o) {
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

// mass_drop,image_change,detector_drop,score,score_se
static void score_csv_fields(FILE* f, const ds_loc_score* sc) {
    csv_num(f, sc->mass_drop);
    fputc(',', f);
    csv_num(f, sc->image_change);
    fputc(',', f);
    csv_num(f, sc->detector_drop);
    fputc(',', f);
    csv_num(f, sc->score);
    fputc(',', f);
    csv_num(f, sc->score_se);
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

static int write_layers(loc_out* o) {
    const ds_loc_result* r = o->r;
    char* buf = NULL;
    size_t len = 0;
    FILE* f = open_memstream(&buf, &len);
    if (!f) return ds_errf(&o->e, DS_ERR_OOM, "out of memory");
    fprintf(f, "rank,window,first_layer,last_layer,label,mass_drop,image_change,detector_drop,score,score_se\n");
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
             loc_metric_name(r));
    canvas cv;
    if (!score_bars(&cv, r, title, sub, r->windows, r->n_windows, NULL, NULL))
        return ds_errf(&o->e, DS_ERR_OOM, "out of memory drawing layers.png");
    return write_png(o, "layers.png", &cv, 1);
}

static int write_heads(loc_out* o) {
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
    fprintf(f, "layer,path,label,head,attention_mass,attention_mass_se,mass_rank,ablation_rank,mass_drop,image_change,"
               "detector_drop,score,score_se\n");
    for (int l = 0, k = 0; l < L; l++)
        for (int h = 0; h < s->attn[l].heads; h++, k++) {
            fprintf(f, "%d,%s,%s,%d,", l, s->attn[l].path, s->attn[l].label, h);
            csv_num(f, r->head_mass[(size_t)l * H + h]);
            fputc(',', f);
            csv_num(f, r->head_mass_se[(size_t)l * H + h]);
            fprintf(f, ",%d,", mr[k].rank);
            const ds_loc_score* sc = NULL;
            for (int q = 0; q < r->n_heads && !sc; q++)
                if (r->heads[q].layer_begin == l && r->heads[q].head == h) sc = &r->heads[q];
            if (sc) {
                fprintf(f, "%d,", sc->rank);
                score_csv_fields(f, sc);
            } else {
                fputs(",nan,nan,nan,nan,nan", f);  // not ablated: no ablation rank
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
        snprintf(sub, sizeof sub, "each attn2 head's conditional probabilities zeroed; %s", loc_metric_name(r));
        if (plot_grid(&cv[ncv], title, sub, L, rl, H, cl, "head", v, loc_metric_name(r), -1)) ncv++;
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

static int write_timesteps(loc_out* o) {
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
    fprintf(f, "rank,window,call_begin,call_end,t_begin,t_end,attention_mass,mass_drop,image_change,detector_drop,score,"
               "score_se\n");
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
                 r->timestep_window, loc_metric_name(r));
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
        add_num(x, "mass_drop_se", s[i].mass_drop_se);
        add_num(x, "image_change_se", s[i].image_change_se);
        add_num(x, "detector_drop_se", s[i].detector_drop_se);
        add_num(x, "score_se", s[i].score_se);
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

static int write_summary(loc_out* o, const char* const* files, int n_files) {
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
    cJSON_AddBoolToObject(j, "seed_per_prompt", p->seed_per_prompt);
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
    cJSON_AddStringToObject(j, "rank_by", loc_metric_name(r));
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
        cJSON* hs = cJSON_AddArrayToObject(j, "head_attention_mass_se");  // (layers, heads); null below 2 prompts
        for (int l = 0; l < s->n_attn; l++) {
            cJSON* row = cJSON_CreateArray();
            for (int h = 0; h < s->attn[l].heads; h++) {
                double v = r->head_mass_se[(size_t)l * s->max_heads + h];
                cJSON_AddItemToArray(row, isnan(v) ? cJSON_CreateNull() : cJSON_CreateNumber(v));
            }
            cJSON_AddItemToArray(hs, row);
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

// prompts.csv: every concept prompt's own numbers, for paired comparisons (is window A's lead over window B
// more than the prompts' noise?): its baseline attention mass on the concept per attn2 layer (mean over heads
// and calls), and every intervention's scores on it. Long format, one row per (prompt, thing).
static int write_prompts(loc_out* o) {
    const ds_loc_result* r = o->r;
    const ds_loc_sites* s = &r->sites;
    char* buf = NULL;
    size_t len = 0;
    FILE* f = open_memstream(&buf, &len);
    if (!f) return ds_errf(&o->e, DS_ERR_OOM, "out of memory");
    fprintf(f, "prompt,part,label,attention_mass,mass_drop,image_change,detector_drop\n");
    const ds_loc_score* sets[3] = {r->windows, r->heads, r->tsteps};
    int ns[3] = {r->n_windows, r->n_heads, r->n_tsteps};
    const char* part[3] = {"window", "head", "timestep"};
    for (int i = 0; i < r->n_with; i++) {
        for (int l = 0; l < s->n_attn; l++) {
            fprintf(f, "%d,layer,%s,", i, s->attn[l].label);
            csv_num(f, r->prompt_layer_mass[(size_t)i * s->n_attn + l]);
            fputs(",nan,nan,nan\n", f);
        }
        for (int g = 0; g < 3; g++)
            for (int k = 0; k < ns[g]; k++) {
                const double* v = sets[g][k].per_prompt + (size_t)i * 3;
                if (isnan(v[0]) && isnan(v[1]) && isnan(v[2])) continue;  // not run on this prompt
                fprintf(f, "%d,%s,%s,nan,", i, part[g], sets[g][k].label);
                csv_num(f, v[0]);
                fputc(',', f);
                csv_num(f, v[1]);
                fputc(',', f);
                csv_num(f, v[2]);
                fputc('\n', f);
            }
    }
    fclose(f);
    return write_text(o, "prompts.csv", buf, len);
}

// ---- everything -------------------------------------------------------------------------------------

int loc_write_all(loc_out* o, int* n_files) {
    const ds_loc_result* r = o->r;
    int rc = 0;
    const char* files[16];
    int nf = 0;
    if (!rc && r->has_neurons) {
        rc = write_neurons(o);
        files[nf++] = "neurons.json";
        files[nf++] = "neurons.csv";
        files[nf++] = "neuron_norms.npy";
        files[nf++] = "neurons.png";
    }
    if (!rc && r->n_windows) {
        rc = write_layers(o);
        files[nf++] = "layers.csv";
        files[nf++] = "layers.png";
    }
    if (!rc && (o->p->parts & (DS_LOC_LAYERS | DS_LOC_HEADS | DS_LOC_TIMESTEPS))) {
        rc = write_heads(o);
        files[nf++] = "heads.csv";
        files[nf++] = "heads.png";
        if (!rc) rc = write_prompts(o);
        files[nf++] = "prompts.csv";
    }
    if (!rc && r->n_tsteps) {
        rc = write_timesteps(o);
        files[nf++] = "timesteps.csv";
        files[nf++] = "timesteps.png";
    }
    files[nf++] = "summary.json";
    if (!rc) rc = write_summary(o, files, nf);
    *n_files = nf;
    return rc;
}
