"""A tiny Tekken-shaped byte-level BPE tokenizer and the NLD chat template, for test checkpoints.

Layout (spec/nld-model.md section 7): ids 0-999 control tokens, 1000-1255 the
256 bytes (id 1000 + byte, in GPT-2's byte-to-unicode alphabet, so 1010 is
"\\n" = "Ċ"), ids >= 1256 merges. Merges are learned by a plain BPE over a
small built-in text; when that text runs out of repeated pairs (large vocab
sizes such as the real 131072), deterministic synthetic merges fill the rest
so every id is still a reachable merge. numpy-free, stdlib only.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Dict, List, Tuple

from ..chat import CHATML_THINK_TEMPLATE as CHAT_TEMPLATE
from ..tokenizer import TEKKEN_SPLIT_REGEX
from ..tokenizer import byte_to_char as bytes_to_unicode

__all__ = ["CHAT_TEMPLATE", "TEKKEN_SPLIT_REGEX", "bytes_to_unicode", "build_tokenizer_json", "control_token",
           "special_tokens_map", "tokenizer_config"]

N_CONTROL = 1000
FIRST_BYTE_ID = 1000
FIRST_MERGE_ID = FIRST_BYTE_ID + 256
MASK_SLOT_ID = 100  # a reserved control slot; the tokenizer defines no mask token
CONTROL_NAMES: Dict[int, str] = {
    0: "<unk>", 1: "<s>", 2: "</s>", 10: "<|im_start|>", 11: "<|im_end|>", 12: "<think>", 13: "</think>",
}

# A stdlib-`re` approximation, used only to cut the training text into words.
_TRAIN_SPLIT = re.compile(r"[^\r\n\w]?[^\W\d_]+|\d| ?[^\s\w]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")

TRAINING_TEXT = """\
The quick brown fox jumps over the lazy dog. The dog sleeps in the sun, and the fox runs into the forest.
A language model reads tokens and predicts the next token. A diffusion model fills masked tokens in a block.
In the morning the weather was cold, but in the afternoon the sun came out and the streets were warm again.
She said that the answer is forty-two, and he wrote the number on the board: 42. Then they went home.
Users can chat with the model on a laptop, and the server answers requests with streaming text.
Questions and answers: What is the capital of France? The capital of France is Paris. What is two plus two? Four.
def add(a, b):
    return a + b

def generate(model, prompt, max_tokens=32):
    tokens = model.tokenize(prompt)
    for step in range(max_tokens):
        logits = model.forward(tokens)
        tokens.append(int(logits.argmax()))
    return model.detokenize(tokens)

for i in range(10):
    print(i, add(i, i))

class Block:
    def __init__(self, size: int) -> None:
        self.size = size
        self.tokens = [0] * size

if __name__ == "__main__":
    print("hello world")
int main(void) { int x = 0; for (int i = 0; i < 10; ++i) { x += i; } return x; }
The model thinks before it answers. It writes its thoughts, then the final answer, then it stops.
Thinking is optional: without it the answer comes at once. With it the model first reasons step by step.
"""



def control_token(token_id: int) -> str:
    return CONTROL_NAMES.get(token_id, f"<SPECIAL_{token_id}>")


def _learn_merges(text: str, max_merges: int, taken: set) -> List[Tuple[str, str]]:
    """Plain BPE: repeatedly merge the most frequent adjacent pair (ties: largest pair) while it occurs twice."""
    byte_char = bytes_to_unicode()
    words: Counter = Counter(
        tuple(byte_char[b] for b in piece.encode("utf-8")) for piece in _TRAIN_SPLIT.findall(text))
    merges: List[Tuple[str, str]] = []
    banned: set = set()
    while len(merges) < max_merges:
        pairs: Counter = Counter()
        for word, freq in words.items():
            for pair in zip(word, word[1:]):
                if pair not in banned:
                    pairs[pair] += freq
        if not pairs:
            break
        (left, right), count = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        if count < 2:
            break
        if left + right in taken:
            banned.add((left, right))
            continue
        merges.append((left, right))
        taken.add(left + right)
        words = Counter({_merge_word(w, left, right): f for w, f in words.items()})
    return merges


def _merge_word(word: Tuple[str, ...], left: str, right: str) -> Tuple[str, ...]:
    out: List[str] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == left and word[i + 1] == right:
            out.append(left + right)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def _synthetic_merges(tokens: List[str], count: int, taken: set) -> List[Tuple[str, str]]:
    """`count` more merges: each existing token (in id order) extended by one ASCII letter."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    merges: List[Tuple[str, str]] = []
    grow = list(tokens)  # the list grows as merges are made, so this never runs dry
    index = 0
    while len(merges) < count:
        left = grow[index]
        index += 1
        for letter in letters:
            if len(merges) == count:
                break
            if left + letter not in taken:
                merges.append((left, letter))
                taken.add(left + letter)
                grow.append(left + letter)
    return merges


def build_tokenizer_json(vocab_size: int, max_learned_merges: int = 2000) -> Dict[str, object]:
    """The tokenizer.json object for a vocabulary of `vocab_size` ids."""
    if vocab_size < FIRST_MERGE_ID:
        raise ValueError(f"vocab_size must be at least {FIRST_MERGE_ID} (1000 control ids + 256 bytes)")
    vocab: Dict[str, int] = {control_token(i): i for i in range(N_CONTROL)}
    byte_tokens = [bytes_to_unicode()[b] for b in range(256)]
    vocab.update({tok: FIRST_BYTE_ID + b for b, tok in enumerate(byte_tokens)})
    taken = set(vocab)
    n_merges = vocab_size - FIRST_MERGE_ID
    merges = _learn_merges(TRAINING_TEXT, min(n_merges, max_learned_merges), taken)
    merges += _synthetic_merges(byte_tokens + [a + b for a, b in merges], n_merges - len(merges), taken)
    for left, right in merges:
        vocab[left + right] = len(vocab)
    assert len(vocab) == vocab_size

    added = [{"id": i, "content": control_token(i), "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i in range(N_CONTROL)]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": TEKKEN_SPLIT_REGEX}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            ],
        },
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": [[left, right] for left, right in merges],
        },
    }


def tokenizer_config(bos: str, eos: str, model_max_length: int) -> Dict[str, object]:
    """tokenizer_config.json: no BOS added (the rendered chat prompt starts with <|im_start|>)."""
    return {
        "add_bos_token": False,
        "add_eos_token": False,
        "bos_token": bos,
        "eos_token": eos,
        "unk_token": control_token(0),
        "pad_token": None,
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": False,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


def special_tokens_map(bos: str, eos: str) -> Dict[str, str]:
    return {"bos_token": bos, "eos_token": eos, "unk_token": control_token(0)}
