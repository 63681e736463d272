// infill.cpp: span infilling (docs/generation.md "Infill"). The caller's
// canvas (known tokens and masks, in any pattern) follows the prompt; it is
// denoised block by block with diffusion's confidence-commit rule, known
// tokens never changed. Each block attends to the cached prefix and, both
// ways, to itself, so the text after a gap is seen when it lies in the gap's
// block. A step is one denoise pass; the step that finishes a block that is
// not the last also runs the causal commit pass that writes it to the cache
// and yields the choice for a mask at the next block's index 0.
#include <algorithm>

#include "modes/generator.h"

namespace nld {

namespace {

// The next block of the canvas at the current cache length; a mask at its
// index 0 takes `seed` (the causal choice there, as diffusion's seed).
void start_infill_block(generator& g) {
    const std::vector<int32_t>& canvas = g.params_.canvas;
    const int32_t B = g.params_.block_length, from = g.infill_next_;
    const int32_t to = std::min<int32_t>(from + B, (int32_t)canvas.size());
    g.block_.assign(canvas.begin() + from, canvas.begin() + to);
    if (g.block_[0] == g.mask_id()) g.block_[0] = g.seed_;
    g.infill_masks_ = (int32_t)std::count(g.block_.begin(), g.block_.end(), g.mask_id());
    g.block_pass_ = 0;
    g.block_emitted_ = 0;
    g.canvas = g.block_;
    g.emit_decided_prefix();
    const bool last = to == (int32_t)canvas.size();
    g.phase_ = g.infill_masks_ > 0 ? gen_phase::denoise : last ? gen_phase::done : gen_phase::commit;
}

}  // namespace

bool plan_infill(generator& g, forward_request& req) {
    if (g.phase_ == gen_phase::done) return false;
    g.plan_block_pass(req);
    return true;
}

bool take_infill(generator& g, const float* logits) {
    const int32_t L = (int32_t)g.block_.size();
    switch (g.phase_) {
    case gen_phase::prefill:  // not counted in nfe: the choice at the canvas's index 0
        g.seed_ = g.sampler_.choose(logits);
        g.infill_next_ = 0;
        start_infill_block(g);
        return true;
    case gen_phase::denoise: {
        g.n_forwards += 1;
        // Fixed schedule (threshold 0): the block's masks spread evenly over
        // L passes, remainder first (diffusion's schedule for an all-mask block).
        const int32_t m = g.infill_masks_;
        const int32_t fixed = std::max(1, m / L + (g.block_pass_ < m % L ? 1 : 0));
        g.commit_confident(g.block_, logits, g.params_.threshold, fixed);
        g.block_pass_ += 1;
        g.canvas = g.block_;
        g.emit_decided_prefix();
        if (std::find(g.block_.begin(), g.block_.end(), g.mask_id()) != g.block_.end()) return true;
        const bool last = g.infill_next_ + L == (int32_t)g.params_.canvas.size();
        g.phase_ = last ? gen_phase::done : gen_phase::commit;  // not last: the same step commits it
        return last;
    }
    default:  // commit: its last row is the choice at the next block's index 0
        g.n_forwards += 1;
        g.seed_ = g.sampler_.choose(logits);
        g.infill_next_ += L;
        start_infill_block(g);
        return true;
    }
}

}  // namespace nld
