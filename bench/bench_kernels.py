"""The x8 matmul kernels alone, against this machine's roofline.

    python bench/bench_kernels.py [--threads 1 2] [--rows 1 4 8 32] [--repeats 10]

Builds bench/kernel_throughput.cpp and bench/roofline.cpp with the system
compiler, then for each weight type (Q8_0, Q4_0, Q4_K, Q6_K), thread count
and activation row count runs the kernel over a 221184 x 3072 matrix (best
of --repeats calls). Prints a table of GB/s of weights (the bound of 1 row)
and GMAC/s (the bound of many rows) with their share of the measured read
bandwidth and int8 peak, and writes bench/results/bench_kernels.json. Needs
an x86-64 CPU with AVX2 and a C++ compiler; not part of CI.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "bench_kernels.json"
TYPES = {"q8_0": 8, "q4_0": 2, "q4_k": 12, "q6_k": 14}


def build(tmp: Path) -> Dict[str, Path]:
    cxx = shutil.which("c++") or shutil.which("g++")
    if not cxx:
        sys.exit("bench_kernels: no C++ compiler (c++ or g++) on PATH")
    out = {"kernels": tmp / "kernel_throughput", "roofline": tmp / "roofline"}
    sources = [str(ROOT / "bench" / "kernel_throughput.cpp")] + sorted(str(p) for p in (ROOT / "quants").glob("*.cpp"))
    subprocess.run([cxx, "-O3", "-std=c++17", "-ffp-contract=off", "-pthread", f"-I{ROOT}", f"-I{ROOT / 'csrc'}",
                    *sources, "-o", str(out["kernels"])], check=True)
    subprocess.run([cxx, "-O2", "-march=native", "-pthread", str(ROOT / "bench" / "roofline.cpp"), "-o",
                    str(out["roofline"])], check=True)
    return out


def run_json(cmd: List[str]) -> dict:
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 4, 8, 32])
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="nld-kernels-") as tmp:
        exe = build(Path(tmp))
        roofline = {n: run_json([str(exe["roofline"]), str(n), "5"]) for n in args.threads}
        results = []
        for name, type_id in TYPES.items():
            for n in args.threads:
                for rows in args.rows:
                    r = run_json([str(exe["kernels"]), str(type_id), str(n), str(rows), str(args.repeats)])
                    r["name"] = name
                    r["read_pct"] = 100 * r["gb_s"] / roofline[n]["read_gb_s"]
                    r["int8_pct"] = 100 * 2 * r["gmac_s"] / roofline[n]["int8_gop_s"]
                    results.append(r)
                    print(f"{name} {n} threads {rows} rows: {r['best_ms']:.1f} ms, {r['gb_s']:.2f} GB/s "
                          f"({r['read_pct']:.0f}% of read), {r['gmac_s']:.1f} GMAC/s ({r['int8_pct']:.0f}% of int8)",
                          flush=True)
    print("\n| type | threads | rows | ms | GB/s (% read bw) | GMAC/s (% int8 peak) |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['name']} | {r['threads']} | {r['rows']} | {r['best_ms']:.1f} | {r['gb_s']:.1f} "
              f"({r['read_pct']:.0f}%) | {r['gmac_s']:.1f} ({r['int8_pct']:.0f}%) |")
    for n, roof in roofline.items():
        print(f"roofline, {n} threads: read {roof['read_gb_s']:.1f} GB/s, int8 {roof['int8_gop_s']:.0f} GOP/s")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"benchmark": "bench_kernels", "date": datetime.date.today().isoformat(),
                                   "machine": platform.platform(), "roofline": roofline, "results": results},
                                  indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
