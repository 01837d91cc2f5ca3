// emu_runtime.cpp — the SIMT emulator's execution engine: one fiber per CUDA thread, the blocks of
// a grid one after another (all threads of the running block alive at once), __syncthreads as an
// arrival count, warp collectives as (value, mask) rendezvous, deadlock detection, strict mode,
// reversed schedule, shared-memory poisoning and a SIGSEGV report. See docs/cuda_emulator.md.
//
// Fibers: each gets its own mmap'ed stack with a guard page below it and is reused by every block
// of every launch (created on demand, never freed). A switch never makes a syscall:
//   * x86-64: a 12-instruction switch (push the callee-saved registers, swap stack pointers, pop);
//     a new fiber's stack is pre-built so that the first switch "returns" into fiber_entry.
//   * elsewhere (or with -DEMU_PORTABLE_SWITCH): makecontext once per fiber, then _setjmp/_longjmp
//     (~30 ns here: glibc's longjmp also walks the cancellation cleanups). _FORTIFY_SOURCE would turn
//     longjmp into __longjmp_chk, which aborts when jumping to another stack: hence the #undef.
// A blocking thread switches straight to the next runnable thread of the current pass (one switch
// per wait, not two through a scheduler); the scheduler only runs between passes.
#undef _FORTIFY_SOURCE
#define _FORTIFY_SOURCE 0

#include <cuda_runtime.h>

#include <csetjmp>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <ctime>
#include <map>
#include <string>
#include <memory>
#include <mutex>
#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>
#include <vector>

#include "emu_abi.h"
#include "emu_internal.h"

enum FiberState { F_RUNNABLE, F_BARRIER, F_WARP, F_DONE };

// ---- context switching -------------------------------------------------------------------------
#if defined(__x86_64__) && !defined(EMU_PORTABLE_SWITCH)
struct Ctx {
    void* sp;
};
extern "C" void emu_ctx_switch_x86(Ctx* from, Ctx* to);
asm(R"(
    .text
    .globl emu_ctx_switch_x86
    .hidden emu_ctx_switch_x86
    .type emu_ctx_switch_x86, @function
emu_ctx_switch_x86:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq (%rsi), %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_ctx_switch_x86, .-emu_ctx_switch_x86
)");
static inline void ctx_switch(Ctx* from, Ctx* to) { emu_ctx_switch_x86(from, to); }
// The first switch to a new fiber pops six zero registers and "returns" into entry, with the
// stack aligned as at a function's entry (rsp = 8 mod 16).
static void ctx_init(Ctx* c, char* lo, size_t size, void (*entry)()) {
    void** sp = (void**)(lo + size);
    *--sp = nullptr;  // entry's return address: entry never returns
    *--sp = (void*)entry;
    for (int i = 0; i < 6; i++) *--sp = nullptr;
    c->sp = sp;
}
#else
struct Ctx {
    jmp_buf jb;
};
static inline void ctx_switch(Ctx* from, Ctx* to) {
    if (!_setjmp(from->jb)) _longjmp(to->jb, 1);
}
// makecontext/setcontext once: the new fiber parks at once (saving its context into c) and jumps
// back here; the first switch to it then calls entry.
static ucontext_t g_init_uc;
static jmp_buf g_init_back;
static Ctx* g_init_ctx;
static void (*g_init_entry)();
static void ctx_trampoline() {
    Ctx* c = g_init_ctx;
    void (*entry)() = g_init_entry;
    if (!_setjmp(c->jb)) _longjmp(g_init_back, 1);
    entry();
}
static void ctx_init(Ctx* c, char* lo, size_t size, void (*entry)()) {
    getcontext(&g_init_uc);
    g_init_uc.uc_stack.ss_sp = lo;
    g_init_uc.uc_stack.ss_size = size;
    g_init_uc.uc_link = nullptr;
    makecontext(&g_init_uc, ctx_trampoline, 0);
    g_init_ctx = c;
    g_init_entry = entry;
    if (!_setjmp(g_init_back)) setcontext(&g_init_uc);
}
#endif

