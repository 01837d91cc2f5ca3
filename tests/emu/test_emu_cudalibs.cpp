// test_emu_cudalibs.cpp — the cuBLAS and cuDNN stand-ins (emu_cublas.cpp, emu_cudnn.cpp) against
// independent plain-loop references: GEMM in every OP_N / OP_T combination with non-square shapes
// and padded leading dimensions, fp32 / fp16 / bf16, beta = 0 over NaN, strided and pointer-array
// batches; convolution in NCHW / NHWC / strided layouts with padding, stride, dilation, groups,
// CONVOLUTION vs CROSS_CORRELATION, fused bias + activation; the documented status codes for
// invalid arguments; out-of-allocation operands ending a forked child through emu_fail.
//
// Built with -DDS_REAL_CUDA_LIBS and linked with -lcublas -lcudnn -lcudart on a GPU machine, the
// same program cross-checks the stand-ins' assumptions against the real libraries:
//   g++ -std=c++17 -O2 -DDS_REAL_CUDA_LIBS -I$CUDA/include tests/emu/test_emu_cudalibs.cpp
//       -L$CUDA/lib64 -lcublas -lcudnn -lcudart
// Then only what is the stand-ins' own is skipped: emu_fail children, destroyed handles (undefined
// behaviour in the libraries), workspace sizes and the algorithm list, bit-equal layouts; tensor-
// core rounding is checked against a tolerance instead of an exactly rounded reference.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#ifdef DS_REAL_CUDA_LIBS
static const bool kStandIn = false;
#else
static const bool kStandIn = true;
#endif
static int g_checks = 0, g_fails = 0;
#define CHECK(cond, ...)                                            \
    do {                                                            \
        g_checks++;                                                 \
        if (!(cond)) {                                              \
            g_fails++;                                              \
            printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);  \
            printf(__VA_ARGS__);                                    \
            printf("\n");                                           \
        }                                                           \
    } while (0)
// A check of the stand-ins' own behaviour (skipped against the real libraries).
#define STANDIN_CHECK(cond, ...) \
    do {                         \
        if (kStandIn) CHECK(cond, __VA_ARGS__); \
    } while (0)

// ---- random values (never zero) and typed host buffers ----------------------------------------
static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static float rnd() {  // ±[0.1, 1)
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    float u = (float)((g_rng >> 40) & 0xffffff) / 16777216.f;
    return (u < 0.5f ? -1.f : 1.f) * (0.1f + 1.8f * std::fabs(u - 0.5f));
}

static float val(uint64_t seed, uint64_t i) {  // ±[0.1, 1), a pure function of (seed, i)
    uint64_t z = seed * 0x9e3779b97f4a7c15ull + i * 0xbf58476d1ce4e5b9ull + 1;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull, z = (z ^ (z >> 27)) * 0x94d049bb133111ebull, z ^= z >> 31;
    float u = (float)(z >> 40) / 16777216.f;
    return (u < 0.5f ? -1.f : 1.f) * (0.1f + 1.8f * std::fabs(u - 0.5f));
}

enum DT { F32, F16, BF16 };
static size_t dt_size(DT t) { return t == F32 ? 4 : 2; }
static cudaDataType dt_cuda(DT t) { return t == F32 ? CUDA_R_32F : t == F16 ? CUDA_R_16F : CUDA_R_16BF; }
static cudnnDataType_t dt_cudnn(DT t) {
    return t == F32 ? CUDNN_DATA_FLOAT : t == F16 ? CUDNN_DATA_HALF : CUDNN_DATA_BFLOAT16;
}
static double dt_eps(DT t) { return t == F32 ? 0 : t == F16 ? 1.0 / 2048 : 1.0 / 256; }  // half an ulp

struct Buf {  // host copy of a device buffer of `n` elements of type t
    DT t;
    std::vector<unsigned char> b;
    Buf(DT t_, size_t n) : t(t_), b(n * dt_size(t_)) {}
    size_t size() const { return b.size() / dt_size(t); }
    void put(size_t i, float v) {
        if (t == F32) memcpy(&b[i * 4], &v, 4);
        else if (t == F16) { __half h = __float2half_rn(v); memcpy(&b[i * 2], &h, 2); }
        else { __nv_bfloat16 h = __float2bfloat16_rn(v); memcpy(&b[i * 2], &h, 2); }
    }
    float get(size_t i) const {
        if (t == F32) { float v; memcpy(&v, &b[i * 4], 4); return v; }
        if (t == F16) { __half h; memcpy(&h, &b[i * 2], 2); return __half2float(h); }
        __nv_bfloat16 h; memcpy(&h, &b[i * 2], 2); return __bfloat162float(h);
    }
    void fill_random() { for (size_t i = 0; i < size(); i++) put(i, rnd()); }
    void fill(float v) { for (size_t i = 0; i < size(); i++) put(i, v); }
};

static void* upload(const Buf& h) {
    void* d = nullptr;
    if (cudaMalloc(&d, h.b.size()) != cudaSuccess || !d) { printf("cudaMalloc failed\n"); exit(1); }
    cudaMemcpy(d, h.b.data(), h.b.size(), cudaMemcpyHostToDevice);
    return d;
}
static Buf download(const void* d, DT t, size_t n) {
    Buf h(t, n);
    cudaMemcpy(h.b.data(), d, h.b.size(), cudaMemcpyDeviceToHost);
    return h;
}

