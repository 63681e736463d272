// memory.cpp: see memory.h.
#include "memory.h"

#include <unistd.h>  // sysconf

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "error.h"
#include "kv_cache.h"  // kKeyTile

namespace nld {

namespace {

constexpr const char* kLimitVariable = "NLD_MEMORY_LIMIT_BYTES";
// Cgroup limits at or above this mean "no limit" (v1 writes 2^63 rounded
// down to a page; v2 writes "max").
constexpr uint64_t kNoLimit = (uint64_t)1 << 60;

// The first whitespace-separated number of a file ("max" and unreadable: false).
bool read_number(const std::string& path, uint64_t* out) {
    std::ifstream in(path);
    std::string word;
    if (!(in >> word) || word.empty() || !std::isdigit((unsigned char)word[0])) return false;
    *out = std::strtoull(word.c_str(), nullptr, 10);
    return true;
}

// The sum of the values of "key value" lines of a memory.stat with these keys.
uint64_t stat_sum(const std::string& path, const std::string& key_a, const std::string& key_b) {
    std::ifstream in(path);
    std::string k;
    uint64_t v = 0, sum = 0;
    while (in >> k >> v)
        if (k == key_a || k == key_b) sum += v;
    return sum;
}

// What the process's cgroup of one hierarchy leaves: the smallest headroom
// over its directory and every parent up to root (a limit may sit on any
// of them). controller: "" for the v2 line "0::/path", "memory" for v1. The
// page cache charged to it (the two file LRU lists of memory.stat) counts
// as free, as MemAvailable counts it: the kernel drops it before it fails
// an allocation.
int64_t cgroup_headroom(const std::string& root, const std::string& controller, const char* limit_file,
                        const char* usage_file, const char* active_key, const char* inactive_key) {
    std::ifstream self("/proc/self/cgroup");
    std::string line, rel;
    bool found = false;
    while (std::getline(self, line)) {
        const size_t a = line.find(':'), b = a == std::string::npos ? a : line.find(':', a + 1);
        if (b == std::string::npos) continue;
        const std::string controllers = line.substr(a + 1, b - a - 1);
        const bool match = controller.empty() ? (line.compare(0, a, "0") == 0 && controllers.empty())
                                              : ("," + controllers + ",").find("," + controller + ",") != std::string::npos;
        if (match) {
            rel = line.substr(b + 1);
            found = true;
            break;
        }
    }
    if (!found) return -1;
    int64_t best = -1;
    std::string dir = root + (rel == "/" ? "" : rel);
    for (;;) {
        uint64_t limit = 0, usage = 0;
        if (read_number(dir + "/" + limit_file, &limit) && limit < kNoLimit && read_number(dir + "/" + usage_file, &usage)) {
            const uint64_t cache = stat_sum(dir + "/memory.stat", active_key, inactive_key);
            const uint64_t working = usage > cache ? usage - cache : 0;
            const int64_t headroom = limit > working ? (int64_t)(limit - working) : 0;
            best = best < 0 ? headroom : std::min(best, headroom);
        }
        if (dir.size() <= root.size()) break;
        dir = dir.substr(0, dir.rfind('/'));
    }
    return best;
}

// MemAvailable of /proc/meminfo in bytes, -1 when absent.
int64_t meminfo_available() {
    std::ifstream in("/proc/meminfo");
    std::string key, unit;
    uint64_t kib = 0;
    while (in >> key >> kib) {
        std::getline(in, unit);
        if (key == "MemAvailable:") return (int64_t)(kib * 1024);
    }
    return -1;
}

int64_t sysconf_available() {
#if defined(_SC_AVPHYS_PAGES) && defined(_SC_PAGESIZE)
    const long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0) return (int64_t)pages * page;
#endif
    return -1;
}

// NLD_MEMORY_LIMIT_BYTES, -1 when unset or empty.
int64_t limit_override() {
    const char* text = std::getenv(kLimitVariable);
    if (!text || !*text) return -1;
    const std::string s(text);
    if (s.size() > 19 || !std::all_of(s.begin(), s.end(), [](char c) { return std::isdigit((unsigned char)c); }))
        fail_argument(std::string(kLimitVariable) + "='" + s.substr(0, 40) +
                      "' is not a byte count (digits only, at most 19 of them)");
    return (int64_t)std::strtoll(s.c_str(), nullptr, 10);
}

int64_t lower(int64_t a, int64_t b) { return a < 0 ? b : b < 0 ? a : std::min(a, b); }

}  // namespace

int64_t available_memory_bytes() {
    int64_t avail = -1;
#if defined(__linux__)
    avail = meminfo_available();
    if (avail < 0) avail = sysconf_available();
    avail = lower(avail, cgroup_headroom("/sys/fs/cgroup", "", "memory.max", "memory.current", "active_file",
                                         "inactive_file"));
    avail = lower(avail, cgroup_headroom("/sys/fs/cgroup/memory", "memory", "memory.limit_in_bytes",
                                         "memory.usage_in_bytes", "total_active_file", "total_inactive_file"));
#else
    avail = sysconf_available();
#endif
    return lower(avail, limit_override());
}

std::string format_bytes(uint64_t bytes) {
    static const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
    if (bytes < 1024) return std::to_string(bytes) + " B";
    double v = (double)bytes / 1024.0;
    int u = 0;
    while (v >= 1024.0 && u < 3) {
        v /= 1024.0;
        ++u;
    }
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f %s", v, units[u]);
    return buf;
}

void require_available(uint64_t need, const std::string& what, const std::string& detail, const std::string& hint) {
    const int64_t avail = available_memory_bytes();
    if (avail < 0 || need <= (uint64_t)avail) return;
    std::string msg = what + " needs " + format_bytes(need);
    if (!detail.empty()) msg += " (" + detail + ")";
    msg += " but " + format_bytes((uint64_t)avail) + " is available";
    if (std::getenv(kLimitVariable) && *std::getenv(kLimitVariable))
        msg += std::string(" (capped by ") + kLimitVariable + ")";
    if (!hint.empty()) msg += "; " + hint;
    throw error(NLD_ERR_OUT_OF_MEMORY, msg);
}

uint64_t forward_scratch_bytes(const hparams& hp, int32_t lora_rank, int32_t n_rows, bool lossy_cache) {
    const uint64_t E = (uint64_t)hp.n_embd, Q = (uint64_t)hp.n_head * (uint64_t)hp.head_dim,
                   KV = (uint64_t)hp.n_head_kv * (uint64_t)hp.head_dim, F = (uint64_t)hp.n_ff,
                   D = (uint64_t)hp.head_dim, V = (uint64_t)hp.n_vocab, R = (uint64_t)std::max(lora_rank, 0);
    const uint64_t rows = (uint64_t)std::max(n_rows, 0);
    uint64_t floats_per_row = 3 * E + 2 * Q + 2 * KV + 2 * F + D + V;
    if (lossy_cache) floats_per_row += 2 * KV;
    if (R > 0) floats_per_row += R + E;
    const uint64_t key_rows = (rows + kKeyTile - 1) / kKeyTile * kKeyTile;  // the tiled new keys, whole tiles
    const uint64_t widest_input = std::max({E, Q, F});
    const uint64_t activation_bytes_per_row = (widest_input + 31) / 32 * 40;
    uint64_t total = checked_mul(rows, checked_mul(floats_per_row, sizeof(float), "scratch size"), "scratch size");
    total = checked_add(total, checked_mul(key_rows, KV * sizeof(float), "scratch size"), "scratch size");
    return checked_add(total, checked_mul(rows, activation_bytes_per_row, "scratch size"), "scratch size");
}

}  // namespace nld
