// capture.c — attention capture for heatmaps (see capture.h and include/diffscope/heatmap.h).
#include "capture.h"

#include <ctype.h>
#include <math.h>
#include <string.h>

#define CTX_CHUNK 77

// ---- selectors -----------------------------------------------------------------------------------

// Next comma-separated item of *s into buf (trimmed); 0 when none is left.
static int next_item(const char** s, char* buf, size_t cap) {
    const char* p = *s;
    while (*p == ',' || isspace((unsigned char)*p)) p++;
    if (!*p) return 0;
    const char* q = p;
    while (*q && *q != ',') q++;
    const char* end = q;
    while (end > p && isspace((unsigned char)end[-1])) end--;
    size_t n = (size_t)(end - p);
    if (n >= cap) n = cap - 1;
    memcpy(buf, p, n);
    buf[n] = 0;
    *s = q;
    return 1;
}

static int prefix_match(const char* path, const char* prefix) {
    size_t n = strlen(prefix);
    while (n > 0 && prefix[n - 1] == '.') n--;
    return strncmp(path, prefix, n) == 0 && (path[n] == 0 || path[n] == '.');
}

// res:N or res:HxW; returns 1 and fills (rh, rw) (rw = 0 for res:N), 0 if not a res item, -1 bad.
static int parse_res(const char* item, int* rh, int* rw) {
    if (strncmp(item, "res:", 4) != 0) return 0;
    const char* p = item + 4;
    char* end;
    long a = strtol(p, &end, 10);
    if (end == p || a <= 0 || a > 100000) return -1;
    if (*end == 0) {
        *rh = (int)a;
        *rw = 0;
        return 1;
    }
    if (*end != 'x' && *end != 'X') return -1;
    p = end + 1;
    long b = strtol(p, &end, 10);
    if (end == p || *end || b <= 0 || b > 100000) return -1;
    *rh = (int)a;
    *rw = (int)b;
    return 1;
}

int ds_cap_sel_match(ds_err* e, const char* sel, const char* path, int h, int w, int* has_block,
                     int* has_res) {
    int nb = 0, nr = 0, mb = 0, mr = 0;
    char item[128];
    const char* s = sel ? sel : "";
    while (next_item(&s, item, sizeof item)) {
        int rh, rw, r = parse_res(item, &rh, &rw);
        if (r < 0) {
            ds_errf(e, DS_ERR_ARG, "layer selector \"%s\": expected res:N or res:HxW", item);
            return -1;
        }
        if (r == 1) {
            nr++;
            if (rw == 0 ? (int64_t)h * w == (int64_t)rh * rh : (h == rh && w == rw)) mr = 1;
        } else {
            nb++;
            if (!strcmp(item, "down")) mb |= !strncmp(path, "down_blocks.", 12);
            else if (!strcmp(item, "mid")) mb |= !strncmp(path, "mid_block.", 10);
            else if (!strcmp(item, "up")) mb |= !strncmp(path, "up_blocks.", 10);
            else mb |= prefix_match(path, item);
        }
    }
    if (has_block) *has_block = nb > 0;
    if (has_res) *has_res = nr > 0;
    return (nb == 0 || mb) && (nr == 0 || mr);
}

int ds_cap_parse_heads(ds_err* e, const char* spec, uint64_t* mask) {
    *mask = ~(uint64_t)0;
    if (!spec) return DS_OK;
    const char* s = spec;
    char item[64];
    uint64_t m = 0;
    int any = 0;
    while (next_item(&s, item, sizeof item)) {
        char* end;
        long a = strtol(item, &end, 10), b = a;
        if (end == item || a < 0) goto bad;
        if (*end == '-') {
            const char* p = end + 1;
            b = strtol(p, &end, 10);
            if (end == p || b < a) goto bad;
        }
        if (*end) goto bad;
        if (b > 63) return ds_errf(e, DS_ERR_ARG, "--heads \"%s\": head indices must be below 64", spec);
        for (long h = a; h <= b; h++) m |= (uint64_t)1 << h;
        any = 1;
    }
    if (any) *mask = m;
    return DS_OK;
bad:
    return ds_errf(e, DS_ERR_ARG, "--heads \"%s\": expected indices and ranges like 0-3,6", spec);
}

