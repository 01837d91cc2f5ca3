// localize.h — where a concept lives in the UNet (`diffscope localize`, docs/localization.md):
//
//   a. FFN concept neurons, ConceptPrune-style: per-neuron norms of every transformer block's GEGLU
//      output per UNet call, accumulated while the model runs (fixed buffers, no activation storage),
//      Wanda scores |W_ij|·‖X_j‖ on ff.net.2, per-row top-k where the concept beats the base prompts,
//      union over the first τ calls → neurons.json (the format `diffscope prune` reads);
//   b. layers, LocoGen-style: sliding windows of cross-attention layers whose conditional K/V come from
//      a neutral prompt, scored by how much the concept disappears;
//   c. heads: each cross-attention head ablated (its conditional-half probabilities zeroed), scored the
//      same way; and heads ranked by their attention mass on the concept tokens;
//   d. timesteps: the neutral-context swap at every cross-attention layer during one window of calls.
//
// Everything runs through the public node observer (DS_NODE_FFN_ACT, DS_NODE_ATTN_CONTEXT,
// DS_NODE_ATTN_PROBS): ds_loc_run is one ds_generate with the localization observer on.
#ifndef DS_LOCALIZE_H
#define DS_LOCALIZE_H

#include "model.h"

// ---- the model's sites -------------------------------------------------------------------------

typedef struct ds_loc_ffn {       // one transformer block's feed-forward
    char block[112];              // "down_blocks.0.attentions.0.transformer_blocks.0"
    const char* node;             // its DS_NODE_FFN_ACT path ("<block>.ff")
    int C, F;                     // ff.net.2 weight is (C, F): neuron j is input column j
    const float* w2;              // ff.net.2 weight (backend memory)
    int64_t off;                  // first neuron of this block in the concatenated (total_F) arrays
} ds_loc_ffn;

typedef struct ds_loc_attn {      // one cross-attention layer (attn2)
    const char* path;             // "down_blocks.0.attentions.0.transformer_blocks.0.attn2"
    char label[24];               // short: "d0.a0.t0", "m.a0.t0", "u1.a2.t0"
    int heads;
} ds_loc_attn;

typedef struct ds_loc_sites {
    int n_ffn, n_attn, max_heads;
    ds_loc_ffn* ffn;              // forward order (down, mid, up)
    ds_loc_attn* attn;            // forward order; attn[i] and ffn[i] are the same transformer block
    int64_t total_F;
} ds_loc_sites;

int ds_loc_sites_init(ds_err* e, const ds_model* m, ds_loc_sites* s);
void ds_loc_sites_free(ds_loc_sites* s);
// Short label of a block path: "down_blocks.1.attentions.0.transformer_blocks.0" → "d1.a0.t0".
void ds_loc_short_label(const char* path, char* out, size_t cap);
// 1 if attn2 layer `a` matches one of the comma-separated selectors (see ds_loc_params.head_layers).
int ds_loc_layer_match(const ds_loc_attn* a, const char* selectors);
// The default LocoGen window for a model of n_attn attn2 layers: max(1, round(3·n_attn/16)).
int ds_loc_default_window(int n_attn);

// ---- a. neuron statistics (ConceptPrune) -------------------------------------------------------
//
// For UNet call c, block b, neuron j and prompt side s (0 = with the concept, 1 = without):
//   sumsq[s][c][off_b + j] = Σ_prompts Σ_rows (h_rj / ‖h_r‖)²
// over the rows r (spatial tokens) of the conditional half of the GEGLU output h = a ⊙ GELU(g)
// (rows with ‖h_r‖ = 0 add 0, as torch's F.normalize). The per-prompt column norm is
//   ‖X_j‖ = sqrt(sumsq / P_s)   (P_s: prompts of side s)
// — ConceptPrune's column norm (sqrt of the summed squares) divided by sqrt(P_s), so sides with
// different prompt counts compare fairly; with equal counts the selection is exactly ConceptPrune's.

