// test_localize.c — localization (host/localize.h) on the sd1_tiny fixture model.
//
// Checked:
//   1. neuron statistics and ConceptPrune's selection against the independent numpy/PyTorch reference
//      (tools/make_localize_fixtures.py → tests/fixtures/localize/): per-prompt column norms of every block at
//      every call within 1e-4 relative; the per-call selections and the union over the first τ calls exactly,
//      except near-ties (scores within 1e-4 of each other at the top-k boundary or of the base score); two
//      cases: CFG with unequal prompt counts, and no CFG with a union threshold;
//   2. the neurons.json written from a selection is what `diffscope prune` reads: ds_prune_run zeroes exactly
//      the selected (row, column) entries of every ff.net.2;
//   3. the LocoGen swap: all layers at all calls == generating the neutral prompt (bit-identical); a window of
//      layers == an independent run whose observer puts the neutral prompt's text-encoder output (taken from
//      the neutral prompt's own run) into those layers' context (bit-identical); a chained observer sees the
//      neutral context exactly at the window's layers;
//   4. head ablation: through the backend's attention op with the localization observer's probe, exactly that
//      head's output columns of the conditional batch become 0 and every other value is bit-identical; in a
//      whole run the chained observer sees that head's tiles zeroed and nothing before it changed;
//   5. the concept's attention mass equals an independent recomputation from ds_capture (mean mode, per head,
//      per call) to 1e-5;
//   6. timestep windows: calls before the window are untouched (mass bit-identical), a window from call c0 on
//      equals an independent observer run swapping the context from call c0; ds_localize's scores (layers,
//      heads, timesteps) equal a recomputation from single runs with the documented formulas, and rank 1 has
//      the largest score;
//   7. errors: empty concept, a prompt without the concept, a neutral prompt of another length, head layers that
//      match nothing, ranking by a missing detector.
#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "diffscope/heatmap.h"
#include "edit.h"
#include "localize.h"
#include "model.h"
#include "testutil.h"

#define MODEL "tests/fixtures/sd1_tiny"
#define FIXTURE "tests/fixtures/localize/sd1_neurons.safetensors"
#define NLAT (4 * 8 * 8)

static ds_context* ctx;
static ds_model* model;
static ds_loc_sites sites;

static const ds_st_tensor* st_get(const ds_st_file* f, const char* name, ds_dtype dt) {
    const ds_st_tensor* t = ds_st_find(f, name);
    CHECKF(t && t->dtype == dt, "fixture tensor %s missing or of another dtype", name);
    return t && t->dtype == dt ? t : NULL;
}

static void base_in(ds_loc_run_in* in, const char* prompt, int steps, float guidance, uint64_t seed) {
    memset(in, 0, sizeof *in);
    in->prompt = prompt;
    in->negative = "";
    in->steps = steps;
    in->guidance = guidance;
    in->seed = seed;
    in->width = in->height = 32;
}

// ---- 1, 2: neurons vs the numpy reference -----------------------------------------------------------

static int near_tie(const float* W, const float* nc, const float* nb, int F, int k, int j) {
    // the reference scores of the row (float64 from the stored float32 norms)
    double* s = malloc(sizeof(double) * (size_t)F);
    for (int q = 0; q < F; q++) s[q] = fabs((double)W[q]) * nc[q];
    double sj = s[j], sbj = fabs((double)W[j]) * nb[j];
    // k-th and (k+1)-th largest
    double vk = -1, vk1 = -1;
    for (int r = 0; r <= k && r < F; r++) {  // selection by repeated max (F is small here)
        int best = -1;
        for (int q = 0; q < F; q++)
            if (s[q] >= 0 && (best < 0 || s[q] > s[best])) best = q;
        if (r == k - 1) vk = s[best];
        if (r == k) vk1 = s[best];
        s[best] = -2;
    }
    free(s);
    double tol = 1e-4 * (sj > 0 ? sj : 1);
    return fabs(sj - sbj) <= tol || fabs(sj - vk) <= tol || (vk1 >= 0 && fabs(sj - vk1) <= tol);
}

