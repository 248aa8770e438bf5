"""Verdicts on a rollout, as pure functions of the Deployment and its pods (plain API dicts).

`rollout_status` is `kubectl rollout status` (kubectl `pkg/polymorphichelpers/rollout_status.go`,
`DeploymentStatusViewer.Status`); `pod_fault` reads the kubelet's container states and charges a crash to the
version only with evidence that it is the version's own. Called by
`watcher.targets.kubernetes.cluster` while it waits, and table-tested with kubectl's own cases.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

TIMED_OUT = "ProgressDeadlineExceeded"
VERSION_FAULTS = frozenset({"CrashLoopBackOff"})
"""Waiting reasons that may say the version itself cannot run: its container exits. Charged to the version only
with evidence (`charged_to_version`)."""
IMAGE_FAULTS = frozenset({"ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
"""The image cannot be pulled. It comes from the settings (MODEL_WRAPPER_IMAGE, RUNTIME_IMAGES), never from the
version, and a registry outage clears by itself: ops' to fix, retried every pass. A first `ErrImagePull` is not
even that yet: the kubelet retries the pull, and shows ImagePullBackOff once it keeps failing."""
CONFIG_FAULTS = frozenset({"CreateContainerConfigError", "CreateContainerError"})
"""A Secret or ConfigMap the pod needs is missing: for ops to fix, not the version."""


@dataclass(frozen=True)
class Status:
    done: bool
    message: str
    timed_out: bool = False
    """`ProgressDeadlineExceeded` on the generation the controller has observed."""


def rollout_status(deployment: dict[str, Any]) -> Status:
    """kubectl's verdict: done only once the current generation is observed, every wanted replica is
    updated, no old replica is left and every updated one is available. Absent counts are zero
    (`omitempty`); `spec.replicas` is read live, so a replica count an autoscaler set is respected."""
    meta, spec, status = (deployment.get(k) or {} for k in ("metadata", "spec", "status"))
    name = meta.get("name", "")
    if int(meta.get("generation") or 0) > int(status.get("observedGeneration") or 0):
        return Status(False, "Waiting for deployment spec update to be observed...")
    conditions = status.get("conditions") or []
    progressing: dict[str, Any] = next((c for c in conditions if c.get("type") == "Progressing"), {})
    if progressing.get("reason") == TIMED_OUT:
        return Status(False, f'deployment "{name}" exceeded its progress deadline', timed_out=True)
    wanted = spec.get("replicas")
    replicas, updated, available = (int(status.get(k) or 0) for k in ("replicas", "updatedReplicas",
                                                                        "availableReplicas"))
    if wanted is not None and updated < int(wanted):
        return Status(False, f'Waiting for deployment "{name}" rollout to finish: {updated} out of {wanted} new '
                             "replicas have been updated...")
    if replicas > updated:
        return Status(False, f'Waiting for deployment "{name}" rollout to finish: {replicas - updated} old '
                             "replicas are pending termination...")
    if available < updated:
        return Status(False, f'Waiting for deployment "{name}" rollout to finish: {available} of {updated} '
                             "updated replicas are available...")
    return Status(True, f'deployment "{name}" successfully rolled out')


def progress_mark(deployment: dict[str, Any]) -> tuple[int, ...]:
    """What moves while a rollout progresses: the observed generation and the updated, ready and available
    counts (progress.go's `DeploymentProgressing` compares the same); a change restarts the stall clock."""
    status = deployment.get("status") or {}
    return tuple(int(status.get(k) or 0) for k in ("observedGeneration", "updatedReplicas", "readyReplicas",
                                                    "availableReplicas", "replicas"))


def stale_deadline(deployment: dict[str, Any], pods: list[dict[str, Any]]) -> bool:
    """A ProgressDeadlineExceeded left from a failed rollout while the template's own pods all serve: after a
    roll-back to an existing ReplicaSet, sync.go keeps the condition until it sees progress (the failed pods
    going), so it says nothing about this template."""
    wanted = int(((deployment.get("spec") or {}).get("replicas")) or 0)
    ready = sum(1 for pod in pods if any(c.get("type") == "Ready" and c.get("status") == "True"
                                         for c in (pod.get("status") or {}).get("conditions") or []))
    return wanted > 0 and ready >= wanted


WRAPPER_LOAD_FAILED = 65
"""The wrapper's exit code when the version itself cannot serve (model_wrapper.server.EXIT_LOAD_FAILED); it writes
why in the termination message. No Python process exits 65 by itself: an image that cannot even start exits 1."""
WRAPPER_SOURCES_UNAVAILABLE = 69
"""The wrapper's exit code when S3 or MLflow were unreachable or refused it (EXIT_SOURCES_UNAVAILABLE): never the
version's fault, whatever the restarts."""


@dataclass(frozen=True)
class Termination:
    """A container's last termination as the kubelet reports it (`lastState.terminated`, `restartCount`)."""

    restarts: int
    exit_code: int | None
    reason: str
    message: str

    def same_crash(self, other: Termination) -> bool:
        return (self.exit_code, self.reason, self.message) == (other.exit_code, other.reason, other.message)


def terminations(pods: list[dict[str, Any]]) -> dict[str, Termination]:
    """Each container's last termination, by pod uid and container name."""
    found = {}
    for pod in pods:
        uid = (pod.get("metadata") or {}).get("uid") or (pod.get("metadata") or {}).get("name") or ""
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (container.get("lastState") or {}).get("terminated")
            if terminated:
                code = terminated.get("exitCode")
                found[f"{uid}/{container.get('name')}"] = Termination(
                    int(container.get("restartCount") or 0), None if code is None else int(code),
                    str(terminated.get("reason") or ""), str(terminated.get("message") or "").strip())
    return found


def remember(seen: Mapping[str, Termination], pods: list[dict[str, Any]]) -> dict[str, Termination]:
    """For each container, the first termination of its current run of identical crashes: `seen` (what an
    earlier poll remembered) where the crash is still the same, else the newest."""
    return {key: seen[key] if key in seen and seen[key].same_crash(last) else last
            for key, last in terminations(pods).items()}


def charged_to_version(last: Termination, first: Termination | None) -> bool:
    """Evidence that a crash is the version's own: the wrapper's verdict that the version cannot serve (its exit
    code, with the reason in the termination message), or the container restarted since `first` and crashed
    the same way again. A first crash alone may come from outside (an S3 or MLflow outage while loading, a node
    in trouble), and the wrapper's word that its sources were unavailable clears the version whatever repeats."""
    if last.exit_code == WRAPPER_SOURCES_UNAVAILABLE:
        return False
    if last.exit_code == WRAPPER_LOAD_FAILED and last.message:
        return True
    return first is not None and first.restarts < last.restarts and first.same_crash(last)


@dataclass(frozen=True)
class PodFault:
    reason: str
    detail: str
    version_fault: bool
    """True: evidence says the version's own pods cannot run (permanent); False: not (yet) the version's."""

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}".strip(": ")[:400]

    @property
    def advice(self) -> str:
        """What a fault that is not the version's (yet) asks of whom, for the message."""
        if self.reason in VERSION_FAULTS:
            return ("not charged to the version: nothing shows it is its own (an S3 or MLflow outage while it "
                    "loads looks the same); the next pass retries")
        return "fix it in the cluster, the next pass retries"


