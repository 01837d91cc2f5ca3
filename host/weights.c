// weights.c — the named weight store (see weights.h).
#include "weights.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>
#if defined(__F16C__) && defined(__AVX__)
#include <immintrin.h>
#endif

typedef struct entry {
    char* name;
    const ds_st_file* file;
    const ds_st_tensor* src;
    size_t byte_offset;  // into src->data (views of fused tensors)
    int ndim;
    int64_t shape[DS_ST_MAX_DIMS];
    int dropped;
} entry;

typedef struct binding {
    int entry;
    ds_weight_layout layout;
    const float** slot;
} binding;

struct ds_weights {
    ds_backend* be;
    ds_st_file** files;
    int n_files, cap_files;
    entry* entries;
    int n_entries, cap_entries;
    int* table;  // open-addressing hash: index+1 of an entry, 0 empty
    int table_cap;
    binding* binds;
    int n_binds, cap_binds;
    float* block;  // the one backend allocation
    size_t block_bytes;
    int threads;   // conversion threads (0: OpenMP's default)
    int synth;     // ds_weights_synthesize: unknown bound tensors become random entries
    uint64_t synth_seed;
};

static uint64_t hash_str(const char* s) {
    uint64_t h = 1469598103934665603ull;  // FNV-1a
    while (*s) h = (h ^ (unsigned char)*s++) * 1099511628211ull;
    return h;
}

static int find_entry(const ds_weights* ws, const char* name) {
    if (!ws->table_cap) return -1;
    for (uint64_t i = hash_str(name) & (uint64_t)(ws->table_cap - 1);; i = (i + 1) & (uint64_t)(ws->table_cap - 1)) {
        int v = ws->table[i];
        if (!v) return -1;
        if (!ws->entries[v - 1].dropped && strcmp(ws->entries[v - 1].name, name) == 0) return v - 1;
    }
}

static int rehash(ds_weights* ws, ds_err* e, int cap) {
    int* t = ds_calloc(e, (size_t)cap, sizeof(int), "weight table");
    if (!t) return DS_ERR_OOM;
    for (int k = 0; k < ws->n_entries; k++) {
        if (ws->entries[k].dropped) continue;
        uint64_t i = hash_str(ws->entries[k].name) & (uint64_t)(cap - 1);
        while (t[i]) i = (i + 1) & (uint64_t)(cap - 1);
        t[i] = k + 1;
    }
    free(ws->table);
    ws->table = t;
    ws->table_cap = cap;
    return DS_OK;
}

static int add_entry(ds_weights* ws, ds_err* e, const char* name, const ds_st_file* f,
                     const ds_st_tensor* t, size_t byte_offset, int ndim, const int64_t* shape) {
    int old = find_entry(ws, name);
    if (old >= 0) ws->entries[old].dropped = 1;  // a later definition replaces an earlier one
    if (ws->n_entries == ws->cap_entries) {
        int cap = ws->cap_entries ? 2 * ws->cap_entries : 1024;
        entry* ne = realloc(ws->entries, sizeof(entry) * (size_t)cap);
        if (!ne) return ds_errf(e, DS_ERR_OOM, "out of memory for the weight table");
        ws->entries = ne;
        ws->cap_entries = cap;
    }
    entry* en = &ws->entries[ws->n_entries++];
    memset(en, 0, sizeof *en);
    en->name = strdup(name);
    en->file = f;
    en->src = t;
    en->byte_offset = byte_offset;
    en->ndim = ndim;
    memcpy(en->shape, shape, sizeof(int64_t) * (size_t)ndim);
    if (2 * ws->n_entries > ws->table_cap) return rehash(ws, e, ws->table_cap ? 2 * ws->table_cap : 4096);
    uint64_t i = hash_str(name) & (uint64_t)(ws->table_cap - 1);
    while (ws->table[i]) i = (i + 1) & (uint64_t)(ws->table_cap - 1);
    ws->table[i] = ws->n_entries;
    return DS_OK;
}

ds_weights* ds_weights_create(ds_backend* be) {
    ds_weights* ws = calloc(1, sizeof *ws);
    if (ws) ws->be = be;
    return ws;
}

void ds_weights_free(ds_weights* ws) {
    if (!ws) return;
    for (int i = 0; i < ws->n_entries; i++) free(ws->entries[i].name);
    for (int i = 0; i < ws->n_files; i++) ds_st_close(ws->files[i]);
    if (ws->block) ws->be->free(ws->be, ws->block);
    free(ws->entries);
    free(ws->files);
    free(ws->table);
    free(ws->binds);
    free(ws);
}

