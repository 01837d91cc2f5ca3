// edit.c — UCE / TIME closed-form edits and ConceptPrune neuron zeroing (see edit.h and
// docs/editing.md). All linear algebra is fp64: BLAS dgemm and LAPACK dposv / dsyev / dgesv
// (the Fortran symbols, provided by OpenBLAS or any LAPACK).
#include "edit.h"

#include <cblas.h>
#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <strings.h>

#include "safetensors.h"

#if defined(__F16C__) && defined(__AVX__)
#include <immintrin.h>
#endif

// LAPACK (Fortran ABI; the trailing size_t are the hidden lengths of the character arguments)
extern void dposv_(const char* uplo, const int* n, const int* nrhs, double* a, const int* lda,
                   double* b, const int* ldb, int* info, size_t uplo_len);
extern void dgesv_(const int* n, const int* nrhs, double* a, const int* lda, int* ipiv, double* b,
                   const int* ldb, int* info);
extern void dsyev_(const char* jobz, const char* uplo, const int* n, double* a, const int* lda,
                   double* w, double* work, const int* lwork, int* info, size_t jobz_len,
                   size_t uplo_len);

static void logf_(ds_edit_log_fn log, void* user, const char* fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static void logf_(ds_edit_log_fn log, void* user, const char* fmt, ...) {
    if (!log) return;
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    log(user, buf);
}

// ---- opening the model -------------------------------------------------------------------------

// Natural order of module paths: digit runs compare as numbers ("up_blocks.2" < "up_blocks.10").
static int natural_cmp(const char* a, const char* b) {
    while (*a && *b) {
        if (isdigit((unsigned char)*a) && isdigit((unsigned char)*b)) {
            char *ea, *eb;
            unsigned long long x = strtoull(a, &ea, 10), y = strtoull(b, &eb, 10);
            if (x != y) return x < y ? -1 : 1;
            a = ea;
            b = eb;
        } else {
            if (*a != *b) return (unsigned char)*a < (unsigned char)*b ? -1 : 1;
            a++;
            b++;
        }
    }
    return *a ? 1 : *b ? -1 : 0;
}
static int natural_cmp_p(const void* x, const void* y) {
    return natural_cmp(*(const char* const*)x, *(const char* const*)y);
}

static int list_blocks(ds_edit_model* em, ds_err* e) {
    const ds_weights* ws = em->m->ws;
    const char* suffix = ".attn2.to_k.weight";
    size_t ls = strlen(suffix);
    int cap = 0;
    for (int i = 0; i < ds_weights_n_entries(ws); i++) {
        const char* n = ds_weights_entry_name(ws, i);
        if (!n || strncmp(n, "unet.", 5) != 0) continue;
        size_t l = strlen(n);
        if (l <= 5 + ls || strcmp(n + l - ls, suffix) != 0) continue;
        if (em->n_blocks == cap) {
            cap = cap ? 2 * cap : 64;
            char** nb = realloc(em->blocks, sizeof(char*) * (size_t)cap);
            if (!nb) return ds_errf(e, DS_ERR_OOM, "out of memory");
            em->blocks = nb;
        }
        em->blocks[em->n_blocks++] = strndup(n + 5, l - 5 - ls);
    }
    if (em->n_blocks == 0)
        return ds_errf(e, DS_ERR_FORMAT, "%s: the UNet has no cross-attention (no unet.*.attn2.to_k.weight)", em->mf.path);
    qsort(em->blocks, (size_t)em->n_blocks, sizeof(char*), natural_cmp_p);
    return DS_OK;
}

int ds_edit_model_open(ds_err* e, const char* path, ds_edit_model* em) {
    return ds_edit_model_open_on(e, NULL, path, em);
}

int ds_edit_model_open_on(ds_err* e, ds_context* ctx, const char* path, ds_edit_model* em) {
    memset(em, 0, sizeof *em);
    if (!path || !*path) return ds_errf(e, DS_ERR_ARG, "--model: a path is required");
    ds_model* m = ds_calloc(e, 1, sizeof *m, "model");
    if (!m) return DS_ERR_OOM;
    em->m = m;
    // One thread: the text encoder runs a few dozen rows through 12 layers (a few ms of GEMM
    // each) and the weight conversion is memory-bound, so a second thread saves little and, on a
    // machine whose other cores are busy, its spin-waiting team costs far more (measured on 2
    // shared cores: load 0.7 → 0.3 s, keys 0.65 → 0.05 s). The solve's update loop keeps its own
    // OpenMP team (coarse, 32 matrices).
    if (ctx) {  // the context's device; on a GPU the text encoder stores fp32 unless --precision says otherwise
        if (ds_context_backend(ctx, 0, 1, DS_ACT_F32, &m->be, &m->precision) != DS_OK) {
            int code = ctx->err.code;
            ds_errf(e, code, "%s", ctx->err.msg);
            ds_edit_model_close(em);
            return code;
        }
    } else {
        m->be = ds_backend_cpu_create(1);
        m->precision = "fp32";
    }
    m->ws = m->be ? ds_weights_create(m->be) : NULL;
    if (m->ws) ds_weights_set_threads(m->ws, 1);
    m->path = strdup(path);
    if (!m->be || !m->ws || !m->path) { ds_edit_model_close(em); return ds_errf(e, DS_ERR_OOM, "out of memory"); }
    ds_arena_init(&m->arena, m->be, 0);
    int rc = ds_model_files_open(e, path, m->ws, &em->mf);
    if (rc) {
        memset(&em->mf, 0, sizeof em->mf);
        ds_edit_model_close(em);
        return rc;
    }
    const ds_model_files* mf = &em->mf;
    m->arch = mf->arch;
    m->single_file = mf->source == DS_SOURCE_SINGLE_FILE;
    snprintf(m->weight_dtype, sizeof m->weight_dtype, "%s", mf->weight_dtype ? mf->weight_dtype : "?");
    m->pad_id = mf->pad_id;
    // the text encoder exactly as ds_model_load builds it (model.c)
    if (mf->text_encoder.config_json) {
        rc = ds_clip_config_from_json(e, mf->text_encoder.config_json, mf->text_encoder.config_path, &m->text_cfg);
    } else if (ds_clip_config_detect(&m->text_cfg, m->ws, "text_encoder.") != DS_OK) {
        rc = ds_errf(e, DS_ERR_FORMAT, "%s: no usable text encoder weights (text_encoder.text_model.*)", mf->path);
    } else {
        m->text_cfg.heads = ds_model_files_text_heads(mf, m->text_cfg.hidden);
        m->text_cfg.act = mf->arch == DS_ARCH_SD2 ? DS_ACT_GELU : DS_ACT_QUICK_GELU;
    }
    if (!rc) rc = ds_tokenizer_create_flavor(e, m->pad_id == 0 ? DS_TOKENIZER_SD2 : DS_TOKENIZER_SD1, &m->tok);
    if (!rc) rc = ds_clip_text_bind(&m->text, &m->text_cfg, m->ws, "text_encoder.", e);
    // the token table (49408 × 768: 152 MB in fp32) is not materialized: ds_edit_encode converts
    // just the rows of the ids it encodes (tok_emb stays NULL here)
    if (!rc) ds_weights_unbind(m->ws, &m->text.tok_emb);
    if (!rc) rc = ds_weights_materialize(m->ws, e);  // only the text encoder is bound
    if (!rc) rc = list_blocks(em, e);
    if (rc) ds_edit_model_close(em);
    return rc;
}

void ds_edit_model_close(ds_edit_model* em) {
    if (em->blocks)
        for (int i = 0; i < em->n_blocks; i++) free(em->blocks[i]);
    free(em->blocks);
    ds_model_files_free(&em->mf);
    ds_model_free(em->m);  // the UNet was never bound: its release is a no-op
    memset(em, 0, sizeof *em);
}

// Converts n elements of a float dtype to fp64 (F16C when the compiler targets it).
static int to_f64(const uint8_t* src, ds_dtype t, size_t n, double* w) {
    size_t i = 0;
    switch (t) {
    case DS_DTYPE_F64: memcpy(w, src, n * 8); return 1;
    case DS_DTYPE_F32:
        for (; i < n; i++) { float x; memcpy(&x, src + 4 * i, 4); w[i] = x; }
        return 1;
    case DS_DTYPE_F16:
#if defined(__F16C__) && defined(__AVX__)
        for (; i + 8 <= n; i += 8) {
            __m256 f = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(const void*)(src + 2 * i)));
            _mm256_storeu_pd(w + i, _mm256_cvtps_pd(_mm256_castps256_ps128(f)));
            _mm256_storeu_pd(w + i + 4, _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1)));
        }
