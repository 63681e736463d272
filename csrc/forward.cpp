// forward.cpp: the Ministral-3 / NLD forward pass (spec/nld-model.md section
// 4), one function over the CPU ops, intermediates named as in the spec so
// they can be dumped and compared with PyTorch. Which keys each row sees,
// which rows use the drafter LoRA and which rows are committed to the cache
// come from the row_layout (context.h).
#include <algorithm>
#include <cmath>
#include <string>

#include "context.h"
#include "error.h"

namespace nld {

context::context(const model& m, int32_t n_ctx, int32_t n_threads)
    : mdl(m), cache(m.hp.n_layer, n_ctx, m.hp.n_head_kv, m.hp.head_dim), pool(n_threads) {}

row_layout row_layout::causal(int32_t first_pos, int32_t n) {
    row_layout l;
    for (int32_t r = 0; r < n; ++r) {
        l.positions.push_back(first_pos + r);
        l.see_prefix.push_back(r + 1);
        l.group_lo.push_back(0);
        l.group_hi.push_back(0);
    }
    l.lora_from = n;
    l.n_commit = n;
    return l;
}

row_layout row_layout::bidirectional(int32_t first_pos, int32_t n, bool with_lora) {
    row_layout l;
    for (int32_t r = 0; r < n; ++r) {
        l.positions.push_back(first_pos + r);
        l.see_prefix.push_back(0);
        l.group_lo.push_back(0);
        l.group_hi.push_back(n);
    }
    l.lora_from = with_lora ? 0 : n;
    l.n_commit = 0;
    return l;
}

// Rejects layouts that would read or write outside the new rows or the cache.
static void check_layout(const context& ctx, const row_layout& l) {
    const int32_t n = l.size();
    const int32_t C = ctx.cache.n_cached();
    if (n < 1) fail_argument("forward: no tokens");
    if ((int32_t)l.see_prefix.size() != n || (int32_t)l.group_lo.size() != n || (int32_t)l.group_hi.size() != n)
        fail_argument("forward: inconsistent row layout");
    for (int32_t r = 0; r < n; ++r) {
        const bool group_ok = l.group_lo[r] == l.group_hi[r] ||
                              (l.group_lo[r] >= l.see_prefix[r] && l.group_lo[r] < l.group_hi[r] && l.group_hi[r] <= n);
        if (l.see_prefix[r] < 0 || l.see_prefix[r] > n || !group_ok || l.positions[r] < 0)
            fail_argument("forward: invalid visibility for row " + std::to_string(r));
    }
    if (l.lora_from < 0 || l.lora_from > n || l.n_commit < 0 || l.n_commit > n)
        fail_argument("forward: invalid lora_from or n_commit");
    if (l.lora_from < n && !ctx.mdl.drafter) fail_argument("forward: the drafter LoRA is not loaded");
    if (l.n_commit > ctx.cache.capacity() - C)
        throw error(NLD_ERR_CONTEXT_FULL, "forward of " + std::to_string(l.n_commit) + " tokens after " +
                                              std::to_string(C) + " cached exceeds n_ctx " +
                                              std::to_string(ctx.cache.capacity()));
}

void forward(context& ctx, const int32_t* tokens, const row_layout& layout, logits_rows rows, float* logits_out) {
    check_layout(ctx, layout);
    const model& m = ctx.mdl;
    const hparams& hp = m.hp;
    const int32_t n = layout.size();
    const int64_t E = hp.n_embd, HD = hp.head_dim, Q = (int64_t)hp.n_head * HD, KV = (int64_t)hp.n_head_kv * HD;
    const int32_t C = ctx.cache.n_cached();
    const int32_t n_lora = n - layout.lora_from;
    const attention_rows visibility{layout.see_prefix.data(), layout.group_lo.data(), layout.group_hi.data()};

    forward_scratch& s = ctx.scratch;
    s.hidden.resize(n * E); s.normed.resize(n * E); s.proj.resize(n * E);
    s.q.resize(n * Q); s.attn.resize(n * Q); s.k.resize(n * KV); s.v.resize(n * KV);
    s.gate.resize(n * hp.n_ff); s.up.resize(n * hp.n_ff);
    if (n_lora > 0) s.lora_mid.resize((size_t)n_lora * m.drafter->rank);

    // Query scale of Ministral-3 long context: 1 + beta*ln(1 + floor(pos/L)),
    // applied after RoPE; exactly 1 below L.
    std::vector<float> q_scale(n);
    for (int32_t t = 0; t < n; ++t) {
        const double blocks = std::floor((double)layout.positions[t] / (double)hp.rope_orig_ctx);
        q_scale[t] = (float)(1.0 + hp.attn_temperature_scale * std::log1p(blocks));
    }

    for (int32_t t = 0; t < n; ++t) weight_row_to_f32(m.tok_embd, tokens[t], &s.hidden[t * E]);  // h = E[token]

    rope_angles angles;  // cos, sin: (n, HD / 2) each, shared by every layer
    compute_rope_angles(layout.positions.data(), n, m.rope_inv_freq.data(), HD / 2, hp.yarn_attn_factor, angles);

    const float softmax_scale = 1.0f / std::sqrt((float)HD);
    for (int32_t il = 0; il < hp.n_layer; ++il) {
        const layer_weights& L = m.layers[il];
        const float* k_cache = ctx.cache.keys(il);    // (n_head_kv, n_ctx / 16, HD, 16): tiles of 16 keys
        const float* v_cache = ctx.cache.values(il);  // (n_head_kv, n_ctx, HD)

        // x = rmsnorm(h); q, k, v projections
        rmsnorm(s.hidden.data(), L.attn_norm, s.normed.data(), n, E, hp.rms_norm_eps);
        const weight_matrix* qkv[3] = {&L.wq, &L.wk, &L.wv};
        float* qkv_out[3] = {s.q.data(), s.k.data(), s.v.data()};
        matmul_same_input(ctx.pool, qkv, qkv_out, 3, s.normed.data(), n);

        // RoPE on q and k at absolute positions, then the query scale.
        rope_adjacent(s.q.data(), n, hp.n_head, HD, angles);
        rope_adjacent(s.k.data(), n, hp.n_head_kv, HD, angles);
        for (int32_t t = 0; t < n; ++t)
            for (int64_t i = 0; i < Q; ++i) s.q[t * Q + i] *= q_scale[t];

        // a = softmax(q k^T / sqrt(head_dim) + mask) v over cache + visible new rows
        attention(ctx.pool, s.q.data(), k_cache, (int64_t)ctx.cache.key_head_stride(), v_cache,
                  (int64_t)ctx.cache.value_head_stride(), C, s.k.data(),
                  s.v.data(), visibility, s.attn.data(), n, hp.n_head, hp.n_head_kv, HD, softmax_scale);
        // The committed rows' K/V join the cache (slots C .. C+n_commit-1).
        ctx.cache.store(il, C, layout.n_commit, s.k.data(), s.v.data());

        // h += a Wo^T (+ scale * (a A^T) B^T on the drafter rows)
        matmul(ctx.pool, L.wo, s.attn.data(), s.proj.data(), n);
        if (n_lora > 0) {
            const lora_adapter& lora = *m.drafter;
            const int64_t first = layout.lora_from;
            std::vector<float> delta((size_t)n_lora * E);
            matmul(ctx.pool, lora.a[il], &s.attn[first * Q], s.lora_mid.data(), n_lora);
            matmul(ctx.pool, lora.b[il], s.lora_mid.data(), delta.data(), n_lora);
            for (int64_t i = 0; i < (int64_t)n_lora * E; ++i) s.proj[first * E + i] += lora.scale * delta[i];
        }
        for (int64_t i = 0; i < n * E; ++i) s.hidden[i] += s.proj[i];

        // h += Wdown(silu(Wgate x) * Wup x)
        rmsnorm(s.hidden.data(), L.ffn_norm, s.normed.data(), n, E, hp.rms_norm_eps);
        const weight_matrix* gate_up[2] = {&L.ffn_gate, &L.ffn_up};
        float* gate_up_out[2] = {s.gate.data(), s.up.data()};
        matmul_same_input(ctx.pool, gate_up, gate_up_out, 2, s.normed.data(), n);
        swiglu(ctx.pool, s.gate.data(), s.up.data(), n * hp.n_ff);
        matmul(ctx.pool, L.ffn_down, s.gate.data(), s.proj.data(), n);
        for (int64_t i = 0; i < n * E; ++i) s.hidden[i] += s.proj[i];
    }

    ctx.cache.commit(layout.n_commit);
    ctx.tokens.insert(ctx.tokens.end(), tokens, tokens + layout.n_commit);

    // logits = rmsnorm(h) Whead^T, only for the rows asked for.
    if (rows == logits_rows::none) return;
    const int32_t first_row = rows == logits_rows::last ? n - 1 : 0;
    const int32_t n_rows = n - first_row;
    rmsnorm(&s.hidden[first_row * E], m.output_norm, s.normed.data(), n_rows, E, hp.rms_norm_eps);
    matmul(ctx.pool, m.output, s.normed.data(), logits_out, n_rows);
}

}  // namespace nld
