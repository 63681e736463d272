// model.cpp: hyper-parameters from GGUF metadata, model-level validation
// (required tensors, shapes, counts, token ids) and weight binding. The
// container itself was validated by gguf.cpp.
#include "model.h"

#include <sys/mman.h>  // mmap, madvise
#include <unistd.h>    // sysconf

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <unordered_set>

#include "backend/backend.h"
#include "error.h"
#include "memory.h"
#include "quants/repack.h"

namespace nld {

namespace {

constexpr const char* kArch = "mistral3";
// A llama.cpp fork's NLD converter writes architecture "dream" (docs/gguf-keys.md).
constexpr const char* kDreamArch = "dream";
// What dream files leave out, from NLD's config.json (spec/nld-model.md section 2).
constexpr int32_t kDreamBlockSize = 32;             // block_size
constexpr double kDreamTemperatureScale = 0.1;      // rope_parameters.llama_4_scaling_beta
constexpr const char* kLayerTensors[] = {"attn_norm.weight", "attn_q.weight", "attn_k.weight",
                                         "attn_v.weight", "attn_output.weight", "ffn_norm.weight",
                                         "ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"};


// Reads an unsigned key and checks it lies in [lo, hi].
int32_t read_count(const gguf_file& f, const std::string& k, int64_t lo, int64_t hi, const uint64_t* fallback) {
    const uint64_t v = fallback ? f.get_uint(k, *fallback) : f.require_uint(k);
    if ((int64_t)v < lo || v > (uint64_t)hi)
        fail_format("key '" + k + "' = " + std::to_string(v) + " is outside [" + std::to_string(lo) + ", " +
                    std::to_string(hi) + "]");
    return (int32_t)v;
}

float read_float(const gguf_file& f, const std::string& k, double fallback) {
    const double v = f.get_float(k, fallback);
    if (!std::isfinite(v)) fail_format("key '" + k + "' is not a finite number");
    return (float)v;
}

int32_t read_token_id(const gguf_file& f, const char* k, int32_t n_vocab, int32_t fallback) {
    if (!f.has(k)) return fallback;
    const uint64_t v = f.require_uint(k);
    if (v >= (uint64_t)n_vocab)
        fail_format(std::string("token id key '") + k + "' = " + std::to_string(v) + " is outside the vocabulary (" +
                    std::to_string(n_vocab) + " tokens)");
    return (int32_t)v;
}

hparams read_hparams(const gguf_file& f, const std::string& arch) {
    auto key = [&](const char* suffix) { return arch + "." + suffix; };
    hparams hp;
    hp.n_embd = read_count(f, key("embedding_length"), 1, 1 << 17, nullptr);
    hp.n_layer = read_count(f, key("block_count"), 1, 4096, nullptr);
    hp.n_ff = read_count(f, key("feed_forward_length"), 1, 1 << 20, nullptr);
    hp.n_head = read_count(f, key("attention.head_count"), 1, 4096, nullptr);
    const uint64_t n_head = (uint64_t)hp.n_head;
    hp.n_head_kv = read_count(f, key("attention.head_count_kv"), 1, 4096, &n_head);
    if (hp.n_head % hp.n_head_kv != 0)
        fail_format("attention.head_count " + std::to_string(hp.n_head) + " is not a multiple of head_count_kv " +
                    std::to_string(hp.n_head_kv));
    const uint64_t default_hd = (uint64_t)(hp.n_embd / hp.n_head);
    hp.head_dim = read_count(f, key("attention.key_length"), 2, 4096, &default_hd);
    const uint64_t hd = (uint64_t)hp.head_dim;
    if (read_count(f, key("attention.value_length"), 1, 4096, &hd) != hp.head_dim)
        fail_unsupported("attention.value_length differs from key_length");
    if (hp.head_dim % 2 != 0) fail_format("attention.key_length must be even for RoPE");
    if (read_count(f, key("rope.dimension_count"), 1, 4096, &hd) != hp.head_dim)
        fail_unsupported("rope.dimension_count differs from the head size (partial RoPE is not supported)");
    hp.n_ctx_train = read_count(f, key("context_length"), 1, 1 << 30, nullptr);
    hp.rms_norm_eps = read_float(f, key("attention.layer_norm_rms_epsilon"), 1e-5);
    hp.rope_freq_base = read_float(f, key("rope.freq_base"), 10000.0);
    if (!(hp.rope_freq_base > 1.0f)) fail_format("rope.freq_base must be > 1");

    const std::string_view scaling = f.get_string(key("rope.scaling.type"), "none");
    if (scaling == "yarn") {
        hp.rope_yarn = true;
        hp.rope_factor = read_float(f, key("rope.scaling.factor"), 1.0);
        if (!(hp.rope_factor > 0.0f)) fail_format("rope.scaling.factor must be > 0");
        hp.rope_orig_ctx = read_count(f, key("rope.scaling.original_context_length"), 1, 1 << 30, nullptr);
        hp.yarn_beta_fast = read_float(f, key("rope.scaling.yarn_beta_fast"), 32.0);
        hp.yarn_beta_slow = read_float(f, key("rope.scaling.yarn_beta_slow"), 1.0);
        // nld.rope.scaling.attn_factor is written by our converter (computed as
        // transformers does). Files without it: mscale == mscale_all_dim is
        // assumed, which makes the factor exactly 1.
        hp.yarn_attn_factor = read_float(f, "nld.rope.scaling.attn_factor", 1.0);
    } else if (scaling != "none") {
        fail_unsupported("rope.scaling.type '" + std::string(scaling) + "' is not supported (yarn or none)");
    }
    hp.attn_temperature_scale = read_float(f, key("attention.temperature_scale"),
                                           arch == kDreamArch ? kDreamTemperatureScale : 0.0);
    if (hp.rope_orig_ctx == 0) hp.rope_orig_ctx = hp.n_ctx_train;
    hp.file_type = f.has("general.file_type") ? read_count(f, "general.file_type", 0, 1024, nullptr) : -1;
    return hp;
}

weight_matrix bind_matrix(const gguf_file& f, const std::string& name, int64_t n_in, int64_t n_out) {
    const gguf_tensor* t = f.find_tensor(name);
    if (!t) fail_format("missing required tensor '" + name + "'");
    if (t->n_dims != 2 || t->ne[0] != n_in || t->ne[1] != n_out)
        fail_format("tensor '" + name + "' has shape [" + std::to_string(t->ne[0]) + ", " + std::to_string(t->ne[1]) +
                    "] (" + std::to_string(t->n_dims) + " dims), expected [" + std::to_string(n_in) + ", " +
                    std::to_string(n_out) + "]");
    switch (t->type) {
    case ggml_type::f32: case ggml_type::f16: case ggml_type::bf16: case ggml_type::q8_0: case ggml_type::q4_0:
    case ggml_type::q4_k: case ggml_type::q6_k: break;
    default:
        fail_unsupported("tensor '" + name + "' has type " + ggml_type_name(t->type) +
                         ", which this version cannot compute with");
    }
    weight_matrix w;
    w.type = t->type;
    w.n_in = n_in;
    w.n_out = n_out;
    w.row_bytes = t->n_bytes / (uint64_t)n_out;
    w.data = t->data;
    return w;
}

const float* bind_norm(const gguf_file& f, const std::string& name, int64_t dim) {
    const gguf_tensor* t = f.find_tensor(name);
    if (!t) fail_format("missing required tensor '" + name + "'");
    if (t->n_dims != 1 || t->ne[0] != dim)
        fail_format("tensor '" + name + "' has " + std::to_string(t->n_dims) + " dims and ne0 " +
                    std::to_string(t->ne[0]) + ", expected a vector of " + std::to_string(dim));
    if (t->type != ggml_type::f32)
        fail_format("norm tensor '" + name + "' has type " + ggml_type_name(t->type) + ", expected F32");
    return reinterpret_cast<const float*>(t->data);
}

size_t aligned64(uint64_t bytes) { return (size_t)((bytes + 63) / 64 * 64); }

// The matrices the load copies into the x8 layout: none unless the CPU path
// has x8 kernels; then every layer matrix and an untied head that can take
// it (the token embedding is read by rows, as stored).
std::vector<weight_matrix*> x8_candidates(model& m) {
    std::vector<weight_matrix*> todo;
    if (!kernels_for(default_cpu_path()).x8) return todo;
    auto consider = [&](weight_matrix& w) {
        if (can_repack_x8(w)) todo.push_back(&w);
    };
    for (layer_weights& L : m.layers)
        for (weight_matrix* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.ffn_gate, &L.ffn_up, &L.ffn_down}) consider(*w);
    if (m.output.data != m.tok_embd.data) consider(m.output);
    return todo;
}

size_t x8_part_bytes(const weight_matrix& w) { return aligned64(x8_bytes((int32_t)w.type, w.n_out, w.n_in)); }
size_t matrix_part_bytes(const weight_matrix& w) { return aligned64(w.row_bytes * (uint64_t)w.n_out); }

// Drops the file pages wholly inside [data, data + bytes) from memory (the
// mapping stays valid: a later read faults them back).
void release_file_pages(const uint8_t* data, uint64_t bytes) {
    const long page = sysconf(_SC_PAGESIZE);
    const uintptr_t lo = ((uintptr_t)data + page - 1) / page * page;
    const uintptr_t hi = ((uintptr_t)data + bytes) / page * page;
    if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
}

// Copies every x8 candidate into one anonymous mapping (64-byte aligned
// parts), on all cores, then drops the file pages they came from.
void repack_for_x8(model& m) {
    const std::vector<weight_matrix*> todo = x8_candidates(m);
    if (todo.empty()) return;
    size_t total = 0;
    for (const weight_matrix* w : todo) total += x8_part_bytes(*w);
    void* p = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        throw error(NLD_ERR_OUT_OF_MEMORY, "cannot map " + std::to_string(total >> 20) + " MiB for the repacked weights");
    m.x8.data = static_cast<uint8_t*>(p);
    m.x8.bytes = total;
#ifdef MADV_HUGEPAGE
    madvise(p, total, MADV_HUGEPAGE);  // fewer TLB misses while streaming weights; a hint only
#endif
    threadpool pool(0);
    size_t offset = 0;
    for (weight_matrix* w : todo) {
        uint8_t* dst = m.x8.data + offset;
        pool.parallel_for(w->n_out / kGroupRows, [&](int64_t g0, int64_t g1) {
            repack_x8((int32_t)w->type, w->data, w->row_bytes, w->n_in, g0, g1, dst);
        });
        w->x8 = dst;
        offset += x8_part_bytes(*w);
        if (w->data >= m.permuted.data && w->data < m.permuted.data + m.permuted.bytes) continue;  // not file pages
        release_file_pages(w->data, w->row_bytes * (uint64_t)w->n_out);
    }
}

// What the rest of the load keeps of m's weights (bound in place, nothing
// copied yet): the copies permute_rope_rows and repack_for_x8 will make, and
// the file bytes of every tensor neither of them copies, plus the headers.
weight_memory plan_weight_memory(model& m) {
    weight_memory mem;
    std::unordered_set<const uint8_t*> copied;  // file data of the tensors copied
    if (m.hf_rope_order)
        for (const layer_weights& L : m.layers)
            for (const weight_matrix* w : {&L.wq, &L.wk}) {
                mem.copy_bytes += matrix_part_bytes(*w);
                copied.insert(w->data);
            }
    for (const weight_matrix* w : x8_candidates(m)) {
        mem.copy_bytes += x8_part_bytes(*w);
        copied.insert(w->data);
    }
    mem.file_bytes = m.file->data_offset();
    for (const gguf_tensor& t : m.file->tensors())
        if (!copied.count(t.data)) mem.file_bytes += t.n_bytes;
    if (m.drafter) {
        mem.file_bytes += m.drafter->file->data_offset();
        for (const gguf_tensor& t : m.drafter->file->tensors()) mem.file_bytes += t.n_bytes;
    }
    return mem;
}

// A dream file is NLD only with NLD's diffusion signature; Dream and LLaDA
// models share the architecture name but not the model.
void require_nld_signature(const gguf_file& f) {
    std::string missing;
    if (!f.has("diffusion.shift_logits")) missing += " diffusion.shift_logits (= false);";
    else if (f.get_bool("diffusion.shift_logits", true))
        missing += " diffusion.shift_logits is true (Dream predicts shifted; NLD does not);";
    if (!f.has("tokenizer.ggml.mask_token_id")) missing += " tokenizer.ggml.mask_token_id;";
    if (!missing.empty())
        fail_unsupported("this 'dream' file is not a Nemotron-Labs-Diffusion model (a Dream or LLaDA model?): "
                         "NLD files carry" + missing.substr(0, missing.size() - 1));
}

// Dream files keep q/k rows in the HF order, where RoPE pairs dimension j
// with j + d/2; the forward pairs adjacent rows (2j, 2j+1), the order our
// converter writes. Rows are quantized one at a time, so moving whole rows
// gives the bytes our converter writes for the same checkpoint, in any type.
// The file pages of the rows are released once copied.
void permute_rope_rows(model& m) {
    const hparams& hp = m.hp;
    const int64_t half = hp.head_dim / 2;
    size_t total = 0;
    for (const layer_weights& L : m.layers) total += matrix_part_bytes(L.wq) + matrix_part_bytes(L.wk);
    void* p = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw error(NLD_ERR_OUT_OF_MEMORY, "cannot map " + std::to_string(total >> 20) + " MiB for q/k");
    m.permuted.data = static_cast<uint8_t*>(p);
    m.permuted.bytes = total;
    uint8_t* dst = m.permuted.data;
    for (layer_weights& L : m.layers) {
        for (weight_matrix* w : {&L.wq, &L.wk}) {
            const int64_t heads = w->n_out / hp.head_dim;
            for (int64_t h = 0; h < heads; ++h)
                for (int64_t j = 0; j < half; ++j)
                    for (int64_t s = 0; s < 2; ++s)
                        std::memcpy(dst + (uint64_t)(h * hp.head_dim + 2 * j + s) * w->row_bytes,
                                    w->data + (uint64_t)(h * hp.head_dim + s * half + j) * w->row_bytes, w->row_bytes);
            release_file_pages(w->data, w->row_bytes * (uint64_t)w->n_out);
            w->data = dst;
            dst += matrix_part_bytes(*w);
        }
    }
}

}  // namespace

