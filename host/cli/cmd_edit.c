// cmd_edit.c — `diffscope erase | edit | prune | apply`: closed-form concept editing (UCE, TIME),
// neuron pruning and delta application, writing the result in the input's own format or as a
// delta file. See docs/editing.md.
#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "args.h"
#include "cli.h"
#include "common.h"
#include "edit.h"
#include "model_write.h"

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

// ---- small helpers -----------------------------------------------------------------------------

typedef struct strlist {
    int n, cap;
    char** s;
} strlist;

static void sl_push(strlist* l, const char* s, size_t len) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 8;
        l->s = realloc(l->s, sizeof(char*) * (size_t)l->cap);
        if (!l->s) { fprintf(stderr, "diffscope: out of memory\n"); exit(1); }
    }
    l->s[l->n++] = strndup(s, len);
}

static void sl_free(strlist* l) {
    for (int i = 0; i < l->n; i++) free(l->s[i]);
    free(l->s);
    memset(l, 0, sizeof *l);
}

// Splits on `sep`, trimming spaces around items (like UCE's str.strip()); "" gives one empty item.
static void sl_split(strlist* l, const char* text, char sep) {
    const char* p = text;
    for (;;) {
        const char* q = strchr(p, sep);
        const char* end = q ? q : p + strlen(p);
        const char* a = p;
        while (a < end && isspace((unsigned char)*a)) a++;
        const char* b = end;
        while (b > a && isspace((unsigned char)b[-1])) b--;
        sl_push(l, a, (size_t)(b - a));
        if (!q) break;
        p = q + 1;
    }
}

static int parse_double(const char* cmd, const char* flag, const char* text, double lo, double hi, double* out) {
    char* end;
    double x = strtod(text, &end);
    if (end == text || *end || !isfinite(x) || x < lo || x > hi) {
        fprintf(stderr, "diffscope %s: --%s expects a number between %g and %g, got '%s'\n", cmd, flag, lo, hi, text);
        return 0;
    }
    *out = x;
    return 1;
}

typedef struct cli_log {
    const char* cmd;
    int quiet;
} cli_log;

static void log_cb(void* user, const char* msg) {
    const cli_log* l = user;
    // warnings are always shown; notes only without --quiet
    if (l->quiet && strncmp(msg, "warning", 7) != 0) return;
    fprintf(stderr, "diffscope %s: %s\n", l->cmd, msg);
}

static const char* resolve_model(const char* cmd, const char* model, int quiet) {
    if (model) return model;
    const char* d = cli_default_model();
    if (!d) {
        fprintf(stderr, "diffscope %s: no --model given and the embedded default model (models/default/) is not built yet; "
                        "pass --model PATH, e.g. --model tests/fixtures/sd1_tiny\n", cmd);
        return NULL;
    }
    if (!quiet) fprintf(stderr, "using the embedded default model %s\n", d);
    return d;
}

// Validates --out before any work: the result is a folder for a diffusers input (unless delta_only).
static int check_out(const char* cmd, const char* model, const char* out, int delta_only) {
    ds_err e = {0};
    int folder = !delta_only && ds_is_dir(model);
    if (ds_check_output(&e, model, out, folder, "--out") != DS_OK) {
        fprintf(stderr, "diffscope %s: %s\n", cmd, e.msg);
        return 0;
    }
    return 1;
}

static int parse_matrices(const char* cmd, const char* s, int* which) {
    if (strcmp(s, "kv") == 0 || strcmp(s, "to_k,to_v") == 0 || strcmp(s, "k,v") == 0) *which = DS_EDIT_TO_K | DS_EDIT_TO_V;
    else if (strcmp(s, "k") == 0 || strcmp(s, "to_k") == 0) *which = DS_EDIT_TO_K;
    else if (strcmp(s, "v") == 0 || strcmp(s, "to_v") == 0) *which = DS_EDIT_TO_V;
    else {
        fprintf(stderr, "diffscope %s: --matrices expects kv, k or v (attn2.to_k and/or attn2.to_v), got '%s'\n", cmd, s);
        return 0;
    }
    return 1;
}

// ---- reporting and writing ---------------------------------------------------------------------

