// gpu_emu_control.cpp — tests/emu/emu_control.h for the native GPU builds of the emulated op tests
// (bench/CMakeLists.txt, run by bench/gpu.sh). On a real GPU there is no schedule to make strict or
// to reverse: the controls are accepted and do nothing, streams run library work themselves, and
// the emulator's counters stay zero. The tests' checks against the CPU backend are unchanged.
#include "emu_control.h"

static bool g_strict, g_reverse;

void emu_set_strict(bool on) { g_strict = on; }
bool emu_strict() { return g_strict; }
void emu_set_reverse(bool on) { g_reverse = on; }
bool emu_reverse() { return g_reverse; }
void emu_set_launch_errors_fatal(bool) {}
void emu_stream_submit(cudaStream_t, std::function<void()> op) { op(); }
emu_stats_t emu_stats() { return emu_stats_t{0, 0, 0, 0}; }
