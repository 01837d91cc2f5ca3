// observe.h — how model code reports named intermediate tensors to the user's ds_observer.
//
// Every forward function takes a `ds_run*` (NULL allowed): the run's backend, arena, error, the
// observer and the current denoising step. Model code calls ds_observe() at each named node;
// when nobody wants the node it costs one function call. For attention probabilities the model
// asks ds_observe_probe() for a probe to hand to be->attention, so probabilities are delivered in
// row tiles from inside the attention op, never as a whole (Lq × Lk) tensor.
#ifndef DS_OBSERVE_H
#define DS_OBSERVE_H

#include "arena.h"

// Attention capture (heatmaps): asked once per attention call, before the op runs, with the
// call's geometry; returns the accumulator the op should add into, or NULL. Implemented by the
// capture module (host/capture.c); the model code never sees it — ds_observe_probe does.
typedef struct ds_capture_hooks {
    const ds_attn_capture* (*attn)(void* user, const char* path, int Lq, int Lk, int heads,
                                   int h, int w, int step, float timestep);
    void* user;
} ds_capture_hooks;

// Backend-side FFN neuron statistics (localization): for each FFN activation (B, L, F) whose
// (path, step) the hook wants, the backend adds the column sums and sums of squares of the last
// (conditional) batch's L rows, each row L2-normalized, into sum / sumsq + offset (alloc_f32
// memory), so the activations never leave the device (on CUDA, downloading them per block and
// call would cost more than the step itself).
typedef struct ds_ffn_stats_hook {
    // offset of (path, step)'s F columns in sum / sumsq, or -1 when not wanted
    int64_t (*slot)(void* user, const char* path, int step, int64_t rows, int64_t F);
    void* user;
    float* sum;    // backend alloc_f32 memory
    float* sumsq;
} ds_ffn_stats_hook;

typedef struct ds_run {
    ds_backend* be;
    ds_arena* arena;
    ds_err* err;
    const ds_observer* observer;  // may be NULL
    int step;                     // -1 outside the denoising loop
    float timestep;
    int cond_batch_begin;         // first batch index of the conditional half (CFG), 0 without CFG
    int cancelled;                // set when an observer returned < 0
    const ds_capture_hooks* capture;  // may be NULL
    const ds_ffn_stats_hook* ffn_stats;  // may be NULL
    // scratch for probes
    const char* probe_path;
    int probe_h, probe_w;
} ds_run;

// 1 if the observer wants nodes of this path/kind (cheap; call before computing optional nodes).
int ds_observe_wants(const ds_run* r, const char* path, ds_node_kind kind);
// Reports tensor t (backend memory) as node `path`. If the observer modifies it, the change is
// copied back. Returns DS_OK, or DS_ERR_CANCELLED when the observer asked to stop.
int ds_observe(ds_run* r, const char* path, ds_node_kind kind, ds_tensor* t);
// Fills *probe for an attention call at `path` whose queries form an h×w grid (h = Lq, w = 1 for
// sequences) with Lk keys and `heads` heads, and returns it; NULL when neither the observer wants
// DS_NODE_ATTN_PROBS at `path` nor the capture hooks want this call.
const ds_attn_probe* ds_observe_probe_ex(ds_run* r, const char* path, int h, int w, int Lk,
                                         int heads, ds_attn_probe* probe);
// The same without the capture geometry (no capture): kept for callers that only observe.
const ds_attn_probe* ds_observe_probe(ds_run* r, const char* path, int h, int w,
                                      ds_attn_probe* probe);

#endif
