"""Errors as llama-server shapes them: `{"error": {"code", "message",
"type"}}` with its status table, and the mapping from the Python API's
exceptions to it."""

from __future__ import annotations

from typing import Any, Dict, Optional

from starlette.responses import JSONResponse

from .._binding import NldError, lib
from ..chat import ChatTemplateError

# status -> llama-server's error type
TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
         404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
         500: "server_error", 501: "not_supported_error", 503: "unavailable_error"}


class ApiError(Exception):
    """An HTTP error with llama-server's JSON body; `extra` adds fields next
    to code/message/type (n_prompt_tokens and n_ctx for a prompt too long)."""

    def __init__(self, status: int, message: str, type_: Optional[str] = None,
                 headers: Optional[Dict[str, str]] = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_ or TYPES.get(status, "server_error")
        self.headers = headers
        self.extra = extra

    def body(self) -> Dict[str, Any]:
        return {"error": {"code": self.status, "message": self.message, "type": self.type, **self.extra}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def context_exceeded(n_prompt: int, n_ctx: int) -> ApiError:
    return ApiError(400, f"the request exceeds the available context size: the prompt has {n_prompt} tokens and "
                         f"the context holds {n_ctx}; shorten the prompt or start the server with a larger -c",
                    "exceed_context_size_error", n_prompt_tokens=n_prompt, n_ctx=n_ctx)


def from_exception(exc: BaseException, n_prompt: int = 0, n_ctx: int = 0) -> ApiError:
    """What a failure of the Python API or the core means to a client."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, NldError):
        if exc.status == lib.NLD_ERR_CONTEXT_FULL:
            err = context_exceeded(n_prompt, n_ctx)
            err.message = f"{err.message} ({exc})"
            return err
        if exc.status in (lib.NLD_ERR_INVALID_ARGUMENT, lib.NLD_ERR_UNSUPPORTED):
            return bad_request(str(exc))
        return ApiError(500, f"the core failed: {exc}")
    if isinstance(exc, (ChatTemplateError, ValueError, TypeError)):
        return bad_request(str(exc))
    return ApiError(500, f"internal error: {type(exc).__name__}: {exc}")
