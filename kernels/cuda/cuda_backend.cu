// cuda_backend.cu — the CUDA backend: creation (device checks, stream, cuBLAS / cuDNN handles),
// the handle space, memory (alloc / upload / download / copy), workspace, device properties,
// the vtable. The ops live in one file per family (cuda_linear.cu, cuda_conv2d.cu, ...).
//
// Handles. Model code holds `float*` handles counting ELEMENTS and may offset them (`p + k`), but
// our memory is fp16/bf16 (or fp32) on the device, so a handle cannot be a device address. We
// reserve a large range of host address space (PROT_NONE: any accidental host dereference
// faults at once) and carve each allocation's handle range from it: handle base b with n
// elements covers [b, b + n) in float units. The allocation table is sorted by handle base
// (handles are handed out in increasing order), so a handle resolves by binary search to
// dev + (h − b)·elem_size. One unused float of handle space separates allocations, so the end
// pointer b + n of one allocation never equals the base of the next.
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include <algorithm>
#include <new>
#include <vector>

#include "cuda_common.cuh"

namespace {

struct Alloc {
    uintptr_t base;     // handle of element 0 (bytes, float units)
    int64_t n;          // elements
    ds_act_dtype dtype; // element type on the device
    void* dev;          // device memory, n · elem_size bytes
};

struct Impl {
    int device = 0;
    ds_act_dtype dtype = DS_ACT_F16;
    cudaStream_t stream = nullptr;
    cublasHandle_t cublas = nullptr;
    cudnnHandle_t cudnn = nullptr;
    int sm_count = 0;
    size_t max_smem = 0;
    size_t total_mem = 0;  // bytes of device memory: larger requests fail without asking
    // handle space
    char* va = nullptr;     // reserved range (never touched)
    size_t va_bytes = 0;
    size_t va_next = 0;     // next free offset into va (bytes)
    std::vector<Alloc> allocs;  // sorted by base
    // grow-only scratch
    void* ws = nullptr;
    size_t ws_bytes = 0;
    void* conv_cache = nullptr;  // cuda_conv2d.cu's algorithm cache
    void* solver = nullptr;      // cuda_solve.cu's cuSOLVER handle
    char failure[256] = "";      // why an op skipped its work (out of GPU memory); "" while none did
};

// 4 TiB of handle space (1 Ti floats): far more than any GPU holds, and x86-64 user space has
// 128 TiB. MAP_NORESERVE + PROT_NONE: no memory and no commit charge.
constexpr size_t VA_BYTES = (size_t)1 << 42;
// Upload / download convert through device scratch in chunks of this many elements (16 MiB as
// fp32), so a large weight tensor never needs a staging buffer its own size.
constexpr int64_t STAGE_ELEMS = (int64_t)4 << 20;

inline Impl* impl(ds_backend* be) { return (Impl*)be->impl; }

size_t elem_size(ds_act_dtype t) { return t == DS_ACT_F32 ? 4 : 2; }

const Alloc* find(Impl* c, const float* h) {
    uintptr_t p = (uintptr_t)h;
    auto it = std::upper_bound(c->allocs.begin(), c->allocs.end(), p,
                               [](uintptr_t v, const Alloc& a) { return v < a.base; });
    if (it == c->allocs.begin()) return nullptr;
    --it;
    // the end pointer (b + n) is valid for empty ranges; the gap keeps it unambiguous
    if (p > it->base + (uintptr_t)it->n * sizeof(float)) return nullptr;
    if ((p - it->base) % sizeof(float)) return nullptr;
    return &*it;
}

const Alloc* find_or_die(ds_backend* be, const float* h, const char* who) {
    const Alloc* a = find(impl(be), h);
    if (!a) {
        char msg[128];
        snprintf(msg, sizeof msg, "%p is not CUDA backend memory (freed, or from another backend?)",
                 (const void*)h);
        ds_cuda_fatal(__FILE__, __LINE__, who, msg);
    }
    return a;
}

// ---- conversion between fp32 (host side of upload / download) and the storage types --------
// The allocation holding [h, h + n), or abort (a transfer past an allocation's end would write
// someone else's device memory).
const Alloc* find_range(ds_backend* be, const float* h, int64_t n, const char* who) {
    const Alloc* a = find_or_die(be, h, who);
    if ((int64_t)(((uintptr_t)h - a->base) / sizeof(float)) + n > a->n)
        ds_cuda_fatal(__FILE__, __LINE__, who, "range runs past the end of its allocation");
    return a;
}

template <typename Tin, typename Tout>
__global__ void convert_kernel(const Tin* __restrict__ x,  // (n)
                               Tout* __restrict__ y,       // (n)
                               int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] = ds_from_f32<Tout>(ds_to_f32(x[i]));
}

