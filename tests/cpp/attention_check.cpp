// attention_check.cpp: the SIMD attention loops (attention_loops.h) and the
// vector exp (exp_f32.h) against plain loops written from their contracts,
// built with AddressSanitizer + UndefinedBehaviorSanitizer by
// tests/test_attention_loops.py. Covers f32, f16 and q8_0 keys and values
// (stored by kv_cache, and read back as its round trip says), key ranges
// that start and end inside a key tile, runs of whole tiles, head sizes with
// and without 16- and 8-wide tails and q8_0 blocks cut short, and 1 to 5
// query heads per call.
// Exit 0: every loop of every table this CPU runs gives the contract's bits
// (prints "tables N ... ok"); 1: a mismatch (printed).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/attention_loops.h"  // attention_loops, avx2/avx512 tables
#include "kv_cache.h"                     // kv_cache, key_at_* / value_at_*
#include "backend/cpu/exp_f32.h"          // exp_f32, exp8_avx2

using namespace nld;

namespace {

int failures = 0;

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof(float)) == 0; }

void report(const char* what, const char* table, int64_t n, int heads, int64_t begin, int64_t end, int64_t i) {
    if (++failures <= 10)
        std::printf("mismatch: %s (%s) n=%lld heads=%d keys [%lld, %lld) at %lld\n", what, table, (long long)n, heads,
                    (long long)begin, (long long)end, (long long)i);
}

// The contracts, as plain loops over the values kv_cache.h says a cache holds.
using key_reader = float (*)(const uint8_t*, int64_t, int64_t, int64_t);
using value_reader = float (*)(const uint8_t*, int64_t, int64_t);

void scores_plain(key_reader key_at, const float* q, int64_t q_step, int heads, const uint8_t* keys, int64_t begin,
                  int64_t end, int64_t n, float* out, int64_t out_step) {
    for (int j = 0; j < heads; ++j)
        for (int64_t s = begin; s < end; ++s) {
            float sum = 0.0f;
            for (int64_t d = 0; d < n; ++d) sum = std::fma(q[j * q_step + d], key_at(keys, s, d, n), sum);
            out[j * out_step + s - begin] = sum;
        }
}

void weighted_plain(value_reader value_at, const float* p, int64_t p_step, int heads, const uint8_t* v,
                    int64_t v_stride, int64_t rows, float* out, int64_t out_step, int64_t n) {
    for (int j = 0; j < heads; ++j)
        for (int64_t s = 0; s < rows; ++s)
            for (int64_t d = 0; d < n; ++d)
                out[j * out_step + d] = std::fma(p[j * p_step + s], value_at(v + s * v_stride, d, n), out[j * out_step + d]);
}

void softmax_plain(float* s, int64_t n, float scale) {
    float max_score = -INFINITY;
    for (int64_t i = 0; i < n; ++i) {
        s[i] *= scale;
        max_score = std::fmax(max_score, s[i]);
    }
    const int64_t n8 = n / 8 * 8;
    float lanes[8] = {};
    for (int64_t i = 0; i < n8; ++i) lanes[i % 8] += s[i] = exp_f32(s[i] - max_score);
    float sum = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
    for (int64_t i = n8; i < n; ++i) sum += s[i] = exp_f32(s[i] - max_score);
    for (int64_t i = 0; i < n; ++i) s[i] /= sum;
}

struct cache_format {
    const char* name;
    kv_type type;
    key_reader key_at;
    value_reader value_at;
};
const cache_format kFormats[] = {{"f32", kv_type::f32, key_at_f32, value_at_f32},
                                 {"f16", kv_type::f16, key_at_f16, value_at_f16},
                                 {"q8_0", kv_type::q8_0, key_at_q8_0, value_at_q8_0}};

// A one-layer, one-head cache of `slots` random keys and values of n
// dimensions in format f, checked first against its own round trip: what
// key_at / value_at read back is what round_trip makes of the same rows.
kv_cache filled_cache(const cache_format& f, int64_t n, int64_t slots, std::mt19937& rng) {
    std::normal_distribution<float> normal;
    kv_cache cache(1, (int32_t)slots, 1, (int32_t)n, f.type, f.type);
    std::vector<float> k((size_t)(slots * n)), v(k.size());
    for (float& x : k) x = normal(rng);
    for (float& x : v) x = 3.0f * normal(rng);
    k[0] = 0.0f;  // an all-zero block must read back as zeros (q8_0 scale 0)
    if (n >= 40) std::fill(k.begin() + n, k.begin() + n + 32, 0.0f);
    cache.store(0, 0, (int32_t)slots, k.data(), v.data());
    cache.round_trip(k.data(), v.data(), (int32_t)slots);
    for (int64_t s = 0; s < slots; ++s)
        for (int64_t d = 0; d < n; ++d) {
            if (!same_bits(f.key_at(cache.keys(0), s, d, n), k[(size_t)(s * n + d)]))
                report("key round trip", f.name, n, 1, s, s + 1, d);
            const uint8_t* row = cache.values(0) + (size_t)s * cache.value_row_bytes();
            if (!same_bits(f.value_at(row, d, n), v[(size_t)(s * n + d)]))
                report("value round trip", f.name, n, 1, s, s + 1, d);
        }
    return cache;
}

