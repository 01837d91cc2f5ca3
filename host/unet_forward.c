// unet_forward.c — the UNet2DConditionModel forward pass against the op interface (see unet.h).
//
// Memory: every intermediate comes from the run's arena. A module allocates its output first,
// takes a mark, allocates its temporaries and resets to the mark when done, so only outputs
// survive. Skip connections (conv_in, each down resnet/attention, each downsampler) stay on the
// arena stack until the end of the call; inside an up block the resnet/attention outputs
// ping-pong between two buffers and only the block output survives.
#include <math.h>
#include <string.h>

#include "unet.h"

typedef struct fw {
    const ds_unet* u;
    ds_run* r;
    ds_backend* be;
    ds_arena* a;
    ds_err* e;
    int B;
    const float* temb_silu;  // silu(time embedding) (B, T), shared by every resnet
    const ds_tensor* ctx;    // (B, Lctx, D)
} fw;

static float* A(fw* f, int64_t n) { return ds_arena_alloc(f->a, f->e, n); }

static ds_tensor nhwc(float* data, int64_t n, int64_t h, int64_t w, int64_t c) {
    ds_tensor t = {data, 4, {n, h, w, c}};
    return t;
}

#define ALLOC(ptr, n)                  \
    do {                               \
        if (!((ptr) = A(f, (n)))) {    \
            ds_arena_reset(f->a, mark); \
            return DS_ERR_OOM;         \
        }                              \
    } while (0)

static int cancelled(fw* f, const char* path) {
    if (f->r->cancelled)
        return ds_errf(f->e, DS_ERR_CANCELLED, "cancelled by the observer at %s", path);
    return DS_OK;
}

// ResnetBlock2D: x (B,H,W,cin) → y (B,H,W,cout), y preallocated and distinct from x.
static int resnet_forward(fw* f, const ds_unet_resnet* R, const ds_tensor* x, ds_tensor* y,
                          float out_scale) {
    ds_backend* be = f->be;
    const ds_unet_config* c = &f->u->cfg;
    int64_t B = x->ne[0], H = x->ne[1], W = x->ne[2], S = H * W, n = B * S;
    ds_arena_mark mark = ds_arena_get_mark(f->a);
    float *t1, *t2, *t3, *tp, *res = x->data;
    ALLOC(t1, n * R->cin);
    ALLOC(t2, n * R->cout);
    ALLOC(t3, n * R->cout);
    ALLOC(tp, B * R->cout);
    be->group_norm(be, x->data, R->norm1_g, R->norm1_b, t1, B, S, R->cin, c->norm_num_groups, c->norm_eps, 1);
    ds_tensor t1t = nhwc(t1, B, H, W, R->cin), t2t = nhwc(t2, B, H, W, R->cout);
    be->conv2d(be, &t1t, R->conv1_w, R->conv1_b, R->cout, 3, 3, 1, 1, NULL, &t2t);
    be->linear(be, f->temb_silu, R->temb_w, R->temb_b, NULL, tp, B, R->cout, c->time_embed_dim);
    be->add_channel_bias(be, t2, tp, t3, B, S, R->cout);
    be->group_norm(be, t3, R->norm2_g, R->norm2_b, t2, B, S, R->cout, c->norm_num_groups, c->norm_eps, 1);
    if (R->short_w) {  // 1×1 conv_shortcut: a linear over pixels
        ALLOC(res, n * R->cout);
        be->linear(be, x->data, R->short_w, R->short_b, NULL, res, n, R->cout, R->cin);
    }
    if (out_scale == 1.f) {
        be->conv2d(be, &t2t, R->conv2_w, R->conv2_b, R->cout, 3, 3, 1, 1, res, y);
    } else {  // (shortcut + conv2(h)) / output_scale_factor
        ds_tensor t3t = nhwc(t3, B, H, W, R->cout);
        be->conv2d(be, &t2t, R->conv2_w, R->conv2_b, R->cout, 3, 3, 1, 1, res, &t3t);
        be->scale(be, t3, 1.f / out_scale, y->data, n * R->cout);
    }
    ds_arena_reset(f->a, mark);
    return ds_observe(f->r, R->path, DS_NODE_BLOCK_OUT, y);
}

