"""A `coordination.k8s.io/v1` Lease that keeps two watchers from acting on one namespace at once.

Taken only when a pass has something to write, so a steady-state pass writes nothing. While held,
a thread renews it every quarter of its duration, so a pass may last longer than the lease (slow
rollouts); a holder that died (SIGKILL, node loss) stops renewing and blocks others one duration.
As client-go's leaderelection does, a lease is expired only when its `resourceVersion` stood still for
its duration as this process observed it (not by the holder's timestamps: clocks differ), a takeover is
a compare-and-swap on the `resourceVersion` the expiry was judged from and counts `leaseTransitions`,
and a release deletes only the version read; a renewal that fails means the lease may be
someone else's, so `check()` then refuses every further write of the pass.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from watcher.errors import Blocked, Busy, LeaseLost, PassAborted, Retryable, ServiceBuilderError

log = logging.getLogger(__name__)


class Lease:
    def __init__(self, api: client.CoordinationV1Api, namespace: str, name: str, duration: int,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 monotonic: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self._api, self._ns, self._name, self._duration = api, namespace, name, duration
        self._clock, self._monotonic, self._sleep = clock, monotonic, sleep
        self.identity = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._held = False
        self._lost: str | None = None

    def check(self) -> None:
        """Before a write: raise LeaseLost if a renewal failed since the lease was taken."""
        if self._held and self._lost:
            raise LeaseLost(f"the lease {self._name!r} could not be renewed ({self._lost}); "
                            "stopping this pass's writes, the next pass converges")

    @contextmanager
    def held(self) -> Iterator[None]:
        self._acquire()
        self._held, self._lost = True, None
        stop = threading.Event()
        renewer = threading.Thread(target=self._renew_until, args=(stop,), name="lease-renewer", daemon=True)
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join()
            self._held = False
            if not self._lost:
                self._release()

    def _renew_until(self, stop: threading.Event) -> None:
        while not stop.wait(self._duration / 4):
            ops = [{"op": "test", "path": "/spec/holderIdentity", "value": self.identity},
                   {"op": "replace", "path": "/spec/renewTime", "value": _stamp(self._clock())}]
            for attempt in range(2):  # one quick retry: a single dropped request is not a lost lease
                try:
                    self._api.patch_namespaced_lease(self._name, self._ns, ops, _request_timeout=(5, 10))
                    break
                except (ApiException, OSError, urllib3.exceptions.HTTPError) as e:
                    why = f"Kubernetes answered {e.status}" if isinstance(e, ApiException) else type(e).__name__
                    if attempt or stop.wait(min(2.0, self._duration / 8)):
                        self._lost = why
                        log.error("could not renew the lease %s (%s): no more writes in this pass", self._name, why)
                        return

    def _acquire(self) -> None:
        now = self._clock()
        spec: dict[str, Any] = {"holderIdentity": self.identity, "leaseDurationSeconds": self._duration,
                                "acquireTime": _stamp(now), "renewTime": _stamp(now), "leaseTransitions": 0}
        try:
            body: Any = {"metadata": {"name": self._name}, "spec": spec}
            self._api.create_namespaced_lease(self._ns, body, _request_timeout=(5, 10))
            return
        except ApiException as e:
            if e.status != 409:
                raise _error(e) from e
        except (OSError, urllib3.exceptions.HTTPError) as e:
            raise PassAborted(f"Kubernetes API unreachable (lease: {type(e).__name__})") from e
        current, version = self._read()
        holder = current.get("holderIdentity")
        if holder and not _expired(current, now):
            raise Busy(f"another watcher ({holder}) holds the lease {self._name!r}; leaving this pass to it")
        if holder:  # expired by the holder's clock: believed only once this process has seen it stand still
            current, version = self._unchanged_for_its_duration(current, version)
        # Expired or released: take it over only if it is still what the decision was based on. A patch that
        # carries the resourceVersion we read is refused (409) when anyone wrote the lease since.
        spec["leaseTransitions"] = int(current.get("leaseTransitions") or 0) + (holder != self.identity)
        ops: list[dict[str, Any]] = [{"op": "replace", "path": "/metadata/resourceVersion", "value": version},
                                     {"op": "add", "path": "/spec", "value": spec}]
        try:
            self._api.patch_namespaced_lease(self._name, self._ns, ops, _request_timeout=(5, 10))
        except ApiException as e:
            if e.status in (409, 422):
                raise Busy(f"another watcher took the lease {self._name!r} first") from e
            raise _error(e) from e
        except (OSError, urllib3.exceptions.HTTPError) as e:
            raise PassAborted(f"Kubernetes API unreachable (lease: {type(e).__name__})") from e
        log.info("took over the expired lease %s from %s", self._name, holder or "nobody")

    def _unchanged_for_its_duration(self, spec: dict[str, Any], version: str) -> tuple[dict[str, Any], str]:
        """client-go's leaderelection: a lease is expired when its resourceVersion has not moved for
        leaseDurationSeconds as this process observed it (local monotonic time), whatever its timestamps say;
        so a clock skew between watchers never lets two write at once. A move means its holder lives."""
        wait = float(spec.get("leaseDurationSeconds") or self._duration)
        since = self._monotonic()
        while self._monotonic() - since < wait:
            self._sleep(min(2.0, wait / 8))
            spec_now, version_now = self._read()
            if version_now != version:
                holder = spec_now.get("holderIdentity") or "a watcher"
                raise Busy(f"{holder} renewed the lease {self._name!r} while it looked expired; leaving this pass")
        return spec, version

    def _release(self) -> None:
        try:
            current, version = self._read()
            if current.get("holderIdentity") == self.identity:
                # Only the lease as read: if anyone wrote it since (a takeover), the API server answers 409.
                keep_if_changed = client.V1DeleteOptions(preconditions=client.V1Preconditions(resource_version=version))
                self._api.delete_namespaced_lease(self._name, self._ns, body=keep_if_changed, _request_timeout=(5, 10))
        except (ApiException, ServiceBuilderError, OSError, urllib3.exceptions.HTTPError) as e:
            log.warning("could not release the lease %s (%s); it expires by itself", self._name, e)

    def _read(self) -> tuple[dict[str, Any], str]:
        """The lease's spec and the resourceVersion it was read at."""
        try:
            lease = self._api.read_namespaced_lease(self._name, self._ns, _request_timeout=(5, 10))
        except ApiException as e:
            if e.status == 404:
                return {}, ""
            raise _error(e) from e
        except (OSError, urllib3.exceptions.HTTPError) as e:
            raise PassAborted(f"Kubernetes API unreachable (lease: {type(e).__name__})") from e
        raw = self._api.api_client.sanitize_for_serialization(lease)
        return dict(raw.get("spec") or {}), str((raw.get("metadata") or {}).get("resourceVersion") or "")


def _expired(spec: dict[str, Any], now: datetime) -> bool:
    renewed = spec.get("renewTime") or spec.get("acquireTime")
    if not renewed:
        return True
    renewed_at = datetime.fromisoformat(str(renewed).replace("Z", "+00:00"))
    return now > renewed_at + timedelta(seconds=int(spec.get("leaseDurationSeconds") or 0))


def _stamp(moment: datetime) -> str:
    """MicroTime: the API server wants exactly six fractional digits, even at a whole second."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _error(e: ApiException) -> ServiceBuilderError:
    if e.status == 403:
        return Blocked("forbidden: the watcher's Role lacks access to leases")
    return Retryable(f"Kubernetes answered {e.status} on the lease")
