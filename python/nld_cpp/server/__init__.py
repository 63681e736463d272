"""`nld-server`: a llama-server compatible local HTTP server (docs/server.md).

    app.py       state, model loading, API keys, CORS, the non-generation routes
    generate.py  the generation routes: slots, worker threads, SSE, response shapes
    params.py    request validation: each field's type and range, a 400 naming it
    slots.py     slots (one KV cache each over one model) and the bounded wait queue
    metrics.py   the Prometheus counters of /metrics
    args.py      the command line and its NLD_ARG_* environment mirrors
    static/      the web page at /

It needs the `server` extra: pip install "nld-cpp[server]".
"""

from __future__ import annotations

from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the server until SIGINT / SIGTERM; exit code 1 if the model cannot load."""
    from .args import parse_args

    args = parse_args(argv)
    try:
        import uvicorn

        from .app import create_app
    except ImportError as exc:
        print(f"nld-server: error: {exc.name or exc} is missing; install the server extra: "
              'pip install "nld-cpp[server]"')
        return 1
    box: list = []

    def stop() -> None:
        box[0].should_exit = True

    app = create_app(args, on_load_failure=stop)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                                           timeout_graceful_shutdown=5, lifespan="on"))
    box.append(server)
    print(f"nld-server: listening on http://{args.host}:{args.port} (loading the model)", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_keys:
        print(f"nld-server: warning: {args.host} is reachable from other machines and no --api-key is set",
              flush=True)
    server.run()
    return 1 if app.state.nld.load_error is not None or not server.started else 0
