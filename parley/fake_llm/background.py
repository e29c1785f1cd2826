"""Run the fake server on a background thread, for synchronous tests and fixtures."""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType

from aiohttp import web

from .options import FakeLLMOptions
from .server import start_fake_llm

START_TIMEOUT = 10.0


class FakeLLMThread:
    """`with FakeLLMThread() as fake: OpenAI(base_url=fake.openai_base_url, ...)`."""

    def __init__(self, options: FakeLLMOptions | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.options = options or FakeLLMOptions()
        self.host = host
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fake-llm", daemon=True)

    @property
    def base_url(self) -> str:
        """Root URL: what the Anthropic SDK takes as `base_url`."""
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"

    def start(self) -> FakeLLMThread:
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise TimeoutError("fake LLM server did not start")
        if self._error is not None:
            raise RuntimeError("fake LLM server failed to start") from self._error
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(START_TIMEOUT)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(START_TIMEOUT)

    def __enter__(self) -> FakeLLMThread:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._runner, self.port = self._loop.run_until_complete(
                start_fake_llm(self.host, self.port, self.options)
            )
        except BaseException as exc:  # reported to start() rather than lost in the thread
            self._error = exc
            self._ready.set()
            self._loop.close()
            return
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()
