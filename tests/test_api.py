"""The Python API around one model: lifetime, argument checks, cache ops."""

from __future__ import annotations

import numpy as np
import pytest

import nld_cpp

pytestmark = pytest.mark.unit


def test_use_after_close_raises(gguf_file):
    model = nld_cpp.Model(gguf_file("base", "f32"))
    model.close()
    model.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        model.forward([1, 2, 3])
    with pytest.raises(ValueError, match="closed"):
        model.generate_greedy([1, 2])
    with pytest.raises(ValueError, match="closed"):
        _ = model.n_cached


def test_context_manager_and_info(gguf_file, checkpoint):
    import json

    cfg = json.loads((checkpoint("base") / "config.json").read_text())
    with nld_cpp.Model(gguf_file("base", "f32")) as model:
        info = model.info
        assert (info.n_vocab, info.n_embd, info.n_layer) == (cfg["vocab_size"], cfg["hidden_size"],
                                                              cfg["num_hidden_layers"])
        assert (info.n_head, info.n_head_kv, info.head_dim) == (cfg["num_attention_heads"],
                                                                cfg["num_key_value_heads"], cfg["head_dim"])
        assert info.mask_token_id == cfg["mask_token_id"] and info.has_diffusion
        assert info.block_size == cfg["block_size"]
        assert model.metadata_string("general.architecture") == "mistral3"
        with pytest.raises(KeyError):
            model.metadata_string("no.such.key")
    assert model._ctx is None


@pytest.mark.parametrize("bad,err,match", [
    ([-1], nld_cpp.NldError, r"tokens\[0\] = -1 is not a token id"),
    ([10**6], nld_cpp.NldError, "is not a token id"),
    ([], ValueError, "non-empty"),
    ([1.5], TypeError, "integers"),
    ([2**40], ValueError, "int32"),
])
def test_bad_tokens_are_rejected(gguf_file, bad, err, match):
    with nld_cpp.Model(gguf_file("base", "f32")) as model:
        with pytest.raises(err, match=match):
            model.forward(bad)
        assert model.n_cached == 0


def test_bad_arguments(gguf_file):
    with nld_cpp.Model(gguf_file("base", "f32"), n_ctx=16) as model:
        with pytest.raises(ValueError, match="kind"):
            model.forward([1], kind="sideways")
        with pytest.raises(ValueError, match="logits"):
            model.forward([1], logits="some")
        with pytest.raises(nld_cpp.NldError, match="exceeds n_ctx 16") as info:
            model.forward(list(range(20)))
        assert info.value.status_name == "context full"
        with pytest.raises(nld_cpp.NldError, match="n_keep 5"):
            model.truncate(5)
        with pytest.raises(ValueError, match="max_new_tokens"):
            model.generate_greedy([1], max_new_tokens=-1)


def test_truncate_and_logits_rows(gguf_file):
    with nld_cpp.Model(gguf_file("base", "f32")) as model:
        all_rows = model.forward([5, 6, 7, 8], logits="all")
        assert all_rows.shape == (4, model.n_vocab) and model.n_cached == 4
        model.truncate(2)
        assert model.n_cached == 2
        last = model.forward([7, 8], logits="last")
        np.testing.assert_array_equal(last[0], all_rows[-1])
        none = model.forward([9], logits="none")
        assert none.shape == (0, model.n_vocab) and model.n_cached == 5


def test_results_do_not_depend_on_thread_count(gguf_file):
    tokens = list(range(1000, 1030))
    outs = []
    for n_threads in (1, 2, 3):
        with nld_cpp.Model(gguf_file("base", "f32"), n_threads=n_threads) as model:
            outs.append(model.forward(tokens, logits="all"))
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])
