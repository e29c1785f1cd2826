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
from .message import Message, ToolCallPart
from .providers.base import BatchingProvider, ModelRequest, ModelResponse, Provider, ProviderError
from .providers.openai_responses_format import PROVIDER as RESPONSES_PROVIDER
from .providers.openai_responses_format import uses_responses_api
from .run import Run, StopReason, Usage
from .run_log import RunLog
from .tools.toolbox import Toolbox
from .turn import TurnRequest


class AgentLoop:
    def __init__(
        self, provider: Provider, coalesce_interval: float = 0.03, coalesce_deltas: int = 16
    ) -> None:
        self.provider = provider
        # Checked once: isinstance against a runtime-checkable Protocol walks its members (~0.2 ms).
        self._batching = provider if isinstance(provider, BatchingProvider) else None
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
        toolbox: Toolbox,
    ) -> Stopped:
        """Run steps until the model replies without calling a tool; ``usage`` is updated as steps
        complete (the caller keeps it, so a cancelled run still reports what it used)."""
        started = time.monotonic_ns()
        for step in range(max(request.max_steps, 1)):
            step_id = ids.new_id(ids.STEP)
            message_id = ids.new_id(ids.MESSAGE)
            model_request = self._model_request(agent, state, toolbox, request, first=step == 0)
            try:
                if request.stream_tokens:
                    response = await self._stream_step(model_request, run, message_id, log, started)
                else:
                    response = await self.provider.complete(model_request)
            except ProviderError as exc:
                # The failed turn stays stored and listed but leaves the model's context: the next
                # send starts clean (a turn that did not fit would never fit; a user resending
                # after an outage should not have the model see the message twice).
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
            calls = reply.tool_calls()
            if response.finish == "length" and not calls:
                # Cut off at the output limit: the reply is kept, but the turn did not end well.
                return Stopped(run_id=run.id, stop_reason=StopReason.max_tokens_exceeded, usage=usage)
            if not calls:
                return Stopped(run_id=run.id, stop_reason=StopReason.end_turn, usage=usage)
            ours = [c for c in calls if not toolbox.is_client_tool(c.name)]
            if ours:
                await self._call_tools(ours, run, state, agent, step_id, log, toolbox)
            if len(ours) < len(calls):
                # The client runs these and sends their results with its next request.
                return Stopped(run_id=run.id, stop_reason=StopReason.requires_approval, usage=usage)
        return Stopped(run_id=run.id, stop_reason=StopReason.max_steps, usage=usage)

    async def _call_tools(
        self,
        calls: Sequence[ToolCallPart],
        run: Run,
        state: ConversationState,
        agent: Agent,
        step_id: str,
        log: RunLog,
        toolbox: Toolbox,
    ) -> None:
        results = await toolbox.call_all(calls)
        # One stored message per result, as Letta lists them; the model sees them in call order.
        returns = [
            Message(
                role="tool",
                parts=[result],
                agent_id=agent.id,
                conversation_id=state.id,
                run_id=run.id,
                step_id=step_id,
            )
            for result in results
        ]
        await state.append(returns)
        for message in returns:
            log.append(MessageDone(message=message, streamed=False))
        if toolbox.memory_changed:
            # The next step must see the edited memory in its system prompt.
            toolbox.memory_changed = False
            await state.refresh_system_message(agent, await state.store.get_blocks(agent.block_ids))

    def _model_request(
        self, agent: Agent, state: ConversationState, toolbox: Toolbox, request: TurnRequest, first: bool
    ) -> ModelRequest:
        llm = agent.llm_config
        settings = agent.model_settings or {}
        provider = llm.model_endpoint_type
        thinking = settings.get("thinking") if provider == "anthropic" else None
        # OpenAI's reasoning models answer with reasoning summaries only through the Responses
        # API; OpenAI-compatible servers (own endpoint) may not have it, so they stay on chat.
        if provider == "openai" and not llm.model_endpoint and uses_responses_api(llm.model):
            provider = RESPONSES_PROVIDER
        effort = (
            settings.get("reasoning", {}).get("reasoning_effort")
            if isinstance(settings.get("reasoning"), dict)
            else None
        )
        return ModelRequest(
            provider=provider,
            model=llm.model,
            system=request.instructions if request.instructions is not None else state.system_prompt,
            messages=state.history,
            tools=toolbox.schemas,
            max_tokens=llm.max_tokens,
            temperature=llm.temperature,
            thinking=thinking if thinking and thinking.get("type") == "enabled" else None,
            reasoning_effort=effort or getattr(llm, "reasoning_effort", None),
            endpoint=llm.model_endpoint,
            # Forcing a tool applies to the first step only: forced on every step, the model could
            # never answer after the tool's result.
            tool_required=first and request.tool_required,
            forced_tool=request.forced_tool if first else None,
        )

    async def _stream_step(
        self, request: ModelRequest, run: Run, message_id: str, log: RunLog, started: int
    ) -> ModelResponse:
        # A provider living in another process coalesces on its side, before the hop.
        batches = (
            self._batching.stream_batches(request)
            if self._batching is not None
            else coalesce(self.provider.stream(request), self.coalesce_interval, self.coalesce_deltas)
        )
        response: ModelResponse | None = None
        async for batch in batches:
            if batch.deltas and run.ttft_ns is None:
                run.ttft_ns = time.monotonic_ns() - started
            for delta in batch.deltas:
                # Validated, not ``model_construct``ed: pydantic's Rust validation of these few
                # typed fields costs ~2.6 us, its Python ``model_construct`` ~9 (it resolves every
                # default), and a stream makes one of these per batch.
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
