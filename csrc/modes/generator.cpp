// generator.cpp: the parts of a generation every mode shares (prefill with
// prefix reuse, emitting, stop rules, confidence commits) and the dispatch.
#include "modes/generator.h"

#include <algorithm>
#include <numeric>

#include "error.h"

namespace nld {

void step_ar(generator&);
void step_diffusion(generator&);
void step_spec_linear(generator&);
void step_spec_quadratic(generator&);

generator::generator(context& ctx, std::vector<int32_t> prompt, const generate_params& params)
    : ctx_(ctx), prompt_(std::move(prompt)), params_(params), sampler_(params.sampling, ctx.mdl.hp.n_vocab) {}

void generator::fail() {
    set_finish(finish_reason::cancelled);
    // Committed = the prompt and the emitted tokens that were evaluated.
    const size_t committed = prompt_.size() + (output.empty() ? 0 : output.size() - 1);
    size_t keep = 0;
    const std::vector<int32_t>& cached = ctx_.tokens;
    while (keep < cached.size() && keep < committed &&
           cached[keep] == (keep < prompt_.size() ? prompt_[keep] : output[keep - prompt_.size()]))
        ++keep;
    ctx_.truncate((int32_t)keep);
}

void generator::step() {
    new_tokens.clear();
    accepted_this_step = false;
    const size_t rounds_before = accepted.size();
    if (finished()) return;
    if (cancel_requested()) {
        set_finish(finish_reason::cancelled);
        return;
    }
    switch (params_.mode) {
    case gen_mode::ar: step_ar(*this); break;
    case gen_mode::diffusion: step_diffusion(*this); break;
    case gen_mode::spec_linear: step_spec_linear(*this); break;
    case gen_mode::spec_quadratic: step_spec_quadratic(*this); break;
    }
    accepted_this_step = accepted.size() > rounds_before;
}

const float* generator::prefill() {
    const int32_t n = (int32_t)prompt_.size();
    if (n > ctx_.cache.capacity())
        throw error(NLD_ERR_CONTEXT_FULL, "prompt of " + std::to_string(n) + " tokens does not fit n_ctx " +
                                              std::to_string(ctx_.cache.capacity()));
    int32_t keep = 0;  // at least the last prompt token is evaluated again
    while (keep < n - 1 && keep < (int32_t)ctx_.tokens.size() && ctx_.tokens[keep] == prompt_[keep]) ++keep;
    ctx_.truncate(keep);
    std::vector<int32_t> rest(prompt_.begin() + keep, prompt_.end());
    return run(rest, row_layout::causal(keep, n - keep), logits_rows::last);
}

const float* generator::run(const std::vector<int32_t>& tokens, const row_layout& layout, logits_rows rows) {
    const size_t n_rows = rows == logits_rows::all ? tokens.size() : rows == logits_rows::last ? 1 : 0;
    logits_.resize(std::max<size_t>(1, n_rows) * (size_t)n_vocab());
    forward(ctx_, tokens.data(), layout, rows, logits_.data());
    return logits_.data();
}

bool generator::is_stop(int32_t t) const {
    return std::find(params_.stop_tokens.begin(), params_.stop_tokens.end(), t) != params_.stop_tokens.end();
}

bool generator::emit(int32_t t) {
    if (finished()) return false;
    output.push_back(t);
    new_tokens.push_back(t);
    if (is_stop(t)) set_finish(finish_reason::stop);
    else if ((int32_t)output.size() >= params_.max_new_tokens) set_finish(finish_reason::length);
    return !finished();
}

int32_t generator::commit_confident(std::vector<int32_t>& block, const float* logits, float threshold,
                                    int32_t fixed_count) {
    struct candidate {
        int32_t index, token;
        float conf;
    };
    std::vector<candidate> masked;
    for (int32_t i = 0; i < (int32_t)block.size(); ++i) {
        if (block[i] != mask_id()) continue;
        const float* row = logits + (size_t)i * n_vocab();
        const int32_t token = sampler_.choose(row);
        masked.push_back({i, token, sampler_.confidence(row, token)});
    }
    // Highest confidence first, ties to the lower index.
    std::stable_sort(masked.begin(), masked.end(), [](const candidate& a, const candidate& b) {
        return a.conf > b.conf;
    });
    int32_t n_commit = 0;
    for (const candidate& c : masked) {
        const bool take = n_commit == 0 || (threshold > 0.0f ? c.conf >= threshold : n_commit < fixed_count);
        if (!take) continue;
        block[c.index] = c.token;
        ++n_commit;
    }
    return n_commit;
}

}  // namespace nld
