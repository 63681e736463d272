// gguf.cpp: the validated, memory-mapped GGUF reader declared in gguf.h.
//
// Owns: mapping the file, walking header -> key/values -> tensor infos -> data
// section, and every container-level check of spec/gguf-schema.md ("What the
// loader must reject"). Model-level checks (required tensors, shapes, token
// ids) live in model.cpp.
//
// Versions: 3, and 2 as well, because v2 files have the identical
// little-endian layout (v3 only added big-endian files, which we reject).
// Version 1 used 32-bit counts and is rejected.
//
// Allocation bound: a count from the header is only acted on after it has
// been checked against the bytes left in the file, so the tables built here
// grow at most in proportion to the file size, never to a header claim.
//
// A file truncated by another process while mapped raises SIGBUS on access;
// no reader of a shared mapping can prevent that, so it is out of scope.

#include "gguf.h"

#include <fcntl.h>     // open
#include <sys/mman.h>  // mmap, munmap
#include <sys/stat.h>  // fstat
#include <unistd.h>    // close

#include <algorithm>  // std::sort
#include <cerrno>     // errno
#include <cstring>    // std::memcpy, std::strerror

#include "error.h"  // nld::error, fail_format, fail_io, checked_add, checked_mul

// ASan does not shadow file mappings on its own; see poison_tail() below.
#if defined(__SANITIZE_ADDRESS__)
#define NLD_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define NLD_ASAN 1
#endif
#endif
#if defined(NLD_ASAN)
#include <sanitizer/asan_interface.h>  // ASAN_POISON_MEMORY_REGION
#endif

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the reader copies file values verbatim: little-endian hosts only");

