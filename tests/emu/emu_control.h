// emu_control.h — test-side controls of the SIMT emulator (implemented in ds_emu_runtime).
// C++ only; include from tests and from the cuBLAS/cuDNN stand-ins.
#ifndef DS_EMU_CONTROL_H
#define DS_EMU_CONTROL_H

#include <cuda_runtime.h>

#include <functional>
#include <stddef.h>

// Strict mode (also EMU_STRICT=1): a thread exiting while others wait at a barrier (or a barrier
// reached after some thread exited), a warp-collective mask naming an exited or non-existent lane,
// lanes of one collective passing different masks or different operations, a shuffle reading a
// lane outside the mask — all fatal errors instead of the permissive behaviour.
void emu_set_strict(bool on);
bool emu_strict();
// Reversed schedule (also EMU_REVERSE=1): run the threads of a block last to first, so code that
// silently relies on thread 0 running first (a missing __syncthreads) computes something else.
void emu_set_reverse(bool on);
bool emu_reverse();
// Shuffled schedule (also EMU_SHUFFLE=<seed>): each block runs its threads in a pseudo-random order
// drawn from the seed and the block index (reproducible); 0 turns it off.
void emu_set_shuffle(unsigned long long seed);
// Launch-configuration errors abort with a message by default (DS_LAUNCH checks every launch under
// nvcc); when off, they only set the error cudaGetLastError returns (the self-tests use this).
void emu_set_launch_errors_fatal(bool on);

// For the library stand-ins: run `op` now on `stream`'s behalf, or record it into the graph when
// the stream is capturing (so a replayed graph repeats it, as it would a cuBLAS call).
void emu_stream_submit(cudaStream_t stream, std::function<void()> op);

// Counters since program start (for tests and timing reports).
struct emu_stats_t {
    unsigned long long launches, blocks, threads, switches;
};
emu_stats_t emu_stats();

#endif
