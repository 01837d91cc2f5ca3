// api.c — the small parts of the public API: contexts, errors, parameters, images.
#include <string.h>

#include "io.h"
#include "model.h"

// $DIFFSCOPE_DEVICE (cpu|cuda|auto) and $DIFFSCOPE_PRECISION (fp32|fp16|bf16) set a new context's
// device; unknown values are ignored (ds_context_set_device and the CLI flags override them).
ds_context* ds_context_create(void) {
    ds_context* ctx = calloc(1, sizeof(ds_context));
    if (!ctx) return NULL;
    const char* d = getenv("DIFFSCOPE_DEVICE");
    const char* p = getenv("DIFFSCOPE_PRECISION");
    if (d && !strcmp(d, "cpu")) ctx->device = DS_DEVICE_CPU;
    if (d && !strcmp(d, "cuda")) ctx->device = DS_DEVICE_CUDA;
    if (p && !strcmp(p, "fp32")) ctx->precision = DS_PRECISION_FP32;
    if (p && !strcmp(p, "fp16")) ctx->precision = DS_PRECISION_FP16;
    if (p && !strcmp(p, "bf16")) ctx->precision = DS_PRECISION_BF16;
    if (ctx->device == DS_DEVICE_CPU) ctx->precision = DS_PRECISION_DEFAULT;
    return ctx;
}
void ds_context_free(ds_context* ctx) { free(ctx); }

const char* ds_last_error(const ds_context* ctx) { return ctx ? ctx->err.msg : "no context"; }

const char* ds_status_name(ds_status s) {
    static const char* names[] = {"ok", "invalid argument", "i/o error", "bad format",
                                  "unsupported", "out of memory", "device error", "internal error",
                                  "cancelled"};
    return (unsigned)s < sizeof names / sizeof names[0] ? names[s] : "unknown status";
}

const char* ds_version(void) { return DS_VERSION_STRING; }

void ds_generate_params_init(ds_generate_params* p) {
    memset(p, 0, sizeof *p);
    p->negative_prompt = "";
    p->steps = 20;
    p->guidance = 7.5f;
    p->sampler = DS_SAMPLER_DEFAULT;
    p->strength = 0.8f;
    p->start_step = -1;
}

void ds_image_free(ds_image* img) {
    if (!img) return;
    free(img->pixels);
    memset(img, 0, sizeof *img);
}

ds_status ds_image_write_png(ds_context* ctx, const ds_image* img, const char* path) {
    ds_err_clear(&ctx->err);
    if (!img || !img->pixels) return ds_errf(&ctx->err, DS_ERR_ARG, "%s: no image to write", path);
    return (ds_status)ds_png_write(&ctx->err, path, img->pixels, img->width, img->height, img->channels);
}
