// ar.cpp: autoregressive generation (docs/generation.md "AR"): one token per
// step; nfe counts emitted tokens (the prefill produced the first).
#include "modes/generator.h"

namespace nld {

void step_ar(generator& g) {
    const float* logits;
    if (!g.started_) {
        g.started_ = true;
        logits = g.prefill();
    } else {
        if (g.ctx_.cache.n_cached() >= g.ctx_.cache.capacity()) {
            g.set_finish(finish_reason::context);
            return;
        }
        const int32_t last = g.output.back();
        logits = g.run({last}, row_layout::causal(g.ctx_.cache.n_cached(), 1), logits_rows::last);
    }
    g.n_forwards += 1;
    g.emit(g.sampler_.choose(logits));
}

}  // namespace nld