namespace nld {
namespace {

constexpr uint64_t k_max_tensors = 1u << 20;
constexpr uint64_t k_max_kvs = 1u << 20;
constexpr uint64_t k_max_string = 1ull << 30;  // one string value
constexpr uint64_t k_max_name = 1u << 16;      // a key or tensor name
constexpr uint64_t k_header_bytes = 4 + 4 + 8 + 8;
// Smallest possible encodings, used to reject counts the file cannot hold.
constexpr uint64_t k_min_kv_bytes = 8 + 4;                  // key length, value type
constexpr uint64_t k_min_tensor_bytes = 8 + 4 + 8 + 4 + 8;  // name length, n_dims, ne0, type, offset
constexpr uint32_t k_max_dims = 4;

std::string num(uint64_t v) { return std::to_string(v); }

// Names come from the file: keep messages printable and short.
std::string printable(std::string_view s) {
    static const char hex[] = "0123456789abcdef";
    std::string out;
    for (size_t i = 0; i < s.size() && i < 64; ++i) {
        const unsigned char c = static_cast<unsigned char>(s[i]);
        if (c >= 0x20 && c < 0x7f) {
            out += static_cast<char>(c);
        } else {
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    if (s.size() > 64) out += "...";
    return out;
}

size_t scalar_size(gguf_vtype t) {
    switch (t) {
        case gguf_vtype::u8: case gguf_vtype::i8: case gguf_vtype::boolean: return 1;
        case gguf_vtype::u16: case gguf_vtype::i16: return 2;
        case gguf_vtype::u32: case gguf_vtype::i32: case gguf_vtype::f32: return 4;
        case gguf_vtype::u64: case gguf_vtype::i64: case gguf_vtype::f64: return 8;
        default: return 0;  // string, array: variable length
    }
}

bool known_vtype(uint32_t t) { return t <= static_cast<uint32_t>(gguf_vtype::f64); }

template <typename T>
T load(const uint8_t* p) {
    T v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

// Widens one scalar at p into kv.u / kv.i / kv.f (type already validated).
void decode_scalar(gguf_kv& kv, const uint8_t* p) {
    switch (kv.type) {
        case gguf_vtype::u8: kv.u = load<uint8_t>(p); break;
        case gguf_vtype::u16: kv.u = load<uint16_t>(p); break;
        case gguf_vtype::u32: kv.u = load<uint32_t>(p); break;
        case gguf_vtype::u64: kv.u = load<uint64_t>(p); break;
        case gguf_vtype::boolean: kv.u = load<uint8_t>(p); break;
        case gguf_vtype::i8: kv.i = load<int8_t>(p); break;
        case gguf_vtype::i16: kv.i = load<int16_t>(p); break;
        case gguf_vtype::i32: kv.i = load<int32_t>(p); break;
        case gguf_vtype::i64: kv.i = load<int64_t>(p); break;
        case gguf_vtype::f32: kv.f = load<float>(p); break;
        case gguf_vtype::f64: kv.f = load<double>(p); break;
        default: break;
    }
}

// Bounds-checked cursor over the mapping. `context` names the entry being
// read ("key 'x'", "tensor #3") so every message says where it failed.
struct cursor {
    const uint8_t* base;
    uint64_t size;
    uint64_t pos;
    std::string context;

    uint64_t left() const { return size - pos; }

    [[noreturn]] void fail(const std::string& what) const {
        fail_format("GGUF: " + context + ": " + what);
    }
    // `suffix` completes the field name, e.g. "key name" + " length".
    void need(uint64_t n, const char* field, const char* suffix = "") const {
        if (n > left())
            fail(std::string(field) + suffix + " (" + num(n) + " bytes) at offset " + num(pos) +
                 " runs past end of file (size " + num(size) + ")");
    }
    template <typename T>
    T read(const char* field, const char* suffix = "") {
        need(sizeof(T), field, suffix);
        const T v = load<T>(base + pos);
        pos += sizeof(T);
        return v;
    }
    std::string_view read_string(const char* field, uint64_t cap) {
        const uint64_t at = pos;
        const uint64_t len = read<uint64_t>(field, " length");
        if (len > left())
            fail(std::string(field) + ": string length " + num(len) + " at offset " + num(at) +
                 " runs past end of file (size " + num(size) + ")");
        if (len > cap)
            fail(std::string(field) + ": string length " + num(len) + " at offset " + num(at) +
                 " exceeds the limit of " + num(cap) + " bytes");
        std::string_view s(reinterpret_cast<const char*>(base + pos), len);
        pos += len;
        return s;
    }
};

// Reads one array value (element type, count, elements) into kv.
void read_array(cursor& c, gguf_kv& kv) {
    const uint64_t at = c.pos;
    const uint32_t elem = c.read<uint32_t>("array element type");
    if (elem == static_cast<uint32_t>(gguf_vtype::array))
        c.fail("array of arrays at offset " + num(at) + " (nested arrays are not supported)");
    if (!known_vtype(elem))
        c.fail("unknown array element type " + num(elem) + " at offset " + num(at));
    kv.arr_type = static_cast<gguf_vtype>(elem);
    const uint64_t count_at = c.pos;
    kv.arr_count = c.read<uint64_t>("array count");

    if (kv.arr_type == gguf_vtype::string) {
        // Each string needs at least its 8-byte length: bound the reservation.
        if (kv.arr_count > c.left() / 8)
            c.fail("array count " + num(kv.arr_count) + " at offset " + num(count_at) +
                   " runs past end of file (each string needs at least 8 bytes; " +
                   num(c.left()) + " remain, size " + num(c.size) + ")");
        kv.arr_data = c.base + c.pos;
        kv.arr_strings.reserve(kv.arr_count);
        for (uint64_t j = 0; j < kv.arr_count; ++j)
            kv.arr_strings.push_back(c.read_string("string element", k_max_string));
        return;
    }

    const uint64_t esz = scalar_size(kv.arr_type);
    const uint64_t bytes = checked_mul(kv.arr_count, esz, "GGUF array byte size");
    if (bytes > c.left())
        c.fail("array of " + num(kv.arr_count) + " " + gguf_vtype_name(kv.arr_type) +
               " at offset " + num(count_at) + " needs " + num(bytes) +
               " bytes and runs past end of file (size " + num(c.size) + ")");
    kv.arr_data = c.base + c.pos;
    if (kv.arr_type == gguf_vtype::boolean) {
        for (uint64_t j = 0; j < kv.arr_count; ++j)
            if (kv.arr_data[j] > 1)
                c.fail("bool array element " + num(j) + " has value " + num(kv.arr_data[j]) +
                       " at offset " + num(c.pos + j) + " (must be 0 or 1)");
    }
    c.pos += bytes;
}

// The bytes between EOF and the end of its page are readable zeros, so a read
// just past the end of the file would go unnoticed. Under ASan, mark them
// unaddressable so the sanitizer build of the tests reports such a read.
void poison_tail(const uint8_t* base, uint64_t size, bool poison) {
#if defined(NLD_ASAN)
    const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
    const uint64_t slack = (page - size % page) % page;
    if (poison) ASAN_POISON_MEMORY_REGION(base + size, slack);
    else ASAN_UNPOISON_MEMORY_REGION(base + size, slack);
#else
    (void)base, (void)size, (void)poison;
#endif
}

uint64_t align_up(uint64_t v, uint64_t alignment) {
    return checked_add(v, alignment - 1, "GGUF data section start") & ~(alignment - 1);
}

using name_index = std::unordered_map<std::string_view, size_t>;

// Reads key/value #i; *key_out is the key as a view into the mapping.
gguf_kv read_kv(cursor& c, uint64_t i, const name_index& seen, std::string_view* key_out) {
    const uint64_t at = c.pos;
    c.context = "key #" + num(i);
    const std::string_view key = c.read_string("key name", k_max_name);
    if (key.empty()) c.fail("empty key name at offset " + num(at));
    c.context = "key '" + printable(key) + "'";
    if (seen.count(key)) c.fail("duplicate key at offset " + num(at));

    gguf_kv kv;
    kv.key = std::string(key);
    const uint64_t type_at = c.pos;
    const uint32_t type = c.read<uint32_t>("value type");
    if (!known_vtype(type)) c.fail("unknown value type " + num(type) + " at offset " + num(type_at));
    kv.type = static_cast<gguf_vtype>(type);
    if (kv.type == gguf_vtype::string) {
        kv.str = c.read_string("value", k_max_string);
    } else if (kv.type == gguf_vtype::array) {
        read_array(c, kv);
    } else {
        const uint64_t value_at = c.pos;
        c.need(scalar_size(kv.type), "value");
        decode_scalar(kv, c.base + c.pos);
        c.pos += scalar_size(kv.type);
        if (kv.type == gguf_vtype::boolean && kv.u > 1)
            c.fail("bool value " + num(kv.u) + " at offset " + num(value_at) + " (must be 0 or 1)");
    }
    *key_out = key;
    return kv;
}

// Reads tensor info #i (shape, type, offset; data is placed later).
gguf_tensor read_tensor_info(cursor& c, uint64_t i, uint64_t alignment, const name_index& seen,
                             std::string_view* name_out) {
    const uint64_t at = c.pos;
    c.context = "tensor #" + num(i);
    const std::string_view name = c.read_string("tensor name", k_max_name);
    if (name.empty()) c.fail("empty tensor name at offset " + num(at));
    const std::string shown = "'" + printable(name) + "'";
    c.context = "tensor " + shown;
    if (seen.count(name)) c.fail("duplicate tensor name at offset " + num(at));

    gguf_tensor t;
    t.name = std::string(name);
    t.n_dims = c.read<uint32_t>("n_dims");
    if (t.n_dims == 0 || t.n_dims > k_max_dims)
        c.fail("n_dims " + num(t.n_dims) + " at offset " + num(c.pos - 4) + " (must be 1.." + num(k_max_dims) + ")");
    const std::string elems_what = "element count of tensor " + shown;
    t.n_elems = 1;
    for (uint32_t d = 0; d < t.n_dims; ++d) {
        const uint64_t ne = c.read<uint64_t>("dimension");
        if (ne == 0) c.fail("dimension " + num(d) + " is 0 at offset " + num(c.pos - 8));
        if (ne > static_cast<uint64_t>(INT64_MAX))
            c.fail("dimension " + num(d) + " is " + num(ne) + " at offset " + num(c.pos - 8) + " (over INT64_MAX)");
        t.ne[d] = static_cast<int64_t>(ne);
        t.n_elems = checked_mul(t.n_elems, ne, elems_what.c_str());
    }
    if (t.n_elems > static_cast<uint64_t>(INT64_MAX)) c.fail("element count " + num(t.n_elems) + " is over INT64_MAX");

    const uint64_t type_at = c.pos;
    const uint32_t type = c.read<uint32_t>("tensor type");
    uint64_t block_elems = 0, block_bytes = 0;
    if (!ggml_type_block(type, &block_elems, &block_bytes))
        fail_format("GGUF: unknown tensor type " + num(type) + " for tensor " + shown + " at offset " + num(type_at));
    t.type = static_cast<ggml_type>(type);
    t.offset = c.read<uint64_t>("data offset");
    if (static_cast<uint64_t>(t.ne[0]) % block_elems != 0)
        c.fail("ne0 = " + num(t.ne[0]) + " is not a multiple of the " + ggml_type_name(t.type) + " block size " +
               num(block_elems));
    // ne0 is a whole number of blocks, so every row is too.
    t.n_bytes = checked_mul(t.n_elems / block_elems, block_bytes, ("byte size of tensor " + shown).c_str());
    if (t.offset % alignment != 0)
        c.fail("data offset " + num(t.offset) + " is not a multiple of the alignment " + num(alignment));
    *name_out = name;
    return t;
}

}  // namespace

const char* gguf_vtype_name(gguf_vtype t) {
    switch (t) {
        case gguf_vtype::u8: return "u8";
        case gguf_vtype::i8: return "i8";
        case gguf_vtype::u16: return "u16";
        case gguf_vtype::i16: return "i16";
        case gguf_vtype::u32: return "u32";
        case gguf_vtype::i32: return "i32";
        case gguf_vtype::f32: return "f32";
        case gguf_vtype::boolean: return "bool";
        case gguf_vtype::string: return "string";
        case gguf_vtype::array: return "array";
        case gguf_vtype::u64: return "u64";
        case gguf_vtype::i64: return "i64";
        case gguf_vtype::f64: return "f64";
    }
    return "unknown";
}

const char* ggml_type_name(ggml_type t) {
    switch (t) {
        case ggml_type::f32: return "F32";
        case ggml_type::f16: return "F16";
        case ggml_type::q4_0: return "Q4_0";
        case ggml_type::q8_0: return "Q8_0";
        case ggml_type::q4_k: return "Q4_K";
        case ggml_type::q6_k: return "Q6_K";
        case ggml_type::q8_k: return "Q8_K";
        case ggml_type::bf16: return "BF16";
    }
    return "unknown";
}

bool ggml_type_block(uint32_t type, uint64_t* block_elems, uint64_t* block_bytes) {
    uint64_t e = 0, b = 0;
    switch (static_cast<ggml_type>(type)) {
        case ggml_type::f32: e = 1; b = 4; break;
        case ggml_type::f16: e = 1; b = 2; break;
        case ggml_type::bf16: e = 1; b = 2; break;
        case ggml_type::q8_0: e = 32; b = 34; break;
        case ggml_type::q4_0: e = 32; b = 18; break;
        case ggml_type::q4_k: e = 256; b = 144; break;
        case ggml_type::q6_k: e = 256; b = 210; break;
        case ggml_type::q8_k: e = 256; b = 292; break;
        default: return false;
    }
    if (block_elems) *block_elems = e;
    if (block_bytes) *block_bytes = b;
    return true;
}

std::unique_ptr<gguf_file> gguf_file::open(const std::string& path) {
    std::unique_ptr<gguf_file> f(new gguf_file());
    f->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (f->fd_ < 0) fail_io("GGUF: cannot open '" + path + "': " + std::strerror(errno));
    struct stat st;
    if (fstat(f->fd_, &st) != 0) fail_io("GGUF: cannot stat '" + path + "': " + std::strerror(errno));
    if (!S_ISREG(st.st_mode)) fail_io("GGUF: '" + path + "' is not a regular file");
    f->size_ = static_cast<uint64_t>(st.st_size);
    // Checked before mmap, which rejects a zero length.
    if (f->size_ < k_header_bytes)
        fail_format("GGUF: file too small (" + num(f->size_) + " bytes; the header alone needs " +
                    num(k_header_bytes) + "): '" + path + "'");
    void* p = mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, f->fd_, 0);
    if (p == MAP_FAILED) fail_io("GGUF: cannot map '" + path + "': " + std::strerror(errno));
    f->base_ = static_cast<const uint8_t*>(p);
    poison_tail(f->base_, f->size_, true);
    // The mapping keeps the file alive; the descriptor is no longer needed.
    ::close(f->fd_);
    f->fd_ = -1;
    f->parse();
    return f;
}

gguf_file::~gguf_file() {
    if (base_) {
        poison_tail(base_, size_, false);  // the next mapping here must start clean
        munmap(const_cast<uint8_t*>(base_), size_);
    }
    if (fd_ >= 0) ::close(fd_);
}

void gguf_file::parse() {
    cursor c{base_, size_, 0, "header"};

    if (std::memcmp(base_, "GGUF", 4) != 0)
        fail_format("GGUF: bad magic " + printable(std::string_view(reinterpret_cast<const char*>(base_), 4)) +
                    " at offset 0 (expected 'GGUF'); not a GGUF file");
    c.pos = 4;
    version_ = c.read<uint32_t>("version");
    if (version_ != 2 && version_ != 3) {
        const bool swapped = version_ == 0x02000000u || version_ == 0x03000000u;
        fail_format("GGUF: unsupported version " + num(version_) + " at offset 4 (supported: 2, 3)" +
                    (swapped ? "; this looks like a big-endian file, only little-endian is supported" : ""));
    }
    const uint64_t n_tensors = c.read<uint64_t>("tensor_count");
    const uint64_t n_kv = c.read<uint64_t>("kv_count");
    if (n_tensors > k_max_tensors)
        fail_format("GGUF: tensor_count " + num(n_tensors) + " at offset 8 exceeds the limit of " + num(k_max_tensors));
    if (n_kv > k_max_kvs)
        fail_format("GGUF: kv_count " + num(n_kv) + " at offset 16 exceeds the limit of " + num(k_max_kvs));
    // Both under the caps, so these products cannot overflow.
    const uint64_t kv_min = n_kv * k_min_kv_bytes;
    const uint64_t tensor_min = n_tensors * k_min_tensor_bytes;
    if (kv_min > c.left())
        fail_format("GGUF: kv_count " + num(n_kv) + " cannot fit in the file: " + num(kv_min) +
                    " bytes needed at least, " + num(c.left()) + " remain after the header (size " + num(size_) + ")");
    if (tensor_min > c.left() - kv_min)
        fail_format("GGUF: tensor_count " + num(n_tensors) + " cannot fit in the file: " + num(tensor_min) +
                    " bytes needed at least, " + num(c.left() - kv_min) + " remain after the header and " +
                    num(n_kv) + " minimal keys (size " + num(size_) + ")");

    // Both indexes are keyed by views into the mapping: stable however the
    // vectors reallocate.
    for (uint64_t i = 0; i < n_kv; ++i) {
        std::string_view key;
        kvs_.push_back(read_kv(c, i, kv_index_, &key));
        kv_index_.emplace(key, kvs_.size() - 1);
    }

    if (const gguf_kv* a = find_kv("general.alignment")) {
        if (a->type != gguf_vtype::u32)
            fail_format(std::string("GGUF: key 'general.alignment' has type ") + gguf_vtype_name(a->type) +
                        ", expected u32");
        if (a->u == 0 || (a->u & (a->u - 1)) != 0)
            fail_format("GGUF: general.alignment = " + num(a->u) + " is not a power of two");
        alignment_ = a->u;
    }

    for (uint64_t i = 0; i < n_tensors; ++i) {
        std::string_view name;
        tensors_.push_back(read_tensor_info(c, i, alignment_, tensor_index_, &name));
        tensor_index_.emplace(name, tensors_.size() - 1);
    }

    const uint64_t data_start = align_up(c.pos, alignment_);
    if (data_start > size_)
        fail_format("GGUF: data section starts at offset " + num(data_start) + " (tensor infos end at " +
                    num(c.pos) + ", padded to alignment " + num(alignment_) + "), past end of file (size " +
                    num(size_) + ")");
    data_offset_ = data_start;

    for (gguf_tensor& t : tensors_) {
        const uint64_t begin = checked_add(data_start, t.offset, "GGUF tensor data start");
        const uint64_t end = checked_add(begin, t.n_bytes, "GGUF tensor data end");
        if (end > size_)
            fail_format("GGUF: tensor '" + printable(t.name) + "' data at file offset " + num(begin) + " with " +
                        num(t.n_bytes) + " bytes runs past end of file (size " + num(size_) + ")");
        t.data = base_ + begin;
    }

    // Offsets need not follow info order, but no two byte ranges may share a
    // byte. Every range lies inside the file, so the ends below cannot overflow.
    std::vector<const gguf_tensor*> by_offset;
    by_offset.reserve(tensors_.size());
    for (const gguf_tensor& t : tensors_) by_offset.push_back(&t);
    std::sort(by_offset.begin(), by_offset.end(),
              [](const gguf_tensor* a, const gguf_tensor* b) { return a->offset < b->offset; });
    for (size_t k = 1; k < by_offset.size(); ++k) {
        const gguf_tensor& prev = *by_offset[k - 1];
        const gguf_tensor& cur = *by_offset[k];
        if (prev.offset + prev.n_bytes > cur.offset)
            fail_format("GGUF: tensors '" + printable(prev.name) + "' and '" + printable(cur.name) +
                        "' overlap in the data section ('" + printable(prev.name) + "' spans [" + num(prev.offset) +
                        ", " + num(prev.offset + prev.n_bytes) + "), '" + printable(cur.name) + "' starts at " +
                        num(cur.offset) + ")");
    }
}

const gguf_kv* gguf_file::find_kv(std::string_view key) const {
    auto it = kv_index_.find(key);
    return it == kv_index_.end() ? nullptr : &kvs_[it->second];
}

const gguf_tensor* gguf_file::find_tensor(std::string_view name) const {
    auto it = tensor_index_.find(name);
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

namespace {

const gguf_kv& must_find(const gguf_file& f, std::string_view key) {
    const gguf_kv* kv = f.find_kv(key);
    if (!kv) fail_format("GGUF: required key '" + printable(key) + "' is missing");
    return *kv;
}

[[noreturn]] void fail_type(const gguf_kv& kv, const char* expected) {
    fail_format("GGUF: key '" + printable(kv.key) + "' has type " + gguf_vtype_name(kv.type) + ", expected " +
                expected);
}

uint64_t as_uint(const gguf_kv& kv) {
    switch (kv.type) {
        case gguf_vtype::u8: case gguf_vtype::u16: case gguf_vtype::u32: case gguf_vtype::u64:
            return kv.u;
        case gguf_vtype::i8: case gguf_vtype::i16: case gguf_vtype::i32: case gguf_vtype::i64:
            if (kv.i < 0)
                fail_format("GGUF: key '" + printable(kv.key) + "' has negative value " + std::to_string(kv.i) +
                            ", expected an unsigned integer");
            return static_cast<uint64_t>(kv.i);
        default: fail_type(kv, "an unsigned integer");
    }
}

double as_float(const gguf_kv& kv) {
    if (kv.type != gguf_vtype::f32 && kv.type != gguf_vtype::f64) fail_type(kv, "f32 or f64");
    return kv.f;
}

std::string_view as_string(const gguf_kv& kv) {
    if (kv.type != gguf_vtype::string) fail_type(kv, "string");
    return kv.str;
}

}  // namespace

uint64_t gguf_file::require_uint(std::string_view key) const { return as_uint(must_find(*this, key)); }

uint64_t gguf_file::get_uint(std::string_view key, uint64_t fallback) const {
    const gguf_kv* kv = find_kv(key);
    return kv ? as_uint(*kv) : fallback;
}

double gguf_file::require_float(std::string_view key) const { return as_float(must_find(*this, key)); }

double gguf_file::get_float(std::string_view key, double fallback) const {
    const gguf_kv* kv = find_kv(key);
    return kv ? as_float(*kv) : fallback;
}

bool gguf_file::get_bool(std::string_view key, bool fallback) const {
    const gguf_kv* kv = find_kv(key);
    if (!kv) return fallback;
    if (kv->type != gguf_vtype::boolean) fail_type(*kv, "bool");
    return kv->u != 0;
}

std::string_view gguf_file::require_string(std::string_view key) const { return as_string(must_find(*this, key)); }

std::string_view gguf_file::get_string(std::string_view key, std::string_view fallback) const {
    const gguf_kv* kv = find_kv(key);
    return kv ? as_string(*kv) : fallback;
}

const gguf_kv& gguf_file::require_array(std::string_view key, gguf_vtype elem) const {
    const gguf_kv& kv = must_find(*this, key);
    const std::string want = std::string("an array of ") + gguf_vtype_name(elem);
    if (kv.type != gguf_vtype::array) fail_type(kv, want.c_str());
    if (kv.arr_type != elem)
        fail_format("GGUF: key '" + printable(kv.key) + "' is an array of " + gguf_vtype_name(kv.arr_type) +
                    ", expected " + want);
    return kv;
}

}  // namespace nld
