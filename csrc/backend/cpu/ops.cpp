// ops.cpp: the CPU ops (see ops.h): scalar reference ops, and the matmul of
// quantized weights over the dot-product kernels of quants/dot.h. Each
// output element is computed by exactly one thread in a fixed order, so
// results do not depend on the thread count.
#include "backend/cpu/ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

#ifdef NLD_HAVE_AVX2_PATH
#include <immintrin.h>
#endif

#include "backend/cpu/attention_loops.h"
#include "backend/cpu/exp_f32.h"
#include "quants/quants.h"
#include "quants/repack.h"

namespace nld {

#ifdef NLD_HAVE_AVX2_PATH
static void f16_row_avx2(const fp16_bits* h, float* dst, int64_t n);
#endif

void weight_row_to_f32(const weight_matrix& w, int64_t r, float* dst) {
    const uint8_t* row = w.data + (uint64_t)r * w.row_bytes;
    switch (w.type) {
    case ggml_type::f32: std::memcpy(dst, row, (size_t)w.n_in * sizeof(float)); break;
    case ggml_type::f16: {
        const fp16_bits* h = reinterpret_cast<const fp16_bits*>(row);
#ifdef NLD_HAVE_AVX2_PATH
        if (uses_avx2(default_cpu_path())) {
            f16_row_avx2(h, dst, w.n_in);
            break;
        }
#endif
        for (int64_t i = 0; i < w.n_in; ++i) dst[i] = fp16_to_f32(h[i]);
        break;
    }
    case ggml_type::bf16: {
        const bf16_bits* b = reinterpret_cast<const bf16_bits*>(row);
        for (int64_t i = 0; i < w.n_in; ++i) dst[i] = bf16_to_f32(b[i]);
        break;
    }
    case ggml_type::q8_0: dequantize_row_q8_0(reinterpret_cast<const block_q8_0*>(row), dst, w.n_in); break;
    case ggml_type::q4_0: dequantize_row_q4_0(reinterpret_cast<const block_q4_0*>(row), dst, w.n_in); break;
    case ggml_type::q4_k: dequantize_row_q4_k(reinterpret_cast<const block_q4_k*>(row), dst, w.n_in); break;
    case ggml_type::q6_k: dequantize_row_q6_k(reinterpret_cast<const block_q6_k*>(row), dst, w.n_in); break;
    default: std::fill(dst, dst + w.n_in, 0.0f); break;  // rejected at load; never reached
    }
}

// f32 dot product with a fixed order: 32 partial sums (sum k takes the
// elements i < n32 with i % 32 == k, n32 = n rounded down to 32), the
// elements [n32, n8) added to sums 0..7 by i % 8, the four groups of 8
// combined lane-wise as (g0 + g1) + (g2 + g3), the 8 lanes as
// ((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7)), then the tail in order. Separate
// multiplies and adds (no FMA), so the AVX2 version below, which keeps the
// sums in four registers, gives the same bits.
static float reduce8(const float* s) { return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])); }

static float dot_f32(const float* a, const float* b, int64_t n) {
    float s[32] = {};
    int64_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int k = 0; k < 32; ++k) s[k] += a[i + k] * b[i + k];
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; ++k) s[k] += a[i + k] * b[i + k];
    float lanes[8];
    for (int k = 0; k < 8; ++k) lanes[k] = (s[k] + s[k + 8]) + (s[k + 16] + s[k + 24]);
    float total = reduce8(lanes);
    for (; i < n; ++i) total += a[i] * b[i];
    return total;
}

// out += p * v, one fused multiply-add per element (as the SIMD versions).
// The reference attention_loops: heads one by one, each score a sum of fused
// multiply-adds over the dimensions in order, value rows added in order by
// fused multiply-adds; keys and values read through kv_cache.h's key_at_* /
// value_at_*.
template <float (*key_at)(const uint8_t*, int64_t, int64_t, int64_t)>
static void scores_ref(const float* q, int64_t q_step, int n_heads, const uint8_t* keys, int64_t begin, int64_t end,
                       int64_t n, float* out, int64_t out_step) {
    for (int j = 0; j < n_heads; ++j)
        for (int64_t s = begin; s < end; ++s) {
            float sum = 0.0f;
            for (int64_t d = 0; d < n; ++d) sum = std::fma(q[j * q_step + d], key_at(keys, s, d, n), sum);
            out[j * out_step + s - begin] = sum;
        }
}

