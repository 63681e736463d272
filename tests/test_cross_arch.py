"""The core built for aarch64 (what the Linux aarch64 and macOS arm64 wheels
carry: the scalar kernels, no x86 intrinsics) with Debian's cross compiler,
run under qemu-user: greedy tokens in every mode on the embedded model equal
those of this machine's build on its default and its scalar CPU path.

Needs g++-aarch64-linux-gnu and qemu-user (.ci/run installs them); skips
without them, except under CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parent.parent
CROSS = "aarch64-linux-gnu"
TOOLCHAIN = f"""set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER {CROSS}-gcc)
set(CMAKE_CXX_COMPILER {CROSS}-g++)
"""


def sh(args: list, **kw) -> str:
    res = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=900, **kw)
    assert res.returncode == 0, f"{args[:3]} exited {res.returncode}:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
    return res.stdout


def test_aarch64_build_generates_this_machines_tokens(tmp_path):
    tools = [f"{CROSS}-g++", f"{CROSS}-gcc", "qemu-aarch64", "cmake", "gcc"]
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI installs the cross toolchain, but {missing} are missing")
        pytest.skip(f"needs {missing} (apt-get install g++-{CROSS} qemu-user)")
    from nld_cpp._binding import header_path, library_path
    from nld_cpp.models import default_model_path

    (tmp_path / "aarch64.cmake").write_text(TOOLCHAIN)
    build = tmp_path / "build-aarch64"
    sh(["cmake", "-S", ROOT, "-B", build, f"-DCMAKE_TOOLCHAIN_FILE={tmp_path / 'aarch64.cmake'}", "-DNLD_CUDA=OFF",
        "-DCMAKE_BUILD_TYPE=Release"])
    sh(["cmake", "--build", build, "-j2"])
    lib = build / "libnld.so"
    assert "aarch64" in sh(["file", lib]) if shutil.which("file") else lib.is_file()

    source = ROOT / "tests" / "cpp" / "generate_all_modes.c"
    include = header_path().parent
    native = tmp_path / "gen-native"
    sh(["gcc", "-O1", "-I", include, source, "-L", library_path().parent, "-lnld", "-o", native])
    cross = tmp_path / "gen-aarch64"
    sh([f"{CROSS}-gcc", "-O1", "-I", include, source, "-L", build, "-lnld", "-o", cross])

    model = default_model_path()
    env = {k: v for k, v in os.environ.items() if k != "NLD_CPU_PATH"}
    want = sh([native, model], env=dict(env, LD_LIBRARY_PATH=str(library_path().parent)))
    scalar = sh([native, model], env=dict(env, LD_LIBRARY_PATH=str(library_path().parent), NLD_CPU_PATH="scalar"))
    got = sh(["qemu-aarch64", "-L", f"/usr/{CROSS}", "-E", f"LD_LIBRARY_PATH={build}", cross, model], env=env)
    assert len(want.splitlines()) == 5 and all(len(line.split()) == 2 + 24 for line in want.splitlines())
    assert got == want and scalar == want
