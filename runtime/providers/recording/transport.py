"""``RecordingTransport``: the HTTP transport under the provider SDKs that records and replays.

The SDK client keeps building, authenticating, parsing and raising as always; only the place its
bytes come from changes. Streams (``text/event-stream`` answers) are kept as the chunks that
arrived, each cut at an SSE event boundary and stamped with its offset from the request; other
answers are kept whole. Only successful (2xx) answers are recorded: an error passes through
(a retry may then succeed and be recorded) and is never replayed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx2

from ...settings import Settings
from .errors import RecordingMissing
from .key import request_key
from .modes import InferenceMode, ReplayTiming
from .store import Chunk, Recording, RecordingStore

# Headers that describe the bytes as they came over the wire: the body we hand on is decoded.
_WIRE_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding", "connection"})
_CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key")
# After the SDK stops reading a stream it had all of (OpenAI's ``[DONE]``), the end of the body
# follows at once; a stream abandoned half-way (a cancelled run) goes on or stalls instead, and is
# not recorded. This is how long to wait for that end.
_END_WAIT_SECONDS = 1.0


@dataclass(frozen=True)
class Recorder:
    """What a ``RecordingTransport`` does: its mode, where recordings live, how replays are timed,
    and credentials to keep out of recordings besides those in each request's own headers."""

    mode: InferenceMode
    store: RecordingStore
    timing: ReplayTiming = "instant"
    secrets: tuple[str, ...] = field(default=(), repr=False)

    @classmethod
    def from_settings(cls, settings: Settings, secrets: Iterable[str] = ()) -> Recorder | None:
        """The recorder ``settings`` ask for; None for live inference."""
        if settings.inference_mode == "live":
            return None
        return cls(
            settings.inference_mode,
            RecordingStore(settings.resolved_recordings_dir),
            settings.replay_timing,
            tuple(s for s in secrets if s),
        )

    def client(self, network: Callable[[], httpx2.AsyncClient]) -> httpx2.AsyncClient:
        """An SDK ``http_client`` that records or replays; ``network`` makes the client that reaches
        the provider (built only when a request has to go there, so never in replay mode)."""
        if self.mode == "live":
            return network()
        return httpx2.AsyncClient(transport=RecordingTransport(self, network), timeout=None)


def http_client(network: Callable[[], httpx2.AsyncClient], recorder: Recorder | None) -> httpx2.AsyncClient:
    """``network()`` itself when there is no recorder (live inference), else the recorder's client."""
    return network() if recorder is None else recorder.client(network)


class RecordingTransport(httpx2.AsyncBaseTransport):
    def __init__(self, recorder: Recorder, network: Callable[[], httpx2.AsyncClient]) -> None:
        self._recorder = recorder
        self._make_network = network
        self._network: httpx2.AsyncClient | None = None

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        started = time.monotonic()
        raw = await request.aread()
        body = _parsed(raw)
        model = body.get("model") if isinstance(body, dict) else None
        key = request_key(request.method, request.url.path, body)
        mode = self._recorder.mode
        if mode in ("replay", "record-if-missing"):
            found = self._recorder.store.get(key)
            if found is not None:
                return await self._replay(found, request, started)
            if mode == "replay":
                raise RecordingMissing(mode, key, request.url.path, model)
        recording = Recording(
            hash=key, method=request.method, endpoint=request.url.path, model=model, request=body, status=0
        )
        return await self._record(request, recording, started)

    async def aclose(self) -> None:
        if self._network is not None:
            await self._network.aclose()
            self._network = None

    # ---- replay --------------------------------------------------------------------------------

    async def _replay(self, recording: Recording, request: httpx2.Request, started: float) -> httpx2.Response:
        timed = self._recorder.timing == "recorded"
        if timed:
            await _until(started + recording.headers_after)
        headers = {"content-type": recording.content_type} if recording.content_type else {}
        if recording.chunks is not None:
            stream = _ReplayStream(recording.chunks, started if timed else None)
            return httpx2.Response(recording.status, headers=headers, stream=stream, request=request)
        return httpx2.Response(
            recording.status, headers=headers, content=_body_bytes(recording.body), request=request
        )

    # ---- record --------------------------------------------------------------------------------

    async def _record(self, request: httpx2.Request, recording: Recording, started: float) -> httpx2.Response:
        if self._network is None:
            self._network = self._make_network()
        answer = await self._network.send(request, stream=True)
        headers = [(k, v) for k, v in answer.headers.multi_items() if k.lower() not in _WIRE_HEADERS]
        recording.status = answer.status_code
        recording.content_type = answer.headers.get("content-type")
        recording.headers_after = time.monotonic() - started
        secrets = (*self._recorder.secrets, *_credentials(request))
        keep = answer.is_success

        def store(done: Recording) -> None:
            self._recorder.store.put(done, secrets)

        if "text/event-stream" in (recording.content_type or ""):
            stream = _RecordingStream(answer, recording, started, store if keep else None)
            return httpx2.Response(answer.status_code, headers=headers, stream=stream, request=request)
        try:
            data = await answer.aread()
        finally:
            await answer.aclose()
        if keep:
            recording.body = _parsed(data)
            store(recording)
        return httpx2.Response(answer.status_code, headers=headers, content=data, request=request)


