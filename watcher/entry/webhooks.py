"""The webhook fast path: MLflow registry events in, a pass over the named model out, at once.

`serve-webhooks` runs the FastAPI receiver (`create_app`) beside the polling loop, which stays
the safety net for every event a webhook cannot carry (a lost delivery, a deleted version).
`register-webhook URL` points the MLflow webhook at the receiver.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from watcher.clients.registry import Registry
from watcher.config.settings import Settings
from watcher.decide.selection import names_loosely
from watcher.decide.types import ATTEMPT, STATUS, Selector
from watcher.entry.loop import BuildDeps, Stop, watching
from watcher.entry.metrics import Metrics
from watcher.errors import Permanent, Rejected, ServiceBuilderError, SettingsInvalid

log = logging.getLogger(__name__)
PATH = "/webhooks/mlflow"
WEBHOOK_NAME = "service-builder"
EVENTS = ("model_version_tag.set", "model_version_tag.deleted", "model_version_alias.created",
          "model_version_alias.deleted", "model_version.created")
OWN_TAGS = frozenset({STATUS, ATTEMPT, "model_endpoint", "deployed", "deployment_message", "deployed_at",
                      "deployment_name", "evaluation_status", "evaluation_summary", "evaluation_digest",
                      "rollout_status", "rollout_summary", "rollout_step"})
"""The tags the watcher writes itself: an event about one of them must not trigger another pass."""
SIGNATURE, TIMESTAMP, DELIVERY = "x-mlflow-signature", "x-mlflow-timestamp", "x-mlflow-delivery-id"
MAX_BODY = 1 << 20
SERVER_HINT = ("a cluster-internal http:// receiver needs the MLflow server started with "
               "MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https and MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true")


def sign(secret: str, delivery_id: str, timestamp: str, payload: str) -> str:
    """MLflow's signature: `v1,` + base64 HMAC-SHA256 over "{delivery_id}.{timestamp}.{payload}"."""
    digest = hmac.new(secret.encode(), f"{delivery_id}.{timestamp}.{payload}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(headers: Mapping[str, str], body: bytes, *, secret: str, now: float, tolerance: float) -> str:
    """The delivery id of an authentic delivery signed within `tolerance` seconds of `now`; else Rejected."""
    signature, timestamp, delivery = (headers.get(name) for name in (SIGNATURE, TIMESTAMP, DELIVERY))
    if not signature or not timestamp or not delivery:
        raise Rejected(401, "unsigned", "missing X-MLflow-Signature, -Timestamp or -Delivery-Id")
    if not (timestamp.isascii() and timestamp.isdigit()) or abs(now - int(timestamp)) > tolerance:
        raise Rejected(401, "stale", "timestamp missing or outside the tolerance window")
    try:
        expected = sign(secret, delivery, timestamp, body.decode()).encode()
    except UnicodeDecodeError:
        raise Rejected(401, "forged", "payload is not UTF-8") from None
    # Several space-separated signatures are allowed (Standard Webhooks), e.g. during a secret rotation.
    if not any(hmac.compare_digest(expected, given.encode("utf-8", "replace")) for given in signature.split()):
        raise Rejected(401, "forged", "signature does not match")
    return delivery


class Deliveries:
    """Delivery ids seen within the tolerance window, bounded: a second delivery of one id is a replay.

    Older ids can be forgotten because their timestamps are refused anyway; `limit` caps memory
    under a flood of authentic deliveries (only MLflow can produce those).
    """

    def __init__(self, window: float, limit: int = 10_000) -> None:
        self._window, self._limit = window, limit
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, delivery_id: str, now: float) -> bool:
        with self._lock:
            while self._seen and (len(self._seen) >= self._limit or self._oldest() < now - self._window):
                self._seen.popitem(last=False)
            if delivery_id in self._seen:
                return False
            self._seen[delivery_id] = now
            return True

    def _oldest(self) -> float:
        return next(iter(self._seen.values()))


def wanted_model(event: Mapping[str, Any], selector: Selector) -> tuple[str, int | None] | None:
    """(model, version) when the event can change which version of a model is selected, or may be a near miss of
    the selector (its key or alias but for case and spaces: the pass then tells the version), else None."""
    data = event.get("data")
    if not isinstance(data, Mapping) or not isinstance(data.get("name"), str) or not data["name"]:
        return None
    name, number = data["name"], str(data.get("version", ""))
    version = int(number) if number.isascii() and number.isdigit() else None
    kind = f"{event.get('entity')}.{event.get('action')}"
    if kind in ("model_version_tag.set", "model_version_tag.deleted"):
        key = data.get("key")
        relevant = key not in OWN_TAGS and selector.kind == "tag" and isinstance(key, str) and \
            names_loosely(selector, key)
    elif kind in ("model_version_alias.created", "model_version_alias.deleted"):
        alias = data.get("alias")
        relevant = selector.kind == "alias" and isinstance(alias, str) and names_loosely(selector, alias)
    elif kind == "model_version.created":
        tags = data.get("tags")
        relevant = selector.kind == "tag" and isinstance(tags, Mapping) and \
            any(names_loosely(selector, str(key)) for key in tags)
    else:
        relevant = False
    return (name, version) if relevant else None


