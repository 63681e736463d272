"""Our CPU forward against llama.cpp (llama-cpp-python) on the same GGUF, per
thread count, in one run, alternating: decode, the cost of 4-, 8- and
32-token block forwards over a cached prefix relative to a 1-token forward,
prefill, and how far each is from this machine's roofline.

    python bench/bench_vs_llama_cpp.py [--dir /tmp/nld-3b] [--types f16 q8_0 q4_0 q4_k_m]
                                       [--threads 1 2] [--runs 5] [--prefill 512]
                                       [--prefill-runs 5] [--cache 256] [--roofline-runs 5]
    python bench/bench_vs_llama_cpp.py --smoke      # small model, about a minute

Setup (not CI): llama-cpp-python must be importable, e.g. built from source
with `CMAKE_ARGS="-DGGML_NATIVE=ON" pip install llama-cpp-python`, and a C++
compiler (`c++`) must be on PATH for bench/roofline.cpp. The model is a
random-weight checkpoint with the real 3B shapes
(nld_cpp.testing.real_3b_spec), generated and converted into --dir when
missing (never downloaded; about 7 GB bf16 plus the GGUFs). --smoke uses a
small random checkpoint (SMOKE_SPEC) in /tmp/nld-bench-smoke, a 64-token
cache and prompt and 2 runs, and writes its results next to that model, so
the real results are left alone.

Both implementations hold the file at once and are timed in turn, call by
call, on the same tokens (who goes first alternates by run, with a pause of
--gap seconds before each timed call), so the host's slow spells fall on both
sides of each pair. Measured, per type, thread count and implementation,
median (min, max) of --runs (prefill: of --prefill-runs):
- decode: one causal 1-token forward after a --cache-token cache (then cut
  back), as tokens/s;
- block 4 / 8 / 32: one 4-, 8- or 32-token forward over the same cache
  (ours: the bidirectional block pass, which reads the cache, writes nothing
  and returns logits for every row; llama.cpp: a causal batch with logits
  for every row, then the cache is cut back; the mask does not change the
  cost),
  as a ratio to the 1-token forward of the same implementation;
- prefill: --prefill tokens from an empty cache, as tokens/s.

Roofline (bench/roofline.cpp, compiled once, run per thread count before and
again after the model measurements): read_gb_s, a STREAM-like read
bandwidth, and int8_gop_s, the int8 multiply-add peak (1 MAC = 2 ops). Each
is the higher of the two probes: on a shared host another tenant's work
can only lower a probe, and one low probe (a 2-thread int8 peak at the
1-thread figure has been seen) would inflate every % against it; both
probes are kept in the JSON (roofline_probes). From the GGUF
(gguf.GGUFReader):
- decode_bytes = sum of the tensor data sizes except token_embd.weight (a
  decode token reads one row of it); the KV cache is not counted;
- matmul_params = sum of the element counts of all 2-D tensors except
  token_embd.weight (every matrix including the output head).
- decode % = (decode_bytes / forward_1 median s) / read_gb_s;
- block 32 % = (2 * matmul_params * 32 / block 32 median s) / int8_gop_s;
- prefill % = (2 * matmul_params * prefill tok/s median) / int8_gop_s.
The ops count every matrix for every token (also the head, which the
last-logits runs apply once), and F16 files are held to the same int8 peak.

Prints three markdown tables (figures; ours / llama.cpp pair by pair: decode
and prefill speed and block-32 time, each the median (min, max) of the
per-pair ratios; roofline %) and writes them
to bench/results/bench_vs_llama_cpp.md, everything (machine, date, versions,
roofline, results) to bench/results/bench_vs_llama_cpp.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
RESULTS_NAME = "bench_vs_llama_cpp"
ROOFLINE_SRC = ROOT / "bench" / "roofline.cpp"
BLOCKS = (4, 8, 32)
FIRST_ORDINARY_TOKEN = 1256  # ids below are control and byte tokens in the random tokenizer
MAX_TOKEN = 120000

DEFAULTS = {"dir": "/tmp/nld-3b", "runs": 5, "prefill": 512, "prefill_runs": 5, "cache": 256, "roofline_runs": 5}
SMOKE_DEFAULTS = {"dir": "/tmp/nld-bench-smoke", "runs": 2, "prefill": 64, "prefill_runs": 2, "cache": 64,
                  "roofline_runs": 2}


def smoke_spec():  # type: ignore[no-untyped-def]
    """A small checkpoint whose matrix rows fill 256-element K-quant super-blocks (so q4_k_m has no fallbacks)."""
    from nld_cpp.testing import CheckpointSpec

    return CheckpointSpec(vocab_size=4096, hidden_size=256, intermediate_size=768, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                          max_position_embeddings=512, original_max_position_embeddings=2048, lora_rank=0)


def ensure_files(folder: Path, types: List[str], smoke: bool = False) -> Dict[str, Path]:
    from nld_cpp.convert import convert_checkpoint
    from nld_cpp.testing import make_checkpoint, real_3b_spec

    ckpt = folder / "hf"
    stem = "nld-smoke" if smoke else "nld-3b"
    if not (ckpt / "config.json").is_file():
        print(f"generating the {'small' if smoke else '3B-shaped'} checkpoint in {ckpt} ...", flush=True)
        make_checkpoint(ckpt, smoke_spec() if smoke else real_3b_spec())
    out = {}
    for t in types:
        path = folder / f"{stem}-{t}.gguf"
        if not path.is_file():
            print(f"converting -> {path.name} ...", flush=True)
            convert_checkpoint(ckpt, path, outtype=t, progress=False, lora=False)
        out[t] = path
    return out


def model_sizes(path: Path) -> Dict[str, int]:
    """decode_bytes and matmul_params of one GGUF (see the module docstring)."""
    import gguf

    tensors = [t for t in gguf.GGUFReader(str(path)).tensors if t.name != "token_embd.weight"]
    return {"decode_bytes": int(sum(int(t.n_bytes) for t in tensors)),
            "matmul_params": int(sum(int(t.n_elements) for t in tensors if len(t.shape) == 2))}


def build_roofline(folder: Path) -> Path:
    compiler = shutil.which("c++")
    if compiler is None:
        sys.exit("no C++ compiler: `c++` is not on PATH, and bench/roofline.cpp must be compiled "
                 "(install g++ or clang++)")
    binary = folder / "roofline"
    cmd = [compiler, "-O2", "-march=native", "-pthread", str(ROOFLINE_SRC), "-o", str(binary)]
    built = subprocess.run(cmd, capture_output=True, text=True)
    if built.returncode != 0:
        sys.exit(f"compiling bench/roofline.cpp failed ({' '.join(cmd)}):\n{built.stderr}")
    return binary


def run_roofline(binary: Path, threads: int, runs: int) -> Dict[str, float]:
    done = subprocess.run([str(binary), str(threads), str(runs)], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"roofline {threads} {runs} failed: {done.stderr.strip()}")
    return json.loads(done.stdout)


def higher_roofline(probes: List[Dict[str, float]]) -> Dict[str, float]:
    """The first probe with its bandwidths and int8 peak each the highest of all probes."""
    best = dict(probes[0])
    for key in ("read_gb_s", "read_gb_s_max", "int8_gop_s"):
        best[key] = max(p[key] for p in probes)
    return best


def machine_info() -> Dict[str, object]:
    model_name, flags, family = platform.processor() or platform.machine(), set(), {}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        lscpu = ""
    for line in lscpu.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name":
            model_name = value.strip()
        elif key.strip() in ("CPU family", "Model"):  # tells apart CPUs sold under one name
            family[key.strip().lower().replace(" ", "_")] = value.strip()
        elif key.strip() == "Flags":
            flags = set(value.split())
    if not flags and Path("/proc/cpuinfo").is_file():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.partition(":")[2].split())
                break
    return {"platform": platform.platform(), "cpu_model": model_name, **family, "cpus": os.cpu_count(),
            "flags": {f: f in flags for f in ("avx2", "avx512f", "avx512_vnni")}}


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

    def block(self, tokens: List[int]) -> None:
        # Logits for every row, as a diffusion block needs (and as ours
        # returns); llama-cpp-python's eval would ask for the last row only.
        n = self.llm.n_tokens
        self.llm._batch.set_batch(batch=tokens, n_past=n, logits_all=True)
        self.llm._ctx.decode(self.llm._batch)
        self.llm._ctx.kv_cache_seq_rm(-1, n, -1)

    def close(self) -> None:
        self.llm.close()


IMPL_NAMES = (Ours.name, Llama.name)


def timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def summary(values: List[float]) -> Dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def measure(path: Path, threads: int, args: argparse.Namespace, max_token: int,
            rng: np.random.Generator) -> Dict[str, Dict[str, object]]:
    """Both implementations loaded at once and measured in turn, item by
    item: the same tokens go to each, one right after the other (who goes
    first alternates by run), so a slow spell of the shared host falls on
    both sides of a pair rather than on one implementation's whole series.
    A pause of --gap seconds before each timed call lets the other side's
    threads go idle."""
    def random_tokens(n: int) -> List[int]:
        return [int(t) for t in rng.integers(FIRST_ORDINARY_TOKEN, max_token, n)]

    n_ctx = max(args.prefill, args.cache + max(BLOCKS) + 32) + 8
    impls: List[object] = []
    try:
        for impl_cls in (Ours, Llama):
            impls.append(impl_cls(path, threads, n_ctx))
        cached = random_tokens(args.cache)
        for impl in impls:
            impl.prefill(cached)
        keys = ["one", *BLOCKS, "prefill"]
        samples: Dict[str, Dict[object, List[float]]] = {i.name: {k: [] for k in keys} for i in impls}

        def each(run: int, key: object, call: Callable[[object], None]) -> None:
            for impl in (impls if run % 2 == 0 else impls[::-1]):
                time.sleep(args.gap)
                samples[impl.name][key].append(timed(lambda: call(impl)))

        for run in range(args.runs):
            tok = random_tokens(1)
            each(run, "one", lambda impl: impl.step(tok))
            for n in BLOCKS:
                blk = random_tokens(n)
                each(run, n, lambda impl: impl.block(blk))
        for run in range(args.prefill_runs):
            prompt = random_tokens(args.prefill)
            each(run, "prefill", lambda impl: impl.prefill(prompt))
    finally:
        for impl in impls:
            impl.close()

    out: Dict[str, Dict[str, object]] = {}
    for name, s in samples.items():
        t1 = statistics.median(s["one"])
        r: Dict[str, object] = {"decode_tok_s": summary([1.0 / t for t in s["one"]]), "forward_1_s": summary(s["one"])}
        for n in BLOCKS:
            r[f"block{n}_s"] = summary(s[n])
            r[f"block{n}_ratio"] = summary([t / t1 for t in s[n]])
        r["prefill_s"] = summary(s["prefill"])
        r["prefill_tok_s"] = summary([args.prefill / t for t in s["prefill"]])
        out[name] = r
    # Ours against llama.cpp pair by pair (the two calls of one item, back to back).
    ours, theirs = samples[Ours.name], samples[Llama.name]
    out["paired"] = {
        "decode_speedup": summary([b / a for a, b in zip(ours["one"], theirs["one"])]),
        "block32_time": summary([a / b for a, b in zip(ours[32], theirs[32])]),
        "prefill_speedup": summary([b / a for a, b in zip(ours["prefill"], theirs["prefill"])]),
    }
    return out


def roofline_pct(r: Dict[str, Dict[str, float]], sizes: Dict[str, int], roof: Dict[str, float]) -> Dict[str, float]:
    read_bytes_s, int8_ops_s = roof["read_gb_s"] * 1e9, roof["int8_gop_s"] * 1e9
    ops_per_token = 2.0 * sizes["matmul_params"]
    return {"decode_pct_read": 100.0 * sizes["decode_bytes"] / r["forward_1_s"]["median"] / read_bytes_s,
            "block32_pct_int8": 100.0 * ops_per_token * 32 / r["block32_s"]["median"] / int8_ops_s,
            "prefill_pct_int8": 100.0 * ops_per_token * r["prefill_tok_s"]["median"] / int8_ops_s}


def fmt(s: Dict[str, float], digits: int = 2) -> str:
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def tables(results: Dict[str, Dict[str, Dict[str, dict]]], roofline: Dict[str, dict], args: argparse.Namespace) -> str:
    lines = [f"median (min-max) of {args.runs} runs; prefill {args.prefill} tokens, {args.prefill_runs} runs; "
             f"blocks over a {args.cache}-token cache, time relative to a 1-token forward", "",
             "| type | threads | impl | decode tok/s | block 4 / 1 | block 8 / 1 | block 32 / 1 | prefill tok/s |",
             "|---|---|---|---|---|---|---|---|"]
    for t, by_threads in results.items():
        for n, by_impl in by_threads.items():
            for name in IMPL_NAMES:
                r = by_impl[name]
                lines.append(f"| {t} | {n} | {name} | {fmt(r['decode_tok_s'])} | {fmt(r['block4_ratio'])} | "
                             f"{fmt(r['block8_ratio'])} | {fmt(r['block32_ratio'])} | {fmt(r['prefill_tok_s'], 1)} |")
            paired = by_impl["paired"]
            lines.append(f"| {t} | {n} | ours / llama.cpp, pair by pair | {fmt(paired['decode_speedup'])}x | | | "
                         f"time {fmt(paired['block32_time'])}x | {fmt(paired['prefill_speedup'])}x |")
    lines += ["", "roofline (" + "; ".join(f"{n} threads: read {r['read_gb_s']:.1f} GB/s, "
                                           f"int8 {r['int8_gop_s']:.0f} GOP/s" for n, r in roofline.items()) + ")", "",
              "| type | threads | impl | decode % of read bandwidth | block 32 % of int8 peak | "
              "prefill % of int8 peak |", "|---|---|---|---|---|---|"]
    for t, by_threads in results.items():
        for n, by_impl in by_threads.items():
            for name in IMPL_NAMES:
                p = by_impl[name]["roofline"]
                lines.append(f"| {t} | {n} | {name} | {p['decode_pct_read']:.1f} | {p['block32_pct_int8']:.1f} | "
                             f"{p['prefill_pct_int8']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: List[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--smoke", action="store_true", help="small random model, short runs, results kept in --dir")
    ap.add_argument("--dir", help=f"model folder (default {DEFAULTS['dir']}, --smoke {SMOKE_DEFAULTS['dir']})")
    ap.add_argument("--types", nargs="+", default=["f16", "q8_0", "q4_0", "q4_k_m"])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--runs", type=int)
    ap.add_argument("--prefill", type=int, help="prefill prompt length in tokens")
    ap.add_argument("--prefill-runs", type=int)
    ap.add_argument("--cache", type=int, help="cached tokens before the decode and block forwards")
    ap.add_argument("--roofline-runs", type=int)
    ap.add_argument("--gap", type=float, default=0.05,
                    help="seconds of pause before each timed call (the other side's threads go idle)")
    ap.add_argument("--name", default=RESULTS_NAME,
                    help="results file stem in bench/results (e.g. a second run with other settings)")
    args = ap.parse_args(argv)
    for key, value in (SMOKE_DEFAULTS if args.smoke else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    try:
        import llama_cpp
    except ImportError:
        sys.exit("llama_cpp is not importable: install llama-cpp-python first (see this file's docstring)")

    roofline_dir = tempfile.TemporaryDirectory(prefix="nld-roofline-")
    binary = build_roofline(Path(roofline_dir.name))
    probes: Dict[str, List[Dict[str, float]]] = {}
    for n in args.threads:
        print(f"roofline, {n} threads ...", flush=True)
        probes[str(n)] = [run_roofline(binary, n, args.roofline_runs)]

    folder = Path(args.dir)
    files = ensure_files(folder, args.types, smoke=args.smoke)
    max_token = smoke_spec().vocab_size if args.smoke else MAX_TOKEN
    rng = np.random.default_rng(0)
    results: Dict[str, Dict[str, Dict[str, dict]]] = {}
    sizes: Dict[str, Dict[str, int]] = {}
    for t, path in files.items():
        sizes[t] = model_sizes(path)
        results[t] = {}
        for n in args.threads:
            print(f"{t} {n} threads ...", flush=True)
            results[t][str(n)] = measure(path, n, args, max_token, rng)
    for n in args.threads:
        print(f"roofline again, {n} threads ...", flush=True)
        probes[str(n)].append(run_roofline(binary, n, args.roofline_runs))
    roofline_dir.cleanup()
    roofline = {n: higher_roofline(p) for n, p in probes.items()}
    for t in files:
        for n in args.threads:
            for name in IMPL_NAMES:
                by_impl = results[t][str(n)]
                by_impl[name]["roofline"] = roofline_pct(by_impl[name], sizes[t], roofline[str(n)])

    machine = machine_info()
    markdown = tables(results, roofline, args)
    print("\n" + markdown)
    if args.smoke:
        out_json, out_md = folder / f"{RESULTS_NAME}.smoke.json", folder / f"{RESULTS_NAME}.smoke.md"
    else:
        out_json, out_md = RESULTS_DIR / f"{args.name}.json", RESULTS_DIR / f"{args.name}.md"
    out_json.parent.mkdir(parents=True, exist_ok=True)
    model = "random weights, small smoke shapes" if args.smoke else "random weights, real 3B shapes (real_3b_spec)"
    header = f"# bench_vs_llama_cpp\n\n{model}; {machine['cpu_model']}, {machine['cpus']} CPUs, " \
             f"llama-cpp-python {llama_cpp.__version__}\n\n"
    out_md.write_text(header + markdown)
    out_json.write_text(json.dumps({
        "benchmark": RESULTS_NAME, "model": model, "smoke": args.smoke,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine, "llama_cpp_python": llama_cpp.__version__,
        "threads": args.threads, "runs": args.runs, "prefill_tokens": args.prefill,
        "prefill_runs": args.prefill_runs, "cache_tokens": args.cache, "blocks": list(BLOCKS),
        "roofline": roofline, "roofline_probes": probes, "model_sizes": sizes,
        "files": {t: str(p) for t, p in files.items()},
        "results": results}, indent=1) + "\n")
    print(f"wrote {out_json} and {out_md}")


if __name__ == "__main__":
    main()
