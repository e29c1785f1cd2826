"""Server settings: defaults, overridden by ``PARLEY_*`` environment variables, then by CLI flags."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr

from .providers.recording.modes import InferenceMode, ReplayTiming

ENV_PREFIX = "PARLEY_"


COMPATIBLE_PREFIX = "PARLEY_PROVIDER_"


def _compatible_env(suffix: str) -> dict[str, str]:
    """``PARLEY_PROVIDER_<NAME>_<SUFFIX>`` variables by lower-cased provider name."""
    found = {}
    for key, value in os.environ.items():
        if key.startswith(COMPATIBLE_PREFIX) and key.endswith(suffix) and value:
            name = key[len(COMPATIBLE_PREFIX) : -len(suffix)].lower()
            if name:
                found[name] = value
    return found


class ProviderCredentials(BaseModel):
    """Provider keys and endpoints, read once where the server starts and handed to provider actors."""

    openai_api_key: str | None = None
    openai_base_url: str | None = None
    anthropic_api_key: str | None = None
    anthropic_base_url: str | None = None
    # API keys of OpenAI-compatible servers (vLLM, Ollama ...) by their base URL.
    endpoint_keys: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def from_env(cls) -> ProviderCredentials:
        env = os.environ
        urls = _compatible_env("_BASE_URL")
        keys = _compatible_env("_API_KEY")
        return cls(
            openai_api_key=env.get("OPENAI_API_KEY"),
            openai_base_url=env.get("OPENAI_BASE_URL"),
            anthropic_api_key=env.get("ANTHROPIC_API_KEY"),
            anthropic_base_url=env.get("ANTHROPIC_BASE_URL"),
            endpoint_keys={urls[name]: key for name, key in keys.items() if name in urls},
        )

    def secrets(self) -> list[str]:
        """Every key set here, longest first (so that one containing another is replaced whole)."""
        keys = {self.openai_api_key, self.anthropic_api_key, *self.endpoint_keys.values()}
        return sorted((k for k in keys if k), key=len, reverse=True)

    def __repr__(self) -> str:  # never print keys
        return "ProviderCredentials(...)"

    __str__ = __repr__


class Settings(BaseModel):
    # When set, every route but health needs "Authorization: Bearer <key>" (never printed or logged).
    api_key: SecretStr | None = None
    host: str = "127.0.0.1"
    port: int = 8283
    data_dir: str = Field(default_factory=lambda: str(Path.home() / ".parley"))
    store_url: str | None = None  # default: sqlite:///<data_dir>/parley.db
    namespace: str = "parley"  # Ray namespace of the conversation and provider actors
    # On SIGTERM/SIGINT, running turns get this long to end before they are cancelled (new work is
    # refused meanwhile). Under Kubernetes' default 30 s grace period, with room for the shutdown.
    drain_seconds: float = Field(default=20.0, ge=0)
    # An idle live conversation passivates after this (activation is a store read, ~ms: the
    # window only saves that read for conversations used again soon).
    conversation_idle_seconds: float = 60.0
    ephemeral_idle_seconds: float = 15.0  # ... and that of an OpenAI response's own conversation
    # Conversation actors (long-lived processes, each serving many conversations) per node; 0 means
    # one per CPU of the node.
    hosts_per_node: int = 0
    # Cap on live conversations per node, split evenly over its conversation actors; past it the
    # least recently used idle one passivates. 0: derived from the node's memory (a quarter of it
    # at 4 MiB per live conversation, at least 64).
    live_conversations_per_node: int = 0
    directory_shards: int = 2  # named directory actors; conversation c belongs to crc32(c) % this
    # Ray memory each conversation actor reserves (0: none). On an autoscaling cluster set it so
    # that the actors count as load on their nodes.
    conversation_actor_memory_mb: int = 0
    keepalive_seconds: float = 20.0  # ping on a stream after this much silence
    heartbeat_seconds: float = 1.0  # SSE comment on a silent stream, so a vanished client is noticed
    provider_actors: int = 1
    # HTTP ingress replicas: a fixed number, or Serve autoscaling between min and max on the open
    # requests per replica (each open SSE stream counts as one).
    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: float = 200.0
    # Provider calls: retries of 408/409/429/5xx, timeouts and connection failures while nothing of
    # the call has reached the client yet; the wait is the provider's retry-after up to
    # provider_max_retry_after_seconds (asking for more fails the call), else backoff from
    # provider_backoff_seconds. The timeout is the longest silence of the provider: before its
    # answer starts, and between two reads of a stream.
    provider_max_retries: int = 2
    provider_timeout_seconds: float = 300.0
    provider_backoff_seconds: float = 0.5
    provider_max_retry_after_seconds: float = 60.0
    # Record-replay of provider calls (runtime.providers.recording): "live" calls the provider,
    # "record" calls it and keeps every answer, "replay" answers only from recordings (a request
    # with none fails its run at once, naming its hash; the network is never used),
    # "record-if-missing" replays what it has and records the rest.
    inference_mode: InferenceMode = "live"
    recordings_dir: str | None = None  # default: <data_dir>/recordings
    # "instant": replayed answers come as fast as they are read; "recorded": with the recorded
    # wait for the headers and between streamed chunks.
    replay_timing: ReplayTiming = "instant"
    # The model of an OpenAI-surface response that names none; a bare model name means openai/<name>.
    openai_default_model: str = "openai/gpt-4o-mini"
    tool_timeout_seconds: float = 60.0  # a tool call still running after this is killed
    tool_cpus: float = 1.0  # Ray CPUs one running tool call holds (bounds concurrent tool processes)
    tool_memory_mb: int = 512  # address space a tool call may add to its worker (MemoryError past it)
    # Input limits (runtime.limits): text per input message, messages per request, a tool's source
    # code, and a whole request body (413 beyond it).
    max_message_bytes: int = Field(default=1_048_576, gt=0)
    max_messages_per_request: int = Field(default=1000, gt=0)
    max_tool_source_bytes: int = Field(default=262_144, gt=0)
    max_request_bytes: int = Field(default=33_554_432, gt=0)
    # Token deltas are coalesced before they cross to the conversation (runtime.coalesce): a stream
    # sends at most one batch per coalesce_ms, and a token waits at most that long; a provider
    # slower than that is forwarded token by token. A reader's gaps are this plus what the hops add
    # when the CPU is busy; 30 ms leaves 20 of the 50 ms a smooth stream allows for that (at 40 ms
    # and 100 streams, their starts and ends put up to 1.5 % of gaps past 50 ms), while a fast
    # provider's tokens still cross 6 or more to an item.
    coalesce_ms: float = 30.0
    # A batch goes out at once when this many deltas are pending (a burst is not held back).
    coalesce_tokens: int = 16
    # Batches per second one provider actor sends over all its streams before each stream's gap
    # grows beyond coalesce_ms (open streams / this): under heavy load, fewer and larger items
    # instead of a backlog. 0: no budget. 4000 leaves up to 120 streams at the 30 ms gap.
    coalesce_batches_per_s: float = 4000.0
    # Token streams cross between Parley's processes (provider actor to conversation actor to
    # ingress) after their first items over a direct connection (actors.channel: one per pair of
    # processes, shared by their streams; a Unix socket on the same node, TCP across nodes), at a
    # tenth of a Ray item's CPU each. Off: every item as a Ray item, for a cluster whose nodes open
    # only Ray's own ports to each other.
    stream_channel: bool = True
    # A send's first batch waits up to this long for more than its opening ping, so that a quick
    # turn crosses from its actor in one piece: until the run ends, its first token comes, or 20 ms
    # after a whole message (a turn's closing store writes). Later events are never held.
    first_batch_hold_ms: float = 100.0
    ray_address: str | None = None  # join an existing cluster instead of starting one
    # Where Serve runs HTTP proxies in a cluster: "EveryNode" (behind a load balancer) or "HeadOnly".
    proxy_location: str = "EveryNode"
    ray_num_cpus: int | None = None
    ray_object_store_mb: int = 128
    # OpenAI-compatible providers by handle prefix -> base URL, from PARLEY_PROVIDER_<NAME>_BASE_URL:
    # PARLEY_PROVIDER_VLLM_BASE_URL=http://gpu-box:8000/v1 makes "vllm/<model>" a model handle.
    compatible_providers: dict[str, str] = Field(default_factory=dict)

    @property
    def resolved_store_url(self) -> str:
        return self.store_url or f"sqlite:///{Path(self.data_dir).expanduser() / 'parley.db'}"

    @property
    def resolved_recordings_dir(self) -> str:
        return str(Path(self.recordings_dir or Path(self.data_dir) / "recordings").expanduser())

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        values: dict[str, object] = {}
        for name in cls.model_fields:
            raw = os.environ.get(ENV_PREFIX + name.upper())
            if raw is not None and raw != "":
                values[name] = raw
        values.setdefault("compatible_providers", _compatible_env("_BASE_URL"))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)
