// diffusion.cpp: block diffusion with confidence commit (docs/generation.md
// "Block diffusion"). A step is one denoise pass; the step that finishes a
// block also runs the causal commit pass that writes it to the cache and
// yields the next seed. Decided indices at the front of the block are
// emitted as soon as they are contiguous, so streaming shows text early, and
// an EOS or the budget among them ends the block without further passes.
#include <algorithm>

#include "modes/generator.h"

namespace nld {

namespace {

// Starts a block at the current cache length: [seed, M x (B-1)], with
// </think> placed at the budget position when this block crosses it.
void start_block(generator& g) {
    const int32_t B = g.params_.block_length;
    g.block_.assign((size_t)B, g.mask_id());
    g.block_[0] = g.seed_;
    const int32_t T = g.params_.max_thinking_tokens, E = (int32_t)g.output.size();
    if (T >= 0 && g.params_.think_end_token >= 0 && E <= T && T < E + B &&
        std::find(g.output.begin(), g.output.end(), g.params_.think_end_token) == g.output.end())
        g.block_[T - E] = g.params_.think_end_token;
    g.block_pass_ = 0;
    g.block_emitted_ = 0;
    g.canvas = g.block_;
    g.phase_ = gen_phase::denoise;
    if (!g.emit_decided_prefix()) return;
    if (!g.block_fits()) g.set_finish(finish_reason::context);
}

}  // namespace

bool plan_diffusion(generator& g, forward_request& req) {
    g.plan_block_pass(req);  // block_ holds the B indices of the block
    return true;
}

bool take_diffusion(generator& g, const float* logits) {
    const int32_t B = g.params_.block_length;
    switch (g.phase_) {
    case gen_phase::prefill:  // not counted in nfe: the seed, then the first block
        g.seed_ = g.sampler_.choose(logits);
        start_block(g);
        return true;
    case gen_phase::denoise: {
        g.n_forwards += 1;
        // Fixed schedule (threshold 0): the B-1 masks spread evenly over B
        // passes, remainder first.
        const int32_t fixed = std::max(1, (B - 1) / B + (g.block_pass_ < (B - 1) % B ? 1 : 0));
        g.commit_confident(g.block_, logits, g.params_.threshold, fixed);
        g.block_pass_ += 1;
        g.canvas = g.block_;
        if (!g.emit_decided_prefix()) return true;
        if (g.block_emitted_ < B) return true;  // masks remain: the next step denoises again
        g.phase_ = gen_phase::commit;            // the same step runs the commit pass
        return false;
    }
    default:  // commit: its last row seeds the next block
        g.n_forwards += 1;
        g.seed_ = g.sampler_.choose(logits);
        start_block(g);
        return true;
    }
}

}  // namespace nld
