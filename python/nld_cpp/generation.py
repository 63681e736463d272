"""Generation as an iterator of steps and as a one-shot call (the rules of
every mode are in docs/generation.md; the algorithms run in the C++ core)."""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Deque, Sequence

import numpy as np

from ._binding import check, ffi, lib

if TYPE_CHECKING:
    from .scheduler import Scheduler

MODES = {"ar": lib.NLD_MODE_AR, "diffusion": lib.NLD_MODE_DIFFUSION, "spec": lib.NLD_MODE_SPEC,
         "spec-quadratic": lib.NLD_MODE_SPEC_QUADRATIC, "auto": lib.NLD_MODE_AUTO}
# Modes and block lengths whose draft length comes from the cost model (docs/generation.md "Auto").
ADAPTIVE = "auto"
FINISH = {lib.NLD_FINISH_NONE: None, lib.NLD_FINISH_STOP: "stop", lib.NLD_FINISH_LENGTH: "length",
          lib.NLD_FINISH_CONTEXT: "context", lib.NLD_FINISH_CANCELLED: "cancelled"}


@dataclass(frozen=True)
class GenerationStep:
    """What one step did: the tokens it emitted, the block canvas (block
    modes; the mask id marks undecided positions), and the running counters."""

    tokens: list[int]
    canvas: list[int] | None
    finish_reason: str | None
    n_generated: int
    n_forwards: int
    n_rounds: int
    accepted: int | None  # drafts accepted in this step's speculation round
    block_length: int | None = None  # draft length of this step's round (None: no round)
    n_ar_steps: int = 0  # auto: steps so far that were AR steps


@dataclass
class GenerationResult:
    """A finished generation with the runtime's statistics."""

    tokens: list[int]
    finish_reason: str
    n_forwards: int
    accepted_lengths: list[int] = field(default_factory=list)
    wall_time: float = 0.0
    draft_lengths: list[int] = field(default_factory=list)  # per round, beside accepted_lengths
    n_ar_steps: int = 0  # auto: steps that were AR steps (the prefill's token not counted)

    @property
    def tokens_per_forward(self) -> float:
        return len(self.tokens) / self.n_forwards if self.n_forwards else 0.0

    @property
    def rounds(self) -> dict[str, int]:
        """What ran: AR steps (auto) and speculation rounds."""
        return {"ar": self.n_ar_steps, "spec": len(self.accepted_lengths)}

    @property
    def acceptance(self) -> dict[int, list[int]]:
        """Per draft length k, how many rounds accepted 0 .. k-1 drafts."""
        return acceptance_histogram(self.draft_lengths, self.accepted_lengths)


def acceptance_histogram(draft_lengths: Sequence[int], accepted: Sequence[int]) -> dict[int, list[int]]:
    """{k: counts} where counts[m] is the number of rounds of draft length k
    that accepted m drafts."""
    out: dict[int, list[int]] = {}
    for k, m in zip(draft_lengths, accepted):
        counts = out.setdefault(int(k), [0] * max(int(k), 1))
        counts[min(int(m), len(counts) - 1)] += 1
    return dict(sorted(out.items()))


def parse_block_length(text: str) -> int | str:
    """A block length from the command line: a positive integer or "auto"
    (the draft length chosen per round: modes spec and auto)."""
    if text.strip().lower() == ADAPTIVE:
        return ADAPTIVE
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f'block length must be a positive integer or "auto", got {text!r}') from None
    if value < 1:
        raise ValueError(f"block length must be >= 1, got {value}")
    return value


