// backend.h: the ops of a forward pass (forward.cpp) behind one interface,
// chosen per model load (n_gpu_layers, as llama.cpp spells it: 0 = CPU).
// The CPU backend (backend/cpu) is the reference every other backend is
// tested against. Each op runs on the forward's exec: the caller's thread
// pool on the CPU (a device stream for a device backend).
#pragma once

#include <cstdint>

#include "backend/cpu/attention_loops.h"
#include "backend/cpu/ops.h"
#include "backend/cpu/threadpool.h"

namespace nld {

struct exec {
    threadpool& pool;
};

class backend {
public:
    virtual ~backend() = default;
    virtual const char* name() const = 0;

    // out (n, E) = rows tokens[0..n) of the embedding table, in f32.
    virtual void embed(exec& ex, const weight_matrix& table, const int32_t* tokens, int64_t n, float* out) const = 0;
    virtual void rmsnorm(exec& ex, const float* x, const float* weight, float* out, int64_t n, int64_t dim,
                         float eps) const = 0;
    // y (n, rows of w) = x (n, cols of w) w^T
    virtual void matmul(exec& ex, const weight_matrix& w, const float* x, float* y, int64_t n) const = 0;
    // count matrices over the same input (q/k/v, gate/up)
    virtual void matmul_same_input(exec& ex, const weight_matrix* const* ws, float* const* ys, int count,
                                   const float* x, int64_t n) const = 0;
    virtual void rope(exec& ex, float* x, int64_t n, int64_t n_heads, int64_t head_dim,
                      const rope_angles& angles) const = 0;
    // x[t, :] *= scale[t] over rows of `width`
    virtual void scale_rows(exec& ex, float* x, const float* scale, int64_t n, int64_t width) const = 0;
    virtual void attention(exec& ex, const float* q, const cache_layer& cache, const float* new_k,
                           const float* new_v, const attention_rows& rows, float* out, int64_t n, int64_t n_head,
                           int64_t n_head_kv, int64_t head_dim, float scale) const = 0;
    virtual void swiglu(exec& ex, float* gate, const float* up, int64_t count) const = 0;
    // y += scale * x over count elements (the residual stream: scale 1; the LoRA delta)
    virtual void add_scaled(exec& ex, float* y, const float* x, float scale, int64_t count) const = 0;
};

const backend& cpu_backend();

// The backend of a model load: n_gpu_layers 0 the CPU backend; > 0 a CUDA
// backend, which this version does not have: the error says whether the
// build lacks CUDA, the machine lacks a device, or the kernels are missing.
const backend& select_backend(int32_t n_gpu_layers);

// CUDA devices this process sees; -1 when the build has no CUDA code.
// On 0, why says what the runtime answered.
int32_t cuda_device_count(const char** why);

}  // namespace nld
