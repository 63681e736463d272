"""llama-server's native routes with a plain HTTP client: /completion (its
stream ends without [DONE]), /tokenize with pieces, /detokenize,
/apply-template against the Python API, /props, /slots, /health, and
/metrics counters that rise by what each request did."""

from __future__ import annotations

import json
import re

import pytest

from nld_cpp import Model
from nld_cpp.models import default_model_path

from nld_cpp.testing.server import running_server, sse_events

pytestmark = pytest.mark.server

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Repeat: The dog sleeps on the warm mat."}]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(["--metrics", "-np", "2"], log_dir=tmp_path_factory.mktemp("srv")) as srv:
        yield srv


@pytest.fixture(scope="module")
def local():
    with Model(default_model_path()) as model:
        yield model


def metric(server, name: str, mode: str = "") -> float:
    status, _, body = server.request("GET", "/metrics")
    assert status == 200
    label = f'{{mode="{mode}"}}' if mode else ""
    m = re.search(rf"^{re.escape(name + label)} (\S+)$", body.decode(), re.M)
    assert m, f"{name}{label} missing from /metrics"
    return float(m.group(1))


@pytest.mark.parametrize("mode", ["ar", "diffusion", "spec", "spec-quadratic", "auto"])
def test_completion_matches_python_api(server, local, mode):
    prompt = local.apply_chat_template(CHAT)
    want = local.create_completion(prompt, mode=mode, max_tokens=20, temperature=0)
    status, got = server.json("POST", "/completion", {"prompt": prompt, "n_predict": 20, "temperature": 0,
                                                      "mode": mode})
    assert status == 200, got
    assert got["content"] == want["choices"][0]["text"] and got["stop"] is True
    assert got["tokens"] == want["nld"]["tokens"]
    assert local.detokenize(got["tokens"]) == got["content"]
    assert got["tokens_predicted"] == len(got["tokens"]) and got["tokens_evaluated"] == len(local.tokenize(prompt))
    assert got["stop_type"] == {"stop": "eos", "length": "limit"}[want["choices"][0]["finish_reason"]]
    t = got["timings"]
    assert t["predicted_n"] == got["tokens_predicted"] and t["prompt_n"] + t["cache_n"] == got["tokens_evaluated"]
    assert got["generation_settings"]["mode"] == mode
    if mode != "auto":  # auto's forwards follow the costs each process measures
        assert got["nld"]["forwards"] == want["nld"]["forwards"]
    assert ("draft_n" in t) == (mode.startswith("spec") or mode == "auto")
    rounds = got["nld"]["rounds"]
    assert rounds["spec"] == len(got["nld"]["accepted_lengths"]) == len(got["nld"]["draft_lengths"])
    if mode == "auto":  # every token after the prefill's came from an AR step or a round
        assert rounds["ar"] + len(got["nld"]["accepted_lengths"]) + sum(got["nld"]["accepted_lengths"]) >= \
            got["tokens_predicted"] - 1


def test_completion_stream_has_no_done_marker(server, local):
    prompt = local.apply_chat_template(CHAT)
    status, headers, body = server.request("POST", "/completion", {"prompt": prompt, "n_predict": 12,
                                                                   "temperature": 0, "stream": True})
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = sse_events(body)
    assert "[DONE]" not in events
    chunks = [json.loads(e) for e in events]
    assert [c["stop"] for c in chunks] == [False] * (len(chunks) - 1) + [True]
    text = "".join(c["content"] for c in chunks)
    want = local.create_completion(prompt, max_tokens=12, temperature=0)["choices"][0]["text"]
    assert text == want and "timings" in chunks[-1]


def test_completion_stop_word_and_token_prompt(server, local):
    prompt = local.apply_chat_template(CHAT)
    full = local.create_completion(prompt, max_tokens=20, temperature=0)["choices"][0]["text"]
    word = full.split()[1]
    status, got = server.json("POST", "/completion", {"prompt": local.tokenize(prompt), "n_predict": 20,
                                                      "temperature": 0, "stop": [word]})
    assert status == 200 and got["stop_type"] == "word" and got["stopping_word"] == word
    assert got["content"] == full[:full.index(word)]
    status, got = server.json("POST", "/completion", {"prompt": prompt, "n_predict": 3, "temperature": 0,
                                                      "ignore_eos": True})
    assert got["stop_type"] == "limit" and got["tokens_predicted"] == 3