def generation_params(*, mode: str, max_tokens: int, block_length: int | str | None, threshold: float | None,
                      temperature: float, top_k: int, top_p: float, seed: int, stop_tokens: Sequence[int],
                      max_thinking_tokens: int | None, think_end_token: int | None, use_lora: bool, ignore_eos: bool) -> tuple[Any, Any]:
    """The C params struct (and the stop-token buffer it points into).
    Types and ranges that Python can check are checked here; the core checks
    the rest against the model and names the bad field."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
    if not isinstance(max_tokens, (int, np.integer)) or max_tokens < 1:
        raise ValueError(f"max_tokens must be an integer >= 1, got {max_tokens!r}")
    adaptive = block_length == ADAPTIVE
    if adaptive and mode not in ("spec", "auto"):
        raise ValueError(f'block_length="auto" applies to modes spec and auto, not {mode!r}')
    if adaptive:
        block_length = None  # drafts up to the model's block length
    elif block_length is not None and (isinstance(block_length, bool) or not isinstance(block_length, (int, np.integer))
                                       or block_length < 1):
        raise ValueError(f'block_length must be a positive integer or "auto", got {block_length!r}')
    if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    if not float(temperature) >= 0.0:
        raise ValueError(f"temperature must be >= 0, got {temperature!r}")
    if not 0.0 < float(top_p) <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    if int(top_k) < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k!r}")
    stops = np.asarray(list(stop_tokens), dtype=np.int64)
    if stops.size and (stops.min() < 0 or stops.max() >= 2**31):
        raise ValueError("stop_tokens must be non-negative token ids")
    stop_buf = np.ascontiguousarray(stops, dtype=np.int32)
    p = lib.nld_generate_default_params()
    p.mode = MODES[mode]
    p.max_new_tokens = int(max_tokens)
    p.block_length = int(block_length or 0)
    p.threshold = -1.0 if threshold is None else float(threshold)
    p.temperature = float(temperature)
    p.top_k = int(top_k)
    p.top_p = float(top_p)
    p.seed = int(seed) & (2**64 - 1)
    p.stop_tokens = ffi.from_buffer("int32_t[]", stop_buf) if stop_buf.size else ffi.NULL
    p.n_stop_tokens = int(stop_buf.size)
    p.max_thinking_tokens = -1 if max_thinking_tokens is None else int(max_thinking_tokens)
    p.think_end_token = -1 if think_end_token is None else int(think_end_token)
    p.use_lora = 1 if use_lora else 0
    p.ignore_eos = 1 if ignore_eos else 0
    p.adaptive_block = 1 if adaptive and mode == "spec" else 0
    return p, stop_buf


def step_from_c(s: Any) -> GenerationStep:
    """A GenerationStep copied out of an nld_step."""
    return GenerationStep(
        tokens=ffi.unpack(s.tokens, s.n_tokens) if s.n_tokens else [],
        canvas=ffi.unpack(s.canvas, s.n_canvas) if s.n_canvas else None,
        finish_reason=FINISH[s.finish_reason], n_generated=s.n_generated, n_forwards=s.n_forwards,
        n_rounds=s.n_rounds, accepted=None if s.last_accepted < 0 else s.last_accepted,
        block_length=s.last_block_length if s.last_accepted >= 0 else None, n_ar_steps=s.n_ar_steps)


class Generator:
    """One running generation; iterate it for steps. cancel() may be called
    from another thread; the generation then ends within one step.
    ``on_close`` runs once when the generation ends, is closed or is
    collected (the Model releases its context there). With a ``scheduler``
    its steps come from the scheduler's batched forwards."""

    def __init__(self, ctx: Any, prompt: np.ndarray, params: Any, keep_alive: Any,
                 on_close: Callable[[], None] = lambda: None, scheduler: "Scheduler | None" = None):
        self._keep_alive = keep_alive  # the params' stop buffer and the owning Model
        self._on_close: Callable[[], None] | None = on_close
        self._gen = None
        self._sched: "Scheduler | None" = None
        self._pending: Deque[Any] = collections.deque()  # steps a batched forward made for it
        self._done = False
        out = ffi.new("nld_generator **")
        try:
            check(lib.nld_generator_create(ctx, ffi.from_buffer("int32_t[]", prompt), len(prompt),
                                           ffi.addressof(params), out))
            self._gen = ffi.gc(out[0], lib.nld_generator_free)
            if scheduler is not None:
                scheduler._add(self)
                self._sched = scheduler
        except BaseException:
            self.close()
            raise
        self._step = ffi.new("nld_step *")

    def cancel(self) -> None:
        gen = self._gen
        if gen is not None:
            lib.nld_generator_cancel(gen)

    def close(self) -> None:
        if self._gen is not None:
            gen, self._gen = self._gen, None
            sched, self._sched = self._sched, None
            if sched is not None:
                sched._release(self, gen)
            else:
                ffi.release(gen)
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # at interpreter exit the binding may already be gone
            pass

    def __iter__(self) -> "Generator":
        return self

    def __next__(self) -> GenerationStep:
        if self._done or self._gen is None:
            raise StopIteration
        try:
            step = None
            sched = self._sched
            if sched is not None:
                step = sched._next_step(self)
            elif self._pending:  # made before the scheduler was closed
                step = self._pending.popleft()
                if isinstance(step, BaseException):
                    raise step
            if step is None:
                check(lib.nld_generator_step(self._gen, self._step))
                step = step_from_c(self._step[0])
        except BaseException:
            self.close()
            raise
        if step.finish_reason is not None:
            self._done = True
            self.close()
        return step


def run_to_end(generator: Generator) -> GenerationResult:
    t0 = time.perf_counter()
    tokens: list[int] = []
    accepted: list[int] = []
    draft_lengths: list[int] = []
    last: GenerationStep | None = None
    for last in generator:
        tokens.extend(last.tokens)
        if last.accepted is not None:
            accepted.append(last.accepted)
            draft_lengths.append(last.block_length or 0)
    assert last is not None and last.finish_reason is not None
    return GenerationResult(tokens=tokens, finish_reason=last.finish_reason, n_forwards=last.n_forwards,
                            accepted_lengths=accepted, wall_time=time.perf_counter() - t0,
                            draft_lengths=draft_lengths, n_ar_steps=last.n_ar_steps)
