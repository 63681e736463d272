"""nld-server through the official `openai` client: chat and completions,
streaming and not, usage with include_usage, every mode; at temperature 0
the text over HTTP is the Python API's for the same request, and both
speculation modes give AR's text."""

from __future__ import annotations

import pytest

from nld_cpp import Model
from nld_cpp.models import default_model_path

from nld_cpp.testing.server import running_server

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.server

MODES = ["ar", "diffusion", "spec", "spec-quadratic"]
CHATS = [[{"role": "user", "content": "Copy: a b c d"}],
         [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Repeat: The dog sleeps."}]]
PROMPTS = ["Once upon a time", "<|im_start|>user\nReverse: x y z<|im_end|>\n<|im_start|>assistant\n<think></think>"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(["-np", "2", "-a", "nld-tiny"], log_dir=tmp_path_factory.mktemp("srv")) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def local():
    with Model(default_model_path()) as model:
        yield model


def test_models_lists_the_alias(client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["nld-tiny"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("chat", range(len(CHATS)))
def test_chat_equals_python_api(client, local, mode, chat):
    messages = CHATS[chat]
    want = local.chat(messages, mode=mode, max_tokens=24, temperature=0)
    got = client.chat.completions.create(model="nld-tiny", messages=messages, max_tokens=24, temperature=0,
                                         extra_body={"mode": mode})
    assert got.choices[0].message.content == want["choices"][0]["message"]["content"]
    assert got.choices[0].message.role == "assistant"
    assert got.choices[0].finish_reason == want["choices"][0]["finish_reason"]
    assert got.model == "nld-tiny" and got.object == "chat.completion"
    assert got.usage.prompt_tokens == want["usage"]["prompt_tokens"]
    assert got.usage.completion_tokens == want["usage"]["completion_tokens"]
    extra = got.model_extra
    assert extra["nld"]["mode"] == mode and extra["nld"]["forwards"] == want["nld"]["forwards"]
    assert extra["timings"]["predicted_n"] == got.usage.completion_tokens
    if mode.startswith("spec"):
        assert extra["timings"]["draft_n_accepted"] == sum(want["nld"]["accepted_lengths"])


@pytest.mark.parametrize("mode", MODES)
def test_chat_stream_with_usage(client, local, mode):
    messages = CHATS[1]
    want = local.chat(messages, mode=mode, max_tokens=24, temperature=0)
    stream = client.chat.completions.create(model="nld-tiny", messages=messages, max_tokens=24, temperature=0,
                                            stream=True, stream_options={"include_usage": True},
                                            extra_body={"mode": mode})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == want["choices"][0]["message"]["content"]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [want["choices"][0]["finish_reason"]]
    assert chunks[0].choices[0].delta.role == "assistant"
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None  # include_usage: a last chunk with the usage alone
    assert last.usage.completion_tokens == want["usage"]["completion_tokens"]
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_chat_stream_without_usage_has_no_usage_chunk(client):
    chunks = list(client.chat.completions.create(model="nld-tiny", messages=CHATS[0], max_tokens=8, temperature=0,
                                                 stream=True))
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("prompt", PROMPTS)
def test_completion_equals_python_api(client, local, mode, prompt):
    want = local.create_completion(prompt, mode=mode, max_tokens=16, temperature=0)
    got = client.completions.create(model="nld-tiny", prompt=prompt, max_tokens=16, temperature=0,
                                    extra_body={"mode": mode})
    assert got.choices[0].text == want["choices"][0]["text"]
    assert got.object == "text_completion" and got.usage.completion_tokens == want["usage"]["completion_tokens"]
    stream = client.completions.create(model="nld-tiny", prompt=prompt, max_tokens=16, temperature=0, stream=True,
                                       stream_options={"include_usage": True}, extra_body={"mode": mode})
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == want["choices"][0]["text"]
    assert chunks[-1].usage.completion_tokens == want["usage"]["completion_tokens"]


def test_token_id_prompt_equals_text_prompt(client, local):
    ids = local.tokenize(PROMPTS[1])
    by_ids = client.completions.create(model="nld-tiny", prompt=ids, max_tokens=12, temperature=0)
    by_text = client.completions.create(model="nld-tiny", prompt=PROMPTS[1], max_tokens=12, temperature=0)
    assert by_ids.choices[0].text == by_text.choices[0].text and by_ids.usage.prompt_tokens == len(ids)


@pytest.mark.parametrize("mode,block", [("spec", 8), ("spec-quadratic", 8), ("auto", 8), ("auto", "auto"),
                                        ("spec", "auto")])
def test_speculation_equals_ar_over_http(client, mode, block):
    for messages in CHATS:
        ar = client.chat.completions.create(model="x", messages=messages, max_tokens=32, temperature=0)
        sp = client.chat.completions.create(model="x", messages=messages, max_tokens=32, temperature=0,
                                            extra_body={"mode": mode, "block_length": block})
        assert sp.choices[0].message.content == ar.choices[0].message.content
        nld = sp.model_extra["nld"]
        assert nld["mode"] == mode
        longest = 8 if block == 8 else 16  # the embedded model's block length
        assert all(2 <= k <= longest for k in nld["draft_lengths"]), nld["draft_lengths"]


def test_auto_block_length_with_a_fixed_mode_is_refused(client):
    with pytest.raises(openai.BadRequestError, match="block_length"):
        client.chat.completions.create(model="x", messages=CHATS[0], max_tokens=8,
                                       extra_body={"mode": "diffusion", "block_length": "auto"})


def test_max_completion_tokens_stop_and_seed(client, local):
    got = client.chat.completions.create(model="x", messages=CHATS[1], max_completion_tokens=3, temperature=0)
    assert got.usage.completion_tokens == 3 and got.choices[0].finish_reason == "length"
    full = local.chat(CHATS[1], max_tokens=24, temperature=0)["choices"][0]["message"]["content"]
    word = full.split()[1]
    cut = client.chat.completions.create(model="x", messages=CHATS[1], max_tokens=24, temperature=0, stop=[word])
    assert cut.choices[0].finish_reason == "stop" and cut.choices[0].message.content == full[:full.index(word)]
    a, b = (client.chat.completions.create(model="x", messages=CHATS[0], max_tokens=16, temperature=1.0, seed=7,
                                           top_p=0.9, extra_body={"top_k": 20}) for _ in range(2))
    assert a.choices[0].message.content == b.choices[0].message.content
    want = local.chat(CHATS[0], max_tokens=16, temperature=1.0, seed=7, top_p=0.9, top_k=20)
    assert a.choices[0].message.content == want["choices"][0]["message"]["content"]


def test_neutral_values_of_unsupported_parameters_are_accepted(client):
    got = client.chat.completions.create(model="x", messages=CHATS[0], max_tokens=4, temperature=0, n=1,
                                         presence_penalty=0, frequency_penalty=0, logprobs=False,
                                         response_format={"type": "text"}, user="someone")
    assert got.choices[0].message.content is not None


def test_unsupported_parameter_is_a_400_naming_it(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="x", messages=CHATS[0], max_tokens=4, n=2)
    assert err.value.status_code == 400 and "n is not supported" in err.value.message