#endif
        for (; i < n; i++) { uint16_t h; memcpy(&h, src + 2 * i, 2); w[i] = ds_f16_to_f32(h); }
        return 1;
    case DS_DTYPE_BF16:
        for (; i < n; i++) { uint16_t h; memcpy(&h, src + 2 * i, 2); w[i] = ds_bf16_to_f32(h); }
        return 1;
    default:
        return 0;
    }
}

// Shape of a matrix entry (trailing 1-dims of LDM 1×1 convs dropped); 0 when not 2-d or absent.
static int matrix_shape(const ds_weights* ws, const char* name, int64_t* rows, int64_t* cols) {
    int64_t shape[8];
    int nd = ds_weights_shape(ws, name, shape);
    while (nd > 2 && shape[nd - 1] == 1) nd--;
    if (nd != 2) return 0;
    *rows = shape[0];
    *cols = shape[1];
    return 1;
}

static int read_matrix_into(ds_err* e, const ds_weights* ws, const char* name, double* w, int64_t rows, int64_t cols) {
    const ds_st_file* f;
    const ds_st_tensor* t;
    size_t off;
    if (!ds_weights_source(ws, name, &f, &t, &off)) return ds_errf(e, DS_ERR_FORMAT, "missing tensor '%s'", name);
    if (!to_f64(t->data + off, t->dtype, (size_t)(rows * cols), w))
        return ds_errf(e, DS_ERR_FORMAT, "%s: tensor '%s' has dtype %s, expected a float type", f->path, name, ds_dtype_name(t->dtype));
    return DS_OK;
}

int ds_edit_read_matrix(ds_err* e, const ds_weights* ws, const char* name, double** out,
                        int64_t* rows, int64_t* cols) {
    *out = NULL;
    if (!ds_weights_has(ws, name)) return ds_errf(e, DS_ERR_FORMAT, "missing tensor '%s'", name);
    if (!matrix_shape(ws, name, rows, cols)) return ds_errf(e, DS_ERR_FORMAT, "tensor '%s' is not a matrix", name);
    double* w = ds_malloc(e, sizeof(double) * (size_t)(*rows * *cols), name);
    if (!w) return DS_ERR_OOM;
    int rc = read_matrix_into(e, ws, name, w, *rows, *cols);
    if (rc) free(w);
    else *out = w;
    return rc;
}

// ---- text keys ---------------------------------------------------------------------------------

int ds_edit_encode(ds_edit_model* em, ds_err* e, const char* const* prompts, int n, int positions,
                   double* out) {
    ds_model* m = em->m;
    const int L = DS_TOK_CONTEXT, D = m->text_cfg.hidden, BATCH = 16;
    if (positions < 1 || positions > L) return ds_errf(e, DS_ERR_INTERNAL, "ds_edit_encode: %d positions", positions);
    const int P = positions;
    int32_t* ids = ds_malloc(e, sizeof(int32_t) * (size_t)(BATCH * P), "token ids");
    int32_t* local = ds_malloc(e, sizeof(int32_t) * (size_t)(BATCH * P), "token ids");
    int32_t* uniq = ds_malloc(e, sizeof(int32_t) * (size_t)(BATCH * P), "token ids");
    float* host = ds_malloc(e, sizeof(float) * (size_t)(BATCH * P * D), "text embeddings");
    int rc = (!ids || !local || !uniq || !host) ? DS_ERR_OOM : DS_OK;
    static const char tok_name[] = "text_encoder.text_model.embeddings.token_embedding.weight";
    for (int b0 = 0; !rc && b0 < n; b0 += BATCH) {
        int B = n - b0 < BATCH ? n - b0 : BATCH;
        for (int i = 0; !rc && i < B; i++) {
            int32_t* chunk = NULL;
            int nc = 0, dropped = 0;
            rc = ds_tokenizer_encode_chunks(m->tok, e, prompts[b0 + i], m->pad_id, 0, &chunk, &nc, &dropped);
            if (!rc && nc > 1) {
                int32_t* t = NULL;
                int nt = 0;
                ds_tokenizer_encode(m->tok, e, prompts[b0 + i], &t, &nt);
                free(t);
                rc = ds_errf(e, DS_ERR_ARG, "'%s' is %d tokens; an edit prompt must fit one 77-position chunk (at most %d tokens)",
                             prompts[b0 + i], nt, DS_TOK_CHUNK_TOKENS);
            }
            if (!rc) memcpy(ids + (size_t)i * P, chunk, sizeof(int32_t) * (size_t)P);  // the chunk's first P positions
            free(chunk);
        }
        if (rc) break;
        // a compact token table: the distinct ids of this batch, converted from the mapped file
        // (bit-identical rows), and the ids renumbered into it
        int nu = 0;
        for (int i = 0; i < B * P; i++) {
            int u = 0;
            while (u < nu && uniq[u] != ids[i]) u++;
            if (u == nu) uniq[nu++] = ids[i];
            local[i] = u;
        }
        rc = ds_weights_gather_rows(m->ws, e, tok_name, uniq, nu, host);
        if (rc) break;
        float* table = m->be->alloc(m->be, (int64_t)nu * D);
        if (!table) { rc = ds_errf(e, DS_ERR_OOM, "out of memory for the token table"); break; }
        m->be->upload(m->be, table, host, (int64_t)nu * D);
        ds_clip_text text = m->text;
        text.tok_emb = table;
        text.cfg.vocab = nu;
        ds_run run = {0};
        run.be = m->be;
        run.arena = &m->arena;
        run.err = e;
        run.step = -1;
        run.timestep = -1;
        ds_arena_mark mark = ds_arena_get_mark(&m->arena);
        ds_tensor h = ds_arena_tensor(&m->arena, e, 3, B, P, D, 0);
        if (!h.data) rc = DS_ERR_OOM;
        if (!rc) rc = ds_clip_text_forward(&text, &run, local, B, P, 0, &h);
        if (!rc) rc = ds_backend_check(m->be, e);  // a GPU op that could not get memory
        if (!rc) {
            m->be->download(m->be, host, h.data, (int64_t)B * P * D);
            for (int b = 0; b < B; b++)
                for (size_t k = 0; k < (size_t)P * D; k++)
                    out[((size_t)(b0 + b) * L) * D + k] = host[(size_t)b * P * D + k];
        }
        ds_arena_reset(&m->arena, mark);
        m->be->free(m->be, table);
    }
    free(ids);
    free(local);
    free(uniq);
    free(host);
    return rc;
}

