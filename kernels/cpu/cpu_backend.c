// cpu_backend.c — the CPU reference backend: vtable, memory, scratch, thread setup.
#include <omp.h>
#include <string.h>
#include <sys/mman.h>

#include "cpu_ops.h"

// OpenBLAS' own thread-count setter (declared in its cblas.h, which we avoid pulling in here).
void openblas_set_num_threads(int num_threads);

#define DS_CPU_ALIGN 64
#define DS_CPU_HUGE ((size_t)2 << 20)
#define DS_CPU_HUGE_MIN ((size_t)64 << 20)

static void cpu_sync(ds_backend* be) { (void)be; }

static float* cpu_alloc(ds_backend* be, int64_t n) {
    (void)be;
    if (n < 0) return NULL;
    size_t bytes = (size_t)(n > 0 ? n : 1) * sizeof(float);
    if (bytes >= DS_CPU_HUGE_MIN) {
        // large blocks (the weights): 2 MB aligned and marked for transparent huge pages, so
        // first touch faults in 2 MB at a time instead of 4 KB (THP "madvise" mode is common)
        bytes = (bytes + DS_CPU_HUGE - 1) / DS_CPU_HUGE * DS_CPU_HUGE;
        void* p = aligned_alloc(DS_CPU_HUGE, bytes);
#ifdef MADV_HUGEPAGE
        if (p) madvise(p, bytes, MADV_HUGEPAGE);
#endif
        return (float*)p;
    }
    bytes = (bytes + DS_CPU_ALIGN - 1) / DS_CPU_ALIGN * DS_CPU_ALIGN;  // aligned_alloc's contract
    return (float*)aligned_alloc(DS_CPU_ALIGN, bytes);
}

static void cpu_free(ds_backend* be, float* p) {
    (void)be;
    free(p);
}

static void cpu_copy(ds_backend* be, float* dst, const float* src, int64_t n) {
    (void)be;
    if (n > 0 && dst != src) memmove(dst, src, (size_t)n * sizeof(float));
}

float* ds_cpu_scratch(ds_backend* be, int64_t n) {
    ds_cpu_impl* c = ds_cpu(be);
    if (n > c->scratch_cap) {
        free(c->scratch);
        c->scratch = cpu_alloc(be, n);
        DS_ASSERT(c->scratch != NULL && "CPU backend scratch allocation failed");
        c->scratch_cap = n;
    }
    return c->scratch;
}

void ds_cpu_set_budgets(ds_backend* be, int64_t conv_scratch_floats, int64_t attn_tile_floats) {
    ds_cpu_impl* c = ds_cpu(be);
    if (conv_scratch_floats > 0) c->conv_scratch_max = conv_scratch_floats;
    if (attn_tile_floats > 0) c->attn_tile_max = attn_tile_floats;
}

ds_backend* ds_backend_cpu_create(int threads) {
    ds_backend* be = (ds_backend*)calloc(1, sizeof(ds_backend));
    ds_cpu_impl* c = (ds_cpu_impl*)calloc(1, sizeof(ds_cpu_impl));
    if (!be || !c) {
        free(be);
        free(c);
        return NULL;
    }
    // One thread pool: our ops split every GEMM over OpenMP threads themselves, so OpenBLAS must
    // not start its own threads inside them (two spinning pools on the same cores). This is a
    // process-wide OpenBLAS setting; other OpenBLAS / LAPACK calls in the process become
    // single-threaded too.
    openblas_set_num_threads(1);
    c->threads = threads > 0 ? threads : omp_get_max_threads();
    if (c->threads < 1) c->threads = 1;
    c->conv_scratch_max = (int64_t)16 << 20;  // 64 MB of im2col rows
    c->attn_tile_max = (int64_t)1 << 20;      // ≤ 4 MB per probability tile (and ≤ 128 rows)

    be->name = "cpu";
    be->memory_name = "memory";
    be->act_bytes = 4;
    be->impl = c;
    be->destroy = ds_backend_cpu_free;
    be->alloc = cpu_alloc;
    be->alloc_f32 = cpu_alloc;
    be->free = cpu_free;
    be->upload = cpu_copy;
    be->download = cpu_copy;
    be->copy = cpu_copy;
    be->sync = cpu_sync;
    be->linear = ds_cpu_linear;
    be->conv2d = ds_cpu_conv2d;
    be->group_norm = ds_cpu_group_norm;
    be->layer_norm = ds_cpu_layer_norm;
    be->attention = ds_cpu_attention;
    be->act = ds_cpu_act;
    be->geglu = ds_cpu_geglu;
    be->add = ds_cpu_add;
    be->scale = ds_cpu_scale;
    be->add_channel_bias = ds_cpu_add_channel_bias;
    be->upsample_nearest2x = ds_cpu_upsample_nearest2x;
    be->concat_channels = ds_cpu_concat_channels;
    be->nchw_to_nhwc = ds_cpu_nchw_to_nhwc;
    be->nhwc_to_nchw = ds_cpu_nhwc_to_nchw;
    be->timestep_embedding = ds_cpu_timestep_embedding;
    be->embed_tokens = ds_cpu_embed_tokens;
    be->column_stats = ds_cpu_column_stats;
    return be;
}

void ds_backend_cpu_free(ds_backend* be) {
    if (!be) return;
    ds_cpu_impl* c = ds_cpu(be);
    if (c) free(c->scratch);
    free(c);
    free(be);
}
