// img2img.c — image-to-image as diffusers' StableDiffusionImg2ImgPipeline (0.42) does it, and
// DDIM inversion as DDIMInverseScheduler does it (docs/real_images.md).
//
//   image (RGB uint8) → x = 2·(u8 / 255) − 1                          VaeImageProcessor.preprocess
//   moments = vae.encode(x) → mean, logvar                           DiagonalGaussianDistribution
//   init = sf · (mean + exp(clamp(logvar, −30, 20) / 2) · randn)      retrieve_latents(…, generator)
//   t_start = steps − min(int(steps·strength), steps)                get_timesteps
//   latents = add_noise(init, randn, timesteps[t_start])             prepare_latents
//   then the text-to-image loop over calls t_start .. num_calls−1 (pipeline.c).
// Both randn draws come from the run's seeded generator, sample first; Euler a's step noise
// continues the same stream. Per-element arithmetic is float32, one rounding per torch op.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "img2img.h"

#include <math.h>
#include <string.h>
#include <time.h>

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int ds_img2img_check(const ds_model* m, ds_err* e, const ds_generate_params* p, int W, int H) {
    if (!p->init_image) {
        if (p->start_step >= 0)
            return ds_errf(e, DS_ERR_ARG, "start step (--timestep) %d given without an init image", p->start_step);
        if (p->ddim_inversion)
            return ds_errf(e, DS_ERR_ARG, "DDIM inversion needs an init image");
        return DS_OK;
    }
    if (p->init_latents)
        return ds_errf(e, DS_ERR_ARG, "give an init image or init latents (--latents), not both");
    if (p->init_image_width <= 0 || p->init_image_height <= 0)
        return ds_errf(e, DS_ERR_ARG, "init image: bad size %dx%d", p->init_image_width, p->init_image_height);
    if (p->init_image_width != W || p->init_image_height != H)
        return ds_errf(e, DS_ERR_ARG,
                       "init image is %dx%d but the generation size is %dx%d%s: resize the image to %dx%d "
                       "or set --width %d --height %d",
                       p->init_image_width, p->init_image_height, W, H,
                       (p->width || p->height) ? "" : " (the model's native size)", W, H,
                       p->init_image_width, p->init_image_height);
    if (!(p->strength >= 0.0f && p->strength <= 1.0f))  // NaN fails too
        return ds_errf(e, DS_ERR_ARG, "strength %g: expected a number in [0, 1]", (double)p->strength);
    if (p->start_step < -1)
        return ds_errf(e, DS_ERR_ARG, "start step (--timestep) %d: expected >= 0 (or -1 to use the strength)",
                       p->start_step);
    if (m->vae_cfg.in_channels != 3)
        return ds_errf(e, DS_ERR_UNSUPPORTED, "init image: the VAE takes %d input channels, not RGB",
                       m->vae_cfg.in_channels);
    if (m->vae_cfg.latent_channels != m->unet_cfg.in_channels)
        return ds_errf(e, DS_ERR_UNSUPPORTED,
                       "init image: the UNet takes %d channels but the VAE makes %d (inpainting models are not supported)",
                       m->unet_cfg.in_channels, m->vae_cfg.latent_channels);
    return DS_OK;
}

int ds_img2img_first_call(ds_err* e, const ds_generate_params* p, const ds_scheduler* s, int* first) {
    const int calls = ds_scheduler_num_calls(s);
    if (p->start_step >= 0) {
        if (p->start_step > calls)
            return ds_errf(e, DS_ERR_ARG,
                           "start step (--timestep) %d: expected 0..%d (%s with %d steps makes %d scheduler calls)",
                           p->start_step, calls, ds_sampler_name(ds_scheduler_kind(s)), ds_scheduler_steps(s), calls);
        *first = p->start_step;
    } else if (p->strength == 0.0f) {
        *first = calls;  // nothing to denoise (PNDM's get_timesteps would keep its last call)
    } else {
        *first = ds_scheduler_img2img_start(s, p->strength);
        if (*first > calls) *first = calls;
    }
    return DS_OK;
}