// Decodes one UTF-8 code point (invalid bytes are taken as Latin-1: this only classifies words).
static int32_t utf8_next(const char** p, const char* end) {
    const unsigned char* s = (const unsigned char*)*p;
    int32_t c = s[0];
    int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    if ((const char*)s + len > end) len = 1;
    if (len > 1) {
        c &= (0x7f >> len);
        for (int i = 1; i < len; i++) c = (c << 6) | (s[i] & 0x3f);
    }
    *p += len;
    return c;
}

int ds_edit_subject_token(const ds_tokenizer* t, ds_err* e, const char* text, ds_edit_subject* out) {
    memset(out, 0, sizeof *out);
    ds_tok_encoding enc;
    DS_TRY(ds_tokenizer_encode_ex(t, e, text, &enc));
    out->n_tokens = enc.n_tokens;
    int last = -1;
    size_t np = 0;
    for (int w = 0; w < enc.n_words; w++) {
        const ds_tok_word* wd = &enc.words[w];
        if (wd->special_id >= 0 || wd->n_tokens == 0) continue;
        const char* p = enc.normalized + wd->norm_start;
        const char* end = enc.normalized + wd->norm_end;
        int alnum = 0;
        while (p < end) {
            char c = ds_tokenizer_char_class(utf8_next(&p, end));
            if (c == 'L' || c == 'N') alnum = 1;
        }
        if (alnum) last = w;
        if (wd->n_tokens > 1) {
            out->split_words++;
            if (np < sizeof out->pieces)
                np += (size_t)snprintf(out->pieces + np, sizeof out->pieces - np, "%s'%.*s' = ", np ? "; " : "",
                                       (int)(wd->norm_end - wd->norm_start), enc.normalized + wd->norm_start);
            for (int k = 0; k < wd->n_tokens && np < sizeof out->pieces; k++)
                np += (size_t)snprintf(out->pieces + np, sizeof out->pieces - np, "%s%s", k ? " + " : "",
                                       ds_tokenizer_piece(t, enc.ids[wd->first_token + k]));
        }
    }
    // position in [BOS, tokens..., EOS, pad...]: token i is at i + 1
    out->pos = last >= 0 ? enc.words[last].first_token + enc.words[last].n_tokens : enc.n_tokens;
    snprintf(out->last_piece, sizeof out->last_piece, "%s",
             out->pos == 0 ? "<|startoftext|>" : ds_tokenizer_piece(t, enc.ids[out->pos - 1]));
    ds_tok_encoding_free(&enc);
    if (out->n_tokens > DS_TOK_CHUNK_TOKENS)
        return ds_errf(e, DS_ERR_ARG, "'%s' is %d tokens; an edit prompt must fit one 77-position chunk (at most %d tokens)",
                       text, out->n_tokens, DS_TOK_CHUNK_TOKENS);
    return DS_OK;
}

// [BOS] + ids + [EOS] with TIME's "an" → "a" substitution.
static int time_tokens(const ds_tokenizer* t, ds_err* e, const char* text, int32_t* out, int* n) {
    int32_t* ids = NULL;
    int k = 0;
    DS_TRY(ds_tokenizer_encode(t, e, text, &ids, &k));
    if (k > DS_TOK_CHUNK_TOKENS) {
        free(ids);
        return ds_errf(e, DS_ERR_ARG, "'%s' is %d tokens; an edit prompt must fit one 77-position chunk (at most %d tokens)",
                       text, k, DS_TOK_CHUNK_TOKENS);
    }
    int32_t a_id = ds_tokenizer_piece_id(t, "a</w>");
    out[0] = DS_TOK_BOS;
    for (int i = 0; i < k; i++) {
        char buf[8];
        int len = ds_tokenizer_token_bytes(t, ids[i], buf, sizeof buf, NULL);
        out[i + 1] = (len == 2 && memcmp(buf, "an", 2) == 0) ? a_id : ids[i];
    }
    out[k + 1] = DS_TOK_EOS;
    *n = k + 2;
    free(ids);
    return DS_OK;
}

int ds_edit_time_align(const ds_tokenizer* t, ds_err* e, const char* src, const char* dst, int idx[77]) {
    int32_t a[DS_TOK_CONTEXT + 2], b[DS_TOK_CONTEXT + 2];
    int na = 0, nb = 0;
    DS_TRY(time_tokens(t, e, src, a, &na));
    DS_TRY(time_tokens(t, e, dst, b, &nb));
    int j = 0, k = 0;
    for (int i = 0; i < na; i++) {
        while (j < nb && b[j] != a[i]) j++;
        if (j == nb)
            return ds_errf(e, DS_ERR_ARG,
                           "--to '%s' must contain the tokens of --from '%s' in order (TIME only inserts words): "
                           "'%s' (token %d of --from) has no match after position %d of --to",
                           dst, src, ds_tokenizer_piece(t, a[i]), i, k ? idx[k - 1] : 0);
        idx[k++] = j++;
    }
    while (j < DS_TOK_CONTEXT && k < DS_TOK_CONTEXT) idx[k++] = j++;
    while (k < DS_TOK_CONTEXT) idx[k++] = DS_TOK_CONTEXT - 1;
    return DS_OK;
}

// ---- keys --------------------------------------------------------------------------------------

void ds_edit_keys_init(ds_edit_keys* k, int d, double lambda) {
    memset(k, 0, sizeof *k);
    k->d = d;
    k->lambda = lambda;
}

int ds_edit_keys_add(ds_edit_keys* k, ds_err* e, const double* key, const double* target, double s,
                     const char* label) {
    if (!(s >= 0) || !isfinite(s)) return ds_errf(e, DS_ERR_ARG, "%s: a key's scale must be a finite number >= 0, got %g", label ? label : "edit", s);
    if (k->n == k->cap) {
        int cap = k->cap ? 2 * k->cap : 16;
        double* nK = realloc(k->K, sizeof(double) * (size_t)cap * (size_t)k->d);
        if (nK) k->K = nK;
        double* nT = realloc(k->T, sizeof(double) * (size_t)cap * (size_t)k->d);
        if (nT) k->T = nT;
        double* ns = realloc(k->s, sizeof(double) * (size_t)cap);
        if (ns) k->s = ns;
        char** nl = realloc(k->label, sizeof(char*) * (size_t)cap);
        if (nl) k->label = nl;
        if (!nK || !nT || !ns || !nl) return ds_errf(e, DS_ERR_OOM, "out of memory for edit keys");
        k->cap = cap;
    }
    memcpy(k->K + (size_t)k->n * k->d, key, sizeof(double) * (size_t)k->d);
    memcpy(k->T + (size_t)k->n * k->d, target, sizeof(double) * (size_t)k->d);
    k->s[k->n] = s;
    k->label[k->n] = strdup(label ? label : "");
    k->n++;
    return DS_OK;
}

void ds_edit_keys_free(ds_edit_keys* k) {
    for (int i = 0; i < k->n; i++) free(k->label[i]);
    free(k->label);
    free(k->K);
    free(k->T);
    free(k->s);
    memset(k, 0, sizeof *k);
}

// ---- the solves --------------------------------------------------------------------------------

