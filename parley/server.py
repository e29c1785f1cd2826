"""The server process (the *driver*): Ray (local, or joining a cluster), Serve's HTTP front,
provider actors, the directory and the conversation actor pools, the app.

``parley serve`` runs this as a child of its supervisor (``parley.supervisor``), in a session of
its own. ``drive`` starts everything, tells the supervisor it is ready, and on SIGTERM drains:
the app refuses new work with 503, running turns get up to ``drain_seconds`` to end and are then
cancelled, and Ray and Serve are shut down. A second signal, or end-of-file on stdin (the
supervisor is gone), ends every process of the instance at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time

import psutil
import ray
from ray import serve
from ray.serve.config import HTTPOptions
from ray.serve.schema import LoggingConfig

from actors.conversation_client import ConversationClient
from actors.directory import start_directory
from actors.lifecycle import ServerState, set_state, start_lifecycle
from actors.placement import start_pools
from actors.provider_actor import start_provider_actors
from runtime.conversation_runner import close_interrupted_runs
from runtime.settings import ProviderCredentials, Settings
from runtime.store import open_store
from serve_app.app import ParleyIngress

from .instance import INSTANCE_VARIABLE, Session, end_instance
from .ports import REPLICA_PORTS, unclaimed_port

APP_NAME = "parley"
# Ray rewrites 127.0.0.1 to the machine's network address; any other loopback address is kept,
# which keeps a single-node Parley's internal traffic on loopback (Linux routes all of 127/8).
LOOPBACK_NODE_IP = "127.0.0.2"


# Ray Serve's high-throughput mode: HAProxy (C) takes the HTTP port and forwards straight to the
# replicas' own HTTP servers, instead of Serve's Python proxy relaying every request and stream item
# over Ray. Measured here: 41 -> 31 ms of CPU per turn, 38 -> 50 turns/s (benchmarks/turns.py).
# Set PARLEY_SERVE_HAPROXY=0 to use Serve's default proxy instead.
THROUGHPUT_MODE = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
# HAProxy joins the port's SO_REUSEPORT group, where ``parley serve`` holds the port while the
# server starts (parley.startup_listener); Serve's own proxy always does. No one else can join:
# ``parley serve`` refuses to start on a port anything else holds (parley.instance).
REUSE_PORT = {"SERVE_SOCKET_REUSE_PORT_ENABLED": "1"}
# Serve's controller loop runs every 0.1 s by default, a fifth of the idle server's CPU; 0.5 s is
# still prompt for deploys and health, and halves it.
CONTROLLER_LOOP = {"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5"}


def configure_serve_environment() -> None:
    """Must run before Ray starts: Serve's processes read these when they start.

    Any of these already set in the environment wins.

    HAProxy's and Serve's ports and files default to fixed, machine-wide places (8404, 9101,
    8500, 30000+, /tmp/haproxy-serve); each Parley gets its own so that two can share a machine.
    """
    for name, value in {**CONTROLLER_LOOP, **REUSE_PORT}.items():
        os.environ.setdefault(name, value)
    if os.environ.get("PARLEY_SERVE_HAPROXY", "1") == "0":
        return
    for name, value in THROUGHPUT_MODE.items():
        os.environ.setdefault(name, value)
    # Serve's own ports default to fixed numbers too; a second instance on the machine would
    # send its requests to the first one's fallback proxy (8500) until HAProxy learns of its replica.
    for name in (
        "RAY_SERVE_HAPROXY_STATS_PORT",
        "RAY_SERVE_HAPROXY_METRICS_PORT",
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT",
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT",
    ):
        os.environ.setdefault(name, str(unclaimed_port()))
    for protocol in ("HTTP", "GRPC"):
        # Replica ports come from a range; give each instance its own instead of 30000+/40000+.
        low = unclaimed_port(span=REPLICA_PORTS)
        os.environ.setdefault(f"RAY_SERVE_DIRECT_INGRESS_MIN_{protocol}_PORT", str(low))
        os.environ.setdefault(f"RAY_SERVE_DIRECT_INGRESS_MAX_{protocol}_PORT", str(low + REPLICA_PORTS))
    if "RAY_SERVE_HAPROXY_SERVER_STATE_BASE" not in os.environ:
        # Short on purpose: Serve nests a 56-character node id under it, and a unix socket path
        # must stay under ~100 characters.
        base = tempfile.mkdtemp(prefix="parley", dir="/tmp")
        os.environ["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"] = base
        os.environ["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"] = f"{base}/haproxy.cfg"
        os.environ["RAY_SERVE_HAPROXY_SOCKET_PATH"] = f"{base}/admin.sock"
        os.environ["RAY_SERVE_HAPROXY_SERVER_STATE_FILE"] = f"{base}/server-state"
        os.environ["RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH"] = f"{base}/metrics.sock"


def init_ray(settings: Settings) -> None:
    configure_serve_environment()
    if settings.ray_address:
        os.environ.setdefault("RAY_AUTH_MODE", "token")
        ray.init(address=settings.ray_address, namespace=settings.namespace, logging_level=logging.WARNING)
        return
    node_ip = os.environ.get("PARLEY_RAY_NODE_IP") or (LOOPBACK_NODE_IP if sys.platform == "linux" else None)
    ray.init(
        # "local": always a new Ray of our own. Without it ray.init() joins any Ray it finds
        # running on the machine (another Parley, a test server), provider actors and all.
        address="local",
        num_cpus=settings.ray_num_cpus,
        include_dashboard=False,
        object_store_memory=settings.ray_object_store_mb * 1024 * 1024,
        namespace=settings.namespace,
        logging_level=logging.WARNING,
        _node_ip_address=node_ip,
        configure_logging=True,
    )


def start(settings: Settings, credentials: ProviderCredentials) -> None:
    """Bring everything up and return once the HTTP API answers."""
    if not settings.ray_address:
        close_runs_of_earlier_servers(settings)
    init_ray(settings)
    quiet = LoggingConfig(log_level="WARNING", enable_access_log=False)
    http = HTTPOptions(host=settings.host, port=settings.port, location=settings.proxy_location)
    serve.start(http_options=http, logging_config=quiet)
    # Started before the app and waited for: no request ever waits for a process start.
    ready = start_provider_actors(settings, credentials) + start_directory(settings) + start_pools(settings)
    ready.append(start_lifecycle(settings))
    serve.run(
        ParleyIngress.options(logging_config=quiet, **replica_options(settings)).bind(settings),
        name=APP_NAME,
        route_prefix="/",
        blocking=False,
    )
    ray.get(ready, timeout=120)
    _wait_until_running(APP_NAME, timeout=120)
    set_state(ServerState.ready)


def _wait_until_running(app: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = serve.status().applications.get(app)
        if status is not None and status.status == "RUNNING":
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the Serve app {app!r} was not running after {timeout:.0f} s: {status}")
        time.sleep(0.1)


def close_runs_of_earlier_servers(settings: Settings) -> None:
    """End the runs an earlier server on this store left ``running`` when it stopped mid-run (a
    crash, a kill -9). This server starts a Ray of its own, so none of them can still be going on;
    without this they would show as running until their conversation is next used."""
    store = open_store(settings.resolved_store_url)
    try:
        closed = asyncio.run(close_interrupted_runs(store))
    finally:
        store.close()
    if closed:
        print(f"Parley: {len(closed)} run(s) cut short when a server last stopped are now failed", flush=True)


def replica_options(settings: Settings) -> dict[str, object]:
    """A fixed number of ingress replicas, or an autoscaling range when max > min."""
    low = max(settings.min_replicas, 1)
    high = max(settings.max_replicas, low)
    if high == low:
        return {"num_replicas": low}
    return {
        "autoscaling_config": {
            "min_replicas": low,
            "max_replicas": high,
            "target_ongoing_requests": settings.target_ongoing_requests,
        }
    }


def stop(settings: Settings) -> None:
    if settings.ray_address:
        # A shared cluster: take our app down, leave the cluster (and other apps) running.
        try:
            serve.delete(APP_NAME)
        finally:
            ray.shutdown()
        return
    # Our own local Ray: stopping it stops Serve, HAProxy and every actor at once. A graceful
    # serve.shutdown() would first wait out the direct-ingress drain period (~30 s).
    ray.shutdown()
    _remove_haproxy_files()


def _remove_haproxy_files() -> None:
    base = os.environ.get("RAY_SERVE_HAPROXY_SERVER_STATE_BASE", "")
    if os.path.basename(base).startswith("parley"):
        shutil.rmtree(base, ignore_errors=True)


def _redacted(url: str) -> str:
    """A URL fit to print: any password in it replaced (redis://:secret@host -> redis://:***@host)."""
    return re.sub(r"(//[^/@:]*:)[^/@]*@", r"\1***@", url)


def drive(settings: Settings, credentials: ProviderCredentials, ready_fd: int) -> int:
    """The driver's life; see the module docstring. ``ready_fd`` gets ``ready`` once the app
    answers and every actor is up."""
    stopping = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        if stopping.is_set():
            _end_now("a second signal")
        stopping.set()

    threading.Thread(target=_follow_supervisor, name="supervisor-watch", daemon=True).start()
    began = time.monotonic()
    start(settings, credentials)
    # Installed after Ray starts: Ray's core worker installs its own crash handler for SIGTERM,
    # which would abort the process. (Until here the supervisor sends no signal: it ends a server
    # that is still starting by killing it.)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(
        f"Parley started in {time.monotonic() - began:.1f}s "
        f"(store: {_redacted(settings.resolved_store_url)})",
        flush=True,
    )
    os.write(ready_fd, b"ready\n")
    os.close(ready_fd)
    while not stopping.wait(1.0):
        pass
    drain(settings)
    print("Parley shutting down", flush=True)
    stop(settings)
    return 0