int ds_img2img_encode(ds_model* m, ds_run* run, const uint8_t* rgb, int W, int H, float* mean, float* logvar) {
    ds_err* e = run->err;
    ds_backend* be = m->be;
    const int f = m->vae_scale_factor, h = H / f, w = W / f, L = m->vae_cfg.latent_channels;
    const size_t npx = (size_t)W * H * 3, nl = (size_t)L * h * w;
    float* px = ds_malloc(e, npx * sizeof(float), "init image");
    float* mom = ds_malloc(e, 2 * nl * sizeof(float), "VAE moments");
    int rc = px && mom ? DS_OK : DS_ERR_OOM;
    // VaeImageProcessor: np.float32(u8) / 255.0, then torch 2.0 * x − 1.0 (two roundings)
    for (size_t k = 0; !rc && k < npx; k++) {
        float v = (float)rgb[k] / 255.0f;
        px[k] = 2.0f * v - 1.0f;
    }
    ds_arena_mark mk = ds_arena_get_mark(run->arena);
    if (!rc) {
        ds_tensor img = ds_arena_tensor(run->arena, e, 4, 1, H, W, 3);
        ds_tensor mo = ds_arena_tensor(run->arena, e, 4, 1, h, w, 2 * L);
        ds_tensor moc = ds_arena_tensor(run->arena, e, 4, 1, 2 * L, h, w);
        if (!img.data || !mo.data || !moc.data) rc = DS_ERR_OOM;
        if (!rc) {
            be->upload(be, img.data, px, (int64_t)npx);  // RGB bytes are already NHWC
            rc = ds_vae_encode(&m->vae, run, &img, &mo);
        }
        if (!rc) {
            be->nhwc_to_nchw(be, mo.data, moc.data, 1, h, w, 2 * L);
            be->download(be, mom, moc.data, (int64_t)(2 * nl));
            rc = ds_backend_check(be, e);
            memcpy(mean, mom, nl * sizeof(float));  // torch.chunk(parameters, 2, dim=1)
            memcpy(logvar, mom + nl, nl * sizeof(float));
        }
    }
    ds_arena_reset(run->arena, mk);
    free(px);
    free(mom);
    return rc;
}

// ---- DDIM inversion ---------------------------------------------------------------------------

// alphas_cumprod at the noise level of call c: the table entry for an integer timestep (DDIM,
// PNDM, DPM, Euler's integer ones), else 1 / (sigma² + 1) (Euler's fractional timesteps).
static float level_alpha(const ds_scheduler* s, const float* ac, int T, int c) {
    float t = ds_scheduler_timestep(s, c);
    if (t >= 0 && t < (float)T && t == floorf(t)) return ac[(int)t];
    float sigma = ds_scheduler_sigma(s, c);
    return 1.0f / (sigma * sigma + 1.0f);
}

// One UNet evaluation without guidance (batch 1): eps_host = unet(x_host, t, ctx).
static int unet_eval(ds_model* m, ds_run* r, const float* x_host, float t, const ds_tensor* ctx, int h, int w,
                     float* eps_host) {
    ds_backend* be = m->be;
    const int C = m->unet_cfg.in_channels;
    const int64_t n = (int64_t)C * h * w;
    ds_arena_mark mk = ds_arena_get_mark(r->arena);
    ds_tensor x = ds_arena_tensor(r->arena, r->err, 4, 1, h, w, C);
    ds_tensor eps = ds_arena_tensor(r->arena, r->err, 4, 1, h, w, C);
    ds_tensor nchw = ds_arena_tensor(r->arena, r->err, 4, 1, C, h, w);
    int rc = x.data && eps.data && nchw.data ? DS_OK : DS_ERR_OOM;
    if (!rc) {
        be->upload(be, nchw.data, x_host, n);
        be->nchw_to_nhwc(be, nchw.data, x.data, 1, C, h, w);
        float tb[1] = {t};
        rc = ds_unet_forward(&m->unet, r, &x, tb, ctx, &eps);
    }
    if (!rc) {
        be->nhwc_to_nchw(be, eps.data, nchw.data, 1, h, w, C);
        be->download(be, eps_host, nchw.data, n);
        rc = ds_backend_check(be, r->err);
    }
    ds_arena_reset(r->arena, mk);
    return rc;
}

