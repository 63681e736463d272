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
typedef struct nld_generator nld_generator;
typedef struct nld_scheduler nld_scheduler;

/* Generation modes (spec/nld-model.md section 6). */
typedef enum nld_mode {
    NLD_MODE_AR = 0,
    NLD_MODE_DIFFUSION = 1,      /* block diffusion with confidence commit */
    NLD_MODE_SPEC = 2,           /* linear self-speculation */
    NLD_MODE_SPEC_QUADRATIC = 3, /* quadratic self-speculation */
    NLD_MODE_AUTO = 4,           /* per step, an AR step or a linear speculation
                                    round of the draft length the context's cost
                                    model says is fastest; exact as AR */
    NLD_MODE_INFILL = 5          /* the canvas (known tokens, mask ids where to
                                    fill) after the prompt, denoised as diffusion
                                    blocks; known tokens are never changed */
} nld_mode;

typedef enum nld_finish {
    NLD_FINISH_NONE = 0,      /* still running */
    NLD_FINISH_STOP = 1,      /* EOS or a stop token was emitted (included) */
    NLD_FINISH_LENGTH = 2,    /* max_new_tokens reached */
    NLD_FINISH_CONTEXT = 3,   /* the next forward would not fit in n_ctx */
    NLD_FINISH_CANCELLED = 4
} nld_finish;

typedef struct nld_model_params {
    int32_t n_threads;      /* threads used while loading; <= 0: all cores */
    /* The drafter LoRA adapter GGUF for self-speculation. NULL: load
     * "<model without .gguf>.lora.gguf" when it exists beside the model;
     * "": load none. */
    const char* lora_path;
    /* Layers to run on a GPU (llama.cpp's n_gpu_layers): 0 (the default)
     * runs the CPU backend. This version has no GPU kernels: > 0 fails
     * with NLD_ERR_UNSUPPORTED saying whether the build lacks CUDA, the
     * machine a device, or the backend its kernels. */
    int32_t n_gpu_layers;
} nld_model_params;

typedef struct nld_context_params {
    int32_t n_ctx;     /* cache capacity in tokens; <= 0: min(model ctx, 4096) */
    int32_t n_threads; /* compute threads; <= 0: all cores */
    int32_t type_k;    /* KV cache keys: NLD_TYPE_F32, NLD_TYPE_F16 (the default's) or NLD_TYPE_Q8_0 */
    int32_t type_v;    /* KV cache values: the same three */
} nld_context_params;

typedef struct nld_forward_params {
    int32_t attention; /* nld_attention */
    int32_t logits;    /* nld_logits */
} nld_forward_params;

typedef struct nld_generate_params {
    int32_t mode;            /* nld_mode */
    int32_t max_new_tokens;  /* >= 1 */
    int32_t block_length;    /* block modes; 0: the model's diffusion.block_size.
                                Auto and adaptive spec: the longest draft length */
    float threshold;         /* confidence threshold in [0, 1]; < 0: the mode's
                                default (diffusion 0.9, speculation 0). Diffusion
                                with 0: the fixed schedule. */
    float temperature;       /* 0: greedy; > 0: sampling */
    int32_t top_k;           /* 0: no limit */
    float top_p;             /* (0, 1]; 1: no limit */
    uint64_t seed;           /* sampling seed */
    const int32_t* stop_tokens; /* extra stop ids besides the model's EOS */
    int32_t n_stop_tokens;
    int32_t max_thinking_tokens; /* diffusion: place think_end_token at this
                                    output index if none came yet; < 0: off */
    int32_t think_end_token;     /* the </think> id; < 0: none */
    int32_t use_lora;        /* speculation drafts use the drafter LoRA when loaded */
    int32_t ignore_eos;      /* 1: the model's EOS does not stop (stop_tokens still do) */
    int32_t adaptive_block;  /* spec: 1 chooses the draft length per round in
                                [2, block_length] by the cost model (threshold 0) */
    const int32_t* canvas;   /* infill: n_canvas tokens, the model's mask id where
                                to fill; the output is the whole canvas decided
                                (max_new_tokens and stop tokens do not apply) */
    int32_t n_canvas;
} nld_generate_params;