int ds_weights_add_file(ds_weights* ws, ds_err* e, const char* path, const char* prefix) {
    ds_st_file* f;
    DS_TRY(ds_st_open(e, path, &f));
    if (ws->n_files == ws->cap_files) {
        int cap = ws->cap_files ? 2 * ws->cap_files : 8;
        ds_st_file** nf = realloc(ws->files, sizeof(ds_st_file*) * (size_t)cap);
        if (!nf) { ds_st_close(f); return ds_errf(e, DS_ERR_OOM, "out of memory"); }
        ws->files = nf;
        ws->cap_files = cap;
    }
    ws->files[ws->n_files++] = f;
    size_t lp = strlen(prefix);
    for (int i = 0; i < f->n_tensors; i++) {
        const ds_st_tensor* t = &f->tensors[i];
        size_t ln = strlen(t->name);
        char* name = malloc(lp + ln + 1);
        if (!name) return ds_errf(e, DS_ERR_OOM, "out of memory");
        memcpy(name, prefix, lp);
        memcpy(name + lp, t->name, ln + 1);
        int rc = add_entry(ws, e, name, f, t, 0, t->ndim, t->shape);
        free(name);
        DS_TRY(rc);
    }
    return DS_OK;
}

int ds_weights_n_files(const ds_weights* ws) { return ws->n_files; }
const ds_st_file* ds_weights_file(const ds_weights* ws, int i) { return ws->files[i]; }

int ds_weights_alias(ds_weights* ws, ds_err* e, const char* name, const ds_st_file* f,
                     const ds_st_tensor* t, int64_t row0, int ndim, const int64_t* shape) {
    int64_t row = 1, n = 1;
    for (int d = 1; d < t->ndim; d++) row *= t->shape[d];
    for (int d = 0; d < ndim; d++) n *= shape[d];
    int64_t rows_total = t->ndim ? t->shape[0] : 1;
    if (row0 < 0 || (row0 * row + n) > rows_total * row)
        return ds_errf(e, DS_ERR_FORMAT, "%s: tensor '%s' is too small to hold '%s'", f->path, t->name, name);
    return add_entry(ws, e, name, f, t, (size_t)(row0 * row) * ds_dtype_size(t->dtype), ndim, shape);
}

void ds_weights_drop_prefix(ds_weights* ws, const char* prefix) {
    size_t lp = strlen(prefix);
    for (int i = 0; i < ws->n_entries; i++)
        if (strncmp(ws->entries[i].name, prefix, lp) == 0) ws->entries[i].dropped = 1;
}

int ds_weights_has(const ds_weights* ws, const char* name) { return find_entry(ws, name) >= 0; }

int ds_weights_shape(const ds_weights* ws, const char* name, int64_t shape[8]) {
    int i = find_entry(ws, name);
    if (i < 0) return 0;
    memcpy(shape, ws->entries[i].shape, sizeof(int64_t) * (size_t)ws->entries[i].ndim);
    return ws->entries[i].ndim;
}

int ds_weights_dtype(const ds_weights* ws, const char* name) {
    int i = find_entry(ws, name);
    return i < 0 ? -1 : (int)ws->entries[i].src->dtype;
}

int ds_weights_source(const ds_weights* ws, const char* name, const ds_st_file** file,
                      const ds_st_tensor** tensor, size_t* byte_offset) {
    int i = find_entry(ws, name);
    if (i < 0) return 0;
    if (file) *file = ws->entries[i].file;
    if (tensor) *tensor = ws->entries[i].src;
    if (byte_offset) *byte_offset = ws->entries[i].byte_offset;
    return 1;
}

static int64_t entry_numel(const entry* en) {
    int64_t n = 1;
    for (int d = 0; d < en->ndim; d++) n *= en->shape[d];
    return n;
}

int64_t ds_weights_count_params(const ds_weights* ws, const char* prefix) {
    size_t lp = strlen(prefix);
    int64_t n = 0;
    for (int i = 0; i < ws->n_entries; i++)
        if (!ws->entries[i].dropped && strncmp(ws->entries[i].name, prefix, lp) == 0) n += entry_numel(&ws->entries[i]);
    return n;
}

int ds_weights_n_entries(const ds_weights* ws) { return ws->n_entries; }
const char* ds_weights_entry_name(const ds_weights* ws, int i) {
    return ws->entries[i].dropped ? NULL : ws->entries[i].name;
}

