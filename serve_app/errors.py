"""The one error mapper: domain errors -> status codes, in each surface's body shape.

Letta routes answer ``{"detail": ...}``; OpenAI routes (under /openai) answer
``{"error": {"message", "type", "param", "code"}}``, and say 400 where Letta says 422 (a field that
fails validation). A 409 carries ``x-should-retry: false``: both official SDKs retry 409 twice by
default, which would hide the conflict from the caller. The two body shapes are also the documented
4XX responses of every route in the OpenAPI document (``LETTA_ERRORS``, ``OPENAI_ERRORS``).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope, Send

from runtime.errors import (
    Conflict,
    ConversationBusy,
    InvalidArgument,
    NotFound,
    Overloaded,
    ParleyError,
    ValidationFailed,
)

log = logging.getLogger(__name__)

NO_RETRY = {"x-should-retry": "false"}

_STATUS: list[tuple[type[ParleyError], int]] = [
    (NotFound, 404),
    (InvalidArgument, 400),
    (ValidationFailed, 422),
    (ConversationBusy, 409),
    (Conflict, 409),
    (Overloaded, 503),
]
# Letta words the message of some errors with a code prefix ("INVALID_ARGUMENT: ...").
_LETTA_PREFIX: dict[type[ParleyError], str] = {
    InvalidArgument: "INVALID_ARGUMENT",
    ConversationBusy: "CONFLICT",
    Conflict: "CONFLICT",
}
_OPENAI_TYPE = {
    404: "invalid_request_error",
    400: "invalid_request_error",
    422: "invalid_request_error",
    409: "conflict_error",
    500: "server_error",
    503: "server_error",
}


class LettaError(BaseModel):
    detail: str
    code: str | None = None  # CONVERSATION_BUSY on a 409 from a send
    run_id: str | None = None  # ... with the run that holds the conversation


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    error: OpenAIErrorDetail


# The documented client errors of every route (FastAPI's own 422 schema does not fit either body).
LETTA_ERRORS: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": LettaError, "description": "Client error: `detail` says what was wrong"}
}
OPENAI_ERRORS: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": OpenAIError, "description": "Client error: `error.param` names the field"}
}


def status_of(exc: ParleyError) -> int:
    return next((status for cls, status in _STATUS if isinstance(exc, cls)), 500)


def is_openai(request: Request) -> bool:
    return _is_openai_path(request.url.path)


def _is_openai_path(path: str) -> bool:
    return path.startswith("/openai/")


def error_response(request: Request, exc: ParleyError) -> JSONResponse:
    status = status_of(exc)
    headers = NO_RETRY if status == 409 else None
    if isinstance(exc, Overloaded):
        headers = {"retry-after": str(exc.retry_after)}
    if is_openai(request):
        if status == 422:
            status = 400  # the OpenAI surface reports every invalid field as a 400
        body = openai_body(status, exc.message, getattr(exc, "param", None), exc.code.lower())
    else:
        prefix = next((p for cls, p in _LETTA_PREFIX.items() if isinstance(exc, cls)), None)
        body = {"detail": f"{prefix}: {exc.message}" if prefix else exc.message}
        if isinstance(exc, ConversationBusy):
            body["code"] = exc.code
            if exc.run_id:
                body["run_id"] = exc.run_id
    return JSONResponse(body, status_code=status, headers=headers)


def openai_body(status: int, message: str, param: str | None, code: str | None) -> dict[str, Any]:
    kind = _OPENAI_TYPE.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


async def send_json_error(
    scope: Scope, send: Send, status: int, message: str, code: str | None, headers: dict[str, str]
) -> None:
    """An error answered by an ASGI middleware (auth, the lifecycle gate), in the body shape of the
    surface the request is on: it runs before FastAPI routes the request, so no exception handler
    above sees it. ``code`` is the OpenAI body's ``code``; ``headers`` are sent besides the body's."""
    if _is_openai_path(scope["path"]):
        body = openai_body(status, message, None, code)
    else:
        body = {"detail": message}
    payload = json.dumps(body).encode()
    extra = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def describe_validation(exc: RequestValidationError) -> str:
    """One readable line per failing field, e.g. ``body.messages.0.role: Input should be 'user'``."""
    lines = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error.get("loc", ()))
        lines.append(f"{location}: {error.get('msg', 'invalid')}")
    return "; ".join(lines) or "invalid request"


def install(app: FastAPI) -> None:
    @app.exception_handler(ParleyError)
    async def on_parley_error(request: Request, exc: ParleyError) -> JSONResponse:
        return error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        message = f"Invalid request: {describe_validation(exc)}"
        if is_openai(request):
            first = exc.errors()[0] if exc.errors() else {}
            where = first.get("loc", ())[1:] if first.get("type") != "json_invalid" else ()
            param = ".".join(str(p) for p in where) or None  # no field to name in broken JSON
            return JSONResponse(openai_body(400, message, param, None), status_code=400)
        return JSONResponse({"detail": message}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Starlette's own errors (no such route, method not allowed, a body that cannot be read)
        in the body shape of the surface they happened on."""
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        headers = dict(exc.headers or {})
        if is_openai(request):
            body: dict[str, Any] = openai_body(exc.status_code, message, None, None)
        else:
            body = {"detail": message}
        return JSONResponse(body, status_code=exc.status_code, headers=headers or None)

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        if is_openai(request):
            body: dict[str, Any] = openai_body(500, "An unknown error occurred", None, None)
        else:
            body = {"detail": "An unknown error occurred"}
        return JSONResponse(body, status_code=500)
