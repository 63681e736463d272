"""The tokenizer and the chat template against the libraries we did not
write: `tokenizers` on the original tokenizer.json (both from the GGUF's
embedded copy and rebuilt from the GGUF token arrays as llama.cpp files carry
them), and transformers' `apply_chat_template` on the fixture template."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from nld_cpp.chat import ChatTemplate, ChatTemplateError
from nld_cpp.tokenizer import Tokenizer, TokenizerError

pytestmark = pytest.mark.unit

SHIPPED = Path(__file__).resolve().parent.parent / "python" / "nld_cpp" / "models" / "nld-tiny-q8_0.gguf"

PIECES = {
    "ascii": ["hello", "world", "The", "quick", "fox", "42", "3.14", "x=y", "a+b", "(ok)", "#", "!?", "model"],
    "accents": ["café", "naïve", "Ærø", "über", "façade", "résumé", "São Paulo", "Łódź", "crème brûlée"],
    "cjk": ["漢字", "日本語", "中文测试", "한국어", "カタカナ", "ひらがな"],
    "emoji": ["🙂", "👍🏽", "👨‍👩‍👧", "🇫🇷", "❤️", "🚀✨"],
    "code": ["def f(x):\n    return x", "int main(void) { return 0; }", "a[i] += b[j];", "if (x) {\n\t}",
             "for i in range(10):", "<div class=\"x\">", "x -> y", "// comment", "s = 'q\\n'"],
    "space": ["  ", "\n", "\n\n", "\t", " \n ", "   x", "x   ", "\r\n", "\u00a0", "\u3000"],
    "control": ["<|im_start|>", "<|im_end|>", "<s>", "</s>", "<think>", "</think>", "<SPECIAL_100>", "<unk>"],
}


def corpus(n: int, seed: int = 0) -> list[str]:
    """n strings, each a few pieces of the categories glued with random separators."""
    rng = random.Random(seed)
    kinds = list(PIECES)
    out = [p for kind in kinds for p in PIECES[kind]]
    while len(out) < n:
        parts = [rng.choice(PIECES[rng.choice(kinds)]) for _ in range(rng.randint(1, 6))]
        out.append("".join(p + rng.choice(["", " ", "  ", "\n", ", "]) for p in parts))
    return out[:n]


@pytest.fixture(scope="module")
def fixture_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(HF checkpoint dir, its GGUF) with a 4000-id vocabulary (many merges)."""
    from nld_cpp.convert import convert_checkpoint
    from nld_cpp.testing.checkpoints import make_checkpoint

    ckpt = make_checkpoint(tmp_path_factory.mktemp("tok-ckpt"), vocab_size=4000, num_hidden_layers=1)
    gguf = convert_checkpoint(ckpt, tmp_path_factory.mktemp("tok-gguf") / "tok.gguf", outtype="f16",
                              progress=False, lora=False).path
    return ckpt, Path(gguf)


def without_hf_json(src: Path, dst: Path) -> Path:
    """A copy of the GGUF's metadata (no tensors needed) without tokenizer.huggingface.json:
    what llama.cpp's converter writes."""
    import gguf

    reader = gguf.GGUFReader(str(src))
    writer = gguf.GGUFWriter(str(dst), arch="mistral3")
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", "tokenizer.huggingface.json"):
            continue
        if not name.startswith("tokenizer.") and not name.startswith("general."):
            continue
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            sub = field.types[1]
            if sub == gguf.GGUFValueType.STRING:
                value = [bytes(field.parts[i]).decode("utf-8") for i in field.data]
            else:
                value = [field.parts[i][0].item() for i in field.data]
            writer.add_array(name, value)
        elif vtype == gguf.GGUFValueType.STRING:
            writer.add_key_value(name, bytes(field.parts[field.data[0]]).decode("utf-8"), vtype)
        else:
            writer.add_key_value(name, field.parts[field.data[0]][0].item(), vtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


@pytest.fixture(scope="module")
def tokenizers_under_test(fixture_files, tmp_path_factory) -> dict[str, tuple[Tokenizer, object]]:
    """name -> (ours, the `tokenizers` oracle on the original tokenizer.json)."""
    from tokenizers import Tokenizer as HF

    ckpt, gguf = fixture_files
    oracle = HF.from_file(str(ckpt / "tokenizer.json"))
    rebuilt = without_hf_json(gguf, tmp_path_factory.mktemp("tok-nojson") / "nojson.gguf")
    out = {"embedded json": (Tokenizer.from_gguf(gguf), oracle),
           "token arrays": (Tokenizer.from_gguf(rebuilt), oracle)}
    if SHIPPED.is_file():  # the trained model's learned merges, both ways
        import gguf as gg

        field = gg.GGUFReader(str(SHIPPED)).fields["tokenizer.huggingface.json"]
        shipped_oracle = HF.from_str(bytes(field.parts[field.data[0]]).decode("utf-8"))
        shipped_rebuilt = without_hf_json(SHIPPED, tmp_path_factory.mktemp("tok-shipped") / "s.gguf")
        out["shipped, token arrays"] = (Tokenizer.from_gguf(shipped_rebuilt), shipped_oracle)
    return out


@pytest.mark.parametrize("name", ["embedded json", "token arrays", "shipped, token arrays"])
def test_encode_decode_parity(name, tokenizers_under_test):
    if name not in tokenizers_under_test:
        pytest.skip("the shipped model is missing")
    ours, oracle = tokenizers_under_test[name]
    strings = corpus(1200)
    for text in strings:
        want = oracle.encode(text, add_special_tokens=False).ids
        got = ours.encode(text)
        assert got == want, text
        assert ours.decode(got, skip_special_tokens=False) == oracle.decode(want, skip_special_tokens=False) == text
        assert ours.decode(got, skip_special_tokens=True) == oracle.decode(want, skip_special_tokens=True)


def test_control_strings_are_single_tokens(tokenizers_under_test):
    ours, _ = tokenizers_under_test["token arrays"]
    ids = ours.encode("<|im_start|>user\nhi<|im_end|>")
    assert ids[0] == 10 and ids[-1] == 11
    assert ours.decode(ids, skip_special_tokens=True) == "user\nhi"


@pytest.mark.parametrize("name", ["embedded json", "token arrays"])
def test_every_id_streams_like_decode(name, tokenizers_under_test):
    ours, oracle = tokenizers_under_test[name]
    for skip in (True, False):
        for token_id in range(ours.n_vocab):
            stream = ours.stream(skip_special_tokens=skip)
            assert stream.push(token_id) + stream.flush() == oracle.decode([token_id], skip_special_tokens=skip)


def test_stream_never_emits_broken_utf8(tokenizers_under_test):
    ours, _ = tokenizers_under_test["token arrays"]
    multibyte = [s for s in corpus(1200, seed=1) if any(ord(c) > 127 for c in s)]
    split_chars = 0
    for text in multibyte:
        ids = ours.encode(text)
        stream = ours.stream(skip_special_tokens=False)
        pieces = [stream.push(i) for i in ids] + [stream.flush()]
        assert "".join(pieces) == text
        assert not any("\ufffd" in p for p in pieces), text
        split_chars += sum(p == "" for p in pieces[:-1])
    assert split_chars > 0, "some character should span several tokens"


def test_bad_ids_rejected(tokenizers_under_test):
    ours, _ = tokenizers_under_test["embedded json"]
    with pytest.raises(ValueError, match="outside the vocabulary"):
        ours.decode([ours.n_vocab])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        ours.stream().push(-1)


def test_unsupported_tokenizer_named(fixture_files, tmp_path):
    import gguf

    path = tmp_path / "spm.gguf"
    writer = gguf.GGUFWriter(str(path), arch="mistral3")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(["<unk>", "a"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(TokenizerError, match="tokenizer.ggml.model is llama"):
        Tokenizer.from_gguf(path)


# -- chat template -------------------------------------------------------------

CONVERSATIONS = {
    "single": [{"role": "user", "content": "What is 2 + 2?"}],
    "system": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}],
    "multi": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
              {"role": "user", "content": "Count: a, b"}],
    "multi-with-thinking": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q1"},
                            {"role": "assistant", "content": "<think>\nreasoning\n</think>A1"},
                            {"role": "user", "content": "Q2"}],
}


