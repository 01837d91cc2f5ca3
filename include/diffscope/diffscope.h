/* diffscope.h — public C API.
 *
 * Opaque handles, status codes and a per-context last-error message; no global state.
 * Thread safety: one ds_context per thread; a ds_model may be shared read-only.
 *
 *   ds_context* ctx = ds_context_create();
 *   ds_model* m = NULL;
 *   if (ds_model_load(ctx, "path/to/model", &m) != DS_OK) puts(ds_last_error(ctx));
 *   ds_generate_params p; ds_generate_params_init(&p); p.prompt = "a red circle";
 *   ds_image img = {0};
 *   ds_generate(ctx, m, &p, &img); ds_image_write_png(ctx, &img, "out.png");
 *   ds_image_free(&img); ds_model_free(m); ds_context_free(ctx);
 */
#ifndef DIFFSCOPE_H
#define DIFFSCOPE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DS_VERSION_MAJOR 0
#define DS_VERSION_MINOR 1
#define DS_VERSION_PATCH 0
#define DS_VERSION_STRING "0.1.0"

typedef enum ds_status {
    DS_OK = 0,
    DS_ERR_ARG = 1,         /* a bad argument or flag */
    DS_ERR_IO = 2,          /* a file could not be read or written */
    DS_ERR_FORMAT = 3,      /* a file is not in the expected format (corrupt, truncated, hostile) */
    DS_ERR_UNSUPPORTED = 4, /* a valid input we do not handle (pickle checkpoints, unknown architecture) */
    DS_ERR_OOM = 5,         /* out of memory */
    DS_ERR_DEVICE = 6,      /* the compute device failed or is absent */
    DS_ERR_INTERNAL = 7,
    DS_ERR_CANCELLED = 8    /* a progress or observer callback asked to stop */
} ds_status;

typedef struct ds_context ds_context;
typedef struct ds_model ds_model;

ds_context* ds_context_create(void);
void ds_context_free(ds_context* ctx);
/* The message of the last failing call on this context ("" if none). Valid until the next call. */
const char* ds_last_error(const ds_context* ctx);
const char* ds_status_name(ds_status s);
const char* ds_version(void);

/* ---- models ------------------------------------------------------------------------------ */

typedef enum ds_arch { DS_ARCH_UNKNOWN = 0, DS_ARCH_SD1 = 1, DS_ARCH_SD2 = 2 } ds_arch;

/* Loads a diffusers folder (model_index.json, unet/, text_encoder/, vae/, tokenizer/, scheduler/)
 * or a single-file SD1.x / SD2.x .safetensors checkpoint with the original LDM key names.
 * Pickle checkpoints (.ckpt/.pt/.bin/.pth) are refused with a message saying how to convert. */
/* Where models loaded from now on run. AUTO (the default): CUDA when a GPU is usable, else the
 * CPU — ds_context_device_notice() then says why. CUDA: fail the load (DS_ERR_DEVICE) when no GPU is
 * usable. Precision DEFAULT = fp16 on CUDA, fp32 on the CPU (the CPU backend is fp32 only). */
typedef enum ds_device { DS_DEVICE_AUTO = 0, DS_DEVICE_CPU = 1, DS_DEVICE_CUDA = 2 } ds_device;
typedef enum ds_precision {
    DS_PRECISION_DEFAULT = 0, DS_PRECISION_FP32 = 1, DS_PRECISION_FP16 = 2, DS_PRECISION_BF16 = 3
} ds_precision;
ds_status ds_context_set_device(ds_context* ctx, ds_device device, ds_precision precision);
/* After a load with DS_DEVICE_AUTO that fell back to the CPU: one line saying why; else NULL. */
const char* ds_context_device_notice(const ds_context* ctx);

ds_status ds_model_load(ds_context* ctx, const char* path, ds_model** out);
void ds_model_free(ds_model* m);

typedef struct ds_model_info {
    ds_arch arch;
    const char* arch_name;      /* "SD1.x", "SD2.x" */
    const char* source_format;  /* "diffusers" or "single-file" */
    const char* weight_dtype;   /* dtype of most weights in the files: "fp32", "fp16", "bf16" */
    int64_t params_text_encoder, params_unet, params_vae;
    int text_layers, text_hidden, cross_attention_dim, latent_channels, vae_scale_factor;
    int unet_sample_size;       /* latent side the model was trained at (config sample_size) */
    const char* prediction_type;/* "epsilon" or "v_prediction" */
    const char* default_sampler;
    const char* device;         /* where it runs: "cpu" or "cuda" */
    const char* precision;      /* activation/weight storage on that device: "fp32", "fp16", "bf16" */
    float default_guidance;     /* the model's recommended CFG scale: model_index.json
                                   "_diffscope_guidance_scale" (or single-file metadata
                                   diffscope.guidance_scale), else 7.5; the CLI's default */
} ds_model_info;
ds_status ds_model_get_info(ds_context* ctx, const ds_model* m, ds_model_info* out);

/* ---- observing the model: the node observer ------------------------------------------------ */