// ---- plan --------------------------------------------------------------------------------------

void ds_capture_plan_init(ds_capture_plan* plan, ds_heatmap_mode mode) {
    memset(plan, 0, sizeof *plan);
    plan->mode = mode;
    plan->aggregate = 1;
    plan->per_head = mode == DS_HEATMAP_DAAM;
}

static const char* mode_name(ds_heatmap_mode m) {
    return m == DS_HEATMAP_DAAM ? "daam" : m == DS_HEATMAP_P2P ? "p2p" : m == DS_HEATMAP_MEAN ? "mean" : "?";
}

// The model's attn2 sites in forward order (down, mid, up).
static int build_sites(ds_capture* c, ds_err* e) {
    const ds_unet* u = &c->m->unet;
    int L = u->cfg.n_levels, n = 0;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            c->sites = ds_calloc(e, (size_t)(n ? n : 1), sizeof(ds_cap_site), "capture sites");
            if (!c->sites) return DS_ERR_OOM;
        }
        n = 0;
        for (int part = 0; part < 3; part++) {
            int nblocks = part == 1 ? 1 : L;
            for (int bi = 0; bi < nblocks; bi++) {
                const ds_unet_block* b = part == 0 ? &u->down[bi] : part == 1 ? &u->mid : &u->up[bi];
                if (!b->attns) continue;
                int na = part == 1 ? 1 : b->n_layers, k = 0;
                for (int ai = 0; ai < na; ai++) {
                    const ds_unet_transformer* T = &b->attns[ai];
                    for (int ti = 0; ti < T->n_blocks; ti++, k++, n++) {
                        if (pass == 0) continue;
                        ds_cap_site* s = &c->sites[n];
                        s->path = T->blocks[ti].path_attn2;
                        s->kind = part;
                        s->level = part == 0 ? bi : part == 1 ? L - 1 : L - 1 - bi;
                        s->index_in_block = k;
                        s->heads = T->heads;
                        s->layer = -1;
                    }
                }
            }
        }
    }
    c->n_sites = n;
    return DS_OK;
}

static int block_item_match(const char* item, const ds_cap_site* s) {
    if (!strcmp(item, "down")) return s->kind == 0;
    if (!strcmp(item, "mid")) return s->kind == 1;
    if (!strcmp(item, "up")) return s->kind == 2;
    return prefix_match(s->path, item);
}

// The plan's block-level choice for a site: the mode's default set, narrowed (daam) or replaced
// (p2p, mean) by the block selectors when there are any. res selectors are applied per run.
static int site_block_selected(const ds_capture* c, const ds_cap_site* s) {
    const ds_capture_plan* p = &c->plan;
    if (p->mode == DS_HEATMAP_DAAM) {
        if (s->kind == 1 && !p->daam_mid) return 0;
        if (p->daam_low_memory && s->index_in_block != 0) return 0;
    }
    char item[128];
    const char* q = c->layers_sel;
    int nb = 0, m = 0;
    while (q && next_item(&q, item, sizeof item)) {
        int rh, rw;
        if (parse_res(item, &rh, &rw)) continue;
        nb++;
        m |= block_item_match(item, s);
    }
    if (nb) return m;
    if (p->mode == DS_HEATMAP_P2P) return s->kind != 1;  // p2p's from_where ("up", "down")
    return 1;
}

