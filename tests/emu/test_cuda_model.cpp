// test_cuda_model.cpp — the CLIP text encoder (host/clip_text.c) on the CUDA backend, run by the
// SIMT emulator, against the transformers.CLIPTextModel references of the tiny fixture models
// (tests/fixtures/sd{1,2}_tiny, references tests/fixtures/sd{1,2}_ref.safetensors; the CPU
// version of this test is tests/test_clip_text.c). Every op of the text encoder runs through
// kernels/cuda: embed_tokens, layer_norm, linear (cuBLAS stand-in) with bias and residual,
// causal self-attention (cuda_attention.cu), quick_gelu / gelu.
//
// Checked for activation types fp32 and fp16 (bf16 too, looser): every hidden state reported to
// an observer, the final output, clip_skip 1, and batch 1 vs the batched row.
//
// Metric as in test_clip_text.c: max |ours − ref| / max |ref| per tensor.
//   fp32 1e-4: the CPU test's tolerance (fp32 in another summation order). Measured 1.2e-6.
//   fp16 1e-2: every op's output is rounded to fp16 (2⁻¹¹ relative) and the residual stream and
//              the layer norms carry those roundings through the layers; the weights are
//              fp16-exact, so this is the activations' rounding only. Measured 2.2e-3.
//   bf16 5e-2: the same with bf16's 2⁻⁸ (weights rounded from fp16 to bf16). Measured 2.4e-2.
// Sensitivity (checked by mutation): quick_gelu with 1.6 instead of 1.702 gives 1–3e-2, caught in
// fp32 and fp16; the bf16 run only catches gross mistakes (a wrong mask, head split, layer).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <string>
#include <vector>

extern "C" {
#include "arena.h"
#include "backend.h"
#include "clip_text.h"
#include "observe.h"
#include "safetensors.h"
#include "testutil.h"
#include "weights.h"
}

struct node {
    std::string path;
    std::vector<float> data;
};
struct capture {
    std::vector<node> nodes;
    const node* find(const std::string& p) const {
        for (const node& n : nodes)
            if (n.path == p) return &n;
        return nullptr;
    }
};

static int cap_wants(void*, const char*, ds_node_kind kind) { return kind == DS_NODE_TEXT_HIDDEN; }
static int cap_observe(void* u, ds_node* nd) {
    capture* c = (capture*)u;
    int64_t n = 1;
    for (int i = 0; i < nd->ndim; i++) n *= nd->shape[i];
    c->nodes.push_back(node{nd->path, std::vector<float>(nd->data, nd->data + n)});
    return 0;
}

static double g_worst[3];

static void check(ds_act_dtype dt, double tol, const std::string& what, const float* got,
                  const float* ref, int64_t n) {
    tu_diff_t d = tu_diff(got, ref, n);
    double mr = 0;
    for (int64_t i = 0; i < n; i++) mr = fmax(mr, fabs(ref[i]));
    const double rel = d.nonfinite ? INFINITY : d.max_abs / (mr > 1e-30 ? mr : 1e-30);
    const bool ok = !d.nonfinite && rel <= tol;
    if (rel > g_worst[dt]) g_worst[dt] = rel;
    if (!ok || tu_verbose)
        printf("  %-4s %-52s rel %.2e (tol %.0e, nmse %.1e)\n", ok ? "ok" : "FAIL", what.c_str(), rel,
               tol, d.nmse);
    if (!ok) {
        tu_failures++;
        printf("       worst element %lld: got %g, ref %g (%lld non-finite)\n", (long long)d.worst,
               got[d.worst], ref[d.worst], (long long)d.nonfinite);
    }
}

static const char* te_prefix(const char* path) {  // as in test_clip_text.c
    ds_err e = {};
    ds_st_file* f = NULL;
    int flat = 0;
    if (ds_st_open(&e, path, &f) == DS_OK) {
        flat = ds_st_find(f, "embeddings.token_embedding.weight") != NULL;
        ds_st_close(f);
    }
    return flat ? "text_encoder.text_model." : "text_encoder.";
}

