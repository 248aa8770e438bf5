"""The Lease is a real lock: takeover is a compare-and-swap on what the expiry was judged from,
takeovers are counted, a renewal that fails stops the pass's writes, and every timestamp is a
MicroTime. Against the test cluster, whose API server refuses a stale resourceVersion with 409."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes import client

from tests.faults.kube_faults import KubeFaults
from tests.peers import KubernetesPeer
from watcher.config.settings import load_settings
from watcher.errors import Busy, LeaseLost
from watcher.targets.kubernetes.cluster import api_client
from watcher.targets.kubernetes.lease import Lease, _stamp

NAME = "service-builder"


@pytest.fixture
def leases(kube: KubernetesPeer) -> client.CoordinationV1Api:
    return client.CoordinationV1Api(api_client(load_settings(mlflow_tracking_uri="http://unused", k8s_api=kube.url)))


def expired_lease(api: client.CoordinationV1Api, namespace: str, holder: str, transitions: int = 0) -> None:
    long_ago = _stamp(datetime.now(UTC) - timedelta(minutes=10))
    api.create_namespaced_lease(namespace, {"metadata": {"name": NAME}, "spec": {  # type: ignore[arg-type]
        "holderIdentity": holder, "leaseDurationSeconds": 60, "acquireTime": long_ago, "renewTime": long_ago,
        "leaseTransitions": transitions}})


def spec(kube: KubernetesPeer, namespace: str) -> dict[str, Any]:
    return dict(kube.objects("leases", namespace)[NAME]["spec"])


class LocalTime:
    """The contender's monotonic clock and sleep: a sleep moves the clock (no test waits a lease's minute)."""

    def __init__(self, on_sleep: Callable[[], None] = lambda: None) -> None:
        self.now, self.on_sleep = 1000.0, on_sleep

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.on_sleep()


def renew_as(leases: client.CoordinationV1Api, namespace: str, skew: timedelta) -> Callable[[], None]:
    """The holder's renewal, stamped by a clock `skew` away from ours."""
    return lambda: leases.patch_namespaced_lease(NAME, namespace, [
        {"op": "replace", "path": "/spec/renewTime", "value": _stamp(datetime.now(UTC) + skew)}])


def test_a_holder_that_renews_while_another_decides_to_take_over_keeps_the_lease(
    leases: client.CoordinationV1Api, kube: KubernetesPeer, namespace: str,
) -> None:
    """The slow holder was not dead: its renewal lands between the contender's decision and its takeover."""
    expired_lease(leases, namespace, "slow-watcher")
    local = LocalTime()

    class Contender(Lease):
        def _unchanged_for_its_duration(self, spec: dict[str, Any], version: str) -> tuple[dict[str, Any], str]:
            seen = super()._unchanged_for_its_duration(spec, version)
            renew_as(leases, namespace, timedelta(0))()
            return seen

    contender = Contender(leases, namespace, NAME, duration=60, monotonic=local.monotonic, sleep=local.sleep)
    with pytest.raises(Busy, match="took the lease"), contender.held():
        pass
    assert spec(kube, namespace)["holderIdentity"] == "slow-watcher"


def test_a_holder_whose_clock_is_behind_but_renews_is_never_taken_over(
    leases: client.CoordinationV1Api, kube: KubernetesPeer, namespace: str,
) -> None:
    """Ten minutes of clock skew: its renewTime always looks expired here, yet its resourceVersion moves."""
    expired_lease(leases, namespace, "skewed-watcher")
    local = LocalTime(on_sleep=renew_as(leases, namespace, -timedelta(minutes=10)))
    contender = Lease(leases, namespace, NAME, duration=60, monotonic=local.monotonic, sleep=local.sleep)

    with pytest.raises(Busy, match="renewed the lease"), contender.held():
        pass
    assert spec(kube, namespace)["holderIdentity"] == "skewed-watcher"
    assert local.now - 1000.0 < 60, "a renewal is seen well within one duration"


def test_a_dead_holders_lease_is_taken_only_after_standing_still_for_its_duration_here(
    leases: client.CoordinationV1Api, kube: KubernetesPeer, namespace: str,
) -> None:
    expired_lease(leases, namespace, "dead-watcher")
    local = LocalTime()
    lease = Lease(leases, namespace, NAME, duration=60, monotonic=local.monotonic, sleep=local.sleep)

    with lease.held():
        assert spec(kube, namespace)["holderIdentity"] == lease.identity
    assert local.now - 1000.0 >= 60, "observed unchanged for leaseDurationSeconds before the takeover"


def test_a_release_deletes_only_the_lease_it_read(
    leases: client.CoordinationV1Api, kube: KubernetesPeer, namespace: str,
) -> None:
    """Between the holder's last read and its delete, another watcher took the lease: it stays."""

    class Releasing(Lease):
        def _read(self) -> tuple[dict[str, Any], str]:
            seen = super()._read()
            if self._held is False and seen[0].get("holderIdentity") == self.identity:
                leases.patch_namespaced_lease(NAME, namespace, [
                    {"op": "replace", "path": "/spec/holderIdentity", "value": "next-watcher"}])
            return seen

    with Releasing(leases, namespace, NAME, duration=60).held():
        pass
    assert spec(kube, namespace)["holderIdentity"] == "next-watcher"


def test_a_takeover_counts_a_transition_and_stamps_microseconds(
    leases: client.CoordinationV1Api, kube: KubernetesPeer, namespace: str,
) -> None:
    expired_lease(leases, namespace, "dead-watcher", transitions=4)
    whole_second = datetime.now(UTC).replace(microsecond=0)
    local = LocalTime()
    lease = Lease(leases, namespace, NAME, duration=60, clock=lambda: whole_second, monotonic=local.monotonic,
                  sleep=local.sleep)

    with lease.held():
        taken = spec(kube, namespace)

    assert taken["holderIdentity"] == lease.identity and taken["leaseTransitions"] == 5
    assert taken["acquireTime"] == taken["renewTime"] == whole_second.strftime("%Y-%m-%dT%H:%M:%S.000000Z")


def test_a_renewal_that_fails_stops_the_writes_of_the_pass(
    leases: client.CoordinationV1Api, kube_faults: KubeFaults, kube: KubernetesPeer, namespace: str,
) -> None:
    lease = Lease(leases, namespace, NAME, duration=2)  # renewed every half second
    with lease.held():
        lease.check()
        kube_faults.refuse("patch", "leases", 503)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                lease.check()
            except LeaseLost as lost:
                assert "503" in str(lost)
                break
            time.sleep(0.1)
        else:
            pytest.fail("a failed renewal never stopped the writes")
    assert NAME in kube.objects("leases", namespace), "a lost lease is not deleted: it may be someone else's"
