"""`nld-demo` / `python -m nld_cpp.demo`: the embedded default model (the
tiny tri-mode NLD model that ships in the package, no download) answers a few
held-out prompts in every generation mode, with each mode's tokens per
forward and speed, and a three-turn chat answered turn by turn. The model is
small and was trained on a toy corpus (train/README.md): it fills templates,
repeats and reverses, often wrongly, and has barely learned arithmetic or
sorting; the point is the modes, not the answers."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

MODES = [("ar", {}), ("diffusion", {"threshold": 0.9}), ("spec", {}), ("spec-quadratic", {}), ("auto", {})]
# Held-out conversations shown by default (python/nld_cpp/models/held_out.json):
# the first of each of these tasks, then the first three-turn chat.
DEFAULT_TASKS = ("fill", "repeat", "reverse", "copy", "lookup", "chat")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nld-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", "--model", help="a GGUF model (default: the embedded tiny model)")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=0, help="compute threads (0: all cores)")
    args = parser.parse_args(argv)

    from . import Model
    from .models import default_model_path, held_out, render_prompt
    from .tokenizer import Tokenizer

    path = Path(args.model) if args.model else default_model_path()
    with Model(path, n_ctx=512, n_threads=args.threads) as model:
        info = model.info
        tok = Tokenizer.from_model(model)
        print(f"{path.name}: {info.n_layer} layers, hidden {info.n_embd}, heads {info.n_head}/{info.n_head_kv} "
              f"x {info.head_dim}, vocab {info.n_vocab}, diffusion block {info.block_size}, "
              f"drafter LoRA {'rank ' + str(info.lora_rank) if model.has_lora else 'none'}")
        model.calibrate()  # auto's cost model, measured once here rather than inside the first timed answer
        items = held_out()
        chosen = [next(it for it in items if it["task"] == task) for task in DEFAULT_TASKS]
        totals = {mode: [0, 0, 0.0] for mode, _ in MODES}
        for item in chosen:
            if item["system"]:
                print(f"\nsystem: {item['system']}")
            histories: dict = {mode: [] for mode, _ in MODES}  # each mode's own earlier answers
            for turn in item["turns"]:
                print(f"\nuser: {turn['user']}    (expected: {turn['answer']})")
                for mode, kwargs in MODES:
                    prompt = tok.encode(render_prompt(turn["user"], histories[mode], item["system"]))
                    model.truncate(0)
                    t0 = time.perf_counter()
                    res = model.generate(prompt, mode=mode, max_tokens=args.max_tokens, temperature=0.0, **kwargs)
                    dt = time.perf_counter() - t0
                    answer = tok.decode(res.tokens, skip_special_tokens=True).strip()
                    histories[mode].append((turn["user"], answer))
                    mark = "ok" if answer == turn["answer"] else "wrong"
                    print(f"  {mode:15s} {answer!r:40s} {mark:5s} {len(res.tokens):3d} tokens / "
                          f"{res.n_forwards:3d} forwards = {res.tokens_per_forward:.2f} per forward")
                    totals[mode][0] += len(res.tokens)
                    totals[mode][1] += res.n_forwards
                    totals[mode][2] += dt
        print("\nall prompts (auto: per step an AR step or a speculation round, whichever its measured "
              "costs say is faster here):")
        for mode, (n_tok, n_fwd, dt) in totals.items():
            print(f"  {mode:15s} {n_tok / n_fwd:.2f} tokens per forward, {n_tok / dt:.0f} tokens/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