ds_status ds_capture_create(ds_context* ctx, ds_model* model, const ds_capture_plan* plan_in,
                            ds_capture** out) {
    ds_err* e = &ctx->err;
    ds_err_clear(e);
    *out = NULL;
    if (!model) return ds_errf(e, DS_ERR_ARG, "capture: no model");
    ds_capture_plan defp;
    if (!plan_in) {
        ds_capture_plan_init(&defp, DS_HEATMAP_DAAM);
        plan_in = &defp;
    }
    const ds_capture_plan* p = plan_in;
    if (p->mode != DS_HEATMAP_DAAM && p->mode != DS_HEATMAP_P2P && p->mode != DS_HEATMAP_MEAN)
        return ds_errf(e, DS_ERR_ARG, "capture: unknown heatmap mode %d", (int)p->mode);
    if (p->mode == DS_HEATMAP_DAAM && !p->per_head)
        return ds_errf(e, DS_ERR_ARG, "capture: daam mode needs per-head maps (per_head = 1): it clamps every "
                                      "head's upsampled map before the mean");
    if (!p->aggregate && !p->per_call)
        return ds_errf(e, DS_ERR_ARG, "capture: nothing to keep (aggregate and per_call are both 0)");
    if (p->call_begin < 0 || (p->call_end > 0 && p->call_end <= p->call_begin))
        return ds_errf(e, DS_ERR_ARG, "capture: call window [%d, %d) is empty", p->call_begin, p->call_end);
    if (p->n_call_weights < 0 || (p->n_call_weights > 0 && !p->call_weights))
        return ds_errf(e, DS_ERR_ARG, "capture: %d call weights but no array", p->n_call_weights);
    for (int i = 0; i < p->n_call_weights; i++)
        if (!isfinite(p->call_weights[i]))
            return ds_errf(e, DS_ERR_ARG, "capture: call weight %d is not finite", i);
    if (p->res < 0) return ds_errf(e, DS_ERR_ARG, "capture: res %d must be >= 0", p->res);

    ds_capture* c = ds_calloc(e, 1, sizeof *c, "capture");
    if (!c) return DS_ERR_OOM;
    c->m = model;
    c->be = model->be;
    c->plan = *p;
    c->last_call = -1;
    int rc = DS_OK;
    if (p->layers && p->layers[0]) {
        c->layers_sel = strdup(p->layers);
        if (!c->layers_sel) rc = ds_errf(e, DS_ERR_OOM, "out of memory");
    }
    if (!rc && p->heads && p->heads[0]) {
        c->heads_sel = strdup(p->heads);
        if (!c->heads_sel) rc = ds_errf(e, DS_ERR_OOM, "out of memory");
    }
    if (!rc && p->n_call_weights > 0) {
        c->weights = ds_malloc(e, sizeof(float) * (size_t)p->n_call_weights, "call weights");
        if (!c->weights) rc = DS_ERR_OOM;
        else memcpy(c->weights, p->call_weights, sizeof(float) * (size_t)p->n_call_weights);
    }
    c->plan.layers = c->layers_sel;
    c->plan.heads = c->heads_sel;
    c->plan.call_weights = c->weights;
    if (!rc) rc = ds_cap_parse_heads(e, c->heads_sel, &c->head_mask);
    if (!rc) rc = build_sites(c, e);
    // validate the selectors: each block selector must name some attn2; res items must parse
    if (!rc && c->layers_sel) {
        char item[128];
        const char* q = c->layers_sel;
        while (!rc && next_item(&q, item, sizeof item)) {
            int rh, rw, r = parse_res(item, &rh, &rw);
            if (r < 0) { rc = ds_errf(e, DS_ERR_ARG, "--layers \"%s\": expected res:N or res:HxW", item); break; }
            if (r == 1) { c->res_sel = 1; continue; }
            int hits = 0;
            for (int i = 0; i < c->n_sites; i++) {
                const ds_cap_site* s = &c->sites[i];
                if (block_item_match(item, s)) hits++;
            }
            if (!hits) {
                char list[600] = "";
                size_t used = 0;
                for (int i = 0; i < c->n_sites && used + 120 < sizeof list; i++)
                    used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", c->sites[i].path);
                rc = ds_errf(e, DS_ERR_ARG,
                             "--layers \"%s\": no cross-attention layer of this model matches; use down, mid, up, "
                             "res:N or a prefix of: %s", item, list);
            }
        }
    }
    int max_heads = 0;
    for (int i = 0; !rc && i < c->n_sites; i++) {
        c->sites[i].block_selected = site_block_selected(c, &c->sites[i]);
        if (c->sites[i].heads > max_heads) max_heads = c->sites[i].heads;
    }
    if (!rc && c->heads_sel && max_heads < 64 && !(c->head_mask & (((uint64_t)1 << max_heads) - 1)))
        rc = ds_errf(e, DS_ERR_ARG, "--heads \"%s\": this model's layers have at most %d heads (0-%d)", c->heads_sel,
                     max_heads, max_heads - 1);
    if (!rc) {
        int any = 0;
        for (int i = 0; i < c->n_sites; i++) any |= c->sites[i].block_selected;
        if (!any) rc = ds_errf(e, DS_ERR_ARG, "capture (%s): the layer selection \"%s\" leaves no cross-attention layer",
                               mode_name(p->mode), c->layers_sel ? c->layers_sel : "");
    }
    if (rc) {
        ds_capture_free(c);
        return (ds_status)rc;
    }
    *out = c;
    return DS_OK;
}

