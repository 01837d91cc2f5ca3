// model_files.c — diffusers folders and single-file checkpoints (see model_files.h).
#include "model_files.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

#include "ldm_convert.h"

#define SD1_PAD_ID 49407  // <|endoftext|>
#define SD2_PAD_ID 0      // "!"

static int ends(const char* s, const char* suf) {
    size_t ls = strlen(s), lf = strlen(suf);
    return ls >= lf && strcmp(s + ls - lf, suf) == 0;
}

static int iends(const char* s, const char* suf) {
    size_t ls = strlen(s), lf = strlen(suf);
    return ls >= lf && strcasecmp(s + ls - lf, suf) == 0;
}

static char* join(ds_err* e, const char* a, const char* b) {
    char* s = ds_path_join(a, b);
    if (!s) ds_errf(e, DS_ERR_OOM, "out of memory");
    return s;
}

static char* xstrdup(ds_err* e, const char* s) {
    char* d = strdup(s);
    if (!d) ds_errf(e, DS_ERR_OOM, "out of memory");
    return d;
}

// Reads and parses a JSON file that must hold an object. *text_out (optional) keeps the text.
static int read_json(ds_err* e, const char* path, cJSON** root_out, char** text_out) {
    char* text;
    size_t len;
    *root_out = NULL;
    DS_TRY(ds_read_file(e, path, &text, &len));
    cJSON* root = cJSON_ParseWithLength(text, len);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        free(text);
        return ds_errf(e, DS_ERR_FORMAT, "%s: not a JSON object", path);
    }
    *root_out = root;
    if (text_out) *text_out = text;
    else free(text);
    return DS_OK;
}

// ---- defaults ------------------------------------------------------------------------------------

char* ds_default_scheduler_json(ds_arch arch, const char* prediction_type) {
    const char* pred = prediction_type && *prediction_type ? prediction_type : "epsilon";
    char buf[1024];
    if (arch == DS_ARCH_SD2)  // stabilityai/stable-diffusion-2-1 scheduler/scheduler_config.json
        snprintf(buf, sizeof buf,
                 "{\"_class_name\": \"DDIMScheduler\", \"beta_end\": 0.012, \"beta_schedule\": "
                 "\"scaled_linear\", \"beta_start\": 0.00085, \"clip_sample\": false, "
                 "\"num_train_timesteps\": 1000, \"prediction_type\": \"%s\", \"set_alpha_to_one\": false, "
                 "\"skip_prk_steps\": true, \"steps_offset\": 1, \"trained_betas\": null}",
                 pred);
    else  // stable-diffusion-v1-5 scheduler/scheduler_config.json
        snprintf(buf, sizeof buf,
                 "{\"_class_name\": \"PNDMScheduler\", \"beta_end\": 0.012, \"beta_schedule\": "
                 "\"scaled_linear\", \"beta_start\": 0.00085, \"clip_sample\": false, "
                 "\"num_train_timesteps\": 1000, \"prediction_type\": \"%s\", \"set_alpha_to_one\": false, "
                 "\"skip_prk_steps\": true, \"steps_offset\": 1, \"trained_betas\": null}",
                 pred);
    return strdup(buf);
}

static int default_pad(ds_arch arch) { return arch == DS_ARCH_SD2 ? SD2_PAD_ID : SD1_PAD_ID; }
static const char* default_pad_token(ds_arch arch) { return arch == DS_ARCH_SD2 ? "!" : "<|endoftext|>"; }

// ---- tokenizer pad id ---------------------------------------------------------------------------

// pad_token may be a string or an AddedToken object {"content": ...}; NULL when absent / null.
static const char* pad_token_of(const cJSON* root) {
    const cJSON* p = cJSON_GetObjectItemCaseSensitive(root, "pad_token");
    if (cJSON_IsString(p)) return p->valuestring;
    if (cJSON_IsObject(p)) {
        const cJSON* c = cJSON_GetObjectItemCaseSensitive(p, "content");
        if (cJSON_IsString(c)) return c->valuestring;
    }
    return NULL;
}