template <typename Tin, typename Tout>
void convert(ds_backend* be, const void* x, void* y, int64_t n) {
    if (n <= 0) return;
    auto* k = convert_kernel<Tin, Tout>;
    DS_LAUNCH(k, ds_cuda_grid(be, n, 256), 256, 0, ds_cuda_stream(be), (const Tin*)x, (Tout*)y, n);
}

// y (type to) = x (type from), device to device
void convert_any(ds_backend* be, ds_act_dtype from, const void* x, ds_act_dtype to, void* y,
                 int64_t n) {
    DS_DISPATCH(from, Tin, DS_DISPATCH(to, Tout, convert<Tin, Tout>(be, x, y, n)));
}

// ---- the vtable's memory functions ---------------------------------------------------------------
float* alloc_typed(ds_backend* be, int64_t n, ds_act_dtype dt) {
    Impl* c = impl(be);
    if (n < 0) return nullptr;
    // handle range: n floats + one separating float, 256-byte aligned bases
    size_t span = ((size_t)n + 1) * sizeof(float);
    span = (span + 255) & ~(size_t)255;
    if ((size_t)n > VA_BYTES / sizeof(float) || span > c->va_bytes - c->va_next) return nullptr;
    void* dev = nullptr;
    size_t bytes = (size_t)(n > 0 ? n : 1) * elem_size(dt);
    if (bytes > c->total_mem) return nullptr;  // can never fit (and cudaMalloc may be slow to say so)
    cudaError_t err = cudaMalloc(&dev, bytes);
    if (err != cudaSuccess) {
        (void)cudaGetLastError();  // clear the error so a later DS_CUDA_CHECK does not report it
        return nullptr;
    }
    Alloc a{(uintptr_t)(c->va + c->va_next), n, dt, dev};
    c->va_next += span;
    try {
        c->allocs.push_back(a);  // bases increase: the table stays sorted
    } catch (const std::bad_alloc&) {
        DS_CUDA_CHECK(cudaFree(dev));
        return nullptr;
    }
    return (float*)a.base;
}

float* cuda_alloc(ds_backend* be, int64_t n) { return alloc_typed(be, n, impl(be)->dtype); }
float* cuda_alloc_f32(ds_backend* be, int64_t n) { return alloc_typed(be, n, DS_ACT_F32); }

void cuda_free(ds_backend* be, float* p) {
    if (!p) return;
    Impl* c = impl(be);
    const Alloc* a = find_or_die(be, p, "free");
    if ((uintptr_t)p != a->base)
        ds_cuda_fatal(__FILE__, __LINE__, "free", "pointer is not the start of an allocation");
    // cudaFree waits for the device, so no queued op still uses the memory
    DS_CUDA_CHECK(cudaFree(a->dev));
    c->allocs.erase(c->allocs.begin() + (a - c->allocs.data()));
}

void cuda_upload(ds_backend* be, float* dst, const float* src_host, int64_t n) {
    if (n <= 0) return;
    const Alloc* a = find_range(be, dst, n, "upload");
    cudaStream_t s = ds_cuda_stream(be);
    char* d = (char*)ds_cuda_dev(be, dst);
    if (a->dtype == DS_ACT_F32) {
        // from pageable memory this returns once the source has been staged: src may go away
        DS_CUDA_CHECK(cudaMemcpyAsync(d, src_host, (size_t)n * 4, cudaMemcpyHostToDevice, s));
        return;
    }
    int64_t chunk = std::min(n, STAGE_ELEMS);
    float* stage = (float*)ds_cuda_workspace(be, (size_t)chunk * 4);
    if (!stage) return;  // out of GPU memory: recorded, be->failure reports it
    for (int64_t i = 0; i < n; i += chunk) {
        int64_t m = std::min(chunk, n - i);
        // stream order: this copy waits for the previous chunk's conversion to finish reading
        DS_CUDA_CHECK(cudaMemcpyAsync(stage, src_host + i, (size_t)m * 4, cudaMemcpyHostToDevice, s));
        convert_any(be, DS_ACT_F32, stage, a->dtype, d + (size_t)i * elem_size(a->dtype), m);
    }
}

