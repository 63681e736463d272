// api.cpp: the C API of nld.h. Checks every argument, converts every C++
// exception into a status code plus the thread-local message, and owns the
// mapping between opaque handles and the core's objects.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>
#include <string>
#include <thread>

#include "backend/backend.h"
#include "backend/cpu/ops.h"
#include "backend/cpu/threadpool.h"
#include "context.h"
#include "error.h"
#include "include/nld.h"
#include "memory.h"
#include "model.h"
#include "modes/generator.h"
#include "scheduler.h"
#include "quants/dot.h"
#include "quants/quants.h"
#include "quants/repack.h"

struct nld_model {
    std::unique_ptr<nld::model> impl;
};

struct nld_context {
    std::unique_ptr<nld::context> impl;
};

struct nld_scheduler;

struct nld_generator {
    std::unique_ptr<nld::generator> impl;
    nld_scheduler* owner = nullptr;  // the scheduler stepping it, if any
    ~nld_generator();
};

struct nld_scheduler {
    std::unique_ptr<nld::scheduler> impl;
    std::vector<nld_generator*> members;  // the handles of the generators in impl
    std::vector<nld::scheduled_result> last;  // what the last step reported
    ~nld_scheduler() {
        for (nld_generator* g : members) g->owner = nullptr;
    }
    void forget(nld_generator* g) { members.erase(std::remove(members.begin(), members.end(), g), members.end()); }
};

nld_generator::~nld_generator() {
    if (owner) {
        owner->impl->remove(impl.get());
        owner->forget(this);
    }
}

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

nld::gen_mode resolve_mode(int32_t mode, const nld::hparams& hp) {
    switch (mode) {
    case NLD_MODE_AR: return nld::gen_mode::ar;
    case NLD_MODE_DIFFUSION: case NLD_MODE_SPEC: case NLD_MODE_SPEC_QUADRATIC: case NLD_MODE_AUTO:
    case NLD_MODE_INFILL:
        if (!hp.has_diffusion)
            nld::fail_unsupported("this model has no diffusion keys (tokenizer.ggml.mask_token_id, "
                                  "diffusion.block_size): only AR generation is available");
        return mode == NLD_MODE_DIFFUSION ? nld::gen_mode::diffusion
               : mode == NLD_MODE_SPEC    ? nld::gen_mode::spec_linear
               : mode == NLD_MODE_AUTO    ? nld::gen_mode::automatic
               : mode == NLD_MODE_INFILL  ? nld::gen_mode::infill
                                          : nld::gen_mode::spec_quadratic;
    }
    nld::fail_argument("unknown mode " + std::to_string(mode) +
                       " (0 ar, 1 diffusion, 2 spec, 3 spec-quadratic, 4 auto, 5 infill)");
}

// Bytes of a row of n_per_row elements of `type`, after checking both.
size_t checked_row_bytes(const char* fn, int32_t type, int64_t n_per_row) {
    uint64_t block_elems = 0, block_bytes = 0;
    if (type < 0 || !nld::ggml_type_block((uint32_t)type, &block_elems, &block_bytes))
        nld::fail_argument(std::string(fn) + ": unknown ggml type " + std::to_string(type));
    if (n_per_row <= 0 || n_per_row > ((int64_t)1 << 32))
        nld::fail_argument(std::string(fn) + ": n_per_row " + std::to_string(n_per_row) + " is not in [1, 2^32]");
    if ((uint64_t)n_per_row % block_elems != 0)
        nld::fail_argument(std::string(fn) + ": n_per_row " + std::to_string(n_per_row) + " is not a multiple of the " +
                           nld::ggml_type_name((nld::ggml_type)type) + " block size " + std::to_string(block_elems));
    return (size_t)((uint64_t)n_per_row / block_elems * block_bytes);
}

// n_rows * per_row, or an argument error naming `what`.
size_t checked_total(const char* fn, int64_t n_rows, size_t per_row, const char* what) {
    size_t total = 0;
    if (n_rows <= 0 || __builtin_mul_overflow((size_t)n_rows, per_row, &total))
        nld::fail_argument(std::string(fn) + ": n_rows " + std::to_string(n_rows) + " gives no valid " + what);
    return total;
}

// The types nld_quantize / nld_dequantize encode and decode.
void require_codec_type(const char* fn, int32_t t) {
    if (t != NLD_TYPE_Q4_0 && t != NLD_TYPE_Q8_0 && t != NLD_TYPE_Q4_K && t != NLD_TYPE_Q6_K && t != NLD_TYPE_Q8_K)
        nld::fail_argument(std::string(fn) + ": type " + std::to_string(t) +
                           " is not a block quant type (Q4_0 2, Q8_0 8, Q4_K 12, Q6_K 14, Q8_K 15)");
}

// Quant blocks hold f16 (Q8_K: f32) fields: buffers must be aligned for them.
void check_block_alignment(const char* fn, int32_t type, const void* p) {
    const uintptr_t need = type == NLD_TYPE_Q8_K ? alignof(nld::block_q8_k)
                           : type == NLD_TYPE_F32 ? alignof(float) : alignof(nld::block_q8_0);
    if ((uintptr_t)p % need != 0)
        nld::fail_argument(std::string(fn) + ": the block buffer is not " + std::to_string(need) + "-byte aligned");
}