int ds_tokenizer_pad_id(ds_err* e, const char* dir, ds_arch arch, int* pad_id, char* pad_token,
                        size_t pad_token_cap, char* source, size_t source_cap) {
    *pad_id = default_pad(arch);
    if (pad_token && pad_token_cap) snprintf(pad_token, pad_token_cap, "%s", default_pad_token(arch));
    if (source && source_cap) snprintf(source, source_cap, "default");
    if (!dir || !ds_is_dir(dir)) return DS_OK;
    static const char* const files[] = {"special_tokens_map.json", "tokenizer_config.json"};
    for (int i = 0; i < 2; i++) {
        char* path = join(e, dir, files[i]);
        if (!path) return DS_ERR_OOM;
        if (!ds_file_exists(path)) { free(path); continue; }
        cJSON* root;
        int rc = read_json(e, path, &root, NULL);
        if (rc) { free(path); return rc; }
        const char* tok = pad_token_of(root);
        if (!tok) { cJSON_Delete(root); free(path); continue; }
        int id = -1;
        if (strcmp(tok, "<|endoftext|>") == 0) id = SD1_PAD_ID;
        else if (strcmp(tok, "!") == 0) id = SD2_PAD_ID;
        else {  // look it up in the tokenizer's vocab
            char* vpath = join(e, dir, "vocab.json");
            if (!vpath) { cJSON_Delete(root); free(path); return DS_ERR_OOM; }
            if (ds_file_exists(vpath)) {
                cJSON* vocab;
                rc = read_json(e, vpath, &vocab, NULL);
                if (rc) { free(vpath); cJSON_Delete(root); free(path); return rc; }
                const cJSON* v = cJSON_GetObjectItemCaseSensitive(vocab, tok);
                if (cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < 1e9) id = (int)v->valuedouble;
                cJSON_Delete(vocab);
            }
            if (id < 0) {
                rc = ds_errf(e, DS_ERR_FORMAT,
                             "%s: pad_token '%s' is neither '<|endoftext|>' (49407) nor '!' (0) and %s %s",
                             path, tok, vpath, ds_file_exists(vpath) ? "does not contain it" : "is missing");
                free(vpath);
                cJSON_Delete(root);
                free(path);
                return rc;
            }
            free(vpath);
        }
        *pad_id = id;
        if (pad_token && pad_token_cap) snprintf(pad_token, pad_token_cap, "%s", tok);
        if (source && source_cap) snprintf(source, source_cap, "%s", path);
        cJSON_Delete(root);
        free(path);
        return DS_OK;
    }
    return DS_OK;
}

// ---- weights of one diffusers component ------------------------------------------------------------

typedef struct name_list {
    char** v;
    int n;
} name_list;

static void names_free(name_list* l) {
    for (int i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

static int cmp_str(const void* a, const void* b) { return strcmp(*(char* const*)a, *(char* const*)b); }

static int list_dir(ds_err* e, const char* dir, name_list* out) {
    out->v = NULL;
    out->n = 0;
    DIR* d = opendir(dir);
    if (!d) return ds_errf(e, DS_ERR_IO, "%s: cannot list the folder", dir);
    int cap = 0;
    struct dirent* de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        if (out->n == cap) {
            cap = cap ? 2 * cap : 32;
            char** nv = realloc(out->v, sizeof(char*) * (size_t)cap);
            if (!nv) { closedir(d); names_free(out); return ds_errf(e, DS_ERR_OOM, "out of memory"); }
            out->v = nv;
        }
        if (!(out->v[out->n] = strdup(de->d_name))) { closedir(d); names_free(out); return ds_errf(e, DS_ERR_OOM, "out of memory"); }
        out->n++;
    }
    closedir(d);
    qsort(out->v, (size_t)out->n, sizeof(char*), cmp_str);
    return DS_OK;
}

static int has_name(const name_list* l, const char* s) {
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->v[i], s) == 0) return 1;
    return 0;
}

static int push_path(ds_err* e, ds_component_files* c, const char* path) {
    char** nv = realloc(c->weight_paths, sizeof(char*) * (size_t)(c->n_weight_paths + 1));
    if (!nv) return ds_errf(e, DS_ERR_OOM, "out of memory");
    c->weight_paths = nv;
    if (!(c->weight_paths[c->n_weight_paths] = strdup(path))) return ds_errf(e, DS_ERR_OOM, "out of memory");
    c->n_weight_paths++;
    return DS_OK;
}

static int add_single(ds_err* e, ds_weights* ws, ds_component_files* c, const char* file, const char* prefix) {
    char* path = join(e, c->dir, file);
    if (!path) return DS_ERR_OOM;
    int rc = ds_weights_add_file(ws, e, path, prefix);
    if (!rc) rc = push_path(e, c, path);
    free(path);
    return rc;
}

