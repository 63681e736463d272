"""Continuous batching (docs/batching.md): aggregate AR decode speed of k
concurrent sequences on our scheduler, against the same sequences stepped
one after another, and against llama.cpp's own batched decode (a
llama_batch with one sequence id per row) on the same GGUF and threads;
then the cost of a mixed batch (one diffusion block and three decodes)
against the block alone, and where the time of a 4-sequence step goes.

    python bench/bench_batching.py [--dir /tmp/nld-3b] [--types q4_0 q8_0] [--threads 2]
                                   [--counts 1 2 4 8] [--runs 5] [--steps 32]
    python bench/bench_batching.py --smoke     # small model, about a minute

Setup (not CI): llama-cpp-python importable (see bench/bench_vs_llama_cpp.py,
whose random-weight 3B-shaped files in --dir this uses, generating them when
missing).

Method. Every sequence gets its own 32-token prompt of random ids; the
prompts are prefilled first (not timed), then --steps decode steps are
timed: each step gives every sequence one token (greedy). Per run and count
the three sides run back to back, their order rotating by run, so the
host's slow spells fall on all of them; each figure is the median (min,
max) over --runs of aggregate tokens/s (k * steps / seconds), and each
ratio the median (min, max) of the per-run ratios.
- ours batched: nld_cpp.Scheduler, one batched forward per step (from one
  Python thread, through the Generator objects);
- ours one by one: the same generators without a scheduler, stepped in turn;
- llama.cpp batched: llama_decode of a batch of k rows, row s in sequence s
  at its own position, logits for every row; argmax in numpy.
Mixed batch: forward_batch of a 32-row bidirectional block on one context
and one causal decode row on each of three others (the decode rows are cut
from their caches after each call), against forward_batch of the block
alone, over the same --runs, 5 calls each, ratio of medians.
Step breakdown (4 sequences): a 1-row forward; 4 x 1 row in one
forward_batch (the C forward of a step); one sequence's 4-row causal forward
(the same matmuls, one attention); and a whole scheduler step through the
Python generators (the step's forward plus the scheduler and Python).

Writes bench/results/bench_batching.{md,json} (--smoke: next to the model).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from statistics import median
from typing import Any, Callable, Dict, List, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_vs_llama_cpp  # noqa: E402  (ensure_files, machine_info, summary, fmt)

import nld_cpp  # noqa: E402
from nld_cpp import Scheduler  # noqa: E402
from nld_cpp.scheduler import forward_batch  # noqa: E402

PROMPT_LEN = 32
SLOT_CTX = 512
summary, fmt = bench_vs_llama_cpp.summary, bench_vs_llama_cpp.fmt


def prompts_for(k: int, n_vocab: int, seed: int) -> List[List[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(1000, n_vocab, size=PROMPT_LEN).tolist() for _ in range(k)]


class Ours:
    def __init__(self, path: Path, threads: int, max_k: int):
        self.model = nld_cpp.Model(str(path), n_ctx=SLOT_CTX, n_threads=threads, lora_path="")
        self.contexts = [self.model.new_context(n_ctx=SLOT_CTX, n_threads=threads) for _ in range(max_k)]
        self.sched = Scheduler(self.model, n_threads=threads)
        self.threads = threads

    def decode(self, prompts: List[List[int]], steps: int, batched: bool) -> tuple[float, List[List[int]]]:
        """Seconds of `steps` decode steps of every sequence, and their tokens."""
        ctxs = self.contexts[:len(prompts)]
        for c in ctxs:
            c.truncate(0)
            if batched:
                self.sched.attach(c)
        try:
            gens = [c.generate_steps(p, mode="ar", max_tokens=steps + 1, ignore_eos=True) for c, p in zip(ctxs, prompts)]
            tokens = [next(g).tokens for g in gens]  # the prefills
            t0 = time.perf_counter()
            for _ in range(steps):
                for i, g in enumerate(gens):
                    tokens[i] += next(g).tokens
            seconds = time.perf_counter() - t0
            for g in gens:
                assert next(g, None) is None
        finally:
            for c in ctxs:
                self.sched.detach(c)
        return seconds, tokens

    def close(self) -> None:
        self.sched.close()
        for c in self.contexts:
            c.close()
        self.model.close()


class LlamaBatched:
    """llama.cpp's batched decode through llama-cpp-python's C bindings."""

    def __init__(self, path: Path, threads: int, max_k: int):
        import llama_cpp as L

        self.L = L
        L.llama_backend_init()
        mp = L.llama_model_default_params()
        self.model = L.llama_model_load_from_file(str(path).encode(), mp)
        cp = L.llama_context_default_params()
        cp.n_ctx = SLOT_CTX * max_k
        cp.n_batch = cp.n_ubatch = 512
        cp.n_seq_max = max_k
        cp.n_threads = cp.n_threads_batch = threads
        self.ctx = L.llama_init_from_model(self.model, cp)
        self.n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(self.model))
        self.batch = L.llama_batch_init(512, 0, max_k)
        self.mem = L.llama_get_memory(self.ctx)

    def _decode(self, rows: List[tuple]) -> None:
        b = self.batch
        for i, (tok, pos, seq, logits) in enumerate(rows):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = tok, pos, 1, logits
            b.seq_id[i][0] = seq
        b.n_tokens = len(rows)
        rc = self.L.llama_decode(self.ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")

    def _argmax(self, i: int) -> int:
        row = np.ctypeslib.as_array(self.L.llama_get_logits_ith(self.ctx, i), shape=(self.n_vocab,))
        return int(row.argmax())

    def decode(self, prompts: List[List[int]], steps: int, batched: bool = True) -> tuple[float, List[List[int]]]:
        self.L.llama_memory_clear(self.mem, True)
        nxt, pos = [], []
        for s, p in enumerate(prompts):  # prefills, one sequence each
            self._decode([(t, j, s, int(j == len(p) - 1)) for j, t in enumerate(p)])
            nxt.append(self._argmax(len(p) - 1))
            pos.append(len(p))
        tokens = [[t] for t in nxt]
        t0 = time.perf_counter()
        for _ in range(steps):
            self._decode([(nxt[s], pos[s], s, 1) for s in range(len(prompts))])
            for s in range(len(prompts)):
                nxt[s] = self._argmax(s)
                pos[s] += 1
                tokens[s].append(nxt[s])
        return time.perf_counter() - t0, tokens

    def close(self) -> None:
        self.L.llama_batch_free(self.batch)
        self.L.llama_free(self.ctx)
        self.L.llama_model_free(self.model)


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def mixed_and_breakdown(ours: Ours, runs: int) -> Dict[str, Any]:
    m, ctxs = ours.model, ours.contexts[:4]
    n_vocab, mask = m.n_vocab, m.info.mask_token_id
    prompts = prompts_for(4, n_vocab, seed=99)
    for c, p in zip(ctxs, prompts):
        c.truncate(0)
        c.forward(p, logits="none")
    block = [prompts[0][-1]] + [mask] * 31

    def cut() -> None:
        for c in ctxs:
            c.truncate(PROMPT_LEN)

    def mixed() -> None:
        forward_batch([(ctxs[0], block, "bidirectional", "all")] + [(c, [7], "causal", "last") for c in ctxs[1:]])
        cut()

    def block_alone() -> None:
        forward_batch([(ctxs[0], block, "bidirectional", "all")])

    def one_row() -> None:
        ctxs[0].forward([7], logits="last")
        cut()

    def four_sequences() -> None:
        forward_batch([(c, [7], "causal", "last") for c in ctxs])
        cut()

    def four_rows_one_sequence() -> None:
        ctxs[0].forward([7, 8, 9, 10], logits="all")
        cut()

    cases = {"mixed": mixed, "block_alone": block_alone, "forward_1": one_row, "batch_4x1": four_sequences,
             "one_seq_4_rows": four_rows_one_sequence}
    times: Dict[str, List[float]] = {k: [] for k in cases}
    ratios: List[float] = []
    for r in range(runs):
        names = list(cases)
        names = names[r % len(names):] + names[:r % len(names)]
        med: Dict[str, float] = {}
        for name in names:
            cases[name]()  # warm
            med[name] = median(timed(cases[name]) for _ in range(5))
            times[name].append(med[name])
        ratios.append(med["mixed"] / med["block_alone"])
    # A whole 4-sequence scheduler step through the Python generators.
    step_s = []
    for _ in range(runs):
        s, _tokens = ours.decode(prompts, 16, batched=True)
        step_s.append(s / 16)
    times["scheduler_step_4"] = step_s
    return {"seconds": {k: summary(v) for k, v in times.items()}, "mixed_over_block": summary(ratios)}


def measure_file(path: Path, args: argparse.Namespace) -> Dict[str, Any]:
    max_k = max(args.counts)
    ours, peer = Ours(path, args.threads, max_k), LlamaBatched(path, args.threads, max_k)
    sides: Dict[str, Callable[[List[List[int]]], tuple]] = {
        "ours batched": lambda p: ours.decode(p, args.steps, batched=True),
        "ours one by one": lambda p: ours.decode(p, args.steps, batched=False),
        "llama.cpp batched": lambda p: peer.decode(p, args.steps),
    }
    per_k: Dict[int, Dict[str, List[float]]] = {k: {s: [] for s in sides} for k in args.counts}
    agree = True
    try:
        for r in range(args.runs):
            for k in args.counts:
                prompts = prompts_for(k, ours.model.n_vocab, seed=1000 * r + k)
                names = list(sides)
                names = names[r % 3:] + names[:r % 3]
                got = {}
                for name in names:
                    seconds, tokens = sides[name](prompts)
                    per_k[k][name].append(k * args.steps / seconds)
                    got[name] = tokens
                agree &= got["ours batched"] == got["ours one by one"]
                print(f"run {r} k={k}: " + ", ".join(f"{n} {per_k[k][n][-1]:.2f} tok/s" for n in sides), flush=True)
        extra = mixed_and_breakdown(ours, args.runs)
    finally:
        ours.close()
        peer.close()
    out: Dict[str, Any] = {"batched_equals_one_by_one": agree, "counts": {}, **extra}
    base = per_k[min(args.counts)]["ours batched"]
    for k in args.counts:
        v = per_k[k]
        out["counts"][str(k)] = {
            "tok_s": {n: summary(v[n]) for n in sides},
            "batched_over_one_by_one": summary([a / b for a, b in zip(v["ours batched"], v["ours one by one"])]),
            "batched_over_llama": summary([a / b for a, b in zip(v["ours batched"], v["llama.cpp batched"])]),
            "batched_over_1_sequence": summary([a / b for a, b in zip(v["ours batched"], base)]),
            "llama_over_1_sequence": summary([a / b for a, b in zip(v["llama.cpp batched"],
                                                                    per_k[min(args.counts)]["llama.cpp batched"])]),
        }
    return out


def tables(results: Dict[str, Dict[str, Any]], args: argparse.Namespace) -> str:
    lines = []
    for name, res in results.items():
        lines += [f"### {name}, {args.threads} threads, {args.steps} decode steps, {args.runs} runs", "",
                  "| sequences | ours batched tok/s | ours one by one | llama.cpp batched | batched / one by one "
                  "| batched / llama.cpp | ours k / ours 1 | llama.cpp k / llama.cpp 1 |",
                  "|---|---|---|---|---|---|---|---|"]
        for k, c in res["counts"].items():
            t = c["tok_s"]
            lines.append(f"| {k} | {fmt(t['ours batched'])} | {fmt(t['ours one by one'])} | "
                         f"{fmt(t['llama.cpp batched'])} | {fmt(c['batched_over_one_by_one'])} | "
                         f"{fmt(c['batched_over_llama'])} | {fmt(c['batched_over_1_sequence'])} | "
                         f"{fmt(c['llama_over_1_sequence'])} |")
        s = res["seconds"]
        ms = {k: {q: v * 1e3 for q, v in s[k].items()} for k in s}
        lines += ["", f"Mixed batch (32-row diffusion block + 3 decode rows) / the block alone: "
                      f"{fmt(res['mixed_over_block'])}", "",
                  "| where a 4-sequence step goes (ms) | median (min, max) |", "|---|---|",
                  f"| one 1-row forward | {fmt(ms['forward_1'])} |",
                  f"| 4 sequences x 1 row, one forward_batch | {fmt(ms['batch_4x1'])} |",
                  f"| one sequence, 4 causal rows | {fmt(ms['one_seq_4_rows'])} |",
                  f"| scheduler step of 4, through the Python generators | {fmt(ms['scheduler_step_4'])} |",
                  f"| the 32-row block alone / with 3 decodes | {fmt(ms['block_alone'])} / {fmt(ms['mixed'])} |",
                  "", f"Batched tokens equal one-by-one tokens: {res['batched_equals_one_by_one']}", ""]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", help="folder of the 3B-shaped GGUFs (default /tmp/nld-3b; --smoke /tmp/nld-bench-smoke)")
    ap.add_argument("--types", nargs="+", default=["q4_0", "q8_0"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", help="results stem (default bench/results/bench_batching)")
    args = ap.parse_args(argv)
    folder = Path(args.dir or ("/tmp/nld-bench-smoke" if args.smoke else "/tmp/nld-3b"))
    if args.smoke:
        args.runs, args.steps = min(args.runs, 2), min(args.steps, 8)
    files = bench_vs_llama_cpp.ensure_files(folder, args.types, smoke=args.smoke)
    results = {f"{'small random' if args.smoke else '3B-shaped random'} ({t.upper()})": measure_file(p, args)
               for t, p in files.items()}
    import llama_cpp

    machine = bench_vs_llama_cpp.machine_info()
    head = (f"# Continuous batching: aggregate decode speed\n\n{time.strftime('%Y-%m-%d')}, {machine}, "
            f"nld_cpp {nld_cpp.__version__}, llama-cpp-python {llama_cpp.__version__}\n\n")
    text = head + tables(results, args)
    print(text)
    stem = Path(args.out) if args.out else (folder / "bench_batching" if args.smoke
                                            else Path(__file__).resolve().parent / "results" / "bench_batching")
    stem.with_suffix(".md").write_text(text)
    stem.with_suffix(".json").write_text(json.dumps(
        {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine, "args": vars(args),
         "versions": {"nld_cpp": nld_cpp.__version__, "llama_cpp_python": llama_cpp.__version__},
         "results": results}, indent=1))


if __name__ == "__main__":
    main()
