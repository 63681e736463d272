"""The GGUF container reader rejects every malformed file with a message naming the problem.

Two routes over the same corpus (tests/gguf_corpus.py):
1. the Python API: `nld_cpp.Model(path)` raises `nld_cpp.NldError` (skipped
   while the binding is not importable);
2. the C++ reader itself, through tests/cpp/gguf_inspect.cpp compiled once per
   session under AddressSanitizer + UndefinedBehaviorSanitizer (skipped without
   g++): every bad file exits 1 with the expected message and no sanitizer
   report. A seeded random mutation run checks that nothing crashes.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import gguf_corpus as corpus

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
NLD_ERR_IO, NLD_ERR_FORMAT = 2, 3
# Distinct exit codes, so a sanitizer report never reads as "rejected" (exit 1).
SANITIZER_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:exitcode=86:detect_stack_use_after_return=1",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=87",
}
SAN_FLAGS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]

MALFORMED = corpus.malformed_variants()
NAMED = [v for v in MALFORMED if not v.name.startswith("truncate_at_")]
TRUNCATED = [v for v in MALFORMED if v.name.startswith("truncate_at_")]
VALID = corpus.valid_variants()


def _write(v: corpus.Variant, directory: Path) -> Path:
    path = directory / f"{v.name}.gguf"
    corpus.write_variant(v, path)
    return path


# ---------------------------------------------------------------- C++ driver

@pytest.fixture(scope="session")
def inspect(tmp_path_factory):
    """run(*args) -> CompletedProcess of the sanitized driver, built once per session."""
    cxx = os.environ.get("CXX") or shutil.which("g++")
    if not cxx or not shutil.which(cxx):
        pytest.skip("no C++ compiler (g++) to build the sanitized GGUF driver")
    out = tmp_path_factory.mktemp("gguf_inspect") / "gguf_inspect"
    cmd = [cxx, "-std=c++17", "-O1", "-g", "-Wall", "-Wextra", *SAN_FLAGS, f"-I{ROOT / 'csrc'}",
           str(ROOT / "tests/cpp/gguf_inspect.cpp"), str(ROOT / "csrc/gguf.cpp"), "-o", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        # A missing sanitizer runtime is the machine's limit; anything else is our bug.
        probe = out.parent / "probe.cpp"
        probe.write_text("int main() { return 0; }\n")
        p = subprocess.run([cxx, *SAN_FLAGS, str(probe), "-o", str(out.parent / "probe")], capture_output=True)
        if p.returncode != 0:
            pytest.skip("the compiler has no ASan/UBSan runtime")
        pytest.fail(f"building the GGUF driver failed:\n{r.stderr}")

    env = {**os.environ, **SANITIZER_ENV}

    def run(*args) -> subprocess.CompletedProcess:
        return subprocess.run([str(out), *map(str, args)], capture_output=True, text=True,
                              errors="replace", env=env, timeout=60)

    # Some sandboxes forbid the ptrace LeakSanitizer needs; keep ASan and UBSan there.
    probe_file = out.parent / "valid.gguf"
    corpus.write_variant(VALID[0], probe_file)
    if "LeakSanitizer has encountered a fatal error" in run(probe_file).stderr:
        env["ASAN_OPTIONS"] = env["ASAN_OPTIONS"].replace("detect_leaks=1", "detect_leaks=0")
    return run


def _rejection_problem(r: subprocess.CompletedProcess, expect: str) -> str | None:
    """None when the driver rejected cleanly with a matching message, else what went wrong."""
    first = r.stdout.splitlines()[0] if r.stdout else ""
    if r.stderr:
        return f"sanitizer or stderr output (exit {r.returncode}):\n{r.stderr[-3000:]}"
    if r.returncode != 1 or not first.startswith("error: "):
        return f"not rejected: exit {r.returncode}, stdout {r.stdout[:300]!r}"
    if not re.search(expect, first):
        return f"message {first!r} does not match {expect!r}"
    return None


def _run_batch(inspect, paths: list) -> dict:
    """{file name: the driver's "ok ..." or "error: ..." line}, from a few --batch runs in
    parallel (every data byte is read, as with --dump). Fails the test on any crash or
    sanitizer report, naming the file being read when it happened."""
    n = os.cpu_count() or 2
    chunks = [paths[i::n] for i in range(n) if paths[i::n]]
    results = {}
    with ThreadPoolExecutor(max_workers=n) as pool:
        for r in pool.map(lambda chunk: inspect("--batch", *chunk), chunks):
            for line in r.stdout.splitlines():
                path, _, result = line.partition("\t")
                if not re.fullmatch(r"ok \d+ \d+|error: .+", result):
                    pytest.fail(f"driver output {line!r} (exit {r.returncode}):\n{r.stderr[-3000:]}")
                results[Path(path).name] = result
            if r.returncode != 0 or r.stderr:
                pytest.fail(f"driver failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    assert len(results) == len(paths)
    return results


def test_corpus_is_large_and_distinct():
    assert len(NAMED) >= 60
    assert len({v.data for v in NAMED}) == len(NAMED), "two variants produce identical bytes"


@pytest.mark.parametrize("variant", NAMED, ids=[v.name for v in NAMED])
def test_driver_rejects(inspect, tmp_path, variant):
    problem = _rejection_problem(inspect(_write(variant, tmp_path), "--dump"), variant.expect)
    assert problem is None, problem


def test_driver_rejects_every_truncation(inspect, tmp_path):
    results = _run_batch(inspect, [_write(v, tmp_path) for v in TRUNCATED])
    failures = [f"{v.name}: {got!r} does not match {v.expect!r}" for v in TRUNCATED
                if not re.match(r"error: ", got := results[f"{v.name}.gguf"]) or not re.search(v.expect, got)]
    assert not failures, "\n".join(failures[:20])


@pytest.mark.parametrize("variant", VALID, ids=[v.name for v in VALID])
def test_driver_accepts_valid(inspect, tmp_path, variant):
    r = inspect(_write(variant, tmp_path), "--dump")
    assert r.returncode == 0 and not r.stderr, (r.stdout, r.stderr)
    assert r.stdout.startswith("ok ")


def test_driver_reads_what_the_reference_reader_reads(inspect, tmp_path):
    """Values, shapes and data of the valid file agree with the `gguf` package's reader."""
    gguf = pytest.importorskip("gguf")
    path = _write(VALID[0], tmp_path)
    r = inspect(path, "--dump")
    assert r.returncode == 0 and not r.stderr, (r.stdout, r.stderr)
    lines = [ln.split("\t") for ln in r.stdout.splitlines()[1:]]
    ours_kv = {ln[1]: ln[3] for ln in lines if ln[0] == "kv"}
    ours_t = {ln[1]: ln[2:] for ln in lines if ln[0] == "tensor"}

    ref = gguf.GGUFReader(str(path))
    ref_kv = {k: f for k, f in ref.fields.items() if not k.startswith("GGUF.")}
    assert list(ours_kv) == list(ref_kv)

    def same(ours: str, want) -> bool:
        if isinstance(want, float):
            return float(ours) == want
        return ours == (str(int(want)) if isinstance(want, bool) else str(want))

    for key, f in ref_kv.items():
        want, got = f.contents(), ours_kv[key]
        if f.types[0] == gguf.GGUFValueType.ARRAY:
            # "<elem>[<count>]:e0,e1,..." (no colon when empty)
            elems = got.split(":", 1)[1].split(",") if ":" in got else []
            assert len(elems) == len(want) and all(map(same, elems, want)), (key, got, want)
        elif f.types[0] == gguf.GGUFValueType.BOOL:
            assert got == ("true" if want else "false"), key
        else:
            assert same(got, want), (key, got, want)

    data_start = corpus.valid_gguf().build_with_layout()[1].data_start
    for t in ref.tensors:
        ttype, n_dims, ne, offset, n_elems, n_bytes, checksum = ours_t[t.name]
        assert ttype == t.tensor_type.name
        assert int(n_dims) == len(t.shape)
        assert [int(x) for x in ne.split(",")] == [int(x) for x in t.shape] + [1] * (4 - len(t.shape))
        assert data_start + int(offset) == t.data_offset
        assert (int(n_elems), int(n_bytes)) == (t.n_elements, t.n_bytes)
        assert int(checksum) == int(t.data.view("uint8").astype("uint64").sum())


GETTERS = [
    ("uint", "test.u8", r"^200$"),
    ("uint", "test.u64", rf"^{2**63 + 5}$"),
    ("uint", "test.i64_positive", r"^42$"),
    ("uint", "test.i8", r"key 'test.i8' has negative value -5, expected an unsigned integer"),
    ("uint", "test.f32", r"key 'test.f32' has type f32, expected an unsigned integer"),
    ("uint", "test.string", r"key 'test.string' has type string, expected an unsigned integer"),
    ("uint", "missing.key", r"required key 'missing.key' is missing"),
    ("float", "test.f32", r"^0.5$"),
    ("float", "test.f64", r"^1.0000000000000001e-05$"),
    ("float", "test.u32", r"key 'test.u32' has type u32, expected f32 or f64"),
    ("bool", "test.bool", r"^true$"),
    ("bool", "test.u8", r"key 'test.u8' has type u8, expected bool"),
    ("string", "general.architecture", r"^mistral3$"),
    ("string", "test.arr_str", r"key 'test.arr_str' has type array, expected string"),
    ("array:string", "test.arr_str", r"^string\[4\]:a,bc,,d\u00e9f$"),
    ("array:i32", "test.arr_i32", r"^i32\[3\]:1,-2,3$"),
    ("array:u64", "test.arr_empty", r"^u64\[0\]$"),
    ("array:i32", "test.arr_str", r"key 'test.arr_str' is an array of string, expected an array of i32"),
    ("array:u8", "test.u8", r"key 'test.u8' has type u8, expected an array of u8"),
]


@pytest.fixture(scope="module")
def valid_path(tmp_path_factory) -> Path:
    return _write(VALID[0], tmp_path_factory.mktemp("valid"))


@pytest.mark.parametrize("kind,key,expect", GETTERS, ids=[f"{k}-{key}" for k, key, _ in GETTERS])
def test_typed_getters(inspect, valid_path, kind, key, expect):
    r = inspect(valid_path, "--get", kind, key)
    assert not r.stderr, r.stderr
    assert r.returncode == (1 if r.stdout.startswith("error: ") else 0)
    assert re.search(expect, r.stdout.strip()), r.stdout


def test_driver_open_errors(inspect, tmp_path):
    r = inspect(tmp_path / "absent.gguf")
    assert r.returncode == 1 and not r.stderr
    assert re.search(r"GGUF: cannot open '.*absent\.gguf': No such file or directory", r.stdout)
    r = inspect(tmp_path)
    assert r.returncode == 1 and "is not a regular file" in r.stdout and not r.stderr


def test_fuzz_mutations_never_crash(inspect, tmp_path):
    """2000 seeded corruptions of the valid file: each is accepted or rejected, never a crash."""
    paths = []
    for i, data in enumerate(corpus.mutations(seed=20240611, n=2000)):
        paths.append(tmp_path / f"mutant_{i:04d}.gguf")
        paths[-1].write_bytes(data)

    results = _run_batch(inspect, paths)
    failures = [f"{name}: {got!r}" for name, got in results.items()
                if not re.match(r"ok |error: GGUF: |error: size overflow computing ", got)]
    assert not failures, "\n".join(failures[:10])


# ---------------------------------------------------------------- Python API

@pytest.fixture(scope="module")
def nld_cpp():
    try:
        import nld_cpp as mod
        mod.Model  # noqa: B018  (the binding may import before Model exists)
    except Exception as e:  # an unbuilt native library raises OSError, not ImportError
        pytest.skip(f"nld_cpp is not importable: {e}")
    return mod


def _api_problem(mod, path: Path, expect: str) -> str | None:
    try:
        model = mod.Model(str(path))
    except mod.NldError as e:
        if not isinstance(e, RuntimeError):
            return "NldError is not a RuntimeError"
        if e.status != NLD_ERR_FORMAT:
            return f"status {e.status}, expected NLD_ERR_FORMAT ({NLD_ERR_FORMAT}): {e}"
        if not re.search(expect, str(e)):
            return f"message {str(e)!r} does not match {expect!r}"
        return None
    close = getattr(model, "close", None)
    if close:
        close()
    return "loaded without error"


@pytest.mark.parametrize("variant", NAMED, ids=[v.name for v in NAMED])
def test_api_rejects(nld_cpp, tmp_path, variant):
    problem = _api_problem(nld_cpp, _write(variant, tmp_path), variant.expect)
    assert problem is None, problem


def test_api_rejects_every_truncation(nld_cpp, tmp_path):
    failures = []
    for v in TRUNCATED:
        path = _write(v, tmp_path)
        if (problem := _api_problem(nld_cpp, path, v.expect)) is not None:
            failures.append(f"{v.name}: {problem}")
        path.unlink()
    assert not failures, "\n".join(failures[:20])


def test_api_open_error(nld_cpp, tmp_path):
    # The binding may check the path itself first; if the C side sees it, it is an I/O error.
    with pytest.raises((FileNotFoundError, nld_cpp.NldError)) as info:
        nld_cpp.Model(str(tmp_path / "absent.gguf"))
    if isinstance(info.value, nld_cpp.NldError):
        assert info.value.status == NLD_ERR_IO and "absent.gguf" in str(info.value)