// Loads the shards listed in a *.safetensors.index*.json weight_map and checks the map.
static int add_sharded(ds_err* e, ds_weights* ws, ds_component_files* c, const char* index, const char* prefix) {
    char* ipath = join(e, c->dir, index);
    if (!ipath) return DS_ERR_OOM;
    cJSON* root;
    int rc = read_json(e, ipath, &root, NULL);
    if (rc) { free(ipath); return rc; }
    const cJSON* map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    name_list shards = {0};
    if (!cJSON_IsObject(map) || !map->child) {
        rc = ds_errf(e, DS_ERR_FORMAT, "%s: no \"weight_map\" object", ipath);
        goto done;
    }
    for (const cJSON* it = map->child; it && !rc; it = it->next) {
        if (!cJSON_IsString(it)) { rc = ds_errf(e, DS_ERR_FORMAT, "%s: weight_map['%s'] is not a file name", ipath, it->string); break; }
        const char* f = it->valuestring;
        if (!*f || strchr(f, '/') || strchr(f, '\\') || f[0] == '.' || !ends(f, ".safetensors")) {
            rc = ds_errf(e, DS_ERR_FORMAT, "%s: weight_map['%s'] = '%s' is not a .safetensors file in this folder",
                         ipath, it->string, f);
            break;
        }
        if (has_name(&shards, f)) continue;
        char** nv = realloc(shards.v, sizeof(char*) * (size_t)(shards.n + 1));
        if (!nv || !(nv[shards.n] = strdup(f))) { if (nv) shards.v = nv; rc = ds_errf(e, DS_ERR_OOM, "out of memory"); break; }
        shards.v = nv;
        shards.n++;
    }
    if (rc) goto done;
    qsort(shards.v, (size_t)shards.n, sizeof(char*), cmp_str);
    for (int i = 0; i < shards.n && !rc; i++) rc = add_single(e, ws, c, shards.v[i], prefix);
    for (const cJSON* it = map->child; it && !rc; it = it->next) {
        char name[512];
        snprintf(name, sizeof name, "%s%s", prefix, it->string);
        if (!ds_weights_has(ws, name))
            rc = ds_errf(e, DS_ERR_FORMAT, "%s: weight_map puts '%s' in %s but that shard does not contain it",
                         ipath, it->string, it->valuestring);
    }
    c->sharded = 1;
done:
    names_free(&shards);
    cJSON_Delete(root);
    free(ipath);
    return rc;
}

static int variant_rank(const char* v) {
    if (strcmp(v, "fp32") == 0) return 0;
    if (strcmp(v, "fp16") == 0) return 1;
    if (strcmp(v, "bf16") == 0) return 2;
    return 3;
}

// Returns the variant name of `file` for `base` (malloc'd) or NULL: "<base>.<v>.safetensors" or
// "<base>.safetensors.index.<v>.json"; *sharded tells which.
static char* variant_of(const char* file, const char* base, int* sharded) {
    size_t lb = strlen(base);
    if (strncmp(file, base, lb) != 0 || file[lb] != '.') return NULL;
    const char* rest = file + lb + 1;
    const char* v;
    size_t lv;
    if (strncmp(rest, "safetensors.index.", 18) == 0 && ends(rest, ".json")) {
        v = rest + 18;
        lv = strlen(v) - 5;
        *sharded = 1;
    } else if (ends(rest, ".safetensors")) {
        v = rest;
        lv = strlen(rest) - 12;
        *sharded = 0;
    } else {
        return NULL;
    }
    if (lv == 0 || memchr(v, '.', lv) || memchr(v, '/', lv)) return NULL;
    char* out = strndup(v, lv);
    if (out && strstr(out, "-of-")) { free(out); return NULL; }  // a shard of a sharded variant
    return out;
}

