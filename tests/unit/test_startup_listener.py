"""Holding the port while the server starts (``parley.startup_listener``)."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from parley.startup_listener import StartupListener, answer


def _parse(raw: bytes) -> tuple[int, dict[str, str], dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)


def test_while_starting_every_route_is_503_with_retry_after_and_health_says_starting() -> None:
    status, headers, body = _parse(answer("GET", "/v1/agents/", "1.0"))
    assert (status, body) == (503, {"detail": "Parley is starting; try again shortly."})
    assert int(headers["retry-after"]) > 0
    status, _, body = _parse(answer("POST", "/openai/v1/responses", "1.0"))
    assert status == 503 and body["error"]["code"] == "server_starting"
    status, _, body = _parse(answer("GET", "/v1/health/", "1.0"))
    assert status == 503 and body["state"] == "starting"
    status, _, body = _parse(answer("GET", "/v1/health/live?x=1", "1.0"))
    assert status == 200 and body["state"] == "starting"


class _Ready(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        payload = b'{"state": "ready"}'
        self.send_response(200)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *_args: object) -> None:
        pass


class _ReusePortServer(ThreadingHTTPServer):
    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


def test_the_port_is_ours_until_the_front_that_joined_it_answers_ready() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    listener = StartupListener("127.0.0.1", port, "1.0")
    front = _ReusePortServer(("127.0.0.1", port), _Ready)  # joins the port, as HAProxy does
    threading.Thread(target=front.serve_forever, daemon=True).start()
    try:
        # Both listen, yet every connection reaches the startup listener.
        for _ in range(20):
            assert httpx.get(f"http://127.0.0.1:{port}/v1/health/").status_code == 503
        assert listener.hand_over(10)
        for _ in range(20):
            assert httpx.get(f"http://127.0.0.1:{port}/v1/health/").json() == {"state": "ready"}
    finally:
        listener.close()
        front.shutdown()
        front.server_close()