def drain(settings: Settings) -> None:
    """Refuse new work, then give running turns ``drain_seconds`` to end (``ConversationActor.drain``)."""
    began = time.monotonic()
    set_state(ServerState.draining)
    reports = asyncio.run(ConversationClient(settings).drain(settings.drain_seconds))
    finished = sum(r.finished for r in reports)
    cancelled = sum(r.cancelled for r in reports)
    print(
        f"Parley drained in {time.monotonic() - began:.1f}s: {finished} running turn(s) finished, "
        f"{cancelled} cancelled at the {settings.drain_seconds:g} s drain limit",
        flush=True,
    )


def _follow_supervisor() -> None:
    """Block on stdin, which only the supervisor writes to: end-of-file means it is gone."""
    # os.read, not sys.stdin: a daemon thread blocked in a buffered read aborts the interpreter's
    # exit ("could not acquire lock for <stdin>").
    with contextlib.suppress(OSError):
        while os.read(0, 4096):
            pass
    _end_now("the supervisor is gone")


def _end_now(why: str) -> None:
    """End every process of this instance, then this one, without a shutdown."""
    print(f"Parley: stopping at once ({why})", flush=True)
    # Only processes started from this one carry the id: on a cluster, the cluster's own do not.
    instance_id = os.environ.get(INSTANCE_VARIABLE)
    if instance_id:
        # This process leads its session (the supervisor started it so): Ray's agents are in it.
        end_instance(instance_id, Session(os.getpid(), psutil.Process().create_time()))
    os._exit(1)
