// test_emu_runtime.cpp — self-tests of the SIMT emulator (ctest -L emu). The kernels live in
// test_emu_runtime.cu and are compiled exactly like kernels/cuda/*.cu.
//   1. positive tests, run three times: default schedule, reversed schedule, strict mode;
//   2. negative tests, each in a forked child that must die with a recognisable message;
//   3. timings: a 4096-row softmax and the cost of one fiber switch.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include "emu_control.h"
#include "emu_mem.h"
#include "test_emu_runtime.h"

static int g_failures = 0;
static bool g_shuffled = false;
#define CHECK(c)                                                                        \
    do {                                                                                \
        if (!(c)) {                                                                     \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #c);                \
            g_failures++;                                                               \
        }                                                                               \
    } while (0)
#define CUDA_OK(call) CHECK((call) == cudaSuccess)

template <typename T> static T* dev(size_t n) {
    void* p = nullptr;
    CUDA_OK(cudaMalloc(&p, n * sizeof(T)));
    return (T*)p;
}
template <typename T> static T* dev_from(const std::vector<T>& h) {
    T* p = dev<T>(h.size());
    CUDA_OK(cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
    return p;
}
template <typename T> static std::vector<T> host(const T* p, size_t n) {
    std::vector<T> h(n);
    CUDA_OK(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
}
static double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
static double cpu_s() {  // the machine may be shared: CPU time is the stable measure
    timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

// ---- positive tests ----------------------------------------------------------------------------
static void test_reduce() {
    const int n = 100000;
    std::vector<float> h(n);
    for (int i = 0; i < n; i++) h[i] = (float)(i % 7);
    double want = 0;
    for (float v : h) want += v;
    float* in = dev_from(h);
    float* out = dev<float>(1);
    CUDA_OK(cudaMemset(out, 0, 4));
    st_reduce(in, out, n, 13);
    CHECK(host(out, 1)[0] == (float)want);
    cudaFree(in);
    cudaFree(out);
}

static void test_shuffle() {
    const int T = 64;
    float* out = dev<float>(T * 8);
    st_shuffle(out, T);
    auto o = host(out, T * 8);
    for (int t = 0; t < T; t++) {
        int w = t / 32, l = t % 32, s = l / 8;
        const float* r = &o[t * 8];
        CHECK(r[0] == (float)(32 * 32 * w + 528));
        if (l == 0) CHECK(r[1] == (float)(32 * 32 * w + 528));
        float scan = 0;
        for (int k = 0; k <= l; k++) scan += 32 * w + k + 1;
        CHECK(r[2] == scan);
        CHECK(r[3] == (float)(32 * w + 6));
        CHECK(r[4] == (float)(8 * (32 * w + 8 * s) + 36));
        CHECK(r[5] == (float)(32 * w + 8 * s + 4));
        CHECK(r[6] == (float)(32 * w + (l ^ 1) + 1));
        CHECK(r[7] == (l == 31 ? (t + 1) * 0.5f : (t + 2) * 0.5f));
    }
    cudaFree(out);
}

static void test_vote() {
    const int T = 64;
    unsigned* out = dev<unsigned>(T * 8);
    st_vote(out, T);
    auto o = host(out, T * 8);
    unsigned every3 = 0;
    for (int l = 0; l < 32; l += 3) every3 |= 1u << l;
    for (int t = 0; t < T; t++) {
        int l = t % 32;
        const unsigned* r = &o[t * 8];
        CHECK(r[0] == every3);
        CHECK(r[1] == 1 && r[2] == 1 && r[3] == 0);
        CHECK(r[4] == 0xfu << (4 * (l / 4)));
        CHECK(r[5] == 496);
        CHECK(r[6] == 31);
        CHECK(r[7] == (l % 2 == 0 ? 0x155u : 0xdeadu));
    }
    int* s = dev<int>(4);
    st_syncthreads_ops(s, 100);
    auto so = host(s, 4);
    CHECK(so[0] == 34 && so[1] == 1 && so[2] == 1 && so[3] == 0);
    cudaFree(out);
    cudaFree(s);
}

static void test_atomics() {
    const int B = 64, T = 256, N = B * T;
    int* cnt = dev<int>(3);
    float* fsum = dev<float>(1);
    unsigned* umax = dev<unsigned>(1);
    unsigned long long* cas = dev<unsigned long long>(1);
    double* dsum = dev<double>(1);
    CUDA_OK(cudaMemset(cnt, 0, 12));
    CUDA_OK(cudaMemset(fsum, 0, 4));
    CUDA_OK(cudaMemset(umax, 0, 4));
    CUDA_OK(cudaMemset(cas, 0, 8));
    CUDA_OK(cudaMemset(dsum, 0, 8));
    st_atomics(cnt, fsum, umax, cas, dsum, B, T);
    auto c = host(cnt, 3);
    CHECK(c[0] == N && c[1] == -N && c[2] == 7);
    CHECK(host(fsum, 1)[0] == N * 0.5f);
    CHECK(host(umax, 1)[0] == (unsigned)N - 1);
    CHECK(host(cas, 1)[0] == 2ull * N);
    CHECK(host(dsum, 1)[0] == N * 0.25);
    cudaFree(cnt); cudaFree(fsum); cudaFree(umax); cudaFree(cas); cudaFree(dsum);
}

static void test_dynamic_shared() {
    const int n = 1000, T = 128;
    std::vector<float> h(n);
    for (int i = 0; i < n; i++) h[i] = (float)i;
    float* in = dev_from(h);
    float* out = dev<float>(n);
    st_dyn_reverse(in, out, n, T);
    auto o = host(out, n);
    for (int i = 0; i < n; i++) {
        int base = i / T * T, m = std::min(n - base, T);
        CHECK(o[i] == h[base + m - 1 - (i - base)]);
    }
    // above 48 KiB only with the attribute; above 227 KiB never
    float* s = dev<float>(1);
    emu_set_launch_errors_fatal(false);
    CHECK(st_dyn_big(s, 100 * 1024, false) == cudaErrorInvalidValue);
    CHECK(st_dyn_big(s, 100 * 1024, true) == cudaSuccess);
    CHECK(host(s, 1)[0] == 25600.0f);
    CHECK(st_dyn_big(s, 228 * 1024, true) == cudaErrorInvalidValue);
    CHECK(cudaGetLastError() == cudaErrorInvalidValue);  // cudaFuncSetAttribute's error, as the last error
    emu_set_launch_errors_fatal(true);
    cudaFree(in); cudaFree(out); cudaFree(s);
}

static void test_odd_blocks() {
    for (int T : {1, 5, 32, 37, 100, 1000}) {
        const int B = 3;
        std::vector<int> h(B * T);
        for (int i = 0; i < B * T; i++) h[i] = i;
        int* in = dev_from(h);
        int* out = dev<int>(B);
        st_odd_block(in, out, B, T);
        auto o = host(out, B);
        for (int b = 0; b < B; b++) {
            long long want = 0;
            for (int i = b * T; i < (b + 1) * T; i++) want += i;
            CHECK(o[b] == (int)want);
        }
        cudaFree(in); cudaFree(out);
    }
}

static void test_grids() {
    struct { int nx, ny, nz; dim3 block; } cases[] = {{37, 19, 5, dim3(8, 4, 2)}, {100, 33, 1, dim3(16, 16, 1)},
                                                      {3, 2, 70, dim3(1, 1, 64)}};
    for (auto& c : cases) {
        size_t n = (size_t)c.nx * c.ny * c.nz;
        int* hits = dev<int>(n);
        int* coords = dev<int>(n);
        CUDA_OK(cudaMemset(hits, 0, n * 4));
        st_grid3d(hits, coords, c.nx, c.ny, c.nz, c.block);
        auto h = host(hits, n);
        auto xy = host(coords, n);
        for (int z = 0; z < c.nz; z++)
            for (int y = 0; y < c.ny; y++)
                for (int x = 0; x < c.nx; x++) {
                    size_t i = ((size_t)z * c.ny + y) * c.nx + x;
                    CHECK(h[i] == 1);
                    CHECK(xy[i] == x + 1000 * y + 1000000 * z);
                }
        cudaFree(hits); cudaFree(coords);
    }
}

static void test_wmma() {
    std::vector<__half> a(256), b(256);
    std::vector<float> fa(256), fb(256), c(256);
    for (int i = 0; i < 256; i++) {
        fa[i] = (float)((i * 7) % 11 - 5);
        fb[i] = (float)((i * 5) % 13 - 6) * 0.5f;
        c[i] = (float)(i % 9) - 4.0f;
        a[i] = __float2half(fa[i]);
        b[i] = __float2half(fb[i]);
    }
    __half* da = dev_from(a);
    __half* db = dev_from(b);
    float* dc = dev_from(c);
    float* dcol = dev<float>(256);
    st_wmma(da, db, dc, dcol);
    auto r = host(dc, 256);
    auto rc = host(dcol, 256);
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++) {
            float acc = c[i * 16 + j];
            for (int k = 0; k < 16; k++) acc += fa[i * 16 + k] * fb[j * 16 + k];  // B is column-major
            CHECK(r[i * 16 + j] == 2 * acc);
            CHECK(rc[j * 16 + i] == 2 * acc);
        }
    cudaFree(da); cudaFree(db); cudaFree(dc); cudaFree(dcol);
}

static bool close_rel(float got, float want, float rel) {
    return std::fabs(got - want) <= rel * std::fabs(want) + 1e-6f;
}
static void test_half_math() {
    const int n = 200;
    std::vector<float> x(n);
    for (int i = 0; i < n; i++) x[i] = 0.05f + 0.02f * i;
    float* in = dev_from(x);
    float* out = dev<float>(n * 12);
    st_half_math(in, out, n);
    auto o = host(out, n * 12);
    const float hr = 1.0f / 1024, br = 1.0f / 128;  // one ulp of fp16 / bf16, relative
    for (int i = 0; i < n; i++) {
        float xh = __half2float(__float2half_rn(x[i]));
        float xb = __bfloat162float(__float2bfloat16_rn(x[i]));
        const float* r = &o[i * 12];
        CHECK(close_rel(r[0], expf(xh), hr));
        CHECK(close_rel(r[1], logf(xh), hr) || std::fabs(r[1] - logf(xh)) < 1e-3f);
        CHECK(close_rel(r[2], sqrtf(xh), hr));
        CHECK(close_rel(r[3], 1 / sqrtf(xh), hr));
        CHECK(close_rel(r[4], 1 / xh, hr));
        CHECK(close_rel(r[5], xh * xh + xh, hr));
        CHECK(r[6] == r[0]);
        CHECK(close_rel(r[7], expf(xb), br));
        CHECK(close_rel(r[8], xb * xb + xb, br));
        CHECK(r[9] == std::max(xh, 1.0f));
        CHECK(close_rel(r[10], tanhf(xh), hr));
        float f = x[i];
        float want = expf(f) * (1 / sqrtf(f)) + f / 3 + erff(f) + tanhf(f) + exp2f(f) + 1 / f + std::max(f, 0.5f);
        CHECK(close_rel(r[11], want, 1e-5f));
    }
    cudaFree(in); cudaFree(out);
}

static void test_intrinsics() {
    float r = st_intrinsics();
    CHECK(r > 0 && std::isfinite(r));
}

static void test_spin() {
    int* out = dev<int>(2);
    st_spin(out);
    auto o = host(out, 2);
    CHECK(o[0] == 42);
    if (!emu_reverse()) CHECK(o[1] == 1 || g_shuffled);  // forward: thread 0 spins before thread 37 runs
    cudaFree(out);
}

static void test_poison() {
    unsigned* out = dev<unsigned>(9);
    st_poison(out, 3);
    for (unsigned v : host(out, 9)) CHECK(v == 0xffffffffu);
    cudaFree(out);
}

// Kernels the permissive mode accepts (strict mode rejects them: see the negative tests).
static void test_permissive() {
    float* out = dev<float>(64);
    st_exited_lane(out);
    auto o = host(out, 16);
    for (int t = 0; t < 16; t++) CHECK(o[t] == (float)(t ^ 1));
    st_early_exit(out);
    o = host(out, 48);
    for (int t = 0; t < 48; t++) CHECK(o[t] == 1.0f);
    int* cnt = dev<int>(48);
    st_early_exit_count(cnt);
    for (int v : host(cnt, 48)) CHECK(v == 24);
    cudaFree(cnt);
    st_divergent_barrier(out);
    o = host(out, 64);
    for (int t = 0; t < 64; t++) CHECK(o[t] == 1.0f);
    cudaFree(out);
}

static void test_launch_errors() {
    emu_set_launch_errors_fatal(false);
    CHECK(st_launch_config(dim3(1), dim3(32), 0) == cudaSuccess);
    CHECK(st_launch_config(dim3(1), dim3(2048), 0) == cudaErrorInvalidConfiguration);
    CHECK(st_launch_config(dim3(1), dim3(32, 32, 2), 0) == cudaErrorInvalidConfiguration);
    CHECK(st_launch_config(dim3(1), dim3(1, 1, 65), 0) == cudaErrorInvalidConfiguration);
    CHECK(st_launch_config(dim3(1, 70000), dim3(32), 0) == cudaErrorInvalidConfiguration);
    CHECK(st_launch_config(dim3(0), dim3(32), 0) == cudaErrorInvalidConfiguration);
    CHECK(st_launch_config(dim3(1), dim3(32), 49 * 1024) == cudaErrorInvalidValue);
    size_t st = 0;
    CHECK(st_static_plus_dynamic(16 * 1024, &st) == cudaSuccess);
    CHECK(st == 16384);
    CHECK(st_static_plus_dynamic(40 * 1024, &st) == cudaErrorInvalidValue);  // 16 + 40 KiB > 48 KiB
    CHECK(cudaGetLastError() == cudaSuccess);  // read and cleared by st_launch_config
    emu_set_launch_errors_fatal(true);
}

static void test_graph_and_events() {
    const int n = 300;
    float* p = dev<float>(n);
    CUDA_OK(cudaMemset(p, 0, n * 4));
    cudaStream_t s;
    CUDA_OK(cudaStreamCreate(&s));
    cudaEvent_t e0, e1;
    CUDA_OK(cudaEventCreate(&e0));
    CUDA_OK(cudaEventCreate(&e1));
    CUDA_OK(cudaEventRecord(e0, s));
    CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    cudaStreamCaptureStatus st;
    CUDA_OK(cudaStreamIsCapturing(s, &st));
    CHECK(st == cudaStreamCaptureStatusActive);
    st_inc(p, n, s);
    st_inc(p, n, s);
    cudaGraph_t g;
    CUDA_OK(cudaStreamEndCapture(s, &g));
    CHECK(host(p, n)[0] == 0.0f);  // captured, not run
    cudaGraphExec_t ge;
    CUDA_OK(cudaGraphInstantiate(&ge, g, 0));
    for (int i = 0; i < 3; i++) CUDA_OK(cudaGraphLaunch(ge, s));
    CUDA_OK(cudaStreamSynchronize(s));
    for (float v : host(p, n)) CHECK(v == 6.0f);
    CUDA_OK(cudaEventRecord(e1, s));
    CUDA_OK(cudaEventSynchronize(e1));
    float ms = -1;
    CUDA_OK(cudaEventElapsedTime(&ms, e0, e1));
    CHECK(ms >= 0);
    CUDA_OK(cudaGraphExecDestroy(ge));
    CUDA_OK(cudaGraphDestroy(g));
    CUDA_OK(cudaEventDestroy(e0));
    CUDA_OK(cudaEventDestroy(e1));
    CUDA_OK(cudaStreamDestroy(s));
    cudaFree(p);
}

// Calls the real runtime refuses during a global-mode capture are refused (and invalidate it).
static void test_capture_rules() {
    cudaStream_t s;
    CUDA_OK(cudaStreamCreate(&s));
    float* p = dev<float>(8);
    void* q = nullptr;
    cudaGraph_t g = nullptr;
    CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    CHECK(cudaMalloc(&q, 64) == cudaErrorStreamCaptureUnsupported);
    CHECK(cudaStreamEndCapture(s, &g) == cudaErrorStreamCaptureInvalidated && g == nullptr);
    CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    CHECK(cudaMemsetAsync(p, 0, 32, 0) == cudaErrorStreamCaptureImplicit);  // the legacy stream
    CHECK(cudaStreamEndCapture(s, &g) == cudaErrorStreamCaptureInvalidated);
    CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    CUDA_OK(cudaMallocAsync(&q, 64, s));  // stream-ordered allocation is allowed
    CUDA_OK(cudaMemsetAsync(p, 0, 32, s));
    CUDA_OK(cudaStreamEndCapture(s, &g));
    CUDA_OK(cudaGraphDestroy(g));
    CUDA_OK(cudaFreeAsync(q, s));
    CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
    CUDA_OK(cudaMalloc(&q, 64));  // relaxed mode permits it
    CUDA_OK(cudaStreamEndCapture(s, &g));
    CUDA_OK(cudaGraphDestroy(g));
    CUDA_OK(cudaFree(q));
    cudaGetLastError();
    CUDA_OK(cudaStreamDestroy(s));
    cudaFree(p);
}

static void test_memory_api() {
    size_t free0, total;
    CUDA_OK(cudaMemGetInfo(&free0, &total));
    float* p = dev<float>(1000);
    size_t free1;
    CUDA_OK(cudaMemGetInfo(&free1, &total));
    CHECK(free0 - free1 == 4000);
    size_t ext = 0;
    CHECK(emu_mem_extent(p + 10, &ext) && ext == 3960);
    CHECK(!emu_mem_extent(p + 1000, &ext));
    float h[4] = {0};
    CHECK(!emu_mem_extent(h, &ext));
    for (float v : host(p, 1000)) CHECK(std::isnan(v));  // new memory is NaN
    CHECK(cudaMemcpy(h, p, 16, cudaMemcpyHostToDevice) == cudaErrorInvalidValue);  // wrong direction
    CHECK(cudaGetLastError() == cudaErrorInvalidValue);
    CHECK(cudaMemcpy(p, h, 16, cudaMemcpyDefault) == cudaSuccess);
    CHECK(cudaFree(p + 1) == cudaErrorInvalidValue);
    cudaGetLastError();
    void* ph = nullptr;
    CUDA_OK(cudaMallocHost(&ph, 100));
    CUDA_OK(cudaMemcpy(p, ph, 100, cudaMemcpyHostToDevice));
    CUDA_OK(cudaFreeHost(ph));
    cudaDeviceProp prop;
    CUDA_OK(cudaGetDeviceProperties(&prop, 0));
    CHECK(prop.major == 9 && prop.multiProcessorCount == 132 && prop.warpSize == 32);
    CHECK(prop.sharedMemPerBlockOptin == 227 * 1024);
    int v = 0, count = 0;
    CUDA_OK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0));
    CHECK(v == 227 * 1024);
    CUDA_OK(cudaGetDeviceCount(&count));
    CHECK(count == 1);
    CHECK(std::string(cudaGetErrorName(cudaErrorInvalidValue)) == "cudaErrorInvalidValue");
    CUDA_OK(cudaFree(p));
}

