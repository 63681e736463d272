"""The `nld` command: `run` (one answer, streamed), `chat` (an interactive
chat with history), `infill` (fill the gaps of a text, cli_infill.py),
`info` (what a model file holds). Without -m, run and
chat use the embedded default model. Errors are one line on stderr with
exit code 1, never a traceback.

In a chat: /mode MODE switches the generation mode, /reset clears the
history (and the cache), /stats shows the last answer's statistics,
/help lists the commands; Ctrl-C stops the current answer and stays in the
chat, Ctrl-D (or /quit) leaves.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from .model import CACHE_TYPES

CACHE_TYPE_NAMES = tuple(CACHE_TYPES)

MODES = ("ar", "diffusion", "spec", "spec-quadratic", "auto")
FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 7: "Q8_0", 15: "Q4_K_M", 32: "BF16"}
# general.architecture -> the GGUF layout it stands for (docs/gguf-keys.md, "Layouts we read")
LAYOUTS = {"mistral3": "nld_cpp's (q/k rows permuted, RoPE pairs adjacent)",
           "dream": "a llama.cpp fork's NLD converter (q/k rows in the Hugging Face order, re-ordered at load; "
                    "no drafter inside: pass --lora)"}
MASK_GLYPH = "\u2591"  # a light shade for undecided positions of the canvas


class CliError(Exception):
    """A problem to report in one line."""


def _block_length(text: str) -> Any:
    from .generation import parse_block_length

    try:
        return parse_block_length(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", help="GGUF model file (default: the embedded tiny model)")
    p.add_argument("-t", "--threads", type=int, default=0, help="compute threads (0: all cores)")
    p.add_argument("-c", "--ctx-size", type=int, default=0, help="context size in tokens (0: the model's, <= 4096)")
    p.add_argument("-ctk", "--cache-type-k", choices=CACHE_TYPE_NAMES, default="f16",
                   help="KV cache type for keys (default f16)")
    p.add_argument("-ctv", "--cache-type-v", choices=CACHE_TYPE_NAMES, default="f16",
                   help="KV cache type for values (default f16)")
    p.add_argument("-ngl", "--n-gpu-layers", type=int, default=0,
                   help="layers on a GPU (default 0: CPU; this version has no GPU kernels)")


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", choices=MODES, default="ar", help="generation mode (default ar)")
    p.add_argument("-n", "--max-tokens", type=int, default=256, help="tokens to generate at most")
    p.add_argument("--temp", "--temperature", dest="temperature", type=float, default=0.0,
                   help="sampling temperature (0: greedy, the default)")
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default: random)")
    p.add_argument("--block-length", type=_block_length, default=None,
                   help='diffusion/speculation block (default: the model\'s); "auto" with --mode spec: the draft '
                        "length chosen per round (auto: the longest draft)")
    p.add_argument("--threshold", type=float, default=None,
                   help="confidence threshold (default: 0.9 diffusion, 0 speculation)")
    p.add_argument("--no-lora", action="store_true", help="speculation drafts without the drafter LoRA")
    p.add_argument("--think", action="store_true", help="let the model think before answering")
    p.add_argument("--visual", action="store_true", help="diffusion: redraw the block as masks turn into tokens")
    p.add_argument("--stats", action="store_true", help="print tokens per forward and speed after the answer")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nld", description="Run Nemotron-Labs-Diffusion models locally.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,chat,infill,info}")
    run = sub.add_parser("run", help="answer one prompt, streamed to stdout")
    _add_model_args(run)
    run.add_argument("-p", "--prompt", required=True, help="the user message (or raw text with --raw)")
    run.add_argument("-s", "--system", default=None, help="a system prompt")
    run.add_argument("--raw", action="store_true", help="complete the prompt as plain text, no chat template")
    _add_sampling_args(run)
    chat = sub.add_parser("chat", help="interactive chat with history")
    _add_model_args(chat)
    chat.add_argument("-s", "--system", default=None, help="a system prompt")
    _add_sampling_args(chat)
    from .cli_infill import add_parser as add_infill

    add_infill(sub, _add_model_args)
    info = sub.add_parser("info", help="describe a model file")
    info.add_argument("model", nargs="?", help="GGUF model file (default: the embedded tiny model)")
    return parser


def _model_path(arg: Optional[str]) -> Path:
    if arg:
        path = Path(arg)
        if not path.is_file():
            raise CliError(f"model file not found: {arg}")
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                raise CliError(f"{arg} is not a GGUF file (it does not start with the GGUF magic)")
        return path
    from .models import default_model_path

    return default_model_path()


def load_model(arg: Optional[str], threads: int = 0, ctx: int = 0, quiet: bool = False,
               cache_types: tuple = ("f16", "f16"), n_gpu_layers: int = 0) -> Any:
    """Load with a progress line on stderr for files that take a moment."""
    from . import Model, NldError

    path = _model_path(arg)
    size = path.stat().st_size
    done = threading.Event()

    def spinner() -> None:
        frames, i = "|/-\\", 0
        while not done.wait(0.2):
            sys.stderr.write(f"\rloading {path.name} ({size / 1e9:.1f} GB) {frames[i % 4]}")
            sys.stderr.flush()
            i += 1

    show = not quiet and size > 200e6 and sys.stderr.isatty()
    thread = threading.Thread(target=spinner, daemon=True) if show else None
    if thread:
        thread.start()
    t0 = time.perf_counter()
    try:
        model = Model(path, n_ctx=ctx, n_threads=threads, cache_type_k=cache_types[0], cache_type_v=cache_types[1],
                      n_gpu_layers=n_gpu_layers)
    except NldError as exc:
        raise CliError(str(exc)) from None
    finally:
        done.set()
        if thread:
            thread.join()
            sys.stderr.write(f"\rloaded {path.name} in {time.perf_counter() - t0:.1f} s\x1b[K\n")
    return model


def _gen_kwargs(args: argparse.Namespace, mode: str) -> Dict[str, Any]:
    kw: Dict[str, Any] = dict(mode=mode, max_tokens=args.max_tokens, temperature=args.temperature,
                              top_k=args.top_k, top_p=args.top_p, block_length=args.block_length,
                              threshold=args.threshold, use_lora=not args.no_lora)
    if args.seed is not None:
        kw["seed"] = args.seed
    return kw


def _print_stats(stats: Dict[str, Any], out: Any = sys.stderr) -> None:
    acc = stats["accepted_lengths"]
    extra = f", mean accepted {sum(acc) / len(acc):.2f}" if acc else ""
    if stats["mode"] == "auto" or len(set(stats.get("draft_lengths") or [])) > 1:  # what the cost model chose
        rounds, ks = stats["rounds"], stats["draft_lengths"]
        extra += f", {rounds['ar']} AR steps + {rounds['spec']} rounds" + (f" (draft {min(ks)}-{max(ks)})" if ks else "")
    ttft = stats["time_to_first_token_s"]
    out.write(f"[{stats['mode']}: {stats['usage']['completion_tokens']} tokens, {stats['forwards']} forwards, "
              f"{stats['tokens_per_forward']:.2f} tokens/forward{extra}, {stats['tokens_per_s']:.1f} tokens/s, "
              f"first token {ttft * 1e3 if ttft is not None else 0:.0f} ms]\n")
    out.flush()


def stream_answer(model: Any, messages: Optional[List[Dict[str, str]]], raw: Optional[str],
                  args: argparse.Namespace, mode: str) -> tuple:
    """Streams one answer to stdout; returns (text, stats). Ctrl-C cancels it."""
    if args.visual and mode == "diffusion":
        return _visual_answer(model, messages, raw, args)
    kw = _gen_kwargs(args, mode)
    if raw is not None:
        chunks = model.create_completion(raw, stream=True, **kw)
        get = lambda c: (c["choices"][0]["text"], False)  # noqa: E731
    else:
        chunks = model.create_chat_completion(messages, stream=True, enable_thinking=args.think, **kw)
        get = lambda c: ((c["choices"][0]["delta"].get("content") or c["choices"][0]["delta"]
                          .get("reasoning_content") or ""), "reasoning_content" in c["choices"][0]["delta"])  # noqa: E731
    text, stats, finish = "", None, None
    with ctrl_c_cancels(model):
        try:
            for chunk in chunks:
                piece, is_reasoning = get(chunk)
                if piece:
                    sys.stdout.write(f"\x1b[2m{piece}\x1b[0m" if is_reasoning and sys.stdout.isatty() else piece)
                    sys.stdout.flush()
                    if not is_reasoning:
                        text += piece
                if "nld" in chunk:
                    stats = dict(chunk["nld"], usage=chunk["usage"])
                    finish = chunk["choices"][0]["finish_reason"]
        finally:
            chunks.close()  # ends the core's generator now, whatever happened
    sys.stdout.write(" [stopped]\n" if finish == "cancelled" else "\n")
    sys.stdout.flush()
    return text, stats


@contextlib.contextmanager
def ctrl_c_cancels(model: Any) -> Iterator[None]:
    """While an answer streams, Ctrl-C cancels the generation (it ends
    within one step, with its statistics) instead of raising."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda *_: model.cancel())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _visual_answer(model: Any, messages: Optional[List[Dict[str, str]]], raw: Optional[str],
                   args: argparse.Namespace) -> tuple:
    """Diffusion with the block canvas redrawn in place: decided tokens as
    text, masked positions as shaded cells; each step's commits are counted."""
    tok = model.tokenizer
    prompt_text = raw if raw is not None else model.apply_chat_template(messages, enable_thinking=args.think)
    ids = model.tokenize(prompt_text)
    kw = _gen_kwargs(args, "diffusion")
    kw.pop("temperature")
    mask = model.info.mask_token_id
    committed: List[int] = []
    t0, steps, n_forwards = time.perf_counter(), 0, 0
    gen = model.generate_steps(ids, temperature=args.temperature, **kw)
    tty = sys.stdout.isatty()
    stopped = False
    with ctrl_c_cancels(gen):
        for step in gen:
            stopped = step.finish_reason == "cancelled"
            steps += 1
            n_forwards = step.n_forwards
            committed += step.tokens
            if step.canvas is not None and tty:
                pieces = model.canvas_view(step.canvas, steps)["pieces"]
                cells = "".join(MASK_GLYPH if p is None else p for p in pieces)
                # the block's decided prefix is already emitted: show the text before the block
                prefix = next((k for k, t in enumerate(step.canvas) if t == mask), len(step.canvas))
                shown = tok.decode(committed[:max(0, len(committed) - prefix)])[-60:].replace("\n", " ")
                decided = sum(t != mask for t in step.canvas)
                sys.stdout.write(f"\r\x1b[K{shown} \x1b[7m{cells}\x1b[0m  step {steps}: "
                                 f"{decided}/{len(step.canvas)} decided, +{len(step.tokens)} emitted")
                sys.stdout.flush()
                time.sleep(0.03)  # let a person see the denoising of a tiny, fast model
    text = tok.decode(committed)
    sys.stdout.write(("\r\x1b[K" if tty else "") + text + (" [stopped]\n" if stopped else "\n"))
    sys.stdout.flush()
    wall = time.perf_counter() - t0
    stats = {"mode": "diffusion", "usage": {"completion_tokens": len(committed)}, "forwards": n_forwards,
             "tokens_per_forward": len(committed) / n_forwards if n_forwards else 0.0, "accepted_lengths": [],
             "time_to_first_token_s": None, "tokens_per_s": len(committed) / wall if wall else 0.0}
    return text, stats


