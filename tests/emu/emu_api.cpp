// emu_api.cpp — the CUDA runtime API subset diffscope uses, implemented on the host for the SIMT
// emulator. Compiled against the real cuda_runtime_api.h, so every signature is checked, and it
// exports the same symbols: emulated programs do not link libcudart. One emulated device (H100-like);
// "device" memory is host memory with a guard page right after each allocation; every stream
// executes synchronously; graph capture records operations and a graph launch replays them.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <sys/mman.h>
#include <unistd.h>
#include <vector>

#include "emu_internal.h"


// ---- errors ------------------------------------------------------------------------------------
namespace {
thread_local cudaError_t g_last_error = cudaSuccess;

// The real runtime records every failing call's code as the last error.
inline cudaError_t ret(cudaError_t e) {
    if (e != cudaSuccess) g_last_error = e;
    return e;
}
// A misuse worth a message on top of the error code (DS_CUDA_CHECK then aborts with the name).
cudaError_t complain(cudaError_t e, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
cudaError_t complain(cudaError_t e, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "emu: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    return ret(e);
}
}  // namespace

void emu_set_error(cudaError_t e) { ret(e); }

// While a stream captures in global or thread-local mode, the real runtime refuses the "potentially
// unsafe" calls (cudaMalloc, synchronous copies and fills, device synchronization, work on the
// legacy default stream) and invalidates the capture. So does the emulator: such code fails only
// on a GPU otherwise. Defined with the streams below.
static cudaError_t capture_guard(const char* fn);

cudaError_t cudaGetLastError(void) {
    cudaError_t e = g_last_error;
    g_last_error = cudaSuccess;
    return e;
}
cudaError_t cudaPeekAtLastError(void) { return g_last_error; }

#define EMU_ERRORS(X)                                                                          \
    X(cudaSuccess, "no error")                                                                 \
    X(cudaErrorInvalidValue, "invalid argument")                                               \
    X(cudaErrorMemoryAllocation, "out of memory")                                              \
    X(cudaErrorInitializationError, "initialization error")                                    \
    X(cudaErrorInvalidConfiguration, "invalid configuration argument")                         \
    X(cudaErrorInvalidPitchValue, "invalid pitch argument")                                    \
    X(cudaErrorInvalidSymbol, "invalid device symbol")                                         \
    X(cudaErrorInvalidDevicePointer, "invalid device pointer")                                 \
    X(cudaErrorInvalidMemcpyDirection, "invalid copy direction for memcpy")                    \
    X(cudaErrorNoDevice, "no CUDA-capable device is detected")                                 \
    X(cudaErrorInvalidDevice, "invalid device ordinal")                                        \
    X(cudaErrorInvalidResourceHandle, "invalid resource handle")                               \
    X(cudaErrorNotReady, "device not ready")                                                   \
    X(cudaErrorIllegalAddress, "an illegal memory access was encountered")                     \
    X(cudaErrorLaunchOutOfResources, "too many resources requested for launch")                \
    X(cudaErrorLaunchFailure, "unspecified launch failure")                                    \
    X(cudaErrorNotSupported, "operation not supported")                                        \
    X(cudaErrorStreamCaptureUnsupported, "operation not permitted when stream is capturing")   \
    X(cudaErrorStreamCaptureInvalidated, "operation failed due to a previous error during capture") \
    X(cudaErrorStreamCaptureUnmatched, "capture was not initiated in this stream")             \
    X(cudaErrorStreamCaptureImplicit, "operation would make the legacy stream depend on a capturing blocking stream") \
    X(cudaErrorIllegalState, "the operation cannot be performed in the present state")         \
    X(cudaErrorUnknown, "unknown error")

const char* cudaGetErrorString(cudaError_t e) {
#define X(code, str) if (e == code) return str;
    EMU_ERRORS(X)
#undef X
    return "unrecognized error code";
}
const char* cudaGetErrorName(cudaError_t e) {
#define X(code, str) if (e == code) return #code;
    EMU_ERRORS(X)
#undef X
    return "cudaErrorUnknown";
}

// ---- device memory -----------------------------------------------------------------------------
// Each allocation is its own mapping: data pages, then one PROT_NONE guard page. The user range
// ends at most 15 bytes before the guard page (starts are 16-byte aligned, enough for float4 and
// the libraries' vector loads); those padding bytes hold a canary checked at cudaFree. New memory
// is filled with 0xFF bytes: NaN as float, __half and bf16 (and -1 as integers).
namespace {
struct Alloc {
    char* user;
    size_t size;
    char* base;
    size_t map_len;
    bool device;  // false: cudaMallocHost (page-locked host memory in real life)
};
std::mutex g_mem_mu;
std::map<uintptr_t, Alloc> g_allocs;  // by user start
std::deque<Alloc> g_quarantine;       // freed, still mapped PROT_NONE (oldest first)
size_t g_quarantine_bytes = 0;
const size_t kQuarantineBytes = (size_t)1 << 30;
size_t g_device_bytes = 0;
const size_t kPage = 4096;
const unsigned char kCanary = 0xA5;
const size_t kDefaultTotalMem = (size_t)80 << 30;
// The emulated GPU's memory: 80 GiB, or $EMU_DEVICE_MEM_MB (tests of out-of-memory paths).
size_t total_mem() {
    static const size_t total = [] {
        const char* v = getenv("EMU_DEVICE_MEM_MB");
        return v && atoll(v) > 0 ? (size_t)atoll(v) << 20 : kDefaultTotalMem;
    }();
    return total;
}
#define kTotalMem total_mem()

// The allocation containing p (device or host), or null. Caller holds g_mem_mu.
const Alloc* find_alloc(const void* p) {
    auto it = g_allocs.upper_bound((uintptr_t)p);
    if (it == g_allocs.begin()) return nullptr;
    --it;
    const Alloc& a = it->second;
    return (const char*)p < a.user + a.size ? &a : nullptr;
}

cudaError_t do_alloc(void** out, size_t size, bool device) {
    if (!out) return ret(cudaErrorInvalidValue);
    if (cudaError_t e = capture_guard(device ? "cudaMalloc" : "cudaMallocHost")) return e;
    emu_install_fault_handler();
    *out = nullptr;
    if (size == 0) return cudaSuccess;
    if (device) {
        std::lock_guard<std::mutex> lock(g_mem_mu);
        if (g_device_bytes + size > kTotalMem) return ret(cudaErrorMemoryAllocation);
    }
    size_t user_len = (size + 15) & ~(size_t)15;
    size_t data = (user_len + kPage - 1) & ~(kPage - 1);
    size_t map_len = data + kPage;
    char* base = (char*)mmap(nullptr, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                             -1, 0);
    if (base == MAP_FAILED) return ret(cudaErrorMemoryAllocation);
    mprotect(base + data, kPage, PROT_NONE);
    char* user = base + data - user_len;
    memset(user, 0xff, size);
    memset(user + size, kCanary, user_len - size);
    std::lock_guard<std::mutex> lock(g_mem_mu);
    g_allocs[(uintptr_t)user] = Alloc{user, size, base, map_len, device};
    if (device) g_device_bytes += size;
    *out = user;
    return cudaSuccess;
}

cudaError_t do_free(void* p, bool device, const char* fn) {
    if (!p) return cudaSuccess;
    if (cudaError_t e = capture_guard(fn)) return e;
    Alloc a;
    {
        std::lock_guard<std::mutex> lock(g_mem_mu);
        auto it = g_allocs.find((uintptr_t)p);
        if (it == g_allocs.end() || it->second.device != device)
            return complain(cudaErrorInvalidValue, "%s(%p): not the start of a live %s allocation", fn, p,
                            device ? "cudaMalloc" : "cudaMallocHost");
        a = it->second;
        g_allocs.erase(it);
        if (device) g_device_bytes -= a.size;
    }
    size_t user_len = (a.size + 15) & ~(size_t)15;
    for (size_t i = a.size; i < user_len; i++)
        if ((unsigned char)a.user[i] != kCanary)
            emu_fail("%s(%p): bytes written past the end of this %zu-byte allocation (at offset %zu)", fn, p, a.size, i);
    // Quarantine: the freed range stays mapped PROT_NONE (its memory returned to the system) so a
    // use after cudaFree faults and is named, until 1 GiB of address space is held this way.
    madvise(a.base, a.map_len, MADV_DONTNEED);
    mprotect(a.base, a.map_len, PROT_NONE);
    std::lock_guard<std::mutex> lock(g_mem_mu);
    g_quarantine.push_back(a);
    g_quarantine_bytes += a.map_len;
    while (g_quarantine_bytes > kQuarantineBytes) {
        const Alloc& old = g_quarantine.front();
        munmap(old.base, old.map_len);
        g_quarantine_bytes -= old.map_len;
        g_quarantine.pop_front();
    }
    return cudaSuccess;
}

cudaError_t do_alloc_async(void** out, size_t size);
cudaError_t do_free_async(void* p);

// Device range [p, p+n): must lie inside one device allocation. Returns false when p is not device
// memory at all; fails loudly when it is but the range runs past the allocation's end.
bool check_device_range(const void* p, size_t n, const char* fn, const char* which) {
    std::lock_guard<std::mutex> lock(g_mem_mu);
    const Alloc* a = find_alloc(p);
    if (!a || !a->device) return false;
    size_t off = (size_t)((const char*)p - a->user);
    if (n > a->size - off)
        emu_fail("%s: %s range of %zu bytes at offset %zu of a %zu-byte cudaMalloc allocation runs %zu bytes past its end",
                 fn, which, n, off, a->size, n - (a->size - off));
    return true;
}
bool is_device(const void* p) {
    std::lock_guard<std::mutex> lock(g_mem_mu);
    const Alloc* a = find_alloc(p);
    return a && a->device;
}
}  // namespace

bool emu_mem_extent(const void* p, size_t* bytes_from_p) {
    std::lock_guard<std::mutex> lock(g_mem_mu);
    const Alloc* a = find_alloc(p);
    if (!a || !a->device) return false;
    if (bytes_from_p) *bytes_from_p = (size_t)(a->user + a->size - (const char*)p);
    return true;
}

bool emu_mem_describe_fault(const void* addr, char* buf, size_t n) {
    if (!g_mem_mu.try_lock()) return false;  // in a signal handler: never wait
    bool found = false;
    for (auto& kv : g_allocs) {
        const Alloc& a = kv.second;
        const char* guard = a.base + a.map_len - kPage;
        if ((const char*)addr >= guard && (const char*)addr < guard + kPage) {
            snprintf(buf, n, "%zu bytes past the end of a %zu-byte %s allocation at %p",
                     (size_t)((const char*)addr - (a.user + a.size)), a.size, a.device ? "cudaMalloc" : "cudaMallocHost",
                     (void*)a.user);
            found = true;
            break;
        }
    }
    for (size_t i = g_quarantine.size(); !found && i-- > 0;) {
        const Alloc& a = g_quarantine[i];
        if ((const char*)addr >= a.base && (const char*)addr < a.base + a.map_len) {
            snprintf(buf, n, "use after free: offset %td of a %zu-byte %s allocation at %p, already freed",
                     (const char*)addr - a.user, a.size, a.device ? "cudaMalloc" : "cudaMallocHost", (void*)a.user);
            found = true;
        }
    }
    g_mem_mu.unlock();
    return found;
}

cudaError_t cudaMalloc(void** p, size_t size) { return do_alloc(p, size, true); }
cudaError_t cudaFree(void* p) { return do_free(p, true, "cudaFree"); }
// (stream-ordered allocation is legal during capture; here it simply happens at once)
cudaError_t cudaMallocAsync(void** p, size_t size, cudaStream_t) { return do_alloc_async(p, size); }
cudaError_t cudaFreeAsync(void* p, cudaStream_t) { return do_free_async(p); }
cudaError_t cudaMallocHost(void** p, size_t size) { return do_alloc(p, size, false); }
cudaError_t cudaHostAlloc(void** p, size_t size, unsigned int) { return do_alloc(p, size, false); }
cudaError_t cudaFreeHost(void* p) { return do_free(p, false, "cudaFreeHost"); }
cudaError_t cudaHostRegister(void*, size_t, unsigned int) { return cudaSuccess; }
cudaError_t cudaHostUnregister(void*) { return cudaSuccess; }

cudaError_t cudaMemGetInfo(size_t* free_b, size_t* total) {
    std::lock_guard<std::mutex> lock(g_mem_mu);
    if (total) *total = kTotalMem;
    if (free_b) *free_b = kTotalMem > g_device_bytes ? kTotalMem - g_device_bytes : 0;
    return cudaSuccess;
}

cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attr, const void* p) {
    if (!attr) return ret(cudaErrorInvalidValue);
    memset(attr, 0, sizeof *attr);
    std::lock_guard<std::mutex> lock(g_mem_mu);
    const Alloc* a = find_alloc(p);
    attr->type = !a ? cudaMemoryTypeUnregistered : a->device ? cudaMemoryTypeDevice : cudaMemoryTypeHost;
    attr->device = 0;
    attr->devicePointer = a ? (void*)p : nullptr;
    attr->hostPointer = a && !a->device ? (void*)p : nullptr;
    return cudaSuccess;
}

