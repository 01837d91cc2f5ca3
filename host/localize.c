// localize.c — localization building blocks (see localize.h, docs/localization.md): the model's FFN
// and cross-attention sites, ConceptPrune neuron statistics and selection, neurons.json, the
// localization observer and one observed generation, prompt templates.
#include "localize.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>

#include "observe.h"

// ---- sites -------------------------------------------------------------------------------------

void ds_loc_short_label(const char* path, char* out, size_t cap) {
    // "<down_blocks|mid_block|up_blocks>[.i].attentions.j.transformer_blocks.k[...]" → "d1.a0.t0"
    char buf[64] = {0};
    size_t n = 0;
    const char* p = path;
    if (!strncmp(p, "down_blocks.", 12)) { buf[n++] = 'd'; p += 12; }
    else if (!strncmp(p, "up_blocks.", 10)) { buf[n++] = 'u'; p += 10; }
    else if (!strncmp(p, "mid_block", 9)) { buf[n++] = 'm'; p += 9; }
    else { snprintf(out, cap, "%s", path); return; }
    while (*p >= '0' && *p <= '9' && n < 8) buf[n++] = *p++;
    const char* a = strstr(p, "attentions.");
    const char* t = strstr(p, "transformer_blocks.");
    if (a) {
        n += (size_t)snprintf(buf + n, sizeof buf - n, ".a");
        for (a += 11; *a >= '0' && *a <= '9' && n < 40; a++) buf[n++] = *a;
    }
    if (t) {
        n += (size_t)snprintf(buf + n, sizeof buf - n, ".t");
        for (t += 19; *t >= '0' && *t <= '9' && n < 60; t++) buf[n++] = *t;
    }
    buf[n < sizeof buf ? n : sizeof buf - 1] = 0;
    snprintf(out, cap, "%s", buf);
}

static int prefix_at_dot(const char* s, const char* prefix, size_t n) {
    return n && !strncmp(s, prefix, n) && (s[n] == 0 || s[n] == '.');
}

int ds_loc_default_window(int n_attn) {
    int w = (3 * n_attn + 8) / 16;  // round half up
    return w < 1 ? 1 : w;
}

int ds_loc_layer_match(const ds_loc_attn* a, const char* selectors) {
    if (!selectors || !*selectors) return 1;
    const char* p = selectors;
    while (*p) {
        while (*p == ' ' || *p == ',') p++;
        const char* e = p;
        while (*e && *e != ',') e++;
        size_t n = (size_t)(e - p);
        while (n && p[n - 1] == ' ') n--;
        if (prefix_at_dot(a->path, p, n) || prefix_at_dot(a->label, p, n)) return 1;
        p = e;
    }
    return 0;
}

int ds_loc_sites_init(ds_err* e, const ds_model* m, ds_loc_sites* s) {
    memset(s, 0, sizeof *s);
    const ds_unet* u = &m->unet;
    int L = u->cfg.n_levels, n = 0;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            s->ffn = ds_calloc(e, (size_t)(n ? n : 1), sizeof(ds_loc_ffn), "localize sites");
            s->attn = ds_calloc(e, (size_t)(n ? n : 1), sizeof(ds_loc_attn), "localize sites");
            if (!s->ffn || !s->attn) { ds_loc_sites_free(s); return DS_ERR_OOM; }
        }
        n = 0;
        for (int part = 0; part < 3; part++) {
            int nblocks = part == 1 ? 1 : L;
            for (int bi = 0; bi < nblocks; bi++) {
                const ds_unet_block* b = part == 0 ? &u->down[bi] : part == 1 ? &u->mid : &u->up[bi];
                if (!b->attns) continue;
                int na = part == 1 ? 1 : b->n_layers;
                for (int ai = 0; ai < na; ai++) {
                    const ds_unet_transformer* T = &b->attns[ai];
                    for (int ti = 0; ti < T->n_blocks; ti++, n++) {
                        if (pass == 0) continue;
                        const ds_unet_tblock* tb = &T->blocks[ti];
                        ds_loc_ffn* f = &s->ffn[n];
                        snprintf(f->block, sizeof f->block, "%s", tb->path_ff);
                        size_t lb = strlen(f->block);
                        if (lb > 3 && !strcmp(f->block + lb - 3, ".ff")) f->block[lb - 3] = 0;
                        f->node = tb->path_ff;
                        f->C = T->channels;
                        f->F = T->ff_dim;
                        f->w2 = tb->ff2_w;
                        f->off = s->total_F;
                        s->total_F += f->F;
                        ds_loc_attn* a = &s->attn[n];
                        a->path = tb->path_attn2;
                        a->heads = T->heads;
                        ds_loc_short_label(tb->path_attn2, a->label, sizeof a->label);
                        if (a->heads > s->max_heads) s->max_heads = a->heads;
                    }
                }
            }
        }
    }
    s->n_ffn = s->n_attn = n;
    if (!n) {
        ds_loc_sites_free(s);
        return ds_errf(e, DS_ERR_UNSUPPORTED, "this model's UNet has no transformer blocks to localize in");
    }
    return DS_OK;
}

