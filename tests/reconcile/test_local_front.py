"""The local front as a proxy, in its own process (`python -m watcher.targets.local_front`) in front of a plain
HTTP server that records what reached it: the request target arrives as the caller sent it (percent-encoding
kept, never decoded and encoded again), and the answer's bytes and headers come back as the server sent them
(a compressed body is not unpacked on the way)."""

from __future__ import annotations

import gzip
import http.client
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from devstack.servers import free_port, stop_process
from watcher.targets.local_front import HEALTH_PATH, ROUTES_FILE, Backend, write_routes

BODY = gzip.compress(b'{"predictions": [0]}')


class Recorder(BaseHTTPRequestHandler):
    """Answers every GET and POST with BODY, keeping the request target and headers it was sent."""

    seen: list[str] = []
    headers_seen: list[dict[str, str]] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        self.headers_seen.append(dict(self.headers.items()))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def front(tmp_path: Path) -> Iterator[int]:
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    port = free_port()
    # Our own pid as the backend's: should this test die before its teardown, the front exits by itself.
    write_routes(tmp_path / ROUTES_FILE, {"m": [Backend(f"http://127.0.0.1:{upstream.server_port}", os.getpid())]})
    process = subprocess.Popen([sys.executable, "-m", "watcher.targets.local_front", str(tmp_path), str(port)],
                               start_new_session=True)
    try:
        _wait_for(port)
        yield port
    finally:
        stop_process(process)
        upstream.shutdown()


def test_the_front_passes_the_target_as_sent_and_the_answer_as_received(front: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", front, timeout=10)
    connection.request("GET", "/m/api/a%20b%2Fc?x=%20y&flag", headers={"Accept-Encoding": "gzip"})
    answer = connection.getresponse()

    assert Recorder.seen[-1] == "/m/api/a%20b%2Fc?x=%20y&flag"
    assert (answer.status, answer.getheader("Content-Encoding"), answer.read()) == (200, "gzip", BODY)


def _wait_for(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", HEALTH_PATH)
            if connection.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"the local front did not answer on port {port}")
