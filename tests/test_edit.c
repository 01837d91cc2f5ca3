// test_edit.c — concept editing (host/edit.c) and writing edited models (host/model_write.c).
//
//   * UCE erase / art (paper-era all-token keys) / debias and TIME on both tiny models vs the independent numpy
//     reference of tools/make_edit_fixtures.py (tests/fixtures/edit/edit_ref.safetensors): the solve on the
//     reference keys (1e-6 relative, shared and per-layer), diffscope's own keys (its text encoder, token positions,
//     TIME alignment) and the whole edit end to end;
//   * the shared-solve shortcut (low-rank and explicit M − I) equals the per-layer general solve;
//   * singular / ill-conditioned systems are regularized to cond = DS_EDIT_MAX_COND;
//   * written models reload with the edited tensors changed exactly as intended and every other byte the same:
//     diffusers folders (fp16, bf16), single files (fp32, fp16; the checkpoint's own key names and metadata),
//     sharded folders with an unloaded variant; and the reference ΔW applied to the SD1 single file and folder
//     gives exactly what diffusers loaded from the files `diffscope apply` wrote (the fixture's reload_* tensors);
//   * delta files: write, open, fingerprint and architecture checks, apply == direct edit;
//   * write safety: the input, links to it, paths inside it, existing folders; no temporary left on failure;
//   * ConceptPrune neurons.json: zeroes exactly the listed entries, mismatches name the problem.
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "edit.h"
#include "model_write.h"
#include "testutil.h"

#define FIX "tests/fixtures/"
#define REF FIX "edit/edit_ref.safetensors"

static char g_tmp[256];

static const char* tmp(const char* name) {
    static char buf[64][512];
    static int k = 0;
    k = (k + 1) % 64;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_tmp, name);
    return buf[k];
}

static int sh(const char* fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    return system(cmd);
}

static void quiet_log(void* user, const char* msg) {
    (void)user;
    if (tu_verbose > 0) printf("  log: %s\n", msg);
}

// A float64 tensor of the fixture (malloc'd copy); NULL and a failure when absent.
static double* fix_f64(const ds_st_file* f, const char* name, int64_t* n) {
    const ds_st_tensor* t = ds_st_find(f, name);
    if (!t || t->dtype != DS_DTYPE_F64) {
        CHECKF(0, "fixture tensor %s missing or not F64", name);
        return NULL;
    }
    double* d = malloc(t->nbytes);
    memcpy(d, t->data, t->nbytes);
    if (n) *n = (int64_t)(t->nbytes / 8);
    return d;
}

static int fix_i32(const ds_st_file* f, const char* name, int32_t* out, int max) {
    const ds_st_tensor* t = ds_st_find(f, name);
    if (!t || t->dtype != DS_DTYPE_I32) return -1;
    int n = (int)(t->nbytes / 4);
    if (n > max) n = max;
    memcpy(out, t->data, (size_t)n * 4);
    return n;
}

static void strings(const cJSON* a, const char** out, int* n) {
    *n = 0;
    const cJSON* it;
    cJSON_ArrayForEach(it, a) out[(*n)++] = it->valuestring;
}

// ---- the reference cases -----------------------------------------------------------------------

static double max_rel64(const double* got, const double* ref, int64_t n) {
    double rms = 0, worst = 0;
    for (int64_t i = 0; i < n; i++) rms += ref[i] * ref[i];
    rms = sqrt(rms / (double)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) {
        double den = fabs(ref[i]) > rms ? fabs(ref[i]) : rms;
        double r = fabs(got[i] - ref[i]) / (den > 0 ? den : 1);
        if (!(r <= worst)) worst = r;  // NaN propagates
    }
    return worst;
}

// ΔW of every matrix with these keys, in fp64 (shared or per-layer), compared to the reference.
static void check_solve(const char* what, ds_edit_model* em, const ds_st_file* ref, const char* cname, const ds_edit_keys* k,
                        const cJSON* matrices, int per_layer, double tol, double* worst_out) {
    ds_err e = {0};
    ds_edit_result r;
    int rc = ds_edit_run(em, &e, k, DS_EDIT_TO_K | DS_EDIT_TO_V, per_layer, &r);
    CHECKF(rc == DS_OK, "%s: %s", what, e.msg);
    if (rc) return;
    CHECKF(r.n == cJSON_GetArraySize(matrices), "%s: %d matrices, reference has %d", what, r.n, cJSON_GetArraySize(matrices));
    double worst = 0;
    const cJSON* m;
    cJSON_ArrayForEach(m, matrices) {  // the reference lists them in named_modules order (down, up, mid)
        int i = 0;
        while (i < r.n && strcmp(r.layers[i].name, m->valuestring) != 0) i++;
        if (i == r.n) { CHECKF(0, "%s: %s was not edited", what, m->valuestring); continue; }
        char name[300];
        snprintf(name, sizeof name, "%s.dW.%s", cname, m->valuestring);
        int64_t n = 0;
        double* want = fix_f64(ref, name, &n);
        if (want && n == r.layers[i].rows * r.layers[i].cols) {
            double* got = malloc(sizeof(double) * (size_t)n);
            for (int64_t q = 0; q < n; q++) got[q] = r.layers[i].delta[q];
            double w = max_rel64(got, want, n);
            if (!(w <= worst)) worst = w;
            CHECKF(w <= tol, "%s: %s ΔW max_rel %.3g > %.1g", what, m->valuestring, w, tol);
            free(got);
        }
        free(want);
    }
    if (tu_verbose > 0) printf("  %-44s max_rel %.3g (cond %.4g, λ %g)\n", what, worst, r.sol.cond, r.sol.lambda);
    if (worst_out) *worst_out = worst;
    ds_edit_result_free(&r);
}