void ds_loc_sites_free(ds_loc_sites* s) {
    free(s->ffn);
    free(s->attn);
    memset(s, 0, sizeof *s);
}

// ---- neuron statistics -------------------------------------------------------------------------

int ds_loc_neurons_init(ds_err* e, ds_loc_neurons* nr, const ds_loc_sites* s, int n_calls,
                        const float* timesteps) {
    memset(nr, 0, sizeof *nr);
    nr->sites = s;
    nr->n_calls = n_calls;
    nr->timesteps = ds_malloc(e, sizeof(float) * (size_t)n_calls, "timesteps");
    int ok = nr->timesteps != NULL;
    for (int k = 0; ok && k < 2; k++) {
        nr->sumsq[k] = ds_calloc(e, (size_t)n_calls * (size_t)s->total_F, sizeof(double), "neuron statistics");
        nr->rows[k] = ds_calloc(e, (size_t)n_calls * (size_t)s->n_ffn, sizeof(int64_t), "neuron statistics");
        ok = nr->sumsq[k] && nr->rows[k];
    }
    if (!ok) { ds_loc_neurons_free(nr); return DS_ERR_OOM; }
    memcpy(nr->timesteps, timesteps, sizeof(float) * (size_t)n_calls);
    return DS_OK;
}

void ds_loc_neurons_free(ds_loc_neurons* nr) {
    for (int k = 0; k < 2; k++) { free(nr->sumsq[k]); free(nr->rows[k]); }
    if (nr->sites) {
        for (int b = 0; b < nr->sites->n_ffn; b++) {
            if (nr->count) free(nr->count[b]);
            if (nr->keep) free(nr->keep[b]);
            if (nr->ncalls_col) free(nr->ncalls_col[b]);
        }
    }
    free(nr->count);
    free(nr->keep);
    free(nr->ncalls_col);
    free(nr->kept);
    free(nr->n_selected);
    free(nr->timesteps);
    memset(nr, 0, sizeof *nr);
}

void ds_loc_neurons_norms(const ds_loc_neurons* nr, int side, int call, int block, double* out) {
    const ds_loc_ffn* f = &nr->sites->ffn[block];
    const double* s = nr->sumsq[side] + (size_t)call * (size_t)nr->sites->total_F + (size_t)f->off;
    double P = nr->n_prompts[side] > 0 ? (double)nr->n_prompts[side] : 1.0;
    for (int j = 0; j < f->F; j++) out[j] = sqrt(s[j] / P);
}

// "worse" in the top-k order: smaller score, or an equal score at a higher index
static inline int worse(double sa, int ja, double sb, int jb) { return sa < sb || (sa == sb && ja > jb); }

static void heap_down(double* hs, int* hj, int n, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && worse(hs[l], hj[l], hs[w], hj[w])) w = l;
        if (r < n && worse(hs[r], hj[r], hs[w], hj[w])) w = r;
        if (w == i) return;
        double ts = hs[i]; hs[i] = hs[w]; hs[w] = ts;
        int tj = hj[i]; hj[i] = hj[w]; hj[w] = tj;
        i = w;
    }
}

static void heap_up(double* hs, int* hj, int i) {
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!worse(hs[i], hj[i], hs[p], hj[p])) return;
        double ts = hs[i]; hs[i] = hs[p]; hs[p] = ts;
        int tj = hj[i]; hj[i] = hj[p]; hj[p] = tj;
        i = p;
    }
}