// The K/V source of a cross-attention: the context, or the observer's replacement of it
// (DS_NODE_ATTN_CONTEXT), projected by to_k / to_v. K and V only depend on the context, so a
// cache across denoising steps can replace this function (valid while nobody observes the
// context node).
static int cross_kv(fw* f, const ds_unet_transformer* T, const ds_unet_tblock* tb,
                    const float** k, const float** v, int64_t* stride) {
    ds_backend* be = f->be;
    int64_t C = T->channels, D = f->ctx->ne[2], rows = f->ctx->ne[0] * f->ctx->ne[1];
    ds_arena_mark mark = ds_arena_get_mark(f->a);  // for ALLOC's failure path only
    const float* src = f->ctx->data;
    if (ds_observe_wants(f->r, tb->path_attn2, DS_NODE_ATTN_CONTEXT)) {
        ds_tensor t = *f->ctx;
        ALLOC(t.data, rows * D);
        be->copy(be, t.data, f->ctx->data, rows * D);
        DS_TRY(ds_observe(f->r, tb->path_attn2, DS_NODE_ATTN_CONTEXT, &t));
        src = t.data;
    }
    float* kv;
    ALLOC(kv, rows * 2 * C);
    if (tb->v2 == tb->k2 + C * D) {  // to_k, to_v adjacent in the weight block: one (2C, D) linear
        be->linear(be, src, tb->k2, NULL, NULL, kv, rows, 2 * C, D);
        *k = kv;
        *v = kv + C;
        *stride = 2 * C;
    } else {
        be->linear(be, src, tb->k2, NULL, NULL, kv, rows, C, D);
        be->linear(be, src, tb->v2, NULL, NULL, kv + rows * C, rows, C, D);
        *k = kv;
        *v = kv + rows * C;
        *stride = C;
    }
    return DS_OK;
}

// BasicTransformerBlock on h (B, S, C) in place; the query grid is H×W.
static int tblock_forward(fw* f, const ds_unet_transformer* T, const ds_unet_tblock* tb, float* h,
                          int64_t H, int64_t W) {
    ds_backend* be = f->be;
    ds_run* r = f->r;
    int B = f->B, heads = T->heads, dh = T->dh;
    int64_t C = T->channels, F = T->ff_dim, S = H * W, n = B * S;
    float scale = 1.f / sqrtf((float)dh);
    ds_arena_mark mark = ds_arena_get_mark(f->a);
    float *nrm, *ao;
    ALLOC(nrm, n * C);
    ALLOC(ao, n * C);
    ds_arena_mark inner = ds_arena_get_mark(f->a);
    ds_attn_probe probe;
    const ds_attn_probe* pr;

    // 1. self-attention: h += to_out(attn(norm1(h)))
    be->layer_norm(be, h, tb->norm1_g, tb->norm1_b, nrm, n, C, 1e-5f);
    float* qkv;
    if (tb->k1 == tb->q1 + C * C && tb->v1 == tb->k1 + C * C) {  // fused (3C, C) projection
        ALLOC(qkv, n * 3 * C);
        be->linear(be, nrm, tb->q1, NULL, NULL, qkv, n, 3 * C, C);
        pr = ds_observe_probe_ex(r, tb->path_attn1, (int)H, (int)W, (int)S, heads, &probe);
        if (pr) probe.batch_begin = r->cond_batch_begin;
        be->attention(be, qkv, 3 * C, qkv + C, 3 * C, qkv + 2 * C, 3 * C, ao, B, (int)S, (int)S, heads, dh,
                      scale, 0, pr);
    } else {
        ALLOC(qkv, n * 3 * C);
        be->linear(be, nrm, tb->q1, NULL, NULL, qkv, n, C, C);
        be->linear(be, nrm, tb->k1, NULL, NULL, qkv + n * C, n, C, C);
        be->linear(be, nrm, tb->v1, NULL, NULL, qkv + 2 * n * C, n, C, C);
        pr = ds_observe_probe_ex(r, tb->path_attn1, (int)H, (int)W, (int)S, heads, &probe);
        if (pr) probe.batch_begin = r->cond_batch_begin;
        be->attention(be, qkv, C, qkv + n * C, C, qkv + 2 * n * C, C, ao, B, (int)S, (int)S, heads, dh, scale,
                      0, pr);
    }
    if (cancelled(f, tb->path_attn1)) goto fail;
    be->linear(be, ao, tb->o1_w, tb->o1_b, h, h, n, C, C);
    ds_arena_reset(f->a, inner);

    // 2. cross-attention: h += to_out(attn(norm2(h), K(ctx), V(ctx)))
    be->layer_norm(be, h, tb->norm2_g, tb->norm2_b, nrm, n, C, 1e-5f);
    float* q;
    ALLOC(q, n * C);
    be->linear(be, nrm, tb->q2, NULL, NULL, q, n, C, C);
    const float *k, *v;
    int64_t kvs;
    if (cross_kv(f, T, tb, &k, &v, &kvs) != DS_OK) goto fail;
    pr = ds_observe_probe_ex(r, tb->path_attn2, (int)H, (int)W, (int)f->ctx->ne[1], heads, &probe);
    if (pr) probe.batch_begin = r->cond_batch_begin;
    be->attention(be, q, C, k, kvs, v, kvs, ao, B, (int)S, (int)f->ctx->ne[1], heads, dh, scale, 0, pr);
    if (cancelled(f, tb->path_attn2)) goto fail;
    be->linear(be, ao, tb->o2_w, tb->o2_b, h, h, n, C, C);
    ds_arena_reset(f->a, inner);

    // 3. feed-forward: h += net.2(GEGLU(net.0.proj(norm3(h))))
    be->layer_norm(be, h, tb->norm3_g, tb->norm3_b, nrm, n, C, 1e-5f);
    float *p, *g;
    ALLOC(p, n * 2 * F);
    ALLOC(g, n * F);
    be->linear(be, nrm, tb->ff1_w, tb->ff1_b, NULL, p, n, 2 * F, C);
    be->geglu(be, p, g, n, F);
    ds_tensor gt = {g, 3, {B, S, F, 0}};
    if (r->ffn_stats) {
        int64_t off = r->ffn_stats->slot(r->ffn_stats->user, tb->path_ff, r->step, S, F);
        if (off >= 0)
            be->column_stats(be, g + (B - 1) * S * F, S, F, r->ffn_stats->sum + off,
                             r->ffn_stats->sumsq + off, 1);
    }
    if (ds_observe(r, tb->path_ff, DS_NODE_FFN_ACT, &gt) != DS_OK) goto fail;
    be->linear(be, g, tb->ff2_w, tb->ff2_b, h, h, n, C, F);
    ds_arena_reset(f->a, mark);
    return DS_OK;
fail:
    ds_arena_reset(f->a, mark);
    return f->e->code ? f->e->code : DS_ERR_INTERNAL;
}