typedef enum ds_node_kind {
    DS_NODE_TEXT_HIDDEN = 0,  /* text encoder output (or a layer's hidden states), (B, 77, D) */
    DS_NODE_ATTN_PROBS = 1,   /* softmax(QK^T·scale) of one attention call, a row tile per head */
    DS_NODE_FFN_ACT = 2,      /* GEGLU output a ⊙ GELU(g) of a transformer block's FFN, (B, L, F) */
    DS_NODE_BLOCK_OUT = 3,    /* output of a UNet block (down_blocks.i, mid_block, up_blocks.i), NHWC */
    DS_NODE_ATTN_CONTEXT = 4  /* the K/V input (encoder_hidden_states) of a cross-attention, (B, 77, D) */
} ds_node_kind;

typedef struct ds_node {
    const char* path;      /* module path in diffusers' naming, e.g.
                              "down_blocks.1.attentions.0.transformer_blocks.0.attn2" */
    ds_node_kind kind;
    int step;              /* denoising step index (0-based), -1 outside the loop */
    float timestep;        /* model timestep t of this step, -1 outside the loop */
    int ndim;
    int64_t shape[4];      /* outermost first */
    float* data;           /* host fp32; the observer may modify it in place and return 1 */
    /* DS_NODE_ATTN_PROBS only: data is probs[row0 .. row0+nrows) of (batch b, head h), each row Lk long */
    int batch, head, row0, nrows, height, width; /* height×width: spatial layout of the query rows */
} ds_node;

/* Asked once per node before it is computed: return nonzero to receive it. Cheap to call. */
typedef int (*ds_observer_wants_fn)(void* user, const char* path, ds_node_kind kind);
/* Receives a node; return 1 if it modified node->data, 0 if not, <0 to cancel the run. */
typedef int (*ds_observer_fn)(void* user, ds_node* node);

typedef struct ds_observer {
    ds_observer_wants_fn wants;
    ds_observer_fn observe;
    void* user;
} ds_observer;

/* ---- generation ---------------------------------------------------------------------------- */

typedef enum ds_sampler {
    DS_SAMPLER_DEFAULT = 0, /* the model's scheduler_config.json, else PNDM for SD1 / DDIM for SD2 */
    DS_SAMPLER_DDIM,
    DS_SAMPLER_EULER,
    DS_SAMPLER_EULER_A,
    DS_SAMPLER_DPMPP_2M,
    DS_SAMPLER_PNDM
} ds_sampler;

/* Progress: called after each denoising step; return nonzero to cancel. */
typedef int (*ds_progress_fn)(void* user, int step, int steps, double seconds_elapsed);

typedef struct ds_generate_params {
    const char* prompt;
    const char* negative_prompt; /* "" by default */
    int steps;                   /* 20 */
    float guidance;              /* 7.5; <= 1 disables classifier-free guidance */
    uint64_t seed;               /* torch.Generator("cpu").manual_seed(seed) equivalent */
    ds_sampler sampler;
    int width, height;           /* 0: the model's native size (sample_size × vae scale) */
    int clip_skip;               /* 0 or 1: the architecture's default layer; 2: one earlier, ... */
    const float* init_latents;   /* optional (1, C, h, w) NCHW fp32 like diffusers' `latents=` */
    int64_t init_latents_shape[4];
    ds_progress_fn progress;
    void* progress_user;
    const ds_observer* observer; /* optional */
    float* out_latents;          /* optional: receives final latents (1, C, h, w) NCHW, unscaled */

    /* Real images (image-to-image): the image is VAE-encoded and denoised from a partly noised
     * latent, as diffusers' StableDiffusionImg2ImgPipeline does. */
    const uint8_t* init_image;   /* RGB bytes, row-major; NULL: text-to-image */
    int init_image_width, init_image_height; /* must equal the generation size */
    float strength;              /* 0..1: fraction of the schedule re-run (default 0.8) */
    int start_step;              /* >= 0: start at this scheduler call instead (--timestep); -1 unused */
    int ddim_inversion;          /* 1: reach the start latent by DDIM inversion, not seeded noise */

    /* Attention capture for heatmaps (include/diffscope/heatmap.h); NULL: none. */
    struct ds_capture* capture;
} ds_generate_params;

void ds_generate_params_init(ds_generate_params* p);

/* The timestep t the UNet sees at each scheduler call for this sampler (DS_SAMPLER_DEFAULT: the
 * model's) and step count: ts[0 .. min(cap, *n_calls)) is filled, *n_calls is the number of calls.
 * Lets a caller turn a timestep ("start the image at t = 500") into a start_step. */
ds_status ds_model_timesteps(ds_context* ctx, const ds_model* m, ds_sampler sampler, int steps,
                             float* ts, int cap, int* n_calls);

typedef struct ds_image {
    int width, height, channels; /* channels = 3 */
    uint8_t* pixels;             /* row-major RGB */
} ds_image;

ds_status ds_generate(ds_context* ctx, ds_model* m, const ds_generate_params* p, ds_image* out);
void ds_image_free(ds_image* img);
/* Writes a PNG atomically (temp name + rename). */
ds_status ds_image_write_png(ds_context* ctx, const ds_image* img, const char* path);

#ifdef __cplusplus
}
#endif
#endif