// Eigenvalues of a symmetric (n × n) matrix (destroyed); ascending into w.
static int sym_eigenvalues(ds_err* e, double* a, int n, double* w) {
    int info = 0, lwork = -1;
    double q;
    dsyev_("N", "L", &n, a, &n, w, &q, &lwork, &info, 1, 1);
    lwork = (int)q;
    if (lwork < 3 * n) lwork = 3 * n;
    double* work = ds_malloc(e, sizeof(double) * (size_t)lwork, "eigenvalue workspace");
    if (!work) return DS_ERR_OOM;
    dsyev_("N", "L", &n, a, &n, w, work, &lwork, &info, 1, 1);
    free(work);
    if (info != 0) return ds_errf(e, DS_ERR_INTERNAL, "dsyev failed (info %d)", info);
    return DS_OK;
}

// Largest and smallest eigenvalue of Σ s k kᵀ (d × d; the smallest is 0 when n < d).
static int key_spectrum(ds_err* e, const ds_edit_keys* k, double* gmax, double* gmin) {
    int n = k->n, d = k->d;
    *gmax = *gmin = 0;
    if (n == 0) return DS_OK;
    double* sk = ds_malloc(e, sizeof(double) * (size_t)n * d, "scaled keys");
    if (!sk) return DS_ERR_OOM;
    for (int i = 0; i < n; i++) {
        double r = sqrt(k->s[i]);
        for (int j = 0; j < d; j++) sk[(size_t)i * d + j] = r * k->K[(size_t)i * d + j];
    }
    int m = n < d ? n : d;
    double* g = ds_malloc(e, sizeof(double) * (size_t)m * m, "Gram matrix");
    double* w = ds_malloc(e, sizeof(double) * (size_t)m, "eigenvalues");
    int rc = (!g || !w) ? DS_ERR_OOM : DS_OK;
    if (!rc) {
        if (n < d)  // G = (S^½K)(S^½K)ᵀ, n × n: same nonzero spectrum as Σ s k kᵀ
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, d, 1.0, sk, d, sk, d, 0.0, g, n);
        else        // Σ s k kᵀ = (S^½K)ᵀ(S^½K), d × d
            cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, d, n, 1.0, sk, d, sk, d, 0.0, g, d);
        rc = sym_eigenvalues(e, g, m, w);
    }
    if (!rc) {
        *gmax = w[m - 1] > 0 ? w[m - 1] : 0;
        *gmin = (n < d || w[0] < 0) ? 0 : w[0];
    }
    free(sk);
    free(g);
    free(w);
    return rc;
}

static double cond_of(double lambda, double gmax, double gmin) {
    double lo = lambda + gmin, hi = lambda + gmax;
    if (hi <= 0) return INFINITY;  // no keys and λ = 0
    return lo > 0 ? hi / lo : INFINITY;
}

double ds_edit_condition(const ds_edit_keys* k, double lambda) {
    ds_err e = {0};
    double gmax, gmin;
    if (key_spectrum(&e, k, &gmax, &gmin)) return NAN;
    return cond_of(lambda, gmax, gmin);
}

// λ used: the requested one, raised when cond(B) would exceed DS_EDIT_MAX_COND.
static int choose_lambda(ds_err* e, const ds_edit_keys* k, double* lambda, double* cond_req, double* cond,
                         int* regularized) {
    double gmax, gmin;
    DS_TRY(key_spectrum(e, k, &gmax, &gmin));
    double lam = k->lambda;
    *cond_req = cond_of(lam, gmax, gmin);
    *regularized = 0;
    if (!(*cond_req <= DS_EDIT_MAX_COND)) {
        // (λ' + gmax) / (λ' + gmin) = C  ⇒  λ' = (gmax − C·gmin) / (C − 1); with no keys any λ' > 0 does
        double lr = gmax > 0 ? (gmax - DS_EDIT_MAX_COND * gmin) / (DS_EDIT_MAX_COND - 1) : 1e-6;
        if (lr > lam) { lam = lr; *regularized = 1; }
    }
    *lambda = lam;
    *cond = cond_of(lam, gmax, gmin);
    return DS_OK;
}

// B = λI + Σ s k kᵀ, d × d row-major (symmetric).
static double* build_B(ds_err* e, const ds_edit_keys* k, double lambda) {
    int n = k->n, d = k->d;
    double* B = ds_calloc(e, (size_t)d * d, sizeof(double), "λI + Σ s k kᵀ");
    double* sk = n ? ds_malloc(e, sizeof(double) * (size_t)n * d, "scaled keys") : NULL;
    if (!B || (n && !sk)) { free(B); free(sk); return NULL; }
    if (n) {
        for (int i = 0; i < n; i++)
            for (int j = 0; j < d; j++) sk[(size_t)i * d + j] = k->s[i] * k->K[(size_t)i * d + j];
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, d, n, 1.0, k->K, d, sk, d, 0.0, B, d);
    }
    for (int i = 0; i < d; i++) B[(size_t)i * d + i] += lambda;
    free(sk);
    return B;
}

// Solves B X = R for nrhs right-hand sides stored as rows of R (nrhs × d row-major = column-major
// d × nrhs); X overwrites R. Cholesky first (B is SPD for λ > 0), LU if that fails.
// use_device: try k->solver's solve_spd_f64 first (the shared solve; the per-layer path runs in
// host threads and stays on LAPACK). *solver (optional) names what solved it.
static int solve_B(ds_err* e, const ds_edit_keys* k, double lambda, double* R, int64_t nrhs, int use_device,
                   const char** solver) {
    int d = k->d, n = (int)nrhs, info = 0;
    double* B = build_B(e, k, lambda);
    if (!B) return DS_ERR_OOM;
    double* Rc = ds_malloc(e, sizeof(double) * (size_t)nrhs * d, "right-hand sides");
    if (!Rc) { free(B); return DS_ERR_OOM; }
    memcpy(Rc, R, sizeof(double) * (size_t)nrhs * d);
    ds_backend* be = use_device ? k->solver : NULL;
    int dev = -1;  // -1: not tried, or the device could not take it; 0: solved there; > 0: not SPD there
    if (be && be->solve_spd_f64) {
        dev = be->solve_spd_f64(be, d, n, B, R);
        if (dev != 0) {  // the device may have overwritten both: start again from fresh copies
            free(B);
            if (!(B = build_B(e, k, lambda))) { free(Rc); return DS_ERR_OOM; }
            memcpy(R, Rc, sizeof(double) * (size_t)nrhs * d);
        }
    }
    const char* name = be && dev == 0 ? be->solver_name : "LAPACK dposv";
    if (dev < 0) dposv_("L", &d, &n, B, &d, R, &d, &info, 1);
    if (dev > 0 || info != 0) {  // not numerically positive definite: general LU on a fresh copy
        free(B);
        B = build_B(e, k, lambda);
        int* ipiv = ds_malloc(e, sizeof(int) * (size_t)d, "pivots");
        if (!B || !ipiv) { free(B); free(ipiv); free(Rc); return DS_ERR_OOM; }
        memcpy(R, Rc, sizeof(double) * (size_t)nrhs * d);
        dgesv_(&d, &n, B, &d, ipiv, R, &d, &info);
        free(ipiv);
        name = "LAPACK dgesv";
        if (info != 0) {
            free(B);
            free(Rc);
            return ds_errf(e, DS_ERR_INTERNAL, "the edit system λI + Σ s k kᵀ is singular (dgesv info %d) even with λ = %g", info, lambda);
        }
    }
    if (solver) *solver = name;
    free(B);
    free(Rc);
    return DS_OK;
}

