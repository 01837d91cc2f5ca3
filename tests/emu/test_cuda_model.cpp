// test_cuda_model.cpp — the CLIP text encoder (host/clip_text.c), the UNet (host/unet*.c) and the
// VAE of the tiny fixture models on the CUDA backend, run by the SIMT emulator, against the
// transformers / diffusers references (tests/fixtures/sd{1,2}_tiny, references
// tests/fixtures/sd{1,2}_ref.safetensors; the CPU versions are tests/test_clip_text.c,
// tests/test_unet.c and tests/test_vae.c). Every op runs through kernels/cuda: embed_tokens, layer_norm, linear
// (cuBLAS stand-in) with bias and residual, attention (cuda_attention*.cu: causal text
// self-attention, flash self-attention, cross-attention), quick_gelu / gelu, timestep embedding,
// conv2d (cuDNN stand-in: 3×3, stride-2 downsamplers, 1×1 shortcuts), group norm + SiLU, GEGLU,
// channel bias, upsample, concat.
//
// Checked for activation types fp32, fp16 and bf16: text encoder — every hidden state reported
// to an observer, the final output, clip_skip 1, batch 1 vs the batched row; UNet — every module
// output the fixture holds (44 per model: resnets, transformers, samplers, FFN activations,
// time embedding, conv_out) and the returned output; VAE (host/vae.c) — encode and decode, 11
// block outputs per model, the moments and the image.
//
// Metric as in test_clip_text.c: max |ours − ref| / max |ref| per tensor. Text encoder:
//   fp32 1e-4: the CPU test's tolerance (fp32 in another summation order). Measured 1.2e-6.
//   fp16 1e-2: every op's output is rounded to fp16 (2⁻¹¹ relative) and the residual stream and
//              the layer norms carry those roundings through the layers; the weights are
//              fp16-exact, so this is the activations' rounding only. Measured 2.2e-3.
//   bf16 5e-2: the same with bf16's 2⁻⁸ (weights rounded from fp16 to bf16). Measured 2.4e-2.
// UNet: fp32 1e-4 (test_unet.c's; measured 1.6e-6), fp16 1e-2 (measured 3.0e-3), bf16 1e-1
// (measured 3.8e-2, see test_unet). VAE: fp32 1e-4, fp16 1e-2, bf16 5e-2 (measured 1.2e-6,
// 1.5e-3, 1.4e-2).
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
#include "unet.h"
#include "vae.h"
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

// The paths of one component of the <arch> fixture model and its diffusers reference, and the
// CUDA backend in dtype dt; NULL (a counted failure) when the backend cannot be made.
struct fixture_paths {
    char cfg[320], weights[320], ref[320];
};
static ds_backend* open_case(ds_act_dtype dt, const char* arch, const char* component, const char* weights_file,
                             const char* label, fixture_paths* fp) {
    const char* dn = dt == DS_ACT_F32 ? "fp32" : dt == DS_ACT_F16 ? "fp16" : "bf16";
    snprintf(fp->cfg, sizeof fp->cfg, "tests/fixtures/%s_tiny/%s/config.json", arch, component);
    snprintf(fp->weights, sizeof fp->weights, "tests/fixtures/%s_tiny/%s/%s", arch, component, weights_file);
    snprintf(fp->ref, sizeof fp->ref, "tests/fixtures/%s_ref.safetensors", arch);
    printf("%s %s, CUDA backend %s\n", arch, label, dn);
    ds_err e = {};
    ds_cuda_options o = {0, dt};
    ds_backend* be = ds_backend_cuda_create(&e, &o);
    if (!be) {
        printf("FAIL: ds_backend_cuda_create: %s\n", e.msg);
        tu_failures++;
    }
    return be;
}

