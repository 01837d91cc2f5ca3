// model.c — assembling a ds_model: files → configs (or shape detection for single files) →
// bind every network's weights → one materialize; plus ds_model_get_info.
#include <string.h>

#include "model.h"
#include "model_files.h"

static int build_configs(ds_model* m, ds_err* e, const ds_model_files* mf) {
    // text encoder
    if (mf->text_encoder.config_json) {
        DS_TRY(ds_clip_config_from_json(e, mf->text_encoder.config_json, mf->text_encoder.config_path, &m->text_cfg));
    } else {
        if (ds_clip_config_detect(&m->text_cfg, m->ws, "text_encoder.") != DS_OK)
            return ds_errf(e, DS_ERR_FORMAT, "%s: no usable text encoder weights (text_encoder.text_model.*)", mf->path);
        m->text_cfg.heads = ds_model_files_text_heads(mf, m->text_cfg.hidden);
        // the activation follows the tower, not its width: CLIP-L (SD1) quick_gelu, OpenCLIP (SD2) gelu
        m->text_cfg.act = mf->arch == DS_ARCH_SD2 ? DS_ACT_GELU : DS_ACT_QUICK_GELU;
    }
    // UNet
    if (mf->unet.config_json) {
        DS_TRY(ds_unet_config_from_json(e, mf->unet.config_json, mf->unet.config_path, &m->unet_cfg));
    } else {
        DS_TRY(ds_unet_config_detect(&m->unet_cfg, m->ws, "unet.", mf->arch, e));
        for (int l = 0; l < m->unet_cfg.n_levels; l++)
            m->unet_cfg.heads[l] = ds_model_files_unet_heads(mf, l, m->unet_cfg.block_out_channels[l]);
        if (mf->unet_norm_groups > 0) m->unet_cfg.norm_num_groups = mf->unet_norm_groups;
    }
    if (mf->sample_size > 0) m->unet_cfg.sample_size = mf->sample_size;
    // VAE
    if (mf->vae.config_json) {
        DS_TRY(ds_vae_config_from_json(e, mf->vae.config_json, mf->vae.config_path, &m->vae_cfg));
    } else {
        if (ds_vae_config_detect(&m->vae_cfg, m->ws, "vae.") != DS_OK)
            return ds_errf(e, DS_ERR_FORMAT, "%s: no usable VAE weights (vae.encoder.* / vae.decoder.*)", mf->path);
        if (mf->vae_norm_groups > 0) m->vae_cfg.norm_groups = mf->vae_norm_groups;
    }
    m->vae_scale_factor = ds_vae_scale_factor(&m->vae_cfg);
    if (m->unet_cfg.sample_size <= 0)
        m->unet_cfg.sample_size = m->vae_cfg.sample_size > 0 ? m->vae_cfg.sample_size / m->vae_scale_factor : 64;
    // scheduler (always present: the folder's, or the architecture's default for single files)
    DS_TRY(ds_scheduler_config_parse(e, mf->scheduler.config_json,
                                     mf->scheduler.config_path ? mf->scheduler.config_path : "default scheduler config",
                                     &m->sched_cfg));
    if (mf->prediction_type[0]) {
        if (strcmp(mf->prediction_type, "v_prediction") == 0) m->sched_cfg.prediction_type = DS_PRED_V;
        else if (strcmp(mf->prediction_type, "epsilon") == 0) m->sched_cfg.prediction_type = DS_PRED_EPSILON;
    }
    m->default_sampler = m->sched_cfg.class_sampler != DS_SAMPLER_DEFAULT ? m->sched_cfg.class_sampler
                         : mf->arch == DS_ARCH_SD2                       ? DS_SAMPLER_DDIM
                                                                         : DS_SAMPLER_PNDM;
    if (m->unet_cfg.cross_attention_dim != m->text_cfg.hidden)
        return ds_errf(e, DS_ERR_FORMAT, "%s: the UNet's cross_attention_dim %d does not match the text encoder's hidden size %d",
                       mf->path, m->unet_cfg.cross_attention_dim, m->text_cfg.hidden);
    return DS_OK;
}