typedef struct ds_loc_neurons {
    const ds_loc_sites* sites;    // not owned
    int n_calls;
    float* timesteps;             // (n_calls): the model timestep of each call
    int n_prompts[2];             // prompts accumulated per side
    double* sumsq[2];             // (n_calls, total_F) per side
    int64_t* rows[2];             // (n_calls, n_ffn): rows accumulated per side
    // selection (ds_loc_neurons_select)
    double ratio;                 // top ⌊ratio·F⌋ columns per output row
    int tau;                      // union over calls [0, tau)
    double union_min;             // a (row, col) is kept when selected at > union_min·tau of those calls
    int64_t* n_selected;          // (n_calls, n_ffn): selected (row, col) pairs at each call (every call)
    uint8_t** count;              // per block (C, F): calls < tau selecting (row, col), saturating at 255
    uint8_t** ncalls_col;         // per block (F): calls < tau at which column j was selected in any row
    uint8_t** keep;               // per block (C, F): 1 = in the final union
    int64_t* kept;                // per block: kept (row, col) pairs
} ds_loc_neurons;

int ds_loc_neurons_init(ds_err* e, ds_loc_neurons* nr, const ds_loc_sites* s, int n_calls,
                        const float* timesteps);
void ds_loc_neurons_free(ds_loc_neurons* nr);
// ‖X_j‖ for side s at call c, block b: out (F) doubles.
void ds_loc_neurons_norms(const ds_loc_neurons* nr, int side, int call, int block, double* out);
// The selection at one call and block: W (C, F) host fp32 = ff.net.2's weight; mask (C, F) gets 1
// where (row i, column j) is among row i's top k = ⌊ratio·F⌋ of S_c = |W_ij|·‖X_j‖(with) (ties: the
// lower index first, as a stable descending sort) AND S_c > S_b = |W_ij|·‖X_j‖(without).
// Returns the number selected.
int64_t ds_loc_select_call(const ds_loc_neurons* nr, const float* W, int block, int call, double ratio,
                           uint8_t* mask);
// Runs the selection at every call (n_selected) and the union over calls [0, tau) (count, keep).
int ds_loc_neurons_select(ds_err* e, ds_loc_neurons* nr, const ds_model* m, double ratio, int tau,
                          double union_min);
// neurons.json as docs/editing.md defines it ("diffscope-neurons", version 1): per block
// in_features F, out_features C, "rows": {"i": [columns]} of the union; blocks without a kept
// neuron are left out. `extra_json` (may be NULL): members appended verbatim to the top object
// (provenance, e.g. "\"model\": \"...\", \"concept\": \"...\"").
int ds_loc_neurons_json(ds_err* e, const ds_loc_neurons* nr, const char* arch, const char* extra_json,
                        char** out);

// ---- one observed generation --------------------------------------------------------------------

enum { DS_LOC_IV_NONE = 0, DS_LOC_IV_SWAP = 1, DS_LOC_IV_HEAD = 2 };

typedef struct ds_loc_iv {        // an intervention
    int kind;                     // DS_LOC_IV_*
    int layer_begin, layer_end;   // cross-attention layers [begin, end) (indices into sites.attn)
    int head;                     // DS_LOC_IV_HEAD: the ablated head of layer layer_begin
    int call_begin, call_end;     // calls [begin, end); end <= 0: to the last call
} ds_loc_iv;

typedef struct ds_loc_run_in {
    const char* prompt;
    const char* negative;         // "" when NULL
    int steps;
    float guidance;
    uint64_t seed;
    ds_sampler sampler;
    int width, height;
    const ds_loc_iv* iv;          // NULL: none
    const float* neutral;         // SWAP: the neutral prompt's context rows (Lctx, D) (host)
    int64_t neutral_rows;
    ds_loc_neurons* acc;          // optional: accumulate FFN statistics into side acc_side
    int acc_side;
    const int* concept_rows;      // optional: context rows of the concept tokens → mass
    int n_concept_rows;
    double* mass;                 // with concept_rows: (n_attn, max_heads, n_calls), zeroed here
    uint8_t* modified;            // optional, same shape: 1 where the intervention changed the cell
    const ds_observer* chain;     // optional: sees every node after the localization observer
    float* out_latents;           // optional (C·h·w)
} ds_loc_run_in;