// ---- copies and fills --------------------------------------------------------------------------
namespace {
// Validates a copy's two ranges against `kind`; returns an error (with a message) for a kind that
// does not match the pointers, fails loudly for a range running past its allocation.
cudaError_t check_copy(void* dst, const void* src, size_t n, cudaMemcpyKind kind, const char* fn) {
    if (n == 0) return cudaSuccess;
    if (!dst || !src) return complain(cudaErrorInvalidValue, "%s: null pointer", fn);
    bool dd = check_device_range(dst, n, fn, "destination");
    bool sd = check_device_range(src, n, fn, "source");
    bool want_dd, want_sd;
    switch (kind) {
    case cudaMemcpyHostToHost: want_dd = false; want_sd = false; break;
    case cudaMemcpyHostToDevice: want_dd = true; want_sd = false; break;
    case cudaMemcpyDeviceToHost: want_dd = false; want_sd = true; break;
    case cudaMemcpyDeviceToDevice: want_dd = true; want_sd = true; break;
    case cudaMemcpyDefault: return cudaSuccess;
    default: return complain(cudaErrorInvalidMemcpyDirection, "%s: invalid cudaMemcpyKind %d", fn, (int)kind);
    }
    if (dd != want_dd || sd != want_sd)
        return complain(cudaErrorInvalidValue, "%s: kind %d but the destination is %s memory and the source %s memory",
                        fn, (int)kind, dd ? "device" : "host", sd ? "device" : "host");
    return cudaSuccess;
}
}  // namespace

cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
    if (cudaError_t e = capture_guard("cudaMemcpy")) return e;
    cudaError_t e = check_copy(dst, src, n, kind, "cudaMemcpy");
    if (e != cudaSuccess) return e;
    if (n) memmove(dst, src, n);
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind kind, cudaStream_t s) {
    cudaError_t e = check_copy(dst, src, n, kind, "cudaMemcpyAsync");
    if (e != cudaSuccess) return e;
    return n ? emu_stream_do(s, [dst, src, n]() { memmove(dst, src, n); }) : cudaSuccess;
}
cudaError_t cudaMemset(void* p, int value, size_t n) {
    if (cudaError_t e = capture_guard("cudaMemset")) return e;
    if (n && !check_device_range(p, n, "cudaMemset", "destination"))
        return complain(cudaErrorInvalidValue, "cudaMemset(%p): not device memory", p);
    if (n) memset(p, value, n);
    return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t n, cudaStream_t s) {
    if (n && !check_device_range(p, n, "cudaMemsetAsync", "destination"))
        return complain(cudaErrorInvalidValue, "cudaMemsetAsync(%p): not device memory", p);
    return n ? emu_stream_do(s, [p, value, n]() { memset(p, value, n); }) : cudaSuccess;
}
cudaError_t cudaMemcpy2D(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                         cudaMemcpyKind kind) {
    if (cudaError_t e = capture_guard("cudaMemcpy2D")) return e;
    if (width > dpitch || width > spitch) return ret(cudaErrorInvalidPitchValue);
    if (!width || !height) return cudaSuccess;
    // the whole footprint of each side must be valid; then copy row by row
    cudaError_t e = check_copy(dst, src, 0, kind, "cudaMemcpy2D");
    if (e != cudaSuccess) return e;
    size_t dspan = (height - 1) * dpitch + width, sspan = (height - 1) * spitch + width;
    if (is_device(dst)) check_device_range(dst, dspan, "cudaMemcpy2D", "destination");
    if (is_device(src)) check_device_range(src, sspan, "cudaMemcpy2D", "source");
    for (size_t r = 0; r < height; r++) memmove((char*)dst + r * dpitch, (const char*)src + r * spitch, width);
    return cudaSuccess;
}
cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                              cudaMemcpyKind kind, cudaStream_t) {
    return cudaMemcpy2D(dst, dpitch, src, spitch, width, height, kind);
}
// __constant__ / __device__ variables are plain host globals under the emulator.
cudaError_t cudaMemcpyToSymbol(const void* symbol, const void* src, size_t n, size_t offset, cudaMemcpyKind) {
    memcpy((char*)symbol + offset, src, n);
    return cudaSuccess;
}
cudaError_t cudaMemcpyFromSymbol(void* dst, const void* symbol, size_t n, size_t offset, cudaMemcpyKind) {
    memcpy(dst, (const char*)symbol + offset, n);
    return cudaSuccess;
}
cudaError_t cudaMemcpyToSymbolAsync(const void* symbol, const void* src, size_t n, size_t offset, cudaMemcpyKind k,
                                    cudaStream_t) {
    return cudaMemcpyToSymbol(symbol, src, n, offset, k);
}
cudaError_t cudaGetSymbolAddress(void** p, const void* symbol) {
    *p = (void*)symbol;
    return cudaSuccess;
}