static void run_positive(const char* mode) {
    int before = g_failures;
    double t0 = now_s();
    test_reduce();
    test_shuffle();
    test_vote();
    test_atomics();
    test_dynamic_shared();
    test_odd_blocks();
    test_grids();
    test_wmma();
    test_half_math();
    test_intrinsics();
    test_spin();
    test_poison();
    if (!emu_strict()) test_permissive();
    test_launch_errors();
    test_graph_and_events();
    test_capture_rules();
    test_memory_api();
    CHECK(st_constant_and_2d());
    printf("positive tests, %-9s: %s (%.2f s)\n", mode, g_failures == before ? "ok" : "FAILED", now_s() - t0);
}

// The race the default order hides: the reversed schedule computes something else.
static void test_reverse_exposes_race() {
    int* out = dev<int>(64);
    emu_set_reverse(false);
    st_racy(out);
    auto fwd = host(out, 64);
    emu_set_reverse(true);
    st_racy(out);
    auto rev = host(out, 64);
    emu_set_reverse(false);
    emu_set_shuffle(7);
    st_racy(out);
    auto shu = host(out, 64);
    emu_set_shuffle(0);
    CHECK(fwd[0] == -1 && rev[0] == 1);  // forward: the neighbour has not written yet (poison)
    CHECK(fwd != rev);
    CHECK(shu != fwd && shu != rev);
    printf("racy kernel: forward reads %d, reversed reads %d for thread 0: the race is visible\n", fwd[0], rev[0]);
    cudaFree(out);
}