// The localization observer of one run (ds_loc_run builds it; exposed for tests and for chaining
// it into other runs). `o` must outlive the run; `in` and `s` too.
typedef struct ds_loc_obs {
    const ds_loc_sites* s;
    const ds_loc_run_in* in;
    int n_calls;
    const char* last_attn_path;
    int last_attn;
    const char* last_ffn_path;
    int last_ffn;
    char msg[512];                // why the observer cancelled the run
} ds_loc_obs;
ds_observer ds_loc_observer(ds_loc_obs* o, const ds_loc_sites* s, int n_calls, const ds_loc_run_in* in);

// The concept mass of a cell (layer l, head h, call c): (1/Lq) Σ_query Σ_{t ∈ concept rows} P[q, t]
// of the conditional half, from the DS_NODE_ATTN_PROBS tiles (before any ablation of the tile).
// The image is returned in *img (ds_image_free it).
int ds_loc_run(ds_context* ctx, ds_model* m, const ds_loc_sites* s, int n_calls, const ds_loc_run_in* in,
               ds_image* img);

// The conditional context of `prompt` as ds_generate builds it with `negative` and CFG on/off:
// (rows, D) host fp32, malloc'd.
int ds_loc_encode(ds_err* e, ds_model* m, const char* prompt, const char* negative, int cfg, float** out,
                  int64_t* rows);

// The number of UNet calls a run makes and their timesteps (malloc'd).
int ds_loc_calls(ds_err* e, const ds_model* m, ds_sampler sampler, int steps, int* n_calls, float** timesteps);

// ---- the whole localization ---------------------------------------------------------------------

enum { DS_LOC_NEURONS = 1, DS_LOC_LAYERS = 2, DS_LOC_HEADS = 4, DS_LOC_TIMESTEPS = 8, DS_LOC_ALL = 15 };
enum { DS_LOC_RANK_AUTO = 0, DS_LOC_RANK_MASS = 1, DS_LOC_RANK_IMAGE = 2, DS_LOC_RANK_DETECTOR = 3 };

// Concept presence in a generated image, in [0, 1] (e.g. the testbed model's detector): the
// detector-based score is presence(baseline) − presence(intervention). Return DS_OK or an error.
typedef int (*ds_loc_detector_fn)(void* user, const uint8_t* rgb, int width, int height, const char* prompt,
                                  const char* concept, float* presence);
typedef void (*ds_loc_log_fn)(void* user, const char* msg);
// After each generation: done of total runs; `what` names it. Nonzero cancels.
typedef int (*ds_loc_progress_fn)(void* user, int done, int total, const char* what);

typedef struct ds_loc_params {
    const char* concept;
    const char* const* with;      int n_with;      // prompts with the concept
    const char* const* without;   int n_without;   // base prompts
    const char* const* neutral;   int n_neutral;   // LocoGen's neutral prompts (cycled); 0: the base prompts
    const char* negative;         // "" by default
    int parts;                    // DS_LOC_* bits (DS_LOC_ALL)
    int steps;                    // 20
    float guidance;               // 7.5
    uint64_t seed;                // 0: every prompt uses this seed
    int seed_per_prompt;          // 0: the same seed for all (ConceptPrune); 1: prompt i of each side starts
                                  // from seed + i (its interventions too), so rankings average over the noise
    ds_sampler sampler;
    int width, height;            // 0: native
    double ratio;                 // 0.02 (objects); 0.01 for styles
    int tau;                      // calls in the union; 0: max(1, round(0.2·calls))
    double union_min;             // 0: a plain union
    int window;                   // LocoGen window, cross-attention layers; 0: LocoGen's 3 of SD1.x's 16 scaled to
                                  // the model's depth, max(1, round(3·L/16)) (SD1.x/2.x 3, 7 layers 1)
    int timestep_window;          // calls per timestep window; 0: ceil(calls / 5)
    int head_prompts;             // with-prompts used for head ablation; 0: all (default 2)
    const char* head_layers;      // heads of these attn2 layers only: comma-separated module-path prefixes
                                  // ("up_blocks.1") or short labels / their prefixes ("u1", "u1.a0.t0");
                                  // NULL or "": every layer
    int rank_by;                  // DS_LOC_RANK_*
    ds_loc_detector_fn detector;  void* detector_user;
    ds_loc_log_fn log;            void* log_user;
    ds_loc_progress_fn progress;  void* progress_user;
} ds_loc_params;

