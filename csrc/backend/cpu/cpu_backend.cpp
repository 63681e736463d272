// cpu_backend.cpp: the reference backend, the CPU ops of ops.h and
// attention_loops.h as they are.
#include "backend/backend.h"

#include <string>

#include "error.h"

namespace nld {

namespace {

class cpu : public backend {
public:
    const char* name() const override { return "cpu"; }

    void embed(exec&, const weight_matrix& table, const int32_t* tokens, int64_t n, float* out) const override {
        const int64_t width = table.n_in;
        for (int64_t t = 0; t < n; ++t) weight_row_to_f32(table, tokens[t], out + t * width);
    }
    void rmsnorm(exec&, const float* x, const float* weight, float* out, int64_t n, int64_t dim,
                 float eps) const override {
        nld::rmsnorm(x, weight, out, n, dim, eps);
    }
    void matmul(exec& ex, const weight_matrix& w, const float* x, float* y, int64_t n) const override {
        nld::matmul(ex.pool, w, x, y, n);
    }
    void matmul_same_input(exec& ex, const weight_matrix* const* ws, float* const* ys, int count, const float* x,
                           int64_t n) const override {
        nld::matmul_same_input(ex.pool, ws, ys, count, x, n);
    }
    void rope(exec&, float* x, int64_t n, int64_t n_heads, int64_t head_dim,
              const rope_angles& angles) const override {
        rope_adjacent(x, n, n_heads, head_dim, angles);
    }
    void scale_rows(exec&, float* x, const float* scale, int64_t n, int64_t width) const override {
        for (int64_t t = 0; t < n; ++t)
            for (int64_t i = 0; i < width; ++i) x[t * width + i] *= scale[t];
    }
    void attention(exec& ex, const float* q, const cache_layer& cache, const float* new_k, const float* new_v,
                   const attention_rows& rows, float* out, int64_t n, int64_t n_head, int64_t n_head_kv,
                   int64_t head_dim, float scale) const override {
        nld::attention(ex.pool, q, cache, new_k, new_v, rows, out, n, n_head, n_head_kv, head_dim, scale);
    }
    void swiglu(exec& ex, float* gate, const float* up, int64_t count) const override {
        nld::swiglu(ex.pool, gate, up, count);
    }
    void add_scaled(exec&, float* y, const float* x, float scale, int64_t count) const override {
        if (scale == 1.0f) {
            for (int64_t i = 0; i < count; ++i) y[i] += x[i];
        } else {
            for (int64_t i = 0; i < count; ++i) y[i] += scale * x[i];
        }
    }
};

}  // namespace

const backend& cpu_backend() {
    static const cpu instance;
    return instance;
}

#ifndef NLD_HAVE_CUDA
int32_t cuda_device_count(const char** why) {
    if (why) *why = "this build of nld_cpp has no CUDA code";
    return -1;
}
#endif

const backend& select_backend(int32_t n_gpu_layers) {
    if (n_gpu_layers < 0) fail_argument("n_gpu_layers must be >= 0 (0: CPU), got " + std::to_string(n_gpu_layers));
    if (n_gpu_layers == 0) return cpu_backend();
    const char* why = "";
    const int32_t devices = cuda_device_count(&why);
    const std::string asked = "n_gpu_layers " + std::to_string(n_gpu_layers) + ": ";
    if (devices < 0)
        fail_unsupported(asked + "this build has no CUDA backend (nvcc was not found when it was built; rebuild "
                                 "with the CUDA toolkit and NLD_CUDA=ON), use n_gpu_layers 0");
    if (devices == 0) fail_unsupported(asked + "no CUDA device is available (" + std::string(why) + ")");
    fail_unsupported(asked + std::to_string(devices) + " CUDA device(s) found, but this version has no CUDA "
                             "kernels yet; use n_gpu_layers 0");
}

}  // namespace nld
