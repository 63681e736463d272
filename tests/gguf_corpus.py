"""Byte-level GGUF builder and the corpus of malformed files the loader must reject.

Written here rather than with the `gguf` package's writer because the point is
to craft bytes no well-behaved writer would produce: every length, count, type
id and offset can be overridden. `valid_file()` is a small well-formed GGUF v3
(one key of every value type, arrays, three tensors); `malformed_variants()`
derives the bad files from it, each with a regex the error message must match,
so a test proves the message names the problem and not merely that it failed.
"""
from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field, replace
from typing import List, Optional, Union

# GGUF value types (spec/gguf-schema.md).
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
SCALAR_FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
              BOOL: "<B", U64: "<Q", I64: "<q", F64: "<d"}
# ggml tensor types: id -> (elements per block, bytes per block).
T_F32, T_F16, T_Q4_0, T_Q8_0, T_Q4_K, T_Q6_K, T_Q8_K, T_BF16 = 0, 1, 2, 8, 12, 14, 15, 30
BLOCKS = {T_F32: (1, 4), T_F16: (1, 2), T_Q4_0: (32, 18), T_Q8_0: (32, 34), T_Q4_K: (256, 144),
          T_Q6_K: (256, 210), T_Q8_K: (256, 292), T_BF16: (1, 2)}

U64_MAX = 2**64 - 1
MAX_NAME = 1 << 16    # the reader's cap on key and tensor names
MAX_STRING = 1 << 30  # the reader's cap on one string value
MAX_COUNT = 1 << 20   # the reader's cap on tensor_count and kv_count

Bytes = Union[bytes, str]


def _b(s: Bytes) -> bytes:
    return s.encode() if isinstance(s, str) else s


def u32(v: int) -> bytes:
    return struct.pack("<I", v)


def u64(v: int) -> bytes:
    return struct.pack("<Q", v)


def gstr(s: Bytes, length: Optional[int] = None) -> bytes:
    """A GGUF string; `length` overrides the declared length."""
    s = _b(s)
    return u64(len(s) if length is None else length) + s


@dataclass
class KV:
    key: Bytes
    vtype: int
    value: object = None
    elem: int = U8                  # array element type
    key_len: Optional[int] = None   # override the declared key length
    count: Optional[int] = None     # override the declared array count
    raw: Optional[bytes] = None     # replaces everything after the value type

    def encode(self) -> bytes:
        out = gstr(self.key, self.key_len) + u32(self.vtype)
        if self.raw is not None:
            return out + self.raw
        if self.vtype == STRING:
            return out + gstr(self.value)
        if self.vtype == ARRAY:
            items = list(self.value)
            out += u32(self.elem) + u64(len(items) if self.count is None else self.count)
            if self.elem == STRING:
                return out + b"".join(gstr(s) for s in items)
            return out + b"".join(struct.pack(SCALAR_FMT[self.elem], v) for v in items)
        return out + struct.pack(SCALAR_FMT[self.vtype], self.value)


@dataclass
class Tensor:
    name: Bytes
    dims: List[int]                  # innermost first
    ttype: int
    data: bytes = b""                # placed in the data section, padded
    offset: Optional[int] = None     # override the info's offset (default: where `data` lands)
    name_len: Optional[int] = None
    n_dims: Optional[int] = None     # override the declared n_dims

    def encode_info(self, offset: int) -> bytes:
        n_dims = len(self.dims) if self.n_dims is None else self.n_dims
        return (gstr(self.name, self.name_len) + u32(n_dims) + b"".join(u64(d) for d in self.dims)
                + u32(self.ttype) + u64(offset if self.offset is None else self.offset))


