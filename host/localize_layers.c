// localize_layers.c — the whole localization run (ds_localize): the baseline generations with the
// neuron statistics and the concept's attention mass, the LocoGen layer windows, head ablations and
// timestep windows, their scores and rankings. See localize.h and docs/localization.md.
#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>

#include "diffscope/heatmap.h"
#include "localize.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void ds_loc_params_init(ds_loc_params* p) {
    memset(p, 0, sizeof *p);
    p->negative = "";
    p->parts = DS_LOC_ALL;
    p->steps = 20;
    p->guidance = 7.5f;
    p->ratio = 0.02;
    p->head_prompts = 2;
}

static void logf_(const ds_loc_params* p, const char* fmt, ...) {
    if (!p->log) return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    p->log(p->log_user, buf);
}

void ds_loc_result_free(ds_loc_result* r) {
    ds_loc_neurons_free(&r->neurons);
    ds_loc_sites_free(&r->sites);
    free(r->timesteps);
    free(r->head_mass);
    free(r->head_mass_se);
    free(r->call_mass);
    free(r->prompt_layer_mass);
    free(r->prompt_scores);
    free(r->windows);
    free(r->heads);
    free(r->tsteps);
    memset(r, 0, sizeof *r);
}

static double metric(const ds_loc_score* s, int rank_by, int has_detector) {
    if (rank_by == DS_LOC_RANK_AUTO) rank_by = has_detector ? DS_LOC_RANK_DETECTOR : DS_LOC_RANK_MASS;
    return rank_by == DS_LOC_RANK_IMAGE ? s->image_change : rank_by == DS_LOC_RANK_DETECTOR ? s->detector_drop : s->mass_drop;
}

static double metric_se(const ds_loc_score* s, int rank_by, int has_detector) {
    if (rank_by == DS_LOC_RANK_AUTO) rank_by = has_detector ? DS_LOC_RANK_DETECTOR : DS_LOC_RANK_MASS;
    return rank_by == DS_LOC_RANK_IMAGE ? s->image_change_se
         : rank_by == DS_LOC_RANK_DETECTOR ? s->detector_drop_se : s->mass_drop_se;
}

// Mean and standard error of the mean (sample sd / √n, two passes) of v[0], v[stride], ... skipping NaN;
// returns the count. mean NaN without values, se NaN below 2.
static int mean_se(const double* v, int n, size_t stride, double* mean, double* se) {
    double s = 0;
    int k = 0;
    for (int i = 0; i < n; i++)
        if (!isnan(v[(size_t)i * stride])) { s += v[(size_t)i * stride]; k++; }
    *mean = k ? s / k : NAN;
    double q = 0;
    for (int i = 0; i < n; i++)
        if (!isnan(v[(size_t)i * stride])) q += (v[(size_t)i * stride] - *mean) * (v[(size_t)i * stride] - *mean);
    *se = k >= 2 ? sqrt(q / (k - 1) / k) : NAN;
    return k;
}

void ds_loc_rank(ds_loc_score* s, int n, int rank_by, int has_detector) {
    int* idx = malloc(sizeof(int) * (size_t)(n ? n : 1));
    if (!idx) return;
    for (int i = 0; i < n; i++) {
        idx[i] = i;
        s[i].score = metric(&s[i], rank_by, has_detector);
        s[i].score_se = metric_se(&s[i], rank_by, has_detector);
    }
    // insertion sort (n is small): score descending, NaN last; equal scores (the detector's drop moves in
    // steps of 1/prompts) by the image change, then by index
    int primary = rank_by == DS_LOC_RANK_AUTO ? (has_detector ? DS_LOC_RANK_DETECTOR : DS_LOC_RANK_MASS) : rank_by;
    int second = primary == DS_LOC_RANK_IMAGE ? DS_LOC_RANK_MASS : DS_LOC_RANK_IMAGE;
    for (int i = 1; i < n; i++) {
        int v = idx[i], j = i - 1;
        double sv = s[v].score, tv = metric(&s[v], second, has_detector);
        while (j >= 0) {
            double sj = s[idx[j]].score, tj = metric(&s[idx[j]], second, has_detector);
            int before = isnan(sj) ? !isnan(sv) : (!isnan(sv) && (sv > sj || (sv == sj && !isnan(tv) && (isnan(tj) || tv > tj))));
            if (!before) break;
            idx[j + 1] = idx[j];
            j--;
        }
        idx[j + 1] = v;
    }
    for (int r = 0; r < n; r++) s[idx[r]].rank = r + 1;
    free(idx);
}

