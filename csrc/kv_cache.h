// kv_cache.h: the one KV cache every generation mode shares. Holds post-RoPE
// K and V of committed positions [0, n_cached) per layer, in f32, f16 or
// q8_0 (chosen per context, keys and values apart). Slots at and past
// n_cached are scratch: a bidirectional block pass stages its K/V there
// without committing them, so the next commit simply overwrites them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "quants/quants.h"  // fp16_bits, fp16_to_f32

namespace nld {

// GGML type ids, as llama.cpp's type_k / type_v.
enum class kv_type : int32_t { f32 = 0, f16 = 1, q8_0 = 8 };

// "f32", "f16", "q8_0"; throws (NLD_ERR_INVALID_ARGUMENT) on any other id.
const char* kv_type_name(int32_t type);
kv_type checked_kv_type(int32_t type, const char* what);

// Keys are kept in tiles of kKeyTile positions, each tile d-major
// (head_dim, kKeyTile), so a vector register holds one dimension of
// kKeyTile keys and a score loop runs over keys, not dimensions.
constexpr int32_t kKeyTile = 16;

// Offset of key (position p, dimension d) in one head's tiled keys (in
// elements, for f32 and f16 tiles).
inline size_t key_tile_offset(int64_t p, int64_t d, int64_t head_dim) {
    return (size_t)((p / kKeyTile) * head_dim * kKeyTile + d * kKeyTile + p % kKeyTile);
}

// q8_0 in the cache: each head's vector of head_dim values in blocks of 32
// dimensions (the last one shorter when head_dim is not a multiple of 32),
// a block x as an f16 scale s = max|x| / 127 and q = round(x / s), read back
// as f32(s) * q.
constexpr int32_t kKvBlock = 32;
inline int64_t kv_q8_blocks(int64_t head_dim) { return (head_dim + kKvBlock - 1) / kKvBlock; }
// A q8_0 key tile: the int8 values d-major (head_dim, kKeyTile), then the
// scales block-major (kv_q8_blocks, kKeyTile), f16.
inline size_t kv_q8_key_tile_bytes(int64_t head_dim) {
    return (size_t)(head_dim * kKeyTile + kv_q8_blocks(head_dim) * kKeyTile * 2);
}
// A q8_0 value row: head_dim int8 values, then kv_q8_blocks f16 scales.
inline size_t kv_q8_value_row_bytes(int64_t head_dim) { return (size_t)(head_dim + 2 * kv_q8_blocks(head_dim)); }

inline float kv_f16_at(const uint8_t* p, int64_t i) {
    fp16_bits h;
    std::memcpy(&h, p + 2 * i, sizeof h);
    return fp16_to_f32(h);
}
// Key (s, d) of one head's tiles, and dimension d of one value row, per
// type: the values every attention loop reads.
inline float key_at_f32(const uint8_t* keys, int64_t s, int64_t d, int64_t n) {
    float x;
    std::memcpy(&x, keys + 4 * key_tile_offset(s, d, n), sizeof x);
    return x;
}
inline float key_at_f16(const uint8_t* keys, int64_t s, int64_t d, int64_t n) {
    return kv_f16_at(keys, (int64_t)key_tile_offset(s, d, n));
}
inline float key_at_q8_0(const uint8_t* keys, int64_t s, int64_t d, int64_t n) {
    const uint8_t* tile = keys + (size_t)(s / kKeyTile) * kv_q8_key_tile_bytes(n);
    const int64_t lane = s % kKeyTile;
    return kv_f16_at(tile + n * kKeyTile, (d / kKvBlock) * kKeyTile + lane) * (float)(int8_t)tile[d * kKeyTile + lane];
}
inline float value_at_f32(const uint8_t* row, int64_t d, int64_t) {
    float x;
    std::memcpy(&x, row + 4 * d, sizeof x);
    return x;
}
inline float value_at_f16(const uint8_t* row, int64_t d, int64_t) { return kv_f16_at(row, d); }
inline float value_at_q8_0(const uint8_t* row, int64_t d, int64_t n) {
    return kv_f16_at(row + n, d / kKvBlock) * (float)(int8_t)row[d];
}

// One head's head_dim values in q8_0: q[0..n) and scales[0..kv_q8_blocks(n)).
void kv_q8_encode(const float* x, int64_t n, int8_t* q, fp16_bits* scales);

// Bytes of one layer's keys and values for one KV head at n_ctx slots.
size_t kv_key_head_bytes(kv_type t, int32_t n_ctx, int32_t head_dim);
size_t kv_value_row_bytes(kv_type t, int32_t head_dim);

class kv_cache {
public:
    kv_cache(int32_t n_layer, int32_t n_ctx, int32_t n_head_kv, int32_t head_dim, kv_type type_k = kv_type::f32,
             kv_type type_v = kv_type::f32);

    // The bytes a cache of these sizes and types takes.
    static uint64_t bytes_for(int32_t n_layer, int32_t n_ctx, int32_t n_head_kv, int32_t head_dim, kv_type type_k,
                              kv_type type_v);

    int32_t capacity() const { return n_ctx_; }
    int32_t n_cached() const { return n_cached_; }
    kv_type type_k() const { return type_k_; }
    kv_type type_v() const { return type_v_; }
    size_t bytes() const { return k_.size() + v_.size(); }
    // One layer, head-major, so what one attention head reads lies together.
    // Keys: (n_head_kv, n_ctx / kKeyTile rounded up) tiles of type_k's tile
    // layout, head h's at h * key_head_bytes(). Values: (n_head_kv, n_ctx)
    // rows of value_row_bytes(), slot p of head h at
    // h * value_head_bytes() + p * value_row_bytes().
    const uint8_t* keys(int32_t layer) const { return k_.data() + (size_t)layer * keys_per_layer_; }
    const uint8_t* values(int32_t layer) const { return v_.data() + (size_t)layer * values_per_layer_; }
    size_t key_head_bytes() const { return keys_per_layer_ / (size_t)n_head_kv_; }
    size_t value_head_bytes() const { return values_per_layer_ / (size_t)n_head_kv_; }
    size_t value_row_bytes() const { return value_row_bytes_; }
    // Writes n rows of (n_head_kv * head_dim) keys and values (the forward
    // pass's layout) into slots first .. first + n - 1 of a layer, encoded.
    void store(int32_t layer, int32_t first, int32_t n, const float* k_rows, const float* v_rows);
    // Replaces n rows of keys and values (the forward pass's layout) by what
    // storing and reading them back gives (f32: unchanged), so that rows
    // attending to keys not yet stored see the values later rows will read.
    void round_trip(float* k_rows, float* v_rows, int32_t n) const;
    bool is_exact() const { return type_k_ == kv_type::f32 && type_v_ == kv_type::f32; }

    // Marks positions [n_cached, n_cached + n) committed (their slots were
    // written by the forward pass that produced them).
    void commit(int32_t n);
    void truncate(int32_t n_keep);

private:
    int32_t n_ctx_;
    int32_t n_head_kv_;
    int32_t head_dim_;
    kv_type type_k_;
    kv_type type_v_;
    size_t keys_per_layer_;
    size_t values_per_layer_;
    size_t value_row_bytes_;
    int32_t n_cached_ = 0;
    std::vector<uint8_t> k_;  // (n_layer, n_head_kv, tiles) of type_k
    std::vector<uint8_t> v_;  // (n_layer, n_head_kv, n_ctx) rows of type_v
};

}  // namespace nld
