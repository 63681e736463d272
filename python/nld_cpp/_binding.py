"""The cffi binding to libnld.

Declarations are read from ``nld.h`` itself (the region between the
NLD_CDEF_BEGIN/END markers), never from a hand-copied list, so the binding
cannot drift from the C API.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import cffi

_PACKAGE_DIR = Path(__file__).resolve().parent


def header_path() -> Path:
    """The installed copy of the public C header."""
    return _PACKAGE_DIR / "nld.h"


def library_path() -> Path:
    names = {"win32": "nld.dll", "darwin": "libnld.dylib"}
    return _PACKAGE_DIR / names.get(sys.platform, "libnld.so")


def cdef_source(header_text: str) -> str:
    """The declarations cffi reads: the marked region, minus export macros."""
    match = re.search(r"/\* NLD_CDEF_BEGIN \*/(.*?)/\* NLD_CDEF_END \*/", header_text, re.S)
    if match is None:
        raise RuntimeError("nld.h has no NLD_CDEF_BEGIN/NLD_CDEF_END region")
    return match.group(1).replace("NLD_API ", "")


def _load() -> tuple[cffi.FFI, Any]:
    ffi = cffi.FFI()
    ffi.cdef(cdef_source(header_path().read_text()))
    path = os.environ.get("NLD_LIBRARY_PATH") or str(library_path())
    try:
        lib = ffi.dlopen(path)
    except OSError as exc:
        raise ImportError(f"cannot load the nld_cpp core library at {path}: {exc}") from exc
    if lib.nld_api_version() != lib.NLD_API_VERSION:
        raise ImportError("nld_cpp: the core library and nld.h disagree on the API version")
    return ffi, lib


ffi, lib = _load()


class NldError(RuntimeError):
    """A failure reported by the core. ``status`` is the nld_status code,
    ``status_name`` its name; the message says what was wrong."""

    def __init__(self, status: int, message: str):
        self.status = int(status)
        self.status_name = ffi.string(lib.nld_status_name(status)).decode()
        super().__init__(message or self.status_name)


def check(status: int) -> None:
    """Raise NldError with the core's thread-local message unless status is OK."""
    if status != lib.NLD_OK:
        raise NldError(status, ffi.string(lib.nld_last_error()).decode("utf-8", "replace"))
