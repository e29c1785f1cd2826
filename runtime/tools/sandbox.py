"""Running one tool call from its source: what a tool worker process does.

Plain Python, no Ray: the actor layer ships this function to a worker process as a task and owns
the timeout (a hung call is killed with its process). The source is executed in a fresh namespace
per call, so calls share nothing but the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import io
import json
import os
import re
import signal
import threading
import traceback
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, Field

try:
    import resource
except ImportError:  # not on POSIX
    resource = None  # type: ignore[assignment]

# Environment variables a tool must never see (provider keys and the server's own key).
_SECRET_NAME = re.compile(r"(API_KEY|_TOKEN|SECRET|PASSWORD)", re.IGNORECASE)


class ToolOutcome(BaseModel):
    """A finished call: the text the model sees, and what the function printed."""

    status: Literal["success", "error"]
    content: str
    stdout: list[str] = Field(default_factory=list)
    stderr: list[str] = Field(default_factory=list)


def scrub_environment() -> None:
    for name in [n for n in os.environ if _SECRET_NAME.search(n)]:
        del os.environ[name]


class ToolTimeout(Exception):
    pass


@contextlib.contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Raise ``ToolTimeout`` in the running code after ``seconds`` (main thread only: a signal).

    The clock starts when the tool starts, not when it was queued or while its worker process was
    starting; code stuck inside one C call is left to the caller's backstop, which kills the process.
    """
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise ToolTimeout(f"the tool ran longer than {seconds:g} s and was stopped")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def memory_cap(megabytes: int) -> Iterator[None]:
    """Let the running code grow the process's address space by at most ``megabytes`` (allocations
    past it raise ``MemoryError``), then lift the cap again: the worker outlives the call.

    A soft ``RLIMIT_AS`` over what the process already maps (a Ray worker maps a lot up front).
    It keeps a runaway tool from taking the machine down; it is no wall against code that sets its
    own limits.
    """
    if megabytes <= 0 or resource is None:
        yield
        return
    try:
        with open("/proc/self/statm") as statm:
            mapped = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: no cap
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = mapped + megabytes * 1024 * 1024
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def run_source(
    source_code: str,
    name: str,
    arguments: dict[str, Any],
    char_limit: int,
    timeout: float | None = None,
    memory_mb: int = 0,
) -> ToolOutcome:
    """Define the function from ``source_code`` and call it with ``arguments``; never raises."""
    out, err = io.StringIO(), io.StringIO()
    status: Literal["success", "error"] = "success"
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        deadline(timeout),
        memory_cap(memory_mb),
    ):
        try:
            namespace: dict[str, Any] = {"__name__": "parley_tool"}
            exec(compile(source_code, f"<tool {name}>", "exec"), namespace)
            function = namespace.get(name)
            if not callable(function):
                raise NameError(f"the source of tool {name!r} defines no function named {name!r}")
            result = function(**arguments)
            if inspect.isawaitable(result):
                result = asyncio.run(_awaited(result))
            content = result_text(result)
        except ToolTimeout as exc:
            status, content = "error", f"TimeoutError: {exc}"
        except MemoryError:
            status, content = "error", f"MemoryError: the tool used more than its {memory_mb} MB"
        except (Exception, SystemExit) as exc:  # the tool's failure is the model's information
            status = "error"
            content = f"{type(exc).__name__}: {exc}"
            traceback.print_exc(file=err)
    return ToolOutcome(
        status=status,
        content=truncate(content, char_limit),
        stdout=_lines(out.getvalue()),
        stderr=_lines(err.getvalue()),
    )


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def result_text(result: Any) -> str:
    if isinstance(result, str):
        return result
    if result is None:
        return "None"
    try:
        return json.dumps(result, default=str)
    except (TypeError, ValueError):
        return str(result)


def truncate(text: str, limit: int) -> str:
    if limit <= 0 or len(text) <= limit:
        return text
    return f"{text[:limit]}... [truncated: the result had {len(text)} characters, the limit is {limit}]"


def _lines(text: str) -> list[str]:
    return [text] if text else []
