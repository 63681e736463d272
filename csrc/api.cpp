// api.cpp: the C API of nld.h. Checks every argument, converts every C++
// exception into a status code plus the thread-local message, and owns the
// mapping between opaque handles and the core's objects.
#include <cmath>
#include <cstring>
#include <new>
#include <string>
#include <thread>

#include "context.h"
#include "error.h"
#include "include/nld.h"
#include "model.h"

struct nld_model {
    std::unique_ptr<nld::model> impl;
};

struct nld_context {
    std::unique_ptr<nld::context> impl;
};

namespace {

thread_local std::string g_last_error;

nld_status set_error(nld_status status, const std::string& msg) {
    g_last_error = msg;
    return status;
}

// Runs fn, mapping exceptions to statuses. fn returns nld_status.
template <typename Fn>
nld_status guarded(const char* fn_name, Fn&& fn) {
    try {
        return fn();
    } catch (const nld::error& e) {
        return set_error(e.status, e.what());
    } catch (const std::bad_alloc&) {
        return set_error(NLD_ERR_OUT_OF_MEMORY, std::string(fn_name) + ": out of memory");
    } catch (const std::exception& e) {
        return set_error(NLD_ERR_INTERNAL, std::string(fn_name) + ": " + e.what());
    } catch (...) {
        return set_error(NLD_ERR_INTERNAL, std::string(fn_name) + ": unknown error");
    }
}

#define NLD_REQUIRE(cond, msg)                                                      \
    do {                                                                            \
        if (!(cond)) return set_error(NLD_ERR_INVALID_ARGUMENT, msg);               \
    } while (0)

void check_tokens(const nld::model& m, const int32_t* tokens, int32_t n, const char* what) {
    for (int32_t i = 0; i < n; ++i)
        if (tokens[i] < 0 || tokens[i] >= m.hp.n_vocab)
            nld::fail_argument(std::string(what) + "[" + std::to_string(i) + "] = " + std::to_string(tokens[i]) +
                               " is not a token id (vocabulary has " + std::to_string(m.hp.n_vocab) + ")");
}

// Greedy choice over one logits row, never the mask token.
int32_t argmax_token(const float* logits, int32_t n_vocab, int32_t mask_id) {
    int32_t best = -1;
    for (int32_t i = 0; i < n_vocab; ++i) {
        if (i == mask_id) continue;
        if (std::isnan(logits[i])) nld::fail_format("the model produced NaN logits");
        if (best < 0 || logits[i] > logits[best]) best = i;
    }
    return best;
}

}  // namespace