x8_store::~x8_store() {
    if (data) munmap(data, bytes);
}

std::vector<float> rope_inverse_frequencies(const hparams& hp) {
    const int64_t dim = hp.head_dim, half = dim / 2;
    const float base = hp.rope_freq_base;
    std::vector<float> inv(half);
    if (!hp.rope_yarn) {
        for (int64_t j = 0; j < half; ++j) inv[j] = 1.0f / std::pow(base, (float)(2 * j) / (float)dim);
        return inv;
    }
    // corr(r) = dim*ln(L/(2*pi*r)) / (2*ln(base)), then floor/ceil and clamp.
    const double L = hp.rope_orig_ctx;
    auto corr = [&](double r) { return dim * std::log(L / (r * 2 * M_PI)) / (2 * std::log((double)base)); };
    double low = std::max(std::floor(corr(hp.yarn_beta_fast)), 0.0);
    double high = std::min(std::ceil(corr(hp.yarn_beta_slow)), (double)(dim - 1));
    if (low == high) high += 0.001;
    for (int64_t j = 0; j < half; ++j) {
        const float pos_freq = std::pow(base, (float)(2 * j) / (float)dim);  // f32, as transformers
        const float inv_extra = 1.0f / pos_freq;
        const float inv_inter = 1.0f / (hp.rope_factor * pos_freq);
        float ramp = (float)(((float)j - (float)low) / (float)(high - low));
        ramp = std::min(1.0f, std::max(0.0f, ramp));
        const float extra = 1.0f - ramp;
        inv[j] = inv_inter * (1.0f - extra) + inv_extra * extra;
    }
    return inv;
}

