"""HF Nemotron-Labs-Diffusion checkpoint -> GGUF converter (`python -m nld_cpp.convert`).

Public API: `convert_checkpoint`, `ConvertResult`, `ConvertError`, `OUTTYPES`.
Only numpy, tqdm and (for q8_0/q4_0) the `gguf` package's quantizer are used.
"""

from .converter import ConvertResult, convert_checkpoint, default_lora_path, default_output_path
from .errors import ConvertError
from .tensor_encode import OUTTYPES

__all__ = [
    "OUTTYPES",
    "ConvertError",
    "ConvertResult",
    "convert_checkpoint",
    "default_lora_path",
    "default_output_path",
]