// Finds and adds the weights of component folder c->dir. bases: preferred file stem first.
static int add_component_weights(ds_err* e, ds_weights* ws, ds_component_files* c, const char* const bases[2],
                                 const char* prefix) {
    name_list files;
    DS_TRY(list_dir(e, c->dir, &files));
    int rc = DS_OK;
    char buf[512];
    for (int b = 0; b < 2; b++) {
        snprintf(buf, sizeof buf, "%s.safetensors", bases[b]);
        if (has_name(&files, buf)) { rc = add_single(e, ws, c, buf, prefix); goto done; }
        snprintf(buf, sizeof buf, "%s.safetensors.index.json", bases[b]);
        if (has_name(&files, buf)) { rc = add_sharded(e, ws, c, buf, prefix); goto done; }
    }
    {   // variants: fp32 > fp16 > bf16 > others alphabetically (the listing is sorted)
        int best = -1, best_rank = 99, best_sharded = 0;
        char* best_v = NULL;
        for (int i = 0; i < files.n; i++)
            for (int b = 0; b < 2; b++) {
                int sh;
                char* v = variant_of(files.v[i], bases[b], &sh);
                if (!v) continue;
                int r = variant_rank(v) * 2 + b;
                if (r < best_rank || (r == best_rank && sh && !best_sharded)) {
                    free(best_v);
                    best_v = v;
                    best = i;
                    best_rank = r;
                    best_sharded = sh;
                } else {
                    free(v);
                }
            }
        if (best >= 0) {
            c->variant = best_v;
            rc = best_sharded ? add_sharded(e, ws, c, files.v[best], prefix) : add_single(e, ws, c, files.v[best], prefix);
            goto done;
        }
    }
    // No safetensors: a pickle-only folder gets the conversion message.
    for (int i = 0; i < files.n; i++) {
        const char* f = files.v[i];
        if (iends(f, ".bin") || iends(f, ".ckpt") || iends(f, ".pt") || iends(f, ".pth") || iends(f, ".pkl")) {
            char* path = join(e, c->dir, f);
            if (!path) { rc = DS_ERR_OOM; goto done; }
            ds_err pe = {0};
            ds_is_pickle_checkpoint(&pe, path);
            rc = ds_errf(e, DS_ERR_UNSUPPORTED,
                         "%s\n(for a diffusers folder, save the result as %s/%s.safetensors, or re-save the "
                         "model with save_pretrained(..., safe_serialization=True))",
                         pe.msg, c->dir, bases[0]);
            free(path);
            goto done;
        }
    }
    rc = ds_errf(e, DS_ERR_FORMAT, "%s: no weights found (expected %s.safetensors, a sharded "
                 "%s.safetensors.index.json or a variant such as %s.fp16.safetensors)",
                 c->dir, bases[0], bases[0], bases[0]);
done:
    names_free(&files);
    return rc;
}

// ---- diffusers folder ----------------------------------------------------------------------------