// The means and standard errors of each score from its per-prompt records (NaN: not scored).
static void finish_scores(ds_loc_score* s, int n, int n_with) {
    for (int i = 0; i < n; i++) {
        mean_se(s[i].per_prompt + 0, n_with, 3, &s[i].mass_drop, &s[i].mass_drop_se);
        s[i].n_prompts = mean_se(s[i].per_prompt + 1, n_with, 3, &s[i].image_change, &s[i].image_change_se);
        mean_se(s[i].per_prompt + 2, n_with, 3, &s[i].detector_drop, &s[i].detector_drop_se);
    }
}

typedef struct loc_job {
    ds_context* ctx;
    ds_model* m;
    const ds_loc_params* p;
    ds_loc_result* r;
    int cfg;
    size_t cells;
    int done, total;
} loc_job;

static int progress(loc_job* j, const char* what) {
    j->done++;
    if (j->p->progress && j->p->progress(j->p->progress_user, j->done, j->total, what)) {
        ds_errf(&j->ctx->err, DS_ERR_CANCELLED, "localize: cancelled by the progress callback");
        return DS_ERR_CANCELLED;
    }
    return DS_OK;
}

static double image_change(const ds_image* a, const ds_image* b) {
    size_t n = (size_t)a->width * (size_t)a->height * 3;
    double s = 0;
    for (size_t i = 0; i < n; i++) s += fabs((double)a->pixels[i] - (double)b->pixels[i]);
    return n ? s / (255.0 * (double)n) : 0;
}

static int detect(loc_job* j, const ds_image* img, const char* prompt, double* presence) {
    float pr = 0;
    int rc = j->p->detector(j->p->detector_user, img->pixels, img->width, img->height, prompt, j->p->concept, &pr);
    if (rc) {
        if (!j->ctx->err.code) ds_errf(&j->ctx->err, rc, "localize: the detector failed on '%s'", prompt);
        return rc;
    }
    *presence = pr;
    return DS_OK;
}

// Runs one intervention on a prompt and records its scores in rec (mass_drop, image_change, detector_drop;
// NaN where there is none: no concept mass left to compare, no detector).
static int run_iv(loc_job* j, const ds_loc_run_in* base_in, const ds_loc_iv* iv, const double* base_mass,
                  const ds_image* base_img, double base_presence, double* mass, uint8_t* modified, double* rec,
                  const char* what) {
    const ds_loc_sites* s = &j->r->sites;
    int n_calls = j->r->n_calls;
    ds_loc_run_in in = *base_in;
    in.iv = iv;
    in.acc = NULL;
    in.mass = mass;
    in.modified = modified;
    ds_image img = {0};
    int rc = ds_loc_run(j->ctx, j->m, s, n_calls, &in, &img);
    if (rc) return rc;
    // mass over S = unmodified cells at calls >= the intervention's first call
    double mb = 0, mi = 0;
    size_t nS = 0;
    for (int l = 0; l < s->n_attn; l++)
        for (int h = 0; h < s->attn[l].heads; h++)
            for (int c = iv->call_begin; c < n_calls; c++) {
                size_t q = ((size_t)l * s->max_heads + h) * n_calls + c;
                if (modified[q]) continue;
                mb += base_mass[q];
                mi += mass[q];
                nS++;
            }
    rec[0] = nS && mb > 0 ? 1.0 - mi / mb : NAN;
    rec[1] = image_change(&img, base_img);
    rec[2] = NAN;
    if (j->p->detector) {
        double pr = 0;
        rc = detect(j, &img, in.prompt, &pr);
        if (!rc) rec[2] = base_presence - pr;
    }
    ds_image_free(&img);
    return rc ? rc : progress(j, what);
}

