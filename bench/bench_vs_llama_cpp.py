"""Our CPU forward against llama.cpp (llama-cpp-python) on the same GGUF, the
same thread count, in one run, alternating: decode, the cost of 8- and
32-token block forwards over a 256-token cache relative to a 1-token forward,
and prefill.

    python bench/bench_vs_llama_cpp.py [--dir /tmp/nld-3b] [--types q8_0 q4_0 q4_k_m]
                                       [--threads 2] [--runs 5] [--prefill 512]

Setup (not CI): llama-cpp-python must be importable, e.g. built from source
with `CMAKE_ARGS="-DGGML_NATIVE=ON" pip install llama-cpp-python`. The model
is a random-weight checkpoint with the real 3B shapes
(nld_cpp.testing.real_3b_spec), generated and converted into --dir when
missing (never downloaded; about 7 GB bf16 plus the GGUFs).

Measured, per type and implementation, median (min, max) of --runs:
- decode: one causal 1-token forward after a 256-token cache, as tokens/s;
- block 8 / block 32: one 8- or 32-token forward over the same cache
  (ours: the bidirectional block pass, which reads the cache and writes
  nothing; llama.cpp: a causal batch, then the cache is cut back; the
  attention mask does not change the cost), as a ratio to the 1-token
  forward of the same implementation;
- prefill: --prefill tokens from an empty cache, as tokens/s.
Writes bench/results/bench_vs_llama_cpp.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "bench_vs_llama_cpp.json"
CACHE = 256


def ensure_files(folder: Path, types: List[str]) -> Dict[str, Path]:
    from nld_cpp.convert import convert_checkpoint
    from nld_cpp.testing import make_checkpoint, real_3b_spec

    ckpt = folder / "hf"
    if not (ckpt / "config.json").is_file():
        print(f"generating the 3B-shaped checkpoint in {ckpt} ...", flush=True)
        make_checkpoint(ckpt, real_3b_spec())
    out = {}
    for t in types:
        path = folder / f"nld-3b-{t}.gguf"
        if not path.is_file():
            print(f"converting -> {path.name} ...", flush=True)
            convert_checkpoint(ckpt, path, outtype=t, progress=False, lora=False)
        out[t] = path
    return out


class Ours:
    name = "nld_cpp"

    def __init__(self, path: Path, threads: int, n_ctx: int):
        import nld_cpp

        self.m = nld_cpp.Model(path, n_ctx=n_ctx, n_threads=threads, lora_path="")

    def prefill(self, tokens: List[int]) -> None:
        self.m.truncate(0)
        self.m.forward(tokens, kind="causal", logits="last")

    def step(self, tokens: List[int]) -> None:  # 1 token: causal, then cut back
        n = self.m.n_cached
        self.m.forward(tokens, kind="causal", logits="last")
        self.m.truncate(n)

    def block(self, tokens: List[int]) -> None:
        self.m.forward(tokens, kind="bidirectional", logits="all")

    def close(self) -> None:
        self.m.close()


class Llama:
    name = "llama.cpp"

    def __init__(self, path: Path, threads: int, n_ctx: int):
        import llama_cpp

        self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                                   n_batch=512, n_ubatch=512, verbose=False)

    def prefill(self, tokens: List[int]) -> None:
        self.llm.reset()
        self.llm._ctx.kv_cache_clear()
        self.llm.eval(tokens)

    def _eval_and_cut(self, tokens: List[int]) -> None:
        n = self.llm.n_tokens
        self.llm.eval(tokens)
        self.llm._ctx.kv_cache_seq_rm(-1, n, -1)
        self.llm.n_tokens = n

    step = _eval_and_cut
    block = _eval_and_cut

    def close(self) -> None:
        self.llm.close()


def timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def summary(values: List[float]) -> Dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def measure(impl_cls, path: Path, args: argparse.Namespace, rng: np.random.Generator) -> Dict[str, object]:
    n_vocab_safe = 120000
    impl = impl_cls(path, args.threads, max(args.prefill, CACHE + 64) + 8)
    try:
        cache = [int(t) for t in rng.integers(1256, n_vocab_safe, CACHE)]
        impl.prefill(cache)
        one, b8, b32 = [], [], []
        for _ in range(args.runs):
            tok = [int(rng.integers(1256, n_vocab_safe))]
            one.append(timed(lambda: impl.step(tok)))
            blk8 = [int(t) for t in rng.integers(1256, n_vocab_safe, 8)]
            b8.append(timed(lambda: impl.block(blk8)))
            blk32 = [int(t) for t in rng.integers(1256, n_vocab_safe, 32)]
            b32.append(timed(lambda: impl.block(blk32)))
        pre = []
        for _ in range(args.prefill_runs):
            prompt = [int(t) for t in rng.integers(1256, n_vocab_safe, args.prefill)]
            pre.append(args.prefill / timed(lambda: impl.prefill(prompt)))
    finally:
        impl.close()
    t1 = statistics.median(one)
    return {"decode_tok_s": summary([1.0 / t for t in one]), "forward_1_s": summary(one),
            "block8_ratio": summary([t / t1 for t in b8]), "block32_ratio": summary([t / t1 for t in b32]),
            "prefill_tok_s": summary(pre)}


def fmt(s: Dict[str, float], digits: int = 2) -> str:
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def main(argv: List[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/tmp/nld-3b")
    ap.add_argument("--types", nargs="+", default=["q8_0", "q4_0", "q4_k_m"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--prefill", type=int, default=512)
    ap.add_argument("--prefill-runs", type=int, default=3)
    args = ap.parse_args(argv)
    try:
        import llama_cpp
    except ImportError:
        sys.exit("llama_cpp is not importable: install llama-cpp-python first (see this file's docstring)")
    files = ensure_files(Path(args.dir), args.types)
    rng = np.random.default_rng(0)
    results: Dict[str, Dict[str, object]] = {}
    for t, path in files.items():
        results[t] = {}
        for impl in (Ours, Llama):  # alternating implementations on the same file
            print(f"{t} {impl.name} ...", flush=True)
            results[t][impl.name] = measure(impl, path, args, rng)
    print(f"\n{args.threads} threads, median (min-max) of {args.runs} runs; prefill {args.prefill} tokens, "
          f"{args.prefill_runs} runs; blocks over a {CACHE}-token cache, relative to a 1-token forward")
    print("| type | impl | decode tok/s | block 8 / 1 | block 32 / 1 | prefill tok/s |")
    print("|---|---|---|---|---|---|")
    for t, by_impl in results.items():
        for name, r in by_impl.items():
            print(f"| {t} | {name} | {fmt(r['decode_tok_s'])} | {fmt(r['block8_ratio'])} | "
                  f"{fmt(r['block32_ratio'])} | {fmt(r['prefill_tok_s'], 1)} |")
        ours, theirs = by_impl["nld_cpp"], by_impl["llama.cpp"]
        print(f"| {t} | ours / llama.cpp | {ours['decode_tok_s']['median'] / theirs['decode_tok_s']['median']:.2f}x | "
              f"| | {ours['prefill_tok_s']['median'] / theirs['prefill_tok_s']['median']:.2f}x |")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "bench_vs_llama_cpp", "model": "random weights, real 3B shapes (real_3b_spec)",
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "threads": args.threads}, "llama_cpp_python": llama_cpp.__version__,
        "runs": args.runs, "prefill_tokens": args.prefill, "cache_tokens": CACHE, "results": results}, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