def test_diffusion_canvas_stream(server, local):
    """With canvas, the stream carries the block after each denoising step:
    mask positions as null, decided ones as text, more decided each time."""
    prompt = local.apply_chat_template([{"role": "user", "content": "Repeat: The dog sleeps on the warm mat."}])
    status, _, body = server.request("POST", "/completion", {"prompt": prompt, "n_predict": 32, "temperature": 0,
                                                             "mode": "diffusion", "canvas": True, "stream": True})
    assert status == 200
    chunks = [json.loads(e) for e in sse_events(body)]
    canvases = [c["nld"]["canvas"] for c in chunks if "canvas" in c.get("nld", {})]
    assert len(canvases) >= 3
    block = local.info.block_size
    for cv in canvases:
        assert len(cv["tokens"]) == len(cv["pieces"]) == block
        for t, p in zip(cv["tokens"], cv["pieces"]):
            assert (p is None) == (t == local.info.mask_token_id)
            if p is not None:
                assert p == local.detokenize([t])
    assert any(None in cv["pieces"] for cv in canvases)
    assert [cv["step"] for cv in canvases] == sorted(cv["step"] for cv in canvases)
    text = "".join(c["content"] for c in chunks)
    want = local.create_completion(prompt, max_tokens=32, temperature=0, mode="diffusion")["choices"][0]["text"]
    assert text == want


def test_tokenize_and_detokenize(server, local):
    text = "<|im_start|>user\nhello wörld ☃<|im_end|>"
    status, got = server.json("POST", "/tokenize", {"content": text})
    assert status == 200 and got["tokens"] == local.tokenize(text)
    status, got = server.json("POST", "/tokenize", {"content": text, "with_pieces": True})
    ids = local.tokenize(text)
    assert [p["id"] for p in got["tokens"]] == ids
    rebuilt = b"".join(bytes(p["piece"]) if isinstance(p["piece"], list) else p["piece"].encode()
                       for p in got["tokens"])
    assert rebuilt == b"".join(local.tokenizer.token_bytes(t) for t in ids)
    assert rebuilt.decode() == text
    status, got = server.json("POST", "/detokenize", {"tokens": ids})
    assert status == 200 and got["content"] == text
    status, got = server.json("POST", "/tokenize", {"content": "hi", "add_special": True})
    assert got["tokens"] == local.tokenize("hi", add_special_tokens=True)


def test_apply_template_equals_python_api(server, local):
    status, got = server.json("POST", "/apply-template", {"messages": CHAT})
    assert status == 200 and got["prompt"] == local.apply_chat_template(CHAT)
    status, got = server.json("POST", "/apply-template", {"messages": CHAT, "enable_thinking": True})
    assert got["prompt"] == local.apply_chat_template(CHAT, enable_thinking=True)


def test_health_props_slots(server, local):
    assert server.json("GET", "/health") == (200, {"status": "ok"})
    status, props = server.json("GET", "/props")
    assert status == 200 and props["total_slots"] == 2
    assert props["default_generation_settings"]["n_ctx"] == local.n_ctx
    assert props["chat_template"] == local.metadata_string("tokenizer.chat_template")
    assert props["nld"]["block_size"] == local.info.block_size and "diffusion" in props["nld"]["modes"]
    status, slots = server.json("GET", "/slots")
    assert status == 200 and [s["id"] for s in slots] == [0, 1]
    assert all(s["n_ctx"] == local.n_ctx and s["is_processing"] is False for s in slots)


def test_a_second_turn_returns_to_its_slot(server, local):
    """A follow-up turn takes the slot whose cache holds its history."""
    first = [{"role": "user", "content": "Copy: q w e r t y"}]
    status, a = server.json("POST", "/completion", {"prompt": local.apply_chat_template(first), "n_predict": 16,
                                                    "temperature": 0})
    assert status == 200
    follow = first + [{"role": "assistant", "content": a["content"].strip()}, {"role": "user", "content": "Copy: q w e"}]
    status, b = server.json("POST", "/completion", {"prompt": local.apply_chat_template(follow), "n_predict": 8,
                                                    "temperature": 0})
    assert status == 200 and b["id_slot"] == a["id_slot"]
    assert b["timings"]["cache_n"] > len(local.tokenize(local.apply_chat_template(first)))