def cmd_run(args: argparse.Namespace) -> int:
    model = load_model(args.model, args.threads, args.ctx_size,
                       cache_types=(args.cache_type_k, args.cache_type_v), n_gpu_layers=args.n_gpu_layers)
    with model:
        messages = None
        if not args.raw:
            messages = ([{"role": "system", "content": args.system}] if args.system else []) + \
                       [{"role": "user", "content": args.prompt}]
        _, stats = stream_answer(model, messages, args.prompt if args.raw else None, args, args.mode)
        if args.stats and stats:
            _print_stats(stats)
    return 0


CHAT_HELP = """commands:
  /mode [ar|diffusion|spec|spec-quadratic|auto]   show or switch the generation mode
  /reset                                      forget the conversation
  /stats                                      statistics of the last answer
  /help                                       this list
  /quit or Ctrl-D                             leave (Ctrl-C stops an answer)"""


def cmd_chat(args: argparse.Namespace) -> int:
    model = load_model(args.model, args.threads, args.ctx_size,
                       cache_types=(args.cache_type_k, args.cache_type_v), n_gpu_layers=args.n_gpu_layers)
    with model:
        system = [{"role": "system", "content": args.system}] if args.system else []
        history: List[Dict[str, str]] = list(system)
        mode, last_stats = args.mode, None
        print(f"nld chat: {Path(model.model_path).name}, mode {mode}. /help for commands, Ctrl-D to leave.")
        while True:
            try:
                line = input("> ")
            except EOFError:
                print()
                return 0
            except KeyboardInterrupt:
                print()
                continue
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                word, _, rest = line.partition(" ")
                rest = rest.strip()
                if word in ("/quit", "/exit"):
                    return 0
                if word == "/help":
                    print(CHAT_HELP)
                elif word == "/reset":
                    history = list(system)
                    model.truncate(0)
                    print("(conversation cleared)")
                elif word == "/stats":
                    if last_stats:
                        _print_stats(last_stats, sys.stdout)
                    else:
                        print("(no answer yet)")
                elif word == "/mode":
                    if not rest:
                        print(f"mode: {mode} (one of {', '.join(MODES)})")
                    elif rest in MODES:
                        mode = rest
                        print(f"mode: {mode}")
                    else:
                        print(f"unknown mode {rest!r}; one of {', '.join(MODES)}")
                else:
                    print(f"unknown command {word}; /help lists them")
                continue
            history.append({"role": "user", "content": line})
            try:
                text, stats = stream_answer(model, history, None, args, mode)
            except KeyboardInterrupt:  # before the first token: drop the turn
                history.pop()
                print(" [stopped]")
                continue
            except (ValueError, RuntimeError) as exc:  # e.g. the conversation no longer fits the context
                history.pop()
                print(f"error: {exc}")
                continue
            history.append({"role": "assistant", "content": text})
            last_stats = stats or last_stats
            if args.stats and stats:
                _print_stats(stats)


