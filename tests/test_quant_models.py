"""Quantized conversions end to end: the q4_k_m tensor mix, loading, and next-token agreement with F32.

Fixture: a generated checkpoint with K-quant-friendly shapes (hidden 256,
intermediate 512, 4 heads of 64, 2 KV heads, 4 layers), converted to f32, q8_0,
q4_0 and q4_k_m. Oracles: the `gguf` package reads the tensor types and
dequantizes the tensors; llama.cpp's Q4_K_M rule (use_more_bits: layer < n/8,
layer >= 7n/8, or (layer - n/8) % 3 == 2) gives Q6_K attn_v / ffn_down on
layers 2 and 3 of 4, and Q6_K output.weight.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import gguf
import numpy as np
import pytest
from nld_cpp import Model
from nld_cpp.convert import convert_checkpoint
from nld_cpp.testing import make_checkpoint
from safetensors.torch import load_file

pytestmark = pytest.mark.model

GT = gguf.GGMLQuantizationType
QUANT_TYPES = ["q8_0", "q4_0", "q4_k_m"]
# Random weights give flat next-token distributions, so 4-bit agreement is far from 1
# (measured over 256 positions: q8_0 0.961, q4_0 0.652, q4_k_m 0.688; mean KL from F32
# 0.00023, 0.031, 0.018); the floors catch a broken path.
AGREEMENT_FLOOR = {"q8_0": 0.9, "q4_0": 0.5, "q4_k_m": 0.6}
K_SPEC = dict(hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
              num_hidden_layers=4, lora_rank=0, seed=7)


@pytest.fixture(scope="module")
def k_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("kq") / "model", **K_SPEC)


@pytest.fixture(scope="module")
def k_models(k_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    out = tmp_path_factory.mktemp("kq-gguf")
    return {t: convert_checkpoint(k_ckpt, out / f"m-{t}.gguf", t, progress=False).path for t in ["f32"] + QUANT_TYPES}


def _tensors(path: Path) -> Dict[str, object]:
    return {t.name: t for t in gguf.GGUFReader(str(path)).tensors}


def test_q4_k_m_follows_llama_cpp_mix(k_ckpt: Path, k_models: Dict[str, Path]) -> None:
    reader = gguf.GGUFReader(str(k_models["q4_k_m"]))
    assert reader.fields["general.file_type"].contents() == 15
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types["output.weight"] == GT.Q6_K and types["token_embd.weight"] == GT.Q4_K
    assert types["output_norm.weight"] == GT.F32
    for layer in range(4):
        more_bits = layer in (2, 3)
        for name in ("attn_v", "ffn_down"):
            assert types[f"blk.{layer}.{name}.weight"] == (GT.Q6_K if more_bits else GT.Q4_K), (layer, name)
        for name in ("attn_q", "attn_k", "attn_output", "ffn_gate", "ffn_up"):
            assert types[f"blk.{layer}.{name}.weight"] == GT.Q4_K, (layer, name)
        assert types[f"blk.{layer}.attn_norm.weight"] == GT.F32
    # The stored blocks decode (by the gguf package) to the source weights within the format's error.
    src = {k: v.float().numpy() for k, v in load_file(str(k_ckpt / "model.safetensors")).items()}
    tensors = _tensors(k_models["q4_k_m"])
    for hf, name, limit in [("encoder.layers.0.mlp.up_proj.weight", "blk.0.ffn_up.weight", 0.12),
                            ("encoder.layers.3.self_attn.v_proj.weight", "blk.3.attn_v.weight", 0.03),
                            ("diffusion_head.weight", "output.weight", 0.03)]:
        t = tensors[name]
        back = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(src[hf].shape)
        rel = float(np.sqrt(np.mean((back - src[hf]) ** 2) / np.mean(src[hf] ** 2)))
        assert rel < limit, (name, rel)


def test_q4_k_m_falls_back_for_rows_not_multiple_of_256(tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "m", intermediate_size=80, lora_rank=0)  # hidden 64, intermediate 80
    path = convert_checkpoint(ckpt, tmp_path / "q.gguf", "q4_k_m", progress=False).path
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(str(path)).tensors}
    # Q4_K and Q6_K rows of 64 fall back to Q8_0; rows of 80 (not a multiple of 32) to F16.
    assert types["blk.0.attn_q.weight"] == GT.Q8_0 and types["output.weight"] == GT.Q8_0
    assert types["blk.1.attn_v.weight"] == GT.Q8_0
    assert types["blk.0.ffn_down.weight"] == GT.F16 and types["blk.1.ffn_down.weight"] == GT.F16
    with Model(path, n_ctx=64, n_threads=1) as m:
        assert np.isfinite(m.forward([1000, 1001, 1002])).all()


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64) - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def test_top1_agreement_with_f32(k_models: Dict[str, Path]) -> None:
    rng = np.random.default_rng(11)
    prompts = [rng.integers(1000, 1320, size=24) for _ in range(8)]

    def logits(path: Path) -> np.ndarray:
        with Model(path, n_ctx=128, n_threads=2) as m:
            rows = []
            for p in prompts:
                m.truncate(0)
                rows.append(m.forward(p, kind="causal"))
                rows.append(m.forward(p[:8], kind="bidirectional"))  # a block pass over the cached prompt
            return np.concatenate(rows)

    ref = logits(k_models["f32"])
    p_ref = _softmax(ref)
    report, kls = [], {}
    for qtype in QUANT_TYPES:
        got = logits(k_models[qtype])
        assert np.isfinite(got).all(), qtype
        agreement = float(np.mean(got.argmax(-1) == ref.argmax(-1)))
        kl = float(np.mean(np.sum(p_ref * (np.log(p_ref) - np.log(_softmax(got))), axis=-1)))
        kls[qtype] = kl
        report.append(f"{qtype}: top-1 agreement {agreement:.3f} over {len(ref)} positions, mean KL {kl:.5f}")
        assert agreement >= AGREEMENT_FLOOR[qtype], report[-1]
    print("\n" + "\n".join(report))
    assert kls["q8_0"] < kls["q4_k_m"] < kls["q4_0"], report  # more bits, closer to F32


def test_quantized_forward_same_for_any_thread_count(k_models: Dict[str, Path]) -> None:
    tokens = list(range(1000, 1017))
    outs = []
    for n_threads in (1, 2):
        with Model(k_models["q4_k_m"], n_ctx=64, n_threads=n_threads) as m:
            outs.append(m.forward(tokens))
    assert np.array_equal(outs[0], outs[1])


@pytest.mark.skipif(not __import__("nld_cpp.quants").quants.cpu_path_supported("avx2"), reason="no AVX2 on this CPU")
@pytest.mark.parametrize("qtype", ["q4_0", "q4_k_m"])
def test_forward_on_forced_scalar_path_matches(k_models: Dict[str, Path], tmp_path: Path, qtype: str) -> None:
    """NLD_CPU_PATH=scalar in a fresh process vs the default (AVX2) path here. Every matrix of
    this fixture has a row count that is a multiple of 8, so the AVX2 path runs the x8 kernels,
    which equal the scalar reference bit for bit, and the f32 loops (attention) have the same
    order on both paths: the logits must be identical. The AVX2 side runs on 2 threads, so
    the fused q/k/v and gate/up matmuls (one call over several matrices, split by weight
    bytes; in q4_k_m layers 2-3 over Q4_K q/k and a Q6_K v) are split across threads and
    compared against separate scalar matmuls."""
    reader = gguf.GGUFReader(str(k_models[qtype]))
    matrices = [t for t in reader.tensors if len(t.shape) == 2 and t.name != "token_embd.weight"]
    assert all(int(t.shape[1]) % 8 == 0 for t in matrices)
    import subprocess
    import sys

    tokens = list(range(1000, 1013))
    out = tmp_path / "scalar.npy"
    code = ("import sys, numpy as np; from nld_cpp import Model, quants; assert quants.default_cpu_path() == 'scalar'; "
            "m = Model(sys.argv[1], n_ctx=64, n_threads=1); np.save(sys.argv[2], m.forward(list(range(1000, 1013))))")
    env = dict(__import__("os").environ, NLD_CPU_PATH="scalar")
    subprocess.run([sys.executable, "-c", code, str(k_models[qtype]), str(out)], env=env, check=True)
    scalar = np.load(out)
    with Model(k_models[qtype], n_ctx=64, n_threads=2) as m:
        simd = m.forward(tokens)
    assert np.array_equal(simd, scalar)