/* What one step did, and the running counters. */
typedef struct nld_step {
    const int32_t* tokens;   /* tokens emitted by this step, in order */
    int32_t n_tokens;
    const int32_t* canvas;   /* block modes: the current block, mask id where
                                still masked (diffusion) or the verified draft
                                (speculation); NULL in AR */
    int32_t n_canvas;
    int32_t finish_reason;   /* nld_finish */
    int32_t n_generated;     /* tokens emitted so far */
    int64_t n_forwards;      /* forward passes so far, counted per mode */
    int32_t n_rounds;        /* speculation rounds so far */
    int32_t last_accepted;   /* drafts accepted in this step's round; -1 if none */
    int64_t n_accepted;      /* drafts accepted over all rounds */
    int32_t last_block_length; /* draft length of this step's linear round; 0 if none */
    int64_t n_ar_steps;      /* auto: steps so far that were AR steps */
} nld_step;

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
    int32_t lora_rank;          /* drafter adapter rank, 0 when none is loaded */
} nld_model_info;

/* Version and errors. */
NLD_API int32_t nld_api_version(void);
NLD_API const char* nld_status_name(nld_status status); /* static string */
/* The message of the last failed call on this thread ("" if none). Valid
 * until the next failing call on the same thread. */
NLD_API const char* nld_last_error(void);

NLD_API nld_model_params nld_model_default_params(void);
/* CUDA devices the process sees: -1 if this build has no CUDA code. */
NLD_API int32_t nld_cuda_device_count(void);
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
/* Bytes of the context's KV cache (keys and values of every layer at n_ctx
 * slots, in its types); -1 for NULL. */
NLD_API int64_t nld_context_cache_bytes(const nld_context* ctx);
/* Drop cached tokens from position n_keep on (0 <= n_keep <= n_cached). */
NLD_API nld_status nld_context_truncate(nld_context* ctx, int32_t n_keep);

/* The cost model of mode auto and adaptive spec (docs/generation.md
 * "Auto"): seconds of a forward at NLD_COST_SIZES row counts (1, 2, 4, 8,
 * 16, 32), causal (AR step, verify) and draft (bidirectional, drafter LoRA),
 * and of a step outside its forwards. A new context holds a guess; with
 * adapt set, every forward a generation runs corrects it. */
#define NLD_COST_SIZES 6
typedef struct nld_costs {
    int32_t rows[NLD_COST_SIZES]; /* the row counts (filled by get; ignored by set) */
    double causal_s[NLD_COST_SIZES];
    double draft_s[NLD_COST_SIZES];  /* [0] (1 row) is never used */
    double step_overhead_s;
    int32_t adapt;     /* 1: real forwards correct the costs; 0: they stay as set */
    int32_t measured;  /* get: 1 once calibrated or set */
} nld_costs;
/* Times forwards over the context's cache within about max_seconds (> 0)
 * and installs the result (adapting); the cache is left as it was. */
NLD_API nld_status nld_context_calibrate(nld_context* ctx, double max_seconds);
NLD_API nld_status nld_context_get_costs(const nld_context* ctx, nld_costs* out_costs);
/* Installs costs: every entry > 0 and finite, overhead >= 0. */
NLD_API nld_status nld_context_set_costs(nld_context* ctx, const nld_costs* costs);
/* Forgets what earlier generations' drafts earned (the prior of the next). */
NLD_API nld_status nld_context_reset_acceptance(nld_context* ctx);

/* One forward over n_tokens new tokens at positions n_cached .. n_cached+n-1.
 * logits_out receives rows x n_vocab floats (rows per params->logits);
 * logits_capacity is its size in floats. It may be NULL with NLD_LOGITS_NONE. */
NLD_API nld_status nld_context_forward(nld_context* ctx, const int32_t* tokens, int32_t n_tokens,
                                       const nld_forward_params* params, float* logits_out,
                                       size_t logits_capacity);

/* One sequence's share of a batched forward (nld_forward_batch): the same
 * arguments as nld_context_forward. */
