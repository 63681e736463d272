"""Request bodies to generation jobs: every field's type and range checked
before the core is called, each error a 400 whose message names the field.

Parameters this server does not implement are refused (400) when set to
anything but their neutral value; their neutral values are accepted, since
clients send them. JSON null counts as "not given" everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

from ..chat import check_messages
from ..generation import MODES
from .errors import ApiError, bad_request, context_exceeded

MAX_STOP_STRINGS = 16

# name -> the neutral values a client may send for a feature we do not have
UNSUPPORTED: Dict[str, Callable[[Any], bool]] = {
    "n": lambda v: v == 1,
    "best_of": lambda v: v == 1,
    "logprobs": lambda v: v is False or v == 0,
    "top_logprobs": lambda v: v == 0,
    "n_probs": lambda v: v == 0,
    "echo": lambda v: v is False,
    "suffix": lambda v: v == "",
    "tools": lambda v: v == [],
    "functions": lambda v: v == [],
    "tool_choice": lambda v: v in ("none", "auto"),
    "parallel_tool_calls": lambda v: isinstance(v, bool),
    "presence_penalty": lambda v: v == 0,
    "frequency_penalty": lambda v: v == 0,
    "repeat_penalty": lambda v: v == 1,
    "logit_bias": lambda v: v in ({}, []),
    "response_format": lambda v: isinstance(v, Mapping) and v.get("type") == "text",
    "min_p": lambda v: v == 0,
    "typical_p": lambda v: v == 1,
    "mirostat": lambda v: v == 0,
    "grammar": lambda v: v == "",
    "json_schema": lambda v: v == {},
    "dry_multiplier": lambda v: v == 0,
    "xtc_probability": lambda v: v == 0,
}


@dataclass
class Defaults:
    """Server-wide defaults for requests that give none (from the flags)."""

    mode: str = "ar"
    block_length: Optional[Union[int, str]] = None  # an integer, or "auto"
    threshold: Optional[float] = None


@dataclass
class Job:
    """A validated generation request."""

    route: str                      # "chat", "completion" (OpenAI) or "native" (/completion)
    prompt_ids: List[int]
    kwargs: Dict[str, Any]          # keywords of the Python API's completion calls
    stream: bool = False
    include_usage: bool = False
    think_end: Optional[int] = None  # chat with enable_thinking: the </think> id
    prompt_text: Optional[str] = None
    messages: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def mode(self) -> str:
        return str(self.kwargs["mode"])


def _given(body: Mapping[str, Any], key: str) -> bool:
    return body.get(key) is not None


def number(body: Mapping[str, Any], key: str, default: Any, *, integer: bool = False, lo: Optional[float] = None,
           hi: Optional[float] = None, lo_open: bool = False) -> Any:
    """A numeric field: JSON numbers only (not booleans or strings), in range."""
    if not _given(body, key):
        return default
    v = body[key]
    ok = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok:
        raise bad_request(f"{key} must be {'an integer' if integer else 'a number'}, got {v!r}")
    if v != v or v in (float("inf"), float("-inf")):
        raise bad_request(f"{key} must be a finite number, got {v!r}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise bad_request(f"{key} must be {'>' if lo_open else '>='} {lo:g}, got {v!r}")
    if hi is not None and v > hi:
        raise bad_request(f"{key} must be <= {hi:g}, got {v!r}")
    return int(v) if integer else float(v)


def boolean(body: Mapping[str, Any], key: str, default: bool) -> bool:
    if not _given(body, key):
        return default
    if not isinstance(body[key], bool):
        raise bad_request(f"{key} must be true or false, got {body[key]!r}")
    return bool(body[key])


def token_ids(value: Any, key: str, n_vocab: int) -> List[int]:
    if not isinstance(value, list) or not value:
        raise bad_request(f"{key} must be a non-empty list of token ids")
    for i, t in enumerate(value):
        if isinstance(t, bool) or not isinstance(t, int):
            raise bad_request(f"{key}[{i}] must be an integer token id, got {t!r}")
        if not 0 <= t < n_vocab:
            raise bad_request(f"{key}[{i}] = {t} is outside the vocabulary [0, {n_vocab})")
    return list(value)


def json_object(body: Any, what: str = "the request body") -> Dict[str, Any]:
    if not isinstance(body, dict):
        raise bad_request(f"{what} must be a JSON object, got {type(body).__name__}")
    return body


def refuse_unsupported(body: Mapping[str, Any]) -> None:
    for key, neutral in UNSUPPORTED.items():
        if _given(body, key) and not neutral(body[key]):
            raise bad_request(f"{key} is not supported by this server (got {body[key]!r}); "
                              "leave it out or send its default")


def _stop(body: Mapping[str, Any]) -> List[str]:
    if not _given(body, "stop"):
        return []
    stop = body["stop"]
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise bad_request("stop must be a non-empty string or a list of non-empty strings")
    if len(stops) > MAX_STOP_STRINGS:
        raise bad_request(f"stop holds {len(stops)} strings; at most {MAX_STOP_STRINGS} are allowed")
    return list(stops)


def _seed(body: Mapping[str, Any]) -> Optional[int]:
    seed = number(body, "seed", None, integer=True, lo=-1, hi=2**64 - 1)
    return None if seed is None or seed == -1 else seed


def _block_length(body: Mapping[str, Any], default: Any, mode: str) -> Any:
    """An integer >= 1, or "auto" (modes spec and auto: the draft length
    chosen per round)."""
    if not _given(body, "block_length") and default == "auto":  # the server's default, where it applies
        return "auto" if mode in ("spec", "auto") else None
    if body.get("block_length") == "auto":
        if mode not in ("spec", "auto"):
            raise bad_request(f'block_length "auto" applies to modes spec and auto, not {mode!r}')
        return "auto"
    return number(body, "block_length", default, integer=True, lo=1)


def sampling(body: Mapping[str, Any], defaults: Defaults, n_ctx: int, max_key: str = "max_tokens") -> Dict[str, Any]:
    """The Python API's keywords from the fields every generation route shares."""
    refuse_unsupported(body)
    mode = body.get("mode") if _given(body, "mode") else defaults.mode
    if mode not in MODES:
        raise bad_request(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if max_key == "n_predict":
        n = number(body, "n_predict", -1, integer=True, lo=-1)
        if n == 0:
            raise bad_request("n_predict must be -1 (until the context is full) or >= 1, got 0")
        max_tokens = n_ctx if n == -1 else n
    else:
        max_tokens = number(body, max_key, None, integer=True, lo=1)
        if max_tokens is None and max_key == "max_tokens":
            max_tokens = number(body, "max_completion_tokens", None, integer=True, lo=1)
        max_tokens = n_ctx if max_tokens is None else max_tokens
    return dict(
        mode=mode, max_tokens=min(max_tokens, n_ctx),
        temperature=number(body, "temperature", 0.8, lo=0, hi=100),
        top_k=number(body, "top_k", 40, integer=True, lo=0),
        top_p=number(body, "top_p", 0.95, lo=0, hi=1, lo_open=True),
        stop=_stop(body), seed=_seed(body),
        block_length=_block_length(body, defaults.block_length, mode),
        threshold=number(body, "threshold", defaults.threshold, lo=0, hi=1),
        use_lora=boolean(body, "use_lora", True),
        max_thinking_tokens=number(body, "max_thinking_tokens", None, integer=True, lo=0),
        ignore_eos=boolean(body, "ignore_eos", False),
        canvas=boolean(body, "canvas", False),
    )


def stream_flags(body: Mapping[str, Any]) -> tuple:
    stream = boolean(body, "stream", False)
    opts = body.get("stream_options")
    if opts is not None and not isinstance(opts, dict):
        raise bad_request("stream_options must be an object")
    include_usage = boolean(opts or {}, "include_usage", False)
    return stream, include_usage


def messages(body: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """OpenAI messages as {"role", "content": str} dicts: text parts joined,
    then the chat module's own checks (roles, content types)."""
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise bad_request("messages must be a non-empty list of {role, content} objects")
    joined = []
    for i, m in enumerate(msgs):
        if isinstance(m, dict) and isinstance(m.get("content"), list):
            parts = m["content"]
            for j, part in enumerate(parts):
                if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise bad_request(f"messages[{i}].content[{j}] must be a text part "
                                      "({\"type\": \"text\", \"text\": ...}); other content is not supported")
            m = dict(m, content="\n".join(p["text"] for p in parts))
        if isinstance(m, dict) and m.get("tool_calls"):
            raise bad_request(f"messages[{i}].tool_calls: tool calls are not supported by this server")
        joined.append(m)
    try:
        checked = check_messages(joined)
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    return [{"role": m["role"], "content": m.get("content") or ""} for m in checked]


def completion_prompt(value: Any, key: str, model: Any) -> tuple:
    """(token ids, text or None) of a completion prompt: text, token ids, or a
    list holding one text."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        value = value[0]
    if isinstance(value, str):
        if not value:
            raise bad_request(f"{key} is empty")
        return model.tokenize(value), value
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        raise bad_request(f"{key}: a list of several prompts is not supported; send one request per prompt")
    if value is None:
        raise bad_request(f"{key} is required")
    if not isinstance(value, list):
        raise bad_request(f"{key} must be a string or a list of token ids, got {type(value).__name__}")
    return token_ids(value, key, model.n_vocab), None


def check_fits(ids: List[int], n_ctx: int) -> None:
    if len(ids) >= n_ctx:
        raise context_exceeded(len(ids), n_ctx)


def chat_job(body: Any, model: Any, defaults: Defaults, n_ctx: int, template: Any) -> Job:
    body = json_object(body)
    msgs = messages(body)
    kwargs = sampling(body, defaults, n_ctx)
    stream, include_usage = stream_flags(body)
    tkw = body.get("chat_template_kwargs")
    if tkw is not None and not isinstance(tkw, dict):
        raise bad_request("chat_template_kwargs must be an object")
    thinking = boolean(body, "enable_thinking", boolean(tkw or {}, "enable_thinking", False))
    try:
        text = template.render(msgs, add_generation_prompt=True, enable_thinking=thinking)
    except ValueError as exc:  # ChatTemplateError included
        raise bad_request(f"messages: {exc}") from None
    ids = model.tokenize(text)
    check_fits(ids, n_ctx)
    think_end = model.tokenizer.token_id("</think>") if thinking else None
    return Job("chat", ids, kwargs, stream, include_usage, think_end, text, msgs)


def completion_job(body: Any, model: Any, defaults: Defaults, n_ctx: int, native: bool = False) -> Job:
    body = json_object(body)
    if native:
        for key in ("max_tokens", "max_completion_tokens"):  # /completion spells it n_predict
            if _given(body, key) and not _given(body, "n_predict"):
                body = dict(body, n_predict=body[key])
    ids, text = completion_prompt(body.get("prompt"), "prompt", model)
    kwargs = sampling(body, defaults, n_ctx, "n_predict" if native else "max_tokens")
    stream, include_usage = stream_flags(body)
    check_fits(ids, n_ctx)
    return Job("native" if native else "completion", ids, kwargs, stream, include_usage, None, text)


def require(body: Mapping[str, Any], key: str, kind: type, what: str) -> Any:
    v = body.get(key)
    if not isinstance(v, kind) or isinstance(v, bool) and kind is not bool:
        raise bad_request(f"{key} must be {what}")
    return v


__all__ = ["ApiError", "Defaults", "Job", "chat_job", "completion_job", "json_object", "boolean", "number",
           "token_ids", "messages", "require"]