static void test_reference_cases(void) {
    ds_st_file* ref = tu_fixture_open(REF);
    if (!ref) return;
    cJSON* cases = cJSON_Parse(ds_st_meta(ref, "cases") ? ds_st_meta(ref, "cases") : "");
    CHECKF(cJSON_IsArray(cases), "fixture metadata 'cases' is not a JSON array");
    ds_edit_model em[2];
    ds_err e = {0};
    int ok1 = ds_edit_model_open(&e, FIX "sd1_tiny", &em[0]) == DS_OK;
    CHECKF(ok1, "open sd1_tiny: %s", e.msg);
    int ok2 = ds_edit_model_open(&e, FIX "sd2_tiny", &em[1]) == DS_OK;
    CHECKF(ok2, "open sd2_tiny: %s", e.msg);
    const cJSON* c;
    if (ok1 && ok2) cJSON_ArrayForEach(c, cases) {
        const char* cname = cJSON_GetObjectItem(c, "name")->valuestring;
        const char* method = cJSON_GetObjectItem(c, "method")->valuestring;
        ds_edit_model* m = strcmp(cJSON_GetObjectItem(c, "model")->valuestring, "sd1") == 0 ? &em[0] : &em[1];
        const cJSON* matrices = cJSON_GetObjectItem(c, "matrices");
        double lam = cJSON_GetObjectItem(c, "lam")->valuedouble;
        char name[256], what[256];
        // (1) the solve on the reference keys: diffscope's fp64 shared and per-layer solves vs numpy
        int64_t nk = 0, nt = 0, ns = 0;
        snprintf(name, sizeof name, "%s.keys", cname);
        double* K = fix_f64(ref, name, &nk);
        snprintf(name, sizeof name, "%s.targets", cname);
        double* T = fix_f64(ref, name, &nt);
        snprintf(name, sizeof name, "%s.scales", cname);
        double* S = fix_f64(ref, name, &ns);
        snprintf(name, sizeof name, "%s.cond", cname);
        double* cond = fix_f64(ref, name, NULL);
        int d = m->m->text_cfg.hidden;
        if (!K || !T || !S || !cond || nk != ns * d || nt != nk) { free(K); free(T); free(S); free(cond); continue; }
        ds_edit_keys k;
        ds_edit_keys_init(&k, d, lam);
        for (int64_t i = 0; i < ns; i++) ds_edit_keys_add(&k, &e, K + i * d, T + i * d, S[i], cname);
        snprintf(what, sizeof what, "%s: shared solve on reference keys", cname);
        check_solve(what, m, ref, cname, &k, matrices, 0, 1e-6, NULL);
        snprintf(what, sizeof what, "%s: per-layer solve on reference keys", cname);
        check_solve(what, m, ref, cname, &k, matrices, 1, 1e-6, NULL);
        double cc = ds_edit_condition(&k, lam);
        CHECKF(fabs(cc - cond[0]) <= 1e-6 * cond[0], "%s: cond %.10g, numpy %.10g", cname, cc, cond[0]);
        // (2) diffscope's own keys: text encoder, subject positions, TIME alignment, then the whole edit
        ds_edit_keys mine;
        int rc;
        if (strcmp(method, "time") == 0) {
            ds_time_params p;
            ds_time_params_init(&p);
            p.src = cJSON_GetObjectItem(c, "src")->valuestring;
            p.dst = cJSON_GetObjectItem(c, "dst")->valuestring;
            p.augment = cJSON_IsTrue(cJSON_GetObjectItem(c, "augment"));
            p.lambda = lam;
            rc = ds_time_keys(m, &e, &p, &mine);
            // alignment of the plain pair (the augmented ones are checked through the keys)
            int32_t align[4 * 77];
            snprintf(name, sizeof name, "%s.align", cname);
            int na = fix_i32(ref, name, align, 4 * 77);
            CHECKF(na == 4 * 77, "%s: fixture alignment", cname);
            int idx[77];
            CHECK(ds_edit_time_align(m->m->tok, &e, p.src, p.dst, idx) == DS_OK);
            for (int r = 0; r < 77; r++) CHECKF(idx[r] == align[r], "%s: alignment[%d] = %d, reference %d", cname, r, idx[r], align[r]);
        } else {
            const char *concepts[16], *guides[16], *preserve[16], *attrs[16], *contexts[16];
            int nc, ng = 0, np, na = 0, nx = 0;
            strings(cJSON_GetObjectItem(c, "concepts"), concepts, &nc);
            strings(cJSON_GetObjectItem(c, "preserve"), preserve, &np);
            ds_uce_params p;
            ds_uce_params_init(&p);
            double deltas[32];
            if (strcmp(method, "debias") == 0) {
                strings(cJSON_GetObjectItem(c, "attributes"), attrs, &na);
                const cJSON* desired = cJSON_GetObjectItem(c, "desired");
                const cJSON* measured = cJSON_GetObjectItem(c, "measured");
                for (int ci = 0; ci < nc; ci++)
                    for (int a = 0; a < na; a++)
                        deltas[ci * na + a] = cJSON_GetArrayItem(desired, a)->valuedouble -
                                              cJSON_GetArrayItem(cJSON_GetArrayItem(measured, ci), a)->valuedouble;
                p.attributes = attrs;
                p.n_attributes = na;
                p.deltas = deltas;
            } else {
                strings(cJSON_GetObjectItem(c, "guides"), guides, &ng);
                p.guides = guides;
                p.n_guides = ng;
                p.all_tokens = cJSON_IsTrue(cJSON_GetObjectItem(c, "all_tokens"));
                strings(cJSON_GetObjectItem(c, "contexts"), contexts, &nx);
                p.contexts = contexts;
                p.n_contexts = nx;
                // subject positions = UCE's attention_mask.sum() - 2 (in-context keys have none)
                int32_t pos[16];
                snprintf(name, sizeof name, "%s.positions", cname);
                int npos = nx ? nc : fix_i32(ref, name, pos, 16);
                CHECKF(npos == nc, "%s: fixture positions", cname);
                for (int ci = 0; !nx && ci < nc && ci < npos; ci++) {
                    ds_edit_subject s;
                    CHECK(ds_edit_subject_token(m->m->tok, &e, concepts[ci], &s) == DS_OK);
                    CHECKF(s.pos == pos[ci], "%s: '%s' subject position %d, UCE's %d", cname, concepts[ci], s.pos, pos[ci]);
                }
            }
            p.concepts = concepts;
            p.n_concepts = nc;
            p.preserve = preserve;
            p.n_preserve = np;
            p.lambda = lam;
            p.erase_scale = cJSON_GetObjectItem(c, "erase_scale")->valuedouble;
            p.preserve_scale = cJSON_GetObjectItem(c, "preserve_scale")->valuedouble;
            rc = ds_uce_keys(m, &e, &p, &mine);
        }
        CHECKF(rc == DS_OK, "%s: keys: %s", cname, e.msg);
        if (rc == DS_OK) {
            CHECKF(mine.n == (int)ns, "%s: %d keys, reference %lld", cname, mine.n, (long long)ns);
            if (mine.n == (int)ns) {
                double wk = max_rel64(mine.K, K, nk), wt = max_rel64(mine.T, T, nt);
                // the text encoder matches transformers to ~1e-6 (test_clip_text); keys inherit that
                CHECKF(wk <= 1e-5 && wt <= 1e-5, "%s: keys max_rel %.3g, targets %.3g", cname, wk, wt);
                for (int i = 0; i < mine.n; i++) CHECKF(mine.s[i] == S[i], "%s: scale %d", cname, i);
                double worst = 0;
                snprintf(what, sizeof what, "%s: end to end (diffscope's keys)", cname);
                // the solve amplifies the keys' ~1e-6 by up to cond(B) (1e2 .. 5e4 here)
                double tol = cond[0] > 1e3 ? 2e-4 : 5e-5;
                check_solve(what, m, ref, cname, &mine, matrices, 0, tol, &worst);
                if (tu_verbose > 0) printf("  %-44s keys %.2g, targets %.2g\n", cname, wk, wt);
            }
            ds_edit_keys_free(&mine);
        }
        ds_edit_keys_free(&k);
        free(K); free(T); free(S); free(cond);
    }
    if (ok1) ds_edit_model_close(&em[0]);
    if (ok2) ds_edit_model_close(&em[1]);
    cJSON_Delete(cases);
    ds_st_close(ref);
}