static int concept_rows(ds_context* ctx, ds_model* m, const char* prompt, const char* concept, int i, int** rows,
                        int* n) {
    ds_heatmap_wordlist wl = {0};
    *rows = NULL;
    *n = 0;
    if (ds_heatmap_words(ctx, m, prompt, concept, &wl) != DS_OK) {
        char msg[640];
        const char* why = ctx->err.msg;
        if (!strncmp(why, "--words: ", 9)) why += 9;  // ds_heatmap_words speaks the heatmap CLI's flag
        snprintf(msg, sizeof msg, "%.600s", why);
        snprintf(ctx->err.msg, sizeof ctx->err.msg,
                 "concept prompt %d '%.200s': %s (every prompt with the concept must contain it)", i + 1, prompt, msg);
        return ctx->err.code ? ctx->err.code : DS_ERR_ARG;
    }
    int total = 0;
    for (int w = 0; w < wl.n; w++) total += wl.words[w].n_tokens;
    int* v = malloc(sizeof(int) * (size_t)(total ? total : 1));
    if (!v) { ds_heatmap_words_free(&wl); return ds_errf(&ctx->err, DS_ERR_OOM, "out of memory"); }
    int k = 0;
    for (int w = 0; w < wl.n; w++)
        for (int t = 0; t < wl.words[w].n_tokens; t++) {
            int row = wl.words[w].tokens[t], dup = 0;
            for (int q = 0; q < k; q++) dup |= v[q] == row;
            if (!dup) v[k++] = row;
        }
    ds_heatmap_words_free(&wl);
    *rows = v;
    *n = k;
    return DS_OK;
}

