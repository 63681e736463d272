"""Mode "auto" against AR and against every fixed lossless choice (issue 25).

Part 1, the embedded model: the held-out set (first turns, greedy, Q8_0, f16
cache), per task family, wall tokens/s of AR, auto, spec with
block_length="auto", linear speculation at block 2 / 4 / 8 / 16 and quadratic
at 2 / 4 / 8. Part 2, the 3B-shaped Q4_0 file with random weights (no
drafter; drafts are never accepted): AR, auto and linear speculation at 2 /
4 / 8 on random prompts, EOS ignored.

Every choice runs on a context of its own (auto learns only from its own
rounds) with the cache emptied before each generation (no prefix reuse), in
the same process, the choices interleaved prompt by prompt in a
seeded random order; each repeat is a
full pass. Per family and repeat: tokens / summed wall time of the
generations (prefill included). Reported: the median over repeats with min
and max, auto / AR and auto / best fixed choice paired within each repeat.
"Settling": the share of auto's steps that were AR steps, the mean draft
length, and where in the generation the last round ran (random file).

    python bench/bench_auto.py [--repeats 5] [--threads 2] [--random-file /tmp/nld-3b/nld-3b-q4_0.gguf]
                               [--skip-random] [--out bench/results/bench_auto]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import numpy as np

import nld_cpp
from nld_cpp.models import default_model_path, held_out, render_prompt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from bench_vs_llama_cpp import ensure_files, machine_info  # noqa: E402

FIXED = {"spec B2": dict(mode="spec", block_length=2), "spec B4": dict(mode="spec", block_length=4),
         "spec B8": dict(mode="spec", block_length=8), "spec B16": dict(mode="spec", block_length=16),
         "quadratic B2": dict(mode="spec-quadratic", block_length=2),
         "quadratic B4": dict(mode="spec-quadratic", block_length=4),
         "quadratic B8": dict(mode="spec-quadratic", block_length=8)}
ADAPTIVE = {"auto": dict(mode="auto"), "spec B=auto": dict(mode="spec", block_length="auto")}
RANDOM_FIXED = {"spec B2": dict(mode="spec", block_length=2), "spec B4": dict(mode="spec", block_length=4),
                "spec B8": dict(mode="spec", block_length=8)}


def summary(values: List[float]) -> Dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def fmt(s: Dict[str, float], digits: int = 2) -> str:
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def run_pass(contexts: Dict[str, Any], prompts: List[Tuple[str, List[int]]], choices: Dict[str, dict],
             max_tokens: int, extra: dict, on_auto: Callable[[str, Any], None]) -> Dict[str, Dict[str, List[float]]]:
    """One pass over the prompts, every choice on each prompt in turn; per
    family and choice [tokens, seconds]. Checks every lossless output against AR's."""
    totals: Dict[str, Dict[str, List[float]]] = {}
    names = list(choices)
    order = np.random.default_rng(len(prompts))
    for family, prompt in prompts:
        outputs = {}
        for j in order.permutation(len(names)):  # a fresh order per prompt: no choice always after the same one
            name = names[j]
            kw = choices[name]
            ctx = contexts[name]
            ctx.truncate(0)
            t0 = time.perf_counter()
            res = ctx.generate(prompt, max_tokens=max_tokens, temperature=0.0, **kw, **extra)
            dt = time.perf_counter() - t0
            outputs[name] = res.tokens
            cell = totals.setdefault(family, {}).setdefault(name, [0.0, 0.0])
            cell[0] += len(res.tokens)
            cell[1] += dt
            if name == "auto":
                on_auto(family, res)
        bad = [n for n, toks in outputs.items() if toks != outputs["ar"]]
        if bad:
            raise SystemExit(f"{family}: {bad} differ from AR (all these choices are lossless)")
    return totals


