"""Runs -> OpenAI Response objects.

A response is one of our runs seen through the Responses API: its status, usage and error come
from the run, its output from the messages the run produced, and the rest echoes the request (the
SDK declares ``tools``, ``tool_choice`` and ``parallel_tool_calls`` non-optional, so they always
have a value).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from runtime.events import MessageDone, RunEvent, Stopped
from runtime.message import Message
from runtime.run import Run, RunStatus, StopReason, Usage

from . import ids
from .items import Item, items_of

_ERROR_CODES = {
    "llm_rate_limit": "rate_limit_exceeded",
    "llm_context_length": "context_length_exceeded",
}
# Request fields echoed on the response, with the value when the request omits them (or sends null).
_ECHOED: dict[str, Any] = {
    "instructions": None,
    "metadata": {},
    "temperature": None,
    "top_p": None,
    "max_output_tokens": None,
    "previous_response_id": None,
    "tools": [],
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "text": {"format": {"type": "text"}},
    "truncation": "disabled",
    "background": False,
    "reasoning": None,
    "store": True,
    "user": None,
    "service_tier": "default",
}


def unix(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())


def status_of(run: Run) -> str:
    if not run.status.terminal:
        return "in_progress"
    # A run cut off by the token limit counts as failed for Letta; OpenAI calls it incomplete.
    if run.stop_reason is StopReason.max_tokens_exceeded and run.status is not RunStatus.cancelled:
        return "incomplete"
    return run.status.value


def usage_of(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        # openai 3.54 declares cache_write_tokens required; we never write a provider cache.
        "input_tokens_details": {"cached_tokens": usage.cached_input_tokens or 0, "cache_write_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens or 0},
        "total_tokens": usage.total_tokens,
    }


def error_of(run: Run, status: str) -> dict[str, str] | None:
    """The ``error`` of a failed response; other statuses have none (as on hosted OpenAI)."""
    if status != "failed":
        return None
    error = run.metadata.get("error")
    if isinstance(error, dict):
        code = _ERROR_CODES.get(str(error.get("error_type")), "server_error")
        return {"code": code, "message": str(error.get("message") or "The response failed.")}
    # Clients read error.message on every failed response: never leave it null.
    reason = run.stop_reason.value if run.stop_reason else "unknown"
    return {"code": "server_error", "message": f"The response failed (stop reason: {reason})."}


def output_items(messages: Iterable[Message]) -> list[Item]:
    """The output of a response: every item the run produced, never the input it was given."""
    return [item for m in messages if m.role not in ("user", "system") for item in items_of(m)]


def _echoes(request: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, default in _ECHOED.items():
        value = request.get(key)
        out[key] = copy.deepcopy(default) if value is None else value
    return out


def response_object(
    run: Run,
    *,
    model: str,
    output: list[Message],
    conversation_id: str | None,
    request: dict[str, Any],
) -> dict[str, Any]:
    status = status_of(run)
    terminal = status != "in_progress"
    return {
        "id": ids.to_openai_response(run.id),
        "object": "response",
        "created_at": unix(run.created_at),
        "completed_at": unix(run.completed_at) if terminal else None,
        "status": status,
        "model": model,
        "output": output_items(output),
        "usage": usage_of(run.usage) if terminal else None,
        "error": error_of(run, status),
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "conversation": {"id": ids.to_openai_conversation(conversation_id)} if conversation_id else None,
        **_echoes(request),
    }


def response_of(run: Run, output: list[Message]) -> dict[str, Any]:
    """The response an OpenAI-surface ``run`` (its request echoed in ``request_config``) stands for,
    with ``output`` the messages it produced, in order."""
    echo = run.request_config["openai"]
    return response_object(
        run, model=echo["model"], output=output, conversation_id=echo.get("conversation"), request=echo
    )


def created_for(run: Run) -> dict[str, Any]:
    """The response an OpenAI-surface ``run`` stood for when it was created, whatever it has done
    since (see ``created_response``)."""
    echo = run.request_config["openai"]
    return created_response(run, model=echo["model"], conversation_id=echo.get("conversation"), request=echo)


class ResponseEnd:
    """The finished response, put together from the run's events as one reader sees them, so the
    replica streaming a response need not read the run and its messages back from the store.

    When ``response`` gives one, it equals ``response_of`` over the stored run and its stored
    output: the run's output is exactly its ``MessageDone`` events with a step (each message is
    stored, then announced, so the log has them in store order), and its end is what
    ``Stopped.record_on`` wrote to the row. It gives None where the log cannot vouch for that (no
    ``Stopped``, one without ``completed_at``, or not ``announced_all``): read the store then.
    """

    def __init__(self) -> None:
        self._output: list[Message] = []
        self._stopped: Stopped | None = None

    def feed(self, event: RunEvent) -> None:
        if isinstance(event, MessageDone):
            if event.message.step_id is not None:  # inputs carry no step: not output
                self._output.append(event.message)
        elif isinstance(event, Stopped):
            self._stopped = event

    def response(self, created: Run) -> dict[str, Any] | None:
        """The final response of ``created`` (the run as created, or any later row of it)."""
        stopped = self._stopped
        if stopped is None or stopped.completed_at is None or not stopped.announced_all:
            return None
        ended = created.model_copy()
        stopped.record_on(ended)
        return response_of(ended, self._output)


def created_response(
    run: Run, *, model: str, conversation_id: str | None, request: dict[str, Any]
) -> dict[str, Any]:
    """The response as it was when created: ``in_progress``, no output, usage, error or completion,
    however far ``run`` has got since. ``response.created`` and ``response.in_progress`` carry this
    snapshot; rendering it from the run's current state would let a fast provider's progress (the
    run may have finished before the stream first reads it) leak into the stream's first events."""
    as_created = run.model_copy(
        update={"status": RunStatus.created, "stop_reason": None, "completed_at": None, "usage": Usage()}
    )
    return response_object(
        as_created, model=model, output=[], conversation_id=conversation_id, request=request
    )