// ---- negative tests: in a child process, which must die with `needle` in its stderr -------------
static void expect_death(const char* name, void (*fn)(), const char* needle) {
    fflush(stdout);
    fflush(stderr);
    char path[] = "/tmp/emu_death_XXXXXX";
    int fd = mkstemp(path);
    pid_t pid = fork();
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        dup2(fd, 2);
        fn();
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    std::string msg;
    char buf[4096];
    ssize_t k;
    lseek(fd, 0, SEEK_SET);
    while ((k = read(fd, buf, sizeof buf)) > 0) msg.append(buf, (size_t)k);
    close(fd);
    unlink(path);
    bool died = !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    bool said = msg.find(needle) != std::string::npos;
    printf("negative: %-34s %s\n", name, died && said ? "caught" : "NOT CAUGHT");
    if (!(died && said)) {
        g_failures++;
        fprintf(stderr, "  child %s; stderr was:\n%s\n", died ? "died" : "exited 0", msg.c_str());
    } else {
        // show the first line of the report
        printf("    %s\n", msg.substr(0, msg.find('\n')).c_str());
    }
}

static void run_negative() {
    expect_death("deadlock", [] { st_deadlock(dev<float>(64)); }, "deadlock in kernel deadlock_k");
    expect_death("write past a cudaMalloc buffer", [] { st_oob_write(dev<float>(1024), 1024, 0); }, "past the end");
    expect_death("write into the alignment padding", [] {
        float* p = dev<float>(1001);
        st_oob_write(p, 1001, 0);
        cudaFree(p);
    }, "written past the end");
    expect_death("strict: mask names an exited lane", [] {
        emu_set_strict(true);
        st_exited_lane(dev<float>(32));
    }, "exited");
    expect_death("strict: exit before a barrier", [] {
        emu_set_strict(true);
        st_early_exit(dev<float>(64));
    }, "strict");
    expect_death("strict: divergent barriers", [] {
        emu_set_strict(true);
        st_divergent_barrier(dev<float>(64));
    }, "divergent barriers");
    expect_death("assert() in a kernel", [] {
        int* p = dev<int>(8);
        cudaMemset(p, 0, 32);
        cudaMemset(p + 5, 1, 1);
        st_assert(p);
    }, "abort at kernel assert_k, block (0,0,0), thread (5,0,0)");
    expect_death("use after cudaFree", [] {
        float* p = dev<float>(256);
        cudaFree(p);
        st_oob_write(p, 0, 7);
    }, "use after free: offset 28 of a 1024-byte cudaMalloc allocation");
    expect_death("fiber stack overflow", [] { st_stack_overflow(dev<float>(32)); }, "stack overflow");
    expect_death("cudaMemcpy past an allocation", [] {
        float* p = dev<float>(10);
        std::vector<float> h(20);
        cudaMemcpy(p, h.data(), 80, cudaMemcpyHostToDevice);
    }, "past its end");
    expect_death("bad launch configuration", [] { st_launch_config(dim3(1), dim3(2048), 0); }, "launch of noop_k failed");
}

