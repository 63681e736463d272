// gguf_inspect.cpp: a small driver over the GGUF reader, for the malformed-file
// corpus (tests/test_gguf_malformed.py builds it under ASan+UBSan).
//
//   gguf_inspect FILE                  "ok <n_kv> <n_tensors>", exit 0; or
//                                      "error: <message>", exit 1
//   gguf_inspect FILE --dump           also one line per key and per tensor
//   gguf_inspect FILE --get KIND KEY   one value through a typed getter; KIND is
//                                      uint, float, bool, string or array:<elem>
//   gguf_inspect --batch FILE...       "<file>\t<ok or error line>" per file, exit 0;
//                                      reads what --dump reads, prints none of it
//                                      (one process for many files: ASan start-up
//                                      dominates a run). After a crash the last
//                                      line holds the culprit's name and no result.
//
// Any other exit (a signal, a sanitizer report) is a bug in the reader.
#include <cstdio>   // std::printf
#include <cstring>  // std::memcpy, std::strcmp
#include <string>   // std::string

#include "error.h"  // nld::error
#include "gguf.h"   // nld::gguf_file

namespace {

using nld::gguf_vtype;

// Element j of a numeric array, formatted like a scalar of its type.
std::string array_elem(const nld::gguf_kv& kv, uint64_t j) {
    auto at = [&](auto v) {
        std::memcpy(&v, kv.arr_data + j * sizeof v, sizeof v);
        return v;
    };
    char buf[40];
    switch (kv.arr_type) {
        case gguf_vtype::u8: case gguf_vtype::boolean: return std::to_string(at(uint8_t{}));
        case gguf_vtype::i8: return std::to_string(at(int8_t{}));
        case gguf_vtype::u16: return std::to_string(at(uint16_t{}));
        case gguf_vtype::i16: return std::to_string(at(int16_t{}));
        case gguf_vtype::u32: return std::to_string(at(uint32_t{}));
        case gguf_vtype::i32: return std::to_string(at(int32_t{}));
        case gguf_vtype::u64: return std::to_string(at(uint64_t{}));
        case gguf_vtype::i64: return std::to_string(at(int64_t{}));
        case gguf_vtype::f32: std::snprintf(buf, sizeof buf, "%.17g", double(at(float{}))); return buf;
        case gguf_vtype::f64: std::snprintf(buf, sizeof buf, "%.17g", at(double{})); return buf;
        case gguf_vtype::string: return std::string(kv.arr_strings[j]);
        default: return "?";
    }
}

// The value read back through the typed getter that fits its type.
std::string value_of(const nld::gguf_file& f, const nld::gguf_kv& kv) {
    char buf[40];
    switch (kv.type) {
        case gguf_vtype::i8: case gguf_vtype::i16: case gguf_vtype::i32: case gguf_vtype::i64:
            if (kv.i < 0) return std::to_string(kv.i);
            return std::to_string(f.require_uint(kv.key));
        case gguf_vtype::u8: case gguf_vtype::u16: case gguf_vtype::u32: case gguf_vtype::u64:
            return std::to_string(f.require_uint(kv.key));
        case gguf_vtype::f32: case gguf_vtype::f64:
            std::snprintf(buf, sizeof buf, "%.17g", f.require_float(kv.key));
            return buf;
        case gguf_vtype::boolean: return f.get_bool(kv.key, false) ? "true" : "false";
        case gguf_vtype::string: return std::string(f.require_string(kv.key));
        case gguf_vtype::array: {
            const nld::gguf_kv& a = f.require_array(kv.key, kv.arr_type);
            std::string s = std::string(nld::gguf_vtype_name(a.arr_type)) + "[" + std::to_string(a.arr_count) + "]";
            for (uint64_t j = 0; j < a.arr_count; ++j) s += (j ? "," : ":") + array_elem(a, j);
            return s;
        }
    }
    return "?";
}

void dump(const nld::gguf_file& f, bool print) {
    for (const auto& kv : f.kvs()) {
        const std::string value = value_of(f, kv);
        if (print) std::printf("kv\t%s\t%s\t%s\n", kv.key.c_str(), nld::gguf_vtype_name(kv.type), value.c_str());
    }
    for (const auto& t : f.tensors()) {
        if (f.find_tensor(t.name) != &t) std::printf("find_tensor mismatch for %s\n", t.name.c_str());
        // Every data byte is read, so a bad data pointer shows up under ASan.
        uint64_t sum = 0;
        for (uint64_t b = 0; b < t.n_bytes; ++b) sum += t.data[b];
        if (print)
            std::printf("tensor\t%s\t%s\t%u\t%lld,%lld,%lld,%lld\t%llu\t%llu\t%llu\t%llu\n", t.name.c_str(),
                        nld::ggml_type_name(t.type), t.n_dims, (long long)t.ne[0], (long long)t.ne[1],
                        (long long)t.ne[2], (long long)t.ne[3], (unsigned long long)t.offset,
                        (unsigned long long)t.n_elems, (unsigned long long)t.n_bytes, (unsigned long long)sum);
    }
}

// One typed getter, so the test can check both values and type errors.
void get(const nld::gguf_file& f, const std::string& kind, const std::string& key) {
    if (kind == "uint") {
        std::printf("%llu\n", (unsigned long long)f.require_uint(key));
    } else if (kind == "float") {
        std::printf("%.17g\n", f.require_float(key));
    } else if (kind == "bool") {
        if (!f.has(key)) nld::fail_format("GGUF: required key '" + key + "' is missing");
        std::printf("%s\n", f.get_bool(key, false) ? "true" : "false");
    } else if (kind == "string") {
        std::printf("%s\n", std::string(f.require_string(key)).c_str());
    } else if (kind.rfind("array:", 0) == 0) {
        for (uint32_t t = 0; t <= uint32_t(gguf_vtype::f64); ++t)
            if (kind.substr(6) == nld::gguf_vtype_name(gguf_vtype(t)))
                return (void)std::printf("%s\n", value_of(f, f.require_array(key, gguf_vtype(t))).c_str());
        nld::fail_argument("unknown element type in " + kind);
    } else {
        nld::fail_argument("unknown getter kind " + kind);
    }
}

}  // namespace

int batch(int n_files, char** files) {
    for (int i = 0; i < n_files; ++i) {
        std::printf("%s\t", files[i]);
        std::fflush(stdout);
        try {
            auto f = nld::gguf_file::open(files[i]);
            dump(*f, false);
            std::printf("ok %zu %zu\n", f->kvs().size(), f->tensors().size());
        } catch (const nld::error& e) {
            std::printf("error: %s\n", e.what());
        }
    }
    return 0;
}

int main(int argc, char** argv) {
    if (argc >= 2 && std::strcmp(argv[1], "--batch") == 0) return batch(argc - 2, argv + 2);
    const bool want_dump = argc == 3 && std::strcmp(argv[2], "--dump") == 0;
    const bool want_get = argc == 5 && std::strcmp(argv[2], "--get") == 0;
    if (argc != 2 && !want_dump && !want_get) {
        std::fprintf(stderr, "usage: %s FILE [--dump | --get KIND KEY] | --batch FILE...\n", argv[0]);
        return 2;
    }
    try {
        auto f = nld::gguf_file::open(argv[1]);
        if (want_get) {
            get(*f, argv[3], argv[4]);
            return 0;
        }
        std::printf("ok %zu %zu\n", f->kvs().size(), f->tensors().size());
        if (want_dump) dump(*f, true);
        return 0;
    } catch (const nld::error& e) {
        std::printf("error: %s\n", e.what());
        return 1;
    }
}
