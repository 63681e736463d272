"""Slots and the wait queue.

A slot is one context (KV cache) over the one loaded model: `-np N` slots
share the weights. A request takes the idle slot whose cache shares the
longest prefix with its prompt (least recently used among equals), so a
multi-turn chat comes back to the cache that holds its history. Requests
that find no idle slot wait in a bounded FIFO queue; when it is full the
request is refused (503 with Retry-After) instead of piling up.

A job runs on a worker thread (the core releases the GIL while it
computes) and hands its chunks to the event loop through an asyncio queue;
`Running.cancel()` (a client that went away) ends it within one step, and
the slot is released when the thread is done with it.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import threading
import time
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Tuple

from .errors import ApiError

_END = object()


def common_prefix(a: List[int], b: List[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class Slot:
    """One context of the model and what the server knows of its cache."""

    def __init__(self, slot_id: int, model: Any) -> None:
        self.id = slot_id
        self.model = model
        self.cached: List[int] = []  # the tokens its KV cache holds, as far as the server knows
        self.busy = False
        self.last_used = 0.0
        self.n_requests = 0
        self.task: Optional[Dict[str, Any]] = None  # what it is doing now, for /slots

    def remember(self, prompt: List[int], generated: List[int]) -> None:
        """After a job: the cache holds its prompt and output, up to n_cached."""
        history = prompt + generated
        self.cached = history[:min(len(history), self.model.n_cached)]


class QueueFull(Exception):
    pass


class SlotPool:
    """Hands out idle slots, longest shared prefix first, in arrival order."""

    def __init__(self, slots: List[Slot], queue_size: int) -> None:
        self.slots = slots
        self.queue_size = queue_size
        self._waiters: Deque[Tuple[asyncio.Future, List[int]]] = collections.deque()

    @property
    def n_busy(self) -> int:
        return sum(s.busy for s in self.slots)

    @property
    def n_waiting(self) -> int:
        return sum(not f.done() for f, _ in self._waiters)

    def _best_idle(self, prompt: List[int]) -> Optional[Slot]:
        idle = [s for s in self.slots if not s.busy]
        if not idle:
            return None
        return max(idle, key=lambda s: (common_prefix(s.cached, prompt), -s.last_used))

    def _take(self, slot: Slot) -> Slot:
        slot.busy = True
        slot.last_used = time.monotonic()
        return slot

    async def acquire(self, prompt: List[int]) -> Slot:
        """An idle slot for this prompt, waiting in line if none is free;
        QueueFull if the line is full. Cancelling the wait leaves the line."""
        if not self._waiters:
            slot = self._best_idle(prompt)
            if slot is not None:
                return self._take(slot)
        if self.n_waiting >= self.queue_size:
            raise QueueFull()
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        entry = (fut, prompt)
        self._waiters.append(entry)
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # handed a slot as the wait was cancelled
                self.release(fut.result())
            raise
        finally:
            try:
                self._waiters.remove(entry)
            except ValueError:
                pass

    def release(self, slot: Slot) -> None:
        slot.busy = False
        slot.task = None
        while self._waiters:
            fut, prompt = self._waiters[0]
            if fut.done():
                self._waiters.popleft()
                continue
            best = self._best_idle(prompt)
            if best is None:
                break
            self._waiters.popleft()
            fut.set_result(self._take(best))


class Running:
    """A job on a worker thread: `next_item()` gives its chunks in order
    (raising what the job raised), `cancel()` stops it within one step.
    on_stats gets the job's statistics on the worker thread before the chunk
    that carries them is handed on (so a client that has its answer finds
    it counted); on_done runs on the event loop once the slot is free."""

    def __init__(self, loop: asyncio.AbstractEventLoop, executor: concurrent.futures.Executor, slot: Slot,
                 start: Callable[[Any], Iterator[Any]], on_done: Callable[["Running"], None], cache_n: int = 0,
                 on_stats: Callable[[Dict[str, Any]], None] = lambda stats: None) -> None:
        self.slot = slot
        self._on_stats = on_stats
        self.cache_n = cache_n  # prompt tokens the slot's cache already held
        self.final_stats: Optional[Dict[str, Any]] = None  # the job's statistics, once it has them
        self._loop = loop
        self._queue: asyncio.Queue = asyncio.Queue()
        self._cancelled = threading.Event()
        self._on_done = on_done
        loop.run_in_executor(executor, self._work, start)

    def _put(self, item: Any) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def _work(self, start: Callable[[Any], Iterator[Any]]) -> None:
        chunks: Any = None
        try:
            if not self._cancelled.is_set():
                chunks = start(self.slot.model)
                for chunk in chunks:
                    if isinstance(chunk, dict) and "usage" in chunk and "nld" in chunk:
                        self.final_stats = dict(chunk["nld"], usage=chunk["usage"])
                        self._on_stats(self.final_stats)
                    self._put(chunk)
                    if self._cancelled.is_set():
                        break
        except BaseException as exc:  # handed to the request, which answers with it
            self._put(exc)
        finally:
            if chunks is not None and hasattr(chunks, "close"):
                chunks.close()  # ends the core's generator now
            self._put(_END)
            self._loop.call_soon_threadsafe(self._on_done, self)

    def cancel(self) -> None:
        self._cancelled.set()
        self.slot.model.cancel()

    async def next_item(self) -> Any:
        """The next chunk; StopAsyncIteration at the end."""
        item = await self._queue.get()
        if item is _END:
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item


def queue_full_error(queue_size: int) -> ApiError:
    return ApiError(503, f"the server is busy: every slot is in use and {queue_size} requests are already waiting; "
                         "retry shortly", headers={"Retry-After": "1"})
