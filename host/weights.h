// weights.h — named model weights: safetensors files mapped in, bound to model fields, then
// materialized into one backend allocation (llm.c style) in a single pass.
//
// Names are diffusers state_dict paths with a component prefix:
//   "unet.down_blocks.0.resnets.0.conv1.weight", "text_encoder.text_model.final_layer_norm.weight",
//   "vae.decoder.conv_in.weight".
// Single-file (LDM) checkpoints are renamed into this space by the loader (ds_weights_alias).
//
// Usage: ds_weights_add_file(...) for each file; model code binds every field it needs with
// ds_weights_bind (shape checked immediately, error names the tensor and the file); then
// ds_weights_materialize converts fp16/bf16 → fp32, repacks conv weights, uploads, and fills
// every bound slot.
#ifndef DS_WEIGHTS_H
#define DS_WEIGHTS_H

#include "backend.h"
#include "safetensors.h"

typedef enum ds_weight_layout {
    DS_LAYOUT_AS_IS = 0,  // stored as in the file (linear (out, in), norms, biases, embeddings)
    DS_LAYOUT_CONV_OHWI,  // file (O, I, kh, kw) → backend (O, kh, kw, I) for NHWC convolution
} ds_weight_layout;

typedef struct ds_weights ds_weights;

ds_weights* ds_weights_create(ds_backend* be);
void ds_weights_free(ds_weights* ws);

// Maps a safetensors file; each tensor is entered as prefix + its name (prefix may be "").
int ds_weights_add_file(ds_weights* ws, ds_err* e, const char* path, const char* prefix);
// Number of files and access to them (the single-file loader renames their tensors).
int ds_weights_n_files(const ds_weights* ws);
const ds_st_file* ds_weights_file(const ds_weights* ws, int i);
// Adds `name` as a view of rows [row0, row0 + shape[0]) of a file tensor (row = product of the
// tensor's trailing dims), with the given shape. Used to rename LDM keys and split fused q/k/v.
int ds_weights_alias(ds_weights* ws, ds_err* e, const char* name, const ds_st_file* f,
                     const ds_st_tensor* t, int64_t row0, int ndim, const int64_t* shape);
// Drops every entry whose name starts with prefix (after renaming a single file).
void ds_weights_drop_prefix(ds_weights* ws, const char* prefix);

int ds_weights_has(const ds_weights* ws, const char* name);
// Shape of an entry (ndim returned, 0 if absent). Used for architecture detection.
int ds_weights_shape(const ds_weights* ws, const char* name, int64_t shape[8]);
// dtype of an entry (the file's), or -1.
int ds_weights_dtype(const ds_weights* ws, const char* name);
// Where an entry's data lives: the mapped file, the file's own tensor (its key name and dtype, e.g.
// "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight" for a single
// file) and the byte offset of the entry inside that tensor (nonzero only for row views of fused
// tensors). Returns 1 when found, 0 when absent. Used to write edited weights back under the
// file's own names (host/model_write.c).
int ds_weights_source(const ds_weights* ws, const char* name, const ds_st_file** file,
                      const ds_st_tensor** tensor, size_t* byte_offset);
// Counts parameters of entries starting with prefix (all entries for "").
int64_t ds_weights_count_params(const ds_weights* ws, const char* prefix);
// Iteration over entry names (for info and conversion checks).
int ds_weights_n_entries(const ds_weights* ws);
const char* ds_weights_entry_name(const ds_weights* ws, int i);

// Requests tensor `name` with the expected (diffusers) shape; trailing 1-dims are ignored when
// comparing (LDM stores 1×1 conv weights where diffusers has linears). *slot is filled by
// ds_weights_materialize. Errors name the tensor, both shapes and the file.
int ds_weights_bind(ds_weights* ws, ds_err* e, const char* name, int ndim, const int64_t* shape,
                    ds_weight_layout layout, const float** slot);
// printf-style name convenience: bindf(ws, e, slot, layout, ndim, shape, "unet.%s.weight", p)
int ds_weights_bindf(ds_weights* ws, ds_err* e, const float** slot, ds_weight_layout layout,
                     int ndim, const int64_t* shape, const char* fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 7, 8)))
#endif
    ;

// Withdraws the binding(s) that fill `slot` before ds_weights_materialize (a caller that reads
// only a few rows of a large table, see ds_weights_gather_rows); *slot stays NULL. Returns the
// number of bindings withdrawn.
int ds_weights_unbind(ds_weights* ws, const float** slot);
// Threads for the fp16/bf16 → fp32 conversion in ds_weights_materialize: 0 (the default) uses
// OpenMP's default team, 1 converts on the calling thread (memory-bound; on a loaded machine a
// second thread that cannot run stalls the whole team).
void ds_weights_set_threads(ds_weights* ws, int threads);
// Benchmarks without weight files (a GPU machine that cannot make the random model): from now on a
// bound tensor that no file holds is created with the bound shape and filled at materialize with
// deterministic random values (uniform, variance 1/fan_in; 1-d "weight" = 1, 1-d "bias" ≈ 0).
void ds_weights_synthesize(ds_weights* ws, uint64_t seed);

// Converts rows rows[0..n) of the 2-d tensor `name` (any float dtype of its file) to fp32 host
// memory out (n, cols), straight from the mapped file: a compact table for the ids actually used,
// bit-identical to the same rows of a materialized copy. Row indices are checked.
int ds_weights_gather_rows(const ds_weights* ws, ds_err* e, const char* name, const int32_t* rows,
                           int n, float* out);

// One allocation for all bound weights; converts, repacks, uploads, fills slots.
int ds_weights_materialize(ds_weights* ws, ds_err* e);
// Bytes of backend memory held by materialized weights.
size_t ds_weights_bytes(const ds_weights* ws);

#endif
