"""The tiny trained NLD model that ships in the package (issue 4; how it was
made: train/README.md), and its held-out evaluation set.

`default_model_path()` is the Q8_0 GGUF that commands run when no model is
given; its drafter adapter `nld-tiny-q8_0.lora.gguf` lies beside it, where
`Model` finds it. `held_out()` is the evaluation set: conversations (one
turn, or three) whose answers are checkable exactly, never trained on
(train/corpus_v2.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

_HERE = Path(__file__).resolve().parent
DEFAULT_MODEL_NAME = "nld-tiny-q8_0.gguf"


def default_model_path() -> Path:
    """The shipped GGUF (Q8_0, with the drafter LoRA beside it)."""
    return _HERE / DEFAULT_MODEL_NAME


def default_lora_path() -> Path:
    return _HERE / DEFAULT_MODEL_NAME.replace(".gguf", ".lora.gguf")


def held_out() -> List[Dict[str, Any]]:
    """The held-out set, in a fixed order: [{"task", "system" (None or a
    system prompt), "turns": [{"user", "answer"}, ...]}]; task "chat" items
    have three turns, the others one."""
    return json.loads((_HERE / "held_out.json").read_text(encoding="utf-8"))


def render_prompt(user: str, history: Sequence[Tuple[str, str]] = (), system: Optional[str] = None) -> str:
    """The chat prompt the model was trained on (what its chat template
    renders, thinking off): an optional system turn, earlier (user, answer)
    turns, then the user turn; tokenize it without adding BOS."""
    text = f"<|im_start|>system\n{system}<|im_end|>\n" if system else ""
    for past_user, answer in history:
        text += (f"<|im_start|>user\n{past_user}<|im_end|>\n"
                 f"<|im_start|>assistant\n<think></think>{answer}<|im_end|>\n")
    return text + f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n<think></think>"


__all__ = ["default_model_path", "default_lora_path", "held_out", "render_prompt", "DEFAULT_MODEL_NAME"]