struct Fiber {
    emu_thread_pub pub;  // must stay first: emu_cur points here
    FiberState state;
    Ctx ctx;
    // the warp collective this lane waits in
    int c_kind;
    unsigned c_mask;
    unsigned long long c_bits, c_result;
    int c_arg, c_width;
    const char* bar_file;  // the __syncthreads this thread waits at
    int bar_line;
    char* stack_lo;  // lowest usable byte (the guard page is just below)
    size_t stack_size;
};

// ---- globals read by the built-in variables ----------------------------------------------------
emu_thread_pub* emu_cur = nullptr;
uint3 emu_block_idx;
dim3 emu_block_dim, emu_grid_dim;

namespace {

std::recursive_mutex g_launch_mu;  // one launch at a time (static __shared__ is one copy)
std::vector<Fiber*> g_fibers;
Ctx g_sched;                          // the scheduler's context (on the launching thread's stack)
const std::function<void()>* g_body; // the running kernel, bound to its arguments
unsigned g_pos;                      // the scheduling pass's cursor (position in pass order)
std::vector<unsigned> g_order;       // the schedule: thread index at each pass position
bool g_strict;                       // this launch runs in strict mode

// the running launch and block
const char* g_kernel = nullptr;
unsigned g_nthreads;                 // threads per block
unsigned g_live;                     // not yet exited
unsigned g_exited;
unsigned g_bar_count;                // arrived at the current __syncthreads
int g_bar_acc[3];                    // count / and / or of the predicates
int g_bar_result;
int g_bar_op;                        // which reduction the current barrier returns
const char* g_bar_file = "";         // where the first thread of the current barrier arrived
int g_bar_line;
std::vector<unsigned> g_exited_mask; // per warp: lanes that have exited
std::vector<unsigned> g_warp_waiting;// per warp: lanes waiting in a collective (a quick "not yet")
unsigned char* g_dyn_smem = nullptr; // dynamic shared memory (EMU_SMEM_OPTIN bytes, reused)

emu_stats_t g_stats;

// ---- configuration -----------------------------------------------------------------------------
bool env_flag(const char* name) {
    const char* v = getenv(name);
    return v && *v && strcmp(v, "0") != 0;
}

}  // namespace

EmuConfig& emu_config() {
    static EmuConfig c = [] {  // NOLINT: read once; hot paths use copies taken at launch
        EmuConfig k;
        k.strict = env_flag("EMU_STRICT");
        k.reverse = env_flag("EMU_REVERSE");
        k.launch_errors_fatal = true;
        const char* sh = getenv("EMU_SHUFFLE");
        k.shuffle_seed = sh ? strtoull(sh, nullptr, 0) : 0;
        const char* s = getenv("EMU_STACK_KB");
        long kb = s ? atol(s) : 64;
        k.stack_bytes = (size_t)(kb < 16 ? 16 : kb) * 1024;
        return k;
    }();
    return c;
}
void emu_set_strict(bool on) { emu_config().strict = on; }
bool emu_strict() { return emu_config().strict; }
void emu_set_reverse(bool on) { emu_config().reverse = on; }
bool emu_reverse() { return emu_config().reverse; }
void emu_set_launch_errors_fatal(bool on) { emu_config().launch_errors_fatal = on; }
void emu_set_shuffle(unsigned long long seed) { emu_config().shuffle_seed = seed; }
emu_stats_t emu_stats() { return g_stats; }

// ---- for the failure reports (emu_report.cpp) ----------------------------------------------------
void emu_where(char* buf, size_t n) {
    if (!g_kernel) { snprintf(buf, n, "outside any kernel"); return; }
    int k = snprintf(buf, n, "kernel %s, block (%u,%u,%u)", g_kernel, emu_block_idx.x, emu_block_idx.y,
                     emu_block_idx.z);
    if (emu_cur && k > 0 && (size_t)k < n)
        snprintf(buf + k, n - k, ", thread (%u,%u,%u)", emu_cur->tid.x, emu_cur->tid.y, emu_cur->tid.z);
}
bool emu_in_kernel() { return g_kernel != nullptr; }
bool emu_is_stack_overflow(const char* addr, const char* sp, size_t* stack_bytes) {
    Fiber* self = (Fiber*)emu_cur;
    if (self && ((sp && sp < self->stack_lo && sp > self->stack_lo - (1 << 24)) ||
                 (addr < self->stack_lo && addr >= self->stack_lo - 4096))) {
        *stack_bytes = self->stack_size;
        return true;
    }
    for (Fiber* f : g_fibers)
        if (addr >= f->stack_lo - 4096 && addr < f->stack_lo) {
            *stack_bytes = f->stack_size;
            return true;
        }
    return false;
}


