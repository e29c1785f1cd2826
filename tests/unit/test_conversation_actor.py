"""A conversation actor's activations, without Ray: binding, the cap, eviction, passivation.

``ConversationActor`` is a plain class (Ray wraps it as ``RemoteConversationActor``); here it runs
on one event loop over a real ``SqliteStore``, with a gated in-test provider and a fake directory
shard that records releases.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from ray_fakes import RemoteMethod, on_a_loop

from actors import conversation_actor as actor_module
from actors.activation import NotHere
from actors.channel import read_channel
from actors.conversation_actor import ConversationActor
from actors.directory import HostFull
from actors.streams import handed
from runtime.agent import Agent, LLMConfig
from runtime.conversation import Conversation
from runtime.errors import ConversationBusy, NotFound
from runtime.events import decode_batch
from runtime.message import TextPart
from runtime.providers.base import ModelDelta, ModelRequest, ModelResponse
from runtime.settings import Settings
from runtime.store.sqlite import SqliteStore
from runtime.turn import InputMessage, TurnRequest

pytestmark = pytest.mark.timeout(20)


class GatedProvider:
    """Answers "ok"; while ``gate`` is set to an unset event, waits for it first."""

    gate: asyncio.Event | None = None

    async def complete(self, request: ModelRequest) -> ModelResponse:
        if GatedProvider.gate is not None:
            await GatedProvider.gate.wait()
        return ModelResponse(parts=[TextPart(text="ok")], prompt_tokens=1, completion_tokens=1)

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelDelta | ModelResponse]:
        yield await self.complete(request)


class FakeShard:
    def __init__(self) -> None:
        self.released: list[tuple[str, int]] = []
        self.release = RemoteMethod(self._release)

    async def _release(self, conversation_id: str, token: int) -> None:
        self.released.append((conversation_id, token))


@pytest.fixture
def shard(monkeypatch: pytest.MonkeyPatch) -> FakeShard:
    fake = FakeShard()
    monkeypatch.setattr(actor_module, "shard_handle", lambda settings, index: fake)
    monkeypatch.setattr(actor_module, "ProviderPool", lambda settings, key: GatedProvider())
    GatedProvider.gate = None
    return fake


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(data_dir=str(tmp_path), live_conversations_per_node=2, **overrides)


async def conversations(settings: Settings, count: int) -> list[str]:
    store = SqliteStore(settings.resolved_store_url.removeprefix("sqlite:///"))
    agent = Agent(
        name="actor-test",
        system="You are a test agent.",
        llm_config=LLMConfig(model="gpt-4o-mini", model_endpoint_type="openai", context_window=128_000),
    )
    await store.create_agent(agent, [])
    made = []
    for _ in range(count):
        conversation = Conversation(agent_id=agent.id)
        await store.create_conversation(conversation)
        made.append(conversation.id)
    store.close()
    return made


async def turn(actor: ConversationActor, conversation_id: str, text: str = "hi") -> list[Any]:
    request = TurnRequest(messages=[InputMessage(text=text)])
    return [
        e
        for batch in [b async for b in handed(await actor.send(conversation_id, request))]
        for e in decode_batch(batch)
    ]


@on_a_loop
async def test_bind_serves_and_an_unbound_conversation_is_not_here(tmp_path, shard):
    settings = settings_for(tmp_path)
    one, two = await conversations(settings, 2)
    actor = ConversationActor(settings, "conversation-host-node-0", 1)
    await actor.bind(one, 1)
    assert await actor.holds(one)
    assert any(e.kind == "stopped" for e in await turn(actor, one))
    with pytest.raises(NotHere):
        await turn(actor, two)
    with pytest.raises(NotFound):
        await actor.bind("conv-00000000-0000-0000-0000-000000000000", 2)
    assert not await actor.holds("conv-00000000-0000-0000-0000-000000000000")


@on_a_loop
async def test_a_full_actor_passivates_its_least_recently_used_idle_conversation(tmp_path, shard):
    settings = settings_for(tmp_path)  # capacity 2 on this one-actor node
    a, b, c = await conversations(settings, 3)
    actor = ConversationActor(settings, "conversation-host-node-0", 1)
    await actor.bind(a, 1)
    await actor.bind(b, 2)
    await turn(actor, a)  # b is now the least recently used
    await actor.bind(c, 3)
    assert (await actor.report()).live == 2
    with pytest.raises(NotHere):
        await turn(actor, b)
    await asyncio.sleep(0.01)
    assert shard.released == [(b, 2)]
    assert await actor.holds(a) and await actor.holds(c)


@on_a_loop
async def test_a_busy_conversation_is_never_passivated(tmp_path, shard):
    settings = settings_for(tmp_path)
    a, b, c, d = await conversations(settings, 4)
    actor = ConversationActor(settings, "conversation-host-node-0", 1)
    await actor.bind(a, 1)
    await actor.bind(b, 2)
    GatedProvider.gate = asyncio.Event()
    running = asyncio.ensure_future(turn(actor, a))  # a is busy and the least recently used
    await asyncio.sleep(0.05)
    await actor.bind(c, 3)  # evicts b, the idle one, not a
    assert await actor.holds(a) and not await actor.holds(b)
    with pytest.raises(ConversationBusy):
        await turn(actor, a)  # the same activation, still busy
    second = asyncio.ensure_future(turn(actor, c))
    await asyncio.sleep(0.05)
    with pytest.raises(HostFull):  # both busy: no room
        await actor.bind(d, 4)
    GatedProvider.gate.set()
    assert any(e.kind == "stopped" for e in await running)
    await second
    GatedProvider.gate = None
    await actor.bind(d, 4)  # idle again: room is made


@on_a_loop
async def test_an_idle_conversation_passivates_after_its_window(tmp_path, shard):
    settings = settings_for(tmp_path, conversation_idle_seconds=0.2)
    [a] = await conversations(settings, 1)
    actor = ConversationActor(settings, "conversation-host-node-0", 1)
    await actor.bind(a, 7)
    await turn(actor, a)
    assert await actor.holds(a)
    await asyncio.sleep(0.6)
    assert not await actor.holds(a)
    assert shard.released == [(a, 7)]
    await actor.bind(a, 8)  # and comes back from the store
    assert len([e for e in await turn(actor, a, "again") if e.kind == "stopped"]) == 1


@on_a_loop
async def test_retire_drops_the_conversation(tmp_path, shard):
    settings = settings_for(tmp_path)
    [a] = await conversations(settings, 1)
    actor = ConversationActor(settings, "conversation-host-node-0", 1)
    await actor.bind(a, 1)
    await actor.retire(a)
    assert not await actor.holds(a)
    assert shard.released == [(a, 1)]


@on_a_loop
async def test_a_quick_turn_crosses_as_one_item_and_a_slow_one_over_a_channel(tmp_path, shard):
    settings = settings_for(tmp_path)
    [a] = await conversations(settings, 1)
    actor = ConversationActor(settings, "conversation-host-node-0", 1)
    await actor.bind(a, 1)
    request = TurnRequest(messages=[InputMessage(text="hi")])
    quick = await actor.send(a, request)
    assert len(quick.head) == 1 and quick.rest is None  # the whole run within the first batch
    GatedProvider.gate = asyncio.Event()
    slow = await actor.send(a, request)  # the run's start (after the first batch's hold), and a channel
    assert len(slow.head) == 1 and slow.rest is not None
    GatedProvider.gate.set()
    rest = [e for batch in [b async for b in read_channel(slow.rest)] for e in decode_batch(batch)]
    assert [e.kind for e in rest][-2:] == ["stopped", "done"]
    async with asyncio.timeout(5):  # the stream's end, not the call's, releases the conversation
        while actor._live[a].calls:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