int64_t ds_loc_select_call(const ds_loc_neurons* nr, const float* W, int block, int call, double ratio,
                           uint8_t* mask) {
    const ds_loc_ffn* f = &nr->sites->ffn[block];
    int C = f->C, F = f->F;
    int k = (int)(ratio * (double)F);  // Python's int(ratio · F): truncation
    memset(mask, 0, (size_t)C * (size_t)F);
    if (k <= 0) return 0;
    if (k > F) k = F;
    double* nc = malloc(sizeof(double) * (size_t)F * 2);
    if (!nc) return -1;
    double* nb = nc + F;
    ds_loc_neurons_norms(nr, 0, call, block, nc);
    ds_loc_neurons_norms(nr, 1, call, block, nb);
    int64_t total = 0;
    int oom = 0;
#pragma omp parallel reduction(+ : total)
    {
        double* hs = malloc(sizeof(double) * (size_t)k);
        int* hj = malloc(sizeof(int) * (size_t)k);
        if (!hs || !hj) {
#pragma omp atomic write
            oom = 1;
        }
#pragma omp for schedule(static)
        for (int i = 0; i < C; i++) {
            if (!hs || !hj) continue;
            const float* w = W + (size_t)i * F;
            int n = 0, j = 0;
            for (; j < F && n < k; j++, n++) {
                hs[n] = fabs((double)w[j]) * nc[j];
                hj[n] = j;
                heap_up(hs, hj, n);
            }
            // columns come in ascending order, so a candidate tying the heap's worst has the higher
            // index and is worse: only a strictly larger score enters
            double thr = hs[0];
            for (; j < F; j++) {
                double s = fabs((double)w[j]) * nc[j];
                if (s > thr) {
                    hs[0] = s;
                    hj[0] = j;
                    heap_down(hs, hj, n, 0);
                    thr = hs[0];
                }
            }
            for (int q = 0; q < n; q++) {
                int j = hj[q];
                if (hs[q] > fabs((double)w[j]) * nb[j]) {
                    mask[(size_t)i * F + j] = 1;
                    total++;
                }
            }
        }
        free(hs);
        free(hj);
    }
    free(nc);
    return oom ? -1 : total;
}

int ds_loc_neurons_select(ds_err* e, ds_loc_neurons* nr, const ds_model* m, double ratio, int tau,
                          double union_min) {
    const ds_loc_sites* s = nr->sites;
    if (tau < 1) tau = 1;
    if (tau > nr->n_calls) tau = nr->n_calls;
    nr->ratio = ratio;
    nr->tau = tau;
    nr->union_min = union_min;
    nr->n_selected = ds_calloc(e, (size_t)nr->n_calls * (size_t)s->n_ffn, sizeof(int64_t), "selection");
    nr->count = ds_calloc(e, (size_t)s->n_ffn, sizeof(uint8_t*), "selection");
    nr->keep = ds_calloc(e, (size_t)s->n_ffn, sizeof(uint8_t*), "selection");
    nr->ncalls_col = ds_calloc(e, (size_t)s->n_ffn, sizeof(uint8_t*), "selection");
    nr->kept = ds_calloc(e, (size_t)s->n_ffn, sizeof(int64_t), "selection");
    if (!nr->n_selected || !nr->count || !nr->keep || !nr->ncalls_col || !nr->kept) return DS_ERR_OOM;
    int rc = DS_OK;
    for (int b = 0; b < s->n_ffn && !rc; b++) {
        const ds_loc_ffn* f = &s->ffn[b];
        size_t CF = (size_t)f->C * (size_t)f->F;
        float* W = ds_malloc(e, sizeof(float) * CF, "ff.net.2 weight");
        uint8_t* mask = ds_malloc(e, CF, "selection mask");
        uint8_t* colany = ds_malloc(e, (size_t)f->F, "selection mask");
        nr->count[b] = ds_calloc(e, CF, 1, "selection");
        nr->keep[b] = ds_calloc(e, CF, 1, "selection");
        nr->ncalls_col[b] = ds_calloc(e, (size_t)f->F, 1, "selection");
        if (!W || !mask || !colany || !nr->count[b] || !nr->keep[b] || !nr->ncalls_col[b]) rc = DS_ERR_OOM;
        if (!rc) m->be->download(m->be, W, f->w2, (int64_t)CF);
        for (int c = 0; c < nr->n_calls && !rc; c++) {
            int64_t n = ds_loc_select_call(nr, W, b, c, ratio, mask);
            if (n < 0) { rc = ds_errf(e, DS_ERR_OOM, "out of memory selecting neurons"); break; }
            nr->n_selected[(size_t)c * s->n_ffn + b] = n;
            if (c >= tau) continue;
            uint8_t* cnt = nr->count[b];
            for (size_t q = 0; q < CF; q++)
                if (mask[q] && cnt[q] < 255) cnt[q]++;
            memset(colany, 0, (size_t)f->F);
            for (int i = 0; i < f->C; i++)
                for (int j = 0; j < f->F; j++) colany[j] |= mask[(size_t)i * f->F + j];
            for (int j = 0; j < f->F; j++)
                if (colany[j] && nr->ncalls_col[b][j] < 255) nr->ncalls_col[b][j]++;
        }
        if (!rc) {
            double thr = union_min * (double)tau;
            int64_t kept = 0;
            for (size_t q = 0; q < CF; q++) {
                nr->keep[b][q] = nr->count[b][q] > 0 && (double)nr->count[b][q] > thr;
                kept += nr->keep[b][q];
            }
            nr->kept[b] = kept;
        }
        free(W);
        free(mask);
        free(colany);
    }
    return rc;
}

