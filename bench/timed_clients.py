"""Timed streaming clients for bench_server.py: one streamed OpenAI
completion timed from the client side (time to the first text, wall time,
tokens and how they were counted), and a wave of them sent at once."""

from __future__ import annotations

import http.client
import json
import threading
import time
from typing import Any, Dict, List, Optional

REQUEST_TIMEOUT_S = 600.0


def stream_completion(url: str, body: Dict[str, Any], max_tokens: int) -> Dict[str, Any]:
    """One streamed completion; times from perf_counter, the tokens it produced and how they were counted.
    http.client on a fresh connection: the headers and the body go out in one
    write, and nothing is set up per request that a server would be charged for
    (an httpx.Client costs tens of milliseconds to make)."""
    host, port = url.rsplit("//", 1)[1].split(":")
    data = json.dumps(body).encode()
    out: Dict[str, Any] = {"start": time.perf_counter()}
    first: Optional[float] = None
    n_text_events, usage, nld, timings, finish = 0, None, None, None, None
    deadline = out["start"] + REQUEST_TIMEOUT_S
    max_lines = 32 * max_tokens + 256  # a server streams about one event (2 lines) per token, plus a few
    conn = http.client.HTTPConnection(host, int(port), timeout=REQUEST_TIMEOUT_S)
    try:
        conn.request("POST", "/v1/completions", body=data, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            return {**out, "error": f"HTTP {resp.status}", "request": body,
                    "response": resp.read().decode(errors="replace")[:2000]}
        for _ in range(max_lines):
            raw = resp.readline()
            if not raw or time.perf_counter() > deadline:
                break
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            payload = line[len("data:"):].strip()
            if payload == "[DONE]":
                break
            event = json.loads(payload)
            if "error" in event:
                return {**out, "error": "error event", "request": body, "response": payload[:2000]}
            choices = event.get("choices") or []
            if choices:
                if choices[0].get("text"):
                    n_text_events += 1
                    if first is None:
                        first = time.perf_counter()
                finish = choices[0].get("finish_reason") or finish
            usage = event.get("usage") or usage
            nld = event.get("nld") or nld
            timings = event.get("timings") or timings
        else:
            return {**out, "error": f"the stream went on past {max_lines} lines", "request": body}
    except (OSError, http.client.HTTPException, json.JSONDecodeError, UnicodeDecodeError) as exc:
        return {**out, "error": f"{type(exc).__name__}: {exc}", "request": body}
    finally:
        conn.close()
    out["end"] = time.perf_counter()
    if out["end"] > deadline:
        return {**out, "error": f"the stream took over {REQUEST_TIMEOUT_S:.0f} s", "request": body}
    if usage and usage.get("completion_tokens") is not None:
        tokens, counted = int(usage["completion_tokens"]), "usage"
    elif finish == "length":
        tokens, counted = max_tokens, "length finish"
    else:
        tokens, counted = n_text_events, "text events"
    wall = out["end"] - out["start"]
    out.update(ttft_s=(first if first is not None else out["end"]) - out["start"], wall_s=wall, tokens=tokens,
               counted=counted, finish_reason=finish, text_events=n_text_events, tok_s=tokens / wall,
               nld=nld, timings=timings, prompt_tokens=(usage or {}).get("prompt_tokens"))
    return out


def wave(url: str, bodies: List[Dict[str, Any]], max_tokens: int) -> Dict[str, Any]:
    """The bodies sent at once, one thread each; the requests' figures and the wave's aggregate tok/s."""
    results: List[Optional[Dict[str, Any]]] = [None] * len(bodies)
    barrier = threading.Barrier(len(bodies))

    def client(i: int) -> None:
        barrier.wait(timeout=30)
        results[i] = stream_completion(url, bodies[i], max_tokens)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=REQUEST_TIMEOUT_S + 60)
    requests = [r if r is not None else {"error": "the client thread did not finish", "request": b}
                for r, b in zip(results, bodies)]
    errors = [r for r in requests if "error" in r]
    if errors:
        return {"requests": requests, "errors": errors}
    span = max(r["end"] for r in requests) - min(r["start"] for r in requests)
    return {"requests": requests, "errors": [], "aggregate_tok_s": sum(r["tokens"] for r in requests) / span}