// Transformer2DModel: x (B,H,W,C) → y = x + proj_out(blocks(proj_in(norm(x)))).
static int transformer_forward(fw* f, const ds_unet_transformer* T, const ds_tensor* x,
                               ds_tensor* y) {
    ds_backend* be = f->be;
    int64_t B = x->ne[0], H = x->ne[1], W = x->ne[2], C = T->channels, S = H * W, n = B * S;
    ds_arena_mark mark = ds_arena_get_mark(f->a);
    float *hn, *h;
    ALLOC(hn, n * C);
    ALLOC(h, n * C);
    be->group_norm(be, x->data, T->norm_g, T->norm_b, hn, B, S, C, f->u->cfg.norm_num_groups, 1e-6f, 0);
    // proj_in: a 1×1 conv (SD1) and a linear (SD2) are the same per-pixel product in NHWC
    be->linear(be, hn, T->proj_in_w, T->proj_in_b, NULL, h, n, C, C);
    for (int k = 0; k < T->n_blocks; k++) {
        int rc = tblock_forward(f, T, &T->blocks[k], h, H, W);
        if (rc) { ds_arena_reset(f->a, mark); return rc; }
    }
    be->linear(be, h, T->proj_out_w, T->proj_out_b, x->data, y->data, n, C, C);
    ds_arena_reset(f->a, mark);
    return ds_observe(f->r, T->path, DS_NODE_BLOCK_OUT, y);
}

static ds_tensor arena_nhwc(fw* f, int64_t n, int64_t h, int64_t w, int64_t c) {
    return ds_arena_tensor(f->a, f->e, 4, n, h, w, c);
}

#define MAX_SKIPS (1 + DS_UNET_MAX_LEVELS * 9)