static void test_neurons_case(const ds_st_file* fx, const cJSON* c, int write_json) {
    const char* name = cJSON_GetObjectItem(c, "name")->valuestring;
    int steps = cJSON_GetObjectItem(c, "steps")->valueint;
    float guidance = (float)cJSON_GetObjectItem(c, "guidance")->valuedouble;
    uint64_t seed = (uint64_t)cJSON_GetObjectItem(c, "seed")->valuedouble;
    double ratio = cJSON_GetObjectItem(c, "ratio")->valuedouble;
    int tau = cJSON_GetObjectItem(c, "tau")->valueint;
    double umin = cJSON_GetObjectItem(c, "union_min")->valuedouble;
    const cJSON* with = cJSON_GetObjectItem(c, "with_prompts");
    const cJSON* without = cJSON_GetObjectItem(c, "without_prompts");
    ds_err e = {0};
    int n_calls = 0;
    float* ts = NULL;
    CHECK(ds_loc_calls(&e, model, DS_SAMPLER_DEFAULT, steps, &n_calls, &ts) == DS_OK);
    char key[256];
    snprintf(key, sizeof key, "%s.timesteps", name);
    const ds_st_tensor* rt = st_get(fx, key, DS_DTYPE_F32);
    CHECKF(rt && rt->shape[0] == n_calls, "%s: %d calls, reference %lld", name, n_calls, rt ? (long long)rt->shape[0] : -1LL);
    if (!rt || rt->shape[0] != n_calls) { free(ts); return; }
    CHECK(!memcmp(ts, rt->data, sizeof(float) * (size_t)n_calls));
    ds_loc_neurons nr;
    CHECK(ds_loc_neurons_init(&e, &nr, &sites, n_calls, ts) == DS_OK);
    const cJSON* it;
    for (int side = 0; side < 2; side++) {
        const cJSON* set = side ? without : with;
        cJSON_ArrayForEach(it, set) {
            ds_loc_run_in in;
            base_in(&in, it->valuestring, steps, guidance, seed);
            in.acc = &nr;
            in.acc_side = side;
            ds_image img = {0};
            int rc = ds_loc_run(ctx, model, &sites, n_calls, &in, &img);
            CHECKF(rc == DS_OK, "run '%s': %s", it->valuestring, ds_last_error(ctx));
            ds_image_free(&img);
        }
    }
    CHECK(nr.n_prompts[0] == cJSON_GetArraySize(with) && nr.n_prompts[1] == cJSON_GetArraySize(without));
    // rows: every call, every block, (cond half) H·W rows per prompt
    for (int b = 0; b < sites.n_ffn; b++) {
        int64_t r0 = nr.rows[0][b];
        CHECKF(r0 > 0 && r0 % nr.n_prompts[0] == 0, "block %d: %lld rows", b, (long long)r0);
    }
    // norms
    double worst_norm = 0;
    int64_t n_mis = 0, n_ties = 0, n_sel = 0, n_union_mis = 0, n_union = 0;
    for (int b = 0; b < sites.n_ffn; b++) {
        const ds_loc_ffn* f = &sites.ffn[b];
        int F = f->F, C = f->C;
        const ds_st_tensor* tn[2];
        snprintf(key, sizeof key, "%s.norms_with.%s", name, f->block);
        tn[0] = st_get(fx, key, DS_DTYPE_F32);
        snprintf(key, sizeof key, "%s.norms_without.%s", name, f->block);
        tn[1] = st_get(fx, key, DS_DTYPE_F32);
        snprintf(key, sizeof key, "%s.mask.%s", name, f->block);
        const ds_st_tensor* tm = st_get(fx, key, DS_DTYPE_U8);
        snprintf(key, sizeof key, "%s.union.%s", name, f->block);
        const ds_st_tensor* tu = st_get(fx, key, DS_DTYPE_U8);
        if (!tn[0] || !tn[1] || !tm || !tu) continue;
        CHECK(tn[0]->shape[1] == F && tm->shape[1] == C && tm->shape[2] == F);
        float* got = malloc(sizeof(float) * (size_t)n_calls * F);
        double* d = malloc(sizeof(double) * (size_t)F);
        for (int side = 0; side < 2; side++) {
            for (int cl = 0; cl < n_calls; cl++) {
                ds_loc_neurons_norms(&nr, side, cl, b, d);
                for (int j = 0; j < F; j++) got[(size_t)cl * F + j] = (float)d[j];
            }
            char what[200];
            snprintf(what, sizeof what, "%s norms %s %s", name, side ? "without" : "with", f->block);
            tu_check_rel(what, got, (const float*)tn[side]->data, (int64_t)n_calls * F, 1e-4);
            tu_diff_t df = tu_diff(got, (const float*)tn[side]->data, (int64_t)n_calls * F);
            if (df.max_rel > worst_norm) worst_norm = df.max_rel;
        }
        // per-call selections
        float* W = malloc(sizeof(float) * (size_t)C * F);
        model->be->download(model->be, W, f->w2, (int64_t)C * F);
        uint8_t* mask = malloc((size_t)C * F);
        uint8_t* tie_at = calloc((size_t)C * F, 1);
        int k = (int)(ratio * F);
        for (int cl = 0; cl < n_calls; cl++) {
            int64_t n = ds_loc_select_call(&nr, W, b, cl, ratio, mask);
            const uint8_t* ref = tm->data + (size_t)cl * C * F;
            const float* nc = (const float*)tn[0]->data + (size_t)cl * F;
            const float* nb = (const float*)tn[1]->data + (size_t)cl * F;
            int64_t cnt = 0;
            for (int q = 0; q < C * F; q++) {
                cnt += mask[q];
                if (mask[q] == ref[q]) continue;
                n_mis++;
                int i = q / F, j = q % F;
                if (near_tie(W + (size_t)i * F, nc, nb, F, k, j)) {
                    n_ties++;
                    if (cl < tau) tie_at[q] = 1;
                } else {
                    CHECKF(0, "%s %s call %d: (row %d, column %d) selected %d, reference %d (not a tie)", name, f->block,
                           cl, i, j, mask[q], ref[q]);
                }
            }
            CHECK(n == cnt);
            n_sel += cnt;
        }
        free(mask);
        free(W);
        free(got);
        free(d);
        // union (after ds_loc_neurons_select below) compared with the reference; remember the ties
        if (!nr.keep) {
            CHECK(ds_loc_neurons_select(&e, &nr, model, ratio, tau, umin) == DS_OK);
            CHECK(nr.tau == tau);
        }
        for (int q = 0; q < C * F; q++) {
            n_union += tu->data[q];
            if (nr.keep[b][q] != tu->data[q]) {
                n_union_mis++;
                CHECKF(tie_at[q], "%s %s union: (row %d, column %d) kept %d, reference %d", name, f->block, q / F, q % F,
                       nr.keep[b][q], tu->data[q]);
            }
        }
        free(tie_at);
    }
    printf("%s: norms max rel %.2e; %lld selections over %d calls, %lld mismatches (%lld near-ties); union %lld, "
           "%lld mismatches\n", name, worst_norm, (long long)n_sel, n_calls, (long long)n_mis, (long long)n_ties,
           (long long)n_union, (long long)n_union_mis);
    CHECK(n_union > 0);

    if (write_json) {
        // 2. neurons.json → ds_prune_run zeroes exactly the kept entries
        char* json = NULL;
        CHECK(ds_loc_neurons_json(&e, &nr, "SD1.x", "\"concept\": \"red circle\"", &json) == DS_OK);
        char path[] = "/tmp/diffscope-test-neurons-XXXXXX";
        int fd = mkstemp(path);
        CHECK(fd >= 0);
        if (fd >= 0 && json) {
            CHECK(write(fd, json, strlen(json)) == (ssize_t)strlen(json));
            close(fd);
            cJSON* root = cJSON_Parse(json);
            CHECK(root && cJSON_GetObjectItem(root, "blocks"));
            cJSON_Delete(root);
            ds_edit_model em;
            ds_err e2 = {0};
            int rc = ds_edit_model_open(&e2, MODEL, &em);
            CHECKF(rc == DS_OK, "edit open: %s", e2.msg);
            ds_edit_result res;
            if (!rc) {
                rc = ds_prune_run(&em, &e2, path, &res);
                CHECKF(rc == DS_OK, "prune: %s", e2.msg);
            }
            if (!rc) {
                int64_t total = 0, expect = 0;
                int blocks_listed = 0;
                for (int b = 0; b < sites.n_ffn; b++) {
                    expect += nr.kept[b];
                    blocks_listed += nr.kept[b] > 0;
                }
                CHECK(res.n == blocks_listed);
                for (int i = 0; i < res.n; i++) {
                    ds_edit_layer* l = &res.layers[i];
                    int b = -1;
                    for (int q = 0; q < sites.n_ffn; q++) {
                        char nm[192];
                        snprintf(nm, sizeof nm, "unet.%s.ff.net.2.weight", sites.ffn[q].block);
                        if (!strcmp(nm, l->name)) b = q;
                    }
                    CHECKF(b >= 0, "prune touched %s", l->name);
                    if (b < 0) continue;
                    float* W = malloc(sizeof(float) * (size_t)(l->rows * l->cols));
                    model->be->download(model->be, W, sites.ffn[b].w2, l->rows * l->cols);
                    int bad = 0;
                    for (int64_t q = 0; q < l->rows * l->cols; q++) {
                        int keep = nr.keep[b][q];
                        total += keep;
                        if (keep ? l->delta[q] != -W[q] : l->delta[q] != 0) bad++;
                    }
                    CHECKF(!bad, "%s: %d entries differ from -W on the kept set / 0 elsewhere", l->name, bad);
                    free(W);
                }
                CHECK(total == expect);
                printf("neurons.json: %d blocks, %lld entries zeroed by ds_prune_run\n", res.n, (long long)total);
                ds_edit_result_free(&res);
            }
            if (rc == DS_OK || em.m) ds_edit_model_close(&em);
            unlink(path);
        }
        free(json);
    }
    ds_loc_neurons_free(&nr);
    free(ts);
}

