"""``AgentLoop``: one run's steps, from the accepted input to a stop reason.

Plain async code over a ``Provider`` and the conversation's state; it knows nothing of Ray or HTTP.
Each produced message is persisted as soon as it is complete and then announced on the run log.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from . import ids
from .agent import Agent, Block
from .coalesce import coalesce
from .conversation_state import ConversationState
from .events import Delta, MessageDone, RunError, Stopped
from .message import Message
from .providers.base import BatchingProvider, ModelRequest, ModelResponse, Provider, ProviderError
from .run import Run, StopReason, Usage
from .run_log import RunLog
from .turn import TurnRequest


class AgentLoop:
    def __init__(
        self, provider: Provider, coalesce_interval: float = 0.05, coalesce_deltas: int = 16
    ) -> None:
        self.provider = provider
        self.coalesce_interval = coalesce_interval
        self.coalesce_deltas = coalesce_deltas

    async def run(
        self,
        run: Run,
        state: ConversationState,
        agent: Agent,
        blocks: Sequence[Block],
        request: TurnRequest,
        log: RunLog,
        usage: Usage,
    ) -> Stopped:
        """Run steps until the model stops; ``usage`` is updated as steps complete (the caller
        keeps it, so a cancelled run still reports what it used)."""
        started = time.monotonic_ns()
        for _ in range(max(request.max_steps, 1)):
            step_id = ids.new_id(ids.STEP)
            message_id = ids.new_id(ids.MESSAGE)
            model_request = self._model_request(agent, state)
            try:
                if request.stream_tokens:
                    response = await self._stream_step(model_request, run, message_id, log, started)
                else:
                    response = await self.provider.complete(model_request)
            except ProviderError as exc:
                if exc.kind == "context_length":
                    # The turn does not fit: keep its messages stored but out of the model's
                    # context, so the conversation stays usable for the next (smaller) send.
                    await state.drop_from_context([m.id for m in state.history if m.run_id == run.id])
                return Stopped(
                    run_id=run.id,
                    stop_reason=StopReason.error,
                    usage=usage,
                    error=RunError(error_type=f"llm_{exc.kind}", message=exc.message, detail=exc.message),
                )
            if run.ttft_ns is None:
                run.ttft_ns = time.monotonic_ns() - started
            usage.add(response.prompt_tokens, response.completion_tokens)
            reply = Message(
                id=message_id,
                role="assistant",
                parts=response.parts,
                agent_id=agent.id,
                conversation_id=state.id,
                run_id=run.id,
                step_id=step_id,
            )
            await state.append([reply])
            log.append(MessageDone(message=reply, streamed=request.stream_tokens))
            # Tool execution joins here; without tool calls the turn is over.
            if not reply.tool_calls():
                return Stopped(run_id=run.id, stop_reason=StopReason.end_turn, usage=usage)
        return Stopped(run_id=run.id, stop_reason=StopReason.max_steps, usage=usage)

    def _model_request(self, agent: Agent, state: ConversationState) -> ModelRequest:
        llm = agent.llm_config
        thinking = (
            (agent.model_settings or {}).get("thinking") if llm.model_endpoint_type == "anthropic" else None
        )
        return ModelRequest(
            provider=llm.model_endpoint_type,
            model=llm.model,
            system=state.system_prompt,
            messages=state.history,
            max_tokens=llm.max_tokens,
            temperature=llm.temperature,
            thinking=thinking if thinking and thinking.get("type") == "enabled" else None,
            endpoint=llm.model_endpoint,
        )

    async def _stream_step(
        self, request: ModelRequest, run: Run, message_id: str, log: RunLog, started: int
    ) -> ModelResponse:
        # A provider living in another process coalesces on its side, before the hop.
        batches = (
            self.provider.stream_batches(request)
            if isinstance(self.provider, BatchingProvider)
            else coalesce(self.provider.stream(request), self.coalesce_interval, self.coalesce_deltas)
        )
        response: ModelResponse | None = None
        async for batch in batches:
            if batch.deltas and run.ttft_ns is None:
                run.ttft_ns = time.monotonic_ns() - started
            for delta in batch.deltas:
                log.append(
                    Delta(
                        run_id=run.id,
                        message_id=message_id,
                        part=delta.part,
                        text=delta.text,
                        tool_call_id=delta.tool_call_id,
                        tool_name=delta.tool_name,
                        index=delta.index,
                    )
                )
            if batch.response is not None:
                response = batch.response
        if response is None:
            raise ProviderError("the provider stream ended without a final response", "other")
        return response
