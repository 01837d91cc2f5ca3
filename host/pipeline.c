// pipeline.c — text → latents → image, the same sequence of operations as diffusers'
// StableDiffusionPipeline.__call__ (encode_prompt, prepare_latents, the denoising loop with
// classifier-free guidance, VAE decode, postprocess), so the same seed gives the same image.
#include <math.h>
#include <string.h>
#include <time.h>

#include "capture.h"
#include "img2img.h"
#include "model.h"
#include "observe.h"
#include "rng.h"

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int ds_model_encode_prompts(ds_model* m, ds_run* run, const char* prompt, const char* negative,
                            int cfg, int clip_skip, ds_tensor* out) {
    ds_err* e = run->err;
    int32_t *pid = NULL, *nid = NULL;
    int np = 0, nn = 0, tp = 0, tn = 0;
    int rc = ds_tokenizer_encode_chunks(m->tok, e, prompt, m->pad_id, 0, &pid, &np, &tp);
    if (!rc && cfg) rc = ds_tokenizer_encode_chunks(m->tok, e, negative ? negative : "", m->pad_id, 0, &nid, &nn, &tn);
    if (rc) { free(pid); free(nid); return rc; }
    int chunks = np > nn ? np : nn, B = cfg ? 2 : 1, L = 77, D = m->text_cfg.hidden;
    // ids (B·chunks, 77): batch order [negative, prompt] as diffusers concatenates for CFG;
    // a side with fewer chunks is padded with the empty prompt's chunk.
    int32_t* ids = ds_malloc(e, sizeof(int32_t) * (size_t)(B * chunks * L), "token ids");
    int32_t* empty = NULL;
    int ne = 0, te = 0;
    if (ids && (np < chunks || (cfg && nn < chunks)))
        rc = ds_tokenizer_encode_chunks(m->tok, e, "", m->pad_id, 0, &empty, &ne, &te);
    if (!ids) rc = DS_ERR_OOM;
    for (int c = 0; !rc && c < chunks; c++) {
        int32_t* dst_p = ids + ((size_t)(B - 1) * chunks + c) * L;
        memcpy(dst_p, c < np ? pid + c * L : empty, sizeof(int32_t) * L);
        if (cfg) memcpy(ids + (size_t)c * L, c < nn ? nid + c * L : empty, sizeof(int32_t) * L);
    }
    free(pid);
    free(nid);
    free(empty);
    if (rc) { free(ids); return rc; }
    *out = ds_arena_tensor(run->arena, e, 3, B, (int64_t)L * chunks, D, 0);
    ds_arena_mark mark = ds_arena_get_mark(run->arena);
    ds_tensor h = ds_arena_tensor(run->arena, e, 3, (int64_t)B * chunks, L, D, 0);
    if (!out->data || !h.data) { free(ids); return DS_ERR_OOM; }
    rc = ds_clip_text_forward(&m->text, run, ids, B * chunks, L, clip_skip, &h);
    free(ids);
    // (B·chunks, 77, D) → (B, 77·chunks, D): chunk c of batch b is rows [c·77, (c+1)·77)
    for (int b = 0; !rc && b < B; b++)
        m->be->copy(m->be, out->data + (size_t)b * chunks * L * D, h.data + (size_t)b * chunks * L * D,
                    (int64_t)chunks * L * D);
    ds_arena_reset(run->arena, mark);
    if (!rc) rc = ds_observe(run, "text_encoder", DS_NODE_TEXT_HIDDEN, out);
    return rc;
}

static int check_size(ds_model* m, ds_err* e, int width, int height) {
    // latents must survive the UNet's downsampling: (levels − 1) halvings
    int levels = m->unet_cfg.n_levels, f = m->vae_scale_factor * (1 << (levels - 1));
    if (width % f || height % f || width <= 0 || height <= 0)
        return ds_errf(e, DS_ERR_ARG, "--width/--height %dx%d: both must be positive multiples of %d for this model", width, height, f);
    return DS_OK;
}