def create_app(settings: Settings, trigger: Callable[[str], None], *, clock: Callable[[], float] = time.time,
               metrics: Metrics | None = None, problem: Callable[[], str | None] = lambda: None) -> FastAPI:
    """The receiver: verify, drop replays and irrelevant events, then `trigger(model)` (which must not block).
    `/healthz` answers 503 with `problem()` while that says the loop is stuck."""
    if settings.webhook_secret is None:
        raise SettingsInvalid("WEBHOOK_SECRET: not set; the receiver needs the secret MLflow signs deliveries with")
    secret, selector = settings.webhook_secret.get_secret_value(), settings.parsed_selector
    tolerance = settings.webhook_tolerance_seconds
    seen = Deliveries(tolerance)
    metrics = metrics or Metrics()
    app = FastAPI(title="Service Builder webhook receiver", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(Rejected)
    async def rejected(request: Request, error: Rejected) -> JSONResponse:
        metrics.webhook_events.labels(error.outcome).inc()
        log.warning("webhook refused (%s): %s", error.outcome, error.reason)
        return JSONResponse({"error": error.reason}, status_code=error.status)

    @app.post(PATH)
    async def receive(request: Request) -> JSONResponse:
        body = await _body(request)
        delivery = verify(request.headers, body, secret=secret, now=clock(), tolerance=tolerance)
        if not seen.first_time(delivery, clock()):
            raise Rejected(409, "replayed", "this delivery id was already received")
        event = _parse(body)
        wanted = wanted_model(event, selector)
        if wanted is None:
            metrics.webhook_events.labels("ignored").inc()
            log.debug("webhook ignored: %s.%s cannot change what %s selects", event.get("entity"),
                      event.get("action"), selector)
            return JSONResponse({"status": "ignored"})
        model, version = wanted
        trigger(model)
        metrics.webhook_events.labels("accepted").inc()
        log.info("%s v%s: %s.%s received; reconciling the model now", model, version, event.get("entity"),
                 event.get("action"), extra={"model": model, "version": version})
        return JSONResponse({"status": "accepted", "model": model}, status_code=202)

    @app.get("/healthz")
    async def health() -> JSONResponse:
        stuck = problem()
        if stuck is not None:
            return JSONResponse({"status": "stuck", "reason": stuck}, status_code=503)
        return JSONResponse({"status": "ok"})

    return app


async def _body(request: Request) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise Rejected(413, "invalid", "payload larger than 1 MiB")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(body: bytes) -> Mapping[str, Any]:
    try:
        event = json.loads(body)
    except ValueError:
        raise Rejected(400, "invalid", "payload is not JSON") from None
    if not isinstance(event, Mapping):
        raise Rejected(400, "invalid", "payload is not a JSON object")
    return event


def serve(settings: Settings, build_deps: BuildDeps, *, stop: Stop | None = None) -> int:
    """`serve-webhooks`: the receiver on WEBHOOK_PORT, the polling loop beside it; 0 when stopped cleanly."""
    if settings.webhook_secret is None:
        log.error("WEBHOOK_SECRET: not set; serve-webhooks needs the secret MLflow signs deliveries with")
        return 2
    with watching(settings, build_deps, stop=stop) as watch:
        app = create_app(settings, watch.request, metrics=watch.metrics, problem=watch.health.problem)
        server = uvicorn.Server(uvicorn.Config(app, host=settings.listen_address, port=settings.webhook_port,
                                               log_config=None, access_log=False, lifespan="off"))
        thread = threading.Thread(target=server.run, name="webhooks", daemon=True)
        thread.start()
        while not server.started and thread.is_alive():
            time.sleep(0.05)
        if not server.started:
            log.error("the webhook receiver could not listen on %s:%s", settings.listen_address, settings.webhook_port)
            return 1
        log.info("receiving MLflow webhooks on %s:%s%s", settings.listen_address, settings.webhook_port, PATH)
        try:
            return watch.run_forever()
        finally:
            server.should_exit = True
            thread.join(10)


def register(settings: Settings, url: str, *, out: Callable[[str], None] = print) -> int:
    """`register-webhook URL`: create or update the MLflow webhook (idempotent); the path defaults to PATH."""
    if settings.webhook_secret is None:
        log.error("WEBHOOK_SECRET: not set; it is the secret MLflow will sign deliveries with")
        return 2
    target = receiver_url(url)
    try:
        created = Registry(settings.mlflow_tracking_uri).ensure_webhook(
            WEBHOOK_NAME, target, EVENTS, settings.webhook_secret.get_secret_value(),
            "Service Builder: reconcile a model at once when its selection changes")
    except Permanent as e:
        text = str(e)
        hint = any(word in text for word in ("scheme", "non-public", "resolve"))
        raise Permanent(f"{text}; {SERVER_HINT}" if hint else text) from e
    out(f"{'created' if created else 'updated'} the MLflow webhook {WEBHOOK_NAME!r}: {target} "
        f"({', '.join(EVENTS)})")
    return 0


def receiver_url(url: str) -> str:
    """`url` with the receiver's path when it names none; only http(s) URLs with a host are accepted."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ServiceBuilderError(f"{url!r} is not an http(s) URL of the receiver")
    path = parts.path if parts.path not in ("", "/") else PATH
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