// ---- device ------------------------------------------------------------------------------------
cudaError_t cudaGetDeviceCount(int* n) {
    if (!n) return ret(cudaErrorInvalidValue);
    *n = 1;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : ret(cudaErrorInvalidDevice); }
cudaError_t cudaGetDevice(int* d) {
    if (!d) return ret(cudaErrorInvalidValue);
    *d = 0;
    return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) { return capture_guard("cudaDeviceSynchronize"); }
cudaError_t cudaDeviceReset(void) { return cudaSuccess; }
cudaError_t cudaDriverGetVersion(int* v) { *v = CUDART_VERSION; return cudaSuccess; }
cudaError_t cudaRuntimeGetVersion(int* v) { *v = CUDART_VERSION; return cudaSuccess; }

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device) {
    if (!p) return ret(cudaErrorInvalidValue);
    if (device != 0) return ret(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "diffscope SIMT emulator (H100-like)");
    p->totalGlobalMem = kTotalMem;
    p->sharedMemPerBlock = EMU_SMEM_DEFAULT;
    p->regsPerBlock = 65536;
    p->warpSize = 32;
    p->memPitch = (size_t)1 << 31;
    p->maxThreadsPerBlock = 1024;
    p->maxThreadsDim[0] = 1024; p->maxThreadsDim[1] = 1024; p->maxThreadsDim[2] = 64;
    p->maxGridSize[0] = 0x7fffffff; p->maxGridSize[1] = 65535; p->maxGridSize[2] = 65535;
    p->totalConstMem = 65536;
    p->major = 9;
    p->minor = 0;
    p->textureAlignment = 512;
    p->multiProcessorCount = EMU_SM_COUNT;
    p->concurrentKernels = 1;
    p->asyncEngineCount = 3;
    p->unifiedAddressing = 1;
    p->memoryBusWidth = 5120;
    p->l2CacheSize = 50 << 20;
    p->maxThreadsPerMultiProcessor = 2048;
    p->streamPrioritiesSupported = 1;
    p->sharedMemPerMultiprocessor = EMU_SMEM_PER_SM;
    p->regsPerMultiprocessor = 65536;
    p->managedMemory = 1;
    p->cooperativeLaunch = 1;
    p->sharedMemPerBlockOptin = EMU_SMEM_OPTIN;
    p->maxBlocksPerMultiProcessor = 32;
    p->reservedSharedMemPerBlock = 1024;
    p->memoryPoolsSupported = 1;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr attr, int device) {
    if (!v) return ret(cudaErrorInvalidValue);
    if (device != 0) return ret(cudaErrorInvalidDevice);
    cudaDeviceProp p;
    cudaGetDeviceProperties(&p, 0);
    switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *v = p.maxThreadsPerBlock; break;
    case cudaDevAttrMaxBlockDimX: *v = p.maxThreadsDim[0]; break;
    case cudaDevAttrMaxBlockDimY: *v = p.maxThreadsDim[1]; break;
    case cudaDevAttrMaxBlockDimZ: *v = p.maxThreadsDim[2]; break;
    case cudaDevAttrMaxGridDimX: *v = p.maxGridSize[0]; break;
    case cudaDevAttrMaxGridDimY: *v = p.maxGridSize[1]; break;
    case cudaDevAttrMaxGridDimZ: *v = p.maxGridSize[2]; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *v = (int)p.sharedMemPerBlock; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = (int)p.sharedMemPerBlockOptin; break;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor: *v = (int)p.sharedMemPerMultiprocessor; break;
    case cudaDevAttrTotalConstantMemory: *v = (int)p.totalConstMem; break;
    case cudaDevAttrWarpSize: *v = 32; break;
    case cudaDevAttrMaxRegistersPerBlock: *v = p.regsPerBlock; break;
    case cudaDevAttrMultiProcessorCount: *v = p.multiProcessorCount; break;
    case cudaDevAttrComputeCapabilityMajor: *v = p.major; break;
    case cudaDevAttrComputeCapabilityMinor: *v = p.minor; break;
    case cudaDevAttrL2CacheSize: *v = p.l2CacheSize; break;
    case cudaDevAttrMaxThreadsPerMultiProcessor: *v = p.maxThreadsPerMultiProcessor; break;
    case cudaDevAttrMaxBlocksPerMultiprocessor: *v = p.maxBlocksPerMultiProcessor; break;
    case cudaDevAttrMaxRegistersPerMultiprocessor: *v = p.regsPerMultiprocessor; break;
    case cudaDevAttrGlobalMemoryBusWidth: *v = p.memoryBusWidth; break;
    case cudaDevAttrUnifiedAddressing: *v = 1; break;
    case cudaDevAttrConcurrentKernels: *v = 1; break;
    case cudaDevAttrMemoryPoolsSupported: *v = 1; break;
    case cudaDevAttrReservedSharedMemoryPerBlock: *v = (int)p.reservedSharedMemPerBlock; break;
    default: *v = 0; break;  // everything else: "not supported"
    }
    return cudaSuccess;
}