// The text encoder is causal: encoding only a prefix of the 77 positions gives the same values there (to fp32
// rounding: the kernels block the sums differently for another sequence length, ~1e-6).
static void test_prefix_encode(void) {
    ds_err e = {0};
    ds_edit_model em;
    if (ds_edit_model_open(&e, FIX "sd2_tiny.safetensors", &em) != DS_OK) { CHECKF(0, "%s", e.msg); return; }
    const char* prompts[] = {"Van Gogh", "a photo of a cat", "", "An apple on a table!"};
    int D = em.m->text_cfg.hidden;
    double* full = calloc((size_t)4 * 77 * D, sizeof(double));
    double* part = calloc((size_t)4 * 77 * D, sizeof(double));
    CHECK(ds_edit_encode(&em, &e, prompts, 4, 77, full) == DS_OK);
    CHECK(ds_edit_encode(&em, &e, prompts, 4, 7, part) == DS_OK);
    double worst = 0;
    for (int b = 0; b < 4; b++) {
        double w = max_rel64(part + (size_t)b * 77 * D, full + (size_t)b * 77 * D, (int64_t)7 * D);
        if (w > worst) worst = w;
        CHECK(part[((size_t)b * 77 + 7) * D] == 0);  // positions past the prefix are not written
    }
    CHECKF(worst <= 1e-5, "prefix encoding differs from the full chunk by %.3g", worst);
    if (tu_verbose > 0) printf("  prefix (7 of 77 positions) vs full encoding: max_rel %.3g\n", worst);
    free(full);
    free(part);
    ds_edit_model_close(&em);
}

// ---- the shared solve vs the general one -------------------------------------------------------

static void fill_keys(ds_edit_keys* k, int n, uint64_t seed, double scale_lo) {
    tu_rng r;
    tu_rng_seed(&r, seed);
    double* a = malloc(sizeof(double) * (size_t)k->d);
    double* b = malloc(sizeof(double) * (size_t)k->d);
    ds_err e = {0};
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < k->d; j++) { a[j] = 3 * tu_rng_normal(&r); b[j] = 3 * tu_rng_normal(&r); }
        ds_edit_keys_add(k, &e, a, b, scale_lo + tu_rng_uniform(&r), "random");
    }
    free(a);
    free(b);
}

static void test_shared_vs_per_layer(void) {
    const int d = 24, out = 40;
    const int ns[] = {1, 3, 11, 12, 30, 100};
    tu_rng r;
    tu_rng_seed(&r, 99);
    double* W0 = malloc(sizeof(double) * out * d);
    for (int i = 0; i < out * d; i++) W0[i] = tu_rng_normal(&r);
    for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++) {
        ds_edit_keys k;
        ds_edit_keys_init(&k, d, 0.5);
        fill_keys(&k, ns[t], 1000 + t, 0.2);
        ds_err e = {0};
        double* dW1 = malloc(sizeof(double) * out * d);
        double* dW2 = malloc(sizeof(double) * out * d);
        double* Wn = malloc(sizeof(double) * out * d);
        double* V = malloc(sizeof(double) * (size_t)k.n * out);
        for (int forced = 0; forced < 2; forced++) {
            ds_edit_solution s;
            CHECK(ds_edit_shared_solve(&e, &k, forced, &s) == DS_OK);
            CHECK(s.explicit_m == (forced || 2 * ns[t] >= d));
            ds_edit_shared_apply(&s, W0, out, forced ? dW2 : dW1);
            ds_edit_solution_free(&s);
        }
        // the general closed form with v* = W₀ t
        for (int i = 0; i < k.n; i++)
            for (int o = 0; o < out; o++) {
                double acc = 0;
                for (int j = 0; j < d; j++) acc += W0[o * d + j] * k.T[(size_t)i * d + j];
                V[(size_t)i * out + o] = acc;
            }
        double cond = 0;
        CHECK(ds_edit_solve_layer(&e, W0, out, &k, V, Wn, &cond, NULL) == DS_OK);
        for (int i = 0; i < out * d; i++) Wn[i] -= W0[i];
        double a = max_rel64(dW1, Wn, out * d), b = max_rel64(dW2, Wn, out * d);
        CHECKF(a <= 1e-10 && b <= 1e-10, "n=%d: shared (low-rank %.3g, explicit %.3g) vs per-layer", ns[t], a, b);
        // the least-squares optimality: W' − W₀ solves (W'−W₀)(λI + Σ s k kᵀ) = Σ s (W₀t − W₀k) kᵀ
        if (tu_verbose > 0) printf("  shared vs per-layer n=%-3d low-rank %.2g explicit %.2g cond %.3g\n", ns[t], a, b, cond);
        free(dW1); free(dW2); free(Wn); free(V);
        ds_edit_keys_free(&k);
    }
    free(W0);
}

static void test_regularization(void) {
    ds_err e = {0};
    // λ = 0 with fewer keys than dimensions: singular → λ raised until cond = DS_EDIT_MAX_COND
    ds_edit_keys k;
    ds_edit_keys_init(&k, 16, 0.0);
    fill_keys(&k, 3, 5, 1.0);
    CHECK(isinf(ds_edit_condition(&k, 0.0)));
    ds_edit_solution s;
    CHECK(ds_edit_shared_solve(&e, &k, 0, &s) == DS_OK);
    CHECK(s.regularized == 1 && isinf(s.cond_requested));
    CHECKF(fabs(s.cond - DS_EDIT_MAX_COND) <= 1e-6 * DS_EDIT_MAX_COND, "regularized cond %.6g", s.cond);
    CHECK(s.lambda > 0);
    double W0[5 * 16], dW[5 * 16];
    for (int i = 0; i < 80; i++) W0[i] = sin(i + 1.0);
    ds_edit_shared_apply(&s, W0, 5, dW);
    int finite = 1;
    for (int i = 0; i < 80; i++) finite &= isfinite(dW[i]);
    CHECK(finite);
    ds_edit_solution_free(&s);
    // a tiny λ with a wide spectrum: ill-conditioned → regularized; a sane λ is left alone
    k.lambda = 1e-12;
    CHECK(ds_edit_shared_solve(&e, &k, 0, &s) == DS_OK);
    CHECK(s.regularized == 1 && s.cond_requested > DS_EDIT_MAX_COND && s.lambda > 1e-12);
    ds_edit_solution_free(&s);
    k.lambda = 0.5;
    CHECK(ds_edit_shared_solve(&e, &k, 0, &s) == DS_OK);
    CHECK(s.regularized == 0 && s.lambda == 0.5 && s.cond < DS_EDIT_MAX_COND);
    ds_edit_solution_free(&s);
    // no keys: M = I, ΔW = 0
    ds_edit_keys z;
    ds_edit_keys_init(&z, 16, 0.5);
    CHECK(ds_edit_shared_solve(&e, &z, 0, &s) == DS_OK);
    ds_edit_shared_apply(&s, W0, 5, dW);
    double mx = 0;
    for (int i = 0; i < 80; i++) mx = fmax(mx, fabs(dW[i]));
    CHECK(mx == 0 && s.cond == 1);
    ds_edit_solution_free(&s);
    // negative scales are refused
    double v[16] = {1};
    CHECK(ds_edit_keys_add(&z, &e, v, v, -1, "neg") == DS_ERR_ARG);
    ds_edit_keys_free(&z);
    ds_edit_keys_free(&k);
}

