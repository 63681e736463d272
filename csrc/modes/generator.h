// generator.h: one generation over a context, stepped by the caller
// (DESIGN.md "Data flow"). The rules of every mode are docs/generation.md;
// the mode drivers (ar.cpp, diffusion.cpp, speculative.cpp) implement them on
// the helpers below and never touch model internals.
//
// A generation is a planner: plan() says which forward it needs next (rows,
// layout, logits) and take() hands it that forward's logits. step() runs
// plan/forward/take until one step of the mode is done; the scheduler
// (scheduler.h) instead collects the plans of many generations, runs them as
// one batched forward and hands each its rows. Both give the same tokens.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "context.h"
#include "sampling.h"

namespace nld {

// automatic: an AR step or a linear speculation round, whichever the cost
// model and the drafts' acceptance say is faster (auto.cpp).
// infill: the caller's canvas of known tokens and masks, denoised (infill.cpp).
enum class gen_mode { ar, diffusion, spec_linear, spec_quadratic, automatic, infill };
// Where a generation is between forwards.
enum class gen_phase { start, prefill, decode, denoise, commit, draft, verify, first_draft, round, done };

// The forward a generation needs next.
struct forward_request {
    std::vector<int32_t> tokens;
    row_layout layout;
    logits_rows rows = logits_rows::none;
};
enum class finish_reason { none = 0, stop = 1, length = 2, context = 3, cancelled = 4 };

struct generate_params {
    gen_mode mode = gen_mode::ar;
    int32_t max_new_tokens = 0;
    int32_t block_length = 0;        // resolved: > 0
    float threshold = 0.0f;          // resolved: in [0, 1]
    sampling_params sampling;
    std::vector<int32_t> stop_tokens;  // the model EOS plus the caller's
    int32_t max_thinking_tokens = -1;  // < 0: no thinking budget
    int32_t think_end_token = -1;
    bool use_lora = true;            // drafts use the drafter LoRA when loaded
    bool adaptive_block = false;     // spec_linear: the draft length chosen per round in [2, block_length]
    std::vector<int32_t> canvas;     // infill: known tokens and mask ids (max_new_tokens = its size, no stops)
};

class generator {
public:
    // Validates nothing: api.cpp resolves and checks params.
    generator(context& ctx, std::vector<int32_t> prompt, const generate_params& params);

    // One step of the mode (an AR token, a denoise pass, a speculation
    // round). Tokens emitted by it are in new_tokens. No-op once finished.
    void step();

    // The next forward of the current step into req; false when the step
    // ended without one (finished, cancelled, no room in the cache). A
    // prompt is prefilled in chunks of at most max_prefill_rows rows.
    bool plan(forward_request& req, int32_t max_prefill_rows);
    // The logits of the planned forward (rows as planned). True when that
    // forward finished the step.
    bool take(const float* logits);
    bool in_step() const { return in_step_; }
    // Whether the next forward is a chunk of the prompt prefill.
    bool awaiting_prefill() const {
        return !finished() && (phase_ == gen_phase::start || phase_ == gen_phase::prefill);
    }
    // Whether the forward planned last is a prompt prefill chunk.
    bool planned_prefill() const { return phase_ == gen_phase::prefill; }
    void cancel() { cancel_requested_.store(true); }

    // After an error inside a step: ends the generation and drops any cache
    // rows past what was emitted or prompted.
    void fail();

    bool finished() const { return finish_ != finish_reason::none; }
    finish_reason finish() const { return finish_; }

    std::vector<int32_t> new_tokens;  // emitted by the last step
    std::vector<int32_t> output;      // everything emitted so far
    std::vector<int32_t> canvas;      // block modes: the current block (mask id where masked)
    std::vector<int32_t> accepted;    // speculation: accepted drafts per round
    bool accepted_this_step = false;  // the last step ran a speculation round
    int64_t n_forwards = 0;
    int64_t n_ar_steps = 0;           // auto: steps that were AR steps (the prefill's token not counted)
    int32_t last_round_k = 0;         // draft length of the last step's linear round; 0: none

