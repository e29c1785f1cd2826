"""Stored messages <-> OpenAI conversation items.

Output: one stored message expands to one item per part (an assistant turn with reasoning, text
and two calls is four items), each id derived from the message id and the part's index, so no item
id is ever stored. Input: the item union the Responses API accepts as ``input`` (and conversations
accept as ``items``), parsed leniently because clients echo our own output back with every field.
"""

from __future__ import annotations

from typing import Any

from runtime.errors import InvalidArgument
from runtime.limits import InputLimits
from runtime.message import Message, Part, ReasoningPart, TextPart, ToolCallPart, ToolReturnPart
from runtime.turn import InputMessage

from . import ids

Item = dict[str, Any]


# --- output: stored message -> items ---------------------------------------------------------------
def message_item(message: Message, index: int, part: TextPart, status: str = "completed") -> Item:
    return {
        "type": "message",
        "id": ids.item_id(message.id, index, "message"),
        "role": "assistant",
        "status": status,
        "content": [output_text(part.text)],
    }


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def reasoning_item(message: Message, index: int, part: ReasoningPart) -> Item:
    return {
        "type": "reasoning",
        "id": ids.item_id(message.id, index, "reasoning"),
        "summary": [{"type": "summary_text", "text": part.text}],
        "status": "completed",
    }


def function_call_item(message: Message, index: int, part: ToolCallPart) -> Item:
    return {
        "type": "function_call",
        "id": ids.item_id(message.id, index, "function_call"),
        "call_id": part.id,
        "name": part.name,
        "arguments": part.arguments,
        "status": "completed",
    }


def function_call_output_item(message: Message, index: int, part: ToolReturnPart) -> Item:
    return {
        "type": "function_call_output",
        "id": ids.item_id(message.id, index, "function_call_output"),
        "call_id": part.tool_call_id,
        "output": part.content,
        "status": "completed",
    }


def _input_message_item(message: Message) -> Item:
    return {
        "type": "message",
        "id": ids.item_id(message.id, 0, "message"),
        "role": message.role,
        "status": "completed",
        "content": [{"type": "input_text", "text": p.text} for p in message.parts if isinstance(p, TextPart)],
    }


def _assistant_item(message: Message, index: int, part: Part) -> Item | None:
    if isinstance(part, ReasoningPart):
        return reasoning_item(message, index, part)
    if isinstance(part, TextPart):
        # Models often open a turn with an empty text block before a call: no item for it.
        return message_item(message, index, part) if part.text else None
    if isinstance(part, ToolCallPart):
        return function_call_item(message, index, part)
    return None


def items_of(message: Message) -> list[Item]:
    """The OpenAI items one stored message stands for, in order, every one with id and status."""
    if message.role in ("user", "system"):
        return [_input_message_item(message)]
    if message.role == "tool":
        return [
            function_call_output_item(message, index, part)
            for index, part in enumerate(message.parts)
            if isinstance(part, ToolReturnPart)
        ]
    items = (_assistant_item(message, index, part) for index, part in enumerate(message.parts))
    return [item for item in items if item is not None]


def page(items: list[Item], has_more: bool) -> dict[str, Any]:
    # ``has_more`` is always sent: the SDK keeps paging while it is missing.
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": has_more,
    }


# --- input: items -> InputMessage ------------------------------------------------------------------
_TEXT_TYPES = frozenset({"input_text", "output_text", "text"})
_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


def _invalid(message: str, param: str) -> InvalidArgument:
    exc = InvalidArgument(message)
    exc.param = param  # type: ignore[attr-defined]
    return exc


def _unsupported(path: str, kind: Any) -> InvalidArgument:
    return _invalid(f"{path}.type: {kind!r} is not supported.", f"{path}.type")


def _string(entry: dict[str, Any], key: str, path: str, *, required: bool = True) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or (required and not value):
        raise _invalid(f"Invalid value for '{path}.{key}': expected a non-empty string.", f"{path}.{key}")
    return value


def _object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid(f"Invalid type for '{path}': expected an object.", path)
    return value


def _part_text(part: Any, path: str) -> str:
    """The text of one content part; only text is supported (no images or files)."""
    part = _object(part, path)
    kind = part.get("type")
    if kind in _TEXT_TYPES:
        return _string(part, "text", path, required=False)
    if kind == "refusal":
        return _string(part, "refusal", path, required=False)
    raise _unsupported(path, kind)