typedef struct nld_batch_part {
    nld_context* ctx;
    const int32_t* tokens;
    int32_t n_tokens;
    int32_t attention;      /* nld_attention */
    int32_t logits;         /* nld_logits */
    float* logits_out;
    size_t logits_capacity; /* floats */
} nld_batch_part;

/* One forward over the new tokens of n_parts sequences, each on its own
 * context of one model (no context twice): every weight matrix is applied
 * once to all their rows, attention runs per sequence over its own cache.
 * Each part's cache and logits are those nld_context_forward gives it alone,
 * bit for bit. Runs on the first part's context's threads. Nothing is
 * changed when any part is invalid (the message names it). */
NLD_API nld_status nld_forward_batch(const nld_batch_part* parts, int32_t n_parts);

/* Generation (docs/generation.md gives every rule). A generator runs one
 * generation on a context: create it with the prompt, call
 * nld_generator_step until the step's finish_reason is not NLD_FINISH_NONE,
 * free it. The prompt reuses the context's cached prefix (longest common
 * prefix), whatever mode produced it. One generator per context at a time;
 * the context must outlive it. nld_generator_cancel may be called from any
 * thread: the running or next step ends with NLD_FINISH_CANCELLED at the next
 * point where the cache holds only emitted tokens. */
NLD_API nld_generate_params nld_generate_default_params(void);
NLD_API nld_status nld_generator_create(nld_context* ctx, const int32_t* prompt, int32_t n_prompt,
                                        const nld_generate_params* params, nld_generator** out_gen);
/* One step: an AR token, a diffusion denoise pass (plus the commit pass
 * that ends a block), or a speculation round. Fills *out_step; its pointers
 * stay valid until the next step or free. */
NLD_API nld_status nld_generator_step(nld_generator* gen, nld_step* out_step);
NLD_API void nld_generator_cancel(nld_generator* gen);
NLD_API void nld_generator_free(nld_generator* gen);

/* Continuous batching (docs/batching.md). A scheduler steps many
 * generators together, each on its own context of the scheduler's model:
 * every nld_scheduler_step collects each generator's next forward (any mode,
 * any mix), runs them as one forward (every weight read once for all rows,
 * attention per sequence over its own cache) and hands each its logits. A
 * generator's tokens, counters and cache are those nld_generator_step gives
 * it alone. Used by one thread at a time, like a context; only
 * nld_generator_cancel may come from another thread. */
typedef struct nld_scheduler_params {
    int32_t n_threads;        /* compute threads; <= 0: all cores */
    int32_t max_rows;         /* rows of one batched forward (llama.cpp's n_batch); <= 0: 512 */
    int32_t max_prefill_rows; /* rows of one prompt chunk (n_ubatch); <= 0: 512 */
} nld_scheduler_params;

/* One generator whose step ended in a scheduler step. */
typedef struct nld_scheduled_step {
    nld_generator* generator;
    nld_step step;      /* as nld_generator_step fills it */
    int32_t status;     /* nld_status: NLD_OK, or why this generation failed
                           (it has then ended; step.finish_reason is CANCELLED) */
    const char* error;  /* the message when status is not NLD_OK, else "" */
} nld_scheduled_step;

typedef struct nld_scheduler_stats {
    int64_t n_steps;             /* steps that ran a forward */
    int64_t n_rows;              /* rows over all of them */
    int64_t n_prefill_rows;      /* prompt rows among n_rows */
    int64_t n_sequence_forwards; /* sequences over all forwards (one of 3 counts 3) */
    int64_t n_batched_forwards;  /* forwards that held two or more sequences */
    int32_t max_sequences;       /* the most sequences one forward held */
    int32_t n_sequences;         /* generators in the scheduler now */
    int64_t scratch_bytes;       /* activations held for batched forwards: grown to the
                                    largest batch so far (rows, logits rows), then reused */
} nld_scheduler_stats;

NLD_API nld_scheduler_params nld_scheduler_default_params(void);
NLD_API nld_status nld_scheduler_create(nld_model* model, const nld_scheduler_params* params,
                                        nld_scheduler** out_sched);