void check_table(const char* name, const attention_loops& loops, std::mt19937& rng) {
    std::normal_distribution<float> normal;
    for (const cache_format& f : kFormats) {
        const std::string label = std::string(name) + " " + f.name;
        const scores_fn scores = loops.scores(f.type);
        const weighted_fn weighted = loops.weighted_sum(f.type);
        for (int64_t n : {8, 12, 16, 24, 40, 64, 72, 128}) {
            const int64_t n_keys = 150;
            const kv_cache cache = filled_cache(f, n, n_keys, rng);
            for (int heads = 1; heads <= 5; ++heads) {
                std::vector<float> q((size_t)(heads * n));
                for (float& x : q) x = normal(rng);
                for (int64_t begin : {0, 3, 16, 21}) {
                    for (int64_t end : {begin, begin + 1, begin + 15, begin + 16, begin + 47, (int64_t)100, n_keys}) {
                        if (end < begin || end > n_keys) continue;
                        // Exact-size outputs, so the sanitizers see a write past the range.
                        std::vector<float> want(std::max<size_t>(1, (size_t)(heads * (end - begin)))), got(want.size());
                        const int64_t step = end - begin;
                        scores_plain(f.key_at, q.data(), n, heads, cache.keys(0), begin, end, n, want.data(), step);
                        scores(q.data(), n, heads, cache.keys(0), begin, end, n, got.data(), step);
                        for (size_t i = 0; i < want.size(); ++i)
                            if (!same_bits(want[i], got[i])) report("scores", label.c_str(), n, heads, begin, end, (int64_t)i);
                    }
                }
                for (int64_t rows : {0, 1, 7, 33, 150}) {
                    std::vector<float> p((size_t)(heads * rows) + 1);
                    for (float& x : p) x = normal(rng);
                    std::vector<float> want((size_t)(heads * n)), got;
                    for (float& x : want) x = normal(rng);
                    got = want;
                    const int64_t stride = (int64_t)cache.value_row_bytes();
                    weighted_plain(f.value_at, p.data(), rows, heads, cache.values(0), stride, rows, want.data(), n, n);
                    weighted(p.data(), rows, heads, cache.values(0), stride, rows, got.data(), n, n);
                    for (size_t i = 0; i < want.size(); ++i)
                        if (!same_bits(want[i], got[i])) report("weighted_sum", label.c_str(), n, heads, 0, rows, (int64_t)i);
                }
            }
        }
    }
    for (int64_t n : {1, 7, 8, 9, 31, 150, 301}) {
        std::vector<float> want((size_t)n);
        for (float& x : want) x = 8.0f * normal(rng);
        if (n > 8) want[3] = -1e30f;  // an exponential of 0, as a masked key
        std::vector<float> got = want;
        softmax_plain(want.data(), n, 0.125f);
        loops.softmax(got.data(), n, 0.125f);
        for (int64_t i = 0; i < n; ++i)
            if (!same_bits(want[(size_t)i], got[(size_t)i])) report("softmax", name, n, 1, 0, n, i);
    }
}

// exp8_avx2 against exp_f32 on every 4099th float bit pattern and the edges.
#ifdef NLD_HAVE_AVX2_PATH
__attribute__((target("avx2"))) void check_exp() {
    std::vector<float> xs = {0.0f, -0.0f, 1.0f, -1.0f, 88.3762626f, 88.3762665f, 88.72f, 89.0f, -87.3365479f,
                             -87.3365402f, -100.0f, std::numeric_limits<float>::infinity(),
                             -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN(),
                             std::numeric_limits<float>::denorm_min(), 1e-30f};
    for (uint64_t bits = 0; bits <= 0xffffffffull; bits += 4099) {
        const uint32_t b = (uint32_t)bits;
        float x;
        std::memcpy(&x, &b, sizeof(x));
        xs.push_back(x);
    }
    while (xs.size() % 8) xs.push_back(0.5f);
    double worst_ulp = 0.0;
    for (size_t i = 0; i < xs.size(); i += 8) {
        float got[8];
        _mm256_storeu_ps(got, exp8_avx2(_mm256_loadu_ps(&xs[i])));
        for (int k = 0; k < 8; ++k) {
            const float x = xs[i + k], want = exp_f32(x);
            const bool both_nan = std::isnan(want) && std::isnan(got[k]);
            if (!both_nan && !same_bits(want, got[k])) report("exp8_avx2", "avx2", 0, 0, 0, 0, (int64_t)(i + k));
            if (x > -87.0f && x < 88.0f) {  // accuracy against double precision, in units of the last place
                const double exact = std::exp((double)x);
                const double ulp = std::nextafter((float)exact, INFINITY) - (float)exact;
                worst_ulp = std::fmax(worst_ulp, std::fabs((double)want - exact) / ulp);
            }
        }
    }
    if (!(worst_ulp <= 2.0)) {
        ++failures;
        std::printf("exp_f32: %.2f ulp from e^x\n", worst_ulp);
    }
    if (exp_f32(INFINITY) != INFINITY || exp_f32(-INFINITY) != 0.0f || !std::isnan(exp_f32(NAN)) ||
        exp_f32(0.0f) != 1.0f) {
        ++failures;
        std::printf("exp_f32: wrong at inf, -inf, nan or 0\n");
    }
}
#endif

}  // namespace

int main() {
    std::mt19937 rng(7);
    int tables = 0;
#ifdef NLD_HAVE_AVX2_PATH
    if (__builtin_cpu_supports("avx2")) {
        check_table("avx2", avx2_attention_loops, rng);
        check_exp();
        ++tables;
    }
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")) {
        check_table("avx512", avx512_attention_loops, rng);
        ++tables;
    }
#endif
    if (failures) {
        std::printf("%d mismatches\n", failures);
        return 1;
    }
    std::printf("tables %d ok\n", tables);
    return 0;
}