static void format_shape(char* buf, size_t n, int ndim, const int64_t* s) {
    size_t k = (size_t)snprintf(buf, n, "(");
    for (int d = 0; d < ndim && k < n; d++) k += (size_t)snprintf(buf + k, n - k, d ? ", %lld" : "%lld", (long long)s[d]);
    if (k < n) snprintf(buf + k, n - k, ")");
}

static int squeezed_ndim(int ndim, const int64_t* s) {
    while (ndim > 1 && s[ndim - 1] == 1) ndim--;
    return ndim;
}

void ds_weights_synthesize(ds_weights* ws, uint64_t seed) {
    ws->synth = 1;
    ws->synth_seed = seed;
}

// Deterministic random values for a synthetic tensor (entry without a source), in bound layout.
static void synth_fill(const ds_weights* ws, const entry* en, float* out, size_t n) {
    uint64_t s = ws->synth_seed ^ hash_str(en->name);
    const size_t len = strlen(en->name);
    const int is_1d = en->ndim == 1, is_bias = len >= 4 && !strcmp(en->name + len - 4, "bias");
    const double fan_in = en->ndim > 1 ? (double)n / (double)en->shape[0] : 1.0;
    const double a = is_1d ? 0.01 : sqrt(3.0 / fan_in);  // uniform(−a, a): variance 1/fan_in
    for (size_t k = 0; k < n; k++) {
        s += 0x9E3779B97F4A7C15ull;  // splitmix64
        uint64_t z = s;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        double u = (double)(z >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0;
        out[k] = (float)((is_1d && !is_bias ? 1.0 : 0.0) + a * u);
    }
}

int ds_weights_bind(ds_weights* ws, ds_err* e, const char* name, int ndim, const int64_t* shape,
                    ds_weight_layout layout, const float** slot) {
    int i = find_entry(ws, name);
    if (i < 0 && ws->synth && ndim >= 1 && ndim <= DS_ST_MAX_DIMS) {
        DS_TRY(add_entry(ws, e, name, NULL, NULL, 0, ndim, shape));
        i = find_entry(ws, name);
    }
    if (i < 0) {
        const char* file = ws->n_files ? ws->files[0]->path : "(no file)";
        return ds_errf(e, DS_ERR_FORMAT, "missing tensor '%s' (model files start with %s)", name, file);
    }
    const entry* en = &ws->entries[i];
    int a = squeezed_ndim(en->ndim, en->shape), b = squeezed_ndim(ndim, shape);
    int same = (a == b);
    for (int d = 0; same && d < a; d++) same = en->shape[d] == shape[d];
    if (!same) {
        char s1[128], s2[128];
        format_shape(s1, sizeof s1, en->ndim, en->shape);
        format_shape(s2, sizeof s2, ndim, shape);
        return ds_errf(e, DS_ERR_FORMAT, "%s: tensor '%s' has shape %s, expected %s", en->file->path, name, s1, s2);
    }
    if (en->src && en->src->dtype != DS_DTYPE_F32 && en->src->dtype != DS_DTYPE_F16 &&
        en->src->dtype != DS_DTYPE_BF16 && en->src->dtype != DS_DTYPE_F64)
        return ds_errf(e, DS_ERR_FORMAT, "%s: tensor '%s' has dtype %s, expected a float type",
                       en->file->path, name, ds_dtype_name(en->src->dtype));
    if (layout == DS_LAYOUT_CONV_OHWI && ndim != 4)
        return ds_errf(e, DS_ERR_INTERNAL, "conv layout needs a 4-d shape for '%s'", name);
    if (ws->n_binds == ws->cap_binds) {
        int cap = ws->cap_binds ? 2 * ws->cap_binds : 1024;
        binding* nb = realloc(ws->binds, sizeof(binding) * (size_t)cap);
        if (!nb) return ds_errf(e, DS_ERR_OOM, "out of memory");
        ws->binds = nb;
        ws->cap_binds = cap;
    }
    ws->binds[ws->n_binds++] = (binding){i, layout, slot};
    *slot = NULL;
    return DS_OK;
}

int ds_weights_bindf(ds_weights* ws, ds_err* e, const float** slot, ds_weight_layout layout,
                     int ndim, const int64_t* shape, const char* fmt, ...) {
    char name[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return ds_weights_bind(ws, e, name, ndim, shape, layout, slot);
}

int ds_weights_unbind(ds_weights* ws, const float** slot) {
    int k = 0, n = 0;
    for (int b = 0; b < ws->n_binds; b++) {
        if (ws->binds[b].slot == slot) { n++; continue; }
        ws->binds[k++] = ws->binds[b];
    }
    ws->n_binds = k;
    *slot = NULL;
    return n;
}

void ds_weights_set_threads(ds_weights* ws, int threads) { ws->threads = threads > 0 ? threads : 0; }

// fp16 → fp32 of n elements on the calling thread. F16C's conversion is exact like
// ds_f16_to_f32 (every fp16 value is an fp32 value); a block holding a NaN or Inf goes through
// ds_f16_to_f32 so NaN payloads come out the same too.
static void f16_to_f32_run(const uint8_t* s, float* d, size_t n) {
    size_t i = 0;
#if defined(__F16C__) && defined(__AVX__)
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i*)(const void*)(s + 2 * i));
        __m128i ex = _mm_and_si128(h, _mm_set1_epi16(0x7c00));
        if (_mm_movemask_epi8(_mm_cmpeq_epi16(ex, _mm_set1_epi16(0x7c00)))) {
            for (size_t j = i; j < i + 8; j++) { uint16_t v; memcpy(&v, s + 2 * j, 2); d[j] = ds_f16_to_f32(v); }
            continue;
        }
        _mm256_storeu_ps(d + i, _mm256_cvtph_ps(h));
    }