// ---- buffers -------------------------------------------------------------------------------------

static void free_layer(ds_capture* c, ds_cap_layer* L) {
    if (!L) return;
    if (L->agg) c->be->free(c->be, L->agg);
    for (int k = 0; k < L->n_calls_cap; k++)
        if (L->calls[k]) c->be->free(c->be, L->calls[k]);
    free(L->calls);
    free(L);
}

void ds_capture_reset(ds_capture* c) {
    if (!c) return;
    for (int i = 0; i < c->n_layers; i++) free_layer(c, c->layers[i]);
    free(c->layers);
    c->layers = NULL;
    c->n_layers = c->cap_layers = 0;
    free(c->call_index);
    free(c->call_t);
    free(c->call_w);
    c->call_index = NULL;
    c->call_t = c->call_w = NULL;
    c->n_calls = c->cap_calls = 0;
    c->last_call = -1;
    c->bytes = 0;
    c->failed = 0;
    c->fail_msg[0] = 0;
    c->Lk = 0;
    for (int i = 0; i < c->n_sites; i++) {
        c->sites[i].decided = 0;
        c->sites[i].layer = -1;
    }
}

void ds_capture_free(ds_capture* c) {
    if (!c) return;
    ds_capture_reset(c);
    free(c->sites);
    free(c->layers_sel);
    free(c->heads_sel);
    free(c->weights);
    free(c->ids[0]);
    free(c->ids[1]);
    free(c);
}

size_t ds_capture_bytes(const ds_capture* c) { return c ? c->bytes : 0; }

// Zeroed backend buffer of n floats (fp32 on every backend: sums of probabilities).
static float* zeroed(ds_capture* c, int64_t n) {
    float* p = c->be->alloc_f32(c->be, n);
    if (!p) return NULL;
    if (!strcmp(c->be->name, "cpu")) {
        memset(p, 0, sizeof(float) * (size_t)n);
    } else {
        float* z = calloc((size_t)n, sizeof(float));
        if (!z) {
            c->be->free(c->be, p);
            return NULL;
        }
        c->be->upload(c->be, p, z, n);
        free(z);
    }
    return p;
}

static void fail(ds_capture* c, const char* what, int64_t n) {
    if (c->failed) return;
    c->failed = 1;
    snprintf(c->fail_msg, sizeof c->fail_msg, "capture: out of memory allocating %s (%.1f MB)", what,
             (double)n * 4 / 1048576.0);
}

static float call_weight(const ds_capture* c, int call) {
    return call >= 0 && call < c->plan.n_call_weights ? c->weights[call] : 1.0f;
}

// daam's shape factor: int(math.sqrt(latent_hw // HW))
static int daam_factor(int latent_hw, int hw) { return (int)sqrt((double)(latent_hw / hw)); }