template <float (*value_at)(const uint8_t*, int64_t, int64_t)>
static void weighted_ref(const float* p, int64_t p_step, int n_heads, const uint8_t* v, int64_t v_stride,
                         int64_t rows, float* out, int64_t out_step, int64_t n) {
    for (int j = 0; j < n_heads; ++j)
        for (int64_t s = 0; s < rows; ++s)
            for (int64_t d = 0; d < n; ++d)
                out[j * out_step + d] = std::fma(p[j * p_step + s], value_at(v + s * v_stride, d, n), out[j * out_step + d]);
}

// Softmax of n scores in place, after scaling them: e^(s - max) by exp_f32,
// summed in a fixed order (8 partial sums, sum k taking the i < n8 with
// i % 8 == k, combined as reduce8, then the tail in order), each divided by
// the sum.
static void softmax_f32(float* s, int64_t n, float scale) {
    float max_score = -INFINITY;
    for (int64_t i = 0; i < n; ++i) {
        s[i] *= scale;
        max_score = std::max(max_score, s[i]);
    }
    const int64_t n8 = n / 8 * 8;
    float lanes[8] = {};
    for (int64_t i = 0; i < n8; ++i) {
        s[i] = exp_f32(s[i] - max_score);
        lanes[i % 8] += s[i];
    }
    float sum = reduce8(lanes);
    for (int64_t i = n8; i < n; ++i) {
        s[i] = exp_f32(s[i] - max_score);
        sum += s[i];
    }
    for (int64_t i = 0; i < n; ++i) s[i] /= sum;
}

// gate <- silu(gate) * up, count values.
static void silu_mul_f32(float* gate, const float* up, int64_t count) {
    for (int64_t i = 0; i < count; ++i) gate[i] = gate[i] / (1.0f + exp_f32(-gate[i])) * up[i];
}

#ifdef NLD_HAVE_AVX2_PATH
__attribute__((target("avx2"))) static void silu_mul_avx2(float* gate, const float* up, int64_t count) {
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    int64_t i = 0;
    for (; i + 8 <= count; i += 8) {
        const __m256 g = _mm256_loadu_ps(gate + i);
        const __m256 e = exp8_avx2(_mm256_xor_ps(g, sign));
        _mm256_storeu_ps(gate + i, _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), _mm256_loadu_ps(up + i)));
    }
    silu_mul_f32(gate + i, up + i, count - i);
}

__attribute__((target("avx2"))) static float dot_f32_avx2(const float* a, const float* b, int64_t n) {
    __m256 g0 = _mm256_setzero_ps(), g1 = g0, g2 = g0, g3 = g0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        g0 = _mm256_add_ps(g0, _mm256_mul_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
        g1 = _mm256_add_ps(g1, _mm256_mul_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8)));
        g2 = _mm256_add_ps(g2, _mm256_mul_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16)));
        g3 = _mm256_add_ps(g3, _mm256_mul_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24)));
    }
    for (; i + 8 <= n; i += 8) g0 = _mm256_add_ps(g0, _mm256_mul_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
    float lanes[8];
    _mm256_storeu_ps(lanes, _mm256_add_ps(_mm256_add_ps(g0, g1), _mm256_add_ps(g2, g3)));
    float total = reduce8(lanes);
    for (; i < n; ++i) total += a[i] * b[i];
    return total;
}

// F16 -> F32 of n values (exact, as fp16_to_f32).
__attribute__((target("avx2,f16c"))) static void f16_row_avx2(const fp16_bits* h, float* dst, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i))));
    for (; i < n; ++i) dst[i] = fp16_to_f32(h[i]);
}

#endif

namespace {

// The f32 vector loops of the path in use (identical results on every path).
struct f32_loops {
    float (*dot)(const float*, const float*, int64_t);
    const attention_loops* attention;
    void (*silu_mul)(float* gate, const float* up, int64_t count);
};

const f32_loops& loops_for_default_path() {
#ifdef NLD_HAVE_AVX2_PATH
    static const f32_loops avx512 = {dot_f32_avx2, &avx512_attention_loops, silu_mul_avx2};
    static const f32_loops avx2 = {dot_f32_avx2, &avx2_attention_loops, silu_mul_avx2};
    if (default_cpu_path() == cpu_path::avx512_vnni) return avx512;
    if (uses_avx2(default_cpu_path())) return avx2;
#endif
    static const attention_loops reference = {
        scores_ref<key_at_f32>,       scores_ref<key_at_f16>,       scores_ref<key_at_q8_0>,
        weighted_ref<value_at_f32>, weighted_ref<value_at_f16>, weighted_ref<value_at_q8_0>, softmax_f32};
    static const f32_loops plain = {dot_f32, &reference, silu_mul_f32};
    return plain;
}

}  // namespace

