"""The C API contract: nld.h compiles as strict C99, the binding's struct
layouts equal the C compiler's, and errors come back as statuses with
messages (never a crash)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import nld_cpp
from nld_cpp._binding import cdef_source, ffi, header_path, lib

pytestmark = pytest.mark.unit

STRUCTS = ["nld_model_params", "nld_context_params", "nld_forward_params", "nld_model_info"]


def compile_c(tmp_path: Path, source: str, extra: list[str]) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    src = tmp_path / "probe.c"
    src.write_text(source)
    exe = tmp_path / "probe"
    cmd = [cc, "-std=c99", "-Wall", "-Wextra", "-Wpedantic", "-Werror", f"-I{header_path().parent}", str(src),
           "-o", str(exe), *extra]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return exe


def test_header_is_strict_c99_and_struct_sizes_agree(tmp_path):
    prints = "\n".join(f'    printf("{s} %zu\\n", sizeof({s}));' for s in STRUCTS)
    exe = compile_c(tmp_path, f"#include <stdio.h>\n#include \"nld.h\"\nint main(void) {{\n{prints}\n    return 0;\n}}\n", [])
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    c_sizes = {name: int(size) for name, size in (line.split() for line in out.splitlines())}
    py_sizes = {s: ffi.sizeof(s) for s in STRUCTS}
    assert c_sizes == py_sizes


def test_a_c_program_links_and_reads_errors(tmp_path):
    lib_dir = header_path().parent
    source = r"""
#include <stdio.h>
#include <string.h>
#include "nld.h"
int main(void) {
    nld_model* m = NULL;
    nld_model_params p = nld_model_default_params();
    nld_status s = nld_model_load("/nonexistent/model.gguf", &p, &m);
    printf("%d %s|%s\n", (int)s, nld_status_name(s), nld_last_error());
    s = nld_model_load(NULL, &p, &m);
    printf("%d %s\n", (int)s, nld_last_error());
    nld_model_free(NULL);
    nld_context_free(NULL);
    return m == NULL ? 0 : 1;
}
"""
    exe = compile_c(tmp_path, source, [f"-L{lib_dir}", "-lnld", f"-Wl,-rpath,{lib_dir}"])
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.splitlines()
    assert out[0].startswith(f"{lib.NLD_ERR_IO} ") and "/nonexistent/model.gguf" in out[0]
    assert out[1].startswith(f"{lib.NLD_ERR_INVALID_ARGUMENT} ") and "path is NULL" in out[1]


def test_binding_reads_the_header_itself():
    text = header_path().read_text()
    assert "nld_context_forward" in cdef_source(text)
    assert lib.nld_api_version() == lib.NLD_API_VERSION


def test_missing_and_non_gguf_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="model file not found"):
        nld_cpp.Model(tmp_path / "absent.gguf")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"this is not a gguf file at all" * 4)
    with pytest.raises(nld_cpp.NldError, match="magic") as info:
        nld_cpp.Model(junk)
    assert info.value.status == lib.NLD_ERR_FORMAT