void quantize_row(int32_t type, const float* src, void* dst, int64_t n) {
    switch (type) {
    case NLD_TYPE_Q8_0: nld::quantize_row_q8_0(src, static_cast<nld::block_q8_0*>(dst), n); break;
    case NLD_TYPE_Q4_0: nld::quantize_row_q4_0(src, static_cast<nld::block_q4_0*>(dst), n); break;
    case NLD_TYPE_Q4_K: nld::quantize_row_q4_k(src, static_cast<nld::block_q4_k*>(dst), n); break;
    case NLD_TYPE_Q6_K: nld::quantize_row_q6_k(src, static_cast<nld::block_q6_k*>(dst), n); break;
    default: nld::quantize_row_q8_k(src, static_cast<nld::block_q8_k*>(dst), n); break;
    }
}

void dequantize_row(int32_t type, const void* src, float* dst, int64_t n) {
    switch (type) {
    case NLD_TYPE_Q8_0: nld::dequantize_row_q8_0(static_cast<const nld::block_q8_0*>(src), dst, n); break;
    case NLD_TYPE_Q4_0: nld::dequantize_row_q4_0(static_cast<const nld::block_q4_0*>(src), dst, n); break;
    case NLD_TYPE_Q4_K: nld::dequantize_row_q4_k(static_cast<const nld::block_q4_k*>(src), dst, n); break;
    case NLD_TYPE_Q6_K: nld::dequantize_row_q6_k(static_cast<const nld::block_q6_k*>(src), dst, n); break;
    default: nld::dequantize_row_q8_k(static_cast<const nld::block_q8_k*>(src), dst, n); break;
    }
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
    p.lora_path = nullptr;
    p.n_gpu_layers = 0;
    return p;
}

int32_t nld_cuda_device_count(void) { return nld::cuda_device_count(nullptr); }