// ---- kernels' attributes -----------------------------------------------------------------------
cudaError_t cudaFuncSetAttribute(const void* fn, cudaFuncAttribute attr, int value) {
    if (!fn) return ret(cudaErrorInvalidDeviceFunction);
    if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
        if (value < 0 || (size_t)value > EMU_SMEM_OPTIN)
            return complain(cudaErrorInvalidValue, "cudaFuncSetAttribute: MaxDynamicSharedMemorySize %d > %u", value,
                            (unsigned)EMU_SMEM_OPTIN);
        emu_func_set_max_dyn_smem(fn, (size_t)value);
    }
    return cudaSuccess;  // carveout and the rest: accepted, no effect
}
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* a, const void* fn) {
    if (!a || !fn) return ret(cudaErrorInvalidValue);
    memset(a, 0, sizeof *a);
    a->maxThreadsPerBlock = 1024;
    a->numRegs = 32;
    a->ptxVersion = a->binaryVersion = 90;
    a->maxDynamicSharedSizeBytes = (int)emu_func_max_dyn_smem(fn);
    a->sharedSizeBytes = emu_kernel_static_smem(fn);
    return cudaSuccess;
}
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, const void* fn, int block, size_t dyn) {
    if (!n || block <= 0) return ret(cudaErrorInvalidValue);
    int by_threads = 2048 / block, by_smem = (int)(EMU_SMEM_PER_SM / (dyn + 1024));
    *n = std::max(0, std::min(std::min(by_threads, by_smem), 32));
    return cudaSuccess;
}
cudaError_t cudaLaunchKernel(const void*, dim3, dim3, void**, size_t, cudaStream_t) {
    emu_fail("cudaLaunchKernel / <<<>>> cannot run under the emulator: launch through DS_LAUNCH");
}