// Runs fn in a forked child; true when the child ended abnormally and its stderr mentions `expect`.
static bool child_fails(const std::function<void()>& fn, const char* expect) {
    fflush(stdout);
    int fds[2];
    if (pipe(fds)) return false;
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], 2);
        struct rlimit no_core = {0, 0};  // the expected abort must not leave a core file
        setrlimit(RLIMIT_CORE, &no_core);
        fn();
        _exit(0);  // reached only when nothing failed
    }
    close(fds[1]);
    std::string err;
    char buf[512];
    ssize_t r;
    while ((r = read(fds[0], buf, sizeof buf)) > 0) err.append(buf, (size_t)r);
    close(fds[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    bool failed = !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    if (!failed || err.find(expect) == std::string::npos)
        printf("  child: failed=%d stderr: %s\n", failed, err.c_str());
    return failed && err.find(expect) != std::string::npos;
}

// ================================ cuBLAS =========================================================
static float round_tf32(float x) {  // independent: via frexp
    int e;
    double m = std::frexp((double)x, &e);  // m in [0.5, 1): 11 significant bits = 2^11 steps
    return (float)std::ldexp(std::nearbyint(std::ldexp(m, 11)), e - 11);
}

struct GemmCase {
    cublasOperation_t ta, tb;
    int m, n, k, pad;  // leading dimension = rows as stored + pad
    DT ab, c;
    cublasComputeType_t comp;
    float alpha, beta;
    int batch;
    long long sA_extra;  // strideA: -1 → 0 (broadcast), else packed size + extra
    bool arrays;         // GemmBatchedEx instead of strided
    int round;           // 0 none, 1 tf32, 2 bf16 (inputs the reference rounds first)
};

static void run_gemm(cublasHandle_t h, const GemmCase& g, const char* name) {
    const bool tA = g.ta != CUBLAS_OP_N, tB = g.tb != CUBLAS_OP_N;
    const int ar = tA ? g.k : g.m, ac = tA ? g.m : g.k, br = tB ? g.n : g.k, bc = tB ? g.k : g.n;
    const int lda = ar + g.pad, ldb = br + g.pad, ldc = g.m + g.pad;
    const long long sA = g.sA_extra < 0 ? 0 : (long long)lda * ac + g.sA_extra;
    const long long sB = (long long)ldb * bc + 3, sC = (long long)ldc * g.n + 2;
    Buf A(g.ab, (size_t)(sA * (g.batch - 1) + (long long)lda * ac)), B(g.ab, (size_t)(sB * (g.batch - 1) + (long long)ldb * bc));
    Buf C(g.c, (size_t)(sC * (g.batch - 1) + (long long)ldc * g.n));
    A.fill_random(), B.fill_random();
    if (g.beta == 0) C.fill(NAN); else C.fill_random();
    void *dA = upload(A), *dB = upload(B), *dC = upload(C);
    cublasStatus_t st;
    if (g.arrays) {
        std::vector<const void*> pa(g.batch), pb(g.batch);
        std::vector<void*> pc(g.batch);
        for (int b = 0; b < g.batch; b++) {
            pa[b] = (char*)dA + sA * b * dt_size(g.ab), pb[b] = (char*)dB + sB * b * dt_size(g.ab);
            pc[b] = (char*)dC + sC * b * dt_size(g.c);
        }
        void *dpa, *dpb, *dpc;
        cudaMalloc(&dpa, g.batch * sizeof(void*)), cudaMalloc(&dpb, g.batch * sizeof(void*)), cudaMalloc(&dpc, g.batch * sizeof(void*));
        cudaMemcpy(dpa, pa.data(), g.batch * sizeof(void*), cudaMemcpyHostToDevice);
        cudaMemcpy(dpb, pb.data(), g.batch * sizeof(void*), cudaMemcpyHostToDevice);
        cudaMemcpy(dpc, pc.data(), g.batch * sizeof(void*), cudaMemcpyHostToDevice);
        st = cublasGemmBatchedEx(h, g.ta, g.tb, g.m, g.n, g.k, &g.alpha, (const void* const*)dpa, dt_cuda(g.ab), lda,
                                 (const void* const*)dpb, dt_cuda(g.ab), ldb, &g.beta, (void* const*)dpc,
                                 dt_cuda(g.c), ldc, g.batch, g.comp, CUBLAS_GEMM_DEFAULT);
        cudaFree(dpa), cudaFree(dpb), cudaFree(dpc);
    } else if (g.batch > 1) {
        st = cublasGemmStridedBatchedEx(h, g.ta, g.tb, g.m, g.n, g.k, &g.alpha, dA, dt_cuda(g.ab), lda, sA, dB,
                                        dt_cuda(g.ab), ldb, sB, &g.beta, dC, dt_cuda(g.c), ldc, sC, g.batch,
                                        g.comp, CUBLAS_GEMM_DEFAULT);
    } else if (g.ab == F32 && g.comp == CUBLAS_COMPUTE_32F && g.round == 0) {
        st = cublasSgemm(h, g.ta, g.tb, g.m, g.n, g.k, &g.alpha, (const float*)dA, lda, (const float*)dB, ldb,
                         &g.beta, (float*)dC, ldc);
    } else {
        st = cublasGemmEx(h, g.ta, g.tb, g.m, g.n, g.k, &g.alpha, dA, dt_cuda(g.ab), lda, dB, dt_cuda(g.ab), ldb,
                          &g.beta, dC, dt_cuda(g.c), ldc, g.comp, CUBLAS_GEMM_DEFAULT);
    }
    CHECK(st == CUBLAS_STATUS_SUCCESS, "%s: status %s", name, cublasGetStatusName(st));
    Buf out = download(dC, g.c, C.size());
    auto in = [&](const Buf& X, size_t i) {
        float v = X.get(i);
        if (!kStandIn) return v;  // the GPU may round: tolerance below
        return g.round == 1 ? round_tf32(v) : g.round == 2 ? __bfloat162float(__float2bfloat16_rn(v)) : v;
    };
    int bad = 0;
    double worst = 0;
    std::vector<bool> written(C.size(), false);
    for (int b = 0; b < g.batch; b++)
        for (int j = 0; j < g.n; j++)
            for (int i = 0; i < g.m; i++) {
                double sum = 0, mag = 0;
                for (int p = 0; p < g.k; p++) {
                    // op(A)(i,p), op(B)(p,j) read straight from the column-major definitions
                    double a = in(A, sA * b + (tA ? (size_t)p + (size_t)i * lda : (size_t)i + (size_t)p * lda));
                    double bb = in(B, sB * b + (tB ? (size_t)j + (size_t)p * ldb : (size_t)p + (size_t)j * ldb));
                    sum += a * bb, mag += std::fabs(a * bb);
                }
                size_t ci = sC * b + i + (size_t)j * ldc;
                double ref = g.alpha * sum + (g.beta != 0 ? g.beta * (double)C.get(ci) : 0.0);
                double tol = dt_eps(g.c) * std::fabs(ref) + 2e-6 * (std::fabs(g.alpha) * mag + std::fabs(g.beta)) + 1e-30;
                if (!kStandIn && g.round) tol += (g.round == 1 ? 1.0 / 512 : 1.0 / 64) * std::fabs(g.alpha) * mag;
                double err = std::fabs(out.get(ci) - ref);
                written[ci] = true;
                if (!(err <= tol)) bad++;
                if (err > worst || std::isnan(err)) worst = err;
            }
    int touched = 0;  // padding rows and gaps between batches keep their values
    for (size_t i = 0; i < C.size(); i++)
        if (!written[i] && memcmp(&out.b[i * dt_size(g.c)], &C.b[i * dt_size(g.c)], dt_size(g.c))) touched++;
    CHECK(bad == 0 && touched == 0, "%s: %d wrong elements (worst error %g), %d elements outside C written", name,
          bad, worst, touched);
    cudaFree(dA), cudaFree(dB), cudaFree(dC);
}

static void test_cublas() {
    cublasHandle_t h;
    CHECK(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS, "create");
    const cublasOperation_t N = CUBLAS_OP_N, T = CUBLAS_OP_T;
    char name[160];
    int cases = 0;
    // every op combination, non-square shapes, padded leading dimensions, each type combination
    struct Ty { DT ab, c; cublasComputeType_t comp; } types[] = {
        {F32, F32, CUBLAS_COMPUTE_32F},     {F16, F16, CUBLAS_COMPUTE_32F}, {F16, F32, CUBLAS_COMPUTE_32F},
        {F16, F16, CUBLAS_COMPUTE_32F_FAST_16F}, {BF16, BF16, CUBLAS_COMPUTE_32F}, {BF16, F32, CUBLAS_COMPUTE_32F}};
    for (const Ty& ty : types)
        for (cublasOperation_t ta : {N, T})
            for (cublasOperation_t tb : {N, T})
                for (float beta : {0.f, 0.75f}) {
                    GemmCase g{ta, tb, 13, 9, 6, 3, ty.ab, ty.c, ty.comp, -1.25f, beta, 1, 0, false, 0};
                    snprintf(name, sizeof name, "gemm ta=%d tb=%d ab=%d c=%d comp=%d beta=%g", ta, tb, ty.ab, ty.c,
                             ty.comp, beta);
                    run_gemm(h, g, name), cases++;
                }
    run_gemm(h, GemmCase{CUBLAS_OP_C, CUBLAS_OP_C, 7, 11, 5, 1, F32, F32, CUBLAS_COMPUTE_32F, 0.5f, 0.f, 1, 0, false, 0}, "OP_C as OP_T");
    run_gemm(h, GemmCase{N, T, 1, 1, 17, 0, F16, F16, CUBLAS_COMPUTE_32F, 1.f, 0.f, 1, 0, false, 0}, "1x1x17");
    run_gemm(h, GemmCase{T, N, 6, 4, 0, 2, F32, F32, CUBLAS_COMPUTE_32F, 1.f, 0.f, 1, 0, false, 0}, "k = 0, beta 0: zeros over NaN");
    run_gemm(h, GemmCase{T, N, 6, 4, 0, 2, F16, F32, CUBLAS_COMPUTE_32F, 1.f, 2.f, 1, 0, false, 0}, "k = 0, beta 2");
    // batches: strideA 0 broadcasts A; gaps between batches; pointer arrays
    run_gemm(h, GemmCase{T, N, 8, 5, 7, 2, F16, F16, CUBLAS_COMPUTE_32F, 1.f, 0.f, 4, -1, false, 0}, "strided batched, strideA 0");
    run_gemm(h, GemmCase{N, T, 8, 5, 7, 1, BF16, F32, CUBLAS_COMPUTE_32F, 0.5f, -1.f, 3, 5, false, 0}, "strided batched bf16");
    run_gemm(h, GemmCase{N, N, 5, 6, 4, 0, F32, F32, CUBLAS_COMPUTE_32F, 1.f, 0.5f, 3, 1, false, 0}, "strided batched fp32");
    run_gemm(h, GemmCase{T, T, 6, 3, 9, 1, F16, F16, CUBLAS_COMPUTE_32F, 2.f, 0.f, 3, 0, true, 0}, "GemmBatchedEx");
    // tensor-core input rounding: FAST_TF32 / FAST_16BF equal the reference on rounded inputs
    run_gemm(h, GemmCase{N, T, 9, 7, 33, 0, F32, F32, CUBLAS_COMPUTE_32F_FAST_TF32, 1.f, 0.f, 1, 0, false, 1}, "FAST_TF32");
    run_gemm(h, GemmCase{T, N, 9, 7, 33, 0, F32, F32, CUBLAS_COMPUTE_32F_FAST_16BF, 1.f, 0.f, 1, 0, false, 2}, "FAST_16BF");
    CHECK(cublasSetMathMode(h, CUBLAS_TF32_TENSOR_OP_MATH) == CUBLAS_STATUS_SUCCESS, "tf32 math");
    run_gemm(h, GemmCase{N, N, 9, 7, 33, 0, F32, F32, CUBLAS_COMPUTE_32F, 1.f, 0.f, 1, 0, false, 1}, "TF32 math mode");
    cublasMath_t mm;
    CHECK(cublasGetMathMode(h, &mm) == CUBLAS_STATUS_SUCCESS && mm == CUBLAS_TF32_TENSOR_OP_MATH, "get math");
    CHECK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH) == CUBLAS_STATUS_SUCCESS, "default math");
    printf("cuBLAS: %d GEMM cases checked against the reference\n", cases + 13);

    // ---- handle state and invalid arguments ----
    cudaStream_t s = (cudaStream_t)0x1234, s2 = nullptr;
    CHECK(cublasSetStream(h, s) == CUBLAS_STATUS_SUCCESS && cublasGetStream(h, &s2) == CUBLAS_STATUS_SUCCESS && s2 == s, "stream");
    cublasSetStream(h, nullptr);
    CHECK(cublasSetMathMode(h, (cublasMath_t)7) == CUBLAS_STATUS_INVALID_VALUE, "bad math mode");
    void* ws;
    cudaMalloc(&ws, 4096);
    CHECK(cublasSetWorkspace(h, ws, 4096) == CUBLAS_STATUS_SUCCESS, "workspace");
    CHECK(cublasSetWorkspace(h, (char*)ws + 16, 1024) == CUBLAS_STATUS_INVALID_VALUE, "misaligned workspace");
    CHECK(!strcmp(cublasGetStatusName(CUBLAS_STATUS_INVALID_VALUE), "CUBLAS_STATUS_INVALID_VALUE"), "status name");
    CHECK(strlen(cublasGetStatusString(CUBLAS_STATUS_NOT_SUPPORTED)) > 0, "status string");

    const int m = 8, n = 6, k = 5;
    void *A, *B, *C;
    cudaMalloc(&A, 64 * 64 * 4), cudaMalloc(&B, 64 * 64 * 4), cudaMalloc(&C, 64 * 64 * 4);
    const float one = 1.f, zero = 0.f;
    const void* alpha_arg = &one;
    auto gx = [&](cublasHandle_t hh, cublasOperation_t ta, cublasOperation_t tb, int mm_, int nn, int kk, int lda,
                  int ldb, int ldc, cudaDataType at, cudaDataType bt, cudaDataType ct, cublasComputeType_t comp) {
        return cublasGemmEx(hh, ta, tb, mm_, nn, kk, alpha_arg, A, at, lda, B, bt, ldb, &zero, C, ct, ldc, comp,
                            CUBLAS_GEMM_DEFAULT);
    };
    const cudaDataType R32 = CUDA_R_32F, R16 = CUDA_R_16F, RBF = CUDA_R_16BF;
    const cublasComputeType_t C32 = CUBLAS_COMPUTE_32F;
    CHECK(gx(h, N, N, m, n, k, m, k, m, R32, R32, R32, C32) == CUBLAS_STATUS_SUCCESS, "valid call");
    CHECK(gx(h, N, N, -1, n, k, m, k, m, R32, R32, R32, C32) == CUBLAS_STATUS_INVALID_VALUE, "m < 0");
    CHECK(gx(h, N, N, m, n, -2, m, k, m, R32, R32, R32, C32) == CUBLAS_STATUS_INVALID_VALUE, "k < 0");
    CHECK(gx(h, N, N, m, n, k, m - 1, k, m, R32, R32, R32, C32) == CUBLAS_STATUS_INVALID_VALUE, "lda < m (OP_N)");
    CHECK(gx(h, T, N, m, n, k, m, k, m, R32, R32, R32, C32) == CUBLAS_STATUS_SUCCESS, "lda = m >= k (OP_T)");
    CHECK(gx(h, T, N, m, n, k, k - 1, k, m, R32, R32, R32, C32) == CUBLAS_STATUS_INVALID_VALUE, "lda < k (OP_T)");
    CHECK(gx(h, N, N, m, n, k, m, k - 1, m, R32, R32, R32, C32) == CUBLAS_STATUS_INVALID_VALUE, "ldb < k (OP_N)");
    CHECK(gx(h, N, T, m, n, k, m, n - 1, m, R32, R32, R32, C32) == CUBLAS_STATUS_INVALID_VALUE, "ldb < n (OP_T)");
    CHECK(gx(h, N, N, m, n, k, m, k, m - 1, R32, R32, R32, C32) == CUBLAS_STATUS_INVALID_VALUE, "ldc < m");
    CHECK(gx(h, N, N, 0, n, k, 0, k, 0, R32, R32, R32, C32) == CUBLAS_STATUS_INVALID_VALUE, "ld 0 < max(1, m)");
    CHECK(gx(h, N, N, 0, n, k, 1, k, 1, R32, R32, R32, C32) == CUBLAS_STATUS_SUCCESS, "m = 0 quick return");
    CHECK(gx(h, CUBLAS_OP_CONJG, N, m, n, k, m, k, m, R32, R32, R32, C32) == CUBLAS_STATUS_INVALID_VALUE, "OP_CONJG");
    alpha_arg = nullptr;
    CHECK(gx(h, N, N, m, n, k, m, k, m, R32, R32, R32, C32) == CUBLAS_STATUS_INVALID_VALUE, "alpha NULL");
    alpha_arg = &one;
    CHECK(gx(h, N, N, m, n, k, m, k, m, R16, R32, R32, C32) == CUBLAS_STATUS_NOT_SUPPORTED, "A 16F, B 32F");
    CHECK(gx(h, N, N, m, n, k, m, k, m, RBF, RBF, R16, C32) == CUBLAS_STATUS_NOT_SUPPORTED, "bf16 -> 16F");
    CHECK(gx(h, N, N, m, n, k, m, k, m, R32, R32, R16, C32) == CUBLAS_STATUS_NOT_SUPPORTED, "32F -> 16F");
    CHECK(gx(h, N, N, m, n, k, m, k, m, RBF, RBF, RBF, CUBLAS_COMPUTE_32F_FAST_16F) == CUBLAS_STATUS_NOT_SUPPORTED, "bf16 FAST_16F");
    CHECK(gx(h, N, N, m, n, k, m, k, m, R16, R16, R16, CUBLAS_COMPUTE_32F_FAST_TF32) == CUBLAS_STATUS_NOT_SUPPORTED, "16F FAST_TF32");
    CHECK(gx(h, N, N, m, n, k, m, k, m, R32, R32, R32, CUBLAS_COMPUTE_16F) == CUBLAS_STATUS_NOT_SUPPORTED, "32F COMPUTE_16F");
    CHECK(gx(h, N, N, m, n, k, m, k, m, R32, R32, R32, CUBLAS_COMPUTE_64F) == CUBLAS_STATUS_NOT_SUPPORTED, "32F COMPUTE_64F");
    CHECK(cublasGemmStridedBatchedEx(h, N, N, m, n, k, &one, A, R32, m, 0, B, R32, k, 0, &zero, C, R32, m, 0, -1, C32,
                                     CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_INVALID_VALUE, "batchCount < 0");
    cublasHandle_t dead;
    cublasCreate(&dead);
    cublasDestroy(dead);
    CHECK(gx(nullptr, N, N, m, n, k, m, k, m, R32, R32, R32, C32) == CUBLAS_STATUS_NOT_INITIALIZED, "NULL handle");
    STANDIN_CHECK(gx(dead, N, N, m, n, k, m, k, m, R32, R32, R32, C32) == CUBLAS_STATUS_NOT_INITIALIZED, "destroyed handle");
    STANDIN_CHECK(cublasSetStream(dead, nullptr) == CUBLAS_STATUS_NOT_INITIALIZED, "destroyed handle stream");

    // ---- operands past their allocation end the program (forked child) ----
    void* small;
    cudaMalloc(&small, (size_t)(m * k - 1) * 4);  // one element short of m x k
    STANDIN_CHECK(child_fails([&] { cublasGemmEx(h, N, N, m, n, k, &one, small, R32, m, B, R32, k, &zero, C, R32, m, C32, CUBLAS_GEMM_DEFAULT); },
                      "cublasGemmEx"), "A one element short");
    STANDIN_CHECK(child_fails([&] { cublasSgemm(h, N, N, m, n, k, &one, (float*)A, m, (float*)B, k, &zero, (float*)small, m); },
                      "cublasSgemm"), "C short");
    STANDIN_CHECK(child_fails([&] { cublasGemmStridedBatchedEx(h, N, N, m, n, k, &one, A, R32, m, 64 * 64 - m * k + 1, B, R32, k, 0,
                                                       &zero, C, R32, m, 0, 2, C32, CUBLAS_GEMM_DEFAULT); },
                      "batch 1"), "last batch of A past the end");
    float host[64];
    STANDIN_CHECK(child_fails([&] { cublasGemmEx(h, N, N, 2, 2, 2, &one, host, R32, 2, B, R32, 2, &zero, C, R32, 2, C32, CUBLAS_GEMM_DEFAULT); },
                      "not inside any"), "host pointer as A");
    cudaFree(small), cudaFree(A), cudaFree(B), cudaFree(C), cudaFree(ws);

    // ---- speed of a UNet-sized GEMM (64x64 tokens x 320 channels) ----
    Buf a(F16, 4096 * 320), b(F16, 320 * 320);
    a.fill_random(), b.fill_random();
    void *da = upload(a), *db = upload(b), *dc;
    cudaMalloc(&dc, 4096 * 320 * 2);
    auto t0 = std::chrono::steady_clock::now();
    CHECK(cublasGemmEx(h, T, N, 320, 4096, 320, &one, db, R16, 320, da, R16, 320, &zero, dc, R16, 320, C32,
                       CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS, "big gemm");
    printf("cuBLAS: 4096x320x320 fp16 GEMM %.3f s\n",
           std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    cudaFree(da), cudaFree(db), cudaFree(dc);
    CHECK(cublasDestroy(h) == CUBLAS_STATUS_SUCCESS, "destroy");
}

static void test_cudnn_invalid(cudnnHandle_t h);
// ================================ cuDNN ==========================================================
struct ConvCase {
    int N, C, H, W, K, R, S, ph, pw, u, v, dh, dw, G;
    cudnnConvolutionMode_t mode;
};
enum Layout { NCHW, NHWC, PADDED };  // PADDED: cudnnSetTensor4dDescriptorEx, NCHW with gaps

struct Tensor {
    cudnnTensorDescriptor_t d = nullptr;
    int64_t ns, cs, hs, ws;
    size_t elems;
    size_t at(int n, int c, int h, int w) const { return (size_t)(n * ns + c * cs + h * hs + w * ws); }
};
static Tensor make_tensor(DT dt, Layout L, int n, int c, int h, int w) {
    Tensor t;
    cudnnCreateTensorDescriptor(&t.d);
    if (L == NCHW) t.ns = (int64_t)c * h * w, t.cs = (int64_t)h * w, t.hs = w, t.ws = 1;
    else if (L == NHWC) t.ns = (int64_t)h * w * c, t.cs = 1, t.hs = (int64_t)w * c, t.ws = c;
    else t.hs = w + 3, t.ws = 1, t.cs = (int64_t)(h + 1) * (w + 3), t.ns = c * t.cs + 5;
    t.elems = (size_t)(t.at(n - 1, c - 1, h - 1, w - 1) + 1);
    cudnnStatus_t st = L == PADDED
        ? cudnnSetTensor4dDescriptorEx(t.d, dt_cudnn(dt), n, c, h, w, (int)t.ns, (int)t.cs, (int)t.hs, (int)t.ws)
        : cudnnSetTensor4dDescriptor(t.d, L == NCHW ? CUDNN_TENSOR_NCHW : CUDNN_TENSOR_NHWC, dt_cudnn(dt), n, c, h, w);
    CHECK(st == CUDNN_STATUS_SUCCESS, "set tensor");
    return t;
}

struct ConvRun {
    DT dt = F32;
    Layout xl = NCHW, yl = NCHW;
    cudnnTensorFormat_t wf = CUDNN_TENSOR_NCHW;
    cudnnConvolutionFwdAlgo_t algo = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM;
    cudnnMathType_t math = CUDNN_FMA_MATH;
    float alpha = 1.f, beta = 0.f;
    int fused = 0;  // 1: BiasActivation RELU with z = y, 2: IDENTITY with alpha2 = 0 (z not read)
};

// Runs one convolution on random inputs; compares with a plain-loop reference in logical NCHW
// order; returns y in logical NCHW order.
static std::vector<float> run_conv(cudnnHandle_t h, const ConvCase& cc, const ConvRun& r, const char* name) {
    const int Cg = cc.C / cc.G, Kg = cc.K / cc.G;
    const int P = (cc.H + 2 * cc.ph - ((cc.R - 1) * cc.dh + 1)) / cc.u + 1;
    const int Q = (cc.W + 2 * cc.pw - ((cc.S - 1) * cc.dw + 1)) / cc.v + 1;
    Tensor xt = make_tensor(r.dt, r.xl, cc.N, cc.C, cc.H, cc.W), yt = make_tensor(r.dt, r.yl, cc.N, cc.K, P, Q);
    cudnnFilterDescriptor_t wd;
    cudnnCreateFilterDescriptor(&wd);
    CHECK(cudnnSetFilter4dDescriptor(wd, dt_cudnn(r.dt), r.wf, cc.K, Cg, cc.R, cc.S) == CUDNN_STATUS_SUCCESS, "filter");
    cudnnConvolutionDescriptor_t cd;
    cudnnCreateConvolutionDescriptor(&cd);
    CHECK(cudnnSetConvolution2dDescriptor(cd, cc.ph, cc.pw, cc.u, cc.v, cc.dh, cc.dw, cc.mode, CUDNN_DATA_FLOAT) == CUDNN_STATUS_SUCCESS, "conv");
    CHECK(cudnnSetConvolutionGroupCount(cd, cc.G) == CUDNN_STATUS_SUCCESS, "groups");
    CHECK(cudnnSetConvolutionMathType(cd, r.math) == CUDNN_STATUS_SUCCESS, "math");
    int on, oc, oh, ow;
    CHECK(cudnnGetConvolution2dForwardOutputDim(cd, xt.d, wd, &on, &oc, &oh, &ow) == CUDNN_STATUS_SUCCESS &&
          on == cc.N && oc == cc.K && oh == P && ow == Q, "%s: output dim %d %d %d %d", name, on, oc, oh, ow);
    // host data: x, w in their layouts, y initial (NaN where it must not be read)
    Buf X(r.dt, xt.elems), Wt(r.dt, (size_t)cc.K * Cg * cc.R * cc.S), Y(r.dt, yt.elems), Bias(r.dt, cc.K);
    // values depend on the logical position only, so every layout convolves the same numbers
    auto w_at = [&](int k, int c, int rr, int ss) {
        return r.wf == CUDNN_TENSOR_NHWC ? (((size_t)k * cc.R + rr) * cc.S + ss) * Cg + c
                                         : (((size_t)k * Cg + c) * cc.R + rr) * cc.S + ss;
    };
    const bool y_read = r.fused == 1 || (r.fused == 0 && r.beta != 0);
    X.fill_random(), Y.fill_random();  // gaps of the PADDED layout: random
    if (!y_read) Y.fill(NAN);
    for (int n = 0; n < cc.N; n++)
        for (int c = 0; c < cc.C; c++)
            for (int i = 0; i < cc.H; i++)
                for (int j = 0; j < cc.W; j++) X.put(xt.at(n, c, i, j), val(1, ((n * cc.C + c) * cc.H + i) * cc.W + j));
    for (int k = 0; k < cc.K; k++) {
        Bias.put(k, val(3, k));
        for (int c = 0; c < Cg; c++)
            for (int i = 0; i < cc.R; i++)
                for (int j = 0; j < cc.S; j++) Wt.put(w_at(k, c, i, j), val(2, ((k * Cg + c) * cc.R + i) * cc.S + j));
        if (y_read)
            for (int n = 0; n < cc.N; n++)
                for (int i = 0; i < P; i++)
                    for (int j = 0; j < Q; j++) Y.put(yt.at(n, k, i, j), val(4, ((n * cc.K + k) * P + i) * Q + j));
    }
    const bool tf32 = r.dt == F32 && r.math != CUDNN_FMA_MATH;
    auto in = [&](float v) { return tf32 && kStandIn ? round_tf32(v) : v; };
    size_t ws_bytes = 0;
    CHECK(cudnnGetConvolutionForwardWorkspaceSize(h, xt.d, wd, cd, yt.d, r.algo, &ws_bytes) == CUDNN_STATUS_SUCCESS, "ws size");
    void *dx = upload(X), *dw = upload(Wt), *dy = upload(Y), *db = upload(Bias), *dws = nullptr;
    if (ws_bytes) cudaMalloc(&dws, ws_bytes);
    const float alpha2 = r.fused == 1 ? 0.5f : 0.f;
    cudnnStatus_t st;
    if (r.fused) {
        cudnnTensorDescriptor_t bd;
        cudnnActivationDescriptor_t ad;
        cudnnCreateTensorDescriptor(&bd), cudnnCreateActivationDescriptor(&ad);
        cudnnSetTensor4dDescriptor(bd, CUDNN_TENSOR_NCHW, dt_cudnn(r.dt), 1, cc.K, 1, 1);
        cudnnSetActivationDescriptor(ad, r.fused == 1 ? CUDNN_ACTIVATION_RELU : CUDNN_ACTIVATION_IDENTITY,
                                     CUDNN_PROPAGATE_NAN, 0.0);
        st = cudnnConvolutionBiasActivationForward(h, &r.alpha, xt.d, dx, wd, dw, cd, r.algo, dws, ws_bytes, &alpha2,
                                                   yt.d, dy, bd, db, ad, yt.d, dy);
        cudnnDestroyTensorDescriptor(bd), cudnnDestroyActivationDescriptor(ad);
    } else {
        st = cudnnConvolutionForward(h, &r.alpha, xt.d, dx, wd, dw, cd, r.algo, dws, ws_bytes, &r.beta, yt.d, dy);
    }
    CHECK(st == CUDNN_STATUS_SUCCESS, "%s: %s", name, cudnnGetErrorString(st));
    Buf out = download(dy, r.dt, yt.elems);
    std::vector<float> logical((size_t)cc.N * cc.K * P * Q);
    std::vector<bool> written(yt.elems, false);
    int bad = 0;
    double worst = 0;
    for (int n = 0; n < cc.N; n++)
        for (int k = 0; k < cc.K; k++)
            for (int p = 0; p < P; p++)
                for (int q = 0; q < Q; q++) {
                    const int g = k / Kg;
                    double sum = 0, mag = 0;
                    for (int c = 0; c < Cg; c++)
                        for (int i = 0; i < cc.R; i++)
                            for (int j = 0; j < cc.S; j++) {
                                int ih = p * cc.u - cc.ph + i * cc.dh, iw = q * cc.v - cc.pw + j * cc.dw;
                                if (ih < 0 || ih >= cc.H || iw < 0 || iw >= cc.W) continue;
                                int fi = cc.mode == CUDNN_CONVOLUTION ? cc.R - 1 - i : i;
                                int fj = cc.mode == CUDNN_CONVOLUTION ? cc.S - 1 - j : j;
                                double t = (double)in(X.get(xt.at(n, g * Cg + c, ih, iw))) * in(Wt.get(w_at(k, c, fi, fj)));
                                sum += t, mag += std::fabs(t);
                            }
                    size_t yi = yt.at(n, k, p, q);
                    double ref = r.alpha * sum, extra = 0;
                    if (r.fused == 0 && r.beta != 0) extra = r.beta * (double)Y.get(yi);
                    if (r.fused) extra = (alpha2 != 0 ? alpha2 * (double)Y.get(yi) : 0.0) + Bias.get(k);
                    ref += extra;
                    if (r.fused == 1 && ref < 0) ref = 0;
                    float got = out.get(yi);
                    logical[(((size_t)n * cc.K + k) * P + p) * Q + q] = got;
                    written[yi] = true;
                    double err = std::fabs(got - ref), tol = dt_eps(r.dt) * std::fabs(ref) + 2e-6 * (std::fabs(r.alpha) * mag + std::fabs(extra)) + 1e-30;
                    if (tf32 && !kStandIn) tol += std::fabs(r.alpha) * mag / 512;
                    if (!(err <= tol)) bad++;
                    if (err > worst || std::isnan(err)) worst = err;
                }
    int touched = 0;
    for (size_t i = 0; i < yt.elems; i++)
        if (!written[i] && memcmp(&out.b[i * dt_size(r.dt)], &Y.b[i * dt_size(r.dt)], dt_size(r.dt))) touched++;
    CHECK(bad == 0 && touched == 0, "%s: %d wrong (worst %g), %d gap elements written", name, bad, worst, touched);
    cudaFree(dx), cudaFree(dw), cudaFree(dy), cudaFree(db);
    if (dws) cudaFree(dws);
    cudnnDestroyTensorDescriptor(xt.d), cudnnDestroyTensorDescriptor(yt.d);
    cudnnDestroyFilterDescriptor(wd), cudnnDestroyConvolutionDescriptor(cd);
    return logical;
}

// 3x3 input 1..9 and filter 1..9 worked by hand: cross-correlation sums i·i, convolution i·(10-i).
static void test_conv_by_hand(cudnnHandle_t h) {
    cudnnTensorDescriptor_t xd, yd;
    cudnnFilterDescriptor_t wd;
    cudnnConvolutionDescriptor_t cd;
    cudnnCreateTensorDescriptor(&xd), cudnnCreateTensorDescriptor(&yd), cudnnCreateFilterDescriptor(&wd);
    cudnnCreateConvolutionDescriptor(&cd);
    Buf x(F32, 9), y(F32, 9);
    for (int i = 0; i < 9; i++) x.put(i, (float)(i + 1));
    void *dx = upload(x), *dy = upload(y);
    cudnnSetTensor4dDescriptor(xd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, 1, 3, 3);
    cudnnSetFilter4dDescriptor(wd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, 1, 1, 3, 3);
    const float one = 1.f, zero = 0.f;
    const float want[2][2] = {{165, 26}, {285, 94}};  // [mode][pad]: centre (pad 0) and corner (pad 1)
    for (int mode = 0; mode < 2; mode++)
        for (int pad = 0; pad < 2; pad++) {
            int s = pad ? 3 : 1;
            cudnnSetTensor4dDescriptor(yd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, 1, s, s);
            cudnnSetConvolution2dDescriptor(cd, pad, pad, 1, 1, 1, 1, (cudnnConvolutionMode_t)mode, CUDNN_DATA_FLOAT);
            cudnnSetConvolutionMathType(cd, CUDNN_FMA_MATH);
            cudnnStatus_t st = cudnnConvolutionForward(h, &one, xd, dx, wd, dx, cd, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
                                                       nullptr, 0, &zero, yd, dy);
            Buf o = download(dy, F32, 9);
            CHECK(st == CUDNN_STATUS_SUCCESS && o.get(0) == want[mode][pad], "by hand mode %d pad %d: %g, want %g",
                  mode, pad, o.get(0), want[mode][pad]);
            if (pad) CHECK(o.get(4) == want[mode][0], "by hand mode %d centre %g", mode, o.get(4));
        }
    cudaFree(dx), cudaFree(dy);
    cudnnDestroyTensorDescriptor(xd), cudnnDestroyTensorDescriptor(yd), cudnnDestroyFilterDescriptor(wd);
    cudnnDestroyConvolutionDescriptor(cd);
}

int test_cudnn() {
    cudnnHandle_t h;
    CHECK(cudnnCreate(&h) == CUDNN_STATUS_SUCCESS, "cudnnCreate");
    CHECK(cudnnGetVersion() == CUDNN_VERSION, "version");
    CHECK(!strcmp(cudnnGetErrorString(CUDNN_STATUS_BAD_PARAM), "CUDNN_STATUS_BAD_PARAM"), "error string");
    test_conv_by_hand(h);
    const cudnnConvolutionMode_t XC = CUDNN_CROSS_CORRELATION, CV = CUDNN_CONVOLUTION;
    struct Named { const char* name; ConvCase c; } cases[] = {
        {"3x3 pad 1", {2, 6, 9, 11, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, XC}},
        {"3x3 pad 1 CONVOLUTION", {2, 6, 9, 11, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, CV}},
        {"3x3 stride 2", {1, 5, 10, 9, 6, 3, 3, 1, 1, 2, 2, 1, 1, 1, XC}},
        {"3x2 stride 2x1 pad 0x2", {2, 3, 8, 7, 4, 3, 2, 0, 2, 2, 1, 1, 1, 1, CV}},
        {"3x3 dilation 2", {1, 4, 11, 10, 3, 3, 3, 2, 2, 1, 1, 2, 2, 1, XC}},
        {"3x3 groups 2", {2, 6, 7, 8, 4, 3, 3, 1, 1, 1, 1, 1, 1, 2, XC}},
        {"1x1", {2, 7, 5, 6, 5, 1, 1, 0, 0, 1, 1, 1, 1, 1, XC}},
    };
    char name[160];
    int runs = 0;
    for (const Named& nc : cases) {
        ConvRun r;
        std::vector<float> base = run_conv(h, nc.c, r, nc.name);
        for (Layout l : {NHWC, PADDED}) {  // same sums in the same order: equal bit for bit
            r.xl = r.yl = l;
            r.wf = l == NHWC ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
            snprintf(name, sizeof name, "%s layout %d", nc.name, l);
            STANDIN_CHECK(run_conv(h, nc.c, r, name) == base, "%s equals NCHW", name);
        }
        for (DT dt : {F16, BF16}) {
            ConvRun q;
            q.dt = dt, q.xl = NHWC, q.yl = NHWC, q.wf = CUDNN_TENSOR_NHWC, q.alpha = 0.75f, q.beta = -0.5f;
            snprintf(name, sizeof name, "%s dt %d beta", nc.name, dt);
            run_conv(h, nc.c, q, name);
            q.beta = 0, q.xl = NCHW;
            snprintf(name, sizeof name, "%s dt %d NaN y", nc.name, dt);
            run_conv(h, nc.c, q, name);
        }
        runs += 5;
    }
    ConvRun r;
    r.math = CUDNN_DEFAULT_MATH;  // fp32 data may run as TF32: the reference rounds the inputs
    run_conv(h, cases[0].c, r, "fp32 default math (TF32)");
    r = ConvRun(), r.fused = 1, r.dt = F16, r.xl = r.yl = NHWC, r.alpha = 1.5f;
    run_conv(h, cases[5].c, r, "bias + RELU, z = y");
    r.fused = 2, r.dt = F32;  // IDENTITY: documented for IMPLICIT_PRECOMP_GEMM only; the stand-in takes any
    r.algo = kStandIn ? CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM : CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM;
    run_conv(h, cases[3].c, r, "bias + IDENTITY, alpha2 0");
    for (cudnnConvolutionFwdAlgo_t a : {CUDNN_CONVOLUTION_FWD_ALGO_GEMM, CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED}) {
        if (!kStandIn) break;  // which algorithms the library offers is its own choice
        r = ConvRun(), r.algo = a;
        run_conv(h, cases[0].c, r, "other algorithms");
    }
    printf("cuDNN: %d convolutions checked against the reference\n", runs + 5);
    test_cudnn_invalid(h);
    CHECK(cudnnDestroy(h) == CUDNN_STATUS_SUCCESS, "destroy");
    return 0;
}


// Invalid arguments return the documented statuses; out-of-allocation operands and destroyed
// descriptors end a forked child through emu_fail.
static void test_cudnn_invalid(cudnnHandle_t h) {
    cudnnTensorDescriptor_t x, y, bad;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t cd;
    cudnnCreateTensorDescriptor(&x), cudnnCreateTensorDescriptor(&y), cudnnCreateTensorDescriptor(&bad);
    cudnnCreateFilterDescriptor(&w), cudnnCreateConvolutionDescriptor(&cd);
    const cudnnDataType_t FL = CUDNN_DATA_FLOAT, HA = CUDNN_DATA_HALF;
    CHECK(cudnnSetTensor4dDescriptor(bad, CUDNN_TENSOR_NCHW, FL, 0, 3, 4, 4) == CUDNN_STATUS_BAD_PARAM, "n = 0");
    CHECK(cudnnSetTensor4dDescriptor(bad, (cudnnTensorFormat_t)9, FL, 1, 3, 4, 4) == CUDNN_STATUS_BAD_PARAM, "format");
    CHECK(cudnnSetFilter4dDescriptor(w, FL, CUDNN_TENSOR_NCHW, 4, -1, 3, 3) == CUDNN_STATUS_BAD_PARAM, "filter c < 0");
    CHECK(cudnnSetConvolution2dDescriptor(cd, 1, 1, 0, 1, 1, 1, CUDNN_CROSS_CORRELATION, FL) == CUDNN_STATUS_BAD_PARAM, "stride 0");
    CHECK(cudnnSetConvolution2dDescriptor(cd, -1, 1, 1, 1, 1, 1, CUDNN_CROSS_CORRELATION, FL) == CUDNN_STATUS_BAD_PARAM, "pad < 0");
    CHECK(cudnnSetConvolution2dDescriptor(cd, 1, 1, 1, 1, 0, 1, CUDNN_CROSS_CORRELATION, FL) == CUDNN_STATUS_BAD_PARAM, "dilation 0");
    CHECK(cudnnSetConvolutionGroupCount(cd, 0) == CUDNN_STATUS_BAD_PARAM, "groups 0");
    CHECK(cudnnSetConvolutionMathType(cd, (cudnnMathType_t)7) == CUDNN_STATUS_BAD_PARAM, "math type");
    int n, c, hh, ww;
    // a descriptor created but never set
    CHECK(cudnnGetConvolution2dForwardOutputDim(cd, bad, w, &n, &c, &hh, &ww) == CUDNN_STATUS_BAD_PARAM, "unset descriptors");
    // x 2x8x10x10, w 6x8x3x3, pad 1 → y 2x6x10x10
    cudnnSetTensor4dDescriptor(x, CUDNN_TENSOR_NCHW, FL, 2, 8, 10, 10);
    cudnnSetFilter4dDescriptor(w, FL, CUDNN_TENSOR_NCHW, 6, 8, 3, 3);
    cudnnSetConvolution2dDescriptor(cd, 1, 1, 1, 1, 1, 1, CUDNN_CROSS_CORRELATION, FL);
    cudnnSetTensor4dDescriptor(y, CUDNN_TENSOR_NCHW, FL, 2, 6, 10, 10);
    CHECK(cudnnGetConvolution2dForwardOutputDim(cd, x, w, &n, &c, &hh, &ww) == CUDNN_STATUS_SUCCESS, "dims");
    CHECK(cudnnSetConvolutionGroupCount(cd, 2) == CUDNN_STATUS_SUCCESS, "groups 2");  // x C 8 != w C 8 · 2
    CHECK(cudnnGetConvolution2dForwardOutputDim(cd, x, w, &n, &c, &hh, &ww) == CUDNN_STATUS_BAD_PARAM, "C != wC * groups");
    cudnnSetConvolutionGroupCount(cd, 1);
    size_t wsz = 0;
    auto ws_of = [&](cudnnConvolutionFwdAlgo_t a) { return cudnnGetConvolutionForwardWorkspaceSize(h, x, w, cd, y, a, &wsz); };
    CHECK(ws_of(CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM) == CUDNN_STATUS_SUCCESS && wsz == 0, "implicit gemm ws 0");
    STANDIN_CHECK(ws_of(CUDNN_CONVOLUTION_FWD_ALGO_FFT) == CUDNN_STATUS_NOT_SUPPORTED, "FFT not offered");
    CHECK(ws_of((cudnnConvolutionFwdAlgo_t)42) == CUDNN_STATUS_BAD_PARAM, "algo 42");
    CHECK(ws_of(CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM) == CUDNN_STATUS_SUCCESS, "precomp ws");
    STANDIN_CHECK(wsz > 0, "precomp ws > 0");
    const size_t precomp_ws = wsz;
    // ranked algorithm list: supported first, memory = the workspace size
    cudnnConvolutionFwdAlgoPerf_t perf[8];
    int got = 0, maxc = 0;
    CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(h, &maxc) == CUDNN_STATUS_SUCCESS && maxc == 8, "max count");
    CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h, x, w, cd, y, 8, &got, perf) == CUDNN_STATUS_SUCCESS && got >= 1 &&
          perf[0].status == CUDNN_STATUS_SUCCESS, "v7 list");
    STANDIN_CHECK(got == 8 && perf[7].status == CUDNN_STATUS_NOT_SUPPORTED, "v7 lists all 8, unsupported last");
    for (int i = 0; i < got; i++)
        if (perf[i].status == CUDNN_STATUS_SUCCESS)
            CHECK(ws_of(perf[i].algo) == CUDNN_STATUS_SUCCESS && wsz == perf[i].memory, "v7 memory of algo %d", perf[i].algo);
    CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h, x, w, cd, y, 0, &got, perf) == CUDNN_STATUS_BAD_PARAM, "v7 count 0");
    CHECK(cudnnFindConvolutionForwardAlgorithm(h, x, w, cd, y, 2, &got, perf) == CUDNN_STATUS_SUCCESS && got == 2, "find");

    void *dx, *dw, *dy, *ws;
    cudaMalloc(&dx, 2 * 8 * 10 * 10 * 4), cudaMalloc(&dw, 6 * 8 * 9 * 4), cudaMalloc(&dy, 2 * 6 * 10 * 10 * 4);
    cudaMalloc(&ws, precomp_ws);
    cudaMemset(dx, 0, 2 * 8 * 10 * 10 * 4), cudaMemset(dw, 0, 6 * 8 * 9 * 4);
    const float one = 1.f, zero = 0.f;
    auto fwd = [&](cudnnTensorDescriptor_t xd, cudnnTensorDescriptor_t yd, cudnnConvolutionFwdAlgo_t a, void* wsp, size_t wsb) {
        return cudnnConvolutionForward(h, &one, xd, dx, w, dw, cd, a, wsp, wsb, &zero, yd, dy);
    };
    const auto PRE = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM;
    CHECK(fwd(x, y, PRE, ws, precomp_ws) == CUDNN_STATUS_SUCCESS, "valid forward");
    if (precomp_ws > 0) {
        CHECK(fwd(x, y, PRE, ws, precomp_ws - 1) == CUDNN_STATUS_BAD_PARAM, "workspace one byte short");
        CHECK(fwd(x, y, PRE, nullptr, 0) == CUDNN_STATUS_BAD_PARAM, "no workspace");
    }
    CHECK(fwd(x, y, CUDNN_CONVOLUTION_FWD_ALGO_DIRECT, nullptr, 0) == CUDNN_STATUS_NOT_SUPPORTED, "DIRECT");
    CHECK(fwd(x, y, (cudnnConvolutionFwdAlgo_t)-1, ws, precomp_ws) == CUDNN_STATUS_BAD_PARAM, "algo -1");
    CHECK(cudnnConvolutionForward(h, nullptr, x, dx, w, dw, cd, PRE, ws, precomp_ws, &zero, y, dy) == CUDNN_STATUS_BAD_PARAM, "alpha NULL");
    CHECK(cudnnConvolutionForward(nullptr, &one, x, dx, w, dw, cd, PRE, ws, precomp_ws, &zero, y, dy) == CUDNN_STATUS_BAD_PARAM, "handle NULL");
    auto with_y = [&](int yn, int yc, int yh, int yw, cudnnDataType_t t) {
        cudnnSetTensor4dDescriptor(bad, CUDNN_TENSOR_NCHW, t, yn, yc, yh, yw);
        return fwd(x, bad, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, nullptr, 0);
    };
    CHECK(with_y(2, 5, 10, 10, FL) == CUDNN_STATUS_BAD_PARAM, "y C != K");
    CHECK(with_y(1, 6, 10, 10, FL) == CUDNN_STATUS_BAD_PARAM, "y N != x N");
    CHECK(with_y(2, 6, 9, 10, FL) == CUDNN_STATUS_NOT_SUPPORTED, "y H != output H (documented NOT_SUPPORTED)");
    CHECK(with_y(2, 6, 10, 10, HA) == CUDNN_STATUS_BAD_PARAM, "y HALF, x FLOAT");
    cudnnSetTensor4dDescriptor(bad, CUDNN_TENSOR_NCHW, HA, 2, 8, 10, 10);  // x HALF, w FLOAT
    CHECK(fwd(bad, y, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, nullptr, 0) == CUDNN_STATUS_BAD_PARAM, "x/w types differ");
    cudnnSetConvolution2dDescriptor(cd, 1, 1, 1, 1, 1, 1, CUDNN_CROSS_CORRELATION, HA);  // FLOAT data, HALF compute
    CHECK(fwd(x, y, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, nullptr, 0) == CUDNN_STATUS_NOT_SUPPORTED, "float data, half compute");
    cudnnSetConvolution2dDescriptor(cd, 0, 0, 1, 1, 6, 6, CUDNN_CROSS_CORRELATION, FL);  // dilated 13 > 10
    CHECK(cudnnGetConvolution2dForwardOutputDim(cd, x, w, &n, &c, &hh, &ww) == CUDNN_STATUS_BAD_PARAM, "filter larger than input");
    cudnnSetConvolution2dDescriptor(cd, 1, 1, 1, 1, 1, 1, CUDNN_CROSS_CORRELATION, FL);
    // fused: activation other than RELU / IDENTITY
    cudnnTensorDescriptor_t bd;
    cudnnActivationDescriptor_t ad;
    cudnnCreateTensorDescriptor(&bd), cudnnCreateActivationDescriptor(&ad);
    cudnnSetTensor4dDescriptor(bd, CUDNN_TENSOR_NCHW, FL, 1, 6, 1, 1);
    CHECK(cudnnSetActivationDescriptor(ad, (cudnnActivationMode_t)99, CUDNN_PROPAGATE_NAN, 0) == CUDNN_STATUS_BAD_PARAM, "act mode");
    cudnnSetActivationDescriptor(ad, CUDNN_ACTIVATION_SIGMOID, CUDNN_PROPAGATE_NAN, 0);
    auto fused = [&](cudnnTensorDescriptor_t b) {
        return cudnnConvolutionBiasActivationForward(h, &one, x, dx, w, dw, cd, PRE, ws, precomp_ws, &zero, y, dy, b, dw, ad, y, dy);
    };
    CHECK(fused(bd) == CUDNN_STATUS_NOT_SUPPORTED, "sigmoid");
    cudnnSetActivationDescriptor(ad, CUDNN_ACTIVATION_RELU, CUDNN_PROPAGATE_NAN, 0);
    CHECK(fused(bd) == CUDNN_STATUS_SUCCESS, "relu");
    cudnnSetTensor4dDescriptor(bd, CUDNN_TENSOR_NCHW, FL, 1, 5, 1, 1);
    CHECK(fused(bd) == CUDNN_STATUS_BAD_PARAM, "bias C != K");
    // cudnnAddTensor: broadcast 1xKx1x1 onto NHWC fp16, then mismatches
    Buf yv(F16, 2 * 6 * 10 * 10), bv(F16, 6);
    yv.fill_random(), bv.fill_random();
    void *dyh = upload(yv), *dbh = upload(bv);
    cudnnTensorDescriptor_t yh;
    cudnnCreateTensorDescriptor(&yh);
    cudnnSetTensor4dDescriptor(yh, CUDNN_TENSOR_NHWC, HA, 2, 6, 10, 10);
    cudnnSetTensor4dDescriptor(bd, CUDNN_TENSOR_NCHW, HA, 1, 6, 1, 1);
    const float two = 2.f;
    CHECK(cudnnAddTensor(h, &two, bd, dbh, &one, yh, dyh) == CUDNN_STATUS_SUCCESS, "add tensor");
    Buf yo = download(dyh, F16, yv.size());
    int bad_add = 0;
    for (size_t i = 0; i < yv.size(); i++) {  // NHWC: channel = i % 6
        float ref = yv.get(i) + 2.f * bv.get(i % 6);
        if (std::fabs(yo.get(i) - ref) > std::fabs(ref) / 1024 + 1e-6) bad_add++;
    }
    CHECK(bad_add == 0, "add tensor values: %d wrong", bad_add);
    cudnnSetTensor4dDescriptor(bd, CUDNN_TENSOR_NCHW, HA, 1, 6, 2, 1);
    CHECK(cudnnAddTensor(h, &one, bd, dbh, &one, yh, dyh) == CUDNN_STATUS_BAD_PARAM, "add tensor H 2 vs 10");
    cudnnSetTensor4dDescriptor(bd, CUDNN_TENSOR_NCHW, FL, 1, 6, 1, 1);
    CHECK(cudnnAddTensor(h, &one, bd, dbh, &one, yh, dyh) == CUDNN_STATUS_BAD_PARAM, "add tensor types differ");

    // ---- program errors: a forked child must end in emu_fail ----
    void *xs, *ys;
    cudaMalloc(&xs, 2 * 8 * 10 * 10 * 4 - 4), cudaMalloc(&ys, 2 * 6 * 10 * 10 * 4 - 4);  // one element short
    STANDIN_CHECK(child_fails([&] { cudnnConvolutionForward(h, &one, x, xs, w, dw, cd, PRE, ws, precomp_ws, &zero, y, dy); },
                      "cudnnConvolutionForward: x"), "x one element short");
    STANDIN_CHECK(child_fails([&] { cudnnConvolutionForward(h, &one, x, dx, w, dw, cd, PRE, ws, precomp_ws + 256, &zero, y, dy); },
                      "workSpace"), "workspace size beyond its allocation");
    STANDIN_CHECK(child_fails([&] { cudnnConvolutionForward(h, &one, x, dx, w, dw, cd, PRE, ws, precomp_ws, &zero, y, ys); },
                      "cudnnConvolutionForward: y"), "y in a too-small allocation");
    STANDIN_CHECK(child_fails([&] { cudnnDestroyFilterDescriptor(w); cudnnConvolutionForward(h, &one, x, dx, w, dw, cd, PRE, ws, precomp_ws, &zero, y, dy); },
                      "destroyed"), "destroyed filter descriptor");

    // ---- speed: a UNet-sized 3x3 convolution (64 -> 64 channels at 32x32, fp16) ----
    ConvCase big{1, 64, 32, 32, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, CUDNN_CROSS_CORRELATION};
    ConvRun r;
    r.dt = F16;
    auto t0 = std::chrono::steady_clock::now();
    run_conv(h, big, r, "64->64 3x3 at 32x32");
    printf("cuDNN: 3x3 conv 64->64 at 32x32 fp16 with its reference check %.3f s\n",
           std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    cudaFree(xs), cudaFree(ys), cudaFree(dx), cudaFree(dw), cudaFree(dy), cudaFree(ws), cudaFree(dyh), cudaFree(dbh);
    cudnnDestroyTensorDescriptor(x), cudnnDestroyTensorDescriptor(y), cudnnDestroyTensorDescriptor(bad);
    cudnnDestroyTensorDescriptor(bd), cudnnDestroyTensorDescriptor(yh), cudnnDestroyActivationDescriptor(ad);
    cudnnDestroyFilterDescriptor(w), cudnnDestroyConvolutionDescriptor(cd);
}