nld_context_params nld_context_default_params(void) {
    nld_context_params p;
    std::memset(&p, 0, sizeof p);
    p.n_ctx = 0;
    p.n_threads = 0;
    p.type_k = NLD_TYPE_F16;
    p.type_v = NLD_TYPE_F16;
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
    const nld_model_params p = params ? *params : nld_model_default_params();
    return guarded("nld_model_load", [&] {
        const nld::backend& be = nld::select_backend(p.n_gpu_layers);  // refused before any byte is read
        auto handle = std::make_unique<nld_model>();
        handle->impl = nld::load_model(path, p.lora_path);
        handle->impl->be = &be;
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
    out->lora_rank = model->impl->drafter ? model->impl->drafter->rank : 0;
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

namespace {

int32_t default_n_ctx(const nld::hparams& hp) { return std::min(hp.n_ctx_train, 4096); }

// What a context of n_ctx slots in these types takes: its KV cache, and the
// activations of a forward of n_rows rows (<= 0: min(n_ctx, 512)).
struct context_memory {
    uint64_t kv = 0;
    uint64_t scratch = 0;
    int32_t n_rows = 0;
};

context_memory context_memory_for(const nld::model& m, int32_t n_ctx, nld::kv_type type_k, nld::kv_type type_v,
                                  int32_t n_rows) {
    const nld::hparams& hp = m.hp;
    context_memory c;
    c.n_rows = n_rows > 0 ? n_rows : std::min(n_ctx, nld::kDefaultForwardRows);
    c.kv = nld::kv_cache::bytes_for(hp.n_layer, n_ctx, hp.n_head_kv, hp.head_dim, type_k, type_v);
    const bool lossy = type_k != nld::kv_type::f32 || type_v != nld::kv_type::f32;
    c.scratch = nld::forward_scratch_bytes(hp, m.drafter ? m.drafter->rank : 0, c.n_rows, lossy);
    return c;
}

void fill_memory(const char* fn, const nld::model& m, const nld_memory_params& p, nld_memory* out) {
    const std::string f(fn);
    const int32_t n_ctx = p.n_ctx > 0 ? p.n_ctx : default_n_ctx(m.hp);
    if (n_ctx > (1 << 24)) nld::fail_argument(f + ": n_ctx " + std::to_string(n_ctx) + " is too large (at most 2^24)");
    if (p.n_rows > (1 << 20))
        nld::fail_argument(f + ": n_rows " + std::to_string(p.n_rows) + " is too large (at most 2^20)");
    const nld::kv_type type_k = nld::checked_kv_type(p.type_k, (f + ": type_k").c_str());
    const nld::kv_type type_v = nld::checked_kv_type(p.type_v, (f + ": type_v").c_str());
    const context_memory c = context_memory_for(m, n_ctx, type_k, type_v, p.n_rows);
    std::memset(out, 0, sizeof *out);
    out->weights_file_bytes = (int64_t)m.memory.file_bytes;
    out->weights_copy_bytes = (int64_t)m.memory.copy_bytes;
    out->weights_bytes = (int64_t)m.memory.total();
    out->kv_bytes = (int64_t)c.kv;
    out->scratch_bytes = (int64_t)c.scratch;
    out->total_bytes = out->weights_bytes + out->kv_bytes + out->scratch_bytes;
    out->n_ctx = n_ctx;
    out->n_rows = c.n_rows;
}

}  // namespace

nld_memory_params nld_memory_default_params(void) {
    nld_memory_params p;
    std::memset(&p, 0, sizeof p);
    p.n_ctx = 0;
    p.type_k = NLD_TYPE_F16;
    p.type_v = NLD_TYPE_F16;
    p.n_rows = 0;
    p.lora_path = nullptr;
    return p;
}

nld_status nld_memory_estimate(const char* path, const nld_memory_params* params, nld_memory* out) {
    NLD_REQUIRE(path != nullptr && out != nullptr, "nld_memory_estimate: NULL argument");
    const nld_memory_params p = params ? *params : nld_memory_default_params();
    return guarded("nld_memory_estimate", [&] {
        const std::unique_ptr<nld::model> m = nld::open_model(path, p.lora_path);
        fill_memory("nld_memory_estimate", *m, p, out);
        return NLD_OK;
    });
}

nld_status nld_model_memory_estimate(const nld_model* model, const nld_memory_params* params, nld_memory* out) {
    NLD_REQUIRE(model != nullptr && out != nullptr, "nld_model_memory_estimate: NULL argument");
    const nld_memory_params p = params ? *params : nld_memory_default_params();
    return guarded("nld_model_memory_estimate", [&] {
        fill_memory("nld_model_memory_estimate", *model->impl, p, out);
        return NLD_OK;
    });
}

nld_status nld_memory_available(int64_t* out_bytes) {
    NLD_REQUIRE(out_bytes != nullptr, "nld_memory_available: out_bytes is NULL");
    *out_bytes = -1;
    return guarded("nld_memory_available", [&] {
        *out_bytes = nld::available_memory_bytes();
        return NLD_OK;
    });
}

nld_status nld_context_create(nld_model* model, const nld_context_params* params, nld_context** out_ctx) {
    NLD_REQUIRE(out_ctx != nullptr, "nld_context_create: out_ctx is NULL");
    *out_ctx = nullptr;
    NLD_REQUIRE(model != nullptr, "nld_context_create: model is NULL");
    const nld_context_params p = params ? *params : nld_context_default_params();
    const nld::hparams& hp = model->impl->hp;
    const int32_t n_ctx = p.n_ctx > 0 ? p.n_ctx : default_n_ctx(hp);
    NLD_REQUIRE(n_ctx <= (1 << 24), "nld_context_create: n_ctx " + std::to_string(n_ctx) + " is too large");
    NLD_REQUIRE(p.n_threads <= 1024, "nld_context_create: n_threads " + std::to_string(p.n_threads) + " is too large");
    NLD_REQUIRE(nld::kv_type_name(p.type_k) != nullptr,
                "nld_context_create: type_k " + std::to_string(p.type_k) + " is not a cache type (f32 0, f16 1, q8_0 8)");
    NLD_REQUIRE(nld::kv_type_name(p.type_v) != nullptr,
                "nld_context_create: type_v " + std::to_string(p.type_v) + " is not a cache type (f32 0, f16 1, q8_0 8)");
    return guarded("nld_context_create", [&] {
        const auto type_k = (nld::kv_type)p.type_k, type_v = (nld::kv_type)p.type_v;
        const context_memory need = context_memory_for(*model->impl, n_ctx, type_k, type_v, 0);
        const bool smallest = type_k == nld::kv_type::q8_0 && type_v == nld::kv_type::q8_0;
        nld::require_available(need.kv + need.scratch,
                               "a context of n_ctx " + std::to_string(n_ctx) + " with " + nld::kv_type_name(p.type_k) +
                                   " keys and " + nld::kv_type_name(p.type_v) + " values",
                               "KV cache " + nld::format_bytes(need.kv) + ", activations of a " +
                                   std::to_string(need.n_rows) + "-row forward " + nld::format_bytes(need.scratch),
                               smallest ? "try a smaller n_ctx (-c)"
                                        : "try a smaller n_ctx (-c) or q8_0 cache types (-ctk q8_0 -ctv q8_0)");
        auto handle = std::make_unique<nld_context>();
        handle->impl = std::make_unique<nld::context>(*model->impl, n_ctx, p.n_threads, type_k, type_v);
        *out_ctx = handle.release();
        return NLD_OK;
    });
}

void nld_context_free(nld_context* ctx) { delete ctx; }

int32_t nld_context_n_ctx(const nld_context* ctx) { return ctx ? ctx->impl->cache.capacity() : -1; }

int32_t nld_context_n_cached(const nld_context* ctx) { return ctx ? ctx->impl->cache.n_cached() : -1; }

int64_t nld_context_cache_bytes(const nld_context* ctx) { return ctx ? (int64_t)ctx->impl->cache.bytes() : -1; }

nld_status nld_context_truncate(nld_context* ctx, int32_t n_keep) {
    NLD_REQUIRE(ctx != nullptr, "nld_context_truncate: ctx is NULL");
    return guarded("nld_context_truncate", [&] {
        ctx->impl->truncate(n_keep);
        return NLD_OK;
    });
}

nld_status nld_context_calibrate(nld_context* ctx, double max_seconds) {
    NLD_REQUIRE(ctx != nullptr, "nld_context_calibrate: ctx is NULL");
    NLD_REQUIRE(max_seconds > 0.0 && max_seconds <= 3600.0,
                "nld_context_calibrate: max_seconds must be in (0, 3600], got " + std::to_string(max_seconds));
    return guarded("nld_context_calibrate", [&] {
        nld::calibrate(*ctx->impl, max_seconds);
        return NLD_OK;
    });
}

nld_status nld_context_get_costs(const nld_context* ctx, nld_costs* out) {
    NLD_REQUIRE(ctx != nullptr && out != nullptr, "nld_context_get_costs: NULL argument");
    const nld::cost_model& c = ctx->impl->costs;
    std::memset(out, 0, sizeof *out);
    for (int i = 0; i < NLD_COST_SIZES; ++i) {
        out->rows[i] = nld::cost_model::kRows[(size_t)i];
        out->causal_s[i] = c.causal[(size_t)i];
        out->draft_s[i] = c.draft[(size_t)i];
    }
    out->step_overhead_s = c.step_overhead;
    out->adapt = c.adapt ? 1 : 0;
    out->measured = c.measured ? 1 : 0;
    return NLD_OK;
}

nld_status nld_context_set_costs(nld_context* ctx, const nld_costs* costs) {
    NLD_REQUIRE(ctx != nullptr && costs != nullptr, "nld_context_set_costs: NULL argument");
    for (int i = 0; i < NLD_COST_SIZES; ++i) {
        NLD_REQUIRE(std::isfinite(costs->causal_s[i]) && costs->causal_s[i] > 0.0,
                    "nld_context_set_costs: causal_s[" + std::to_string(i) + "] must be > 0 and finite");
        NLD_REQUIRE(i == 0 || (std::isfinite(costs->draft_s[i]) && costs->draft_s[i] > 0.0),
                    "nld_context_set_costs: draft_s[" + std::to_string(i) + "] must be > 0 and finite");
    }
    NLD_REQUIRE(std::isfinite(costs->step_overhead_s) && costs->step_overhead_s >= 0.0,
                "nld_context_set_costs: step_overhead_s must be >= 0 and finite");
    NLD_REQUIRE(costs->adapt == 0 || costs->adapt == 1, "nld_context_set_costs: adapt must be 0 or 1");
    nld::cost_model& c = ctx->impl->costs;
    for (int i = 0; i < NLD_COST_SIZES; ++i) {
        c.causal[(size_t)i] = costs->causal_s[i];
        c.draft[(size_t)i] = i == 0 ? costs->causal_s[0] : costs->draft_s[i];
    }
    c.step_overhead = costs->step_overhead_s;
    c.adapt = costs->adapt == 1;
    c.measured = true;
    return NLD_OK;
}

nld_status nld_context_reset_acceptance(nld_context* ctx) {
    NLD_REQUIRE(ctx != nullptr, "nld_context_reset_acceptance: ctx is NULL");
    ctx->impl->acceptance = nld::draft_acceptance{};
    return NLD_OK;
}

namespace {

// Checks one forward's arguments (fn and what name the call and the part in
// the message) and lays out its rows.
nld_status check_forward(const char* what, nld_context* ctx, const int32_t* tokens, int32_t n_tokens,
                         int32_t attention, int32_t logits, const float* logits_out, size_t logits_capacity) {
    const std::string w(what);
    NLD_REQUIRE(ctx != nullptr, w + ": ctx is NULL");
    NLD_REQUIRE(tokens != nullptr && n_tokens > 0, w + ": need at least one token");
    NLD_REQUIRE(attention == NLD_ATTENTION_CAUSAL || attention == NLD_ATTENTION_BIDIRECTIONAL,
                w + ": attention must be NLD_ATTENTION_CAUSAL or NLD_ATTENTION_BIDIRECTIONAL, got " +
                    std::to_string(attention));
    NLD_REQUIRE(logits >= NLD_LOGITS_NONE && logits <= NLD_LOGITS_ALL,
                w + ": logits must be NONE, LAST or ALL, got " + std::to_string(logits));
    const size_t rows = logits == NLD_LOGITS_NONE ? 0 : logits == NLD_LOGITS_LAST ? 1 : (size_t)n_tokens;
    const size_t need = rows * (size_t)ctx->impl->mdl.hp.n_vocab;
    NLD_REQUIRE(rows == 0 || logits_out != nullptr, w + ": logits_out is NULL");
    NLD_REQUIRE(logits_capacity >= need, w + ": logits_capacity " + std::to_string(logits_capacity) +
                                             " is smaller than the " + std::to_string(need) + " floats needed");
    return NLD_OK;
}

nld::row_layout layout_for(const nld::context& c, int32_t n_tokens, int32_t attention) {
    const int32_t C = c.cache.n_cached();
    return attention == NLD_ATTENTION_CAUSAL ? nld::row_layout::causal(C, n_tokens)
                                             : nld::row_layout::bidirectional(C, n_tokens, false);
}

nld::logits_rows rows_for(int32_t logits) {
    return logits == NLD_LOGITS_NONE ? nld::logits_rows::none
           : logits == NLD_LOGITS_LAST ? nld::logits_rows::last
                                       : nld::logits_rows::all;
}

}  // namespace

nld_status nld_context_forward(nld_context* ctx, const int32_t* tokens, int32_t n_tokens,
                               const nld_forward_params* params, float* logits_out, size_t logits_capacity) {
    const nld_forward_params p = params ? *params : nld_forward_default_params();
    const nld_status bad = check_forward("nld_context_forward", ctx, tokens, n_tokens, p.attention, p.logits,
                                         logits_out, logits_capacity);
    if (bad != NLD_OK) return bad;
    return guarded("nld_context_forward", [&] {
        nld::context& c = *ctx->impl;
        check_tokens(c.mdl, tokens, n_tokens, "tokens");
        nld::forward(c, tokens, layout_for(c, n_tokens, p.attention), rows_for(p.logits), logits_out);
        return NLD_OK;
    });
}

nld_status nld_forward_batch(const nld_batch_part* parts, int32_t n_parts) {
    NLD_REQUIRE(parts != nullptr && n_parts > 0, "nld_forward_batch: no parts");
    NLD_REQUIRE(n_parts <= 4096, "nld_forward_batch: " + std::to_string(n_parts) + " parts is too many");
    for (int32_t i = 0; i < n_parts; ++i) {
        const nld_batch_part& q = parts[i];
        const std::string what = "nld_forward_batch: part " + std::to_string(i);
        const nld_status bad = check_forward(what.c_str(), q.ctx, q.tokens, q.n_tokens, q.attention, q.logits,
                                             q.logits_out, q.logits_capacity);
        if (bad != NLD_OK) return bad;
    }
    return guarded("nld_forward_batch", [&] {
        std::vector<nld::row_layout> layouts;
        std::vector<nld::forward_part> fp;
        layouts.reserve((size_t)n_parts);
        for (int32_t i = 0; i < n_parts; ++i) {
            const nld_batch_part& q = parts[i];
            nld::context& c = *q.ctx->impl;
            check_tokens(c.mdl, q.tokens, q.n_tokens, ("part " + std::to_string(i) + " tokens").c_str());
            layouts.push_back(layout_for(c, q.n_tokens, q.attention));
        }
        for (int32_t i = 0; i < n_parts; ++i)
            fp.push_back(nld::forward_part{parts[i].ctx->impl.get(), parts[i].tokens, &layouts[(size_t)i],
                                           rows_for(parts[i].logits), parts[i].logits_out});
        nld::context& first = *parts[0].ctx->impl;
        nld::forward_batch(first.pool, first.scratch, fp.data(), n_parts);
        return NLD_OK;
    });
}

nld_generate_params nld_generate_default_params(void) {
    nld_generate_params p;
    std::memset(&p, 0, sizeof p);
    p.mode = NLD_MODE_AR;
    p.max_new_tokens = 256;
    p.block_length = 0;
    p.threshold = -1.0f;
    p.temperature = 0.0f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.seed = 0;
    p.stop_tokens = nullptr;
    p.n_stop_tokens = 0;
    p.max_thinking_tokens = -1;
    p.think_end_token = -1;
    p.use_lora = 1;
    p.ignore_eos = 0;
    p.adaptive_block = 0;
    p.canvas = nullptr;
    p.n_canvas = 0;
    return p;
}

nld_status nld_generator_create(nld_context* ctx, const int32_t* prompt, int32_t n_prompt,
                                const nld_generate_params* params, nld_generator** out_gen) {
    NLD_REQUIRE(out_gen != nullptr, "nld_generator_create: out_gen is NULL");
    *out_gen = nullptr;
    NLD_REQUIRE(ctx != nullptr, "nld_generator_create: ctx is NULL");
    NLD_REQUIRE(prompt != nullptr && n_prompt > 0, "nld_generator_create: the prompt is empty");
    const nld_generate_params p = params ? *params : nld_generate_default_params();
    nld::context& c = *ctx->impl;
    const nld::hparams& hp = c.mdl.hp;
    return guarded("nld_generator_create", [&] {
        check_tokens(c.mdl, prompt, n_prompt, "prompt");
        nld::generate_params g;
        g.mode = resolve_mode(p.mode, hp);
        if (p.max_new_tokens < 1)
            nld::fail_argument("max_new_tokens must be >= 1, got " + std::to_string(p.max_new_tokens));
        g.max_new_tokens = p.max_new_tokens;
        const bool block_mode = g.mode != nld::gen_mode::ar;
        g.block_length = p.block_length != 0 ? p.block_length : hp.block_size;
        if (block_mode && (g.block_length < 2 || g.block_length > 1024))
            nld::fail_argument("block_length must be in [2, 1024], got " + std::to_string(g.block_length));
        if (!(p.threshold < 0.0f || p.threshold <= 1.0f) || std::isnan(p.threshold))
            nld::fail_argument("threshold must be in [0, 1] (or < 0 for the default), got " +
                               std::to_string(p.threshold));
        const bool denoising = g.mode == nld::gen_mode::diffusion || g.mode == nld::gen_mode::infill;
        g.threshold = p.threshold >= 0.0f ? p.threshold : (denoising ? 0.9f : 0.0f);
        if (g.mode == nld::gen_mode::spec_quadratic && g.threshold > 0.0f)
            nld::fail_argument("spec-quadratic drafts in one pass: threshold must be 0");
        if (p.adaptive_block != 0 && p.adaptive_block != 1)
            nld::fail_argument("adaptive_block must be 0 or 1, got " + std::to_string(p.adaptive_block));
        if (p.adaptive_block && g.mode != nld::gen_mode::spec_linear)
            nld::fail_argument("adaptive_block applies to mode spec (auto always adapts)");
        g.adaptive_block = p.adaptive_block == 1;
        if ((g.adaptive_block || g.mode == nld::gen_mode::automatic) && g.threshold > 0.0f)
            nld::fail_argument(std::string(g.adaptive_block ? "adaptive spec" : "auto") +
                               " drafts in one pass: threshold must be 0");
        if (!(p.temperature >= 0.0f) || !std::isfinite(p.temperature))
            nld::fail_argument("temperature must be >= 0, got " + std::to_string(p.temperature));
        if (p.top_k < 0) nld::fail_argument("top_k must be >= 0, got " + std::to_string(p.top_k));
        if (!(p.top_p > 0.0f && p.top_p <= 1.0f))
            nld::fail_argument("top_p must be in (0, 1], got " + std::to_string(p.top_p));
        g.sampling = {p.temperature, p.top_k, p.top_p, p.seed, hp.mask_token_id};
        if (p.n_stop_tokens < 0 || p.n_stop_tokens > 1024 || (p.n_stop_tokens > 0 && !p.stop_tokens))
            nld::fail_argument("stop_tokens: bad count or NULL pointer");
        check_tokens(c.mdl, p.stop_tokens, p.n_stop_tokens, "stop_tokens");
        g.stop_tokens.assign(p.stop_tokens, p.stop_tokens + p.n_stop_tokens);
        if (hp.eos_token_id >= 0 && !p.ignore_eos) g.stop_tokens.push_back(hp.eos_token_id);
        g.max_thinking_tokens = p.max_thinking_tokens;
        if (p.max_thinking_tokens >= 0) {
            if (p.think_end_token < 0 || p.think_end_token >= hp.n_vocab || p.think_end_token == hp.mask_token_id)
                nld::fail_argument("max_thinking_tokens needs a valid think_end_token, got " +
                                   std::to_string(p.think_end_token));
            g.think_end_token = p.think_end_token;
        }
        g.use_lora = p.use_lora != 0;
        if (g.mode == nld::gen_mode::infill) {
            if (p.n_canvas < 1 || p.n_canvas > (1 << 20) || !p.canvas)
                nld::fail_argument("infill needs a canvas of 1 .. 1048576 tokens, got " + std::to_string(p.n_canvas) +
                                   (p.canvas ? "" : " (NULL)"));
            for (int32_t i = 0; i < p.n_canvas; ++i)
                if (p.canvas[i] < 0 || p.canvas[i] >= hp.n_vocab)
                    nld::fail_argument("canvas[" + std::to_string(i) + "] = " + std::to_string(p.canvas[i]) +
                                       " is neither a token id nor the mask id " + std::to_string(hp.mask_token_id));
            if ((int64_t)n_prompt + p.n_canvas > c.cache.capacity())
                throw nld::error(NLD_ERR_CONTEXT_FULL, "infill: the prompt (" + std::to_string(n_prompt) +
                                 " tokens) and the canvas (" + std::to_string(p.n_canvas) +
                                 ") do not fit n_ctx " + std::to_string(c.cache.capacity()));
            if (p.max_thinking_tokens >= 0) nld::fail_argument("infill has no thinking budget");
            g.canvas.assign(p.canvas, p.canvas + p.n_canvas);
            g.max_new_tokens = p.n_canvas;  // the whole canvas comes out
            g.stop_tokens.clear();          // an EOS the canvas holds or gets does not end it
        } else if (p.canvas || p.n_canvas) {
            nld::fail_argument("canvas applies to mode infill only");
        }
        auto handle = std::make_unique<nld_generator>();
        handle->impl = std::make_unique<nld::generator>(c, std::vector<int32_t>(prompt, prompt + n_prompt), g);
        *out_gen = handle.release();
        return NLD_OK;
    });
}

namespace {

void fill_step(const nld::generator& g, nld_step* out) {
    std::memset(out, 0, sizeof *out);
    out->tokens = g.new_tokens.data();
    out->n_tokens = (int32_t)g.new_tokens.size();
    out->canvas = g.canvas.empty() ? nullptr : g.canvas.data();
    out->n_canvas = (int32_t)g.canvas.size();
    out->finish_reason = (int32_t)g.finish();
    out->n_generated = (int32_t)g.output.size();
    out->n_forwards = g.n_forwards;
    out->n_rounds = (int32_t)g.accepted.size();
    out->last_accepted = g.accepted_this_step ? g.accepted.back() : -1;
    for (int32_t m : g.accepted) out->n_accepted += m;
    out->last_block_length = g.last_round_k;
    out->n_ar_steps = g.n_ar_steps;
}

}  // namespace

nld_status nld_generator_step(nld_generator* gen, nld_step* out) {
    NLD_REQUIRE(gen != nullptr && out != nullptr, "nld_generator_step: NULL argument");
    NLD_REQUIRE(gen->owner == nullptr,
                "nld_generator_step: the generator is in a scheduler, which steps it; remove it first");
    return guarded("nld_generator_step", [&] {
        nld::generator& g = *gen->impl;
        try {
            g.step();
        } catch (...) {
            g.fail();  // a failed step ends the generation; the cache keeps only committed tokens
            throw;
        }
        fill_step(g, out);
        return NLD_OK;
    });
}

void nld_generator_cancel(nld_generator* gen) {
    if (gen) gen->impl->cancel();
}

void nld_generator_free(nld_generator* gen) { delete gen; }

nld_scheduler_params nld_scheduler_default_params(void) {
    nld_scheduler_params p;
    std::memset(&p, 0, sizeof p);
    p.n_threads = 0;
    p.max_rows = 512;
    p.max_prefill_rows = 512;
    return p;
}

nld_status nld_scheduler_create(nld_model* model, const nld_scheduler_params* params, nld_scheduler** out_sched) {
    NLD_REQUIRE(out_sched != nullptr, "nld_scheduler_create: out_sched is NULL");
    *out_sched = nullptr;
    NLD_REQUIRE(model != nullptr, "nld_scheduler_create: model is NULL");
    const nld_scheduler_params p = params ? *params : nld_scheduler_default_params();
    NLD_REQUIRE(p.n_threads <= 1024, "nld_scheduler_create: n_threads " + std::to_string(p.n_threads) + " is too large");
    NLD_REQUIRE(p.max_rows <= (1 << 20), "nld_scheduler_create: max_rows " + std::to_string(p.max_rows) + " is too large");
    NLD_REQUIRE(p.max_prefill_rows <= (1 << 20),
                "nld_scheduler_create: max_prefill_rows " + std::to_string(p.max_prefill_rows) + " is too large");
    return guarded("nld_scheduler_create", [&] {
        nld::scheduler_params sp;
        sp.n_threads = p.n_threads;
        sp.max_rows = p.max_rows > 0 ? p.max_rows : 512;
        sp.max_prefill_rows = p.max_prefill_rows > 0 ? p.max_prefill_rows : 512;
        auto handle = std::make_unique<nld_scheduler>();
        handle->impl = std::make_unique<nld::scheduler>(*model->impl, sp);
        *out_sched = handle.release();
        return NLD_OK;
    });
}

void nld_scheduler_free(nld_scheduler* sched) { delete sched; }

nld_status nld_scheduler_add(nld_scheduler* sched, nld_generator* gen) {
    NLD_REQUIRE(sched != nullptr && gen != nullptr, "nld_scheduler_add: NULL argument");
    NLD_REQUIRE(gen->owner != sched, "nld_scheduler_add: the generator is already in this scheduler");
    NLD_REQUIRE(gen->owner == nullptr, "nld_scheduler_add: the generator is in another scheduler");
    NLD_REQUIRE(!gen->impl->finished(), "nld_scheduler_add: the generation has finished");
    return guarded("nld_scheduler_add", [&] {
        sched->members.reserve(sched->members.size() + 1);
        sched->impl->add(gen->impl.get());
        sched->members.push_back(gen);
        gen->owner = sched;
        return NLD_OK;
    });
}

nld_status nld_scheduler_remove(nld_scheduler* sched, nld_generator* gen) {
    NLD_REQUIRE(sched != nullptr && gen != nullptr, "nld_scheduler_remove: NULL argument");
    if (gen->owner != sched) return NLD_OK;
    sched->impl->remove(gen->impl.get());
    sched->forget(gen);
    gen->owner = nullptr;
    return NLD_OK;
}

nld_status nld_scheduler_step(nld_scheduler* sched, nld_scheduled_step* out_steps, int32_t capacity, int32_t* out_n) {
    NLD_REQUIRE(sched != nullptr && out_n != nullptr, "nld_scheduler_step: NULL argument");
    *out_n = 0;
    NLD_REQUIRE(capacity >= sched->impl->size(),
                "nld_scheduler_step: capacity " + std::to_string(capacity) + " is below the " +
                    std::to_string(sched->impl->size()) + " generators in the scheduler");
    NLD_REQUIRE(capacity == 0 || out_steps != nullptr, "nld_scheduler_step: out_steps is NULL");
    return guarded("nld_scheduler_step", [&] {
        sched->last = sched->impl->step();
        int32_t n = 0;
        for (const nld::scheduled_result& r : sched->last) {
            auto it = std::find_if(sched->members.begin(), sched->members.end(),
                                   [&](nld_generator* g) { return g->impl.get() == r.gen; });
            if (it == sched->members.end()) continue;  // cannot happen: every member has a handle
            nld_scheduled_step& o = out_steps[n++];
            o.generator = *it;
            fill_step(*r.gen, &o.step);
            o.status = r.status;
            o.error = r.message.c_str();
        }
        // Those that left (finished or failed) are no longer stepped by it.
        for (size_t i = 0; i < sched->members.size();) {
            nld_generator* g = sched->members[i];
            if (!sched->impl->contains(g->impl.get())) {
                g->owner = nullptr;
                sched->members.erase(sched->members.begin() + (long)i);
            } else {
                ++i;
            }
        }
        *out_n = n;
        return NLD_OK;
    });
}

nld_status nld_scheduler_get_stats(const nld_scheduler* sched, nld_scheduler_stats* out) {
    NLD_REQUIRE(sched != nullptr && out != nullptr, "nld_scheduler_get_stats: NULL argument");
    const nld::scheduler_stats& s = sched->impl->stats();
    std::memset(out, 0, sizeof *out);
    out->n_steps = s.n_steps;
    out->n_rows = s.n_rows;
    out->n_prefill_rows = s.n_prefill_rows;
    out->n_sequence_forwards = s.n_sequence_forwards;
    out->n_batched_forwards = s.n_batched_forwards;
    out->max_sequences = s.max_sequences;
    out->n_sequences = sched->impl->size();
    out->scratch_bytes = (int64_t)sched->impl->scratch_bytes();
    return NLD_OK;
}

nld_status nld_quant_row_bytes(int32_t ggml_type, int64_t n_per_row, size_t* out_bytes) {
    NLD_REQUIRE(out_bytes != nullptr, "nld_quant_row_bytes: out_bytes is NULL");
    return guarded("nld_quant_row_bytes", [&] {
        *out_bytes = checked_row_bytes("nld_quant_row_bytes", ggml_type, n_per_row);
        return NLD_OK;
    });
}

nld_status nld_quantize(int32_t ggml_type, const float* src, int64_t n_rows, int64_t n_per_row, void* dst,
                        size_t dst_capacity, size_t* out_bytes) {
    NLD_REQUIRE(src != nullptr && dst != nullptr && out_bytes != nullptr, "nld_quantize: NULL argument");
    *out_bytes = 0;
    return guarded("nld_quantize", [&] {
        const char* fn = "nld_quantize";
        require_codec_type(fn, ggml_type);
        const size_t row = checked_row_bytes(fn, ggml_type, n_per_row);
        const size_t total = checked_total(fn, n_rows, row, "output size");
        if (dst_capacity < total)
            nld::fail_argument("nld_quantize: dst_capacity " + std::to_string(dst_capacity) + " is smaller than the " +
                               std::to_string(total) + " bytes needed");
        check_block_alignment(fn, ggml_type, dst);
        // Rows are independent: large inputs use every core (the K-quant searches are slow).
        nld::threadpool pool((uint64_t)n_rows * (uint64_t)n_per_row >= (1u << 20) ? 0 : 1);
        pool.parallel_for(n_rows, [&](int64_t begin, int64_t end) {
            for (int64_t r = begin; r < end; ++r)
                quantize_row(ggml_type, src + r * n_per_row, static_cast<uint8_t*>(dst) + (size_t)r * row, n_per_row);
        });
        *out_bytes = total;
        return NLD_OK;
    });
}

nld_status nld_dequantize(int32_t ggml_type, const void* src, size_t src_bytes, int64_t n_rows, int64_t n_per_row,
                          float* dst, size_t dst_capacity) {
    NLD_REQUIRE(src != nullptr && dst != nullptr, "nld_dequantize: NULL argument");
    return guarded("nld_dequantize", [&] {
        const char* fn = "nld_dequantize";
        require_codec_type(fn, ggml_type);
        const size_t row = checked_row_bytes(fn, ggml_type, n_per_row);
        const size_t need = checked_total(fn, n_rows, row, "input size");
        const size_t n_out = checked_total(fn, n_rows, (size_t)n_per_row, "output size");
        if (src_bytes < need)
            nld::fail_argument("nld_dequantize: src_bytes " + std::to_string(src_bytes) + " is smaller than the " +
                               std::to_string(need) + " bytes of " + std::to_string(n_rows) + " rows");
        if (dst_capacity < n_out)
            nld::fail_argument("nld_dequantize: dst_capacity " + std::to_string(dst_capacity) +
                               " is smaller than the " + std::to_string(n_out) + " floats needed");
        check_block_alignment(fn, ggml_type, src);
        for (int64_t r = 0; r < n_rows; ++r)
            dequantize_row(ggml_type, static_cast<const uint8_t*>(src) + (size_t)r * row, dst + r * n_per_row,
                           n_per_row);
        return NLD_OK;
    });
}

int32_t nld_cpu_path_supported(int32_t path) {
    if (path == NLD_CPU_PATH_AUTO) return 1;
    if (path != NLD_CPU_PATH_SCALAR && path != NLD_CPU_PATH_AVX2 && path != NLD_CPU_PATH_AVX512_VNNI) return 0;
    return nld::cpu_path_supported((nld::cpu_path)path) ? 1 : 0;
}

int32_t nld_cpu_path_default(void) { return (int32_t)nld::default_cpu_path(); }

nld_status nld_matmul(int32_t ggml_type, const void* weights, size_t weight_bytes, int64_t n_out, int64_t n_in,
                      const float* x, int64_t n_rows, float* y, size_t y_capacity, int32_t cpu_path,
                      int32_t n_threads) {
    NLD_REQUIRE(weights != nullptr && x != nullptr && y != nullptr, "nld_matmul: NULL argument");
    NLD_REQUIRE(n_threads <= 1024, "nld_matmul: n_threads " + std::to_string(n_threads) + " is too large");
    return guarded("nld_matmul", [&] {
        const char* fn = "nld_matmul";
        const nld::ggml_type type = (nld::ggml_type)ggml_type;
        const bool quantized = ggml_type >= 0 && nld::is_block_quantized(type);
        if (!quantized && ggml_type != NLD_TYPE_F32 && ggml_type != NLD_TYPE_F16 && ggml_type != NLD_TYPE_BF16)
            nld::fail_argument("nld_matmul: weight type " + std::to_string(ggml_type) +
                               " is not F32, F16, BF16, Q4_0, Q8_0, Q4_K or Q6_K");
        const size_t row = checked_row_bytes(fn, ggml_type, n_in);
        const size_t need = checked_total(fn, n_out, row, "weight size");
        if (weight_bytes < need)
            nld::fail_argument("nld_matmul: weight_bytes " + std::to_string(weight_bytes) + " is smaller than the " +
                               std::to_string(need) + " bytes of " + std::to_string(n_out) + " rows");
        const size_t y_need = checked_total(fn, n_rows, checked_total(fn, n_out, 1, "output size"), "output size");
        if (y_capacity < y_need)
            nld::fail_argument("nld_matmul: y_capacity " + std::to_string(y_capacity) + " is smaller than the " +
                               std::to_string(y_need) + " floats needed");
        if (cpu_path < NLD_CPU_PATH_AUTO || cpu_path > NLD_CPU_PATH_AVX512_VNNI)
            nld::fail_argument("nld_matmul: unknown cpu_path " + std::to_string(cpu_path) +
                               " (0 auto, 1 scalar, 2 avx2, 3 avx512_vnni)");
        const nld::cpu_path path = cpu_path == NLD_CPU_PATH_AUTO ? nld::default_cpu_path() : (nld::cpu_path)cpu_path;
        if (!nld::cpu_path_supported(path))
            nld::fail_unsupported("nld_matmul: cpu_path " + std::to_string(cpu_path) + " does not run on this CPU");
        check_block_alignment(fn, ggml_type == NLD_TYPE_F32 ? NLD_TYPE_F32 : NLD_TYPE_Q8_0, weights);
        nld::weight_matrix w;
        w.type = type;
        w.n_in = n_in;
        w.n_out = n_out;
        w.row_bytes = row;
        w.data = static_cast<const uint8_t*>(weights);
        // A path with x8 kernels computes with the x8 layout, as a loaded
        // model does (rows a multiple of 8; other row counts as stored).
        std::vector<uint8_t> x8;
        if (quantized && nld::kernels_for(path).x8 && nld::can_repack_x8(w)) {
            x8.resize(nld::x8_bytes(ggml_type, n_out, n_in));
            nld::repack_x8(ggml_type, w.data, w.row_bytes, n_in, 0, n_out / nld::kGroupRows, x8.data());
            w.x8 = x8.data();
        }
        nld::threadpool pool(n_threads);
        if (quantized)
            nld::matmul_quantized(pool, w, x, y, n_rows, path);
        else
            nld::matmul(pool, w, x, y, n_rows);
        return NLD_OK;
    });
}

}  // extern "C"