// ---- streams, events, graphs -------------------------------------------------------------------
// Every operation runs synchronously when issued, except while its stream captures a graph: then
// it is recorded (kernels with their arguments copied) and runs each time the graph is launched.
struct CUgraph_st {
    std::vector<std::function<void()>> ops;
};
struct CUgraphExec_st {
    std::vector<std::function<void()>> ops;
};
struct CUstream_st {
    cudaGraph_t capture = nullptr;  // non-null while capturing
    cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal;
    bool invalidated = false;       // an unsafe call happened during the capture
};
struct CUevent_st {
    double ms = 0;
    bool recorded = false;
};

namespace {
std::mutex g_cap_mu;
std::vector<CUstream_st*> g_capturing;  // streams capturing in global / thread-local mode

double now_ms() {
    using namespace std::chrono;
    return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}
// 0, cudaStreamLegacy (1) and cudaStreamPerThread (2) are the default stream: never capturing.
inline CUstream_st* real_stream(cudaStream_t s) { return (uintptr_t)s <= 2 ? nullptr : s; }
}  // namespace

static cudaError_t capture_guard(const char* fn) {
    std::lock_guard<std::mutex> lock(g_cap_mu);
    if (g_capturing.empty()) return cudaSuccess;
    for (CUstream_st* st : g_capturing) st->invalidated = true;
    return complain(cudaErrorStreamCaptureUnsupported,
                    "%s while a stream captures a graph (global/thread-local mode): not permitted; the capture "
                    "is invalidated", fn);
}