static void test_neurons(void) {
    ds_st_file* fx = tu_fixture_open(FIXTURE);
    if (!fx) return;
    const char* cases = ds_st_meta(fx, "cases");
    cJSON* root = cases ? cJSON_Parse(cases) : NULL;
    CHECK(root && cJSON_IsArray(root));
    const cJSON* c;
    int i = 0;
    cJSON_ArrayForEach(c, root) test_neurons_case(fx, c, i++ == 0);
    cJSON_Delete(root);
    ds_st_close(fx);
}

// ---- 3: the LocoGen swap ------------------------------------------------------------------------------

typedef struct text_grab {
    float* ctx;  // cond row (rows, D)
    int64_t rows, D;
} text_grab;

static int tg_wants(void* u, const char* path, ds_node_kind k) { return k == DS_NODE_TEXT_HIDDEN && !strcmp(path, "text_encoder"); }
static int tg_observe(void* u, ds_node* n) {
    text_grab* g = u;
    int64_t B = n->shape[0];
    g->rows = n->shape[1];
    g->D = n->shape[2];
    free(g->ctx);
    g->ctx = malloc(sizeof(float) * (size_t)(g->rows * g->D));
    memcpy(g->ctx, n->data + (size_t)(B - 1) * g->rows * g->D, sizeof(float) * (size_t)(g->rows * g->D));
    return 0;
}

// independent swap: replaces the cond context of the listed attn2 paths from call `from` on
typedef struct swapper {
    const float* ctx;
    int64_t rows;
    const char* paths[64];
    int n;
    int from;
    int seen_order;  // records the attn2 order at call 0 when paths are not given
    char order[64][128];
    int n_order;
} swapper;

static int sw_wants(void* u, const char* path, ds_node_kind k) { return k == DS_NODE_ATTN_CONTEXT; }
static int sw_observe(void* u, ds_node* n) {
    swapper* s = u;
    if (s->seen_order) {
        if (n->step == 0 && s->n_order < 64) snprintf(s->order[s->n_order++], 128, "%s", n->path);
        return 0;
    }
    if (n->step < s->from) return 0;
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->paths[i], n->path)) {
            int64_t B = n->shape[0], L = n->shape[1], D = n->shape[2];
            CHECK(L == s->rows);
            memcpy(n->data + (size_t)(B - 1) * L * D, s->ctx, sizeof(float) * (size_t)(L * D));
            return 1;
        }
    return 0;
}

static uint8_t* gen(const char* prompt, const ds_observer* obs, float* lat) {
    ds_generate_params p;
    ds_generate_params_init(&p);
    p.prompt = prompt;
    p.negative_prompt = "";
    p.steps = 4;
    p.guidance = 7.5f;
    p.seed = 5;
    p.width = p.height = 32;
    p.observer = obs;
    p.out_latents = lat;
    ds_image img = {0};
    int rc = ds_generate(ctx, model, &p, &img);
    CHECKF(rc == DS_OK, "generate: %s", ds_last_error(ctx));
    return img.pixels;
}

// chained: records, per attn2 path at call 1, whether the cond context equals the neutral one
typedef struct ctx_probe {
    const float* neutral;
    int64_t rows;
    int n;
    char path[64][128];
    int is_neutral[64];
} ctx_probe;
static int cp_wants(void* u, const char* path, ds_node_kind k) { return k == DS_NODE_ATTN_CONTEXT; }
static int cp_observe(void* u, ds_node* n) {
    ctx_probe* c = u;
    if (n->step != 1 || c->n >= 64) return 0;
    int64_t B = n->shape[0], L = n->shape[1], D = n->shape[2];
    snprintf(c->path[c->n], 128, "%s", n->path);
    c->is_neutral[c->n++] = L == c->rows && !memcmp(n->data + (size_t)(B - 1) * L * D, c->neutral, sizeof(float) * (size_t)(L * D));
    return 0;
}

static const char* PROMPT = "a red circle in a kitchen";
static const char* NEUTRAL = "a kitchen";

