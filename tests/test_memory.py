"""Memory said up front (docs/memory.md): the estimate against what the core
really takes, and the refusals before allocating.

Oracles: the KV part is Model.cache_bytes (the cache's own buffers); the
weights part is recomputed here from the tensor table as the `gguf`
package reads it (file bytes for tensors used in place, the x8 formats'
sizes for the copies) and measured as resident memory (RssAnon + RssFile of
a fresh process) after a load and a forward; the refusals are driven by
NLD_MEMORY_LIMIT_BYTES and must leave resident memory where it was.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from gguf import GGMLQuantizationType, GGUFReader

import nld_cpp
from nld_cpp._binding import NldError, ffi, header_path, lib
from nld_cpp.memory import (estimate_for_shape, estimate_loaded, format_bytes, memory_estimate, table_contexts,
                             write_shape_gguf)
from nld_cpp.models import default_model_path

pytestmark = pytest.mark.model

MiB = 1 << 20
LIMIT = "NLD_MEMORY_LIMIT_BYTES"
# The x8 layout's bytes per block, where it differs from the file's (quants/repack.h: Q4_K 1184 per 8 blocks).
X8_BLOCK_BYTES = {GGMLQuantizationType.Q4_K: (144, 148)}
X8_TYPES = {GGMLQuantizationType.Q8_0, GGMLQuantizationType.Q4_0, GGMLQuantizationType.Q4_K,
            GGMLQuantizationType.Q6_K}


@pytest.fixture(scope="module")
def medium(tmp_path_factory) -> dict:
    """A 22 MB Q8_0 and a 41 MB F16 file of one random checkpoint (training context 32768):
    large enough that what a load or a context allocates stands well above the noise."""
    from nld_cpp.convert import convert_checkpoint
    from nld_cpp.testing.checkpoints import make_checkpoint

    tmp = tmp_path_factory.mktemp("memory")
    ckpt = make_checkpoint(tmp / "ckpt", hidden_size=512, intermediate_size=1536, num_hidden_layers=4,
                           num_attention_heads=8, num_key_value_heads=2, head_dim=64, vocab_size=8000,
                           max_position_embeddings=32768, original_max_position_embeddings=4096, lora_rank=0)
    return {t: Path(convert_checkpoint(ckpt, tmp / f"medium-{t}.gguf", outtype=t, progress=False).path)
            for t in ("q8_0", "f16")}


def resident() -> int:
    with open("/proc/self/status") as f:
        return sum(int(line.split()[1]) * 1024 for line in f if line.startswith(("RssAnon:", "RssFile:")))


def x8_on() -> bool:
    return lib.nld_cpu_path_default() != lib.NLD_CPU_PATH_SCALAR


def tensor_table_weights(path: Path, lora: Path | None, x8: bool) -> tuple[int, int]:
    """(file bytes, copy bytes) of a load, from the gguf package's reading of the tensor table."""
    file_bytes, copy_bytes = 0, 0
    for t in GGUFReader(path).tensors:
        n_out = int(t.shape[1]) if len(t.shape) == 2 else 0
        if x8 and t.tensor_type in X8_TYPES and t.name != "token_embd.weight" and n_out and n_out % 8 == 0:
            block, x8_block = X8_BLOCK_BYTES.get(t.tensor_type, (1, 1))
            copy_bytes += -(-(int(t.n_bytes) // block * x8_block) // 64) * 64
        else:
            file_bytes += int(t.n_bytes)
    file_bytes += GGUFReader(path).data_offset
    if lora is not None:
        reader = GGUFReader(lora)
        file_bytes += reader.data_offset + sum(int(t.n_bytes) for t in reader.tensors)
    return file_bytes, copy_bytes


# --- the parts against their oracles ------------------------------------------------------

@pytest.mark.parametrize("type_k,type_v", [("f32", "f32"), ("f16", "f16"), ("q8_0", "q8_0"), ("f16", "q8_0")])
@pytest.mark.parametrize("variant", ["embedded", "base"])
def test_kv_part_is_the_cache_the_context_allocates(variant, type_k, type_v, gguf_file):
    path = default_model_path() if variant == "embedded" else gguf_file("base", "f32")  # head_dim 24: short q8_0 blocks
    est = memory_estimate(path, n_ctx=200, cache_type_k=type_k, cache_type_v=type_v)
    with nld_cpp.Model(path, n_ctx=200, n_threads=1, cache_type_k=type_k, cache_type_v=type_v) as m:
        assert est["kv_bytes"] == m.cache_bytes
        assert m.memory_estimate() == est  # the loaded model's estimate is the file's
    assert (est["n_ctx"], est["cache_type_k"], est["cache_type_v"]) == (200, type_k, type_v)
    assert est["total_bytes"] == est["weights_bytes"] + est["kv_bytes"] + est["scratch_bytes"]


@pytest.mark.parametrize("case", ["embedded", "base-q4_k_m", "base-q4_0", "mha-f16", "medium-q8_0"])
def test_weights_part_is_the_tensor_table(case, gguf_file, medium):
    if case == "embedded":
        path, lora = default_model_path(), default_model_path().with_suffix(".lora.gguf")
    elif case == "medium-q8_0":
        path, lora = medium["q8_0"], None
    else:
        variant, outtype = case.split("-")
        path = gguf_file(variant, outtype)
        lora = path.with_suffix(".lora.gguf")
    assert lora is None or lora.is_file()
    est = memory_estimate(path)
    assert (est["weights_file_bytes"], est["weights_copy_bytes"]) == tensor_table_weights(path, lora, x8_on())
    assert est["weights_bytes"] == est["weights_file_bytes"] + est["weights_copy_bytes"]
    without = memory_estimate(path, lora_path="")
    assert without["weights_file_bytes"] == tensor_table_weights(path, None, x8_on())[0]


def test_weights_without_x8_kernels_are_the_file(gguf_file):
    """On the scalar path nothing is repacked: the weights are the file's tensors and header."""
    path = gguf_file("base", "q4_k_m")
    code = ("import json, sys; from nld_cpp.memory import memory_estimate; "
            "print(json.dumps(memory_estimate(sys.argv[1], lora_path='')))")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True,
                         env=dict(os.environ, NLD_CPU_PATH="scalar"))
    est = json.loads(out.stdout)
    assert est["weights_copy_bytes"] == 0
    assert est["weights_file_bytes"] == tensor_table_weights(path, None, x8=False)[0]


PROBE = r"""
import json, sys
import numpy as np
from nld_cpp._binding import check, ffi, lib

def resident():
    with open("/proc/self/status") as f:
        return {l.split(":")[0]: int(l.split()[1]) * 1024 for l in f if l.startswith(("RssAnon:", "RssFile:"))}

def run(path, n_rows):
    no_lora = ffi.new("char[]", b"")
    mp = lib.nld_model_default_params(); mp.lora_path = no_lora
    cp = lib.nld_context_default_params(); cp.n_ctx, cp.n_threads = n_rows, 1
    fp = lib.nld_forward_default_params(); fp.logits = lib.NLD_LOGITS_ALL
    model, ctx, info = ffi.new("nld_model **"), ffi.new("nld_context **"), ffi.new("nld_model_info *")
    snap = {"start": resident()}
    check(lib.nld_model_load(path.encode(), ffi.addressof(mp), model))
    snap["loaded"] = resident()
    check(lib.nld_model_get_info(model[0], info))
    tokens = np.arange(n_rows, dtype=np.int32) % 200 + 1000
    logits = np.empty((n_rows, info.n_vocab), dtype=np.float32)
    check(lib.nld_context_create(model[0], ffi.addressof(cp), ctx))
    check(lib.nld_context_forward(ctx[0], ffi.from_buffer("int32_t[]", tokens), n_rows, ffi.addressof(fp),
                                  ffi.from_buffer("float[]", logits), logits.size))
    snap["forward"] = resident()
    lib.nld_context_free(ctx[0]); lib.nld_model_free(model[0])
    return snap

run(sys.argv[1], 16)  # the same code paths once on a tiny file: their code pages are then resident
print(json.dumps(run(sys.argv[2], int(sys.argv[3]))))
"""


@pytest.mark.parametrize("outtype", ["q8_0", "f16"])
def test_estimate_matches_resident_memory(outtype, medium, gguf_file):
    """A fresh process loads the file, makes a context and runs a forward of n_rows rows with every
    row's logits: the copies are the anonymous memory the load adds (1 MiB + 3%), and the whole
    estimate is what it all adds (2 MiB + 5%), less the token embedding rows never read."""
    n_rows, path = 256, medium[outtype]
    out = subprocess.run([sys.executable, "-c", PROBE, str(gguf_file("base", outtype)), str(path), str(n_rows)],
                         capture_output=True, text=True, check=True)
    snap = json.loads(out.stdout)
    est = memory_estimate(path, n_ctx=n_rows, lora_path="")
    embd = next(t for t in GGUFReader(path).tensors if t.name == "token_embd.weight")
    unread = int(embd.n_bytes) * (1 - 200 / int(embd.shape[1]))  # rows of ids 1000..1199 were read
    anon = snap["loaded"]["RssAnon"] - snap["start"]["RssAnon"]
    assert abs(anon - est["weights_copy_bytes"]) <= MiB + 0.03 * est["weights_copy_bytes"], (anon, est)
    grown = sum(snap["forward"].values()) - sum(snap["start"].values())
    expected = est["total_bytes"] - unread
    assert abs(grown - expected) <= 2 * MiB + 0.05 * expected, (grown, expected, snap, est)


def scratch_formula(info: nld_cpp.ModelInfo, rows: int, lossy: bool, rank: int) -> int:
    """csrc/memory.h's formula, restated."""
    E, Q, KV = info.n_embd, info.n_head * info.head_dim, info.n_head_kv * info.head_dim
    floats = 3 * E + 2 * Q + 2 * KV + 2 * info.n_ff + info.head_dim + info.n_vocab
    floats += 2 * KV if lossy else 0
    floats += rank + E if rank else 0
    tiled_keys = -(-rows // 16) * 16 * KV
    return 4 * (rows * floats + tiled_keys) + rows * (-(-max(E, Q, info.n_ff) // 32) * 40)


@pytest.mark.parametrize("rows", [1, 37, 512])
def test_scratch_part_follows_the_stated_formula(rows):
    path = default_model_path()
    with nld_cpp.Model(path, n_threads=1) as m:
        info, rank = m.info, m.info.lora_rank
    for types, lossy in ((("f32", "f32"), False), (("f16", "q8_0"), True)):
        est = memory_estimate(path, n_rows=rows, cache_type_k=types[0], cache_type_v=types[1])
        assert est["scratch_bytes"] == scratch_formula(info, rows, lossy, rank)
        assert est["n_rows"] == rows
        bare = memory_estimate(path, n_rows=rows, cache_type_k=types[0], cache_type_v=types[1], lora_path="")
        assert bare["scratch_bytes"] == scratch_formula(info, rows, lossy, 0)


def test_defaults_are_the_contexts():
    path = default_model_path()
    with nld_cpp.Model(path, n_threads=1) as m:
        n_ctx, train = m.n_ctx, m.info.n_ctx_train
        assert m.memory_estimate() == memory_estimate(path)
    est = memory_estimate(path)
    assert est["n_ctx"] == n_ctx == min(train, 4096)
    assert est["n_rows"] == min(n_ctx, 512)
    assert memory_estimate(path, n_ctx=100)["n_rows"] == 100
    assert (est["cache_type_k"], est["cache_type_v"]) == ("f16", "f16")


# --- refusing before allocating --------------------------------------------------------------

def test_load_is_refused_before_allocating(medium, monkeypatch):
    path = medium["q8_0"]
    need = memory_estimate(path, lora_path="")["weights_bytes"]
    params = lib.nld_model_default_params()
    no_lora = ffi.new("char[]", b"")
    params.lora_path = no_lora
    out = ffi.new("nld_model **")
    monkeypatch.setenv(LIMIT, str(need - 1))
    before = resident()
    status = lib.nld_model_load(str(path).encode(), ffi.addressof(params), out)
    assert status == lib.NLD_ERR_OUT_OF_MEMORY and out[0] == ffi.NULL
    assert resident() - before < MiB  # vs the 16 MiB of copies a load makes
    message = ffi.string(lib.nld_last_error()).decode()
    for part in (f"loading {path} needs {format_bytes(need)}", "repacked copies", "file pages",
                 f"but {format_bytes(need - 1)} is available", LIMIT):
        assert part in message, message
    with pytest.raises(NldError, match="needs .* is available") as exc:
        nld_cpp.Model(path, lora_path="")
    assert exc.value.status_name == "out of memory"
    monkeypatch.setenv(LIMIT, str(need))  # exactly enough
    assert lib.nld_model_load(str(path).encode(), ffi.addressof(params), out) == lib.NLD_OK
    lib.nld_model_free(out[0])


def test_context_is_refused_before_allocating(medium, monkeypatch):
    with nld_cpp.Model(medium["q8_0"], n_ctx=64, n_threads=1, lora_path="") as m:
        est = m.memory_estimate(n_ctx=32768, cache_type_k="f32", cache_type_v="f32")
        need = est["kv_bytes"] + est["scratch_bytes"]
        assert est["kv_bytes"] > 100 * MiB
        monkeypatch.setenv(LIMIT, str(need - 1))
        before = resident()
        with pytest.raises(NldError) as exc:
            m.new_context(n_ctx=32768, cache_type_k="f32", cache_type_v="f32")
        assert resident() - before < MiB
        assert exc.value.status_name == "out of memory"
        for part in (f"a context of n_ctx 32768 with f32 keys and f32 values needs {format_bytes(need)}",
                     f"KV cache {format_bytes(est['kv_bytes'])}", "512-row forward",
                     f"but {format_bytes(need - 1)} is available", "try a smaller n_ctx (-c) or q8_0 cache types"):
            assert part in str(exc.value), str(exc.value)
        small = m.memory_estimate(n_ctx=32768, cache_type_k="q8_0", cache_type_v="q8_0")
        monkeypatch.setenv(LIMIT, str(small["kv_bytes"] + small["scratch_bytes"] - 1))
        with pytest.raises(NldError, match=r"q8_0 values needs .*; try a smaller n_ctx \(-c\)$"):
            m.new_context(n_ctx=32768, cache_type_k="q8_0", cache_type_v="q8_0")
        monkeypatch.setenv(LIMIT, str(small["kv_bytes"] + small["scratch_bytes"]))
        with m.new_context(n_ctx=32768, cache_type_k="q8_0", cache_type_v="q8_0") as other:
            assert other.cache_bytes == small["kv_bytes"]
        assert m.forward([1000, 1001], logits="last").shape == (1, m.n_vocab)  # the first context still works


def test_available_memory_and_its_cap(monkeypatch):
    monkeypatch.delenv(LIMIT, raising=False)
    free = nld_cpp.available_memory()
    assert free is None or free > 0
    monkeypatch.setenv(LIMIT, "12345")
    assert nld_cpp.available_memory() == 12345  # a cap below anything a machine has free
    for bad in ("12GB", "-5", "1e9", "99999999999999999999"):
        monkeypatch.setenv(LIMIT, bad)
        with pytest.raises(NldError, match=f"{LIMIT}='.*' is not a byte count") as exc:
            nld_cpp.available_memory()
        assert exc.value.status_name == "invalid argument"
    with pytest.raises(NldError, match="is not a byte count"):
        nld_cpp.Model(default_model_path())
    monkeypatch.setenv(LIMIT, "")  # empty: no cap
    capped = nld_cpp.available_memory()
    assert (capped is None) == (free is None) and (capped is None or capped > 12345)


def test_info_refuses_with_one_line():
    res = subprocess.run([sys.executable, "-m", "nld_cpp.cli", "info"], capture_output=True, text=True,
                         env=dict(os.environ, **{LIMIT: "1000"}))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.startswith("nld: error: ") and len(res.stderr.strip().splitlines()) == 1
    assert "needs" in res.stderr and "1000 B is available" in res.stderr


# --- said at load, and by `nld info` ---------------------------------------------------------

def test_verbose_model_prints_the_breakdown_first(capsys):
    with nld_cpp.Model(default_model_path(), n_ctx=256, verbose=True, cache_type_v="q8_0") as m:
        out = capsys.readouterr().out
        est = m.memory_estimate()
    first = out.splitlines()[0]
    assert first.startswith("nld_cpp: memory for ") and "available" in first
    for part in (f"weights {format_bytes(est['weights_bytes'])}", f"KV cache {format_bytes(est['kv_bytes'])}",
                 "n_ctx 256, f16 keys, q8_0 values", f"total {format_bytes(est['total_bytes'])}"):
        assert part in first, first


def test_info_prints_the_memory_table(medium):
    path = medium["f16"]
    res = subprocess.run([sys.executable, "-m", "nld_cpp.cli", "info", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    est = memory_estimate(path)
    weights = next(line for line in lines if line.startswith("weights in memory"))
    assert format_bytes(est["weights_bytes"]) in weights
    header = next(i for i, line in enumerate(lines) if line.split() == ["n_ctx", "f32", "f16", "q8_0"])
    contexts = table_contexts(32768)
    assert contexts == [2048, 4096, 16384, 32768]
    for row, n_ctx in zip(lines[header + 1:], contexts):
        cells = [memory_estimate(path, n_ctx=n_ctx, cache_type_k=t, cache_type_v=t)["total_bytes"]
                 for t in ("f32", "f16", "q8_0")]
        assert row.split() == [str(n_ctx)] + " ".join(format_bytes(c) for c in cells).split()
    assert len(lines) == header + 1 + len(contexts)


def test_table_contexts():
    assert table_contexts(512) == [512]
    assert table_contexts(4096) == [2048, 4096]
    assert table_contexts(262144) == [2048, 4096, 16384, 32768, 262144]


def test_shape_only_file_gives_the_files_estimate(tmp_path):
    """estimate_for_shape (the real models' table) counts what the converted file counts."""
    path = default_model_path()
    with nld_cpp.Model(path, n_threads=1) as m:
        i = m.info
    shape = dict(n_vocab=i.n_vocab, n_embd=i.n_embd, n_layer=i.n_layer, n_head=i.n_head, n_head_kv=i.n_head_kv,
                 head_dim=i.head_dim, n_ff=i.n_ff, n_ctx_train=i.n_ctx_train)
    shaped = write_shape_gguf(tmp_path / "shape.gguf", shape, "q8_0")
    assert os.stat(shaped).st_blocks * 512 < 1 * MiB  # the data is a hole
    for kw in (dict(), dict(n_ctx=300, cache_type_k="q8_0", cache_type_v="f32", n_rows=7)):
        real, ours = memory_estimate(path, lora_path="", **kw), estimate_for_shape(shape, "q8_0", **kw)
        header = GGUFReader(path).data_offset - GGUFReader(shaped).data_offset
        assert ours["weights_file_bytes"] + header == real["weights_file_bytes"]
        for key in ("weights_copy_bytes", "kv_bytes", "scratch_bytes", "n_ctx", "n_rows"):
            assert ours[key] == real[key], key


# --- bad arguments ------------------------------------------------------------------------------

def test_bad_arguments_give_clear_errors(tmp_path):
    path = default_model_path()
    with pytest.raises(ValueError, match="n_ctx must be an integer >= 0"):
        memory_estimate(path, n_ctx=-1)
    with pytest.raises(ValueError, match="n_rows must be an integer >= 0"):
        memory_estimate(path, n_rows=-3)
    with pytest.raises(ValueError, match="cache_type_k must be one of f32, f16, q8_0"):
        memory_estimate(path, cache_type_k="q4_0")
    with pytest.raises(ValueError, match="cache_type_v must be one of"):
        memory_estimate(path, cache_type_v=2)
    with pytest.raises(FileNotFoundError, match="missing.gguf"):
        memory_estimate(tmp_path / "missing.gguf")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\xff" * 60)
    with pytest.raises(NldError, match="cannot estimate .*junk.gguf") as exc:
        memory_estimate(junk)
    assert exc.value.status_name == "format error"
    with pytest.raises(NldError, match="n_ctx 33554432 is too large"):
        memory_estimate(path, n_ctx=1 << 25)
    with pytest.raises(NldError, match="missing.lora.gguf"):
        memory_estimate(path, lora_path=tmp_path / "missing.lora.gguf")
    # The C API itself: NULLs and unknown cache types are statuses with messages.
    out = ffi.new("nld_memory *")
    params = lib.nld_memory_default_params()
    assert lib.nld_memory_estimate(ffi.NULL, ffi.addressof(params), out) == lib.NLD_ERR_INVALID_ARGUMENT
    assert lib.nld_model_memory_estimate(ffi.NULL, ffi.addressof(params), out) == lib.NLD_ERR_INVALID_ARGUMENT
    assert lib.nld_memory_available(ffi.NULL) == lib.NLD_ERR_INVALID_ARGUMENT
    params.type_v = 3
    assert lib.nld_memory_estimate(str(path).encode(), ffi.addressof(params), out) == lib.NLD_ERR_INVALID_ARGUMENT
    assert "type_v: cache type 3 is not one of f32 (0), f16 (1), q8_0 (8)" in ffi.string(lib.nld_last_error()).decode()
    with nld_cpp.Model(path, n_threads=1) as m:
        with pytest.raises(ValueError, match="n_ctx must be an integer"):
            estimate_loaded(m._model, n_ctx=-2)


def test_new_structs_agree_with_the_c_compiler(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    structs = ("nld_memory_params", "nld_memory")
    body = "\n".join(f'    printf("%zu\\n", sizeof({s}));' for s in structs)
    (tmp_path / "probe.c").write_text(f'#include <stdio.h>\n#include "nld.h"\nint main(void) {{\n{body}\n    return 0;\n}}\n')
    subprocess.run([cc, "-std=c99", "-Wall", "-Wextra", "-Wpedantic", "-Werror", f"-I{header_path().parent}",
                    str(tmp_path / "probe.c"), "-o", str(tmp_path / "probe")], check=True, capture_output=True)
    sizes = subprocess.run([str(tmp_path / "probe")], check=True, capture_output=True, text=True).stdout.split()
    assert [int(s) for s in sizes] == [ffi.sizeof(s) for s in structs]
