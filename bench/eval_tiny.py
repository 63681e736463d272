"""Quality and tokens per forward of the tiny trained model in every mode (issue 4).

For each weight type (the shipped Q8_0 GGUF; F16 and any --outtypes converted
on the fly from the HF checkpoint when --hf points at one) and each mode (AR; block diffusion
at several thresholds; linear self-speculation with and without the drafter
LoRA; quadratic self-speculation), greedy generation over the held-out set
(python/nld_cpp/models/held_out.json, never trained on) measures:

- exact-match accuracy: the decoded tokens up to EOS, stripped, equal the answer;
- TPF: emitted tokens / forwards, summed over the set (aggregate) and the mean
  of the per-prompt ratios;
- mean accepted drafts per speculation round (spec modes): as the mode counts
  them (matches past an EOS included, docs/generation.md) and counting only
  the drafts that were emitted before the EOS cut;
- wall tokens/s (generation only, prompt prefill included, tokenization not);
- agreement with AR: the share of prompts whose tokens equal AR's exactly.

Prompts are rendered with the chat format the model was trained on and
tokenized with `tokenizers` from the GGUF's `tokenizer.huggingface.json`,
without BOS. Prints a table; writes JSON (default bench/results/eval_tiny.json).

    python bench/eval_tiny.py [--hf /tmp/nld-tiny-hf] [--outtypes f16 q4_0] [--threads 2] [--n 200]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from nld_cpp.models import render_prompt  # the chat format the model was trained on

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = ROOT / "python" / "nld_cpp" / "models"
EOS_ID = 11

MODES: List[Dict[str, object]] = [
    {"name": "ar", "mode": "ar"},
    {"name": "diffusion t=0.5", "mode": "diffusion", "threshold": 0.5},
    {"name": "diffusion t=0.7", "mode": "diffusion", "threshold": 0.7},
    {"name": "diffusion t=0.9", "mode": "diffusion", "threshold": 0.9},
    {"name": "diffusion t=0.95", "mode": "diffusion", "threshold": 0.95},
    {"name": "spec (LoRA)", "mode": "spec", "use_lora": True},
    {"name": "spec (no LoRA)", "mode": "spec", "use_lora": False},
    {"name": "spec-quadratic (LoRA)", "mode": "spec-quadratic", "use_lora": True},
]


def load_held_out(path: Path, n: int) -> List[Dict[str, object]]:
    """Items as {task, system, turns: [{user, answer}]}; the first set's
    {task, prompt, answer} items are read as one turn."""
    items = json.loads(path.read_text(encoding="utf-8"))
    items = [it if "turns" in it else {"task": it["task"], "system": None,
                                       "turns": [{"user": it["prompt"], "answer": it["answer"]}]} for it in items]
    return items[:n] if n < len(items) else items


def decode_answer(tok, tokens: List[int]) -> str:  # type: ignore[no-untyped-def]
    if EOS_ID in tokens:
        tokens = tokens[:tokens.index(EOS_ID)]
    return tok.decode(tokens, skip_special_tokens=True).strip()


# The modes tests/test_tiny_model.py runs (defaults otherwise): the items
# answered right in all of them (every turn) are listed in the results, to
# choose the tests' prompts from; per model file evaluated.
TEST_MODES = ("ar", "diffusion t=0.9", "spec (LoRA)", "spec-quadratic (LoRA)")
RIGHT_IN_TEST_MODES: Dict[str, List[int]] = {}


def evaluate(model_path: Path, items: List[Dict[str, object]], threads: int, max_tokens: int) -> Dict[str, object]:
    """Every mode over every item. A conversation of several turns is answered
    turn by turn with the model's own earlier answers in its history (as in a
    chat); each item starts from an empty cache."""
    import nld_cpp
    from tokenizers import Tokenizer

    model = nld_cpp.Model(str(model_path), n_ctx=512, n_threads=threads)
    tok = Tokenizer.from_str(model.metadata_string("tokenizer.huggingface.json"))
    rows: Dict[str, Dict[str, object]] = {}
    ar_tokens: List[List[int]] = []
    right_everywhere = [True] * len(items)  # every turn of the item answered exactly in the four test modes
    for cfg in MODES:
        kwargs = {k: v for k, v in cfg.items() if k != "name"}
        outputs, per_task = [], {}
        n_tok = n_fwd = 0
        ratios, accepted, wall = [], [], 0.0
        emitted_drafts = 0  # accepted drafts that were emitted (before the EOS cut)
        for index, it in enumerate(items):
            model.truncate(0)  # every item from an empty cache: each mode pays its own prefill
            history: List[Tuple[str, str]] = []
            item_tokens: List[int] = []
            for turn in it["turns"]:  # type: ignore[union-attr]
                prompt = tok.encode(render_prompt(turn["user"], history, it["system"]),  # type: ignore[arg-type]
                                    add_special_tokens=False).ids
                t0 = time.perf_counter()
                res = model.generate(prompt, max_tokens=max_tokens, **kwargs)
                spent = time.perf_counter() - t0
                wall += spent
                item_tokens += res.tokens
                n_tok += len(res.tokens)
                n_fwd += res.n_forwards
                ratios.append(res.tokens_per_forward)
                accepted += list(res.accepted_lengths)
                if res.accepted_lengths:  # the seed, then per round the drafts kept plus one AR token
                    emitted_drafts += len(res.tokens) - 1 - len(res.accepted_lengths)
                answer = decode_answer(tok, res.tokens)
                history.append((turn["user"], answer))  # type: ignore[index]
                task = per_task.setdefault(it["task"], [0, 0, 0, 0, 0.0])
                task[0] += answer == turn["answer"]  # type: ignore[index]
                if cfg["name"] in TEST_MODES and answer != turn["answer"]:
                    right_everywhere[index] = False
                task[1] += 1
                task[2] += len(res.tokens)
                task[3] += res.n_forwards
                task[4] += spent
            outputs.append(item_tokens)
        if cfg["name"] == "ar":
            ar_tokens = outputs
        single = {t: v for t, v in per_task.items() if t != "chat"}
        row = {
            "accuracy": sum(v[0] for v in single.values()) / max(1, sum(v[1] for v in single.values())),
            "tpf": n_tok / max(n_fwd, 1),
            "tpf_mean_per_prompt": sum(ratios) / len(ratios),
            "mean_accepted": (sum(accepted) / len(accepted)) if accepted else None,
            "mean_accepted_emitted": (emitted_drafts / len(accepted)) if accepted else None,
            "tokens_per_s": n_tok / wall,
            "tokens": n_tok,
            "forwards": n_fwd,
            "same_as_ar": sum(a == b for a, b in zip(outputs, ar_tokens)) / len(items),
            "per_task": {t: {"accuracy": v[0] / v[1], "tpf": v[2] / v[3], "tokens_per_s": v[2] / v[4]}
                         for t, v in sorted(per_task.items())},
        }
        if "chat" in per_task:
            row["multi_turn_accuracy"] = per_task["chat"][0] / per_task["chat"][1]
        rows[str(cfg["name"])] = row
        r = rows[str(cfg["name"])]
        print(f"  {cfg['name']:<22} acc {r['accuracy']:.3f}  tpf {r['tpf']:.2f}  "
              f"acc.len {r['mean_accepted'] if r['mean_accepted'] is not None else '-'}  "
              f"{r['tokens_per_s']:.0f} tok/s  same-as-AR {r['same_as_ar']:.3f}"
              + (f"  turns {r['multi_turn_accuracy']:.3f}" if "multi_turn_accuracy" in r else ""), flush=True)
    model.close()
    RIGHT_IN_TEST_MODES[str(model_path)] = [i for i, ok in enumerate(right_everywhere) if ok]
    return rows


def print_table(results: Dict[str, Dict[str, Dict[str, object]]]) -> None:
    header = (f"| {'weights':<7} | {'mode':<22} | accuracy | TPF (agg) | TPF (mean) | accepted | emitted "
              "| tok/s | = AR |")
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for wtype, rows in results.items():
        for name, r in rows.items():
            acc_len = "-" if r["mean_accepted"] is None else f"{r['mean_accepted']:.2f}"
            emitted = "-" if r["mean_accepted_emitted"] is None else f"{r['mean_accepted_emitted']:.2f}"
            print(f"| {wtype:<7} | {name:<22} | {100 * r['accuracy']:7.1f}% | {r['tpf']:9.2f} | "
                  f"{r['tpf_mean_per_prompt']:10.2f} | {acc_len:>8} | {emitted:>7} | {r['tokens_per_s']:5.0f} | "
                  f"{100 * r['same_as_ar']:3.0f}% |")


def print_task_table(rows: Dict[str, Dict[str, object]], modes: List[str]) -> None:
    """Accuracy / TPF / tok/s per task for a few modes (one weight type)."""
    tasks = list(rows[modes[0]]["per_task"])  # type: ignore[arg-type]
    print("| task | " + " | ".join(modes) + " |")
    print("|---|" + "---|" * len(modes))
    for task in tasks:
        cells = []
        for mode in modes:
            t = rows[mode]["per_task"][task]  # type: ignore[index]
            cells.append(f"{100 * t['accuracy']:.0f}% / {t['tpf']:.2f} / {t['tokens_per_s']:.0f}")
        print(f"| {task} | " + " | ".join(cells) + " |")

def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(MODELS_DIR / "nld-tiny-q8_0.gguf"))
    parser.add_argument("--hf", default="/tmp/nld-tiny-hf", help="HF checkpoint for the F16 row (skipped if absent)")
    parser.add_argument("--outtypes", nargs="*", default=["f16"],
                        help="weight types converted from --hf and measured besides the shipped Q8_0")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--held-out", default=str(MODELS_DIR / "held_out.json"),
                        help="evaluation set (default: the shipped held-out set)")
    parser.add_argument("--n", type=int, default=10000, help="use the first N items")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "eval_tiny.json"))
    args = parser.parse_args(argv)

    items = load_held_out(Path(args.held_out), args.n)
    results: Dict[str, Dict[str, Dict[str, object]]] = {}
    print(f"Q8_0: {args.model}")
    results["Q8_0"] = evaluate(Path(args.model), items, args.threads, args.max_tokens)
    f16_note = "other weight types not measured: no HF checkpoint at --hf"
    if Path(args.hf, "config.json").is_file():
        from nld_cpp.convert import convert_checkpoint

        for outtype in args.outtypes:
            with tempfile.TemporaryDirectory() as tmp:
                conv = convert_checkpoint(args.hf, Path(tmp) / f"nld-tiny-{outtype}.gguf", outtype=outtype,
                                          progress=False)
                print(f"{outtype.upper()}: converted on the fly from {args.hf}")
                results[outtype.upper()] = evaluate(conv.path, items, args.threads, args.max_tokens)
        f16_note = f"{', '.join(t.upper() for t in args.outtypes)} converted on the fly from {args.hf}"
    print_table(results)
    print("\nQ8_0 per task (accuracy / TPF / tok/s; chat: the share of turns answered exactly):")
    print_task_table(results["Q8_0"], ["ar", "diffusion t=0.9", "spec (LoRA)", "spec-quadratic (LoRA)"])
    out = {
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "threads": args.threads, "python": sys.version.split()[0]},
        "model": Path(args.model).name, "n_prompts": len(items), "max_tokens": args.max_tokens,
        "notes": [f16_note, "greedy (temperature 0); each prompt starts from an empty cache; "
                  "TPF (agg) = all emitted tokens / all forwards; spec modes count the prefill as a forward, "
                  "diffusion does not (docs/generation.md)"],
        "results": results,
        "right_in_test_modes_q8_0": RIGHT_IN_TEST_MODES.get(str(Path(args.model)), []),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