bool is_block_quantized(ggml_type t) {
    return t == ggml_type::q8_0 || t == ggml_type::q4_0 || t == ggml_type::q4_k || t == ggml_type::q6_k;
}

bool can_repack_x8(const weight_matrix& w) {
    return has_x8_layout((int32_t)w.type) && w.n_out % kGroupRows == 0;
}

namespace {

// The kernel of a block-quantized weight type in a kernel table (dot_kernels
// or x8_kernels: both have one field per type).
template <typename Table>
auto kernel_for_type(const Table& kernels, ggml_type t) {
    return t == ggml_type::q8_0 ? kernels.q8_0 : t == ggml_type::q4_0 ? kernels.q4_0
                                               : t == ggml_type::q4_k ? kernels.q4_k : kernels.q6_k;
}

// K-quant weights take Q8_K activation rows; Q8_0 / Q4_0 weights take Q8_0.
bool takes_q8_k(ggml_type t) { return t == ggml_type::q4_k || t == ggml_type::q6_k; }

// The n activation rows of a quantized matmul, quantized once per call into
// the calling thread's buffer: Q8_K rows for K-quant weights, otherwise Q8_0
// rows (block_q8_0s on the x8 path). Blocks hold floats, so the buffer is
// float-aligned.
const uint8_t* quantize_activations(threadpool& pool, const weight_matrix& w, const float* x, int64_t n, bool x8,
                                    size_t* row_bytes) {
    const activation_quantizers& quantize = *kernels_for(default_cpu_path()).quantize;
    const bool k_quant = takes_q8_k(w.type);
    const size_t bytes = k_quant ? (size_t)(w.n_in / QK_K) * sizeof(block_q8_k)
                         : x8    ? (size_t)(w.n_in / QK8_0) * sizeof(block_q8_0s)
                                 : (size_t)(w.n_in / QK8_0) * sizeof(block_q8_0);
    thread_local std::vector<float> storage;
    storage.resize((n * bytes + sizeof(float) - 1) / sizeof(float));
    uint8_t* act = reinterpret_cast<uint8_t*>(storage.data());
    pool.parallel_for(n, [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t) {
            const float* row = x + t * w.n_in;
            uint8_t* out = act + t * bytes;
            if (k_quant)
                quantize.q8_k(row, reinterpret_cast<block_q8_k*>(out), w.n_in);
            else if (x8)
                quantize.q8_0s(row, reinterpret_cast<block_q8_0s*>(out), w.n_in);
            else
                quantize_row_q8_0(row, reinterpret_cast<block_q8_0*>(out), w.n_in);
        }
    });
    *row_bytes = bytes;
    return act;
}

// Groups [begin, end) of w against the n activation rows: two at a time
// where the path has pair kernels, else one by one.
void run_groups(const dot_kernels& kernels, const weight_matrix& w, int64_t begin, int64_t end, const uint8_t* act,
                size_t act_row_bytes, int64_t n, float* y) {
    const gemm_x8_fn one = kernel_for_type(*kernels.x8, w.type);
    const gemm_x8_fn two = kernels.x8_pairs ? kernel_for_type(*kernels.x8_pairs, w.type) : nullptr;
    const size_t group_bytes = x8_bytes((int32_t)w.type, kGroupRows, w.n_in);
    for (int64_t g = begin; g < end;) {
        const bool pair = two && g + 1 < end;
        (pair ? two : one)(w.n_in, w.x8 + (size_t)g * group_bytes, act, act_row_bytes, n, y + g * kGroupRows, w.n_out);
        g += pair ? 2 : 1;
    }
}

// The x8 matmuls hand their groups out in about kChunksPerThread chunks per
// thread (threadpool::parallel_chunks), of an even number of groups (whole
// pairs). On a shared host one thread's core is often slower than the
// other's for a while; with one fixed half each, the faster thread then
// waits for the slower at the end of every matmul.
constexpr int64_t kChunksPerThread = 8;

// An even number of groups, about total / (threads * kChunksPerThread).
int64_t chunk_groups(int64_t total, int threads) {
    const int64_t share = total / ((int64_t)threads * kChunksPerThread);
    return std::max<int64_t>(2, share + share % 2);
}