std::unique_ptr<lora_adapter> load_lora(const model& m, const std::string& path) {
    auto lora = std::make_unique<lora_adapter>();
    lora->file = gguf_file::open(path);
    const gguf_file& f = *lora->file;
    if (f.get_string("general.type", "") != "adapter" || f.get_string("adapter.type", "") != "lora")
        fail_format(path + ": not a LoRA adapter (general.type must be 'adapter', adapter.type 'lora')");
    const std::string_view arch = f.get_string("general.architecture", "");
    if (arch != kArch) fail_unsupported(path + ": adapter architecture '" + std::string(arch) + "' is not mistral3");
    const gguf_tensor* a0 = f.find_tensor("blk.0.attn_output.weight.lora_a");
    if (!a0 || a0->n_dims != 2 || a0->ne[1] < 1 || a0->ne[1] > 4096)
        fail_format(path + ": missing or malformed tensor 'blk.0.attn_output.weight.lora_a'");
    lora->rank = (int32_t)a0->ne[1];
    const double alpha = f.require_float("adapter.lora.alpha");
    if (!(alpha > 0.0) || !std::isfinite(alpha)) fail_format(path + ": adapter.lora.alpha must be > 0");
    lora->scale = (float)(alpha / lora->rank);
    const hparams& hp = m.hp;
    const int64_t Q = (int64_t)hp.n_head * hp.head_dim;
    for (int32_t i = 0; i < hp.n_layer; ++i) {
        const std::string p = "blk." + std::to_string(i) + ".attn_output.weight.lora_";
        lora->a.push_back(bind_matrix(f, p + "a", Q, lora->rank));
        lora->b.push_back(bind_matrix(f, p + "b", lora->rank, hp.n_embd));
    }
    if (f.tensors().size() != (size_t)hp.n_layer * 2)
        fail_unsupported(path + ": the adapter has tensors other than attn_output lora_a/lora_b per layer");
    return lora;
}

