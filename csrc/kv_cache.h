// kv_cache.h: the one KV cache every generation mode shares. Holds post-RoPE
// K and V of committed positions [0, n_cached) per layer. Slots at and past
// n_cached are scratch: a bidirectional block pass stages its K/V there
// without committing them, so the next commit simply overwrites them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace nld {

// Keys are kept in tiles of kKeyTile positions, each tile d-major
// (head_dim, kKeyTile), so a vector register holds one dimension of
// kKeyTile keys and a score loop runs over keys, not dimensions.
constexpr int32_t kKeyTile = 16;

// Offset of key (position p, dimension d) in one head's tiled keys.
inline size_t key_tile_offset(int64_t p, int64_t d, int64_t head_dim) {
    return (size_t)((p / kKeyTile) * head_dim * kKeyTile + d * kKeyTile + p % kKeyTile);
}

class kv_cache {
public:
    kv_cache(int32_t n_layer, int32_t n_ctx, int32_t n_head_kv, int32_t head_dim);

    int32_t capacity() const { return n_ctx_; }
    int32_t n_cached() const { return n_cached_; }
    // One layer, head-major, so what one attention head reads lies together.
    // Keys: (n_head_kv, n_ctx / kKeyTile rounded up, head_dim, kKeyTile),
    // head h's at h * key_head_stride(), slot p at key_tile_offset(p, ...).
    // Values: (n_head_kv, n_ctx, head_dim), slot p of head h at
    // h * value_head_stride() + p * head_dim.
    float* keys(int32_t layer) { return k_.data() + (size_t)layer * keys_per_layer_; }
    float* values(int32_t layer) { return v_.data() + (size_t)layer * values_per_layer_; }
    size_t key_head_stride() const { return keys_per_layer_ / (size_t)n_head_kv_; }
    size_t value_head_stride() const { return (size_t)n_ctx_ * (size_t)head_dim_; }
    // Writes n rows of (n_head_kv * head_dim) keys and values (the forward
    // pass's layout) into slots first .. first + n - 1 of a layer.
    void store(int32_t layer, int32_t first, int32_t n, const float* k_rows, const float* v_rows);

    // Marks positions [n_cached, n_cached + n) committed (their slots were
    // written by the forward pass that produced them).
    void commit(int32_t n);
    void truncate(int32_t n_keep);

private:
    int32_t n_ctx_;
    int32_t n_head_kv_;
    int32_t head_dim_;
    size_t keys_per_layer_;
    size_t values_per_layer_;
    int32_t n_cached_ = 0;
    std::vector<float> k_;  // (n_layer, n_head_kv, n_ctx / kKeyTile rounded up, head_dim, kKeyTile)
    std::vector<float> v_;  // (n_layer, n_head_kv, n_ctx, head_dim)
};

}  // namespace nld