int ds_localize(ds_context* ctx, ds_model* m, const ds_loc_params* p, ds_loc_result* out) {
    ds_err* e = &ctx->err;
    ds_err_clear(e);
    memset(out, 0, sizeof *out);
    double t0 = now_s();
    int parts = p->parts & DS_LOC_ALL;
    int attn_parts = parts & (DS_LOC_LAYERS | DS_LOC_HEADS | DS_LOC_TIMESTEPS);
    if (!p->concept || !*p->concept) return ds_errf(e, DS_ERR_ARG, "localize: the concept is empty");
    if (!parts) return ds_errf(e, DS_ERR_ARG, "localize: nothing to do (no part selected)");
    if (p->n_with < 1) return ds_errf(e, DS_ERR_ARG, "localize: no prompts with the concept");
    if ((parts & DS_LOC_NEURONS) && p->n_without < 1)
        return ds_errf(e, DS_ERR_ARG, "localize: neurons need base prompts (without the concept)");
    if ((parts & (DS_LOC_LAYERS | DS_LOC_TIMESTEPS)) && p->n_neutral < 1 && p->n_without < 1)
        return ds_errf(e, DS_ERR_ARG, "localize: layer and timestep windows need neutral prompts (or base prompts)");
    if (!(p->ratio > 0 && p->ratio <= 1)) return ds_errf(e, DS_ERR_ARG, "localize: ratio %g: expected (0, 1]", p->ratio);
    if (p->union_min < 0 || p->union_min >= 1) return ds_errf(e, DS_ERR_ARG, "localize: union-min %g: expected [0, 1)", p->union_min);
    if (p->rank_by == DS_LOC_RANK_DETECTOR && !p->detector)
        return ds_errf(e, DS_ERR_ARG, "localize: ranking by the detector needs a detector");
    for (int i = 0; i < p->n_with; i++)
        if (!p->with[i] || !*p->with[i]) return ds_errf(e, DS_ERR_ARG, "localize: concept prompt %d is empty", i + 1);

    ds_loc_result* r = out;
    int rc = ds_loc_sites_init(e, m, &r->sites);
    if (!rc) rc = ds_loc_calls(e, m, p->sampler, p->steps, &r->n_calls, &r->timesteps);
    if (rc) { ds_loc_result_free(r); return rc; }
    const ds_loc_sites* s = &r->sites;
    int n_calls = r->n_calls;
    r->rank_by = p->rank_by;
    r->has_detector = p->detector != NULL;
    int tau = p->tau > 0 ? p->tau : (int)lround(0.2 * n_calls);
    if (tau < 1) tau = 1;
    if (tau > n_calls) tau = n_calls;
    if (tau > 255) tau = 255;
    r->tau = tau;
    int tw = p->timestep_window > 0 ? p->timestep_window : (n_calls + 4) / 5;
    if (tw > n_calls) tw = n_calls;
    r->timestep_window = tw;
    // LocoGen's window is 3 of SD1.x's 16 attn2 layers; on a shallower model the same 3 would cover far more of
    // the network (3 of 7 on the testbed), so the default keeps the fraction: round(3·L/16), at least 1
    int window = p->window > 0 ? p->window : ds_loc_default_window(s->n_attn);
    if (window > s->n_attn) window = s->n_attn;
    r->window = window;
    int head_n = p->head_prompts <= 0 || p->head_prompts > p->n_with ? p->n_with : p->head_prompts;
    int n_heads_total = 0, n_heads_sel = 0;
    for (int l = 0; l < s->n_attn; l++) {
        n_heads_total += s->attn[l].heads;
        if (ds_loc_layer_match(&s->attn[l], p->head_layers)) n_heads_sel += s->attn[l].heads;
    }
    if ((parts & DS_LOC_HEADS) && !n_heads_sel) {
        int rc2 = ds_errf(e, DS_ERR_ARG, "localize: head layers '%s' match no cross-attention layer (they are %s .. %s, "
                          "labelled %s .. %s)", p->head_layers, s->attn[0].path, s->attn[s->n_attn - 1].path,
                          s->attn[0].label, s->attn[s->n_attn - 1].label);
        ds_loc_result_free(r);
        return rc2;
    }
    r->n_windows = (parts & DS_LOC_LAYERS) ? s->n_attn - window + 1 : 0;
    r->n_tsteps = (parts & DS_LOC_TIMESTEPS) ? (n_calls + tw - 1) / tw : 0;
    r->n_heads = (parts & DS_LOC_HEADS) ? n_heads_sel : 0;

    loc_job j = {ctx, m, p, r, p->guidance > 1.0f, (size_t)s->n_attn * s->max_heads * n_calls, 0, 0};
    j.total = p->n_with * (1 + r->n_windows + r->n_tsteps) + head_n * r->n_heads +
              ((parts & DS_LOC_NEURONS) ? p->n_without : 0);
    logf_(p, "%d concept prompts, %d base prompts, %d UNet calls a run; %d transformer blocks, %d cross-attention layers",
          p->n_with, p->n_without, n_calls, s->n_ffn, s->n_attn);
    if (parts & DS_LOC_NEURONS)
        logf_(p, "neurons: ratio %g, union over the first %d calls", p->ratio, tau);
    if (r->n_windows)
        logf_(p, "layers: %d windows of %d cross-attention layer%s%s", r->n_windows, window, window == 1 ? "" : "s",
              p->window > 0 ? "" : " (the default: LocoGen's 3 of 16 scaled to this model's depth)");
    if (r->n_heads) logf_(p, "heads: %d heads ablated on %d prompt%s", r->n_heads, head_n, head_n == 1 ? "" : "s");
    if (r->n_tsteps) logf_(p, "timesteps: %d windows of %d calls", r->n_tsteps, tw);
    logf_(p, "%d generations", j.total);

    // buffers
    int n_scores = r->n_windows + r->n_heads + r->n_tsteps;
    r->n_with = p->n_with;
    r->prompt_scores = malloc(sizeof(double) * ((size_t)n_scores * p->n_with * 3 + 1));
    r->prompt_layer_mass = calloc((size_t)p->n_with * s->n_attn, sizeof(double));
    r->head_mass_se = malloc(sizeof(double) * (size_t)s->n_attn * s->max_heads);
    double* prompt_head_mass = calloc((size_t)p->n_with * s->n_attn * s->max_heads, sizeof(double));
    r->windows = calloc((size_t)r->n_windows + 1, sizeof(ds_loc_score));
    r->heads = calloc((size_t)r->n_heads + 1, sizeof(ds_loc_score));
    r->tsteps = calloc((size_t)r->n_tsteps + 1, sizeof(ds_loc_score));
    r->head_mass = calloc((size_t)s->n_attn * s->max_heads, sizeof(double));
    r->call_mass = calloc((size_t)n_calls, sizeof(double));
    double* base_mass = malloc(sizeof(double) * j.cells);
    double* mass = malloc(sizeof(double) * j.cells);
    uint8_t* modified = malloc(j.cells);
    if (!r->prompt_scores || !r->prompt_layer_mass || !r->head_mass_se || !prompt_head_mass || !r->windows ||
        !r->heads || !r->tsteps || !r->head_mass || !r->call_mass || !base_mass || !mass || !modified)
        rc = ds_errf(e, DS_ERR_OOM, "localize: out of memory");
    // every score's per-prompt records: windows, heads, timestep windows, in that order; NaN until scored
    for (size_t q = 0; !rc && q < (size_t)n_scores * p->n_with * 3; q++) r->prompt_scores[q] = NAN;
    ds_loc_score* all_scores[3] = {r->windows, r->heads, r->tsteps};
    int all_n[3] = {r->n_windows, r->n_heads, r->n_tsteps};
    for (int g = 0, k = 0; !rc && g < 3; g++)
        for (int i = 0; i < all_n[g]; i++, k++) all_scores[g][i].per_prompt = r->prompt_scores + (size_t)k * p->n_with * 3;
    if (!rc && (parts & DS_LOC_NEURONS)) {
        rc = ds_loc_neurons_init(e, &r->neurons, s, n_calls, r->timesteps);
        r->has_neurons = !rc;
    }
    // labels
    for (int w = 0; !rc && w < r->n_windows; w++) {
        ds_loc_score* sc = &r->windows[w];
        sc->layer_begin = w;
        sc->layer_end = w + window;
        sc->head = -1;
        sc->call_begin = 0;
        sc->call_end = n_calls;
        if (window == 1)  // a single layer is named by itself
            snprintf(sc->label, sizeof sc->label, "%s", s->attn[w].label);
        else
            snprintf(sc->label, sizeof sc->label, "%s .. %s", s->attn[w].label, s->attn[w + window - 1].label);
    }
    for (int l = 0, k = 0; !rc && r->n_heads && l < s->n_attn; l++)
        for (int h = 0; h < s->attn[l].heads && ds_loc_layer_match(&s->attn[l], p->head_layers); h++, k++) {
            ds_loc_score* sc = &r->heads[k];
            sc->layer_begin = l;
            sc->layer_end = l + 1;
            sc->head = h;
            sc->call_begin = 0;
            sc->call_end = n_calls;
            snprintf(sc->label, sizeof sc->label, "%s h%d", s->attn[l].label, h);
        }
    for (int w = 0; !rc && w < r->n_tsteps; w++) {
        ds_loc_score* sc = &r->tsteps[w];
        sc->layer_begin = 0;
        sc->layer_end = s->n_attn;
        sc->head = -1;
        sc->call_begin = w * tw;
        sc->call_end = (w + 1) * tw < n_calls ? (w + 1) * tw : n_calls;
        if (sc->call_end - sc->call_begin == 1)
            snprintf(sc->label, sizeof sc->label, "call %d (t %.0f)", sc->call_begin, r->timesteps[sc->call_begin]);
        else
            snprintf(sc->label, sizeof sc->label, "calls %d-%d (t %.0f-%.0f)", sc->call_begin, sc->call_end - 1,
                     r->timesteps[sc->call_begin], r->timesteps[sc->call_end - 1]);
    }

    // the concept's context rows in every prompt, checked before the first generation
    int** all_rows = calloc((size_t)p->n_with, sizeof(int*));
    int* rows_n = calloc((size_t)p->n_with, sizeof(int));
    if (!rc && (!all_rows || !rows_n)) rc = ds_errf(e, DS_ERR_OOM, "localize: out of memory");
    for (int i = 0; !rc && attn_parts && i < p->n_with; i++)
        rc = concept_rows(ctx, m, p->with[i], p->concept, i, &all_rows[i], &rows_n[i]);

    // the prompts with the concept: baseline, then every intervention
    double det_sum = 0;
    for (int i = 0; !rc && i < p->n_with; i++) {
        const char* prompt = p->with[i];
        int* rows = all_rows[i];
        int n_rows = rows_n[i];
        float* neutral = NULL;
        int64_t neutral_rows = 0;
        if (!rc && (parts & (DS_LOC_LAYERS | DS_LOC_TIMESTEPS))) {
            const char* nt = p->n_neutral > 0 ? p->neutral[i % p->n_neutral] : p->without[i % p->n_without];
            rc = ds_loc_encode(e, m, nt, p->negative, j.cfg, &neutral, &neutral_rows);
        }
        ds_loc_run_in in = {.prompt = prompt, .negative = p->negative, .steps = p->steps, .guidance = p->guidance,
                            .seed = p->seed + (p->seed_per_prompt ? (uint64_t)i : 0), .sampler = p->sampler,
                            .width = p->width, .height = p->height, .neutral = neutral, .neutral_rows = neutral_rows,
                            .acc = (parts & DS_LOC_NEURONS) ? &r->neurons : NULL, .acc_side = 0,
                            .concept_rows = rows, .n_concept_rows = n_rows, .mass = attn_parts ? base_mass : NULL};
        ds_image base = {0};
        double base_presence = 0;
        char what[256];
        if (!rc) rc = ds_loc_run(ctx, m, s, n_calls, &in, &base);
        if (!rc && p->detector) {
            rc = detect(&j, &base, prompt, &base_presence);
            det_sum += base_presence;
        }
        if (!rc) {
            snprintf(what, sizeof what, "prompt %d baseline", i + 1);
            rc = progress(&j, what);
        }
        if (!rc && attn_parts) {
            for (int l = 0; l < s->n_attn; l++)
                for (int h = 0; h < s->attn[l].heads; h++)
                    for (int c = 0; c < n_calls; c++) {
                        double v = base_mass[((size_t)l * s->max_heads + h) * n_calls + c];
                        r->head_mass[(size_t)l * s->max_heads + h] += v / ((double)n_calls * p->n_with);
                        r->call_mass[c] += v / ((double)n_heads_total * p->n_with);
                        prompt_head_mass[((size_t)i * s->n_attn + l) * s->max_heads + h] += v / n_calls;
                        r->prompt_layer_mass[(size_t)i * s->n_attn + l] += v / ((double)n_calls * s->attn[l].heads);
                    }
        }
        for (int w = 0; !rc && w < r->n_windows; w++) {
            ds_loc_iv iv = {DS_LOC_IV_SWAP, w, w + window, -1, 0, 0};
            snprintf(what, sizeof what, "prompt %d layers %s", i + 1, r->windows[w].label);
            rc = run_iv(&j, &in, &iv, base_mass, &base, base_presence, mass, modified,
                        r->windows[w].per_prompt + (size_t)i * 3, what);
        }
        for (int w = 0; !rc && w < r->n_tsteps; w++) {
            ds_loc_iv iv = {DS_LOC_IV_SWAP, 0, s->n_attn, -1, r->tsteps[w].call_begin, r->tsteps[w].call_end};
            snprintf(what, sizeof what, "prompt %d %s", i + 1, r->tsteps[w].label);
            rc = run_iv(&j, &in, &iv, base_mass, &base, base_presence, mass, modified,
                        r->tsteps[w].per_prompt + (size_t)i * 3, what);
        }
        for (int k = 0; !rc && i < head_n && k < r->n_heads; k++) {
            ds_loc_iv iv = {DS_LOC_IV_HEAD, r->heads[k].layer_begin, r->heads[k].layer_end, r->heads[k].head, 0, 0};
            snprintf(what, sizeof what, "prompt %d head %s", i + 1, r->heads[k].label);
            rc = run_iv(&j, &in, &iv, base_mass, &base, base_presence, mass, modified,
                        r->heads[k].per_prompt + (size_t)i * 3, what);
        }
        ds_image_free(&base);
        free(neutral);
    }
    if (!rc && p->detector) r->detector_base = det_sum / p->n_with;
    // the base prompts: neuron statistics only
    for (int i = 0; !rc && (parts & DS_LOC_NEURONS) && i < p->n_without; i++) {
        ds_loc_run_in in = {.prompt = p->without[i], .negative = p->negative, .steps = p->steps,
                            .guidance = p->guidance, .seed = p->seed + (p->seed_per_prompt ? (uint64_t)i : 0),
                            .sampler = p->sampler, .width = p->width,
                            .height = p->height, .acc = &r->neurons, .acc_side = 1};
        ds_image img = {0};
        rc = ds_loc_run(ctx, m, s, n_calls, &in, &img);
        ds_image_free(&img);
        if (!rc) {
            char what[64];
            snprintf(what, sizeof what, "base prompt %d", i + 1);
            rc = progress(&j, what);
        }
    }
    if (!rc && (parts & DS_LOC_NEURONS)) {
        double ts0 = now_s();
        rc = ds_loc_neurons_select(e, &r->neurons, m, p->ratio, tau, p->union_min);
        if (!rc) logf_(p, "neurons: selection at %d calls in %.2f s", n_calls, now_s() - ts0);
    }
    if (!rc) {
        finish_scores(r->windows, r->n_windows, p->n_with);
        finish_scores(r->heads, r->n_heads, p->n_with);
        finish_scores(r->tsteps, r->n_tsteps, p->n_with);
        for (int l = 0; l < s->n_attn; l++)
            for (int h = 0; h < s->max_heads; h++) {
                double mean;  // == head_mass up to rounding; the sum above keeps the earlier bit pattern
                mean_se(prompt_head_mass + (size_t)l * s->max_heads + h, p->n_with, (size_t)s->n_attn * s->max_heads,
                        &mean, &r->head_mass_se[(size_t)l * s->max_heads + h]);
                if (h >= s->attn[l].heads) r->head_mass_se[(size_t)l * s->max_heads + h] = NAN;
            }
        ds_loc_rank(r->windows, r->n_windows, p->rank_by, r->has_detector);
        ds_loc_rank(r->heads, r->n_heads, p->rank_by, r->has_detector);
        ds_loc_rank(r->tsteps, r->n_tsteps, p->rank_by, r->has_detector);
    }
    for (int i = 0; all_rows && i < p->n_with; i++) free(all_rows[i]);
    free(all_rows);
    free(rows_n);
    free(prompt_head_mass);
    free(base_mass);
    free(mass);
    free(modified);
    r->runs = j.done;
    r->seconds = now_s() - t0;
    if (rc) ds_loc_result_free(r);
    return rc;
}
