/*
 * nld.h: the whole public C API of nld_cpp (plain C99, standard headers only).
 *
 * Contract
 * - Every fallible call returns an nld_status. On failure it also sets a
 *   message for the calling thread, read with nld_last_error(); the message
 *   names what was wrong (the argument, the file field, the byte offset).
 *   Nothing aborts, exits or throws across this boundary.
 * - Objects are opaque handles created by *_load / *_create and released by
 *   the matching *_free. Passing NULL to a *_free function is a no-op.
 * - Parameter structs always come from *_default_params(); set the fields you
 *   need and pass a pointer. Fields may be appended in later versions.
 * - Threads: an nld_model is read-only after load and may be shared by any
 *   number of threads and contexts. An nld_context is used by one thread at a
 *   time; it must not outlive the model it was created from.
 *
 * The region between NLD_CDEF_BEGIN and NLD_CDEF_END is read verbatim by the
 * Python binding (cffi cdef): keep it free of preprocessor lines other than
 * integer #defines.
 */
#ifndef NLD_H
#define NLD_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define NLD_API __declspec(dllexport)
#else
#define NLD_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* NLD_CDEF_BEGIN */

#define NLD_API_VERSION 1

typedef enum nld_status {
    NLD_OK = 0,
    NLD_ERR_INVALID_ARGUMENT = 1, /* a bad argument from the caller */
    NLD_ERR_IO = 2,               /* a file could not be opened or mapped */
    NLD_ERR_FORMAT = 3,           /* a malformed or inconsistent GGUF file */
    NLD_ERR_UNSUPPORTED = 4,      /* valid, but not something we can run */
    NLD_ERR_OUT_OF_MEMORY = 5,
    NLD_ERR_CONTEXT_FULL = 6,     /* the tokens do not fit in n_ctx */
    NLD_ERR_INTERNAL = 7
} nld_status;

/* Attention kind of a forward pass (spec/nld-model.md section 5). */
typedef enum nld_attention {
    /* Causal over cache + new tokens; appends the new K/V to the cache.
     * logits row i predicts the token at position C+i+1. */
    NLD_ATTENTION_CAUSAL = 0,
    /* Bidirectional block: new tokens see the whole cache and each other; the
     * cache is read, never written. logits row i predicts the token at C+i. */
    NLD_ATTENTION_BIDIRECTIONAL = 1
} nld_attention;

/* Which logits rows a forward writes. */
typedef enum nld_logits {
    NLD_LOGITS_NONE = 0,
    NLD_LOGITS_LAST = 1, /* one row: the last new token */
    NLD_LOGITS_ALL = 2   /* one row per new token */
} nld_logits;

typedef struct nld_model nld_model;
typedef struct nld_context nld_context;

typedef struct nld_model_params {
    int32_t n_threads; /* threads used while loading; <= 0: all cores */
} nld_model_params;

typedef struct nld_context_params {
    int32_t n_ctx;     /* cache capacity in tokens; <= 0: min(model ctx, 4096) */
    int32_t n_threads; /* compute threads; <= 0: all cores */
} nld_context_params;

typedef struct nld_forward_params {
    int32_t attention; /* nld_attention */
    int32_t logits;    /* nld_logits */
} nld_forward_params;

/* Hyper-parameters and metadata read from the GGUF (copied out). */
typedef struct nld_model_info {
    int32_t n_vocab;
    int32_t n_embd;
    int32_t n_layer;
    int32_t n_head;
    int32_t n_head_kv;
    int32_t head_dim;
    int32_t n_ff;
    int32_t n_ctx_train;
    float rms_norm_eps;
    float rope_freq_base;
    float rope_scaling_factor;  /* effective YaRN factor */
    int32_t rope_orig_ctx;      /* original_max_position_embeddings */
    float yarn_beta_fast;
    float yarn_beta_slow;
    float attn_temperature_scale; /* beta of the query scale, 0 = none */
    int32_t bos_token_id;
    int32_t eos_token_id;
    int32_t mask_token_id;      /* -1 when the file has no diffusion keys */
    int32_t block_size;         /* 0 when the file has no diffusion keys */
    int32_t file_type;          /* general.file_type */
    int32_t has_diffusion;      /* 1 when the diffusion keys are present */
} nld_model_info;

/* Version and errors. */
NLD_API int32_t nld_api_version(void);
NLD_API const char* nld_status_name(nld_status status); /* static string */
/* The message of the last failed call on this thread ("" if none). Valid
 * until the next failing call on the same thread. */
NLD_API const char* nld_last_error(void);

NLD_API nld_model_params nld_model_default_params(void);
NLD_API nld_context_params nld_context_default_params(void);
NLD_API nld_forward_params nld_forward_default_params(void);

/* Model: load validates the whole file (container and model tensors). */
NLD_API nld_status nld_model_load(const char* path, const nld_model_params* params,
                                  nld_model** out_model);
NLD_API void nld_model_free(nld_model* model);
NLD_API nld_status nld_model_get_info(const nld_model* model, nld_model_info* out_info);
/* A string metadata value; *out_data points into the model (valid while the
 * model lives) and is not NUL-terminated. NLD_ERR_INVALID_ARGUMENT if the key
 * is absent or not a string. */
NLD_API nld_status nld_model_meta_string(const nld_model* model, const char* key,
                                         const char** out_data, size_t* out_len);

/* Context: the KV cache and scratch for one sequence. */
NLD_API nld_status nld_context_create(nld_model* model, const nld_context_params* params,
                                      nld_context** out_ctx);
NLD_API void nld_context_free(nld_context* ctx);
NLD_API int32_t nld_context_n_ctx(const nld_context* ctx);
/* Number of committed tokens in the cache (-1 if ctx is NULL). */
NLD_API int32_t nld_context_n_cached(const nld_context* ctx);
/* Drop cached tokens from position n_keep on (0 <= n_keep <= n_cached). */
NLD_API nld_status nld_context_truncate(nld_context* ctx, int32_t n_keep);

/* One forward over n_tokens new tokens at positions n_cached .. n_cached+n-1.
 * logits_out receives rows x n_vocab floats (rows per params->logits);
 * logits_capacity is its size in floats. It may be NULL with NLD_LOGITS_NONE. */
NLD_API nld_status nld_context_forward(nld_context* ctx, const int32_t* tokens, int32_t n_tokens,
                                       const nld_forward_params* params, float* logits_out,
                                       size_t logits_capacity);

/* Greedy autoregressive generation. Reuses the cached prefix that matches the
 * prompt (longest common prefix), evaluates the rest, then generates up to
 * max_new_tokens (stopping after EOS when stop_at_eos != 0). The mask token is
 * never produced. Writes the new tokens to out_tokens (capacity out_capacity)
 * and their count to *out_n. */
NLD_API nld_status nld_context_generate_greedy(nld_context* ctx, const int32_t* prompt,
                                               int32_t n_prompt, int32_t max_new_tokens,
                                               int32_t stop_at_eos, int32_t* out_tokens,
                                               int32_t out_capacity, int32_t* out_n);

/* NLD_CDEF_END */

#ifdef __cplusplus
}
#endif

#endif /* NLD_H */
