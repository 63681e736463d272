// sampling.h: choosing tokens from logits rows (docs/generation.md
// "Common"): greedy argmax or seeded temperature / top-k / top-p sampling,
// always excluding the mask id, and the untempered confidence of a choice.
#pragma once

#include <cstdint>
#include <vector>

namespace nld {

struct sampling_params {
    float temperature = 0.0f;  // 0: greedy
    int32_t top_k = 0;         // 0: no limit
    float top_p = 1.0f;        // 1: no limit
    uint64_t seed = 0;
    int32_t excluded_token = -1;  // the mask id: never chosen
};

class sampler {
public:
    sampler(const sampling_params& p, int32_t n_vocab);

    // Greedy: argmax (ties to the lower id). Otherwise a draw from
    // softmax(logits/T) restricted by top-k and top-p. Throws on NaN logits.
    int32_t choose(const float* logits);
    // softmax(logits)[token] in f32, untempered, the excluded id included.
    float confidence(const float* logits, int32_t token) const;
    bool greedy() const { return params_.temperature == 0.0f; }

private:
    double next_uniform();  // [0, 1), from a splitmix64 stream

    sampling_params params_;
    int32_t n_vocab_;
    uint64_t state_;
    std::vector<int32_t> order_;   // scratch: candidate ids
    std::vector<double> probs_;    // scratch: their probabilities
};

}  // namespace nld
