"""Text completion and chat on a Model, in the shape llama-cpp-python users
know: `create_completion` / `create_chat_completion` (also `model(prompt)`
and `model.chat(messages)`) return OpenAI-shaped dicts, or iterators of
chunks with `stream=True`, extended under the key "nld" with the runtime's
statistics (forward passes, tokens per forward, accepted lengths, timings).

Stop strings are matched on the decoded text, across token boundaries: a
streamed chunk never shows text that later turns out to start a stop
string. The generation itself runs in the C++ core (the GIL is released
while it computes); `Model.cancel()` from another thread ends the running
generation within one step, with finish_reason "cancelled".

A chat turn reuses the KV cache of the previous one: the core keeps the
longest cached prefix that the new prompt shares (docs/generation.md).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union

from .chat import ChatTemplate
from .tokenizer import Tokenizer

# core finish reasons -> OpenAI's ("context": the cache is full, reported as a length stop)
FINISH_REASONS = {"stop": "stop", "length": "length", "context": "length", "cancelled": "cancelled"}
Stop = Union[str, Sequence[str], None]


def _stop_list(stop: Stop) -> List[str]:
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else list(stop)
    for s in stops:
        if not isinstance(s, str) or not s:
            raise ValueError(f"stop must be a non-empty string or a list of them, got {s!r}")
    return stops


class _StopScanner:
    """Holds back the text that could still be the start of a stop string."""

    def __init__(self, stops: List[str]) -> None:
        self.stops = stops
        self.pending = ""
        self.hit = False
        self.word: Optional[str] = None

    def feed(self, text: str) -> str:
        """Add decoded text; return what is safe to show now."""
        self.pending += text
        if not self.stops:
            out, self.pending = self.pending, ""
            return out
        found = [(i, s) for s in self.stops for i in [self.pending.find(s)] if i >= 0]
        if found:
            cut, self.word = min(found)
            out, self.pending, self.hit = self.pending[:cut], "", True
            return out
        hold = 0
        for s in self.stops:  # the longest tail of pending that begins some stop string
            for k in range(min(len(s) - 1, len(self.pending)), hold, -1):
                if self.pending.endswith(s[:k]):
                    hold = k
                    break
        out = self.pending[:len(self.pending) - hold]
        self.pending = self.pending[len(self.pending) - hold:]
        return out

    def finish(self) -> str:
        out, self.pending = self.pending, ""
        return out


class CompletionMixin:
    """The text-level API of Model (model.py provides tokens-level generation)."""

    _tokenizer_obj: Optional[Tokenizer] = None
    _template_obj: Optional[ChatTemplate] = None
    _active: Any = None
    default_seed: Optional[int] = None

    # -- text <-> tokens ---------------------------------------------------
    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer_obj is None:
            self._tokenizer_obj = Tokenizer.from_model(self)
        return self._tokenizer_obj

    def tokenize(self, text: Union[str, bytes], add_special_tokens: bool = False) -> List[int]:
        """Token ids of text; control-token strings in it become their ids."""
        self._live()  # type: ignore[attr-defined]  # raises once the Model is closed
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens)

    def detokenize(self, tokens: Sequence[int], skip_special_tokens: bool = True) -> str:
        self._live()  # type: ignore[attr-defined]
        return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

    def chat_template(self, chat_format: Optional[str] = None, chat_template: Optional[str] = None) -> ChatTemplate:
        if chat_format is None and chat_template is None:
            if self._template_obj is None:
                self._template_obj = ChatTemplate.from_model(self, self.tokenizer)
            return self._template_obj
        return ChatTemplate.from_model(self, self.tokenizer, chat_format, chat_template)

    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True,
                            enable_thinking: bool = False, chat_format: Optional[str] = None,
                            chat_template: Optional[str] = None) -> str:
        return self.chat_template(chat_format, chat_template).render(
            messages, add_generation_prompt=add_generation_prompt, enable_thinking=enable_thinking)

    def cancel(self) -> None:
        """End the running generation (callable from any thread)."""
        ref = self._active
        active = ref() if ref is not None else None
        if active is not None:
            active.cancel()

    # -- completion ----------------------------------------------------------
    def create_completion(self, prompt: Union[str, Sequence[int]], *, stream: bool = False, **kwargs: Any) -> Any:
        """Complete `prompt` (text, or token ids). Keywords: mode ("ar",
        "diffusion", "spec", "spec-quadratic", "auto"), max_tokens (default 128),
        block_length, threshold, temperature (default 0.8; 0 is greedy),
        top_k (40), top_p (0.95), stop (strings), seed, use_lora,
        max_thinking_tokens, ignore_eos, canvas (with stream=True, block modes
        also stream each step's block as a chunk with empty text and
        nld.canvas, see canvas_view). Returns a "text_completion" dict, or
        an iterator of them with stream=True."""
        ids = self.tokenize(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        chunks = self._run(ids, kwargs, think_end=None)
        ident, created, name = f"cmpl-{uuid.uuid4().hex}", int(time.time()), self.model_path

        def shaped(text: str, finish: Optional[str], stats: Optional[Dict[str, Any]],
                   canvas: Optional[Dict[str, Any]]) -> Dict[str, Any]:
            out = {"id": ident, "object": "text_completion", "created": created, "model": name,
                   "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}]}
            if stats is not None:
                out["usage"], out["nld"] = stats.pop("usage"), stats
            elif canvas is not None:
                out["nld"] = {"canvas": canvas}
            return out

        if stream:
            return (shaped(text, finish, stats, canvas) for text, _, finish, stats, canvas in chunks)
        text, finish, stats = "", None, None
        for piece, _, finish, stats, _ in chunks:
            text += piece
        return shaped(text, finish, stats, None)

    __call__ = create_completion

    def create_chat_completion(self, messages: Sequence[Mapping[str, Any]], *, stream: bool = False,
                               enable_thinking: bool = False, chat_format: Optional[str] = None,
                               chat_template: Optional[str] = None, **kwargs: Any) -> Any:
        """Answer a conversation (a list of {"role", "content"} dicts) with
        the model's chat template (or `chat_format`/`chat_template`); the
        keywords of create_completion. With enable_thinking, the text before
        `</think>` comes back as "reasoning_content"."""
        text = self.apply_chat_template(messages, True, enable_thinking, chat_format, chat_template)
        think_end = self.tokenizer.token_id("</think>") if enable_thinking else None
        return self._chat_completion(self.tokenize(text), think_end, stream, kwargs)

    chat = create_chat_completion

    def _chat_completion(self, ids: List[int], think_end: Optional[int], stream: bool, kwargs: Dict[str, Any]) -> Any:
        """The answer to a rendered, tokenized conversation (think_end: the
        </think> id when thinking is on)."""
        chunks = self._run(ids, kwargs, think_end=think_end)
        ident, created, name = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), self.model_path

        if stream:
            def gen() -> Iterator[Dict[str, Any]]:
                yield {"id": ident, "object": "chat.completion.chunk", "created": created, "model": name,
                       "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}
                for piece, reasoning, finish, stats, canvas in chunks:
                    delta = {}
                    if piece:
                        delta["reasoning_content" if reasoning else "content"] = piece
                    if not delta and finish is None and canvas is None:
                        continue
                    out = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": name,
                           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
                    if stats is not None:
                        out["usage"], out["nld"] = stats.pop("usage"), stats
                    elif canvas is not None:
                        out["nld"] = {"canvas": canvas}
                    yield out
            return gen()
        content, reasoning_text, finish, stats = "", "", None, None
        for piece, reasoning, finish, stats, _ in chunks:
            if reasoning:
                reasoning_text += piece
            else:
                content += piece
        message: Dict[str, Any] = {"role": "assistant", "content": content}
        if think_end is not None:
            message["reasoning_content"] = reasoning_text
        assert stats is not None
        return {"id": ident, "object": "chat.completion", "created": created, "model": name,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": stats.pop("usage"), "nld": stats}

    # -- the shared loop ---------------------------------------------------------
    def _run(self, ids: List[int], kwargs: Dict[str, Any], think_end: Optional[int]) -> Iterator[tuple]:
        """Validates now, generates lazily: yields (text, is_reasoning,
        finish_reason or None, stats or None, canvas or None) pieces; the
        last has finish_reason and stats, canvas pieces have no text."""
        kw = dict(kwargs)
        stops = _stop_list(kw.pop("stop", None))
        seed = kw.pop("seed", None)
        if seed is None:
            seed = self.default_seed if self.default_seed is not None else int.from_bytes(uuid.uuid4().bytes[:8], "little")
        params = dict(mode=kw.pop("mode", "ar"), max_tokens=kw.pop("max_tokens", 128),
                      temperature=kw.pop("temperature", 0.8), top_k=kw.pop("top_k", 40), top_p=kw.pop("top_p", 0.95),
                      block_length=kw.pop("block_length", None), threshold=kw.pop("threshold", None), seed=seed,
                      use_lora=kw.pop("use_lora", True), max_thinking_tokens=kw.pop("max_thinking_tokens", None),
                      ignore_eos=kw.pop("ignore_eos", False))
        canvas = bool(kw.pop("canvas", False))
        if kw:
            raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(kw))}")
        if params["max_thinking_tokens"] is not None:
            params["think_end_token"] = self.tokenizer.token_id("</think>")
        if not ids:
            raise ValueError("the prompt is empty")
        generator = self.generate_steps(ids, **params)  # type: ignore[attr-defined]
        return self._pieces(generator, ids, stops, think_end, params, canvas)

    def infill_text(self, prefix: str, text: str, *, gap: str = "[___]", gap_tokens: int = 4,
                    **kwargs: Any) -> Dict[str, Any]:
        """Fill every `gap` placeholder of `text`, each with gap_tokens
        tokens, by diffusion (Model.infill; keywords block_length, threshold,
        temperature, seed). `text` follows `prefix` (for a chat model, the
        rendered prompt up to the assistant's turn). A gap is guided by the
        text after it when both lie in one block of the canvas
        (docs/generation.md "Infill"). Returns {"text": the filled text,
        "fills": each gap's text, "tokens", "n_forwards", "tokens_per_forward"
        (filled tokens per forward)}."""
        canvas, spans = self.infill_canvas(text, gap=gap, gap_tokens=gap_tokens)
        res = self.infill(self.tokenize(prefix), canvas, **kwargs)  # type: ignore[attr-defined]
        n_filled = gap_tokens * len(spans)
        return {"text": self.detokenize(res.tokens), "fills": [self.detokenize(res.tokens[a:b]) for a, b in spans],
                "tokens": res.tokens, "n_forwards": res.n_forwards,
                "tokens_per_forward": n_filled / res.n_forwards if res.n_forwards else float(n_filled)}

    def infill_canvas(self, text: str, *, gap: str = "[___]", gap_tokens: int = 4) -> tuple:
        """(canvas, spans) for Model.infill: the pieces of `text` between
        `gap` placeholders tokenized, each placeholder gap_tokens masks
        (None) that take the spaces before it; spans are the gaps' [start,
        end) canvas indices."""
        if not isinstance(gap_tokens, int) or gap_tokens < 1:
            raise ValueError(f"gap_tokens must be an integer >= 1, got {gap_tokens!r}")
        pieces = text.split(gap)
        if len(pieces) < 2:
            raise ValueError(f"text holds no gap placeholder {gap!r}")
        canvas: List[Optional[int]] = []
        spans: List[tuple] = []
        for i, piece in enumerate(pieces):
            if i + 1 < len(pieces):  # the space before a gap goes to the gap (BPE words carry their space)
                piece = piece.rstrip(" ")
            canvas.extend(self.tokenize(piece) if piece else [])
            if i + 1 < len(pieces):
                spans.append((len(canvas), len(canvas) + gap_tokens))
                canvas.extend([None] * gap_tokens)
        return canvas, spans

    def canvas_view(self, canvas: Sequence[int], step: int) -> Dict[str, Any]:
        """A block canvas for a user interface: its token ids and the text of
        each position, None where the position is still masked."""
        mask = self.info.mask_token_id  # type: ignore[attr-defined]
        tok = self.tokenizer
        return {"step": step, "tokens": list(canvas), "pieces": [None if t == mask else tok.decode([t]) for t in canvas]}

    def _pieces(self, generator: Any, ids: List[int], stops: List[str], think_end: Optional[int],
                params: Dict[str, Any], canvas: bool) -> Iterator[tuple]:
        decoder = self.tokenizer.stream(skip_special_tokens=True)
        scanner = _StopScanner(stops)
        reasoning = think_end is not None
        tokens: List[int] = []
        accepted: List[int] = []
        draft_lengths: List[int] = []
        n_ar_steps = 0
        t0 = time.perf_counter()
        first: Optional[float] = None
        finish, n_forwards, n_steps, stop_type = "length", 0, 0, "limit"
        try:
            for step in generator:
                n_forwards = step.n_forwards
                n_steps += 1
                n_ar_steps = step.n_ar_steps
                if step.accepted is not None:
                    accepted.append(step.accepted)
                    draft_lengths.append(step.block_length or 0)
                if canvas and step.canvas is not None and step.finish_reason is None:
                    yield "", reasoning, None, None, self.canvas_view(step.canvas, n_steps)
                for t in step.tokens:
                    tokens.append(t)
                    if first is None:
                        first = time.perf_counter() - t0
                    if reasoning and t == think_end:  # reasoning ends: flush it, switch to the answer
                        text = scanner.feed(decoder.flush()) + scanner.finish()
                        if text:
                            yield text, True, None, None, None
                        reasoning = False
                        continue
                    text = scanner.feed(decoder.push(t))
                    if text:
                        yield text, reasoning, None, None, None
                    if scanner.hit:
                        break
                if scanner.hit:
                    generator.cancel()
                    finish, stop_type = "stop", "word"
                    break
                if step.finish_reason is not None:
                    finish = FINISH_REASONS[step.finish_reason]
                    stop_type = {"stop": "eos", "cancelled": "cancelled"}.get(step.finish_reason, "limit")
        finally:
            generator.close()
        tail = "" if scanner.hit else scanner.feed(decoder.flush()) + scanner.finish()
        wall = time.perf_counter() - t0
        stats = {"usage": {"prompt_tokens": len(ids), "completion_tokens": len(tokens),
                           "total_tokens": len(ids) + len(tokens)},
                 "mode": params["mode"], "forwards": n_forwards,
                 "tokens_per_forward": len(tokens) / n_forwards if n_forwards else 0.0,
                 "accepted_lengths": accepted, "time_to_first_token_s": first, "total_s": wall,
                 "tokens_per_s": len(tokens) / wall if wall > 0 else 0.0, "seed": params["seed"],
                 "stop_type": stop_type, "stopping_word": scanner.word,
                 "draft_lengths": draft_lengths, "rounds": {"ar": n_ar_steps, "spec": len(accepted)},
                 "draft_tokens": sum(k - 1 for k in draft_lengths), "tokens": tokens}
        yield tail, reasoning, finish, stats, None