static void print_table(const ds_edit_result* r, const ds_edit_keys* k, const char* method) {
    if (k) {
        const ds_edit_solution* s = &r->sol;
        if (!r->per_layer)
            printf("%s: shared solve (one %d×%d system for all %d matrices), %d keys, λ = %g, cond(λI + Σ s k kᵀ) = %.4g, fp64 %s\n",
                   method, k->d, k->d, r->n, k->n, s->lambda, s->cond, s->solver ? s->solver : "(no solve: no keys)");
        else
            printf("%s: per-layer solve (%d %d×%d systems), %d keys, λ = %g, cond(λI + Σ s k kᵀ) = %.4g, fp64 LAPACK\n", method, r->n, k->d, k->d,
                   k->n, r->sol.lambda, r->sol.cond);
    } else {
        printf("%s: %d matrices\n", method, r->n);
    }
    printf("%-72s %11s %11s %11s %10s %10s\n", "matrix", "shape", "|W0|_F", "|dW|_F", "|dW|/|W0|", k ? "cond" : "zeroed");
    for (int i = 0; i < r->n; i++) {
        const ds_edit_layer* l = &r->layers[i];
        char shape[32];
        snprintf(shape, sizeof shape, "%lldx%lld", (long long)l->rows, (long long)l->cols);
        printf("%-72s %11s %11.5g %11.5g %10.3e ", l->name, shape, l->norm_w0, l->norm_delta,
               l->norm_w0 > 0 ? l->norm_delta / l->norm_w0 : 0.0);
        if (k) printf("%10.4g\n", l->cond);
        else printf("%10lld\n", (long long)l->changed);
    }
}

static void warn_solution(const char* cmd, const ds_edit_result* r, const ds_edit_keys* k) {
    if (!k) return;
    const ds_edit_solution* s = &r->sol;
    if (s->regularized)
        fprintf(stderr, "diffscope %s: warning: λI + Σ s k kᵀ is %s (cond %.3g with λ = %g, %d keys in %d dimensions); "
                        "regularized with λ = %.4g (cond %.3g)\n",
                cmd, isinf(s->cond_requested) ? "singular" : "ill-conditioned", s->cond_requested, s->lambda_requested, k->n, k->d,
                s->lambda, s->cond);
    double total = 0;
    for (int i = 0; i < r->n; i++) total += r->layers[i].norm_delta;
    if (total == 0) fprintf(stderr, "diffscope %s: warning: the edit changes nothing (every ΔW is 0)\n", cmd);
}

// Writes the result (model in its own format, or a delta). Returns 0 or an exit code.
static int write_result(const char* cmd, ds_edit_model* em, const ds_edit_result* r, const char* out, int delta_only,
                        const char* kind, const char* params_json, int quiet) {
    ds_err e = {0};
    ds_weight_delta* d = calloc((size_t)r->n + 1, sizeof *d);
    if (!d) { fprintf(stderr, "diffscope %s: out of memory\n", cmd); return 1; }
    for (int i = 0; i < r->n; i++) d[i] = (ds_weight_delta){r->layers[i].name, r->layers[i].delta};
    int rc;
    cli_log lg = {cmd, quiet};
    ds_write_stats st = {0};
    if (delta_only) {
        rc = ds_delta_write(&e, out, em->m->ws, &em->mf, d, r->n, kind, params_json);
    } else {
        // the edit's description stored in the rewritten files' __metadata__ ("diffscope.edit")
        cJSON* j = cJSON_Parse(params_json ? params_json : "{}");
        if (!j) j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "edit", kind);
        cJSON_AddStringToObject(j, "base_model", em->mf.path);
        cJSON_AddStringToObject(j, "diffscope", ds_version());
        char* ej = cJSON_PrintUnformatted(j);
        cJSON_Delete(j);
        rc = ds_model_write(&e, em->m->ws, &em->mf, d, r->n, ej, out, log_cb, &lg, &st);
        free(ej);
    }
    free(d);
    if (rc) {
        fprintf(stderr, "diffscope %s: %s\n", cmd, e.msg);
        return 1;
    }
    if (!quiet) {
        if (delta_only) fprintf(stderr, "diffscope %s: wrote the delta %s (%d tensors)\n", cmd, out, r->n);
        else if (em->mf.source == DS_SOURCE_SINGLE_FILE)
            fprintf(stderr, "diffscope %s: wrote %s (single file, %s, the checkpoint's own key names)\n", cmd, out, em->mf.weight_dtype);
        else
            fprintf(stderr, "diffscope %s: wrote %s (diffusers folder: %d file%s rewritten, %d copied%s%d left out)\n", cmd, out,
                    st.files_rewritten, st.files_rewritten == 1 ? "" : "s", st.files_copied, ", ", st.files_left_out);
    }
    return 0;
}

static void print_times(const char* cmd, int quiet, double t0, double t_load, double t_keys, double t_solve, double t_write) {
    if (quiet) return;
    fprintf(stderr, "diffscope %s: time: load %.3f s, keys %.3f s, solve+update %.3f s, write %.3f s, total %.3f s\n", cmd,
            t_load - t0, t_keys - t_load, t_solve - t_keys, t_write - t_solve, t_write - t0);
}

