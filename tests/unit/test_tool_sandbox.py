"""``run_source``: what a tool worker does with one call, run here in-process (no Ray)."""

from __future__ import annotations

import os
import time

import pytest

from runtime.tools.sandbox import run_source, scrub_environment, truncate

pytestmark = pytest.mark.timeout(10)


def test_success_captures_stdout_and_stderr() -> None:
    source = "import sys\ndef f(x: int) -> int:\n    print('hi', x)\n    print('warn', file=sys.stderr)\n    return x * 2\n"
    outcome = run_source(source, "f", {"x": 21}, 1000)
    assert (outcome.status, outcome.content) == ("success", "42")
    assert outcome.stdout == ["hi 21\n"] and outcome.stderr == ["warn\n"]


def test_exception_is_an_error_with_its_traceback() -> None:
    outcome = run_source("def f():\n    raise ValueError('nope')\n", "f", {}, 1000)
    assert (outcome.status, outcome.content) == ("error", "ValueError: nope")
    assert "Traceback" in outcome.stderr[0]


def test_missing_function_and_bad_arguments() -> None:
    assert "defines no function named 'g'" in run_source("def f():\n    pass\n", "g", {}, 1000).content
    assert run_source("def f(x):\n    return x\n", "f", {"y": 1}, 1000).content.startswith("TypeError")


def test_async_function_and_structured_result() -> None:
    source = "async def f() -> dict:\n    return {'a': [1, 2]}\n"
    assert run_source(source, "f", {}, 1000).content == '{"a": [1, 2]}'


def test_deadline_stops_a_sleeping_tool() -> None:
    began = time.monotonic()
    outcome = run_source("import time\ndef f():\n    time.sleep(30)\n", "f", {}, 1000, timeout=0.2)
    assert outcome.status == "error" and outcome.content.startswith("TimeoutError")
    assert time.monotonic() - began < 2


def test_system_exit_is_caught() -> None:
    assert run_source("def f():\n    raise SystemExit(3)\n", "f", {}, 1000).status == "error"


def test_long_results_are_truncated() -> None:
    assert truncate("x" * 50, 10).startswith("x" * 10 + "... [truncated")
    assert run_source("def f():\n    return 'y' * 100\n", "f", {}, 20).content.startswith("y" * 20 + "...")


def test_secrets_are_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("PARLEY_API_KEY", "k")
    monkeypatch.setenv("HARMLESS", "1")
    scrub_environment()
    assert "OPENAI_API_KEY" not in os.environ and "PARLEY_API_KEY" not in os.environ
    assert os.environ["HARMLESS"] == "1"


HOG = "def hog(mb: int) -> int:\n    block = bytearray(mb * 1024 * 1024)\n    return len(block)\n"


def test_memory_cap_stops_a_hog_and_is_lifted_afterwards() -> None:
    outcome = run_source(HOG, "hog", {"mb": 1024}, 1000, memory_mb=64)
    assert outcome.status == "error"
    assert outcome.content.startswith("MemoryError")
    within = run_source(HOG, "hog", {"mb": 16}, 1000, memory_mb=64)
    assert (within.status, within.content) == ("success", str(16 * 1024 * 1024))
    # The process itself is not capped once the call is over.
    assert len(bytearray(256 * 1024 * 1024)) == 256 * 1024 * 1024
