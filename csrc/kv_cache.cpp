// kv_cache.cpp: see kv_cache.h.
#include "kv_cache.h"

#include <string>

#include "error.h"

namespace nld {

kv_cache::kv_cache(int32_t n_layer, int32_t n_ctx, int32_t kv_dim)
    : n_ctx_(n_ctx), kv_dim_(kv_dim), per_layer_((size_t)n_ctx * (size_t)kv_dim) {
    const uint64_t total = checked_mul(checked_mul((uint64_t)n_layer, (uint64_t)per_layer_, "KV cache size"), 2,
                                       "KV cache size");
    if (total > (uint64_t)1 << 36) fail_argument("n_ctx " + std::to_string(n_ctx) + " needs a KV cache over 256 GiB");
    k_.assign((size_t)n_layer * per_layer_, 0.0f);
    v_.assign((size_t)n_layer * per_layer_, 0.0f);
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