def test_metrics_rise_by_what_was_done(server, local):
    before = {name: metric(server, name, "spec") for name in
              ("nld:requests_total", "nld:forwards_total", "nld:draft_tokens_total",
               "nld:draft_tokens_accepted_total", "nld:tokens_predicted_total")}
    predicted = metric(server, "llamacpp:tokens_predicted_total")
    status, got = server.json("POST", "/completion", {"prompt": local.apply_chat_template(CHAT), "n_predict": 16,
                                                      "temperature": 0, "mode": "spec", "block_length": 8,
                                                      "ignore_eos": True})
    assert status == 200
    n, nld, t = got["tokens_predicted"], got["nld"], got["timings"]
    assert metric(server, "nld:requests_total", "spec") == before["nld:requests_total"] + 1
    assert metric(server, "nld:forwards_total", "spec") == before["nld:forwards_total"] + nld["forwards"]
    assert metric(server, "nld:tokens_predicted_total", "spec") == before["nld:tokens_predicted_total"] + n
    assert metric(server, "nld:draft_tokens_accepted_total", "spec") == \
        before["nld:draft_tokens_accepted_total"] + sum(nld["accepted_lengths"])
    assert t["draft_n"] == 7 * len(nld["accepted_lengths"])  # block 8: seven drafts a round
    assert metric(server, "nld:draft_tokens_total", "spec") == before["nld:draft_tokens_total"] + t["draft_n"]
    assert metric(server, "llamacpp:tokens_predicted_total") == predicted + n
    assert metric(server, "llamacpp:requests_processing") == 0


def test_metrics_off_without_the_flag(tmp_path):
    with running_server([], log_dir=tmp_path) as srv:
        status, got = srv.json("GET", "/metrics")
        assert status == 501 and got["error"]["type"] == "not_supported_error" and "--metrics" in got["error"]["message"]


def test_health_is_503_while_the_model_loads(monkeypatch):
    """In process: the load is held back until the test lets it go."""
    import threading

    from starlette.testclient import TestClient

    from nld_cpp.server.app import State, create_app
    from nld_cpp.server.args import parse_args

    gate = threading.Event()
    real_load = State.load

    def held_load(self):
        assert gate.wait(timeout=30)
        real_load(self)

    monkeypatch.setattr(State, "load", held_load)
    with TestClient(create_app(parse_args([]))) as client:
        for path in ("/health", "/v1/models", "/props"):
            got = client.get(path)
            assert got.status_code == 503 and got.json()["error"]["type"] == "unavailable_error", path
        got = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
        assert got.status_code == 503 and got.json()["error"]["message"] == "Loading model"
        gate.set()
        for _ in range(300):  # bounded: up to 30 s
            if client.get("/health").status_code == 200:
                break
            threading.Event().wait(0.1)
        assert client.get("/health").json() == {"status": "ok"}


def test_infill_fills_the_gap_between_prefix_and_suffix(server, local):
    """POST /infill, llama-server's form: content is the gap's text, the
    same as Model.infill on the canvas [n_predict masks] + suffix after the
    prefix; the NLD form with placeholders agrees with infill_text; counted
    in /metrics under mode infill."""
    prefix = local.apply_chat_template([{"role": "user", "content": "Copy: a b c d e f"}], enable_thinking=False)
    prefix += "a b"
    before = metric(server, "nld:requests_total", "infill")
    status, got = server.json("POST", "/infill", {"input_prefix": prefix, "input_suffix": " d e f", "n_predict": 1,
                                                  "temperature": 0})
    assert status == 200, got
    canvas = [None] + local.tokenize(" d e f")
    want = local.infill(local.tokenize(prefix), canvas, temperature=0.0)
    assert got["tokens"] == want.tokens[:1] and got["content"] == local.detokenize(want.tokens[:1])
    assert got["stop"] is True and got["tokens_predicted"] == 1 and got["nld"]["mode"] == "infill"
    assert got["nld"]["forwards"] == want.n_forwards and got["timings"]["predicted_n"] == 1
    assert metric(server, "nld:requests_total", "infill") == before + 1

    status, nld = server.json("POST", "/infill", {"input_prefix": prefix[:-len("a b")], "text": "a b [___] d e [___]",
                                                  "gap_tokens": 1, "temperature": 0})
    assert status == 200, nld
    want_text = local.infill_text(prefix[:-len("a b")], "a b [___] d e [___]", gap_tokens=1)
    assert nld["nld"]["fills"] == want_text["fills"] and nld["nld"]["canvas"] == want_text["text"]


@pytest.mark.parametrize("body,needle", [
    ({"input_prefix": "x", "input_suffix": "y", "stream": True}, "stream"),
    ({"input_prefix": "x", "n_predict": 0}, "n_predict"),
    ({"input_prefix": "x", "text": "no gap"}, "no gap placeholder"),
    ({"input_prefix": 5}, "input_prefix must be a string"),
    ({"input_prefix": "x", "input_extra": "notalist"}, "input_extra"),
    ({"input_prefix": "x", "n_predict": 100000}, "n_predict"),
])
def test_infill_refuses_bad_requests_by_name(server, body, needle):
    status, got = server.json("POST", "/infill", body)
    assert status == 400 and needle in got["error"]["message"], got