// ---- fibers ------------------------------------------------------------------------------------
namespace {

void thread_exit(Fiber* f);

// The next runnable fiber of the current pass after the cursor, or null at the pass's end.
inline Fiber* next_runnable() {
    const unsigned n = g_nthreads;
    while (++g_pos < n) {
        Fiber* f = g_fibers[g_order[g_pos]];
        if (f->state == F_RUNNABLE) return f;
    }
    return nullptr;
}

// The running fiber stops (it waits, or has finished): switch to the next runnable fiber of this
// pass, or back to the scheduler at the pass's end. Returns when the fiber is resumed.
void fiber_leave(Fiber* f) {
    Fiber* next = next_runnable();
    g_stats.switches++;
    if (next) {
        emu_cur = &next->pub;
        ctx_switch(&f->ctx, &next->ctx);
    } else {
        ctx_switch(&f->ctx, &g_sched);
    }
}
inline void fiber_yield(Fiber* f) { fiber_leave(f); }

// Every fiber lives here forever: run one CUDA thread of the current block, leave, repeat (the
// next block's scheduler resumes it inside fiber_leave).
void fiber_entry() {
    for (;;) {
        Fiber* f = (Fiber*)emu_cur;
        (*g_body)();
        thread_exit(f);
        fiber_leave(f);
    }
}

Fiber* fiber_create() {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t ssize = (emu_config().stack_bytes + page - 1) / page * page;
    char* base = (char*)mmap(nullptr, ssize + page, PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (base == MAP_FAILED) emu_fail("cannot map a %zu KiB fiber stack", ssize / 1024);
    mprotect(base, page, PROT_NONE);  // guard page: a stack overflow faults instead of corrupting
    Fiber* f = new Fiber();
    f->stack_lo = base + page;
    f->stack_size = ssize;
    f->state = F_DONE;
    ctx_init(&f->ctx, f->stack_lo, ssize, fiber_entry);
    return f;
}

void ensure_fibers(unsigned n) {
    while (g_fibers.size() < n) g_fibers.push_back(fiber_create());
}

inline Fiber* cur() { return (Fiber*)emu_cur; }

// ---- block bookkeeping -------------------------------------------------------------------------
inline unsigned warp_exists_mask(unsigned warp) {
    unsigned n = g_nthreads - warp * 32;
    return n >= 32 ? 0xffffffffu : ((1u << n) - 1);
}

// Everyone waiting at the barrier may go; they read the predicate reduction from g_bar_result.
void release_barrier() {
    g_bar_result = g_bar_acc[g_bar_op];
    g_bar_acc[0] = 0; g_bar_acc[1] = 1; g_bar_acc[2] = 0;
    g_bar_count = 0;
    for (unsigned i = 0; i < g_nthreads; i++)
        if (g_fibers[i]->state == F_BARRIER) g_fibers[i]->state = F_RUNNABLE;
}

const char* warp_kind_name(int k) {
    static const char* names[] = {"__syncwarp", "__shfl_sync", "__shfl_up_sync", "__shfl_down_sync",
                                  "__shfl_xor_sync", "__ballot_sync", "__any_sync", "__all_sync",
                                  "__match_any_sync", "__reduce_add_sync", "__reduce_min_sync",
                                  "__reduce_max_sync", "__reduce_min_sync", "__reduce_max_sync",
                                  "__reduce_and_sync", "__reduce_or_sync", "__reduce_xor_sync"};
    return k >= 0 && k < (int)(sizeof names / sizeof *names) ? names[k] : "warp collective";
}

bool try_complete_group(unsigned warp, unsigned mask);

// A fiber finished its kernel body.
void thread_exit(Fiber* f) {
    f->state = F_DONE;
    g_live--;
    g_exited++;
    unsigned warp = f->pub.linear / 32;
    g_exited_mask[warp] |= 1u << f->pub.lane;
    if (g_bar_count > 0) {
        if (g_strict)
            emu_fail("strict: thread exited while %u thread(s) wait at __syncthreads (every live thread must "
                     "reach each barrier)", g_bar_count);
        if (g_bar_count == g_live) release_barrier();
    }
    // lanes of this warp waiting in a collective whose mask names this lane
    if (!g_warp_waiting[warp]) return;
    for (unsigned l = 0; l < 32 && warp * 32 + l < g_nthreads; l++) {
        Fiber* o = g_fibers[warp * 32 + l];
        if (o->state != F_WARP || !(o->c_mask & (1u << f->pub.lane))) continue;
        if (g_strict)
            emu_fail("strict: thread exited while lane %u waits in %s with mask 0x%08x naming it", l,
                     warp_kind_name(o->c_kind), o->c_mask);
        try_complete_group(warp, o->c_mask);
    }
}

}  // namespace

// ---- __syncthreads -----------------------------------------------------------------------------
int emu_syncthreads_op(int op, int pred, const char* file, int line) {
    Fiber* f = cur();
    if (!f) emu_fail("__syncthreads (%s:%d) called outside a kernel", file, line);
    if (g_exited && g_strict)
        emu_fail("strict: __syncthreads at %s:%d reached after %u thread(s) of the block exited", file, line, g_exited);
    f->bar_file = file;
    f->bar_line = line;
    if (g_bar_count == 0) {
        g_bar_file = file;
        g_bar_line = line;
    } else if (g_strict && (line != g_bar_line || strcmp(file, g_bar_file) != 0)) {
        emu_fail("strict: divergent barriers: this thread reached __syncthreads at %s:%d while %u thread(s) wait "
                 "at %s:%d", file, line, g_bar_count, g_bar_file, g_bar_line);
    }
    g_bar_count++;
    g_bar_acc[0] += pred != 0;
    g_bar_acc[1] &= pred != 0;
    g_bar_acc[2] |= pred != 0;
    g_bar_op = op;
    if (g_bar_count == g_live) {  // the last one in: release everybody, carry on without switching
        release_barrier();
        return g_bar_result;
    }
    f->state = F_BARRIER;
    fiber_yield(f);
    return g_bar_result;  // valid until the next barrier completes, which needs this thread
}

// ---- warp collectives --------------------------------------------------------------------------
namespace {

// The group of lanes `mask` in `warp`: when every (live, existing) lane of it waits in a collective
// with the same mask, compute each lane's result and release them all. Returns whether it did.
bool try_complete_group(unsigned warp, unsigned mask) {
    const bool strict = g_strict;
    unsigned eff = mask & warp_exists_mask(warp) & ~g_exited_mask[warp];
    if ((unsigned)__builtin_popcount(eff) > g_warp_waiting[warp]) return false;  // not everyone is here yet
    Fiber** lanes = &g_fibers[warp * 32];
    int kind0 = -1;
    for (unsigned m = eff; m; m &= m - 1) {
        Fiber* o = lanes[__builtin_ctz(m)];
        if (o->state != F_WARP) return false;
        // a lane of the mask waiting in another collective (another mask) will come later, or never:
        // the deadlock report names both masks then
        if (o->c_mask != mask) return false;
        if (kind0 < 0) kind0 = o->c_kind;
        else if (o->c_kind != kind0 && strict)
            emu_fail("strict: lanes of warp %u with mask 0x%08x are in different collectives (%s vs %s)", warp, mask,
                     warp_kind_name(kind0), warp_kind_name(o->c_kind));
    }
    // everyone is here: results (each lane by its own operation and arguments)
    unsigned vote = 0;
    for (unsigned m = eff; m; m &= m - 1)
        if (lanes[__builtin_ctz(m)]->c_bits) vote |= 1u << __builtin_ctz(m);
    for (unsigned m = eff; m; m &= m - 1) {
        unsigned j = __builtin_ctz(m);
        Fiber* o = lanes[j];
        int w = o->c_width, arg = o->c_arg;
        unsigned long long r = 0;
        int src = -1;
        switch (o->c_kind) {
        case EMU_W_SYNC: break;
        case EMU_W_SHFL: src = (int)(j - j % w) + ((arg % w) + w) % w; break;
        case EMU_W_UP: src = (int)(j % w) >= arg ? (int)j - arg : (int)j; break;
        case EMU_W_DOWN: src = (int)(j % w) + arg < w ? (int)j + arg : (int)j; break;
        case EMU_W_XOR:
            src = (int)j ^ arg;
            if (src >= 32 || (src & ~(w - 1)) > ((int)j & ~(w - 1))) src = (int)j;  // later segment: own value
            break;
        case EMU_W_BALLOT: r = vote; break;
        case EMU_W_ANY: r = vote != 0; break;
        case EMU_W_ALL: r = vote == eff; break;
        case EMU_W_MATCH_ANY:
            for (unsigned q = eff; q; q &= q - 1)
                if (lanes[__builtin_ctz(q)]->c_bits == o->c_bits) r |= 1ull << __builtin_ctz(q);
            break;
        default: {  // 32-bit reductions
            bool first = true;
            unsigned acc = 0;
            for (unsigned q = eff; q; q &= q - 1) {
                unsigned v = (unsigned)lanes[__builtin_ctz(q)]->c_bits;
                if (first) { acc = v; first = false; continue; }
                switch (o->c_kind) {
                case EMU_W_RED_ADD: acc += v; break;
                case EMU_W_RED_MIN: acc = (int)v < (int)acc ? v : acc; break;
                case EMU_W_RED_MAX: acc = (int)v > (int)acc ? v : acc; break;
                case EMU_W_RED_UMIN: acc = v < acc ? v : acc; break;
                case EMU_W_RED_UMAX: acc = v > acc ? v : acc; break;
                case EMU_W_RED_AND: acc &= v; break;
                case EMU_W_RED_OR: acc |= v; break;
                default: acc ^= v; break;
                }
            }
            r = acc;
        }
        }
        if (src >= 0) {
            // Reading a lane outside the group is not an error on the GPU, the value is undefined
            // (kernels read and discard such values at warp edges). Permissive: the lane's own
            // value; strict: all-ones bits (NaN, -1), which poison any result that uses them.
            if (src == (int)j || (eff >> src & 1u)) r = lanes[src]->c_bits;
            else r = strict ? ~0ull : o->c_bits;
        }
        o->c_result = r;
    }
    for (unsigned m = eff; m; m &= m - 1) lanes[__builtin_ctz(m)]->state = F_RUNNABLE;
    g_warp_waiting[warp] -= (unsigned)__builtin_popcount(eff);
    return true;
}

}  // namespace

unsigned long long emu_warp_op(int kind, unsigned mask, unsigned long long bits, int arg, int width) {
    Fiber* f = cur();
    if (!f) emu_fail("%s called outside a kernel", warp_kind_name(kind));
    unsigned lane = f->pub.lane, warp = f->pub.linear / 32;
    if (!(mask >> lane & 1u))
        emu_fail("%s: mask 0x%08x does not name the calling lane %u", warp_kind_name(kind), mask, lane);
    if (width <= 0 || width > 32 || (width & (width - 1)))
        emu_fail("%s: width %d is not a power of two in 1..32", warp_kind_name(kind), width);
    if (g_strict) {
        unsigned bad = mask & ~warp_exists_mask(warp);
        if (bad)
            emu_fail("strict: %s mask 0x%08x names lanes that do not exist (the block's last warp has %u lanes)",
                     warp_kind_name(kind), mask, g_nthreads - warp * 32);
        bad = mask & g_exited_mask[warp];
        if (bad)
            emu_fail("strict: %s mask 0x%08x names lanes that have exited (0x%08x)", warp_kind_name(kind), mask, bad);
    }
    f->c_kind = kind;
    f->c_mask = mask;
    f->c_bits = bits;
    f->c_arg = arg;
    f->c_width = width;
    f->state = F_WARP;
    g_warp_waiting[warp]++;
    if (!try_complete_group(warp, mask)) fiber_yield(f);
    return f->c_result;
}

void emu_yield() {
    Fiber* f = cur();
    if (!f) return;
    // Still runnable: the pass goes on with the next threads and a later pass resumes this one.
    // Only yields in a pass still count as progress, so a spin that never ends is not reported.
    fiber_leave(f);
}

unsigned emu_activemask() {
    Fiber* f = cur();
    if (!f) emu_fail("__activemask called outside a kernel");
    unsigned warp = f->pub.linear / 32;
    return warp_exists_mask(warp) & ~g_exited_mask[warp];
}

void* emu_dynamic_shared() {
    if (!emu_cur) emu_fail("emu_dynamic_shared (DS_DYN_SHARED) called outside a kernel");
    return g_dyn_smem;
}

// ---- static __shared__: poisoned before every block ---------------------------------------------
// Two sources: the emu_shared section (emu_cuda.h's __shared__ in non-template functions) and the
// kernel's own function-local statics found in the symbol table (emu_symbols.cpp: g++ drops the
// section of statics in template instantiations).
extern "C" {
extern unsigned char __start_emu_shared[] __attribute__((weak));
extern unsigned char __stop_emu_shared[] __attribute__((weak));
}

namespace {

// Poisoning the whole section (every kernel's __shared__ variables) before each block costs one
// memset of its size. When the section is large, the first block of a launch poisons all of it and
// the range that block wrote is learned; later blocks of that launch re-poison only that range.
struct SharedPoison {
    unsigned char* lo = nullptr;
    unsigned char* hi = nullptr;
    bool learned = false;
    void start_launch() { lo = __start_emu_shared; hi = __stop_emu_shared; learned = false; }
    void before_block() { if (lo && hi > lo) memset(lo, 0xff, (size_t)(hi - lo)); }
    void after_block() {
        if (learned || !__start_emu_shared) return;
        learned = true;
        size_t size = (size_t)(__stop_emu_shared - __start_emu_shared);
        if (size <= 64 * 1024) return;  // small: keep poisoning all of it
        unsigned char *a = __start_emu_shared, *b = __stop_emu_shared;
        while (a < b && *a == 0xff) a++;
        while (b > a && b[-1] == 0xff) b--;
        lo = a;
        hi = b;
    }
} g_shared;

std::map<const void*, size_t> g_func_smem;

// EMU_PROFILE=1: CPU time per kernel (by DS_LAUNCH name), printed at exit, the costliest first:
// which kernels make an emulated test slow.
struct ProfileEntry {
    unsigned long long launches = 0, blocks = 0, threads = 0;
    double seconds = 0;
};
std::map<std::string, ProfileEntry> g_profile_data;
const bool g_profile = env_flag("EMU_PROFILE");

double cpu_seconds() {
    timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

void print_profile() {
    std::vector<std::pair<std::string, ProfileEntry>> v(g_profile_data.begin(), g_profile_data.end());
    std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.second.seconds > b.second.seconds; });
    fprintf(stderr, "emu profile: %9s %10s %13s %9s  %s\n", "launches", "blocks", "threads", "CPU s", "kernel");
    for (auto& kv : v)
        fprintf(stderr, "emu profile: %9llu %10llu %13llu %9.3f  %s\n", kv.second.launches,
                kv.second.blocks, kv.second.threads, kv.second.seconds, kv.first.c_str());
}
const int g_profile_registered = g_profile ? atexit(print_profile) : 0;

void deadlock_report() {
    fprintf(stderr, "emu: deadlock in kernel %s, block (%u,%u,%u) of grid (%u,%u,%u), %u threads per block:\n",
            g_kernel, emu_block_idx.x, emu_block_idx.y, emu_block_idx.z, emu_grid_dim.x, emu_grid_dim.y,
            emu_grid_dim.z, g_nthreads);
    // consecutive threads in the same wait, as ranges
    unsigned i = 0;
    while (i < g_nthreads) {
        Fiber* f = g_fibers[i];
        unsigned j = i + 1;
        while (j < g_nthreads && g_fibers[j]->state == f->state &&
               (f->state != F_WARP || (g_fibers[j]->c_kind == f->c_kind && g_fibers[j]->c_mask == f->c_mask)) &&
               (f->state != F_BARRIER || (g_fibers[j]->bar_line == f->bar_line && g_fibers[j]->bar_file == f->bar_file)) &&
               (j % 32 != 0 || f->state != F_WARP))
            j++;
        const char* what = f->state == F_DONE ? "exited" : f->state == F_BARRIER ? "wait at __syncthreads"
                           : f->state == F_WARP ? warp_kind_name(f->c_kind) : "runnable";
        if (f->state == F_WARP)
            fprintf(stderr, "emu:   threads %u-%u (warp %u): wait in %s, mask 0x%08x\n", i, j - 1, i / 32, what, f->c_mask);
        else if (f->state == F_BARRIER)
            fprintf(stderr, "emu:   threads %u-%u: %s (%s:%d)\n", i, j - 1, what, f->bar_file, f->bar_line);
        else
            fprintf(stderr, "emu:   threads %u-%u: %s\n", i, j - 1, what);
        i = j;
    }
    fprintf(stderr, "emu: (%u at the barrier, %u live; every live thread must reach each __syncthreads, and every "
                    "lane named in a collective's mask must reach it)\n", g_bar_count, g_live);
    emu_cur = nullptr;
    emu_fail("deadlock in kernel %s", g_kernel);
}

// The order of the threads in each pass: forward, reversed, or a permutation drawn per block from
// the shuffle seed (splitmix64 + Fisher-Yates), so every block sees a different interleaving.
void make_order(unsigned n, unsigned long long block) {
    const EmuConfig& c = emu_config();
    g_order.resize(n);
    for (unsigned i = 0; i < n; i++) g_order[i] = c.reverse ? n - 1 - i : i;
    if (!c.shuffle_seed) return;
    unsigned long long x = c.shuffle_seed * 0x9e3779b97f4a7c15ull + block;
    for (unsigned i = n; i > 1; i--) {
        x += 0x9e3779b97f4a7c15ull;
        unsigned long long z = x;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        unsigned j = (unsigned)(z % i);
        unsigned t = g_order[i - 1];
        g_order[i - 1] = g_order[j];
        g_order[j] = t;
    }
}

// Run every thread of the current block to completion: passes over the threads in schedule order,
// each runnable thread running until it waits or finishes; a pass in which none can run while some
// have not finished is a deadlock.
void run_block() {
    for (;;) {
        g_pos = (unsigned)-1;
        Fiber* first = next_runnable();
        if (!first) break;
        emu_cur = &first->pub;
        g_stats.switches++;
        ctx_switch(&g_sched, &first->ctx);
    }
    if (g_live) deadlock_report();
    emu_cur = nullptr;
}

void run_grid(const char* name, const void* fn, dim3 grid, dim3 block, size_t dyn_smem,
              const std::function<void()>& body) {
    std::lock_guard<std::recursive_mutex> lock(g_launch_mu);
    if (g_kernel) emu_fail("kernel %s launched from inside kernel %s (no dynamic parallelism)", name, g_kernel);
    emu_install_fault_handler();
    const unsigned n = block.x * block.y * block.z;
    ensure_fibers(n);
    if (!g_dyn_smem) {
        g_dyn_smem = (unsigned char*)aligned_alloc(256, EMU_SMEM_OPTIN);
        if (!g_dyn_smem) emu_fail("out of memory for dynamic shared memory");
    }
    g_kernel = name;
    g_body = &body;
    g_nthreads = n;
    emu_block_dim = block;
    emu_grid_dim = grid;
    g_exited_mask.assign((n + 31) / 32, 0);
    g_warp_waiting.assign((n + 31) / 32, 0);
    g_strict = emu_config().strict;
    g_shared.start_launch();
    const std::vector<std::pair<void*, size_t>>& statics = emu_kernel_statics(fn);
    g_stats.launches++;
    const double t0 = g_profile ? cpu_seconds() : 0;
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
                emu_block_idx = make_uint3(bx, by, bz);
                g_shared.before_block();
                for (auto& v : statics) memset(v.first, 0xff, v.second);
                if (dyn_smem) memset(g_dyn_smem, 0xff, dyn_smem);
                unsigned i = 0;
                for (unsigned z = 0; z < block.z; z++)
                    for (unsigned y = 0; y < block.y; y++)
                        for (unsigned x = 0; x < block.x; x++, i++) {
                            Fiber* f = g_fibers[i];
                            f->pub.tid = make_uint3(x, y, z);
                            f->pub.linear = i;
                            f->pub.lane = i % 32;
                            f->state = F_RUNNABLE;
                        }
                g_live = n;
                g_exited = 0;
                g_bar_count = 0;
                g_bar_acc[0] = 0; g_bar_acc[1] = 1; g_bar_acc[2] = 0;
                for (auto& m : g_exited_mask) m = 0;
                for (auto& m : g_warp_waiting) m = 0;
                make_order(n, bx + grid.x * (by + grid.y * bz));
                run_block();
                g_shared.after_block();
                g_stats.blocks++;
                g_stats.threads += n;
            }
    if (g_profile) {
        ProfileEntry& e = g_profile_data[name];
        e.launches++;
        e.blocks += (unsigned long long)grid.x * grid.y * grid.z;
        e.threads += (unsigned long long)grid.x * grid.y * grid.z * n;
        e.seconds += cpu_seconds() - t0;
    }
    g_kernel = nullptr;
    g_body = nullptr;
}

}  // namespace