static void test_swap(void) {
    ds_err e = {0};
    int n_calls;
    float* ts;
    CHECK(ds_loc_calls(&e, model, DS_SAMPLER_DEFAULT, 4, &n_calls, &ts) == DS_OK);
    float* neutral = NULL;
    int64_t nrows = 0;
    CHECK(ds_loc_encode(&e, model, NEUTRAL, "", 1, &neutral, &nrows) == DS_OK);
    CHECK(nrows == 77);
    // (a) everything swapped == the neutral prompt itself
    float lat_n[NLAT], lat_s[NLAT];
    uint8_t* img_n = gen(NEUTRAL, NULL, lat_n);
    ds_loc_run_in in;
    base_in(&in, PROMPT, 4, 7.5f, 5);
    ds_loc_iv all = {DS_LOC_IV_SWAP, 0, sites.n_attn, -1, 0, 0};
    in.iv = &all;
    in.neutral = neutral;
    in.neutral_rows = nrows;
    in.out_latents = lat_s;
    ds_image img = {0};
    CHECKF(ds_loc_run(ctx, model, &sites, n_calls, &in, &img) == DS_OK, "%s", ds_last_error(ctx));
    CHECKF(img_n && img.pixels && !memcmp(img_n, img.pixels, 32 * 32 * 3) && !memcmp(lat_n, lat_s, sizeof lat_n),
           "swapping every layer at every call must equal generating '%s'", NEUTRAL);
    ds_image_free(&img);
    free(img_n);

    // (b) a window vs an independent observer run with the neutral prompt's own text-encoder output
    text_grab tg = {0};
    ds_observer tobs = {tg_wants, tg_observe, &tg};
    free(gen(NEUTRAL, &tobs, NULL));
    CHECK(tg.ctx && tg.rows == nrows && !memcmp(tg.ctx, neutral, sizeof(float) * (size_t)(nrows * tg.D)));
    swapper order = {.seen_order = 1};
    ds_observer oobs = {sw_wants, sw_observe, &order};
    free(gen(PROMPT, &oobs, NULL));
    CHECK(order.n_order == sites.n_attn);
    for (int i = 0; i < order.n_order && i < sites.n_attn; i++) CHECK(!strcmp(order.order[i], sites.attn[i].path));
    for (int from = 0; from <= 2; from += 2) {
        int lb = 2, le = 5;
        swapper sw = {.ctx = tg.ctx, .rows = tg.rows, .from = from};
        for (int i = lb; i < le; i++) sw.paths[sw.n++] = order.order[i];
        ds_observer sobs = {sw_wants, sw_observe, &sw};
        float lat_ref[NLAT], lat_got[NLAT];
        uint8_t* ref = gen(PROMPT, &sobs, lat_ref);
        ds_loc_iv win = {DS_LOC_IV_SWAP, lb, le, -1, from, 0};
        ctx_probe cp = {.neutral = neutral, .rows = nrows};
        ds_observer cobs = {cp_wants, cp_observe, &cp};
        base_in(&in, PROMPT, 4, 7.5f, 5);
        in.iv = &win;
        in.neutral = neutral;
        in.neutral_rows = nrows;
        in.out_latents = lat_got;
        in.chain = &cobs;
        CHECKF(ds_loc_run(ctx, model, &sites, n_calls, &in, &img) == DS_OK, "%s", ds_last_error(ctx));
        CHECKF(ref && img.pixels && !memcmp(ref, img.pixels, 32 * 32 * 3) && !memcmp(lat_ref, lat_got, sizeof lat_ref),
               "window swap layers [%d, %d) from call %d differs from the independent observer run", lb, le, from);
        float lat_base[NLAT];
        free(gen(PROMPT, NULL, lat_base));
        CHECK(memcmp(lat_base, lat_got, sizeof lat_base) != 0);  // and it did change something
        CHECK(cp.n == sites.n_attn);
        for (int i = 0; i < cp.n; i++)
            CHECKF(cp.is_neutral[i] == (i >= lb && i < le && 1 >= from), "call 1, %s (window from call %d): neutral context %d",
                   cp.path[i], from, cp.is_neutral[i]);
        ds_image_free(&img);
        free(ref);
    }
    free(tg.ctx);
    free(neutral);
    free(ts);
    printf("swap: all layers == neutral prompt; windows == independent observer runs (bit-identical)\n");
}

// ---- 4: head ablation ---------------------------------------------------------------------------------

static void test_head_op(void) {
    // the backend's attention op with the localization observer's probe for layer 3, head 5, call 0
    ds_backend* be = model->be;
    int l = 3, h = 5, B = 2, Lq = 16, Lk = 77, heads = sites.attn[l].heads, dh = 4, C = heads * dh;
    CHECK(h < heads);
    tu_rng r;
    tu_rng_seed(&r, 42);
    float* q = tu_alloc((int64_t)B * Lq * C);
    float* k = tu_alloc((int64_t)B * Lk * C);
    float* v = tu_alloc((int64_t)B * Lk * C);
    tu_fill_normal(&r, q, (int64_t)B * Lq * C, 0, 1);
    tu_fill_normal(&r, k, (int64_t)B * Lk * C, 0, 1);
    tu_fill_normal(&r, v, (int64_t)B * Lk * C, 0, 1);
    float* dq = tu_be_upload(be, q, (int64_t)B * Lq * C);
    float* dk = tu_be_upload(be, k, (int64_t)B * Lk * C);
    float* dv = tu_be_upload(be, v, (int64_t)B * Lk * C);
    float* o1 = tu_be_poisoned(be, (int64_t)B * Lq * C);
    float* o2 = tu_be_poisoned(be, (int64_t)B * Lq * C);
    be->attention(be, dq, C, dk, C, dv, C, o1, B, Lq, Lk, heads, dh, 0.5f, 0, NULL);
    ds_loc_run_in in;
    base_in(&in, PROMPT, 4, 7.5f, 5);
    ds_loc_iv iv = {DS_LOC_IV_HEAD, l, l + 1, h, 0, 0};
    in.iv = &iv;
    ds_loc_obs o;
    ds_observer obs = ds_loc_observer(&o, &sites, 5, &in);
    ds_err e = {0};
    ds_run run = {.be = be, .arena = &model->arena, .err = &e, .observer = &obs, .step = 0, .timestep = 999,
                  .cond_batch_begin = 1};
    ds_attn_probe probe;
    const ds_attn_probe* pr = ds_observe_probe_ex(&run, sites.attn[l].path, 4, 4, Lk, heads, &probe);
    CHECK(pr != NULL);
    if (pr) probe.batch_begin = run.cond_batch_begin;
    be->attention(be, dq, C, dk, C, dv, C, o2, B, Lq, Lk, heads, dh, 0.5f, 0, pr);
    float* a = tu_be_download(be, o1, (int64_t)B * Lq * C);
    float* b = tu_be_download(be, o2, (int64_t)B * Lq * C);
    int64_t zero_ok = 0, same_ok = 0, n = (int64_t)B * Lq * C;
    for (int64_t i = 0; i < n; i++) {
        int bb = (int)(i / ((int64_t)Lq * C)), col = (int)(i % C), hh = col / dh;
        if (bb == 1 && hh == h) zero_ok += b[i] == 0.0f;
        else same_ok += !memcmp(&a[i], &b[i], sizeof(float));
    }
    CHECKF(zero_ok == (int64_t)Lq * dh, "ablated head: %lld of %d values are 0", (long long)zero_ok, Lq * dh);
    CHECKF(same_ok == n - (int64_t)Lq * dh, "other values: %lld of %lld bit-identical", (long long)same_ok,
           (long long)(n - (int64_t)Lq * dh));
    // a probe on another layer or at a call outside the window changes nothing
    run.step = 0;
    pr = ds_observe_probe_ex(&run, sites.attn[l + 1].path, 4, 4, Lk, heads, &probe);
    CHECK(pr == NULL);
    be->free(be, dq);
    be->free(be, dk);
    be->free(be, dv);
    be->free(be, o1);
    be->free(be, o2);
    free(q);
    free(k);
    free(v);
    free(a);
    free(b);
    printf("head ablation (op): head %d of the conditional batch zeroed, %lld other values bit-identical\n", h,
           (long long)same_ok);
}

