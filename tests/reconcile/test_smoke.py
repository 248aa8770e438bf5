"""The post-rollout smoke test: retried while the endpoint is not reachable yet, bounded, and failed at once
by an answer from the model itself. A real HTTP server on loopback plays the endpoint; the pauses between
tries are the test's hooks (no wall-clock waiting)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from watcher.clients.smoke import smoke_test
from watcher.errors import RolloutFailed

EXAMPLES = [{"sepal_length": 5.1}]
Endpoint = tuple[str, Callable[..., None]]


class Model(BaseHTTPRequestHandler):
    status = 200

    def do_POST(self) -> None:
        size = int(self.headers["Content-Length"])
        instances = json.loads(self.rfile.read(size))["instances"]
        body = json.dumps({"predictions": [0] * len(instances)} if self.status == 200 else {"error": "bad"})
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    """A base URL that refuses connections until `start()` is called (the Service has no endpoints yet)."""
    port = free_port()
    servers: list[ThreadingHTTPServer] = []

    def start(status: int = 200) -> None:
        handler = type("Handler", (Model,), {"status": status})
        server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)

    yield f"http://127.0.0.1:{port}/iris/api/", start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_refused_connection_is_retried_until_the_endpoint_answers(endpoint: Endpoint) -> None:
    base, start = endpoint
    pauses: list[float] = []

    def pause(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 3:
            start()  # kube-proxy has programmed the Service now

    smoke_test(base, EXAMPLES, retry_for=60, sleep=pause)

    assert pauses == [0.5, 1.0, 2.0]


def test_the_retries_are_bounded_by_the_configured_time(endpoint: Endpoint) -> None:
    base, _ = endpoint
    now = [0.0]

    def pause(seconds: float) -> None:
        now[0] += seconds

    with pytest.raises(RolloutFailed, match="did not answer within 10s"):
        smoke_test(base, EXAMPLES, retry_for=10, sleep=pause, clock=lambda: now[0])
    assert now[0] <= 10


def test_an_answer_from_the_model_fails_at_once(endpoint: Endpoint) -> None:
    base, start = endpoint
    start(status=422)

    with pytest.raises(RolloutFailed, match="answered 422"):
        smoke_test(base, EXAMPLES, retry_for=60, sleep=lambda seconds: pytest.fail("must not retry"))
