"""Reference models for parity tests: transformers' Ministral-3 loaded with
the weights of a generated NLD checkpoint (spec/nld-model.md; DESIGN.md
"Numerics and the oracles"). Test-only: imports torch and transformers."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import Ministral3Config, Ministral3ForCausalLM

# Our runtime with an F32 KV cache, the precision transformers computes in
# (the default f16 cache is compared with it in test_kv_cache_types.py).
EXACT_CACHE = {"cache_type_k": "f32", "cache_type_v": "f32"}


def hf_config(ckpt: Path) -> Ministral3Config:
    cfg = json.loads((ckpt / "config.json").read_text())
    rope = dict(cfg.get("rope_parameters") or {})
    if not rope:  # legacy layout: top-level rope_theta + rope_scaling
        rope = dict(cfg["rope_scaling"])
        rope["rope_theta"] = cfg["rope_theta"]
    rope.setdefault("rope_type", rope.pop("type", "yarn"))
    return Ministral3Config(
        vocab_size=cfg["vocab_size"],
        hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"],
        num_hidden_layers=cfg["num_hidden_layers"],
        num_attention_heads=cfg["num_attention_heads"],
        num_key_value_heads=cfg["num_key_value_heads"],
        head_dim=cfg["head_dim"],
        max_position_embeddings=cfg["max_position_embeddings"],
        rms_norm_eps=cfg["rms_norm_eps"],
        bos_token_id=cfg["bos_token_id"],
        eos_token_id=cfg["eos_token_id"],
        tie_word_embeddings=False,
        sliding_window=None,
        rope_parameters=rope,
    )


def load_state(ckpt: Path, round_to: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors renamed to transformers' Ministral-3 names
    (encoder. -> model., diffusion_head -> lm_head), as float32; with
    round_to, each weight is first rounded to that dtype (as a GGUF of that
    type stores it)."""
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(ckpt.glob("*.safetensors")):
        for name, tensor in load_file(str(shard)).items():
            name = name.replace("encoder.", "model.", 1).replace("diffusion_head.", "lm_head.", 1)
            t = tensor.float()
            if round_to is not None and t.ndim == 2:  # norms stay F32 in our files
                t = t.to(round_to).float()
            state[name] = t
    return state


def load_reference(ckpt: Path, round_to: torch.dtype | None = None) -> Ministral3ForCausalLM:
    model = Ministral3ForCausalLM._from_config(hf_config(ckpt), attn_implementation="eager")
    model = model.float().eval()
    missing, unexpected = model.load_state_dict(load_state(ckpt, round_to), strict=False)
    assert not unexpected, unexpected
    assert all("rotary_emb" in k for k in missing), missing
    return model


def causal_logits(model: Ministral3ForCausalLM, tokens: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0]


def block_mask(n_prefix: int, n_block: int) -> torch.Tensor:
    """Additive 4-D mask (1, 1, L, L): prefix rows causal, block rows see the
    whole prefix and the whole block (spec section 5, bidirectional block)."""
    n = n_prefix + n_block
    allowed = torch.ones(n, n).tril().bool()
    allowed[n_prefix:, :] = True
    mask = torch.zeros(n, n)
    mask[~allowed] = torch.finfo(torch.float32).min
    return mask[None, None]


def block_logits(model: Ministral3ForCausalLM, prefix: list[int], block: list[int]) -> torch.Tensor:
    """Logits of the block rows of a bidirectional block pass over prefix."""
    tokens = torch.tensor([prefix + block])
    positions = torch.arange(tokens.shape[1])[None]
    with torch.no_grad():
        out = model(tokens, attention_mask=block_mask(len(prefix), len(block)), position_ids=positions)
    return out.logits[0, len(prefix):]


def greedy_generate(model: Ministral3ForCausalLM, prompt: list[int], n_new: int, mask_id: int) -> list[int]:
    """transformers' own greedy generation; the mask id is suppressed as the
    spec requires of every runtime."""
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             max_new_tokens=n_new, do_sample=False, suppress_tokens=[mask_id])
    return out[0, len(prompt):].tolist()
