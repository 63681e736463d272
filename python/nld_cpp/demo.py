"""`nld-demo` / `python -m nld_cpp.demo`: the embedded default model (the
tiny tri-mode NLD model that ships in the package, no download) answers a few
held-out prompts in every generation mode, with each mode's tokens per
forward and speed. The model is small and was trained on a toy corpus
(train/README.md): it repeats, reverses, counts and looks up keys, often
wrongly, and has barely learned arithmetic; the point is the modes, not the
answers."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

MODES = [("ar", {}), ("diffusion", {"threshold": 0.9}), ("spec", {}), ("spec-quadratic", {})]
# Held-out prompts shown by default: the first of each task (python/nld_cpp/models/held_out.json),
# for the four tasks the model has learned best (train/README.md) and one it has not.
DEFAULT_TASKS = ("repeat", "reverse", "count", "lookup", "add")


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
        items = held_out()
        chosen = [next(it for it in items if it["task"] == task) for task in DEFAULT_TASKS]
        totals = {mode: [0, 0, 0.0] for mode, _ in MODES}
        for item in chosen:
            print(f"\nuser: {item['prompt']}    (expected: {item['answer']})")
            prompt = tok.encode(render_prompt(item["prompt"]))
            for mode, kwargs in MODES:
                model.truncate(0)
                t0 = time.perf_counter()
                res = model.generate(prompt, mode=mode, max_tokens=args.max_tokens, temperature=0.0, **kwargs)
                dt = time.perf_counter() - t0
                answer = tok.decode(res.tokens).strip()
                mark = "ok" if answer == item["answer"] else "wrong"
                print(f"  {mode:15s} {answer!r:40s} {mark:5s} {len(res.tokens):3d} tokens / "
                      f"{res.n_forwards:3d} forwards = {res.tokens_per_forward:.2f} per forward")
                totals[mode][0] += len(res.tokens)
                totals[mode][1] += res.n_forwards
                totals[mode][2] += dt
        print("\nall prompts:")
        for mode, (n_tok, n_fwd, dt) in totals.items():
            print(f"  {mode:15s} {n_tok / n_fwd:.2f} tokens per forward, {n_tok / dt:.0f} tokens/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