def pod_fault(pods: list[dict[str, Any]], seen: Mapping[str, Termination] | None = None) -> PodFault | None:
    """The first container that is stuck, with the last termination message (the wrapper writes why it stopped
    there), else None; `seen` is what `remember` kept from earlier polls, for the repeated-crash evidence.
    Pods that are Ready or still starting are no fault."""
    last = terminations(pods)
    for pod in pods:
        uid = (pod.get("metadata") or {}).get("uid") or (pod.get("metadata") or {}).get("name") or ""
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason", "")
            if reason not in VERSION_FAULTS | CONFIG_FAULTS | IMAGE_FAULTS:
                continue
            terminated = (container.get("lastState") or {}).get("terminated") or {}
            detail = terminated.get("message") or waiting.get("message") or ""
            if reason in IMAGE_FAULTS:
                detail = f"image {container.get('image') or '?'} cannot be pulled: {detail}"
            restarts = int(container.get("restartCount") or 0)
            if reason == "CrashLoopBackOff" and restarts:
                detail = f"{detail} (restarted {restarts} times)".strip()
            key = f"{uid}/{container.get('name')}"
            charged = reason in VERSION_FAULTS and key in last and charged_to_version(last[key], (seen or {}).get(key))
            return PodFault(reason, str(detail).strip(), charged)
    return None


def waiting_reasons(pods: list[dict[str, Any]]) -> str:
    """What the not-ready containers wait for, for a message (e.g. `ContainerCreating`, `ErrImagePull`)."""
    reasons = sorted({((c.get("state") or {}).get("waiting") or {}).get("reason", "")
                      for pod in pods for c in (pod.get("status") or {}).get("containerStatuses") or []
                      if not c.get("ready")} - {""})
    if not reasons and any((p.get("status") or {}).get("phase") == "Pending" for p in pods):
        reasons = ["Pending"]
    return ", ".join(reasons)
