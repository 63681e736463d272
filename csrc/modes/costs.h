// costs.h: what forwards cost on this machine, for mode "auto" and the
// adaptive draft length (docs/generation.md "Auto"). The seconds of a causal
// forward (an AR step, a verify pass) and of a draft forward (bidirectional,
// drafter LoRA) at a few row counts, plus the time a step spends outside its
// forwards (sampling, the caller between steps). Measured once by
// calibrate(), or set by the caller; then, unless frozen, corrected from the
// forwards a generation runs.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

namespace nld {

struct context;

struct cost_model {
    static constexpr int kSizes = 6;
    static constexpr std::array<int32_t, kSizes> kRows = {1, 2, 4, 8, 16, 32};

    // Seconds at kRows. The guess before any measurement: 1 ms a row-1
    // forward, 5% more per extra row, drafts 5% dearer.
    std::array<double, kSizes> causal{};
    std::array<double, kSizes> draft{};
    double step_overhead = 0.0;  // seconds a step spends outside its forwards
    bool adapt = true;           // real forwards correct the table
    bool measured = false;       // calibrated or set by the caller

    cost_model();

    // Seconds of a forward of n rows (n >= 1), interpolated between the
    // table's rows and extrapolated past 32 along the last segment.
    double predict(bool is_draft, int32_t n) const;
    // A real forward of n rows took seconds: moves the table toward it (in
    // log space, the nearest rows most, every row some).
    void observe(bool is_draft, int32_t n, double seconds);
    void observe_overhead(double seconds);
};

// What drafts of linear self-speculation earned on a context: per draft
// position i >= 1, the rounds whose drafts 1..i-1 were all accepted and that
// had a draft at i (tried), and those that accepted it too (passed). Decayed
// per round, so the recent text weighs most; a generation starts from the
// counts its context's earlier ones left, scaled down to a prior.
struct draft_acceptance {
    std::vector<double> tried, passed;  // index 0 unused
    double tokens = 0.0, stops = 0.0;   // tokens emitted, and those that ended a generation (EOS, stop id)

    // A round of draft length k (k-1 drafts) that accepted m of them; cut:
    // the generation ended inside the round (an EOS, the budget), so the
    // drafts past m were not tried.
    void record(int32_t k, int32_t m, bool cut);
    // The counts scaled down to at most `trials` trials in all, and the
    // token counts to at most `emitted` tokens.
    void cap(double trials, double emitted);
    // P(a token ends the generation): stops over tokens, with a prior of
    // one stop in kPriorTokens.
    double stop_rate() const { return (stops + 1.0) / (tokens + kPriorTokens); }
    // The acceptance rate over all positions, shrunk toward kPriorP.
    double pooled() const;
    // P(draft i accepted | drafts 1..i-1 accepted), shrunk toward pool.
    double conditional(int32_t i, double pool) const;
    // Expected accepted drafts of a round of draft length k; optimistic:
    // every draft accepted at kPriorP (a probe's assumption).
    double expected_accepted(int32_t k, bool optimistic) const;

    static constexpr double kPriorP = 0.8;     // drafts before any were seen: a probe's hope
    static constexpr double kPriorWeight = 2.0;
    static constexpr double kDecay = 0.95;     // per round
    static constexpr double kPriorTokens = 32.0;
};

// Seconds on the steady clock (the timings the cost model learns from).
double steady_seconds();

// Times causal and draft forwards of kRows rows over the context's cache
// (16 filler tokens first when it is empty), within about max_seconds; rows
// not reached in time are extrapolated from the last two measured. The
// cache is left as it was. Installs the result in ctx.costs (adapting).
void calibrate(context& ctx, double max_seconds);

}  // namespace nld
