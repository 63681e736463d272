"""The SIMD attention loops and the vector exp against plain loops written from their contracts.

tests/cpp/attention_check.cpp is built with AddressSanitizer and UndefinedBehaviorSanitizer and
run: key ranges that start and end inside a key tile, runs of whole tiles, head sizes with and
without tails, 1 to 5 heads per call, for every loop table this CPU runs (bit for bit), and the
vector exp against the scalar one (bit for bit) and against double-precision e^x (2 ulp). The
end-to-end check that every CPU path gives the same logits is in test_forward_parity.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from nld_cpp import quants as Q


@pytest.mark.unit
def test_attention_loops_match_their_contracts_under_sanitizers(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    cxx = os.environ.get("CXX") or shutil.which("g++")
    if not cxx or not shutil.which(cxx):
        pytest.skip("no C++ compiler (g++)")
    san = ["-fsanitize=address,undefined,float-cast-overflow", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
    sources = [root / "tests/cpp/attention_check.cpp", root / "csrc/backend/cpu/attention_loops.cpp"]
    exe = tmp_path / "attention_check"
    build = subprocess.run([cxx, "-std=c++17", "-O1", "-g", "-ffp-contract=off", *san, f"-I{root}",
                            f"-I{root / 'csrc'}", *map(str, sources), "-o", str(exe)], capture_output=True, text=True)
    if build.returncode != 0:
        probe = tmp_path / "probe.cpp"
        probe.write_text("int main() { return 0; }\n")
        if subprocess.run([cxx, *san, str(probe), "-o", str(tmp_path / "probe")], capture_output=True).returncode:
            pytest.skip("the compiler has no ASan/UBSan runtime")
        pytest.fail(f"building attention_check failed:\n{build.stderr}")
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0:exitcode=86", UBSAN_OPTIONS="print_stacktrace=1:exitcode=87")
    run = subprocess.run([str(exe)], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stdout + run.stderr
    tables = int(run.stdout.split("tables")[1].split()[0])
    expected = int(Q.cpu_path_supported("avx2")) + int(Q.cpu_path_supported("avx512_vnni"))
    assert tables >= expected, run.stdout