// ---- tokens ------------------------------------------------------------------------------------

static void test_tokens(void) {
    ds_err e = {0};
    ds_tokenizer* t = NULL;
    CHECK(ds_tokenizer_create(&e, &t) == DS_OK);
    ds_edit_subject s;
    CHECK(ds_edit_subject_token(t, &e, "", &s) == DS_OK && s.pos == 0 && s.n_tokens == 0);
    CHECK(ds_edit_subject_token(t, &e, "cat", &s) == DS_OK && s.pos == 1 && s.split_words == 0);
    CHECK(ds_edit_subject_token(t, &e, "a photo of a cat", &s) == DS_OK && s.pos == 5);
    // trailing punctuation is not the subject (UCE's attention_mask.sum() - 2 would pick the ".")
    CHECK(ds_edit_subject_token(t, &e, "a cat.", &s) == DS_OK && s.pos == 2 && s.n_tokens == 3);
    CHECK(ds_edit_subject_token(t, &e, "...", &s) == DS_OK && s.pos == s.n_tokens);
    CHECK(ds_edit_subject_token(t, &e, "Kelly Mckernan", &s) == DS_OK);
    CHECKF(s.split_words == 1 && strstr(s.pieces, "'mckernan' = mck + ernan</w>") && s.pos == 3 &&
               strcmp(s.last_piece, "ernan</w>") == 0,
           "split: %d '%s' pos %d '%s'", s.split_words, s.pieces, s.pos, s.last_piece);
    char longp[1200] = "";
    for (int i = 0; i < 80; i++) strcat(longp, "cat ");
    CHECK(ds_edit_subject_token(t, &e, longp, &s) == DS_ERR_ARG && strstr(e.msg, "80 tokens"));
    ds_err_clear(&e);
    int idx[77];
    CHECK(ds_edit_time_align(t, &e, "a pack of roses", "a pack of blue roses", idx) == DS_OK);
    CHECK(idx[0] == 0 && idx[1] == 1 && idx[3] == 3 && idx[4] == 5 && idx[5] == 6 && idx[6] == 7 && idx[76] == 76);
    // "an" counts as "a"
    CHECK(ds_edit_time_align(t, &e, "an apple", "a green apple", idx) == DS_OK && idx[1] == 1 && idx[2] == 3);
    CHECK(ds_edit_time_align(t, &e, "a red rose", "a blue rose", idx) == DS_ERR_ARG);
    CHECKF(strstr(e.msg, "'red</w>'") && strstr(e.msg, "--to"), "misaligned: %s", e.msg);
    ds_tokenizer_free(t);
}

// ---- writing -----------------------------------------------------------------------------------

typedef struct loaded {
    ds_backend* be;
    ds_weights* ws;
    ds_model_files mf;
    int ok;
} loaded;

static void load(loaded* l, const char* path) {
    memset(l, 0, sizeof *l);
    ds_err e = {0};
    l->be = ds_backend_cpu_create(1);
    l->ws = ds_weights_create(l->be);
    l->ok = ds_model_files_open(&e, path, l->ws, &l->mf) == DS_OK;
    CHECKF(l->ok, "reload %s: %s", path, e.msg);
}

static void unload(loaded* l) {
    if (l->ok) ds_model_files_free(&l->mf);
    ds_weights_free(l->ws);
    ds_backend_cpu_free(l->be);
}

static double elem(const ds_st_tensor* t, size_t off, int64_t j) {
    const uint8_t* p = t->data + off + (size_t)j * ds_dtype_size(t->dtype);
    switch (t->dtype) {
    case DS_DTYPE_F32: { float f; memcpy(&f, p, 4); return f; }
    case DS_DTYPE_F16: { uint16_t h; memcpy(&h, p, 2); return ds_f16_to_f32(h); }
    case DS_DTYPE_BF16: { uint16_t h; memcpy(&h, p, 2); return ds_bf16_to_f32(h); }
    case DS_DTYPE_F64: { double d; memcpy(&d, p, 8); return d; }
    default: return NAN;
    }
}

// Relative rounding unit of a dtype (half an ulp).
static double half_ulp(ds_dtype t) {
    return t == DS_DTYPE_F16 ? 0x1p-11 : t == DS_DTYPE_BF16 ? 0x1p-8 : t == DS_DTYPE_F32 ? 0x1p-24 : 0x1p-53;
}