// The x8 path: each thread takes chunks of groups of 8 weight rows and runs
// every activation row past a group while it is in L1 (the activations, a
// few hundred KB for a prefill, stay in L2/L3).
void matmul_x8(threadpool& pool, const dot_kernels& kernels, const weight_matrix& w, const float* x, float* y,
               int64_t n) {
    size_t act_row_bytes = 0;
    const uint8_t* act = quantize_activations(pool, w, x, n, true, &act_row_bytes);
    const int64_t groups = w.n_out / kGroupRows;
    pool.parallel_chunks(groups, chunk_groups(groups, pool.size()), [&](int64_t begin, int64_t end) {
        run_groups(kernels, w, begin, end, act, act_row_bytes, n, y);
    });
}

// Whether quantize_activations gives w and v the same activation rows.
bool same_activations(const weight_matrix& w, const weight_matrix& v) {
    return w.n_in == v.n_in && takes_q8_k(w.type) == takes_q8_k(v.type);
}

}  // namespace

void matmul_same_input(threadpool& pool, const weight_matrix* const* ws, float* const* ys, int count, const float* x,
                       int64_t n) {
    const dot_kernels& kernels = kernels_for(default_cpu_path());
    bool fused = kernels.x8 != nullptr && count > 0;
    for (int i = 0; i < count && fused; ++i)
        fused = is_block_quantized(ws[i]->type) && ws[i]->x8 && same_activations(*ws[0], *ws[i]);
    if (!fused) {
        for (int i = 0; i < count; ++i) matmul(pool, *ws[i], x, ys[i], n);
        return;
    }
    size_t act_row_bytes = 0;
    const uint8_t* act = quantize_activations(pool, *ws[0], x, n, true, &act_row_bytes);
    // Every group of every matrix in one list, cut into chunks of about equal
    // weight bytes (the types may differ), each cut at an even group of its
    // matrix; the threads take the chunks in turn (as matmul_x8).
    struct segment {
        const weight_matrix* w;
        float* y;
        size_t group_bytes;
        int64_t first;  // index of its first group in the list
    };
    std::vector<segment> segs;
    int64_t total_groups = 0;
    size_t total_bytes = 0;
    for (int i = 0; i < count; ++i) {
        const size_t gb = x8_bytes((int32_t)ws[i]->type, kGroupRows, ws[i]->n_in);
        segs.push_back({ws[i], ys[i], gb, total_groups});
        total_groups += ws[i]->n_out / kGroupRows;
        total_bytes += gb * (size_t)(ws[i]->n_out / kGroupRows);
    }
    const size_t chunk_bytes = std::max<size_t>(1, total_bytes / ((size_t)pool.size() * kChunksPerThread));
    std::vector<int64_t> bounds{0};
    size_t since_cut = 0;
    for (const segment& sg : segs) {
        const int64_t groups = sg.w->n_out / kGroupRows;
        for (int64_t g = 0; g < groups; ++g, since_cut += sg.group_bytes)
            if (g % 2 == 0 && since_cut >= chunk_bytes && sg.first + g > bounds.back()) {
                bounds.push_back(sg.first + g);
                since_cut = 0;
            }
    }
    bounds.push_back(total_groups);
    pool.parallel_chunks((int64_t)bounds.size() - 1, 1, [&](int64_t begin, int64_t end) {
        for (int64_t c = begin; c < end; ++c) {
            // The chunk's run of the list, matrix by matrix.
            const int64_t lo = bounds[(size_t)c], hi = bounds[(size_t)c + 1];
            for (const segment& sg : segs) {
                const int64_t first = std::max(lo, sg.first) - sg.first;
                const int64_t last = std::min(hi, sg.first + sg.w->n_out / kGroupRows) - sg.first;
                if (first < last) run_groups(kernels, *sg.w, first, last, act, act_row_bytes, n, sg.y);
            }
        }
    });
}

void matmul_quantized(threadpool& pool, const weight_matrix& w, const float* x, float* y, int64_t n,
                      cpu_path path) {
    const dot_kernels& kernels = kernels_for(path);
    if (kernels.x8 && w.x8) {
        matmul_x8(pool, kernels, w, x, y, n);
        return;
    }
    const dot_rows_fn dot = kernel_for_type(kernels, w.type);
    size_t act_row_bytes = 0;
    const uint8_t* act = quantize_activations(pool, w, x, n, false, &act_row_bytes);
    // Each weight row meets a tile of activation rows while it is in cache;
    // tiles of kRowTile rows (about 200 KB of activations for n_in 3072) stay
    // in L2 during prefill. Every y element is still one dot product.
    constexpr int64_t kRowTile = 64;
    pool.parallel_for(w.n_out, [&](int64_t begin, int64_t end) {
        for (int64_t t0 = 0; t0 < n; t0 += kRowTile)
            for (int64_t o = begin; o < end; ++o)
                dot(w.n_in, w.data + (uint64_t)o * w.row_bytes, act + t0 * act_row_bytes, act_row_bytes,
                    std::min(kRowTile, n - t0), y + t0 * w.n_out + o, w.n_out);
    });
}

