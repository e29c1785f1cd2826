"""Ports Parley picks for Serve's HAProxy and replicas: free when picked, and still free when
they are bound seconds later."""

from __future__ import annotations

import random
import socket

REPLICA_PORTS = 100
FIXED_PORTS_FROM = 20_000  # above Ray's worker ports (10002-19999 by default)


def unclaimed_port(span: int = 1) -> int:
    """The first of ``span`` ports nobody holds now, below the kernel's ephemeral range.

    These ports are bound seconds later, by HAProxy or a replica. A port taken from the ephemeral
    range could be handed meanwhile to one of the many sockets Ray's starting processes bind to
    port 0 or connect from, and HAProxy then fails to start ("Address already in use"); the
    kernel never hands out a port below that range on its own."""
    ephemeral_low = _ephemeral_low()
    if ephemeral_low - span <= FIXED_PORTS_FROM:
        return free_port()
    for _ in range(100):
        port = random.randrange(FIXED_PORTS_FROM, ephemeral_low - span)
        if all(_bindable(p) for p in (port, port + span - 1)):
            return port
    return free_port()


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
            return int(ports.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("", port))  # every address, as HAProxy binds its stats port
        except OSError:
            return False
        return True


def free_port() -> int:
    """A loopback port free now, from the ephemeral range: for one bound at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