// The written model `out` vs the input `in`: same tensors (names in the store, and the file's own key names for
// single files), same dtypes; every non-edited tensor byte-identical; edited ones = dtype(W₀ + ΔW) (correctly
// rounded: within half an ulp).
static void check_written(const char* what, const char* in, const char* out, const ds_weight_delta* d, int n) {
    loaded a, b;
    load(&a, in);
    load(&b, out);
    if (!a.ok || !b.ok) { unload(&a); unload(&b); return; }
    CHECKF(a.mf.source == b.mf.source && a.mf.arch == b.mf.arch, "%s: format/arch changed", what);
    int entries = 0, edited = 0;
    for (int i = 0; i < ds_weights_n_entries(a.ws); i++) {
        const char* name = ds_weights_entry_name(a.ws, i);
        if (!name) continue;
        entries++;
        const ds_st_file *fa, *fb;
        const ds_st_tensor *ta, *tb;
        size_t oa, ob;
        if (!ds_weights_source(b.ws, name, &fb, &tb, &ob)) { CHECKF(0, "%s: %s missing after writing", what, name); continue; }
        ds_weights_source(a.ws, name, &fa, &ta, &oa);
        CHECKF(strcmp(ta->name, tb->name) == 0, "%s: %s comes from '%s', was '%s'", what, name, tb->name, ta->name);
        CHECKF(ta->dtype == tb->dtype, "%s: %s dtype changed", what, name);
        int64_t sh[8], numel = 1;
        int nd = ds_weights_shape(a.ws, name, sh);
        for (int q = 0; q < nd; q++) numel *= sh[q];
        const float* delta = NULL;
        for (int q = 0; q < n; q++)
            if (strcmp(d[q].name, name) == 0) delta = d[q].delta;
        if (!delta) {
            size_t nb = (size_t)numel * ds_dtype_size(ta->dtype);
            CHECKF(memcmp(ta->data + oa, tb->data + ob, nb) == 0, "%s: %s changed but was not edited", what, name);
            continue;
        }
        edited++;
        double worst = 0;
        for (int64_t j = 0; j < numel; j++) {
            double x = elem(ta, oa, j) + (double)delta[j], y = elem(tb, ob, j);
            double err = fabs(y - x) / (fabs(x) > 1e-30 ? fabs(x) : 1);
            if (ta->dtype == DS_DTYPE_F16 && fabs(x) < 0x1p-14) err = fabs(y - x) / 0x1p-14;  // subnormals: absolute
            if (!(err <= worst)) worst = err;
        }
        CHECKF(worst <= half_ulp(ta->dtype) * 1.0000001, "%s: %s written %.3g ulp off W0 + dW", what, name, worst / half_ulp(ta->dtype) / 2);
    }
    CHECKF(edited == n, "%s: %d of %d edited tensors found", what, edited, n);
    int nb_entries = 0;
    for (int i = 0; i < ds_weights_n_entries(b.ws); i++) nb_entries += ds_weights_entry_name(b.ws, i) != NULL;
    CHECKF(entries == nb_entries, "%s: %d tensors, the input had %d", what, nb_entries, entries);
    // single files: the whole key set of the file (incl. keys the loader ignores) and the metadata survive
    if (a.mf.source == DS_SOURCE_SINGLE_FILE) {
        const ds_st_file* fa = ds_weights_file(a.ws, 0);
        const ds_st_file* fb = ds_weights_file(b.ws, 0);
        CHECKF(fa->n_tensors == fb->n_tensors, "%s: %d file tensors, input %d", what, fb->n_tensors, fa->n_tensors);
        for (int i = 0; i < fa->n_tensors; i++) CHECKF(ds_st_find(fb, fa->tensors[i].name) != NULL, "%s: key '%s' lost", what, fa->tensors[i].name);
        for (int i = 0; i < fa->n_meta; i++) {
            const char* v = ds_st_meta(fb, fa->meta_keys[i]);
            CHECKF(v && strcmp(v, fa->meta_values[i]) == 0, "%s: metadata '%s' lost", what, fa->meta_keys[i]);
        }
        CHECKF(ds_st_meta(fb, "diffscope.edit") != NULL, "%s: no diffscope.edit metadata", what);
    }
    unload(&a);
    unload(&b);
}

static void to_deltas(const ds_edit_result* r, ds_weight_delta* d) {
    for (int i = 0; i < r->n; i++) d[i] = (ds_weight_delta){r->layers[i].name, r->layers[i].delta};
}

// The sd1_erase case of the fixture, edited with diffscope's own keys.
static int erase_case(ds_edit_model* em, ds_edit_result* r) {
    const char* concepts[] = {"cat", "Kelly Mckernan"};
    const char* guides[] = {""};
    const char* preserve[] = {"dog", "a red circle"};
    ds_uce_params p;
    ds_uce_params_init(&p);
    p.concepts = concepts;
    p.n_concepts = 2;
    p.guides = guides;
    p.n_guides = 1;
    p.preserve = preserve;
    p.n_preserve = 2;
    ds_err e = {0};
    ds_edit_keys k;
    int rc = ds_uce_keys(em, &e, &p, &k);
    if (!rc) rc = ds_edit_run(em, &e, &k, DS_EDIT_TO_K | DS_EDIT_TO_V, 0, r);
    CHECKF(rc == DS_OK, "erase case: %s", e.msg);
    if (!rc) ds_edit_keys_free(&k);
    return rc;
}

static void write_and_check(const char* what, const char* in, const char* out) {
    ds_err e = {0};
    ds_edit_model em;
    if (ds_edit_model_open(&e, in, &em) != DS_OK) { CHECKF(0, "%s: %s", what, e.msg); return; }
    ds_edit_result r;
    if (erase_case(&em, &r) == DS_OK) {
        ds_weight_delta* d = calloc((size_t)r.n, sizeof *d);
        to_deltas(&r, d);
        int folder = em.mf.source == DS_SOURCE_DIFFUSERS;
        CHECKF(ds_check_output(&e, in, out, folder, "--out") == DS_OK, "%s: check_output: %s", what, e.msg);
        ds_write_stats st;
        int rc = ds_model_write(&e, em.m->ws, &em.mf, d, r.n, "{\"test\":1}", out, quiet_log, NULL, &st);
        CHECKF(rc == DS_OK, "%s: %s", what, e.msg);
        if (!rc) {
            check_written(what, in, out, d, r.n);
            if (folder) CHECKF(st.files_rewritten == 1 && st.files_left_out == 0, "%s: %d rewritten, %d left out", what, st.files_rewritten, st.files_left_out);
            // and the rewritten model loads and runs in diffscope
            ds_context* ctx = ds_context_create();
            ds_model* m = NULL;
            CHECKF(ds_model_load(ctx, out, &m) == DS_OK, "%s: ds_model_load: %s", what, ds_last_error(ctx));
            ds_model_free(m);
            ds_context_free(ctx);
        }
        free(d);
        ds_edit_result_free(&r);
    }
    ds_edit_model_close(&em);
}

// The reference ΔW of the sd1_erase case (edit/sd1_erase.delta.safetensors, written by the fixture script with its
// own fingerprint of the base) applied to the single file and to the fp16 folder must give exactly the values that
// diffusers loaded from the files `diffscope apply` wrote when the fixture was made (reload_single.* /
// reload_folder.*): the key mapping back to LDM names, the dtypes and the rounding all agree with diffusers.
static void test_diffusers_reload(void) {
    ds_st_file* ref = tu_fixture_open(REF);
    if (!ref) return;
    const char* ins[] = {FIX "sd1_tiny.safetensors", FIX "sd1_tiny"};
    const char* outs[] = {tmp("reload_single.safetensors"), tmp("reload_folder")};
    const char* prefix[] = {"reload_single", "reload_folder"};
    for (int k = 0; k < 2; k++) {
        loaded l;
        load(&l, ins[k]);
        ds_delta dl;
        ds_err e = {0};
        int rc = l.ok ? ds_delta_open(&e, FIX "edit/sd1_erase.delta.safetensors", l.ws, 0, &dl) : DS_ERR_IO;
        CHECKF(rc == DS_OK, "%s: open the reference delta (fingerprint written by numpy): %s", prefix[k], e.msg);
        if (!rc) {
            CHECK(dl.n == 22);
            rc = ds_model_write(&e, l.ws, &l.mf, dl.d, dl.n, NULL, outs[k], quiet_log, NULL, NULL);
            CHECKF(rc == DS_OK, "%s: %s", prefix[k], e.msg);
            if (!rc) {
                check_written(prefix[k], ins[k], outs[k], dl.d, dl.n);
                loaded b;
                load(&b, outs[k]);
                for (int i = 0; b.ok && i < dl.n; i++) {
                    char name[300];
                    snprintf(name, sizeof name, "%s.%s", prefix[k], dl.d[i].name);
                    int64_t shape[8];
                    float* want = tu_fixture_f32(ref, name, 2, shape);
                    const ds_st_file* f;
                    const ds_st_tensor* t;
                    size_t off;
                    if (!want || !ds_weights_source(b.ws, dl.d[i].name, &f, &t, &off)) { free(want); CHECK(0); continue; }
                    int64_t n = shape[0] * shape[1], bad = 0;
                    for (int64_t j = 0; j < n; j++) bad += (float)elem(t, off, j) != want[j];
                    CHECKF(bad == 0, "%s: %s: %lld of %lld values differ from what diffusers loaded", prefix[k], dl.d[i].name,
                           (long long)bad, (long long)n);
                    free(want);
                }
                unload(&b);
            }
            ds_delta_close(&dl);
        }
        unload(&l);
    }
    ds_st_close(ref);
}