// records the attn2 tiles (cond batch) of call 0
typedef struct tiles {
    int n_attn;
    const ds_loc_sites* s;
    double sum[64][16];   // Σ P per (layer, head) at call 0
    int zero[64][16];     // every tile of (layer, head) all zero at call 0
    int seen[64][16];
} tiles;
static int ti_wants(void* u, const char* path, ds_node_kind k) {
    size_t n = strlen(path);
    return k == DS_NODE_ATTN_PROBS && n > 6 && !strcmp(path + n - 6, ".attn2");
}
static int ti_observe(void* u, ds_node* n) {
    tiles* t = u;
    if (n->step != 0) return 0;
    int l = -1;
    for (int i = 0; i < t->s->n_attn; i++)
        if (!strcmp(t->s->attn[i].path, n->path)) l = i;
    if (l < 0 || n->head >= 16) return 0;
    if (!t->seen[l][n->head]) t->zero[l][n->head] = 1;
    t->seen[l][n->head] = 1;
    for (int64_t i = 0; i < (int64_t)n->nrows * n->shape[1]; i++) {
        t->sum[l][n->head] += n->data[i];
        if (n->data[i] != 0) t->zero[l][n->head] = 0;
    }
    return 0;
}

static void test_head_run(void) {
    int n_calls;
    float* ts;
    ds_err e = {0};
    CHECK(ds_loc_calls(&e, model, DS_SAMPLER_DEFAULT, 4, &n_calls, &ts) == DS_OK);
    int l = 6, h = 2;
    tiles base = {.s = &sites}, abl = {.s = &sites};
    for (int pass = 0; pass < 2; pass++) {
        ds_loc_run_in in;
        base_in(&in, PROMPT, 4, 7.5f, 5);
        ds_loc_iv iv = {DS_LOC_IV_HEAD, l, l + 1, h, 0, 0};
        if (pass) in.iv = &iv;
        ds_observer cobs = {ti_wants, ti_observe, pass ? &abl : &base};
        in.chain = &cobs;
        ds_image img = {0};
        CHECKF(ds_loc_run(ctx, model, &sites, n_calls, &in, &img) == DS_OK, "%s", ds_last_error(ctx));
        ds_image_free(&img);
    }
    for (int i = 0; i < sites.n_attn; i++)
        for (int k = 0; k < sites.attn[i].heads; k++) {
            CHECK(base.seen[i][k] && abl.seen[i][k]);
            if (i == l && k == h) CHECKF(abl.zero[i][k] && !base.zero[i][k], "layer %d head %d: not zeroed", i, k);
            else if (i <= l) CHECKF(abl.sum[i][k] == base.sum[i][k], "call 0, layer %d head %d changed", i, k);
        }
    // later layers see the change at call 0
    int changed = 0;
    for (int i = l + 1; i < sites.n_attn; i++)
        for (int k = 0; k < sites.attn[i].heads; k++) changed += abl.sum[i][k] != base.sum[i][k];
    CHECK(changed > 0);
    free(ts);
    printf("head ablation (run): layer %d head %d zeroed, earlier layers and its other heads unchanged, %d later "
           "(layer, head) pairs changed\n", l, h, changed);
}

// ---- 5: the concept's attention mass vs ds_capture --------------------------------------------------

static void test_mass_vs_capture(void) {
    int n_calls;
    float* ts;
    ds_err e = {0};
    CHECK(ds_loc_calls(&e, model, DS_SAMPLER_DEFAULT, 4, &n_calls, &ts) == DS_OK);
    ds_heatmap_wordlist wl;
    CHECK(ds_heatmap_words(ctx, model, PROMPT, "red circle", &wl) == DS_OK);
    int rows[8], nr = 0;
    for (int w = 0; w < wl.n; w++)
        for (int t = 0; t < wl.words[w].n_tokens && nr < 8; t++) rows[nr++] = wl.words[w].tokens[t];
    ds_heatmap_words_free(&wl);
    CHECK(nr == 2);
    size_t cells = (size_t)sites.n_attn * sites.max_heads * n_calls;
    double* mass = calloc(cells, sizeof(double));
    ds_loc_run_in in;
    base_in(&in, PROMPT, 4, 7.5f, 5);
    in.concept_rows = rows;
    in.n_concept_rows = nr;
    in.mass = mass;
    ds_image img = {0};
    CHECKF(ds_loc_run(ctx, model, &sites, n_calls, &in, &img) == DS_OK, "%s", ds_last_error(ctx));
    // independent: ds_capture, mean mode, every attn2, per head, per call
    ds_capture_plan plan;
    ds_capture_plan_init(&plan, DS_HEATMAP_MEAN);
    plan.per_head = 1;
    plan.per_call = 1;
    ds_capture* cap = NULL;
    CHECK(ds_capture_create(ctx, model, &plan, &cap) == DS_OK);
    ds_generate_params p;
    ds_generate_params_init(&p);
    p.prompt = PROMPT;
    p.steps = 4;
    p.seed = 5;
    p.width = p.height = 32;
    p.capture = cap;
    ds_image img2 = {0};
    CHECK(ds_generate(ctx, model, &p, &img2) == DS_OK);
    CHECK(img.pixels && img2.pixels && !memcmp(img.pixels, img2.pixels, 32 * 32 * 3));
    CHECK(ds_capture_call_count(cap) == n_calls);
    double worst = 0;
    int checked = 0;
    for (int li = 0; li < ds_capture_layer_count(cap); li++) {
        ds_capture_layer_info info;
        ds_capture_layer_info_get(cap, li, &info);
        int l = -1;
        for (int i = 0; i < sites.n_attn; i++)
            if (!strcmp(sites.attn[i].path, info.path)) l = i;
        CHECK(l >= 0);
        if (l < 0) continue;
        for (int k = 0; k < n_calls; k++) {
            float* raw = NULL;
            int64_t sh[4];
            CHECK(ds_capture_raw(ctx, cap, li, k, &raw, sh) == DS_OK);
            if (!raw) continue;
            int64_t Lq = sh[2], Lk = sh[3];
            for (int h = 0; h < sh[1]; h++) {
                double s = 0;
                for (int64_t qq = 0; qq < Lq; qq++)
                    for (int t = 0; t < nr; t++) s += raw[((size_t)h * Lq + qq) * Lk + rows[t]];
                s /= (double)Lq;
                double got = mass[((size_t)l * sites.max_heads + h) * n_calls + k];
                double rel = fabs(got - s) / (fabs(s) > 1e-12 ? fabs(s) : 1e-12);
                if (rel > worst) worst = rel;
                checked++;
            }
            free(raw);
        }
    }
    CHECKF(worst <= 1e-5, "concept mass vs capture: max rel %.3e", worst);
    CHECK(checked == sites.n_attn * 8 * n_calls);
    printf("concept mass vs ds_capture: %d cells, max rel %.2e\n", checked, worst);
    ds_capture_free(cap);
    ds_image_free(&img);
    ds_image_free(&img2);
    free(mass);
    free(ts);
}

