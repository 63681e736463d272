"""Text <-> token ids for a model file, on the `tokenizers` library
(DESIGN.md: tokenization lives in Python on well-kept libraries).

The tokenizer comes from the GGUF's `tokenizer.huggingface.json` when the
file has it (files written by `nld_cpp.convert`); otherwise it is rebuilt
from `tokenizer.ggml.tokens` / `merges` / `token_type` as a byte-level BPE
with the Tekken pre-tokenizer, so that files written by llama.cpp's
converter work too. Control tokens (`token_type` 3) become special tokens.

Special tokens behave as in transformers: `encode(text)` matches control
token strings such as `<|im_start|>` inside the text, `add_special_tokens`
adds what the tokenizer's post-processor adds (BOS for a file that asks for
it), and `decode(ids, skip_special_tokens=True)` drops them. A rendered chat
prompt already holds its control tokens, so it is encoded without adding
any.

`StreamDecoder` turns ids into text one at a time and never emits broken
UTF-8: the bytes of a character split across tokens are held back until the
character is complete, and the concatenated pieces equal `decode` of all ids.
"""

from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

# Mistral's Tekken split (llama.cpp's "tekken" pre-tokenizer type).
TEKKEN_SPLIT_REGEX = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
TOKEN_TYPE_CONTROL = 3  # llama.cpp's token types: 1 normal, 3 control, 4 user defined, 6 byte


class TokenizerError(ValueError):
    """A model file whose tokenizer cannot be built."""


def byte_to_char() -> Dict[int, str]:
    """The byte-level alphabet: printable Latin-1 bytes stand for themselves,
    the other 68 bytes for U+0100 onwards, in byte order."""
    keep = set(range(0x21, 0x7F)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


_CHAR_TO_BYTE = {c: b for b, c in byte_to_char().items()}


def _token_bytes(token: str) -> bytes:
    """The bytes a byte-level token stands for (characters outside the
    alphabet, as in added tokens, stand for their own UTF-8)."""
    out = bytearray()
    for ch in token:
        b = _CHAR_TO_BYTE.get(ch)
        if b is None:
            out += ch.encode("utf-8")
        else:
            out.append(b)
    return bytes(out)


def tokenizer_json_from_vocab(tokens: Sequence[str], merges: Sequence[str], token_types: Sequence[int],
                              bos_id: Optional[int] = None, add_bos: bool = False) -> Dict[str, Any]:
    """A tokenizer.json object for a byte-level BPE given as GGUF arrays."""
    if len(token_types) not in (0, len(tokens)):
        raise TokenizerError(f"tokenizer.ggml.token_type has {len(token_types)} entries for {len(tokens)} tokens")
    vocab: Dict[str, int] = {}
    for i, tok in enumerate(tokens):
        vocab.setdefault(tok, i)
    pairs = []
    for m in merges:
        parts = m.split(" ")
        if len(parts) != 2:
            raise TokenizerError(f"tokenizer.ggml.merges entry {m!r} is not two tokens separated by a space")
        pairs.append(parts)
    added = [{"id": i, "content": tokens[i], "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True}
             for i, t in enumerate(token_types) if t == TOKEN_TYPE_CONTROL]
    post = None
    if add_bos and bos_id is not None:
        bos = tokens[bos_id]
        post = {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}}}
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": TEKKEN_SPLIT_REGEX}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": pairs},
    }


def gguf_strings(reader: Any, key: str) -> List[str]:
    """The string (or string array) value of `key` from a `gguf.GGUFReader`, [] if absent."""
    field = reader.fields.get(key)
    if field is None:
        return []
    return [bytes(field.parts[i]).decode("utf-8") for i in field.data]


