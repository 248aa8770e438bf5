"""The Lease is a real lock: takeover is a compare-and-swap on what the expiry was judged from,
takeovers are counted, a renewal that fails stops the pass's writes, and every timestamp is a
MicroTime. Against the test cluster, whose API server refuses a stale resourceVersion with 409."""

from __future__ import annotations

import time
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


def test_a_holder_that_renews_while_another_decides_to_take_over_keeps_the_lease(
    leases: client.CoordinationV1Api, kube: KubernetesPeer, namespace: str,
) -> None:
    """The slow holder was not dead: its renewal lands between the contender's read and its takeover."""
    expired_lease(leases, namespace, "slow-watcher")

    class Contender(Lease):
        def _read(self) -> tuple[dict[str, Any], str]:
            seen = super()._read()
            leases.patch_namespaced_lease(NAME, namespace, [  # the holder's renewal
                {"op": "replace", "path": "/spec/renewTime", "value": _stamp(datetime.now(UTC))}])
            return seen

    with pytest.raises(Busy, match="took the lease"), Contender(leases, namespace, NAME, duration=60).held():
        pass
    assert spec(kube, namespace)["holderIdentity"] == "slow-watcher"


def test_a_takeover_counts_a_transition_and_stamps_microseconds(
    leases: client.CoordinationV1Api, kube: KubernetesPeer, namespace: str,
) -> None:
    expired_lease(leases, namespace, "dead-watcher", transitions=4)
    whole_second = datetime.now(UTC).replace(microsecond=0)
    lease = Lease(leases, namespace, NAME, duration=60, clock=lambda: whole_second)

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