#endif
    for (; i < n; i++) { uint16_t v; memcpy(&v, s + 2 * i, 2); d[i] = ds_f16_to_f32(v); }
}

// Host conversion of one tensor into dst (the CPU backend's block), split over `threads`
// (0: OpenMP's default) in 64 KB pieces for large tensors.
static int convert_host(ds_err* e, ds_dtype t, const void* src, float* dst, size_t n, const char* what, int threads) {
    if (t != DS_DTYPE_F16) {
        if (threads == 1) {
            // the shared converter parallelizes large tensors over the default team: keep it on
            // this thread (bf16: a shift; f32: memcpy; f64: a cast)
            const size_t piece = (size_t)1 << 16;
            for (size_t o = 0; o < n; o += piece)
                DS_TRY(ds_convert_to_f32(e, t, (const uint8_t*)src + o * ds_dtype_size(t), dst + o, n - o < piece ? n - o : piece, what));
            return DS_OK;
        }
        return ds_convert_to_f32(e, t, src, dst, n, what);
    }
    const uint8_t* s = src;
    const size_t piece = (size_t)1 << 15;  // elements
    const int64_t np = (int64_t)((n + piece - 1) / piece);
    if (threads == 1 || np < 4) {
        f16_to_f32_run(s, dst, n);
        return DS_OK;
    }
    if (threads > 0) {
#pragma omp parallel for schedule(static) num_threads(threads)
        for (int64_t p = 0; p < np; p++) {
            size_t o = (size_t)p * piece;
            f16_to_f32_run(s + 2 * o, dst + o, n - o < piece ? n - o : piece);
        }
    } else {
#pragma omp parallel for schedule(static)
        for (int64_t p = 0; p < np; p++) {
            size_t o = (size_t)p * piece;
            f16_to_f32_run(s + 2 * o, dst + o, n - o < piece ? n - o : piece);
        }
    }
    return DS_OK;
}

int ds_weights_gather_rows(const ds_weights* ws, ds_err* e, const char* name, const int32_t* rows,
                           int n, float* out) {
    int i = find_entry(ws, name);
    if (i < 0) return ds_errf(e, DS_ERR_FORMAT, "missing tensor '%s'", name);
    const entry* en = &ws->entries[i];
    if (!en->src) return ds_errf(e, DS_ERR_ARG, "tensor '%s' is synthetic (no rows to gather)", name);
    int nd = squeezed_ndim(en->ndim, en->shape);
    if (nd != 2) return ds_errf(e, DS_ERR_FORMAT, "%s: tensor '%s' is not a matrix", en->file->path, name);
    const int64_t R = en->shape[0], C = en->shape[1];
    const size_t es = ds_dtype_size(en->src->dtype);
    for (int r = 0; r < n; r++) {
        if (rows[r] < 0 || rows[r] >= R)
            return ds_errf(e, DS_ERR_ARG, "row %d of '%s' is out of range (%lld rows)", (int)rows[r], name, (long long)R);
        const uint8_t* src = en->src->data + en->byte_offset + (size_t)rows[r] * (size_t)C * es;
        if (en->src->dtype == DS_DTYPE_F16) f16_to_f32_run(src, out + (size_t)r * (size_t)C, (size_t)C);
        else DS_TRY(ds_convert_to_f32(e, en->src->dtype, src, out + (size_t)r * (size_t)C, (size_t)C, en->name));
    }
    return DS_OK;
}