// Graph capture: a call on a capturing stream only records the work (host-mode alpha/beta by
// value, descriptors copied); each graph launch runs it.
static void test_capture() {
    cublasHandle_t bh;
    cudnnHandle_t dh;
    cublasCreate(&bh), cudnnCreate(&dh);
    cudaStream_t s;
    cudaStreamCreate(&s);
    cublasSetStream(bh, s), cudnnSetStream(dh, s);
    Buf a(F32, 12), b(F32, 12), c(F32, 9);
    a.fill_random(), b.fill_random(), c.fill(5.f);
    void *da = upload(a), *db = upload(b), *dc = upload(c);
    float alpha = 2.f, beta = 0.f;
    cudnnTensorDescriptor_t td;
    cudnnCreateTensorDescriptor(&td);
    cudnnSetTensor4dDescriptor(td, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, 1, 3, 3);
    const float one = 1.f;
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal) == cudaSuccess, "begin capture");
    CHECK(cublasSgemm(bh, CUBLAS_OP_T, CUBLAS_OP_N, 3, 3, 4, &alpha, (float*)da, 4, (float*)db, 4, &beta, (float*)dc, 3) ==
          CUBLAS_STATUS_SUCCESS, "captured sgemm");
    CHECK(cudnnAddTensor(dh, &one, td, dc, &one, td, dc) == CUDNN_STATUS_SUCCESS, "captured add");  // C += C
    CHECK(cudaStreamEndCapture(s, &g) == cudaSuccess, "end capture");
    cudnnDestroyTensorDescriptor(td);  // the recorded work keeps its own copy
    alpha = 100.f;                      // host scalars were read at the call
    CHECK(download(dc, F32, 9).get(4) == 5.f, "nothing ran during capture");
    CHECK(cudaGraphInstantiate(&ge, g, 0) == cudaSuccess && cudaGraphLaunch(ge, s) == cudaSuccess, "launch");
    cudaStreamSynchronize(s);
    Buf o = download(dc, F32, 9);
    int bad = 0;
    for (int j = 0; j < 3; j++)
        for (int i = 0; i < 3; i++) {
            double sum = 0;
            for (int p = 0; p < 4; p++) sum += (double)a.get(p + i * 4) * b.get(p + j * 4);
            if (std::fabs(o.get(i + j * 3) - 2 * 2 * sum) > 1e-5) bad++;
        }
    CHECK(bad == 0, "captured GEMM + AddTensor replayed: %d wrong", bad);
    cudaGraphExecDestroy(ge), cudaGraphDestroy(g), cudaStreamDestroy(s);
    cudaFree(da), cudaFree(db), cudaFree(dc);
    cublasDestroy(bh), cudnnDestroy(dh);
}

int main() {
    if (!kStandIn) {
        int devices = 0;
        if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
            printf("no CUDA device: nothing to cross-check\n");
            return 1;
        }
    }
    test_cublas();
    test_cudnn();
    test_capture();
    printf("%d checks, %d failed\n", g_checks, g_fails);
    return g_fails ? 1 : 0;
}
