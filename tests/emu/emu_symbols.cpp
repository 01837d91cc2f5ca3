// emu_symbols.cpp — finds a kernel's static __shared__ variables through the program's symbol table,
// so they can be poisoned before every block.
//
// Why: emu_cuda.h puts __shared__ variables in the "emu_shared" section, but g++ (12) silently drops
// the section attribute of a function-local static in a template instantiation, and most kernels
// are templates. Their __shared__ arrays still work (one static per instantiation, shared by the
// block's fibers) but land in .bss. The symbol table names them: a local static `red` of the kernel
// whose mangled name is _Z<rest> is _ZZ<rest>E3red (plus a discriminator when several share a
// name). So: kernel address -> kernel symbol -> its writable local statics. Variables declared in
// template __device__ helpers the kernel calls are not found this way (documented limit); those in
// non-template functions are in the emu_shared section anyway. A stripped program yields nothing.
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cxxabi.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "emu_internal.h"

namespace {

struct ObjSym {
    std::string name;
    uintptr_t addr;  // run-time address
    size_t size;
};

struct SymIndex {
    bool loaded = false;
    std::unordered_map<uintptr_t, std::string> funcs;  // run-time address -> mangled name
    std::vector<ObjSym> statics;                       // writable _ZZ... objects, sorted by name
    std::map<const void*, std::vector<std::pair<void*, size_t>>> per_kernel;
};

std::mutex g_mu;
SymIndex g_idx;

int find_main_bias(struct dl_phdr_info* info, size_t, void* out) {
    *(uintptr_t*)out = (uintptr_t)info->dlpi_addr;  // the first object is the main program
    return 1;
}

void load(SymIndex& ix) {
    ix.loaded = true;
    int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    struct stat st;
    if (fstat(fd, &st) != 0 || (size_t)st.st_size < sizeof(Elf64_Ehdr)) { close(fd); return; }
    size_t len = (size_t)st.st_size;
    void* map = mmap(nullptr, len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return;
    const unsigned char* base = (const unsigned char*)map;
    const Elf64_Ehdr* eh = (const Elf64_Ehdr*)base;
    uintptr_t bias = 0;
    dl_iterate_phdr(find_main_bias, &bias);
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) == 0 && eh->e_ident[EI_CLASS] == ELFCLASS64 &&
        eh->e_shoff && eh->e_shoff + (size_t)eh->e_shnum * sizeof(Elf64_Shdr) <= len) {
        const Elf64_Shdr* sh = (const Elf64_Shdr*)(base + eh->e_shoff);
        for (int i = 0; i < eh->e_shnum; i++) {
            if (sh[i].sh_type != SHT_SYMTAB || sh[i].sh_link >= eh->e_shnum) continue;
            const Elf64_Shdr& strs = sh[sh[i].sh_link];
            if (sh[i].sh_offset + sh[i].sh_size > len || strs.sh_offset + strs.sh_size > len) continue;
            const Elf64_Sym* syms = (const Elf64_Sym*)(base + sh[i].sh_offset);
            size_t n = sh[i].sh_size / sizeof(Elf64_Sym);
            const char* names = (const char*)(base + strs.sh_offset);
            for (size_t k = 0; k < n; k++) {
                const Elf64_Sym& s = syms[k];
                if (s.st_name >= strs.sh_size || s.st_value == 0) continue;
                const char* nm = names + s.st_name;
                int type = ELF64_ST_TYPE(s.st_info);
                if (type == STT_FUNC && nm[0] == '_' && nm[1] == 'Z') {
                    ix.funcs.emplace(bias + s.st_value, nm);
                } else if (type == STT_OBJECT && s.st_size && strncmp(nm, "_ZZ", 3) == 0 &&
                           s.st_shndx < eh->e_shnum && (sh[s.st_shndx].sh_flags & SHF_WRITE)) {
                    ix.statics.push_back(ObjSym{nm, bias + s.st_value, s.st_size});
                }
            }
        }
    }
    munmap(map, len);
    std::sort(ix.statics.begin(), ix.statics.end(), [](const ObjSym& a, const ObjSym& b) { return a.name < b.name; });
}

}  // namespace

// The writable function-local statics of the kernel at `fn` (its static __shared__ variables).
const std::vector<std::pair<void*, size_t>>& emu_kernel_statics(const void* fn) {
    std::lock_guard<std::mutex> lock(g_mu);
    SymIndex& ix = g_idx;
    auto it = ix.per_kernel.find(fn);
    if (it != ix.per_kernel.end()) return it->second;
    if (!ix.loaded) load(ix);
    std::vector<std::pair<void*, size_t>>& out = ix.per_kernel[fn];
    auto f = ix.funcs.find((uintptr_t)fn);
    if (f == ix.funcs.end()) return out;
    // _Z<rest>  ->  statics are _ZZ<rest>E<name>
    std::string prefix = "_ZZ" + f->second.substr(2) + "E";
    auto lo = std::lower_bound(ix.statics.begin(), ix.statics.end(), prefix,
                               [](const ObjSym& a, const std::string& p) { return a.name < p; });
    static const bool verbose = getenv("EMU_VERBOSE") && *getenv("EMU_VERBOSE") != '0';
    for (; lo != ix.statics.end() && lo->name.compare(0, prefix.size(), prefix) == 0; ++lo) {
        out.emplace_back((void*)lo->addr, lo->size);
        if (verbose) fprintf(stderr, "emu: %s: static __shared__ %s, %zu bytes\n", f->second.c_str(), lo->name.c_str(), lo->size);
    }
    return out;
}

size_t emu_kernel_static_smem(const void* fn) {
    size_t n = 0;
    for (auto& v : emu_kernel_statics(fn)) n += v.second;
    return n;
}

// The kernel's demangled name without its parameter list ("ns::kern<float>"), for messages and the
// profile: DS_LAUNCH only knows the expression it was given (often a local `k`). Falls back to
// `fallback` without a symbol table. The strings live as long as the program.
const char* emu_kernel_name(const void* fn, const char* fallback) {
    std::lock_guard<std::mutex> lock(g_mu);
    static std::map<const void*, std::string> names;
    auto it = names.find(fn);
    if (it != names.end()) return it->second.empty() ? fallback : it->second.c_str();
    if (!g_idx.loaded) load(g_idx);
    std::string& out = names[fn];
    auto f = g_idx.funcs.find((uintptr_t)fn);
    if (f == g_idx.funcs.end()) return fallback;
    int status = 0;
    char* d = abi::__cxa_demangle(f->second.c_str(), nullptr, nullptr, &status);
    if (status != 0 || !d) return fallback;
    std::string full = d;
    free(d);
    if (!full.empty() && full.back() == ')') {  // strip "(params)" from the matching parenthesis
        int depth = 0;
        for (size_t i = full.size(); i-- > 0;) {
            if (full[i] == ')') depth++;
            else if (full[i] == '(' && --depth == 0) { full.resize(i); break; }
        }
    }
    if (full.compare(0, 5, "void ") == 0) full.erase(0, 5);  // template functions carry their return type
    out = full;
    return out.empty() ? fallback : out.c_str();
}