void cuda_download(ds_backend* be, float* dst_host, const float* src, int64_t n) {
    if (n <= 0) return;
    const Alloc* a = find_range(be, src, n, "download");
    cudaStream_t s = ds_cuda_stream(be);
    const char* d = (const char*)ds_cuda_dev(be, src);
    if (a->dtype == DS_ACT_F32) {
        DS_CUDA_CHECK(cudaMemcpyAsync(dst_host, d, (size_t)n * 4, cudaMemcpyDeviceToHost, s));
    } else {
        int64_t chunk = std::min(n, STAGE_ELEMS);
        float* stage = (float*)ds_cuda_workspace(be, (size_t)chunk * 4);
        if (!stage) return;
        for (int64_t i = 0; i < n; i += chunk) {
            int64_t m = std::min(chunk, n - i);
            convert_any(be, a->dtype, d + (size_t)i * elem_size(a->dtype), DS_ACT_F32, stage, m);
            DS_CUDA_CHECK(
                cudaMemcpyAsync(dst_host + i, stage, (size_t)m * 4, cudaMemcpyDeviceToHost, s));
        }
    }
    // the caller reads dst_host next
    DS_CUDA_CHECK(cudaStreamSynchronize(s));
}

void cuda_copy(ds_backend* be, float* dst, const float* src, int64_t n) {
    if (n <= 0 || dst == src) return;
    const ds_act_dtype td = find_range(be, dst, n, "copy")->dtype;
    const ds_act_dtype ts = find_range(be, src, n, "copy")->dtype;
    void* d = ds_cuda_dev(be, dst);
    const void* s = ds_cuda_dev(be, src);
    if (td == ts)  // same element type: a plain copy (overlap within one allocation is allowed)
        DS_CUDA_CHECK(cudaMemcpyAsync(d, s, (size_t)n * elem_size(td), cudaMemcpyDeviceToDevice,
                                      ds_cuda_stream(be)));
    else  // e.g. fp32 capture sums into activation memory
        convert_any(be, ts, s, td, d, n);
}

void cuda_sync(ds_backend* be) { DS_CUDA_CHECK(cudaStreamSynchronize(ds_cuda_stream(be))); }

void cuda_destroy(ds_backend* be) {
    if (!be) return;
    Impl* c = impl(be);
    if (c) {
        if (c->stream) (void)cudaStreamSynchronize(c->stream);
        ds_cuda_conv_cache_free(be);
        ds_cuda_solver_free(be);
        for (const Alloc& a : c->allocs) (void)cudaFree(a.dev);
        if (c->ws) (void)cudaFree(c->ws);
        if (c->cudnn) (void)cudnnDestroy(c->cudnn);
        if (c->cublas) (void)cublasDestroy(c->cublas);
        if (c->stream) (void)cudaStreamDestroy(c->stream);
        if (c->va) munmap(c->va, c->va_bytes);
        delete c;
    }
    free(be);
}

}  // namespace

// ---- backend internals (cuda_common.cuh) ----------------------------------------------------------
void ds_cuda_fatal(const char* file, int line, const char* call, const char* msg) {
    fprintf(stderr, "diffscope: CUDA backend error at %s:%d: %s: %s\n", file, line, call, msg);
    fflush(stderr);
    abort();
}

void* ds_cuda_dev(ds_backend* be, const float* h) {
    if (!h) return nullptr;  // optional operands (bias, residual) pass through
    const Alloc* a = find_or_die(be, h, "ds_cuda_dev");
    return (char*)a->dev + (size_t)(((uintptr_t)h - a->base) / sizeof(float)) * elem_size(a->dtype);
}

ds_act_dtype ds_cuda_dtype_of(ds_backend* be, const float* h) {
    return find_or_die(be, h, "ds_cuda_dtype_of")->dtype;
}

ds_act_dtype ds_cuda_act_dtype(ds_backend* be) { return impl(be)->dtype; }
cudaStream_t ds_cuda_stream(ds_backend* be) { return impl(be)->stream; }
cublasHandle_t ds_cuda_cublas(ds_backend* be) { return impl(be)->cublas; }
cudnnHandle_t ds_cuda_cudnn(ds_backend* be) { return impl(be)->cudnn; }
void** ds_cuda_conv_cache_slot(ds_backend* be) { return &impl(be)->conv_cache; }
void** ds_cuda_solver_slot(ds_backend* be) { return &impl(be)->solver; }
int ds_cuda_sm_count(ds_backend* be) { return impl(be)->sm_count; }
size_t ds_cuda_max_smem(ds_backend* be) { return impl(be)->max_smem; }