ds_status ds_context_set_device(ds_context* ctx, ds_device device, ds_precision precision) {
    if (!ctx) return DS_ERR_ARG;
    ds_err_clear(&ctx->err);
    if (device < DS_DEVICE_AUTO || device > DS_DEVICE_CUDA)
        return ds_errf(&ctx->err, DS_ERR_ARG, "--device: expected cpu, cuda or auto");
    if (precision < DS_PRECISION_DEFAULT || precision > DS_PRECISION_BF16)
        return ds_errf(&ctx->err, DS_ERR_ARG, "--precision: expected fp32, fp16 or bf16");
    if (device == DS_DEVICE_CPU && precision != DS_PRECISION_DEFAULT && precision != DS_PRECISION_FP32)
        return ds_errf(&ctx->err, DS_ERR_ARG,
                       "--precision: the CPU backend computes in fp32 only (fp16/bf16 need --device cuda)");
    ctx->device = device;
    ctx->precision = precision;
    return DS_OK;
}

const char* ds_context_device_notice(const ds_context* ctx) {
    return ctx && ctx->device_notice[0] ? ctx->device_notice : NULL;
}

int ds_context_backend(ds_context* ctx, int force_cpu, int cpu_threads, ds_act_dtype gpu_default, ds_backend** be,
                       const char** precision) {
    ds_err* e = &ctx->err;
    if (!force_cpu) ctx->device_notice[0] = 0;
    if (ctx->device != DS_DEVICE_CPU && !force_cpu) {
        ds_cuda_options o = {0, gpu_default};
        if (ctx->precision == DS_PRECISION_FP16) o.dtype = DS_ACT_F16;
        if (ctx->precision == DS_PRECISION_BF16) o.dtype = DS_ACT_BF16;
        if (ctx->precision == DS_PRECISION_FP32) o.dtype = DS_ACT_F32;
        ds_err ce;
        ds_err_clear(&ce);
        *be = ds_backend_cuda_create(&ce, &o);
        if (*be) {
            *precision = o.dtype == DS_ACT_F16 ? "fp16" : o.dtype == DS_ACT_BF16 ? "bf16" : "fp32";
            return DS_OK;
        }
        const char* why = ce.msg;
        if (!strncmp(why, "--device cuda: ", 15)) why += 15;
        if (ctx->device == DS_DEVICE_CUDA)
            return ds_errf(e, ce.code ? ce.code : DS_ERR_DEVICE, "--device cuda: %s", why);
        snprintf(ctx->device_notice, sizeof ctx->device_notice, "running on the CPU: %.480s", why);
    }
    *be = ds_backend_cpu_create(cpu_threads);
    *precision = "fp32";
    return *be ? DS_OK : ds_errf(e, DS_ERR_OOM, "out of memory");
}

static int create_backend(ds_context* ctx, ds_model* m, int force_cpu) {
    return ds_context_backend(ctx, force_cpu, 0, DS_ACT_F16, &m->be, &m->precision);
}

static ds_status load_on(ds_context* ctx, const char* path, ds_model** out, int force_cpu);

ds_status ds_model_load(ds_context* ctx, const char* path, ds_model** out) {
    ds_status rc = load_on(ctx, path, out, 0);
    // auto: a model the GPU cannot hold runs on the CPU instead, with a notice
    if (rc == DS_ERR_OOM && ctx->device == DS_DEVICE_AUTO && !ctx->device_notice[0]) {
        snprintf(ctx->device_notice, sizeof ctx->device_notice, "running on the CPU: %.440s", ctx->err.msg);
        rc = load_on(ctx, path, out, 1);
    }
    return rc;
}

