// context.h: one sequence being evaluated against a model: the shared KV
// cache, the tokens it holds, the thread pool and the scratch activations.
// Used by one thread at a time.
#pragma once

#include <cstdint>
#include <vector>

#include "backend/cpu/threadpool.h"
#include "kv_cache.h"
#include "model.h"
#include "modes/costs.h"

namespace nld {

enum class logits_rows { none, last, all };

// Which keys each new row of a forward attends to, at which position it
// sits, and what the pass keeps. Row r sees the whole cache [0, C), the new
// rows [0, see_prefix[r]) and the new rows [group_lo[r], group_hi[r]).
// Causal pass: see_prefix = r+1, no group. Bidirectional block: see_prefix =
// 0, group = all rows. Quadratic speculation mixes both (docs/generation.md).
struct row_layout {
    std::vector<int32_t> positions;   // (n) absolute positions
    std::vector<int32_t> see_prefix;  // (n)
    std::vector<int32_t> group_lo;    // (n)
    std::vector<int32_t> group_hi;    // (n)
    int32_t lora_from = 0;  // rows >= lora_from add the drafter LoRA (n: none)
    int32_t n_commit = 0;   // leading rows appended to the cache after the pass

    int32_t size() const { return (int32_t)positions.size(); }
    // n causal rows after C cached tokens, committed, no LoRA.
    static row_layout causal(int32_t first_pos, int32_t n);
    // A bidirectional block of n rows after C cached tokens: reads the cache,
    // commits nothing; with_lora turns the drafter on for every row.
    static row_layout bidirectional(int32_t first_pos, int32_t n, bool with_lora);
};

// Activations of one forward over n tokens (grown on demand, reused).
struct forward_scratch {
    std::vector<float> hidden;     // (n, n_embd) residual stream
    std::vector<float> normed;     // (n, n_embd)
    std::vector<float> q;          // (n, n_head*head_dim)
    std::vector<float> k;          // (n, n_head_kv*head_dim)
    std::vector<float> v;          // (n, n_head_kv*head_dim)
    std::vector<float> k_seen;     // (n, n_head_kv*head_dim) k and v as a lossy cache gives them back
    std::vector<float> v_seen;
    std::vector<float> attn;       // (n, n_head*head_dim)
    std::vector<float> proj;       // (n, n_embd)
    std::vector<float> lora_mid;   // (n, lora rank)
    std::vector<float> gate;       // (n, n_ff)
    std::vector<float> up;         // (n, n_ff)
    std::vector<float> logits;     // (logits rows, n_vocab) of a batch of several sequences

    // Bytes held: the high-water mark of the forwards run on it so far.
    size_t bytes() const {
        size_t n = 0;
        for (const std::vector<float>* vec :
             {&hidden, &normed, &q, &k, &v, &k_seen, &v_seen, &attn, &proj, &lora_mid, &gate, &up, &logits})
            n += vec->capacity();
        return n * sizeof(float);
    }
};

struct context {
    context(const model& m, int32_t n_ctx, int32_t n_threads, kv_type type_k = kv_type::f32,
            kv_type type_v = kv_type::f32);

    // Drops cached tokens from position n_keep on (cache and token list).
    void truncate(int32_t n_keep) {
        cache.truncate(n_keep);
        tokens.resize((size_t)n_keep);
    }

    const model& mdl;
    kv_cache cache;
    threadpool pool;
    std::vector<int32_t> tokens;  // the committed tokens, one per cached position
    forward_scratch scratch;
    cost_model costs;             // what its forwards cost (mode auto)
    draft_acceptance acceptance;  // what its speculation drafts earned so far
};

// One sequence's share of a forward: its context, new tokens, their layout
// and the logits it wants (rows x n_vocab into logits_out).
struct forward_part {
    context* ctx;
    const int32_t* tokens;
    const row_layout* layout;
    logits_rows rows;
    float* logits_out;
};

// One forward pass (forward.cpp) over the new rows of n_parts sequences, each
// on its own context of the same model: every weight matrix is applied once
// to all rows, attention runs per sequence over that sequence's cache and
// rows, and each part's first layout.n_commit rows join its cache. No row
// reads another's values, so each part's results are those of a forward of
// that part alone, bit for bit. Runs on pool with scratch as activations.
void forward_batch(threadpool& pool, forward_scratch& scratch, const forward_part* parts, int32_t n_parts);

// One forward of one sequence, on its context's pool and scratch.
void forward(context& ctx, const int32_t* tokens, const row_layout& layout, logits_rows rows, float* logits_out);

}  // namespace nld