void* ds_cuda_workspace(ds_backend* be, size_t bytes) {
    Impl* c = impl(be);
    if (bytes > c->ws_bytes) {
        // grow by at least 1.5× so a sequence of slightly larger requests reallocates rarely;
        // cudaFree waits for queued work that may still use the old buffer
        size_t want = std::max(bytes, c->ws_bytes + c->ws_bytes / 2);
        want = (want + 4095) & ~(size_t)4095;
        if (c->ws) DS_CUDA_CHECK(cudaFree(c->ws));
        c->ws = nullptr;
        c->ws_bytes = 0;
        size_t got = want;
        cudaError_t err = cudaMalloc(&c->ws, want);
        if (err != cudaSuccess) {
            (void)cudaGetLastError();
            got = bytes;  // the growth margin may be what did not fit
            err = cudaMalloc(&c->ws, bytes);
        }
        if (err != cudaSuccess) {
            // ops have no error channel: the op that asked skips its work, and the host sees
            // be->failure() at its next check (each denoising step, the end of a run)
            (void)cudaGetLastError();
            c->ws = nullptr;
            c->ws_bytes = 0;
            if (!c->failure[0])
                snprintf(c->failure, sizeof c->failure,
                         "out of GPU memory: an op needs %.1f MB of scratch (%s); a smaller image or batch needs less",
                         bytes / 1e6, cudaGetErrorString(err));
            return nullptr;
        }
        c->ws_bytes = got;
    }
    return c->ws;
}

static const char* cuda_failure(ds_backend* be) {
    return impl(be)->failure[0] ? impl(be)->failure : nullptr;
}

// ---- creation ------------------------------------------------------------------------------------
extern "C" ds_backend* ds_backend_cuda_create(ds_err* e, const ds_cuda_options* opt) {
    ds_cuda_options o = opt ? *opt : ds_cuda_options{0, DS_ACT_F16};
    if (o.dtype != DS_ACT_F16 && o.dtype != DS_ACT_BF16 && o.dtype != DS_ACT_F32) {
        ds_errf(e, DS_ERR_DEVICE, "--device cuda: unknown activation type %d", (int)o.dtype);
        return NULL;
    }
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess || count == 0) {
        const char* why = err == cudaSuccess ? "no CUDA device" : cudaGetErrorString(err);
        // insufficient-driver also means "no driver at all" (libcuda missing): tell them apart
        int drv = 0;
        if (cudaDriverGetVersion(&drv) != cudaSuccess) drv = 0;
        const char* hint = "";
        if (err == cudaErrorInsufficientDriver)
            hint = drv == 0 ? " (no NVIDIA driver is installed on this machine)"
                            : " (the NVIDIA driver is older than this build's CUDA runtime: "
                              "update the driver)";
        (void)cudaGetLastError();
        ds_errf(e, DS_ERR_DEVICE, "--device cuda: no usable CUDA GPU: cudaGetDeviceCount: %s%s",
                why, hint);
        return NULL;
    }
    if (o.device < 0 || o.device >= count) {
        ds_errf(e, DS_ERR_DEVICE, "--device cuda: device %d does not exist (%d CUDA device%s)",
                o.device, count, count == 1 ? "" : "s");
        return NULL;
    }

    ds_backend* be = (ds_backend*)calloc(1, sizeof(ds_backend));
    Impl* c = new (std::nothrow) Impl;
    if (!be || !c) {
        free(be);
        delete c;
        ds_errf(e, DS_ERR_OOM, "--device cuda: out of host memory");
        return NULL;
    }
    be->name = "cuda";
    be->impl = c;
    c->device = o.device;
    c->dtype = o.dtype;
    be->memory_name = "GPU memory";
    be->act_bytes = (int)elem_size(o.dtype);

    // every failure below: message, then tear down what exists (destroy handles partial state)