// ---- 6: timestep windows and ds_localize's scores ------------------------------------------------------

static double img_change(const ds_image* a, const ds_image* b) {
    double s = 0;
    size_t n = (size_t)a->width * a->height * 3;
    for (size_t i = 0; i < n; i++) s += fabs((double)a->pixels[i] - b->pixels[i]);
    return s / (255.0 * n);
}

// mass drop over S = unmodified cells at calls >= c0 (independently of the library's bookkeeping)
static double mass_drop(const double* base, const double* iv, int n_calls, int lb, int le, int head, int c0, int c1) {
    double mb = 0, mi = 0;
    for (int l = 0; l < sites.n_attn; l++)
        for (int h = 0; h < sites.attn[l].heads; h++)
            for (int c = c0; c < n_calls; c++) {
                int in_calls = c >= c0 && c < c1;
                int mod = head < 0 ? (in_calls && l >= lb && l < le) : (in_calls && l == lb && h == head);
                if (mod) continue;
                size_t q = ((size_t)l * sites.max_heads + h) * n_calls + c;
                mb += base[q];
                mi += iv[q];
            }
    return mb > 0 ? 1.0 - mi / mb : NAN;
}

static const char* PROMPT2 = "a blue square and a red circle";

static void test_localize_scores(void) {
    // two concept prompts: every score is a mean over them, with its per-prompt records and standard error;
    // the neutral prompt is cycled; prompt i starts from seed 5 + i
    const char* with[] = {PROMPT, PROMPT2};
    const char* without[] = {NEUTRAL};
    ds_loc_params p;
    ds_loc_params_init(&p);
    p.concept = "red circle";
    p.with = with;
    p.n_with = 2;
    p.without = without;
    p.n_without = 1;
    p.steps = 4;
    p.seed = 5;
    p.seed_per_prompt = 1;
    p.width = p.height = 32;
    p.timestep_window = 2;
    p.head_prompts = 1;
    p.head_layers = "u1.a1, down_blocks.0.attentions.1";  // 2 layers: 16 ablations
    ds_loc_result r;
    int rc = ds_localize(ctx, model, &p, &r);
    CHECKF(rc == DS_OK, "localize: %s", ds_last_error(ctx));
    if (rc) return;
    int n_calls = r.n_calls;
    // the default window: LocoGen's 3 of 16 scaled to the fixture's 11 attn2 layers, round(33/16) = 2 → 10 windows
    CHECK(sites.n_attn == 11 && r.window == 2);
    CHECK(n_calls == 5 && r.n_tsteps == 3 && r.n_windows == 10 && r.n_heads == 16 && r.n_with == 2);
    for (int w = 0; w < r.n_windows; w++)
        CHECKF(r.windows[w].layer_end - r.windows[w].layer_begin == 2, "window %s: layers [%d, %d)", r.windows[w].label,
               r.windows[w].layer_begin, r.windows[w].layer_end);
    CHECK(r.heads[0].layer_begin == 1 && r.heads[8].layer_begin == 6 && r.heads[15].head == 7);
    CHECK(r.runs == 2 * (1 + r.n_windows + r.n_tsteps) + r.n_heads + 1);
    CHECK(r.tau == 1 && r.has_neurons);
    // recompute from single runs: each prompt's baseline, then a few interventions on it
    size_t cells = (size_t)sites.n_attn * sites.max_heads * n_calls;
    double* bm[2] = {calloc(cells, sizeof(double)), calloc(cells, sizeof(double))};
    double* im = calloc(cells, sizeof(double));
    ds_err e = {0};
    float* neutral = NULL;
    int64_t nrows = 0;
    CHECK(ds_loc_encode(&e, model, NEUTRAL, "", 1, &neutral, &nrows) == DS_OK);
    struct { ds_loc_score* sc; int n; } sets[3] = {{r.tsteps, r.n_tsteps}, {r.windows, 2}, {r.heads + 7, 3}};
    double rec[2][8][3];  // [prompt][checked score][mass drop, image change]
    int checked = 0;
    for (int pi = 0; pi < 2; pi++) {
        int rows[8] = {0}, nr = 0;
        ds_heatmap_wordlist wl;
        CHECK(ds_heatmap_words(ctx, model, with[pi], "red circle", &wl) == DS_OK);
        for (int w = 0; w < wl.n; w++)
            for (int t = 0; t < wl.words[w].n_tokens && nr < 8; t++) rows[nr++] = wl.words[w].tokens[t];
        ds_heatmap_words_free(&wl);
        ds_loc_run_in in;
        base_in(&in, with[pi], 4, 7.5f, 5 + pi);
        in.concept_rows = rows;
        in.n_concept_rows = nr;
        in.mass = bm[pi];
        ds_image base = {0};
        CHECK(ds_loc_run(ctx, model, &sites, n_calls, &in, &base) == DS_OK);
        // this prompt's concept mass per layer = mean over the layer's heads and the calls
        double worst_pl = 0;
        for (int l = 0; l < sites.n_attn; l++) {
            double s = 0;
            for (int h = 0; h < sites.attn[l].heads; h++)
                for (int c = 0; c < n_calls; c++) s += bm[pi][((size_t)l * sites.max_heads + h) * n_calls + c];
            s /= (double)sites.attn[l].heads * n_calls;
            double d = fabs(s - r.prompt_layer_mass[(size_t)pi * sites.n_attn + l]);
            if (d > worst_pl) worst_pl = d;
        }
        CHECKF(worst_pl <= 1e-12, "prompt %d layer mass: %.3e", pi, worst_pl);
        int k = 0;
        for (int si = 0; si < 3; si++)
            for (int q = 0; q < sets[si].n; q++, k++) {
                ds_loc_score* sc = &sets[si].sc[q];
                const double* pp = sc->per_prompt + (size_t)pi * 3;
                if (sc->head >= 0 && pi > 0) {  // heads are ablated on the first head_prompts prompts only
                    CHECKF(isnan(pp[0]) && isnan(pp[1]) && isnan(pp[2]), "%s: scored on prompt %d", sc->label, pi);
                    continue;
                }
                ds_loc_iv iv = {sc->head >= 0 ? DS_LOC_IV_HEAD : DS_LOC_IV_SWAP, sc->layer_begin, sc->layer_end, sc->head,
                                sc->call_begin, sc->call_end};
                base_in(&in, with[pi], 4, 7.5f, 5 + pi);
                in.concept_rows = rows;
                in.n_concept_rows = nr;
                in.mass = im;
                in.iv = &iv;
                in.neutral = neutral;
                in.neutral_rows = nrows;
                ds_image img = {0};
                CHECK(ds_loc_run(ctx, model, &sites, n_calls, &in, &img) == DS_OK);
                // the calls before a timestep window are untouched
                for (int l = 0; l < sites.n_attn; l++)
                    for (int h = 0; h < 8; h++)
                        for (int c = 0; c < sc->call_begin; c++) {
                            size_t x = ((size_t)l * sites.max_heads + h) * n_calls + c;
                            CHECKF(im[x] == bm[pi][x], "%s: call %d before the window changed", sc->label, c);
                        }
                rec[pi][k][0] = mass_drop(bm[pi], im, n_calls, sc->layer_begin, sc->layer_end, sc->head, sc->call_begin,
                                          sc->call_end);
                rec[pi][k][1] = img_change(&img, &base);
                CHECKF((isnan(rec[pi][k][0]) && isnan(pp[0])) || fabs(rec[pi][k][0] - pp[0]) <= 1e-12,
                       "%s prompt %d: mass drop %g vs %g", sc->label, pi, pp[0], rec[pi][k][0]);
                CHECKF(fabs(rec[pi][k][1] - pp[1]) <= 1e-12, "%s prompt %d: image change %g vs %g", sc->label, pi, pp[1],
                       rec[pi][k][1]);
                CHECK(isnan(pp[2]));  // no detector
                ds_image_free(&img);
                checked++;
            }
        ds_image_free(&base);
    }
    // the means over the prompts and their standard errors: with two values a and b, the sample sd is
    // |a − b|/√2 and the standard error |a − b|/2; with one value there is no standard error
    int k = 0;
    for (int si = 0; si < 3; si++)
        for (int q = 0; q < sets[si].n; q++, k++) {
            ds_loc_score* sc = &sets[si].sc[q];
            if (sc->head >= 0) {
                CHECKF(sc->n_prompts == 1 && fabs(sc->image_change - rec[0][k][1]) <= 1e-12 && isnan(sc->image_change_se) &&
                       isnan(sc->score_se), "%s: one prompt", sc->label);
                continue;
            }
            CHECK(sc->n_prompts == 2);
            double ic = 0.5 * (rec[0][k][1] + rec[1][k][1]), ic_se = 0.5 * fabs(rec[0][k][1] - rec[1][k][1]);
            CHECKF(fabs(sc->image_change - ic) <= 1e-12 && fabs(sc->image_change_se - ic_se) <= 1e-12,
                   "%s: image change %g ± %g vs %g ± %g", sc->label, sc->image_change, sc->image_change_se, ic, ic_se);
            int n_md = !isnan(rec[0][k][0]) + !isnan(rec[1][k][0]);
            double md = n_md == 2 ? 0.5 * (rec[0][k][0] + rec[1][k][0]) : !isnan(rec[0][k][0]) ? rec[0][k][0] : rec[1][k][0];
            double md_se = n_md == 2 ? 0.5 * fabs(rec[0][k][0] - rec[1][k][0]) : NAN;
            CHECKF((isnan(md) && isnan(sc->mass_drop)) || fabs(md - sc->mass_drop) <= 1e-12, "%s: mass drop %g vs %g",
                   sc->label, sc->mass_drop, md);
            CHECKF((isnan(md_se) && isnan(sc->mass_drop_se)) || fabs(md_se - sc->mass_drop_se) <= 1e-12,
                   "%s: mass drop se %g vs %g", sc->label, sc->mass_drop_se, md_se);
            // ranked by the concept mass drop (no detector): score and score_se are that metric's
            CHECK((isnan(sc->score) && isnan(md)) || sc->score == sc->mass_drop);
            CHECK((isnan(sc->score_se) && isnan(md_se)) || sc->score_se == sc->mass_drop_se);
            CHECK(isnan(sc->detector_drop) && isnan(sc->detector_drop_se));
        }
    // baseline head mass = mean over the prompts of the mean over the calls; its standard error
    double worst_hm = 0, worst_se = 0;
    for (int l = 0; l < sites.n_attn; l++)
        for (int h = 0; h < 8; h++) {
            double m2[2];
            for (int pi = 0; pi < 2; pi++) {
                m2[pi] = 0;
                for (int c = 0; c < n_calls; c++) m2[pi] += bm[pi][((size_t)l * sites.max_heads + h) * n_calls + c];
                m2[pi] /= n_calls;
            }
            double d = fabs(0.5 * (m2[0] + m2[1]) - r.head_mass[(size_t)l * sites.max_heads + h]);
            double dse = fabs(0.5 * fabs(m2[0] - m2[1]) - r.head_mass_se[(size_t)l * sites.max_heads + h]);
            if (d > worst_hm) worst_hm = d;
            if (dse > worst_se) worst_se = dse;
        }
    CHECKF(worst_hm <= 1e-12 && worst_se <= 1e-12, "head mass: %.3e, its se: %.3e", worst_hm, worst_se);
    // the last timestep window has no later calls: no mass score; the others have one
    CHECK(isnan(r.tsteps[r.n_tsteps - 1].mass_drop) && !isnan(r.tsteps[0].mass_drop));
    // ranking: rank 1 has the largest (non-NaN) score
    ds_loc_score* all[3] = {r.windows, r.heads, r.tsteps};
    int ns[3] = {r.n_windows, r.n_heads, r.n_tsteps};
    for (int si = 0; si < 3; si++) {
        int top = -1;
        double best = -INFINITY;
        for (int q = 0; q < ns[si]; q++) {
            CHECK(all[si][q].rank >= 1 && all[si][q].rank <= ns[si]);
            if (all[si][q].rank == 1) top = q;
            if (!isnan(all[si][q].mass_drop) && all[si][q].mass_drop > best) best = all[si][q].mass_drop;
        }
        CHECK(top >= 0 && all[si][top].score == best);
    }
    printf("ds_localize: %d runs in %.2f s; 2 prompts: %d per-prompt scores recomputed from single runs (timestep "
           "windows of %d calls, layer windows, heads), their means and standard errors\n", r.runs, r.seconds, checked,
           r.timestep_window);
    free(neutral);
    free(bm[0]);
    free(bm[1]);
    free(im);
    ds_loc_result_free(&r);
}

