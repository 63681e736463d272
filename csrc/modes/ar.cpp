// ar.cpp: autoregressive generation (docs/generation.md "AR"): one token per
// step; nfe counts emitted tokens (the prefill produced the first).
#include "modes/generator.h"

namespace nld {

bool plan_ar(generator& g, forward_request& req) {
    if (g.ctx_.cache.n_cached() >= g.ctx_.cache.capacity()) {
        g.set_finish(finish_reason::context);
        return false;
    }
    g.phase_ = gen_phase::decode;
    generator::plan_rows(req, {g.output.back()}, row_layout::causal(g.ctx_.cache.n_cached(), 1), logits_rows::last);
    return true;
}

bool take_ar(generator& g, const float* logits) {
    g.n_forwards += 1;
    g.emit(g.sampler_.choose(logits));
    g.phase_ = gen_phase::decode;
    return true;
}

}  // namespace nld