static void test_write_formats(void) {
    write_and_check("sd1 single file (fp32)", FIX "sd1_tiny.safetensors", tmp("sd1_edit.safetensors"));
    write_and_check("sd1 folder (fp16)", FIX "sd1_tiny", tmp("sd1_edit"));
    write_and_check("sd2 single file (fp16)", FIX "sd2_tiny.safetensors", tmp("sd2_edit.safetensors"));
    write_and_check("sd2 folder (bf16)", FIX "sd2_tiny", tmp("sd2_edit"));
    struct stat st;
    CHECK(stat(tmp("sd1_edit/unet/config.json"), &st) == 0 && stat(tmp("sd1_edit/tokenizer/vocab.json"), &st) == 0);
    // nothing temporary left behind
    CHECK(sh("ls '%s' | grep -q '\\.tmp\\.'", g_tmp) != 0);
}

// A tensor that is a row view of a fused file tensor (SD2 single file: OpenCLIP in_proj_weight holds q, k, v):
// only its rows change, q and v stay byte-identical.
static void test_fused_view(void) {
    loaded l;
    load(&l, FIX "sd2_tiny.safetensors");
    if (!l.ok) { unload(&l); return; }
    const char* name = "text_encoder.text_model.encoder.layers.1.self_attn.k_proj.weight";
    const ds_st_file* f;
    const ds_st_tensor* t;
    size_t off;
    CHECK(ds_weights_source(l.ws, name, &f, &t, &off) && off > 0 && strstr(t->name, "in_proj_weight"));
    int64_t sh[8];
    CHECK(ds_weights_shape(l.ws, name, sh) == 2);
    float* delta = malloc(sizeof(float) * (size_t)(sh[0] * sh[1]));
    for (int64_t i = 0; i < sh[0] * sh[1]; i++) delta[i] = 0.01f * (float)((i % 7) - 3);
    ds_weight_delta d = {name, delta};
    ds_err e = {0};
    CHECK(ds_model_write(&e, l.ws, &l.mf, &d, 1, NULL, tmp("fused.safetensors"), NULL, NULL, NULL) == DS_OK);
    check_written("fused q/k/v view", FIX "sd2_tiny.safetensors", tmp("fused.safetensors"), &d, 1);
    free(delta);
    unload(&l);
}

// Sharded unet (edited tensors in one shard only), a variant and a pickle next to it.
static void test_sharded_variant(void) {
    const char* d = tmp("sharded");
    sh("mkdir -p '%s' && cp -r " FIX "sd1_tiny/* '%s/' && rm '%s/unet/diffusion_pytorch_model.safetensors'", d, d, d);
    ds_err e = {0};
    ds_st_file* src;
    if (ds_st_open(&e, FIX "sd1_tiny/unet/diffusion_pytorch_model.safetensors", &src)) { CHECK(0); return; }
    ds_st_write_item* items = calloc((size_t)src->n_tensors, sizeof *items);
    int na = 0, nb = 0;
    ds_st_write_item* a = calloc((size_t)src->n_tensors, sizeof *a);
    ds_st_write_item* b = calloc((size_t)src->n_tensors, sizeof *b);
    for (int i = 0; i < src->n_tensors; i++) {
        ds_st_write_item it = {src->tensors[i].name, src->tensors[i].dtype, src->tensors[i].ndim, {0}, src->tensors[i].data};
        memcpy(it.shape, src->tensors[i].shape, sizeof it.shape);
        if (strstr(it.name, "attn2")) a[na++] = it; else b[nb++] = it;  // shard 1: every attn2 tensor
    }
    CHECK(ds_st_write(&e, tmp("sharded/unet/diffusion_pytorch_model-00001-of-00002.safetensors"), a, na, NULL, 0) == DS_OK);
    CHECK(ds_st_write(&e, tmp("sharded/unet/diffusion_pytorch_model-00002-of-00002.safetensors"), b, nb, NULL, 0) == DS_OK);
    FILE* idx = fopen(tmp("sharded/unet/diffusion_pytorch_model.safetensors.index.json"), "w");
    fprintf(idx, "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {");
    for (int i = 0; i < na + nb; i++)
        fprintf(idx, "%s\"%s\": \"diffusion_pytorch_model-0000%d-of-00002.safetensors\"", i ? ", " : "", i < na ? a[i].name : b[i - na].name, i < na ? 1 : 2);
    fprintf(idx, "}}");
    fclose(idx);
    // an fp16 variant the loader does not pick (the plain sharded index wins), its index, and a pickle
    sh("cp " FIX "sd1_tiny/unet/diffusion_pytorch_model.safetensors '%s/unet/diffusion_pytorch_model.fp16.safetensors' && "
       "echo '{\"weight_map\": {\"x\": \"diffusion_pytorch_model.fp16.safetensors\"}}' > '%s/unet/diffusion_pytorch_model.safetensors.index.fp16.json' && "
       "printf 'pickle' > '%s/unet/diffusion_pytorch_model.bin'", d, d, d);
    free(items);
    free(a);
    free(b);
    ds_st_close(src);
    ds_edit_model em;
    if (ds_edit_model_open(&e, d, &em) != DS_OK) { CHECKF(0, "sharded: %s", e.msg); return; }
    CHECK(em.mf.unet.sharded == 1);
    ds_edit_result r;
    if (erase_case(&em, &r) == DS_OK) {
        ds_weight_delta* dd = calloc((size_t)r.n, sizeof *dd);
        to_deltas(&r, dd);
        ds_write_stats st;
        const char* out = tmp("sharded_out");
        CHECK(ds_model_write(&e, em.m->ws, &em.mf, dd, r.n, NULL, out, quiet_log, NULL, &st) == DS_OK);
        CHECKF(st.files_rewritten == 1 && st.files_left_out == 3, "sharded: %d rewritten, %d left out", st.files_rewritten, st.files_left_out);
        check_written("sharded folder", d, out, dd, r.n);
        CHECK(sh("cmp -s '%s/unet/diffusion_pytorch_model-00002-of-00002.safetensors' '%s/unet/diffusion_pytorch_model-00002-of-00002.safetensors'", d, out) == 0);
        CHECK(sh("cmp -s '%s/unet/diffusion_pytorch_model.safetensors.index.json' '%s/unet/diffusion_pytorch_model.safetensors.index.json'", d, out) == 0);
        struct stat s;
        CHECK(stat(tmp("sharded_out/unet/diffusion_pytorch_model.fp16.safetensors"), &s) != 0);
        CHECK(stat(tmp("sharded_out/unet/diffusion_pytorch_model.bin"), &s) != 0);
        CHECK(stat(tmp("sharded_out/unet/diffusion_pytorch_model.safetensors.index.fp16.json"), &s) != 0);
        free(dd);
        ds_edit_result_free(&r);
    }
    ds_edit_model_close(&em);
}

