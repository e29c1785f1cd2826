"""Holding the HTTP port while the server starts, so a client sees 503, never a 404 or a 500.

Serve's HTTP front (HAProxy, or Serve's own proxy) binds the port seconds before the app can
answer. Meanwhile it answers 404 (no route yet) or 500 (no replica yet). So ``parley serve``
binds the port first, with ``SO_REUSEPORT`` as Serve's front does, and attaches a classic BPF
program to the port's reuseport group that sends every new connection to socket 0, ours.
Serve's front joins the group when it starts, and gets nothing until the server is ready. Then
``hand_over`` points the program at Serve's socket, checks that ``/v1/health`` answers 200
through it (and points it back if not), and closes our socket.

Meanwhile this answers every request with 503 and ``Retry-After``; ``/v1/health`` says
``starting``. ``/v1/health/live`` answers 200.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable

SO_ATTACH_REUSEPORT_CBPF = 51  # linux/asm-generic/socket.h
BPF_RET_K = 0x06  # BPF_RET | BPF_K: return the constant
RETRY_AFTER_SECONDS = 2
HEAD_LIMIT = 16384
READ_TIMEOUT_SECONDS = 2.0


def steer(sock: socket.socket, index: int) -> None:
    """Send every new connection of ``sock``'s reuseport group to the group's socket ``index``
    (in the order they joined; an index past the end falls back to the kernel's hash)."""
    program = (ctypes.c_uint8 * 8).from_buffer_copy(struct.pack("=HBBI", BPF_RET_K, 0, 0, index))
    fprog = struct.pack("HxxxxxxQ", 1, ctypes.addressof(program))  # struct sock_fprog
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)


def _response(status: int, body: dict[str, object], extra: tuple[str, ...] = ()) -> bytes:
    payload = json.dumps(body).encode()
    reason = {200: "OK", 503: "Service Unavailable"}[status]
    head = [
        f"HTTP/1.1 {status} {reason}",
        "content-type: application/json",
        f"content-length: {len(payload)}",
        "connection: close",
        *extra,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


def answer(method: str, path: str, version: str) -> bytes:
    """What a request gets while the server starts."""
    path = path.split("?", 1)[0].rstrip("/")
    if path == "/v1/health/live":
        return _response(200, {"version": version, "status": "ok", "state": "starting"})
    retry = (f"retry-after: {RETRY_AFTER_SECONDS}",)
    if path == "/v1/health":
        return _response(503, {"version": version, "status": "starting", "state": "starting"}, retry)
    message = "Parley is starting; try again shortly."
    if path.startswith("/openai/"):
        error = {"message": message, "type": "server_error", "param": None, "code": "server_starting"}
        return _response(503, {"error": error}, retry)
    return _response(503, {"detail": message}, retry)


class StartupListener:
    def __init__(self, host: str, port: int, version: str) -> None:
        self.host, self.port, self._version = host, port, version
        self._sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self._sock.bind((host, port))
        self._sock.listen(1024)
        steer(self._sock, 0)
        self._sock.setblocking(False)
        self.last_probe = ""  # what the last hand-over probe got, for the error message
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="startup-listener", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._sock, selectors.EVENT_READ)
            while not self._stop.is_set():
                if not selector.select(0.2):
                    continue
                with contextlib.suppress(OSError):
                    conn, _ = self._sock.accept()
                    threading.Thread(target=self._reply, args=(conn,), daemon=True).start()

    def _reply(self, conn: socket.socket) -> None:
        with conn:
            conn.setblocking(True)
            conn.settimeout(READ_TIMEOUT_SECONDS)
            head = b""
            with contextlib.suppress(OSError):
                while b"\r\n\r\n" not in head and len(head) < HEAD_LIMIT:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    head += chunk
                method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
                path = rest.rsplit(" ", 1)[0] if " " in rest else rest
                conn.sendall(answer(method, path or "/", self._version))

    def hand_over(self, timeout: float, give_up: Callable[[], bool] = lambda: False) -> bool:
        """Give the port to Serve's front once ``/v1/health`` answers 200 through it; False if it
        did not within ``timeout``, or ``give_up()`` said so (the port is then still ours)."""
        probe_host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        probe_host = "::1" if probe_host == "::" else probe_host
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not give_up():
            steer(self._sock, 1)
            try:
                conn = http.client.HTTPConnection(probe_host, self.port, timeout=5)
                conn.request("GET", "/v1/health/")
                response = conn.getresponse()
                status, self.last_probe = response.status, f"{response.status} {response.read()[:200]!r}"
                conn.close()
            except OSError as error:
                status, self.last_probe = 0, repr(error)
            if status == 200:
                time.sleep(0.1)  # answer what reached our queue before the switch
                self.close()
                return True
            steer(self._sock, 0)
            time.sleep(0.2)
        return False

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        with contextlib.suppress(OSError):
            self._sock.close()
