"""The command line of `nld-server`, spelled as llama-server spells it where
it has the flag, each mirrored by an environment variable (NLD_ARG_*, as
llama-server's LLAMA_ARG_*); a flag on the command line wins over the
variable."""

from __future__ import annotations

import argparse
import os
from typing import Any, List, Optional, Sequence

from ..generation import MODES, parse_block_length
from ..model import CACHE_TYPES

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _block_length(text: str) -> Any:
    try:
        return parse_block_length(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _flag(parser: argparse.ArgumentParser, *names: str, env: str, help: str, **kw: Any) -> None:
    """add_argument whose default comes from the environment variable `env`."""
    value = os.environ.get(env)
    if value is not None:
        if kw.get("action") == "store_true":
            if value.strip().lower() not in _TRUE | _FALSE:
                parser.error(f"{env}={value!r}: expected 1/0, true/false, yes/no or on/off")
            kw["default"] = value.strip().lower() in _TRUE
        elif kw.get("action") == "append":
            kw["default"] = [v for v in value.split(",") if v]
        else:
            kw["default"] = value
    shown = kw.get("default")
    suffix = f" (env: {env}" + (f"; default: {shown}" if shown not in (None, False, []) else "") + ")"
    parser.add_argument(*names, help=help + suffix, **kw)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nld-server",
        description="A llama-server compatible HTTP server for Nemotron-Labs-Diffusion models: the OpenAI API "
                    "(/v1/chat/completions, /v1/completions, /v1/models), llama-server's native routes and a web "
                    "page at /. Every request may choose its generation mode.")
    _flag(p, "-m", "--model", env="NLD_ARG_MODEL", help="GGUF model file (default: the embedded tiny model)")
    _flag(p, "--lora", env="NLD_ARG_LORA", help="drafter LoRA GGUF for self-speculation "
          "(default: <model>.lora.gguf beside the model when present; '' for none)")
    _flag(p, "--host", env="NLD_ARG_HOST", default="127.0.0.1",
          help="address to listen on; anything but loopback exposes the server to the network")
    _flag(p, "--port", env="NLD_ARG_PORT", type=int, default=8080, help="port to listen on")
    _flag(p, "-c", "--ctx-size", env="NLD_ARG_CTX_SIZE", type=int, default=0,
          help="context size in tokens shared by the slots, each gets ctx-size / parallel "
               "(0: each slot gets min(the model's training context, 4096))")
    _flag(p, "-t", "--threads", env="NLD_ARG_THREADS", type=int, default=0, help="compute threads (0: all cores)")
    _flag(p, "-ngl", "--n-gpu-layers", env="NLD_ARG_N_GPU_LAYERS", type=int, default=0,
          help="layers on a GPU (0: CPU; this version has no GPU kernels and refuses more, naming why)")
    _flag(p, "-ctk", "--cache-type-k", env="NLD_ARG_CACHE_TYPE_K", choices=list(CACHE_TYPES), default="f16",
          help="KV cache type for keys, every slot")
    _flag(p, "-ctv", "--cache-type-v", env="NLD_ARG_CACHE_TYPE_V", choices=list(CACHE_TYPES), default="f16",
          help="KV cache type for values, every slot")
    _flag(p, "-np", "--parallel", env="NLD_ARG_N_PARALLEL", type=int, default=1,
          help="number of slots: requests served at the same time, each with its own KV cache")
    _flag(p, "-b", "--batch-size", env="NLD_ARG_BATCH", type=int, default=512,
          help="rows of one batched forward over the slots (continuous batching's budget per step)")
    _flag(p, "-ub", "--ubatch-size", env="NLD_ARG_UBATCH", type=int, default=512,
          help="rows of one prompt chunk: longer prompts are prefilled over several steps while the others decode")
    _flag(p, "-nocb", "--no-cont-batching", env="NLD_ARG_NO_CONT_BATCHING", action="store_true",
          help="step the slots one after another instead of batching their forwards")
    _flag(p, "--queue-size", env="NLD_ARG_QUEUE_SIZE", type=int, default=64,
          help="requests that may wait for a slot; beyond it the server answers 503 with Retry-After")
    _flag(p, "-a", "--alias", env="NLD_ARG_ALIAS", help="the model id clients see (default: the file name)")
    _flag(p, "--api-key", env="NLD_API_KEY", action="append", default=[],
          help="API key clients must send (Authorization: Bearer KEY or X-Api-Key: KEY); repeatable, or a "
               "comma-separated list in the variable. /health, /v1/models and the web page stay public")
    _flag(p, "--api-key-file", env="NLD_ARG_API_KEY_FILE", help="a file with one API key per line")
    _flag(p, "--chat-template-file", env="NLD_ARG_CHAT_TEMPLATE_FILE",
          help="a jinja chat template to use instead of the model's (rendered in the same sandbox)")
    _flag(p, "--mode", env="NLD_ARG_MODE", choices=list(MODES), default="ar",
          help="generation mode of requests that name none")
    _flag(p, "--block-length", env="NLD_ARG_BLOCK_LENGTH", type=_block_length,
          help='block length of requests that give none (default: the model\'s); "auto" with modes spec and '
               "auto: the draft length chosen per round")
    _flag(p, "--threshold", env="NLD_ARG_THRESHOLD", type=float,
          help="confidence threshold of requests that give none (default: 0.9 diffusion, 0 speculation)")
    _flag(p, "--metrics", env="NLD_ARG_ENDPOINT_METRICS", action="store_true",
          help="serve Prometheus metrics at /metrics")
    _flag(p, "--no-webui", env="NLD_ARG_NO_WEBUI", action="store_true", help="do not serve the web page at /")
    _flag(p, "--max-body-size", env="NLD_ARG_MAX_BODY_SIZE", type=int, default=8 * 1024 * 1024,
          help="largest request body in bytes; larger ones get 413")
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, lo in (("port", 0), ("parallel", 1), ("queue_size", 0), ("max_body_size", 1), ("ctx_size", 0),
                     ("threads", 0), ("batch_size", 1), ("ubatch_size", 1)):
        if getattr(args, name) < lo:
            parser.error(f"--{name.replace('_', '-')} must be >= {lo}, got {getattr(args, name)}")
    if args.ctx_size and args.ctx_size // args.parallel < 2:
        parser.error(f"--ctx-size {args.ctx_size} leaves under 2 tokens for each of {args.parallel} slots")
    for name in ("cache_type_k", "cache_type_v"):  # a value from the environment skips argparse's choices
        if getattr(args, name) not in CACHE_TYPES:
            parser.error(f"--{name.replace('_', '-')} must be one of {', '.join(CACHE_TYPES)}, got {getattr(args, name)!r}")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        parser.error(f"--threshold must be in [0, 1], got {args.threshold}")
    if args.block_length == "auto" and args.mode not in ("spec", "auto"):
        parser.error(f'--block-length auto applies to --mode spec and auto, not {args.mode}')
    keys: List[str] = [k for k in args.api_key if k]
    if args.api_key_file:
        try:
            with open(args.api_key_file, encoding="utf-8") as f:
                keys += [line.strip() for line in f if line.strip()]
        except OSError as exc:
            parser.error(f"--api-key-file: cannot read {args.api_key_file}: {exc.strerror}")
    args.api_keys = keys
    args.chat_template = None
    if args.chat_template_file:
        try:
            with open(args.chat_template_file, encoding="utf-8") as f:
                args.chat_template = f.read()
        except OSError as exc:
            parser.error(f"--chat-template-file: cannot read {args.chat_template_file}: {exc.strerror}")
    return args