def _gguf_tokenizer_json(path: Path) -> str:
    """Read the tokenizer arrays of a GGUF with the `gguf` package and build tokenizer.json."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))

    def strings(key: str) -> List[str]:
        return gguf_strings(reader, key)

    def scalars(key: str) -> List[int]:
        field = reader.fields.get(key)
        return [] if field is None else [int(field.parts[i][0]) for i in field.data]

    model_kind = strings("tokenizer.ggml.model")
    pre = strings("tokenizer.ggml.pre")
    if model_kind != ["gpt2"]:
        raise TokenizerError(f"{path}: tokenizer.ggml.model is {model_kind[0] if model_kind else 'missing'}; "
                             "only byte-level BPE ('gpt2') tokenizers are supported")
    if pre and pre != ["tekken"]:
        raise TokenizerError(f"{path}: tokenizer.ggml.pre is '{pre[0]}'; only the 'tekken' pre-tokenizer is supported")
    tokens = strings("tokenizer.ggml.tokens")
    if not tokens:
        raise TokenizerError(f"{path}: the file has no tokenizer (no tokenizer.huggingface.json, "
                             "no tokenizer.ggml.tokens)")
    bos = scalars("tokenizer.ggml.bos_token_id")
    add_bos = scalars("tokenizer.ggml.add_bos_token")
    obj = tokenizer_json_from_vocab(tokens, strings("tokenizer.ggml.merges"), scalars("tokenizer.ggml.token_type"),
                                    bos[0] if bos else None, bool(add_bos and add_bos[0]))
    return json.dumps(obj)


class Tokenizer:
    """The tokenizer of a model file."""

    def __init__(self, tokenizer_json: str) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        try:
            self._tok = HFTokenizer.from_str(tokenizer_json)
        except Exception as exc:  # tokenizers raises its own Exception type
            raise TokenizerError(f"cannot build the tokenizer: {exc}") from None
        self.n_vocab = self._tok.get_vocab_size(with_added_tokens=True)
        added = self._tok.get_added_tokens_decoder()
        self.special_ids = frozenset(i for i, t in added.items() if t.special)
        self._bytes: List[bytes] = []
        for i in range(self.n_vocab):
            tok = self._tok.id_to_token(i)
            self._bytes.append(b"" if tok is None else _token_bytes(tok))

    @classmethod
    def from_model(cls, model: Any) -> "Tokenizer":
        """From `tokenizer.huggingface.json` in the model's GGUF, else from its token arrays."""
        try:
            text = model.metadata_string("tokenizer.huggingface.json")
        except KeyError:
            text = None
        if text:
            return cls(text)
        return cls(_gguf_tokenizer_json(Path(model.model_path)))

    @classmethod
    def from_gguf(cls, path: str | Path) -> "Tokenizer":
        """From a GGUF file alone (no model load): the same rule as from_model."""
        from gguf import GGUFReader

        embedded = gguf_strings(GGUFReader(str(path)), "tokenizer.huggingface.json")
        if embedded:
            return cls(embedded[0])
        return cls(_gguf_tokenizer_json(Path(path)))

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        ids = [int(i) for i in ids]
        for i in ids:
            if not 0 <= i < self.n_vocab:
                raise ValueError(f"token id {i} is outside the vocabulary [0, {self.n_vocab})")
        return self._tok.decode(ids, skip_special_tokens=skip_special_tokens)

    def token_id(self, token: str) -> int | None:
        """The id of a token string (for example '</think>'), None if absent."""
        return self._tok.token_to_id(token)

    def token_bytes(self, token_id: int) -> bytes:
        return self._bytes[token_id]

    def stream(self, skip_special_tokens: bool = True) -> "StreamDecoder":
        return StreamDecoder(self, skip_special_tokens)


class StreamDecoder:
    """Incremental detokenization: `push(id)` returns the text that became
    complete, `flush()` the rest (an unfinished character becomes U+FFFD)."""

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = True) -> None:
        self._tok = tokenizer
        self._skip = skip_special_tokens
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        token_id = int(token_id)
        if not 0 <= token_id < self._tok.n_vocab:
            raise ValueError(f"token id {token_id} is outside the vocabulary [0, {self._tok.n_vocab})")
        if self._skip and token_id in self._tok.special_ids:
            return ""
        return self._utf8.decode(self._tok.token_bytes(token_id))

    def push_many(self, ids: Sequence[int]) -> str:
        return "".join(self.push(i) for i in ids)

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)