    // -- for the mode drivers --------------------------------------------
    // Plans the next chunk of the causal prefill of the prompt, reusing the
    // cached prefix it shares (first call); the last chunk asks for the last
    // row's logits. Planning again before the take plans the same chunk.
    // prefill_done() is true once the last chunk was taken.
    void plan_prefill(forward_request& req, int32_t max_rows);
    bool prefill_done() const { return prefill_next_ == (int32_t)prompt_.size(); }
    // Plans a forward over rows laid out as asked.
    static void plan_rows(forward_request& req, const std::vector<int32_t>& tokens, row_layout layout,
                          logits_rows rows);
    // Block modes: the forward over block_ at the cache's end: in phase
    // commit the causal pass that writes it (last row's logits), else a
    // bidirectional denoise pass (every row's logits).
    void plan_block_pass(forward_request& req) const;
    // The buffer the planned forward's logits go to (rows x n_vocab).
    float* logits_buffer(const forward_request& req);
    // Appends t to the output; sets finish on a stop token or the budget.
    // Returns true while generation goes on.
    bool emit(int32_t t);
    bool is_stop(int32_t t) const;
    bool cancel_requested() const { return cancel_requested_.load(); }
    void set_finish(finish_reason r) { if (finish_ == finish_reason::none) finish_ = r; }
    // Block modes: fills the masked indices of block with choices over
    // logits rows; threshold > 0 commits the best one and those at or above
    // it, threshold 0 commits `fixed_count` in confidence order. Returns how
    // many were committed.
    int32_t commit_confident(std::vector<int32_t>& block, const float* logits, float threshold, int32_t fixed_count);
    // Emits block_ from block_emitted_ up to its first mask (block modes'
    // decided prefix, streamed as it grows). False once generation ended.
    bool emit_decided_prefix() {
        while (block_emitted_ < (int32_t)block_.size() && block_[block_emitted_] != mask_id())
            if (!emit(block_[block_emitted_++])) return false;
        return true;
    }
    int32_t mask_id() const { return ctx_.mdl.hp.mask_token_id; }
    int32_t n_vocab() const { return ctx_.mdl.hp.n_vocab; }
    bool block_fits() const { return ctx_.cache.n_cached() + params_.block_length <= ctx_.cache.capacity(); }

    context& ctx_;
    std::vector<int32_t> prompt_;
    generate_params params_;
    sampler sampler_;
    std::atomic<bool> cancel_requested_{false};
    finish_reason finish_ = finish_reason::none;
    bool in_step_ = false;
    size_t rounds_before_ = 0;        // accepted.size() when the step began
    gen_phase phase_ = gen_phase::start;
    int32_t prefill_next_ = -1;       // the next prompt index to prefill (-1: not begun)
    int32_t prefill_end_ = 0;         // end of the chunk planned last (taken: prefill_next_ moves there)
    int32_t planned_cached_ = 0;      // n_cached when the last forward was planned
    std::vector<float> logits_;

    // Mode state.
    int32_t seed_ = -1;             // block modes: the token at block index 0
    std::vector<int32_t> block_;    // diffusion: the block being denoised; linear: the draft; quadratic: the next draft
    int32_t block_pass_ = 0;        // diffusion: denoise passes in this block
    int32_t block_emitted_ = 0;     // diffusion: block indices already emitted
    int32_t infill_next_ = 0;       // infill: canvas index of the current block
    int32_t infill_masks_ = 0;      // infill: masks of the current block when it began
    int32_t round_k_ = 0;           // linear: the draft length of the round in progress
    int32_t ar_run_ = 0;            // auto: AR steps since the last round
    int32_t probe_interval_ = 32;   // auto: AR steps in a row before a probe round
    int32_t batch_rows_hint_ = 0;   // rows of the scheduler's forward planned before this one
    double last_step_end_ = -1.0;   // steady-clock seconds at the end of the last step
};

// The draft length of the next linear round by the cost model (auto.cpp);
// 0: an AR step (only when allow_ar).
int32_t choose_draft_length(generator& g, bool allow_ar);

}  // namespace nld
