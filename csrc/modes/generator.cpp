// generator.cpp: the parts of a generation every mode shares (prefill with
// prefix reuse, emitting, stop rules, confidence commits) and the dispatch.
#include "modes/generator.h"

#include <algorithm>
#include <climits>
#include <numeric>

#include "error.h"

namespace nld {

// Each mode: the forward it needs after the prompt (false: the step ends
// without one), and what it does with that forward's logits (true: the step
// is done). The prefill is planned and taken here; the mode's take sees its
// last chunk with phase_ == prefill.
bool plan_ar(generator&, forward_request&);
bool take_ar(generator&, const float*);
bool plan_diffusion(generator&, forward_request&);
bool take_diffusion(generator&, const float*);
bool plan_spec_linear(generator&, forward_request&);
bool take_spec_linear(generator&, const float*);
bool plan_spec_quadratic(generator&, forward_request&);
bool take_spec_quadratic(generator&, const float*);
bool plan_auto(generator&, forward_request&);
bool take_auto(generator&, const float*);
bool plan_infill(generator&, forward_request&);
bool take_infill(generator&, const float*);

generator::generator(context& ctx, std::vector<int32_t> prompt, const generate_params& params)
    : ctx_(ctx), prompt_(std::move(prompt)), params_(params), sampler_(params.sampling, ctx.mdl.hp.n_vocab) {
    // What earlier generations on this context saw of drafts is a prior
    // worth a few rounds; this generation's rounds soon outweigh it.
    constexpr double kPriorTrials = 8.0, kPriorTokens = 64.0;
    ctx_.acceptance.cap(kPriorTrials, kPriorTokens);
}

void generator::fail() {
    set_finish(finish_reason::cancelled);
    in_step_ = false;
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
    // A prompt in chunks of kPrefillChunk rows, as the scheduler's default
    // (llama.cpp's n_batch): a forward's activations stay bounded whatever
    // the prompt's length, and chunks give the bits of one pass.
    // Each forward past the prompt corrects the context's cost model, and
    // so does the time the step and its caller spend outside forwards.
    constexpr int32_t kPrefillChunk = 512;
    const double begin = steady_seconds();
    double in_forwards = 0.0;
    bool prefilled = false;
    forward_request req;
    while (plan(req, kPrefillChunk)) {
        const bool is_prefill = planned_prefill();
        const bool is_draft = phase_ == gen_phase::draft || phase_ == gen_phase::first_draft;
        float* logits = logits_buffer(req);
        const double t0 = steady_seconds();
        forward(ctx_, req.tokens.data(), req.layout, req.rows, logits);
        const double dt = steady_seconds() - t0;
        in_forwards += dt;
        prefilled |= is_prefill;
        if (!is_prefill) ctx_.costs.observe(is_draft, (int32_t)req.tokens.size(), dt);
        if (take(logits)) break;
    }
    const double end = steady_seconds();
    if (!prefilled && last_step_end_ >= 0.0) ctx_.costs.observe_overhead((begin - last_step_end_) + (end - begin - in_forwards));
    last_step_end_ = end;
}

bool generator::plan(forward_request& req, int32_t max_prefill_rows) {
    if (!in_step_) {  // a new step begins
        new_tokens.clear();
        accepted_this_step = false;
        last_round_k = 0;
        rounds_before_ = accepted.size();
        in_step_ = true;
        if (!finished() && cancel_requested()) set_finish(finish_reason::cancelled);
    }
    bool needed = false;
    if (!finished()) {
        if (phase_ == gen_phase::start) phase_ = gen_phase::prefill;
        if (phase_ == gen_phase::prefill) {
            plan_prefill(req, max_prefill_rows);
            needed = true;
        } else {
            switch (params_.mode) {
            case gen_mode::ar: needed = plan_ar(*this, req); break;
            case gen_mode::diffusion: needed = plan_diffusion(*this, req); break;
            case gen_mode::spec_linear: needed = plan_spec_linear(*this, req); break;
            case gen_mode::spec_quadratic: needed = plan_spec_quadratic(*this, req); break;
            case gen_mode::automatic: needed = plan_auto(*this, req); break;
            case gen_mode::infill: needed = plan_infill(*this, req); break;
            }
        }
    }
    if (needed) {
        planned_cached_ = ctx_.cache.n_cached();
    } else {
        accepted_this_step = accepted.size() > rounds_before_;
        in_step_ = false;
    }
    return needed;
}

bool generator::take(const float* logits) {
    bool done = false;
    if (phase_ == gen_phase::prefill) prefill_next_ = prefill_end_;  // that chunk is in the cache now
    if (phase_ == gen_phase::prefill && !prefill_done()) {
        done = false;  // more prompt chunks to go
    } else {
        switch (params_.mode) {
        case gen_mode::ar: done = take_ar(*this, logits); break;
        case gen_mode::diffusion: done = take_diffusion(*this, logits); break;
        case gen_mode::spec_linear: done = take_spec_linear(*this, logits); break;
        case gen_mode::spec_quadratic: done = take_spec_quadratic(*this, logits); break;
        case gen_mode::automatic: done = take_auto(*this, logits); break;
        case gen_mode::infill: done = take_infill(*this, logits); break;
        }
    }
    if (done) {
        accepted_this_step = accepted.size() > rounds_before_;
        in_step_ = false;
    }
    return done;
}

void generator::plan_prefill(forward_request& req, int32_t max_rows) {
    const int32_t n = (int32_t)prompt_.size();
    if (prefill_next_ < 0) {  // the first chunk: reuse the cached prefix
        if (n > ctx_.cache.capacity())
            throw error(NLD_ERR_CONTEXT_FULL, "prompt of " + std::to_string(n) + " tokens does not fit n_ctx " +
                                                  std::to_string(ctx_.cache.capacity()));
        int32_t keep = 0;  // at least the last prompt token is evaluated again
        while (keep < n - 1 && keep < (int32_t)ctx_.tokens.size() && ctx_.tokens[keep] == prompt_[keep]) ++keep;
        ctx_.truncate(keep);
        prefill_next_ = keep;
    }
    const int32_t first = prefill_next_;
    const int32_t count = std::min(n - first, std::max(1, max_rows));
    prefill_end_ = first + count;
    req.tokens.assign(prompt_.begin() + first, prompt_.begin() + prefill_end_);
    req.layout = row_layout::causal(first, count);
    req.rows = prefill_end_ == n ? logits_rows::last : logits_rows::none;
}

void generator::plan_rows(forward_request& req, const std::vector<int32_t>& tokens, row_layout layout,
                          logits_rows rows) {
    req.tokens = tokens;
    req.layout = std::move(layout);
    req.rows = rows;
}

void generator::plan_block_pass(forward_request& req) const {
    const int32_t C = ctx_.cache.n_cached(), L = (int32_t)block_.size();
    if (phase_ == gen_phase::commit)  // the decided block joins the cache
        plan_rows(req, block_, row_layout::causal(C, L), logits_rows::last);
    else
        plan_rows(req, block_, row_layout::bidirectional(C, L, false), logits_rows::all);
}

float* generator::logits_buffer(const forward_request& req) {
    const size_t n_rows = req.rows == logits_rows::all ? req.tokens.size() : req.rows == logits_rows::last ? 1 : 0;
    logits_.resize(std::max<size_t>(1, n_rows) * (size_t)n_vocab());
    return logits_.data();
}

bool generator::is_stop(int32_t t) const {
    return std::find(params_.stop_tokens.begin(), params_.stop_tokens.end(), t) != params_.stop_tokens.end();
}

bool generator::emit(int32_t t) {
    if (finished()) return false;
    output.push_back(t);
    new_tokens.push_back(t);
    const bool counted = params_.mode != gen_mode::infill;  // a canvas says nothing of where texts end
    if (counted) ctx_.acceptance.tokens += 1.0;
    if (is_stop(t)) {
        set_finish(finish_reason::stop);
        if (counted) ctx_.acceptance.stops += 1.0;
    }
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
