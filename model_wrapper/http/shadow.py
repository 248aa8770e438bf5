"""The live wrapper's half of a shadow on Kubernetes, where no front of ours sees the requests: a sample of the
prediction requests this wrapper answers is sent to the candidate as well, once the caller has the whole answer,
and the two answers are compared (`model_wrapper.contract.comparison`); the counts go to `/metrics`, where the
watcher's analysis reads them.

A canary's candidate runs it the other way round (`MIRROR_TO_LIVE`, rendered into the candidate's Deployment only,
so it ends with that Deployment): a sample of the requests it answers is asked of the live version's Service too,
and counted the same way, by its own version, on its own `/metrics`.

What to mirror to is a small JSON file, `{"candidate": "http://<slug>-candidate.<ns>.svc:8080", "version": "3",
"sample": 0.1}`, which the watcher writes into the ConfigMap `<slug>-shadow` that every model pod mounts as an
optional volume (`SHADOW_CONFIG`): the kubelet refreshes it in place, so starting or stopping a shadow rolls no
pod. No file (the usual case): nothing is mirrored, at the cost of one `stat` a second.

Wired by `model_wrapper.http.app.create_app` as a pure ASGI middleware. A mirrored request never slows or fails
the caller's: it starts after the last byte of the answer was sent, in a task of its own, at most
`MAX_IN_FLIGHT` at once (beyond, the sample is skipped and counted), with its own timeout. A mirrored request is
marked (`MIRRORED_HEADER`) and never mirrored again, so two wrappers told to mirror to each other cannot loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, Counter

from model_wrapper.contract.comparison import Tally, is_prediction, target_at

# aiohttp is imported with the first mirrored request: most wrappers never shadow, and its import is a tenth of
# a second of every start (issue 26's cold start). aiohttp rather than httpx: a mirrored request's client work
# runs on the event loop that answers the callers, and httpx spent 1.3 to 3.7 ms of CPU on each (its pool slows
# with many in flight) where aiohttp spends 0.3 ms (measured against a wrapper on loopback, 2026-12-06).
if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)
MAX_IN_FLIGHT = 64
MIRROR_TIMEOUT_SECONDS, MIRROR_CONNECT_SECONDS = 30.0, 5.0
RECHECK_SECONDS = 1.0
DROPPED_HEADERS = frozenset({b"host", b"content-length", b"connection", b"transfer-encoding"})
MIRRORED_HEADER = "x-service-builder-mirrored"
MODEL_REFUSALS = frozenset({400, 422})
"""A candidate's answers that are the model's own refusal of the input (not the guards'): still asked of live."""
_SESSIONS: list[aiohttp.ClientSession] = []
Scope = dict[str, Any]


@dataclass(frozen=True)
class ShadowConfig:
    other: str
    """The base URL (a Service) of the version this wrapper's answers are compared with."""
    version: str
    """The candidate's version (the label the comparison is counted under, on either side)."""
    sample: float
    asks_live: bool = False
    """This wrapper is the canary candidate and `other` the live version (a live wrapper mirrors to a shadow)."""


class Source(Protocol):
    def current(self) -> ShadowConfig | None: ...


@dataclass(frozen=True)
class Fixed:
    """A config that does not change while the process runs (a canary candidate's, from its environment)."""

    config: ShadowConfig | None

    def current(self) -> ShadowConfig | None:
        return self.config


class ShadowSource:
    """The mirroring config in `path`, re-read when the file changes (looked at no more than once a second)."""

    def __init__(self, path: Path, clock: Any = time.monotonic) -> None:
        self._path, self._clock = path, clock
        self._checked = float("-inf")
        self._stamp: tuple[int, int] | None = None
        self._current: ShadowConfig | None = None

    def current(self) -> ShadowConfig | None:
        now = self._clock()
        if now - self._checked >= RECHECK_SECONDS:
            self._checked = now
            self._reload()
        return self._current

    def _reload(self) -> None:
        try:
            stat = os.stat(self._path)
        except OSError:
            self._stamp, self._current = None, None  # no file: no shadow
            return
        if (stat.st_mtime_ns, stat.st_size) == self._stamp:
            return
        self._stamp, self._current = (stat.st_mtime_ns, stat.st_size), parse_config(self._path)


def parse_config(path: Path) -> ShadowConfig | None:
    """The config in `path`, or None (logged) when it is not one: a bad file mirrors nothing, never fails a pod."""
    try:
        found = json.loads(path.read_text())
        config = ShadowConfig(str(found["candidate"]).rstrip("/"), str(found["version"]), float(found["sample"]))
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("shadow config %s is unreadable (%s): mirroring nothing", path, type(e).__name__)
        return None
    if not config.other.startswith(("http://", "https://")) or not 0 <= config.sample <= 1:
        log.warning("shadow config %s: candidate must be an http(s) URL and sample within 0..1", path)
        return None
    return config


class ShadowCounters:
    """The comparison counts on `/metrics`, by candidate version: `model_wrapper_shadow_total{outcome=...}` for
    compared, agreed, mirror_failed and skipped; `model_wrapper_shadow_abs_diff_total` and `..._values_total`, the
    sum and count of |candidate - live| over the numbers compared."""

    def __init__(self, registry: CollectorRegistry, model: str, version: str) -> None:
        labels = ["model", "version", "candidate"]
        self._labels = (model, version)
        self._outcomes = Counter("model_wrapper_shadow_total", "Mirrored prediction requests by outcome",
                                 [*labels, "outcome"], registry=registry)
        self._diff_sum = Counter("model_wrapper_shadow_abs_diff", "Sum of |candidate - live| over the "
                                 "numbers of compared answers", labels, registry=registry)
        self._diff_count = Counter("model_wrapper_shadow_abs_diff_values", "Numbers compared between the "
                                   "answers", labels, registry=registry)

    def add(self, candidate: str, tally: Tally) -> None:
        for item in fields(Tally):
            value = getattr(tally, item.name)
            if item.name in ("compared", "agreed", "mirror_failed", "skipped") and value:
                self._outcomes.labels(*self._labels, candidate, item.name).inc(value)
        if tally.abs_diff_count:
            self._diff_sum.labels(*self._labels, candidate).inc(tally.abs_diff_sum)
            self._diff_count.labels(*self._labels, candidate).inc(tally.abs_diff_count)


class ShadowMirror:
    """Pure ASGI: passes every request through; keeps a sampled prediction request's body and answer, and mirrors
    it once the answer is sent."""

    def __init__(self, app: Any, source: Source, counters: ShadowCounters) -> None:
        self.app, self.source, self.counters = app, source, counters
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        config = self.source.current() if scope["type"] == "http" else None
        if config is None or not is_prediction(scope["method"], scope["path"]) or _mirrored(scope) or \
                random.random() >= config.sample:  # noqa: S311 - a sample, not a secret
            await self.app(scope, receive, send)
            return
        body, answer, status = bytearray(), bytearray(), 0

        async def receive_and_keep() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                body.extend(message.get("body", b""))
            return message

        async def send_and_keep(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                answer.extend(message.get("body", b""))
            await send(message)

        await self.app(scope, receive_and_keep, send_and_keep)
        # The caller has every byte by now. A request live refused is not worth asking again; one the candidate's
        # model refused (400, 422) is, as the local front does: live answering it is a disagreement. What the
        # guards refused (401, 403, 413, 429) never reached the model and is not passed on.
        if status < 300 or (config.asks_live and status in MODEL_REFUSALS):
            self._spawn(config, scope, bytes(body), status, bytes(answer))

    def _spawn(self, config: ShadowConfig, scope: Scope, body: bytes, status: int, answer: bytes) -> None:
        if len(self._tasks) >= MAX_IN_FLIGHT:
            self.counters.add(config.version, Tally(skipped=1))
            return
        task = asyncio.create_task(self._mirror(config, scope, body, status, answer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _mirror(self, config: ShadowConfig, scope: Scope, body: bytes, status: int, answer: bytes) -> None:
        import aiohttp
        from multidict import CIMultiDict
        from yarl import URL

        if self._session is None:
            self._session = _session()
        headers = CIMultiDict((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]
                              if k.lower() not in DROPPED_HEADERS)
        headers[MIRRORED_HEADER] = "1"
        tally = Tally()
        try:
            async with self._session.post(URL(target_at(config.other, scope), encoded=True), data=body,
                                          headers=headers) as reply:
                theirs = (reply.status, await reply.read())
        except (aiohttp.ClientError, TimeoutError):
            tally.mirror_failed += 1
        else:  # counted as (live, candidate) whichever side asked: mean |candidate - live| is one figure
            mine = (status, answer)
            tally.add(*(theirs + mine if config.asks_live else mine + theirs))
        self.counters.add(config.version, tally)


def _session() -> aiohttp.ClientSession:
    """The process's one client for mirrored requests, closed with the server (`close_sessions`). The connect
    timeout is the socket's own: waiting for a free connection of the pool is not a failed connect."""
    import aiohttp

    session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=MIRROR_TIMEOUT_SECONDS, sock_connect=MIRROR_CONNECT_SECONDS),
        connector=aiohttp.TCPConnector(limit=MAX_IN_FLIGHT))
    _SESSIONS.append(session)
    return session


async def close_sessions() -> None:
    """Close the mirroring clients (called by `model_wrapper.server` once the server has shut down)."""
    while _SESSIONS:
        await _SESSIONS.pop().close()


def _mirrored(scope: Scope) -> bool:
    marker = MIRRORED_HEADER.encode()
    return any(name == marker for name, _ in scope["headers"])