def _pad(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


@dataclass
class Layout:
    header_end: int      # end of the tensor infos
    data_start: int      # header_end padded to the alignment
    tensor_ends: List[int]  # file offset just past each tensor's bytes


@dataclass
class Gguf:
    kvs: List[KV] = field(default_factory=list)
    tensors: List[Tensor] = field(default_factory=list)
    magic: bytes = b"GGUF"
    version: int = 3
    tensor_count: Optional[int] = None  # override the header counts
    kv_count: Optional[int] = None
    alignment: int = 32                 # used for layout; the key is a KV like any other
    tail: bytes = b""                   # appended after the data section

    def build_with_layout(self) -> "tuple[bytes, Layout]":
        header = (self.magic + u32(self.version)
                  + u64(len(self.tensors) if self.tensor_count is None else self.tensor_count)
                  + u64(len(self.kvs) if self.kv_count is None else self.kv_count))
        natural, pos = [], 0
        for t in self.tensors:
            natural.append(pos)
            pos = _pad(pos + len(t.data), self.alignment)
        meta = header + b"".join(kv.encode() for kv in self.kvs) + b"".join(
            t.encode_info(off) for t, off in zip(self.tensors, natural))
        data_start = _pad(len(meta), self.alignment)
        out = bytearray(meta + bytes(data_start - len(meta)))
        ends = []
        for t, off in zip(self.tensors, natural):
            out += bytes(data_start + off - len(out)) + t.data
            ends.append(len(out))
        out += self.tail
        return bytes(out), Layout(len(meta), data_start, ends)

    def build(self) -> bytes:
        return self.build_with_layout()[0]


def _tensor_bytes(dims: List[int], ttype: int, seed: int) -> bytes:
    elems, nbytes = BLOCKS[ttype]
    n = 1
    for d in dims:
        n *= d
    rng = random.Random(seed)
    return bytes(rng.randrange(1, 256) for _ in range(n // elems * nbytes))


def valid_gguf() -> Gguf:
    """A small well-formed file: every value type, arrays, three tensors (F32, F16, Q8_0).

    The last tensor's bytes end the file (no trailing pad), so any truncation
    removes something the reader needs.
    """
    kvs = [
        KV("general.architecture", STRING, "mistral3"),
        KV("general.alignment", U32, 32),
        KV("test.u8", U8, 200), KV("test.i8", I8, -5), KV("test.u16", U16, 60000),
        KV("test.i16", I16, -30000), KV("test.u32", U32, 4_000_000_000), KV("test.i32", I32, -7),
        KV("test.f32", F32, 0.5), KV("test.bool", BOOL, 1), KV("test.u64", U64, 2**63 + 5),
        KV("test.i64", I64, -(2**40)), KV("test.i64_positive", I64, 42), KV("test.f64", F64, 1e-5),
        KV("test.string", STRING, "h\u00e9llo"),
        KV("test.empty_string", STRING, ""),
        KV("test.arr_str", ARRAY, ["a", "bc", "", "d\u00e9f"], elem=STRING),
        KV("test.arr_i32", ARRAY, [1, -2, 3], elem=I32),
        KV("test.arr_f32", ARRAY, [0.25, -1.0], elem=F32),
        KV("test.arr_bool", ARRAY, [1, 0, 1], elem=BOOL),
        KV("test.arr_empty", ARRAY, [], elem=U64),
    ]
    tensors = [
        Tensor("token_embd.weight", [8, 2], T_F32, _tensor_bytes([8, 2], T_F32, 1)),
        Tensor("output_norm.weight", [8], T_F16, _tensor_bytes([8], T_F16, 2)),
        Tensor("blk.0.ffn_up.weight", [32, 1, 1], T_Q8_0, _tensor_bytes([32], T_Q8_0, 3)),
    ]
    return Gguf(kvs=kvs, tensors=tensors)


def valid_file() -> bytes:
    return valid_gguf().build()


@dataclass
class Variant:
    name: str
    data: bytes
    expect: str              # regex searched in the error message
    sparse_size: int = 0     # extend the written file to this size (a hole), if larger


def write_variant(v: Variant, path) -> None:
    with open(path, "wb") as f:
        f.write(v.data)
        if v.sparse_size > len(v.data):
            f.truncate(v.sparse_size)


def _with_kv(g: Gguf, key: str, kv: KV) -> Gguf:
    """`g` with the key `key` replaced by `kv`."""
    return replace(g, kvs=[kv if _b(k.key) == _b(key) else k for k in g.kvs])


def _with_tensor(g: Gguf, i: int, **changes) -> Gguf:
    ts = list(g.tensors)
    ts[i] = replace(ts[i], **changes)
    return replace(g, tensors=ts)


def malformed_variants() -> List[Variant]:
    g = valid_gguf()
    good, lay = g.build_with_layout()
    assert lay.header_end % g.alignment != 0, "the data-start variant needs an unaligned header end"
    past = r"past end of file"
    out: List[Variant] = []

    def add(name: str, data: Union[bytes, Gguf], expect: str, sparse_size: int = 0) -> None:
        out.append(Variant(name, data.build() if isinstance(data, Gguf) else data, expect, sparse_size))

    def kv(key: str, vtype: int, value=None, **kw) -> Gguf:
        return _with_kv(g, key, KV(key, vtype, value, **kw))

    def scalar_kv(vtype: int, value) -> Gguf:
        return kv("test.u8", vtype, value)

    # Header.
    add("empty_file", b"", r"file too small \(0 bytes")
    add("magic_only", b"GGUF", r"file too small \(4 bytes")
    add("header_23_bytes", good[:23], r"file too small \(23 bytes")
    add("bad_magic_ggml", replace(g, magic=b"GGML"), r"bad magic GGML at offset 0")
    add("bad_magic_lowercase", replace(g, magic=b"gguf"), r"bad magic gguf")
    add("bad_magic_zeros", replace(g, magic=bytes(4)), r"bad magic \\x00\\x00\\x00\\x00")
    add("bad_magic_text", b"hello, this is not a model file at all\n", r"bad magic hell")
    for ver in (0, 1, 4, 0xFFFFFFFF):
        add(f"version_{ver}", replace(g, version=ver),
            rf"unsupported version {ver} at offset 4 \(supported: 2, 3\)")
    add("version_big_endian", replace(g, version=0x03000000), r"unsupported version 50331648.*big-endian")
    add("tensor_count_u64_max", replace(g, tensor_count=U64_MAX),
        rf"tensor_count {U64_MAX} at offset 8 exceeds the limit")
    add("tensor_count_over_cap", replace(g, tensor_count=MAX_COUNT + 1),
        r"tensor_count 1048577 .*exceeds the limit of 1048576")
    add("tensor_count_at_cap_cannot_fit", replace(g, tensor_count=MAX_COUNT),
        r"tensor_count 1048576 cannot fit in the file")
    add("tensor_count_slightly_too_big", replace(g, tensor_count=len(good) // 32),
        r"tensor_count \d+ cannot fit in the file")
    add("kv_count_u64_max", replace(g, kv_count=U64_MAX), rf"kv_count {U64_MAX} at offset 16 exceeds the limit")
    add("kv_count_over_cap", replace(g, kv_count=MAX_COUNT + 1), r"kv_count 1048577 .*exceeds the limit of 1048576")
    add("kv_count_cannot_fit", replace(g, kv_count=len(good) // 12 + 1), r"kv_count \d+ cannot fit in the file")
    # One count too many: the next section is read as garbage; the message names the entry.
    add("kv_count_one_extra", replace(g, kv_count=len(g.kvs) + 1), r"GGUF: tensor #0: ")
    add("tensor_count_one_extra", replace(g, tensor_count=len(g.tensors) + 1), r"GGUF: tensor #3: ")

    # Key names.
    add("key_len_u64_max", kv("test.u8", U8, 1, key_len=U64_MAX),
        rf"key #2: key name: string length {U64_MAX} at offset \d+ runs {past}")
    add("key_len_past_eof", kv("test.u8", U8, 1, key_len=len(good)), r"key #2: key name: string length \d+ .*" + past)
    add("key_len_over_cap", replace(kv("test.u8", U8, 1, key_len=MAX_NAME + 1), tail=bytes(MAX_NAME + 64)),
        r"key #2: key name: string length 65537 .*exceeds the limit of 65536")
    add("key_empty", _with_kv(g, "test.u8", KV("", U8, 1)),
        r"key #2: empty key name at offset \d+")
    add("key_duplicate", _with_kv(g, "test.i8", KV("test.u8", U8, 3)), r"key 'test.u8': duplicate key at offset")
    add("key_duplicate_architecture", replace(g, kvs=g.kvs + [g.kvs[0]]), r"key 'general.architecture': duplicate key")
    add("key_binary_name_duplicate", replace(g, kvs=g.kvs + [KV(b"\x01\xff", U8, 1), KV(b"\x01\xff", U8, 2)]),
        r"key '\\x01\\xff': duplicate key")

    # Value types and scalar values.
    add("value_type_13", kv("test.u8", 13, raw=b"\x00"), r"key 'test.u8': unknown value type 13 at offset")
    add("value_type_u32_max", kv("test.u8", 0xFFFFFFFF, raw=b"\x00"), r"unknown value type 4294967295")
    add("bool_value_2", kv("test.bool", BOOL, 2), r"key 'test.bool': bool value 2 at offset \d+ \(must be 0 or 1\)")
    add("bool_value_255", kv("test.bool", BOOL, 255), r"bool value 255")
    add("string_len_u64_max", kv("test.string", STRING, raw=u64(U64_MAX) + b"x"),
        rf"key 'test.string': value: string length {U64_MAX} at offset \d+ runs {past}")
    add("string_len_one_past_eof", _string_one_past_eof(g),
        rf"key 'test.empty_string': value: string length \d+ .*{past}")
    add("string_len_over_cap_sparse", kv("test.string", STRING, raw=u64(MAX_STRING + 1)),
        r"string length 1073741825 .*exceeds the limit of 1073741824", sparse_size=MAX_STRING + 4096)

    # Arrays.
    add("array_nested", kv("test.arr_i32", ARRAY, raw=u32(ARRAY) + u64(1) + u32(U8) + u64(1) + b"\x00"),
        r"key 'test.arr_i32': array of arrays .*nested arrays are not supported")
    add("array_elem_type_13", kv("test.arr_i32", ARRAY, raw=u32(13) + u64(1) + b"\x00"),
        r"unknown array element type 13")
    add("array_count_overflow_u32", kv("test.arr_i32", ARRAY, [1], elem=U32, count=U64_MAX),
        r"size overflow computing GGUF array byte size")
    add("array_count_overflow_u64", kv("test.arr_i32", ARRAY, [1], elem=U64, count=2**61),
        r"size overflow computing GGUF array byte size")
    add("array_count_huge_u8", kv("test.arr_i32", ARRAY, [1], elem=U8, count=2**62),
        rf"key 'test.arr_i32': array of {2**62} u8 at offset \d+ needs \d+ bytes and runs {past}")
    add("array_count_one_past_eof", kv("test.arr_i32", ARRAY, [1], elem=F64, count=len(good) // 8),
        r"array of \d+ f64 .*" + past)
    add("string_array_count_u64_max", kv("test.arr_str", ARRAY, ["a"], elem=STRING, count=U64_MAX),
        rf"key 'test.arr_str': array count {U64_MAX} at offset \d+ runs {past} \(each string needs at least 8 bytes")
    add("string_array_count_too_big", kv("test.arr_str", ARRAY, ["a"], elem=STRING, count=len(good) // 8 + 1),
        r"array count \d+ .*each string needs at least 8 bytes")
    add("string_array_elem_len_u64_max", kv("test.arr_str", ARRAY, raw=u32(STRING) + u64(2) + gstr("a") + u64(U64_MAX)),
        rf"key 'test.arr_str': string element: string length {U64_MAX} .*{past}")
    add("string_array_elem_len_past_eof", kv("test.arr_str", ARRAY, raw=u32(STRING) + u64(1) + u64(len(good))),
        r"string element: string length \d+ .*" + past)
    add("bool_array_elem_2", kv("test.arr_bool", ARRAY, [1, 2, 0], elem=BOOL),
        r"key 'test.arr_bool': bool array element 1 has value 2 at offset \d+ \(must be 0 or 1\)")

    # general.alignment.
    for name, vtype, value in (("u64", U64, 32), ("i32", I32, 32), ("u16", U16, 32), ("string", STRING, "32"),
                               ("f32", F32, 32.0), ("bool", BOOL, 1)):
        add(f"alignment_type_{name}", kv("general.alignment", vtype, value),
            rf"key 'general.alignment' has type {name}, expected u32")
    add("alignment_type_array", kv("general.alignment", ARRAY, [32], elem=U32),
        r"key 'general.alignment' has type array, expected u32")
    for value in (0, 3, 48, 0xFFFFFFFF):
        add(f"alignment_{value}", kv("general.alignment", U32, value),
            rf"general.alignment = {value} is not a power of two")
    # One tensor at offset 0, so only the data section start can be wrong.
    add("alignment_2_pow_31_data_past_eof", replace(kv("general.alignment", U32, 2**31), tensors=g.tensors[:1]),
        rf"data section starts at offset {2**31} .*{past}")
    # Layout was made for 32; the Q8_0 tensor sits at 96, which 64 does not divide.
    add("alignment_64_misaligned_offset", kv("general.alignment", U32, 64),
        r"tensor 'blk.0.ffn_up.weight': data offset 96 is not a multiple of the alignment 64")

    # Tensor infos.
    add("tensor_name_len_u64_max", _with_tensor(g, 0, name_len=U64_MAX),
        rf"tensor #0: tensor name: string length {U64_MAX} .*{past}")
    add("tensor_name_len_over_cap", replace(_with_tensor(g, 1, name_len=MAX_NAME + 1), tail=bytes(MAX_NAME + 64)),
        r"tensor #1: tensor name: string length 65537 .*exceeds the limit of 65536")
    add("tensor_name_empty", _with_tensor(g, 1, name=""), r"tensor #1: empty tensor name at offset")
    add("tensor_name_duplicate", _with_tensor(g, 2, name="token_embd.weight"),
        r"tensor 'token_embd.weight': duplicate tensor name")
    for n in (0, 5, 0xFFFFFFFF):
        add(f"n_dims_{n}", _with_tensor(g, 0, n_dims=n),
            rf"tensor 'token_embd.weight': n_dims {n} at offset \d+ \(must be 1..4\)")
    add("dims_5_listed", _with_tensor(g, 1, dims=[8, 1, 1, 1, 1]), r"tensor 'output_norm.weight': n_dims 5")
    add("dim0_zero", _with_tensor(g, 0, dims=[0, 2]), r"tensor 'token_embd.weight': dimension 0 is 0 at offset")
    add("dim1_zero", _with_tensor(g, 0, dims=[8, 0]), r"dimension 1 is 0")
    add("dim3_zero", _with_tensor(g, 2, dims=[32, 1, 1, 0]), r"tensor 'blk.0.ffn_up.weight': dimension 3 is 0")
    add("dim_2_pow_63", _with_tensor(g, 0, dims=[2**63, 1]), rf"dimension 0 is {2**63} .*over INT64_MAX")
    add("dim_u64_max", _with_tensor(g, 0, dims=[8, U64_MAX]), rf"dimension 1 is {U64_MAX} .*over INT64_MAX")
    add("dims_product_overflow", _with_tensor(g, 0, dims=[2**32, 2**32]),
        r"size overflow computing element count of tensor 'token_embd.weight'")
    add("dims_product_overflow_4d", _with_tensor(g, 0, dims=[2**20, 2**20, 2**20, 2**20]),
        r"size overflow computing element count")
    add("dims_product_over_int64", _with_tensor(g, 0, dims=[2**31, 2**31, 2]),
        rf"tensor 'token_embd.weight': element count {2**63} is over INT64_MAX")
    add("tensor_bytes_overflow", _with_tensor(g, 0, dims=[2**62]),
        r"size overflow computing byte size of tensor 'token_embd.weight'")
    add("tensor_huge_but_no_overflow", _with_tensor(g, 0, dims=[2**20, 2**20]),
        rf"tensor 'token_embd.weight' data at file offset \d+ with {2**42} bytes runs {past}")
    for ttype in (3, 16, 29, 31, 0xFFFFFFFF):
        add(f"tensor_type_{ttype}", _with_tensor(g, 1, ttype=ttype),
            rf"unknown tensor type {ttype} for tensor 'output_norm.weight'")
    add("ne0_not_multiple_q8_0", _with_tensor(g, 2, dims=[31, 1]),
        r"tensor 'blk.0.ffn_up.weight': ne0 = 31 is not a multiple of the Q8_0 block size 32")
    add("ne0_not_multiple_q4_k", _with_tensor(g, 2, dims=[128], ttype=T_Q4_K), r"Q4_K block size 256")
    add("ne0_not_multiple_q6_k", _with_tensor(g, 2, dims=[32, 8], ttype=T_Q6_K), r"ne0 = 32 .*Q6_K block size 256")

    # Offsets.
    add("offset_misaligned_1", _with_tensor(g, 1, offset=65),
        r"tensor 'output_norm.weight': data offset 65 is not a multiple of the alignment 32")
    add("offset_misaligned_u64_max", _with_tensor(g, 1, offset=U64_MAX), r"is not a multiple of the alignment 32")
    add("offset_overflow", _with_tensor(g, 2, offset=U64_MAX - 31), r"size overflow computing GGUF tensor data start")
    add("offset_past_eof", _with_tensor(g, 2, offset=1 << 40),
        rf"tensor 'blk.0.ffn_up.weight' data at file offset \d+ with 34 bytes runs {past}")
    add("offset_end_one_past_eof", _with_tensor(g, 2, offset=128), rf"tensor 'blk.0.ffn_up.weight' data .*{past}")
    add("overlap_same_offset", _with_tensor(g, 1, offset=0),
        r"tensors '(token_embd|output_norm).weight' and '(token_embd|output_norm).weight' overlap")
    add("overlap_partial", _with_tensor(g, 1, offset=32),
        r"tensors 'token_embd.weight' and 'output_norm.weight' overlap")
    # Sorted by offset: Q8_0 [0, 34), F32 [32, 96), F16 [64, 80): the first pair, in reverse info order.
    add("overlap_out_of_order", _with_tensor(_with_tensor(g, 2, offset=0), 0, offset=32),
        r"tensors 'blk.0.ffn_up.weight' and 'token_embd.weight' overlap .*"
        r"spans \[0, 34\), 'token_embd.weight' starts at 32")
    add("data_truncated_one_byte", good[:-1], rf"tensor 'blk.0.ffn_up.weight' data .*{past}")
    add("data_section_start_past_eof", good[:lay.data_start - 1],
        rf"data section starts at offset {lay.data_start} .*{past}")
    bare, bare_lay = replace(g, tensors=[]).build_with_layout()
    assert bare_lay.header_end % g.alignment != 0
    add("no_tensors_no_padding", bare[:bare_lay.header_end],
        rf"data section starts at offset {bare_lay.data_start} .*{past}")

    # Every truncation of the valid file before its last byte.
    for cut in range(len(good)):
        add(f"truncate_at_{cut}", good[:cut], rf"{past}|cannot fit|file too small")

    names = [v.name for v in out]
    assert len(names) == len(set(names)), "variant names must be unique"
    return out


def _string_one_past_eof(g: Gguf) -> Gguf:
    """`g` with the empty string value's length claiming one byte more than the file has left."""
    key = "test.empty_string"
    data = g.build()
    value_at = data.index(gstr(key) + u32(STRING)) + len(gstr(key)) + 4
    # An empty string is just its length, so the file keeps its size.
    return _with_kv(g, key, KV(key, STRING, raw=u64(len(data) - (value_at + 8) + 1)))


def valid_variants() -> List[Variant]:
    """Unusual but valid files the reader must accept ("ok" expected)."""
    g = valid_gguf()
    out = [Variant("valid", g.build(), "")]
    # Offsets need not follow info order: Q8_0 [0, 34), F16 [64, 80), F32 [96, 160) in 64 spare tail bytes.
    shuffled = replace(_with_tensor(_with_tensor(g, 2, offset=0), 0, offset=96), tail=bytes(64))
    out.append(Variant("offsets_out_of_info_order", shuffled.build(), ""))
    out.append(Variant("version_2", replace(g, version=2).build(), ""))
    no_align = replace(g, kvs=[k for k in g.kvs if _b(k.key) != b"general.alignment"])
    out.append(Variant("default_alignment", no_align.build(), ""))
    out.append(Variant("alignment_64", replace(_with_kv(g, "general.alignment", KV("general.alignment", U32, 64)),
                                               alignment=64).build(), ""))
    out.append(Variant("no_tensors_no_kvs", Gguf().build(), ""))
    out.append(Variant("trailing_bytes", replace(g, tail=b"\xff" * 100).build(), ""))
    return out


def mutations(seed: int, n: int) -> List[bytes]:
    """`n` seeded random corruptions of the valid file (byte flips, truncations, huge u64s)."""
    good = valid_file()
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        data = bytearray(good)
        kind = rng.randrange(4)
        if kind == 0:
            for _ in range(rng.randrange(1, 8)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif kind == 1:
            data = data[:rng.randrange(len(data))]
        elif kind == 2:
            at = rng.randrange(len(data) // 8) * 8
            data[at:at + 8] = u64(rng.choice([U64_MAX, 2**63, 2**32, 2**31 - 1, 1 << 40, rng.getrandbits(64)]))
        else:
            at = rng.randrange(len(data))
            data[at:at + 1] = bytes([rng.randrange(256)])
            data = data[:rng.randrange(at, len(data) + 1)] if rng.random() < 0.3 else data
        out.append(bytes(data))
    return out