void matmul(threadpool& pool, const weight_matrix& w, const float* x, float* y, int64_t n) {
    if (is_block_quantized(w.type)) {
        matmul_quantized(pool, w, x, y, n, default_cpu_path());
        return;
    }
    const f32_loops& loops = loops_for_default_path();
    pool.parallel_for(w.n_out, [&](int64_t begin, int64_t end) {
        std::vector<float> row(w.type == ggml_type::f32 ? 0 : (size_t)w.n_in);
        for (int64_t o = begin; o < end; ++o) {
            const float* wr;
            if (w.type == ggml_type::f32) {
                wr = reinterpret_cast<const float*>(w.data + (uint64_t)o * w.row_bytes);
            } else {
                weight_row_to_f32(w, o, row.data());
                wr = row.data();
            }
            for (int64_t t = 0; t < n; ++t) y[t * w.n_out + o] = loops.dot(wr, x + t * w.n_in, w.n_in);
        }
    });
}

void rmsnorm(const float* x, const float* weight, float* out, int64_t n, int64_t dim, float eps) {
    const int64_t dim16 = dim / 16 * 16;
    for (int64_t t = 0; t < n; ++t) {
        const float* xr = x + t * dim;
        // 16 partial sums (sum k takes the i < dim16 with i % 16 == k), which
        // the compiler keeps in vector registers, added as a tree (k and
        // k + 8, then k and k + 4, ...), then the tail in order.
        float partial[16] = {};
        for (int64_t i = 0; i < dim16; i += 16)
            for (int k = 0; k < 16; ++k) partial[k] += xr[i + k] * xr[i + k];
        for (int width = 8; width >= 1; width /= 2)
            for (int k = 0; k < width; ++k) partial[k] += partial[k + width];
        float ss = partial[0];
        for (int64_t i = dim16; i < dim; ++i) ss += xr[i] * xr[i];
        const float inv = 1.0f / std::sqrt(ss / (float)dim + eps);
        for (int64_t i = 0; i < dim; ++i) out[t * dim + i] = weight[i] * (xr[i] * inv);
    }
}

void compute_rope_angles(const int32_t* positions, int64_t n, const float* inv_freq, int64_t half, float attn_factor,
                         rope_angles& out) {
    out.cos.resize((size_t)(n * half));
    out.sin.resize((size_t)(n * half));
    for (int64_t t = 0; t < n; ++t)
        for (int64_t j = 0; j < half; ++j) {
            const float angle = (float)positions[t] * inv_freq[j];  // f32, as transformers
            out.cos[(size_t)(t * half + j)] = std::cos(angle) * attn_factor;
            out.sin[(size_t)(t * half + j)] = std::sin(angle) * attn_factor;
        }
}

void rope_adjacent(float* x, int64_t n, int64_t n_heads, int64_t head_dim, const rope_angles& angles) {
    const int64_t half = head_dim / 2;
    for (int64_t t = 0; t < n; ++t) {
        const float* cos_t = &angles.cos[(size_t)(t * half)];
        const float* sin_t = &angles.sin[(size_t)(t * half)];
        for (int64_t h = 0; h < n_heads; ++h) {
            float* v = x + t * n_heads * head_dim + h * head_dim;
            for (int64_t j = 0; j < half; ++j) {
                const float a = v[2 * j], b = v[2 * j + 1];
                v[2 * j] = a * cos_t[j] - b * sin_t[j];
                v[2 * j + 1] = b * cos_t[j] + a * sin_t[j];
            }
        }
    }
}

