// context.h: one sequence being evaluated against a model: the shared KV
// cache, the tokens it holds, the thread pool and the scratch activations.
// Used by one thread at a time.
#pragma once

#include <cstdint>
#include <vector>

#include "backend/cpu/threadpool.h"
#include "kv_cache.h"
#include "model.h"

namespace nld {

enum class attention_kind { causal, bidirectional };
enum class logits_rows { none, last, all };

// Activations of one forward over n tokens (grown on demand, reused).
struct forward_scratch {
    std::vector<float> hidden;     // (n, n_embd) residual stream
    std::vector<float> normed;     // (n, n_embd)
    std::vector<float> q;          // (n, n_head*head_dim)
    std::vector<float> k;          // (n, n_head_kv*head_dim)
    std::vector<float> v;          // (n, n_head_kv*head_dim)
    std::vector<float> attn;       // (n, n_head*head_dim)
    std::vector<float> proj;       // (n, n_embd)
    std::vector<float> gate;       // (n, n_ff)
    std::vector<float> up;         // (n, n_ff)
    std::vector<int32_t> positions;  // (n)
};

struct context {
    context(const model& m, int32_t n_ctx, int32_t n_threads);

    const model& mdl;
    kv_cache cache;
    threadpool pool;
    std::vector<int32_t> tokens;  // the committed tokens, one per cached position
    forward_scratch scratch;
};

// One forward pass (forward.cpp). Causal passes commit the new tokens to the
// cache; bidirectional passes leave it as it was. Writes the requested logits
// rows to logits_out (rows x n_vocab).
void forward(context& ctx, const int32_t* tokens, int32_t n, attention_kind kind, logits_rows rows,
             float* logits_out);

}  // namespace nld
