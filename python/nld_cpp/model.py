"""The Python API: a loaded model with one evaluation context (KV cache)."""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from dataclasses import dataclass, fields
from typing import Any, Iterator, Sequence

import numpy as np

from .completion import CompletionMixin
from ._binding import NldError, check, ffi, lib
from .generation import GenerationResult, Generator, generation_params, run_to_end

_ATTENTION = {"causal": lib.NLD_ATTENTION_CAUSAL, "bidirectional": lib.NLD_ATTENTION_BIDIRECTIONAL}
_LOGITS = {"none": lib.NLD_LOGITS_NONE, "last": lib.NLD_LOGITS_LAST, "all": lib.NLD_LOGITS_ALL}


@dataclass(frozen=True)
class ModelInfo:
    """Hyper-parameters and metadata read from the GGUF file."""

    n_vocab: int
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_ctx_train: int
    rms_norm_eps: float
    rope_freq_base: float
    rope_scaling_factor: float
    rope_orig_ctx: int
    yarn_beta_fast: float
    yarn_beta_slow: float
    attn_temperature_scale: float
    bos_token_id: int
    eos_token_id: int
    mask_token_id: int
    block_size: int
    file_type: int
    has_diffusion: bool
    lora_rank: int


def _free_model(model: Any) -> None:
    lib.nld_model_free(model)


def _free_context(ctx: Any, weights: "_Weights") -> None:
    lib.nld_context_free(ctx)  # `weights` rides along: the model is freed only after its last context


class _Weights:
    """Owns a loaded nld_model; every context made from it holds a reference,
    so the model is freed after the last of them."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self._free = weakref.finalize(self, _free_model, handle)


class _Busy:
    """Serializes the calls that use one context (forward, truncate, a
    generation from its start to its end). A call from another thread waits
    for the running one; a call from the thread whose generation is still
    open raises instead of waiting for itself. A session (revise) holds the
    context across several such calls of its own thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: int | None = None
        self._session: int | None = None
        self._depth = 0

    def acquire(self, what: str) -> None:
        me = threading.get_ident()
        if self._session == me:  # a call inside this thread's session
            self._depth += 1
            return
        if self._owner == me:
            raise RuntimeError(f"{what}: this Model's generation on this thread is still open; "
                               "iterate it to the end or close it first")
        self._lock.acquire()
        self._owner = me

    def release(self) -> None:
        if self._session == threading.get_ident() and self._depth > 0:
            self._depth -= 1
            return
        self._owner = None
        self._lock.release()

    @contextlib.contextmanager
    def held(self, what: str) -> Iterator[None]:
        self.acquire(what)
        try:
            yield
        finally:
            self.release()

    @contextlib.contextmanager
    def session(self, what: str) -> Iterator[None]:
        self.acquire(what)
        self._session = threading.get_ident()
        try:
            yield
        finally:
            self._session = None
            self._depth = 0
            self.release()