#define FAIL(...)                              \
    do {                                       \
        ds_errf(e, DS_ERR_DEVICE, __VA_ARGS__); \
        cuda_destroy(be);                      \
        return NULL;                           \
    } while (0)

    void* va = mmap(NULL, VA_BYTES, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (va == MAP_FAILED) FAIL("--device cuda: cannot reserve %zu bytes of address space for handles", VA_BYTES);
    c->va = (char*)va;
    c->va_bytes = VA_BYTES;
    c->va_next = 256;  // never hand out the very start (a handle is never the reservation itself)

    if ((err = cudaSetDevice(o.device)) != cudaSuccess)
        FAIL("--device cuda: cudaSetDevice(%d): %s", o.device, cudaGetErrorString(err));
    cudaDeviceProp prop;
    if ((err = cudaGetDeviceProperties(&prop, o.device)) != cudaSuccess)
        FAIL("--device cuda: cudaGetDeviceProperties: %s", cudaGetErrorString(err));
    if (prop.major < 8)
        FAIL("--device cuda: %s has compute capability %d.%d; diffscope's CUDA kernels need 8.0 "
             "or newer (Ampere, Hopper)", prop.name, prop.major, prop.minor);
    if (o.dtype == DS_ACT_BF16 && prop.major < 8)
        FAIL("--device cuda: bf16 needs compute capability 8.0 or newer");
    c->sm_count = prop.multiProcessorCount > 0 ? prop.multiProcessorCount : 1;
    c->total_mem = prop.totalGlobalMem;
    c->max_smem = prop.sharedMemPerBlockOptin ? prop.sharedMemPerBlockOptin : prop.sharedMemPerBlock;

    if ((err = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) != cudaSuccess) {
        c->stream = nullptr;
        FAIL("--device cuda: cudaStreamCreate: %s (out of GPU memory, or the GPU is in use "
             "exclusively by another process?)", cudaGetErrorString(err));
    }
    cublasStatus_t bs = cublasCreate(&c->cublas);
    if (bs != CUBLAS_STATUS_SUCCESS) {
        c->cublas = nullptr;
        FAIL("--device cuda: cublasCreate: %s", cublasGetStatusName(bs));
    }
    if ((bs = cublasSetStream(c->cublas, c->stream)) != CUBLAS_STATUS_SUCCESS)
        FAIL("--device cuda: cublasSetStream: %s", cublasGetStatusName(bs));
    // fp32 accumulation everywhere: no TF32 for fp32 data, no fp16 split-K reductions
    if ((bs = cublasSetMathMode(c->cublas, (cublasMath_t)(CUBLAS_DEFAULT_MATH |
                                                          CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION))) !=
        CUBLAS_STATUS_SUCCESS)
        FAIL("--device cuda: cublasSetMathMode: %s", cublasGetStatusName(bs));
    cudnnStatus_t ns = cudnnCreate(&c->cudnn);
    if (ns != CUDNN_STATUS_SUCCESS) {
        c->cudnn = nullptr;
        FAIL("--device cuda: cudnnCreate: %s (is cuDNN 9 installed next to the CUDA runtime?)",
             cudnnGetErrorString(ns));
    }
    if ((ns = cudnnSetStream(c->cudnn, c->stream)) != CUDNN_STATUS_SUCCESS)
        FAIL("--device cuda: cudnnSetStream: %s", cudnnGetErrorString(ns));
#undef FAIL

    be->destroy = cuda_destroy;
    be->alloc = cuda_alloc;
    be->alloc_f32 = cuda_alloc_f32;
    be->free = cuda_free;
    be->upload = cuda_upload;
    be->download = cuda_download;
    be->copy = cuda_copy;
    be->sync = cuda_sync;
    be->solve_spd_f64 = ds_cuda_solve_spd_f64;
    be->solver_name = "cuSOLVER potrf/potrs";
    be->linear = ds_cuda_linear;
    be->conv2d = ds_cuda_conv2d;
    be->group_norm = ds_cuda_group_norm;
    be->layer_norm = ds_cuda_layer_norm;
    be->attention = ds_cuda_attention;
    be->act = ds_cuda_act;
    be->geglu = ds_cuda_geglu;
    be->add = ds_cuda_add;
    be->scale = ds_cuda_scale;
    be->add_channel_bias = ds_cuda_add_channel_bias;
    be->upsample_nearest2x = ds_cuda_upsample_nearest2x;
    be->concat_channels = ds_cuda_concat_channels;
    be->nchw_to_nhwc = ds_cuda_nchw_to_nhwc;
    be->nhwc_to_nchw = ds_cuda_nhwc_to_nchw;
    be->timestep_embedding = ds_cuda_timestep_embedding;
    be->embed_tokens = ds_cuda_embed_tokens;
    be->column_stats = ds_cuda_column_stats;
    be->failure = cuda_failure;
    return be;
}