class FakeModel:
    def __init__(self, template: str | None):
        self.template, self.model_path = template, "fake.gguf"
        self.info = type("Info", (), {"bos_token_id": 1, "eos_token_id": 11})()

    def metadata_string(self, key: str) -> str:
        if self.template is None:
            raise KeyError(key)
        return self.template


@pytest.fixture(scope="module")
def hf_tokenizer(fixture_files):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(fixture_files[0]))


@pytest.mark.parametrize("thinking", [False, True])
@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_chat_rendering_equals_transformers(name, thinking, fixture_files, hf_tokenizer, tokenizers_under_test):
    ckpt, _ = fixture_files
    ours_tok, _ = tokenizers_under_test["embedded json"]
    template = ChatTemplate.from_model(FakeModel((ckpt / "chat_template.jinja").read_text()), ours_tok)
    messages = CONVERSATIONS[name]
    for add_gen in (True, False):
        want = hf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_gen,
                                                enable_thinking=thinking)
        assert template.render(messages, add_generation_prompt=add_gen, enable_thinking=thinking) == want


def test_builtin_chatml_format_is_the_spec_format(tokenizers_under_test):
    """spec/nld-model.md section 7 gives the rendered prompt verbatim."""
    tok, _ = tokenizers_under_test["embedded json"]
    builtin = ChatTemplate.from_model(FakeModel(None), tok, chat_format="chatml")
    messages = [{"role": "system", "content": "SYS"}, {"role": "user", "content": "USER"}]
    base = "<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\nUSER<|im_end|>\n<|im_start|>assistant\n"
    assert builtin.render(messages) == base + "<think></think>"
    assert builtin.render(messages, enable_thinking=True) == base + "<think>\n"


def test_missing_template_is_a_clear_error(tokenizers_under_test):
    tok, _ = tokenizers_under_test["embedded json"]
    with pytest.raises(ChatTemplateError, match="has no tokenizer.chat_template; pass chat_format='chatml'"):
        ChatTemplate.from_model(FakeModel(None), tok)


@pytest.mark.parametrize("source", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ messages.__class__.__init__.__globals__ }}",
    "{% set x = messages.append({'role': 'user', 'content': 'x'}) %}{{ x }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
])
def test_template_cannot_reach_python_internals(source, tokenizers_under_test):
    tok, _ = tokenizers_under_test["embedded json"]
    template = ChatTemplate(source)
    with pytest.raises(ChatTemplateError, match="unsafe|failed"):
        template.render(CONVERSATIONS["single"])


def test_raise_exception_and_bad_messages(tokenizers_under_test):
    template = ChatTemplate("{{ raise_exception('only user turns') }}")
    with pytest.raises(ChatTemplateError, match="only user turns"):
        template.render(CONVERSATIONS["single"])
    good = ChatTemplate("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    with pytest.raises(ValueError, match="role"):
        good.render([{"role": "wizard", "content": "x"}])
    with pytest.raises(ValueError, match="content must be a string"):
        good.render([{"role": "user", "content": 3}])
    with pytest.raises(ChatTemplateError, match="does not compile"):
        ChatTemplate("{% for %}")
