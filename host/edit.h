// edit.h — closed-form concept editing of the UNet's cross-attention (UCE, TIME) and neuron
// pruning (ConceptPrune's output), solved in fp64 with LAPACK. See docs/editing.md.
//
// Every edit here is a least-squares update of a projection W₀ (out × d) that reads text-encoder
// outputs k (d):
//
//   W' = argmin Σ sᵢ‖W kᵢ − vᵢ*‖² + λ‖W − W₀‖²  =  (λW₀ + Σ sᵢ vᵢ* kᵢᵀ)(λI + Σ sᵢ kᵢ kᵢᵀ)⁻¹
//
// When every target is vᵢ* = W₀ tᵢ (UCE erase / moderate / debias / preserve, TIME) this is
// W' = W₀ M with ONE M = (λI + Σ s t kᵀ)(λI + Σ s k kᵀ)⁻¹ for every to_k / to_v of every
// cross-attention block: the shared solve. We never form M itself unless it is cheaper:
//   M − I = Σᵢ sᵢ (tᵢ − kᵢ) (B⁻¹kᵢ)ᵀ = Uᵀ Q,  B = λI + Σ s k kᵀ,  U = S(T − K),  Q = K B⁻¹,
// so ΔW = W' − W₀ = (W₀ Uᵀ) Q costs 2·out·d·n per matrix (n = number of keys), versus out·d·d
// with M formed. One d × d Cholesky solve (dposv) serves all matrices; cond(B) comes from the
// eigenvalues (dsyev) of B, or of the n × n Gram matrix S^½ K Kᵀ S^½ when n < d (B's spectrum is
// λ + those eigenvalues, and λ for the remaining d − n directions).
//
// The model is opened with only its text encoder materialized: the UNet matrices are read straight
// from the mapped files (so editing SD1.5 needs ~0.5 GB of RAM, not 4 GB).
#ifndef DS_EDIT_H
#define DS_EDIT_H

#include "model.h"
#include "model_files.h"

// A solve whose condition number exceeds this is regularized: λ is raised until cond(B) equals it
// (fp64 then still gives the update to ~1e-6 relative).
#define DS_EDIT_MAX_COND 1e10

typedef void (*ds_edit_log_fn)(void* user, const char* msg);

// ---- the model opened for editing --------------------------------------------------------------

typedef struct ds_edit_model {
    ds_model* m;          // text encoder + tokenizer only; m->ws holds every tensor of the input
    ds_model_files mf;    // the input's files and format, kept to write the result back
    int n_blocks;         // UNet transformer blocks with cross-attention (attn2.to_k / to_v)
    char** blocks;        // their paths in module order, "down_blocks.1.attentions.0.transformer_blocks.0"
} ds_edit_model;

int ds_edit_model_open(ds_err* e, const char* path, ds_edit_model* em);  // on the CPU
// On ctx's device (ds_context_backend: --device / --precision / $DIFFSCOPE_DEVICE; fp32 storage on a GPU
// by default); ctx NULL: the CPU. On CUDA the text encoder runs there and the shared solve uses cuSOLVER.
int ds_edit_model_open_on(ds_err* e, ds_context* ctx, const char* path, ds_edit_model* em);
void ds_edit_model_close(ds_edit_model* em);

// Reads tensor `name` of the store (any float dtype of the file) as fp64, *out malloc'd.
// 2-d tensors only (rows × cols); other shapes are DS_ERR_FORMAT.
int ds_edit_read_matrix(ds_err* e, const ds_weights* ws, const char* name, double** out,
                        int64_t* rows, int64_t* cols);

// ---- text keys ---------------------------------------------------------------------------------

// Encodes n prompts, each one 77-position chunk exactly as diffusers' tokenizer(text,
// padding="max_length", max_length=77) + text_encoder(...)[0] (last layer, final layer norm):
// out (n, 77, D) fp64. Only the first `positions` (1..77) positions are computed and written: the
// text encoder is causal, so a prefix of the chunk gives the same values at those positions (to
// fp32 rounding, ~1e-6) for a fraction of the work (UCE needs positions up to the subject token). A prompt longer than
// 75 tokens is DS_ERR_ARG naming it.
int ds_edit_encode(ds_edit_model* em, ds_err* e, const char* const* prompts, int n, int positions,
                   double* out);

