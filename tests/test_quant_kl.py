"""KL divergence of quantized next-token distributions from F32, on the shipped tiny trained model.

CI has no float checkpoint of the tiny model, so the reference is rebuilt from
the shipped Q8_0 GGUF: the `gguf` package reads it and dequantizes every
tensor, and an HF-layout checkpoint is written from that (config.json from
the GGUF keys, `encoder.*` safetensors with the q/k rope row permutation
undone, tokenizer.json and chat template from the metadata). Our converter
then makes f32, q8_0, q4_0 and q4_k_m GGUFs of it. Two oracles prove the
rebuild: re-quantizing to Q8_0 gives the shipped blocks byte for byte, and
transformers' Ministral-3 on the rebuilt checkpoint gives our F32 logits.
Teacher forcing over one held-out text per task (bench/kl_quants.py, which
measures the same figures on the original float checkpoint), KL checked
against torch's kl_div.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Dict, List

import gguf
import numpy as np
import pytest
from nld_cpp.convert import convert_checkpoint
from nld_cpp.convert.hf_checkpoint import expected_tensors, load_config
from safetensors.numpy import save_file

pytestmark = pytest.mark.model

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "python" / "nld_cpp" / "models" / "nld-tiny-q8_0.gguf"
QUANT_TYPES = ["q8_0", "q4_0", "q4_k_m"]
REL_TOL = 1e-4  # f32 vs transformers: max |diff| <= 1e-4 * max |logit|, as tests/test_forward_parity.py
# Float64 KL of one position sums 1768 terms p (log p - log q), each log-softmax good to ~1e-15
# absolute; two implementations (or a true 0) can differ by that much, not more.
KL_F64_ATOL = 1e-13


def _load_bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("kl_quants", ROOT / "bench" / "kl_quants.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


bench = _load_bench()


def unpermute_qk_rows(rows: np.ndarray, head_dim: int) -> np.ndarray:
    """Interleaved rope pairs (GGUF, rows 2j and 2j+1 of a head) -> rotate-half order (HF, rows j and j + d/2)."""
    n, width = rows.shape
    return rows.reshape(n // head_dim, head_dim // 2, 2, width).swapaxes(1, 2).reshape(n, width)


def hf_checkpoint_from_gguf(gguf_path: Path, out: Path) -> Path:
    """Write the HF NLD checkpoint (float32) whose conversion gives the tensors of `gguf_path`."""
    reader = gguf.GGUFReader(str(gguf_path))

    def key(name: str):  # type: ignore[no-untyped-def]
        return reader.fields[name].contents()

    arch = key("general.architecture")
    config = {
        "architectures": ["NemotronLabsDiffusionModel"], "model_type": "nemotron_labs_diffusion",
        "torch_dtype": "float32",
        "vocab_size": key(f"{arch}.vocab_size"), "hidden_size": key(f"{arch}.embedding_length"),
        "intermediate_size": key(f"{arch}.feed_forward_length"), "num_hidden_layers": key(f"{arch}.block_count"),
        "num_attention_heads": key(f"{arch}.attention.head_count"),
        "num_key_value_heads": key(f"{arch}.attention.head_count_kv"),
        "head_dim": key(f"{arch}.attention.key_length"),
        "max_position_embeddings": key(f"{arch}.context_length"),
        "rms_norm_eps": key(f"{arch}.attention.layer_norm_rms_epsilon"),
        "bos_token_id": key("tokenizer.ggml.bos_token_id"), "eos_token_id": key("nld.eos_token_ids"),
        "tie_word_embeddings": False, "sliding_window": None,
        "mask_token_id": key("tokenizer.ggml.mask_token_id"), "block_size": key("diffusion.block_size"),
        "rope_parameters": {
            "rope_type": key(f"{arch}.rope.scaling.type"),
            "factor": key(f"{arch}.rope.scaling.factor"),
            "original_max_position_embeddings": key(f"{arch}.rope.scaling.original_context_length"),
            "beta_fast": key(f"{arch}.rope.scaling.yarn_beta_fast"),
            "beta_slow": key(f"{arch}.rope.scaling.yarn_beta_slow"),
            "mscale_all_dim": key(f"{arch}.rope.scaling.yarn_log_multiplier"),
            "attention_factor": key("nld.rope.scaling.attn_factor"),
            "llama_4_scaling_beta": key(f"{arch}.attention.temperature_scale"),
            "rope_theta": key(f"{arch}.rope.freq_base"),
        },
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "tokenizer.json").write_text(key("tokenizer.huggingface.json"), encoding="utf-8")
    (out / "chat_template.jinja").write_text(key("tokenizer.chat_template"), encoding="utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": key("tokenizer.ggml.add_bos_token")}))

    # The converter's own name table, read backwards; a wrong entry would still round-trip, but
    # transformers (which knows the HF names) would then disagree with our forward.
    to_hf = {gguf_name: (hf_name, spec.permute_heads)
             for hf_name, gguf_name, spec in expected_tensors(load_config(out, lambda msg: None))}
    tensors = {}
    for t in reader.tensors:
        hf_name, heads = to_hf[t.name]
        values = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
        values = values.reshape(tuple(int(d) for d in reversed(t.shape)))  # GGUF ne [in, out] -> torch [out, in]
        if heads:
            values = unpermute_qk_rows(values, values.shape[0] // heads)
        tensors[hf_name] = np.ascontiguousarray(values, dtype=np.float32)
    assert len(tensors) == len(to_hf)
    save_file(tensors, str(out / "model.safetensors"))
    return out


@pytest.fixture(scope="module")
def reference_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return hf_checkpoint_from_gguf(SHIPPED, tmp_path_factory.mktemp("kl") / "nld-tiny-dequant")


@pytest.fixture(scope="module")
def variants(reference_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    out = tmp_path_factory.mktemp("kl-gguf")
    return {t: convert_checkpoint(reference_ckpt, out / f"m-{t}.gguf", t, progress=False, lora=False).path
            for t in ["f32"] + QUANT_TYPES}


@pytest.fixture(scope="module")
def token_lists() -> List[List[int]]:
    texts = bench.held_out_texts()
    return bench.tokenize([texts[i] for i in bench.first_of_each_task()])  # one conversation per task


@pytest.fixture(scope="module")
def logits(variants: Dict[str, Path], token_lists: List[List[int]]) -> Dict[str, np.ndarray]:
    paths = dict(variants, shipped=SHIPPED)
    return {name: bench.teacher_forced_logits(path, token_lists) for name, path in paths.items()}


def test_q8_0_requantization_reproduces_shipped_blocks(variants: Dict[str, Path], logits: Dict[str, np.ndarray]) -> None:
    """Q8_0 of Q8_0-dequantized weights gives back the same d and q, so the q8_0 variant is the shipped model."""
    ours, shipped = gguf.GGUFReader(str(variants["q8_0"])).tensors, gguf.GGUFReader(str(SHIPPED)).tensors
    assert [t.name for t in ours] == [t.name for t in shipped]
    for a, b in zip(ours, shipped):
        assert a.tensor_type == b.tensor_type, a.name
        assert np.array_equal(np.asarray(a.data), np.asarray(b.data)), a.name
    assert np.array_equal(logits["q8_0"], logits["shipped"])


def test_f32_reference_matches_transformers(reference_ckpt: Path, token_lists: List[List[int]],
                                            logits: Dict[str, np.ndarray]) -> None:
    """The rebuilt checkpoint in transformers' Ministral-3 and our F32 GGUF of it give the same logits."""
    from reference import causal_logits, load_reference

    model = load_reference(reference_ckpt)
    ref = np.concatenate([causal_logits(model, tokens).numpy() for tokens in token_lists])
    err = float(np.abs(logits["f32"] - ref).max() / np.abs(ref).max())
    print(f"\nF32 vs transformers: max |diff| / max |logit| = {err:.2e} over {len(ref)} positions")
    assert err <= REL_TOL
    assert np.array_equal(logits["f32"].argmax(-1), ref.argmax(-1))


