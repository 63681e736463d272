// forward.cpp: the Ministral-3 / NLD forward pass (spec/nld-model.md section
// 4), one function over the ops of the model's backend (backend/backend.h;
// the CPU's by default), intermediates named as in the spec so
// they can be dumped and compared with PyTorch. Which keys each row sees,
// which rows use the drafter LoRA and which rows are committed to the cache
// come from the row_layout (context.h).
#include <algorithm>
#include <cmath>
#include <string>

#include "backend/backend.h"
#include "context.h"
#include "error.h"

namespace nld {

context::context(const model& m, int32_t n_ctx, int32_t n_threads, kv_type type_k, kv_type type_v)
    : mdl(m), cache(m.hp.n_layer, n_ctx, m.hp.n_head_kv, m.hp.head_dim, type_k, type_v), pool(n_threads) {}

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
    const forward_part part{&ctx, tokens, &layout, rows, logits_out};
    forward_batch(ctx.pool, ctx.scratch, &part, 1);
}

static int32_t logits_row_count(const forward_part& p) {
    return p.rows == logits_rows::none ? 0 : p.rows == logits_rows::last ? 1 : p.layout->size();
}

void forward_batch(threadpool& pool, forward_scratch& s, const forward_part* parts, int32_t n_parts) {
    if (n_parts < 1) fail_argument("forward: no sequences");
    const model& m = parts[0].ctx->mdl;
    for (int32_t i = 0; i < n_parts; ++i) {
        if (&parts[i].ctx->mdl != &m) fail_argument("forward: the sequences of a batch use different models");
        for (int32_t j = 0; j < i; ++j)
            if (parts[j].ctx == parts[i].ctx) fail_argument("forward: two sequences of a batch share a context");
        check_layout(*parts[i].ctx, *parts[i].layout);
    }
    const hparams& hp = m.hp;
    const backend& be = *m.be;
    exec ex{pool};
    const int64_t E = hp.n_embd, HD = hp.head_dim, Q = (int64_t)hp.n_head * HD, KV = (int64_t)hp.n_head_kv * HD;

    // The rows of all parts, one after another: part i at rows [first[i], first[i] + n_i).
    std::vector<int64_t> first((size_t)n_parts + 1, 0);
    for (int32_t i = 0; i < n_parts; ++i) first[i + 1] = first[i] + parts[i].layout->size();
    const int64_t n = first[n_parts];
    std::vector<int32_t> positions;
    positions.reserve((size_t)n);
    for (int32_t i = 0; i < n_parts; ++i)
        positions.insert(positions.end(), parts[i].layout->positions.begin(), parts[i].layout->positions.end());
    int64_t max_lora = 0;
    for (int32_t i = 0; i < n_parts; ++i)
        max_lora = std::max<int64_t>(max_lora, parts[i].layout->size() - parts[i].layout->lora_from);

    s.hidden.resize(n * E); s.normed.resize(n * E); s.proj.resize(n * E);
    s.q.resize(n * Q); s.attn.resize(n * Q); s.k.resize(n * KV); s.v.resize(n * KV);
    bool any_rounded = false;
    for (int32_t i = 0; i < n_parts; ++i) any_rounded |= !parts[i].ctx->cache.is_exact();
    if (any_rounded) { s.k_seen.resize(n * KV); s.v_seen.resize(n * KV); }
    s.gate.resize(n * hp.n_ff); s.up.resize(n * hp.n_ff);
    if (max_lora > 0) s.lora_mid.resize((size_t)max_lora * m.drafter->rank);

    // Query scale of Ministral-3 long context: 1 + beta*ln(1 + floor(pos/L)),
    // applied after RoPE; exactly 1 below L.
    std::vector<float> q_scale((size_t)n);
    for (int64_t t = 0; t < n; ++t) {
        const double blocks = std::floor((double)positions[t] / (double)hp.rope_orig_ctx);
        q_scale[t] = (float)(1.0 + hp.attn_temperature_scale * std::log1p(blocks));
    }

    for (int32_t i = 0; i < n_parts; ++i)  // h = E[token]
        be.embed(ex, m.tok_embd, parts[i].tokens, parts[i].layout->size(), &s.hidden[first[i] * E]);

    rope_angles angles;  // cos, sin: (n, HD / 2) each, shared by every layer
    compute_rope_angles(positions.data(), n, m.rope_inv_freq.data(), HD / 2, hp.yarn_attn_factor, angles);

    const float softmax_scale = 1.0f / std::sqrt((float)HD);
    std::vector<float> delta;
    for (int32_t il = 0; il < hp.n_layer; ++il) {
        const layer_weights& L = m.layers[il];

        // x = rmsnorm(h); q, k, v projections
        be.rmsnorm(ex, s.hidden.data(), L.attn_norm, s.normed.data(), n, E, hp.rms_norm_eps);
        const weight_matrix* qkv[3] = {&L.wq, &L.wk, &L.wv};
        float* qkv_out[3] = {s.q.data(), s.k.data(), s.v.data()};
        be.matmul_same_input(ex, qkv, qkv_out, 3, s.normed.data(), n);

        // RoPE on q and k at absolute positions, then the query scale.
        be.rope(ex, s.q.data(), n, hp.n_head, HD, angles);
        be.rope(ex, s.k.data(), n, hp.n_head_kv, HD, angles);
        be.scale_rows(ex, s.q.data(), q_scale.data(), n, Q);

        // Per sequence: a = softmax(q k^T / sqrt(head_dim) + mask) v over its
        // cache + its visible new rows; its committed rows' K/V join its cache
        // (slots C .. C+n_commit-1).
        // The new rows see each other's K/V as the cache will hold them
        // (rounded through its types), so a token attends to the same values
        // whether they come from this forward or from the cache: chunked,
        // batched and drafted passes give the bits of a row-by-row run.
        for (int32_t i = 0; i < n_parts; ++i) {
            const row_layout& l = *parts[i].layout;
            kv_cache& cache = parts[i].ctx->cache;
            const attention_rows visibility{l.see_prefix.data(), l.group_lo.data(), l.group_hi.data()};
            const int64_t r0 = first[i], rows = l.size();
            const float* k_seen = &s.k[r0 * KV];
            const float* v_seen = &s.v[r0 * KV];
            if (!cache.is_exact()) {
                std::copy(&s.k[r0 * KV], &s.k[(r0 + rows) * KV], &s.k_seen[r0 * KV]);
                std::copy(&s.v[r0 * KV], &s.v[(r0 + rows) * KV], &s.v_seen[r0 * KV]);
                cache.round_trip(&s.k_seen[r0 * KV], &s.v_seen[r0 * KV], (int32_t)rows);
                k_seen = &s.k_seen[r0 * KV];
                v_seen = &s.v_seen[r0 * KV];
            }
            const cache_layer layer{cache.type_k(),
                                    cache.type_v(),
                                    cache.keys(il),
                                    (int64_t)cache.key_head_bytes(),
                                    cache.values(il),
                                    (int64_t)cache.value_head_bytes(),
                                    (int64_t)cache.value_row_bytes(),
                                    cache.n_cached()};
            be.attention(ex, &s.q[r0 * Q], layer, k_seen, v_seen, visibility, &s.attn[r0 * Q], rows, hp.n_head,
                         hp.n_head_kv, HD, softmax_scale);
            cache.store(il, cache.n_cached(), l.n_commit, &s.k[r0 * KV], &s.v[r0 * KV]);
        }

        // h += a Wo^T (+ scale * (a A^T) B^T on each sequence's drafter rows)
        be.matmul(ex, L.wo, s.attn.data(), s.proj.data(), n);
        for (int32_t i = 0; i < n_parts; ++i) {
            const row_layout& l = *parts[i].layout;
            const int64_t n_lora = l.size() - l.lora_from, r0 = first[i] + l.lora_from;
            if (n_lora <= 0) continue;
            const lora_adapter& lora = *m.drafter;
            delta.resize((size_t)(n_lora * E));
            be.matmul(ex, lora.a[il], &s.attn[r0 * Q], s.lora_mid.data(), n_lora);
            be.matmul(ex, lora.b[il], s.lora_mid.data(), delta.data(), n_lora);
            be.add_scaled(ex, &s.proj[r0 * E], delta.data(), lora.scale, n_lora * E);
        }
        be.add_scaled(ex, s.hidden.data(), s.proj.data(), 1.0f, n * E);

        // h += Wdown(silu(Wgate x) * Wup x)
        be.rmsnorm(ex, s.hidden.data(), L.ffn_norm, s.normed.data(), n, E, hp.rms_norm_eps);
        const weight_matrix* gate_up[2] = {&L.ffn_gate, &L.ffn_up};
        float* gate_up_out[2] = {s.gate.data(), s.up.data()};
        be.matmul_same_input(ex, gate_up, gate_up_out, 2, s.normed.data(), n);
        be.swiglu(ex, s.gate.data(), s.up.data(), n * hp.n_ff);
        be.matmul(ex, L.ffn_down, s.gate.data(), s.proj.data(), n);
        be.add_scaled(ex, s.hidden.data(), s.proj.data(), 1.0f, n * E);
    }

    for (int32_t i = 0; i < n_parts; ++i) {
        context& ctx = *parts[i].ctx;
        ctx.cache.commit(parts[i].layout->n_commit);
        ctx.tokens.insert(ctx.tokens.end(), parts[i].tokens, parts[i].tokens + parts[i].layout->n_commit);
    }

    // logits = rmsnorm(h) Whead^T, only for the rows asked for: the rows of
    // every part in one matmul (straight into the output of a single part).
    int64_t n_out = 0;
    for (int32_t i = 0; i < n_parts; ++i) {
        const int32_t rows = logits_row_count(parts[i]);
        const int64_t from = first[i + 1] - rows;
        be.rmsnorm(ex, &s.hidden[from * E], m.output_norm, &s.normed[n_out * E], rows, E, hp.rms_norm_eps);
        n_out += rows;
    }
    if (n_out == 0) return;
    const int64_t V = hp.n_vocab;
    float* out = parts[0].logits_out;
    if (n_parts > 1) {
        s.logits.resize((size_t)(n_out * V));
        out = s.logits.data();
    }
    be.matmul(ex, m.output, s.normed.data(), out, n_out);
    if (n_parts == 1) return;
    for (int32_t i = 0, at = 0; i < n_parts; ++i) {
        const int32_t rows = logits_row_count(parts[i]);
        std::copy(out + (int64_t)at * V, out + (int64_t)(at + rows) * V, parts[i].logits_out);
        at += rows;
    }
}

}  // namespace nld