def measure(model: Any, prompts: List[Tuple[str, List[int]]], choices: Dict[str, dict], repeats: int,
            max_tokens: int, extra: dict) -> Dict[str, Any]:
    contexts = {name: model.new_context(n_ctx=model.n_ctx, n_threads=model.n_threads) for name in choices}
    for name, ctx in contexts.items():
        if choices[name].get("mode") == "auto" or choices[name].get("block_length") == "auto":
            t0 = time.perf_counter()
            costs = ctx.calibrate()
            calib_s = time.perf_counter() - t0
    settle: Dict[str, Dict[str, List[float]]] = {}

    def on_auto(family: str, res: Any) -> None:
        s = settle.setdefault(family, {"ar_steps": [], "rounds": [], "k": [], "tokens": []})
        s["ar_steps"].append(res.rounds["ar"])
        s["rounds"].append(res.rounds["spec"])
        s["k"].extend(res.draft_lengths)
        s["tokens"].append(len(res.tokens))

    per_repeat = []
    for r in range(repeats):
        per_repeat.append(run_pass(contexts, prompts, choices, max_tokens, extra, on_auto))
        print(f"  repeat {r + 1}/{repeats} done", flush=True)
    for ctx in contexts.values():
        ctx.close()
    families = sorted({f for f, _ in prompts})
    rows = {}
    for fam in families + ["all"]:
        def rate(rep: Dict[str, Dict[str, List[float]]], name: str) -> float:
            cells = [rep[f][name] for f in (families if fam == "all" else [fam])]
            return sum(c[0] for c in cells) / sum(c[1] for c in cells)

        rates = {name: [rate(rep, name) for rep in per_repeat] for name in choices}
        fixed = [n for n in choices if n not in ADAPTIVE]
        best = max(fixed, key=lambda n: statistics.median(rates[n]))
        rows[fam] = {"tok_s": {n: summary(v) for n, v in rates.items()}, "best_fixed": best,
                     "auto_over_ar": summary([a / b for a, b in zip(rates["auto"], rates["ar"])]),
                     "auto_over_best": summary([a / b for a, b in zip(rates["auto"], rates[best])]),
                     "adaptive_spec_over_ar": summary([a / b for a, b in zip(rates["spec B=auto"], rates["ar"])])
                     if "spec B=auto" in rates else None}
    settled = {}
    for fam, s in settle.items():
        steps = sum(s["ar_steps"]) + sum(s["rounds"])
        settled[fam] = {"ar_step_share": sum(s["ar_steps"]) / steps if steps else 0.0,
                        "rounds_per_generation": sum(s["rounds"]) / len(s["rounds"]),
                        "mean_draft_length": float(np.mean(s["k"])) if s["k"] else None}
    return {"rows": rows, "settling": settled, "costs": costs, "calibration_s": calib_s}


def settling_traces(model: Any, max_tokens: int = 160) -> Dict[str, str]:
    """How auto's choices evolve over one long answer (a count prompt, EOS
    ignored) from a fresh context: under the calibrated costs, and under
    injected ones where rows are free (a GPU's shape) or cost 2% each. One
    character a step: "a" an AR step, a letter per round by draft length
    (b = 2 ... p = 16)."""
    prompt = next(model.tokenize(render_prompt(it["turns"][0]["user"], (), it["system"]))
                  for it in held_out() if it["task"] == "count")
    rows = [1, 2, 4, 8, 16, 32]
    injected = {"calibrated": None, "rows free": {"causal_s": [1e-3] * 6, "draft_s": [1e-3] * 6},
                "2% a row": {"causal_s": [1e-3 * (1 + 0.02 * (r - 1)) for r in rows],
                             "draft_s": [1e-3 * (1 + 0.02 * (r - 1)) for r in rows]}}
    out = {}
    for name, costs in injected.items():
        with model.new_context(n_ctx=model.n_ctx, n_threads=model.n_threads) as ctx:
            if costs is None:
                ctx.calibrate()
            else:
                ctx.set_costs(costs)
            marks = []
            for step in list(ctx.generate_steps(prompt, mode="auto", max_tokens=max_tokens, ignore_eos=True))[1:]:
                marks.append("a" if step.block_length is None else chr(ord("a") + step.block_length - 1))
            out[name] = "".join(marks)
    return out


def random_prompts(n_vocab: int, count: int, length: int) -> List[Tuple[str, List[int]]]:
    rng = np.random.default_rng(0)
    return [("random", rng.integers(1, n_vocab - 1, length).tolist()) for _ in range(count)]