// ---- a growable string -------------------------------------------------------------------------

typedef struct sbuf {
    char* p;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_printf(sbuf* b, const char* fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->n;
        int w = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? room : 0, fmt, ap);
        va_end(ap);
        if (w < 0) { b->oom = 1; return; }
        if (b->p && (size_t)w < room) { b->n += (size_t)w; return; }
        size_t nc = b->cap ? b->cap * 2 : 4096;
        while (nc < b->n + (size_t)w + 1) nc *= 2;
        char* np = realloc(b->p, nc);
        if (!np) { b->oom = 1; return; }
        b->p = np;
        b->cap = nc;
    }
}

int ds_loc_neurons_json(ds_err* e, const ds_loc_neurons* nr, const char* arch, const char* extra_json,
                        char** out) {
    const ds_loc_sites* s = nr->sites;
    *out = NULL;
    if (!nr->keep) return ds_errf(e, DS_ERR_ARG, "neurons.json: no selection was made");
    sbuf b = {0};
    sb_printf(&b, "{\n  \"format\": \"diffscope-neurons\",\n  \"version\": 1,\n");
    if (arch) sb_printf(&b, "  \"arch\": \"%s\",\n", arch);
    sb_printf(&b, "  \"method\": \"conceptprune\",\n  \"blocks\": {");
    int first_block = 1;
    for (int bi = 0; bi < s->n_ffn; bi++) {
        const ds_loc_ffn* f = &s->ffn[bi];
        if (!nr->kept[bi]) continue;
        sb_printf(&b, "%s\n    \"%s\": {\"in_features\": %d, \"out_features\": %d, \"count\": %lld, \"rows\": {",
                  first_block ? "" : ",", f->block, f->F, f->C, (long long)nr->kept[bi]);
        first_block = 0;
        int first_row = 1;
        for (int i = 0; i < f->C; i++) {
            const uint8_t* k = nr->keep[bi] + (size_t)i * f->F;
            int any = 0;
            for (int j = 0; j < f->F && !any; j++) any = k[j];
            if (!any) continue;
            sb_printf(&b, "%s\"%d\": [", first_row ? "" : ", ", i);
            first_row = 0;
            int first = 1;
            for (int j = 0; j < f->F; j++)
                if (k[j]) { sb_printf(&b, first ? "%d" : ", %d", j); first = 0; }
            sb_printf(&b, "]");
        }
        sb_printf(&b, "}}");
    }
    sb_printf(&b, "%s},\n", first_block ? "" : "\n  ");
    sb_printf(&b, "  \"ratio\": %.17g,\n  \"timesteps\": %d,\n  \"union_min\": %.17g", nr->ratio, nr->tau,
              nr->union_min);
    if (extra_json && *extra_json) sb_printf(&b, ",\n  %s", extra_json);
    sb_printf(&b, "\n}\n");
    if (b.oom) { free(b.p); return ds_errf(e, DS_ERR_OOM, "out of memory writing neurons.json"); }
    *out = b.p;
    return DS_OK;
}

// ---- the localization observer -----------------------------------------------------------------

typedef ds_loc_obs loc_obs;

