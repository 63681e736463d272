"""nld-server's slots on the continuous-batching scheduler (docs/batching.md):
concurrent requests in different modes share their forwards (the
scheduler's counters in /metrics say so) and still get, token for token,
the answers each gets alone; with --no-cont-batching the slots step one
after another and the counters are absent."""

from __future__ import annotations

import threading
from typing import Any, Dict, List

import httpx
import pytest

from nld_cpp.testing.server import running_server
from test_server_load import REQUEST_TIMEOUT_S, JOIN_TIMEOUT_S, metrics

pytestmark = pytest.mark.server

# One long request (quadratic speculation over 16-token blocks, a few
# seconds) that the three others are sure to overlap.
REQUESTS: List[Dict[str, Any]] = [
    {"prompt": "Repeat: The dog sleeps.", "mode": "spec-quadratic", "block_length": 16, "max_tokens": 160},
    {"prompt": "Copy: a b c d", "mode": "ar", "max_tokens": 120},
    {"prompt": "Sort: 3 1 2", "mode": "diffusion", "block_length": 8, "threshold": 1.0, "max_tokens": 64},
    {"prompt": "Reverse: x y z", "mode": "spec", "block_length": 8, "max_tokens": 96},
]


def _answer(client: httpx.Client, url: str, req: Dict[str, Any]) -> str:
    resp = client.post(url + "/v1/completions", json=dict(req, temperature=0, ignore_eos=True))
    assert resp.status_code == 200, f"{req}: {resp.status_code} {resp.text}"
    return resp.json()["choices"][0]["text"]


def _concurrently(url: str) -> List[Any]:
    answers: List[Any] = [None] * len(REQUESTS)
    start = threading.Barrier(len(REQUESTS))

    def client(i: int) -> None:
        with httpx.Client(timeout=REQUEST_TIMEOUT_S) as c:
            start.wait(timeout=JOIN_TIMEOUT_S)
            try:
                answers[i] = _answer(c, url, REQUESTS[i])
            except BaseException as exc:  # handed to the test thread
                answers[i] = exc

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(len(REQUESTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=JOIN_TIMEOUT_S)
    assert not any(t.is_alive() for t in threads), "a client did not finish"
    for a in answers:
        if isinstance(a, BaseException):
            raise a
    return answers


def test_concurrent_slots_share_forwards_and_keep_their_answers(tmp_path):
    with running_server(["-np", str(len(REQUESTS)), "--metrics"], log_dir=tmp_path) as srv:
        with httpx.Client(timeout=REQUEST_TIMEOUT_S) as c:
            alone = [_answer(c, srv.url, r) for r in REQUESTS]
        before = metrics(srv)
        together = _concurrently(srv.url)
        after = metrics(srv)
    assert together == alone
    steps = after["nld:batched_steps_total"] - before["nld:batched_steps_total"]
    shared = after["nld:batched_forwards_shared_total"] - before["nld:batched_forwards_shared_total"]
    assert steps > 0 and shared > steps / 4, (steps, shared)
    assert after["nld:batch_max_slots"] >= 3
    assert after["llamacpp:n_busy_slots_per_decode"] > before["llamacpp:n_busy_slots_per_decode"]


def test_without_continuous_batching_the_slots_step_alone(tmp_path):
    with running_server(["-np", "2", "--metrics", "--no-cont-batching"], log_dir=tmp_path) as srv:
        with httpx.Client(timeout=REQUEST_TIMEOUT_S) as c:
            assert _answer(c, srv.url, REQUESTS[1]) == _answer(c, srv.url, REQUESTS[1])
        assert "nld:batched_steps_total" not in metrics(srv)
