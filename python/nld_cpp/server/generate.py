"""The generation routes: a validated job takes a slot (waiting in line if
it must), runs the Python API's completion call on a worker thread, and its
chunks are shaped for the route: OpenAI objects (plus llama-server's
`timings` and our `nld` statistics), or llama-server's /completion objects.
Streams are server-sent events; OpenAI streams end with `data: [DONE]`,
/completion streams do not. A client that goes away, while it waits or
while it streams, cancels its job within one step.
"""

from __future__ import annotations

import asyncio
import json
from functools import partial
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, Iterator, Optional

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from .errors import ApiError, from_exception
from .infill import infill_response, infill_result
from .params import Job
from .slots import QueueFull, Running, Slot, common_prefix, queue_full_error

# Keys of the Python API's statistics that stay out of HTTP responses (the
# token ids go to /completion's "tokens"; the stop details to its stop_type).
_PRIVATE_STATS = ("tokens", "stop_type", "stopping_word", "draft_tokens")


class ClientGone(Exception):
    """The client closed the connection."""


async def _disconnected(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def until_disconnect(receive: Receive, awaitable: Awaitable[Any]) -> Any:
    """The awaitable's result, or ClientGone (the awaitable cancelled) if the
    client disconnects first."""
    task = asyncio.ensure_future(awaitable)
    watcher = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):
        pass
    raise ClientGone()


class EventStream:
    """A text/event-stream response that calls `on_disconnect` and stops
    when the client goes away (whatever the ASGI server's version does)."""

    def __init__(self, events: AsyncIterator[bytes], on_disconnect: Callable[[], None]) -> None:
        self.events = events
        self.on_disconnect = on_disconnect

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream; charset=utf-8"),
                                (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]})
        try:
            await until_disconnect(receive, self._pump(send))
        except (ClientGone, OSError):
            self.on_disconnect()

    async def _pump(self, send: Send) -> None:
        async for event in self.events:
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n\n"


def public_stats(stats: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in stats.items() if k not in _PRIVATE_STATS}


def timings(stats: Dict[str, Any], prompt_n: int, cache_n: int) -> Dict[str, Any]:
    """llama-server's `timings`; the prompt time is the time to the first token."""
    n = stats["usage"]["completion_tokens"]
    prompt_s = stats.get("time_to_first_token_s") or 0.0
    predicted_s = max(stats["total_s"] - prompt_s, 1e-9)
    out = {"cache_n": cache_n, "prompt_n": prompt_n, "prompt_ms": prompt_s * 1e3,
           "prompt_per_token_ms": prompt_s * 1e3 / prompt_n if prompt_n else 0.0,
           "prompt_per_second": prompt_n / prompt_s if prompt_s else 0.0,
           "predicted_n": n, "predicted_ms": predicted_s * 1e3,
           "predicted_per_token_ms": predicted_s * 1e3 / n if n else 0.0,
           "predicted_per_second": n / predicted_s}
    if str(stats["mode"]).startswith("spec") or stats["mode"] == "auto":
        out["draft_n"] = stats["draft_tokens"]
        out["draft_n_accepted"] = sum(stats["accepted_lengths"])
    return out