static void test_delta(void) {
    ds_err e = {0};
    ds_edit_model em;
    if (ds_edit_model_open(&e, FIX "sd1_tiny", &em) != DS_OK) { CHECK(0); return; }
    ds_edit_result r;
    if (erase_case(&em, &r) != DS_OK) { ds_edit_model_close(&em); return; }
    ds_weight_delta* d = calloc((size_t)r.n, sizeof *d);
    to_deltas(&r, d);
    CHECK(ds_delta_write(&e, tmp("erase.delta.safetensors"), em.m->ws, &em.mf, d, r.n, "erase", "{\"x\":1}") == DS_OK);
    CHECK(ds_model_write(&e, em.m->ws, &em.mf, d, r.n, NULL, tmp("direct"), NULL, NULL, NULL) == DS_OK);
    // apply to the fp32 single file of the same model: same fingerprint (same numbers), same result values
    const char* bases[] = {FIX "sd1_tiny", FIX "sd1_tiny.safetensors"};
    const char* outs[] = {tmp("applied"), tmp("applied.safetensors")};
    for (int b = 0; b < 2; b++) {
        loaded l;
        load(&l, bases[b]);
        ds_delta dl;
        int rc = ds_delta_open(&e, tmp("erase.delta.safetensors"), l.ws, 0, &dl);
        CHECKF(rc == DS_OK, "delta open on %s: %s", bases[b], e.msg);
        if (!rc) {
            CHECK(dl.n == r.n && dl.edit_kind && strcmp(dl.edit_kind, "erase") == 0);
            CHECK(dl.params_json && strcmp(dl.params_json, "{\"x\":1}") == 0);
            CHECK(ds_model_write(&e, l.ws, &l.mf, dl.d, dl.n, NULL, outs[b], NULL, NULL, NULL) == DS_OK);
            check_written("apply", bases[b], outs[b], d, r.n);
            ds_delta_close(&dl);
        }
        unload(&l);
    }
    // apply == direct edit, bit for bit (the unet files differ only in their metadata)
    loaded x, y;
    load(&x, tmp("direct"));
    load(&y, tmp("applied"));
    if (x.ok && y.ok)
        for (int i = 0; i < r.n; i++) {
            const ds_st_file *f1, *f2;
            const ds_st_tensor *t1, *t2;
            ds_weights_source(x.ws, r.layers[i].name, &f1, &t1, NULL);
            ds_weights_source(y.ws, r.layers[i].name, &f2, &t2, NULL);
            CHECKF(t1->nbytes == t2->nbytes && memcmp(t1->data, t2->data, t1->nbytes) == 0, "apply != direct for %s", r.layers[i].name);
        }
    unload(&x);
    unload(&y);
    // another base with the same architecture: fingerprint mismatch unless allowed
    loaded o;
    load(&o, tmp("direct"));
    ds_delta dl;
    CHECK(ds_delta_open(&e, tmp("erase.delta.safetensors"), o.ws, 0, &dl) == DS_ERR_ARG);
    CHECKF(strstr(e.msg, "another base model") && strstr(e.msg, "--allow-other-base"), "fingerprint: %s", e.msg);
    ds_err_clear(&e);
    CHECK(ds_delta_open(&e, tmp("erase.delta.safetensors"), o.ws, 1, &dl) == DS_OK);
    ds_delta_close(&dl);
    unload(&o);
    // another architecture: the first mismatching tensor is named
    loaded s2;
    load(&s2, FIX "sd2_tiny");
    CHECK(ds_delta_open(&e, tmp("erase.delta.safetensors"), s2.ws, 1, &dl) == DS_ERR_ARG);
    CHECKF(strstr(e.msg, "another architecture"), "arch: %s", e.msg);
    ds_err_clear(&e);
    unload(&s2);
    // not a delta
    loaded s1;
    load(&s1, FIX "sd1_tiny");
    CHECK(ds_delta_open(&e, FIX "sd1_tiny.safetensors", s1.ws, 0, &dl) == DS_ERR_FORMAT && strstr(e.msg, "not a diffscope delta"));
    ds_err_clear(&e);
    unload(&s1);
    free(d);
    ds_edit_result_free(&r);
    ds_edit_model_close(&em);
}

