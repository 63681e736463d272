"""The text API (nld_cpp/completion.py): OpenAI-shaped results, streaming
equals non-streaming, stop strings cut across token boundaries, cancel from
another thread, multi-turn cache reuse, use after close."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import nld_cpp

pytestmark = pytest.mark.model

MODES = ["ar", "diffusion", "spec", "spec-quadratic"]


@pytest.fixture(scope="module")
def long_talker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight model with a 4096 context: it rarely says EOS, so its answers run long."""
    from nld_cpp.convert import convert_checkpoint
    from nld_cpp.testing.checkpoints import make_checkpoint

    ckpt = make_checkpoint(tmp_path_factory.mktemp("talker"), max_position_embeddings=4096,
                           original_max_position_embeddings=4096, block_size=8, seed=5,
                           vocab_size=6000)
    return Path(convert_checkpoint(ckpt, tmp_path_factory.mktemp("talker-gguf") / "talker.gguf", outtype="f32",
                                   progress=False).path)


@pytest.fixture(scope="module")
def model(long_talker: Path):
    with nld_cpp.Model(long_talker, n_ctx=4096, n_threads=2, seed=7) as m:
        yield m


def chat_text(result: dict) -> str:
    return result["choices"][0]["message"]["content"]


@pytest.mark.parametrize("mode", MODES)
def test_streaming_equals_non_streaming(model, mode):
    messages = [{"role": "user", "content": "Tell me a story."}]
    kw = dict(mode=mode, max_tokens=40, temperature=0.0)
    whole = model.create_chat_completion(messages, **kw)
    assert whole["object"] == "chat.completion" and whole["choices"][0]["message"]["role"] == "assistant"
    assert whole["usage"]["completion_tokens"] == 40 and whole["choices"][0]["finish_reason"] == "length"
    assert whole["usage"]["total_tokens"] == whole["usage"]["prompt_tokens"] + 40
    assert whole["nld"]["forwards"] >= 1 and whole["nld"]["mode"] == mode
    chunks = list(model.create_chat_completion(messages, stream=True, **kw))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "length"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert streamed == chat_text(whole)
    # plain completion, too
    text = model.create_completion("Once upon a time", max_tokens=24, temperature=0.0, mode=mode)
    pieces = list(model("Once upon a time", max_tokens=24, temperature=0.0, mode=mode, stream=True))
    assert text["object"] == "text_completion"
    assert "".join(p["choices"][0]["text"] for p in pieces) == text["choices"][0]["text"]


def test_text_equals_decoded_tokens(model):
    """The text is the tokenizer's decode of the generated ids (the stream decoder agrees with it)."""
    prompt = model.tokenize("Once upon a time")
    res = model.generate(prompt, mode="ar", max_tokens=30, temperature=0.0)
    out = model.create_completion(prompt, max_tokens=30, temperature=0.0)
    assert out["choices"][0]["text"] == model.detokenize(res.tokens)


def test_stop_strings_cut_across_token_boundaries(model):
    full = model.create_completion("Once upon a time", max_tokens=60, temperature=0.0)["choices"][0]["text"]
    ids = model.generate(model.tokenize("Once upon a time"), mode="ar", max_tokens=60, temperature=0.0).tokens
    # a stop string that starts inside one token and ends inside a later one
    pieces = [model.detokenize([t]) for t in ids]
    starts = [sum(len(p) for p in pieces[:i]) for i in range(len(pieces))]
    k = next(i for i in range(2, len(pieces) - 2) if len(pieces[i]) >= 2 and len(pieces[i + 1]) >= 1)
    begin = starts[k] + 1
    stop = full[begin:starts[k + 1] + 1]
    assert len(stop) >= 2 and full.find(stop) >= 0
    want = full[:full.find(stop)]
    got = model.create_completion("Once upon a time", max_tokens=60, temperature=0.0, stop=[stop, "\x00never"])
    assert got["choices"][0]["text"] == want and got["choices"][0]["finish_reason"] == "stop"
    chunks = list(model.create_completion("Once upon a time", max_tokens=60, temperature=0.0, stop=stop,
                                          stream=True))
    streamed = [c["choices"][0]["text"] for c in chunks]
    assert "".join(streamed) == want and chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert not any(stop in s for s in streamed)


def test_cancel_from_another_thread_stops_within_one_step(model):
    seen = []
    started = threading.Event()
    at_cancel = []

    def canceller() -> None:
        started.wait(10)
        at_cancel.append(len(seen))
        model.cancel()

    thread = threading.Thread(target=canceller)
    thread.start()
    last = None
    for chunk in model.create_completion("Once upon a time", max_tokens=3000, temperature=0.0, stream=True):
        last = chunk
        if chunk["choices"][0]["text"]:
            seen.append(chunk)
        if len(seen) == 5:
            started.set()
    thread.join()
    assert last["choices"][0]["finish_reason"] == "cancelled"
    assert last["usage"]["completion_tokens"] < 3000
    # AR: one token per step; at most the step in flight finishes after cancel()
    assert len(seen) - at_cancel[0] <= 2


def test_multi_turn_reuses_the_previous_turn(model):
    """Turn 2's prompt starts with turn 1's prompt and answer tokens, so the
    core reuses the cache up to there (its prefix reuse is tested in
    test_modes_parity)."""
    messages = [{"role": "user", "content": "Hello"}]
    first = model.create_chat_completion(messages, max_tokens=12, temperature=0.0)
    prompt1 = model.tokenize(model.apply_chat_template(messages))
    answer_ids = model.tokenize(chat_text(first))
    cached_after_first = model.n_cached
    messages += [{"role": "assistant", "content": chat_text(first)}, {"role": "user", "content": "More"}]
    prompt2 = model.tokenize(model.apply_chat_template(messages))
    shared = 0
    for a, b in zip(prompt2, prompt1 + answer_ids):
        if a != b:
            break
        shared += 1
    assert shared >= len(prompt1) + len(answer_ids) - 1
    assert cached_after_first >= len(prompt1)
    second = model.create_chat_completion(messages, max_tokens=12, temperature=0.0)
    model.truncate(0)
    cold = model.create_chat_completion(messages, max_tokens=12, temperature=0.0)
    assert chat_text(second) == chat_text(cold)


def test_seeded_sampling_reproducible(model):
    a = model.create_completion("Once", max_tokens=20, temperature=0.9, seed=11)["choices"][0]["text"]
    b = model.create_completion("Once", max_tokens=20, temperature=0.9, seed=11)["choices"][0]["text"]
    assert a == b


@pytest.mark.parametrize("bad", [dict(stop=[""]), dict(stop=[3]), dict(temperature=-1), dict(max_tokens=0),
                                 dict(mode="beam"), dict(frequency_penalty=1.0)])
def test_bad_arguments(model, bad):
    with pytest.raises((ValueError, TypeError)):
        model.create_completion("Once", **bad)


def test_bad_messages(model):
    with pytest.raises(ValueError, match="role"):
        model.create_chat_completion([{"role": "robot", "content": "x"}])
    with pytest.raises(ValueError):
        model.create_chat_completion("hello")


def test_use_after_close_raises(long_talker):
    m = nld_cpp.Model(long_talker, n_ctx=256, n_threads=1)
    m.close()
    m.close()
    with pytest.raises(ValueError, match="closed"):
        m.create_completion("Once", max_tokens=2)
    with pytest.raises(ValueError, match="closed"):
        m.tokenize("Once")