// ---- 7: errors ----------------------------------------------------------------------------------------

static void test_errors(void) {
    const char* with[] = {"a blue square"};
    const char* without[] = {"a park"};
    ds_loc_params p;
    ds_loc_params_init(&p);
    p.with = with;
    p.n_with = 1;
    p.without = without;
    p.n_without = 1;
    p.steps = 2;
    ds_loc_result r;
    p.concept = "";
    CHECK(ds_localize(ctx, model, &p, &r) == DS_ERR_ARG && strstr(ds_last_error(ctx), "concept"));
    p.concept = "red circle";
    CHECK(ds_localize(ctx, model, &p, &r) == DS_ERR_ARG);
    CHECKF(strstr(ds_last_error(ctx), "a blue square") && strstr(ds_last_error(ctx), "concept prompt 1"), "%s",
           ds_last_error(ctx));
    // a neutral prompt of two 75-token chunks against a one-chunk prompt
    char longp[2048] = "a";
    for (int i = 0; i < 90; i++) strcat(longp, " kitchen");
    const char* with2[] = {"a red circle"};
    const char* neutral[] = {longp};
    p.with = with2;
    p.neutral = neutral;
    p.n_neutral = 1;
    p.parts = DS_LOC_LAYERS;
    CHECK(ds_localize(ctx, model, &p, &r) == DS_ERR_ARG);
    CHECKF(strstr(ds_last_error(ctx), "neutral"), "%s", ds_last_error(ctx));
    p.parts = DS_LOC_HEADS;
    p.n_neutral = 0;
    p.with = with2;
    p.head_layers = "up_blocks.7";
    CHECK(ds_localize(ctx, model, &p, &r) == DS_ERR_ARG && strstr(ds_last_error(ctx), "match no cross-attention layer"));
    p.head_layers = NULL;
    p.parts = DS_LOC_ALL;
    p.rank_by = DS_LOC_RANK_DETECTOR;
    CHECK(ds_localize(ctx, model, &p, &r) == DS_ERR_ARG && strstr(ds_last_error(ctx), "detector"));
}

