"""A fault-injecting HTTP proxy on loopback, in front of a real server (the MLflow tracking server).

A real MLflow server cannot be asked to answer 503 to one call, so this project seam stands in
the network path instead: every request is forwarded unchanged, except those a rule matches,
which get the rule's status without reaching the server, or (`hold`) reach it only once the test
releases them: a connection that answers nothing for as long as it likes. Each hit is recorded
with its time, so tests can count retries and see the back-off between them.
"""

from __future__ import annotations

import http.client
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote_plus, urlsplit

from devstack.servers import free_port

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization",
               "proxy-authenticate", "host", "content-length"}


@dataclass
class Rule:
    """Answer `status` to requests whose `METHOD /path?query` (query unquoted) matches `pattern`."""

    pattern: re.Pattern[str]
    status: int
    times: int | None = None
    """How many matching requests to fail; None: every one."""
    hits: list[float] = field(default_factory=list)
    """`time.monotonic()` of every request this rule answered."""
    release: threading.Event | None = None
    """For a `hold` rule: forward the request only once this is set (status is then unused)."""

    def wants(self, line: str) -> bool:
        return bool(self.pattern.search(line)) and (self.times is None or len(self.hits) < self.times)


class FaultProxy:
    """`url` forwards to `upstream`; `fail(...)` adds a rule, `clear()` removes them all."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._rules: list[Rule] = []
        self._lock = threading.Lock()
        self.forwarded: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", free_port()), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail(self, pattern: str, status: int, times: int | None = None) -> Rule:
        rule = Rule(re.compile(pattern), status, times)
        with self._lock:
            self._rules.append(rule)
        return rule

    def hold(self, pattern: str, times: int | None = 1) -> Rule:
        """Keep requests matching `pattern` unanswered until `rule.release` is set, then forward them."""
        rule = Rule(re.compile(pattern), 0, times, release=threading.Event())
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def _rule_for(self, line: str) -> Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.wants(line):
                    rule.hits.append(time.monotonic())
                    return rule
        return None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                line = f"{self.command} {unquote_plus(self.path)}"
                rule = proxy._rule_for(line)
                if rule is not None and rule.release is not None:
                    rule.release.wait(300)  # a guard against a test that never releases it, not a timing
                elif rule is not None:
                    self._answer(rule.status, b'{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "injected"}',
                                 {"Content-Type": "application/json"})
                    return
                proxy.forwarded.append(line)
                upstream = http.client.HTTPConnection(*proxy._upstream, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                    upstream.request(self.command, self.path, body=body or None, headers=headers)
                    response = upstream.getresponse()
                    payload = response.read()
                    kept = {k: v for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP}
                    if self.command == "HEAD":  # no body, but the length of the one GET would give (S3's HeadObject)
                        self._answer(response.status, b"", kept, length=response.getheader("Content-Length") or "0")
                        return
                    self._answer(response.status, payload, kept)
                finally:
                    upstream.close()

            def _answer(self, status: int, payload: bytes, headers: dict[str, str], length: str | None = None) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", length or str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = do_HEAD = _relay

        return Handler