size_t emu_func_max_dyn_smem(const void* fn) {
    std::lock_guard<std::recursive_mutex> lock(g_launch_mu);
    auto it = g_func_smem.find(fn);
    return it == g_func_smem.end() ? EMU_SMEM_DEFAULT : it->second;
}
void emu_func_set_max_dyn_smem(const void* fn, size_t bytes) {
    std::lock_guard<std::recursive_mutex> lock(g_launch_mu);
    g_func_smem[fn] = bytes;
}

// ---- launch ------------------------------------------------------------------------------------
void emu_launch_erased(const char* launch_text, const void* fn, dim3 grid, dim3 block, size_t dyn_smem,
                       cudaStream_t stream, std::function<void()> body) {
    const char* name = emu_kernel_name(fn, launch_text);
    char why[200] = "";
    cudaError_t err = cudaSuccess;
    unsigned long long nthreads = (unsigned long long)block.x * block.y * block.z;
    if (!block.x || !block.y || !block.z || !grid.x || !grid.y || !grid.z) {
        err = cudaErrorInvalidConfiguration;
        snprintf(why, sizeof why, "a zero grid or block dimension");
    } else if (nthreads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64) {
        err = cudaErrorInvalidConfiguration;
        snprintf(why, sizeof why, "block (%u,%u,%u) exceeds 1024 threads / (1024,1024,64)", block.x, block.y, block.z);
    } else if (grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535) {
        err = cudaErrorInvalidConfiguration;
        snprintf(why, sizeof why, "grid (%u,%u,%u) exceeds (2^31-1,65535,65535)", grid.x, grid.y, grid.z);
    } else if (dyn_smem > emu_func_max_dyn_smem(fn)) {
        err = cudaErrorInvalidValue;
        snprintf(why, sizeof why, "%zu bytes of dynamic shared memory > the kernel's limit %zu (raise it with "
                 "cudaFuncSetAttribute(MaxDynamicSharedMemorySize), at most %u)", dyn_smem,
                 emu_func_max_dyn_smem(fn), (unsigned)EMU_SMEM_OPTIN);
    } else {
        // static __shared__ (as far as the symbol table shows it) counts against the same budget:
        // at most 48 KiB on its own (ptxas refuses more), static + dynamic within 48 KiB, or within
        // 227 KiB once the kernel opted in
        size_t st = emu_kernel_static_smem(fn);
        size_t budget = emu_func_max_dyn_smem(fn) > EMU_SMEM_DEFAULT ? (size_t)EMU_SMEM_OPTIN : (size_t)EMU_SMEM_DEFAULT;
        if (st > EMU_SMEM_DEFAULT || st + dyn_smem > budget) {
            err = cudaErrorInvalidValue;
            snprintf(why, sizeof why, "%zu bytes of static + %zu of dynamic shared memory exceed %zu", st, dyn_smem,
                     st > EMU_SMEM_DEFAULT ? (size_t)EMU_SMEM_DEFAULT : budget);
        }
    }
    if (err != cudaSuccess) {
        emu_set_error(err);
        if (emu_config().launch_errors_fatal)
            emu_fail("launch of %s failed: %s: %s", name, cudaGetErrorName(err), why);
        return;
    }
    auto shared_body = std::make_shared<std::function<void()>>(std::move(body));
    err = emu_stream_do(stream, [name, fn, grid, block, dyn_smem, shared_body]() {
        run_grid(name, fn, grid, block, dyn_smem, *shared_body);
    });
    if (err != cudaSuccess && emu_config().launch_errors_fatal)
        emu_fail("launch of %s failed: %s", name, cudaGetErrorName(err));
}
