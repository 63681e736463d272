"""Continuous batching: many generations, each on its own context of one
model, advanced together by the core's scheduler (docs/batching.md).

    sched = Scheduler(model, n_threads=2)
    a, b = model.new_context(), model.new_context()
    sched.attach(a)
    sched.attach(b)
    # generations on a and b, from any threads, now share their forwards

A context attached to a scheduler runs every generation through it: each
step of any of them runs one batched forward for all of them (every weight
read once for all their rows) and queues the other generations' steps for
them. Whichever thread needs a step and finds none queued runs the next
batched forward, so no thread of its own is needed. A generation's tokens
and counters are those it gives alone.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any, Deque, List, Sequence, Tuple

import numpy as np

from ._binding import NldError, check, ffi, lib

if TYPE_CHECKING:
    from .generation import GenerationStep, Generator
    from .model import Model


class Scheduler:
    """The core's batching scheduler over one model's weights.

    ``max_rows``: rows of one batched forward (llama.cpp's n_batch);
    ``max_prefill_rows``: rows of one prompt chunk (n_ubatch), so a long
    prompt is prefilled over several steps while the others decode.
    Thread-safe; :meth:`close` detaches every context (their generations
    then step alone)."""

    def __init__(self, model: "Model", *, n_threads: int = 0, max_rows: int = 512, max_prefill_rows: int = 512):
        for name, value in (("n_threads", n_threads), ("max_rows", max_rows), ("max_prefill_rows", max_prefill_rows)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an integer, got {value!r}")
        if max_rows < 1 or max_prefill_rows < 1:
            raise ValueError(f"max_rows and max_prefill_rows must be >= 1, got {max_rows} and {max_prefill_rows}")
        model._live()
        self._weights = model._weights  # the weights outlive the scheduler
        params = lib.nld_scheduler_default_params()
        params.n_threads = n_threads
        params.max_rows = max_rows
        params.max_prefill_rows = max_prefill_rows
        out = ffi.new("nld_scheduler **")
        check(lib.nld_scheduler_create(self._weights.handle, ffi.addressof(params), out))
        self._sched: Any = out[0]
        self._lock = threading.RLock()
        self._members: "weakref.WeakValueDictionary[int, Generator]" = weakref.WeakValueDictionary()
        self._contexts: "weakref.WeakSet[Model]" = weakref.WeakSet()
        self.max_rows, self.max_prefill_rows = max_rows, max_prefill_rows
        self._snapshot()

    # -- contexts ---------------------------------------------------------
    def attach(self, context: "Model") -> None:
        """Run every later generation of this context (a Model) through the
        scheduler. The context must share the scheduler's weights."""
        context._live()
        if context._weights is not self._weights:
            raise ValueError("the context does not use this scheduler's model (make it with model.new_context())")
        with self._lock:
            self._live()
            context._scheduler = self
            self._contexts.add(context)

    def detach(self, context: "Model") -> None:
        """Later generations of this context step alone again."""
        with self._lock:
            if getattr(context, "_scheduler", None) is self:
                context._scheduler = None
            self._contexts.discard(context)

    def _live(self) -> Any:
        if self._sched is None:
            raise ValueError("this Scheduler is closed")
        return self._sched

    # -- generators (called by Generator) ---------------------------------
    def _add(self, gen: "Generator") -> None:
        with self._lock:
            check(lib.nld_scheduler_add(self._live(), gen._gen))
            self._members[_key(gen._gen)] = gen
            self._snapshot()

    def _release(self, gen: "Generator", handle: Any) -> None:
        """Frees gen's core generator, which leaves the scheduler (under the
        lock: never during a batched forward)."""
        with self._lock:
            self._members.pop(_key(handle), None)
            ffi.release(handle)
            if self._sched is not None:
                self._snapshot()

    def _next_step(self, gen: "Generator") -> "GenerationStep | None":
        """gen's next step: queued by an earlier batched forward, or from
        the next one this thread runs; None when gen is no longer in the
        scheduler (closed meanwhile) and nothing is queued for it."""
        with self._lock:
            pending: Deque[Any] = gen._pending
            while not pending:
                if self._sched is None or _key(gen._gen) not in self._members:
                    return None
                self._step_locked()
            item = pending.popleft()
        if isinstance(item, BaseException):
            raise item
        return item

    def _step_locked(self) -> None:
        from .generation import step_from_c

        n = max(1, len(self._members))
        out = ffi.new("nld_scheduled_step[]", n)
        n_out = ffi.new("int32_t *")
        check(lib.nld_scheduler_step(self._sched, out, n, n_out))
        self._snapshot()
        for i in range(n_out[0]):
            entry = out[i]
            gen = self._members.get(_key(entry.generator))
            if gen is None:  # closed meanwhile: nothing to hand it
                continue
            if entry.status != lib.NLD_OK:
                item: Any = NldError(entry.status, ffi.string(entry.error).decode("utf-8", "replace"))
            else:
                item = step_from_c(entry.step)
            if isinstance(item, BaseException) or item.finish_reason is not None:  # it has left the scheduler
                self._members.pop(_key(entry.generator), None)
            gen._pending.append(item)

    # -- state ------------------------------------------------------------
    def stats(self) -> dict:
        """Counters of the batched forwards so far: steps, rows, prefill
        rows, sequences per forward and the most in one, sequences now,
        bytes of activations held (grown to the largest batch so far), as of
        the last step; never waits for a running one."""
        self._live()
        return dict(self._stats)

    def _snapshot(self) -> None:
        raw = ffi.new("nld_scheduler_stats *")
        check(lib.nld_scheduler_get_stats(self._sched, raw))
        s = raw[0]
        self._stats = {"n_steps": s.n_steps, "n_rows": s.n_rows, "n_prefill_rows": s.n_prefill_rows,
                       "n_sequence_forwards": s.n_sequence_forwards, "n_batched_forwards": s.n_batched_forwards,
                       "max_sequences": s.max_sequences, "n_sequences": s.n_sequences,
                       "scratch_bytes": s.scratch_bytes}

    def close(self) -> None:
        """Free the scheduler; generations still in it go on stepping
        alone, contexts are detached. Idempotent."""
        with self._lock:
            if self._sched is None:
                return
            for context in list(self._contexts):
                self.detach(context)
            for gen in list(self._members.values()):
                gen._sched = None
            self._members.clear()
            lib.nld_scheduler_free(self._sched)
            self._sched = None

    def __enter__(self) -> "Scheduler":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def forward_batch(parts: Sequence[Tuple["Model", Any, str, str]]) -> List[np.ndarray]:
    """One forward over the new tokens of several contexts of one model:
    ``parts`` is a list of ``(context, tokens, kind, logits)`` with the
    arguments of :meth:`Model.forward` (kind "causal" or "bidirectional",
    logits "all", "last" or "none"). Every weight is applied once to all
    rows; each context's cache and logits are those Model.forward gives it
    alone. Returns the logits arrays in order. Runs on the first context's
    threads; the contexts are held (as by Model.forward) for the call."""
    from .model import _ATTENTION, _LOGITS, _as_tokens

    if not parts:
        raise ValueError("forward_batch needs at least one part")
    contexts = [p[0] for p in parts]
    if len({id(c) for c in contexts}) != len(contexts):
        raise ValueError("forward_batch: a context appears twice")
    raw = ffi.new("nld_batch_part[]", len(parts))
    keep: List[Any] = []
    outs: List[np.ndarray] = []
    for i, (context, tokens, kind, logits) in enumerate(parts):
        if kind not in _ATTENTION:
            raise ValueError(f"part {i}: kind must be one of {sorted(_ATTENTION)}, got {kind!r}")
        if logits not in _LOGITS:
            raise ValueError(f"part {i}: logits must be one of {sorted(_LOGITS)}, got {logits!r}")
        toks = _as_tokens(tokens, f"part {i} tokens")
        rows = {"none": 0, "last": 1, "all": len(toks)}[logits]
        out = np.empty((rows, context.n_vocab), dtype=np.float32)
        keep += [toks, out]
        outs.append(out)
        raw[i].ctx = context._live()
        raw[i].tokens = ffi.from_buffer("int32_t[]", toks)
        raw[i].n_tokens = len(toks)
        raw[i].attention = _ATTENTION[kind]
        raw[i].logits = _LOGITS[logits]
        raw[i].logits_out = ffi.from_buffer("float[]", out) if out.size else ffi.NULL
        raw[i].logits_capacity = out.size
    held: List[Any] = []
    try:
        for context in sorted(contexts, key=id):  # one order: two batch calls never wait on each other
            context._busy.acquire("forward_batch")
            held.append(context)
        check(lib.nld_forward_batch(raw, len(parts)))
    finally:
        for context in held:
            context._busy.release()
    return outs


def _key(handle: Any) -> int:
    return int(ffi.cast("uintptr_t", handle))


__all__ = ["Scheduler", "forward_batch"]
