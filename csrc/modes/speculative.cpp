// speculative.cpp: self-speculation (docs/generation.md). Diffusion drafts a
// block with the drafter LoRA on, a causal pass with it off verifies the
// block, and the longest matching prefix plus one correction token is kept.
// Linear: draft and verify are separate forwards. Quadratic: one forward
// verifies the current draft and pre-drafts the next block for every
// acceptance length (design in docs/generation.md).
#include <algorithm>

#include "modes/generator.h"

namespace nld {

namespace {

bool drafts_use_lora(const generator& g) { return g.params_.use_lora && g.ctx_.mdl.drafter != nullptr; }

// The prefill's choice, with the LoRA off: the first token is the AR
// prediction; nfe = 1.
void take_start(generator& g, const float* logits) {
    g.seed_ = g.sampler_.choose(logits);
    g.n_forwards = 1;
    g.emit(g.seed_);
}

// Verifies `block` from the causal logits over it: accepts drafts while the
// model's own choice equals them, then emits those choices (m drafts plus
// the correction or bonus), keeps block[0..m] in the cache and sets the next
// seed ar[m]. Draws are taken in index order, up to the first mismatch.
void accept_and_emit(generator& g, const std::vector<int32_t>& block, const float* verify_logits, int32_t C) {
    const int32_t B = (int32_t)block.size();
    std::vector<int32_t> ar;
    for (int32_t i = 0; i < B; ++i) {
        ar.push_back(g.sampler_.choose(verify_logits + (size_t)i * g.n_vocab()));
        if (i == B - 1 || ar[i] != block[i + 1]) break;
    }
    const int32_t m = (int32_t)ar.size() - 1;
    g.accepted.push_back(m);
    g.seed_ = ar[m];
    // The cache keeps block[0..k] for the k+1 tokens emitted (ar[i] ==
    // block[i+1] below m); an EOS or the budget may cut before m.
    int32_t n_emitted = 0;
    for (int32_t t : ar) {
        ++n_emitted;
        if (!g.emit(t)) break;
    }
    g.ctx_.truncate(C + n_emitted);
}

}  // namespace

// A round: draft passes on [seed, M x (B-1)] (no cache write; threshold 0
// fills every mask at once), then one causal verify pass.
bool plan_spec_linear(generator& g, forward_request& req) {
    const int32_t C = g.ctx_.cache.n_cached();
    if (g.phase_ != gen_phase::draft && g.phase_ != gen_phase::verify) {  // a new round
        if (g.params_.mode == gen_mode::spec_linear)  // auto chose round_k_ already
            g.round_k_ = g.params_.adaptive_block ? choose_draft_length(g, false) : g.params_.block_length;
        if (g.round_k_ < 2 || C + g.round_k_ > g.ctx_.cache.capacity()) {
            g.set_finish(finish_reason::context);
            return false;
        }
        g.block_.assign((size_t)g.round_k_, g.mask_id());
        g.block_[0] = g.seed_;
        g.phase_ = gen_phase::draft;
    }
    const int32_t B = g.round_k_;
    if (g.phase_ == gen_phase::draft && std::find(g.block_.begin(), g.block_.end(), g.mask_id()) == g.block_.end())
        g.phase_ = gen_phase::verify;
    if (g.phase_ == gen_phase::draft) {
        if (g.cancel_requested()) {
            g.set_finish(finish_reason::cancelled);
            return false;
        }
        generator::plan_rows(req, g.block_, row_layout::bidirectional(C, B, drafts_use_lora(g)), logits_rows::all);
    } else {
        g.canvas = g.block_;
        generator::plan_rows(req, g.block_, row_layout::causal(C, B), logits_rows::all);
    }
    return true;
}

bool take_spec_linear(generator& g, const float* logits) {
    if (g.phase_ == gen_phase::prefill) {
        take_start(g, logits);
        g.phase_ = gen_phase::round;
        return true;
    }
    g.n_forwards += 1;
    if (g.phase_ == gen_phase::draft) {
        const int32_t fill_all = g.params_.block_length;
        g.commit_confident(g.block_, logits, g.params_.threshold, fill_all);
        return false;  // more drafts or the verify pass, in the same step
    }
    accept_and_emit(g, g.block_, logits, g.planned_cached_);
    g.last_round_k = g.round_k_;
    // Drafts past an EOS or the budget were never needed: what the round
    // emitted counts (the seed came in an earlier step).
    const int32_t used = std::min<int32_t>(g.accepted.back(), (int32_t)g.new_tokens.size() - 1);
    g.ctx_.acceptance.record(g.round_k_, used, used < g.accepted.back());
    g.phase_ = gen_phase::round;
    return true;
}

// The first draft of quadratic speculation comes from one plain draft pass.
// Then one forward of B + B*B rows per round: rows [0, B) are the current
// draft, causal, LoRA off, committed to the cache; group m (rows B + m*B ..
// B + (m+1)*B) is a block of masks at positions C+m+1 .. C+m+B that sees the
// cache, draft rows 0..m and itself (bidirectional), with the LoRA on. After
// verifying, group m of the accepted length m predicts the next block: its
// row 0 is replaced by the correction token ar[m], rows 1.. are the next
// drafts.
bool plan_spec_quadratic(generator& g, forward_request& req) {
    const int32_t B = g.params_.block_length, C = g.ctx_.cache.n_cached();
    if (g.phase_ == gen_phase::round) {  // a new round
        if (!g.block_fits()) {
            g.set_finish(finish_reason::context);
            return false;
        }
        if (g.block_.empty()) {
            g.block_.assign((size_t)B, g.mask_id());
            g.block_[0] = g.seed_;
            g.phase_ = gen_phase::first_draft;
        } else {
            g.phase_ = gen_phase::verify;
        }
    }
    if (g.phase_ == gen_phase::first_draft) {
        generator::plan_rows(req, g.block_, row_layout::bidirectional(C, B, drafts_use_lora(g)), logits_rows::all);
        return true;
    }
    row_layout layout = row_layout::causal(C, B);
    std::vector<int32_t> tokens = g.block_;
    for (int32_t m = 0; m < B; ++m) {
        for (int32_t j = 0; j < B; ++j) {
            tokens.push_back(g.mask_id());
            layout.positions.push_back(C + m + 1 + j);
            layout.see_prefix.push_back(m + 1);
            layout.group_lo.push_back(B + m * B);
            layout.group_hi.push_back(B + (m + 1) * B);
        }
    }
    layout.lora_from = drafts_use_lora(g) ? B : (int32_t)tokens.size();
    layout.n_commit = B;
    g.phase_ = gen_phase::verify;
    generator::plan_rows(req, tokens, std::move(layout), logits_rows::all);
    return true;
}

bool take_spec_quadratic(generator& g, const float* logits) {
    const int32_t B = g.params_.block_length;
    if (g.phase_ == gen_phase::prefill) {
        take_start(g, logits);
        g.phase_ = gen_phase::round;
        return true;
    }
    g.n_forwards += 1;
    if (g.phase_ == gen_phase::first_draft) {
        g.commit_confident(g.block_, logits, 0.0f, B);
        if (g.cancel_requested()) {
            g.set_finish(finish_reason::cancelled);
            return true;
        }
        g.phase_ = gen_phase::verify;  // the round's forward follows in the same step
        return false;
    }
    g.canvas = g.block_;
    const std::vector<int32_t> draft = g.block_;
    accept_and_emit(g, draft, logits, g.planned_cached_);
    g.last_round_k = B;
    const int32_t m = g.accepted.back();
    // The next draft: [ar[m], predictions of group m at indices 1..B-1].
    g.block_.assign((size_t)B, g.mask_id());
    g.block_[0] = g.seed_;
    const float* group = logits + (size_t)(B + m * B) * g.n_vocab();
    for (int32_t j = 1; j < B; ++j) g.block_[j] = g.sampler_.choose(group + (size_t)j * g.n_vocab());
    g.phase_ = gen_phase::round;
    return true;
}

}  // namespace nld
