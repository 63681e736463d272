// kv_cache.h: the one KV cache every generation mode shares. Holds post-RoPE
// K and V of committed positions [0, n_cached) per layer. Slots at and past
// n_cached are scratch: a bidirectional block pass stages its K/V there
// without committing them, so the next commit simply overwrites them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace nld {

class kv_cache {
public:
    kv_cache(int32_t n_layer, int32_t n_ctx, int32_t kv_dim);

    int32_t capacity() const { return n_ctx_; }
    int32_t n_cached() const { return n_cached_; }
    // (n_ctx, kv_dim) rows for one layer; slot p holds position p.
    float* keys(int32_t layer) { return k_.data() + (size_t)layer * per_layer_; }
    float* values(int32_t layer) { return v_.data() + (size_t)layer * per_layer_; }

    // Marks positions [n_cached, n_cached + n) committed (their slots were
    // written by the forward pass that produced them).
    void commit(int32_t n);
    void truncate(int32_t n_keep);

private:
    int32_t n_ctx_;
    int32_t kv_dim_;
    size_t per_layer_;
    int32_t n_cached_ = 0;
    std::vector<float> k_;  // (n_layer, n_ctx, kv_dim)
    std::vector<float> v_;  // (n_layer, n_ctx, kv_dim)
};

}  // namespace nld