static int find_attn(loc_obs* o, const char* path) {
    if (path == o->last_attn_path) return o->last_attn;
    for (int i = 0; i < o->s->n_attn; i++)
        if (o->s->attn[i].path == path || !strcmp(o->s->attn[i].path, path)) {
            o->last_attn_path = path;
            o->last_attn = i;
            return i;
        }
    return -1;
}

static int find_ffn(loc_obs* o, const char* path) {
    if (path == o->last_ffn_path) return o->last_ffn;
    for (int i = 0; i < o->s->n_ffn; i++)
        if (o->s->ffn[i].node == path || !strcmp(o->s->ffn[i].node, path)) {
            o->last_ffn_path = path;
            o->last_ffn = i;
            return i;
        }
    return -1;
}

static int iv_call(const ds_loc_iv* iv, int call) {
    return call >= iv->call_begin && (iv->call_end <= 0 || call < iv->call_end);
}

static int loc_wants(void* user, const char* path, ds_node_kind kind) {
    loc_obs* o = user;
    const ds_loc_run_in* in = o->in;
    int want = 0;
    if (kind == DS_NODE_ATTN_CONTEXT && in->iv && in->iv->kind == DS_LOC_IV_SWAP) {
        int l = find_attn(o, path);
        want = l >= in->iv->layer_begin && l < in->iv->layer_end;
    } else if (kind == DS_NODE_ATTN_PROBS) {
        int l = find_attn(o, path);
        want = l >= 0 && ((in->concept_rows && in->mass) ||
                          (in->iv && in->iv->kind == DS_LOC_IV_HEAD && l == in->iv->layer_begin));
    }
    if (!want && in->chain && in->chain->observe)
        want = in->chain->wants ? in->chain->wants(in->chain->user, path, kind) : 1;
    return want;
}

static int loc_observe(void* user, ds_node* node) {
    loc_obs* o = user;
    const ds_loc_run_in* in = o->in;
    int modified = 0;
    int call = node->step;
    if (node->kind == DS_NODE_ATTN_CONTEXT && in->iv && in->iv->kind == DS_LOC_IV_SWAP) {
        int l = find_attn(o, node->path);
        if (l >= in->iv->layer_begin && l < in->iv->layer_end && iv_call(in->iv, call)) {
            int64_t B = node->shape[0], Lc = node->shape[1], D = node->shape[2];
            if (!in->neutral || in->neutral_rows != Lc) {
                snprintf(o->msg, sizeof o->msg,
                         "localize: the neutral prompt's context has %lld rows but the prompt's has %lld "
                         "(prompts longer than 75 tokens need neutral prompts of as many 75-token chunks)",
                         (long long)in->neutral_rows, (long long)Lc);
                return -1;
            }
            memcpy(node->data + (size_t)(B - 1) * (size_t)(Lc * D), in->neutral, sizeof(float) * (size_t)(Lc * D));
            modified = 1;
        }
    } else if (node->kind == DS_NODE_ATTN_PROBS) {
        int l = find_attn(o, node->path);
        if (l >= 0 && call >= 0 && call < o->n_calls) {
            int Lk = (int)node->shape[1];
            if (in->concept_rows && in->mass) {
                double sum = 0;
                for (int r = 0; r < node->nrows; r++) {
                    const float* P = node->data + (size_t)r * Lk;
                    for (int t = 0; t < in->n_concept_rows; t++)
                        if (in->concept_rows[t] < Lk) sum += P[in->concept_rows[t]];
                }
                double Lq = (double)node->height * (double)node->width;
                in->mass[((size_t)l * o->s->max_heads + node->head) * o->n_calls + call] += sum / (Lq > 0 ? Lq : 1);
            }
            if (in->iv && in->iv->kind == DS_LOC_IV_HEAD && l == in->iv->layer_begin && node->head == in->iv->head &&
                iv_call(in->iv, call)) {
                memset(node->data, 0, sizeof(float) * (size_t)node->nrows * (size_t)Lk);
                modified = 1;
            }
        }
    }
    if (in->chain && in->chain->observe &&
        (!in->chain->wants || in->chain->wants(in->chain->user, node->path, node->kind))) {
        int rc = in->chain->observe(in->chain->user, node);
        if (rc < 0) return rc;
        if (rc > 0) modified = 1;
    }
    return modified;
}