static void test_model(ds_act_dtype dt, const char* arch) {
    const double tol = dt == DS_ACT_F32 ? 1e-4 : dt == DS_ACT_F16 ? 1e-2 : 5e-2;
    const char* dn = dt == DS_ACT_F32 ? "fp32" : dt == DS_ACT_F16 ? "fp16" : "bf16";
    char cfg_path[320], w_path[320], ref_path[320];
    snprintf(cfg_path, sizeof cfg_path, "tests/fixtures/%s_tiny/text_encoder/config.json", arch);
    snprintf(w_path, sizeof w_path, "tests/fixtures/%s_tiny/text_encoder/model.safetensors", arch);
    snprintf(ref_path, sizeof ref_path, "tests/fixtures/%s_ref.safetensors", arch);
    printf("%s text encoder, CUDA backend %s\n", arch, dn);

    ds_err e = {};
    ds_cuda_options o = {0, dt};
    ds_backend* be = ds_backend_cuda_create(&e, &o);
    if (!be) {
        printf("FAIL: ds_backend_cuda_create: %s\n", e.msg);
        tu_failures++;
        return;
    }
    char* json = NULL;
    ds_clip_config cfg;
    ds_weights* ws = NULL;
    ds_st_file* ref = NULL;
    ds_clip_text m;
    if (ds_read_file(&e, cfg_path, &json, NULL) || ds_clip_config_from_json(&e, json, cfg_path, &cfg) ||
        !(ws = ds_weights_create(be)) || ds_weights_add_file(ws, &e, w_path, te_prefix(w_path)) ||
        !(ref = tu_fixture_open(ref_path)) || ds_clip_text_bind(&m, &cfg, ws, "text_encoder.", &e) ||
        ds_weights_materialize(ws, &e)) {
        printf("FAIL: %s\n", e.msg);
        tu_failures++;
        free(json);
        if (ws) ds_weights_free(ws);
        if (ref) ds_st_close(ref);
        be->destroy(be);
        return;
    }
    free(json);

    int64_t ishape[DS_ST_MAX_DIMS];
    int32_t* ids = tu_fixture_i32(ref, "text.input_ids", 2, ishape);
    if (ids) {
        const int B = (int)ishape[0], L = (int)ishape[1], D = cfg.hidden;
        const int64_t n = (int64_t)B * L * D;
        ds_arena arena;
        ds_arena_init(&arena, be, 0);
        capture cap;
        ds_observer obs = {cap_wants, cap_observe, &cap};
        ds_run run = {};
        run.be = be;
        run.arena = &arena;
        run.err = &e;
        run.observer = &obs;
        run.step = -1;
        run.timestep = -1;
        std::vector<float> host((size_t)n);

        // clip_skip 0: every hidden state and the output
        ds_tensor out = {tu_be_poisoned(be, n), 3, {B, L, D, 0}};
        if (ds_clip_text_forward(&m, &run, ids, B, L, 0, &out)) {
            printf("FAIL: forward: %s\n", e.msg);
            tu_failures++;
        } else {
            for (int k = 0; k <= cfg.layers; k++) {
                std::string path = k == 0 ? std::string("text_model.embeddings")
                                          : "text_model.encoder.layers." + std::to_string(k - 1);
                std::string name = "text.hidden_states." + std::to_string(k);
                const node* nd = cap.find(path);
                float* r = tu_fixture_f32(ref, name.c_str(), 3, NULL);
                CHECKF(nd != nullptr, "node %s was not reported", path.c_str());
                if (nd && r) check(dt, tol, path + " (vs " + name + ")", nd->data.data(), r, n);
                free(r);
            }
            be->download(be, host.data(), out.data, n);
            float* r = tu_fixture_f32(ref, "text.out", 3, NULL);
            if (r) check(dt, tol, "output (vs text.out)", host.data(), r, n);
            if (r && B > 1) {  // batch 1 on the second row gives that row of the batched result
                ds_tensor o1 = {tu_be_poisoned(be, (int64_t)L * D), 3, {1, L, D, 0}};
                run.observer = NULL;
                if (ds_clip_text_forward(&m, &run, ids + L, 1, L, 0, &o1)) {
                    printf("FAIL: forward B=1: %s\n", e.msg);
                    tu_failures++;
                } else {
                    be->download(be, host.data(), o1.data, (int64_t)L * D);
                    check(dt, tol, "output, batch 1 (vs text.out[1])", host.data(), r + (int64_t)L * D,
                          (int64_t)L * D);
                }
                run.observer = &obs;
                be->free(be, o1.data);
            }
            free(r);
        }
        be->free(be, out.data);

        // clip_skip 1
        out.data = tu_be_poisoned(be, n);
        if (ds_clip_text_forward(&m, &run, ids, B, L, 1, &out)) {
            printf("FAIL: forward clip_skip 1: %s\n", e.msg);
            tu_failures++;
        } else {
            be->download(be, host.data(), out.data, n);
            float* r = tu_fixture_f32(ref, "text.out_clip_skip2", 3, NULL);
            if (r) check(dt, tol, "clip_skip 1 output (vs text.out_clip_skip2)", host.data(), r, n);
            free(r);
        }
        be->free(be, out.data);
        ds_arena_release(&arena);
        free(ids);
    }
    ds_weights_free(ws);
    ds_st_close(ref);
    be->destroy(be);
}

int main() {
    if (getenv("DS_TEST_VERBOSE")) tu_verbose = 1;
    const ds_act_dtype types[] = {DS_ACT_F32, DS_ACT_F16, DS_ACT_BF16};
    for (ds_act_dtype dt : types) {
        test_model(dt, "sd1");
        test_model(dt, "sd2");
    }
    printf("worst max|d|/max|ref|: fp32 %.2e, fp16 %.2e, bf16 %.2e\n", g_worst[DS_ACT_F32],
           g_worst[DS_ACT_F16], g_worst[DS_ACT_BF16]);
    return tu_exit_code("test_cuda_model");
}
