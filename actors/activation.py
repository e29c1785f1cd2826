"""``Activation``: one conversation bound to one conversation actor, for a while.

A conversation actor (a long-lived Ray actor process, see ``conversation_actor``) hosts many
activations. An activation is the conversation's ``ConversationRunner`` plus the directory's
binding token, and goes through three states:

- ``loading``: bound by the directory, its state coming from the store; calls wait for it;
- ``active``: serving calls;
- ``leaving``: passivation has begun. From the moment this is set, every call answers ``NotHere``
  and the caller asks the directory again. The state is set in the same synchronous step as the
  idle check that chose it, so no call can slip in between.

An activation is *idle* when it is active, no call of ours is in progress on it, and its runner
has no run, reader or log writer; only an idle activation ever passivates.
"""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import dataclass, field

from runtime.conversation_runner import ConversationRunner


class NotHere(Exception):
    """This actor does not serve the conversation (any more): resolve it through the directory."""

    def __init__(self, conversation_id: str) -> None:
        super().__init__(f"conversation {conversation_id} is not served here")
        self.conversation_id = conversation_id

    def __reduce__(self):  # Ray pickles errors between processes: keep the constructor's argument
        return (type(self), (self.conversation_id,))


class ActivationState(enum.Enum):
    loading = "loading"
    active = "active"
    leaving = "leaving"


@dataclass
class Activation:
    conversation_id: str
    token: int  # the directory's binding token: a release names it, so a stale one is ignored
    runner: ConversationRunner
    state: ActivationState = ActivationState.loading
    calls: int = 0  # our calls in progress (the runner counts its own readers and runs)
    loaded: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    bound_at: float = field(default_factory=time.monotonic)

    @property
    def idle(self) -> bool:
        return self.state is ActivationState.active and self.calls == 0 and self.runner.idle

    @property
    def idle_seconds(self) -> float:
        return time.monotonic() - self.runner.last_activity

    @property
    def ephemeral(self) -> bool:
        state = self.runner.state
        return state is not None and state.conversation.ephemeral

    async def load(self) -> None:
        """Load the conversation from the store (closing runs an earlier activation left running)."""
        try:
            await self.runner.activate()
        except BaseException as exc:
            self.loaded.set_exception(exc)
            self.loaded.exception()  # retrieved: callers that wait see it, nobody else is warned
            raise
        if self.state is ActivationState.loading:  # not retired meanwhile
            self.state = ActivationState.active
        self.loaded.set_result(None)

    async def ready(self) -> ConversationRunner:
        """The runner, once loaded. Returns without awaiting when already active, so a send's busy
        check still happens before the first ``await`` of the call."""
        if self.state is ActivationState.loading:
            await asyncio.shield(self.loaded)
        if self.state is not ActivationState.active:
            raise NotHere(self.conversation_id)
        return self.runner