void ds_loc_params_init(ds_loc_params* p);

typedef struct ds_loc_score {
    char label[128];
    int layer_begin, layer_end, head, call_begin, call_end;
    double mass_drop;      // mean over prompts of 1 − M_iv(S)/M_base(S); NaN when S is empty
    double image_change;   // mean over prompts of mean |pixel_iv − pixel_base| / 255
    double detector_drop;  // mean over prompts of presence_base − presence_iv; NaN without a detector
    double score;          // the ranking metric (rank_by)
    // standard errors of those means over the prompts (sample sd / √n), so a reader can tell a ranking
    // from a tie; NaN below 2 prompts
    double mass_drop_se, image_change_se, detector_drop_se, score_se;
    int rank;              // 1 = where the concept disappears most
    int n_prompts;
    double* per_prompt;        // (n_with, 3): mass_drop, image_change, detector_drop on each concept prompt
                               // (NaN where not scored: heads beyond head_prompts); NULL outside a result
} ds_loc_score;

typedef struct ds_loc_result {
    ds_loc_sites sites;
    int n_calls;
    float* timesteps;
    int tau, timestep_window, window, rank_by;
    ds_loc_neurons neurons;       // parts & DS_LOC_NEURONS
    int has_neurons;
    double* head_mass;            // (n_attn, max_heads): baseline concept mass, mean over prompts and calls
    double* head_mass_se;         // (n_attn, max_heads): its standard error over the prompts (NaN below 2)
    double* call_mass;            // (n_calls): baseline concept mass, mean over prompts, layers and heads
    int n_with;                   // concept prompts (the rows of the per-prompt arrays)
    double* prompt_layer_mass;    // (n_with, n_attn): each prompt's baseline concept mass per attn2 layer,
                                  // mean over its heads and the calls (paired comparisons of layers)
    double* prompt_scores;        // (n_windows + n_heads + n_tsteps, n_with, 3): what the scores' per_prompt
                                  // point into
    int n_windows;  ds_loc_score* windows;
    int n_heads;    ds_loc_score* heads;       // ablations, layer-major
    int n_tsteps;   ds_loc_score* tsteps;
    int has_detector;
    double detector_base;         // mean baseline presence
    int runs;
    double seconds;
} ds_loc_result;

// Runs everything `p->parts` asks for. Errors name the prompt or setting at fault.
int ds_localize(ds_context* ctx, ds_model* m, const ds_loc_params* p, ds_loc_result* out);
void ds_loc_result_free(ds_loc_result* r);
// Ranks scores (sets score and rank) by p's metric; NaN last.
void ds_loc_rank(ds_loc_score* s, int n, int rank_by, int has_detector);

// ---- default prompts ----------------------------------------------------------------------------

enum { DS_LOC_KIND_OBJECT = 0, DS_LOC_KIND_STYLE = 1 };
#define DS_LOC_MAX_TEMPLATES 20
// ConceptPrune-style prompt pairs around the concept: objects "a {concept} in a {scene}" / "a {scene}",
// styles "a {thing} in the style of {concept}" / "a photo of a {thing}"; n ≤ DS_LOC_MAX_TEMPLATES.
// *with / *without: n malloc'd strings each (free each and the arrays).
int ds_loc_templates(ds_err* e, const char* concept, int kind, int n, char*** with, char*** without);

#endif
