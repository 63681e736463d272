"""Chat prompts from a model's `tokenizer.chat_template`, rendered in a
sandboxed jinja2 environment: a template inside a downloaded file must not be
able to run code (llama-cpp-python's CVE-2024-34359), so attribute access to
Python internals (`__class__`, `__subclasses__`, ...) and mutation of
objects are refused with ChatTemplateError.

The environment matches what transformers' `apply_chat_template` gives a
template (trim_blocks, lstrip_blocks, loop controls, `raise_exception`,
`tojson`, `strftime_now`, the special token strings), so the prompt is the
same text transformers renders.

A file with no template: `ChatTemplate.from_model` raises ChatTemplateError
unless a fallback is asked for; `chat_format="chatml"` selects the built-in
NLD format (ChatML with a think block, spec/nld-model.md section 7).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Dict, List, Mapping, Optional, Sequence

# The NLD chat format (spec/nld-model.md section 7) as a template; the test
# checkpoints and the embedded model ship it as chat_template.jinja.
CHATML_THINK_TEMPLATE = """\
{#- NLD chat format (spec/nld-model.md section 7): ChatML with a think block.
    enable_thinking (default false): the generation prompt opens a think block
    instead of closing an empty one. truncate_history_thinking (default true):
    earlier assistant turns keep only their answer, not their reasoning. -#}
{%- set enable_thinking = enable_thinking | default(false) -%}
{%- set truncate_history_thinking = truncate_history_thinking | default(true) -%}
{%- for message in messages -%}
{%- set content = message['content'] if message['content'] is string else '' -%}
{%- if message['role'] == 'assistant' -%}
{%- if '</think>' in content -%}
{%- set reasoning = content.split('</think>')[0].replace('<think>', '').strip() -%}
{%- set answer = content.split('</think>')[-1].lstrip() -%}
{%- else -%}
{%- set reasoning = '' -%}
{%- set answer = content -%}
{%- endif -%}
{%- if reasoning and not truncate_history_thinking -%}
{{- '<|im_start|>assistant\\n<think>\\n' + reasoning + '\\n</think>' + answer + '<|im_end|>\\n' -}}
{%- else -%}
{{- '<|im_start|>assistant\\n<think></think>' + answer + '<|im_end|>\\n' -}}
{%- endif -%}
{%- else -%}
{{- '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>\\n' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<|im_start|>assistant\\n' + ('<think>\\n' if enable_thinking else '<think></think>') -}}
{%- endif -%}
"""
CHAT_FORMATS = {"chatml": CHATML_THINK_TEMPLATE}
ROLES = ("system", "user", "assistant", "tool")


class ChatTemplateError(ValueError):
    """A chat template that is missing, malformed, or tried something unsafe."""


def _environment() -> Any:
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])

    def raise_exception(message: str) -> None:
        raise ChatTemplateError(f"the chat template refused the conversation: {message}")

    def tojson(value: Any, indent: Optional[int] = None, ensure_ascii: bool = False) -> str:
        return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii)

    def strftime_now(fmt: str) -> str:
        return datetime.now().strftime(fmt)

    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def check_messages(messages: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Messages as plain dicts, each with a known role and string content."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ValueError("messages must be a list of {'role': ..., 'content': ...} dicts")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise ValueError(f"messages[{i}] must be an object (a dict), got {type(m).__name__}")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise ValueError(f"messages[{i}].role must be one of {', '.join(ROLES)}, got {role!r}")
        if content is not None and not isinstance(content, str):
            raise ValueError(f"messages[{i}].content must be a string")
        out.append(dict(m))
    return out


class ChatTemplate:
    """A compiled chat template with the special-token strings it may use."""

    def __init__(self, source: str, bos_token: str = "", eos_token: str = "") -> None:
        from jinja2 import TemplateError

        self.source = source
        self._tokens = {"bos_token": bos_token, "eos_token": eos_token}
        try:
            self._template = _environment().from_string(source)
        except TemplateError as exc:
            raise ChatTemplateError(f"the chat template does not compile: {exc}") from None

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, chat_format: Optional[str] = None,
                   chat_template: Optional[str] = None) -> "ChatTemplate":
        """The template to use for `model`: an explicit `chat_template` string,
        else a named `chat_format`, else the file's `tokenizer.chat_template`."""
        info = model.info
        names = {"bos_token": _token_text(tokenizer, info.bos_token_id),
                 "eos_token": _token_text(tokenizer, info.eos_token_id)}
        if chat_template is not None:
            return cls(chat_template, **names)
        if chat_format is not None:
            if chat_format not in CHAT_FORMATS:
                raise ChatTemplateError(f"unknown chat_format {chat_format!r} (known: {', '.join(CHAT_FORMATS)})")
            return cls(CHAT_FORMATS[chat_format], **names)
        try:
            source = model.metadata_string("tokenizer.chat_template")
        except KeyError:
            raise ChatTemplateError(
                f"{model.model_path} has no tokenizer.chat_template; pass chat_format='chatml' for the "
                "built-in NLD chat format, or chat_template='...' with a template of your own") from None
        return cls(source, **names)

    def render(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True,
               enable_thinking: bool = False, **kwargs: Any) -> str:
        from jinja2 import TemplateError
        from jinja2.exceptions import SecurityError

        variables = dict(self._tokens, messages=check_messages(messages), add_generation_prompt=add_generation_prompt,
                         enable_thinking=enable_thinking, **kwargs)
        try:
            return self._template.render(**variables)
        except SecurityError as exc:
            raise ChatTemplateError(f"the chat template tried an unsafe operation and was stopped: {exc}") from None
        except ChatTemplateError:
            raise
        except TemplateError as exc:
            raise ChatTemplateError(f"the chat template failed: {exc}") from None
        except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
            raise ChatTemplateError(f"the chat template failed: {type(exc).__name__}: {exc}") from None


def _token_text(tokenizer: Any, token_id: int) -> str:
    if token_id is None or token_id < 0 or token_id >= tokenizer.n_vocab:
        return ""
    return tokenizer.decode([token_id], skip_special_tokens=False)
