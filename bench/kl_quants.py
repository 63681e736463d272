"""KL divergence of each weight type's next-token distributions from F32's, on the tiny trained model.

The float HF checkpoint (--hf) is converted to f32, f16, bf16, q8_0, q4_0 and
q4_k_m in a temporary directory. Every held-out example
(python/nld_cpp/models/held_out.json) is rendered as the model was trained on
it (train/corpus.py `render`: chat prompt + answer + <|im_end|>), tokenized
with the shipped GGUF's tokenizer (no BOS, as in training), truncated to the
context, and run with teacher forcing: one causal forward per text, logits at
every position. Per type, against F32 at the same positions:

- mean KL(P_f32 || P_type) over all positions, in nats, from float64 log-softmax;
- the 99th percentile of the per-position KL (numpy's linear interpolation);
- top-1 agreement: the share of positions whose argmax equals F32's;
- the GGUF file size.

Every weight type runs with an f32 KV cache (the weights' effect alone); then
the shipped file with f16 and q8_0 KV caches is compared with its own f32
cache the same way (the new rows of a forward see their K/V rounded as the
cache gives them back, so teacher forcing measures the cache's rounding).

The q8_0 conversion is also compared tensor by tensor with the shipped Q8_0
file (names, types, bytes), which tells whether --hf is the shipped model.
Prints a markdown table; writes JSON (default bench/results/kl_quants.json).

    python bench/kl_quants.py [--hf /tmp/nld-tiny-hf] [--texts N] [--threads 1]
    python bench/kl_quants.py --cache-types-only   # the KV cache part alone: needs no checkpoint
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = ROOT / "python" / "nld_cpp" / "models"
SHIPPED = MODELS_DIR / "nld-tiny-q8_0.gguf"
OUTTYPES = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_k_m"]
N_CTX = 512  # the tiny model's max_position_embeddings


def held_out_texts(n: Optional[int] = None) -> List[str]:
    """The first n held-out conversations (all when n is None) rendered as
    training text: the chat prompt of the last turn (with the earlier turns
    and their answers), its answer and <|im_end|>."""
    from nld_cpp.models import render_prompt

    items = json.loads((MODELS_DIR / "held_out.json").read_text(encoding="utf-8"))
    texts = []
    for item in items if n is None else items[:n]:
        turns = [(t["user"], t["answer"]) for t in item["turns"]]
        texts.append(render_prompt(turns[-1][0], turns[:-1], item["system"]) + turns[-1][1] + "<|im_end|>")
    return texts


def first_of_each_task() -> List[int]:
    """Indices of the first held-out item of each task, in order."""
    items = json.loads((MODELS_DIR / "held_out.json").read_text(encoding="utf-8"))
    seen: Dict[str, int] = {}
    for i, item in enumerate(items):
        seen.setdefault(item["task"], i)
    return sorted(seen.values())


def tokenize(texts: Sequence[str], n_ctx: int = N_CTX, gguf_path: Path = SHIPPED) -> List[List[int]]:
    from nld_cpp.tokenizer import Tokenizer

    tok = Tokenizer.from_gguf(gguf_path)
    return [tok.encode(text)[:n_ctx] for text in texts]


def teacher_forced_logits(model_path: Path, token_lists: Sequence[Sequence[int]], n_ctx: int = N_CTX,
                          n_threads: int = 1, cache_type: str = "f32") -> np.ndarray:
    """(total positions, n_vocab) float32: one causal forward per text from an
    empty cache of cache_type (keys and values; f32: the weights' effect alone)."""
    from nld_cpp import Model

    with Model(str(model_path), n_ctx=n_ctx, n_threads=n_threads, cache_type_k=cache_type,
               cache_type_v=cache_type) as model:
        rows = []
        for tokens in token_lists:
            model.truncate(0)
            rows.append(model.forward(list(tokens), kind="causal", logits="all"))
    return np.concatenate(rows)


def log_softmax64(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def kl_per_position(ref_logits: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """KL(P_ref || P) per row, in nats (float64): sum_v p_ref(v) (log p_ref(v) - log p(v))."""
    log_p, log_q = log_softmax64(ref_logits), log_softmax64(logits)
    return np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)


def compare(ref_logits: np.ndarray, logits: np.ndarray) -> Dict[str, float]:
    kl = kl_per_position(ref_logits, logits)
    return {
        "mean_kl": float(kl.mean()),
        "p99_kl": float(np.percentile(kl, 99)),
        "max_kl": float(kl.max()),
        "top1_agreement": float(np.mean(ref_logits.argmax(-1) == logits.argmax(-1))),
    }


def tensor_types(path: Path) -> Dict[str, int]:
    """How many tensors of each ggml type the file holds."""
    import gguf

    return dict(sorted(Counter(t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors).items()))


def same_tensor_data(a: Path, b: Path) -> bool:
    """The two GGUFs hold the same tensors: names, types, shapes and bytes (metadata may differ)."""
    import gguf

    ta, tb = gguf.GGUFReader(str(a)).tensors, gguf.GGUFReader(str(b)).tensors
    return len(ta) == len(tb) and all(
        x.name == y.name and x.tensor_type == y.tensor_type and list(x.shape) == list(y.shape)
        and np.array_equal(np.asarray(x.data), np.asarray(y.data)) for x, y in zip(ta, tb))


def _environment(n_threads: int) -> Dict[str, object]:
    import importlib.metadata as md

    from nld_cpp import quants

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain"], capture_output=True,
                                    text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = None, None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
                    "threads": n_threads, "cpu_path": quants.default_cpu_path()},
        "python": sys.version.split()[0],
        "packages": {name: md.version(name) for name in ("nld-cpp", "gguf", "numpy", "tokenizers")},
        "git": {"commit": commit, "dirty": dirty},
    }