int ds_unet_forward(const ds_unet* u, ds_run* run, const ds_tensor* x, const float* t_host,
                    const ds_tensor* ctx, ds_tensor* out) {
    DS_ASSERT(run && run->be && run->arena && run->err);
    const ds_unet_config* c = &u->cfg;
    ds_err* e = run->err;
    int L = c->n_levels;
    if (run->cancelled) return ds_errf(e, DS_ERR_CANCELLED, "cancelled before the UNet call");
    if (x->ndim != 4 || x->ne[3] != c->in_channels)
        return ds_errf(e, DS_ERR_ARG, "UNet input must be (B, h, w, %d) NHWC", c->in_channels);
    int64_t B = x->ne[0], H = x->ne[1], W = x->ne[2], div = (int64_t)1 << (L - 1);
    if (H % div || W % div || H < 1 || W < 1)
        return ds_errf(e, DS_ERR_ARG, "UNet input %lldx%lld: latent sides must be multiples of %lld",
                       (long long)H, (long long)W, (long long)div);
    if (ctx->ndim != 3 || ctx->ne[0] != B || ctx->ne[2] != c->cross_attention_dim || ctx->ne[1] < 1)
        return ds_errf(e, DS_ERR_ARG, "UNet context must be (%lld, L, %d)", (long long)B, c->cross_attention_dim);
    if (out->ndim != 4 || out->ne[0] != B || out->ne[1] != H || out->ne[2] != W || out->ne[3] != c->out_channels)
        return ds_errf(e, DS_ERR_ARG, "UNet output must be (%lld, %lld, %lld, %d)", (long long)B, (long long)H,
                       (long long)W, c->out_channels);
    fw ff = {u, run, run->be, run->arena, e, (int)B, NULL, ctx}, *f = &ff;
    ds_backend* be = run->be;
    ds_arena_mark mark0 = ds_arena_get_mark(f->a);
    int rc = DS_OK;
#define RUN(expr)                    \
    do {                             \
        if ((rc = (expr)) != DS_OK)  \
            goto done;               \
    } while (0)
#define NEWT(t, n_, h_, w_, c_)                              \
    do {                                                     \
        (t) = arena_nhwc(f, n_, h_, w_, c_);                 \
        if (!(t).data) { rc = DS_ERR_OOM; goto done; }       \
    } while (0)

    // time embedding: linear_2(silu(linear_1(sinusoidal(t)))); resnets use silu of it
    {
        int64_t C0 = c->block_out_channels[0], T = c->time_embed_dim;
        ds_tensor ts, e1, emb, es;
        ts = ds_arena_tensor(f->a, e, 2, B, C0, 0, 0);
        e1 = ds_arena_tensor(f->a, e, 2, B, T, 0, 0);
        emb = ds_arena_tensor(f->a, e, 2, B, T, 0, 0);
        es = ds_arena_tensor(f->a, e, 2, B, T, 0, 0);
        if (!ts.data || !e1.data || !emb.data || !es.data) { rc = DS_ERR_OOM; goto done; }
        be->timestep_embedding(be, t_host, (int)B, (int)C0, c->flip_sin_to_cos, c->freq_shift, ts.data);
        RUN(ds_observe(run, "time_proj", DS_NODE_BLOCK_OUT, &ts));
        be->linear(be, ts.data, u->time_l1_w, u->time_l1_b, NULL, e1.data, B, T, C0);
        be->act(be, DS_ACT_SILU, e1.data, es.data, B * T);
        be->linear(be, es.data, u->time_l2_w, u->time_l2_b, NULL, emb.data, B, T, T);
        RUN(ds_observe(run, "time_embedding", DS_NODE_BLOCK_OUT, &emb));
        be->act(be, DS_ACT_SILU, emb.data, es.data, B * T);
        f->temb_silu = es.data;
    }

    ds_tensor skips[MAX_SKIPS];
    int n_skip = 0;
    ds_tensor h, y;
    NEWT(h, B, H, W, c->block_out_channels[0]);
    be->conv2d(be, x, u->conv_in_w, u->conv_in_b, c->block_out_channels[0], 3, 3, 1, 1, NULL, &h);
    RUN(ds_observe(run, "conv_in", DS_NODE_BLOCK_OUT, &h));
    skips[n_skip++] = h;

    // ---- down blocks: every output stays as a skip connection
    for (int i = 0; i < L; i++) {
        const ds_unet_block* blk = &u->down[i];
        for (int j = 0; j < blk->n_layers; j++) {
            NEWT(y, B, h.ne[1], h.ne[2], blk->cout);
            RUN(resnet_forward(f, &blk->resnets[j], &h, &y, 1.f));
            h = y;
            if (blk->attns) {
                NEWT(y, B, h.ne[1], h.ne[2], blk->cout);
                RUN(transformer_forward(f, &blk->attns[j], &h, &y));
                h = y;
            }
            skips[n_skip++] = h;
        }
        if (blk->sample_w) {  // Downsample2D: 3×3 conv, stride 2, padding 1
            NEWT(y, B, h.ne[1] / 2, h.ne[2] / 2, blk->cout);
            be->conv2d(be, &h, blk->sample_w, blk->sample_b, blk->cout, 3, 3, 2, 1, NULL, &y);
            RUN(ds_observe(run, blk->sample_path, DS_NODE_BLOCK_OUT, &y));
            h = y;
            skips[n_skip++] = h;
        }
        RUN(ds_observe(run, blk->path, DS_NODE_BLOCK_OUT, &h));
    }

    // ---- mid block
    {
        const ds_unet_block* mid = &u->mid;
        NEWT(y, B, h.ne[1], h.ne[2], mid->cout);
        RUN(resnet_forward(f, &mid->resnets[0], &h, &y, c->mid_block_scale_factor));
        h = y;
        NEWT(y, B, h.ne[1], h.ne[2], mid->cout);
        RUN(transformer_forward(f, &mid->attns[0], &h, &y));
        h = y;
        NEWT(y, B, h.ne[1], h.ne[2], mid->cout);
        RUN(resnet_forward(f, &mid->resnets[1], &h, &y, c->mid_block_scale_factor));
        h = y;
        RUN(ds_observe(run, mid->path, DS_NODE_BLOCK_OUT, &h));
    }

    // ---- up blocks: concat the skip, resnet, attention; upsample at the end
    for (int i = 0; i < L; i++) {
        const ds_unet_block* blk = &u->up[i];
        int64_t Hc = h.ne[1], Wc = h.ne[2], Co = blk->cout;
        ds_tensor bout, pp[2];
        NEWT(bout, B, blk->sample_w ? 2 * Hc : Hc, blk->sample_w ? 2 * Wc : Wc, Co);
        ds_arena_mark mblk = ds_arena_get_mark(f->a);
        NEWT(pp[0], B, Hc, Wc, Co);
        NEWT(pp[1], B, Hc, Wc, Co);
        for (int j = 0; j < blk->n_layers; j++) {
            ds_tensor skip = skips[--n_skip];
            int last = j == blk->n_layers - 1;
            ds_tensor cat, *dst;
            ds_arena_mark mj = ds_arena_get_mark(f->a);
            NEWT(cat, B, Hc, Wc, h.ne[3] + skip.ne[3]);
            be->concat_channels(be, h.data, skip.data, cat.data, B, Hc * Wc, h.ne[3], skip.ne[3]);
            dst = (last && !blk->attns && !blk->sample_w) ? &bout : (h.data == pp[0].data ? &pp[1] : &pp[0]);
            RUN(resnet_forward(f, &blk->resnets[j], &cat, dst, 1.f));
            ds_arena_reset(f->a, mj);
            h = *dst;
            if (blk->attns) {
                dst = (last && !blk->sample_w) ? &bout : (h.data == pp[0].data ? &pp[1] : &pp[0]);
                RUN(transformer_forward(f, &blk->attns[j], &h, dst));
                h = *dst;
            }
        }
        if (blk->sample_w) {  // Upsample2D: nearest ×2, then 3×3 conv
            ds_tensor up;
            NEWT(up, B, 2 * Hc, 2 * Wc, Co);
            be->upsample_nearest2x(be, h.data, up.data, B, Hc, Wc, Co);
            be->conv2d(be, &up, blk->sample_w, blk->sample_b, Co, 3, 3, 1, 1, NULL, &bout);
            RUN(ds_observe(run, blk->sample_path, DS_NODE_BLOCK_OUT, &bout));
        }
        ds_arena_reset(f->a, mblk);
        h = bout;
        RUN(ds_observe(run, blk->path, DS_NODE_BLOCK_OUT, &h));
    }

    // ---- output: conv_out(silu(conv_norm_out(h)))
    {
        ds_tensor t;
        NEWT(t, B, H, W, c->block_out_channels[0]);
        be->group_norm(be, h.data, u->norm_out_g, u->norm_out_b, t.data, B, H * W, c->block_out_channels[0],
                       c->norm_num_groups, c->norm_eps, 1);
        be->conv2d(be, &t, u->conv_out_w, u->conv_out_b, c->out_channels, 3, 3, 1, 1, NULL, out);
        RUN(ds_observe(run, "conv_out", DS_NODE_BLOCK_OUT, out));
    }
done:
    ds_arena_reset(f->a, mark0);
#undef RUN
#undef NEWT
    return rc;
}
