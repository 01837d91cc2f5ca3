// emu_internal.h — shared between the emulator's runtime files (emu_runtime.cpp: fibers, blocks,
// barriers, warp collectives, launches; emu_api.cpp: memory and the CUDA runtime API). Not for
// kernels or stand-ins (they use emu_cuda.h, emu_mem.h, emu_control.h).
#ifndef DS_EMU_INTERNAL_H
#define DS_EMU_INTERNAL_H

#include <cuda_runtime.h>

#include <functional>
#include <utility>
#include <vector>
#include <stddef.h>

#include "emu_control.h"
#include "emu_mem.h"

// ---- configuration (env at first use, then the emu_control.h setters) --------------------------
struct EmuConfig {
    bool strict;              // EMU_STRICT=1
    bool reverse;             // EMU_REVERSE=1
    unsigned long long shuffle_seed;  // EMU_SHUFFLE=<seed>, 0: off
    bool launch_errors_fatal; // default true, like DS_LAUNCH's check under nvcc
    size_t stack_bytes;       // EMU_STACK_KB (default 64)
};
EmuConfig& emu_config();

// ---- errors ------------------------------------------------------------------------------------
void emu_set_error(cudaError_t e);  // the "last error" cudaGetLastError returns (and clears)

// ---- failure reports (emu_report.cpp; the state they read lives in emu_runtime.cpp) -------------
void emu_install_fault_handler();  // SIGSEGV/SIGBUS/SIGABRT handlers + this thread's alternate stack
void emu_where(char* buf, size_t n);  // "kernel K, block (x,y,z), thread (x,y,z)" or "outside any kernel"
bool emu_in_kernel();
// addr (the fault) or sp (the stack pointer then) shows a fiber's stack overflow; *stack_bytes: its size
bool emu_is_stack_overflow(const char* addr, const char* sp, size_t* stack_bytes);

// ---- memory (emu_api.cpp) ----------------------------------------------------------------------
// When addr lies in the guard page after a cudaMalloc allocation, or inside one, describe it in
// buf (for the SIGSEGV report). Lock-free best effort: called from a signal handler.
bool emu_mem_describe_fault(const void* addr, char* buf, size_t n);

// ---- streams and graph capture (emu_api.cpp) ---------------------------------------------------
// Runs `op` now, or appends it to the graph the stream is capturing. Work on the legacy default
// stream while some stream captures (global/thread-local mode) is refused (and invalidates the
// capture): cudaErrorStreamCaptureImplicit, as the real runtime.
cudaError_t emu_stream_do(cudaStream_t s, std::function<void()> op);

// ---- symbols (emu_symbols.cpp) -------------------------------------------------------------------
// The writable function-local statics (address, bytes) of the kernel at fn: its static __shared__
// variables, also in template instantiations. Empty when the program has no symbol table.
const std::vector<std::pair<void*, size_t>>& emu_kernel_statics(const void* fn);
size_t emu_kernel_static_smem(const void* fn);  // their total size
// The kernel's demangled name without parameters, or `fallback` (DS_LAUNCH's text).
const char* emu_kernel_name(const void* fn, const char* fallback);

// ---- launches (emu_runtime.cpp) ----------------------------------------------------------------
size_t emu_func_max_dyn_smem(const void* fn);  // cudaFuncSetAttribute(MaxDynamicSharedMemorySize)
void emu_func_set_max_dyn_smem(const void* fn, size_t bytes);

// Emulated device limits (H100-like).
enum : size_t {
    EMU_SMEM_DEFAULT = 48 * 1024,    // dynamic + static per block without opt-in
    EMU_SMEM_OPTIN = 227 * 1024,     // cudaDevAttrMaxSharedMemoryPerBlockOptin
    EMU_SMEM_PER_SM = 228 * 1024,
    EMU_SM_COUNT = 132,
};

#endif
