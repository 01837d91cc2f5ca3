// model_files.h — finding a model's files and configs: a diffusers folder or a single-file
// SD1.x/SD2.x .safetensors checkpoint. See docs/loading.md.
//
// ds_model_files_open maps every weight file into a ds_weights with diffusers names
// ("unet.*", "text_encoder.*", "vae.*") and fills a ds_model_files with what the model builder
// needs next: the architecture, the config texts (diffusers folders) or the overrides that stand
// in for them (single files), and the tokenizer's pad id. Building the model is the caller's job:
//
//   ds_model_files mf;  ds_weights* ws = ds_weights_create(be);
//   DS_TRY(ds_model_files_open(e, path, ws, &mf));
//   unet config  = mf.unet.config_json ? ds_unet_config_from_json(...) : ds_unet_config_detect(ws, mf.arch, ...)
//     (single files: head counts from ds_model_files_unet_heads / _text_heads, mf.sample_size)
//   scheduler    = ds_scheduler_config_parse(mf.scheduler.config_json)   // always set
//   bind, ds_weights_materialize, ds_model_files_free(&mf)
#ifndef DS_MODEL_FILES_H
#define DS_MODEL_FILES_H

#include "weights.h"

#define DS_MF_MAX_LEVELS 8

typedef enum ds_model_source {
    DS_SOURCE_DIFFUSERS = 1,    // folder with model_index.json, unet/, text_encoder/, vae/, ...
    DS_SOURCE_SINGLE_FILE = 2,  // one .safetensors with the original LDM key names
} ds_model_source;

typedef struct ds_component_files {
    char* dir;          // diffusers: the component folder; NULL for single files / absent folders
    char* config_path;  // the config file that was read, NULL if none
    char* config_json;  // its text (NUL-terminated); NULL if none. Single files: NULL except for
                        // the scheduler, which gets the architecture's default config (see below)
    char** weight_paths;  // the .safetensors files added to the weight store (shards in order)
    int n_weight_paths;
    char* variant;      // "fp16", ... when a variant file was chosen, else NULL
    int sharded;        // 1 when loaded through a *.safetensors.index*.json weight_map
} ds_component_files;

typedef struct ds_model_files {
    ds_model_source source;
    const char* source_name;  // "diffusers" or "single-file"
    char* path;               // as given
    ds_arch arch;
    const char* arch_name;    // "SD1.x", "SD2.x"
    const char* weight_dtype; // dtype of most parameters: "fp32", "fp16", "bf16", "fp64"

    char* model_index_json;   // diffusers: model_index.json text if present, else NULL
    ds_component_files unet, text_encoder, vae, scheduler, tokenizer;
    int scheduler_is_default; // 1: scheduler.config_json is the architecture default (single file,
                              // or a diffusers folder without scheduler/)

    // Tokenizer padding: SD1 pads with <|endoftext|> (49407), SD2 with "!" (id 0).
    int pad_id;
    float guidance_scale;     // the model's recommended CFG scale (model_index.json
                              // "_diffscope_guidance_scale" / metadata diffscope.guidance_scale); 0 = none
    char pad_token[64];
    char pad_source[512];     // the file the pad token came from, or "default"

    // Overrides that stand in for configs. For single files they are always resolved (metadata,
    // else the architecture's default); for diffusers folders they are empty (the configs rule)
    // unless a caller sets them (ds_model_files_set_prediction for a --prediction flag).
    char prediction_type[16]; // "epsilon" / "v_prediction"; "" = use the scheduler config
    int n_unet_heads;         // 0 = no override; else heads per UNet level (1 value = all levels)
    int unet_heads[DS_MF_MAX_LEVELS];
    int text_heads;           // 0 = no override
    int sample_size;          // latent side; 0 = use the UNet config
    int unet_norm_groups;     // diffscope.norm_groups; 0 = no override (GroupNorm groups, 32 in SD)
    int vae_norm_groups;      // diffscope.vae_norm_groups; 0 = no override
    int text_layers_dropped;  // SD2 single file: 1 (the OpenCLIP tower's last layer is not used)
} ds_model_files;

// Opens `path`: a diffusers folder, or a single .safetensors file (LDM keys, converted with
// ds_ldm_convert). Pickle checkpoints (.ckpt/.pt/.bin, or a folder whose weights are only .bin)
// are refused with DS_ERR_UNSUPPORTED and a conversion hint. On failure `out` is left freed.
int ds_model_files_open(ds_err* e, const char* path, ds_weights* ws, ds_model_files* out);
void ds_model_files_free(ds_model_files* mf);

// Sets the prediction type ("epsilon", "v_prediction"; "v" and "eps" are accepted). When the
// scheduler config is the built-in default it is regenerated with the new value.
int ds_model_files_set_prediction(ds_err* e, ds_model_files* mf, const char* prediction);

// UNet attention heads for a level with `channels` channels, for single files: the
// diffscope.unet_heads override, else the architecture's rule (SD1: 8 heads; SD2: head dim 64).
int ds_model_files_unet_heads(const ds_model_files* mf, int level, int channels);
// Text encoder heads for hidden size `hidden`: the diffscope.text_heads override, else hidden / 64.
int ds_model_files_text_heads(const ds_model_files* mf, int hidden);

// The default scheduler_config.json text for an architecture (malloc'd): SD1 → SD1.5's
// PNDMScheduler config, SD2 → SD2.1's DDIMScheduler config; prediction_type as given
// (NULL: "epsilon").
char* ds_default_scheduler_json(ds_arch arch, const char* prediction_type);

// Reads the pad token of a tokenizer folder (special_tokens_map.json, else tokenizer_config.json)
// and maps it to an id: "<|endoftext|>" → 49407, "!" → 0, anything else through vocab.json in the
// same folder. A missing folder or no pad_token gives the architecture's default (no error).
// pad_token / source (optional, may be NULL) receive the token string and the file it came from.
int ds_tokenizer_pad_id(ds_err* e, const char* tokenizer_dir, ds_arch arch, int* pad_id,
                        char* pad_token, size_t pad_token_cap, char* source, size_t source_cap);

#endif
