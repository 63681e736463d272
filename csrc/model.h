// model.h: what a loaded model is: hyper-parameters read from GGUF metadata
// (never guessed from a name), weights bound in place in the file mapping,
// and the derived RoPE tables. Read-only after load_model().
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "backend/cpu/ops.h"
#include "gguf.h"

namespace nld {

struct hparams {
    int32_t n_vocab = 0;
    int32_t n_embd = 0;
    int32_t n_layer = 0;
    int32_t n_head = 0;
    int32_t n_head_kv = 0;
    int32_t head_dim = 0;
    int32_t n_ff = 0;
    int32_t n_ctx_train = 0;
    float rms_norm_eps = 1e-5f;
    float rope_freq_base = 1e6f;
    bool rope_yarn = false;
    float rope_factor = 1.0f;       // effective YaRN factor (spec section 4)
    int32_t rope_orig_ctx = 0;      // original_max_position_embeddings
    float yarn_beta_fast = 32.0f;
    float yarn_beta_slow = 1.0f;
    float yarn_attn_factor = 1.0f;  // cos/sin multiplier
    float attn_temperature_scale = 0.0f;  // beta of q *= 1 + beta*ln(1 + floor(pos/L))
    int32_t bos_token_id = -1;
    int32_t eos_token_id = -1;
    int32_t mask_token_id = -1;
    int32_t block_size = 0;
    int32_t file_type = -1;
    bool has_diffusion = false;
};

struct layer_weights {
    const float* attn_norm = nullptr;  // (n_embd)
    weight_matrix wq;                  // (n_head*head_dim, n_embd), rope pairs adjacent
    weight_matrix wk;                  // (n_head_kv*head_dim, n_embd), rope pairs adjacent
    weight_matrix wv;                  // (n_head_kv*head_dim, n_embd)
    weight_matrix wo;                  // (n_embd, n_head*head_dim)
    const float* ffn_norm = nullptr;   // (n_embd)
    weight_matrix ffn_gate;            // (n_ff, n_embd)
    weight_matrix ffn_up;              // (n_ff, n_embd)
    weight_matrix ffn_down;            // (n_embd, n_ff)
};

// The drafter LoRA of self-speculation (spec section 6.4): on o_proj only,
// delta W_o = scale * B A, applied per pass (never merged into W_o).
struct lora_adapter {
    std::unique_ptr<gguf_file> file;
    int32_t rank = 0;
    float scale = 0.0f;             // adapter.lora.alpha / rank
    std::vector<weight_matrix> a;   // (n_layer) each (rank, n_head*head_dim)
    std::vector<weight_matrix> b;   // (n_layer) each (n_embd, rank)
};

// Anonymous memory (huge pages where the kernel grants them) holding the
// x8 copies of the quantized matrices; unmapped with the model.
struct x8_store {
    uint8_t* data = nullptr;
    size_t bytes = 0;
    x8_store() = default;
    x8_store(const x8_store&) = delete;
    x8_store& operator=(const x8_store&) = delete;
    ~x8_store();
};

// The memory a model's weights keep once loaded, planned from the tensor
// table before anything is copied (the load checks it against the memory
// available, nld_memory_estimate reports it).
struct weight_memory {
    // File pages read in place: the header (metadata and tokenizer) and every
    // tensor the load does not copy, of the model and of its drafter adapter.
    // Token embedding rows are read only for the tokens seen, the rest
    // whenever the weights are used.
    uint64_t file_bytes = 0;
    // Anonymous memory of the copies: the x8 repacks (64-byte aligned parts)
    // and a dream file's re-ordered q/k rows. Their file pages are released.
    uint64_t copy_bytes = 0;
    uint64_t total() const { return file_bytes + copy_bytes; }
};

class backend;

struct model {
    std::unique_ptr<gguf_file> file;
    bool hf_rope_order = false;  // a dream file: q/k rows re-ordered into `permuted` at load
    weight_memory memory;        // what the load keeps (planned before it copies)
    x8_store x8;  // empty unless the CPU path has x8 kernels (backend/cpu/ops.h)
    x8_store permuted;  // dream files: their q/k rows in our order (empty otherwise)
    hparams hp;
    weight_matrix tok_embd;            // (n_vocab, n_embd)
    std::vector<layer_weights> layers; // (n_layer)
    const float* output_norm = nullptr;  // (n_embd)
    weight_matrix output;              // (n_vocab, n_embd), untied in NLD files
    std::vector<float> rope_inv_freq;  // (head_dim / 2)
    std::unique_ptr<lora_adapter> drafter;  // null without an adapter file
    const backend* be = nullptr;           // runs its forwards (backend/backend.h): the CPU's unless chosen
};

// Opens, validates and binds a model: our mistral3 files, and the dream
// files written for NLD by a llama.cpp fork (docs/gguf-keys.md, "Layouts we
// read"), whose q/k rows are re-ordered at load. On a CPU path with x8 kernels
// (quants/repack.h), every quantized matrix whose row count is a multiple
// of 8 is copied once into the x8 layout (same bytes as the file, Q4_K
// +2.8%), and the file pages it came from are released, so resident memory
// stays about the size of the weights. lora_path: the drafter adapter GGUF;
// nullptr looks for "<model without .gguf>.lora.gguf" beside the model and
// loads it when present; "" loads none. Throws nld::error naming the problem.
// Before it copies anything, the load checks memory.total() against the
// memory available (memory.h) and fails with NLD_ERR_OUT_OF_MEMORY, naming
// both, when it does not fit.
std::unique_ptr<model> load_model(const std::string& path, const char* lora_path);

// The first half of load_model: opens and validates the model (and its
// drafter, lora_path as above) and binds every weight in place, reading no
// weight and copying nothing; memory says what the rest of a load would
// keep. Its matrices point into the file (a dream file's q/k rows still in
// the Hugging Face order): for planning, not for computing.
std::unique_ptr<model> open_model(const std::string& path, const char* lora_path);

// Opens and validates a drafter adapter for m. Throws nld::error.
std::unique_ptr<lora_adapter> load_lora(const model& m, const std::string& path);

// YaRN inverse frequencies exactly as transformers computes them (spec
// section 4); plain RoPE when yarn is false. Exposed for tests.
std::vector<float> rope_inverse_frequencies(const hparams& hp);

}  // namespace nld