// Decides whether a site is captured in this run, with its actual grid; creates its layer.
static int decide(ds_capture* c, ds_cap_site* s, int Lq, int Lk, int heads, int h, int w) {
    s->decided = 1;
    s->layer = -1;
    if (!s->block_selected) return 0;
    const ds_capture_plan* p = &c->plan;
    if (c->res_sel && ds_cap_sel_match(NULL, c->layers_sel, s->path, h, w, NULL, NULL) != 1) return 0;
    int factor = 0;
    if (p->mode == DS_HEATMAP_DAAM) {
        factor = daam_factor(c->latent_hw, Lq);
        if (factor == 8) return 0;  // daam: "skip if too large" (the 8×8 level at 512 px)
    } else if (p->mode == DS_HEATMAP_P2P) {
        if (!(h == c->res_h && w == c->res_w)) return 0;
    }
    if (heads < 64 && !(c->head_mask & (((uint64_t)1 << heads) - 1))) return 0;
    ds_cap_layer* L = calloc(1, sizeof *L);
    if (!L) { fail(c, "a layer record", 0); return 0; }
    snprintf(L->path, sizeof L->path, "%s", s->path);
    L->h = h;
    L->w = w;
    L->Lq = Lq;
    L->Lk = Lk;
    L->heads = heads;
    L->nh = p->per_head ? heads : 1;
    L->factor = factor;
    L->n = (int64_t)c->nb * L->nh * Lq * Lk;
    L->ac.per_head = p->per_head;
    L->ac.head_mask = c->head_mask;
    L->ac.batch_begin = c->batch_begin;
    L->ac.batch_end = c->batch_end;
    if (c->n_layers == c->cap_layers) {
        int nc = c->cap_layers ? 2 * c->cap_layers : 16;
        ds_cap_layer** nl = realloc(c->layers, sizeof *nl * (size_t)nc);
        if (!nl) { free(L); fail(c, "the layer list", 0); return 0; }
        c->layers = nl;
        c->cap_layers = nc;
    }
    s->layer = c->n_layers;
    c->layers[c->n_layers++] = L;
    return 1;
}

// Registers `call` (if new) and returns its index in the call list, -1 on failure.
static int record_call(ds_capture* c, int call, float t, float w) {
    if (c->n_calls > 0 && c->last_call == call) return c->n_calls - 1;
    for (int k = 0; k < c->n_calls; k++)
        if (c->call_index[k] == call) return k;  // (a repeated call number: accumulate into it)
    if (c->n_calls == c->cap_calls) {
        int nc = c->cap_calls ? 2 * c->cap_calls : 64;
        int* ni = realloc(c->call_index, sizeof(int) * (size_t)nc);
        if (ni) c->call_index = ni;
        float* nt = realloc(c->call_t, sizeof(float) * (size_t)nc);
        if (nt) c->call_t = nt;
        float* nw = realloc(c->call_w, sizeof(float) * (size_t)nc);
        if (nw) c->call_w = nw;
        if (!ni || !nt || !nw) { fail(c, "the call list", 0); return -1; }
        c->cap_calls = nc;
    }
    c->call_index[c->n_calls] = call;
    c->call_t[c->n_calls] = t;
    c->call_w[c->n_calls] = w;
    c->last_call = call;
    return c->n_calls++;
}

static const ds_attn_capture* capture_attn(void* user, const char* path, int Lq, int Lk, int heads,
                                           int h, int w, int step, float timestep) {
    ds_capture* c = user;
    if (c->failed || step < 0) return NULL;
    // cross-attention only: an ".attn2" whose keys are the text context (77 per chunk)
    size_t n = strlen(path);
    if (n < 6 || strcmp(path + n - 6, ".attn2") != 0 || Lk % CTX_CHUNK != 0) return NULL;
    const ds_capture_plan* p = &c->plan;
    if (step < p->call_begin || (p->call_end > 0 && step >= p->call_end)) return NULL;
    float wgt = call_weight(c, step);
    if (wgt == 0.0f && !p->per_call) return NULL;
    ds_cap_site* s = NULL;
    for (int i = 0; i < c->n_sites && !s; i++)
        if (c->sites[i].path == path) s = &c->sites[i];
    for (int i = 0; i < c->n_sites && !s; i++)
        if (!strcmp(c->sites[i].path, path)) s = &c->sites[i];
    if (!s) return NULL;
    if (c->Lk == 0) c->Lk = Lk;
    if (Lk != c->Lk) return NULL;
    if (!s->decided && !decide(c, s, Lq, Lk, heads, h, w)) return NULL;
    if (s->layer < 0) return NULL;
    ds_cap_layer* L = c->layers[s->layer];
    if (L->Lq != Lq || L->heads != heads) return NULL;  // geometry changed mid-run: ignore
    int k = record_call(c, step, timestep, wgt);
    if (k < 0) return NULL;
    if (p->per_call) {
        if (k >= L->n_calls_cap) {
            int nc = L->n_calls_cap ? 2 * L->n_calls_cap : 64;
            while (nc <= k) nc *= 2;
            float** nb = realloc(L->calls, sizeof(float*) * (size_t)nc);
            if (!nb) { fail(c, "the call list", 0); return NULL; }
            for (int i = L->n_calls_cap; i < nc; i++) nb[i] = NULL;
            L->calls = nb;
            L->n_calls_cap = nc;
        }
        if (!L->calls[k]) {
            L->calls[k] = zeroed(c, L->n);
            if (!L->calls[k]) { fail(c, L->path, L->n); return NULL; }
            c->bytes += (size_t)L->n * sizeof(float);
        }
        L->ac.sum = L->calls[k];
        L->ac.weight = 1.0f;  // stored unweighted; the aggregate applies the weights
    } else {
        if (!L->agg) {
            L->agg = zeroed(c, L->n);
            if (!L->agg) { fail(c, L->path, L->n); return NULL; }
            c->bytes += (size_t)L->n * sizeof(float);
        }
        L->ac.sum = L->agg;
        L->ac.weight = wgt;
    }
    return &L->ac;
}

