// emu_handles.h — the live-handle registry the library stand-ins share (emu_cublas.cpp, emu_cusolver.cpp):
// create registers a new context, destroy unregisters and frees it, and every call asks whether its handle
// is live, so a destroyed or made-up handle gets the library's NOT_INITIALIZED instead of a crash.
#ifndef DS_EMU_HANDLES_H
#define DS_EMU_HANDLES_H

#include <mutex>
#include <set>
#include <type_traits>

template <class H>  // H: a pointer to the stand-in's context struct (cublasHandle_t, cusolverDnHandle_t)
class emu_handles {
public:
    H make() {
        H h = new typename std::remove_pointer<H>::type();
        std::lock_guard<std::mutex> lk(mu_);
        live_.insert(h);
        return h;
    }
    bool destroy(H h) {  // false: not a live handle (nothing freed)
        {
            std::lock_guard<std::mutex> lk(mu_);
            if (!h || !live_.erase(h)) return false;
        }
        delete h;
        return true;
    }
    bool live(H h) {
        std::lock_guard<std::mutex> lk(mu_);
        return h && live_.count(h) != 0;
    }

    // The libraries' create / destroy / set-stream entry points, each with its own status type S.
    template <class S>
    S create(H* out, S ok, S invalid_value) {
        if (!out) return invalid_value;
        *out = make();
        return ok;
    }
    template <class S>
    S destroy(H h, S ok, S not_initialized) { return destroy(h) ? ok : not_initialized; }
    template <class S, class Stream>
    S set_stream(H h, Stream stream, S ok, S not_initialized) {
        if (!live(h)) return not_initialized;
        h->stream = stream;
        return ok;
    }

private:
    std::mutex mu_;
    std::set<H> live_;
};

#endif
