// costs.cpp: the cost model of costs.h and its calibration.
#include "modes/costs.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <vector>

#include "context.h"

namespace nld {

namespace {

constexpr double kLearnRate = 0.2;  // share of an observation's log-ratio taken at its own rows

// Piecewise-linear in n through the table's points.
double interpolate(const std::array<double, cost_model::kSizes>& t, int32_t n) {
    const auto& r = cost_model::kRows;
    int i = 1;
    while (i < cost_model::kSizes - 1 && n > r[i]) ++i;
    const double x0 = r[i - 1], x1 = r[i];
    const double y = t[i - 1] + (t[i] - t[i - 1]) * ((double)n - x0) / (x1 - x0);
    return std::max(y, t[0] * 0.5);
}

}  // namespace

double steady_seconds() {
    using clock = std::chrono::steady_clock;
    return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

cost_model::cost_model() {
    for (int i = 0; i < kSizes; ++i) {
        causal[i] = 1e-3 * (1.0 + 0.05 * (kRows[i] - 1));
        draft[i] = causal[i] * 1.05;
    }
}

double cost_model::predict(bool is_draft, int32_t n) const {
    return interpolate(is_draft ? draft : causal, std::max<int32_t>(n, 1));
}

void cost_model::observe(bool is_draft, int32_t n, double seconds) {
    if (!adapt || n < 1 || n > 4 * kRows[kSizes - 1] || !(seconds > 0.0)) return;
    const double ratio = std::clamp(seconds / predict(is_draft, n), 0.25, 4.0);
    const double log_ratio = std::log(ratio);
    std::array<double, kSizes>& table = is_draft ? draft : causal;
    // Most of a correction goes to every row alike (the machine got slower
    // or faster, the cache grew: the calibrated shape holds), the rest to
    // the rows near n (the shape itself is learnt slowly).
    for (int i = 0; i < kSizes; ++i) {
        const double distance = std::fabs(std::log2((double)n) - std::log2((double)kRows[i]));
        const double weight = kLearnRate * (0.85 + 0.15 * std::exp(-distance));
        table[i] *= std::exp(weight * log_ratio);
    }
}

void cost_model::observe_overhead(double seconds) {
    if (!adapt || !(seconds >= 0.0)) return;
    // A pause of the caller (a slow client, a prompt typed) is not a cost of
    // steps: at most a few row-1 forwards count.
    const double capped = std::min(seconds, 4.0 * causal[0]);
    step_overhead += kLearnRate * (capped - step_overhead);
}

void calibrate(context& ctx, double max_seconds) {
    const double start = steady_seconds();
    const int32_t kept = ctx.cache.n_cached();
    const int32_t n_vocab = ctx.mdl.hp.n_vocab;
    auto filler = [&](int32_t n, int32_t salt) {
        std::vector<int32_t> t((size_t)n);
        for (int32_t i = 0; i < n; ++i) t[i] = (int32_t)((7919u * (uint32_t)(i + salt) + 13u) % (uint32_t)n_vocab);
        if (ctx.mdl.hp.mask_token_id >= 0)
            for (int32_t& x : t)
                if (x == ctx.mdl.hp.mask_token_id) x = (x + 1) % n_vocab;
        return t;
    };
    std::vector<float> logits;
    try {
        if (kept == 0 && ctx.cache.capacity() >= 16 + 2) {  // a short cache to attend over
            const std::vector<int32_t> t = filler(16, 0);
            forward(ctx, t.data(), row_layout::causal(0, 16), logits_rows::none, nullptr);
        }
        const int32_t base = ctx.cache.n_cached();
        const int32_t room = ctx.cache.capacity() - base;
        const bool lora = ctx.mdl.drafter != nullptr;
        auto timed = [&](bool is_draft, int32_t n) {
            const std::vector<int32_t> t = filler(n, n);
            logits.resize((size_t)n * (size_t)n_vocab);
            const row_layout layout = is_draft ? row_layout::bidirectional(base, n, lora) : row_layout::causal(base, n);
            const double t0 = steady_seconds();
            forward(ctx, t.data(), layout, logits_rows::all, logits.data());
            const double dt = steady_seconds() - t0;
            ctx.truncate(base);
            return dt;
        };
        constexpr double kUnset = -1.0;
        std::array<double, cost_model::kSizes> causal_s, draft_s;
        causal_s.fill(kUnset);
        draft_s.fill(kUnset);
        timed(false, 1);  // warm-up: first touch of weights and scratch
        // Rising sizes, then again while time is left (the minimum counts).
        // A draft is timed at every size of the first pass up to 8 rows, so
        // its ratio to the causal forward is known where drafts are drawn.
        for (int pass = 0; pass < 16; ++pass) {
            bool any = false;
            for (int i = 0; i < cost_model::kSizes; ++i) {
                const int32_t n = cost_model::kRows[i];
                if (n > room || steady_seconds() - start > max_seconds) break;
                const double c = timed(false, n);
                causal_s[i] = causal_s[i] == kUnset ? c : std::min(causal_s[i], c);
                any = true;
                if (n >= 2 && (n <= 8 || pass > 0) && steady_seconds() - start <= max_seconds) {
                    const double d = timed(true, n);
                    draft_s[i] = draft_s[i] == kUnset ? d : std::min(draft_s[i], d);
                }
            }
            if (!any || steady_seconds() - start > max_seconds) break;
        }
        ctx.truncate(kept);
        cost_model cm;
        // Unmeasured rows: the line through the last two measured (at least
        // proportional growth past the last one when only one was).
        int last = -1;
        for (int i = 0; i < cost_model::kSizes; ++i)
            if (causal_s[i] != kUnset) last = i;
        if (last < 0) return;  // no room to time anything: keep the guess
        for (int i = 0; i < cost_model::kSizes; ++i) {
            if (causal_s[i] != kUnset) {
                cm.causal[i] = causal_s[i];
                continue;
            }
            const double x = cost_model::kRows[i];
            if (last == 0) {
                cm.causal[i] = causal_s[0] * (1.0 + 0.05 * (x - 1.0));
            } else {
                const double x0 = cost_model::kRows[last - 1], x1 = cost_model::kRows[last];
                const double slope = std::max(0.0, (causal_s[last] - causal_s[last - 1]) / (x1 - x0));
                cm.causal[i] = causal_s[last] + slope * (x - x1);
            }
        }
        // Drafts: their measured ratio to the causal forward, carried to the
        // rows not timed (the ratio of the nearest timed size below).
        double ratio = 1.05;
        for (int i = 0; i < cost_model::kSizes; ++i) {
            if (draft_s[i] != kUnset && cm.causal[i] > 0.0) ratio = draft_s[i] / cm.causal[i];
            cm.draft[i] = draft_s[i] != kUnset ? draft_s[i] : cm.causal[i] * ratio;
        }
        cm.draft[0] = cm.causal[0] * (cm.draft[1] / cm.causal[1]);  // never used: a draft has >= 2 rows
        cm.step_overhead = ctx.costs.step_overhead;
        cm.measured = true;
        cm.adapt = true;
        ctx.costs = cm;
    } catch (...) {
        ctx.truncate(kept);
        throw;
    }
}

}  // namespace nld