static void test_model(ds_act_dtype dt, const char* arch) {
    const double tol = dt == DS_ACT_F32 ? 1e-4 : dt == DS_ACT_F16 ? 1e-2 : 5e-2;
    fixture_paths fp;
    ds_backend* be = open_case(dt, arch, "text_encoder", "model.safetensors", "text encoder", &fp);
    if (!be) return;
    const char *cfg_path = fp.cfg, *w_path = fp.weights, *ref_path = fp.ref;
    ds_err e = {};
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

// ---- the UNet -------------------------------------------------------------------------------------
// Every module output the fixture holds (DS_NODE_BLOCK_OUT: time embedding, conv_in, resnets,
// transformers, down/upsamplers, conv_out; DS_NODE_FFN_ACT: the GEGLU outputs) and the returned
// output, NHWC against the NCHW references, same metric and tolerances as the text encoder
// (test_unet.c's fp32 tolerance is 1e-4 too).
struct unet_cap {
    const ds_st_file* ref;
    ds_act_dtype dt;
    double tol;
    int compared = 0;
    bool vae = false;  // VAE node names: encoder.* → vae.enc.*, decoder.* → vae.dec.*
};

static void nchw_to_nhwc(const float* x, float* y, int64_t N, int64_t C, int64_t H, int64_t W) {
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t i = 0; i < H * W; i++) y[(n * H * W + i) * C + c] = x[(n * C + c) * H * W + i];
}

static int unet_wants(void*, const char*, ds_node_kind kind) {
    return kind == DS_NODE_BLOCK_OUT || kind == DS_NODE_FFN_ACT;
}

static int unet_observe(void* u, ds_node* nd) {
    unet_cap* c = (unet_cap*)u;
    std::string name;
    if (c->vae) {
        const char* p = nd->path;
        if (!strncmp(p, "encoder.", 8)) name = std::string("vae.enc.") + (p + 8);
        else if (!strncmp(p, "decoder.", 8)) name = std::string("vae.dec.") + (p + 8);
        else return 0;
    } else if (nd->kind == DS_NODE_FFN_ACT) name = std::string("unet.") + nd->path + ".act";
    else if (!strcmp(nd->path, "time_embedding")) name = "unet.time_emb";
    else if (!strcmp(nd->path, "conv_out")) name = "unet.out";
    else name = std::string("unet.") + nd->path;
    const ds_st_tensor* t = ds_st_find(c->ref, name.c_str());
    if (!t) return 0;  // not every node is in the fixture
    int64_t n = 1, rn = 1;
    for (int i = 0; i < nd->ndim; i++) n *= nd->shape[i];
    for (int i = 0; i < t->ndim; i++) rn *= t->shape[i];
    CHECKF(rn == n && t->ndim == nd->ndim, "%s: shape mismatch", name.c_str());
    if (rn != n || t->ndim != nd->ndim) return 0;
    float* r = tu_fixture_f32(c->ref, name.c_str(), -1, NULL);
    if (!r) return 0;
    std::vector<float> ref(r, r + n);
    if (t->ndim == 4)  // reference NCHW → our NHWC
        nchw_to_nhwc(r, ref.data(), t->shape[0], t->shape[1], t->shape[2], t->shape[3]);
    free(r);
    check(c->dt, c->tol, name, nd->data, ref.data(), n);
    c->compared++;
    return 0;
}