/* Generators still in it leave it (they can be stepped alone or freed). */
NLD_API void nld_scheduler_free(nld_scheduler* sched);
/* Starts stepping gen, which must run on the scheduler's model, on a context
 * no other generator in the scheduler uses. While it is in, it is stepped
 * only by nld_scheduler_step (nld_generator_step refuses); freeing it
 * removes it. */
NLD_API nld_status nld_scheduler_add(nld_scheduler* sched, nld_generator* gen);
/* Stops stepping gen (no-op if it is not in). */
NLD_API nld_status nld_scheduler_remove(nld_scheduler* sched, nld_generator* gen);
/* One batched forward. Fills out_steps[0 .. *out_n) with the generators whose
 * step ended (their emitted tokens, finish, counters); a finished or failed
 * one has left the scheduler. capacity must be at least the number of
 * generators in it. The steps' pointers stay valid until the next
 * scheduler step, or the generator's free. A failure of one generation
 * (context full, ...) is reported in its entry; the call itself fails only
 * on bad arguments. */
NLD_API nld_status nld_scheduler_step(nld_scheduler* sched, nld_scheduled_step* out_steps, int32_t capacity,
                                      int32_t* out_n);
NLD_API nld_status nld_scheduler_get_stats(const nld_scheduler* sched, nld_scheduler_stats* out_stats);

/* Quantization and the CPU matmul (quants/, docs/quants.md), for the
 * converter, tests and benchmarks. Types are GGML type ids:
 * NLD_TYPE_Q4_0 2, NLD_TYPE_Q8_0 8, NLD_TYPE_Q4_K 12, NLD_TYPE_Q6_K 14,
 * NLD_TYPE_Q8_K 15 (activations); nld_matmul also takes F32 0, F16 1,
 * BF16 30 weights. Rows are n_per_row elements, a multiple of the type's
 * block (32; 256 for the K types). All are thread-safe (no shared state). */
#define NLD_TYPE_F32 0
#define NLD_TYPE_F16 1
#define NLD_TYPE_Q4_0 2
#define NLD_TYPE_Q8_0 8
#define NLD_TYPE_Q4_K 12
#define NLD_TYPE_Q6_K 14
#define NLD_TYPE_Q8_K 15
#define NLD_TYPE_BF16 30

/* Bytes of one row of n_per_row elements of ggml_type. */
NLD_API nld_status nld_quant_row_bytes(int32_t ggml_type, int64_t n_per_row, size_t* out_bytes);
/* Encodes n_rows x n_per_row floats into dst (dst_capacity bytes);
 * *out_bytes receives the bytes written (n_rows * row bytes). Q8_0 and Q4_0
 * are bit-exact with ggml. Inputs of 2^20 elements or more are encoded on
 * all cores (rows are independent, so the bytes are the same). */
NLD_API nld_status nld_quantize(int32_t ggml_type, const float* src, int64_t n_rows, int64_t n_per_row,
                                void* dst, size_t dst_capacity, size_t* out_bytes);
/* Decodes n_rows x n_per_row elements from src (src_bytes bytes) into dst
 * (dst_capacity floats). */
NLD_API nld_status nld_dequantize(int32_t ggml_type, const void* src, size_t src_bytes, int64_t n_rows,
                                  int64_t n_per_row, float* dst, size_t dst_capacity);

/* CPU code paths of the quantized dot products. AUTO: the NLD_CPU_PATH
 * environment variable ("scalar", "avx2" or "avx512_vnni", read once per
 * process) when it names a path this CPU runs, else the fastest supported
 * path. Every path gives the scalar reference's results. */
typedef enum nld_cpu_path {
    NLD_CPU_PATH_AUTO = 0,
    NLD_CPU_PATH_SCALAR = 1,     /* the reference; every build and CPU */
    NLD_CPU_PATH_AVX2 = 2,       /* x86-64 with AVX2, FMA and F16C */
    NLD_CPU_PATH_AVX512_VNNI = 3 /* AVX2 plus AVX-512 F, BW, VL and VNNI */
} nld_cpu_path;
/* 1 if this build and CPU can run the path, else 0. */
NLD_API int32_t nld_cpu_path_supported(int32_t path);
/* The path AUTO resolves to. */
NLD_API int32_t nld_cpu_path_default(void);
/* y (n_rows x n_out floats) = x (n_rows x n_in floats) times the transpose
 * of the weights (n_out rows of n_in elements of ggml_type, weight_bytes
 * bytes), as the forward pass computes it: quantized weights used in place
 * with the activations quantized to 8 bit, on cpu_path, with n_threads
 * threads (<= 0: all cores). */
