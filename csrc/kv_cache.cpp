// kv_cache.cpp: see kv_cache.h.
#include "kv_cache.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "error.h"

namespace nld {

const char* kv_type_name(int32_t type) {
    switch (type) {
    case (int32_t)kv_type::f32: return "f32";
    case (int32_t)kv_type::f16: return "f16";
    case (int32_t)kv_type::q8_0: return "q8_0";
    default: return nullptr;
    }
}

kv_type checked_kv_type(int32_t type, const char* what) {
    if (!kv_type_name(type))
        fail_argument(std::string(what) + ": cache type " + std::to_string(type) +
                      " is not one of f32 (0), f16 (1), q8_0 (8)");
    return (kv_type)type;
}

void kv_q8_encode(const float* x, int64_t n, int8_t* q, fp16_bits* scales) {
    for (int64_t b = 0; b < kv_q8_blocks(n); ++b) {
        const int64_t lo = b * kKvBlock, hi = std::min<int64_t>(n, lo + kKvBlock);
        float amax = 0.0f;
        for (int64_t i = lo; i < hi; ++i) amax = std::max(amax, std::fabs(x[i]));
        const float d = amax / 127.0f, inverse = d != 0.0f ? 1.0f / d : 0.0f;
        scales[b] = f32_to_fp16(d);
        for (int64_t i = lo; i < hi; ++i) q[i] = (int8_t)round_half_away(x[i] * inverse);
    }
}

static size_t key_tile_bytes(kv_type t, int32_t head_dim) {
    switch (t) {
    case kv_type::f32: return (size_t)head_dim * kKeyTile * 4;
    case kv_type::f16: return (size_t)head_dim * kKeyTile * 2;
    case kv_type::q8_0: return kv_q8_key_tile_bytes(head_dim);
    }
    return 0;
}

size_t kv_key_head_bytes(kv_type t, int32_t n_ctx, int32_t head_dim) {
    return (size_t)((n_ctx + kKeyTile - 1) / kKeyTile) * key_tile_bytes(t, head_dim);
}

size_t kv_value_row_bytes(kv_type t, int32_t head_dim) {
    switch (t) {
    case kv_type::f32: return (size_t)head_dim * 4;
    case kv_type::f16: return (size_t)head_dim * 2;
    case kv_type::q8_0: return kv_q8_value_row_bytes(head_dim);
    }
    return 0;
}

uint64_t kv_cache::bytes_for(int32_t n_layer, int32_t n_ctx, int32_t n_head_kv, int32_t head_dim, kv_type type_k,
                             kv_type type_v) {
    const uint64_t per_head = checked_mul((uint64_t)n_ctx, kv_value_row_bytes(type_v, head_dim), "KV cache size") +
                              kv_key_head_bytes(type_k, n_ctx, head_dim);
    return checked_mul(checked_mul((uint64_t)n_layer, (uint64_t)n_head_kv, "KV cache size"), per_head,
                       "KV cache size");
}

kv_cache::kv_cache(int32_t n_layer, int32_t n_ctx, int32_t n_head_kv, int32_t head_dim, kv_type type_k,
                   kv_type type_v)
    : n_ctx_(n_ctx), n_head_kv_(n_head_kv), head_dim_(head_dim), type_k_(type_k), type_v_(type_v),
      keys_per_layer_(kv_key_head_bytes(type_k, n_ctx, head_dim) * (size_t)n_head_kv),
      values_per_layer_((size_t)n_ctx * kv_value_row_bytes(type_v, head_dim) * (size_t)n_head_kv),
      value_row_bytes_(kv_value_row_bytes(type_v, head_dim)) {
    const uint64_t total = bytes_for(n_layer, n_ctx, n_head_kv, head_dim, type_k, type_v);
    if (total > (uint64_t)1 << 38) fail_argument("n_ctx " + std::to_string(n_ctx) + " needs a KV cache over 256 GiB");
    k_.assign((size_t)n_layer * keys_per_layer_, 0);
    v_.assign((size_t)n_layer * values_per_layer_, 0);
}

void kv_cache::store(int32_t layer, int32_t first, int32_t n, const float* k_rows, const float* v_rows) {
    const int64_t hd = head_dim_, row = (int64_t)n_head_kv_ * hd, nb = kv_q8_blocks(hd);
    uint8_t* k = k_.data() + (size_t)layer * keys_per_layer_;
    uint8_t* v = v_.data() + (size_t)layer * values_per_layer_;
    std::vector<int8_t> q((size_t)hd);
    std::vector<fp16_bits> scales((size_t)nb);
    for (int32_t t = 0; t < n; ++t) {
        const int64_t p = first + t;
        for (int32_t h = 0; h < n_head_kv_; ++h) {
            const float* k_row = k_rows + t * row + h * hd;
            const float* v_row = v_rows + t * row + h * hd;
            uint8_t* k_head = k + (size_t)h * key_head_bytes();
            uint8_t* v_dst = v + (size_t)h * value_head_bytes() + (size_t)p * value_row_bytes_;
            switch (type_k_) {
            case kv_type::f32:
                for (int64_t d = 0; d < hd; ++d) std::memcpy(k_head + 4 * key_tile_offset(p, d, hd), &k_row[d], 4);
                break;
            case kv_type::f16:
                for (int64_t d = 0; d < hd; ++d) {
                    const fp16_bits bits = f32_to_fp16(k_row[d]);
                    std::memcpy(k_head + 2 * key_tile_offset(p, d, hd), &bits, 2);
                }
                break;
            case kv_type::q8_0: {
                kv_q8_encode(k_row, hd, q.data(), scales.data());
                uint8_t* tile = k_head + (size_t)(p / kKeyTile) * kv_q8_key_tile_bytes(hd);
                const int64_t lane = p % kKeyTile;
                for (int64_t d = 0; d < hd; ++d) tile[d * kKeyTile + lane] = (uint8_t)q[(size_t)d];
                for (int64_t b = 0; b < nb; ++b)
                    std::memcpy(tile + hd * kKeyTile + 2 * (b * kKeyTile + lane), &scales[(size_t)b], 2);
                break;
            }
            }
            switch (type_v_) {
            case kv_type::f32: std::memcpy(v_dst, v_row, (size_t)hd * 4); break;
            case kv_type::f16:
                for (int64_t d = 0; d < hd; ++d) {
                    const fp16_bits bits = f32_to_fp16(v_row[d]);
                    std::memcpy(v_dst + 2 * d, &bits, 2);
                }
                break;
            case kv_type::q8_0:
                kv_q8_encode(v_row, hd, q.data(), scales.data());
                std::memcpy(v_dst, q.data(), (size_t)hd);
                std::memcpy(v_dst + hd, scales.data(), (size_t)nb * 2);
                break;
            }
        }
    }
}

// x[0..n) <- what storing it as t and reading it back gives.
static void round_head(kv_type t, float* x, int64_t n, std::vector<int8_t>& q, std::vector<fp16_bits>& scales) {
    switch (t) {
    case kv_type::f32: return;
    case kv_type::f16:
        for (int64_t d = 0; d < n; ++d) x[d] = fp16_to_f32(f32_to_fp16(x[d]));
        return;
    case kv_type::q8_0:
        kv_q8_encode(x, n, q.data(), scales.data());
        for (int64_t d = 0; d < n; ++d) x[d] = fp16_to_f32(scales[(size_t)(d / kKvBlock)]) * (float)q[(size_t)d];
        return;
    }
}

void kv_cache::round_trip(float* k_rows, float* v_rows, int32_t n) const {
    if (is_exact()) return;
    const int64_t hd = head_dim_;
    std::vector<int8_t> q((size_t)hd);
    std::vector<fp16_bits> scales((size_t)kv_q8_blocks(hd));
    for (int64_t r = 0; r < (int64_t)n * n_head_kv_; ++r) {
        round_head(type_k_, k_rows + r * hd, hd, q, scales);
        round_head(type_v_, v_rows + r * hd, hd, q, scales);
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