cudaError_t emu_stream_do(cudaStream_t s, std::function<void()> op) {
    CUstream_st* st = real_stream(s);
    if (st && st->capture) {
        st->capture->ops.push_back(std::move(op));
        return cudaSuccess;
    }
    if ((uintptr_t)s <= 1) {  // the legacy default stream synchronizes with every stream
        std::lock_guard<std::mutex> lock(g_cap_mu);
        if (!g_capturing.empty()) {
            for (CUstream_st* c : g_capturing) c->invalidated = true;
            return complain(cudaErrorStreamCaptureImplicit,
                            "work on the legacy default stream while a stream captures: the capture is invalidated");
        }
    }
    op();
    return cudaSuccess;
}
void emu_stream_submit(cudaStream_t s, std::function<void()> op) {
    if (emu_stream_do(s, std::move(op)) != cudaSuccess)
        emu_fail("library work on the legacy default stream while another stream captures a graph");
}

cudaError_t cudaStreamCreate(cudaStream_t* s) {
    if (!s) return ret(cudaErrorInvalidValue);
    *s = new CUstream_st();
    return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int) { return cudaStreamCreate(s); }
cudaError_t cudaStreamCreateWithPriority(cudaStream_t* s, unsigned int, int) { return cudaStreamCreate(s); }
cudaError_t cudaStreamDestroy(cudaStream_t s) {
    CUstream_st* st = real_stream(s);
    if (!st) return ret(cudaErrorInvalidResourceHandle);
    if (st->capture) return complain(cudaErrorStreamCaptureUnsupported, "cudaStreamDestroy: the stream is capturing");
    delete st;
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    CUstream_st* st = real_stream(s);
    if (st && st->capture) {
        st->invalidated = true;
        return complain(cudaErrorStreamCaptureUnsupported, "cudaStreamSynchronize on a capturing stream");
    }
    return cudaSuccess;
}
cudaError_t cudaStreamQuery(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned int) { return cudaSuccess; }
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode) {
    CUstream_st* st = real_stream(s);
    if (!st) return complain(cudaErrorStreamCaptureUnsupported, "cudaStreamBeginCapture on the default stream");
    if (st->capture) return complain(cudaErrorIllegalState, "cudaStreamBeginCapture: already capturing");
    st->capture = new CUgraph_st();
    st->mode = mode;
    st->invalidated = false;
    if (mode != cudaStreamCaptureModeRelaxed) {
        std::lock_guard<std::mutex> lock(g_cap_mu);
        g_capturing.push_back(st);
    }
    return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t* g) {
    CUstream_st* st = real_stream(s);
    if (!st || !st->capture) return ret(cudaErrorStreamCaptureUnmatched);
    if (!g) return ret(cudaErrorInvalidValue);
    {
        std::lock_guard<std::mutex> lock(g_cap_mu);
        g_capturing.erase(std::remove(g_capturing.begin(), g_capturing.end(), st), g_capturing.end());
    }
    cudaGraph_t graph = st->capture;
    st->capture = nullptr;
    if (st->invalidated) {
        delete graph;
        *g = nullptr;
        return ret(cudaErrorStreamCaptureInvalidated);
    }
    *g = graph;
    return cudaSuccess;
}
cudaError_t cudaStreamIsCapturing(cudaStream_t s, cudaStreamCaptureStatus* status) {
    if (!status) return ret(cudaErrorInvalidValue);
    CUstream_st* st = real_stream(s);
    *status = st && st->capture ? cudaStreamCaptureStatusActive : cudaStreamCaptureStatusNone;
    return cudaSuccess;
}
cudaError_t cudaThreadExchangeStreamCaptureMode(cudaStreamCaptureMode*) { return cudaSuccess; }
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t g, unsigned long long) {
    if (!exec || !g) return ret(cudaErrorInvalidValue);
    *exec = new CUgraphExec_st{g->ops};
    return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s) {
    if (!exec) return ret(cudaErrorInvalidValue);
    for (auto& op : exec->ops)
        if (cudaError_t e = emu_stream_do(s, op)) return e;
    return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t g) {
    delete g;
    return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e) {
    delete e;
    return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* e) {
    if (!e) return ret(cudaErrorInvalidValue);
    *e = new CUevent_st();
    return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int) { return cudaEventCreate(e); }