// x (n floats): in, the clean latent sf·mean; out, the sample at call `first` in the sampler's
// own parametrization. Walks the sampler's noise levels from its last call back to `first`
// (a level not noisier than the previous one is skipped: PNDM's repeated timestep, a last level
// equal to the clean one). Each step is DDIMInverseScheduler.step: the UNet evaluated at the
// target timestep on the current sample, conditional prompt only (guidance 1), from the source
// level to the target level. The source level is DDIMInverseScheduler's, t − T // steps (the clean
// level below 0), for DDIM and PNDM, whose own steps go to exactly that level; the previous
// target for Euler and DPM, whose steps go from one sigma of the schedule to the next.
static int ddim_invert(ds_model* m, ds_run* run0, const ds_generate_params* p, ds_scheduler* s, int h, int w,
                       double t0, int first, float* x, int* pre) {
    ds_err* e = run0->err;
    const int calls = ds_scheduler_num_calls(s);
    const size_t n = (size_t)m->unet_cfg.in_channels * h * w;
    // DDIMInverseScheduler.from_config(the model's scheduler config): DDIM's defaults and keys
    ds_scheduler_params dp;
    DS_TRY(ds_scheduler_params_resolve(e, DS_SAMPLER_DDIM, &m->sched_cfg, &dp));
    const float* ac = ds_scheduler_alphas_cumprod(s);
    const int T = ds_scheduler_get_params(s)->num_train_timesteps;
    const ds_prediction_type pred = ds_scheduler_get_params(s)->prediction_type;
    const int clip = dp.clip_sample;
    const float range = (float)dp.clip_sample_range;

    const ds_sampler kind = ds_scheduler_kind(s);
    const int by_ratio = kind == DS_SAMPLER_DDIM || kind == DS_SAMPLER_PNDM;
    const int ratio = T / ds_scheduler_steps(s);
    int* ladder = ds_malloc(e, sizeof(int) * (size_t)(calls + 1), "inversion steps");
    float* src = ds_malloc(e, sizeof(float) * (size_t)(calls + 1), "inversion levels");
    float* eps = ds_malloc(e, n * sizeof(float), "inversion UNet output");
    int rc = ladder && src && eps ? DS_OK : DS_ERR_OOM;
    int k = 0;
    const float a_clean = dp.set_alpha_to_one ? 1.0f : ac[0];  // initial_alpha_cumprod
    float a_prev = a_clean;
    for (int c = calls - 1; !rc && c >= first; c--) {
        const float a = level_alpha(s, ac, T, c);
        if (!(a < a_prev)) continue;
        float a_src = a_prev;
        if (by_ratio) {
            const int ts = (int)ds_scheduler_timestep(s, c) - ratio;
            a_src = ts >= 0 ? ac[ts < T ? ts : T - 1] : a_clean;
        }
        ladder[k] = c;
        src[k++] = a_src;
        a_prev = a;
    }
    *pre = k;

    // the observer and attention capture see the denoising run only, not the inversion
    ds_run r = *run0;
    r.observer = NULL;
    r.capture = NULL;
    r.cond_batch_begin = 0;
    ds_arena_mark mk = ds_arena_get_mark(r.arena);
    ds_tensor cond = {0};
    int skip = p->clip_skip > 1 ? p->clip_skip - 1 : 0;  // as pipeline.c counts clip_skip
    if (!rc && k > 0) rc = ds_model_encode_prompts(m, &r, p->prompt, NULL, 0, skip, &cond);
    const int total = k + calls - first;
    for (int j = 0; j < k && !rc; j++) {
        const int c = ladder[j];
        const float t = ds_scheduler_timestep(s, c);
        const float a_t = src[j], a_n = level_alpha(s, ac, T, c);
        r.step = -1;
        r.timestep = t;
        rc = unet_eval(m, &r, x, t, &cond, h, w, eps);
        if (rc) break;
        // DDIMInverseScheduler.step: alpha_prod_t = the current level, alpha_prod_t_prev = the target
        const float b_t = 1.0f - a_t;
        const float sa = sqrtf(a_t), sb = sqrtf(b_t), dir = sqrtf(1.0f - a_n), sn = sqrtf(a_n);
        for (size_t q = 0; q < n; q++) {
            float x0, pe;
            switch (pred) {
            case DS_PRED_V:
                x0 = sa * x[q] - sb * eps[q];
                pe = sa * eps[q] + sb * x[q];
                break;
            case DS_PRED_SAMPLE:
                x0 = eps[q];
                pe = (x[q] - sa * x0) / sb;
                break;
            default:
                x0 = (x[q] - sb * eps[q]) / sa;
                pe = eps[q];
                break;
            }
            if (clip) x0 = x0 < -range ? -range : x0 > range ? range : x0;
            float d = dir * pe;
            x[q] = sn * x0 + d;
        }
        if (p->progress && p->progress(p->progress_user, j + 1, total, now_seconds() - t0))
            rc = ds_errf(e, DS_ERR_CANCELLED, "cancelled by the progress callback at inversion step %d", j + 1);
    }
    ds_arena_reset(r.arena, mk);
    if (!rc && (ds_scheduler_kind(s) == DS_SAMPLER_EULER || ds_scheduler_kind(s) == DS_SAMPLER_EULER_A)) {
        // Euler's sample is x0 + sigma·noise = the variance-preserving sample · sqrt(sigma² + 1)
        const float sigma = ds_scheduler_sigma(s, first);
        const float d = sqrtf(sigma * sigma + 1.0f);
        for (size_t q = 0; q < n; q++) x[q] = x[q] * d;
    }
    free(ladder);
    free(src);
    free(eps);
    return rc;
}

