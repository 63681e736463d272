"""Infill and revision on the embedded model (issue 29), over held-out tasks
with checkable answers.

Infill: for each held-out item of the copy, repeat, reverse, sort and spell
families, the true answer (held_out.json, not the model's output) is
tokenized, with the EOS the model ends an answer with; a gap of 1 or 3 tokens is cut from its middle (seeded choice of
the start, away from the first and last token). Solved three ways, greedy:
- infill: the prompt, then the answer with the gap masked (Model.infill,
  threshold 0.9, the model's block);
- AR, left to right: the prompt and the answer up to the gap, then AR for the
  gap's length (the suffix unseen);
- AR with the suffix in the prompt: the same, the user turn ending with
  "(the answer ends with: SUFFIX)" (the model never saw such hints in
  training).
A gap is right when its tokens equal the true ones. Reported per family and
gap length: accuracy, and for infill the filled tokens per forward.

Revision: the true answer with one planted error (a token of the answer
swapped for another token of the same answer that differs), revised with
k = 1 for up to 2 rounds, for the bars `below` 1 (any position), 0.01 and
0.001: the share corrected (the answer comes back exactly); and the true
answer itself revised the same way: the share left unchanged.

    python bench/eval_infill.py [--threads 2] [--out bench/results/eval_infill]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

import nld_cpp
from nld_cpp.models import default_model_path, held_out, render_prompt

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ("copy", "repeat", "reverse", "sort", "spell")
GAPS = (1, 3)


def gap_start(n: int, gap: int, rng: np.random.Generator) -> int | None:
    """A start in [1, n - gap - 1): the gap leaves a token on each side."""
    hi = n - gap - 1
    return None if hi <= 1 else int(rng.integers(1, hi))


def evaluate(model: Any, seed: int = 29, every: int = 1, bars: tuple = (1.0, 0.01, 0.001)) -> Dict[str, Any]:
    """every: one item in `every` (tests take a subset); bars: the revision bars."""
    rng = np.random.default_rng(seed)
    items = [it for it in held_out() if it["task"] in FAMILIES][::every]
    rows: Dict[str, Dict[str, List[float]]] = {}
    examples: List[Dict[str, Any]] = []
    revision = {b: {"planted": 0, "corrected": 0, "clean": 0, "unchanged": 0, "forwards": 0} for b in bars}
    for it in items:
        turn = it["turns"][0]
        prompt_text = render_prompt(turn["user"], (), it["system"])
        prompt = model.tokenize(prompt_text)
        answer = model.tokenize(turn["answer"]) + [model.info.eos_token_id]  # as the model emits it
        for gap in GAPS:
            start = gap_start(len(answer), gap, rng)
            if start is None:
                continue
            truth = answer[start:start + gap]
            canvas = [None if start <= i < start + gap else t for i, t in enumerate(answer)]
            model.truncate(0)
            filled = model.infill(prompt, canvas)
            got_infill = filled.tokens[start:start + gap]
            model.truncate(0)
            ar = model.generate(prompt + answer[:start], mode="ar", max_tokens=gap, ignore_eos=True).tokens
            suffix = model.detokenize(answer[start + gap:-1]).strip()
            hinted = model.tokenize(render_prompt(f"{turn['user']} (the answer ends with: {suffix})", (), it["system"]))
            model.truncate(0)
            ar_hint = model.generate(hinted + answer[:start], mode="ar", max_tokens=gap, ignore_eos=True).tokens
            cell = rows.setdefault(f"{it['task']}/{gap}", {"infill": [], "ar": [], "ar_hint": [], "tpf": []})
            cell["infill"].append(got_infill == truth)
            cell["ar"].append(ar == truth)
            cell["ar_hint"].append(ar_hint == truth)
            cell["tpf"].append(gap / max(filled.n_forwards, 1))
            if len(examples) < 12 and gap == 1 and len(examples) < 2 * FAMILIES.index(it["task"]) + 2:
                examples.append({"task": it["task"], "user": turn["user"],
                                 "canvas": model.detokenize(answer[:start]) + " [___]" +
                                 model.detokenize(answer[start + gap:]),
                                 "infill": model.detokenize(filled.tokens), "truth": turn["answer"]})
        # revision: one planted error, and the clean answer
        others = sorted(set(answer))
        pos = gap_start(len(answer) - 1, 1, rng)  # not the EOS
        if pos is None or len(others) < 2:
            continue
        wrong = list(answer)
        choices = [t for t in others if t not in (answer[pos], model.info.eos_token_id)]
        wrong[pos] = choices[int(rng.integers(len(choices)))]
        for bar in bars:
            rv = revision[bar]
            res = model.revise(prompt, wrong, k=1, rounds=2, below=bar)
            rv["planted"] += 1
            rv["corrected"] += res.tokens == answer
            rv["forwards"] += res.n_forwards
            clean = model.revise(prompt, answer, k=1, rounds=2, below=bar)
            rv["clean"] += 1
            rv["unchanged"] += clean.tokens == answer
    table = {}
    for key, cell in sorted(rows.items()):
        table[key] = {"n": len(cell["infill"]), "infill_acc": float(np.mean(cell["infill"])),
                      "ar_acc": float(np.mean(cell["ar"])), "ar_suffix_hint_acc": float(np.mean(cell["ar_hint"])),
                      "infill_tokens_per_forward": float(np.mean(cell["tpf"]))}
    return {"infill": table, "revision": {str(b): v for b, v in revision.items()}, "examples": examples}


def markdown(result: Dict[str, Any]) -> str:
    lines = ["| family / gap | n | infill | AR left to right | AR, suffix in prompt | infill tokens/forward |",
             "|---|---|---|---|---|---|"]
    for key, r in result["infill"].items():
        lines.append(f"| {key} | {r['n']} | {100 * r['infill_acc']:.0f}% | {100 * r['ar_acc']:.0f}% | "
                     f"{100 * r['ar_suffix_hint_acc']:.0f}% | {r['infill_tokens_per_forward']:.2f} |")
    lines += ["", "Revision (k 1, up to 2 rounds), by the bar `below` under which a token may be re-decided:", "",
              "| below | planted errors corrected | correct answers left unchanged | forwards per revision |",
              "|---|---|---|---|"]
    for bar, rv in result["revision"].items():
        lines.append(f"| {bar} | {rv['corrected']}/{rv['planted']} ({100 * rv['corrected'] / max(rv['planted'], 1):.0f}%) "
                     f"| {rv['unchanged']}/{rv['clean']} ({100 * rv['unchanged'] / max(rv['clean'], 1):.0f}%) | "
                     f"{rv['forwards'] / max(rv['planted'], 1):.1f} |")
    lines += ["", "Examples:", ""]
    lines += [f"- {e['task']}: `{e['user']}` -> canvas `{e['canvas']}` -> `{e['infill']}` (truth `{e['truth']}`)"
              for e in result["examples"]]
    return "\n".join(lines)


def main(argv: List[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "eval_infill")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    with nld_cpp.Model(str(default_model_path()), n_ctx=512, n_threads=args.threads) as model:
        result = evaluate(model)
    result["machine"] = {"platform": platform.platform(), "processor": platform.processor(), "threads": args.threads}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    text = markdown(result)
    args.out.with_suffix(".md").write_text(f"# Infill and revision, embedded model ({time.strftime('%Y-%m-%d')})\n\n"
                                           + text + "\n")
    print(text)


if __name__ == "__main__":
    main()