def table(result: Dict[str, Any], choices: Dict[str, dict]) -> str:
    names = list(choices)
    head = "| family | " + " | ".join(names) + " | best fixed | auto / AR | auto / best |"
    lines = [head, "|" + "---|" * (len(names) + 4)]
    for fam, row in result["rows"].items():
        cells = [f"{row['tok_s'][n]['median']:.0f}" for n in names]
        lines.append(f"| {fam} | " + " | ".join(cells) + f" | {row['best_fixed']} | {fmt(row['auto_over_ar'])} | "
                     f"{fmt(row['auto_over_best'])} |")
    lines.append("")
    lines.append("| family | auto: AR-step share | rounds / generation | mean draft length |")
    lines.append("|---|---|---|---|")
    for fam, s in result["settling"].items():
        k = "-" if s["mean_draft_length"] is None else f"{s['mean_draft_length']:.1f}"
        lines.append(f"| {fam} | {s['ar_step_share']:.2f} | {s['rounds_per_generation']:.2f} | {k} |")
    c = result["costs"]
    lines.append("")
    lines.append(f"Cost model (calibrated in {result['calibration_s']:.2f} s): causal ms "
                 + ", ".join(f"{r}: {t * 1e3:.3f}" for r, t in zip(c["rows"], c["causal_s"]))
                 + "; draft ms " + ", ".join(f"{r}: {t * 1e3:.3f}" for r, t in zip(c["rows"][1:], c["draft_s"][1:])))
    return "\n".join(lines)


def main(argv: List[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--random-file", type=Path, default=Path("/tmp/nld-3b/nld-3b-q4_0.gguf"))
    ap.add_argument("--random-repeats", type=int, default=3)
    ap.add_argument("--random-prompts", type=int, default=3)
    ap.add_argument("--random-tokens", type=int, default=48)
    ap.add_argument("--skip-random", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "bench_auto")
    args = ap.parse_args(argv)

    report: Dict[str, Any] = {"machine": machine_info(), "threads": args.threads, "repeats": args.repeats}
    md = [f"Machine: {report['machine']['cpu_model']} ({report['machine']['cpus']} CPUs, "
          f"flags {report['machine']['flags']}), {args.threads} threads, {time.strftime('%Y-%m-%d')}.", ""]

    model = nld_cpp.Model(str(default_model_path()), n_ctx=1024, n_threads=args.threads)
    prompts = [(it["task"], model.tokenize(render_prompt(it["turns"][0]["user"], (), it["system"])))
               for it in held_out()]
    choices = {"ar": dict(mode="ar"), **ADAPTIVE, **FIXED}
    print(f"embedded model: {len(prompts)} prompts x {len(choices)} choices x {args.repeats} repeats", flush=True)
    report["embedded"] = measure(model, prompts, choices, args.repeats, args.max_tokens, {})
    md += ["## Embedded model (held-out first turns, tok/s medians)", "", table(report["embedded"], choices), ""]
    report["settling_traces"] = settling_traces(model)
    md += ["## Auto's choices over one long answer (count prompt; a: AR step, b..p: a round of draft 2..16)", ""]
    md += [f"- {name}: `{trace}`" for name, trace in report["settling_traces"].items()] + [""]
    model.close()

    if not args.skip_random:
        if not args.random_file.is_file():
            ensure_files(args.random_file.parent, ["q4_0"])
        big = nld_cpp.Model(str(args.random_file), n_ctx=512, n_threads=args.threads)
        rchoices = {"ar": dict(mode="ar"), "auto": dict(mode="auto"), **RANDOM_FIXED}
        rprompts = random_prompts(big.n_vocab, args.random_prompts, 32)
        print(f"random 3B file: {len(rprompts)} prompts x {len(rchoices)} choices x {args.random_repeats} repeats",
              flush=True)
        report["random_3b_q4_0"] = measure(big, rprompts, rchoices, args.random_repeats, args.random_tokens,
                                           {"ignore_eos": True})
        md += ["## 3B-shaped Q4_0, random weights (tok/s medians)", "", table(report["random_3b_q4_0"], rchoices), ""]
        big.close()

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    args.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