def print_table(rows: Dict[str, Dict[str, object]], n_positions: int) -> None:
    print(f"\nvs F32, {n_positions} positions (teacher forcing):\n")
    print("| type | tensor types | mean KL (nats) | p99 KL (nats) | top-1 agreement | file size |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        types = ", ".join(f"{n} {t}" for t, n in r["tensor_types"].items())  # type: ignore[union-attr]
        print(f"| {name} | {types} | {r['mean_kl']:.3e} | {r['p99_kl']:.3e} | {100 * r['top1_agreement']:.2f}% "
              f"| {r['file_bytes'] / 2**20:.2f} MiB |")


def cache_type_rows(token_lists: List[List[int]], n_threads: int) -> Dict[str, Dict[str, object]]:
    """KV cache types on the shipped file: f16 and q8_0 caches against its f32 cache (printed as a table)."""
    cache_rows: Dict[str, Dict[str, object]] = {}
    cache_ref = teacher_forced_logits(SHIPPED, token_lists, n_threads=n_threads, cache_type="f32")
    for cache_type in ("f16", "q8_0"):
        logits = teacher_forced_logits(SHIPPED, token_lists, n_threads=n_threads, cache_type=cache_type)
        cache_rows[cache_type] = compare(cache_ref, logits)
    print(f"\nKV cache types, {SHIPPED.name}, against its f32 cache:\n")
    print("| cache | mean KL (nats) | p99 KL (nats) | max KL (nats) | top-1 agreement |")
    print("|---|---|---|---|---|")
    for name, r in cache_rows.items():
        print(f"| {name} | {r['mean_kl']:.3e} | {r['p99_kl']:.3e} | {r['max_kl']:.3e} | {100 * r['top1_agreement']:.2f}% |")
    return cache_rows


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hf", default="/tmp/nld-tiny-hf", help="the float HF checkpoint of the tiny model")
    parser.add_argument("--texts", type=int, default=None, help="first N held-out texts (default: all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None,
                        help="JSON output (default bench/results/kl_quants.json, or kl_cache_types.json)")
    parser.add_argument("--cache-types-only", action="store_true",
                        help="only the shipped file's f16 and q8_0 KV caches against its f32 cache")
    args = parser.parse_args(argv)
    name = "kl_cache_types.json" if args.cache_types_only else "kl_quants.json"
    args.out = args.out or str(ROOT / "bench" / "results" / name)
    if not args.cache_types_only and not Path(args.hf, "config.json").is_file():
        parser.error(f"no HF checkpoint at {args.hf} (config.json missing; --cache-types-only needs none)")

    token_lists = tokenize(held_out_texts(args.texts))
    n_positions = sum(len(t) for t in token_lists)
    n_truncated = sum(len(t) == N_CTX for t in token_lists)
    print(f"{len(token_lists)} held-out texts, {n_positions} positions "
          f"({min(map(len, token_lists))}..{max(map(len, token_lists))} tokens each), {args.threads} thread(s)")
    if args.cache_types_only:
        cache_rows = cache_type_rows(token_lists, args.threads)
        out = dict(_environment(args.threads), shipped_model=SHIPPED.name, n_texts=len(token_lists),
                   n_positions=n_positions, n_ctx=N_CTX, n_texts_at_context_limit=n_truncated,
                   notes=["KL(P_f32cache || P_cache) in nats, float64 log-softmax, teacher forcing over the held-out "
                          "texts; the new rows of a forward see their K/V rounded as the cache gives them back"],
                   cache_types={"model": SHIPPED.name, "reference": "the same file with an f32 KV cache",
                                "results": cache_rows})
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {args.out}")
        return
    from nld_cpp.convert import convert_checkpoint

    rows: Dict[str, Dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ref: Optional[np.ndarray] = None
        paths: Dict[str, Path] = {}
        for outtype in OUTTYPES:
            conv = convert_checkpoint(args.hf, Path(tmp) / f"nld-tiny-{outtype}.gguf", outtype=outtype,
                                      progress=False, lora=False)
            paths[outtype] = conv.path
            t0 = time.perf_counter()
            logits = teacher_forced_logits(conv.path, token_lists, n_threads=args.threads)
            seconds = time.perf_counter() - t0
            if ref is None:
                ref = logits
            rows[outtype.upper()] = dict(compare(ref, logits), file_bytes=conv.path.stat().st_size,
                                         tensor_types=tensor_types(conv.path), forward_seconds=round(seconds, 2))
            print(f"  {outtype}: mean KL {rows[outtype.upper()]['mean_kl']:.3e}, {seconds:.1f} s", flush=True)
        q8_equals_shipped = same_tensor_data(paths["q8_0"], SHIPPED)
        q4_k_m_equals_q8_0 = same_tensor_data(paths["q4_k_m"], paths["q8_0"])
    print_table(rows, n_positions)
    cache_rows = cache_type_rows(token_lists, args.threads)
    print(f"\nq8_0 conversion of {args.hf} has the shipped file's tensors byte for byte: {q8_equals_shipped}")
    print(f"q4_k_m file has the q8_0 file's tensors byte for byte (K-quant fallback): {q4_k_m_equals_q8_0}")
    out = dict(_environment(args.threads), **{
        "hf_checkpoint": str(args.hf), "shipped_model": SHIPPED.name, "q8_0_equals_shipped": q8_equals_shipped,
        "q4_k_m_equals_q8_0": q4_k_m_equals_q8_0,
        "n_texts": len(token_lists), "n_positions": n_positions, "n_ctx": N_CTX,
        "n_texts_at_context_limit": n_truncated,
        "notes": [
            "reference: the F32 conversion of the HF checkpoint; KL(P_f32 || P_type) in nats, float64 log-softmax; "
            "every weight type with an f32 KV cache (cache_types: the shipped file with f16 and q8_0 caches)",
            "texts: held_out.json conversations rendered as training text (chat prompt + answer + <|im_end|>), "
            "tokenized by the shipped GGUF's tokenizer without BOS; one causal forward per text, all positions",
            "p99: numpy percentile (linear interpolation) of the per-position KL",
            "Q8_0/Q4_0 weights use Q8_0-quantized activations in the CPU matmul (docs/quants.md), "
            "so their KL includes activation rounding; F16/BF16 use the f32 activation path",
            "q4_k_m: rows that are not a multiple of 256 fall back from Q4_K / Q6_K to Q8_0 (docs/quants.md); "
            "the tiny model's rows are 128 or 384 long, so every matrix falls back (q4_k_m_equals_q8_0)",
        ],
        "results": rows,
        "cache_types": {"model": SHIPPED.name, "reference": "the same file with an f32 KV cache",
                        "results": cache_rows},
    })
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
