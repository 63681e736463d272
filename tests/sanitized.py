"""Builds a C++ check program with AddressSanitizer + UndefinedBehaviorSanitizer and runs it
(tests/cpp/*_check.cpp); skips the calling test where there is no g++ or no sanitizer runtime."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import List, Sequence

import pytest

ROOT = Path(__file__).resolve().parents[1]
SANITIZERS = ["-fsanitize=address,undefined,float-cast-overflow", "-fno-sanitize-recover=all",
              "-fno-omit-frame-pointer"]


def run_sanitized(tmp_path: Path, name: str, sources: Sequence[Path], defines: List[str] | None = None) -> str:
    """Builds sources (paths under the repository) into tmp_path/name, runs it and returns its
    stdout; fails the test on a build error, a sanitizer report, a non-zero exit or an output
    that does not end with "ok"."""
    cxx = os.environ.get("CXX") or shutil.which("g++")
    if not cxx or not shutil.which(cxx):
        pytest.skip("no C++ compiler (g++)")
    exe = tmp_path / name
    build = subprocess.run([cxx, "-std=c++17", "-O1", "-g", "-ffp-contract=off", *SANITIZERS, *(defines or []),
                            f"-I{ROOT}", f"-I{ROOT / 'csrc'}", *map(str, sources), "-o", str(exe)],
                           capture_output=True, text=True)
    if build.returncode != 0:
        probe = tmp_path / "probe.cpp"
        probe.write_text("int main() { return 0; }\n")
        if subprocess.run([cxx, *SANITIZERS, str(probe), "-o", str(tmp_path / "probe")],
                          capture_output=True).returncode:
            pytest.skip("the compiler has no ASan/UBSan runtime")
        pytest.fail(f"building {name} failed:\n{build.stderr}")
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0:exitcode=86", UBSAN_OPTIONS="print_stacktrace=1:exitcode=87")
    run = subprocess.run([str(exe)], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stdout + run.stderr
    return run.stdout
