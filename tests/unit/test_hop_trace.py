"""The hop trace (``runtime.hop_trace``) and its reading (``benchmarks.hop_gaps``)."""

from __future__ import annotations

import importlib
import os

import pytest

from benchmarks import hop_gaps
from runtime import hop_trace


@pytest.fixture
def tracing(tmp_path, monkeypatch):
    """``runtime.hop_trace`` as a process started with ``PARLEY_HOP_TRACE_DIR`` set has it."""
    monkeypatch.setenv("PARLEY_HOP_TRACE_DIR", str(tmp_path))
    module = importlib.reload(hop_trace)
    yield module
    monkeypatch.delenv("PARLEY_HOP_TRACE_DIR")
    importlib.reload(hop_trace)


def test_off_by_default(monkeypatch):
    monkeypatch.delenv("PARLEY_HOP_TRACE_DIR", raising=False)
    assert not importlib.reload(hop_trace).TRACING


def test_marks_are_written_per_process_with_their_stream_and_time(tracing, tmp_path):
    assert tracing.TRACING
    one, two = object(), object()
    tracing.mark("sent", one)
    tracing.mark("sent", two)
    tracing.mark("received", one)
    tracing.flush()
    lines = (tmp_path / f"{os.getpid()}.tsv").read_text().splitlines()
    rows = [line.split("\t") for line in lines]
    assert [(point, stream) for _, point, stream, _ in rows] == [
        ("sent", str(id(one))),
        ("sent", str(id(two))),
        ("received", str(id(one))),
    ]
    assert all(title for title, *_ in rows) and all(float(at) > 1e9 for *_, at in rows)


def test_a_ray_workers_title_is_given_without_the_method_it_runs():
    assert hop_trace.process_title("ray::ProviderActor.stream_batches") == "ray::ProviderActor"
    assert (
        hop_trace.process_title("ray::ServeReplica:parley:ParleyIngress")
        == "ray::ServeReplica:parley:ParleyIngress"
    )
    assert hop_trace.process_title("/usr/bin/python3.11") == "/usr/bin/python3.11"


def test_gaps_are_per_stream_in_path_order_split_between_streams_and_by_window(tmp_path):
    def lines(title: str, point: str, stream: str, times: list[float]) -> str:
        return "".join(f"{title}\t{point}\t{stream}\t{at}\n" for at in times)

    (tmp_path / "1.tsv").write_text(
        lines("ray::ServeReplica:parley", "received", "7", [100.0, 100.04, 100.1])
        + lines("ray::ServeReplica:parley", "received", "8", [100.02, 100.06])
    )
    (tmp_path / "2.tsv").write_text(
        # stream 5's key comes again two seconds later: a later stream, not a 2 s gap
        lines("ray::ProviderActor", "sent", "5", [100.0, 100.04, 102.0, 102.04])
        + lines("ray::ProviderActor", "token", "9", [100.0, 100.025])
    )
    found = hop_gaps.point_gaps(hop_gaps.read_trace(str(tmp_path)), split_s=0.5)
    assert [(f.process, f.point) for f in found] == [
        ("ray::ProviderActor (2)", "token"),
        ("ray::ProviderActor (2)", "sent"),
        ("ray::ServeReplica:parley (1)", "received"),
    ]
    assert found[1].gaps_ms == pytest.approx([40, 40])
    assert sorted(found[2].gaps_ms) == pytest.approx([40, 40, 60])
    # Streams 7 and 8 overlap: one burst, started at 100.02 (8's first), ending from 100.06 (8's last).
    assert found[2].windows_ms["start"] == []
    assert found[2].windows_ms["steady"] == pytest.approx([40])
    assert sorted(found[2].windows_ms["end"]) == pytest.approx([40, 60])
    assert found[2].line(50).endswith("| 33.33 % | - / 0.00 / 50.00 % |")
    # Stream 5's two lives do not overlap: two bursts of one stream each.
    assert found[1].windows_ms["end"] == pytest.approx([40, 40])
