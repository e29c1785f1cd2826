"""Passivation: when an activation leaves its conversation actor.

Two reasons, one rule. An activation passivates when it has been idle for its window
(``conversation_idle_seconds``, shorter for an OpenAI response's own conversation), or when its
actor is full and it is the least recently used idle activation there. A busy activation (a run,
a reader, a call in progress) never passivates.

What passivation does is the actor's (``ConversationActor._passivate``): mark the activation
``leaving`` in the same step as the idle check, tell the directory to release the binding, drop it.
Nothing is lost: every change was written to the store before it was visible.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .activation import Activation

# A node's default cap on live conversations: this share of its memory at this much per activation
# (a long conversation's in-context history and its encoded copy; most are far smaller).
MEMORY_SHARE = 0.25
BYTES_PER_ACTIVATION = 4 * 1024 * 1024
MIN_LIVE_PER_NODE = 64


def default_live_per_node(node_memory_bytes: int) -> int:
    return max(MIN_LIVE_PER_NODE, int(node_memory_bytes * MEMORY_SHARE / BYTES_PER_ACTIVATION))


@dataclass(frozen=True)
class PassivationPolicy:
    idle_seconds: float
    ephemeral_idle_seconds: float

    def window(self, activation: Activation) -> float:
        if activation.ephemeral:
            return min(self.idle_seconds, self.ephemeral_idle_seconds)
        return self.idle_seconds

    @property
    def check_every(self) -> float:
        """How often the actor looks for expired activations: a quarter of the shortest window."""
        shortest = min(self.idle_seconds, self.ephemeral_idle_seconds)
        return min(max(shortest / 4, 0.05), 15.0)

    def expired(self, activations: Iterable[Activation]) -> list[Activation]:
        return [a for a in activations if a.idle and a.idle_seconds >= self.window(a)]

    @staticmethod
    def eviction_victim(least_recent_first: Iterable[Activation]) -> Activation | None:
        """The least recently used idle activation, to make room for a new one; None if all are busy."""
        return next((a for a in least_recent_first if a.idle), None)
