"""Continuous batching (docs/batching.md): a batched forward over the rows of
several sequences equals each sequence's forward alone (and transformers),
and generations stepped together by the scheduler give, step for step, what
each gives alone, whatever the mix of modes, block lengths, prompt lengths,
arrivals, cancellations and full contexts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

import nld_cpp
from nld_cpp import Scheduler
from nld_cpp._binding import ffi, lib
from nld_cpp.models import default_model_path, held_out, render_prompt
from nld_cpp.scheduler import forward_batch
from reference import EXACT_CACHE, block_logits, causal_logits, load_reference
from test_forward_parity import REL_TOL, prompt_for, rel_err

pytestmark = pytest.mark.model


# -- the batched forward ----------------------------------------------------

# (cached prefix length, new rows, kind, logits) of each sequence in one batch:
# an empty cache, a decode row, a prefill, a bidirectional block with masks.
PARTS = [(0, 5, "causal", "all"), (3, 1, "causal", "last"), (9, 4, "bidirectional", "all"),
         (17, 2, "causal", "none"), (6, 7, "causal", "all")]


def _contexts(model: nld_cpp.Model, prefixes: list[list[int]]) -> list[nld_cpp.Model]:
    out = []
    for prefix in prefixes:
        ctx = model.new_context(n_ctx=64, n_threads=2)
        if prefix:
            ctx.forward(prefix, logits="none")
        out.append(ctx)
    return out


@pytest.mark.parametrize("outtype", ["f32", "q8_0"])
def test_forward_batch_equals_each_forward_alone(outtype, gguf_file, checkpoint):
    with nld_cpp.Model(str(gguf_file("base", outtype)), n_ctx=64, n_threads=2, **EXACT_CACHE) as model:
        info = model.info
        prefixes = [prompt_for(info, n, seed=10 + i) for i, (n, *_rest) in enumerate(PARTS)]
        news = [prompt_for(info, rows, seed=30 + i) for i, (_n, rows, *_rest) in enumerate(PARTS)]
        news[2][1] = news[2][3] = info.mask_token_id
        batched, alone = _contexts(model, prefixes), _contexts(model, prefixes)
        got = forward_batch([(c, new, kind, logits) for c, new, (_n, _r, kind, logits) in zip(batched, news, PARTS)])
        for i, (ctx, new, (_n, rows, kind, logits)) in enumerate(zip(alone, news, PARTS)):
            want = ctx.forward(new, kind=kind, logits=logits)
            np.testing.assert_array_equal(got[i], want, err_msg=f"part {i}")
            assert batched[i].n_cached == ctx.n_cached == len(prefixes[i]) + (rows if kind == "causal" else 0)
        # The caches hold the same keys and values: the next step agrees too.
        for i, (b, a) in enumerate(zip(batched, alone)):
            np.testing.assert_array_equal(b.forward([7], logits="all"), a.forward([7], logits="all"), err_msg=f"part {i}")
        if outtype == "f32":  # and against transformers
            ref = load_reference(checkpoint("base"))
            for i, (prefix, new, (_n, _r, kind, logits)) in enumerate(zip(prefixes, news, PARTS)):
                if logits == "none":
                    continue
                want_t = causal_logits(ref, prefix + new)[len(prefix):] if kind == "causal" else block_logits(ref, prefix, new)
                if logits == "last":
                    want_t = want_t[-1:]
                assert rel_err(got[i], want_t) < REL_TOL, f"part {i}"
        for ctx in batched + alone:
            ctx.close()


def test_forward_batch_refuses_bad_batches_and_changes_nothing(gguf_file):
    path = str(gguf_file("base", "f32"))
    with nld_cpp.Model(path, n_ctx=16, n_threads=1) as model, nld_cpp.Model(path, n_ctx=16, n_threads=1) as other:
        a, b = model.new_context(n_ctx=16), model.new_context(n_ctx=8)
        a.forward([5, 6, 7], logits="none")
        with pytest.raises(ValueError, match="appears twice"):
            forward_batch([(a, [1], "causal", "last"), (a, [2], "causal", "last")])
        with pytest.raises(nld_cpp.NldError, match="different models"):
            forward_batch([(a, [1], "causal", "last"), (other, [2], "causal", "last")])
        with pytest.raises(nld_cpp.NldError, match="exceeds n_ctx 8"):
            forward_batch([(a, [1, 2], "causal", "last"), (b, list(range(1, 10)), "causal", "last")])
        with pytest.raises(nld_cpp.NldError, match=r"part 1 tokens\[0\]"):
            forward_batch([(a, [1], "causal", "last"), (b, [10**6], "causal", "last")])
        assert (a.n_cached, b.n_cached) == (3, 0), "a refused batch must not touch any cache"
        a.close()
        b.close()


def test_prefill_in_chunks_equals_one_prefill(gguf_file):
    """The scheduler prefills long prompts in chunks: the cache and logits
    are those of one prefill."""
    with nld_cpp.Model(str(gguf_file("base", "q8_0")), n_ctx=64, n_threads=2) as model:
        prompt = prompt_for(model.info, 40, seed=3)
        whole, chunked = model.new_context(n_ctx=64), model.new_context(n_ctx=64)
        want = whole.forward(prompt, logits="last")
        for at in range(0, 32, 16):
            chunked.forward(prompt[at:at + 16], logits="none")
        np.testing.assert_array_equal(chunked.forward(prompt[32:], logits="last"), want)
        np.testing.assert_array_equal(chunked.forward([9], logits="all"), whole.forward([9], logits="all"))
        whole.close()
        chunked.close()


# -- the scheduler against each generation alone ------------------------------

@dataclass
class Seq:
    """One generation of a mix: its request, when it joins, when it is cancelled."""

    prompt: list[int]
    kwargs: dict[str, Any]
    join: int = 0               # the driver step at which it is created
    cancel_after: int | None = None  # cancel after this many of its own steps
    n_ctx: int = 512
    steps: list[Any] = field(default_factory=list)


@pytest.fixture(scope="module")
def tiny() -> Any:
    with nld_cpp.Model(str(default_model_path()), n_ctx=512, n_threads=2) as model:
        yield model


def _prompts(model: nld_cpp.Model) -> list[list[int]]:
    items = held_out()
    return [model.tokenize(render_prompt(items[i]["turns"][0]["user"])) for i in (3, 40, 77, 120, 150, 180, 199)]


def _solo(model: nld_cpp.Model, seq: Seq) -> list[Any]:
    with model.new_context(n_ctx=seq.n_ctx, n_threads=2) as ctx:
        gen = ctx.generate_steps(seq.prompt, **seq.kwargs)
        steps = []
        for step in gen:
            steps.append(step)
            if seq.cancel_after is not None and len(steps) == seq.cancel_after:
                gen.cancel()
        return steps


def _together(model: nld_cpp.Model, seqs: list[Seq], **sched_args: Any) -> dict:
    """Runs the mix on one scheduler from one thread: at each driver step the
    sequences due join, then every live one takes one step (the first of
    them runs the batched forward, the others find theirs queued)."""
    with Scheduler(model, n_threads=2, **sched_args) as sched:
        contexts = [model.new_context(n_ctx=s.n_ctx, n_threads=2) for s in seqs]
        for ctx in contexts:
            sched.attach(ctx)
        live: dict[int, Any] = {}
        for tick in range(10_000):
            for i, s in enumerate(seqs):
                if s.join == tick:
                    live[i] = contexts[i].generate_steps(s.prompt, **s.kwargs)
            if not live and tick > max(s.join for s in seqs):
                break
            for i, gen in list(live.items()):
                step = next(gen)
                seqs[i].steps.append(step)
                if seqs[i].cancel_after is not None and len(seqs[i].steps) == seqs[i].cancel_after:
                    gen.cancel()
                if step.finish_reason is not None:
                    del live[i]
        assert not live, "the mix did not finish within the loop bound"
        stats = sched.stats()
        for ctx in contexts:
            ctx.close()
    return stats


MIXES = {
    # every mode at once, joining at different steps
    "four-modes": (dict(), [("ar", {}, 0), ("diffusion", dict(block_length=16), 0),
                            ("spec", dict(block_length=8), 2), ("spec-quadratic", dict(block_length=4), 5)]),
    # six: block lengths 4-16, thresholds, no LoRA, sampling, a tight row budget and prompt chunks
    "six-tight": (dict(max_rows=48, max_prefill_rows=16),
                  [("diffusion", dict(block_length=4, threshold=0.0), 0), ("diffusion", dict(block_length=8, threshold=0.5), 1),
                   ("spec", dict(block_length=16, threshold=0.5, use_lora=False), 1), ("ar", dict(temperature=0.8, seed=5), 3),
                   ("spec-quadratic", dict(block_length=8), 4), ("ar", {}, 7)]),
    # two of one mode with different blocks
    "two-diffusion": (dict(), [("diffusion", dict(block_length=4), 0), ("diffusion", dict(block_length=32), 1)]),
}


@pytest.mark.parametrize("mix", sorted(MIXES))
def test_scheduler_gives_each_generation_its_solo_steps(mix, tiny):
    sched_args, spec = MIXES[mix]
    prompts = _prompts(tiny)
    seqs = [Seq(prompts[i % len(prompts)] * (3 if i == 3 else 1), dict(mode=mode, max_tokens=48, **kw), join=join)
            for i, (mode, kw, join) in enumerate(spec)]
    stats = _together(tiny, seqs, **sched_args)
    for i, s in enumerate(seqs):
        assert s.steps == _solo(tiny, s), f"sequence {i} ({s.kwargs}) differs from its solo run"
    assert stats["max_sequences"] >= min(len(seqs), 2) and stats["n_batched_forwards"] > 0
    assert stats["n_prefill_rows"] == sum(len(s.prompt) for s in seqs)
    assert stats["n_sequences"] == 0


def test_cancel_and_full_context_leave_the_others_unchanged(tiny):
    prompts = _prompts(tiny)
    seqs = [Seq(prompts[0], dict(mode="ar", max_tokens=60, ignore_eos=True)),
            Seq(prompts[1], dict(mode="diffusion", max_tokens=60, ignore_eos=True), cancel_after=3),
            Seq(prompts[2], dict(mode="spec", max_tokens=60, ignore_eos=True), n_ctx=len(prompts[2]) + 20),
            Seq(prompts[3], dict(mode="spec-quadratic", max_tokens=60, ignore_eos=True), join=2)]
    _together(tiny, seqs)
    assert [s.steps[-1].finish_reason for s in seqs] == ["length", "cancelled", "context", "length"]
    for i, s in enumerate(seqs):
        assert s.steps == _solo(tiny, s), f"sequence {i}"


def test_scheduler_counts_rows_within_the_budget(tiny):
    prompts = _prompts(tiny)
    seqs = [Seq(p, dict(mode="ar", max_tokens=20, ignore_eos=True)) for p in prompts[:4]]
    stats = _together(tiny, seqs, max_rows=8, max_prefill_rows=8)
    # 4 decodes of 1 row each always fit: after the prompts, every forward holds all four.
    assert stats["max_sequences"] == 4
    assert stats["n_rows"] == stats["n_prefill_rows"] + 4 * 19
    assert stats["n_steps"] * 8 >= stats["n_rows"]
    # Its activations: at least the four decode rows' logits that one forward
    # holds, at most 8 rows of every activation and of logits (std::vector
    # may hold up to twice what it was resized to).
    h = tiny.info
    per_row = 3 * h.n_embd + 2 * h.n_head * h.head_dim + 2 * h.n_head_kv * h.head_dim + h.lora_rank + 2 * h.n_ff
    assert 4 * 4 * h.n_vocab <= stats["scratch_bytes"] <= 2 * 4 * 8 * (per_row + h.n_vocab)


# -- the C API's rules --------------------------------------------------------

def _c_generator(ctx: nld_cpp.Model, prompt: list[int], max_tokens: int = 8) -> Any:
    params = lib.nld_generate_default_params()
    params.max_new_tokens = max_tokens
    buf = np.asarray(prompt, dtype=np.int32)
    out = ffi.new("nld_generator **")
    assert lib.nld_generator_create(ctx._live(), ffi.from_buffer("int32_t[]", buf), len(buf), ffi.addressof(params), out) == 0
    return out[0]


def _error() -> str:
    return ffi.string(lib.nld_last_error()).decode()


def test_scheduler_c_api_refuses_misuse_with_clear_errors(tiny, gguf_file):
    prompt = _prompts(tiny)[0]
    sched_p = ffi.new("nld_scheduler **")
    assert lib.nld_scheduler_create(tiny._weights.handle, ffi.NULL, sched_p) == 0
    sched = sched_p[0]
    a, b = tiny.new_context(n_ctx=128), tiny.new_context(n_ctx=128)
    g1, g2, g3 = _c_generator(a, prompt), _c_generator(a, prompt), _c_generator(b, prompt)
    assert lib.nld_scheduler_add(sched, g1) == 0
    assert lib.nld_scheduler_add(sched, g1) == lib.NLD_ERR_INVALID_ARGUMENT and "already in this scheduler" in _error()
    assert lib.nld_scheduler_add(sched, g2) == lib.NLD_ERR_INVALID_ARGUMENT and "context already has" in _error()
    step = ffi.new("nld_step *")
    assert lib.nld_generator_step(g1, step) == lib.NLD_ERR_INVALID_ARGUMENT and "remove it first" in _error()
    assert lib.nld_scheduler_add(sched, g3) == 0
    out = ffi.new("nld_scheduled_step[]", 2)
    n = ffi.new("int32_t *")
    assert lib.nld_scheduler_step(sched, out, 1, n) == lib.NLD_ERR_INVALID_ARGUMENT and "capacity 1" in _error()
    assert lib.nld_scheduler_step(sched, out, 2, n) == 0 and n[0] == 2  # both prefilled: a step each
    lib.nld_generator_free(g3)  # freeing a member removes it
    stats = ffi.new("nld_scheduler_stats *")
    assert lib.nld_scheduler_get_stats(sched, stats) == 0 and stats.n_sequences == 1
    with nld_cpp.Model(str(gguf_file("base", "f32")), n_ctx=32) as other:
        g4 = _c_generator(other, [1, 2, 3])
        assert lib.nld_scheduler_add(sched, g4) == lib.NLD_ERR_INVALID_ARGUMENT and "another model" in _error()
        lib.nld_generator_free(g4)
    lib.nld_scheduler_free(sched)  # g1 leaves it and steps alone again
    while True:
        assert lib.nld_generator_step(g1, step) == 0
        if step.finish_reason != lib.NLD_FINISH_NONE:
            break
    lib.nld_generator_free(g1)
    lib.nld_generator_free(g2)
    a.close()
    b.close()


def test_closing_the_scheduler_lets_its_generations_finish_alone(tiny):
    prompt = _prompts(tiny)[1]
    seq = Seq(prompt, dict(mode="spec", max_tokens=30))
    sched = Scheduler(tiny, n_threads=2)
    ctx = tiny.new_context(n_ctx=256)
    sched.attach(ctx)
    gen = ctx.generate_steps(seq.prompt, **seq.kwargs)
    steps = [next(gen), next(gen)]
    sched.close()
    steps += list(gen)
    assert steps == _solo(tiny, seq)
    with pytest.raises(ValueError, match="closed"):
        sched.attach(ctx)
    ctx.close()


def test_threads_driving_one_scheduler_get_their_solo_answers(tiny):
    """Four threads, each generating on its own attached context: whichever
    needs a step runs the batched forward; each gets its solo tokens."""
    import threading

    prompts = _prompts(tiny)
    seqs = [Seq(prompts[i], dict(mode=mode, max_tokens=40, ignore_eos=True))
            for i, mode in enumerate(["ar", "diffusion", "spec", "spec-quadratic"])]
    got: list[Any] = [None] * len(seqs)
    with Scheduler(tiny, n_threads=2) as sched:
        contexts = [tiny.new_context(n_ctx=256, n_threads=2) for _ in seqs]
        for c in contexts:
            sched.attach(c)
        start = threading.Barrier(len(seqs))

        def run(i: int) -> None:
            start.wait(timeout=30)
            got[i] = list(contexts[i].generate_steps(seqs[i].prompt, **seqs[i].kwargs))

        threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(seqs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads)
        stats = sched.stats()
        for c in contexts:
            c.close()
    for i, s in enumerate(seqs):
        assert got[i] == _solo(tiny, s), f"thread {i}"
    assert stats["n_batched_forwards"] > 0