static char* json_strings(const strlist* l) {
    cJSON* a = cJSON_CreateArray();
    for (int i = 0; i < l->n; i++) cJSON_AddItemToArray(a, cJSON_CreateString(l->s[i]));
    char* s = cJSON_PrintUnformatted(a);
    cJSON_Delete(a);
    return s;
}

static void add_common(cJSON* j, const ds_edit_result* r, const ds_edit_keys* k, int which) {
    cJSON_AddStringToObject(j, "matrices", which == (DS_EDIT_TO_K | DS_EDIT_TO_V) ? "to_k,to_v" : which == DS_EDIT_TO_K ? "to_k" : "to_v");
    cJSON_AddStringToObject(j, "solve", r->per_layer ? "per-layer" : "shared");
    cJSON_AddNumberToObject(j, "keys", k->n);
    cJSON_AddNumberToObject(j, "lambda", k->lambda);
    cJSON_AddNumberToObject(j, "lambda_used", r->sol.lambda);
    if (isfinite(r->sol.cond)) cJSON_AddNumberToObject(j, "cond", r->sol.cond);
}

// Opens the model on the device --device / --precision (or $DIFFSCOPE_DEVICE) ask for: on a GPU the
// text encoder runs there (fp32 storage unless --precision says otherwise) and the shared fp64 solve
// uses cuSOLVER; auto falls back to the CPU with a notice. 0, or the exit code after the message.
static int open_edit_model(const char* cmd, const char* model, int quiet, ds_edit_model* em) {
    ds_context* ctx = ds_context_create();
    if (!ctx) { fprintf(stderr, "diffscope %s: out of memory\n", cmd); return 1; }
    int rc = cli_set_device(ctx);
    if (!rc) {
        ds_err e = {0};
        if (ds_edit_model_open_on(&e, ctx, model, em) != DS_OK) {
            fprintf(stderr, "diffscope %s: %s\n", cmd, e.msg);
            rc = e.code == DS_ERR_ARG ? 2 : 1;
        } else if (ds_context_device_notice(ctx) && !quiet) {
            fprintf(stderr, "diffscope %s: %s\n", cmd, ds_context_device_notice(ctx));
        }
    }
    ds_context_free(ctx);
    return rc;
}

// Appends the lines of `path` to out: trailing spaces and CRs dropped, blank lines and # comments skipped.
// 0, or 2 after a message naming the flag (unreadable, or nothing listed).
static int read_list(const char* flag, const char* path, const char* what, strlist* out) {
    ds_err e = {0};
    char* text = NULL;
    if (ds_read_file(&e, path, &text, NULL) != DS_OK) {
        fprintf(stderr, "diffscope erase: %s: %s\n", flag, e.msg);
        return 2;
    }
    strlist lines = {0};
    sl_split(&lines, text, '\n');
    int before = out->n;
    for (int i = 0; i < lines.n; i++) {
        size_t n = strlen(lines.s[i]);
        while (n > 0 && (lines.s[i][n - 1] == '\r' || lines.s[i][n - 1] == ' ')) n--;
        if (n > 0 && lines.s[i][0] != '#') sl_push(out, lines.s[i], n);
    }
    sl_free(&lines);
    free(text);
    if (out->n == before) {
        fprintf(stderr, "diffscope erase: %s %s lists no %s\n", flag, path, what);
        return 2;
    }
    return 0;
}

// ---- erase (UCE) -------------------------------------------------------------------------------