int ds_edit_shared_solve(ds_err* e, const ds_edit_keys* k, int force_explicit, ds_edit_solution* s) {
    memset(s, 0, sizeof *s);
    int n = k->n, d = k->d;
    s->d = d;
    s->n = n;
    s->lambda_requested = k->lambda;
    DS_TRY(choose_lambda(e, k, &s->lambda, &s->cond_requested, &s->cond, &s->regularized));
    if (n == 0) return DS_OK;  // M = I
    s->U = ds_malloc(e, sizeof(double) * (size_t)n * d, "U");
    s->Q = ds_malloc(e, sizeof(double) * (size_t)n * d, "Q");
    if (!s->U || !s->Q) { ds_edit_solution_free(s); return DS_ERR_OOM; }
    for (size_t i = 0; i < (size_t)n * d; i++) {
        s->U[i] = k->s[i / (size_t)d] * (k->T[i] - k->K[i]);
        s->Q[i] = k->K[i];
    }
    int rc = solve_B(e, k, s->lambda, s->Q, n, 1, &s->solver);  // rows of Q: (B⁻¹ kᵢ)ᵀ
    if (!rc && (force_explicit || 2 * n >= d)) {
        s->Dm = ds_malloc(e, sizeof(double) * (size_t)d * d, "M − I");
        if (!s->Dm) rc = DS_ERR_OOM;
        else {  // M − I = Uᵀ Q
            cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, d, n, 1.0, s->U, d, s->Q, d, 0.0, s->Dm, d);
            s->explicit_m = 1;
        }
    }
    if (rc) ds_edit_solution_free(s);
    return rc;
}

void ds_edit_shared_apply(const ds_edit_solution* s, const double* W0, int64_t out, double* dW) {
    int d = s->d, n = s->n;
    if (n == 0) { memset(dW, 0, sizeof(double) * (size_t)out * d); return; }
    if (s->explicit_m) {
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)out, d, d, 1.0, W0, d, s->Dm, d, 0.0, dW, d);
        return;
    }
    double* Z = malloc(sizeof(double) * (size_t)out * n);  // W₀ Uᵀ (out × n)
    DS_ASSERT(Z);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)out, n, d, 1.0, W0, d, s->U, d, 0.0, Z, n);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)out, d, n, 1.0, Z, n, s->Q, d, 0.0, dW, d);
    free(Z);
}

void ds_edit_solution_free(ds_edit_solution* s) {
    free(s->Dm);
    free(s->U);
    free(s->Q);
    memset(s, 0, sizeof *s);
}

int ds_edit_solve_layer(ds_err* e, const double* W0, int64_t out, const ds_edit_keys* k,
                        const double* V, double* Wn, double* cond, double* lambda_used) {
    int n = k->n, d = k->d;
    double lam, creq, c;
    int reg;
    DS_TRY(choose_lambda(e, k, &lam, &creq, &c, &reg));
    if (cond) *cond = c;
    if (lambda_used) *lambda_used = lam;
    // R = λW₀ + Vᵀ S K  (out × d)
    for (size_t i = 0; i < (size_t)out * d; i++) Wn[i] = lam * W0[i];
    if (n) {
        double* sk = ds_malloc(e, sizeof(double) * (size_t)n * d, "scaled keys");
        if (!sk) return DS_ERR_OOM;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < d; j++) sk[(size_t)i * d + j] = k->s[i] * k->K[(size_t)i * d + j];
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)out, d, n, 1.0, V, (int)out, sk, d, 1.0, Wn, d);
        free(sk);
    }
    // W' = R B⁻¹  ⇔  B W'ᵀ = Rᵀ (B symmetric); R row-major is Rᵀ column-major
    return solve_B(e, k, lam, Wn, out, 0, NULL);
}

// ---- recipes -----------------------------------------------------------------------------------

void ds_uce_params_init(ds_uce_params* p) {
    memset(p, 0, sizeof *p);
    p->lambda = 0.5;
    p->erase_scale = 1;
    p->preserve_scale = 1;
}

void ds_time_params_init(ds_time_params* p) {
    memset(p, 0, sizeof *p);
    p->augment = 1;
    p->lambda = 0.1;
}

// Unique prompt texts, encoded once.
typedef struct text_set {
    int n, cap;
    char** text;
    ds_edit_subject* subj;
    double* emb;  // (n, 77, D)
} text_set;

static int text_index(text_set* ts, ds_err* e, const char* text) {
    for (int i = 0; i < ts->n; i++)
        if (strcmp(ts->text[i], text) == 0) return i;
    if (ts->n == ts->cap) {
        int cap = ts->cap ? 2 * ts->cap : 16;
        char** nt = realloc(ts->text, sizeof(char*) * (size_t)cap);
        if (!nt) return -ds_errf(e, DS_ERR_OOM, "out of memory");
        ts->text = nt;
        ts->cap = cap;
    }
    ts->text[ts->n] = strdup(text);
    return ts->n++;
}

// all_positions: every one of the 77 positions is used; else only up to each subject token.
static int text_set_encode(text_set* ts, ds_edit_model* em, ds_err* e, int all_positions) {
    const int D = em->m->text_cfg.hidden;
    ts->subj = ds_calloc(e, (size_t)ts->n + 1, sizeof(ds_edit_subject), "subjects");
    ts->emb = ds_calloc(e, (size_t)ts->n * DS_TOK_CONTEXT * D + 1, sizeof(double), "text embeddings");
    if (!ts->subj || !ts->emb) return DS_ERR_OOM;
    int P = 1;
    for (int i = 0; i < ts->n; i++) {
        DS_TRY(ds_edit_subject_token(em->m->tok, e, ts->text[i], &ts->subj[i]));
        if (ts->subj[i].pos + 1 > P) P = ts->subj[i].pos + 1;
    }
    return ds_edit_encode(em, e, (const char* const*)ts->text, ts->n, all_positions ? DS_TOK_CONTEXT : P, ts->emb);
}

static void text_set_free(text_set* ts) {
    for (int i = 0; i < ts->n; i++) free(ts->text[i]);
    free(ts->text);
    free(ts->subj);
    free(ts->emb);
}

static const double* emb_at(const text_set* ts, int i, int pos, int D) {
    return ts->emb + ((size_t)i * DS_TOK_CONTEXT + (size_t)pos) * D;
}

static void warn_split(const ds_uce_params* p, const text_set* ts, int i, const char* role) {
    const ds_edit_subject* s = &ts->subj[i];
    if (s->split_words > 0)
        logf_(p->log, p->log_user,
              "warning: %s '%s' tokenizes to several BPE pieces (%s); its key is the text encoder output at "
              "position %d, the last piece '%s', which sees the earlier pieces only through causal attention",
              role, ts->text[i], s->pieces, s->pos, s->last_piece);
}