static ds_status load_on(ds_context* ctx, const char* path, ds_model** out, int force_cpu) {
    ds_err* e = &ctx->err;
    ds_err_clear(e);
    *out = NULL;
    if (!path || !*path) return ds_errf(e, DS_ERR_ARG, "--model: a path is required");
    ds_model* m = ds_calloc(e, 1, sizeof *m, "model");
    if (!m) return DS_ERR_OOM;
    int rc0 = create_backend(ctx, m, force_cpu);
    if (rc0) {
        free(m);
        return rc0;
    }
    m->ws = ds_weights_create(m->be);
    m->path = strdup(path);
    ds_arena_init(&m->arena, m->be, 0);
    ds_model_files mf;
    memset(&mf, 0, sizeof mf);
    int rc = (!m->be || !m->ws) ? ds_errf(e, DS_ERR_OOM, "out of memory") : DS_OK;
    if (!rc) rc = ds_model_files_open(e, path, m->ws, &mf);
    if (!rc) {
        m->arch = mf.arch;
        m->single_file = mf.source == DS_SOURCE_SINGLE_FILE;
        snprintf(m->weight_dtype, sizeof m->weight_dtype, "%s", mf.weight_dtype ? mf.weight_dtype : "?");
        m->pad_id = mf.pad_id;
        m->default_guidance = mf.guidance_scale > 0 ? mf.guidance_scale : 7.5f;
        rc = build_configs(m, e, &mf);
    }
    // SD2's tokenizer pads with "!" (id 0) and then treats every "!" as that special token
    if (!rc) rc = ds_tokenizer_create_flavor(e, m->pad_id == 0 ? DS_TOKENIZER_SD2 : DS_TOKENIZER_SD1, &m->tok);
    if (!rc) rc = ds_clip_text_bind(&m->text, &m->text_cfg, m->ws, "text_encoder.", e);
    if (!rc) rc = ds_unet_bind(&m->unet, &m->unet_cfg, m->ws, "unet.", e);
    if (!rc) rc = ds_vae_bind(&m->vae, &m->vae_cfg, m->ws, "vae.", 1, e);
    if (!rc) rc = ds_weights_materialize(m->ws, e);
    if (!rc) rc = ds_backend_check(m->be, e);
    ds_model_files_free(&mf);
    if (rc) {
        ds_model_free(m);
        return (ds_status)rc;
    }
    *out = m;
    return DS_OK;
}

void ds_model_free(ds_model* m) {
    if (!m) return;
    ds_unet_release(&m->unet);
    ds_tokenizer_free(m->tok);
    ds_arena_release(&m->arena);
    ds_weights_free(m->ws);
    if (m->be) m->be->destroy(m->be);
    free(m->path);
    free(m);
}

ds_status ds_model_get_info(ds_context* ctx, const ds_model* m, ds_model_info* out) {
    ds_err_clear(&ctx->err);
    memset(out, 0, sizeof *out);
    out->arch = m->arch;
    out->arch_name = m->arch == DS_ARCH_SD2 ? "SD2.x" : "SD1.x";
    out->source_format = m->single_file ? "single-file" : "diffusers";
    out->weight_dtype = m->weight_dtype;
    out->device = m->be->name;
    out->default_guidance = m->default_guidance;
    out->precision = m->precision;
    out->params_text_encoder = ds_weights_count_params(m->ws, "text_encoder.");
    out->params_unet = ds_weights_count_params(m->ws, "unet.");
    out->params_vae = ds_weights_count_params(m->ws, "vae.");
    out->text_layers = m->text_cfg.layers;
    out->text_hidden = m->text_cfg.hidden;
    out->cross_attention_dim = m->unet_cfg.cross_attention_dim;
    out->latent_channels = m->vae_cfg.latent_channels;
    out->vae_scale_factor = m->vae_scale_factor;
    out->unet_sample_size = m->unet_cfg.sample_size;
    out->prediction_type = m->sched_cfg.prediction_type == DS_PRED_V ? "v_prediction"
                           : m->sched_cfg.prediction_type == DS_PRED_SAMPLE ? "sample" : "epsilon";
    out->default_sampler = ds_sampler_name(m->default_sampler);
    return DS_OK;
}

ds_status ds_model_timesteps(ds_context* ctx, const ds_model* m, ds_sampler sampler, int steps,
                             float* ts, int cap, int* n_calls) {
    ds_err_clear(&ctx->err);
    *n_calls = 0;
    if (steps < 1 || steps > 1000) return ds_errf(&ctx->err, DS_ERR_ARG, "--steps %d: expected 1..1000", steps);
    ds_scheduler* s = NULL;
    DS_TRY(ds_scheduler_create(&ctx->err, sampler == DS_SAMPLER_DEFAULT ? m->default_sampler : sampler,
                               &m->sched_cfg, steps, &s));
    *n_calls = ds_scheduler_num_calls(s);
    for (int i = 0; i < *n_calls && i < cap; i++) ts[i] = ds_scheduler_timestep(s, i);
    ds_scheduler_free(s);
    return DS_OK;
}
