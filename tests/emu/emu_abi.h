// emu_abi.h — the interface between kernels compiled with emu_cuda.h and the emulator's runtime
// (emu_runtime.cpp). Needs cuda_runtime.h (uint3, dim3, cudaStream_t) first.
#ifndef DS_EMU_ABI_H
#define DS_EMU_ABI_H

#include <functional>

// The public head of a fiber (one per CUDA thread); the runtime's fiber struct begins with it.
struct emu_thread_pub {
    uint3 tid;        // threadIdx
    unsigned linear;  // x + y*bx + z*bx*by
    unsigned lane;    // linear % 32
};
extern emu_thread_pub* emu_cur;  // the running fiber (null outside a launch)
extern uint3 emu_block_idx;
extern dim3 emu_block_dim, emu_grid_dim;

// __syncthreads at file:line; returns the predicate reduction (op: 0 count, 1 and, 2 or).
int emu_syncthreads_op(int op, int pred, const char* file, int line);
enum emu_warp_kind {
    EMU_W_SYNC, EMU_W_SHFL, EMU_W_UP, EMU_W_DOWN, EMU_W_XOR, EMU_W_BALLOT, EMU_W_ANY, EMU_W_ALL,
    EMU_W_MATCH_ANY, EMU_W_RED_ADD, EMU_W_RED_MIN, EMU_W_RED_MAX, EMU_W_RED_UMIN, EMU_W_RED_UMAX,
    EMU_W_RED_AND, EMU_W_RED_OR, EMU_W_RED_XOR
};
// One warp collective: publish `bits` (a value of up to 8 bytes), wait for every lane in `mask`,
// return this lane's result. `arg` is the source lane / delta / lane mask, `width` the segment.
unsigned long long emu_warp_op(int kind, unsigned mask, unsigned long long bits, int arg, int width);
unsigned emu_activemask();
void emu_yield();  // let the block's other threads run (the caller stays runnable)
void* emu_dynamic_shared();
[[noreturn]] void emu_fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
// Type-erased launch: checks the configuration, runs (or records, while the stream captures a
// graph) `body` once per CUDA thread of every block.
void emu_launch_erased(const char* name, const void* fn, dim3 grid, dim3 block, size_t dyn_smem,
                       cudaStream_t stream, std::function<void()> body);

#endif
