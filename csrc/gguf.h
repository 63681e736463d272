// gguf.h: a validated, read-only, memory-mapped GGUF v3 reader.
//
// Owns: the file mapping, the parsed key/value table and tensor table.
// Every count, length, dimension and offset read from the file is checked
// (overflow-checked arithmetic, bounds against the file size, sane caps)
// before use; any violation throws nld::error(NLD_ERR_FORMAT) with a message
// naming the field and, where useful, the byte offset. Model-level checks
// (required tensors, shapes, hyper-parameters) live in model.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace nld {

// GGUF metadata value types (spec/gguf-schema.md).
enum class gguf_vtype : uint32_t {
    u8 = 0, i8 = 1, u16 = 2, i16 = 3, u32 = 4, i32 = 5, f32 = 6, boolean = 7,
    string = 8, array = 9, u64 = 10, i64 = 11, f64 = 12,
};
const char* gguf_vtype_name(gguf_vtype t);

// ggml tensor types this runtime knows. Others are rejected at load.
enum class ggml_type : uint32_t {
    f32 = 0, f16 = 1, q4_0 = 2, q8_0 = 8, q4_k = 12, q6_k = 14, q8_k = 15, bf16 = 30,
};
const char* ggml_type_name(ggml_type t);
// Elements per block and bytes per block; false if the type is unknown.
bool ggml_type_block(uint32_t type, uint64_t* block_elems, uint64_t* block_bytes);

struct gguf_kv {
    std::string key;
    gguf_vtype type;
    // Scalars: the value widened. Strings: `str`. Arrays: `arr_type`,
    // `arr_count`, `arr_data` (pointer into the mapping; for string arrays
    // use `arr_strings`, filled at parse time).
    uint64_t u = 0;
    int64_t i = 0;
    double f = 0.0;
    std::string_view str;
    gguf_vtype arr_type = gguf_vtype::u8;
    uint64_t arr_count = 0;
    const uint8_t* arr_data = nullptr;
    std::vector<std::string_view> arr_strings;
};

struct gguf_tensor {
    std::string name;
    uint32_t n_dims = 0;
    int64_t ne[4] = {1, 1, 1, 1};  // innermost first, unused dims are 1
    ggml_type type = ggml_type::f32;
    uint64_t offset = 0;   // from the start of the data section
    uint64_t n_elems = 0;
    uint64_t n_bytes = 0;
    const uint8_t* data = nullptr;  // into the mapping
};

class gguf_file {
public:
    // Opens, maps and validates the whole container. Throws nld::error.
    static std::unique_ptr<gguf_file> open(const std::string& path);
    ~gguf_file();
    gguf_file(const gguf_file&) = delete;
    gguf_file& operator=(const gguf_file&) = delete;

    uint32_t version() const { return version_; }
    uint64_t alignment() const { return alignment_; }
    uint64_t file_size() const { return size_; }
    // Where the data section starts: the bytes of the header, metadata and
    // tensor infos (with padding).
    uint64_t data_offset() const { return data_offset_; }

    const std::vector<gguf_kv>& kvs() const { return kvs_; }
    const std::vector<gguf_tensor>& tensors() const { return tensors_; }
    const gguf_kv* find_kv(std::string_view key) const;          // nullptr if absent
    const gguf_tensor* find_tensor(std::string_view name) const;  // nullptr if absent

    // Typed getters. `require_*` throws (naming the key) when absent; both
    // throw when the stored type is not the one asked for. Integer getters
    // accept any integer type whose value fits; float getters accept f32/f64.
    bool has(std::string_view key) const { return find_kv(key) != nullptr; }
    uint64_t require_uint(std::string_view key) const;
    uint64_t get_uint(std::string_view key, uint64_t fallback) const;
    double require_float(std::string_view key) const;
    double get_float(std::string_view key, double fallback) const;
    bool get_bool(std::string_view key, bool fallback) const;
    std::string_view require_string(std::string_view key) const;
    std::string_view get_string(std::string_view key, std::string_view fallback) const;
    // Array of the given element type (throws on absent or other type).
    const gguf_kv& require_array(std::string_view key, gguf_vtype elem) const;

private:
    gguf_file() = default;
    void parse();

    int fd_ = -1;
    const uint8_t* base_ = nullptr;
    uint64_t size_ = 0;
    uint32_t version_ = 0;
    uint64_t alignment_ = 32;
    uint64_t data_offset_ = 0;
    std::vector<gguf_kv> kvs_;
    std::vector<gguf_tensor> tensors_;
    std::unordered_map<std::string_view, size_t> kv_index_;
    std::unordered_map<std::string_view, size_t> tensor_index_;
};

}  // namespace nld
