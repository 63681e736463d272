"""Memory a model will take, said before it is taken (docs/memory.md).

:func:`memory_estimate` reads only a GGUF file's header and tensor table (no
weight is read or copied) and returns, in bytes, what loading it keeps (the
weights: file pages used in place plus the copies the loader makes), the KV
cache of a context at ``n_ctx`` and cache types, and the activations of one
forward of ``n_rows`` rows. The core counts the same bytes when
``Model(...)`` loads and creates its context, and refuses either before
allocating when it would not fit in :func:`available_memory`.
:func:`estimate_for_shape` gives the same estimate for a model known only by
its shapes (a header-only GGUF is written to a temporary sparse file).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ._binding import NldError, check, ffi, lib
from .model import CACHE_TYPES, cache_type_id

PathLike = Union[str, "os.PathLike[str]"]
Estimate = Dict[str, Any]

# n_ctx rows of the `nld info` table (those up to the training context, and the training context itself).
TABLE_CONTEXTS = (2048, 4096, 16384, 32768)
_FIELDS = ("weights_bytes", "weights_file_bytes", "weights_copy_bytes", "kv_bytes", "scratch_bytes",
           "total_bytes", "n_ctx", "n_rows")


def _count(value: Any, name: str, meaning: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0 (0: {meaning}), got {value!r}")
    return int(value)


def _params(n_ctx: int, cache_type_k: Union[str, int], cache_type_v: Union[str, int], n_rows: int,
            lora_path: Optional[PathLike]) -> Tuple[Any, Any]:
    """The nld_memory_params, and the buffer its lora_path points to (keep it alive)."""
    params = lib.nld_memory_default_params()
    params.n_ctx = _count(n_ctx, "n_ctx", "min(training context, 4096)")
    params.n_rows = _count(n_rows, "n_rows", "min(n_ctx, 512)")
    params.type_k = cache_type_id(cache_type_k, "cache_type_k")
    params.type_v = cache_type_id(cache_type_v, "cache_type_v")
    lora = ffi.NULL if lora_path is None else ffi.new("char[]", os.fsencode(os.fspath(lora_path)))
    params.lora_path = lora
    return params, lora


def _as_dict(raw: Any, params: Any) -> Estimate:
    names = {v: k for k, v in CACHE_TYPES.items()}
    out: Estimate = {name: int(getattr(raw, name)) for name in _FIELDS}
    out["cache_type_k"], out["cache_type_v"] = names[params.type_k], names[params.type_v]
    return out


def memory_estimate(path: PathLike, *, n_ctx: int = 0, cache_type_k: Union[str, int] = "f16",
                    cache_type_v: Union[str, int] = "f16", n_rows: int = 0,
                    lora_path: Optional[PathLike] = None) -> Estimate:
    """Bytes that loading ``path`` and one context would take, before taking them.

    Returns a dict: ``weights_bytes`` (= ``weights_file_bytes``, the file
    pages of tensors used in place and the header, + ``weights_copy_bytes``,
    the repacked copies), ``kv_bytes`` (the KV cache of ``n_ctx`` slots in
    ``cache_type_k`` / ``cache_type_v``: what ``Model.cache_bytes`` reports),
    ``scratch_bytes`` (the activations of a forward of ``n_rows`` rows, with
    the logits of every row), ``total_bytes``, and the ``n_ctx``, ``n_rows``
    and cache types counted. ``n_ctx`` 0: min(training context, 4096), as
    ``Model``; ``n_rows`` 0: min(n_ctx, 512); ``lora_path`` as ``Model``'s
    (None: the adapter beside the model, when there is one; "": none).
    The file is validated as a load would: a bad file raises NldError.
    """
    file = os.fspath(path)
    if not os.path.isfile(file):
        raise FileNotFoundError(f"model file not found: {file}")
    params, keep = _params(n_ctx, cache_type_k, cache_type_v, n_rows, lora_path)
    raw = ffi.new("nld_memory *")
    try:
        check(lib.nld_memory_estimate(os.fsencode(file), ffi.addressof(params), raw))
    except NldError as exc:
        raise NldError(exc.status, f"cannot estimate {file}: {exc}") from None
    del keep
    return _as_dict(raw, params)


def estimate_loaded(model_handle: Any, *, n_ctx: int = 0, cache_type_k: Union[str, int] = "f16",
                    cache_type_v: Union[str, int] = "f16", n_rows: int = 0) -> Estimate:
    """memory_estimate for an nld_model already loaded (Model.memory_estimate calls it)."""
    params, _ = _params(n_ctx, cache_type_k, cache_type_v, n_rows, None)
    raw = ffi.new("nld_memory *")
    check(lib.nld_model_memory_estimate(model_handle, ffi.addressof(params), raw))
    return _as_dict(raw, params)


def available_memory() -> Optional[int]:
    """Bytes this process can still take (MemAvailable, lowered to the
    cgroup's headroom, capped at NLD_MEMORY_LIMIT_BYTES), or None when the
    system does not say."""
    out = ffi.new("int64_t *")
    check(lib.nld_memory_available(out))
    return None if out[0] < 0 else int(out[0])


def format_bytes(n: int) -> str:
    """1536 -> "1.5 KiB", as the core's messages write sizes."""
    if n < 1024:
        return f"{n} B"
    value, unit = float(n) / 1024, 0
    units = ("KiB", "MiB", "GiB", "TiB")
    while value >= 1024 and unit < len(units) - 1:
        value, unit = value / 1024, unit + 1
    return f"{value:.1f} {units[unit]}"


def describe(est: Estimate) -> str:
    """One line: the parts and the total of an estimate."""
    return (f"weights {format_bytes(est['weights_bytes'])} ({format_bytes(est['weights_copy_bytes'])} repacked, "
            f"{format_bytes(est['weights_file_bytes'])} file pages), KV cache {format_bytes(est['kv_bytes'])} "
            f"(n_ctx {est['n_ctx']}, {est['cache_type_k']} keys, {est['cache_type_v']} values), scratch "
            f"{format_bytes(est['scratch_bytes'])} ({est['n_rows']} rows): total {format_bytes(est['total_bytes'])}")


def table_contexts(n_ctx_train: int) -> List[int]:
    """The n_ctx rows of a memory table: TABLE_CONTEXTS up to the training context, and that context."""
    return sorted({c for c in TABLE_CONTEXTS if c <= n_ctx_train} | {int(n_ctx_train)})


def memory_table(estimate: Any, contexts: Sequence[int], cache_types: Sequence[str] = tuple(CACHE_TYPES)
                 ) -> List[List[Estimate]]:
    """rows[i][j] = estimate(n_ctx=contexts[i], cache_type_k=t, cache_type_v=t) for t = cache_types[j]."""
    return [[estimate(n_ctx=c, cache_type_k=t, cache_type_v=t) for t in cache_types] for c in contexts]


# --- a model known by its shapes ---------------------------------------------------

_SHAPE_KEYS = ("n_vocab", "n_embd", "n_layer", "n_head", "n_head_kv", "head_dim", "n_ff", "n_ctx_train")


def _shape_tensors(shape: Mapping[str, int], outtype: str) -> List[Tuple[str, List[int], int]]:
    """(GGUF name, torch shape [out, in], ggml type) of every tensor of an NLD file, typed as the converter types them."""
    from .convert.tensor_encode import get_outtype, tensor_type

    out_type = get_outtype(outtype)
    E, V, F, L = shape["n_embd"], shape["n_vocab"], shape["n_ff"], shape["n_layer"]
    Q, KV = shape["n_head"] * shape["head_dim"], shape["n_head_kv"] * shape["head_dim"]
    layer = [("attn_norm.weight", [E]), ("attn_q.weight", [Q, E]), ("attn_k.weight", [KV, E]),
             ("attn_v.weight", [KV, E]), ("attn_output.weight", [E, Q]), ("ffn_norm.weight", [E]),
             ("ffn_gate.weight", [F, E]), ("ffn_up.weight", [F, E]), ("ffn_down.weight", [E, F])]
    named = [("token_embd.weight", [V, E]), ("output_norm.weight", [E]), ("output.weight", [V, E])]
    named += [(f"blk.{i}.{n}", s) for i in range(L) for n, s in layer]
    return [(n, s, int(tensor_type(out_type, s, n, L))) for n, s in named]


def write_shape_gguf(path: PathLike, shape: Mapping[str, int], outtype: str = "f16") -> Path:
    """A valid NLD GGUF of these shapes (keys _SHAPE_KEYS) whose tensors are
    typed as the converter's ``outtype`` and whose data are zeros in a
    sparse file: the header takes disk, the data none (where the file
    system has holes). For estimates only: the weights are all zero."""
    import gguf
    import numpy as np

    from .convert.gguf_writer import GGMLType, tensor_nbytes

    missing = [k for k in _SHAPE_KEYS if k not in shape]
    if missing:
        raise ValueError(f"shape lacks {', '.join(missing)} (needs {', '.join(_SHAPE_KEYS)})")
    out = Path(path)
    writer = gguf.GGUFWriter(str(out), "mistral3")
    writer.add_file_type({"f32": 0, "f16": 1, "q8_0": 7, "q4_0": 2, "q4_k_m": 15, "bf16": 32}[outtype])
    writer.add_context_length(shape["n_ctx_train"])
    writer.add_embedding_length(shape["n_embd"])
    writer.add_block_count(shape["n_layer"])
    writer.add_feed_forward_length(shape["n_ff"])
    writer.add_head_count(shape["n_head"])
    writer.add_head_count_kv(shape["n_head_kv"])
    writer.add_key_length(shape["head_dim"])
    writer.add_value_length(shape["head_dim"])
    writer.add_rope_dimension_count(shape["head_dim"])
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(1e6)
    writer.add_vocab_size(shape["n_vocab"])
    data_bytes = 0
    for name, torch_shape, ggml_type in _shape_tensors(shape, outtype):
        nbytes = tensor_nbytes(list(reversed(torch_shape)), GGMLType(ggml_type))
        writer.add_tensor_info(name, torch_shape, np.dtype(np.float32), nbytes,
                               raw_dtype=gguf.GGMLQuantizationType(ggml_type))
        data_bytes += -(-nbytes // writer.data_alignment) * writer.data_alignment
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    header = out.stat().st_size
    data_start = -(-header // writer.data_alignment) * writer.data_alignment
    os.truncate(out, data_start + data_bytes)  # the padding and the data: a hole
    return out


def estimate_for_shape(shape: Mapping[str, int], outtype: str = "f16", **kwargs: Any) -> Estimate:
    """memory_estimate (same keyword arguments; no drafter adapter) of a
    converted model of these shapes (keys _SHAPE_KEYS) at ``outtype``:
    computed by the core from a header-only sparse GGUF. Its weights leave
    out the tokenizer metadata a real file carries (a few MB)."""
    kwargs.setdefault("lora_path", "")
    with tempfile.TemporaryDirectory(prefix="nld-shape-") as tmp:
        path = write_shape_gguf(Path(tmp) / "shape.gguf", shape, outtype)
        return memory_estimate(path, **kwargs)


__all__ = ["available_memory", "describe", "estimate_for_shape", "format_bytes", "memory_estimate", "memory_table",
           "table_contexts", "write_shape_gguf"]
