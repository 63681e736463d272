"""Tokenizer metadata for the GGUF: vocabulary, token types, merges, special ids, chat template.

Reads tokenizer.json (byte-level BPE, Mistral Tekken family), tokenizer_config.json,
generation_config.json and chat_template.jinja. The original tokenizer.json is
also kept verbatim (`tokenizer.huggingface.json`) so the runtime can tokenize
exactly as HF does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from .errors import ConvertError
from .hf_checkpoint import ModelConfig, Warn, read_json

# llama.cpp token types
TOKEN_NORMAL = 1
TOKEN_CONTROL = 3
TOKEN_USER_DEFINED = 4
TOKEN_UNUSED = 5

# Tekken reserves ids below this for control tokens (spec section 7).
FIRST_NON_CONTROL_ID = 1000


@dataclass
class TokenizerMeta:
    tokens: List[str]  # index = token id, len = vocab_size
    token_types: List[int]
    merges: List[str]  # "left right"
    bos_token_id: int
    eos_token_id: int
    add_bos_token: bool
    chat_template: Optional[str]
    huggingface_json: str


def _merge_string(merge: Any) -> str:
    if isinstance(merge, str):
        return merge
    if isinstance(merge, (list, tuple)) and len(merge) == 2:
        return f"{merge[0]} {merge[1]}"
    raise ConvertError(f"tokenizer.json: malformed merge entry {merge!r}")


def _vocabulary(tok_json: Dict[str, Any], vocab_size: int) -> tuple:
    """(tokens, token_types) ordered by id, holes filled with [PAD{i}]."""
    model = tok_json.get("model") or {}
    if model.get("type") != "BPE":
        raise ConvertError(f"tokenizer.json: unsupported tokenizer model {model.get('type')!r} (expected BPE)")
    by_id: Dict[int, str] = {}
    for text, token_id in (model.get("vocab") or {}).items():
        by_id[int(token_id)] = text
    special: Dict[int, bool] = {}
    for added in tok_json.get("added_tokens") or []:
        token_id = int(added["id"])
        by_id[token_id] = added["content"]
        special[token_id] = bool(added.get("special", False))

    too_big = [i for i in by_id if not 0 <= i < vocab_size]
    if too_big:
        raise ConvertError(f"tokenizer.json: token id {max(too_big)} is outside the model's vocab_size {vocab_size}")
    tokens, types = [], []
    for token_id in range(vocab_size):
        if token_id not in by_id:
            tokens.append(f"[PAD{token_id}]")
            types.append(TOKEN_CONTROL if token_id < FIRST_NON_CONTROL_ID else TOKEN_UNUSED)
            continue
        tokens.append(by_id[token_id])
        if token_id < FIRST_NON_CONTROL_ID or special.get(token_id, False):
            types.append(TOKEN_CONTROL)
        elif token_id in special:  # an added, non-special token: matched literally, like llama.cpp
            types.append(TOKEN_USER_DEFINED)
        else:
            types.append(TOKEN_NORMAL)
    return tokens, types


def _token_id(tokens: List[str], value: Any, what: str) -> Optional[int]:
    """An id from an id, a token string or an AddedToken-like dict."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    text = str(value.get("content")) if isinstance(value, dict) else str(value)
    try:
        return tokens.index(text)
    except ValueError:
        raise ConvertError(f"{what} {text!r} is not in the vocabulary") from None


def _chat_template(hf_dir: Path, tok_config: Dict[str, Any]) -> Optional[str]:
    path = hf_dir / "chat_template.jinja"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    template = tok_config.get("chat_template")
    if isinstance(template, list):  # [{"name": ..., "template": ...}]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default") or next(iter(named.values()), None)
    return template if isinstance(template, str) else None


def load_tokenizer_meta(hf_dir: Path, cfg: ModelConfig, warn: Warn) -> TokenizerMeta:
    tok_path = hf_dir / "tokenizer.json"
    if not tok_path.is_file():
        raise ConvertError(f"missing tokenizer.json: {tok_path} does not exist")
    hf_json = tok_path.read_text(encoding="utf-8")
    try:
        tok_json = json.loads(hf_json)
    except json.JSONDecodeError as exc:
        raise ConvertError(f"cannot parse {tok_path}: {exc}") from exc

    tokens, types = _vocabulary(tok_json, cfg.vocab_size)
    merges = [_merge_string(m) for m in tok_json["model"].get("merges") or []]

    def optional_json(name: str) -> Dict[str, Any]:
        return read_json(hf_dir / name) if (hf_dir / name).is_file() else {}

    tok_config = optional_json("tokenizer_config.json")
    gen_config = optional_json("generation_config.json")

    bos = cfg.bos_token_id
    if bos is None:
        bos = _token_id(tokens, gen_config.get("bos_token_id", tok_config.get("bos_token")), "bos_token")
    eos = cfg.eos_token_ids[0] if cfg.eos_token_ids else None
    if eos is None:
        gen_eos = gen_config.get("eos_token_id")
        eos = _token_id(tokens, gen_eos[0] if isinstance(gen_eos, list) else gen_eos, "eos_token")
    if eos is None:
        eos = _token_id(tokens, tok_config.get("eos_token"), "eos_token")
    if bos is None or eos is None:
        raise ConvertError("no bos/eos token id in config.json, generation_config.json or tokenizer_config.json")
    ids = [("bos_token_id", bos), ("eos_token_id", eos), ("mask_token_id", cfg.mask_token_id)]
    for what, token_id in ids + [("eos_token_id", e) for e in cfg.eos_token_ids]:
        if not 0 <= token_id < cfg.vocab_size:
            raise ConvertError(f"{what} {token_id} is outside the vocabulary (vocab_size {cfg.vocab_size})")

    chat_template = _chat_template(hf_dir, tok_config)
    if chat_template is None:
        warn("no chat template (chat_template.jinja or tokenizer_config.json): the GGUF will have none")
    return TokenizerMeta(
        tokens=tokens,
        token_types=types,
        merges=merges,
        bos_token_id=bos,
        eos_token_id=eos,
        add_bos_token=bool(tok_config.get("add_bos_token", False)),
        chat_template=chat_template,
        huggingface_json=hf_json,
    )
