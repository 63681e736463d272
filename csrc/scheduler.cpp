// scheduler.cpp: the step policy of scheduler.h.
#include "scheduler.h"

#include <algorithm>
#include <chrono>
#include <exception>
#include <new>
#include <numeric>

#include "error.h"

namespace nld {

scheduler::scheduler(const model& m, const scheduler_params& p) : mdl_(m), params_(p), pool_(p.n_threads) {
    if (params_.max_rows < 1) fail_argument("max_rows must be >= 1, got " + std::to_string(params_.max_rows));
    if (params_.max_prefill_rows < 1)
        fail_argument("max_prefill_rows must be >= 1, got " + std::to_string(params_.max_prefill_rows));
}

void scheduler::add(generator* g) {
    if (&g->ctx_.mdl != &mdl_) fail_argument("the generator runs on another model than the scheduler's");
    for (const entry& e : seqs_) {
        if (e.gen == g) fail_argument("the generator is already in this scheduler");
        if (&e.gen->ctx_ == &g->ctx_) fail_argument("the generator's context already has a generation in this scheduler");
    }
    seqs_.push_back(entry{g, {}, false, 0});
}

void scheduler::remove(generator* g) {
    seqs_.erase(std::remove_if(seqs_.begin(), seqs_.end(), [g](const entry& e) { return e.gen == g; }), seqs_.end());
}

bool scheduler::contains(const generator* g) const {
    return std::any_of(seqs_.begin(), seqs_.end(), [g](const entry& e) { return e.gen == g; });
}

void scheduler::report(generator* g, nld_status status, const std::string& message) {
    results_.push_back(scheduled_result{g, status, message});
}

// Runs fn for generator g; an exception fails g (its cache keeps only
// committed tokens) and is reported. Returns whether fn ran through.
template <typename Fn>
static bool guarded_for(generator* g, std::vector<scheduled_result>& results, Fn&& fn) {
    nld_status status = NLD_ERR_INTERNAL;
    std::string message;
    try {
        fn();
        return true;
    } catch (const error& e) {
        status = e.status;
        message = e.what();
    } catch (const std::bad_alloc&) {
        status = NLD_ERR_OUT_OF_MEMORY;
        message = "out of memory";
    } catch (const std::exception& e) {
        message = e.what();
    }
    g->fail();
    results.push_back(scheduled_result{g, status, message});
    return false;
}

bool scheduler::plan_entry(entry& e, int32_t max_prefill) {
    if (e.planned) return true;
    bool needed = false;
    if (!guarded_for(e.gen, results_, [&] { needed = e.gen->plan(e.req, max_prefill); })) return false;
    if (!needed) report(e.gen, NLD_OK, "");
    e.planned = needed;
    return needed;
}

const std::vector<scheduled_result>& scheduler::step() {
    results_.clear();
    const size_t n = seqs_.size();
    if (n == 0) return results_;

    // 1. The order: longest-waiting planned forwards first, then rotating.
    std::vector<size_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::rotate(order.begin(), order.begin() + (long)(rotation_ % n), order.end());
    rotation_ = (rotation_ + 1) % n;
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return seqs_[a].waited > seqs_[b].waited; });

    // 2. Decode-side forwards, then 3. prompt chunks in the rows left.
    std::vector<size_t> batch;
    int64_t budget = params_.max_rows;
    for (size_t i : order) {
        entry& e = seqs_[i];
        if (!e.planned && e.gen->awaiting_prefill()) continue;
        if (!e.planned) e.gen->batch_rows_hint_ = (int32_t)(params_.max_rows - budget);  // auto prices rows at the margin
        if (!plan_entry(e, params_.max_prefill_rows)) continue;
        const int64_t rows = (int64_t)e.req.tokens.size();
        if (rows <= budget || batch.empty()) {
            batch.push_back(i);
            budget -= rows;
        }
    }
    for (size_t i : order) {
        entry& e = seqs_[i];
        if (e.planned || !e.gen->awaiting_prefill() || budget <= 0) continue;
        const int32_t chunk = (int32_t)std::min<int64_t>(params_.max_prefill_rows, budget);
        if (!plan_entry(e, chunk)) continue;
        batch.push_back(i);
        budget -= (int64_t)e.req.tokens.size();
    }
    for (size_t i = 0; i < n; ++i)
        if (seqs_[i].planned && std::find(batch.begin(), batch.end(), i) == batch.end()) seqs_[i].waited += 1;

    // The forward, then each generation takes its logits.
    if (!batch.empty()) {
        std::vector<forward_part> parts;
        int64_t rows = 0;
        bool any_prefill = false, all_draft = true;
        for (size_t i : batch) {
            const gen_phase ph = seqs_[i].gen->phase_;
            any_prefill |= seqs_[i].gen->planned_prefill();
            all_draft &= ph == gen_phase::draft || ph == gen_phase::first_draft;
            entry& e = seqs_[i];
            parts.push_back(forward_part{&e.gen->ctx_, e.req.tokens.data(), &e.req.layout, e.req.rows,
                                         e.gen->logits_buffer(e.req)});
            rows += (int64_t)e.req.tokens.size();
            if (e.gen->planned_prefill()) stats_.n_prefill_rows += (int64_t)e.req.tokens.size();
        }
        bool ran = true;
        for (size_t i : batch) seqs_[i].planned = false;
        try {
            const auto t0 = std::chrono::steady_clock::now();
            forward_batch(pool_, scratch_, parts.data(), (int32_t)parts.size());
            const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            // The whole forward's time at its total rows, for each sequence's
            // cost model (a mixed batch counts as causal rows).
            if (!any_prefill)
                for (size_t i : batch) seqs_[i].gen->ctx_.costs.observe(all_draft, (int32_t)rows, dt);
        } catch (...) {  // every sequence of the forward fails with its error
            ran = false;
            const std::exception_ptr ep = std::current_exception();
            for (size_t i : batch) guarded_for(seqs_[i].gen, results_, [&] { std::rethrow_exception(ep); });
        }
        if (ran) {
            stats_.n_steps += 1;
            stats_.n_rows += rows;
            stats_.n_sequence_forwards += (int64_t)batch.size();
            if (batch.size() > 1) stats_.n_batched_forwards += 1;
            stats_.max_sequences = std::max(stats_.max_sequences, (int32_t)batch.size());
            for (size_t i : batch) {
                entry& e = seqs_[i];
                e.waited = 0;
                bool done = false;
                if (!guarded_for(e.gen, results_, [&] { done = e.gen->take(e.gen->logits_.data()); })) continue;
                if (done) report(e.gen, NLD_OK, "");
            }
        }
    }

    // Finished or failed generations leave.
    seqs_.erase(std::remove_if(seqs_.begin(), seqs_.end(), [](const entry& e) { return e.gen->finished(); }),
                seqs_.end());
    return results_;
}

}  // namespace nld
