// auto.cpp: mode "auto" and the adaptive draft length of linear
// self-speculation (docs/generation.md "Auto"). Before each round the choice
// with the most expected tokens per second wins: an AR step (1 token for a
// 1-row causal forward) or a speculation round of draft length k (expected
// accepted drafts + 1 tokens for a k-row draft pass and a k-row verify pass),
// each plus the step's overhead, from the context's cost model and the
// drafts' acceptance so far. Both are exact: a round emits what AR would.
#include <algorithm>
#include <cmath>

#include "modes/generator.h"

namespace nld {

bool plan_ar(generator&, forward_request&);
bool take_ar(generator&, const float*);
bool plan_spec_linear(generator&, forward_request&);
bool take_spec_linear(generator&, const float*);

void draft_acceptance::record(int32_t k, int32_t m, bool cut) {
    if (k < 2) return;
    if ((int32_t)tried.size() < k) {
        tried.resize((size_t)k, 0.0);
        passed.resize((size_t)k, 0.0);
    }
    for (size_t i = 1; i < tried.size(); ++i) {
        tried[i] *= kDecay;
        passed[i] *= kDecay;
    }
    for (int32_t i = 1; i <= m && i < k; ++i) {
        tried[i] += 1.0;
        passed[i] += 1.0;
    }
    if (!cut && m + 1 < k) tried[m + 1] += 1.0;  // the draft that was rejected
}

void draft_acceptance::cap(double trials, double emitted) {
    if (tokens > emitted) {
        stops *= emitted / tokens;
        tokens = emitted;
    }
    double total = 0.0;
    for (double t : tried) total += t;
    if (total <= trials) return;
    const double scale = trials / total;
    for (size_t i = 0; i < tried.size(); ++i) {
        tried[i] *= scale;
        passed[i] *= scale;
    }
}

double draft_acceptance::pooled() const {
    double all_tried = 0.0, all_passed = 0.0;
    for (size_t j = 1; j < tried.size(); ++j) {
        all_tried += tried[j];
        all_passed += passed[j];
    }
    return (all_passed + kPriorWeight * kPriorP) / (all_tried + kPriorWeight);
}

double draft_acceptance::conditional(int32_t i, double pool) const {
    const double t = i < (int32_t)tried.size() ? tried[(size_t)i] : 0.0;
    const double p = i < (int32_t)passed.size() ? passed[(size_t)i] : 0.0;
    return (p + kPriorWeight * pool) / (t + kPriorWeight);
}

double draft_acceptance::expected_accepted(int32_t k, bool optimistic) const {
    const double pool = pooled();
    double reach = 1.0, sum = 0.0;
    for (int32_t i = 1; i < k; ++i) {
        reach *= optimistic ? kPriorP : conditional(i, pool);
        sum += reach;
    }
    return sum;
}

namespace {

// Seconds n more rows add to a forward that already holds `others` rows (a
// batch of the scheduler), or cost alone.
double marginal(const cost_model& c, bool is_draft, int32_t n, int32_t others) {
    if (others <= 0) return c.predict(is_draft, n);
    return std::max(c.predict(is_draft, others + n) - c.predict(is_draft, others), 1e-9);
}

// The draft length of the best round (0: an AR step, when allowed, is best)
// among k in [2, k_max].
int32_t best_choice(const generator& g, int32_t k_max, bool allow_ar, bool optimistic) {
    const cost_model& c = g.ctx_.costs;
    const int32_t others = g.batch_rows_hint_;
    const double overhead = c.step_overhead;
    const draft_acceptance& acc = g.ctx_.acceptance;
    const double pool = acc.pooled();
    // A round must beat an AR step by kMargin: the costs are measured on a
    // noisy machine, and a wrong round costs more than a wrong AR step.
    constexpr double kMargin = 1.05;
    int32_t best = 0;
    double best_rate = allow_ar ? kMargin / (marginal(c, false, 1, others) + overhead) : 0.0;
    // A round's tokens: the j-th is emitted when drafts 1..j-1 were
    // accepted and the text did not end before it.
    const double goes_on = 1.0 - acc.stop_rate();
    double reach = 1.0, survive = 1.0, expected = 0.0;  // expected tokens past the first, grown with k
    for (int32_t k = 2; k <= k_max; ++k) {
        reach *= optimistic ? draft_acceptance::kPriorP : acc.conditional(k - 1, pool);
        survive *= goes_on;
        expected += reach * survive;
        const double tokens = 1.0 + expected;
        const double seconds = marginal(c, true, k, others) + marginal(c, false, k, others) + overhead;
        const double rate = tokens / seconds;
        if (rate > best_rate * (1.0 + 1e-9)) {
            best = k;
            best_rate = rate;
        }
    }
    return best;
}

constexpr int32_t kFirstProbe = 32;   // AR steps before a probe round
constexpr int32_t kLastProbe = 1024;  // the longest wait between probes

}  // namespace

// Auto: an AR step or a round of draft length k, as best_choice says; after
// probe_interval_ AR steps in a row, one round as if drafts were accepted
// at the prior rate (the text may have turned draftable), the wait doubling
// after each probe and reset once rounds win on their own.
int32_t choose_draft_length(generator& g, bool allow_ar) {
    const int32_t room = g.ctx_.cache.capacity() - g.ctx_.cache.n_cached();
    const int32_t left = g.params_.max_new_tokens - (int32_t)g.output.size();
    int32_t k_max = std::min(g.params_.block_length, room);
    if (allow_ar) k_max = std::min(k_max, left);  // a round emits at most k tokens
    if (k_max < 2) return allow_ar ? 0 : std::min(2, room);
    const int32_t k = best_choice(g, k_max, allow_ar, false);
    if (!allow_ar) return k;
    if (k > 0) {
        g.ar_run_ = 0;
        g.probe_interval_ = kFirstProbe;
        return k;
    }
    if (g.ar_run_ < g.probe_interval_) {
        ++g.ar_run_;
        return 0;
    }
    const int32_t probe = best_choice(g, k_max, true, true);
    if (probe == 0) return 0;  // rounds cannot win here even at the prior rate
    g.ar_run_ = 0;
    g.probe_interval_ = std::min(kLastProbe, 2 * g.probe_interval_);
    return probe;
}

bool plan_auto(generator& g, forward_request& req) {
    if (g.phase_ == gen_phase::draft || g.phase_ == gen_phase::verify) return plan_spec_linear(g, req);
    const int32_t k = choose_draft_length(g, true);
    if (k == 0) return plan_ar(g, req);
    g.round_k_ = k;
    g.seed_ = g.output.back();
    return plan_spec_linear(g, req);
}

bool take_auto(generator& g, const float* logits) {
    if (g.phase_ == gen_phase::prefill) return take_ar(g, logits);
    if (g.phase_ == gen_phase::decode) {
        g.n_ar_steps += 1;
        return take_ar(g, logits);
    }
    return take_spec_linear(g, logits);
}

}  // namespace nld
