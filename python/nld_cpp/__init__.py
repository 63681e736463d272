"""nld_cpp: a local runtime for Nemotron-Labs-Diffusion tri-mode language models.

The public API is :class:`Model` (load a GGUF, run forwards, generate) and
:class:`NldError` (every failure of the core); :class:`Scheduler` batches
the generations of several contexts into shared forwards; :func:`memory_estimate`
says what a model and a context would take before loading (docs/memory.md).
All are imported lazily so that ``python -m nld_cpp.convert`` works without
loading the native library.
"""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Model", "ModelInfo", "NldError", "Scheduler", "available_memory", "cuda_device_count", "memory_estimate",
           "__version__"]

if TYPE_CHECKING:
    from ._binding import NldError
    from .memory import available_memory, memory_estimate
    from .model import Model, ModelInfo
    from .scheduler import Scheduler


def __getattr__(name: str) -> Any:
    if name == "NldError":
        from ._binding import NldError

        return NldError
    if name in ("Model", "ModelInfo"):
        from . import model

        return getattr(model, name)
    if name in ("memory_estimate", "available_memory"):
        from . import memory

        return getattr(memory, name)
    if name == "cuda_device_count":  # CUDA devices the core sees; -1: built without CUDA
        from ._binding import lib

        return lambda: int(lib.nld_cuda_device_count())
    if name == "Scheduler":
        from .scheduler import Scheduler

        return Scheduler
    raise AttributeError(f"module 'nld_cpp' has no attribute {name!r}")