int ds_weights_materialize(ds_weights* ws, ds_err* e) {
    // One allocation holds every distinct bound entry (an entry bound twice is converted once).
    int64_t total = 0;
    int64_t* offset = ds_malloc(e, sizeof(int64_t) * (size_t)(ws->n_entries + 1), "weight offsets");
    if (!offset) return DS_ERR_OOM;
    for (int i = 0; i < ws->n_entries; i++) offset[i] = -1;
    for (int b = 0; b < ws->n_binds; b++) {
        int i = ws->binds[b].entry;
        if (offset[i] >= 0) continue;
        offset[i] = total;
        total += (entry_numel(&ws->entries[i]) + 15) & ~(int64_t)15;  // 64-byte aligned rows
    }
    ws->block = total ? ws->be->alloc(ws->be, total) : NULL;
    if (total && !ws->block) {
        free(offset);
        return ds_errf(e, DS_ERR_OOM, "out of %s: the weights need %.1f MB", ws->be->memory_name,
                       (double)total * ws->be->act_bytes / 1e6);
    }
    ws->block_bytes = (size_t)total * (size_t)ws->be->act_bytes;
    float* tmp = NULL;
    size_t tmp_cap = 0;
    int rc = DS_OK;
    const int host_backend = strcmp(ws->be->name, "cpu") == 0;  // backend memory is host memory
    char* done = ds_calloc(e, (size_t)ws->n_entries + 1, 1, "weight flags");
    if (!done) { free(offset); return DS_ERR_OOM; }
    for (int b = 0; b < ws->n_binds && rc == DS_OK; b++) {
        int i = ws->binds[b].entry;
        const entry* en = &ws->entries[i];
        float* dst = ws->block + offset[i];
        *ws->binds[b].slot = dst;
        if (done[i]) continue;
        done[i] = 1;
        size_t n = (size_t)entry_numel(en);
        const int conv = ws->binds[b].layout == DS_LAYOUT_CONV_OHWI;
        if (!en->src) {  // synthetic (ds_weights_synthesize): random values, already in bound layout
            float* host = host_backend ? dst : NULL;
            if (!host) {
                if (n > tmp_cap) {
                    free(tmp);
                    tmp_cap = n;
                    tmp = ds_malloc(e, tmp_cap * sizeof(float), "weight conversion buffer");
                    if (!tmp) { rc = DS_ERR_OOM; break; }
                }
                host = tmp;
            }
            synth_fill(ws, en, host, n);
            if (host != dst) ws->be->upload(ws->be, dst, host, (int64_t)n);
            continue;
        }
        const void* src = en->src->data + en->byte_offset;
        if (host_backend && !conv) {  // host memory: convert straight into the block
            rc = convert_host(e, en->src->dtype, src, dst, n, en->name, ws->threads);
            if (rc) break;
        } else {
            // conv weights: (O, I, kh, kw) → (O, kh, kw, I) through a scratch buffer; device
            // backends: convert on the host, then upload
            size_t need = conv ? 2 * n : n;
            if (need > tmp_cap) {
                free(tmp);
                tmp_cap = need;
                tmp = ds_malloc(e, tmp_cap * sizeof(float), "weight conversion buffer");
                if (!tmp) { rc = DS_ERR_OOM; break; }
            }
            rc = ds_convert_to_f32(e, en->src->dtype, src, tmp, n, en->name);
            if (rc) break;
            const float* host = tmp;
            if (conv) {
                int64_t O = en->shape[0], I = en->shape[1], KH = en->ndim > 2 ? en->shape[2] : 1,
                        KW = en->ndim > 3 ? en->shape[3] : 1;
                float* r = host_backend ? dst : tmp + n;
#pragma omp parallel for schedule(static) if (n > (1u << 16))
                for (int64_t o = 0; o < O; o++)
                    for (int64_t c = 0; c < I; c++)
                        for (int64_t y = 0; y < KH; y++)
                            for (int64_t x = 0; x < KW; x++)
                                r[((o * KH + y) * KW + x) * I + c] = tmp[((o * I + c) * KH + y) * KW + x];
                host = r;
            }
            if (host != dst) ws->be->upload(ws->be, dst, host, (int64_t)n);
        }
        // the weight now lives in the backend block: drop its mapped file pages from the resident
        // set (they are paged in again from the file if an editor reads the tensor later)
        ds_st_release_range(en->file, en->src->data + en->byte_offset, n * ds_dtype_size(en->src->dtype));
    }
    free(done);
    free(tmp);
    free(offset);
    return rc;
}

size_t ds_weights_bytes(const ds_weights* ws) { return ws->block_bytes; }