// ---- attach ------------------------------------------------------------------------------------

static int deepest_attn_level(const ds_unet* u) {
    int best = -1;
    for (int i = 0; i < u->cfg.n_levels; i++)
        if (u->down[i].attns && i > best) best = i;
    for (int i = 0; i < u->cfg.n_levels; i++)
        if (u->up[i].attns && u->cfg.n_levels - 1 - i > best) best = u->cfg.n_levels - 1 - i;
    return best < 0 ? 0 : best;
}

// Run geometry without a run (attach and estimates).
static int set_geometry(ds_capture* c, ds_err* e, int B, int W, int H) {
    ds_model* m = c->m;
    const ds_capture_plan* p = &c->plan;
    c->B = B;
    c->batch_end = B;
    c->batch_begin = p->both_halves ? 0 : B - 1;
    c->nb = c->batch_end - c->batch_begin;
    c->W = W;
    c->H = H;
    c->lat_h = H / m->vae_scale_factor;
    c->lat_w = W / m->vae_scale_factor;
    // daam (trace.py): h = sample_size · vae_scale_factor; latent_hw = 4096 if h in (512, 1024) else 9216
    int native = m->unet_cfg.sample_size * m->vae_scale_factor;
    c->latent_hw = native == 512 || native == 1024 ? 4096 : 9216;
    c->daam_x = (int)sqrt((double)c->latent_hw);
    if (p->mode == DS_HEATMAP_P2P) {
        if (p->res > 0) {
            c->res_h = c->res_w = p->res;
            if (c->lat_h != c->lat_w) {  // non-square: res N keeps the grid of N·N cells
                int found = 0;
                for (int l = 0; l < m->unet_cfg.n_levels && !found; l++)
                    if ((int64_t)(c->lat_h >> l) * (c->lat_w >> l) == (int64_t)p->res * p->res) {
                        c->res_h = c->lat_h >> l;
                        c->res_w = c->lat_w >> l;
                        found = 1;
                    }
            }
        } else {
            int l = deepest_attn_level(&m->unet);
            c->res_h = c->lat_h >> l;
            c->res_w = c->lat_w >> l;
        }
    }
    // the selection must keep something at this size
    int any = 0;
    for (int i = 0; i < c->n_sites; i++) {
        ds_cap_site* s = &c->sites[i];
        if (!s->block_selected) continue;
        int h = c->lat_h >> s->level, w = c->lat_w >> s->level;
        if (c->res_sel && ds_cap_sel_match(NULL, c->layers_sel, s->path, h, w, NULL, NULL) != 1) continue;
        if (p->mode == DS_HEATMAP_DAAM && daam_factor(c->latent_hw, h * w) == 8) continue;
        if (p->mode == DS_HEATMAP_P2P && !(h == c->res_h && w == c->res_w)) continue;
        if (s->heads < 64 && !(c->head_mask & (((uint64_t)1 << s->heads) - 1))) continue;
        any = 1;
    }
    if (!any) {
        char grids[256] = "";
        size_t used = 0;
        int last = -1;
        for (int i = 0; i < c->n_sites && used + 24 < sizeof grids; i++) {
            int l = c->sites[i].level;
            if (l == last) continue;
            last = l;
            if (used) used += (size_t)snprintf(grids + used, sizeof grids - used, ", ");
            used += (size_t)snprintf(grids + used, sizeof grids - used, "%dx%d (%s)", c->lat_h >> l, c->lat_w >> l,
                                     c->sites[i].kind == 0 ? "down" : c->sites[i].kind == 1 ? "mid" : "up");
        }
        return ds_errf(e, DS_ERR_ARG,
                       "capture (%s): no cross-attention layer is selected at %dx%d (layers \"%s\"%s); the "
                       "cross-attention grids are %s",
                       mode_name(p->mode), W, H, c->layers_sel ? c->layers_sel : "",
                       p->mode == DS_HEATMAP_DAAM ? ", daam drops factor 8" : "", grids);
    }
    return DS_OK;
}