cudaError_t cudaEventDestroy(cudaEvent_t e) {
    if (!e) return ret(cudaErrorInvalidResourceHandle);
    delete e;
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    if (!e) return ret(cudaErrorInvalidResourceHandle);
    return emu_stream_do(s, [e]() { e->ms = now_ms(); e->recorded = true; });
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) { return e ? cudaSuccess : ret(cudaErrorInvalidResourceHandle); }
cudaError_t cudaEventQuery(cudaEvent_t e) { return e ? cudaSuccess : ret(cudaErrorInvalidResourceHandle); }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
    if (!ms || !a || !b) return ret(cudaErrorInvalidResourceHandle);
    if (!a->recorded || !b->recorded) return ret(cudaErrorInvalidResourceHandle);
    *ms = (float)(b->ms - a->ms);
    return cudaSuccess;
}

// Stream-ordered allocation is permitted during capture (it becomes a graph node on the GPU); the
// emulator allocates at once, outside the capture guard.
namespace {
cudaError_t do_alloc_async(void** out, size_t size) {
    std::vector<CUstream_st*> saved;
    {
        std::lock_guard<std::mutex> lock(g_cap_mu);
        saved.swap(g_capturing);
    }
    cudaError_t e = do_alloc(out, size, true);
    std::lock_guard<std::mutex> lock(g_cap_mu);
    g_capturing.swap(saved);
    return e;
}
cudaError_t do_free_async(void* p) {
    std::vector<CUstream_st*> saved;
    {
        std::lock_guard<std::mutex> lock(g_cap_mu);
        saved.swap(g_capturing);
    }
    cudaError_t e = do_free(p, true, "cudaFreeAsync");
    std::lock_guard<std::mutex> lock(g_cap_mu);
    g_capturing.swap(saved);
    return e;
}
}  // namespace
