// emu_report.cpp — how the SIMT emulator fails: emu_fail (message + where + abort), and signal
// handlers that name the kernel, block and thread of a segmentation fault (and say whether the
// address is past a cudaMalloc allocation, in a freed one, or a fiber's stack overflow) or of an
// abort inside a kernel (a failed assert()).
#include <cuda_runtime.h>

#include <csignal>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include "emu_internal.h"

namespace {
volatile sig_atomic_t g_failing = 0;  // emu_fail or the fault handler already reported

void write_all(const char* msg, int n, size_t cap) {
    if (n > 0) { ssize_t r = write(2, msg, (size_t)n < cap ? (size_t)n : cap); (void)r; }
}

void fault_handler(int sig, siginfo_t* si, void* uc) {
    char msg[768], w[256], what[256] = "";
    emu_where(w, sizeof w);
    const char* addr = (const char*)si->si_addr;
    // a fault in (or just below) a fiber's guard page, or with the stack pointer below the running
    // fiber's stack, is a stack overflow
    const char* sp = nullptr;
#if defined(__x86_64__)
    sp = (const char*)((ucontext_t*)uc)->uc_mcontext.gregs[REG_RSP];
#elif defined(__aarch64__)
    sp = (const char*)((ucontext_t*)uc)->uc_mcontext.sp;
#endif
    size_t stack_bytes = 0;
    if (emu_is_stack_overflow(addr, sp, &stack_bytes))
        snprintf(what, sizeof what, "stack overflow of a CUDA thread (stacks are %zu KiB: set EMU_STACK_KB)",
                 stack_bytes / 1024);
    else
        emu_mem_describe_fault(addr, what, sizeof what);
    int n = snprintf(msg, sizeof msg, "emu: %s at address %p%s%s\nemu: at %s\n",
                     sig == SIGSEGV ? "segmentation fault" : "bus error", si->si_addr, *what ? ": " : "", what, w);
    write_all(msg, n, sizeof msg);
    g_failing = 1;
    signal(SIGABRT, SIG_DFL);
    abort();
}

// An abort inside a kernel that is not ours (a failed assert(), std::terminate): say where.
void abort_handler(int) {
    if (!g_failing && emu_in_kernel()) {
        char msg[512], w[256];
        emu_where(w, sizeof w);
        write_all(msg, snprintf(msg, sizeof msg, "emu: abort at %s\n", w), sizeof msg);
    }
    signal(SIGABRT, SIG_DFL);
    raise(SIGABRT);
}
}  // namespace

void emu_fail(const char* fmt, ...) {
    g_failing = 1;
    char w[256];
    emu_where(w, sizeof w);
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "emu: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nemu: at %s\n", w);
    fflush(stderr);
    abort();
}

// The handlers need an alternate stack (a fiber's stack overflow leaves none), one per OS thread.
void emu_install_fault_handler() {
    static thread_local bool have_altstack = false;
    if (!have_altstack) {
        stack_t ss;
        ss.ss_size = 64 * 1024;
        ss.ss_sp = mmap(nullptr, ss.ss_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        ss.ss_flags = 0;
        if (ss.ss_sp != MAP_FAILED && sigaltstack(&ss, nullptr) == 0) have_altstack = true;
    }
    static bool installed = false;
    if (!installed) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = fault_handler;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, nullptr);
        sigaction(SIGBUS, &sa, nullptr);
        struct sigaction ab;
        memset(&ab, 0, sizeof ab);
        ab.sa_handler = abort_handler;
        ab.sa_flags = SA_ONSTACK | SA_RESETHAND;
        sigemptyset(&ab.sa_mask);
        sigaction(SIGABRT, &ab, nullptr);
        installed = true;
    }
}
