// kv_cache.cpp: see kv_cache.h.
#include "kv_cache.h"

#include <algorithm>
#include <string>

#include "error.h"

namespace nld {

kv_cache::kv_cache(int32_t n_layer, int32_t n_ctx, int32_t n_head_kv, int32_t head_dim)
    : n_ctx_(n_ctx), n_head_kv_(n_head_kv), head_dim_(head_dim),
      keys_per_layer_((size_t)(n_ctx + kKeyTile - 1) / kKeyTile * kKeyTile * (size_t)n_head_kv * (size_t)head_dim),
      values_per_layer_((size_t)n_ctx * (size_t)n_head_kv * (size_t)head_dim) {
    const uint64_t total = checked_mul(checked_mul((uint64_t)n_layer, (uint64_t)keys_per_layer_, "KV cache size"), 2,
                                       "KV cache size");
    if (total > (uint64_t)1 << 36) fail_argument("n_ctx " + std::to_string(n_ctx) + " needs a KV cache over 256 GiB");
    k_.assign((size_t)n_layer * keys_per_layer_, 0.0f);
    v_.assign((size_t)n_layer * values_per_layer_, 0.0f);
}

void kv_cache::store(int32_t layer, int32_t first, int32_t n, const float* k_rows, const float* v_rows) {
    const size_t hd = (size_t)head_dim_, row = (size_t)n_head_kv_ * hd;
    float* k = keys(layer);
    float* v = values(layer);
    for (int32_t t = 0; t < n; ++t)
        for (int32_t h = 0; h < n_head_kv_; ++h) {
            const float* k_row = k_rows + t * row + h * hd;
            float* k_head = k + (size_t)h * key_head_stride();
            for (size_t d = 0; d < hd; ++d) k_head[key_tile_offset(first + t, (int64_t)d, head_dim_)] = k_row[d];
            std::copy(v_rows + t * row + h * hd, v_rows + t * row + (h + 1) * hd,
                      v + (size_t)h * value_head_stride() + (size_t)(first + t) * hd);
        }
}

void kv_cache::commit(int32_t n) {
    if (n < 0 || n > n_ctx_ - n_cached_) fail_argument("KV cache commit past its capacity");
    n_cached_ += n;
}

void kv_cache::truncate(int32_t n_keep) {
    if (n_keep < 0 || n_keep > n_cached_)
        fail_argument("truncate: n_keep " + std::to_string(n_keep) + " is outside [0, " + std::to_string(n_cached_) +
                      "]");
    n_cached_ = n_keep;
}

}  // namespace nld