static void test_default_window(void) {
    // hand-checked: max(1, round(3·L/16)), halves rounded up
    static const int L[] = {1, 2, 3, 5, 6, 7, 11, 13, 16, 24, 70}, want[] = {1, 1, 1, 1, 1, 1, 2, 2, 3, 5, 13};
    for (size_t i = 0; i < sizeof L / sizeof *L; i++)
        CHECKF(ds_loc_default_window(L[i]) == want[i], "default window for %d layers: %d, expected %d", L[i],
               ds_loc_default_window(L[i]), want[i]);
    printf("default LocoGen window: 3 of 16 scaled to the depth (SD1.x 3, testbed 1, fixture 2)\n");
}

// Ranking: descending by the metric, NaN last; equal detector drops (they move in steps of 1/prompts) are
// ordered by the image change, then by index. Hand-made scores, the expected ranks worked out by hand.
static void test_rank_ties(void) {
    ds_loc_score s[5];
    memset(s, 0, sizeof s);
    const double det[5] = {0.5, 0.5, NAN, 0.75, 0.5}, img[5] = {0.01, 0.03, 0.9, 0.0, 0.03}, mass[5] = {9, 1, 2, 3, 4};
    for (int i = 0; i < 5; i++) {
        s[i].detector_drop = det[i];
        s[i].image_change = img[i];
        s[i].mass_drop = mass[i];
    }
    ds_loc_rank(s, 5, DS_LOC_RANK_AUTO, 1);  // by the detector: 3 (0.75), then 1 and 4 (0.5, image 0.03: index), 0, NaN
    const int want[5] = {4, 2, 5, 1, 3};
    for (int i = 0; i < 5; i++) CHECKF(s[i].rank == want[i], "detector rank of %d: %d, want %d", i, s[i].rank, want[i]);
    ds_loc_rank(s, 5, DS_LOC_RANK_AUTO, 0);  // by the mass drop: 0, 4, 3, 2, 1
    const int want_mass[5] = {1, 5, 4, 3, 2};
    for (int i = 0; i < 5; i++) CHECKF(s[i].rank == want_mass[i], "mass rank of %d: %d, want %d", i, s[i].rank, want_mass[i]);
    s[0].image_change = s[1].image_change = 0.5;  // by the image change, ties by the mass drop: 0 (9) before 1 (1)
    ds_loc_rank(s, 5, DS_LOC_RANK_IMAGE, 1);
    const int want_img[5] = {2, 3, 1, 5, 4};
    for (int i = 0; i < 5; i++) CHECKF(s[i].rank == want_img[i], "image rank of %d: %d, want %d", i, s[i].rank, want_img[i]);
}

int main(void) {
    test_rank_ties();
    test_default_window();
    ctx = ds_context_create();
    if (ds_model_load(ctx, MODEL, &model) != DS_OK) {
        fprintf(stderr, "load: %s\n", ds_last_error(ctx));
        return 1;
    }
    ds_err e = {0};
    CHECK(ds_loc_sites_init(&e, model, &sites) == DS_OK);
    CHECK(sites.n_attn == 11 && sites.n_ffn == 11 && sites.max_heads == 8);
    char lab[32];
    ds_loc_short_label("up_blocks.1.attentions.2.transformer_blocks.0.attn2", lab, sizeof lab);
    CHECK(!strcmp(lab, "u1.a2.t0"));
    ds_loc_short_label("mid_block.attentions.0.transformer_blocks.0", lab, sizeof lab);
    CHECK(!strcmp(lab, "m.a0.t0"));
    test_neurons();
    test_swap();
    test_head_op();
    test_head_run();
    test_mass_vs_capture();
    test_localize_scores();
    test_errors();
    ds_loc_sites_free(&sites);
    ds_model_free(model);
    ds_context_free(ctx);
    return tu_exit_code("test_localize");
}
