// forward.cpp: the Ministral-3 / NLD forward pass (spec/nld-model.md section
// 4), one function over the CPU ops, intermediates named as in the spec so
// they can be dumped and compared with PyTorch.
#include <cmath>
#include <string>

#include "context.h"
#include "error.h"

namespace nld {

context::context(const model& m, int32_t n_ctx, int32_t n_threads)
    : mdl(m), cache(m.hp.n_layer, n_ctx, m.hp.n_head_kv * m.hp.head_dim), pool(n_threads) {}

void forward(context& ctx, const int32_t* tokens, int32_t n, attention_kind kind, logits_rows rows,
             float* logits_out) {
    const model& m = ctx.mdl;
    const hparams& hp = m.hp;
    const int64_t E = hp.n_embd, HD = hp.head_dim, Q = (int64_t)hp.n_head * HD, KV = (int64_t)hp.n_head_kv * HD;
    const int32_t first_pos = ctx.cache.n_cached();  // C: the new tokens sit at C .. C+n-1
    if (n > ctx.cache.capacity() - first_pos)
        throw error(NLD_ERR_CONTEXT_FULL, "forward of " + std::to_string(n) + " tokens after " +
                                              std::to_string(first_pos) + " cached exceeds n_ctx " +
                                              std::to_string(ctx.cache.capacity()));
    const int64_t n_keys = first_pos + n;
    const bool causal = kind == attention_kind::causal;

    forward_scratch& s = ctx.scratch;
    s.hidden.resize(n * E); s.normed.resize(n * E); s.proj.resize(n * E);
    s.q.resize(n * Q); s.attn.resize(n * Q); s.k.resize(n * KV); s.v.resize(n * KV);
    s.gate.resize(n * hp.n_ff); s.up.resize(n * hp.n_ff); s.positions.resize(n);

    // Query scale of Ministral-3 long context: 1 + beta*ln(1 + floor(pos/L)),
    // applied after RoPE; exactly 1 below L.
    std::vector<float> q_scale(n);
    for (int32_t t = 0; t < n; ++t) {
        s.positions[t] = first_pos + t;
        const double blocks = std::floor((double)s.positions[t] / (double)hp.rope_orig_ctx);
        q_scale[t] = (float)(1.0 + hp.attn_temperature_scale * std::log1p(blocks));
    }

    for (int32_t t = 0; t < n; ++t) weight_row_to_f32(m.tok_embd, tokens[t], &s.hidden[t * E]);  // h = E[token]

    const float softmax_scale = 1.0f / std::sqrt((float)HD);
    for (int32_t il = 0; il < hp.n_layer; ++il) {
        const layer_weights& L = m.layers[il];
        float* k_cache = ctx.cache.keys(il);    // (n_ctx, KV)
        float* v_cache = ctx.cache.values(il);  // (n_ctx, KV)

        // x = rmsnorm(h); q, k, v projections
        rmsnorm(s.hidden.data(), L.attn_norm, s.normed.data(), n, E, hp.rms_norm_eps);
        matmul(ctx.pool, L.wq, s.normed.data(), s.q.data(), n);
        matmul(ctx.pool, L.wk, s.normed.data(), s.k.data(), n);
        matmul(ctx.pool, L.wv, s.normed.data(), s.v.data(), n);

        // RoPE on q and k at absolute positions, then the query scale.
        rope_adjacent(s.q.data(), n, hp.n_head, HD, s.positions.data(), m.rope_inv_freq.data(), hp.yarn_attn_factor);
        rope_adjacent(s.k.data(), n, hp.n_head_kv, HD, s.positions.data(), m.rope_inv_freq.data(),
                      hp.yarn_attn_factor);
        for (int32_t t = 0; t < n; ++t)
            for (int64_t i = 0; i < Q; ++i) s.q[t * Q + i] *= q_scale[t];

        // Stage the new K/V in cache slots C..C+n-1; only causal passes commit them.
        std::copy(s.k.begin(), s.k.end(), k_cache + (size_t)first_pos * KV);
        std::copy(s.v.begin(), s.v.end(), v_cache + (size_t)first_pos * KV);

        // a = softmax(q k^T / sqrt(head_dim) + mask) v; h += a Wo^T
        attention(ctx.pool, s.q.data(), k_cache, v_cache, s.attn.data(), n, n_keys, first_pos, causal, hp.n_head,
                  hp.n_head_kv, HD, softmax_scale);
        matmul(ctx.pool, L.wo, s.attn.data(), s.proj.data(), n);
        for (int64_t i = 0; i < n * E; ++i) s.hidden[i] += s.proj[i];

        // h += Wdown(silu(Wgate x) * Wup x)
        rmsnorm(s.hidden.data(), L.ffn_norm, s.normed.data(), n, E, hp.rms_norm_eps);
        matmul(ctx.pool, L.ffn_gate, s.normed.data(), s.gate.data(), n);
        matmul(ctx.pool, L.ffn_up, s.normed.data(), s.up.data(), n);
        swiglu(s.gate.data(), s.up.data(), n * hp.n_ff);
        matmul(ctx.pool, L.ffn_down, s.gate.data(), s.proj.data(), n);
        for (int64_t i = 0; i < n * E; ++i) s.hidden[i] += s.proj[i];
    }

    if (causal) {
        ctx.cache.commit(n);
        ctx.tokens.insert(ctx.tokens.end(), tokens, tokens + n);
    }

    // logits = rmsnorm(h) Whead^T, only for the rows asked for.
    if (rows == logits_rows::none) return;
    const int32_t first_row = rows == logits_rows::last ? n - 1 : 0;
    const int32_t n_rows = n - first_row;
    rmsnorm(&s.hidden[first_row * E], m.output_norm, s.normed.data(), n_rows, E, hp.rms_norm_eps);
    matmul(ctx.pool, m.output, s.normed.data(), logits_out, n_rows);
}

}  // namespace nld
