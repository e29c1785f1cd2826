"""The directory shard's single-activation rules, driven without Ray: actor handles are fakes.

A ``DirectoryShard`` instance is a plain object (the Ray actor class wraps it), so its
``resolve``/``release`` run here on one event loop with fake conversation actors whose ``bind``,
``holds`` and ``held`` answer as a test says.
"""

from __future__ import annotations

import asyncio

import pytest
from ray.exceptions import ActorDiedError
from ray_fakes import RemoteMethod, on_a_loop

from actors import directory as directory_module
from actors.directory import Binding, DirectoryShard, HostFull
from actors.placement import Host
from runtime.errors import NotFound, Overloaded
from runtime.settings import Settings


class FakeActor:
    """What the shard calls on a conversation actor."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.bound: dict[str, int] = {}
        self.binds = 0
        self.dead = False
        self.full = False
        self.silent = False
        self.missing: set[str] = set()
        self.bind_delay = 0.0
        self.bind = RemoteMethod(self._bind)
        self.holds = RemoteMethod(self._holds)
        self.held = RemoteMethod(self._held)

    async def _answer(self) -> None:
        if self.dead:
            raise ActorDiedError()
        if self.silent:
            await asyncio.sleep(3600)

    async def _bind(self, conversation_id: str, token: int) -> int:
        await self._answer()
        self.binds += 1
        await asyncio.sleep(self.bind_delay)
        if self.full:
            raise HostFull()
        if conversation_id in self.missing:
            raise NotFound(f"Conversation {conversation_id} not found")
        self.bound[conversation_id] = token
        return len(self.bound)

    async def _holds(self, conversation_id: str) -> bool:
        await self._answer()
        return conversation_id in self.bound

    async def _held(self, shard: int, shards: int) -> list[tuple[str, int]]:
        await self._answer()
        return list(self.bound.items())


def up(actor: FakeActor) -> Host:
    """A pool entry for an actor that has answered already."""
    answered = asyncio.get_running_loop().create_future()
    answered.set_result(True)
    return Host(actor.name, actor, up=answered)


class FakePool:
    def __init__(self, actors: list[FakeActor]) -> None:
        self.hosts = {a.name: up(a) for a in actors}

    def known(self) -> list[Host]:
        return list(self.hosts.values())

    def get(self, name: str) -> Host | None:
        return self.hosts.get(name)

    def refresh(self, force: bool = False) -> None:
        pass

    def lost(self, name: str) -> None:
        self.hosts.pop(name, None)

    async def choose(self, exclude: set[str]) -> Host | None:
        candidates = [h for h in self.hosts.values() if h.name not in exclude]
        return min(candidates, key=lambda h: (h.live, h.name)) if candidates else None


def shard_with(*actors: FakeActor) -> DirectoryShard:
    shard = DirectoryShard(Settings(directory_shards=1), 0)
    shard._pool = FakePool(list(actors))  # type: ignore[assignment]
    return shard


@on_a_loop
async def test_concurrent_first_resolves_bind_once():
    a, b = FakeActor("a"), FakeActor("b")
    a.bind_delay = b.bind_delay = 0.05
    shard = shard_with(a, b)
    bindings = await asyncio.gather(*(shard.resolve("conv-1") for _ in range(20)))
    assert a.binds + b.binds == 1
    assert len({(x.host_name, x.token) for x in bindings}) == 1


@on_a_loop
async def test_a_stale_binding_named_by_the_caller_is_replaced():
    a, b = FakeActor("a"), FakeActor("b")
    shard = shard_with(a, b)
    first = await shard.resolve("conv-1")
    # Without a suspect, the recorded binding is the answer.
    assert await shard.resolve("conv-1") == first
    # The actor passivated it (says it does not hold it) before its release arrived.
    actor = a if first.host_name == "a" else b
    del actor.bound["conv-1"]
    second = await shard.resolve("conv-1", suspect=first.token)
    assert second.token != first.token
    # The late release of the first binding does not remove the second.
    await shard.release("conv-1", first.token)
    assert await shard.lookup("conv-1") == second
    await shard.release("conv-1", second.token)
    assert await shard.lookup("conv-1") is None


@on_a_loop
async def test_a_suspect_that_still_holds_is_kept():
    a = FakeActor("a")
    shard = shard_with(a)
    first = await shard.resolve("conv-1")
    assert await shard.resolve("conv-1", suspect=first.token) == first
    assert a.binds == 1


@on_a_loop
async def test_bind_on_a_dead_actor_goes_elsewhere():
    a, b = FakeActor("a"), FakeActor("b")
    a.dead = True
    shard = shard_with(a, b)
    binding = await shard.resolve("conv-1")
    assert binding.host_name == "b"
    assert "conv-1" not in a.bound


@on_a_loop
async def test_a_dead_actor_loses_every_binding():
    a, b = FakeActor("a"), FakeActor("b")
    shard = shard_with(a, b)
    on_a = []
    for i in range(6):
        binding = await shard.resolve(f"conv-{i}")
        if binding.host_name == "a":
            on_a.append(binding)
    assert on_a
    a.dead = True
    moved = await shard.resolve(on_a[0].conversation_id, suspect=on_a[0].token)
    assert moved.host_name == "b"
    # The other conversations of the dead actor were forgotten with it: they bind anew too.
    for binding in on_a[1:]:
        assert await shard.lookup(binding.conversation_id) is None


@on_a_loop
async def test_a_silent_actor_is_fenced_before_rebinding(monkeypatch):
    killed = []
    monkeypatch.setattr(directory_module.ray, "kill", lambda handle, no_restart: killed.append(handle))
    monkeypatch.setattr(directory_module, "PROBE_TIMEOUT", 0.05)
    a, b = FakeActor("a"), FakeActor("b")
    shard = shard_with(a)
    first = await shard.resolve("conv-1")
    shard._pool.hosts["b"] = up(b)  # type: ignore[attr-defined]
    a.silent = True
    second = await shard.resolve("conv-1", suspect=first.token)
    assert killed == [a]
    assert second.host_name == "b"


@on_a_loop
async def test_full_actors_are_skipped_and_all_full_is_overloaded():
    a, b = FakeActor("a"), FakeActor("b")
    a.full = True
    shard = shard_with(a, b)
    assert (await shard.resolve("conv-1")).host_name == "b"
    b.full = True
    with pytest.raises(Overloaded):
        await shard.resolve("conv-2")


@on_a_loop
async def test_the_conversations_own_error_reaches_the_caller_and_nothing_is_recorded():
    a = FakeActor("a")
    a.missing.add("conv-gone")
    shard = shard_with(a)
    with pytest.raises(NotFound):
        await shard.resolve("conv-gone")
    assert await shard.lookup("conv-gone") is None


@on_a_loop
async def test_a_restarted_shard_rebuilds_from_what_the_actors_hold():
    a, b = FakeActor("a"), FakeActor("b")
    shard = shard_with(a, b)
    before = {c: await shard.resolve(c) for c in ("conv-1", "conv-2", "conv-3")}
    binds = a.binds + b.binds
    restarted = shard_with(a, b)  # a new incarnation: empty map
    for conversation_id, binding in before.items():
        again = await restarted.resolve(conversation_id)
        assert (again.host_name, again.token) == (binding.host_name, binding.token)
    assert a.binds + b.binds == binds  # nothing bound a second time


def test_binding_is_a_plain_value():
    binding = Binding("conv-1", "a", 7)
    assert binding.token == 7


@on_a_loop
async def test_placement_counts_what_other_shards_placed_too():
    """An actor another shard filled reports it on the next bind: this shard then goes elsewhere."""
    a, b = FakeActor("a"), FakeActor("b")
    a.bound.update({"other-1": 1, "other-2": 2})  # placed by another shard
    shard = shard_with(a, b)
    for conversation_id in ("c1", "c2", "c3"):  # a and b look alike until a reports its count
        await shard.resolve(conversation_id, None)
    assert len(b.bound) == 2 and len(a.bound) == 3  # a's own share stays at one of the three
