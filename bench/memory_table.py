"""Memory of the real NLD 3B, 8B and 14B shapes: weights, KV cache and totals.

    python bench/memory_table.py [--rows 512] [--out bench/results/memory_table.md]

Every number comes from the core's own estimate (nld_memory_estimate, the
bytes nld_model_load and nld_context_create check before they allocate):
for each size and weight type a header-only GGUF of those shapes is written
to a sparse temporary file (nld_cpp.memory.write_shape_gguf: tensors typed as
the converter types them, data a hole) and estimated at n_ctx 4k, 16k and
32k with f32, f16 and q8_0 keys and values. Nothing is downloaded or
allocated. Prints the tables and writes them as markdown.

Shapes: 3B from nld_cpp.testing.real_3b_spec (its 3B-Base config); 8B and
14B from spec/nld-model.md section 1, where the 14B FFN (16384) is marked
inferred and its training context is an open question (section 9): it is
set to 32768 here, which changes no number below (every n_ctx is explicit).
Left out: the tokenizer metadata of a real file (a few MB) and the drafter
LoRA of instruct models.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path
from typing import Dict, List

from nld_cpp._binding import lib
from nld_cpp.memory import format_bytes, memory_estimate, write_shape_gguf
from nld_cpp.testing.checkpoints import real_3b_spec

OUT = Path(__file__).resolve().parent / "results" / "memory_table.md"
CONTEXTS = (4096, 16384, 32768)
CACHE_TYPES = ("f32", "f16", "q8_0")
WEIGHT_TYPES = ("q4_k_m", "q8_0", "f16")
CPU_PATHS = {1: "scalar", 2: "avx2", 3: "avx512_vnni"}


def shapes() -> Dict[str, Dict[str, int]]:
    s = real_3b_spec()
    three = dict(n_vocab=s.vocab_size, n_embd=s.hidden_size, n_layer=s.num_hidden_layers,
                 n_head=s.num_attention_heads, n_head_kv=s.num_key_value_heads, head_dim=s.head_dim,
                 n_ff=s.intermediate_size, n_ctx_train=s.max_position_embeddings)
    common = dict(n_vocab=131072, n_head=32, n_head_kv=8, head_dim=128)  # spec section 1
    return {"3B": three,
            "8B": dict(common, n_embd=4096, n_layer=34, n_ff=14336, n_ctx_train=262144),
            "14B": dict(common, n_embd=5120, n_layer=40, n_ff=16384, n_ctx_train=32768)}


def estimates(shape: Dict[str, int], n_rows: int) -> Dict[str, Dict]:
    """{weight type: {"weights": estimate, (n_ctx, cache type): estimate}}."""
    out: Dict[str, Dict] = {}
    with tempfile.TemporaryDirectory(prefix="nld-memory-table-") as tmp:
        for wt in WEIGHT_TYPES:
            path = write_shape_gguf(Path(tmp) / f"{wt}.gguf", shape, wt)
            cells: Dict = {(c, t): memory_estimate(path, n_ctx=c, cache_type_k=t, cache_type_v=t, n_rows=n_rows,
                                                   lora_path="") for c in CONTEXTS for t in CACHE_TYPES}
            cells["weights"] = cells[(CONTEXTS[0], "f16")]
            out[wt] = cells
            path.unlink()
    return out


def gib(n: int) -> str:
    return f"{n / 2**30:.2f}"


def model_section(name: str, shape: Dict[str, int], est: Dict[str, Dict], n_rows: int) -> List[str]:
    kv_token = {t: est[WEIGHT_TYPES[0]][(CONTEXTS[0], t)]["kv_bytes"] // CONTEXTS[0] for t in CACHE_TYPES}
    lines = [f"## NLD-{name}: {shape['n_layer']} layers, hidden {shape['n_embd']}, {shape['n_head']} / "
             f"{shape['n_head_kv']} heads x {shape['head_dim']}, FFN {shape['n_ff']}, vocab {shape['n_vocab']}", "",
             "KV cache per token: " + ", ".join(f"{t} {format_bytes(b)}" for t, b in kv_token.items()), "",
             "| weights | in memory (GiB) | repacked copies | file pages |", "|---|---:|---:|---:|"]
    for wt in WEIGHT_TYPES:
        w = est[wt]["weights"]
        lines.append(f"| {wt.upper()} | {gib(w['weights_bytes'])} | {gib(w['weights_copy_bytes'])} | "
                     f"{gib(w['weights_file_bytes'])} |")
    lines += ["", f"| n_ctx | K/V type | KV cache (GiB) | scratch, {n_rows} rows (GiB) | "
              + " | ".join(f"total with {wt.upper()} (GiB)" for wt in WEIGHT_TYPES) + " |",
              "|---:|---|---:|---:|" + "---:|" * len(WEIGHT_TYPES)]
    for c in CONTEXTS:
        for t in CACHE_TYPES:
            cell = est[WEIGHT_TYPES[0]][(c, t)]
            totals = " | ".join(gib(est[wt][(c, t)]["total_bytes"]) for wt in WEIGHT_TYPES)
            lines.append(f"| {c} | {t} | {gib(cell['kv_bytes'])} | {gib(cell['scratch_bytes'])} | {totals} |")
    return lines + [""]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=512, help="rows of the forward whose activations are counted")
    ap.add_argument("--out", type=Path, default=OUT, help="markdown output")
    args = ap.parse_args()
    path = CPU_PATHS.get(int(lib.nld_cpu_path_default()), "unknown")
    lines = ["# Memory of the real NLD shapes (nld_memory_estimate)", "",
             f"Machine: {platform.machine()}, CPU path {path} "
             f"({'no x8 repacks: weights are the file' if path == 'scalar' else 'x8 repacks: Q4_K weights +2.8%'}). "
             "Total = weights + KV cache + scratch (the activations and logits of one forward of "
             f"{args.rows} rows). Keys and values in the same type. GiB = 2^30 bytes. The 14B FFN is "
             "inferred (spec/nld-model.md section 1) and only changes its weights and scratch; "
             "left out: tokenizer metadata (a few MB) and the instruct models' drafter LoRA.", ""]
    for name, shape in shapes().items():
        lines += model_section(name, shape, estimates(shape, args.rows), args.rows)
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