std::unique_ptr<model> open_model(const std::string& path, const char* lora_path) {
    auto m = std::make_unique<model>();
    m->file = gguf_file::open(path);
    const gguf_file& f = *m->file;

    const std::string arch(f.require_string("general.architecture"));
    const bool dream = arch == kDreamArch;
    m->hf_rope_order = dream;
    if (arch != kArch && !dream)
        fail_unsupported("unsupported architecture '" + arch + "' (supported: mistral3, and dream files of NLD)");
    if (dream) require_nld_signature(f);
    hparams& hp = m->hp;
    hp = read_hparams(f, arch);
    auto key = [&](const char* suffix) { return arch + "." + suffix; };

    // The vocabulary size comes from the embedding; metadata must agree.
    const gguf_tensor* embd = f.find_tensor("token_embd.weight");
    if (!embd) fail_format("missing required tensor 'token_embd.weight'");
    if (embd->n_dims != 2 || embd->ne[1] < 1 || embd->ne[1] > (1 << 24))
        fail_format("tensor 'token_embd.weight' must be 2-D with at most 2^24 rows");
    hp.n_vocab = (int32_t)embd->ne[1];
    const uint64_t n_vocab_u = (uint64_t)hp.n_vocab;
    if (f.get_uint(key("vocab_size"), n_vocab_u) != n_vocab_u)
        fail_format(key("vocab_size") + " disagrees with token_embd.weight (" + std::to_string(hp.n_vocab) + " rows)");
    if (f.has("tokenizer.ggml.tokens")) {
        const gguf_kv& tokens = f.require_array("tokenizer.ggml.tokens", gguf_vtype::string);
        if (tokens.arr_count != n_vocab_u)
            fail_format("tokenizer.ggml.tokens has " + std::to_string(tokens.arr_count) + " entries but the model has " +
                        std::to_string(hp.n_vocab) + " embeddings");
    }
    hp.bos_token_id = read_token_id(f, "tokenizer.ggml.bos_token_id", hp.n_vocab, -1);
    hp.eos_token_id = read_token_id(f, "tokenizer.ggml.eos_token_id", hp.n_vocab, -1);
    hp.mask_token_id = read_token_id(f, "tokenizer.ggml.mask_token_id", hp.n_vocab, -1);
    if (f.has("diffusion.block_size") || dream) {
        const uint64_t fallback = kDreamBlockSize;
        hp.block_size = read_count(f, "diffusion.block_size", 1, 1024, dream ? &fallback : nullptr);
        if (f.get_bool("diffusion.shift_logits", false))
            fail_unsupported("diffusion.shift_logits = true is not supported (NLD predicts unshifted)");
    }
    hp.has_diffusion = hp.mask_token_id >= 0 && hp.block_size > 0;

    const int64_t E = hp.n_embd, Q = (int64_t)hp.n_head * hp.head_dim, KV = (int64_t)hp.n_head_kv * hp.head_dim;
    m->tok_embd = bind_matrix(f, "token_embd.weight", E, hp.n_vocab);
    m->output_norm = bind_norm(f, "output_norm.weight", E);
    // Files from llama.cpp's converter may tie the head; NLD files never do.
    m->output = f.find_tensor("output.weight") ? bind_matrix(f, "output.weight", E, hp.n_vocab) : m->tok_embd;
    m->layers.resize((size_t)hp.n_layer);
    for (int32_t i = 0; i < hp.n_layer; ++i) {
        const std::string p = "blk." + std::to_string(i) + ".";
        layer_weights& L = m->layers[(size_t)i];
        L.attn_norm = bind_norm(f, p + "attn_norm.weight", E);
        L.wq = bind_matrix(f, p + "attn_q.weight", E, Q);
        L.wk = bind_matrix(f, p + "attn_k.weight", E, KV);
        L.wv = bind_matrix(f, p + "attn_v.weight", E, KV);
        L.wo = bind_matrix(f, p + "attn_output.weight", Q, E);
        L.ffn_norm = bind_norm(f, p + "ffn_norm.weight", E);
        L.ffn_gate = bind_matrix(f, p + "ffn_gate.weight", E, hp.n_ff);
        L.ffn_up = bind_matrix(f, p + "ffn_up.weight", E, hp.n_ff);
        L.ffn_down = bind_matrix(f, p + "ffn_down.weight", hp.n_ff, E);
    }
    // Every tensor in the file must be one the model uses: an extra layer
    // means block_count disagrees with the tensors.
    std::unordered_set<std::string> used = {"token_embd.weight", "output_norm.weight", "output.weight"};
    for (int32_t i = 0; i < hp.n_layer; ++i)
        for (const char* s : kLayerTensors) used.insert("blk." + std::to_string(i) + "." + s);
    for (const gguf_tensor& t : f.tensors()) {
        if (used.count(t.name)) continue;
        if (t.name.rfind("blk.", 0) == 0)
            fail_format("tensor '" + t.name + "' is not part of a " + std::to_string(hp.n_layer) +
                        "-layer model (block_count disagrees with the tensors?)");
        fail_format("unexpected tensor '" + t.name + "'");
    }
    m->rope_inv_freq = rope_inverse_frequencies(hp);

    std::string adapter = lora_path ? lora_path : "";
    if (!lora_path) {
        const std::string stem = path.size() > 5 && path.compare(path.size() - 5, 5, ".gguf") == 0
                                     ? path.substr(0, path.size() - 5) : path;
        if (FILE* probe = std::fopen((stem + ".lora.gguf").c_str(), "rb")) {
            std::fclose(probe);
            adapter = stem + ".lora.gguf";
        }
    }
    if (!adapter.empty()) m->drafter = load_lora(*m, adapter);
    m->memory = plan_weight_memory(*m);
    m->be = &cpu_backend();  // the reference; a load asking for another chooses it after
    return m;
}

std::unique_ptr<model> load_model(const std::string& path, const char* lora_path) {
    std::unique_ptr<model> m = open_model(path, lora_path);
    const weight_memory& mem = m->memory;
    require_available(mem.total(), "loading " + path,
                      "weights: " + format_bytes(mem.copy_bytes) + " of repacked copies, " +
                          format_bytes(mem.file_bytes) + " of file pages used in place",
                      "");
    if (m->hf_rope_order) permute_rope_rows(*m);
    repack_for_x8(*m);
    if (m->x8.bytes + m->permuted.bytes != mem.copy_bytes)  // the plan must be what was done
        throw error(NLD_ERR_INTERNAL, "load of " + path + ": planned " + std::to_string(mem.copy_bytes) +
                                          " bytes of copies, made " + std::to_string(m->x8.bytes + m->permuted.bytes));
    return m;
}

}  // namespace nld
