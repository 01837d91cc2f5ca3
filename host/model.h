// model.h — the loaded model (ds_model): backend, weights, the three networks, scheduler config,
// tokenizer. Assembled by model.c from model_files (diffusers folder or single file).
#ifndef DS_MODEL_H
#define DS_MODEL_H

#include "arena.h"
#include "clip_text.h"
#include "scheduler.h"
#include "tokenizer.h"
#include "unet.h"
#include "vae.h"
#include "weights.h"

struct ds_model {
    ds_backend* be;
    const char* precision;           // "fp32" / "fp16" / "bf16": the backend's storage type
    float default_guidance;          // the model's recommended CFG scale (7.5 unless its files say)
    const struct ds_ffn_stats_hook* ffn_stats;  // set by localize around its own generations only
    ds_weights* ws;
    ds_arch arch;
    char* path;
    int single_file;                 // 1: single-file checkpoint, 0: diffusers folder
    char weight_dtype[8];            // "fp32" / "fp16" / "bf16"
    ds_clip_config text_cfg;
    ds_clip_text text;
    ds_unet_config unet_cfg;
    ds_unet unet;
    ds_vae_config vae_cfg;
    ds_vae vae;
    ds_scheduler_config sched_cfg;
    ds_sampler default_sampler;      // from scheduler_config.json's _class_name
    ds_tokenizer* tok;
    int32_t pad_id;                  // SD1: 49407, SD2: 0
    int vae_scale_factor;            // 2^(levels − 1)
    ds_arena arena;                  // activations, reused across calls
};

struct ds_context {
    ds_err err;
    ds_device device;        // where the next ds_model_load puts the model
    ds_precision precision;
    char device_notice[512]; // why AUTO fell back to the CPU ("" if it did not)
};

// The backend ctx asks for: CUDA in ctx's precision (gpu_default when it names none), or the CPU
// (cpu_threads; 0 = OpenMP's default); AUTO falls back to the CPU and records why in
// ctx->device_notice; --device cuda without a usable GPU is an error naming the reason.
int ds_context_backend(ds_context* ctx, int force_cpu, int cpu_threads, ds_act_dtype gpu_default, ds_backend** be,
                       const char** precision);

// Encodes [negative, prompt] (or just the prompt when cfg == 0) into the UNet's context:
// out (B, 77·chunks, D), B = cfg ? 2 : 1, allocated in the model's arena. Long prompts are split
// in 75-token chunks and encoded chunk by chunk; the shorter side is padded with empty chunks.
int ds_model_encode_prompts(ds_model* m, ds_run* run, const char* prompt, const char* negative,
                            int cfg, int clip_skip, ds_tensor* out);

#endif
