"""The Starlette application: server state, the model loaded off the event
loop (/health answers 503 until it is ready), API keys, CORS, the body size
limit, and every route but the generation ones (generate.py)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, AsyncIterator, Dict, List, Optional, Set

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import __version__
from ..chat import ChatTemplate, ChatTemplateError
from ..generation import MODES
from . import params
from .errors import ApiError, bad_request
from .generate import serve
from .infill import infill_job
from .metrics import Metrics
from .params import Defaults
from .slots import Slot, SlotPool

STATIC = Path(__file__).resolve().parent / "static"
PUBLIC_PATHS = {"/health", "/v1/health", "/v1/models", "/models", "/", "/favicon.ico"}


class State:
    """Everything the routes share; `model` is None until the load is done."""

    def __init__(self, args: Any) -> None:
        self.args = args
        self.model: Any = None
        self.pool: Optional[SlotPool] = None
        self.scheduler: Any = None  # continuous batching over the slots (None with --no-cont-batching)
        self.template: Optional[ChatTemplate] = None
        self.n_ctx = 0
        if not args.model:
            from ..models import default_model_path
            args.model = str(default_model_path())
        self.alias = args.alias or Path(args.model).name
        self.defaults = Defaults(args.mode, args.block_length, args.threshold)
        self.metrics = Metrics()
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=args.parallel,
                                                              thread_name_prefix="nld-slot")
        self.running: Set[Any] = set()
        self.load_error: Optional[str] = None
        self.created = int(time.time())

    def load(self) -> None:
        """Load the model and one context per slot (runs on a thread)."""
        from .. import Model

        a = self.args
        path = a.model
        per_slot = a.ctx_size // a.parallel if a.ctx_size else 0
        model = Model(path, n_ctx=per_slot, n_threads=a.threads, lora_path=a.lora, cache_type_k=a.cache_type_k,
                      cache_type_v=a.cache_type_v, n_gpu_layers=a.n_gpu_layers)
        slots = [Slot(0, model)] + [Slot(i, model.new_context(n_ctx=per_slot, n_threads=a.threads))
                                    for i in range(1, a.parallel)]
        if not a.no_cont_batching:  # the slots' generations share batched forwards
            from ..scheduler import Scheduler

            self.scheduler = Scheduler(model, n_threads=a.threads, max_rows=a.batch_size,
                                       max_prefill_rows=a.ubatch_size)
            for slot in slots:
                self.scheduler.attach(slot.model)
        try:
            template = (ChatTemplate.from_model(model, model.tokenizer, chat_template=a.chat_template)
                        if a.chat_template is not None else model.chat_template())
        except ChatTemplateError as exc:
            print(f"nld-server: {exc}; using the built-in chatml format", file=sys.stderr)
            template = model.chat_template(chat_format="chatml")
        self.n_ctx, self.template = model.n_ctx, template
        self.pool = SlotPool(slots, a.queue_size)
        self.model = model  # last: the routes take a non-None model as "ready"

    def ready(self) -> Any:
        if self.model is None:
            raise ApiError(503, "Loading model")
        return self.model

    def shutdown(self) -> None:
        for running in list(self.running):
            running.cancel()
        self.executor.shutdown(wait=True, cancel_futures=True)
        if self.pool is not None:
            for slot in self.pool.slots:
                slot.model.close()
        if self.scheduler is not None:
            self.scheduler.close()


class ApiKeys:
    """Requests must carry one of the keys (Bearer or X-Api-Key), compared
    in constant time; public paths and CORS preflights pass."""

    def __init__(self, app: ASGIApp, keys: List[str]) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (scope["type"] != "http" or not self.keys or scope["method"] == "OPTIONS" or path in PUBLIC_PATHS
                or path.startswith("/static/")):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v for k, v in scope["headers"]}
        auth = headers.get("authorization", b"")
        given = auth[7:].strip() if auth[:7].lower() == b"bearer " else headers.get("x-api-key", b"")
        match = False
        for key in self.keys:  # every key is compared, so the time does not tell which one was close
            match |= hmac.compare_digest(key, given)
        if not match:
            message = "Invalid API Key" if given else "No API key: send Authorization: Bearer KEY or X-Api-Key: KEY"
            return await ApiError(401, message).response()(scope, receive, send)
        return await self.app(scope, receive, send)


async def read_json(request: Request) -> Any:
    limit = request.app.state.nld.args.max_body_size
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise ApiError(413, f"the request body has {length} bytes; the limit is {limit} (--max-body-size)")
    body, n = [], 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > limit:
            raise ApiError(413, f"the request body is over the limit of {limit} bytes (--max-body-size)")
        body.append(chunk)
    if not n:
        raise bad_request("the request has no body; send a JSON object")
    try:
        return json.loads(b"".join(body))
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"the request body is not valid JSON: {exc}") from None


def _state(request: Request) -> State:
    return request.app.state.nld


# -- generation -------------------------------------------------------------
async def chat_completions(request: Request) -> Any:
    st = _state(request)
    model = st.ready()
    job = params.chat_job(await read_json(request), model, st.defaults, st.n_ctx, st.template)
    return await serve(request, st, job)


async def completions(request: Request) -> Any:
    st = _state(request)
    model = st.ready()
    job = params.completion_job(await read_json(request), model, st.defaults, st.n_ctx)
    return await serve(request, st, job)


async def infill(request: Request) -> Any:
    st = _state(request)
    model = st.ready()
    job = infill_job(await read_json(request), model, st.defaults, st.n_ctx)
    return await serve(request, st, job)


async def native_completion(request: Request) -> Any:
    st = _state(request)
    model = st.ready()
    job = params.completion_job(await read_json(request), model, st.defaults, st.n_ctx, native=True)
    return await serve(request, st, job)


# -- the rest ---------------------------------------------------------------
async def health(request: Request) -> Response:
    _state(request).ready()
    return JSONResponse({"status": "ok"})


async def models(request: Request) -> Response:
    st = _state(request)
    model = st.ready()
    info = model.info
    meta = {"n_vocab": info.n_vocab, "n_ctx_train": info.n_ctx_train, "n_embd": info.n_embd,
            "size": os.path.getsize(model.model_path), "block_size": info.block_size, "modes": list(MODES)}
    return JSONResponse({"object": "list", "data": [{"id": st.alias, "object": "model", "created": st.created,
                                                     "owned_by": "nld_cpp", "meta": meta}]})


def _default_settings(st: State) -> Dict[str, Any]:
    d = st.defaults
    return {"n_ctx": st.n_ctx, "params": {"mode": d.mode, "block_length": d.block_length, "threshold": d.threshold,
                                          "temperature": 0.8, "top_k": 40, "top_p": 0.95, "n_predict": -1}}


async def props(request: Request) -> Response:
    st = _state(request)
    model = st.ready()
    info = model.info
    tok = model.tokenizer
    return JSONResponse({
        "default_generation_settings": _default_settings(st), "total_slots": len(st.pool.slots),
        "model_alias": st.alias, "model_path": model.model_path, "chat_template": st.template.source,
        "bos_token": tok.decode([info.bos_token_id], skip_special_tokens=False),
        "eos_token": tok.decode([info.eos_token_id], skip_special_tokens=False),
        "build_info": f"nld_cpp {__version__}", "modalities": {"vision": False, "audio": False},
        "webui": not st.args.no_webui,
        "nld": {"modes": list(MODES), "block_size": info.block_size, "mask_token_id": info.mask_token_id,
                "has_lora": model.has_lora, "default_mode": st.defaults.mode}})


async def slots(request: Request) -> Response:
    st = _state(request)
    st.ready()
    return JSONResponse([{"id": s.id, "n_ctx": s.model.n_ctx, "is_processing": s.busy, "n_requests": s.n_requests,
                          "n_cached": len(s.cached), "task": s.task} for s in st.pool.slots])


async def tokenize(request: Request) -> Response:
    model = _state(request).ready()
    body = params.json_object(await read_json(request))
    content = params.require(body, "content", str, "a string")
    add_special = params.boolean(body, "add_special", False)
    if not params.boolean(body, "parse_special", True):
        raise bad_request("parse_special=false is not supported: control-token strings always become their ids")
    ids = model.tokenize(content, add_special_tokens=add_special)
    if not params.boolean(body, "with_pieces", False):
        return JSONResponse({"tokens": ids})
    pieces = []
    for t in ids:
        raw = model.tokenizer.token_bytes(t)
        try:
            piece: Any = raw.decode("utf-8")
        except UnicodeDecodeError:
            piece = list(raw)  # not valid UTF-8 on its own: the bytes, as llama-server gives them
        pieces.append({"id": t, "piece": piece})
    return JSONResponse({"tokens": pieces})


async def detokenize(request: Request) -> Response:
    model = _state(request).ready()
    body = params.json_object(await read_json(request))
    tokens = body.get("tokens")
    ids = [] if tokens == [] else params.token_ids(tokens, "tokens", model.n_vocab)
    return JSONResponse({"content": model.detokenize(ids, skip_special_tokens=False)})


async def apply_template(request: Request) -> Response:
    st = _state(request)
    st.ready()
    body = params.json_object(await read_json(request))
    msgs = params.messages(body)
    thinking = params.boolean(body, "enable_thinking", False)
    try:
        prompt = st.template.render(msgs, add_generation_prompt=True, enable_thinking=thinking)
    except ValueError as exc:
        raise bad_request(f"messages: {exc}") from None
    return JSONResponse({"prompt": prompt})


async def metrics(request: Request) -> Response:
    st = _state(request)
    if not st.args.metrics:
        raise ApiError(501, "This server does not support the metrics endpoint; start it with --metrics")
    st.ready()
    batching = st.scheduler.stats() if st.scheduler is not None else None
    return PlainTextResponse(st.metrics.text(st.pool.n_busy, st.pool.n_waiting, st.n_ctx, batching),
                             media_type="text/plain; version=0.0.4")


async def not_supported(request: Request) -> Response:
    raise ApiError(501, f"{request.url.path} is not supported by this server (a generation-only NLD server)")


async def index(request: Request) -> Response:
    if _state(request).args.no_webui:
        raise ApiError(404, "the web page is turned off (--no-webui)")
    return FileResponse(STATIC / "index.html")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    messages = {404: f"File Not Found: {request.url.path}", 405: f"{request.method} is not allowed on {request.url.path}"}
    return ApiError(exc.status_code, messages.get(exc.status_code, str(exc.detail))).response()


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _internal_error(request: Request, exc: Exception) -> Response:
    return ApiError(500, f"internal error: {type(exc).__name__}: {exc}").response()


def create_app(args: Any, on_load_failure: Any = None) -> Starlette:
    """The application; the model loads on a thread once it starts."""
    state = State(args)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        def load() -> None:
            try:
                state.load()
                print(f"nld-server: {state.alias} loaded, {args.parallel} slot(s) of {state.n_ctx} tokens",
                      file=sys.stderr, flush=True)
            except Exception as exc:  # the server cannot serve without it: say why and stop
                state.load_error = str(exc)
                print(f"nld-server: error: {exc}", file=sys.stderr, flush=True)
                if on_load_failure is not None:
                    on_load_failure()

        threading.Thread(target=load, name="nld-load", daemon=True).start()
        yield
        await asyncio.get_running_loop().run_in_executor(None, state.shutdown)

    gen = ["POST"]
    routes = [
        Route("/v1/chat/completions", chat_completions, methods=gen),
        Route("/chat/completions", chat_completions, methods=gen),
        Route("/v1/completions", completions, methods=gen),
        Route("/completions", completions, methods=gen),
        Route("/completion", native_completion, methods=gen),
        Route("/health", health), Route("/v1/health", health),
        Route("/v1/models", models), Route("/models", models),
        Route("/props", props), Route("/slots", slots), Route("/metrics", metrics),
        Route("/tokenize", tokenize, methods=gen), Route("/detokenize", detokenize, methods=gen),
        Route("/apply-template", apply_template, methods=gen),
        *[Route(p, not_supported, methods=["GET", "POST"]) for p in
          ("/v1/embeddings", "/embeddings", "/embedding", "/rerank", "/reranking", "/v1/rerank")],
        Route("/infill", infill, methods=gen),
        Route("/", index),
        Mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static"),
    ]
    middleware = [
        Middleware(CORSMiddleware, allow_origins=["*"], allow_credentials=True, allow_methods=["GET", "POST"],
                   allow_headers=["*"]),
        Middleware(ApiKeys, keys=args.api_keys),
    ]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                    exception_handlers={HTTPException: _http_error, ApiError: _api_error, Exception: _internal_error})
    app.state.nld = state
    return app
