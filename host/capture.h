// capture.h — the attention capture behind include/diffscope/heatmap.h (internal view).
//
// ds_generate calls ds_capture_attach once the prompts are encoded; it resets the capture, records
// the run's geometry and prompt tokens and points run->capture at the capture's hooks. From then
// on ds_observe_probe_ex asks the hook (capture_attn in capture.c) for an accumulator on every
// attention call; the hook answers for the selected cross-attention layers and calls and the
// attention op adds weight·P into the returned buffer in the same pass (backend.h,
// ds_attn_capture). Buffers are allocated lazily, the first time the run reaches a layer (per
// stored call with per_call), from the model's backend, zeroed.
#ifndef DS_CAPTURE_H
#define DS_CAPTURE_H

#include "diffscope/heatmap.h"
#include "model.h"
#include "observe.h"

// One attn2 of the model (built at create).
typedef struct ds_cap_site {
    const char* path;        // the UNet's own path string (tb->path_attn2): compared by pointer first
    int kind;                // 0 down, 1 mid, 2 up
    int level;               // resolution level: the grid is latent >> level
    int index_in_block;      // position among the UNet block's transformer blocks (daam low_memory)
    int heads;
    int block_selected;      // the plan's block selectors (down/mid/up/prefix) accept it
    int decided;             // the hook has decided this run (selected or not)
    int layer;               // index into cap->layers when captured, else -1
} ds_cap_site;

// One captured layer.
typedef struct ds_cap_layer {
    char path[112];
    int h, w, Lq, Lk, heads, nh, factor;
    int64_t n;               // floats of one buffer: nb · nh · Lq · Lk
    float* agg;              // in-op running sum (aggregate without per_call), else NULL
    float** calls;           // per_call: one buffer per stored call (NULL until reached)
    int n_calls_cap;
    ds_attn_capture ac;      // handed to the attention op
} ds_cap_layer;

struct ds_capture {
    ds_model* m;
    ds_backend* be;
    ds_capture_plan plan;    // strings below are owned copies
    char* layers_sel;
    char* heads_sel;
    float* weights;          // n_call_weights copies
    uint64_t head_mask;      // bit h: head h (heads >= 64 always included by the op)
    int res_sel;             // the plan has "res:" selectors
    int n_sites;
    ds_cap_site* sites;
    // run geometry (ds_capture_attach)
    int attached;
    int B, batch_begin, batch_end, nb;
    int W, H, lat_h, lat_w;
    int latent_hw, daam_x;   // daam: 4096 or 9216, x = sqrt(latent_hw)
    int res_h, res_w;        // p2p: the kept grid
    int Lk;                  // context length seen at the first captured call
    int32_t* ids[2];         // token ids of [negative, prompt]: chunks[i] · 77 each
    int chunks[2], n_tok[2]; // chunks and total tokens (without BOS/EOS) of each side
    // captured layers and calls
    int n_layers, cap_layers;
    ds_cap_layer** layers;
    int n_calls, cap_calls;
    int* call_index;         // call number of each recorded call
    float* call_t;           // its timestep
    float* call_w;           // its weight
    int last_call;           // call number of the last recorded call (-1: none)
    size_t bytes;
    int failed;              // an allocation failed during the run
    char fail_msg[256];
    ds_capture_hooks hooks;
};

// Resets the capture for a ds_generate run and points run->capture at its hooks. B: batch of
// the UNet calls (2 with CFG); W×H: image size; p: the prompts.
int ds_capture_attach(ds_capture* cap, ds_err* e, ds_run* run, ds_model* m,
                      const ds_generate_params* p, int B, int W, int H);

// The geometry-and-hooks part of ds_capture_attach, for callers that drive ds_unet_forward
// themselves (bench/bench_unet.c --capture): no prompts, so no token ids (word lookups on this
// capture see none). run->capture points at the hooks afterwards.
int ds_capture_attach_unet(ds_capture* c, ds_err* e, ds_run* run, int B, int W, int H);

// Selector helpers shared with heatmap.c.
// 1 if `path` passes the block selectors of `sel` (NULL/"" → 1); *has_block / *has_res (optional)
// report which kinds sel contains. Returns -1 on a malformed selector (message in e).
int ds_cap_sel_match(ds_err* e, const char* sel, const char* path, int h, int w, int* has_block,
                     int* has_res);
// A host view of a layer's buffer: k < 0 the aggregate (derived from the stored calls when only
// those were kept), else stored call k. *data points into backend memory on the CPU backend (then
// *owned is NULL) or to a malloc'd copy (*owned == *data; free it).
int ds_cap_layer_host(const ds_capture* c, ds_err* e, int layer, int k, const float** data,
                      float** owned);
// Parses "0-3,6" into a mask (NULL/"" → all ones). DS_ERR_ARG on bad input.
int ds_cap_parse_heads(ds_err* e, const char* spec, uint64_t* mask);

#endif