static void test_safety(void) {
    ds_err e = {0};
    sh("cp -r " FIX "sd1_tiny '%s/model' && cp " FIX "sd1_tiny.safetensors '%s/single.safetensors' && "
       "ln -s single.safetensors '%s/link.safetensors' && ln '%s/single.safetensors' '%s/hard.safetensors' && "
       "ln -s model '%s/modellink' && mkdir -p '%s/exists'",
       g_tmp, g_tmp, g_tmp, g_tmp, g_tmp, g_tmp, g_tmp);
    struct { const char* in; const char* out; int folder; const char* msg; } bad[] = {
        {tmp("model"), tmp("model"), 1, "is the input model"},
        {tmp("model"), tmp("modellink"), 1, "is the input model"},
        {tmp("model"), tmp("model/"), 1, "is the input model"},
        {tmp("single.safetensors"), tmp("single.safetensors"), 0, "is the input model"},
        {tmp("single.safetensors"), tmp("link.safetensors"), 0, "is the input model"},
        {tmp("single.safetensors"), tmp("hard.safetensors"), 0, "is the input model"},
        {tmp("model"), tmp("model/edited"), 1, "inside the input model folder"},
        {tmp("model"), tmp("modellink/unet/x.safetensors"), 0, "inside the input model folder"},
        {tmp("model"), tmp("exists"), 1, "already exists"},
        {tmp("single.safetensors"), tmp("exists"), 0, "is a folder"},
        {tmp("model"), "/nonexistent-dir/out", 1, "cannot write into folder"},
        {tmp("model"), "", 1, "a path is required"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ds_err_clear(&e);
        int rc = ds_check_output(&e, bad[i].in, bad[i].out, bad[i].folder, "--out");
        CHECKF(rc != DS_OK && strstr(e.msg, bad[i].msg), "check_output(%s, %s): rc %d '%s', want '%s'", bad[i].in, bad[i].out, rc, e.msg, bad[i].msg);
    }
    ds_err_clear(&e);
    CHECK(ds_check_output(&e, tmp("model"), tmp("fresh"), 1, "--out") == DS_OK);
    CHECK(ds_check_output(&e, tmp("single.safetensors"), tmp("other.safetensors"), 0, "--out") == DS_OK);
    // a folder output that appears between the check and the rename: error, the temporary folder is removed,
    // the squatter is untouched
    ds_edit_model em;
    if (ds_edit_model_open(&e, tmp("model"), &em) == DS_OK) {
        ds_edit_result r;
        if (erase_case(&em, &r) == DS_OK) {
            ds_weight_delta* d = calloc((size_t)r.n, sizeof *d);
            to_deltas(&r, d);
            sh("mkdir -p '%s/squat' && echo keep > '%s/squat/file'", g_tmp, g_tmp);
            CHECK(ds_model_write(&e, em.m->ws, &em.mf, d, r.n, NULL, tmp("squat"), NULL, NULL, NULL) == DS_ERR_IO);
            CHECK(sh("ls -a '%s' | grep -q 'squat\\.tmp'", g_tmp) != 0);
            CHECK(sh("grep -q keep '%s/squat/file' && [ $(ls '%s/squat' | wc -l) -eq 1 ]", g_tmp, g_tmp) == 0);
            // the input folder is never touched by a write
            CHECK(sh("diff -r '%s/model' " FIX "sd1_tiny >/dev/null", g_tmp) == 0);
            free(d);
            ds_edit_result_free(&r);
        }
        ds_edit_model_close(&em);
    }
}

static void test_prune(void) {
    ds_err e = {0};
    ds_edit_model em;
    if (ds_edit_model_open(&e, FIX "sd1_tiny.safetensors", &em) != DS_OK) { CHECK(0); return; }
    ds_edit_result r;
    int rc = ds_prune_run(&em, &e, FIX "edit/neurons_sd1.json", &r);
    CHECKF(rc == DS_OK, "prune: %s", e.msg);
    if (!rc) {
        CHECK(r.n == 3);
        // block 0: columns 0, 5, 63 of a (16, 64) matrix → 48 entries; block 1: column 7 of (32, 128) plus rows
        // {0: 1,2,3; 31: 127; 4: 7 (already in column 7)} → 32 + 4; the mid block: row 10 → 2
        int64_t want[3] = {48, 36, 2};
        for (int i = 0; i < 3; i++) CHECKF(r.layers[i].changed == want[i], "prune %s: %lld zeroed, want %lld", r.layers[i].name, (long long)r.layers[i].changed, (long long)want[i]);
        CHECK(strcmp(r.layers[2].name, "unet.mid_block.attentions.0.transformer_blocks.0.ff.net.2.weight") == 0);
        ds_weight_delta d[3];
        to_deltas(&r, d);
        CHECK(ds_model_write(&e, em.m->ws, &em.mf, d, 3, NULL, tmp("pruned.safetensors"), NULL, NULL, NULL) == DS_OK);
        check_written("prune", FIX "sd1_tiny.safetensors", tmp("pruned.safetensors"), d, 3);
        loaded l;
        load(&l, tmp("pruned.safetensors"));
        if (l.ok) {  // the listed entries are exactly 0, the others are not
            const ds_st_file* f;
            const ds_st_tensor* t;
            size_t off;
            ds_weights_source(l.ws, "unet.up_blocks.1.attentions.2.transformer_blocks.0.ff.net.2.weight", &f, &t, &off);
            CHECK(elem(t, off, 0 * 128 + 1) == 0 && elem(t, off, 31 * 128 + 127) == 0 && elem(t, off, 9 * 128 + 7) == 0);
            CHECK(elem(t, off, 0 * 128 + 4) != 0 && elem(t, off, 30 * 128 + 127) != 0);
            ds_weights_source(l.ws, "unet.down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2.weight", &f, &t, &off);
            int64_t zeros = 0;
            for (int64_t j = 0; j < 16 * 64; j++) zeros += elem(t, off, j) == 0;
            CHECK(zeros == 48);
        }
        unload(&l);
        ds_edit_result_free(&r);
    }
    // mismatches
    struct { const char* json; const char* msg; } bad[] = {
        {NULL, "1280 → 320"},  // neurons_sd15.json
        {"{\"format\": \"diffscope-neurons\", \"version\": 1, \"blocks\": {\"down_blocks.3.attentions.0.transformer_blocks.0\": {\"in_features\": 64, \"out_features\": 16, \"columns\": [1]}}}", "not a transformer block of this SD1.x model"},
        {"{\"format\": \"diffscope-neurons\", \"version\": 1, \"arch\": \"SD2.x\", \"blocks\": {\"x\": {}}}", "made for SD2.x, but this model is SD1.x"},
        {"{\"format\": \"diffscope-neurons\", \"version\": 1, \"blocks\": {\"down_blocks.0.attentions.0.transformer_blocks.0\": {\"in_features\": 64, \"out_features\": 16, \"columns\": [64]}}}", "column 64 is not an index in [0, 64)"},
        {"{\"format\": \"diffscope-neurons\", \"version\": 1, \"blocks\": {\"down_blocks.0.attentions.0.transformer_blocks.0\": {\"in_features\": 64, \"out_features\": 16, \"rows\": {\"16\": [0]}}}}", "row '16' is not an index in [0, 16)"},
        {"{\"format\": \"diffscope-neurons\", \"version\": 1, \"blocks\": {\"down_blocks.0.attentions.0.transformer_blocks.0\": {\"columns\": [1]}}}", "needs \"in_features\""},
        {"{\"format\": \"other\", \"version\": 1, \"blocks\": {}}", "\"format\" must be"},
        {"[1, 2]", "not a JSON object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char* path = FIX "edit/neurons_sd15.json";
        if (bad[i].json) {
            path = tmp("bad_neurons.json");
            FILE* f = fopen(path, "w");
            fputs(bad[i].json, f);
            fclose(f);
        }
        ds_err_clear(&e);
        rc = ds_prune_run(&em, &e, path, &r);
        CHECKF(rc != DS_OK && strstr(e.msg, bad[i].msg), "bad neurons %zu: rc %d '%s', want '%s'", i, rc, e.msg, bad[i].msg);
    }
    ds_edit_model_close(&em);
}

int main(void) {
    const char* v = getenv("DS_TEST_VERBOSE");
    tu_verbose = v && *v && strcmp(v, "0") != 0;
    snprintf(g_tmp, sizeof g_tmp, "/tmp/ds_test_edit.XXXXXX");
    if (!mkdtemp(g_tmp)) { perror("mkdtemp"); return 1; }
    test_tokens();
    test_prefix_encode();
    test_shared_vs_per_layer();
    test_regularization();
    test_reference_cases();
    test_write_formats();
    test_diffusers_reload();
    test_fused_view();
    test_sharded_variant();
    test_delta();
    test_safety();
    test_prune();
    if (tu_failures == 0) sh("rm -rf '%s'", g_tmp);
    else fprintf(stderr, "test files kept in %s\n", g_tmp);
    return tu_exit_code("test_edit");
}
