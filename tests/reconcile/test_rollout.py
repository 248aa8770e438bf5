"""The rollout verdict, table-tested with kubectl's own cases, and the pod faults that end a rollout.

The first table is `TestDeploymentStatusViewerStatus` from kubectl's
`pkg/polymorphichelpers/rollout_status_test.go`, with the same inputs and messages; the rest are the
states a real Deployment controller reports during a surge update (`maxSurge: 1, maxUnavailable: 0`)
with its `omitempty` status fields left out, as the API server sends them.
"""

from __future__ import annotations

from typing import Any

import pytest

from model_wrapper.server import EXIT_LOAD_FAILED, EXIT_SOURCES_UNAVAILABLE
from watcher.decide.rollout import (
    WRAPPER_LOAD_FAILED,
    WRAPPER_SOURCES_UNAVAILABLE,
    pod_fault,
    remember,
    rollout_status,
)


def deployment(generation: int, wanted: int | None, /, **status: Any) -> dict[str, Any]:
    spec = {} if wanted is None else {"replicas": wanted}
    return {"metadata": {"name": "foo", "generation": generation}, "spec": spec,
            "status": {k: v for k, v in status.items() if v}}  # omitempty: zeros are absent


KUBECTL_CASES = [
    # (generation, spec.replicas, observed, replicas, updated, available, message, done)
    (0, 1, 1, 1, 0, 1, 'Waiting for deployment "foo" rollout to finish: 0 out of 1 new replicas have been updated...',
     False),
    (1, 1, 1, 2, 1, 2, 'Waiting for deployment "foo" rollout to finish: 1 old replicas are pending termination...',
     False),
    (1, 2, 1, 2, 2, 1, 'Waiting for deployment "foo" rollout to finish: 1 of 2 updated replicas are available...',
     False),
    (1, 2, 1, 2, 2, 2, 'deployment "foo" successfully rolled out', True),
    (2, 2, 1, 2, 2, 2, "Waiting for deployment spec update to be observed...", False),
]


@pytest.mark.parametrize(("generation", "wanted", "observed", "replicas", "updated", "available", "message", "done"),
                         KUBECTL_CASES, ids=[f"test{n}" for n in range(1, 6)])
def test_the_verdict_is_kubectls_on_kubectls_own_cases(generation: int, wanted: int, observed: int, replicas: int,
                                                      updated: int, available: int, message: str, done: bool) -> None:
    verdict = rollout_status(deployment(generation, wanted, observedGeneration=observed, replicas=replicas,
                                        updatedReplicas=updated, availableReplicas=available))

    assert (verdict.message, verdict.done) == (message, done)


SURGE_UPDATE = [
    # what the controller reports, step by step, while v2 replaces v1 (one replica, surge 1)
    ("written, not yet observed", dict(observedGeneration=1, replicas=1, updatedReplicas=1, readyReplicas=1,
                                       availableReplicas=1), False),
    ("new ReplicaSet created, no new pod yet", dict(observedGeneration=2, replicas=1, readyReplicas=1,
                                                    availableReplicas=1), False),
    ("new pod starting, old one Ready", dict(observedGeneration=2, replicas=2, updatedReplicas=1, readyReplicas=1,
                                             availableReplicas=1), False),
    ("new pod Ready, old one terminating", dict(observedGeneration=2, replicas=2, updatedReplicas=1,
                                                readyReplicas=2, availableReplicas=2), False),
    ("old pod gone", dict(observedGeneration=2, replicas=1, updatedReplicas=1, readyReplicas=1,
                          availableReplicas=1), True),
]


@pytest.mark.parametrize(("step", "status", "done"), SURGE_UPDATE, ids=[s[0] for s in SURGE_UPDATE])
def test_a_surge_update_is_done_only_once_the_old_pod_is_gone(step: str, status: dict[str, int], done: bool) -> None:
    assert rollout_status(deployment(2, 1, **status)).done is done


def test_absent_counts_are_zero_not_done() -> None:
    """`updatedReplicas: 0` arrives as no field at all; it must not read as "all updated"."""
    assert not rollout_status(deployment(2, 1, observedGeneration=2, replicas=1, readyReplicas=1,
                                         availableReplicas=1)).done


def test_the_live_replica_count_is_the_target_so_an_autoscaler_can_change_it() -> None:
    scaled_up = deployment(3, 4, observedGeneration=3, replicas=2, updatedReplicas=2, availableReplicas=2)

    assert not rollout_status(scaled_up).done
    assert "2 out of 4 new replicas" in rollout_status(scaled_up).message


def test_a_deadline_exceeded_on_the_observed_generation_is_a_timeout_and_one_left_from_before_is_not() -> None:
    timed_out = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
    current = deployment(2, 1, observedGeneration=2, replicas=2, updatedReplicas=1, availableReplicas=1,
                         conditions=[timed_out])
    leftover = deployment(3, 1, observedGeneration=2, replicas=2, updatedReplicas=1, availableReplicas=1,
                          conditions=[timed_out])

    assert rollout_status(current).timed_out
    assert not rollout_status(leftover).timed_out and not rollout_status(leftover).done