extern "C" {

int32_t nld_api_version(void) { return NLD_API_VERSION; }

const char* nld_status_name(nld_status status) {
    switch (status) {
    case NLD_OK: return "ok";
    case NLD_ERR_INVALID_ARGUMENT: return "invalid argument";
    case NLD_ERR_IO: return "i/o error";
    case NLD_ERR_FORMAT: return "format error";
    case NLD_ERR_UNSUPPORTED: return "unsupported";
    case NLD_ERR_OUT_OF_MEMORY: return "out of memory";
    case NLD_ERR_CONTEXT_FULL: return "context full";
    case NLD_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

const char* nld_last_error(void) { return g_last_error.c_str(); }

nld_model_params nld_model_default_params(void) {
    nld_model_params p;
    std::memset(&p, 0, sizeof p);
    p.n_threads = 0;
    return p;
}

nld_context_params nld_context_default_params(void) {
    nld_context_params p;
    std::memset(&p, 0, sizeof p);
    p.n_ctx = 0;
    p.n_threads = 0;
    return p;
}

nld_forward_params nld_forward_default_params(void) {
    nld_forward_params p;
    std::memset(&p, 0, sizeof p);
    p.attention = NLD_ATTENTION_CAUSAL;
    p.logits = NLD_LOGITS_LAST;
    return p;
}

nld_status nld_model_load(const char* path, const nld_model_params* params, nld_model** out_model) {
    NLD_REQUIRE(out_model != nullptr, "nld_model_load: out_model is NULL");
    *out_model = nullptr;
    NLD_REQUIRE(path != nullptr, "nld_model_load: path is NULL");
    (void)params;
    return guarded("nld_model_load", [&] {
        auto handle = std::make_unique<nld_model>();
        handle->impl = nld::load_model(path);
        *out_model = handle.release();
        return NLD_OK;
    });
}

void nld_model_free(nld_model* model) { delete model; }

nld_status nld_model_get_info(const nld_model* model, nld_model_info* out) {
    NLD_REQUIRE(model != nullptr && out != nullptr, "nld_model_get_info: NULL argument");
    const nld::hparams& hp = model->impl->hp;
    std::memset(out, 0, sizeof *out);
    out->n_vocab = hp.n_vocab;
    out->n_embd = hp.n_embd;
    out->n_layer = hp.n_layer;
    out->n_head = hp.n_head;
    out->n_head_kv = hp.n_head_kv;
    out->head_dim = hp.head_dim;
    out->n_ff = hp.n_ff;
    out->n_ctx_train = hp.n_ctx_train;
    out->rms_norm_eps = hp.rms_norm_eps;
    out->rope_freq_base = hp.rope_freq_base;
    out->rope_scaling_factor = hp.rope_factor;
    out->rope_orig_ctx = hp.rope_orig_ctx;
    out->yarn_beta_fast = hp.yarn_beta_fast;
    out->yarn_beta_slow = hp.yarn_beta_slow;
    out->attn_temperature_scale = hp.attn_temperature_scale;
    out->bos_token_id = hp.bos_token_id;
    out->eos_token_id = hp.eos_token_id;
    out->mask_token_id = hp.mask_token_id;
    out->block_size = hp.block_size;
    out->file_type = hp.file_type;
    out->has_diffusion = hp.has_diffusion ? 1 : 0;
    return NLD_OK;
}

nld_status nld_model_meta_string(const nld_model* model, const char* key, const char** out_data, size_t* out_len) {
    NLD_REQUIRE(model != nullptr && key != nullptr && out_data != nullptr && out_len != nullptr,
                "nld_model_meta_string: NULL argument");
    const nld::gguf_kv* kv = model->impl->file->find_kv(key);
    if (!kv || kv->type != nld::gguf_vtype::string)
        return set_error(NLD_ERR_INVALID_ARGUMENT, std::string("no string metadata key '") + key + "'");
    *out_data = kv->str.data();
    *out_len = kv->str.size();
    return NLD_OK;
}

nld_status nld_context_create(nld_model* model, const nld_context_params* params, nld_context** out_ctx) {
    NLD_REQUIRE(out_ctx != nullptr, "nld_context_create: out_ctx is NULL");
    *out_ctx = nullptr;
    NLD_REQUIRE(model != nullptr, "nld_context_create: model is NULL");
    const nld_context_params p = params ? *params : nld_context_default_params();
    const nld::hparams& hp = model->impl->hp;
    const int32_t n_ctx = p.n_ctx > 0 ? p.n_ctx : std::min(hp.n_ctx_train, 4096);
    NLD_REQUIRE(n_ctx <= (1 << 24), "nld_context_create: n_ctx " + std::to_string(n_ctx) + " is too large");
    NLD_REQUIRE(p.n_threads <= 1024, "nld_context_create: n_threads " + std::to_string(p.n_threads) + " is too large");
    return guarded("nld_context_create", [&] {
        auto handle = std::make_unique<nld_context>();
        handle->impl = std::make_unique<nld::context>(*model->impl, n_ctx, p.n_threads);
        *out_ctx = handle.release();
        return NLD_OK;
    });
}

void nld_context_free(nld_context* ctx) { delete ctx; }

int32_t nld_context_n_ctx(const nld_context* ctx) { return ctx ? ctx->impl->cache.capacity() : -1; }

int32_t nld_context_n_cached(const nld_context* ctx) { return ctx ? ctx->impl->cache.n_cached() : -1; }

nld_status nld_context_truncate(nld_context* ctx, int32_t n_keep) {
    NLD_REQUIRE(ctx != nullptr, "nld_context_truncate: ctx is NULL");
    return guarded("nld_context_truncate", [&] {
        ctx->impl->cache.truncate(n_keep);
        ctx->impl->tokens.resize((size_t)n_keep);
        return NLD_OK;
    });
}

nld_status nld_context_forward(nld_context* ctx, const int32_t* tokens, int32_t n_tokens,
                               const nld_forward_params* params, float* logits_out, size_t logits_capacity) {
    NLD_REQUIRE(ctx != nullptr, "nld_context_forward: ctx is NULL");
    NLD_REQUIRE(tokens != nullptr && n_tokens > 0, "nld_context_forward: need at least one token");
    const nld_forward_params p = params ? *params : nld_forward_default_params();
    NLD_REQUIRE(p.attention == NLD_ATTENTION_CAUSAL || p.attention == NLD_ATTENTION_BIDIRECTIONAL,
                "nld_context_forward: attention must be NLD_ATTENTION_CAUSAL or NLD_ATTENTION_BIDIRECTIONAL, got " +
                    std::to_string(p.attention));
    NLD_REQUIRE(p.logits >= NLD_LOGITS_NONE && p.logits <= NLD_LOGITS_ALL,
                "nld_context_forward: logits must be NONE, LAST or ALL, got " + std::to_string(p.logits));
    nld::context& c = *ctx->impl;
    const size_t rows = p.logits == NLD_LOGITS_NONE ? 0 : p.logits == NLD_LOGITS_LAST ? 1 : (size_t)n_tokens;
    const size_t need = rows * (size_t)c.mdl.hp.n_vocab;
    NLD_REQUIRE(rows == 0 || logits_out != nullptr, "nld_context_forward: logits_out is NULL");
    NLD_REQUIRE(logits_capacity >= need, "nld_context_forward: logits_capacity " + std::to_string(logits_capacity) +
                                             " is smaller than the " + std::to_string(need) + " floats needed");
    return guarded("nld_context_forward", [&] {
        check_tokens(c.mdl, tokens, n_tokens, "tokens");
        const auto kind = p.attention == NLD_ATTENTION_CAUSAL ? nld::attention_kind::causal
                                                              : nld::attention_kind::bidirectional;
        const auto which = p.logits == NLD_LOGITS_NONE   ? nld::logits_rows::none
                           : p.logits == NLD_LOGITS_LAST ? nld::logits_rows::last
                                                         : nld::logits_rows::all;
        nld::forward(c, tokens, n_tokens, kind, which, logits_out);
        return NLD_OK;
    });
}

nld_status nld_context_generate_greedy(nld_context* ctx, const int32_t* prompt, int32_t n_prompt,
                                       int32_t max_new_tokens, int32_t stop_at_eos, int32_t* out_tokens,
                                       int32_t out_capacity, int32_t* out_n) {
    NLD_REQUIRE(ctx != nullptr && out_n != nullptr, "nld_context_generate_greedy: NULL argument");
    *out_n = 0;
    NLD_REQUIRE(prompt != nullptr && n_prompt > 0, "nld_context_generate_greedy: the prompt is empty");
    NLD_REQUIRE(max_new_tokens >= 0, "nld_context_generate_greedy: max_new_tokens must be >= 0");
    NLD_REQUIRE(out_tokens != nullptr || max_new_tokens == 0, "nld_context_generate_greedy: out_tokens is NULL");
    NLD_REQUIRE(out_capacity >= max_new_tokens, "nld_context_generate_greedy: out_capacity " +
                                                    std::to_string(out_capacity) + " < max_new_tokens " +
                                                    std::to_string(max_new_tokens));
    return guarded("nld_context_generate_greedy", [&] {
        nld::context& c = *ctx->impl;
        const nld::hparams& hp = c.mdl.hp;
        check_tokens(c.mdl, prompt, n_prompt, "prompt");
        if (n_prompt > c.cache.capacity())
            throw nld::error(NLD_ERR_CONTEXT_FULL, "prompt of " + std::to_string(n_prompt) +
                                                       " tokens does not fit n_ctx " +
                                                       std::to_string(c.cache.capacity()));
        // Reuse the longest cached prefix; re-evaluate at least the last
        // prompt token, whose logits give the first new token.
        int32_t keep = 0;
        while (keep < n_prompt - 1 && keep < (int32_t)c.tokens.size() && c.tokens[keep] == prompt[keep]) ++keep;
        c.cache.truncate(keep);
        c.tokens.resize((size_t)keep);

        std::vector<float> logits((size_t)hp.n_vocab);
        nld::forward(c, prompt + keep, n_prompt - keep, nld::attention_kind::causal, nld::logits_rows::last,
                     logits.data());
        for (int32_t i = 0; i < max_new_tokens; ++i) {
            const int32_t next = argmax_token(logits.data(), hp.n_vocab, hp.mask_token_id);
            out_tokens[(*out_n)++] = next;
            if (stop_at_eos && next == hp.eos_token_id) break;
            if (i + 1 == max_new_tokens) break;  // the last token stays uncommitted
            nld::forward(c, &next, 1, nld::attention_kind::causal, nld::logits_rows::last, logits.data());
        }
        return NLD_OK;
    });
}

}  // extern "C"
