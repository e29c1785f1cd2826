"""Provider-neutral failures and how each provider spells them on the wire."""

from __future__ import annotations

import json
from dataclasses import dataclass

from aiohttp import web

from .ids import new_id


@dataclass(frozen=True, slots=True)
class Failure:
    status: int
    # Neutral kind: invalid_request, context_length, auth, permission, not_found,
    # too_large, rate_limit, server, overloaded.
    kind: str
    message: str = ""  # empty: use the provider's usual wording for the kind
    param: str | None = None
    prompt_tokens: int = 0  # context_length only
    limit: int = 0  # context_length only
    retry_after: str | None = None  # the `retry-after` header; 429 says "1" when not given


_KIND_BY_STATUS = {
    400: "invalid_request",
    401: "auth",
    403: "permission",
    404: "not_found",
    413: "too_large",
    429: "rate_limit",
    503: "overloaded",
    529: "overloaded",
}


def failure_for_status(status: int, retry_after: str | None = None) -> Failure:
    """The failure a `[[status=N]]` directive (and `[[retry_after=S]]`) asks for."""
    kind = _KIND_BY_STATUS.get(status) or ("server" if status >= 500 else "invalid_request")
    return Failure(status, kind, retry_after=retry_after)


def bad_request(message: str, param: str | None = None) -> Failure:
    return Failure(400, "invalid_request", message, param)


def context_too_long(prompt_tokens: int, limit: int) -> Failure:
    return Failure(400, "context_length", prompt_tokens=prompt_tokens, limit=limit)


# ---- OpenAI: {"error": {"message", "type", "param", "code"}} ------------------------------

# kind -> (type, code, usual message)
_OPENAI: dict[str, tuple[str, str | None, str]] = {
    "invalid_request": ("invalid_request_error", None, "Invalid request."),
    "auth": ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    "permission": (
        "invalid_request_error",
        "unsupported_country_region_territory",
        "Country, region, or territory not supported.",
    ),
    "not_found": (
        "invalid_request_error",
        "model_not_found",
        "The model does not exist or you do not have access to it.",
    ),
    "too_large": ("invalid_request_error", None, "Request too large."),
    "rate_limit": (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests. Please try again in 1s.",
    ),
    "server": (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    "overloaded": ("server_error", None, "The engine is currently overloaded, please try again later."),
}


def openai_error(failure: Failure, input_param: str = "messages") -> web.Response:
    """Render for the OpenAI APIs; `input_param` names the prompt field (messages / input)."""
    if failure.kind == "context_length":
        error = {
            "message": (
                f"This model's maximum context length is {failure.limit} tokens. However, your "
                f"messages resulted in {failure.prompt_tokens} tokens. "
                "Please reduce the length of the messages."
            ),
            "type": "invalid_request_error",
            "param": input_param,
            "code": "context_length_exceeded",
        }
    else:
        kind, code, usual = _OPENAI[failure.kind]
        error = {"message": failure.message or usual, "type": kind, "param": failure.param, "code": code}
    return _respond(failure, {"error": error}, "x-request-id")


# ---- Anthropic: {"type": "error", "error": {"type", "message"}} ---------------------------

_ANTHROPIC: dict[str, tuple[str, str]] = {
    "invalid_request": ("invalid_request_error", "Invalid request."),
    "auth": ("authentication_error", "invalid x-api-key"),
    "permission": (
        "permission_error",
        "Your API key does not have permission to use the specified resource.",
    ),
    "not_found": ("not_found_error", "The requested resource could not be found."),
    "too_large": ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    "rate_limit": ("rate_limit_error", "Number of requests has exceeded your rate limit."),
    "server": ("api_error", "Internal server error"),
    "overloaded": ("overloaded_error", "Overloaded"),
}


def anthropic_error(failure: Failure) -> web.Response:
    if failure.kind == "context_length":
        kind = "invalid_request_error"
        message = f"prompt is too long: {failure.prompt_tokens} tokens > {failure.limit} maximum"
    else:
        kind, usual = _ANTHROPIC[failure.kind]
        message = failure.message or usual
    request_id = new_request_id()
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}
    return _respond(failure, body, "request-id", request_id)


def new_request_id() -> str:
    return new_id("req_")


def _respond(failure: Failure, body: object, id_header: str, request_id: str | None = None) -> web.Response:
    headers = {id_header: request_id or new_request_id()}
    retry_after = failure.retry_after or ("1" if failure.status == 429 else None)
    if retry_after is not None:
        headers["retry-after"] = retry_after  # clients honour it (Parley within a cap)
    return web.Response(
        status=failure.status,
        body=json.dumps(body).encode(),
        content_type="application/json",
        headers=headers,
    )