int ds_uce_keys(ds_edit_model* em, ds_err* e, const ds_uce_params* p, ds_edit_keys* out) {
    const int D = em->m->text_cfg.hidden;
    ds_edit_keys_init(out, D, p->lambda);
    out->solver = em->m->be;  // the backend the text encoder runs on also solves (cuSOLVER on CUDA)
    if (p->n_concepts < 1) return ds_errf(e, DS_ERR_ARG, "--concept: at least one concept is required");
    if (!(p->lambda >= 0) || !isfinite(p->lambda)) return ds_errf(e, DS_ERR_ARG, "--lambda must be a finite number >= 0");
    if (p->n_guides > 1 && p->n_guides != p->n_concepts)
        return ds_errf(e, DS_ERR_ARG, "--guide: %d guides for %d concepts; give one guide for all, or one per concept",
                       p->n_guides, p->n_concepts);
    int debias = p->deltas != NULL;
    if (debias && p->n_attributes < 1) return ds_errf(e, DS_ERR_ARG, "--debias: at least one attribute is required");
    if (p->n_contexts > 0) {
        if (debias || p->all_tokens)
            return ds_errf(e, DS_ERR_ARG, "--context takes no --debias or --all-tokens (its keys are every position from the concept on)");
        for (int c = 0; c < p->n_concepts; c++)
            for (int q = 0; q < p->n_preserve; q++)
                if (strcmp(p->concepts[c], p->preserve[q]) == 0)
                    logf_(p->log, p->log_user, "warning: '%s' is both erased and preserved; the two keys pull in opposite directions",
                          p->concepts[c]);
        int rc = ds_uce_context_keys(em, e, p, out);
        if (rc) ds_edit_keys_free(out);
        return rc;
    }
    text_set ts = {0};
    int* ci = calloc((size_t)p->n_concepts, sizeof(int));
    int* gi = calloc((size_t)p->n_concepts, sizeof(int));
    int* pi = calloc((size_t)p->n_preserve + 1, sizeof(int));
    int* ai = calloc((size_t)p->n_attributes + 1, sizeof(int));
    int rc = (!ci || !gi || !pi || !ai) ? ds_errf(e, DS_ERR_OOM, "out of memory") : DS_OK;
    for (int c = 0; !rc && c < p->n_concepts; c++) {
        if ((ci[c] = text_index(&ts, e, p->concepts[c])) < 0) rc = DS_ERR_OOM;
        const char* g = p->n_guides == 0 ? "" : p->guides[p->n_guides == 1 ? 0 : c];
        if (!rc && !debias && (gi[c] = text_index(&ts, e, g)) < 0) rc = DS_ERR_OOM;
    }
    for (int q = 0; !rc && q < p->n_preserve; q++)
        if ((pi[q] = text_index(&ts, e, p->preserve[q])) < 0) rc = DS_ERR_OOM;
    for (int a = 0; !rc && debias && a < p->n_attributes; a++)
        if ((ai[a] = text_index(&ts, e, p->attributes[a])) < 0) rc = DS_ERR_OOM;
    if (!rc) rc = text_set_encode(&ts, em, e, p->all_tokens);
    if (!rc) {
        for (int c = 0; c < p->n_concepts; c++) {
            warn_split(p, &ts, ci[c], "concept");
            for (int q = 0; q < p->n_preserve; q++)
                if (pi[q] == ci[c])
                    logf_(p->log, p->log_user, "warning: '%s' is both erased and preserved; the two keys pull in opposite directions",
                          p->concepts[c]);
        }
        for (int q = 0; q < p->n_preserve; q++) warn_split(p, &ts, pi[q], "preserved concept");
    }
    double* tgt = ds_malloc(e, sizeof(double) * (size_t)D, "target");
    if (!tgt) rc = DS_ERR_OOM;
    char label[600];
    for (int c = 0; !rc && c < p->n_concepts; c++) {
        const ds_edit_subject* sc = &ts.subj[ci[c]];
        if (debias) {
            const double* k = emb_at(&ts, ci[c], sc->pos, D);
            memcpy(tgt, k, sizeof(double) * (size_t)D);
            size_t nl = (size_t)snprintf(label, sizeof label, "debias '%s' toward", p->concepts[c]);
            for (int a = 0; a < p->n_attributes; a++) {
                double dl = p->deltas[(size_t)c * p->n_attributes + a];
                const double* av = emb_at(&ts, ai[a], ts.subj[ai[a]].pos, D);
                for (int j = 0; j < D; j++) tgt[j] += dl * av[j];
                if (nl < sizeof label) nl += (size_t)snprintf(label + nl, sizeof label - nl, " %+.3f '%s'", dl, p->attributes[a]);
            }
            rc = ds_edit_keys_add(out, e, k, tgt, p->erase_scale, label);
            continue;
        }
        const ds_edit_subject* sg = &ts.subj[gi[c]];
        snprintf(label, sizeof label, "erase '%s' → '%s'", p->concepts[c], ts.text[gi[c]]);
        if (p->all_tokens) {  // paper-era keys: the subject token and every position after it
            int far = sc->pos > sg->pos ? sc->pos : sg->pos;
            for (int r = 0; !rc && r < DS_TOK_CONTEXT - far; r++)
                rc = ds_edit_keys_add(out, e, emb_at(&ts, ci[c], sc->pos + r, D), emb_at(&ts, gi[c], sg->pos + r, D),
                                      p->erase_scale, label);
        } else {
            rc = ds_edit_keys_add(out, e, emb_at(&ts, ci[c], sc->pos, D), emb_at(&ts, gi[c], sg->pos, D), p->erase_scale, label);
        }
    }
    for (int q = 0; !rc && q < p->n_preserve; q++) {
        snprintf(label, sizeof label, "preserve '%s'", p->preserve[q]);
        if (p->all_tokens) {
            for (int r = 0; !rc && r < DS_TOK_CONTEXT; r++) {
                const double* k = emb_at(&ts, pi[q], r, D);
                rc = ds_edit_keys_add(out, e, k, k, p->preserve_scale, label);
            }
        } else {
            const double* k = emb_at(&ts, pi[q], ts.subj[pi[q]].pos, D);
            rc = ds_edit_keys_add(out, e, k, k, p->preserve_scale, label);
        }
    }
    free(tgt);
    free(ci);
    free(gi);
    free(pi);
    free(ai);
    text_set_free(&ts);
    if (rc) ds_edit_keys_free(out);
    return rc;
}

// TIME's augmentation: a leading capital "A" becomes "a" before the prefix is added.
static char* time_augment(const char* prefix, const char* text) {
    size_t lp = strlen(prefix), lt = strlen(text);
    char* s = malloc(lp + lt + 1);
    if (!s) return NULL;
    memcpy(s, prefix, lp);
    memcpy(s + lp, text, lt + 1);
    if (text[0] == 'A') s[lp] = 'a';
    return s;
}

int ds_time_keys(ds_edit_model* em, ds_err* e, const ds_time_params* p, ds_edit_keys* out) {
    const int D = em->m->text_cfg.hidden, L = DS_TOK_CONTEXT;
    ds_edit_keys_init(out, D, p->lambda);
    out->solver = em->m->be;  // the backend the text encoder runs on also solves (cuSOLVER on CUDA)
    if (!p->src || !p->dst) return ds_errf(e, DS_ERR_ARG, "--from and --to are required");
    if (!(p->lambda >= 0) || !isfinite(p->lambda)) return ds_errf(e, DS_ERR_ARG, "--lambda must be a finite number >= 0");
    static const char* const prefixes[] = {"A photo of ", "An image of ", "A picture of "};
    int m = p->augment ? 4 : 1;
    char* texts[8] = {0};
    texts[0] = strdup(p->src);
    texts[m] = strdup(p->dst);
    for (int i = 1; i < m; i++) {
        texts[i] = time_augment(prefixes[i - 1], p->src);
        texts[m + i] = time_augment(prefixes[i - 1], p->dst);
    }
    int rc = DS_OK;
    for (int i = 0; i < 2 * m; i++)
        if (!texts[i]) rc = ds_errf(e, DS_ERR_OOM, "out of memory");
    int idx[4][DS_TOK_CONTEXT];
    for (int i = 0; !rc && i < m; i++) rc = ds_edit_time_align(em->m->tok, e, texts[i], texts[m + i], idx[i]);
    double* emb = rc ? NULL : ds_malloc(e, sizeof(double) * (size_t)(2 * m) * L * D, "text embeddings");
    if (!rc && !emb) rc = DS_ERR_OOM;
    if (!rc) rc = ds_edit_encode(em, e, (const char* const*)texts, 2 * m, L, emb);
    for (int i = 0; !rc && i < m; i++) {
        char label[512];
        snprintf(label, sizeof label, "time '%s' → '%s'", texts[i], texts[m + i]);
        for (int r = 0; !rc && r < L; r++)
            rc = ds_edit_keys_add(out, e, emb + ((size_t)i * L + r) * D, emb + ((size_t)(m + i) * L + idx[i][r]) * D, 1.0, label);
    }
    free(emb);
    for (int i = 0; i < 2 * m; i++) free(texts[i]);
    if (rc) ds_edit_keys_free(out);
    return rc;
}

