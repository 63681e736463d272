"""A PyTorch reference of the generation modes (greedy only), written from
spec/nld-model.md section 6 and docs/generation.md, for token-for-token and
forward-for-forward parity with the runtime (DESIGN.md "Numerics and the
oracles", row "mode algorithms").

No KV cache: every forward of the algorithm is one transformers call over the
whole sequence (cached prefix + new rows) with an explicit additive 4-D mask,
and is counted in `nfe` exactly as the runtime counts it. Causal rows depend
only on earlier rows, so recomputing the prefix gives the logits the cached
runtime gets. `n_ctx` (optional, default unlimited) applies the context rule
of docs/generation.md: generation stops with finish_reason "context" when the
next forward would not fit. Test-only: imports torch and transformers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from reference import block_mask, load_reference


@contextmanager
def single_thread() -> Iterator[None]:
    """These matrices are tiny: intra-op threads only add synchronisation
    (tens of times slower on a loaded 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@lru_cache(maxsize=256)
def _mask(n_prefix: int, n_block: int) -> torch.Tensor:
    return block_mask(n_prefix, n_block)


@dataclass
class RefResult:
    tokens: list[int]
    nfe: int
    finish_reason: str  # "stop" | "length" | "context"
    accepted: list[int] = field(default_factory=list)  # linear spec: m per round, in order
    multi_commits: int = 0  # diffusion / thresholded drafts: passes that committed >= 2 tokens
    # diffusion: blocks holding an EOS after denoising (always at index > 0:
    # an EOS seed finishes before any block is built)
    eos_in_block: int = 0
    eos_early_stops: int = 0  # diffusion: blocks whose denoising the EOS rule stopped with masks left
    # How close the run came to a different decision (for reading a parity
    # failure: a runtime computing in another order can only flip a decision
    # whose gap is at rounding level): the smallest top-1 minus top-2 logit
    # gap of any choice, and the smallest confidence gap that decided which
    # masked index was committed (rank boundary, or distance to the threshold).
    min_logit_gap: float = float("inf")
    min_conf_gap: float = float("inf")


class RefModel:
    """transformers' Ministral-3 with a generated checkpoint's weights (f32,
    eager attention) plus the drafter LoRA of linear_spec_lora/ when present."""

    def __init__(self, ckpt_dir: Path, use_lora_weights: bool = True):
        ckpt_dir = Path(ckpt_dir)
        self.model = load_reference(ckpt_dir)
        cfg = json.loads((ckpt_dir / "config.json").read_text())
        self.mask_id: int = int(cfg["mask_token_id"])
        self.eos_id: int = int(cfg["eos_token_id"])
        self.block_size: int = int(cfg.get("block_size", 32))
        self.vocab_size: int = int(cfg["vocab_size"])
        # Per layer (A [r, in], B [out, r]); delta W_o = scale * B A.
        self._lora: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._lora_scale = 0.0
        lora_dir = ckpt_dir / "linear_spec_lora"
        if use_lora_weights and lora_dir.is_dir():
            adapter = json.loads((lora_dir / "adapter_config.json").read_text())
            self._lora_scale = float(adapter["lora_alpha"]) / float(adapter["r"])
            weights = load_file(str(lora_dir / "adapter_model.safetensors"))
            prefix = "base_model.model.encoder.layers.{}.self_attn.o_proj."
            for layer in range(len(self.model.model.layers)):
                p = prefix.format(layer)
                self._lora.append((weights[p + "lora_A.weight"].float(), weights[p + "lora_B.weight"].float()))

    @property
    def has_lora(self) -> bool:
        return bool(self._lora)

    def _run(self, seqs: list[list[int]], n_prefix: int) -> torch.Tensor:
        """(batch, L, V) logits of equal-length prefix + block sequences:
        prefix rows causal, block rows bidirectional."""
        n = len(seqs[0])
        with single_thread(), torch.no_grad():
            out = self.model(torch.tensor(seqs), attention_mask=_mask(n_prefix, n - n_prefix),
                             position_ids=torch.arange(n)[None], use_cache=False)
        return out.logits

    def causal_logits(self, tokens: list[int]) -> torch.Tensor:
        """(n, V): plain causal pass; row i predicts position i+1."""
        return self._run([tokens], len(tokens))[0]

    def causal_logits_batch(self, seqs: list[list[int]]) -> torch.Tensor:
        """(batch, n, V): causal_logits of equal-length sequences at once."""
        return self._run(seqs, len(seqs[0]))

    @contextmanager
    def _drafter_on(self, first_row: int) -> Iterator[None]:
        """Adds the LoRA delta to o_proj's output for rows >= first_row only
        (the prefix rows stand for the cache, computed with LoRA off)."""
        handles = []
        for layer, (a, b) in zip(self.model.model.layers, self._lora):
            def hook(module, args, output, a=a, b=b):
                x = args[0]  # (batch, L, n_head * head_dim): o_proj's input
                delta = self._lora_scale * (x[:, first_row:] @ a.T @ b.T)
                output = output.clone()
                output[:, first_row:] += delta
                return output
            handles.append(layer.self_attn.o_proj.register_forward_hook(hook))
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def block_logits(self, prefix: list[int], block: list[int], lora: bool) -> torch.Tensor:
        """(len(block), V): bidirectional block pass over the prefix; row i
        predicts the token at block index i (no shift)."""
        return self.block_logits_batch([prefix], [block], lora)[0]

    def block_logits_batch(self, prefixes: list[list[int]], blocks: list[list[int]], lora: bool) -> torch.Tensor:
        """(batch, B, V): block_logits of equal-length prefixes and blocks at once."""
        n_prefix = len(prefixes[0])
        seqs = [p + b for p, b in zip(prefixes, blocks)]
        if not lora:
            return self._run(seqs, n_prefix)[:, n_prefix:]
        if not self.has_lora:
            raise ValueError("this checkpoint has no drafter LoRA")
        with self._drafter_on(n_prefix):
            return self._run(seqs, n_prefix)[:, n_prefix:]

    # -- choosing ----------------------------------------------------------
    def choose(self, rows: torch.Tensor) -> tuple[list[int], list[float], float]:
        """Per row of (n, V) logits: the token (argmax with the mask id
        excluded, ties to the lower id) and its confidence (softmax in f32
        with the mask id kept); plus the smallest top-1 minus top-2 logit gap
        of the rows (how close a choice came to flipping)."""
        with single_thread():
            masked = rows.float().clone()
            masked[:, self.mask_id] = float("-inf")
            tokens = torch.argmax(masked, dim=-1)  # first maximum: the lower id
            confs = torch.softmax(rows.float(), dim=-1).gather(1, tokens[:, None])[:, 0]
            top2 = torch.topk(masked, 2, dim=-1).values
            gap = float((top2[:, 0] - top2[:, 1]).min())
        return tokens.tolist(), confs.tolist(), gap


def _finish(out: list[int], stop: set[int]) -> str:
    return "stop" if out and out[-1] in stop else "length"


def _emit(out: list[int], tokens: Iterable[int], n_max: int, stop: set[int]) -> bool:
    """Append tokens up to the first EOS (included) and the budget; True when
    generation is finished."""
    for t in tokens:
        if len(out) >= n_max:
            return True
        out.append(t)
        if t in stop:
            return True
    return len(out) >= n_max


def _check(prompt: list[int], max_new_tokens: int, block_length: int | None = None,
           threshold: float | None = None) -> None:
    if not prompt:
        raise ValueError("empty prompt")
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be >= 1")
    if block_length is not None and block_length < 1:
        raise ValueError("block_length must be >= 1")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError("threshold must be in [0, 1]")


def _fits(n_cached: int, n_new: int, n_ctx: int | None) -> bool:
    return n_ctx is None or n_cached + n_new <= n_ctx


def _choose(ref: RefModel, rows: torch.Tensor, res: RefResult) -> tuple[list[int], list[float]]:
    tokens, confs, gap = ref.choose(rows)
    res.min_logit_gap = min(res.min_logit_gap, gap)
    return tokens, confs


@single_thread()
def ar_generate(ref: RefModel, prompt: list[int], max_new_tokens: int, stop_ids: Iterable[int],
                n_ctx: int | None = None) -> RefResult:
    """docs/generation.md "AR": nfe = number of emitted tokens."""
    _check(prompt, max_new_tokens)
    stop, prompt = set(stop_ids), list(prompt)
    res = RefResult([], 0, "length")
    while True:
        # Cache before this forward: the prompt and every emitted token but the last.
        if res.tokens and not _fits(len(prompt) + len(res.tokens) - 1, 1, n_ctx):
            res.finish_reason = "context"
            return res
        token = _choose(ref, ref.causal_logits(prompt + res.tokens)[-1:], res)[0][0]
        res.nfe += 1
        if _emit(res.tokens, [token], max_new_tokens, stop):
            res.finish_reason = _finish(res.tokens, stop)
            return res


def _order(masked: list[int], confs: list[float]) -> list[int]:
    """Masked indices by confidence, highest first, ties to the lower index."""
    return [masked[j] for j in sorted(range(len(masked)), key=lambda j: -confs[j])]


def _denoise_pass(ref: RefModel, prefix: list[int], block: list[int], lora: bool, threshold: float,
                  n_fixed: int, res: RefResult) -> int:
    """One bidirectional pass: commits the best masked index and every other
    with conf >= threshold (threshold > 0), else the first n_fixed of the
    order. Updates block in place; returns the number committed."""
    logits = ref.block_logits(prefix, block, lora)
    masked = [i for i, t in enumerate(block) if t == ref.mask_id]
    tokens, confs = _choose(ref, logits[masked], res)
    order = _order(masked, confs)
    conf_of = dict(zip(masked, confs))
    if threshold > 0:
        chosen = [order[0]] + [i for i in order[1:] if conf_of[i] >= threshold]
        gaps = [abs(conf_of[i] - threshold) for i in order[1:]]
        if len(order) > 1 and conf_of[order[1]] < threshold:  # the best one is committed by rank alone
            gaps.append(conf_of[order[0]] - conf_of[order[1]])
    else:
        chosen = order[:n_fixed]
        gaps = [conf_of[order[n_fixed - 1]] - conf_of[order[n_fixed]]] if n_fixed < len(order) else []
    res.min_conf_gap = min([res.min_conf_gap] + gaps)
    cand = dict(zip(masked, tokens))
    for i in chosen:
        block[i] = cand[i]
    return len(chosen)


def _eos_rule(block: list[int], mask_id: int, stop: set[int]) -> bool:
    """The block holds an EOS and no mask lies left of the first one."""
    for t in block:
        if t == mask_id:
            return False
        if t in stop:
            return True
    return False


def _decided(block: list[int], mask_id: int) -> int:
    """Length of the decided prefix: the indices before the first mask."""
    return block.index(mask_id) if mask_id in block else len(block)


@single_thread()
def diffusion_generate(ref: RefModel, prompt: list[int], max_new_tokens: int, block_length: int,
                       threshold: float, stop_ids: Iterable[int], n_ctx: int | None = None) -> RefResult:
    """docs/generation.md "Block diffusion"; threshold 0 = the fixed schedule."""
    _check(prompt, max_new_tokens, block_length, threshold)
    stop, n_blk, mask, prompt = set(stop_ids), block_length, ref.mask_id, list(prompt)
    res = RefResult([], 0, "length")
    out = res.tokens
    seed = _choose(ref, ref.causal_logits(prompt)[-1:], res)[0][0]  # prefill: not counted
    while True:
        if seed in stop or max_new_tokens - len(out) == 1:
            out.append(seed)
            res.finish_reason = _finish(out, stop)
            return res
        if not _fits(len(prompt) + len(out), n_blk, n_ctx):
            out.append(seed)
            res.finish_reason = "context"
            return res
        block = [seed] + [mask] * (n_blk - 1)
        step = 0
        # Denoise until no mask is left, the EOS rule holds, or the decided
        # prefix covers the budget (docs/generation.md, Block diffusion 4-5).
        while (mask in block and not _eos_rule(block, mask, stop)
               and _decided(block, mask) < max_new_tokens - len(out)):
            k = max(1, (n_blk - 1) // n_blk + (1 if step < (n_blk - 1) % n_blk else 0))
            n = _denoise_pass(ref, prompt + out, block, False, threshold, k, res)
            res.nfe += 1
            res.multi_commits += n >= 2
            step += 1
        if any(t in stop for t in block):
            res.eos_in_block += 1
            res.eos_early_stops += mask in block
        if _emit(out, block, max_new_tokens, stop):
            res.finish_reason = _finish(out, stop)
            return res
        seed = _choose(ref, ref.causal_logits(prompt + out)[-1:], res)[0][0]  # commit pass
        res.nfe += 1


@single_thread()
def infill_generate(ref: RefModel, prompt: list[int], canvas: list[int], block_length: int,
                    threshold: float) -> RefResult:
    """docs/generation.md "Infill": the canvas (mask id where to fill) after
    the prompt, in blocks of block_length; a mask at a block's index 0 takes
    the causal choice there; each block is denoised until no mask is left
    (threshold 0: its masks spread over its length in passes, remainder
    first), then committed by a causal pass unless it is the last."""
    mask, prompt = ref.mask_id, list(prompt)
    res = RefResult([], 0, "length")
    out = res.tokens
    seed = _choose(ref, ref.causal_logits(prompt)[-1:], res)[0][0]  # prefill: not counted
    for start in range(0, len(canvas), block_length):
        block = list(canvas[start:start + block_length])
        if block[0] == mask:
            block[0] = seed
        n_masks, step = block.count(mask), 0
        while mask in block:
            k = max(1, n_masks // len(block) + (1 if step < n_masks % len(block) else 0))
            n = _denoise_pass(ref, prompt + out, block, False, threshold, k, res)
            res.nfe += 1
            res.multi_commits += n >= 2
            step += 1
        out.extend(block)
        if start + block_length < len(canvas):
            seed = _choose(ref, ref.causal_logits(prompt + out)[-1:], res)[0][0]  # commit pass
            res.nfe += 1
    return res


def _confidence(row: torch.Tensor, token: int) -> float:
    return float(torch.softmax(row.double(), dim=-1)[token])


@single_thread()
def leave_one_out(ref: RefModel, prompt: list[int], span: list[int], block_length: int) -> list[float]:
    """nld_cpp.revise's scores: per block, index 0 by the causal row before
    it, every other index with it alone masked in a bidirectional pass."""
    confs: list[float] = []
    for start in range(0, len(span), block_length):
        block, before = span[start:start + block_length], list(prompt) + list(span[:start])
        confs.append(_confidence(ref.causal_logits(before)[-1], block[0]))
        probes = [block[:i] + [ref.mask_id] + block[i + 1:] for i in range(1, len(block))]
        if probes:
            rows = ref.block_logits_batch([before] * len(probes), probes, False)
            confs += [_confidence(rows[j][j + 1], block[j + 1]) for j in range(len(probes))]
    return confs


def revise(ref: RefModel, prompt: list[int], span: list[int], k: int, rounds: int, block_length: int,
           threshold: float, positions: list[int] | None = None,
           below: float = 1.0) -> tuple[list[int], list[list[tuple]], list[float]]:
    """docs/generation.md "Revision": (tokens, per round [(position, old,
    new)], final confidences)."""
    tokens, changes = list(span), []
    confs = leave_one_out(ref, prompt, tokens, block_length)
    for _ in range(rounds):
        weak = [i for i in range(len(tokens)) if confs[i] < below]
        chosen = positions if positions is not None else sorted(weak, key=lambda i: (confs[i], i))[:k]
        if not chosen:
            changes.append([])
            break
        canvas = [ref.mask_id if i in chosen else t for i, t in enumerate(tokens)]
        filled = infill_generate(ref, prompt, canvas, block_length, threshold).tokens
        changes.append([(i, tokens[i], filled[i]) for i in sorted(chosen) if filled[i] != tokens[i]])
        tokens, confs = filled, leave_one_out(ref, prompt, filled, block_length)
        if not changes[-1]:
            break
    return tokens, changes, confs


@single_thread()
def linear_spec_generate(ref: RefModel, prompt: list[int], max_new_tokens: int, block_length: int,
                         threshold: float, use_lora: bool, stop_ids: Iterable[int],
                         n_ctx: int | None = None) -> RefResult:
    """docs/generation.md "Linear self-speculation"."""
    _check(prompt, max_new_tokens, block_length, threshold)
    stop, n_blk, mask, prompt = set(stop_ids), block_length, ref.mask_id, list(prompt)
    lora = use_lora and ref.has_lora
    res = RefResult([], 1, "length")
    out = res.tokens
    seed = _choose(ref, ref.causal_logits(prompt)[-1:], res)[0][0]
    if _emit(out, [seed], max_new_tokens, stop):
        res.finish_reason = _finish(out, stop)
        return res
    while True:
        cache = prompt + out[:-1]  # the seed (last emitted) is not in the cache
        if not _fits(len(cache), n_blk, n_ctx):
            res.finish_reason = "context"
            return res
        block = [seed] + [mask] * (n_blk - 1)
        while mask in block:  # draft; threshold 0 fills every mask in one pass
            n = _denoise_pass(ref, cache, block, lora, threshold, n_blk, res)
            res.nfe += 1
            res.multi_commits += threshold > 0 and n >= 2
        ar = _choose(ref, ref.causal_logits(cache + block)[len(cache):], res)[0]  # verify
        res.nfe += 1
        m = 0
        while m < n_blk - 1 and ar[m] == block[m + 1]:
            m += 1
        res.accepted.append(m)
        if _emit(out, ar[: m + 1], max_new_tokens, stop):
            res.finish_reason = _finish(out, stop)
            return res
        seed = ar[m]


def generate(ref: RefModel, prompt: list[int], mode: str, max_new_tokens: int, stop_ids: Iterable[int],
             block_length: int | None = None, threshold: float | None = None, use_lora: bool = True,
             n_ctx: int | None = None) -> RefResult:
    """The runtime's Model.generate at temperature 0, by its mode names and
    defaults: block length from the config, threshold 0.9 (diffusion) or 0 (spec)."""
    block = block_length or ref.block_size
    if mode == "ar":
        return ar_generate(ref, prompt, max_new_tokens, stop_ids, n_ctx)
    if mode == "diffusion":
        return diffusion_generate(ref, prompt, max_new_tokens, block, 0.9 if threshold is None else threshold,
                                  stop_ids, n_ctx)
    if mode == "spec":
        return linear_spec_generate(ref, prompt, max_new_tokens, block, threshold or 0.0, use_lora, stop_ids, n_ctx)
    raise ValueError(f"unknown mode {mode!r}")


def first_round_accepts(ref: RefModel, prompts: list[list[int]], block: int, lora: bool) -> list[int]:
    """m of the first linear-speculation round (threshold 0, no budget) of
    each prompt, all in one batch (equal lengths): a cheap filter when
    searching for prompts; batching changes rounding, so confirm a hit with
    linear_spec_generate."""
    seeds = ref.choose(ref.causal_logits_batch(prompts)[:, -1])[0]
    blocks = [[s] + [ref.mask_id] * (block - 1) for s in seeds]
    drafts = ref.block_logits_batch(prompts, blocks, lora)
    for blk, rows in zip(blocks, drafts):
        blk[1:] = ref.choose(rows[1:])[0]
    verify = ref.causal_logits_batch([p + b for p, b in zip(prompts, blocks)])[:, len(prompts[0]):]
    accepts = []
    for blk, rows in zip(blocks, verify):
        ar = ref.choose(rows)[0]
        accepts.append(next((m for m in range(block - 1) if ar[m] != blk[m + 1]), block - 1))
    return accepts


def search_prompt(ref: RefModel, length: int, lora: bool | None, rng: np.random.Generator, first_id: int,
                  batches: int = 8, batch: int = 64) -> list[int]:
    """A random prompt of ids in [first_id, vocab); with lora not None, the
    first candidate whose first speculation round (B 8, drafter LoRA on or
    off) accepts part of the draft (random weights rarely agree: about one
    candidate in 100), else the first candidate."""
    first = rng.integers(first_id, ref.vocab_size, size=length).tolist()
    for _ in range(batches if lora is not None else 0):
        candidates = rng.integers(first_id, ref.vocab_size, size=(batch, length)).tolist()
        for prompt, m in zip(candidates, first_round_accepts(ref, candidates, 8, lora)):
            if 0 < m < 7 and 0 < linear_spec_generate(ref, prompt, 2, 8, 0.0, lora, [ref.eos_id]).accepted[0] < 7:
                return prompt
    return first