static void test_unet(ds_act_dtype dt, const char* arch) {
    // bf16: ~40 layers of 2⁻⁸ roundings, NMSE ~3e-4 measured, and the single worst element of a
    // tensor at 3.8e-2 of its max (up_blocks.2.attentions.2): 1e-1. fp32 and fp16 are the
    // sensitive runs.
    const double tol = dt == DS_ACT_F32 ? 1e-4 : dt == DS_ACT_F16 ? 1e-2 : 1e-1;
    fixture_paths fp;
    ds_backend* be = open_case(dt, arch, "unet", "diffusion_pytorch_model.safetensors", "UNet", &fp);
    if (!be) return;
    const char *cfg_path = fp.cfg, *w_path = fp.weights, *ref_path = fp.ref;
    ds_err e = {};
    char* json = NULL;
    ds_unet_config cfg;
    ds_weights* ws = NULL;
    ds_st_file* ref = NULL;
    ds_unet u;
    memset(&u, 0, sizeof u);
    if (ds_read_file(&e, cfg_path, &json, NULL) || ds_unet_config_from_json(&e, json, cfg_path, &cfg) ||
        !(ws = ds_weights_create(be)) || ds_weights_add_file(ws, &e, w_path, "unet.") ||
        ds_unet_bind(&u, &cfg, ws, "unet.", &e) || ds_weights_materialize(ws, &e) ||
        !(ref = tu_fixture_open(ref_path))) {
        printf("FAIL: %s\n", e.msg);
        tu_failures++;
    } else {
        int64_t ss[DS_ST_MAX_DIMS], cs[DS_ST_MAX_DIMS], ts[DS_ST_MAX_DIMS];
        float* sample = tu_fixture_f32(ref, "unet.in.sample", 4, ss);
        float* ctx_h = tu_fixture_f32(ref, "unet.in.context", 3, cs);
        float* t_in = tu_fixture_f32(ref, "unet.in.timestep", -1, ts);
        if (sample && ctx_h && t_in) {
            const int64_t B = ss[0], C = ss[1], H = ss[2], W = ss[3], L = cs[1], D = cs[2];
            const int64_t Co = cfg.out_channels;
            std::vector<float> x((size_t)(B * C * H * W)), t((size_t)B);
            nchw_to_nhwc(sample, x.data(), B, C, H, W);
            for (int64_t b = 0; b < B; b++) t[(size_t)b] = t_in[ts[0] == B ? b : 0];
            ds_tensor xt = {be->alloc(be, B * H * W * C), 4, {B, H, W, C}};
            ds_tensor ct = {be->alloc(be, B * L * D), 3, {B, L, D, 0}};
            ds_tensor ot = {tu_be_poisoned(be, B * H * W * Co), 4, {B, H, W, Co}};
            be->upload(be, xt.data, x.data(), B * H * W * C);
            be->upload(be, ct.data, ctx_h, B * L * D);
            ds_arena arena;
            ds_arena_init(&arena, be, 0);
            unet_cap cap;
            cap.ref = ref;
            cap.dt = dt;
            cap.tol = tol;
            ds_observer obs = {unet_wants, unet_observe, &cap};
            ds_run run = {};
            run.be = be;
            run.arena = &arena;
            run.err = &e;
            run.observer = &obs;
            run.step = -1;
            run.timestep = t[0];
            if (ds_unet_forward(&u, &run, &xt, t.data(), &ct, &ot)) {
                printf("FAIL: forward: %s\n", e.msg);
                tu_failures++;
            } else {
                std::vector<float> out((size_t)(B * H * W * Co));
                be->download(be, out.data(), ot.data, B * H * W * Co);
                float* r = tu_fixture_f32(ref, "unet.out", 4, NULL);
                if (r) {
                    std::vector<float> rr(out.size());
                    nchw_to_nhwc(r, rr.data(), B, Co, H, W);
                    check(dt, tol, "unet output (returned)", out.data(), rr.data(), B * H * W * Co);
                }
                free(r);
                CHECKF(cap.compared >= 10, "%s: only %d UNet nodes compared", arch, cap.compared);
                if (tu_verbose) printf("  %d UNet nodes compared\n", cap.compared);
            }
            ds_arena_release(&arena);
            be->free(be, xt.data);
            be->free(be, ct.data);
            be->free(be, ot.data);
        }
        free(sample);
        free(ctx_h);
        free(t_in);
    }
    free(json);
    ds_unet_release(&u);
    if (ws) ds_weights_free(ws);
    if (ref) ds_st_close(ref);
    be->destroy(be);
}

// ---- the VAE ---------------------------------------------------------------------------------------
// Encode the fixture image and decode the fixture latents: every block the fixture holds
// (encoder down blocks and mid block with its attention, decoder conv_in / mid block / up
// blocks), the moments and the image. Tolerances as for the text encoder.
static float* ref_nhwc(const ds_st_file* ref, const char* name, int64_t s[4]) {
    int64_t sh[DS_ST_MAX_DIMS];
    float* r = tu_fixture_f32(ref, name, 4, sh);
    if (!r) return NULL;
    float* y = (float*)malloc(sizeof(float) * (size_t)(sh[0] * sh[1] * sh[2] * sh[3]));
    nchw_to_nhwc(r, y, sh[0], sh[1], sh[2], sh[3]);
    free(r);
    s[0] = sh[0], s[1] = sh[2], s[2] = sh[3], s[3] = sh[1];  // NHWC shape
    return y;
}