class _ReplayStream(httpx2.AsyncByteStream):
    """A recorded stream's chunks, each at its recorded offset from ``started`` (None: at once)."""

    def __init__(self, chunks: list[Chunk], started: float | None) -> None:
        self._chunks = chunks
        self._started = started

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            if self._started is not None:
                await _until(self._started + chunk.t)
            yield _chunk_bytes(chunk)


class _RecordingStream(httpx2.AsyncByteStream):
    """Hands a live stream on while keeping its chunks; ``store`` gets the recording once the
    stream has been read to its end (``None``: nothing is kept)."""

    def __init__(
        self,
        answer: httpx2.Response,
        recording: Recording,
        started: float,
        store: Callable[[Recording], None] | None,
    ) -> None:
        self._answer = answer
        self._recording = recording
        self._started = started
        self._store = store
        self._chunks: list[Chunk] = []
        self._pending = b""
        self._source: AsyncIterator[bytes] | None = None
        self._ended = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self._source = self._answer.aiter_bytes()
        async for data in self._source:
            self._keep(data)
            yield data
        self._end()

    async def aclose(self) -> None:
        try:
            if not self._ended and self._source is not None and self._store is not None:
                await self._await_end()
        finally:
            await self._answer.aclose()

    async def _await_end(self) -> None:
        """The reader stopped early: the stream counts as whole only if its end comes at once,
        with no more data."""
        assert self._source is not None
        try:
            more = await asyncio.wait_for(anext(self._source, None), _END_WAIT_SECONDS)  # type: ignore[arg-type]
        except (TimeoutError, httpx2.HTTPError):
            return
        if more is None:
            self._end()

    def _keep(self, data: bytes) -> None:
        self._pending += data
        cut = max(self._pending.rfind(b"\n\n") + 2, self._pending.rfind(b"\r\n\r\n") + 4, 0)
        if cut:
            self._chunks.append(_chunk(time.monotonic() - self._started, self._pending[:cut]))
            self._pending = self._pending[cut:]

    def _end(self) -> None:
        self._ended = True
        if self._pending:
            self._chunks.append(_chunk(time.monotonic() - self._started, self._pending))
            self._pending = b""
        if self._store is not None:
            self._recording.chunks = self._chunks
            self._store(self._recording)


def _chunk(offset: float, data: bytes) -> Chunk:
    try:
        return Chunk(t=round(offset, 6), text=data.decode("utf-8"))
    except UnicodeDecodeError:
        return Chunk(t=round(offset, 6), base64=base64.b64encode(data).decode("ascii"))


def _chunk_bytes(chunk: Chunk) -> bytes:
    if chunk.text is not None:
        return chunk.text.encode("utf-8")
    return base64.b64decode(chunk.base64 or "")


def _parsed(data: bytes) -> Any:
    """JSON as a value (readable in the recording file), else text; empty is None."""
    if not data:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return data.decode("utf-8", errors="replace")


def _body_bytes(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode("utf-8")
    return json.dumps(body).encode("utf-8")


def _credentials(request: httpx2.Request) -> Iterable[str]:
    for name in _CREDENTIAL_HEADERS:
        value = request.headers.get(name)
        if value:
            yield value
            scheme, _, token = value.partition(" ")
            if token and scheme.lower() in ("bearer", "basic"):
                yield token.strip()


async def _until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
