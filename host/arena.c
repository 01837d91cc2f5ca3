// arena.c — stack arena over large backend blocks (see arena.h).
#include "arena.h"

#include <string.h>

void ds_arena_init(ds_arena* a, ds_backend* be, int64_t min_block_floats) {
    memset(a, 0, sizeof *a);
    a->be = be;
    a->min_block = min_block_floats > 0 ? min_block_floats : (int64_t)16 << 20;
}

void ds_arena_release(ds_arena* a) {
    for (int i = 0; i < a->n_blocks; i++) a->be->free(a->be, a->block[i]);
    a->n_blocks = 0;
    a->cur = 0;
    a->used = 0;
}

static int64_t position(const ds_arena* a) {
    int64_t p = a->used;
    for (int i = 0; i < a->cur; i++) p += a->cap[i];
    return p;
}

float* ds_arena_alloc(ds_arena* a, ds_err* e, int64_t n) {
    n = (n + 15) & ~(int64_t)15;
    int64_t tried = n;  // the block that could not be had, for the message
    for (;;) {
        if (a->cur < a->n_blocks && a->used + n <= a->cap[a->cur]) {
            float* p = a->block[a->cur] + a->used;
            a->used += n;
            int64_t pos = position(a);
            if (pos > a->peak) a->peak = pos;
            return p;
        }
        if (a->cur + 1 < a->n_blocks && a->used > 0) {  // next kept block
            a->cur++;
            a->used = 0;
            continue;
        }
        if (a->cur < a->n_blocks && a->used == 0 && a->cap[a->cur] < n) {
            // an empty kept block too small for this request: replace it by a larger one
            a->be->free(a->be, a->block[a->cur]);
            a->block[a->cur] = a->be->alloc(a->be, n);
            a->cap[a->cur] = a->block[a->cur] ? n : 0;
            tried = n;
            if (!a->block[a->cur]) break;
            continue;
        }
        if (a->n_blocks == DS_ARENA_MAX_BLOCKS) break;
        int64_t cap = n > a->min_block ? n : a->min_block;
        if (a->n_blocks && cap < 2 * a->cap[a->n_blocks - 1]) cap = 2 * a->cap[a->n_blocks - 1];
        float* p = a->be->alloc(a->be, cap);
        tried = cap;
        if (!p) break;
        a->block[a->n_blocks] = p;
        a->cap[a->n_blocks] = cap;
        a->n_blocks++;
        if (a->used > 0 || a->cur >= a->n_blocks - 1) {
            a->cur = a->n_blocks - 1;
            a->used = 0;
        }
    }
    ds_errf(e, DS_ERR_OOM,
            "out of %s: %.1f MB more for the activations could not be had (%.1f MB held; a smaller image or "
            "batch needs less)",
            a->be->memory_name, (double)tried * a->be->act_bytes / 1e6,
            (double)ds_arena_bytes_reserved(a) / 4 * a->be->act_bytes / 1e6);
    return NULL;
}

ds_arena_mark ds_arena_get_mark(const ds_arena* a) { return (ds_arena_mark){a->cur, a->used}; }

void ds_arena_reset(ds_arena* a, ds_arena_mark m) {
    a->cur = m.block;
    a->used = m.used;
}

int64_t ds_arena_bytes_reserved(const ds_arena* a) {
    int64_t s = 0;
    for (int i = 0; i < a->n_blocks; i++) s += a->cap[i];
    return s * 4;
}

ds_tensor ds_arena_tensor(ds_arena* a, ds_err* e, int ndim, int64_t d0, int64_t d1, int64_t d2,
                          int64_t d3) {
    ds_tensor t = {0};
    t.ndim = ndim;
    int64_t d[4] = {d0, d1, d2, d3}, n = 1;
    for (int i = 0; i < ndim; i++) { t.ne[i] = d[i]; n *= d[i]; }
    t.data = ds_arena_alloc(a, e, n);
    return t;
}
