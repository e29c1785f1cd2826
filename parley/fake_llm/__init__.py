"""Deterministic fake LLM provider server speaking the OpenAI and Anthropic wire protocols.

Tests and benchmarks point the official SDKs at it (OpenAI: `http://HOST:PORT/v1`,
Anthropic: `http://HOST:PORT`). Endpoints: POST /v1/chat/completions, /v1/responses,
/v1/messages, /v1/messages/count_tokens; GET /v1/models; admin: GET /health,
GET /_fake/stats, POST /_fake/reset.

What it replies is the table `script.RULES`; a prompt can steer its own request with
`[[latency=S]]`, `[[token_delay=S]]`, `[[status=N]]`, `[[cut=K]]` and `[[hang]]`
(see `directives`).
"""

from .background import FakeLLMThread
from .options import FakeLLMOptions
from .server import build_app, main, start_fake_llm

__all__ = ["FakeLLMOptions", "FakeLLMThread", "build_app", "main", "start_fake_llm"]