ds_observer ds_loc_observer(ds_loc_obs* o, const ds_loc_sites* s, int n_calls, const ds_loc_run_in* in) {
    memset(o, 0, sizeof *o);
    o->s = s;
    o->in = in;
    o->n_calls = n_calls;
    o->last_attn = o->last_ffn = -1;
    ds_observer obs = {loc_wants, loc_observe, o};
    return obs;
}

// The FFN statistics hook (observe.h): the backend accumulates each (block, call)'s L2-normalized
// conditional rows into its slot of the run's device buffers; only the row counts are kept here.
static int64_t loc_ffn_slot(void* user, const char* path, int step, int64_t rows, int64_t F) {
    loc_obs* o = user;
    int b = find_ffn(o, path);
    if (b < 0) return -1;
    if (step < 0 || step >= o->n_calls || F != o->s->ffn[b].F) {
        snprintf(o->msg, sizeof o->msg, "localize: unexpected FFN node %s (call %d, %lld features)", path, step,
                 (long long)F);
        return -1;
    }
    o->in->acc->rows[o->in->acc_side][(size_t)step * o->s->n_ffn + b] += rows;
    return (int64_t)step * o->s->total_F + o->s->ffn[b].off;
}

int ds_loc_run(ds_context* ctx, ds_model* m, const ds_loc_sites* s, int n_calls, const ds_loc_run_in* in,
               ds_image* img) {
    loc_obs o;
    ds_observer obs = ds_loc_observer(&o, s, n_calls, in);
    size_t cells = (size_t)s->n_attn * (size_t)s->max_heads * (size_t)n_calls;
    if (in->mass) memset(in->mass, 0, sizeof(double) * cells);
    if (in->modified) {
        memset(in->modified, 0, cells);
        const ds_loc_iv* iv = in->iv;
        if (iv && iv->kind != DS_LOC_IV_NONE)
            for (int l = 0; l < s->n_attn; l++)
                for (int h = 0; h < s->max_heads; h++)
                    for (int c = 0; c < n_calls; c++) {
                        int hit = iv_call(iv, c) &&
                                  (iv->kind == DS_LOC_IV_SWAP ? (l >= iv->layer_begin && l < iv->layer_end)
                                                              : (l == iv->layer_begin && h == iv->head));
                        if (hit) in->modified[((size_t)l * s->max_heads + h) * n_calls + c] = 1;
                    }
    }
    ds_generate_params p;
    ds_generate_params_init(&p);
    p.prompt = in->prompt;
    p.negative_prompt = in->negative ? in->negative : "";
    p.steps = in->steps;
    p.guidance = in->guidance;
    p.seed = in->seed;
    p.sampler = in->sampler;
    p.width = in->width;
    p.height = in->height;
    p.observer = &obs;
    p.out_latents = in->out_latents;
    // neuron statistics: accumulated on the backend (fp32, one slot per block and call), added here
    ds_ffn_stats_hook hook = {loc_ffn_slot, &o, NULL, NULL};
    const int64_t ncell = (int64_t)n_calls * s->total_F;
    float* host = NULL;
    if (in->acc) {
        host = ds_calloc(&ctx->err, (size_t)ncell, sizeof(float), "neuron statistics");
        hook.sum = host ? m->be->alloc_f32(m->be, ncell) : NULL;
        hook.sumsq = hook.sum ? m->be->alloc_f32(m->be, ncell) : NULL;
        if (!hook.sumsq) {
            if (hook.sum) m->be->free(m->be, hook.sum);
            free(host);
            return host ? ds_errf(&ctx->err, DS_ERR_OOM, "out of memory: neuron statistics on the device") : DS_ERR_OOM;
        }
        m->be->upload(m->be, hook.sum, host, ncell);
        m->be->upload(m->be, hook.sumsq, host, ncell);
        m->ffn_stats = &hook;
    }
    int rc = ds_generate(ctx, m, &p, img);
    m->ffn_stats = NULL;
    if (in->acc) {
        if (!rc) {
            m->be->download(m->be, host, hook.sumsq, ncell);
            double* acc = in->acc->sumsq[in->acc_side];
            for (int64_t i = 0; i < ncell; i++) acc[i] += host[i];
        }
        m->be->free(m->be, hook.sum);
        m->be->free(m->be, hook.sumsq);
        free(host);
    }
    if (rc && o.msg[0]) {
        ctx->err.code = DS_ERR_ARG;
        snprintf(ctx->err.msg, sizeof ctx->err.msg, "%s", o.msg);
        rc = DS_ERR_ARG;
    }
    if (!rc && in->acc) in->acc->n_prompts[in->acc_side]++;
    return rc;
}