int cmd_erase(int argc, char** argv);
int cmd_erase(int argc, char** argv) {
    const char *model = NULL, *concept = NULL, *guide = NULL, *preserve = NULL, *preserve_file = NULL, *out = NULL,
               *lambda_s = "0.5", *erase_s = "1", *preserve_s = "1", *debias = NULL, *desired = NULL, *measured = NULL,
               *matrices = "kv", *context = NULL;
    int moderate = 0, all_tokens = 0, per_layer = 0, delta_only = 0, quiet = 0;
    const arg_spec specs[] = {
        {"model", ARG_STR, &model, "PATH", "diffusers folder or single-file .safetensors (default: the embedded model)", 1, 0, 0},
        {"concept", ARG_STR, &concept, "A[,B,...]", "the concepts to erase, comma-separated (many at once: one solve)", 1, 0, 1},
        {"guide", ARG_STR, &guide, "TEXT[,...]", "what each concept maps to: one for all or one per concept (default \"\": the empty prompt's BOS key; \"art\" for artists)", 1, 0, 0},
        {"preserve", ARG_STR, &preserve, "X,Y", "concepts to keep unchanged, comma-separated", 1, 0, 0},
        {"preserve-file", ARG_STR, &preserve_file, "FILE", "concepts to keep, one per line (# comments and blank lines skipped)", 1, 0, 0},
        {"lambda", ARG_STR, &lambda_s, "F", "regularizer λ >= 0 (default 0.5)", 1, 0, 0},
        {"erase-scale", ARG_STR, &erase_s, "F", "weight of the erase keys >= 0 (default 1)", 1, 0, 0},
        {"preserve-scale", ARG_STR, &preserve_s, "F", "weight of the preserve keys >= 0 (default 1)", 1, 0, 0},
        {"moderate", ARG_FLAG, &moderate, NULL, "moderate: erase toward the empty prompt (no --guide)", 1, 0, 0},
        {"debias", ARG_STR, &debias, "ATTR,ATTR", "debias the concepts across these attributes (e.g. male,female) instead of erasing", 1, 0, 0},
        {"desired-ratios", ARG_STR, &desired, "R,R", "with --debias: target share of each attribute (default uniform)", 1, 0, 0},
        {"measured-ratios", ARG_STR, &measured, "R,R[;R,R]", "with --debias: the measured share of each attribute, one group for all concepts or one per concept (;)", 1, 0, 0},
        {"all-tokens", ARG_FLAG, &all_tokens, NULL, "paper-era keys: every position from the subject token on (default: the subject token only)", 1, 0, 0},
        {"context", ARG_STR, &context, "FILE", "in-context keys: prompts using the concepts, one per line, each a template with one {} or naming a concept; every position from the concept on is erased, and kept for --preserve words in its place (MACE; for models that carry a word in the tokens after it)", 1, 0, 0},
        {"matrices", ARG_STR, &matrices, "kv|k|v", "edit attn2.to_k and to_v (kv, default), or one of them", 1, 0, 0},
        {"per-layer", ARG_FLAG, &per_layer, NULL, "solve each matrix separately (the general form; same result, slower)", 1, 0, 0},
        {"delta", ARG_FLAG, &delta_only, NULL, "write only the change ΔW as a delta .safetensors (apply it with diffscope apply)", 1, 0, 0},
        {"out", ARG_STR, &out, "OUT", "the edited model (a folder for a diffusers input, a .safetensors for a single file), or the delta file", 1, 0, 1},
        {"quiet", ARG_FLAG, &quiet, NULL, "no notes on stderr (warnings are still shown)", 1, 0, 0},
    };
    const arg_command cmd = {"erase", "Erase concepts with UCE (unified concept editing): a closed-form edit of every cross-attention to_k/to_v.",
                             "--concept A[,B,...] --out OUT [options]", specs, COUNT(specs)};
    int pr = args_parse(&cmd, argc, argv);
    if (pr) return pr > 0 ? 0 : 2;
    double t0 = now_s();
    double lambda, es, ps;
    if (!parse_double("erase", "lambda", lambda_s, 0, 1e12, &lambda) || !parse_double("erase", "erase-scale", erase_s, 0, 1e12, &es) ||
        !parse_double("erase", "preserve-scale", preserve_s, 0, 1e12, &ps))
        return 2;
    int which;
    if (!parse_matrices("erase", matrices, &which)) return 2;
    if (moderate && guide) { fprintf(stderr, "diffscope erase: --moderate erases toward the empty prompt; do not give --guide\n"); return 2; }
    if (debias && (guide || moderate || all_tokens)) { fprintf(stderr, "diffscope erase: --debias takes no --guide, --moderate or --all-tokens\n"); return 2; }
    if (!debias && (desired || measured)) { fprintf(stderr, "diffscope erase: --desired-ratios and --measured-ratios need --debias\n"); return 2; }
    if (debias && !measured) { fprintf(stderr, "diffscope erase: --debias needs --measured-ratios (the attribute shares measured on the model's images)\n"); return 2; }
    if (preserve && preserve_file) { fprintf(stderr, "diffscope erase: give --preserve or --preserve-file, not both\n"); return 2; }
    if (context && (debias || all_tokens)) { fprintf(stderr, "diffscope erase: --context takes no --debias or --all-tokens (its keys are every position from the concept on)\n"); return 2; }
    strlist concepts = {0}, guides = {0}, keep = {0}, attrs = {0}, contexts = {0};
    double* deltas = NULL;
    int rc = 0;
    sl_split(&concepts, concept, ',');
    for (int i = 0; i < concepts.n && !rc; i++)
        if (!concepts.s[i][0]) { fprintf(stderr, "diffscope erase: --concept '%s': concept %d is empty\n", concept, i + 1); rc = 2; }
    if (!rc && guide) {
        sl_split(&guides, guide, ',');
        if (guides.n != 1 && guides.n != concepts.n) {
            fprintf(stderr, "diffscope erase: --guide has %d items for %d concepts; give one guide for all or one per concept\n", guides.n, concepts.n);
            rc = 2;
        }
    }
    if (!rc && preserve) {
        sl_split(&keep, preserve, ',');
        for (int i = 0; i < keep.n && !rc; i++)
            if (!keep.s[i][0]) { fprintf(stderr, "diffscope erase: --preserve '%s': item %d is empty\n", preserve, i + 1); rc = 2; }
    }
    if (!rc && preserve_file) rc = read_list("--preserve-file", preserve_file, "concepts", &keep);
    if (!rc && context) rc = read_list("--context", context, "prompts", &contexts);
    if (!rc && debias) {
        sl_split(&attrs, debias, ',');
        for (int i = 0; i < attrs.n && !rc; i++)
            if (!attrs.s[i][0]) { fprintf(stderr, "diffscope erase: --debias '%s': attribute %d is empty\n", debias, i + 1); rc = 2; }
        double* want = calloc((size_t)attrs.n + 1, sizeof(double));
        deltas = calloc((size_t)(concepts.n > 0 ? concepts.n : 1) * (size_t)(attrs.n > 0 ? attrs.n : 1), sizeof(double));
        if (!want || !deltas) { fprintf(stderr, "diffscope erase: out of memory\n"); rc = 1; }
        if (!rc) {
            if (desired) {
                strlist dl = {0};
                sl_split(&dl, desired, ',');
                if (dl.n != attrs.n) { fprintf(stderr, "diffscope erase: --desired-ratios has %d values for %d attributes\n", dl.n, attrs.n); rc = 2; }
                for (int i = 0; !rc && i < dl.n; i++)
                    if (!parse_double("erase", "desired-ratios", dl.s[i], 0, 1, &want[i])) rc = 2;
                sl_free(&dl);
            } else {
                for (int i = 0; i < attrs.n; i++) want[i] = 1.0 / attrs.n;
            }
        }
        if (!rc) {
            strlist groups = {0};
            sl_split(&groups, measured, ';');
            if (groups.n != 1 && groups.n != concepts.n) {
                fprintf(stderr, "diffscope erase: --measured-ratios has %d groups for %d concepts; give one group for all or one per concept (separated by ;)\n", groups.n, concepts.n);
                rc = 2;
            }
            for (int c = 0; !rc && c < concepts.n; c++) {
                strlist g = {0};
                sl_split(&g, groups.s[groups.n == 1 ? 0 : c], ',');
                if (g.n != attrs.n) { fprintf(stderr, "diffscope erase: --measured-ratios group '%s' has %d values for %d attributes\n", groups.s[groups.n == 1 ? 0 : c], g.n, attrs.n); rc = 2; }
                for (int a = 0; !rc && a < attrs.n; a++) {
                    double mv;
                    if (!parse_double("erase", "measured-ratios", g.s[a], 0, 1, &mv)) rc = 2;
                    else deltas[(size_t)c * attrs.n + a] = want[a] - mv;  // UCE: δ = desired − measured
                }
                sl_free(&g);
            }
            sl_free(&groups);
        }
        free(want);
    }
    if (!rc && !(model = resolve_model("erase", model, quiet))) rc = 2;
    if (!rc && !check_out("erase", model, out, delta_only)) rc = 2;
    ds_edit_model em = {0};
    ds_edit_keys keys = {0};
    ds_edit_result res = {0};
    ds_err e = {0};
    cli_log lg = {"erase", quiet};
    double t_load = 0, t_keys = 0, t_solve = 0;
    if (!rc) rc = open_edit_model("erase", model, quiet, &em);
    if (!rc) {
        t_load = now_s();
        ds_uce_params p;
        ds_uce_params_init(&p);
        p.concepts = (const char* const*)concepts.s;
        p.n_concepts = concepts.n;
        p.guides = (const char* const*)guides.s;
        p.n_guides = guides.n;
        p.preserve = (const char* const*)keep.s;
        p.n_preserve = keep.n;
        p.lambda = lambda;
        p.erase_scale = es;
        p.preserve_scale = ps;
        p.all_tokens = all_tokens;
        p.contexts = (const char* const*)contexts.s;
        p.n_contexts = contexts.n;
        p.attributes = (const char* const*)attrs.s;
        p.n_attributes = attrs.n;
        p.deltas = deltas;
        p.log = log_cb;
        p.log_user = &lg;
        if (ds_uce_keys(&em, &e, &p, &keys) != DS_OK) { fprintf(stderr, "diffscope erase: %s\n", e.msg); rc = e.code == DS_ERR_ARG ? 2 : 1; }
    }
    if (!rc) {
        t_keys = now_s();
        if (ds_edit_run(&em, &e, &keys, which, per_layer, &res) != DS_OK) { fprintf(stderr, "diffscope erase: %s\n", e.msg); rc = 1; }
        t_solve = now_s();
    }
    const char* kind = debias ? "debias" : moderate ? "moderate" : "erase";
    if (!rc) {
        print_table(&res, &keys, debias ? "UCE debias" : moderate ? "UCE moderate" : "UCE erase");
        warn_solution("erase", &res, &keys);
        cJSON* j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "method", "uce");
        char* s = json_strings(&concepts);
        cJSON_AddRawToObject(j, "concepts", s);
        free(s);
        if (!debias) {
            if (guides.n) { s = json_strings(&guides); cJSON_AddRawToObject(j, "guides", s); free(s); }
            else cJSON_AddStringToObject(j, "guide", "");
        } else {
            s = json_strings(&attrs);
            cJSON_AddRawToObject(j, "attributes", s);
            free(s);
            cJSON* dj = cJSON_AddArrayToObject(j, "deltas");
            for (int i = 0; i < concepts.n * attrs.n; i++) cJSON_AddItemToArray(dj, cJSON_CreateNumber(deltas[i]));
        }
        s = json_strings(&keep);
        cJSON_AddRawToObject(j, "preserve", s);
        free(s);
        cJSON_AddNumberToObject(j, "erase_scale", es);
        cJSON_AddNumberToObject(j, "preserve_scale", ps);
        cJSON_AddBoolToObject(j, "all_tokens", all_tokens);
        if (contexts.n) { s = json_strings(&contexts); cJSON_AddRawToObject(j, "contexts", s); free(s); }
        add_common(j, &res, &keys, which);
        char* pj = cJSON_PrintUnformatted(j);
        cJSON_Delete(j);
        rc = write_result("erase", &em, &res, out, delta_only, kind, pj, quiet);
        free(pj);
        if (!rc) print_times("erase", quiet, t0, t_load, t_keys, t_solve, now_s());
    }
    ds_edit_result_free(&res);
    ds_edit_keys_free(&keys);
    if (em.m) ds_edit_model_close(&em);
    free(deltas);
    sl_free(&concepts);
    sl_free(&guides);
    sl_free(&keep);
    sl_free(&attrs);
    sl_free(&contexts);
    return rc;
}

