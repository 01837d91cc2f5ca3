// cpu_elementwise.c — activations, GEGLU, add, scale, per-channel bias.
//
// Plain loops the compiler vectorizes — the activations too: they use the branch-free inline
// exp / erfc of cpu_ops.h, not libm — split over threads when long enough. The activation kind
// is switched once per call, never per element.
#include "cpu_ops.h"

#define PAR_FOR(n) _Pragma("omp parallel for num_threads(nt) schedule(static)")

static inline int threads_for(ds_backend* be, int64_t n) {
    return n >= DS_CPU_PAR_MIN ? ds_cpu(be)->threads : 1;
}

void ds_cpu_act(ds_backend* be, ds_act kind, const float* x, float* y, int64_t n) {
    int nt = threads_for(be, n);
    switch (kind) {
    case DS_ACT_SILU:
        PAR_FOR(n)
        for (int64_t i = 0; i < n; i++) y[i] = ds_cpu_silu(x[i]);
        break;
    case DS_ACT_GELU:
        PAR_FOR(n)
        for (int64_t i = 0; i < n; i++) y[i] = ds_cpu_gelu(x[i]);
        break;
    case DS_ACT_GELU_TANH:
        PAR_FOR(n)
        for (int64_t i = 0; i < n; i++) y[i] = ds_cpu_gelu_tanh(x[i]);
        break;
    case DS_ACT_QUICK_GELU:
        PAR_FOR(n)
        for (int64_t i = 0; i < n; i++) y[i] = ds_cpu_quick_gelu(x[i]);
        break;
    default:
        DS_ASSERT(!"unknown ds_act");
    }
}

void ds_cpu_geglu(ds_backend* be, const float* x, float* y, int64_t rows, int64_t F) {
    int nt = threads_for(be, rows * F);
    PAR_FOR(rows)
    for (int64_t r = 0; r < rows; r++) {
        const float* a = x + r * 2 * F;
        const float* g = a + F;
        float* yr = y + r * F;
        for (int64_t j = 0; j < F; j++) yr[j] = a[j] * ds_cpu_gelu(g[j]);
    }
}

void ds_cpu_add(ds_backend* be, const float* a, const float* b, float* y, int64_t n) {
    int nt = threads_for(be, n);
    PAR_FOR(n)
    for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

void ds_cpu_scale(ds_backend* be, const float* x, float s, float* y, int64_t n) {
    int nt = threads_for(be, n);
    PAR_FOR(n)
    for (int64_t i = 0; i < n; i++) y[i] = s * x[i];
}

void ds_cpu_add_channel_bias(ds_backend* be, const float* x, const float* v, float* y, int64_t N,
                             int64_t S, int64_t C) {
    int nt = threads_for(be, N * S * C);
    PAR_FOR(N * S)
    for (int64_t i = 0; i < N * S; i++) {
        const float* vn = v + (i / S) * C;
        const float* xr = x + i * C;
        float* yr = y + i * C;
        for (int64_t c = 0; c < C; c++) yr[c] = xr[c] + vn[c];
    }
}

void ds_cpu_column_stats(ds_backend* be, const float* x, int64_t rows, int64_t F, float* sum,
                         float* sumsq, int l2_rows) {
    // one pass over x per 64-column strip; per-column accumulation in double so long sums (many
    // rows × timesteps) do not lose the small terms. l2_rows: each row scaled by 1/‖row‖ first.
    double* inv = NULL;
    if (l2_rows) {
        inv = (double*)ds_cpu_scratch(be, 2 * rows);  // rows doubles
        for (int64_t r = 0; r < rows; r++) {
            const float* xr = x + r * F;
            double ss = 0;
            for (int64_t f = 0; f < F; f++) ss += (double)xr[f] * (double)xr[f];
            inv[r] = ss > 0 ? 1.0 / sqrt(ss) : 0.0;
        }
    }
    int nt = threads_for(be, rows * F);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t f0 = 0; f0 < F; f0 += 64) {
        int64_t f1 = f0 + 64 < F ? f0 + 64 : F;
        double s[64] = {0}, q[64] = {0};
        for (int64_t r = 0; r < rows; r++) {
            const float* xr = x + r * F;
            const double w = inv ? inv[r] : 1.0;
            for (int64_t f = f0; f < f1; f++) {
                double v = xr[f] * w;
                s[f - f0] += v;
                q[f - f0] += v * v;
            }
        }
        for (int64_t f = f0; f < f1; f++) {
            sum[f] += (float)s[f - f0];
            sumsq[f] += (float)q[f - f0];
        }
    }
}