def pod(reason: str, restarts: int = 0, message: str = "", last: str = "", code: int = EXIT_LOAD_FAILED,
        why: str = "Error") -> dict[str, Any]:
    container: dict[str, Any] = {"name": "model", "ready": False, "restartCount": restarts,
                                 "state": {"waiting": {"reason": reason, "message": message}}}
    if last or code != EXIT_LOAD_FAILED:
        container["lastState"] = {"terminated": {"exitCode": code, "reason": why, "message": last}}
    return {"metadata": {"uid": "pod-1"}, "status": {"containerStatuses": [container]}}


@pytest.mark.parametrize(("pods", "expected"), [
    ([pod("ContainerCreating")], None),
    ([pod("ErrImagePull", message="rpc error: not found")], None),  # the kubelet retries a first failed pull
    ([pod("ImagePullBackOff", message="Back-off pulling image")], ("ImagePullBackOff", False)),
    ([pod("CrashLoopBackOff", 3, last="predict failed: shape mismatch")], ("CrashLoopBackOff", True)),
    ([pod("CreateContainerConfigError", message='secret "s3" not found')], ("CreateContainerConfigError", False)),
], ids=["starting", "first pull error", "pull back-off is ops' to fix", "crash loop", "missing secret"])
def test_only_a_lasting_fault_of_the_pods_counts(pods: list[dict[str, Any]], expected: tuple[str, bool] | None) -> None:
    fault = pod_fault(pods)

    assert (None if fault is None else (fault.reason, fault.version_fault)) == expected


def test_the_watcher_reads_the_wrappers_exit_codes() -> None:
    assert (WRAPPER_LOAD_FAILED, WRAPPER_SOURCES_UNAVAILABLE) == (EXIT_LOAD_FAILED, EXIT_SOURCES_UNAVAILABLE)


OUTAGE = "could not download the model from s3://models/iris: Could not connect to the endpoint URL"
CRASHES = [
    ("the wrapper's verdict on the version", pod("CrashLoopBackOff", 1, last="needs xgboost"), None, True),
    ("the wrapper's word that S3 was down", pod("CrashLoopBackOff", 1, last=OUTAGE, code=EXIT_SOURCES_UNAVAILABLE),
     None, False),
    ("...however often it repeats", pod("CrashLoopBackOff", 5, last=OUTAGE, code=EXIT_SOURCES_UNAVAILABLE),
     pod("CrashLoopBackOff", 1, last=OUTAGE, code=EXIT_SOURCES_UNAVAILABLE), False),
    ("an image that cannot start, first seen", pod("CrashLoopBackOff", 1, last="ImportError: numpy", code=1),
     None, False),
    ("killed for memory, first seen", pod("CrashLoopBackOff", 1, code=137, why="OOMKilled"), None, False),
    ("the same crash after a restart", pod("CrashLoopBackOff", 2, last="Segmentation fault", code=139),
     pod("CrashLoopBackOff", 1, last="Segmentation fault", code=139), True),
    ("the same crash, no restart in between", pod("CrashLoopBackOff", 1, last="Segmentation fault", code=139),
     pod("CrashLoopBackOff", 1, last="Segmentation fault", code=139), False),
    ("another crash after a restart", pod("CrashLoopBackOff", 2, last="Segmentation fault", code=139),
     pod("CrashLoopBackOff", 1, last="ImportError: numpy", code=1), False),
]


@pytest.mark.parametrize(("case", "now", "earlier", "charged"), CRASHES, ids=[c[0] for c in CRASHES])
def test_a_crash_is_charged_to_the_version_only_with_evidence_that_it_is_its_own(
        case: str, now: dict[str, Any], earlier: dict[str, Any] | None, charged: bool) -> None:
    seen = remember({}, [earlier]) if earlier is not None else {}

    fault = pod_fault([now], remember(seen, [now]) if earlier is None else seen)

    assert fault is not None and fault.reason == "CrashLoopBackOff"
    assert fault.version_fault is charged
    assert charged or "not charged to the version" in fault.advice


def test_a_crash_loop_fault_carries_the_termination_message_and_the_restart_count() -> None:
    fault = pod_fault([pod("CrashLoopBackOff", 3, last="contract example 1: predict failed")])

    assert str(fault) == "CrashLoopBackOff: contract example 1: predict failed (restarted 3 times)"


def test_a_pull_failure_names_the_image_it_could_not_pull() -> None:
    stuck = pod("ImagePullBackOff", message='Back-off pulling image "reg.example/wrapper:2"')
    stuck["status"]["containerStatuses"][0]["image"] = "reg.example/wrapper:2"

    fault = pod_fault([stuck])

    assert fault is not None and not fault.version_fault
    assert str(fault).startswith("ImagePullBackOff: image reg.example/wrapper:2 cannot be pulled: Back-off")
