"""The fake model's "mind": decides the reply to a conversation. Pure and deterministic, no HTTP."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .conversation import ANY_TOOL, Conversation

COUNT_LIMIT = 10_000  # `count to N` is capped so one request cannot eat the benchmark machine
DEFAULT_REASONING = "Considering the request."


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: str  # JSON object text, as both wire protocols carry it when streaming


@dataclass(frozen=True, slots=True)
class Reply:
    text: str  # may be empty when the reply is only a tool call
    reasoning: str | None = None
    tool_call: ToolCall | None = None


RuleAction = Callable[[re.Match[str], Conversation], Reply]

_FLAGS = re.IGNORECASE | re.DOTALL


def _rule(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, _FLAGS)


def decide(conv: Conversation, text: str) -> Reply:
    """Reply to `conv`, whose final message (directives already stripped) is `text`."""
    if conv.tool_result is not None:
        reply = Reply(f"Tool {conv.tool_result.name} returned: {text}")
    else:
        reply = _obey_tool_choice(conv, _first_rule(conv, text.strip()))
        if conv.narrates_tool_calls and reply.tool_call is not None and not reply.text:
            reply = Reply(f"I'll use the {reply.tool_call.name} tool.", reply.reasoning, reply.tool_call)
    if conv.can_reason and reply.reasoning is None:
        reply = Reply(reply.text, DEFAULT_REASONING, reply.tool_call)
    return reply


def _obey_tool_choice(conv: Conversation, reply: Reply) -> Reply:
    """A request that forces a tool call gets one: the forced tool (or the first offered), with the
    arguments the rule chose when it called that tool, else placeholders."""
    wanted = conv.forced_tool
    if wanted is None or not conv.tools:
        return reply
    name = next(iter(conv.tools)) if wanted == ANY_TOOL else wanted
    if reply.tool_call is not None and (wanted == ANY_TOOL or reply.tool_call.name == name):
        return reply
    if name not in conv.tools:
        return reply
    return Reply("", reply.reasoning, ToolCall(name, json.dumps(placeholder_arguments(conv.tools[name]))))


def _first_rule(conv: Conversation, text: str) -> Reply:
    for pattern, action in RULES:
        match = pattern.search(text)
        if match is not None:
            return action(match, conv)
    return Reply(f"You said: {text}")


# ---- the rules, first match wins ----------------------------------------------------------


def _call_tool(m: re.Match[str], conv: Conversation) -> Reply:
    wanted = m.group("name")
    name = _offered_tool(conv, wanted)
    rest = m.string[m.end() :]
    args, rest = _json_after_with(rest)
    said = re.search(r"\band say\s+(?P<x>.+)$", rest, _FLAGS)
    preface = _strip_period(said.group("x")) if said else ""
    if name is None:
        return Reply(f"I have no tool named {wanted}.")
    if args is None:
        args = placeholder_arguments(conv.tools[name])
        # "with 16 sides": numbers after "with" fill the numeric parameters, in order.
        numbers = re.match(r"\s+with\s+([\d\s,and.]+)", rest, re.IGNORECASE)
        if numbers is not None:
            _fill_numbers(args, conv.tools[name], re.findall(r"\d+", numbers.group(1)))
    return Reply(preface, tool_call=ToolCall(name, json.dumps(args)))


def _fill_numbers(args: dict[str, Any], schema: dict[str, Any], numbers: list[str]) -> None:
    props = schema.get("properties") or {}
    numeric = [n for n, p in props.items() if isinstance(p, dict) and p.get("type") in ("integer", "number")]
    for name, value in zip(numeric, numbers, strict=False):
        args[name] = int(value)


def _remember(m: re.Match[str], conv: Conversation) -> Reply:
    return Reply(f"Okay, I will remember the word {_clean_word(m.group('word'))}.")


def _recall(m: re.Match[str], conv: Conversation) -> Reply:
    for earlier in reversed(conv.user_texts()):
        found = _REMEMBER.search(earlier)
        if found is not None:
            return Reply(f"The word is {_clean_word(found.group('word'))}.")
    return Reply("I don't know any word.")


def _say(m: re.Match[str], conv: Conversation) -> Reply:
    return Reply(_strip_period(m.group("x")))


def _echo(m: re.Match[str], conv: Conversation) -> Reply:
    return Reply(m.group("x"))


def _count(m: re.Match[str], conv: Conversation) -> Reply:
    n = max(1, min(int(m.group("n")), COUNT_LIMIT))
    return Reply(" ".join(str(i) for i in range(1, n + 1)))


def _think(m: re.Match[str], conv: Conversation) -> Reply:
    topic = _strip_period(m.group("x"))
    reasoning = f"Thinking about {topic}." if conv.can_reason else None
    return Reply(f"I thought about {topic}.", reasoning)


def _greet(m: re.Match[str], conv: Conversation) -> Reply:
    return Reply("Hello! How can I help you today?")


_REMEMBER = _rule(r"\bremember the word:?\s+(?P<word>\S+)")

RULES: tuple[tuple[re.Pattern[str], RuleAction], ...] = (
    (_rule(r"\bcall\s+(?:the\s+)?(?:tool\s+)?(?P<name>[\w-]+)(?:\s+tool\b)?"), _call_tool),
    (_REMEMBER, _remember),
    (_rule(r"\b(?:what|which)\s+word\b|\brecall\b|\bwhat(?:'s|\s+is|\s+was)\s+the\s+word\b"), _recall),
    (_rule(r"\b(?:reply with|respond with|say)\s+(?P<x>.+)$"), _say),
    (_rule(r"\becho\s+(?P<x>.+)$"), _echo),
    (_rule(r"\bcount to\s+(?P<n>\d+)"), _count),
    (_rule(r"\bthink about\s+(?P<x>.+)$"), _think),
    (_rule(r"^(?:hi|hello|hey)\W*$"), _greet),
)


# ---- helpers -------------------------------------------------------------------------------


def _offered_tool(conv: Conversation, wanted: str) -> str | None:
    if wanted in conv.tools:
        return wanted
    lowered = wanted.lower()
    return next((name for name in conv.tools if name.lower() == lowered), None)


def _json_after_with(rest: str) -> tuple[dict[str, Any] | None, str]:
    """Parse `with {json}` at the start of `rest`; return the object and the text after it."""
    m = re.match(r"\s+with\s*(?=\{)", rest, re.IGNORECASE)
    if m is None:
        return None, rest
    try:
        value, end = json.JSONDecoder().raw_decode(rest, m.end())
    except ValueError:
        return None, rest
    return (value if isinstance(value, dict) else None), rest[end:]


def placeholder_arguments(schema: dict[str, Any]) -> dict[str, Any]:
    """Deterministic values for the schema's required parameters, so calls validate."""
    props = schema.get("properties") or {}
    return {name: _placeholder(props.get(name) or {}) for name in schema.get("required") or []}


_PLACEHOLDER_BY_TYPE: dict[str, Any] = {
    "string": "example",
    "integer": 1,
    "number": 1,
    "boolean": True,
    "array": [],
    "object": {},
    "null": None,
}


def _placeholder(prop: dict[str, Any]) -> Any:
    if "default" in prop:
        return prop["default"]
    if prop.get("enum"):
        return prop["enum"][0]
    kind = prop.get("type", "string")
    if isinstance(kind, list):  # e.g. ["string", "null"]: prefer the non-null type
        kind = next((k for k in kind if k != "null"), "null")
    return _PLACEHOLDER_BY_TYPE.get(kind, "example")


def _strip_period(text: str) -> str:
    text = text.strip()
    return text[:-1].rstrip() if text.endswith(".") else text


def _clean_word(word: str) -> str:
    return word.strip(".,!?;:\"'`()")