int ds_loc_encode(ds_err* e, ds_model* m, const char* prompt, const char* negative, int cfg, float** out,
                  int64_t* rows) {
    *out = NULL;
    *rows = 0;
    ds_run run = {.be = m->be, .arena = &m->arena, .err = e, .step = -1, .timestep = -1,
                  .cond_batch_begin = cfg ? 1 : 0};
    ds_arena_mark mark = ds_arena_get_mark(&m->arena);
    ds_tensor t;
    int rc = ds_model_encode_prompts(m, &run, prompt, negative ? negative : "", cfg, 0, &t);
    if (!rc) {
        int64_t B = t.ne[0], L = t.ne[1], D = t.ne[2];
        float* h = ds_malloc(e, sizeof(float) * (size_t)(L * D), "neutral context");
        if (!h) rc = DS_ERR_OOM;
        else {
            m->be->download(m->be, h, t.data + (size_t)(B - 1) * (size_t)(L * D), L * D);
            *out = h;
            *rows = L;
        }
    }
    ds_arena_reset(&m->arena, mark);
    return rc;
}

int ds_loc_calls(ds_err* e, const ds_model* m, ds_sampler sampler, int steps, int* n_calls, float** timesteps) {
    *timesteps = NULL;
    *n_calls = 0;
    ds_sampler kind = sampler == DS_SAMPLER_DEFAULT ? m->default_sampler : sampler;
    ds_scheduler* sched = NULL;
    DS_TRY(ds_scheduler_create(e, kind, &m->sched_cfg, steps, &sched));
    int n = ds_scheduler_num_calls(sched);
    float* t = ds_malloc(e, sizeof(float) * (size_t)(n ? n : 1), "timesteps");
    if (!t) { ds_scheduler_free(sched); return DS_ERR_OOM; }
    for (int i = 0; i < n; i++) t[i] = ds_scheduler_timestep(sched, i);
    ds_scheduler_free(sched);
    *n_calls = n;
    *timesteps = t;
    return DS_OK;
}

// ---- templates ---------------------------------------------------------------------------------

static const char* const kScenes[DS_LOC_MAX_TEMPLATES] = {
    "kitchen", "park", "street", "forest", "living room", "beach", "garden", "city square", "field", "bedroom",
    "office", "desert", "library", "meadow", "harbor", "classroom", "parking lot", "train station", "river bank",
    "snowy mountain"};
static const char* const kThings[DS_LOC_MAX_TEMPLATES] = {
    "house", "tree", "dog", "cat", "car", "bridge", "boat", "vase of flowers", "mountain landscape", "woman",
    "man", "city street", "bowl of fruit", "horse", "church", "river", "bird", "chair", "lighthouse", "garden"};

int ds_loc_templates(ds_err* e, const char* concept, int kind, int n, char*** with, char*** without) {
    *with = *without = NULL;
    if (n < 1 || n > DS_LOC_MAX_TEMPLATES)
        return ds_errf(e, DS_ERR_ARG, "--prompts-per-side %d: expected 1..%d (give --with/--without files for more)", n,
                       DS_LOC_MAX_TEMPLATES);
    char** a = ds_calloc(e, (size_t)n, sizeof(char*), "prompts");
    char** b = ds_calloc(e, (size_t)n, sizeof(char*), "prompts");
    if (!a || !b) { free(a); free(b); return DS_ERR_OOM; }
    size_t cap = strlen(concept) + 96;
    for (int i = 0; i < n; i++) {
        a[i] = malloc(cap);
        b[i] = malloc(cap);
        if (!a[i] || !b[i]) {
            for (int q = 0; q <= i; q++) { free(a[q]); free(b[q]); }
            free(a);
            free(b);
            return ds_errf(e, DS_ERR_OOM, "out of memory building prompts");
        }
        if (kind == DS_LOC_KIND_STYLE) {
            snprintf(a[i], cap, "a %s in the style of %s", kThings[i], concept);
            snprintf(b[i], cap, "a photo of a %s", kThings[i]);
        } else {
            snprintf(a[i], cap, "a %s in a %s", concept, kScenes[i]);
            snprintf(b[i], cap, "a %s", kScenes[i]);
        }
    }
    *with = a;
    *without = b;
    return DS_OK;
}
