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
from typing import Dict, List, Optional

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


def load_held_out(n: int) -> List[Dict[str, str]]:
    items = json.loads((MODELS_DIR / "held_out.json").read_text(encoding="utf-8"))
    return items[:n] if n < len(items) else items


def render_prompt(user: str) -> str:
    return f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n<think></think>"


def decode_answer(tok, tokens: List[int]) -> str:  # type: ignore[no-untyped-def]
    if EOS_ID in tokens:
        tokens = tokens[:tokens.index(EOS_ID)]
    return tok.decode(tokens, skip_special_tokens=True).strip()


def evaluate(model_path: Path, items: List[Dict[str, str]], threads: int, max_tokens: int) -> Dict[str, object]:
    import nld_cpp
    from tokenizers import Tokenizer

    model = nld_cpp.Model(str(model_path), n_ctx=512, n_threads=threads)
    tok = Tokenizer.from_str(model.metadata_string("tokenizer.huggingface.json"))
    prompts = [tok.encode(render_prompt(it["prompt"]), add_special_tokens=False).ids for it in items]
    rows: Dict[str, Dict[str, object]] = {}
    ar_tokens: List[List[int]] = []
    for cfg in MODES:
        kwargs = {k: v for k, v in cfg.items() if k != "name"}
        outputs, per_task = [], {}
        n_tok = n_fwd = 0
        ratios, accepted, wall = [], [], 0.0
        emitted_drafts = 0  # accepted drafts that were emitted (before the EOS cut)
        for it, prompt in zip(items, prompts):
            model.truncate(0)  # every prompt from an empty cache: each mode pays its own prefill
            t0 = time.perf_counter()
            res = model.generate(prompt, max_tokens=max_tokens, **kwargs)
            wall += time.perf_counter() - t0
            outputs.append(res.tokens)
            n_tok += len(res.tokens)
            n_fwd += res.n_forwards
            ratios.append(res.tokens_per_forward)
            accepted += list(res.accepted_lengths)
            if res.accepted_lengths:  # the seed, then per round the drafts kept plus one AR token
                emitted_drafts += len(res.tokens) - 1 - len(res.accepted_lengths)
            ok = decode_answer(tok, res.tokens) == it["answer"]
            task = per_task.setdefault(it["task"], [0, 0, 0, 0])
            task[0] += ok
            task[1] += 1
            task[2] += len(res.tokens)
            task[3] += res.n_forwards
        if cfg["name"] == "ar":
            ar_tokens = outputs
        correct = sum(v[0] for v in per_task.values())
        rows[str(cfg["name"])] = {
            "accuracy": correct / len(items),
            "tpf": n_tok / max(n_fwd, 1),
            "tpf_mean_per_prompt": sum(ratios) / len(ratios),
            "mean_accepted": (sum(accepted) / len(accepted)) if accepted else None,
            "mean_accepted_emitted": (emitted_drafts / len(accepted)) if accepted else None,
            "tokens_per_s": n_tok / wall,
            "tokens": n_tok,
            "forwards": n_fwd,
            "same_as_ar": sum(a == b for a, b in zip(outputs, ar_tokens)) / len(items),
            "per_task": {t: {"accuracy": v[0] / v[1], "tpf": v[2] / v[3]} for t, v in sorted(per_task.items())},
        }
        r = rows[str(cfg["name"])]
        print(f"  {cfg['name']:<22} acc {r['accuracy']:.3f}  tpf {r['tpf']:.2f}  "
              f"acc.len {r['mean_accepted'] if r['mean_accepted'] is not None else '-'}  "
              f"{r['tokens_per_s']:.0f} tok/s  same-as-AR {r['same_as_ar']:.3f}", flush=True)
    model.close()
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
    """Accuracy / TPF per task for a few modes (one weight type)."""
    tasks = list(rows[modes[0]]["per_task"])  # type: ignore[arg-type]
    print("| task | " + " | ".join(modes) + " |")
    print("|---|" + "---|" * len(modes))
    for task in tasks:
        cells = []
        for mode in modes:
            t = rows[mode]["per_task"][task]  # type: ignore[index]
            cells.append(f"{100 * t['accuracy']:.0f}% / {t['tpf']:.2f}")
        print(f"| {task} | " + " | ".join(cells) + " |")


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(MODELS_DIR / "nld-tiny-q8_0.gguf"))
    parser.add_argument("--hf", default="/tmp/nld-tiny-hf", help="HF checkpoint for the F16 row (skipped if absent)")
    parser.add_argument("--outtypes", nargs="*", default=["f16"],
                        help="weight types converted from --hf and measured besides the shipped Q8_0")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "eval_tiny.json"))
    args = parser.parse_args(argv)

    items = load_held_out(args.n)
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
    print("\nQ8_0 per task (accuracy / TPF):")
    print_task_table(results["Q8_0"], ["ar", "diffusion t=0.9", "spec (LoRA)", "spec-quadratic (LoRA)"])
    out = {
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "threads": args.threads, "python": sys.version.split()[0]},
        "model": Path(args.model).name, "n_prompts": len(items), "max_tokens": args.max_tokens,
        "notes": [f16_note, "greedy (temperature 0); each prompt starts from an empty cache; "
                  "TPF (agg) = all emitted tokens / all forwards; spec modes count the prefill as a forward, "
                  "diffusion does not (docs/generation.md)"],
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