NLD_API nld_status nld_matmul(int32_t ggml_type, const void* weights, size_t weight_bytes, int64_t n_out,
                              int64_t n_in, const float* x, int64_t n_rows, float* y, size_t y_capacity,
                              int32_t cpu_path, int32_t n_threads);

/* Memory said up front (docs/memory.md). An estimate reads only the GGUF
 * header and tensor table (no weight is read or copied) and counts what a
 * load and a context would take:
 * - weights: what the load keeps: the file pages of every tensor used in
 *   place (plus the header), and the copies it makes (x8 repacks of the
 *   quantized matrices on a CPU path with x8 kernels, a dream file's
 *   re-ordered q/k rows), of the model and its drafter adapter;
 * - kv: the KV cache of a context of n_ctx slots in type_k / type_v, the
 *   bytes nld_context_cache_bytes reports for it;
 * - scratch: the activations of one forward of n_rows rows, with the logits
 *   of every row (the formula is in csrc/memory.h).
 * nld_model_load refuses (NLD_ERR_OUT_OF_MEMORY, before copying anything)
 * a model whose weights are more than nld_memory_available; nld_context_create
 * refuses a context whose KV cache plus the scratch of a forward of
 * min(n_ctx, 512) rows is. The messages name the numbers. */
typedef struct nld_memory_params {
    int32_t n_ctx;         /* <= 0: min(training context, 4096), as nld_context_create */
    int32_t type_k;        /* NLD_TYPE_F32, NLD_TYPE_F16 (the default's) or NLD_TYPE_Q8_0 */
    int32_t type_v;
    int32_t n_rows;        /* rows of the forward counted; <= 0: min(n_ctx, 512) */
    const char* lora_path; /* as nld_model_params.lora_path (NULL: the adapter beside the
                              model if any; "": none); ignored for a loaded model */
} nld_memory_params;

typedef struct nld_memory {
    int64_t weights_bytes;      /* weights_file_bytes + weights_copy_bytes */
    int64_t weights_file_bytes; /* file pages used in place (header included) */
    int64_t weights_copy_bytes; /* anonymous copies the load makes */
    int64_t kv_bytes;
    int64_t scratch_bytes;
    int64_t total_bytes;        /* weights + kv + scratch */
    int32_t n_ctx;              /* the n_ctx counted (the default resolved) */
    int32_t n_rows;             /* the rows counted */
} nld_memory;

NLD_API nld_memory_params nld_memory_default_params(void);
/* The estimate for the model file at path (validated as a load would; the
 * same errors for a bad file). */
NLD_API nld_status nld_memory_estimate(const char* path, const nld_memory_params* params, nld_memory* out);
/* The same estimate for a loaded model: its weights as loaded, a context
 * and forward per params. */
NLD_API nld_status nld_model_memory_estimate(const nld_model* model, const nld_memory_params* params,
                                             nld_memory* out);
/* Bytes this process can still take: MemAvailable of /proc/meminfo, lowered
 * to the headroom of its memory cgroups (v2 memory.max - memory.current, v1
 * memory.limit_in_bytes - memory.usage_in_bytes, their page cache counted
 * as free, as MemAvailable counts it), elsewhere the pages sysconf reports available; capped
 * at the environment variable NLD_MEMORY_LIMIT_BYTES (a byte count) when it
 * is set. -1 when unknown (then nothing is refused). NLD_ERR_INVALID_ARGUMENT
 * when NLD_MEMORY_LIMIT_BYTES is not a byte count. */
NLD_API nld_status nld_memory_available(int64_t* out_bytes);

/* NLD_CDEF_END */

#ifdef __cplusplus
}
#endif

#endif /* NLD_H */
