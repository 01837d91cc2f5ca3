// emu_mem.h — the SIMT emulator's memory API for the cuBLAS/cuDNN stand-ins (tests/emu).
// C++ only. Implemented in emu_runtime.cpp (library ds_emu_runtime).
#ifndef DS_EMU_MEM_H
#define DS_EMU_MEM_H

#include <stddef.h>

// True when p lies inside a live cudaMalloc allocation; *bytes_from_p (may be null) then receives
// the number of bytes from p to that allocation's end.
bool emu_mem_extent(const void* p, size_t* bytes_from_p);

// Prints "emu: <message>" to stderr (with the current kernel/block/thread when inside a launch)
// and aborts. For API misuse the real library would reject or silently corrupt memory on.
[[noreturn]] void emu_fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
