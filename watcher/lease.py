"""A `coordination.k8s.io/v1` Lease that keeps two watchers from acting on one namespace at once.

Taken only when a pass has something to write, so a steady-state pass writes nothing. While held,
a thread renews it every quarter of its duration, so a pass may last longer than the lease (slow
rollouts); a holder that died (SIGKILL, node loss) stops renewing and blocks others one duration.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from watcher.errors import Blocked, Retryable, ServiceBuilderError

log = logging.getLogger(__name__)


class Busy(ServiceBuilderError):
    """Another watcher holds the lease: this pass leaves the work to it."""


class Lease:
    def __init__(self, api: client.CoordinationV1Api, namespace: str, name: str, duration: int) -> None:
        self._api, self._ns, self._name, self._duration = api, namespace, name, duration
        self.identity = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"

    @contextmanager
    def held(self) -> Iterator[None]:
        self._acquire()
        stop = threading.Event()
        renewer = threading.Thread(target=self._renew_until, args=(stop,), name="lease-renewer", daemon=True)
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join()
            self._release()

    def _renew_until(self, stop: threading.Event) -> None:
        while not stop.wait(self._duration / 4):
            ops = [{"op": "test", "path": "/spec/holderIdentity", "value": self.identity},
                   {"op": "replace", "path": "/spec/renewTime", "value": _stamp(datetime.now(UTC))}]
            try:
                self._api.patch_namespaced_lease(self._name, self._ns, ops, _request_timeout=(5, 10))
            except (ApiException, OSError, urllib3.exceptions.HTTPError) as e:
                # Renewal goes on: a blip costs nothing unless it outlasts the lease duration.
                log.warning("could not renew the lease %s (%s)", self._name, getattr(e, "status", type(e).__name__))

    def _acquire(self) -> None:
        now = datetime.now(UTC)
        body: Any = {"metadata": {"name": self._name},
                "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": self._duration,
                         "acquireTime": _stamp(now), "renewTime": _stamp(now)}}
        try:
            self._api.create_namespaced_lease(self._ns, body)
            return
        except ApiException as e:
            if e.status != 409:
                raise _error(e) from e
        current = self._read()
        holder = current.get("holderIdentity")
        if holder and not _expired(current, now):
            raise Busy(f"another watcher ({holder}) holds the lease {self._name!r}; leaving this pass to it")
        # Expired or released: take it over, but only if nobody else did in between (JSON-patch test op).
        ops = [{"op": "test", "path": "/spec/holderIdentity", "value": holder},
               {"op": "add", "path": "/spec", "value": body["spec"]}]
        try:
            self._api.patch_namespaced_lease(self._name, self._ns, ops)
        except ApiException as e:
            raise Busy(f"lost the race for the lease {self._name!r} ({e.status})") from e
        log.info("took over the expired lease %s from %s", self._name, holder)

    def _release(self) -> None:
        try:
            current = self._read()
            if current.get("holderIdentity") == self.identity:
                self._api.delete_namespaced_lease(self._name, self._ns)
        except (ApiException, ServiceBuilderError, OSError) as e:
            log.warning("could not release the lease %s (%s); it expires by itself", self._name, e)

    def _read(self) -> dict[str, Any]:
        try:
            lease = self._api.read_namespaced_lease(self._name, self._ns)
        except ApiException as e:
            if e.status == 404:
                return {}
            raise _error(e) from e
        return dict(self._api.api_client.sanitize_for_serialization(lease).get("spec") or {})


def _expired(spec: dict[str, Any], now: datetime) -> bool:
    renewed = spec.get("renewTime") or spec.get("acquireTime")
    if not renewed:
        return True
    renewed_at = datetime.fromisoformat(str(renewed).replace("Z", "+00:00"))
    return now > renewed_at + timedelta(seconds=int(spec.get("leaseDurationSeconds") or 0))


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _error(e: ApiException) -> ServiceBuilderError:
    if e.status == 403:
        return Blocked("forbidden: the watcher's Role lacks access to leases")
    return Retryable(f"Kubernetes answered {e.status} on the lease")
