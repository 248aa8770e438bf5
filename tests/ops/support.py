"""Helpers for the ops tests: run a loop in a thread, wait for a condition, read metrics, sign a delivery."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from mlflow import MlflowClient
from mlflow.webhooks.delivery import _generate_hmac_signature
from prometheus_client.parser import text_string_to_metric_families

from devstack.models import LoggedModel
from watcher.entry.loop import Stop


@dataclass
class Background:
    """A `run_watch`/`serve` call running in a thread; `code` is its exit code once it returned."""

    stop: Stop = field(default_factory=Stop)
    code: int | None = None
    error: BaseException | None = None


@contextmanager
def in_background(fn: Callable[..., int], *args: Any, **kwargs: Any) -> Iterator[Background]:
    """Run `fn(*args, stop=..., **kwargs)` in a thread; on exit ask it to stop and insist it did within 20 s."""
    run = Background()

    def target() -> None:
        try:
            run.code = fn(*args, stop=run.stop, **kwargs)
        except BaseException as e:  # reported by the test, not lost in the thread
            run.error = e

    thread = threading.Thread(target=target, name="watch-under-test", daemon=True)
    thread.start()
    try:
        yield run
    finally:
        run.stop.set()
        thread.join(20)
        if run.error is not None:  # the loop's own failure explains whatever the test saw
            raise AssertionError(f"the loop raised {run.error!r}") from run.error
    assert not thread.is_alive(), "the loop did not stop within 20 s of the stop request"


def wait_until(check: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` seconds.

    A connection error counts as "not yet" (a server that is still starting).
    """
    deadline = time.monotonic() + timeout
    last: OSError | None = None
    while True:
        try:
            result = check()
        except OSError as e:
            result, last = None, e
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}" + (f" ({last})" if last else ""))
        time.sleep(every)


def new_version(name: str, files: LoggedModel, tags: Mapping[str, str] | None = None) -> str:
    """Register a version of `name` that serves `files` (milliseconds, where logging a model takes seconds)."""
    client = MlflowClient()
    if not client.search_registered_models(f"name = '{name}'", max_results=1):
        client.create_registered_model(name)
    model_id = files.source.removeprefix("models:/") if files.source.startswith("models:/") else None
    version = client.create_model_version(name, files.source, files.run_id, tags=dict(tags or {}),
                                          model_id=model_id, await_creation_for=0)
    return str(version.version)


def tags_of(model: str, version: str | int) -> dict[str, str]:
    return dict(MlflowClient().get_model_version(model, str(version)).tags)


def status_is(model: str, version: str | int, status: str) -> Callable[[], bool]:
    return lambda: tags_of(model, version).get("deployment_status") == status


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample on http://127.0.0.1:port/metrics, keyed by (name, sorted labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def passes(port: int, trigger: str, outcome: str) -> float:
    key = ("service_builder_passes_total", (("outcome", outcome), ("trigger", trigger)))
    return scrape(port).get(key, 0.0)


def tag_event(name: str, version: str | int, key: str, value: str) -> dict[str, Any]:
    """The body MLflow 3 posts for `model_version_tag.set` (see mlflow/webhooks/delivery.py)."""
    return {"entity": "model_version_tag", "action": "set", "timestamp": "2026-11-22T12:00:00+00:00",
            "data": {"name": name, "version": str(version), "key": key, "value": value}}


def delivery(event: Mapping[str, Any], secret: str | None, *, age: float = 0, delivery_id: str | None = None
             ) -> tuple[bytes, dict[str, str]]:
    """Body and headers as MLflow sends them, signed by MLflow's own signer (no signature when secret is None)."""
    payload = json.dumps(event)
    delivery_id = delivery_id or str(uuid.uuid4())
    timestamp = str(int(time.time() - age))
    headers = {"Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery_id,
               "X-MLflow-Timestamp": timestamp}
    if secret is not None:
        headers["X-MLflow-Signature"] = _generate_hmac_signature(secret, delivery_id, timestamp, payload)
    return payload.encode(), headers


def post(url: str, body: bytes, headers: Mapping[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
