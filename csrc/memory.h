// memory.h: how much memory this process may still take, the refusal of an
// allocation that would not fit in it, and the bytes of the activations one
// forward holds. The estimate of nld.h (nld_memory_estimate) and the checks
// of nld_model_load and nld_context_create count with these same functions,
// so what is said up front is what is checked. docs/memory.md explains it.
#pragma once

#include <cstdint>
#include <string>

#include "model.h"  // hparams

namespace nld {

// Rows of one forward counted when the caller names none: llama.cpp's
// n_batch (and the scheduler's max_prefill_rows), at most n_ctx.
constexpr int32_t kDefaultForwardRows = 512;

// Bytes this process can still take, or -1 when nothing can be read (then
// nothing is refused). Linux: MemAvailable of /proc/meminfo, lowered to the
// headroom of every memory cgroup above the process (v2: memory.max minus
// memory.current; v1: memory.limit_in_bytes minus memory.usage_in_bytes;
// in both the page cache charged to the cgroup, active_file +
// inactive_file, counts as free, as MemAvailable counts the system's).
// Elsewhere: the pages sysconf reports available. Either way capped
// at NLD_MEMORY_LIMIT_BYTES when that is set (a byte count, as a cgroup
// limit would be; an unreadable value throws NLD_ERR_INVALID_ARGUMENT).
int64_t available_memory_bytes();

// Throws error(NLD_ERR_OUT_OF_MEMORY) with "<what> needs <need> (<detail>)
// but <available> is available[; <hint>]" when need is more than
// available_memory_bytes(). Called before the allocation it guards.
void require_available(uint64_t need, const std::string& what, const std::string& detail, const std::string& hint);

// "5.2 GiB", "310.0 MiB", "12.0 KiB", "512 B".
std::string format_bytes(uint64_t bytes);

// Bytes of the activations of one forward over n_rows rows, with the logits
// of every row (forward_scratch in context.h, plus the per-call buffers of
// the CPU ops in backend/cpu/ops.cpp). With E = n_embd, Q = n_head*head_dim,
// KV = n_head_kv*head_dim, F = n_ff, D = head_dim, V = n_vocab, R = the
// drafter LoRA's rank (0: none), per row:
//   floats: 3E  hidden, normed, proj
//         + 2Q  q, attn
//         + 2KV k, v
//         + 2KV k_seen, v_seen (only when a cache type is not f32)
//         + KV  attention's tiled copy of the new keys (rows rounded up to
//               whole tiles of 16)
//         + 2F  gate, up
//         + D   RoPE cos and sin (D/2 each)
//         + R + E  lora_mid and its delta (only with a drafter)
//         + V   logits
//   bytes: the 8-bit activations of the widest quantized matmul input,
//          max(E, Q, F) / 32 blocks of 40 bytes (block_q8_0s; Q8_K's 292
//          bytes per 256 take less).
// Left out: the per-thread attention scores (4 bytes x n_head/n_head_kv x
// the keys of one row, per thread) and the per-row index vectors.
uint64_t forward_scratch_bytes(const hparams& hp, int32_t lora_rank, int32_t n_rows, bool lossy_cache);

}  // namespace nld