// ---- timings -----------------------------------------------------------------------------------
static void run_timings() {
    const int rows = 4096, cols = 1024;
    std::vector<float> h((size_t)rows * cols);
    for (size_t i = 0; i < h.size(); i++) h[i] = (float)((i * 2654435761u) % 1000) * 0.01f;
    float* in = dev_from(h);
    float* out = dev<float>(h.size());
    emu_stats_t s0 = emu_stats();
    double t0 = now_s(), c0 = cpu_s();
    st_softmax_rows(in, out, rows, cols);
    double t1 = now_s(), c1 = cpu_s();
    emu_stats_t s1 = emu_stats();
    auto o = host(out + (size_t)17 * cols, cols);
    double sum = 0;
    for (float v : o) sum += v;
    CHECK(std::fabs(sum - 1.0) < 1e-4);
    printf("timing: softmax 4096 rows x 1024 (256 threads/row, 2 shuffle rounds, 3 barriers): %.3f s CPU (%.3f s wall), "
           "%.2f M switches\n", c1 - c0, t1 - t0, (double)(s1.switches - s0.switches) / 1e6);
    cudaFree(in);
    cudaFree(out);

    int* d = dev<int>(1);
    const int blocks = 1000, threads = 256, iters = 20;
    s0 = emu_stats();
    t0 = now_s();
    c0 = cpu_s();
    st_barrier_loop(blocks, threads, iters, d);
    t1 = now_s();
    c1 = cpu_s();
    s1 = emu_stats();
    double sw = (double)(s1.switches - s0.switches);
    printf("timing: %d blocks x %d threads x %d barriers: %.3f s CPU (%.3f s wall), %.1f M switches, %.1f ns CPU per "
           "switch (with the barrier bookkeeping)\n", blocks, threads, iters, c1 - c0, t1 - t0, sw / 1e6,
           (c1 - c0) * 1e9 / sw);
    cudaFree(d);

    const int n = 1 << 24;
    float* p = dev<float>(n);
    CUDA_OK(cudaMemset(p, 0, (size_t)n * 4));
    c0 = cpu_s();
    st_inc(p, n, 0);
    c1 = cpu_s();
    printf("timing: elementwise over %d elements (%d blocks x 128 threads): %.3f s CPU, %.1f ns per thread\n", n,
           n / 128, c1 - c0, (c1 - c0) * 1e9 / n);
    CHECK(host(p + n - 1, 1)[0] == 1.0f);
    cudaFree(p);
}

int main(int argc, char** argv) {
    bool timings = !(argc > 1 && strcmp(argv[1], "--no-timings") == 0);
    emu_set_strict(false);
    emu_set_reverse(false);
    run_positive("default");
    emu_set_reverse(true);
    run_positive("reversed");
    emu_set_reverse(false);
    emu_set_shuffle(12345);
    g_shuffled = true;
    run_positive("shuffled");
    g_shuffled = false;
    emu_set_shuffle(0);
    emu_set_strict(true);
    run_positive("strict");
    emu_set_strict(false);
    test_reverse_exposes_race();
    run_negative();
    if (timings) run_timings();
    if (g_failures) {
        printf("test_emu_runtime: %d check(s) FAILED\n", g_failures);
        return 1;
    }
    printf("test_emu_runtime: all ok\n");
    return 0;
}