def cmd_info(args: argparse.Namespace) -> int:
    model = load_model(args.model, quiet=True)
    with model:
        i = model.info
        path = Path(model.model_path)
        arch = model.metadata_string("general.architecture")
        modes = ["ar"] + (["diffusion", "spec", "spec-quadratic", "auto"] if i.has_diffusion else [])
        try:
            template = model.metadata_string("tokenizer.chat_template")
            template_line = f"yes ({len(template)} characters)"
        except KeyError:
            template_line = "none (chat uses --raw, or chat_format='chatml' in Python)"
        rows = [
            ("file", f"{path} ({path.stat().st_size / 1e6:.1f} MB)"),
            ("architecture", arch),
            ("layout", LAYOUTS.get(arch, "unknown")),
            ("quantization", FILE_TYPES.get(i.file_type, f"file_type {i.file_type}")),
            ("layers / hidden / ffn", f"{i.n_layer} / {i.n_embd} / {i.n_ff}"),
            ("heads (q / kv) x dim", f"{i.n_head} / {i.n_head_kv} x {i.head_dim}"),
            ("vocabulary", str(i.n_vocab)),
            ("training context", str(i.n_ctx_train)),
            ("rope", f"theta {i.rope_freq_base:g}, YaRN factor {i.rope_scaling_factor:g}, "
                     f"original context {i.rope_orig_ctx}"),
            ("tokens", f"bos {i.bos_token_id}, eos {i.eos_token_id}, mask {i.mask_token_id}"),
            ("diffusion block", str(i.block_size) if i.has_diffusion else "none (AR only)"),
            ("drafter LoRA", f"rank {i.lora_rank}" if model.has_lora else "none (speculation drafts use base weights)"),
            ("modes", ", ".join(modes)),
            ("chat template", template_line),
        ]
        from .memory import available_memory, format_bytes, memory_table, table_contexts

        est = model.memory_estimate()
        avail = available_memory()
        rows += [
            ("weights in memory", f"{format_bytes(est['weights_bytes'])} ({format_bytes(est['weights_copy_bytes'])} "
                                  f"repacked copies, {format_bytes(est['weights_file_bytes'])} file pages used in place)"),
            ("available memory", "unknown" if avail is None else format_bytes(avail)),
        ]
        width = max(len(k) for k, _ in rows)
        for k, v in rows:
            print(f"{k:<{width}}  {v}")
        contexts = table_contexts(i.n_ctx_train)
        table = memory_table(model.memory_estimate, contexts)
        print("memory by n_ctx and KV cache type (keys and values alike): weights + KV cache + "
              "the activations of a min(n_ctx, 512)-row forward")
        print(f"{'n_ctx':>8}" + "".join(f"{t:>12}" for t in CACHE_TYPE_NAMES))
        for n_ctx, cells in zip(contexts, table):
            print(f"{n_ctx:>8}" + "".join(f"{format_bytes(c['total_bytes']):>12}" for c in cells))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from .cli_infill import cmd_infill

    commands = {"run": cmd_run, "chat": cmd_chat, "info": cmd_info,
                "infill": lambda a: cmd_infill(a, load_model, MASK_GLYPH)}
    try:
        return commands[args.command](args)
    except CliError as exc:
        print(f"nld: error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"nld: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
