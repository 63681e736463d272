"""The backend seam (csrc/backend/backend.h): the forward runs on the CPU
backend unless a load asks for GPU layers, which this version refuses with
an error that says why (no CUDA in the build, no device, no kernels yet);
a build with CUDA compiles where nvcc is, still loads and runs on a machine
without a GPU, and gives the CPU build's tokens. The parity suites
(test_forward_parity, test_modes_parity) are the seam's CPU path unchanged.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import nld_cpp
from nld_cpp.models import default_model_path

pytestmark = pytest.mark.model

ROOT = Path(__file__).resolve().parent.parent
GENERATE = """
import sys, nld_cpp
from nld_cpp.models import default_model_path
print(nld_cpp.cuda_device_count())
m = nld_cpp.Model(str(default_model_path()), n_ctx=128, n_threads=2)
print(m.generate(m.tokenize("Copy: a b c"), max_tokens=12, temperature=0.0).tokens)
try:
    nld_cpp.Model(str(default_model_path()), n_gpu_layers=1)
except nld_cpp.NldError as exc:
    print("refused:", exc)
"""


def expected_refusal(devices: int) -> str:
    return {-1: "this build has no CUDA backend", 0: "no CUDA device is available"}.get(devices, "no CUDA kernels")


def test_gpu_layers_are_refused_naming_why():
    devices = nld_cpp.cuda_device_count()
    with pytest.raises(nld_cpp.NldError, match=f"n_gpu_layers 3: .*{expected_refusal(devices)}"):
        nld_cpp.Model(str(default_model_path()), n_gpu_layers=3)
    with pytest.raises(nld_cpp.NldError, match="n_gpu_layers must be >= 0"):
        nld_cpp.Model(str(default_model_path()), n_gpu_layers=-1)
    with nld_cpp.Model(str(default_model_path()), n_gpu_layers=0) as model:  # the CPU, as by default
        assert model.generate(model.tokenize("hi"), max_tokens=2).tokens


def test_cli_and_server_flags_refuse_in_one_line():
    res = subprocess.run([sys.executable, "-m", "nld_cpp.cli", "run", "-p", "hi", "-ngl", "2"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.startswith("nld: error:") and "n_gpu_layers 2" in res.stderr


def test_cuda_build_compiles_loads_without_a_gpu_and_matches_the_cpu_build(tmp_path):
    """Where nvcc is (not in CI): NLD_CUDA=ON builds, links the CUDA runtime
    statically, loads on this machine, reports its devices and generates the
    CPU build's tokens; GPU layers are refused with the reason."""
    if shutil.which("nvcc") is None or shutil.which("cmake") is None:
        pytest.skip("needs nvcc and cmake (the CUDA build is checked where the toolkit is)")
    build = tmp_path / "build-cuda"
    for args in (["cmake", "-S", str(ROOT), "-B", str(build), "-DNLD_CUDA=ON", "-DCMAKE_BUILD_TYPE=Release"],
                 ["cmake", "--build", str(build), "-j2"]):
        res = subprocess.run(args, capture_output=True, text=True, timeout=1200)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    lib = build / "libnld.so"
    linked = subprocess.run(["ldd", str(lib)], capture_output=True, text=True).stdout
    assert "libcudart" not in linked, linked  # static runtime: loads where no CUDA is installed
    env = dict(os.environ)
    cpu = subprocess.run([sys.executable, "-c", GENERATE], capture_output=True, text=True, env=env, timeout=300)
    env["NLD_LIBRARY_PATH"] = str(lib)
    cuda = subprocess.run([sys.executable, "-c", GENERATE], capture_output=True, text=True, env=env, timeout=300)
    assert cpu.returncode == 0 and cuda.returncode == 0, cpu.stderr + cuda.stderr
    cpu_lines, cuda_lines = cpu.stdout.splitlines(), cuda.stdout.splitlines()
    devices = int(cuda_lines[0])
    assert devices >= 0 and int(cpu_lines[0]) in (-1, devices)  # the installed build may have CUDA too (AUTO)
    assert cuda_lines[1] == cpu_lines[1]  # the same tokens: the forward ran on the CPU backend
    assert expected_refusal(devices) in cuda_lines[2]


@pytest.mark.gpu
def test_a_device_is_seen_by_a_cuda_build():
    """On a machine with a GPU and a CUDA build (issue 27, part B's start):
    the device is counted and GPU layers are refused only for want of kernels."""
    devices = nld_cpp.cuda_device_count()
    if devices <= 0:
        pytest.skip("no CUDA device, or a build without CUDA")
    with pytest.raises(nld_cpp.NldError, match="no CUDA kernels"):
        nld_cpp.Model(str(default_model_path()), n_gpu_layers=1)