int ds_capture_attach_unet(ds_capture* c, ds_err* e, ds_run* run, int B, int W, int H) {
    ds_capture_reset(c);
    c->attached = 0;
    DS_TRY(set_geometry(c, e, B, W, H));
    c->hooks.attn = capture_attn;
    c->hooks.user = c;
    c->attached = 1;
    run->capture = &c->hooks;
    return DS_OK;
}

int ds_capture_attach(ds_capture* c, ds_err* e, ds_run* run, ds_model* m,
                      const ds_generate_params* p, int B, int W, int H) {
    if (c->m != m) return ds_errf(e, DS_ERR_ARG, "capture: it was created for another model");
    DS_TRY(ds_capture_attach_unet(c, e, run, B, W, H));
    c->attached = 0;
    // token ids of both sides, as ds_model_encode_prompts chunks them
    const char* texts[2] = {p->negative_prompt ? p->negative_prompt : "", p->prompt};
    for (int i = 0; i < 2; i++) {
        free(c->ids[i]);
        c->ids[i] = NULL;
        int tr = 0;
        DS_TRY(ds_tokenizer_encode_chunks(m->tok, e, texts[i], m->pad_id, 0, &c->ids[i], &c->chunks[i], &tr));
        int32_t* t = NULL;
        int n = 0;
        DS_TRY(ds_tokenizer_encode(m->tok, e, texts[i], &t, &n));
        free(t);
        c->n_tok[i] = n;
    }
    c->attached = 1;
    return DS_OK;
}

// ---- queries -----------------------------------------------------------------------------------

ds_status ds_capture_estimate_bytes(ds_context* ctx, ds_model* model, const ds_capture_plan* plan,
                                    int width, int height, int calls, size_t* bytes) {
    ds_err* e = &ctx->err;
    *bytes = 0;
    ds_capture* c = NULL;
    DS_TRY(ds_capture_create(ctx, model, plan, &c));
    int native = model->unet_cfg.sample_size * model->vae_scale_factor;
    int W = width > 0 ? width : native, H = height > 0 ? height : native;
    int f = model->vae_scale_factor * (1 << (model->unet_cfg.n_levels - 1));
    if (W % f || H % f) {
        ds_capture_free(c);
        return ds_errf(e, DS_ERR_ARG, "capture estimate: %dx%d is not a multiple of %d", W, H, f);
    }
    int rc = set_geometry(c, e, 2, W, H);
    size_t total = 0;
    for (int i = 0; !rc && i < c->n_sites; i++) {
        ds_cap_site* s = &c->sites[i];
        if (!s->block_selected) continue;
        int h = c->lat_h >> s->level, w = c->lat_w >> s->level;
        if (c->res_sel && ds_cap_sel_match(NULL, c->layers_sel, s->path, h, w, NULL, NULL) != 1) continue;
        if (plan->mode == DS_HEATMAP_DAAM && daam_factor(c->latent_hw, h * w) == 8) continue;
        if (plan->mode == DS_HEATMAP_P2P && !(h == c->res_h && w == c->res_w)) continue;
        if (s->heads < 64 && !(c->head_mask & (((uint64_t)1 << s->heads) - 1))) continue;
        size_t one = (size_t)c->nb * (plan->per_head ? s->heads : 1) * (size_t)h * w * CTX_CHUNK * sizeof(float);
        total += plan->per_call ? one * (size_t)(calls > 0 ? calls : 1) : one;
    }
    ds_capture_free(c);
    if (!rc) *bytes = total;
    return (ds_status)rc;
}

