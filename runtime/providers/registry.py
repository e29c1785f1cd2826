"""Which adapter serves a request: chosen by the provider named in the model handle."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from ..settings import ProviderCredentials
from .base import EncodedRequest, ModelDelta, ModelResponse, ProviderError
from .recording.transport import Recorder
from .retry import RetryPolicy, complete_with_retries, stream_with_retries

KNOWN_PROVIDERS = ("openai", "anthropic")


class ProviderRegistry:
    """Sends encoded requests to the adapter of their provider; adapters are built on first use.

    ``recorder`` (record-replay inference) sits under every adapter's SDK client; None is live.
    Failed calls are retried here, by ``retry`` (``max_retries`` when no policy is given): the
    adapters' SDK clients never retry on their own (see ``retry.py``).
    """

    def __init__(
        self,
        credentials: ProviderCredentials,
        max_retries: int = 2,
        timeout: float = 300.0,
        retry: RetryPolicy | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        self._credentials = credentials
        self._retry = retry or RetryPolicy(max_retries=max_retries)
        self._timeout = timeout
        self._adapters: dict[str, Any] = {}
        # Keys a provider's error text might quote back (a compatible server echoing the key it
        # refused): they never reach a run's error, a response or a log line.
        self._secrets = [k for k in credentials.secrets() if len(k) >= 6]
        self._recorder = recorder

    def adapter(self, provider: str) -> Any:
        """The provider's adapter (``OpenAIProvider``, ``OpenAIResponsesProvider``,
        ``AnthropicProvider``), built on first use."""
        adapter = self._adapters.get(provider)
        if adapter is None:
            adapter = self._adapters[provider] = self._build(provider)
        return adapter

    def _build(self, provider: str) -> Any:
        creds = self._credentials
        if provider in ("openai", "openai_responses"):
            # Both OpenAI APIs take the same credentials; each adapter keeps its own client pool.
            from .openai import OpenAIProvider
            from .openai_responses import OpenAIResponsesProvider

            cls = OpenAIResponsesProvider if provider == "openai_responses" else OpenAIProvider
            return cls(
                creds.openai_api_key,
                creds.openai_base_url,
                0,  # retried by this registry
                self._timeout,
                creds.endpoint_keys,
                recorder=self._recorder,
            )
        if provider == "anthropic":
            from .anthropic import AnthropicProvider

            return AnthropicProvider(
                creds.anthropic_api_key, creds.anthropic_base_url, 0, self._timeout, recorder=self._recorder
            )
        raise ProviderError(f"unknown provider {provider!r}", "not_found")

    async def aclose(self) -> None:
        """Close every adapter built so far."""
        adapters, self._adapters = list(self._adapters.values()), {}
        for adapter in adapters:
            await adapter.aclose()

    # Each attempt's error is scrubbed before the retry policy sees it: the policy logs it.
    async def send(self, encoded: EncodedRequest) -> ModelResponse:
        adapter = self.adapter(encoded.provider)

        async def attempt() -> ModelResponse:
            try:
                return await adapter.send(encoded)
            except ProviderError as exc:
                raise self._scrubbed(exc) from None

        return await complete_with_retries(attempt, self._retry)

    def stream_encoded(self, encoded: EncodedRequest) -> AsyncIterator[ModelDelta | ModelResponse]:
        adapter = self.adapter(encoded.provider)
        return stream_with_retries(lambda: self._scrubbing(adapter.stream_encoded(encoded)), self._retry)

    async def _scrubbing(
        self, stream: AsyncIterator[ModelDelta | ModelResponse]
    ) -> AsyncIterator[ModelDelta | ModelResponse]:
        try:
            async with aclosing(stream):  # type: ignore[type-var]  # the attempt's connection goes with it
                async for item in stream:
                    yield item
        except ProviderError as exc:
            raise self._scrubbed(exc) from None

    def _scrubbed(self, error: ProviderError) -> ProviderError:
        message = error.message
        for secret in self._secrets:
            message = message.replace(secret, "***")
        if message == error.message:
            return error
        scrubbed = ProviderError(message, error.kind, error.status)
        scrubbed.__dict__.update({k: v for k, v in vars(error).items() if k != "message"})
        scrubbed.message = message
        return scrubbed