// ---- edit (TIME) -------------------------------------------------------------------------------

int cmd_edit(int argc, char** argv);
int cmd_edit(int argc, char** argv) {
    const char *model = NULL, *from = NULL, *to = NULL, *out = NULL, *lambda_s = "0.1", *matrices = "kv";
    int no_augment = 0, per_layer = 0, delta_only = 0, quiet = 0;
    const arg_spec specs[] = {
        {"model", ARG_STR, &model, "PATH", "diffusers folder or single-file .safetensors (default: the embedded model)", 1, 0, 0},
        {"from", ARG_STR, &from, "TEXT", "the source prompt, e.g. \"a pack of roses\"", 1, 0, 1},
        {"to", ARG_STR, &to, "TEXT", "the destination: the source with words inserted, e.g. \"a pack of blue roses\"", 1, 0, 1},
        {"lambda", ARG_STR, &lambda_s, "F", "regularizer λ >= 0 (default 0.1)", 1, 0, 0},
        {"no-augment", ARG_FLAG, &no_augment, NULL, "do not add the \"A photo of / An image of / A picture of\" variants", 1, 0, 0},
        {"matrices", ARG_STR, &matrices, "kv|k|v", "edit attn2.to_k and to_v (kv, default), or one of them (TIME's paper default: v)", 1, 0, 0},
        {"per-layer", ARG_FLAG, &per_layer, NULL, "solve each matrix separately (the general form; same result, slower)", 1, 0, 0},
        {"delta", ARG_FLAG, &delta_only, NULL, "write only the change ΔW as a delta .safetensors", 1, 0, 0},
        {"out", ARG_STR, &out, "OUT", "the edited model (same format as the input) or the delta file", 1, 0, 1},
        {"quiet", ARG_FLAG, &quiet, NULL, "no notes on stderr (warnings are still shown)", 1, 0, 0},
    };
    const arg_command cmd = {"edit", "Edit an implicit assumption with TIME (text-to-image model editing): the source prompt's tokens are mapped onto the destination's.",
                             "--from TEXT --to TEXT --out OUT [options]", specs, COUNT(specs)};
    int pr = args_parse(&cmd, argc, argv);
    if (pr) return pr > 0 ? 0 : 2;
    double t0 = now_s();
    double lambda;
    int which;
    if (!parse_double("edit", "lambda", lambda_s, 0, 1e12, &lambda) || !parse_matrices("edit", matrices, &which)) return 2;
    if (!(model = resolve_model("edit", model, quiet))) return 2;
    if (!check_out("edit", model, out, delta_only)) return 2;
    ds_edit_model em = {0};
    ds_edit_keys keys = {0};
    ds_edit_result res = {0};
    ds_err e = {0};
    cli_log lg = {"edit", quiet};
    int rc = 0;
    double t_load = 0, t_keys = 0, t_solve = 0;
    rc = open_edit_model("edit", model, quiet, &em);
    if (!rc) {
        t_load = now_s();
        ds_time_params p;
        ds_time_params_init(&p);
        p.src = from;
        p.dst = to;
        p.augment = !no_augment;
        p.lambda = lambda;
        p.log = log_cb;
        p.log_user = &lg;
        if (ds_time_keys(&em, &e, &p, &keys) != DS_OK) { fprintf(stderr, "diffscope edit: %s\n", e.msg); rc = e.code == DS_ERR_ARG ? 2 : 1; }
    }
    if (!rc) {
        t_keys = now_s();
        if (ds_edit_run(&em, &e, &keys, which, per_layer, &res) != DS_OK) { fprintf(stderr, "diffscope edit: %s\n", e.msg); rc = 1; }
        t_solve = now_s();
    }
    if (!rc) {
        print_table(&res, &keys, "TIME");
        warn_solution("edit", &res, &keys);
        cJSON* j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "method", "time");
        cJSON_AddStringToObject(j, "from", from);
        cJSON_AddStringToObject(j, "to", to);
        cJSON_AddBoolToObject(j, "augment", !no_augment);
        add_common(j, &res, &keys, which);
        char* pj = cJSON_PrintUnformatted(j);
        cJSON_Delete(j);
        rc = write_result("edit", &em, &res, out, delta_only, "time", pj, quiet);
        free(pj);
        if (!rc) print_times("edit", quiet, t0, t_load, t_keys, t_solve, now_s());
    }
    ds_edit_result_free(&res);
    ds_edit_keys_free(&keys);
    if (em.m) ds_edit_model_close(&em);
    return rc;
}

