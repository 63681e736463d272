"""One Model called from several threads at once: the calls that use its
cache are serialized, so every answer equals the one the same call gives
alone; a thread that calls again while its own generation is open gets a
clear error; contexts made by new_context share the weights and run side
by side."""

from __future__ import annotations

import threading

import pytest

import nld_cpp
from nld_cpp.models import default_model_path

pytestmark = pytest.mark.model

CALLS = [
    ("chat", [{"role": "user", "content": "Copy: a b c d"}], "ar"),
    ("chat", [{"role": "user", "content": "Repeat: The dog sleeps."}], "diffusion"),
    ("chat", [{"role": "user", "content": "Reverse: x y z"}], "spec"),
    ("completion", "Once upon a time", "spec-quadratic"),
    ("chat", [{"role": "user", "content": "Sort: 3 1 2"}], "ar"),
    ("completion", "The robot", "diffusion"),
]


def answer(model: nld_cpp.Model, call: tuple, stream: bool) -> str:
    kind, prompt, mode = call
    kw = dict(mode=mode, max_tokens=24, temperature=0, stream=stream)
    if kind == "chat":
        out = model.chat(prompt, **kw)
        if stream:
            return "".join(c["choices"][0]["delta"].get("content") or "" for c in out)
        return out["choices"][0]["message"]["content"]
    out = model.create_completion(prompt, **kw)
    return "".join(c["choices"][0]["text"] for c in out) if stream else out["choices"][0]["text"]


def hammer(model: nld_cpp.Model, n_threads: int, rounds: int) -> tuple:
    """Each thread runs every call `rounds` times (streaming on odd rounds)."""
    results: dict = {}
    errors: list = []
    start = threading.Barrier(n_threads)

    def work(t: int) -> None:
        try:
            start.wait(timeout=30)
            for r in range(rounds):
                for i in range(len(CALLS)):
                    j = (i + t) % len(CALLS)  # threads start on different calls
                    results[(t, r, j)] = answer(model, CALLS[j], stream=r % 2 == 1)
        except Exception as exc:  # reported below with its thread
            errors.append((t, repr(exc)))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    assert not any(th.is_alive() for th in threads), "a thread did not finish"
    return results, errors


def test_one_model_from_four_threads_gives_the_single_thread_answers():
    with nld_cpp.Model(default_model_path()) as model:
        alone = [answer(model, call, stream=False) for call in CALLS]
        results, errors = hammer(model, n_threads=4, rounds=2)
    assert not errors, errors
    assert len(results) == 4 * 2 * len(CALLS)
    wrong = {k: v for k, v in results.items() if v != alone[k[2]]}
    assert not wrong, wrong


def test_raw_generators_between_forwards_and_truncations():
    """Forwards and truncations from another thread land between
    generations, never inside one: every generation gives its answer."""
    with nld_cpp.Model(default_model_path()) as model:
        prompt = model.tokenize("Once upon a time")
        want = model.generate(prompt, mode="ar", max_tokens=16, ignore_eos=True).tokens
        got: list = []
        errors: list = []

        def gen(mode: str) -> None:
            try:
                for _ in range(4):
                    got.append(model.generate(prompt, mode=mode, max_tokens=16, ignore_eos=True).tokens)
            except Exception as exc:
                errors.append(repr(exc))

        def scribble() -> None:  # leaves the cache in another state each time
            try:
                for i in range(12):
                    model.truncate(i % 3)
                    model.forward([1000 + i, 1001 + i], logits="none")
            except Exception as exc:
                errors.append(repr(exc))

        threads = [threading.Thread(target=gen, args=("ar",)), threading.Thread(target=scribble),
                   threading.Thread(target=gen, args=("spec",))]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=120)
    assert not errors, errors
    assert got == [want] * 8


def test_same_thread_reentry_is_a_clear_error():
    with nld_cpp.Model(default_model_path()) as model:
        gen = model.generate_steps(model.tokenize("Hello"), max_tokens=4, ignore_eos=True)
        next(gen)
        with pytest.raises(RuntimeError, match="still open"):
            model.forward([1, 2, 3])
        with pytest.raises(RuntimeError, match="still open"):
            model.generate([1, 2, 3], max_tokens=2)
        gen.close()
        assert len(model.generate([1, 2, 3], max_tokens=2, ignore_eos=True).tokens) == 2
        # an abandoned stream releases the context when it is collected
        stream = model.create_completion("Hello", max_tokens=4, stream=True)
        next(stream)
        del stream
        assert len(model.generate([1, 2, 3], max_tokens=2, ignore_eos=True).tokens) == 2


def test_new_context_shares_weights_and_runs_in_parallel():
    with nld_cpp.Model(default_model_path()) as first:
        second = first.new_context(n_ctx=256)
        assert second.n_ctx == 256 and second._model == first._model
        alone = [answer(first, call, stream=False) for call in CALLS]
        out: dict = {}

        def run(model: nld_cpp.Model, tag: str) -> None:
            out[tag] = [answer(model, call, stream=False) for call in CALLS]

        threads = [threading.Thread(target=run, args=(m, tag)) for m, tag in ((first, "a"), (second, "b"))]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=120)
        assert out == {"a": alone, "b": alone}
    # the first one closed; the second keeps the weights alive and still answers
    assert answer(second, CALLS[0], stream=False) == alone[0]
    second.close()
    with pytest.raises(ValueError, match="closed"):
        second.new_context()


def test_close_while_another_thread_generates():
    model = nld_cpp.Model(default_model_path())
    started = threading.Event()
    finish: list = []

    def run() -> None:
        for step in model.generate_steps(model.tokenize("Hello"), max_tokens=400, ignore_eos=True):
            started.set()
            if step.finish_reason:
                finish.append(step.finish_reason)

    th = threading.Thread(target=run)
    th.start()
    assert started.wait(timeout=30)
    model.close()  # cancels the generation and waits for it
    th.join(timeout=30)
    assert not th.is_alive() and finish == ["cancelled"]
    with pytest.raises(ValueError, match="closed"):
        model.generate([1, 2], max_tokens=2)