ds_status ds_generate(ds_context* ctx, ds_model* m, const ds_generate_params* p, ds_image* out) {
    ds_err* e = &ctx->err;
    ds_err_clear(e);
    memset(out, 0, sizeof *out);
    if (!p || !p->prompt) return ds_errf(e, DS_ERR_ARG, "a prompt is required");
    if (p->steps < 1 || p->steps > 1000) return ds_errf(e, DS_ERR_ARG, "--steps %d: expected 1..1000", p->steps);
    int native = m->unet_cfg.sample_size * m->vae_scale_factor;
    int W = p->width ? p->width : native, H = p->height ? p->height : native;
    int C = m->unet_cfg.in_channels;
    if (p->init_latents) {
        const int64_t* s = p->init_latents_shape;
        if (s[0] != 1 || s[1] != C)
            return ds_errf(e, DS_ERR_ARG, "--latents: expected shape (1, %d, h, w), got (%lld, %lld, %lld, %lld)", C,
                           (long long)s[0], (long long)s[1], (long long)s[2], (long long)s[3]);
        W = (int)s[3] * m->vae_scale_factor;
        H = (int)s[2] * m->vae_scale_factor;
    }
    DS_TRY(ds_img2img_check(m, e, p, W, H));
    DS_TRY(check_size(m, e, W, H));
    int h = H / m->vae_scale_factor, w = W / m->vae_scale_factor;
    size_t n = (size_t)C * h * w;
    int cfg = p->guidance > 1.0f;
    int B = cfg ? 2 : 1;
    ds_sampler kind = p->sampler == DS_SAMPLER_DEFAULT ? m->default_sampler : p->sampler;
    ds_scheduler* sched = NULL;
    DS_TRY(ds_scheduler_create(e, kind, &m->sched_cfg, p->steps, &sched));

    ds_backend* be = m->be;
    ds_run run = {.be = be, .arena = &m->arena, .err = e, .observer = p->observer, .step = -1,
                  .timestep = -1, .cond_batch_begin = cfg ? 1 : 0, .ffn_stats = m->ffn_stats};
    ds_arena_mark base = ds_arena_get_mark(&m->arena);
    float *lat = NULL, *x_host = NULL, *eps_host = NULL;
    ds_torch_rng rng;
    ds_torch_rng_seed(&rng, p->seed);
    ds_tensor ctx_t;
    // public clip_skip counts as A1111 does (0 or 1: the last layer, 2: one earlier); the text
    // encoder counts as diffusers' encode_prompt(clip_skip=k) (0: the last layer, k: k earlier)
    int skip = p->clip_skip > 1 ? p->clip_skip - 1 : 0;
    int rc = ds_model_encode_prompts(m, &run, p->prompt, p->negative_prompt, cfg, skip, &ctx_t);
    if (!rc && p->capture) rc = ds_capture_attach(p->capture, e, &run, m, p, B, W, H);  // heatmaps

    // latents (1, C, h, w) NCHW on the host, like diffusers: randn × init_noise_sigma
    lat = ds_malloc(e, n * sizeof(float), "latents");
    x_host = ds_malloc(e, n * B * sizeof(float), "UNet input");
    eps_host = ds_malloc(e, n * B * sizeof(float), "UNet output");
    if (!lat || !x_host || !eps_host) rc = rc ? rc : DS_ERR_OOM;
    // image-to-image starts at call `first` from the encoded image (img2img.c); `pre` counts the
    // UNet calls it already made (DDIM inversion) for progress
    int first = 0, pre = 0;
    double t0 = now_seconds();
    if (!rc && p->init_image) {
        rc = ds_img2img_latents(m, &run, p, sched, &rng, h, w, t0, lat, &first, &pre);
    } else if (!rc) {
        if (p->init_latents) memcpy(lat, p->init_latents, n * sizeof(float));
        else ds_torch_randn(&rng, lat, n);
        float s = ds_scheduler_init_noise_sigma(sched);
        for (size_t i = 0; i < n; i++) lat[i] *= s;
    }
    ds_tensor x = {0}, eps = {0}, nchw = {0};
    if (!rc) {
        x = ds_arena_tensor(&m->arena, e, 4, B, h, w, C);
        eps = ds_arena_tensor(&m->arena, e, 4, B, h, w, C);
        nchw = ds_arena_tensor(&m->arena, e, 4, B, C, h, w);
        if (!x.data || !eps.data || !nchw.data) rc = DS_ERR_OOM;
    }
    int calls = rc ? 0 : ds_scheduler_num_calls(sched);
    for (int i = first; i < calls && !rc; i++) {
        float t = ds_scheduler_timestep(sched, i);
        run.step = i;
        run.timestep = t;
        // latent_model_input = scale_model_input(cat([latents] * B), t)
        for (int b = 0; b < B; b++) memcpy(x_host + b * n, lat, n * sizeof(float));
        ds_scheduler_scale_model_input(sched, i, x_host, n * B);
        be->upload(be, nchw.data, x_host, (int64_t)(n * B));
        be->nchw_to_nhwc(be, nchw.data, x.data, B, C, h, w);
        float tb[2] = {t, t};
        rc = ds_unet_forward(&m->unet, &run, &x, tb, &ctx_t, &eps);
        if (rc) break;
        be->nhwc_to_nchw(be, eps.data, nchw.data, B, h, w, C);
        be->download(be, eps_host, nchw.data, (int64_t)(n * B));
        if ((rc = ds_backend_check(be, e))) break;  // e.g. out of GPU memory inside an op
        if (cfg)  // noise_pred = uncond + g · (cond − uncond)
            for (size_t k = 0; k < n; k++) eps_host[k] = eps_host[k] + p->guidance * (eps_host[n + k] - eps_host[k]);
        rc = ds_scheduler_step(e, sched, i, eps_host, lat, n, &rng);
        if (rc) break;
        if (p->progress && p->progress(p->progress_user, pre + i + 1 - first, pre + calls - first, now_seconds() - t0)) {
            rc = ds_errf(e, DS_ERR_CANCELLED, "cancelled by the progress callback at step %d", i + 1);
        }
    }
    if (!rc && p->out_latents) memcpy(p->out_latents, lat, n * sizeof(float));
    // decode: latents / scaling_factor → VAE → (x / 2 + 0.5).clamp(0, 1) → round(x · 255)
    if (!rc) {
        ds_arena_reset(&m->arena, base);
        ds_tensor z = ds_arena_tensor(&m->arena, e, 4, 1, h, w, C);
        ds_tensor zc = ds_arena_tensor(&m->arena, e, 4, 1, C, h, w);
        ds_tensor img = ds_arena_tensor(&m->arena, e, 4, 1, H, W, 3);
        if (!z.data || !zc.data || !img.data) rc = DS_ERR_OOM;
        if (!rc) {
            for (size_t k = 0; k < n; k++) lat[k] /= m->vae_cfg.scaling_factor;  // as torch divides
            be->upload(be, zc.data, lat, (int64_t)n);
            be->nchw_to_nhwc(be, zc.data, z.data, 1, C, h, w);
            run.step = -1;
            run.timestep = -1;
            rc = ds_vae_decode(&m->vae, &run, &z, &img);
        }
        if (!rc) {
            float* pix = ds_malloc(e, (size_t)W * H * 3 * sizeof(float), "image");
            out->pixels = ds_malloc(e, (size_t)W * H * 3, "image");
            if (!pix || !out->pixels) rc = DS_ERR_OOM;
            else {
                be->download(be, pix, img.data, (int64_t)W * H * 3);
                rc = ds_backend_check(be, e);
                for (size_t k = 0; k < (size_t)W * H * 3; k++) {
                    float v = pix[k] / 2.0f + 0.5f;
                    v = v < 0 ? 0 : v > 1 ? 1 : v;
                    out->pixels[k] = (uint8_t)lrintf(v * 255.0f);  // numpy round: half to even
                }
                out->width = W;
                out->height = H;
                out->channels = 3;
            }
            free(pix);
        }
    }
    ds_arena_reset(&m->arena, base);
    free(lat);
    free(x_host);
    free(eps_host);
    ds_scheduler_free(sched);
    if (rc) {
        free(out->pixels);
        memset(out, 0, sizeof *out);
    }
    return (ds_status)rc;
}
