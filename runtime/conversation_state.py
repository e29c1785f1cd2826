"""A live conversation's cached state: the conversation row and its in-context messages.

Held by the conversation's actor between turns so a turn needs no history reads; every change is
written through to the store before it is visible to anyone.
"""

from __future__ import annotations

from collections.abc import Sequence

from .agent import Agent, Block
from .clock import utcnow
from .conversation import Conversation
from .errors import NotFound
from .memory import compile_system_prompt, same_prompt
from .message import Message, TextPart
from .store import Store


class ConversationState:
    def __init__(self, store: Store, conversation: Conversation, context: list[Message]) -> None:
        self.store = store
        self.conversation = conversation
        self.context = context  # system message first once the conversation has started

    @classmethod
    async def load(cls, store: Store, conversation_id: str) -> ConversationState:
        conversation = await store.get_conversation(conversation_id)
        if conversation is None:
            raise NotFound(f"Conversation {conversation_id} not found")
        context = await store.get_messages(conversation.in_context_message_ids)
        return cls(store, conversation, context)

    @classmethod
    async def start(
        cls, store: Store, conversation: Conversation, agent: Agent, blocks: Sequence[Block]
    ) -> Conversation:
        """Store a new Letta conversation with its compiled system message as its first in-context
        message, as Letta does at creation (so a new agent's history lists it before any send).

        Returns the conversation as stored; one whose id is taken (a racing twin of an agent's
        default conversation) is returned as found, its system message left to whoever made it.
        """
        if not await store.create_conversation(conversation):
            found = await store.get_conversation(conversation.id)
            if found is None:
                raise NotFound(f"Conversation {conversation.id} not found")
            return found
        state = cls(store, conversation, [])
        await state.refresh_system_message(agent, blocks)
        return state.conversation

    @property
    def id(self) -> str:
        return self.conversation.id

    @property
    def _has_system(self) -> bool:
        # Letta conversations start with their compiled system message; OpenAI ones have none
        # (their instructions come with each response).
        return bool(self.context) and self.context[0].role == "system"

    @property
    def system_prompt(self) -> str:
        return self.context[0].text() if self._has_system else ""

    @property
    def history(self) -> list[Message]:
        """The in-context messages after the system message, oldest first."""
        return self.context[1:] if self._has_system else list(self.context)

    async def refresh_system_message(self, agent: Agent, blocks: Sequence[Block]) -> None:
        """Create the conversation's system message if it has none yet (one made before system
        messages were written at creation); recompile it when memory changed."""
        now = utcnow()
        conversation_id = None if self.conversation.is_default else self.conversation.id
        prompt = compile_system_prompt(agent, blocks, conversation_id, max(len(self.context) - 1, 0), now)
        if not self._has_system:
            if self.context:
                return  # a conversation that began without one (OpenAI items) keeps it that way
            system = Message(
                role="system",
                parts=[TextPart(text=prompt)],
                agent_id=agent.id,
                conversation_id=self.conversation.id,
            )
            await self.append([system])
            return
        current = self.context[0]
        if not same_prompt(current.text(), prompt):
            updated = current.model_copy(update={"parts": [TextPart(text=prompt)]})
            await self.store.replace_message(updated)
            self.context[0] = updated

    async def refresh_conversation(self) -> None:
        """Re-read the conversation row: its other fields (summary, model ...) change over HTTP."""
        conversation = await self.store.get_conversation(self.conversation.id)
        if conversation is None:
            raise NotFound(f"Conversation {self.conversation.id} not found")
        self.conversation = conversation

    async def append(self, messages: Sequence[Message]) -> None:
        # Only the fields this actor owns are written, so concurrent HTTP updates are kept.
        now = utcnow()
        in_context = [*self.conversation.in_context_message_ids, *(m.id for m in messages)]
        fields = {"in_context_message_ids": in_context, "last_message_at": now, "updated_at": now}
        await self.store.append_messages(messages, fields)
        self.conversation = self.conversation.model_copy(update=fields)
        self.context.extend(messages)

    async def remove_part(self, message_id: str, part_index: int) -> bool:
        found = await self.store.get_messages([message_id])
        if not found or found[0].conversation_id != self.id or not 0 <= part_index < len(found[0].parts):
            return False
        message = found[0]
        gone = message.parts[part_index]
        if isinstance(gone, TextPart) and not gone.text:
            return False  # removed before
        # An emptied part stays in place so the other parts keep their index (item ids use it).
        parts = [TextPart(text="") if i == part_index else p for i, p in enumerate(message.parts)]
        if any(not isinstance(p, TextPart) or p.text for p in parts):
            updated = message.model_copy(update={"parts": parts, "revision": message.revision + 1})
            await self.store.replace_message(updated)
            self.context = [updated if m.id == message_id else m for m in self.context]
        else:
            await self.drop_from_context([message_id])
            await self.store.delete_messages([message_id])
        return True

    async def drop_from_context(self, message_ids: Sequence[str]) -> None:
        """Take messages out of the model's context; they stay stored and listed."""
        dropped = set(message_ids)
        if not dropped:
            return
        fields = {
            "in_context_message_ids": [
                i for i in self.conversation.in_context_message_ids if i not in dropped
            ]
        }
        await self.store.update_conversation(self.conversation.id, fields)
        self.conversation = self.conversation.model_copy(update=fields)
        self.context = [m for m in self.context if m.id not in dropped]
