"""Quantized CPU matmul timing: one weight matrix per type, scalar vs each SIMD path.

    python bench/bench_quant_matmul.py [--n-in 3072] [--n-out 9216] [--rows 1 8] [--threads 1]

Prints ms per call (best of --repeat) and effective weight bandwidth. Uses the
installed nld_cpp (nld_matmul, the op the forward pass runs). On the AVX2 path
a matrix whose row count is a multiple of 8 is repacked into the x8 layout on
every nld_matmul call (a loaded model does it once), so those timings include
the repack; bench/bench_kernels.py times the x8 kernels alone.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from nld_cpp import quants as Q

TYPES = {"q8_0": Q.GGML_Q8_0, "q4_0": Q.GGML_Q4_0, "q4_k": Q.GGML_Q4_K, "q6_k": Q.GGML_Q6_K}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-in", type=int, default=3072)
    ap.add_argument("--n-out", type=int, default=9216)
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    w = rng.standard_normal((args.n_out, args.n_in)).astype(np.float32)
    paths = [p for p in ("scalar", "avx2", "avx512_vnni") if Q.cpu_path_supported(p)]
    print(f"{args.n_out}x{args.n_in} weights, {args.threads} thread(s); ms per call (best of {args.repeat})")
    print(f"{'type':6} {'rows':>4} " + " ".join(f"{p:>10}" for p in paths) + "   speedup   GB/s(best)")
    for name, code in TYPES.items():
        blocks = Q.quantize(w, code)
        for rows in args.rows:
            x = rng.standard_normal((rows, args.n_in)).astype(np.float32)
            y = np.empty((rows, args.n_out), np.float32)
            best = {}
            for path in paths:
                Q.matmul(blocks, code, args.n_in, x, path=path, n_threads=args.threads, out=y)
                times = []
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    Q.matmul(blocks, code, args.n_in, x, path=path, n_threads=args.threads, out=y)
                    times.append(time.perf_counter() - t0)
                best[path] = min(times)
            fastest = min(best.values())
            speedup = best["scalar"] / fastest
            print(f"{name:6} {rows:>4} " + " ".join(f"{best[p] * 1e3:10.2f}" for p in paths) +
                  f"   {speedup:6.1f}x   {blocks.nbytes / fastest / 1e9:8.2f}")


if __name__ == "__main__":
    main()
