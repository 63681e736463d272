"""The tiny NLD model's hyper-parameters and its torch forward (training only).

The math is transformers' Ministral3ForCausalLM (spec/nld-model.md section 4):
RMSNorm with the variance in f32, rotate-half RoPE (YaRN with factor 1 is
plain RoPE at theta 1e6, attention factor 1, no query scaling below
original_max_position_embeddings), GQA, SwiGLU, softmax scale
1/sqrt(head_dim), no biases, untied `diffusion_head`. State-dict names are the
HF NLD names. tests/test_training.py checks the logits against transformers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

FIRST_BYTE_ID = 1000


@dataclass
class Config:
    vocab_merges: int = 512  # vocab = 1256 + merges
    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 32
    max_position_embeddings: int = 512
    block_size: int = 16
    rope_theta: float = 1e6
    rms_norm_eps: float = 1e-5
    # base training
    steps: int = 6000
    batch_size: int = 32
    max_minutes: float = 50.0  # > 0: the LR schedule also advances with wall time and training stops there
    lr: float = 3e-3
    warmup: int = 60
    weight_decay: float = 0.01
    diff_weight: float = 0.3
    eps: float = 1e-3
    # drafter LoRA
    lora_rank: int = 16
    lora_alpha: int = 64
    lora_steps: int = 300
    lora_lr: float = 2e-3
    lora_targets: str = "data"  # "data": teacher-forced argmax on the data; "greedy": the model's own answers
    # bookkeeping
    tokenizer_examples: int = 20000
    seed: int = 0
    save_every: int = 250
    threads: int = 1  # 2 OpenMP threads on 2 shared cores spin-wait: 1 is several times faster
    corpus: int = 1  # 1: train/corpus.py (the shipped model's); 2: train/corpus_v2.py

    @property
    def vocab_size(self) -> int:
        return FIRST_BYTE_ID + 256 + self.vocab_merges


# --- model ----------------------------------------------------------------------

class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = x.float().pow(2).mean(-1, keepdim=True)
        return self.weight * (x.float() * torch.rsqrt(var + self.eps)).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, c: Config) -> None:
        super().__init__()
        self.c = c
        q, kv = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
        self.q_proj = nn.Linear(c.hidden_size, q, bias=False)
        self.k_proj = nn.Linear(c.hidden_size, kv, bias=False)
        self.v_proj = nn.Linear(c.hidden_size, kv, bias=False)
        self.o_proj = nn.Linear(q, c.hidden_size, bias=False)
        self.lora_A: Optional[nn.Parameter] = None  # (r, q)
        self.lora_B: Optional[nn.Parameter] = None  # (hidden, r)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, allowed: torch.Tensor,
                lora: bool) -> torch.Tensor:
        c, (n, t, _) = self.c, x.shape
        q = self.q_proj(x).view(n, t, c.num_attention_heads, c.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(n, t, c.num_key_value_heads, c.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(n, t, c.num_key_value_heads, c.head_dim).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        rep = c.num_attention_heads // c.num_key_value_heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)  # scale 1/sqrt(head_dim)
        a = a.transpose(1, 2).reshape(n, t, -1)
        out = self.o_proj(a)
        if lora and self.lora_A is not None:
            out = out + (c.lora_alpha / c.lora_rank) * F.linear(F.linear(a, self.lora_A), self.lora_B)
        return out


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class MLP(nn.Module):
    def __init__(self, c: Config) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, c: Config) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.mlp = MLP(c)

    def forward(self, h, cos, sin, allowed, lora):  # type: ignore[no-untyped-def]
        h = h + self.self_attn(self.input_layernorm(h), cos, sin, allowed, lora)
        return h + self.mlp(self.post_attention_layernorm(h))


class Encoder_(nn.Module):
    def __init__(self, c: Config) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(Layer(c) for _ in range(c.num_hidden_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)


class TinyNLD(nn.Module):
    """State-dict names are the HF NLD names (encoder.*, diffusion_head.weight)."""

    def __init__(self, c: Config) -> None:
        super().__init__()
        self.c = c
        self.encoder = Encoder_(c)
        self.diffusion_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        inv_freq = 1.0 / (c.rope_theta ** (torch.arange(0, c.head_dim, 2, dtype=torch.float32) / c.head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        std = 0.02
        for name, p in self.named_parameters():
            if p.ndim == 2:
                residual_out = name.endswith(("o_proj.weight", "down_proj.weight"))
                scale = std / math.sqrt(2 * c.num_hidden_layers) if residual_out else std
                nn.init.normal_(p, 0.0, scale)

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, allowed: torch.Tensor,
                lora: bool = False) -> torch.Tensor:
        """tokens, positions (n, t); allowed (n, 1, t, t) bool, True = may attend. Returns logits (n, t, V)."""
        angles = positions[..., None].float() * self.inv_freq  # (n, t, d/2)
        emb = torch.cat((angles, angles), dim=-1)[:, None]  # (n, 1, t, d)
        cos, sin = emb.cos(), emb.sin()
        h = self.encoder.embed_tokens(tokens)
        for layer in self.encoder.layers:
            h = layer(h, cos, sin, allowed, lora)
        return self.diffusion_head(self.encoder.norm(h))

    def add_lora(self, generator: torch.Generator) -> List[nn.Parameter]:
        params = []
        c = self.c
        for layer in self.encoder.layers:
            attn = layer.self_attn
            q = c.num_attention_heads * c.head_dim
            attn.lora_A = nn.Parameter(torch.randn(c.lora_rank, q, generator=generator) / math.sqrt(q))
            attn.lora_B = nn.Parameter(torch.zeros(c.hidden_size, c.lora_rank))  # PEFT init: delta 0
            params += [attn.lora_A, attn.lora_B]
        return params