static void test_vae(ds_act_dtype dt, const char* arch) {
    // measured: fp32 1.2e-6, fp16 1.5e-3, bf16 1.4e-2 (the ~30 ops of a tiny VAE)
    const double tol = dt == DS_ACT_F32 ? 1e-4 : dt == DS_ACT_F16 ? 1e-2 : 5e-2;
    fixture_paths fp;
    ds_backend* be = open_case(dt, arch, "vae", "diffusion_pytorch_model.safetensors", "VAE", &fp);
    if (!be) return;
    const char *cfg_path = fp.cfg, *w_path = fp.weights, *ref_path = fp.ref;
    ds_err e = {};
    char* json = NULL;
    ds_vae_config cfg;
    ds_weights* ws = NULL;
    ds_st_file* ref = NULL;
    ds_vae v;
    if (ds_read_file(&e, cfg_path, &json, NULL) || ds_vae_config_from_json(&e, json, cfg_path, &cfg) ||
        !(ws = ds_weights_create(be)) || ds_weights_add_file(ws, &e, w_path, "vae.") ||
        ds_vae_bind(&v, &cfg, ws, "vae.", 1, &e) || ds_weights_materialize(ws, &e) ||
        !(ref = tu_fixture_open(ref_path))) {
        printf("FAIL: %s\n", e.msg);
        tu_failures++;
    } else {
        int64_t si[4], sm[4], sz[4], so[4];
        float* img = ref_nhwc(ref, "vae.enc.in", si);
        float* mom_ref = ref_nhwc(ref, "vae.enc.moments", sm);
        float* z = ref_nhwc(ref, "vae.dec.in", sz);
        float* out_ref = ref_nhwc(ref, "vae.dec.out", so);
        if (img && mom_ref && z && out_ref) {
            ds_arena arena;
            ds_arena_init(&arena, be, 0);
            unet_cap cap;
            cap.ref = ref;
            cap.dt = dt;
            cap.tol = tol;
            cap.vae = true;
            ds_observer obs = {unet_wants, unet_observe, &cap};
            ds_run run = {};
            run.be = be;
            run.arena = &arena;
            run.err = &e;
            run.observer = &obs;
            run.step = -1;
            run.timestep = -1;
            const int64_t ni = si[0] * si[1] * si[2] * si[3], nm = sm[0] * sm[1] * sm[2] * sm[3];
            const int64_t nz = sz[0] * sz[1] * sz[2] * sz[3], no = so[0] * so[1] * so[2] * so[3];
            ds_tensor x = {tu_be_upload(be, img, ni), 4, {si[0], si[1], si[2], si[3]}};
            ds_tensor mom = {tu_be_poisoned(be, nm), 4, {sm[0], sm[1], sm[2], sm[3]}};
            std::vector<float> host((size_t)(nm > no ? nm : no));
            if (ds_vae_encode(&v, &run, &x, &mom)) {
                printf("FAIL: encode: %s\n", e.msg);
                tu_failures++;
            } else {
                be->download(be, host.data(), mom.data, nm);
                check(dt, tol, "vae moments (vs vae.enc.moments)", host.data(), mom_ref, nm);
            }
            ds_tensor zt = {tu_be_upload(be, z, nz), 4, {sz[0], sz[1], sz[2], sz[3]}};
            ds_tensor out = {tu_be_poisoned(be, no), 4, {so[0], so[1], so[2], so[3]}};
            if (ds_vae_decode(&v, &run, &zt, &out)) {
                printf("FAIL: decode: %s\n", e.msg);
                tu_failures++;
            } else {
                be->download(be, host.data(), out.data, no);
                check(dt, tol, "vae image (vs vae.dec.out)", host.data(), out_ref, no);
            }
            CHECKF(cap.compared >= 6, "%s: only %d VAE nodes compared", arch, cap.compared);
            if (tu_verbose) printf("  %d VAE nodes compared\n", cap.compared);
            ds_arena_release(&arena);
            be->free(be, x.data);
            be->free(be, mom.data);
            be->free(be, zt.data);
            be->free(be, out.data);
        }
        free(img);
        free(mom_ref);
        free(z);
        free(out_ref);
    }
    free(json);
    if (ws) ds_weights_free(ws);
    if (ref) ds_st_close(ref);
    be->destroy(be);
}

int main() {
    if (getenv("DS_TEST_VERBOSE")) tu_verbose = 1;
    const ds_act_dtype types[] = {DS_ACT_F32, DS_ACT_F16, DS_ACT_BF16};
    for (ds_act_dtype dt : types) {
        test_model(dt, "sd1");
        test_model(dt, "sd2");
        test_unet(dt, "sd1");
        test_unet(dt, "sd2");
        test_vae(dt, "sd1");
        test_vae(dt, "sd2");
    }
    printf("worst max|d|/max|ref|: fp32 %.2e, fp16 %.2e, bf16 %.2e\n", g_worst[DS_ACT_F32],
           g_worst[DS_ACT_F16], g_worst[DS_ACT_BF16]);
    return tu_exit_code("test_cuda_model");
}