// ---- running an edit ---------------------------------------------------------------------------

void ds_edit_result_free(ds_edit_result* r) {
    if (r->block) free(r->block);
    else if (r->layers)
        for (int i = 0; i < r->n; i++) free(r->layers[i].delta);
    free(r->layers);
    ds_edit_solution_free(&r->sol);
    memset(r, 0, sizeof *r);
}

static void finish_layer(ds_edit_layer* l, const double* W0, const double* dW) {
    size_t n = (size_t)(l->rows * l->cols);
    double a = 0, b = 0;
    int64_t changed = 0;
    for (size_t i = 0; i < n; i++) {
        a += W0[i] * W0[i];
        b += dW[i] * dW[i];
        l->delta[i] = (float)dW[i];
        changed += l->delta[i] != 0;
    }
    l->norm_w0 = sqrt(a);
    l->norm_delta = sqrt(b);
    l->changed = changed;
}

int ds_edit_run(ds_edit_model* em, ds_err* e, const ds_edit_keys* k, int which, int per_layer,
                ds_edit_result* out) {
    memset(out, 0, sizeof *out);
    if (!(which & (DS_EDIT_TO_K | DS_EDIT_TO_V))) return ds_errf(e, DS_ERR_ARG, "nothing to edit: neither to_k nor to_v");
    const ds_weights* ws = em->m->ws;
    int per_block = ((which & DS_EDIT_TO_K) != 0) + ((which & DS_EDIT_TO_V) != 0);
    out->n = em->n_blocks * per_block;
    out->per_layer = per_layer;
    out->layers = ds_calloc(e, (size_t)out->n, sizeof(ds_edit_layer), "edit layers");
    if (!out->layers) return DS_ERR_OOM;
    int j = 0;
    for (int b = 0; b < em->n_blocks; b++) {
        if (which & DS_EDIT_TO_K) snprintf(out->layers[j++].name, sizeof out->layers[0].name, "unet.%s.attn2.to_k.weight", em->blocks[b]);
        if (which & DS_EDIT_TO_V) snprintf(out->layers[j++].name, sizeof out->layers[0].name, "unet.%s.attn2.to_v.weight", em->blocks[b]);
    }
    for (int i = 0; i < out->n; i++) {
        int64_t sh[8];
        int nd = ds_weights_shape(ws, out->layers[i].name, sh);
        if (nd != 2 || sh[1] != k->d) {
            int rc = ds_errf(e, DS_ERR_FORMAT, "%s: '%s' is %s, expected (out, %d) to match the text encoder's width",
                             em->mf.path, out->layers[i].name, nd ? "not a (out, d) matrix" : "missing", k->d);
            ds_edit_result_free(out);
            return rc;
        }
        out->layers[i].rows = sh[0];
        out->layers[i].cols = sh[1];
    }
    int rc;
    if (per_layer) {  // only λ / cond for the report; each matrix solves on its own
        out->sol.d = k->d;
        out->sol.n = k->n;
        out->sol.lambda_requested = k->lambda;
        rc = choose_lambda(e, k, &out->sol.lambda, &out->sol.cond_requested, &out->sol.cond, &out->sol.regularized);
    } else {
        rc = ds_edit_shared_solve(e, k, 0, &out->sol);
    }
    if (rc) { ds_edit_result_free(out); return rc; }
    // every ΔW in one block; per-thread fp64 scratch sized for the largest matrix, reused
    int64_t total = 0, maxe = 0, maxr = 0;
    for (int i = 0; i < out->n; i++) {
        int64_t ne = out->layers[i].rows * out->layers[i].cols;
        total += ne;
        if (ne > maxe) maxe = ne;
        if (out->layers[i].rows > maxr) maxr = out->layers[i].rows;
    }
    out->block = ds_malloc(e, sizeof(float) * (size_t)(total + 1), "edit deltas");
    if (!out->block) { ds_edit_result_free(out); return DS_ERR_OOM; }
    for (int i = 0, o = 0; i < out->n; o += (int)(out->layers[i].rows * out->layers[i].cols), i++) out->layers[i].delta = out->block + o;
    int first_fail = -1;
    ds_err fail = {0};
    // threads only pay off for real models (SD1.5: 19M elements); tiny ones run on the calling thread
#pragma omp parallel if (total > (1 << 20))
    {
        double* W0 = malloc(sizeof(double) * (size_t)maxe);
        double* dW = malloc(sizeof(double) * (size_t)maxe);
        double* V = per_layer && k->n ? malloc(sizeof(double) * (size_t)k->n * (size_t)maxr) : NULL;
        int bufs_ok = W0 && dW && (!per_layer || !k->n || V);
#pragma omp for schedule(dynamic, 1)
        for (int i = 0; i < out->n; i++) {
            ds_edit_layer* l = &out->layers[i];
            ds_err le = {0};
            int64_t r = l->rows;
            int lrc = bufs_ok ? read_matrix_into(&le, ws, l->name, W0, r, l->cols) : ds_errf(&le, DS_ERR_OOM, "out of memory editing '%s'", l->name);
            if (!lrc && !per_layer) {
                ds_edit_shared_apply(&out->sol, W0, r, dW);
                l->cond = out->sol.cond;
            } else if (!lrc) {  // general solve with v* = W₀ t: V = T W₀ᵀ (n × out)
                if (k->n)
                    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, k->n, (int)r, k->d, 1.0, k->T, k->d, W0, k->d, 0.0, V, (int)r);
                lrc = ds_edit_solve_layer(&le, W0, r, k, V, dW, &l->cond, NULL);
                if (!lrc)
                    for (int64_t q = 0; q < r * l->cols; q++) dW[q] -= W0[q];
            }
            if (!lrc) finish_layer(l, W0, dW);
            if (lrc) {
#pragma omp critical(ds_edit_fail)
                if (first_fail < 0 || i < first_fail) { first_fail = i; fail = le; }
            }
        }
        free(W0);
        free(dW);
        free(V);
    }
    if (first_fail >= 0) {
        ds_errf(e, fail.code, "%s", fail.msg);
        ds_edit_result_free(out);
        return fail.code;
    }
    return DS_OK;
}

// ---- pruning -----------------------------------------------------------------------------------

static int json_index(const cJSON* v, int64_t limit, int64_t* out) {
    if (!cJSON_IsNumber(v)) return 0;
    double x = v->valuedouble;
    if (x != floor(x) || x < 0 || x >= (double)limit) return 0;
    *out = (int64_t)x;
    return 1;
}

