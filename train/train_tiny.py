"""Train the tiny tri-mode NLD model shipped with nld_cpp (issue 4).

Stages, all on CPU, deterministic from --seed:
  1. tokenizer: byte-level BPE merges learned with the `tokenizers` library on
     the corpus, written in the NLD id layout (control 0-999, bytes 1000-1255,
     merges from 1256) in exactly the tokenizer.json structure of
     nld_cpp.testing.tokenizer_fixture;
  2. base model: Ministral-3 decoder (spec/nld-model.md section 4) trained
     with L = L_AR + 0.3 * L_diff (section 5, issue 4);
  3. drafter LoRA on o_proj (section 6.4), base frozen, distilled toward the
     base model's own greedy (teacher-forced argmax) predictions;
  4. saves the exact HF NLD layout (config.json, model.safetensors with
     `encoder.*` + `diffusion_head.weight`, tokenizer files, chat template,
     generation_config.json, linear_spec_lora/) every --save-every steps and
     at the end, so an interrupted run still leaves a usable checkpoint.

The forward is our own torch module with the math of transformers'
Ministral3ForCausalLM (RMSNorm with f32 variance, rotate-half RoPE, YaRN with
factor 1 = plain RoPE at theta 1e6, GQA, SwiGLU, softmax scale
1/sqrt(head_dim), no biases); tests/test_training.py checks it against
transformers on the saved weights.

Diffusion objective (choices, as README says): blocks of B are aligned to the
start of the assistant answer (where the runtime's first block starts); the
answer plus its EOS is padded with EOS to a multiple of B. The input is
[clean sequence ; noised answer]: clean rows are causal; a noised row in
answer block k sees the clean tokens before that block and its own noised
block (bidirectional), at the same absolute positions. Per sequence t ~ U(0,1),
p = (1 - eps) t + eps; block index 0 (the seed, decided autoregressively at
inference) is never masked, indices 1..B-1 are replaced by the mask id with
probability p; the loss is the unshifted cross-entropy on masked positions,
weighted 1/p and divided by the number of maskable answer positions. L_AR is
the next-token loss on the answer tokens (and its EOS) only.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpus  # noqa: E402
import corpus_v2  # noqa: E402
from tiny_model import Config, TinyNLD  # noqa: E402

from nld_cpp.testing.checkpoints import CheckpointSpec, config_json, generation_config_json  # noqa: E402
from nld_cpp.testing.tokenizer_fixture import (  # noqa: E402
    CHAT_TEMPLATE, FIRST_BYTE_ID, N_CONTROL, TEKKEN_SPLIT_REGEX, build_tokenizer_json, bytes_to_unicode,
    control_token, special_tokens_map, tokenizer_config)

MASK_ID = 100
EOS_ID = 11
PAD_ID = 0


TINY_TEST = dict(vocab_merges=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2, head_dim=32,
                 steps=4, batch_size=4, lora_rank=4, lora_alpha=8, lora_steps=2, tokenizer_examples=500,
                 save_every=0, warmup=2)


# --- tokenizer ------------------------------------------------------------------

def train_tokenizer(texts: Sequence[str], n_merges: int) -> Dict[str, object]:
    """BPE merges learned by `tokenizers` (Tekken split + byte-level), then laid out as NLD ids."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(TEKKEN_SPLIT_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=256 + n_merges, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False, special_tokens=[])
    # Control tokens are not text: train on the answers and user turns only.
    tok.train_from_iterator(texts, trainer)
    merges = json.loads(tok.to_str())["model"]["merges"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges][:n_merges]
    # The fixture's structure with our merges: reuse it and swap vocab + merges.
    out = build_tokenizer_json(FIRST_BYTE_ID + 256, max_learned_merges=0)
    vocab: Dict[str, int] = {control_token(i): i for i in range(N_CONTROL)}
    vocab.update({bytes_to_unicode()[b]: FIRST_BYTE_ID + b for b in range(256)})
    kept = []
    for left, right in merges:
        if left + right not in vocab:
            vocab[left + right] = len(vocab)
            kept.append([left, right])
    out["model"]["vocab"] = vocab  # type: ignore[index]
    out["model"]["merges"] = kept  # type: ignore[index]
    return out