static const char* json_str(const cJSON* root, const char* key) {
    const cJSON* v = cJSON_GetObjectItemCaseSensitive(root, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

// Reads <dir>/<file> into c->config_path / config_json; `required` makes absence an error.
static int load_config(ds_err* e, ds_component_files* c, const char* file, int required, cJSON** root_out) {
    *root_out = NULL;
    char* path = join(e, c->dir, file);
    if (!path) return DS_ERR_OOM;
    if (!ds_file_exists(path)) {
        int rc = required ? ds_errf(e, DS_ERR_FORMAT, "%s: missing config file (a diffusers component folder has %s)",
                                    path, file)
                          : DS_OK;
        free(path);
        return rc;
    }
    c->config_path = path;
    return read_json(e, path, root_out, &c->config_json);
}

static int open_component(ds_err* e, const char* root, const char* name, ds_component_files* c, int required) {
    c->dir = join(e, root, name);
    if (!c->dir) return DS_ERR_OOM;
    if (ds_is_dir(c->dir)) return DS_OK;
    free(c->dir);
    c->dir = NULL;
    if (!required) return DS_OK;
    return ds_errf(e, DS_ERR_FORMAT,
                   "%s: missing the '%s/' folder (a diffusers Stable Diffusion folder has unet/, "
                   "text_encoder/, vae/, tokenizer/ and scheduler/)", root, name);
}

// transformers >= 5.6 saves CLIPTextModel without the "text_model." level ("embeddings.*",
// "encoder.layers.*", "final_layer_norm.*"); the weight store always uses the full names.
// The position_ids buffer (older files) is not a weight and is dropped.
static int normalize_text_names(ds_err* e, ds_weights* ws, int first_file) {
    char name[512];
    for (int fi = first_file; fi < ds_weights_n_files(ws); fi++) {
        const ds_st_file* f = ds_weights_file(ws, fi);
        for (int i = 0; i < f->n_tensors; i++) {
            const ds_st_tensor* t = &f->tensors[i];
            if (strncmp(t->name, "embeddings.", 11) != 0 && strncmp(t->name, "encoder.", 8) != 0 &&
                strncmp(t->name, "final_layer_norm.", 17) != 0)
                continue;
            snprintf(name, sizeof name, "text_encoder.text_model.%s", t->name);
            DS_TRY(ds_weights_alias(ws, e, name, f, t, 0, t->ndim, t->shape));
            snprintf(name, sizeof name, "text_encoder.%s", t->name);
            ds_weights_drop_prefix(ws, name);
        }
    }
    ds_weights_drop_prefix(ws, "text_encoder.text_model.embeddings.position_ids");
    return DS_OK;
}

static int open_diffusers(ds_err* e, const char* path, ds_weights* ws, ds_model_files* mf) {
    mf->source = DS_SOURCE_DIFFUSERS;
    mf->source_name = "diffusers";
    char* mi = join(e, path, "model_index.json");
    if (!mi) return DS_ERR_OOM;
    if (ds_file_exists(mi)) {
        cJSON* root;
        int rc = read_json(e, mi, &root, &mf->model_index_json);
        if (rc) { free(mi); return rc; }
        const char* cls = json_str(root, "_class_name");
        // our own recommendation key; diffusers ignores "_"-prefixed keys of model_index.json
        const cJSON* gs = cJSON_GetObjectItemCaseSensitive(root, "_diffscope_guidance_scale");
        if (gs && (!cJSON_IsNumber(gs) || !(gs->valuedouble >= 0 && gs->valuedouble <= 100)))
            rc = ds_errf(e, DS_ERR_FORMAT, "%s: _diffscope_guidance_scale: expected a number in 0..100", mi);
        else if (gs)
            mf->guidance_scale = (float)gs->valuedouble;
        int xl = (cls && strstr(cls, "XL")) || cJSON_GetObjectItemCaseSensitive(root, "text_encoder_2");
        if (!xl && !cJSON_GetObjectItemCaseSensitive(root, "unet") && cJSON_GetObjectItemCaseSensitive(root, "transformer"))
            rc = ds_errf(e, DS_ERR_UNSUPPORTED, "%s: a transformer-based pipeline (%s); diffscope loads SD1.x/SD2.x UNet models",
                         mi, cls ? cls : "?");
        else if (xl && !rc)
            rc = ds_errf(e, DS_ERR_UNSUPPORTED, "%s: an SDXL pipeline (%s); diffscope loads SD1.x and SD2.x only",
                         mi, cls ? cls : "text_encoder_2");
        cJSON_Delete(root);
        if (rc) { free(mi); return rc; }
    } else {
        // no model_index.json: accept a folder that has the component folders
        char* u = join(e, path, "unet");
        int ok = u && ds_is_dir(u);
        free(u);
        if (!ok) {
            int rc = ds_errf(e, DS_ERR_FORMAT,
                             "%s: not a diffusers model folder (no model_index.json and no unet/ folder)", path);
            free(mi);
            return rc;
        }
    }
    free(mi);

    cJSON *unet_cfg = NULL, *text_cfg = NULL, *vae_cfg = NULL, *sched_cfg = NULL, *tok_cfg = NULL;
    static const char* const unet_bases[2] = {"diffusion_pytorch_model", "model"};
    static const char* const text_bases[2] = {"model", "diffusion_pytorch_model"};
    int rc = DS_OK;
    if (!rc) rc = open_component(e, path, "unet", &mf->unet, 1);
    if (!rc) rc = open_component(e, path, "text_encoder", &mf->text_encoder, 1);
    if (!rc) rc = open_component(e, path, "vae", &mf->vae, 1);
    if (!rc) rc = open_component(e, path, "scheduler", &mf->scheduler, 0);
    if (!rc) rc = open_component(e, path, "tokenizer", &mf->tokenizer, 0);
    if (!rc) rc = load_config(e, &mf->unet, "config.json", 1, &unet_cfg);
    if (!rc) rc = load_config(e, &mf->text_encoder, "config.json", 1, &text_cfg);
    if (!rc) rc = load_config(e, &mf->vae, "config.json", 1, &vae_cfg);
    if (!rc && mf->scheduler.dir) rc = load_config(e, &mf->scheduler, "scheduler_config.json", 1, &sched_cfg);
    if (!rc && mf->tokenizer.dir) rc = load_config(e, &mf->tokenizer, "tokenizer_config.json", 0, &tok_cfg);
    if (rc) goto done;

    // Architecture: OpenCLIP text towers use gelu (SD2), OpenAI CLIP quick_gelu (SD1); without
    // hidden_act the UNet's linear projections mark SD2.
    {
        const char* act = json_str(text_cfg, "hidden_act");
        const cJSON* lin = cJSON_GetObjectItemCaseSensitive(unet_cfg, "use_linear_projection");
        const char* add = json_str(unet_cfg, "addition_embed_type");
        if (add && strcmp(add, "text_time") == 0) {
            rc = ds_errf(e, DS_ERR_UNSUPPORTED, "%s: an SDXL UNet (addition_embed_type text_time); diffscope loads SD1.x and SD2.x only",
                         mf->unet.config_path);
            goto done;
        }
        if (act) mf->arch = strcmp(act, "quick_gelu") == 0 ? DS_ARCH_SD1 : DS_ARCH_SD2;
        else mf->arch = cJSON_IsTrue(lin) ? DS_ARCH_SD2 : DS_ARCH_SD1;
    }

    rc = add_component_weights(e, ws, &mf->unet, unet_bases, "unet.");
    int text_first = ds_weights_n_files(ws);
    if (!rc) rc = add_component_weights(e, ws, &mf->text_encoder, text_bases, "text_encoder.");
    if (!rc) rc = normalize_text_names(e, ws, text_first);
    if (!rc) rc = add_component_weights(e, ws, &mf->vae, unet_bases, "vae.");
    if (rc) goto done;

    if (!mf->scheduler.config_json) {
        mf->scheduler.config_json = ds_default_scheduler_json(mf->arch, NULL);
        mf->scheduler_is_default = 1;
        if (!mf->scheduler.config_json) { rc = ds_errf(e, DS_ERR_OOM, "out of memory"); goto done; }
    }
    rc = ds_tokenizer_pad_id(e, mf->tokenizer.dir, mf->arch, &mf->pad_id, mf->pad_token, sizeof mf->pad_token,
                             mf->pad_source, sizeof mf->pad_source);
done:
    cJSON_Delete(unet_cfg);
    cJSON_Delete(text_cfg);
    cJSON_Delete(vae_cfg);
    cJSON_Delete(sched_cfg);
    cJSON_Delete(tok_cfg);
    return rc;
}

// ---- single file ----------------------------------------------------------------------------------

static int parse_pos_int(const char* s, int* v) {
    char* end;
    while (*s == ' ') s++;
    long x = strtol(s, &end, 10);
    while (*end == ' ') end++;
    if (end == s || x <= 0 || x > 1000000) return 0;
    *v = (int)x;
    return *end == '\0' || *end == ',' ? (int)(end - s) + 1 : 0;
}

static int normalize_prediction(const char* s, char out[16]) {
    if (strcmp(s, "epsilon") == 0 || strcmp(s, "eps") == 0) { snprintf(out, 16, "epsilon"); return 1; }
    if (strcmp(s, "v_prediction") == 0 || strcmp(s, "v") == 0) { snprintf(out, 16, "v_prediction"); return 1; }
    return 0;
}

static int read_overrides(ds_err* e, const ds_st_file* f, ds_model_files* mf) {
    const char* v;
    if ((v = ds_st_meta(f, "diffscope.unet_heads"))) {
        const char* p = v;
        mf->n_unet_heads = 0;
        for (;;) {
            int h, used;
            if (mf->n_unet_heads == DS_MF_MAX_LEVELS || !(used = parse_pos_int(p, &h)))
                return ds_errf(e, DS_ERR_FORMAT,
                               "%s: __metadata__ diffscope.unet_heads = '%s': expected a comma-separated list of "
                               "up to %d positive head counts, one per UNet level (or one for all levels)",
                               f->path, v, DS_MF_MAX_LEVELS);
            mf->unet_heads[mf->n_unet_heads++] = h;
            const char* q = p;
            while (*q && *q != ',') q++;
            if (!*q) break;
            p = q + 1;
        }
    }
    if ((v = ds_st_meta(f, "diffscope.text_heads"))) {
        if (!parse_pos_int(v, &mf->text_heads) || strchr(v, ','))
            return ds_errf(e, DS_ERR_FORMAT, "%s: __metadata__ diffscope.text_heads = '%s': expected a positive integer",
                           f->path, v);
    }
    if ((v = ds_st_meta(f, "diffscope.sample_size"))) {
        if (!parse_pos_int(v, &mf->sample_size) || strchr(v, ','))
            return ds_errf(e, DS_ERR_FORMAT,
                           "%s: __metadata__ diffscope.sample_size = '%s': expected a positive integer (latent side)",
                           f->path, v);
    }
    static const struct { const char* key; size_t off; } ints[] = {
        {"diffscope.norm_groups", offsetof(ds_model_files, unet_norm_groups)},
        {"diffscope.vae_norm_groups", offsetof(ds_model_files, vae_norm_groups)},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if ((v = ds_st_meta(f, ints[i].key)) && (!parse_pos_int(v, (int*)((char*)mf + ints[i].off)) || strchr(v, ',')))
            return ds_errf(e, DS_ERR_FORMAT, "%s: __metadata__ %s = '%s': expected a positive integer", f->path,
                           ints[i].key, v);
    if ((v = ds_st_meta(f, "diffscope.guidance_scale"))) {
        char* end = NULL;
        double g = strtod(v, &end);
        if (end == v || *end || !(g >= 0 && g <= 100))
            return ds_errf(e, DS_ERR_FORMAT, "%s: __metadata__ diffscope.guidance_scale = '%s': expected a number in 0..100",
                           f->path, v);
        mf->guidance_scale = (float)g;
    }
    const char* pred_key = "diffscope.prediction_type";
    v = ds_st_meta(f, pred_key);
    if (!v) {  // Stability's model-spec metadata, when present
        pred_key = "modelspec.prediction_type";
        v = ds_st_meta(f, pred_key);
    }
    if (v && !normalize_prediction(v, mf->prediction_type))
        return ds_errf(e, DS_ERR_FORMAT,
                       "%s: __metadata__ %s = '%s': expected 'epsilon' or 'v_prediction'", f->path, pred_key, v);
    return DS_OK;
}

static int hasf_level(const ds_weights* ws, int level) {
    char name[128];
    snprintf(name, sizeof name, "unet.down_blocks.%d.resnets.0.conv1.weight", level);
    return ds_weights_has(ws, name);
}

static int open_single(ds_err* e, const char* path, ds_weights* ws, ds_model_files* mf) {
    mf->source = DS_SOURCE_SINGLE_FILE;
    mf->source_name = "single-file";
    int first = ds_weights_n_files(ws);
    DS_TRY(ds_weights_add_file(ws, e, path, ""));
    const ds_st_file* f = ds_weights_file(ws, first);
    DS_TRY(ds_ldm_detect_err(ws, e, &mf->arch));
    DS_TRY(ds_ldm_convert(ws, e, mf->arch));
    if (mf->arch == DS_ARCH_SD2) mf->text_layers_dropped = DS_LDM_SD2_TEXT_LAYERS_DROPPED;
    ds_component_files* comps[3] = {&mf->unet, &mf->text_encoder, &mf->vae};
    for (int i = 0; i < 3; i++) DS_TRY(push_path(e, comps[i], path));  // one file holds all three
    DS_TRY(read_overrides(e, f, mf));
    if (mf->n_unet_heads > 1) {
        int levels = 0;
        while (levels < 64 && hasf_level(ws, levels)) levels++;
        if (mf->n_unet_heads != levels)
            return ds_errf(e, DS_ERR_FORMAT,
                           "%s: __metadata__ diffscope.unet_heads lists %d values but the UNet has %d levels",
                           path, mf->n_unet_heads, levels);
    }
    if (!mf->prediction_type[0]) snprintf(mf->prediction_type, sizeof mf->prediction_type, "epsilon");
    if (!mf->sample_size)  // SD1: 512 px; SD2: 768 px for v-prediction (2.x-768), 512 px otherwise (2.x-base)
        mf->sample_size = (mf->arch == DS_ARCH_SD2 && strcmp(mf->prediction_type, "v_prediction") == 0) ? 96 : 64;
    mf->scheduler.config_json = ds_default_scheduler_json(mf->arch, mf->prediction_type);
    if (!mf->scheduler.config_json) return ds_errf(e, DS_ERR_OOM, "out of memory");
    mf->scheduler_is_default = 1;
    mf->pad_id = default_pad(mf->arch);
    snprintf(mf->pad_token, sizeof mf->pad_token, "%s", default_pad_token(mf->arch));
    snprintf(mf->pad_source, sizeof mf->pad_source, "default");
    return DS_OK;
}

// ---- common -----------------------------------------------------------------------------------------

static const char* dominant_dtype(const ds_weights* ws) {
    int64_t count[16] = {0};
    int64_t shape[8];
    int n = ds_weights_n_entries(ws);
    for (int i = 0; i < n; i++) {
        const char* name = ds_weights_entry_name(ws, i);
        if (!name) continue;
        int t = ds_weights_dtype(ws, name);
        int nd = ds_weights_shape(ws, name, shape);
        int64_t k = 1;
        for (int d = 0; d < nd; d++) k *= shape[d];
        if (t >= 0 && t < 16) count[t] += k;
    }
    int best = DS_DTYPE_F32;
    for (int t = 0; t < 16; t++)
        if (count[t] > count[best]) best = t;
    switch (best) {
    case DS_DTYPE_F16: return "fp16";
    case DS_DTYPE_BF16: return "bf16";
    case DS_DTYPE_F64: return "fp64";
    default: return "fp32";
    }
}

int ds_model_files_open(ds_err* e, const char* path, ds_weights* ws, ds_model_files* out) {
    memset(out, 0, sizeof *out);
    out->path = xstrdup(e, path);
    if (!out->path) return DS_ERR_OOM;
    int rc;
    if (ds_is_dir(path)) {
        rc = open_diffusers(e, path, ws, out);
    } else if (ds_is_pickle_checkpoint(e, path)) {
        rc = e->code;
    } else if (!ds_file_exists(path)) {
        rc = ds_errf(e, DS_ERR_IO, "%s: no such file or folder", path);
    } else {
        rc = open_single(e, path, ws, out);
    }
    if (rc) {
        ds_model_files_free(out);
        return rc;
    }
    out->arch_name = out->arch == DS_ARCH_SD2 ? "SD2.x" : "SD1.x";
    out->weight_dtype = dominant_dtype(ws);
    return DS_OK;
}

static void component_free(ds_component_files* c) {
    free(c->dir);
    free(c->config_path);
    free(c->config_json);
    for (int i = 0; i < c->n_weight_paths; i++) free(c->weight_paths[i]);
    free(c->weight_paths);
    free(c->variant);
    memset(c, 0, sizeof *c);
}

void ds_model_files_free(ds_model_files* mf) {
    if (!mf) return;
    free(mf->path);
    free(mf->model_index_json);
    component_free(&mf->unet);
    component_free(&mf->text_encoder);
    component_free(&mf->vae);
    component_free(&mf->scheduler);
    component_free(&mf->tokenizer);
    memset(mf, 0, sizeof *mf);
}

int ds_model_files_set_prediction(ds_err* e, ds_model_files* mf, const char* prediction) {
    char norm[16];
    if (!prediction || !normalize_prediction(prediction, norm))
        return ds_errf(e, DS_ERR_ARG, "prediction type '%s': expected 'epsilon' or 'v_prediction'",
                       prediction ? prediction : "(null)");
    snprintf(mf->prediction_type, sizeof mf->prediction_type, "%s", norm);
    if (mf->scheduler_is_default) {
        char* js = ds_default_scheduler_json(mf->arch, norm);
        if (!js) return ds_errf(e, DS_ERR_OOM, "out of memory");
        free(mf->scheduler.config_json);
        mf->scheduler.config_json = js;
    }
    return DS_OK;
}

int ds_model_files_unet_heads(const ds_model_files* mf, int level, int channels) {
    if (mf->n_unet_heads == 1) return mf->unet_heads[0];
    if (mf->n_unet_heads > 0 && level >= 0 && level < mf->n_unet_heads) return mf->unet_heads[level];
    if (mf->arch == DS_ARCH_SD2) return channels / 64 > 0 ? channels / 64 : 1;
    return 8;
}

int ds_model_files_text_heads(const ds_model_files* mf, int hidden) {
    if (mf->text_heads > 0) return mf->text_heads;
    return hidden / 64 > 0 ? hidden / 64 : 1;
}