static int prune_block(ds_edit_model* em, ds_err* e, const char* file, const char* key, const cJSON* spec,
                       ds_edit_layer* l) {
    // accept "unet." and a trailing ".ff" / ".ff.net.2" (the FFN node paths) around the block path
    char path[160];
    const char* k0 = strncmp(key, "unet.", 5) == 0 ? key + 5 : key;
    snprintf(path, sizeof path, "%s", k0);
    size_t lp = strlen(path);
    if (lp > 9 && strcmp(path + lp - 9, ".ff.net.2") == 0) path[lp - 9] = 0;
    else if (lp > 3 && strcmp(path + lp - 3, ".ff") == 0) path[lp - 3] = 0;
    snprintf(l->name, sizeof l->name, "unet.%s.ff.net.2.weight", path);
    const ds_weights* ws = em->m->ws;
    int64_t sh[8];
    int nd = ds_weights_shape(ws, l->name, sh);
    if (nd != 2)
        return ds_errf(e, DS_ERR_ARG,
                       "%s: block '%s' is not a transformer block of this %s model (it has %d, from '%s' to '%s'); "
                       "was the file made for another architecture?",
                       file, key, em->m->arch == DS_ARCH_SD2 ? "SD2.x" : "SD1.x", em->n_blocks, em->blocks[0],
                       em->blocks[em->n_blocks - 1]);
    l->rows = sh[0];
    l->cols = sh[1];
    l->cond = -1;
    const cJSON* fin = cJSON_GetObjectItemCaseSensitive(spec, "in_features");
    const cJSON* fout = cJSON_GetObjectItemCaseSensitive(spec, "out_features");
    if (!cJSON_IsNumber(fin) || !cJSON_IsNumber(fout))
        return ds_errf(e, DS_ERR_FORMAT, "%s: block '%s' needs \"in_features\" and \"out_features\" (the ff.net.2 shape it was made for)", file, key);
    if ((int64_t)fin->valuedouble != l->cols || (int64_t)fout->valuedouble != l->rows)
        return ds_errf(e, DS_ERR_ARG,
                       "%s: block '%s': the file is for an ff.net.2 of %lld → %lld features, this model's is %lld → %lld; "
                       "was the file made for another architecture?",
                       file, key, (long long)fin->valuedouble, (long long)fout->valuedouble, (long long)l->cols, (long long)l->rows);
    const cJSON* cols = cJSON_GetObjectItemCaseSensitive(spec, "columns");
    const cJSON* rows = cJSON_GetObjectItemCaseSensitive(spec, "rows");
    if ((cols && !cJSON_IsArray(cols)) || (rows && !cJSON_IsObject(rows)))
        return ds_errf(e, DS_ERR_FORMAT, "%s: block '%s': \"columns\" must be an array of indices and \"rows\" an object {\"row\": [columns]}", file, key);
    double* W0 = NULL;
    int64_t R, C;
    DS_TRY(ds_edit_read_matrix(e, ws, l->name, &W0, &R, &C));
    uint8_t* mask = ds_calloc(e, (size_t)(R * C), 1, "prune mask");
    l->delta = ds_malloc(e, sizeof(float) * (size_t)(R * C), "prune delta");
    double* dW = ds_calloc(e, (size_t)(R * C), sizeof(double), "prune delta");
    int rc = (!mask || !l->delta || !dW) ? DS_ERR_OOM : DS_OK;
    const cJSON* it;
    if (!rc && cols) cJSON_ArrayForEach(it, cols) {
        int64_t j;
        if (!json_index(it, C, &j)) { rc = ds_errf(e, DS_ERR_ARG, "%s: block '%s': column %g is not an index in [0, %lld)", file, key, it->valuedouble, (long long)C); break; }
        for (int64_t r = 0; r < R; r++) mask[r * C + j] = 1;
    }
    if (!rc && rows) cJSON_ArrayForEach(it, rows) {
        char* end;
        long long r = strtoll(it->string, &end, 10);
        if (*end || end == it->string || r < 0 || r >= R) { rc = ds_errf(e, DS_ERR_ARG, "%s: block '%s': row '%s' is not an index in [0, %lld)", file, key, it->string, (long long)R); break; }
        if (!cJSON_IsArray(it)) { rc = ds_errf(e, DS_ERR_FORMAT, "%s: block '%s': row '%s' must list column indices", file, key, it->string); break; }
        const cJSON* v;
        cJSON_ArrayForEach(v, it) {
            int64_t j;
            if (!json_index(v, C, &j)) { rc = ds_errf(e, DS_ERR_ARG, "%s: block '%s': row %lld: column %g is not an index in [0, %lld)", file, key, r, v->valuedouble, (long long)C); break; }
            mask[r * C + j] = 1;
        }
        if (rc) break;
    }
    if (!rc) {
        for (int64_t q = 0; q < R * C; q++)
            if (mask[q]) dW[q] = -W0[q];
        finish_layer(l, W0, dW);
    }
    free(mask);
    free(dW);
    free(W0);
    return rc;
}

int ds_prune_run(ds_edit_model* em, ds_err* e, const char* neurons_path, ds_edit_result* out) {
    memset(out, 0, sizeof *out);
    char* text = NULL;
    DS_TRY(ds_read_file(e, neurons_path, &text, NULL));
    cJSON* root = cJSON_Parse(text);
    free(text);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return ds_errf(e, DS_ERR_FORMAT, "%s: not a JSON object (see docs/editing.md for the neurons.json format)", neurons_path);
    }
    int rc = DS_OK;
    const cJSON* fmt = cJSON_GetObjectItemCaseSensitive(root, "format");
    const cJSON* ver = cJSON_GetObjectItemCaseSensitive(root, "version");
    const cJSON* arch = cJSON_GetObjectItemCaseSensitive(root, "arch");
    const cJSON* blocks = cJSON_GetObjectItemCaseSensitive(root, "blocks");
    const char* model_arch = em->m->arch == DS_ARCH_SD2 ? "SD2.x" : "SD1.x";
    if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, "diffscope-neurons") != 0)
        rc = ds_errf(e, DS_ERR_FORMAT, "%s: \"format\" must be \"diffscope-neurons\"", neurons_path);
    else if (!cJSON_IsNumber(ver) || ver->valuedouble != 1)
        rc = ds_errf(e, DS_ERR_UNSUPPORTED, "%s: \"version\" must be 1", neurons_path);
    else if (arch && (!cJSON_IsString(arch) || strncasecmp(arch->valuestring, model_arch, 3) != 0))
        rc = ds_errf(e, DS_ERR_ARG, "%s: made for %s, but this model is %s", neurons_path,
                     cJSON_IsString(arch) ? arch->valuestring : "(not a string)", model_arch);
    else if (!cJSON_IsObject(blocks) || !blocks->child)
        rc = ds_errf(e, DS_ERR_FORMAT, "%s: \"blocks\" must be a non-empty object {\"<transformer block path>\": {...}}", neurons_path);
    if (!rc) {
        out->n = cJSON_GetArraySize(blocks);
        out->layers = ds_calloc(e, (size_t)out->n, sizeof(ds_edit_layer), "prune layers");
        if (!out->layers) rc = DS_ERR_OOM;
        int i = 0;
        const cJSON* b;
        cJSON_ArrayForEach(b, blocks) {
            if (rc) break;
            if (!cJSON_IsObject(b)) { rc = ds_errf(e, DS_ERR_FORMAT, "%s: block '%s' must be an object", neurons_path, b->string); break; }
            rc = prune_block(em, e, neurons_path, b->string, b, &out->layers[i]);
            for (int q = 0; !rc && q < i; q++)
                if (strcmp(out->layers[q].name, out->layers[i].name) == 0)
                    rc = ds_errf(e, DS_ERR_FORMAT, "%s: block '%s' is listed twice", neurons_path, b->string);
            i++;
        }
    }
    cJSON_Delete(root);
    if (rc) ds_edit_result_free(out);
    return rc;
}
