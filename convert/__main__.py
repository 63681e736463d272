"""Command line: python -m nld_cpp.convert HF_DIR [-o OUT.gguf] [--outtype TYPE] [--lora-out PATH | --no-lora]."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from .converter import convert_checkpoint
from .errors import ConvertError
from .tensor_encode import OUTTYPES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nld_cpp.convert",
        description="Convert a Hugging Face Nemotron-Labs-Diffusion checkpoint to GGUF "
                    "(and its drafter LoRA, if any, to a LoRA adapter GGUF).")
    parser.add_argument("hf_dir", metavar="HF_DIR",
                        help="checkpoint directory (config.json, *.safetensors, tokenizer.json)")
    parser.add_argument("-o", "--outfile", metavar="OUT.gguf",
                        help="output path (default: HF_DIR/<dirname>-<outtype>.gguf)")
    parser.add_argument("--outtype", default="f16", choices=sorted(OUTTYPES),
                        help="weight type of the matrices (norms stay f32; default f16)")
    lora = parser.add_mutually_exclusive_group()
    lora.add_argument("--lora-out", metavar="PATH",
                      help="drafter LoRA output path (default: <OUT without .gguf>.lora.gguf)")
    lora.add_argument("--no-lora", action="store_true", help="do not convert linear_spec_lora/")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = convert_checkpoint(args.hf_dir, args.outfile, args.outtype, progress=not args.no_progress,
                                    lora=not args.no_lora, lora_out=args.lora_out)
    except ConvertError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    print(f"wrote {result.path} ({result.tensor_count} tensors, {result.outtype})")
    if result.lora_path is not None:
        print(f"wrote {result.lora_path} (drafter LoRA)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
