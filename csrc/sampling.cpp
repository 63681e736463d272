// sampling.cpp: see sampling.h. The random stream is splitmix64, written
// here so a seed gives the same draws on every platform and thread count.
#include "sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "error.h"

namespace nld {

sampler::sampler(const sampling_params& p, int32_t n_vocab) : params_(p), n_vocab_(n_vocab), state_(p.seed) {}

double sampler::next_uniform() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);  // 53 bits
}

int32_t sampler::choose(const float* logits) {
    int32_t best = -1;
    for (int32_t i = 0; i < n_vocab_; ++i) {
        if (std::isnan(logits[i])) fail_format("the model produced a NaN logit (token " + std::to_string(i) + ")");
        if (i == params_.excluded_token) continue;
        if (best < 0 || logits[i] > logits[best]) best = i;
    }
    if (greedy()) return best;

    // Candidates by logit, highest first (ties to the lower id), cut to top-k.
    order_.resize((size_t)n_vocab_);
    std::iota(order_.begin(), order_.end(), 0);
    if (params_.excluded_token >= 0) order_.erase(order_.begin() + params_.excluded_token);
    const size_t k = params_.top_k > 0 ? std::min<size_t>((size_t)params_.top_k, order_.size()) : order_.size();
    auto by_logit = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
    std::partial_sort(order_.begin(), order_.begin() + k, order_.end(), by_logit);
    order_.resize(k);
    // softmax(logits / T) over the candidates, in double.
    probs_.resize(k);
    const double inv_t = 1.0 / params_.temperature, top = logits[order_[0]];
    double sum = 0.0;
    for (size_t i = 0; i < k; ++i) sum += (probs_[i] = std::exp((logits[order_[i]] - top) * inv_t));
    // Nucleus: the smallest prefix whose mass reaches top_p.
    size_t keep = k;
    if (params_.top_p < 1.0f) {
        double mass = 0.0;
        for (size_t i = 0; i < k; ++i) {
            mass += probs_[i] / sum;
            if (mass >= params_.top_p) {
                keep = i + 1;
                break;
            }
        }
    }
    double kept = 0.0;
    for (size_t i = 0; i < keep; ++i) kept += probs_[i];
    double u = next_uniform() * kept;
    for (size_t i = 0; i < keep; ++i) {
        u -= probs_[i];
        if (u < 0.0) return order_[i];
    }
    return order_[keep - 1];
}

float sampler::confidence(const float* logits, int32_t token) const {
    float max_logit = -INFINITY;
    for (int32_t i = 0; i < n_vocab_; ++i) max_logit = std::max(max_logit, logits[i]);
    float sum = 0.0f;
    for (int32_t i = 0; i < n_vocab_; ++i) sum += std::exp(logits[i] - max_logit);
    return std::exp(logits[token] - max_logit) / sum;
}

}  // namespace nld
