"""Ports Parley fixes for Serve's HAProxy and replicas: free now, and out of the kernel's reach."""

from __future__ import annotations

import socket

from parley import ports


def test_ports_come_from_below_the_ephemeral_range_and_are_free():
    low = ports._ephemeral_low()
    for span in (1, ports.REPLICA_PORTS):
        port = ports.unclaimed_port(span=span)
        assert ports.FIXED_PORTS_FROM <= port and port + span <= low
        with socket.socket() as probe:
            probe.bind(("", port))


def test_a_held_port_is_not_handed_out(monkeypatch):
    with socket.socket() as held:
        held.bind(("", 0))
        taken = held.getsockname()[1]
        # The next pick must be free itself: the port after ``taken`` may be held elsewhere (a
        # socket in TIME_WAIT after a full test run), which once made this test run out of picks.
        free = next(port for port in range(taken + 1, 65_000) if ports._bindable(port))
        picks = iter([taken, taken, free])
        monkeypatch.setattr(ports, "_ephemeral_low", lambda: 65_000)
        monkeypatch.setattr(ports.random, "randrange", lambda lo, hi: next(picks))
        assert ports.unclaimed_port() == free


def test_with_no_room_below_the_ephemeral_range_any_free_port_will_do(monkeypatch):
    monkeypatch.setattr(ports, "_ephemeral_low", lambda: ports.FIXED_PORTS_FROM + 10)
    assert ports.unclaimed_port(span=100) > 0
