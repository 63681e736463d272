"""Decode and 32-token blocks over long KV caches, per cache type, against llama.cpp (issue 26).

For each cache length (256, 4k, 16k, 32k tokens by default) and cache type (f32, f16, q8_0 for
keys and values alike), both implementations hold the same 3B-shaped GGUF (bench_vs_llama_cpp's
random-weight file; `--layers N` keeps its first N layers, which makes filling a 32k cache N/26
as long while a token's time per layer is what it is) with a cache of that type, prefilled with
the same random tokens; then, in turn and call by call (who goes first alternates by run, a
pause before each call), a 1-token decode step (cut back after) and a 32-token block with every
row's logits (ours: the bidirectional block pass; llama.cpp: a causal batch, cut back after).
llama.cpp runs with flash attention on (its quantized V cache needs it; on for every type, so
its attention is the same kernel across the table). Reports medians (min-max) and the per-pair
ratios; writes bench/results/bench_kv_cache.{json,md}.

Setup (not CI): `CMAKE_ARGS="-DGGML_NATIVE=ON" pip install llama-cpp-python`.

    python bench/bench_kv_cache.py [--threads 2] [--lengths 256 4096 16384 32768] [--runs 5] [--layers 26]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_vs_llama_cpp as peer  # noqa: E402  (ensure_files' checkpoint, machine_info, summary)

TYPES = {"f32": 0, "f16": 1, "q8_0": 8}  # GGML ids, as both take them
BLOCK = 32


class Ours(peer.Ours):  # its step, block and close; a cache of the given type
    def __init__(self, path: Path, threads: int, n_ctx: int, cache_type: str):  # noqa: D107
        import nld_cpp

        self.m = nld_cpp.Model(path, n_ctx=n_ctx, n_threads=threads, lora_path="", cache_type_k=cache_type,
                               cache_type_v=cache_type)

    def fill(self, tokens: List[int]) -> None:
        for i in range(0, len(tokens), 512):
            self.m.forward(tokens[i:i + 512], kind="causal", logits="none")


class Llama(peer.Llama):
    def __init__(self, path: Path, threads: int, n_ctx: int, cache_type: str):  # noqa: D107
        import llama_cpp

        self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                                   n_batch=512, n_ubatch=512, type_k=TYPES[cache_type], type_v=TYPES[cache_type],
                                   flash_attn=True, verbose=False)

    def fill(self, tokens: List[int]) -> None:
        self.llm.reset()
        self.llm._ctx.kv_cache_clear()
        self.llm.eval(tokens)


def cut_layers(src: Path, layers: int, out: Path) -> Path:
    """A copy of the checkpoint with its first `layers` layers (config and safetensors)."""
    if (out / "config.json").is_file():
        return out
    from safetensors.torch import load_file, save_file  # bf16 shards

    out.mkdir(parents=True, exist_ok=True)
    cfg = json.loads((src / "config.json").read_text())
    cfg["num_hidden_layers"] = layers
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    for f in src.iterdir():
        if f.suffix == ".safetensors":
            kept = {k: v for k, v in load_file(str(f)).items()
                    if ".layers." not in k or int(k.split(".layers.")[1].split(".")[0]) < layers}
            save_file(kept, str(out / f.name))
        elif f.name != "config.json" and f.is_file() and not f.name.endswith(".index.json"):
            (out / f.name).write_bytes(f.read_bytes())
    index = src / "model.safetensors.index.json"
    if index.is_file():
        idx = json.loads(index.read_text())
        idx["weight_map"] = {k: v for k, v in idx["weight_map"].items()
                             if ".layers." not in k or int(k.split(".layers.")[1].split(".")[0]) < layers}
        (out / index.name).write_text(json.dumps(idx))
    return out


def model_file(folder: Path, layers: int) -> Path:
    from nld_cpp.convert import convert_checkpoint

    peer.ensure_files(folder, [])  # the full 3B-shaped checkpoint in folder/hf
    ckpt = folder / "hf"
    cfg = json.loads((ckpt / "config.json").read_text())
    if layers and layers < cfg["num_hidden_layers"]:
        ckpt = cut_layers(ckpt, layers, folder / f"hf-{layers}l")
    path = folder / f"nld-3b-{layers or cfg['num_hidden_layers']}l-q4_0.gguf"
    if not path.is_file():
        convert_checkpoint(ckpt, path, outtype="q4_0", progress=False, lora=False)
    return path


def measure(path: Path, length: int, cache_type: str, args: argparse.Namespace, rng: np.random.Generator) -> dict:
    def tokens(n: int) -> List[int]:
        return [int(t) for t in rng.integers(peer.FIRST_ORDINARY_TOKEN, peer.MAX_TOKEN, n)]

    n_ctx = length + BLOCK + 16
    impls: List[object] = []
    samples: Dict[str, Dict[str, List[float]]] = {}
    try:
        cached = tokens(length)
        for cls in (Ours, Llama):
            impl = cls(path, args.threads, n_ctx, cache_type)
            impls.append(impl)
            t = peer.timed(lambda: impl.fill(cached))
            samples[impl.name] = {"fill": [t], "one": [], "block": []}
            print(f"  {impl.name}: {length} tokens filled in {t:.1f} s", flush=True)
        for run in range(args.runs):
            tok, blk = tokens(1), tokens(BLOCK)
            for key, call in (("one", lambda i: i.step(tok)), ("block", lambda i: i.block(blk))):
                for impl in (impls if run % 2 == 0 else impls[::-1]):
                    time.sleep(args.gap)
                    samples[impl.name][key].append(peer.timed(lambda: call(impl)))
    finally:
        for impl in impls:
            impl.close()
    ours, theirs = samples[Ours.name], samples[Llama.name]
    out = {name: {"decode_tok_s": peer.summary([1.0 / t for t in s["one"]]), "block_s": peer.summary(s["block"]),
                  "fill_s": s["fill"][0]} for name, s in samples.items()}
    out["paired"] = {"decode_speedup": peer.summary([b / a for a, b in zip(ours["one"], theirs["one"])]),
                     "block_time": peer.summary([a / b for a, b in zip(ours["block"], theirs["block"])])}
    return out


def table(results: dict, args: argparse.Namespace) -> str:
    rows = ["| cache | tokens | ours decode tok/s | llama.cpp decode tok/s | decode ours / llama.cpp "
            "| ours block 32 s | llama.cpp block 32 s | block time ours / llama.cpp | ours block / ours at 256 |",
            "|---|---|---|---|---|---|---|---|---|"]
    for t in args.types:
        base = results.get(f"{t}/{min(args.lengths)}")
        for n in args.lengths:
            if f"{t}/{n}" not in results:  # a partial run: what was measured so far
                continue
            r = results[f"{t}/{n}"]
            ours, theirs, p = r[Ours.name], r[Llama.name], r["paired"]
            growth = ours["block_s"]["median"] / base[Ours.name]["block_s"]["median"] if base else float("nan")
            rows.append(f"| {t} | {n} | {peer.fmt(ours['decode_tok_s'])} | {peer.fmt(theirs['decode_tok_s'])} | "
                        f"**{peer.fmt(p['decode_speedup'])}x** | {peer.fmt(ours['block_s'], 3)} | "
                        f"{peer.fmt(theirs['block_s'], 3)} | "
                        f"{peer.fmt(p['block_time'])}x | {growth:.2f} |")
    return "\n".join(rows)


def main(argv: List[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default="/tmp/nld-3b")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lengths", type=int, nargs="+", default=[256, 4096, 16384, 32768])
    ap.add_argument("--types", nargs="+", default=list(TYPES), choices=list(TYPES))
    ap.add_argument("--layers", type=int, default=0, help="keep the first N layers (0: all)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--gap", type=float, default=0.05)
    ap.add_argument("--out", default=str(peer.RESULTS_DIR / "bench_kv_cache"))
    args = ap.parse_args(argv)
    path = model_file(Path(args.dir), args.layers)
    rng = np.random.default_rng(26)
    results: dict = {}

    def write() -> str:  # after every cell, so a long run that is stopped keeps what it measured
        report = {"machine": peer.machine_info(), "file": path.name, "threads": args.threads, "runs": args.runs,
                  "date": time.strftime("%Y-%m-%d"), "results": results,
                  "complete": len(results) == len(args.types) * len(args.lengths)}
        Path(args.out + ".json").write_text(json.dumps(report, indent=2))
        text = (f"# KV cache types over long caches ({path.name}, {args.threads} threads, {args.runs} runs, "
                f"{report['date']}{'' if report['complete'] else ', partial'})\n\n{json.dumps(report['machine'])}"
                f"\n\n{table(results, args)}\n")
        Path(args.out + ".md").write_text(text)
        return text

    for t in args.types:
        for n in args.lengths:
            print(f"{t} cache, {n} tokens:", flush=True)
            results[f"{t}/{n}"] = measure(path, n, t, args, rng)
            text = write()
    print(text)


if __name__ == "__main__":
    main()