// The key position of a concept: its last subject token, in the 77-position sequence (BOS = 0).
//   * the last token of the last word that has a letter or digit (UCE's attention_mask.sum() − 2,
//     i.e. the prompt's last token, whenever the prompt does not end in punctuation);
//   * a prompt without such a word: its last token; the empty prompt: 0, the BOS position.
// split_words > 0 when some word is split into several BPE pieces; `pieces` then names them
// ("'mckernan' = mc + kernan</w>"). n_tokens: tokens without BOS/EOS.
typedef struct ds_edit_subject {
    int pos, n_tokens, split_words;
    char pieces[512];
    char last_piece[64];
} ds_edit_subject;
int ds_edit_subject_token(const ds_tokenizer* t, ds_err* e, const char* text, ds_edit_subject* out);

// TIME's token alignment: for each of the 77 positions of `src`, the position of `dst` whose
// embedding is its target. BOS + src tokens + EOS are matched in order to the next equal token of
// BOS + dst tokens + EOS ("an" counts as "a"); the positions after src's EOS continue after dst's
// EOS, and the rest point at 76. A src token missing from dst is DS_ERR_ARG naming it.
int ds_edit_time_align(const ds_tokenizer* t, ds_err* e, const char* src, const char* dst, int idx[77]);

// ---- keys and the shared solve -----------------------------------------------------------------

// n (key, target, scale) triples of width d: the targets are W₀·t for every matrix.
typedef struct ds_edit_keys {
    int d, n, cap;
    double* K;      // (n, d)
    double* T;      // (n, d)
    double* s;      // (n)
    char** label;   // (n) what each key is, for messages ("erase 'cat' → ''", "preserve 'dog'")
    double lambda;
    ds_backend* solver;  // where the shared solve's d × d Cholesky runs: its solve_spd_f64 (cuSOLVER on
                         // the CUDA backend); NULL or a backend without one: LAPACK on the host
} ds_edit_keys;
void ds_edit_keys_init(ds_edit_keys* k, int d, double lambda);
int ds_edit_keys_add(ds_edit_keys* k, ds_err* e, const double* key, const double* target, double s,
                     const char* label);
void ds_edit_keys_free(ds_edit_keys* k);

typedef struct ds_edit_solution {
    int d, n;
    double lambda_requested, lambda;  // λ asked for, λ used (larger when regularized)
    double cond_requested, cond;      // cond₂(λI + Σ s k kᵀ) before / after regularization (inf: singular)
    int regularized;
    int explicit_m;                   // 1: Dm = M − I formed (d × d); 0: low-rank U, Q
    const char* solver;               // what solved it: "LAPACK dposv", "LAPACK dgesv" or the backend's
    double* Dm;                       // (d, d) row-major when explicit_m
    double* U;                        // (n, d) rows sᵢ(tᵢ − kᵢ)
    double* Q;                        // (n, d) rows (B⁻¹kᵢ)ᵀ
} ds_edit_solution;

// Solves once for all matrices. force_explicit: form M − I even when low rank is cheaper.
int ds_edit_shared_solve(ds_err* e, const ds_edit_keys* k, int force_explicit, ds_edit_solution* out);
// ΔW = W₀ (M − I) for one matrix W₀ (out, d) row-major → dW (out, d).
void ds_edit_shared_apply(const ds_edit_solution* s, const double* W0, int64_t out, double* dW);
void ds_edit_solution_free(ds_edit_solution* s);

// The general closed form for one matrix, targets given as outputs: V (n, out) row-major,
// W' = (λW₀ + Σ s v kᵀ)(λI + Σ s k kᵀ)⁻¹ → Wn (out, d). λ is regularized like the shared solve;
// *cond (optional) receives the condition number used. This is the per-layer path; with
// V = T·W₀ᵀ it equals the shared solve.
int ds_edit_solve_layer(ds_err* e, const double* W0, int64_t out, const ds_edit_keys* k,
                        const double* V, double* Wn, double* cond, double* lambda_used);

