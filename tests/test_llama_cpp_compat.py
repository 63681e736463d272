"""llama.cpp (through llama-cpp-python) loads the Q8_0 and Q4_0 files our
converter writes, and its greedy AR tokens agree with ours. Skipped when
llama_cpp is not importable (CI does not install it; the benchmark setup in
bench/ does)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nld_cpp

llama_cpp = pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.model

N_TOKENS = 32


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nld_cpp.testing.checkpoints import make_checkpoint

    # Peaked logits (head_scale) so that greedy choices are not decided by rounding;
    # hidden and FFN multiples of 256 so the K-quant types apply too.
    return make_checkpoint(tmp_path_factory.mktemp("lcpp"), hidden_size=256, intermediate_size=512, head_dim=64,
                           num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=4,
                           max_position_embeddings=512, original_max_position_embeddings=512, head_scale=6.0,
                           seed=21)


def llama_greedy(path: Path, prompt: list[int], mask_id: int) -> list[int]:
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=256, n_threads=2, verbose=False, logits_all=False)

    def no_mask(_ids, logits):  # the runtime never emits the mask id (spec section 5)
        logits[mask_id] = -np.inf
        return logits

    out = []
    for tok in llm.generate(prompt, temp=0.0, top_k=1, logits_processor=llama_cpp.LogitsProcessorList([no_mask])):
        out.append(int(tok))
        if len(out) == N_TOKENS:
            break
    llm.close()
    return out


QUANT_GAP = pytest.mark.xfail(strict=False, reason=(
    "greedy paths split at near-ties: with both at their default F16 KV cache Q8_0 agrees 4/32/8 tokens and "
    "Q4_0 4/28/0 (2026-12-04, AVX2 host); earlier, ours with an F32 cache against llama.cpp's F16: Q8_0 "
    "4/32/32 and Q4_0 25/11/0; both F32: Q8_0 32/32/32 and Q4_0 14/17/17 (before attention's "
    "multiply-adds were fused: 4/31/32 and 14/11/0; 32/31/32 and 32/19/15, and F16 weights 12/32/32 with the "
    "F32 cache), so the splits follow float-order noise through 8-bit activation rounding; open in issue 5"))


@pytest.mark.parametrize("outtype", [pytest.param("q8_0", marks=QUANT_GAP), pytest.param("q4_0", marks=QUANT_GAP),
                                     "f16"])
def test_llama_cpp_greedy_agrees(checkpoint, outtype, tmp_path):
    from nld_cpp.convert import convert_checkpoint

    path = Path(convert_checkpoint(checkpoint, tmp_path / f"m-{outtype}.gguf", outtype=outtype, progress=False,
                                   lora=False).path)
    rng = np.random.default_rng(3)
    agreements = []
    for _ in range(3):
        prompt = [int(t) for t in rng.integers(1256, 1320, 8)]
        with nld_cpp.Model(path, n_ctx=256, n_threads=2) as model:
            ours = model.generate(prompt, mode="ar", max_tokens=N_TOKENS, ignore_eos=True).tokens
            mask_id = model.info.mask_token_id
        theirs = llama_greedy(path, prompt, mask_id)
        same = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), N_TOKENS)
        agreements.append(same)
    print(f"{outtype}: tokens equal before the first difference: {agreements} of {N_TOKENS}")
    assert agreements == [N_TOKENS] * len(agreements), agreements