void attention(threadpool& pool, const float* q, const cache_layer& cache, const float* new_k, const float* new_v,
               const attention_rows& rows, float* out, int64_t n, int64_t n_head, int64_t n_head_kv, int64_t head_dim,
               float scale) {
    const attention_loops& loops = *loops_for_default_path().attention;
    const int64_t group = n_head / n_head_kv;
    const int64_t q_stride = n_head * head_dim, kv_stride = n_head_kv * head_dim;
    // The new keys in the f32 tiled layout, (n_head_kv, n / kKeyTile rounded
    // up, head_dim, kKeyTile). Kept between calls (no page faults per
    // layer); lanes past n hold zeros or older keys, scored but never read.
    const int64_t new_key_head_stride = (n + kKeyTile - 1) / kKeyTile * kKeyTile * head_dim;
    thread_local std::vector<float> new_keys;
    if (new_keys.size() < (size_t)(n_head_kv * new_key_head_stride))
        new_keys.resize((size_t)(n_head_kv * new_key_head_stride), 0.0f);
    for (int64_t h = 0; h < n_head_kv; ++h)
        for (int64_t t = 0; t < n; ++t)
            for (int64_t d = 0; d < head_dim; ++d)
                new_keys[(size_t)h * new_key_head_stride + key_tile_offset(t, d, head_dim)] =
                    new_k[t * kv_stride + h * head_dim + d];
    const auto* new_tiles = reinterpret_cast<const uint8_t*>(new_keys.data());  // the workers have their own (empty)
    const auto* new_rows = reinterpret_cast<const uint8_t*>(new_v);
    const scores_fn cache_scores = loops.scores(cache.type_k), new_scores = loops.scores_f32;
    const weighted_fn cache_weighted = loops.weighted_sum(cache.type_v), new_weighted = loops.weighted_f32;
    // A job is one row and one KV head with the group of query heads that
    // read it, so each key tile and value row is loaded once for all of them;
    // jobs in the order KV head, row, so the keys and values of one KV head
    // (a few hundred KB) stay in each thread's L2 while the rows pass. Rows
    // see more keys the later they come (causal), so the jobs are handed out
    // one at a time, in order, to whichever thread is free: all threads on
    // the same KV head at a time, and none idle while another has work.
    const int64_t jobs = n * n_head_kv;
    pool.parallel_chunks(jobs, 1, [&](int64_t job_begin, int64_t job_end) {
        thread_local std::vector<float> scores;  // (group, n_keys)
        for (int64_t job = job_begin; job < job_end; ++job) {
            const int64_t kvh = job / n, t = job % n;
            const float* qv = q + t * q_stride + kvh * group * head_dim;  // the group's heads, in a row
            float* o = out + t * q_stride + kvh * group * head_dim;
            // The visible keys, in order: the cache, the new prefix, the row's group.
            const int64_t spans[3][2] = {
                {0, cache.n_cached}, {0, rows.see_prefix[t]}, {rows.group_lo[t], rows.group_hi[t]}};
            // Each span's tiled keys of this kv head, its loops, and its values' first row and row stride.
            const uint8_t* keys[3] = {cache.keys + kvh * cache.key_head_bytes,
                                      new_tiles + 4 * kvh * new_key_head_stride,
                                      new_tiles + 4 * kvh * new_key_head_stride};
            const scores_fn score_loop[3] = {cache_scores, new_scores, new_scores};
            const uint8_t* vals[3] = {cache.values + kvh * cache.value_head_bytes, new_rows + 4 * kvh * head_dim,
                                      new_rows + 4 * kvh * head_dim};
            const int64_t strides[3] = {cache.value_row_bytes, 4 * kv_stride, 4 * kv_stride};
            const weighted_fn weighted_loop[3] = {cache_weighted, new_weighted, new_weighted};
            int64_t count[3], n_keys = 0;
            for (int k = 0; k < 3; ++k) n_keys += count[k] = std::max<int64_t>(spans[k][1] - spans[k][0], 0);
            scores.resize((size_t)(group * n_keys));
            for (int64_t k = 0, at = 0; k < 3; at += count[k++])
                score_loop[k](qv, head_dim, (int)group, keys[k], spans[k][0], spans[k][0] + count[k], head_dim,
                              scores.data() + at, n_keys);
            for (int64_t j = 0; j < group; ++j) loops.softmax(scores.data() + j * n_keys, n_keys, scale);
            std::fill(o, o + group * head_dim, 0.0f);
            for (int64_t k = 0, at = 0; k < 3; at += count[k++])
                weighted_loop[k](scores.data() + at, n_keys, (int)group, vals[k] + spans[k][0] * strides[k],
                                 strides[k], count[k], o, head_dim, head_dim);
        }
    });
}

void swiglu(threadpool& pool, float* gate, const float* up, int64_t count) {
    const f32_loops& loops = loops_for_default_path();
    pool.parallel_for(count, [&](int64_t begin, int64_t end) { loops.silu_mul(gate + begin, up + begin, end - begin); });
}

}  // namespace nld
