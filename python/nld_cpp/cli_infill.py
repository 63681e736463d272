"""`nld infill`: fill the gaps of a text by diffusion (docs/generation.md
"Infill"). The text, with each gap marked by a placeholder, is the answer
to the prompt (the chat template's assistant turn; --raw: the text follows
the prompt as plain text); every gap is --gap-tokens tokens long. Prints the
filled text; --visual redraws each block as its masks turn into tokens."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Callable


def add_parser(sub: Any, add_model_args: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("infill", help="fill the gaps of a text, both sides of each gap in view")
    add_model_args(p)
    p.add_argument("-p", "--prompt", required=True, help="the user message the text answers (or raw text with --raw)")
    p.add_argument("--text", required=True, help='the text with gaps, e.g. "a b [___] d"')
    p.add_argument("--gap", default="[___]", help="the placeholder that marks a gap (default [___])")
    p.add_argument("--gap-tokens", type=int, default=4, help="tokens per gap (default 4)")
    p.add_argument("-s", "--system", default=None, help="a system prompt")
    p.add_argument("--raw", action="store_true", help="the text follows the prompt as plain text, no chat template")
    p.add_argument("--block-length", type=int, default=None, help="denoising block (default: the model's)")
    p.add_argument("--threshold", type=float, default=None, help="confidence threshold (default 0.9; 0: fixed schedule)")
    p.add_argument("--temp", "--temperature", dest="temperature", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--visual", action="store_true", help="redraw each block as its masks turn into tokens")
    p.add_argument("--stats", action="store_true", help="print forwards and filled tokens per forward")


def cmd_infill(args: argparse.Namespace, load_model: Callable[..., Any], mask_glyph: str) -> int:
    from .models import render_prompt

    if args.gap_tokens < 1:
        raise ValueError(f"--gap-tokens must be >= 1, got {args.gap_tokens}")
    model = load_model(args.model, args.threads, args.ctx_size, cache_types=(args.cache_type_k, args.cache_type_v),
                       n_gpu_layers=args.n_gpu_layers)
    with model:
        if args.raw:
            prefix = args.prompt
        else:
            try:
                messages = ([{"role": "system", "content": args.system}] if args.system else []) + \
                           [{"role": "user", "content": args.prompt}]
                prefix = model.apply_chat_template(messages, enable_thinking=False)
            except ValueError:  # no template in the file: the format the embedded model was trained on
                prefix = render_prompt(args.prompt, (), args.system)
        canvas, spans = model.infill_canvas(args.text, gap=args.gap, gap_tokens=args.gap_tokens)
        kw = dict(block_length=args.block_length, threshold=args.threshold, temperature=args.temperature,
                  seed=args.seed)
        t0 = time.perf_counter()
        tokens: list = []
        n_forwards = 0
        tty = sys.stdout.isatty() and args.visual
        for step_no, step in enumerate(model.infill_steps(model.tokenize(prefix), canvas, **kw), 1):
            tokens += step.tokens
            n_forwards = step.n_forwards
            if tty and step.canvas is not None:
                pieces = model.canvas_view(step.canvas, step_no)["pieces"]
                cells = "".join(mask_glyph if piece is None else piece for piece in pieces)
                decided = next((k for k, t in enumerate(step.canvas) if t == model.info.mask_token_id),
                               len(step.canvas))
                before = model.detokenize(tokens[:max(0, len(tokens) - decided)])[-50:].replace("\n", " ")
                sys.stdout.write(f"\r\x1b[K{before} \x1b[7m{cells}\x1b[0m  step {step_no}")
                sys.stdout.flush()
                time.sleep(0.05)  # a tiny model fills in milliseconds: let a person see it
        text = model.detokenize(tokens)
        sys.stdout.write(("\r\x1b[K" if tty else "") + text + "\n")
        if args.stats:
            filled = sum(b - a for a, b in spans)
            wall = time.perf_counter() - t0
            fills = ", ".join(repr(model.detokenize(tokens[a:b])) for a, b in spans)
            sys.stderr.write(f"[infill: {filled} tokens in {len(spans)} gaps ({fills}), {n_forwards} forwards, "
                             f"{filled / max(n_forwards, 1):.2f} tokens/forward, {wall * 1e3:.0f} ms]\n")
    return 0