class Encoder:
    def __init__(self, tok_json: Dict[str, object]) -> None:
        from tokenizers import Tokenizer
        self.tok = Tokenizer.from_str(json.dumps(tok_json))

    def encode(self, text: str) -> List[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def example(self, ex: object) -> Tuple[List[int], List[int]]:
        """(prompt ids, answer ids + EOS); the prompt of a corpus-2 example is its
        whole conversation up to the last user turn."""
        context = corpus_v2.render_context(ex) if isinstance(ex, corpus_v2.Example) else \
            corpus.render_prompt(ex.prompt)  # type: ignore[attr-defined]
        return self.encode(context), self.encode(ex.answer) + [EOS_ID]  # type: ignore[attr-defined]


# --- batches ----------------------------------------------------------------------

@dataclass
class Batch:
    tokens: torch.Tensor     # (n, T) clean | noised
    positions: torch.Tensor  # (n, T)
    allowed: torch.Tensor    # (n, 1, T, T)
    ar_target: torch.Tensor  # (n, Lc) next token at clean rows, -100 = no loss
    diff_target: torch.Tensor  # (n, Ln) token at noised rows, -100 = no loss
    diff_weight: torch.Tensor  # (n, Ln) 1/p at masked rows
    n_maskable: int
    clean_len: int


def make_batch(pairs: Sequence[Tuple[List[int], List[int]]], block: int, rng: random.Random,
               lora_mode: bool = False, teacher: Optional[List[List[int]]] = None) -> Batch:
    """Base mode: blocks aligned to the answer start, t ~ U(0,1). LoRA (draft) mode: blocks start at a
    random offset into the answer (speculation rounds start anywhere), all of indices 1..B-1 masked,
    and a quarter of the blocks have index 0 masked too (the quadratic mode's pre-draft groups);
    targets are `teacher` (the base model's greedy tokens) instead of the data."""
    n = len(pairs)
    seqs, prompts, padded = [], [], []
    for prompt, answer in pairs:
        pad = (-len(answer)) % block
        seqs.append(prompt + answer + [EOS_ID] * pad)
        prompts.append(len(prompt))
        padded.append(len(answer) + pad)
    lc = max(len(s) for s in seqs)
    ln = max(padded)
    t_all = lc + ln
    tokens = torch.full((n, t_all), PAD_ID, dtype=torch.long)
    positions = torch.zeros((n, t_all), dtype=torch.long)
    allowed = torch.zeros((n, 1, t_all, t_all), dtype=torch.bool)
    ar_target = torch.full((n, lc), -100, dtype=torch.long)
    diff_target = torch.full((n, ln), -100, dtype=torch.long)
    diff_weight = torch.zeros((n, ln))
    causal = torch.ones(lc, lc, dtype=torch.bool).tril()
    n_maskable = 0
    for b, (seq, a, (_, answer)) in enumerate(zip(seqs, prompts, pairs)):
        length = len(seq)
        tokens[b, :length] = torch.tensor(seq)
        positions[b, :lc] = torch.arange(lc)
        allowed[b, 0, :lc, :lc] = causal
        ar_target[b, a - 1:a - 1 + len(answer)] = torch.tensor(answer)
        if lora_mode:
            shift = rng.randrange(0, max(1, len(answer) - 1))
            p = 1.0
        else:
            shift = 0
            p = (1 - 1e-3) * rng.random() + 1e-3
        start = a + shift  # first block starts here
        target_seq = teacher[b] if teacher is not None else seq
        m = length - start  # noised rows: positions start .. length-1
        for r in range(m):
            pos = start + r
            k0 = start + (r // block) * block  # this row's block start (absolute)
            row = lc + r
            tokens[b, row] = seq[pos]
            positions[b, row] = pos
            allowed[b, 0, row, :k0] = True
            allowed[b, 0, row, lc + (k0 - start):lc + min(k0 - start + block, m)] = True
            index = r % block
            maskable = index > 0 or (lora_mode and rng.random() < 0.25)
            if not maskable:
                continue
            n_maskable += 1
            if rng.random() < p:
                tokens[b, row] = MASK_ID
                diff_target[b, r] = target_seq[pos]
                diff_weight[b, r] = 1.0 / p
        for row in range(lc + m, t_all):  # padding rows attend to themselves only
            allowed[b, 0, row, row] = True
        for row in range(length, lc):
            allowed[b, 0, row, :] = False
            allowed[b, 0, row, row] = True
    return Batch(tokens, positions, allowed, ar_target, diff_target, diff_weight, max(n_maskable, 1), lc)


def losses(model: TinyNLD, batch: Batch, lora: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    logits = model(batch.tokens, batch.positions, batch.allowed, lora=lora)
    lc = batch.clean_len
    v = logits.shape[-1]
    ar = F.cross_entropy(logits[:, :lc].reshape(-1, v), batch.ar_target.reshape(-1), ignore_index=-100)
    ce = F.cross_entropy(logits[:, lc:].reshape(-1, v), batch.diff_target.reshape(-1), ignore_index=-100,
                         reduction="none")
    diff = (ce * batch.diff_weight.reshape(-1)).sum() / batch.n_maskable
    return ar, diff


# --- saving -----------------------------------------------------------------------

def checkpoint_spec(c: Config) -> CheckpointSpec:
    return CheckpointSpec(vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                          num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
                          num_key_value_heads=c.num_key_value_heads, head_dim=c.head_dim,
                          max_position_embeddings=c.max_position_embeddings,
                          original_max_position_embeddings=c.max_position_embeddings, rope_theta=c.rope_theta,
                          rms_norm_eps=c.rms_norm_eps, eos_token_id=EOS_ID, block_size=c.block_size,
                          dtype="float32", lora_rank=c.lora_rank, lora_alpha=c.lora_alpha)


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def save_hf(model: TinyNLD, tok_json: Dict[str, object], out: Path, with_lora: bool, info: Dict[str, object]) -> None:
    from safetensors.torch import save_file

    c = model.c
    out.mkdir(parents=True, exist_ok=True)
    spec = checkpoint_spec(c)
    bos, eos = control_token(1), control_token(EOS_ID)
    _write_json(out / "config.json", config_json(spec))
    _write_json(out / "generation_config.json", generation_config_json(spec))
    _write_json(out / "tokenizer.json", tok_json)
    _write_json(out / "tokenizer_config.json", tokenizer_config(bos, eos, c.max_position_embeddings))
    _write_json(out / "special_tokens_map.json", special_tokens_map(bos, eos))
    (out / "chat_template.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if "lora_" not in k}
    save_file(state, str(out / "model.safetensors"))
    _write_json(out / "training_info.json", info)
    if with_lora:
        lora_dir = out / "linear_spec_lora"
        lora_dir.mkdir(exist_ok=True)
        tensors = {}
        for i, layer in enumerate(model.encoder.layers):
            p = f"base_model.model.encoder.layers.{i}.self_attn.o_proj."
            tensors[p + "lora_A.weight"] = layer.self_attn.lora_A.detach().contiguous()
            tensors[p + "lora_B.weight"] = layer.self_attn.lora_B.detach().contiguous()
        save_file(tensors, str(lora_dir / "adapter_model.safetensors"))
        _write_json(lora_dir / "adapter_config.json", {
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": out.name,
            "r": c.lora_rank, "lora_alpha": c.lora_alpha, "lora_dropout": 0.0, "target_modules": ["o_proj"],
            "bias": "none", "fan_in_fan_out": False, "use_rslora": False, "use_dora": False,
            "inference_mode": True})


# --- training -----------------------------------------------------------------------

def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


@torch.no_grad()
def teacher_targets(model: TinyNLD, pairs: Sequence[Tuple[List[int], List[int]]], block: int) -> List[List[int]]:
    """The base model's greedy next-token choice at every answer position (teacher forcing on the data),
    padded with EOS like make_batch pads; the prompt keeps the data tokens."""
    batch = make_batch(pairs, block, random.Random(0))
    lc = batch.clean_len
    logits = model(batch.tokens[:, :lc], batch.positions[:, :lc], batch.allowed[:, :, :lc, :lc])
    logits[..., MASK_ID] = float("-inf")
    choice = logits.argmax(-1)
    out = []
    for b, (prompt, answer) in enumerate(pairs):
        a = len(prompt)
        pred = choice[b, a - 1:a - 1 + len(answer)].tolist()
        if EOS_ID in pred:  # after the model's own EOS, the rest of the block is EOS
            cut = pred.index(EOS_ID)
            pred = pred[:cut + 1] + [EOS_ID] * (len(pred) - cut - 1)
        pad = (-len(answer)) % block
        out.append(prompt + pred + [EOS_ID] * pad)
    return out


@torch.no_grad()
def greedy_answers(model: TinyNLD, pairs: Sequence[Tuple[List[int], List[int]]],
                   max_new: int) -> List[Tuple[List[int], List[int]]]:
    """(prompt, the base model's own greedy answer): AR decoding by full
    recompute, up to its EOS (kept) or max_new tokens. Verification accepts
    a draft when it equals this answer, so it is what the drafter should learn."""
    n = len(pairs)
    seqs = [list(prompt) for prompt, _ in pairs]
    answers: List[List[int]] = [[] for _ in pairs]
    done = [False] * n
    for _ in range(max_new):
        if all(done):
            break
        length = max(len(s) for s in seqs)
        tokens = torch.full((n, length), PAD_ID, dtype=torch.long)
        for b, s in enumerate(seqs):
            tokens[b, :len(s)] = torch.tensor(s)
        positions = torch.arange(length).expand(n, length)
        allowed = torch.ones(length, length, dtype=torch.bool).tril().expand(n, 1, length, length)
        logits = model(tokens, positions, allowed)
        logits[..., MASK_ID] = float("-inf")
        for b, s in enumerate(seqs):
            if done[b]:
                continue
            t = int(logits[b, len(s) - 1].argmax())
            s.append(t)
            answers[b].append(t)
            done[b] = t == EOS_ID
    return [(prompt, answer) for (prompt, _), answer in zip(pairs, answers) if answer]


def state_from_gguf(path: Path, c: Config) -> Tuple[Dict[str, torch.Tensor], Dict[str, object]]:
    """The HF state dict and tokenizer.json of a GGUF that this script trained (and the converter wrote):
    tensors dequantized with the `gguf` package, q/k rows permuted back to the rotate-half layout."""
    import gguf
    import numpy as np

    from nld_cpp.tokenizer import gguf_strings

    reader = gguf.GGUFReader(str(path))
    embedded = gguf_strings(reader, "tokenizer.huggingface.json")
    if not embedded:
        raise SystemExit(f"{path} has no tokenizer.huggingface.json: it was not made by this script")
    tok_json = json.loads(embedded[0])
    names = {"token_embd.weight": "encoder.embed_tokens.weight", "output_norm.weight": "encoder.norm.weight",
             "output.weight": "diffusion_head.weight"}
    suffixes = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
                "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
                "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
    state = {}
    for t in reader.tensors:
        values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        shape = tuple(int(d) for d in reversed(t.shape))  # GGUF ne = [in, out] -> torch [out, in]
        values = values.reshape(shape)
        if t.name in names:
            state[names[t.name]] = torch.from_numpy(values.copy())
            continue
        _, layer, kind, _ = t.name.split(".")
        if kind in ("attn_q", "attn_k"):  # undo the converter's permutation (pairs adjacent -> halves)
            n, width = values.shape
            hd = c.head_dim
            values = values.reshape(n // hd, hd // 2, 2, width).swapaxes(1, 2).reshape(n, width)
        state[f"encoder.layers.{layer}.{suffixes[kind]}.weight"] = torch.from_numpy(np.ascontiguousarray(values))
    return state, tok_json


def train(c: Config, out: Path, base_ckpt: Optional[Path] = None, init_from: Optional[Path] = None,
          init_from_gguf: Optional[Path] = None) -> Path:
    torch.manual_seed(c.seed)
    torch.set_num_threads(c.threads)
    rng = random.Random(c.seed)
    t0 = time.time()
    source = corpus_v2 if c.corpus == 2 else corpus
    stream = source.train_stream(exclude=source.held_out_prompts())

    texts = []
    for _ in range(c.tokenizer_examples):
        ex = next(stream)
        texts += [ex.prompt, ex.answer]
    tok_json = train_tokenizer(texts, c.vocab_merges)
    gguf_state = None
    if init_from_gguf is not None:  # its embeddings belong to its own tokenizer: keep both
        gguf_state, tok_json = state_from_gguf(init_from_gguf, c)
    enc = Encoder(tok_json)
    log(f"tokenizer: {len(tok_json['model']['vocab'])} ids ({time.time() - t0:.0f}s)")  # type: ignore[index]

    model = TinyNLD(c)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params / 1e6:.2f} M parameters, config {json.dumps(asdict(c))}")
    info: Dict[str, object] = {"config": asdict(c), "n_params": n_params, "log": []}

    pending: List[List[Tuple[List[int], List[int]]]] = []

    def next_pairs(n: int) -> List[Tuple[List[int], List[int]]]:
        """The next batch: examples are drawn 8 batches at a time and grouped by length (less padding)."""
        if not pending:
            pool = [enc.example(next(stream)) for _ in range(8 * n)]
            pool.sort(key=lambda pa: (len(pa[0]) + len(pa[1]) + (-len(pa[1])) % c.block_size, len(pa[1])))
            groups = [pool[i:i + n] for i in range(0, len(pool), n)]
            rng.shuffle(groups)
            pending.extend(groups)
        return pending.pop()

    if init_from is not None:  # continue training a saved base (a fresh optimizer and LR schedule)
        from safetensors.torch import load_file
        model.load_state_dict(load_file(str(init_from / "model.safetensors")))
        info["init_from"] = {"path": str(init_from),
                             "training_info": json.loads((init_from / "training_info.json").read_text())}
        log(f"continuing from {init_from}")
    if gguf_state is not None:
        model.load_state_dict(gguf_state)
        info["init_from_gguf"] = str(init_from_gguf)
        log(f"continuing from the weights of {init_from_gguf}")
    if base_ckpt is None:
        opt = torch.optim.AdamW(model.parameters(), lr=c.lr, betas=(0.9, 0.95), weight_decay=c.weight_decay)
        for step in range(c.steps):
            progress = step / c.steps
            if c.max_minutes > 0:  # a wall-time budget: the schedule follows whichever is further along
                progress = max(progress, (time.time() - t0) / (60 * c.max_minutes))
                if progress >= 1.0:
                    log(f"time budget reached at step {step}")
                    break
            info["base_steps_done"] = step + 1
            for g in opt.param_groups:
                g["lr"] = lr_at(int(progress * c.steps), c.steps, c.lr, c.warmup)
            batch = make_batch(next_pairs(c.batch_size), c.block_size, rng)
            l_ar, l_diff = losses(model, batch)
            loss = l_ar + c.diff_weight * l_diff
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if step % 10 == 0 or step == c.steps - 1:
                entry = {"step": step, "ar": round(l_ar.item(), 4), "diff": round(l_diff.item(), 4),
                         "elapsed_s": round(time.time() - t0, 1)}
                info["log"].append(entry)  # type: ignore[union-attr]
                log(f"base step {step}: L_AR {l_ar.item():.4f} L_diff {l_diff.item():.4f}")
            if c.save_every and (step + 1) % c.save_every == 0:
                save_hf(model, tok_json, out, False, dict(info, stage="base", step=step + 1))
                log(f"saved {out} at step {step + 1}")
    else:
        from safetensors.torch import load_file
        model.load_state_dict(load_file(str(base_ckpt / "model.safetensors")))
        log(f"loaded base weights from {base_ckpt}")
    info["base_time_s"] = round(time.time() - t0, 1)
    save_hf(model, tok_json, out, False, dict(info, stage="base", step=c.steps))

    # Drafter LoRA: base frozen, draft-pass loss toward the base model's greedy choices.
    for p in model.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(c.seed + 1)
    lora_params = model.add_lora(gen)
    opt = torch.optim.AdamW(lora_params, lr=c.lora_lr, betas=(0.9, 0.95), weight_decay=0.0)
    for step in range(c.lora_steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, c.lora_steps, c.lora_lr, max(1, c.warmup // 2))
        pairs = next_pairs(c.batch_size)
        if c.lora_targets == "greedy":  # the model's own answers, which are their own targets
            pairs = greedy_answers(model, pairs, max(len(a) for _, a in pairs) + c.block_size)
            teacher = None
        else:  # the model's choice at each position of the data's answer
            teacher = teacher_targets(model, pairs, c.block_size)
        batch = make_batch(pairs, c.block_size, rng, lora_mode=True, teacher=teacher)
        _, l_draft = losses(model, batch, lora=True)
        opt.zero_grad(set_to_none=True)
        l_draft.backward()
        torch.nn.utils.clip_grad_norm_(lora_params, 1.0)
        opt.step()
        if step % 10 == 0 or step == c.lora_steps - 1:
            info["log"].append({"lora_step": step, "draft": round(l_draft.item(), 4),  # type: ignore[union-attr]
                                "elapsed_s": round(time.time() - t0, 1)})
            log(f"lora step {step}: L_draft {l_draft.item():.4f}")
        if c.save_every and (step + 1) % c.save_every == 0:
            save_hf(model, tok_json, out, True, dict(info, stage="lora", lora_step=step + 1))
    info["total_time_s"] = round(time.time() - t0, 1)
    save_hf(model, tok_json, out, True, dict(info, stage="done"))
    log(f"done in {time.time() - t0:.0f}s: {out}")
    return out


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="/tmp/nld-tiny-hf", help="HF checkpoint directory to write")
    parser.add_argument("--tiny-test", action="store_true", help="a seconds-long run on a tiny config (tests)")
    parser.add_argument("--lora-only", metavar="HF_DIR", help="reuse this checkpoint's base weights, train the LoRA")
    parser.add_argument("--init-from", metavar="HF_DIR", help="start the base from this checkpoint's weights")
    parser.add_argument("--init-from-gguf", metavar="GGUF",
                        help="start the base from a GGUF this script made (dequantized), with its tokenizer")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override Config fields")
    args = parser.parse_args(argv)
    c = Config(**TINY_TEST) if args.tiny_test else Config()
    for item in args.set:
        key, value = item.split("=", 1)
        c = replace(c, **{key: type(getattr(c, key))(value)})
    train(c, Path(args.out), Path(args.lora_only) if args.lora_only else None,
          Path(args.init_from) if args.init_from else None,
          Path(args.init_from_gguf) if args.init_from_gguf else None)


if __name__ == "__main__":
    main()
