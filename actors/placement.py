"""Placement: which conversation actor a new activation goes to, and the per-node actor pools.

Every alive node runs a fixed pool of conversation actors (``hosts_per_node``, by default one per
CPU of the node), each a named, detached Ray actor pinned to its node:
``conversation-host-<node id>-<i>``. They are started when the server starts, and again by
``HostPool.refresh`` for a node that joined later or an actor that died, in the background and
never more than one start per node at a time: a process start is the pool's cost, never an
activation's. The name makes each start idempotent (``get_if_exists``), so two directory shards
refreshing at once start one actor.

A directory shard places a new activation on the actor with the fewest live conversations, as
that actor last reported them (each bind answers with its count, which includes every shard's
placements; the shard subtracts its own releases since), skipping actors that answered "full" or
died, and actors still starting: an activation waits for a process start only when no actor at
all is up. Counting only a shard's own placements instead drifts: two shards each sure an actor
is emptiest would fill it past its share and make it evict while another actor has room.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from runtime.settings import Settings

HOST_PREFIX = "conversation-host-"
REFRESH_SECONDS = 5.0  # the most often a shard re-lists the pool when nothing is wrong
STARTING_WAIT = 60.0  # how long a placement waits for an actor to come up when none is

log = logging.getLogger(__name__)


def host_name(node_id: str, index: int) -> str:
    return f"{HOST_PREFIX}{node_id}-{index}"


def node_of(name: str) -> str:
    return name[len(HOST_PREFIX) :].rsplit("-", 1)[0]


def hosts_for(settings: Settings, node: dict) -> int:
    if settings.hosts_per_node > 0:
        return settings.hosts_per_node
    return max(1, int(node.get("Resources", {}).get("CPU", 1)))


def alive_nodes() -> list[dict]:
    return [n for n in ray.nodes() if n.get("Alive")]


def start_host(settings: Settings, node: dict, index: int, hosts_on_node: int) -> ray.actor.ActorHandle:
    """Get or start the node's ``index``-th conversation actor."""
    from .conversation_actor import RemoteConversationActor  # the actor module imports this one

    node_id = node["NodeID"]
    megabytes = settings.conversation_actor_memory_mb
    reservation = {"memory": megabytes * 1024 * 1024} if megabytes > 0 else {}
    name = host_name(node_id, index)
    return RemoteConversationActor.options(
        name=name,
        namespace=settings.namespace,
        get_if_exists=True,
        lifetime="detached",
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
        **reservation,
    ).remote(settings, name, hosts_on_node)


def start_pools(settings: Settings) -> list[ray.ObjectRef]:
    """Start every alive node's pool; refs that resolve once each actor answers."""
    refs = []
    for node in alive_nodes():
        count = hosts_for(settings, node)
        refs += [start_host(settings, node, i, count).ping.remote() for i in range(count)]
    return refs


def listed_hosts(settings: Settings) -> list[str]:
    """Names of the conversation actors GCS knows (alive, starting or restarting)."""
    return sorted(
        entry["name"]
        for entry in ray.util.list_named_actors(all_namespaces=True)
        if entry["namespace"] == settings.namespace and entry["name"].startswith(HOST_PREFIX)
    )


@dataclass
class Host:
    name: str
    handle: ray.actor.ActorHandle
    live: int = 0  # its live conversations: its last report, less this shard's releases since
    full_until: float = 0.0  # answered "full": skipped until then
    up: asyncio.Future[bool] | None = field(default=None, repr=False)  # its first answer

    def __post_init__(self) -> None:
        if self.up is None:
            self.up = asyncio.ensure_future(_answers(self.handle))

    @property
    def node_id(self) -> str:
        return node_of(self.name)

    @property
    def ready(self) -> bool:
        assert self.up is not None
        return self.up.done() and self.up.result()


async def _answers(handle: ray.actor.ActorHandle) -> bool:
    try:
        return await handle.ping.remote()
    except Exception:  # never came up, or died: the pool forgets it on its next use
        return False


class HostPool:
    """A directory shard's view of the conversation actors, and the placement choice."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._hosts: dict[str, Host] = {}
        self._refreshed = 0.0

    def known(self) -> list[Host]:
        return list(self._hosts.values())

    def get(self, name: str) -> Host | None:
        return self._hosts.get(name)

    def refresh(self, force: bool = False) -> None:
        """Re-list the actors, and start those missing on alive nodes (without waiting for them)."""
        if not force and time.monotonic() - self._refreshed < REFRESH_SECONDS:
            return
        self._refreshed = time.monotonic()
        try:
            nodes = alive_nodes()
            for node in nodes:
                count = hosts_for(self._settings, node)
                for i in range(count):
                    name = host_name(node["NodeID"], i)
                    if name not in self._hosts:
                        self._hosts[name] = Host(name, start_host(self._settings, node, i, count))
            alive = {n["NodeID"] for n in nodes}
            for name in [n for n, h in self._hosts.items() if h.node_id not in alive]:
                del self._hosts[name]
        except Exception as exc:  # GCS briefly unreachable: keep the view we have
            log.warning("could not refresh the conversation actor pool: %s", exc)

    def lost(self, name: str) -> None:
        """The actor died or was fenced: forget its handle (a refresh starts a new one)."""
        self._hosts.pop(name, None)
        self._refreshed = 0.0

    async def choose(self, exclude: set[str]) -> Host | None:
        """An actor that is up, not full and not excluded; waits for one that is starting only
        when none is up."""
        self.refresh()
        deadline = time.monotonic() + STARTING_WAIT
        while True:
            now = time.monotonic()
            candidates = [h for h in self._hosts.values() if h.name not in exclude and h.full_until <= now]
            for dead in [h for h in candidates if h.up is not None and h.up.done() and not h.up.result()]:
                self.lost(dead.name)
            ready = [h for h in candidates if h.ready]
            if ready:
                fewest = min(h.live for h in ready)
                return random.choice([h for h in ready if h.live == fewest])
            starting = [h.up for h in candidates if h.up is not None and not h.up.done()]
            if not starting or now >= deadline:
                return None
            await asyncio.wait(starting, timeout=deadline - now, return_when=asyncio.FIRST_COMPLETED)
