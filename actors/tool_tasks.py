"""Tool calls as plain Ray tasks: each runs in a worker process of its own, with a timeout.

A task holds a worker only while the tool runs, which is what tools need (CPU, arbitrary code);
``max_retries=0`` because a tool may have side effects. The worker interrupts a tool at its
deadline (counted from the tool's start, so a queued call or a worker still starting is not
charged); one that does not stop (stuck in a C call) is cancelled with ``force=True`` after a
backstop, which kills its worker process (measured: 1-24 ms to kill, ~0.5 s for a new worker).
"""

from __future__ import annotations

import asyncio
from typing import Any

import ray
from ray.exceptions import RayError, RayTaskError, TaskCancelledError

from runtime.tools.sandbox import ToolOutcome, run_source, scrub_environment
from runtime.tools.tool import Tool

# The worker stops a tool at its deadline itself (an alarm, counted from when the tool starts);
# the caller waits this much longer before killing the worker, for code that ignores the alarm.
BACKSTOP_SECONDS = 30.0


@ray.remote(max_retries=0)
def execute_tool(
    source_code: str, name: str, arguments: dict[str, Any], char_limit: int, timeout: float, memory_mb: int
) -> ToolOutcome:
    # Provider keys reach provider actors as arguments, never through the environment a tool sees.
    scrub_environment()
    return run_source(source_code, name, arguments, char_limit, timeout, memory_mb)


class RayToolRunner:
    """The ``ToolRunner`` of a conversation actor: one Ray task per call."""

    def __init__(self, timeout_seconds: float, num_cpus: float, memory_mb: int = 0) -> None:
        self._timeout = timeout_seconds
        self._num_cpus = num_cpus
        self._memory_mb = memory_mb

    async def run(self, tool: Tool, arguments: dict[str, Any]) -> ToolOutcome:
        ref = execute_tool.options(
            num_cpus=self._num_cpus, name=f"tool:{tool.name}", enable_task_events=False
        ).remote(
            tool.source_code or "",
            tool.name,
            arguments,
            tool.return_char_limit,
            self._timeout,
            self._memory_mb,
        )
        try:
            return await asyncio.wait_for(_result(ref), self._timeout + BACKSTOP_SECONDS)
        except TimeoutError:
            ray.cancel(ref, force=True)
            return ToolOutcome(
                status="error",
                content=f"TimeoutError: tool {tool.name} did not stop at its {self._timeout:g} s deadline "
                "and its process was killed",
            )
        except asyncio.CancelledError:
            ray.cancel(ref, force=True)  # the run was cancelled: the tool goes with it
            raise
        except TaskCancelledError:
            return ToolOutcome(status="error", content=f"tool {tool.name} was cancelled")
        except RayTaskError as exc:
            return ToolOutcome(status="error", content=f"tool {tool.name} failed: {exc.cause!r}")
        except RayError as exc:  # the worker died (e.g. the tool called os._exit or ran out of memory)
            return ToolOutcome(status="error", content=f"tool {tool.name} crashed: {type(exc).__name__}")


async def _result(ref: ray.ObjectRef) -> ToolOutcome:
    return await ref
