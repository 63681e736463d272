"""The cost model behind mode "auto" (docs/generation.md "Auto"): what a
forward of 1 .. 32 rows costs on this machine, measured once per model file,
thread count, cache types and CPU, and kept on disk in the platform's cache
directory so that later loads skip the measurement.

Environment: ``NLD_CALIBRATION=off`` skips the measurement (the core starts
from a guess and learns from the forwards it runs); ``NLD_CACHE_DIR`` moves
the cache directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from ._binding import check, ffi, lib

CALIBRATION_SECONDS = 1.0  # the measurement's budget
_FORMAT = 1  # bumped when the stored layout changes


def cache_dir() -> Path:
    """Where measurements are kept: $NLD_CACHE_DIR, else the platform's
    cache directory (XDG_CACHE_HOME or ~/.cache; ~/Library/Caches on macOS;
    %LOCALAPPDATA% on Windows) under nld_cpp/."""
    if os.environ.get("NLD_CACHE_DIR"):
        return Path(os.environ["NLD_CACHE_DIR"])
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    elif os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "nld_cpp"


def calibration_enabled() -> bool:
    return os.environ.get("NLD_CALIBRATION", "on").strip().lower() not in ("off", "0", "no", "false")


def get_costs(ctx: Any) -> dict:
    """The context's cost model: rows, causal_s, draft_s (seconds per
    forward at those rows), step_overhead_s, adapt, measured."""
    raw = ffi.new("nld_costs *")
    check(lib.nld_context_get_costs(ctx, raw))
    n = lib.NLD_COST_SIZES
    return {"rows": [raw.rows[i] for i in range(n)], "causal_s": [raw.causal_s[i] for i in range(n)],
            "draft_s": [raw.draft_s[i] for i in range(n)], "step_overhead_s": raw.step_overhead_s,
            "adapt": bool(raw.adapt), "measured": bool(raw.measured)}


def set_costs(ctx: Any, costs: dict, adapt: bool | None = None) -> None:
    """Installs a cost model given as get_costs returns it (rows must be the
    core's 1, 2, 4, 8, 16, 32; draft_s defaults to causal_s, the overhead to
    0). adapt (default: the dict's, else False) lets real forwards correct it."""
    n = lib.NLD_COST_SIZES
    rows = list(costs.get("rows", range(n)))
    expected = [2 ** i for i in range(n)]
    if "rows" in costs and rows != expected:
        raise ValueError(f"costs rows must be {expected}, got {rows}")
    causal = [float(x) for x in costs["causal_s"]]
    draft = [float(x) for x in costs.get("draft_s", causal)]
    if len(causal) != n or len(draft) != n:
        raise ValueError(f"costs causal_s and draft_s must have {n} entries")
    raw = ffi.new("nld_costs *")
    for i in range(n):
        raw.causal_s[i], raw.draft_s[i] = causal[i], draft[i]
    raw.step_overhead_s = float(costs.get("step_overhead_s", 0.0))
    raw.adapt = 1 if (costs.get("adapt", False) if adapt is None else adapt) else 0
    check(lib.nld_context_set_costs(ctx, raw))


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cache_key(model_path: str, n_threads: int, cache_types: tuple[str, str], has_lora: bool) -> str:
    """What the measurement depends on: the file (path, size, mtime), the
    threads, the cache types, the adapter, the CPU and the library."""
    from . import __version__

    st = os.stat(model_path)
    parts = [str(_FORMAT), os.path.realpath(model_path), str(st.st_size), str(st.st_mtime_ns), str(n_threads),
             *cache_types, str(has_lora), _cpu_name(), platform.machine(), os.environ.get("NLD_CPU_PATH", ""),
             __version__]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:24]


def load_cached(key: str) -> dict | None:
    path = cache_dir() / f"costs-{key}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) and "causal_s" in data else None
    except (OSError, ValueError):
        return None


def store_cached(key: str, costs: dict) -> None:
    """Best effort: a read-only home only means measuring again next time."""
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".costs-{key}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(costs, indent=1), encoding="utf-8")
        os.replace(tmp, folder / f"costs-{key}.json")
    except OSError:
        pass


def calibrate(ctx: Any, max_seconds: float = CALIBRATION_SECONDS) -> dict:
    """Measures the context's forwards now (within about max_seconds) and
    returns the installed cost model."""
    if not float(max_seconds) > 0:
        raise ValueError(f"max_seconds must be > 0, got {max_seconds!r}")
    check(lib.nld_context_calibrate(ctx, float(max_seconds)))
    return get_costs(ctx)


def ensure_calibrated(ctx: Any, key: str | None) -> dict:
    """The costs auto uses, measured on first need: from the disk cache when
    it holds this key, else measured and stored; untouched when already
    measured or set, or when NLD_CALIBRATION=off."""
    costs = get_costs(ctx)
    if costs["measured"] or not calibration_enabled():
        return costs
    cached = load_cached(key) if key else None
    if cached is not None:
        try:
            set_costs(ctx, cached, adapt=True)
            return get_costs(ctx)
        except (ValueError, KeyError, TypeError):
            pass  # a damaged entry: measure again
    costs = calibrate(ctx)
    if key:
        store_cached(key, {k: costs[k] for k in ("rows", "causal_s", "draft_s")} | {"step_overhead_s": 0.0})
    return costs
