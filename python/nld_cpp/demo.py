"""`nld-demo` / `python -m nld_cpp.demo`: the end-to-end path on a tiny
random model generated on the spot (no download): generate an HF-layout NLD
checkpoint, convert it to GGUF, load it in the core, run a causal prefill, a
bidirectional block pass and greedy generation. The weights are random, so
the generated tokens are meaningless; the demo shows the pipeline works."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nld-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--outtype", default="f16", choices=["f32", "f16", "bf16", "q8_0", "q4_0"])
    parser.add_argument("--tokens", type=int, default=24, help="tokens to generate greedily")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)

    from . import Model
    from .convert import convert_checkpoint
    from .testing.checkpoints import make_checkpoint

    with tempfile.TemporaryDirectory(prefix="nld-demo-") as tmp:
        t0 = time.perf_counter()
        ckpt = make_checkpoint(Path(tmp) / "tiny-nld")
        gguf = convert_checkpoint(ckpt, Path(tmp) / f"tiny-nld-{args.outtype}.gguf", outtype=args.outtype,
                                  progress=False).path
        print(f"generated and converted a tiny random NLD checkpoint -> {Path(gguf).name} "
              f"({Path(gguf).stat().st_size / 1e6:.2f} MB, {time.perf_counter() - t0:.1f} s)")
        with Model(gguf, n_threads=args.threads) as model:
            info = model.info
            print(f"model: {info.n_layer} layers, hidden {info.n_embd}, heads {info.n_head}/{info.n_head_kv} "
                  f"x {info.head_dim}, vocab {info.n_vocab}, YaRN factor {info.rope_scaling_factor:g}, "
                  f"diffusion block {info.block_size}, mask id {info.mask_token_id}")
            prompt = [10, 1000 + ord("H"), 1000 + ord("i"), 11]
            t0 = time.perf_counter()
            out = model.generate_greedy(prompt, max_new_tokens=args.tokens, stop_at_eos=False)
            dt = time.perf_counter() - t0
            print(f"greedy AR from prompt {prompt}: {out}")
            print(f"  {len(out)} tokens in {dt * 1e3:.1f} ms ({len(out) / dt:.0f} tok/s)")
            block = [out[-1]] + [info.mask_token_id] * 7
            logits = model.forward(block, kind="bidirectional", logits="all")
            print(f"bidirectional block pass over {model.n_cached} cached tokens: "
                  f"argmax per position {np.argmax(logits, axis=1).tolist()} (cache still {model.n_cached})")
    print("note: the weights are random, so these tokens are meaningless; "
          "the trained default model replaces this demo.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
