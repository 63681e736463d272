// scheduler.h: continuous batching (docs/batching.md). Many generations, each
// on its own context of one model, advance together: every step collects
// each generation's next forward (any mode), runs them as one batched
// forward (forward_batch) and hands each its logits. A generation's tokens
// are those it gives when stepped alone.
//
// Policy of a step, with R = max_rows:
// 1. Order: generations whose planned forward was left out of earlier steps
//    first (longest wait first), then the rest in a rotating order (the
//    first place moves by one each step), so every generation leads in turn.
// 2. Decode-side forwards (AR tokens, denoise and commit passes, drafts,
//    verifies) are taken in that order while their rows fit in R; one that
//    does not fit waits (planned) for a later step, unless nothing was taken
//    yet, then it runs alone, so no forward is ever too big to run.
// 3. Prompt prefills share what is left: each takes a chunk of at most
//    max_prefill_rows rows and at most the rows left, in the same order;
//    a long prompt is prefilled over several steps while the others decode.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "context.h"
#include "include/nld.h"
#include "modes/generator.h"

namespace nld {

struct scheduler_params {
    int32_t n_threads = 0;
    int32_t max_rows = 512;          // rows of one batched forward (llama.cpp's n_batch)
    int32_t max_prefill_rows = 512;  // rows of one prompt chunk (llama.cpp's n_ubatch)
};

struct scheduler_stats {
    int64_t n_steps = 0;              // steps that ran a forward
    int64_t n_rows = 0;               // rows over all forwards
    int64_t n_sequence_forwards = 0;  // sequences over all forwards (a forward of 3 counts 3)
    int64_t n_batched_forwards = 0;   // forwards that held two or more sequences
    int64_t n_prefill_rows = 0;       // prompt rows among n_rows
    int32_t max_sequences = 0;        // the most sequences one forward held
};

// A generation whose step ended in this scheduler step (or that failed).
struct scheduled_result {
    generator* gen;
    nld_status status;  // NLD_OK, or why it failed: it has then ended
    std::string message;
};

class scheduler {
public:
    scheduler(const model& m, const scheduler_params& p);

    const model& mdl() const { return mdl_; }
    // Starts stepping g. Throws if g runs on another model, or its context
    // already has a generation here.
    void add(generator* g);
    // Stops stepping g (no-op if it is not here). A forward it planned and
    // that did not run yet is dropped; plan it again by stepping it.
    void remove(generator* g);
    bool contains(const generator* g) const;
    int32_t size() const { return (int32_t)seqs_.size(); }

    // One batched forward over what the policy takes. Returns the
    // generations whose step ended, in order; finished (or failed) ones have
    // left the scheduler. Valid until the next step.
    const std::vector<scheduled_result>& step();
    const scheduler_stats& stats() const { return stats_; }
    // Activations held for the batched forwards: grown to the largest batch
    // so far (rows, and rows with logits), then reused.
    size_t scratch_bytes() const { return scratch_.bytes(); }

private:
    struct entry {
        generator* gen;
        forward_request req;
        bool planned = false;  // req holds a planned forward that has not run
        int64_t waited = 0;    // steps its planned forward was left out of
    };

    // Plans e's next forward (chunked to max_prefill rows for a prompt).
    // False when its step ended without one (reported) or it failed.
    bool plan_entry(entry& e, int32_t max_prefill);
    void report(generator* g, nld_status status, const std::string& message);

    const model& mdl_;
    scheduler_params params_;
    threadpool pool_;
    forward_scratch scratch_;
    std::vector<entry> seqs_;
    size_t rotation_ = 0;
    std::vector<scheduled_result> results_;
    scheduler_stats stats_;
};

}  // namespace nld