def _as_tokens(tokens: Sequence[int] | np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(tokens)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{what} must be a non-empty 1-D sequence of token ids")
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{what} must hold integers, got {arr.dtype}")
    if arr.min() < -(2**31) or arr.max() >= 2**31:
        raise ValueError(f"{what} holds a value outside the int32 range")
    return np.ascontiguousarray(arr, dtype=np.int32)


CACHE_TYPES = {"f32": 0, "f16": 1, "q8_0": 8}  # KV cache types: name -> GGML type id (llama.cpp's -ctk / -ctv)


def cache_type_id(value: str | int, what: str) -> int:
    """The GGML id of a KV cache type given by name ("f32", "f16", "q8_0",
    any case) or by id (0, 1, 8); ValueError naming the choices otherwise."""
    if isinstance(value, str) and value.lower() in CACHE_TYPES:
        return CACHE_TYPES[value.lower()]
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and int(value) in CACHE_TYPES.values():
        return int(value)
    raise ValueError(f"{what} must be one of {', '.join(CACHE_TYPES)} (or their GGML ids 0, 1, 8), got {value!r}")


class Model(CompletionMixin):
    """A GGUF model loaded by the core, with one context (KV cache).

    ``n_ctx`` <= 0 takes min(training context, 4096); ``n_threads`` <= 0
    uses every core; ``seed`` is the sampling seed of text calls that give
    none (None: a fresh one per call); ``lora_path`` is the drafter adapter
    (None: ``<model>.lora.gguf`` beside the model when present; "": none);
    ``cache_type_k`` / ``cache_type_v``: "f32", "f16" or "q8_0" (llama.cpp's
    ``-ctk`` / ``-ctv``); ``n_gpu_layers``: 0 (CPU; > 0 is refused by this
    version, naming why). Use as a context manager or call :meth:`close`;
    any use after close raises. :meth:`new_context` gives another Model over
    the same weights with a cache of its own.

    Threads: calls that use the cache (forward, truncate, a generation from
    its creation to its end or close) are serialized: a call from a second
    thread waits until the running one is done, so every answer is the one it
    would be alone. :meth:`cancel` never waits.
    """

    def __init__(self, model_path: str | os.PathLike[str], *, n_ctx: int = 0, n_threads: int = 0,
                 seed: int | None = None, lora_path: str | os.PathLike[str] | None = None, verbose: bool = False,
                 cache_type_k: str | int = "f16", cache_type_v: str | int = "f16", n_gpu_layers: int = 0,
                 _weights: "_Weights | None" = None):
        if seed is not None and (not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
        self.default_seed = None if seed is None else int(seed)
        type_k, type_v = cache_type_id(cache_type_k, "cache_type_k"), cache_type_id(cache_type_v, "cache_type_v")
        names = {v: k for k, v in CACHE_TYPES.items()}
        self.cache_type_k, self.cache_type_v = names[type_k], names[type_v]
        self._ctx: Any = None
        self._release: Any = lambda: None
        self._busy = _Busy()
        self._scheduler: Any = None  # a Scheduler that batches this context's generations (attach)
        self._costs_ready = False  # the cost model of mode auto is measured (or set)
        path = os.fspath(model_path)
        if verbose and _weights is None and os.path.isfile(path):  # said before it is taken (docs/memory.md)
            from .memory import available_memory, describe, format_bytes, memory_estimate

            est = memory_estimate(path, n_ctx=max(int(n_ctx), 0), cache_type_k=type_k, cache_type_v=type_v,
                                  lora_path=lora_path)
            avail = available_memory()
            print(f"nld_cpp: memory for {path}: {describe(est)}; available "
                  f"{'unknown' if avail is None else format_bytes(avail)}")
        self._weights = _weights if _weights is not None else self._load(path, n_threads, lora_path, n_gpu_layers)
        self._model = self._weights.handle
        cparams = lib.nld_context_default_params()
        cparams.n_ctx = int(n_ctx)
        cparams.n_threads = int(n_threads)
        cparams.type_k, cparams.type_v = type_k, type_v
        out_ctx = ffi.new("nld_context **")
        try:
            check(lib.nld_context_create(self._model, ffi.addressof(cparams), out_ctx))
        except BaseException:
            self.close()
            raise
        self._ctx = out_ctx[0]
        self._release = weakref.finalize(self, _free_context, self._ctx, self._weights)
        self.model_path = path
        self.n_threads = int(n_threads) if int(n_threads) > 0 else (os.cpu_count() or 1)
        raw = ffi.new("nld_model_info *")
        check(lib.nld_model_get_info(self._model, raw))
        self.info = ModelInfo(**{f.name: (bool(getattr(raw, f.name)) if f.type == "bool" else getattr(raw, f.name))
                                 for f in fields(ModelInfo)})
        if verbose:
            print(f"nld_cpp: loaded {path}: {self.info}")

    @staticmethod
    def _load(path: str, n_threads: int, lora_path: str | os.PathLike[str] | None, n_gpu_layers: int = 0) -> _Weights:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"model file not found: {path}")
        mparams = lib.nld_model_default_params()
        mparams.n_threads = int(n_threads)
        mparams.n_gpu_layers = int(n_gpu_layers)  # > 0: refused by this version, saying why (nld.h)
        # None: the core loads "<model>.lora.gguf" beside the model if present.
        lora_arg = ffi.NULL if lora_path is None else ffi.new("char[]", os.fsencode(os.fspath(lora_path)))
        mparams.lora_path = lora_arg
        out_model = ffi.new("nld_model **")
        try:
            check(lib.nld_model_load(os.fsencode(path), ffi.addressof(mparams), out_model))
        except NldError as exc:
            raise NldError(exc.status, f"cannot load {path}: {exc}") from None
        return _Weights(out_model[0])

    def new_context(self, *, n_ctx: int = 0, n_threads: int = 0, seed: int | None = None,
                    cache_type_k: str | int | None = None, cache_type_v: str | int | None = None) -> "Model":
        """Another Model over these weights (in memory once) with its own KV
        cache, for a second conversation or a server slot (cache types: this
        one's unless given). Each one closes on its own; the weights are
        freed with the last of them."""
        self._live()
        other = Model(self.model_path, n_ctx=n_ctx, n_threads=n_threads,
                      seed=self.default_seed if seed is None else seed,
                      cache_type_k=self.cache_type_k if cache_type_k is None else cache_type_k,
                      cache_type_v=self.cache_type_v if cache_type_v is None else cache_type_v,
                      _weights=self._weights)
        other._tokenizer_obj, other._template_obj = self._tokenizer_obj, self._template_obj
        return other

    # -- lifetime -------------------------------------------------------
    def close(self) -> None:
        """Free the context (and the model, if no other context uses it).
        Idempotent. A generation running on another thread is cancelled and
        waited for first."""
        if self._ctx is not None:
            self.cancel()
            try:
                self._busy.acquire("close")
            except RuntimeError:  # this thread's own open generation: end it first
                active = self._active() if self._active is not None else None
                if active is not None:
                    active.close()
                self._busy.acquire("close")
            self._busy.release()
        self._ctx = None
        self._model = None
        self._release()
        self._weights = None

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _live(self) -> Any:  # noqa: D401
        if self._ctx is None:
            raise ValueError("this Model is closed")
        return self._ctx

    # -- metadata -------------------------------------------------------
    @property
    def has_lora(self) -> bool:
        """Whether a drafter LoRA adapter is loaded (self-speculation drafts)."""
        return self.info.lora_rank > 0

    @property
    def n_vocab(self) -> int:
        return self.info.n_vocab

    @property
    def n_ctx(self) -> int:
        return int(lib.nld_context_n_ctx(self._live()))

    @property
    def n_cached(self) -> int:
        """Number of committed tokens in the KV cache."""
        return int(lib.nld_context_n_cached(self._live()))

    @property
    def cache_bytes(self) -> int:
        """Bytes of the KV cache (every layer's keys and values at n_ctx, in
        cache_type_k / cache_type_v)."""
        return int(lib.nld_context_cache_bytes(self._live()))

    def memory_estimate(self, *, n_ctx: int | None = None, cache_type_k: str | int | None = None,
                        cache_type_v: str | int | None = None, n_rows: int = 0) -> dict:
        """nld_cpp.memory_estimate for these weights as loaded; n_ctx and the
        cache types default to this context's."""
        from .memory import estimate_loaded

        self._live()
        return estimate_loaded(self._model, n_ctx=self.n_ctx if n_ctx is None else n_ctx,
                               cache_type_k=self.cache_type_k if cache_type_k is None else cache_type_k,
                               cache_type_v=self.cache_type_v if cache_type_v is None else cache_type_v,
                               n_rows=n_rows)

    def metadata_string(self, key: str) -> str:
        """A string value of the GGUF metadata (KeyError if absent)."""
        self._live()
        data = ffi.new("const char **")
        size = ffi.new("size_t *")
        if lib.nld_model_meta_string(self._model, key.encode(), data, size) != lib.NLD_OK:
            raise KeyError(key)
        return ffi.unpack(data[0], size[0]).decode("utf-8")

    # -- the cost model of mode "auto" (docs/generation.md "Auto") ------
    def calibrate(self, max_seconds: float = 1.0) -> dict:
        """Time forwards of 1 .. 32 rows now (about max_seconds) and use the
        result for mode "auto" and block_length="auto"; returns the costs.
        Generations in those modes calibrate on first use by themselves
        (kept on disk per model file, threads and CPU; NLD_CALIBRATION=off
        skips it)."""
        from . import costs

        with self._busy.held("calibrate"):
            return costs.calibrate(self._live(), max_seconds)

    @property
    def costs(self) -> dict:
        """The cost model now (seconds per forward at each row count,
        causal and draft, and the step overhead), corrected as forwards run."""
        from . import costs

        return costs.get_costs(self._live())

    def set_costs(self, costs: dict, adapt: bool | None = None) -> None:
        """Install a cost model (as the costs property gives it); with
        adapt False (the default for a dict without "adapt") it stays fixed."""
        from . import costs as costs_mod

        with self._busy.held("set_costs"):
            costs_mod.set_costs(self._live(), costs, adapt)

    def reset_acceptance(self) -> None:
        """Forget what earlier generations' drafts earned (auto's prior)."""
        check(lib.nld_context_reset_acceptance(self._live()))

    def _ensure_costs(self) -> None:
        from . import costs

        if self._costs_ready:
            return
        with self._busy.held("calibrate"):
            ctx = self._live()
            if not costs.get_costs(ctx)["measured"] and costs.calibration_enabled():
                key = costs.cache_key(self.model_path, self.n_threads, (self.cache_type_k, self.cache_type_v),
                                      self.has_lora) if os.path.isfile(self.model_path) else None
                costs.ensure_calibrated(ctx, key)
            self._costs_ready = costs.get_costs(ctx)["measured"]

    # -- evaluation -----------------------------------------------------
    def forward(self, tokens: Sequence[int] | np.ndarray, kind: str = "causal", logits: str = "all") -> np.ndarray:
        """Evaluate tokens after the cached prefix.

        kind "causal" appends them to the cache (row i of the logits predicts
        the next token); "bidirectional" is a block pass that reads the cache
        without writing it (row i predicts the token at position i). Returns a
        float32 array (rows, n_vocab) with rows per ``logits``: "all", "last"
        or "none" (an empty array).
        """
        self._live()
        if kind not in _ATTENTION:
            raise ValueError(f"kind must be one of {sorted(_ATTENTION)}, got {kind!r}")
        if logits not in _LOGITS:
            raise ValueError(f"logits must be one of {sorted(_LOGITS)}, got {logits!r}")
        toks = _as_tokens(tokens, "tokens")
        rows = {"none": 0, "last": 1, "all": len(toks)}[logits]
        out = np.empty((rows, self.n_vocab), dtype=np.float32)
        params = lib.nld_forward_default_params()
        params.attention = _ATTENTION[kind]
        params.logits = _LOGITS[logits]
        with self._busy.held("forward"):
            check(lib.nld_context_forward(self._live(), ffi.from_buffer("int32_t[]", toks), len(toks),
                                          ffi.addressof(params), ffi.from_buffer("float[]", out), out.size))
        return out

    def truncate(self, n_keep: int) -> None:
        """Drop cached tokens from position n_keep on."""
        with self._busy.held("truncate"):
            check(lib.nld_context_truncate(self._live(), int(n_keep)))

    def generate_steps(self, prompt: Sequence[int] | np.ndarray, *, mode: str = "ar", max_tokens: int = 256,
                       block_length: int | str | None = None, threshold: float | None = None, temperature: float = 0.0,
                       top_k: int = 0, top_p: float = 1.0, seed: int = 0, stop_tokens: Sequence[int] = (),
                       max_thinking_tokens: int | None = None, think_end_token: int | None = None,
                       use_lora: bool = True, ignore_eos: bool = False) -> Generator:
        """Start a generation and return it as an iterator of GenerationStep.

        mode: "ar", "diffusion" (block diffusion, threshold default 0.9; 0
        selects the fixed schedule), "spec" (linear self-speculation,
        threshold default 0), "spec-quadratic" or "auto" (per step an AR step
        or a linear speculation round of the draft length the measured cost
        model says is fastest; at temperature 0 its output is AR's).
        block_length defaults to the model's; for auto it is the longest
        draft; with mode "spec", block_length="auto" lets the draft length
        change round by round by auto's rule. The model's EOS stops unless ignore_eos; stop_tokens adds more. The
        prompt reuses the cached prefix it shares with the previous
        generation, whatever its mode. Call cancel() on the returned object
        (from any thread) to stop early.
        """
        ctx = self._live()
        toks = _as_tokens(prompt, "prompt")
        params, stop_buf = generation_params(
            mode=mode, max_tokens=max_tokens, block_length=block_length, threshold=threshold,
            temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, stop_tokens=stop_tokens,
            max_thinking_tokens=max_thinking_tokens, think_end_token=think_end_token, use_lora=use_lora,
            ignore_eos=ignore_eos)
        if mode == "auto" or block_length == "auto":
            self._ensure_costs()
        return self._start(toks, params, stop_buf)

    def _start(self, toks: np.ndarray, params: Any, buffers: Any) -> Generator:
        self._busy.acquire("generate")
        try:
            ctx = self._live()  # closed while this call waited?
        except BaseException:
            self._busy.release()
            raise

        def done() -> None:
            self._active = None
            self._busy.release()

        gen = Generator(ctx, toks, params, keep_alive=(buffers, self), on_close=done,  # calls done() if it fails
                        scheduler=self._scheduler)
        self._active = weakref.ref(gen)
        return gen

    def infill_steps(self, prefix: Sequence[int] | np.ndarray, canvas: Sequence[int | None], *,
                     block_length: int | None = None, threshold: float | None = None, temperature: float = 0.0,
                     top_k: int = 0, top_p: float = 1.0, seed: int = 0) -> Generator:
        """Fill the masked positions of `canvas` (None or the mask id), which
        follows `prefix`, by diffusion's confidence-commit rule (threshold
        default 0.9; 0: the fixed schedule); known tokens are never changed.
        The canvas is denoised in blocks of block_length (default the
        model's), each seeing the prefix, the blocks before it and itself both
        ways: text after a gap helps fill it only inside the gap's block
        (docs/generation.md "Infill"). Steps stream each block's canvas."""
        toks = _as_tokens(prefix, "prefix")
        mask = self.info.mask_token_id
        if mask < 0:
            raise ValueError("this model has no mask token: infill needs a diffusion model")
        filled = [mask if t is None else t for t in canvas]
        cells = _as_tokens(filled, "canvas")
        params, stop_buf = generation_params(
            mode="diffusion", max_tokens=max(1, len(cells)), block_length=block_length, threshold=threshold,
            temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, stop_tokens=(), max_thinking_tokens=None,
            think_end_token=None, use_lora=False, ignore_eos=True)
        params.mode = lib.NLD_MODE_INFILL
        params.canvas = ffi.from_buffer("int32_t[]", cells)
        params.n_canvas = len(cells)
        self._live()
        return self._start(toks, params, (stop_buf, cells))

    def infill(self, prefix: Sequence[int] | np.ndarray, canvas: Sequence[int | None], **kwargs: Any) -> GenerationResult:
        """infill_steps run to the end: tokens is the whole canvas decided."""
        return run_to_end(self.infill_steps(prefix, canvas, **kwargs))

    def revise(self, prefix: Sequence[int] | np.ndarray, span: Sequence[int], *, k: int = 1,
               positions: Sequence[int] | None = None, rounds: int = 1, block_length: int | None = None,
               threshold: float | None = None, below: float = 1e-3) -> Any:
        """Re-decide the k tokens of `span` (after `prefix`) the model is
        least sure of (scoring under `below`), or the given positions, by infill, for up to `rounds`
        rounds or until one changes nothing; a nld_cpp.revise.RevisionResult
        (docs/generation.md "Revision"). Holds the context throughout."""
        from .revise import revise

        with self._busy.session("revise"):
            return revise(self, prefix, span, k=k, positions=positions, rounds=rounds, block_length=block_length,
                          threshold=threshold, below=below)

    def generate(self, prompt: Sequence[int] | np.ndarray, **kwargs: Any) -> GenerationResult:
        """Run a generation to the end (same arguments as generate_steps);
        returns the tokens, finish reason, forward count, accepted lengths
        and wall time."""
        return run_to_end(self.generate_steps(prompt, **kwargs))

    def generate_greedy(self, prompt: Sequence[int] | np.ndarray, max_new_tokens: int = 32,
                        stop_at_eos: bool = True) -> list[int]:
        """Greedy autoregressive generation of token ids (mode "ar")."""
        if max_new_tokens < 0:
            raise ValueError("max_new_tokens must be >= 0")
        if max_new_tokens == 0:
            return []
        return self.generate(prompt, mode="ar", max_tokens=max_new_tokens, ignore_eos=not stop_at_eos).tokens


__all__ = ["Model", "ModelInfo", "NldError"]
