// row_passes.h: how the SIMD kernels split activation rows: passes of 4
// rows (the most whose accumulators stay in registers), then the remainder
// with a kernel compiled for its size. K<R> takes (n, weights, x, x_stride,
// y, y_stride) for exactly R rows; every pass computes each of its rows with
// the same arithmetic, so a row's result never depends on the row count.
#pragma once

#include <cstddef>
#include <cstdint>

namespace nld {

template <int R>
using rows_pass_fn = void (*)(int64_t n, const void* w, const void* x, size_t x_stride, float* y, int64_t y_stride);

template <rows_pass_fn<4> K4, rows_pass_fn<3> K3, rows_pass_fn<2> K2, rows_pass_fn<1> K1>
void all_rows(int64_t n, const void* w, const void* x, size_t x_stride, int64_t n_rows, float* y, int64_t y_stride) {
    const uint8_t* xb = static_cast<const uint8_t*>(x);
    int64_t r = 0;
    for (; r + 4 <= n_rows; r += 4) K4(n, w, xb + (size_t)r * x_stride, x_stride, y + r * y_stride, y_stride);
    const uint8_t* rest = xb + (size_t)r * x_stride;
    switch (n_rows - r) {
    case 3: K3(n, w, rest, x_stride, y + r * y_stride, y_stride); break;
    case 2: K2(n, w, rest, x_stride, y + r * y_stride, y_stride); break;
    case 1: K1(n, w, rest, x_stride, y + r * y_stride, y_stride); break;
    default: break;
    }
}

}  // namespace nld