// Condition number cond₂(λI + Σ s k kᵀ) (scales must be ≥ 0); inf when singular.
double ds_edit_condition(const ds_edit_keys* k, double lambda);

// ---- recipes -----------------------------------------------------------------------------------

typedef struct ds_uce_params {
    const char* const* concepts;  int n_concepts;  // erased (or debiased) concepts
    const char* const* guides;    int n_guides;    // 0: "" for every concept; 1: for all; else one each
    const char* const* preserve;  int n_preserve;
    double lambda;                // 0.5
    double erase_scale;           // 1
    double preserve_scale;        // 1
    int all_tokens;               // paper-era keys: every position from the subject token on
    // in-context keys (edit_context.c): prompts using the concepts, each a template with one "{}" or a
    // prompt naming a concept; the keys are then every position from the concept on (MACE's refinement)
    const char* const* contexts;  int n_contexts;
    // debias (UCE §debias): target W₀(c + Σⱼ δ_cj aⱼ), δ = desired − measured attribute ratio
    const char* const* attributes; int n_attributes;
    const double* deltas;         // (n_concepts, n_attributes), NULL: not a debias
    ds_edit_log_fn log; void* log_user;  // warnings (split words, a concept also preserved, ...)
} ds_uce_params;
void ds_uce_params_init(ds_uce_params* p);
int ds_uce_keys(ds_edit_model* em, ds_err* e, const ds_uce_params* p, ds_edit_keys* out);
// The in-context part alone (ds_uce_keys calls it when n_contexts > 0); appends to out.
int ds_uce_context_keys(ds_edit_model* em, ds_err* e, const ds_uce_params* p, ds_edit_keys* out);

typedef struct ds_time_params {
    const char* src;   // "a pack of roses"
    const char* dst;   // "a pack of blue roses" (src with words inserted)
    int augment;       // 1: also "A photo of / An image of / A picture of" + both (TIME's --with_augs)
    double lambda;     // 0.1
    ds_edit_log_fn log; void* log_user;
} ds_time_params;
void ds_time_params_init(ds_time_params* p);
int ds_time_keys(ds_edit_model* em, ds_err* e, const ds_time_params* p, ds_edit_keys* out);

// ---- running an edit ---------------------------------------------------------------------------

enum { DS_EDIT_TO_K = 1, DS_EDIT_TO_V = 2 };

typedef struct ds_edit_layer {
    char name[192];        // store name, "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight"
    int64_t rows, cols;
    float* delta;          // ΔW (rows, cols), fp32
    double norm_w0, norm_delta;  // Frobenius norms (fp64)
    double cond;           // condition number of this matrix's solve (-1: no solve, e.g. pruning)
    int64_t changed;       // elements with ΔW ≠ 0
} ds_edit_layer;

typedef struct ds_edit_result {
    int n;
    ds_edit_layer* layers;
    ds_edit_solution sol;  // the shared solve (per-layer path: only λ and cond filled; pruning: empty)
    int per_layer;
    float* block;          // when set, every layer's delta lives in this one allocation
} ds_edit_result;

// Edits attn2.to_k and/or attn2.to_v (which = DS_EDIT_TO_K | DS_EDIT_TO_V) of every cross-attention
// block with the keys. per_layer: the general solve per matrix instead of the shared one.
int ds_edit_run(ds_edit_model* em, ds_err* e, const ds_edit_keys* k, int which, int per_layer,
                ds_edit_result* out);
void ds_edit_result_free(ds_edit_result* r);

// ConceptPrune: zeroes the neurons listed in a neurons.json (format in docs/editing.md) in
// ff.net.2.weight of the named transformer blocks: ΔW = −W₀ on those entries. Errors name the
// file and the mismatch (unknown block, other architecture, in/out features, index range).
int ds_prune_run(ds_edit_model* em, ds_err* e, const char* neurons_path, ds_edit_result* out);

#endif
