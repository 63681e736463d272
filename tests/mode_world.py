"""The world of the mode parity tests (tests/test_modes_parity.py,
tests/test_auto_mode.py): peaked random checkpoints and their GGUFs, seeded
prompts, the reference's results and the runtime models, built lazily once
per session (the `world` fixture of conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mode_reference
import nld_cpp
from mode_reference import RefModel, RefResult, search_prompt
from reference import EXACT_CACHE

# Peaked variants. head_scale 8: about a quarter of the block confidences
# reach 0.9 (diffusion commits several tokens a pass), while none saturates
# at 1.0 in f32 (at 12, ties at exactly 1.0 made the fixed schedule's order
# hang on rounding). Shapes as in conftest.
VARIANTS: dict[str, dict] = {
    # head_dim 24 != 64/4, GQA 2, YaRN factor 4; positions pass orig 64 (attention scaling on).
    "gqa2_yarn4": dict(seed=10, head_scale=8.0),
    # YaRN factor 0.25 (< 1), one kv head for 4 (GQA 4), legacy rope keys, f32 source.
    "mqa_yarn025": dict(max_position_embeddings=64, original_max_position_embeddings=256, num_key_value_heads=1,
                        rope_layout="legacy", dtype="float32", seed=11, head_scale=8.0),
    # GQA 8 (8 heads of 12 != 64/8, one kv head), three layers, LoRA r 16 alpha 64 (scale 4 as released).
    "gqa8_hd12": dict(num_attention_heads=8, num_key_value_heads=1, head_dim=12, num_hidden_layers=3,
                      lora_rank=16, lora_alpha=64, dtype="float32", seed=12, head_scale=8.0),
}
# name -> (length, drafter searched for a partial first-round accept: True LoRA on, False off, None no search)
PROMPTS: dict[str, tuple[int, bool | None]] = {"one": (1, None), "short": (7, True), "long": (19, False)}
FIRST_ID = 101  # prompts avoid control ids 0-100 (the mask id is 100)
N_CTX = 256

# name -> Model.generate keywords (temperature 0 everywhere)
MODES: dict[str, dict[str, Any]] = {
    "ar": dict(mode="ar"),
    "diffusion-0.9": dict(mode="diffusion", threshold=0.9),
    "diffusion-fixed": dict(mode="diffusion", threshold=0.0),
    "spec-lora": dict(mode="spec", threshold=0.0, use_lora=True),
    "spec-lora-0.5": dict(mode="spec", threshold=0.5, use_lora=True),
    "spec-nolora": dict(mode="spec", threshold=0.0, use_lora=False),
    "spec-nolora-0.5": dict(mode="spec", threshold=0.5, use_lora=False),
}
# mode -> the (block length, max_tokens) runs with the model's eos only: block
# lengths 4, 8, 32; budgets below a block, multiples and non-multiples of it.
# Diffusion at 0.9 is cheap (several commits a pass) and gets them all; self-
# speculation costs 2+ forwards a token on random weights, so it gets fewer.
BUDGETS: dict[str, list[tuple[int | None, int]]] = {
    "ar": [(None, 5), (None, 21), (None, 40)],
    "diffusion-0.9": [(4, 16), (4, 21), (4, 40), (8, 5), (8, 16), (8, 40), (32, 32), (32, 40)],
    "diffusion-fixed": [(4, 21), (8, 16), (32, 40)],
    "spec-lora": [(4, 16), (8, 5), (32, 21)],
    "spec-nolora": [(4, 21), (8, 16)],
    "spec-lora-0.5": [(4, 21), (8, 16)],
    "spec-nolora-0.5": [(4, 16), (8, 21)],
}
# mode -> block lengths of the "stops" runs (max_tokens STOP_BUDGET)
STOP_BLOCKS: dict[str, tuple[int | None, ...]] = {
    "ar": (None,), "diffusion-0.9": (4, 8, 32), "diffusion-fixed": (4, 8, 32), "spec-lora": (4, 8, 32),
    "spec-nolora": (32,), "spec-lora-0.5": (8,), "spec-nolora-0.5": (4,),
}
STOP_BUDGET = 40  # the "stops" runs: model eos + tokens chosen to land inside blocks


@dataclass(frozen=True)
class Case:
    variant: str
    prompt: str
    mode: str  # a key of MODES
    block: int | None
    n: int
    # "eos": the model's only; "stops": plus extra ids that land inside blocks;
    # "seed": plus the seed of the second block (diffusion, B 8)
    stops: str

    def __str__(self) -> str:
        return f"{self.variant}-{self.prompt}-{self.mode}-B{self.block}-N{self.n}-{self.stops}"


def parity_cases() -> Iterator[Case]:
    for v in VARIANTS:
        for p in PROMPTS:
            for mode in MODES:
                yield from (Case(v, p, mode, b, n, "eos") for b, n in BUDGETS[mode])
                yield from (Case(v, p, mode, b, STOP_BUDGET, "stops") for b in STOP_BLOCKS[mode])
                if mode.startswith("diffusion"):
                    yield Case(v, p, mode, 8, STOP_BUDGET, "seed")


PARITY_CASES = list(parity_cases())


def first_new_token(tokens: list[int], start: int, block: int | None = None, at_block_start: bool = False) -> list[int]:
    """[the first token at index >= start (else >= 1) that did not occur
    before, with block: only inside a block, or only at a block start], or []
    when the output only repeats itself."""
    for begin in (start, 1):
        for k in range(begin, len(tokens)):
            if (block is None or (k % block == 0) == at_block_start) and tokens[k] not in tokens[:k]:
                return [tokens[k]]
    return []


class World:
    """Everything the tests share, built lazily once per session: checkpoints,
    GGUFs, reference models, prompts, stop ids, reference results, runtimes."""

    def __init__(self, tmp: pytest.TempPathFactory):
        self.tmp = tmp
        self._models: dict[tuple[str, int], Any] = {}

    @cache
    def ckpt(self, variant: str) -> Path:
        from nld_cpp.testing.checkpoints import make_checkpoint

        return make_checkpoint(self.tmp.mktemp(f"modes-{variant}"), **VARIANTS[variant])

    @cache
    def gguf(self, variant: str, lora: bool = True) -> Any:
        """The F32 conversion (.path, .lora_path beside it unless lora is False)."""
        from nld_cpp.convert import convert_checkpoint

        out = self.tmp.mktemp(f"modes-gguf-{variant}") / f"{variant}.gguf"
        return convert_checkpoint(self.ckpt(variant), out, outtype="f32", progress=False, lora=lora)

    @cache
    def ref(self, variant: str) -> RefModel:
        return RefModel(self.ckpt(variant))

    @cache
    def prompts(self, variant: str) -> dict[str, list[int]]:
        """Seeded random prompts; "short"/"long" chosen so that partial
        acceptance does not hang on luck (search_prompt)."""
        rng = np.random.default_rng(list(VARIANTS).index(variant))
        return {p: search_prompt(self.ref(variant), n, lora, rng, FIRST_ID) for p, (n, lora) in PROMPTS.items()}

    def prompt(self, variant: str, name: str) -> list[int]:
        return self.prompts(variant)[name]

    @cache
    def extra_stops(self, variant: str, prompt: str) -> list[int]:
        """Stop ids of the "stops" runs: the first new token from index 8 of
        the AR output, and for each block length one from the second block
        on (not a block start) of the diffusion-0.9 output, so that an EOS
        lands inside blocks (the runtime's stop set is eos + extra ids)."""
        picks = first_new_token(self.result(Case(variant, prompt, "ar", None, STOP_BUDGET, "eos")).tokens, 8)
        for b in (4, 8, 32):
            out = self.result(Case(variant, prompt, "diffusion-0.9", b, STOP_BUDGET, "eos")).tokens
            picks += first_new_token(out, b + 1, b, at_block_start=False)
        return sorted(set(picks) - {self.ref(variant).eos_id})

    def stop_tokens(self, case: Case) -> list[int]:
        """The extra stop ids the runtime is given (its eos is implicit)."""
        if case.stops == "stops":
            return self.extra_stops(case.variant, case.prompt)
        if case.stops == "seed":  # the seed of the second block of 8 (the output is the same up to it)
            out = self.result(Case(case.variant, case.prompt, case.mode, 8, 16, "eos")).tokens
            return sorted(set(first_new_token(out, 8, 8, at_block_start=True)) - {self.ref(case.variant).eos_id})
        return []

    @cache
    def result(self, case: Case) -> RefResult:
        ref = self.ref(case.variant)
        return mode_reference.generate(ref, self.prompt(case.variant, case.prompt), max_new_tokens=case.n,
                                       stop_ids=[ref.eos_id] + self.stop_tokens(case), block_length=case.block,
                                       **MODES[case.mode])

    def model(self, variant: str, n_threads: int = 2) -> Any:
        if not hasattr(nld_cpp.Model, "generate"):
            pytest.skip("nld_cpp.Model.generate is not available yet (runtime side of the modes)")
        key = (variant, n_threads)
        if key not in self._models:
            self._models[key] = nld_cpp.Model(self.gguf(variant).path, n_ctx=N_CTX, n_threads=n_threads, **EXACT_CACHE)
        model = self._models[key]
        model.truncate(0)  # results must not depend on the order the tests ran in
        return model

    def close(self) -> None:
        for model in self._models.values():
            model.close()


def generate(model: Any, prompt: list[int], mode: str, block: int | None, n: int, stop_tokens=(), **kw: Any) -> Any:
    """model.generate with a MODES key (or a plain mode name); temperature 0
    unless given. Every output is scanned: the mask id is never emitted."""
    kwargs = dict(MODES.get(mode, dict(mode=mode)), **kw)
    kwargs.setdefault("temperature", 0.0)
    res = model.generate(prompt, max_tokens=n, block_length=block, stop_tokens=tuple(stop_tokens), **kwargs)
    assert model.info.mask_token_id not in res.tokens, (mode, res.tokens)
    return res


def describe(want: RefResult) -> str:
    return (f"reference: tokens {want.tokens} nfe {want.nfe} finish {want.finish_reason} accepted {want.accepted}; "
            f"closest decisions: logit gap {want.min_logit_gap:.3g}, confidence gap {want.min_conf_gap:.3g} "
            "(a gap at rounding level means numerics, not the algorithm)")

