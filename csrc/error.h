// error.h: the one exception type the core throws internally. api.cpp turns it
// (and any other std::exception) into an nld_status plus the thread-local
// message; nothing thrown here ever crosses the C API.
#pragma once

#include <stdexcept>  // std::runtime_error
#include <string>     // std::string

#include "include/nld.h"  // nld_status

namespace nld {

struct error : std::runtime_error {
    nld_status status;
    error(nld_status s, const std::string& msg) : std::runtime_error(msg), status(s) {}
};

// Throw helpers, so call sites read as one line each.
[[noreturn]] inline void fail_format(const std::string& msg) { throw error(NLD_ERR_FORMAT, msg); }
[[noreturn]] inline void fail_argument(const std::string& msg) { throw error(NLD_ERR_INVALID_ARGUMENT, msg); }
[[noreturn]] inline void fail_io(const std::string& msg) { throw error(NLD_ERR_IO, msg); }
[[noreturn]] inline void fail_unsupported(const std::string& msg) { throw error(NLD_ERR_UNSUPPORTED, msg); }

// Overflow-checked size arithmetic for everything derived from file contents.
// `what` names the quantity so the error says which field overflowed.
inline uint64_t checked_add(uint64_t a, uint64_t b, const char* what) {
    uint64_t r;
    if (__builtin_add_overflow(a, b, &r)) fail_format(std::string("size overflow computing ") + what);
    return r;
}
inline uint64_t checked_mul(uint64_t a, uint64_t b, const char* what) {
    uint64_t r;
    if (__builtin_mul_overflow(a, b, &r)) fail_format(std::string("size overflow computing ") + what);
    return r;
}

}  // namespace nld