def _texts(value: Any, path: str, what: str) -> list[str]:
    """A string, or the texts of a list of content parts."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [_part_text(part, f"{path}[{j}]") for j, part in enumerate(value)]
    raise _invalid(f"Invalid type for '{path}': expected a string or an array of {what}.", path)


def _message(entry: dict[str, Any], path: str, _names: dict[str, str]) -> InputMessage:
    role = _ROLES.get(entry.get("role")) if isinstance(entry.get("role"), str) else None
    if role is None:
        raise _invalid(
            f"Invalid value for '{path}.role': {entry.get('role')!r}. "
            "Supported values are: 'user', 'assistant', 'system' and 'developer'.",
            f"{path}.role",
        )
    texts = _texts(entry.get("content"), f"{path}.content", "content parts")
    # A user/system item keeps its parts (it lists them again as one item); an assistant text part
    # is an item of its own, so its parts are joined to keep one item in, one item out.
    keep = role != "assistant" and len(texts) > 1
    parts: list[Part] | None = [TextPart(text=t) for t in texts] if keep else None
    return InputMessage(role=role, text="".join(texts), parts=parts)  # type: ignore[arg-type]


def _function_call(entry: dict[str, Any], path: str, names: dict[str, str]) -> InputMessage:
    call = ToolCallPart(
        id=_string(entry, "call_id", path),
        name=_string(entry, "name", path),
        arguments=_string(entry, "arguments", path, required=False),
    )
    names[call.id] = call.name
    return InputMessage(role="assistant", parts=[call])


def _function_call_output(entry: dict[str, Any], path: str, names: dict[str, str]) -> InputMessage:
    call_id = _string(entry, "call_id", path)
    output = "".join(_texts(entry.get("output"), f"{path}.output", "input_text parts"))
    # The name is optional on the wire; the call it answers (when in the same input) knows it.
    name = entry.get("name") if isinstance(entry.get("name"), str) else names.get(call_id, "")
    part = ToolReturnPart(tool_call_id=call_id, name=name, content=output)
    return InputMessage(role="tool", text=output, parts=[part])


def _reasoning(entry: dict[str, Any], path: str, _names: dict[str, str]) -> InputMessage:
    texts = _summary_texts(entry, "summary", path) or _summary_texts(entry, "content", path)
    return InputMessage(role="assistant", parts=[ReasoningPart(text="\n\n".join(texts))])


def _summary_texts(entry: dict[str, Any], key: str, path: str) -> list[str]:
    value = entry.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _invalid(f"Invalid type for '{path}.{key}': expected an array.", f"{path}.{key}")
    return [
        _string(_object(s, f"{path}.{key}[{k}]"), "text", f"{path}.{key}[{k}]", required=False)
        for k, s in enumerate(value)
    ]


_PARSERS = {
    "message": _message,
    "function_call": _function_call,
    "function_call_output": _function_call_output,
    "reasoning": _reasoning,
}


def _parse_item(entry: Any, path: str, names: dict[str, str]) -> InputMessage:
    entry = _object(entry, path)
    kind = entry.get("type")
    if kind is None:
        # Easy messages come without a type; a bare {"id": ...} is an item_reference.
        kind = "message" if "role" in entry else "item_reference"
    parser = _PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None:
        raise _unsupported(path, kind)
    return parser(entry, path, names)


def _joins(previous: InputMessage, item: InputMessage) -> bool:
    """Whether ``item`` continues the assistant turn ``previous``.

    One model turn is one stored message (reasoning, text, then its calls). Echoed output comes
    back as one item per part; splitting it into one message per item would put an assistant
    message with calls right before another, which chat-completions providers reject.
    """
    if previous.role != "assistant" or item.role != "assistant":
        return False
    calls_only = all(isinstance(p, ToolCallPart) for p in item.message_parts())
    return calls_only or not any(isinstance(p, ToolCallPart) for p in previous.message_parts())


def _merge(previous: InputMessage, item: InputMessage) -> InputMessage:
    parts = previous.message_parts() + item.message_parts()
    text = "".join(p.text for p in parts if isinstance(p, TextPart))
    return InputMessage(role="assistant", text=text, parts=parts)


def parse_input(
    value: str | list[Any], field: str = "input", limits: InputLimits | None = None
) -> list[InputMessage]:
    """The messages a Responses ``input`` (or a conversation's ``items``) stands for, in order;
    with ``limits``, the number of items and each one's size are checked as they were sent."""
    if isinstance(value, str):
        message = InputMessage(role="user", text=value)
        if limits is not None:
            limits.check_message(message, field)
        return [message]
    if not isinstance(value, list):
        raise _invalid(f"Invalid type for '{field}': expected a string or an array of input items.", field)
    if not value:
        raise _invalid(f"Invalid '{field}': empty array. Expected an array with minimum length 1.", field)
    if limits is not None:
        limits.check_count(len(value), field)
    names: dict[str, str] = {}  # call_id -> function name, for outputs that do not repeat it
    out: list[InputMessage] = []
    for index, entry in enumerate(value):
        item = _parse_item(entry, f"{field}[{index}]", names)
        if limits is not None:
            limits.check_message(item, f"{field}[{index}]")
        if out and _joins(out[-1], item):
            out[-1] = _merge(out[-1], item)
        else:
            out.append(item)
    return out