class Served:
    """One job on its slot: shapes the Python API's chunks for its route."""

    def __init__(self, state: Any, job: Job, slot: Slot, cache_n: int) -> None:
        self.state, self.job, self.slot, self.cache_n = state, job, slot, cache_n

    def timings(self, stats: Dict[str, Any]) -> Dict[str, Any]:
        return timings(stats, len(self.job.prompt_ids) - self.cache_n, self.cache_n)

    def openai(self, chunk: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
        """An OpenAI object or chunk: our model id, timings beside the stats;
        with include_usage the usage moves to a last chunk of its own."""
        chunk = dict(chunk, model=self.state.alias)
        if "usage" not in chunk:
            yield chunk
            return
        stats = dict(chunk["nld"], usage=chunk["usage"])
        chunk["nld"], chunk["timings"] = public_stats(chunk["nld"]), self.timings(stats)
        if not self.job.stream:
            yield chunk
            return
        usage = chunk.pop("usage")
        yield chunk
        if self.job.include_usage:
            yield {"id": chunk["id"], "object": chunk["object"], "created": chunk["created"], "model": chunk["model"],
                   "choices": [], "usage": usage}

    def native(self, chunk: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
        """llama-server's /completion object (or stream chunk)."""
        text = chunk["choices"][0]["text"]
        if "usage" not in chunk:
            out: Dict[str, Any] = {"index": 0, "content": text, "tokens": [], "stop": False, "id_slot": self.slot.id}
            if "nld" in chunk:
                out["nld"] = chunk["nld"]
            yield out
            return
        stats = dict(chunk["nld"], usage=chunk["usage"])
        kw = self.job.kwargs
        yield {"index": 0, "content": text, "tokens": stats["tokens"], "id_slot": self.slot.id, "stop": True,
               "model": self.state.alias, "tokens_predicted": stats["usage"]["completion_tokens"],
               "tokens_evaluated": len(self.job.prompt_ids),
               "generation_settings": {k: kw[k] for k in ("mode", "temperature", "top_k", "top_p", "block_length",
                                                          "threshold", "use_lora", "stop", "ignore_eos")}
               | {"n_predict": kw["max_tokens"], "seed": stats["seed"], "n_ctx": self.state.n_ctx},
               "prompt": self.job.prompt_text if self.job.prompt_text is not None else
               self.state.model.detokenize(self.job.prompt_ids, skip_special_tokens=False),
               "has_new_line": "\n" in text, "truncated": False, "stop_type": stats["stop_type"],
               "stopping_word": stats["stopping_word"] or "",
               "tokens_cached": len(self.job.prompt_ids) + len(stats["tokens"]),
               "timings": self.timings(stats), "nld": public_stats(chunk["nld"])}

    def shape(self, chunk: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
        if self.job.route == "infill":
            stats = dict(chunk["nld"], usage=chunk["usage"])
            return infill_response(chunk, self.job, self.slot.id, self.state.alias, self.state.n_ctx,
                                   self.timings(stats), public_stats(chunk["nld"]))
        return self.native(chunk) if self.job.route == "native" else self.openai(chunk)


def start_job(job: Job, model: Any) -> Iterator[Any]:
    """On the worker thread: the Python API's call for this job, as an
    iterator of chunks (one result dict when not streaming)."""
    kw = dict(job.kwargs)
    if job.route == "infill":
        return iter([infill_result(model, job)])
    if job.route == "chat":
        out = model._chat_completion(job.prompt_ids, job.think_end, job.stream, kw)
    else:
        out = model.create_completion(job.prompt_ids, stream=job.stream, **kw)
    return out if job.stream else iter([out])


def job_stats(state: Any, job: Job, cache_n: int, stats: Dict[str, Any]) -> None:
    """On the worker, as the job's last chunk is handed on: its counters."""
    state.metrics.record(job.mode, stats, len(job.prompt_ids) - cache_n)


def job_done(state: Any, job: Job, running: Running) -> None:
    """On the event loop, once the worker is done with the slot."""
    stats = running.final_stats
    running.slot.remember(job.prompt_ids, stats["tokens"] if stats else [])
    state.running.discard(running)
    state.pool.release(running.slot)


async def serve(request: Request, state: Any, job: Job) -> Any:
    """Run a job for a request and answer with its result or its stream."""
    try:
        slot = await until_disconnect(request.receive, state.pool.acquire(job.prompt_ids))
    except QueueFull:
        state.metrics.refused()
        raise queue_full_error(state.pool.queue_size) from None
    except ClientGone:
        return Response(status_code=499)  # nobody is listening; the status is for the log
    cache_n = common_prefix(slot.cached, job.prompt_ids)
    slot.n_requests += 1
    slot.task = {"mode": job.mode, "n_prompt_tokens": len(job.prompt_ids), "stream": job.stream,
                 "params": {k: v for k, v in job.kwargs.items() if k != "stop"}}
    running = Running(asyncio.get_running_loop(), state.executor, slot, partial(start_job, job),
                      partial(job_done, state, job), cache_n, partial(job_stats, state, job, cache_n))
    state.running.add(running)
    served = Served(state, job, slot, cache_n)
    try:
        first = await until_disconnect(request.receive, running.next_item())
    except ClientGone:
        running.cancel()
        return Response(status_code=499)
    except StopAsyncIteration:
        raise ApiError(500, "the generation ended without a result") from None
    except Exception as exc:
        raise from_exception(exc, len(job.prompt_ids), state.n_ctx) from None
    if not job.stream:
        return JSONResponse(next(served.shape(first)))
    return EventStream(_events(served, running, first), on_disconnect=running.cancel)


async def _events(served: Served, running: Running, first: Any) -> AsyncIterator[bytes]:
    item: Optional[Any] = first
    try:
        while item is not None:
            for out in served.shape(item):
                yield sse(out)
            try:
                item = await running.next_item()
            except StopAsyncIteration:
                item = None
    except Exception as exc:  # a failure after the stream began: one error event, then the end
        yield sse(from_exception(exc).body())
    if served.job.route != "native":
        yield b"data: [DONE]\n\n"