// ---- prune (ConceptPrune neurons) --------------------------------------------------------------

int cmd_prune(int argc, char** argv);
int cmd_prune(int argc, char** argv) {
    const char *model = NULL, *neurons = NULL, *out = NULL;
    int delta_only = 0, quiet = 0;
    const arg_spec specs[] = {
        {"model", ARG_STR, &model, "PATH", "diffusers folder or single-file .safetensors (default: the embedded model)", 1, 0, 0},
        {"neurons", ARG_STR, &neurons, "FILE", "neurons.json: per transformer block, the ff.net.2 input columns (and per-row lists) to zero", 1, 0, 1},
        {"delta", ARG_FLAG, &delta_only, NULL, "write only the change ΔW as a delta .safetensors", 1, 0, 0},
        {"out", ARG_STR, &out, "OUT", "the pruned model (same format as the input) or the delta file", 1, 0, 1},
        {"quiet", ARG_FLAG, &quiet, NULL, "no notes on stderr", 1, 0, 0},
    };
    const arg_command cmd = {"prune", "Zero localized FFN neurons (ConceptPrune) in ff.net.2 of the listed transformer blocks.",
                             "--neurons FILE --out OUT [options]", specs, COUNT(specs)};
    int pr = args_parse(&cmd, argc, argv);
    if (pr) return pr > 0 ? 0 : 2;
    double t0 = now_s();
    if (!(model = resolve_model("prune", model, quiet))) return 2;
    if (!ds_file_exists(neurons)) { fprintf(stderr, "diffscope prune: --neurons %s: no such file\n", neurons); return 2; }
    if (!check_out("prune", model, out, delta_only)) return 2;
    ds_edit_model em = {0};
    ds_edit_result res = {0};
    ds_err e = {0};
    int rc = 0;
    double t_load = 0, t_solve = 0;
    if (ds_edit_model_open(&e, model, &em) != DS_OK) { fprintf(stderr, "diffscope prune: %s\n", e.msg); rc = 1; }
    if (!rc) {
        t_load = now_s();
        if (ds_prune_run(&em, &e, neurons, &res) != DS_OK) { fprintf(stderr, "diffscope prune: %s\n", e.msg); rc = e.code == DS_ERR_ARG || e.code == DS_ERR_FORMAT ? 2 : 1; }
        t_solve = now_s();
    }
    if (!rc) {
        print_table(&res, NULL, "ConceptPrune");
        cJSON* j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "method", "prune");
        cJSON_AddStringToObject(j, "neurons", neurons);
        int64_t zeroed = 0;
        for (int i = 0; i < res.n; i++) zeroed += res.layers[i].changed;
        cJSON_AddNumberToObject(j, "zeroed", (double)zeroed);
        char* pj = cJSON_PrintUnformatted(j);
        cJSON_Delete(j);
        rc = write_result("prune", &em, &res, out, delta_only, "prune", pj, quiet);
        free(pj);
        if (!rc) print_times("prune", quiet, t0, t_load, t_load, t_solve, now_s());
    }
    ds_edit_result_free(&res);
    if (em.m) ds_edit_model_close(&em);
    return rc;
}

