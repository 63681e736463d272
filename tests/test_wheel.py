"""The package as users get it: `python -m build` makes an sdist and a
py3-none wheel (the wheel built from the sdist, so the sdist is complete),
auditwheel repairs it to a manylinux tag, and it installs into a fresh
virtual environment whose PATH has no compiler and whose working directory
is outside the source tree; there tests/wheel_check.py runs the demo, `nld
info`, the converter's --help and every mode on every CPU path, from the
install alone. `pip show -f` lists exactly the files the source tree says
the wheel should hold.

Builds take minutes, so this runs under CI=true (as .ci/run is) or with
NLD_TEST_WHEEL=1, and skips otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parent.parent
ENABLED = os.environ.get("CI", "").lower() in ("1", "true", "yes") or os.environ.get("NLD_TEST_WHEEL") == "1"
COMPILERS = ["cc", "gcc", "g++", "c++", "clang", "clang++", "nvcc", "cmake"]
MAX_WHEEL_BYTES = 20 * 1024 * 1024


def sh(args: list, cwd: Path | None = None, env: dict | None = None, timeout: float = 1200) -> str:
    res = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{args[:4]} exited {res.returncode}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout


def intended_files() -> set[str]:
    """What the wheel must hold, from the source tree's tracked files: the
    package, the converter as nld_cpp/convert, the core library and its
    header, and the wheel's metadata."""
    tracked = sh(["git", "ls-files", "python/nld_cpp", "convert"], cwd=ROOT).split()
    files = {t[len("python/"):] for t in tracked if t.startswith("python/nld_cpp/")}
    files |= {"nld_cpp/convert/" + t[len("convert/"):] for t in tracked if t.startswith("convert/") and t.endswith(".py")}
    files |= {"nld_cpp/libnld.so", "nld_cpp/nld.h"}
    return files


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    if not ENABLED:
        pytest.skip("builds the wheel: runs under CI=true or NLD_TEST_WHEEL=1")
    if not (ROOT / ".git").exists():
        pytest.skip("needs the git checkout (the intended file list comes from git ls-files)")
    tmp = tmp_path_factory.mktemp("wheel")
    dist = tmp / "dist"
    sh([sys.executable, "-m", "build", "--outdir", dist, ROOT])
    wheels, sdists = list(dist.glob("*.whl")), list(dist.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(dist.iterdir())
    wheel = wheels[0]
    if sys.platform.startswith("linux"):
        repaired = tmp / "repaired"
        sh([sys.executable, "-m", "auditwheel", "repair", "-w", repaired, wheel])
        (wheel,) = list(repaired.glob("*.whl"))
    venv = tmp / "venv"
    sh([sys.executable, "-m", "venv", venv])
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    py = bindir / ("python.exe" if os.name == "nt" else "python")
    sh([py, "-m", "pip", "install", "-q", "--no-cache-dir", wheel], cwd=tmp)
    return {"tmp": tmp, "wheel": wheel, "sdist": sdists[0], "venv": venv, "bin": bindir, "py": py}


def clean_env(built: dict) -> dict:
    """The venv alone: its bin/ on PATH, no compiler, nothing of the source tree."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "NLD_LIBRARY_PATH", "NLD_CPU_PATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = str(built["bin"])
    env["HOME"] = str(built["tmp"] / "home")
    env["NLD_CACHE_DIR"] = str(built["tmp"] / "cache")
    return env


def test_wheel_tag_and_contents(built):
    """py3-none, manylinux on Linux; exactly the intended files, nothing of
    the build tree; the version is __version__'s."""
    wheel = built["wheel"]
    name = wheel.name
    assert "-py3-none-" in name, name
    if sys.platform.startswith("linux"):
        assert "manylinux" in name, name
    version = name.split("-")[1]
    init = (ROOT / "python" / "nld_cpp" / "__init__.py").read_text()
    assert f'__version__ = "{version}"' in init
    with zipfile.ZipFile(wheel) as z:
        names = {n for n in z.namelist() if not n.endswith("/")}  # auditwheel writes directory entries too
    payload = {n for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert payload == intended_files(), (sorted(payload - intended_files()), sorted(intended_files() - payload))
    meta = {n.split("/", 1)[1] for n in names - payload}
    assert meta == {"METADATA", "WHEEL", "RECORD", "entry_points.txt", "licenses/LICENSE"}, meta
    assert wheel.stat().st_size < MAX_WHEEL_BYTES


def test_pip_show_lists_the_intended_files(built):
    out = sh([built["py"], "-m", "pip", "show", "-f", "nld-cpp"], env=clean_env(built))
    listed = out.split("Files:", 1)[1].split()
    installed = {f for f in listed if "__pycache__" not in f and ".dist-info/" not in f and not f.startswith("..")}
    assert installed == intended_files(), (sorted(installed - intended_files()), sorted(intended_files() - installed))
    scripts = {Path(f).name for f in listed if f.startswith("..")}
    assert scripts == {"nld", "nld-demo", "nld-server"}, scripts
    assert "Requires: cffi, gguf, jinja2, numpy, tokenizers, tqdm" in out, out


def test_the_installed_wheel_runs_alone(built):
    """Demo, nld info, convert --help, every mode on every CPU path, from a
    directory outside the source tree with no compiler on PATH."""
    env = clean_env(built)
    for tool in COMPILERS:
        assert shutil.which(tool, path=env["PATH"]) is None, f"{tool} is on the check's PATH"
    work = built["tmp"] / "work"
    work.mkdir(exist_ok=True)
    check = work / "wheel_check.py"
    shutil.copy(ROOT / "tests" / "wheel_check.py", check)
    out = sh([built["py"], check, "--forbid", ROOT], cwd=work, env=env)
    report = json.loads(out.strip().splitlines()[-1])
    assert report["version"] == built["wheel"].name.split("-")[1]
    assert "default" in report["cpu_paths"] and report["generations"] > 0
    from nld_cpp.quants import cpu_path_supported

    if cpu_path_supported("scalar"):
        assert report["cpu_paths"].get("scalar") == "scalar", report


def test_sdist_holds_the_build_sources_only(built):
    import tarfile

    with tarfile.open(built["sdist"]) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    for needed in ("CMakeLists.txt", "pyproject.toml", "LICENSE", "csrc/api.cpp", "quants/dot.cpp",
                   "python/nld_cpp/models/nld-tiny-q8_0.gguf", "convert/converter.py", "tests/wheel_check.py"):
        assert needed in names, needed
    assert not any(n.startswith(("train/runs/", "bench/results/", "build")) for n in names)
