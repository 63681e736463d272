"""Peak memory and time of generating and converting a checkpoint with the real 3B shapes.

    python bench/convert_memory.py [DIR] [--outtypes f16 q8_0] [--keep]

Generates the random real-3B-shaped bf16 checkpoint (nld_cpp.testing.real_3b_spec,
~7.7 GB) into DIR (default /tmp/nld-3b), then converts it with
`python -m nld_cpp.convert` once per outtype. Each step runs in its own
subprocess; its peak resident memory is that child's ru_maxrss (os.wait4).
Prints a table and writes bench/results/convert_memory.json. The generated
files are deleted afterwards unless --keep is given. Target: every step
under 1.5 GiB peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

RESULTS = Path(__file__).resolve().parent / "results" / "convert_memory.json"
TARGET_PEAK_GIB = 1.5
GENERATE = ("import sys; from nld_cpp.testing import make_checkpoint, real_3b_spec; "
            "make_checkpoint(sys.argv[1], real_3b_spec())")


def run_measured(name: str, argv: List[str]) -> Dict[str, object]:
    """Run argv as a child process; return its wall time and peak RSS."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed with exit code {proc.returncode}")
    peak_gib = usage.ru_maxrss * 1024 / 2**30  # Linux reports KiB
    return {"step": name, "wall_s": round(wall, 1), "peak_rss_gib": round(peak_gib, 3),
            "cpu_user_s": round(usage.ru_utime, 1)}


def dir_size_gib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**30


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", nargs="?", default="/tmp/nld-3b", help="where to generate (default /tmp/nld-3b)")
    parser.add_argument("--outtypes", nargs="+", default=["f16", "q8_0"])
    parser.add_argument("--keep", action="store_true", help="keep the generated checkpoint and GGUFs")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"results file (default {RESULTS})")
    args = parser.parse_args()

    ckpt = Path(args.dir)
    if ckpt.exists():
        raise SystemExit(f"{ckpt} exists; remove it or pick another directory")
    rows = []
    try:
        rows.append(run_measured("generate bf16", [sys.executable, "-c", GENERATE, str(ckpt)]))
        rows[-1]["output_gib"] = round(dir_size_gib(ckpt), 2)
        for outtype in args.outtypes:
            out = ckpt / f"nld-3b-{outtype}.gguf"
            rows.append(run_measured(f"convert -> {outtype}", [
                sys.executable, "-m", "nld_cpp.convert", str(ckpt), "-o", str(out), "--outtype", outtype,
                "--no-progress"]))
            written = [out, out.with_name(out.stem + ".lora.gguf")]
            rows[-1]["output_gib"] = round(sum(p.stat().st_size for p in written) / 2**30, 2)
            for path in written:  # keep the disk footprint at one checkpoint + one GGUF
                path.unlink()
    finally:
        if not args.keep and ckpt.exists():
            shutil.rmtree(ckpt)

    print(f"\n{'step':<18}{'wall s':>9}{'peak RSS GiB':>14}{'output GiB':>12}")
    for row in rows:
        print(f"{row['step']:<18}{row['wall_s']:>9}{row['peak_rss_gib']:>14}{row.get('output_gib', ''):>12}")
    worst = max(float(r["peak_rss_gib"]) for r in rows)  # type: ignore[arg-type]
    verdict = "ok" if worst < TARGET_PEAK_GIB else "OVER"
    print(f"worst peak RSS {worst:.2f} GiB (target < {TARGET_PEAK_GIB} GiB): {verdict}")

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "benchmark": "convert_memory",
        "model": "random weights, real 3B shapes (real_3b_spec), bf16 source, drafter LoRA r=128",
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version()},
        "target_peak_rss_gib": TARGET_PEAK_GIB,
        "steps": rows,
    }, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0 if worst < TARGET_PEAK_GIB else 1


if __name__ == "__main__":
    sys.exit(main())