int ds_capture_layer_count(const ds_capture* c) { return c ? c->n_layers : 0; }

ds_status ds_capture_layer_info_get(const ds_capture* c, int layer, ds_capture_layer_info* out) {
    if (!c || layer < 0 || layer >= c->n_layers) return DS_ERR_ARG;
    const ds_cap_layer* L = c->layers[layer];
    out->path = L->path;
    out->height = L->h;
    out->width = L->w;
    out->heads = L->heads;
    out->keys = L->Lk;
    out->factor = L->factor;
    return DS_OK;
}

int ds_capture_call_count(const ds_capture* c) { return c ? c->n_calls : 0; }

ds_status ds_capture_call_info(const ds_capture* c, int k, int* call, float* timestep) {
    if (!c || k < 0 || k >= c->n_calls) return DS_ERR_ARG;
    if (call) *call = c->call_index[k];
    if (timestep) *timestep = c->call_t[k];
    return DS_OK;
}

int ds_cap_layer_host(const ds_capture* c, ds_err* e, int layer, int k, const float** data,
                      float** owned) {
    *data = NULL;
    *owned = NULL;
    if (layer < 0 || layer >= c->n_layers) return ds_errf(e, DS_ERR_ARG, "capture: layer %d of %d", layer, c->n_layers);
    const ds_cap_layer* L = c->layers[layer];
    int on_host = !strcmp(c->be->name, "cpu");
    const float* src = NULL;
    if (k < 0) {
        src = L->agg;
        if (!src && !c->plan.per_call) return ds_errf(e, DS_ERR_ARG, "capture: no aggregate was kept");
    } else {
        if (!c->plan.per_call) return ds_errf(e, DS_ERR_ARG, "capture: per-call maps were not kept (per_call = 0)");
        if (k >= c->n_calls) return ds_errf(e, DS_ERR_ARG, "capture: call %d of %d", k, c->n_calls);
        src = k < L->n_calls_cap ? L->calls[k] : NULL;
    }
    if (src && on_host) {
        *data = src;
        return DS_OK;
    }
    float* h = ds_calloc(e, (size_t)L->n, sizeof(float), "capture copy");
    if (!h) return DS_ERR_OOM;
    if (src) {
        c->be->download(c->be, h, src, L->n);
    } else if (k < 0) {  // the aggregate from the stored calls: Σ_k w_k · call_k, in call order
        float* tmp = on_host ? NULL : ds_malloc(e, sizeof(float) * (size_t)L->n, "capture copy");
        if (!on_host && !tmp) { free(h); return DS_ERR_OOM; }
        for (int j = 0; j < c->n_calls; j++) {
            if (j >= L->n_calls_cap || !L->calls[j]) continue;
            const float w = c->call_w[j];
            if (w == 0.0f) continue;
            const float* cj = L->calls[j];
            if (!on_host) {
                c->be->download(c->be, tmp, L->calls[j], L->n);
                cj = tmp;
            }
            for (int64_t i = 0; i < L->n; i++) h[i] += w * cj[i];
        }
        free(tmp);
    }
    *data = h;
    *owned = h;
    return DS_OK;
}

ds_status ds_capture_raw(ds_context* ctx, const ds_capture* c, int layer, int k, float** out,
                         int64_t shape[4]) {
    ds_err* e = &ctx->err;
    ds_err_clear(e);
    *out = NULL;
    if (!c) return ds_errf(e, DS_ERR_ARG, "capture: NULL");
    const float* data;
    float* owned;
    DS_TRY(ds_cap_layer_host(c, e, layer, k, &data, &owned));
    const ds_cap_layer* L = c->layers[layer];
    if (!owned) {
        owned = ds_malloc(e, sizeof(float) * (size_t)L->n, "capture copy");
        if (!owned) return DS_ERR_OOM;
        memcpy(owned, data, sizeof(float) * (size_t)L->n);
    }
    shape[0] = c->nb;
    shape[1] = L->nh;
    shape[2] = L->Lq;
    shape[3] = L->Lk;
    *out = owned;
    return DS_OK;
}