// ---- apply a delta -----------------------------------------------------------------------------

int cmd_apply(int argc, char** argv);
int cmd_apply(int argc, char** argv) {
    const char *model = NULL, *delta = NULL, *out = NULL;
    int allow = 0, quiet = 0;
    const arg_spec specs[] = {
        {"model", ARG_STR, &model, "PATH", "the base model: diffusers folder or single-file .safetensors", 1, 0, 1},
        {"delta", ARG_STR, &delta, "FILE", "a delta written by erase/edit/prune --delta", 1, 0, 1},
        {"out", ARG_STR, &out, "OUT", "the edited model, in the base model's format", 1, 0, 1},
        {"allow-other-base", ARG_FLAG, &allow, NULL, "apply even if the delta was made from other weights (fingerprint mismatch)", 1, 0, 0},
        {"quiet", ARG_FLAG, &quiet, NULL, "no notes on stderr", 1, 0, 0},
    };
    const arg_command cmd = {"apply", "Apply a delta file (ΔW per tensor) to a model and write it in the model's own format.",
                             "--model M --delta FILE --out OUT", specs, COUNT(specs)};
    int pr = args_parse(&cmd, argc, argv);
    if (pr) return pr > 0 ? 0 : 2;
    double t0 = now_s();
    if (!ds_file_exists(delta)) { fprintf(stderr, "diffscope apply: --delta %s: no such file\n", delta); return 2; }
    if (!check_out("apply", model, out, 0)) return 2;
    ds_err e = {0};
    ds_model_files mf;
    memset(&mf, 0, sizeof mf);
    ds_backend* be = ds_backend_cpu_create(1);
    ds_weights* ws = be ? ds_weights_create(be) : NULL;
    int rc = 0;
    if (!ws) { fprintf(stderr, "diffscope apply: out of memory\n"); rc = 1; }
    if (!rc && ds_model_files_open(&e, model, ws, &mf) != DS_OK) { fprintf(stderr, "diffscope apply: %s\n", e.msg); rc = 1; memset(&mf, 0, sizeof mf); }
    ds_delta d = {0};
    if (!rc && ds_delta_open(&e, delta, ws, allow, &d) != DS_OK) { fprintf(stderr, "diffscope apply: %s\n", e.msg); rc = 2; }
    if (!rc) {
        if (!quiet) fprintf(stderr, "diffscope apply: %d tensors (%s edit of %s)\n", d.n, d.edit_kind ? d.edit_kind : "unknown",
                            d.base_model ? d.base_model : "an unknown model");
        cJSON* j = cJSON_Parse(d.params_json ? d.params_json : "{}");
        if (!j) j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "edit", d.edit_kind ? d.edit_kind : "unknown");
        cJSON_AddStringToObject(j, "delta", delta);
        cJSON_AddStringToObject(j, "base_model", model);
        cJSON_AddStringToObject(j, "diffscope", ds_version());
        char* ej = cJSON_PrintUnformatted(j);
        cJSON_Delete(j);
        cli_log lg = {"apply", quiet};
        ds_write_stats st = {0};
        if (ds_model_write(&e, ws, &mf, d.d, d.n, ej, out, log_cb, &lg, &st) != DS_OK) {
            fprintf(stderr, "diffscope apply: %s\n", e.msg);
            rc = 1;
        } else if (!quiet) {
            fprintf(stderr, "diffscope apply: wrote %s (%s) in %.3f s\n", out, mf.source_name, now_s() - t0);
        }
        free(ej);
    }
    ds_delta_close(&d);
    ds_model_files_free(&mf);
    ds_weights_free(ws);
    if (be) ds_backend_cpu_free(be);
    return rc;
}