// ---- the starting latents --------------------------------------------------------------------

int ds_img2img_latents(ds_model* m, ds_run* run, const ds_generate_params* p, ds_scheduler* sched,
                       ds_torch_rng* rng, int h, int w, double t0, float* lat, int* first, int* pre) {
    ds_err* e = run->err;
    *pre = 0;
    DS_TRY(ds_img2img_first_call(e, p, sched, first));
    const int calls = ds_scheduler_num_calls(sched);
    const size_t n = (size_t)m->vae_cfg.latent_channels * h * w;
    const float sf = m->vae_cfg.scaling_factor;
    float* mean = ds_malloc(e, n * sizeof(float), "latent mean");
    float* logvar = ds_malloc(e, n * sizeof(float), "latent logvar");
    float* noise = NULL;
    int rc = mean && logvar ? DS_OK : DS_ERR_OOM;
    if (!rc) rc = ds_img2img_encode(m, run, p->init_image, w * m->vae_scale_factor, h * m->vae_scale_factor, mean, logvar);
    if (!rc && p->ddim_inversion) {
        // the distribution's mean (deterministic), no draws from the generator
        for (size_t k = 0; k < n; k++) lat[k] = sf * mean[k];
        if (*first < calls) rc = ddim_invert(m, run, p, sched, h, w, t0, *first, lat, pre);
    } else if (!rc) {
        // latent_dist.sample(generator): mean + std · randn, the generator's first draw
        ds_torch_randn(rng, lat, n);
        for (size_t k = 0; k < n; k++) {
            float lv = logvar[k] < -30.0f ? -30.0f : logvar[k] > 20.0f ? 20.0f : logvar[k];
            float sd = expf(0.5f * lv);
            float z = mean[k] + sd * lat[k];
            lat[k] = sf * z;
        }
        if (*first < calls) {  // strength 0: nothing to denoise, no noise drawn
            noise = ds_malloc(e, n * sizeof(float), "noise");
            if (!noise) rc = DS_ERR_OOM;
            else {
                ds_torch_randn(rng, noise, n);
                ds_scheduler_add_noise(sched, lat, noise, *first, lat, n);
            }
        }
    }
    free(mean);
    free(logvar);
    free(noise);
    return rc;
}