def test_kl_from_f32_per_quant_type(variants: Dict[str, Path], logits: Dict[str, np.ndarray]) -> None:
    ref = logits["f32"]
    figures = {t: bench.compare(ref, logits[t]) for t in QUANT_TYPES}
    print(f"\nvs F32 (dequantized shipped weights), {len(ref)} positions:")
    for t, f in figures.items():
        print(f"  {t}: mean KL {f['mean_kl']:.3e}, p99 KL {f['p99_kl']:.3e}, top-1 agreement "
              f"{100 * f['top1_agreement']:.2f}%")
    for t in QUANT_TYPES:
        assert np.isfinite(logits[t]).all(), t
        kl = bench.kl_per_position(ref, logits[t])
        assert np.isfinite(kl).all() and kl.min() >= -KL_F64_ATOL, t
    assert figures["q4_0"]["mean_kl"] > figures["q8_0"]["mean_kl"]
    assert figures["q8_0"]["top1_agreement"] >= figures["q4_0"]["top1_agreement"]

    # q4_k_m: Q4_K / Q6_K need rows that are a multiple of 256 and fall back to Q8_0 otherwise
    # (docs/quants.md). The tiny model's rows are 128 or 384, so every matrix falls back.
    tensors = gguf.GGUFReader(str(variants["q4_k_m"])).tensors
    matrices = [t for t in tensors if len(t.shape) == 2]
    if all(int(t.shape[0]) % 256 for t in matrices):
        assert {t.tensor_type for t in matrices} == {gguf.GGMLQuantizationType.Q8_0}
        assert np.array_equal(logits["q4_k_m"], logits["q8_0"])
    else:
        assert figures["q8_0"]["mean_kl"] < figures["q4_k_m"]["mean_kl"] < figures["q4_0"]["mean_kl"]


def test_kl_equals_torch_kl_div(logits: Dict[str, np.ndarray]) -> None:
    import torch
    import torch.nn.functional as F

    ref = torch.from_numpy(logits["f32"]).double().log_softmax(-1)
    for t in QUANT_TYPES:
        got = torch.from_numpy(logits[t]).double().log_softmax(-1)
        theirs = F.kl_div(got, ref, reduction="none", log_target=True).sum(-1).numpy()
        ours = bench.kl_per_position(logits["f32"], logits[t])
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=KL_F64_ATOL, err_msg=t)
        batchmean = float(F.kl_div(got, ref, reduction="batchmean", log_target=True))
        assert bench.compare(logits["f32"], logits[t])["mean_kl"] == pytest.approx(batchmean, rel=1e-9, abs=KL_F64_ATOL)
