"""GET /v1/models: OpenAI's list shape, or Anthropic's when the caller is the Anthropic SDK."""

from __future__ import annotations

from aiohttp import web

# Any model name is accepted by the chat endpoints; these are just what the listing shows.
MODEL_IDS = ("fake-model", "fake-model-mini", "fake-claude")
_CREATED = 1_700_000_000
_CREATED_AT = "2023-11-14T22:13:20Z"


def _wants_anthropic(request: web.Request) -> bool:
    # Both providers serve /v1/models; only Anthropic clients send this header.
    return "anthropic-version" in request.headers


def _openai_model(model_id: str) -> dict[str, object]:
    return {"id": model_id, "object": "model", "created": _CREATED, "owned_by": "parley-fake"}


def _anthropic_model(model_id: str) -> dict[str, object]:
    return {"type": "model", "id": model_id, "display_name": model_id, "created_at": _CREATED_AT}


async def list_models(request: web.Request) -> web.Response:
    if _wants_anthropic(request):
        data = [_anthropic_model(m) for m in MODEL_IDS]
        return web.json_response(
            {"data": data, "has_more": False, "first_id": MODEL_IDS[0], "last_id": MODEL_IDS[-1]}
        )
    return web.json_response({"object": "list", "data": [_openai_model(m) for m in MODEL_IDS]})


async def get_model(request: web.Request) -> web.Response:
    model_id = request.match_info["model"]
    if _wants_anthropic(request):
        return web.json_response(_anthropic_model(model_id))
    return web.json_response(_openai_model(model_id))
