"""One evaluation as a `batch/v1` Job: create it (or find it again), wait until it is Complete or
Failed, read its pod's termination message, delete it. Used by `KubernetesTarget.evaluate`.

The verdicts follow the Job controller (kubernetes/kubernetes `pkg/controller/job/job_controller.go`):
a Job is finished only once it carries the terminal condition `Complete` or `Failed` (status True);
the interim `SuccessCriteriaMet` and `FailureTarget` come first and mean "not yet". The pod the
controller created is found by the `batch.kubernetes.io/job-name` label it puts on it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from watcher.errors import Blocked, Retryable

log = logging.getLogger(__name__)
T = TypeVar("T")
Call = Callable[[str, str, Callable[[], Any]], Any]
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
TIMEOUT = (5, 30)


def job_finished(status: Any) -> str | None:
    """`Complete` or `Failed` once the Job controller has given the terminal condition, else None."""
    for condition in (status.conditions if status else None) or []:
        if condition.type in ("Complete", "Failed") and condition.status == "True":
            return str(condition.type)
    return None


class JobRunner:
    def __init__(self, batch: client.BatchV1Api, core: client.CoreV1Api, namespace: str, *, call: Call,
                 sleep: Callable[[float], None] = time.sleep, evaluates_label: str) -> None:
        self._batch, self._core, self._ns = batch, core, namespace
        self._call, self._sleep, self._evaluates = call, sleep, evaluates_label

    def run(self, job: dict[str, Any], timeout: float) -> str:
        """The pod's termination message of a Complete Job; Retryable saying why when it failed or hung.

        The Job is deleted once its outcome is read, and only then: a pass stopped while it waits (the CronJob's
        deadline, a drain) or that waited in vain leaves it running, and the next pass, which names the same Job
        for the same version and digest, waits for it (`_create`) instead of starting the evaluation over. Its
        own activeDeadlineSeconds and ttlSecondsAfterFinished bound it if no pass comes back."""
        name = job["metadata"]["name"]
        self._retire_others(job)
        self._call("create", "Job", partial(self._create, job))
        finished, state = self._wait(name, timeout)
        pod = self._pod_outcome(name)
        self._call("delete", "Job", partial(self._delete, name))
        if finished == "Complete":
            return str(pod.get("message") or "")
        raise Retryable(f"the evaluation Job failed ({_why(state, pod)}); retrying next pass")

    def _create(self, job: dict[str, Any]) -> None:
        create: Callable[..., Any] = self._batch.create_namespaced_job  # takes the manifest as a dict too
        try:
            create(self._ns, job, _request_timeout=TIMEOUT)
        except ApiException as e:
            if e.status != 409:
                raise
            # A pass killed mid-way left this very Job (same version and digest): wait for it instead.
            found = self._batch.read_namespaced_job(job["metadata"]["name"], self._ns, _request_timeout=TIMEOUT)
            if ((found.metadata.labels if found.metadata else None) or {}) != job["metadata"]["labels"]:
                raise Blocked(f"a Job named {job['metadata']['name']!r} exists and is not Service Builder's") from e
            log.info("evaluation Job %s exists already; waiting for it", job["metadata"]["name"])

    def _retire_others(self, job: dict[str, Any]) -> None:
        """Jobs left by earlier evaluations of this model (another version or digest) stop using the cluster."""
        slug = job["metadata"]["labels"][self._evaluates]
        listed = self._call("list", "Job", lambda: self._batch.list_namespaced_job(
            self._ns, label_selector=f"{self._evaluates}={slug}", _request_timeout=TIMEOUT))
        for other in listed.items:
            name = other.metadata.name
            if name != job["metadata"]["name"] and (other.metadata.labels or {}).get(self._evaluates) == slug:
                self._call("delete", "Job", partial(self._delete, name))

    def _wait(self, name: str, timeout: float) -> tuple[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = self._call("get", "Job", lambda: self._batch.read_namespaced_job(
                name, self._ns, _request_timeout=TIMEOUT)).status
            if (finished := job_finished(status)) is not None:
                return finished, status
            if time.monotonic() >= deadline:
                raise Retryable(f"the evaluation Job {name} did not finish within {timeout:.0f}s; the next pass "
                                "waits for it")
            self._sleep(1.0)

    def _pod_outcome(self, name: str) -> dict[str, Any]:
        """The terminated state of the Job's pod's container (reason, exit code, termination message)."""
        pods = self._call("list", "Pod", lambda: self._core.list_namespaced_pod(
            self._ns, label_selector=f"{JOB_NAME_LABEL}={name}", _request_timeout=TIMEOUT)).items
        for pod in pods:
            if (pod.metadata.labels or {}).get(JOB_NAME_LABEL) != name:
                continue
            for status in (pod.status.container_statuses if pod.status else None) or []:
                terminated = status.state.terminated if status.state else None
                if terminated is not None:
                    return {"reason": terminated.reason, "exit_code": terminated.exit_code,
                            "message": (terminated.message or "").strip()}
        return {}

    def _delete(self, name: str) -> None:
        try:
            # Background: the garbage collector removes the pod too (ttlSecondsAfterFinished is the safety net).
            self._batch.delete_namespaced_job(name, self._ns, propagation_policy="Background",
                                              _request_timeout=TIMEOUT)
        except ApiException as e:
            if e.status != 404:
                raise


def _why(status: Any, pod: dict[str, Any]) -> str:
    """The Job's reason (DeadlineExceeded, BackoffLimitExceeded) and the pod's (OOMKilled, Error, its last words)."""
    job_reason = next((f"{c.reason}: {c.message}" if c.message else str(c.reason)
                       for c in (status.conditions or []) if c.type == "Failed" and c.status == "True"), "Failed")
    parts = [job_reason]
    if pod.get("reason"):
        parts.append(f"container {pod['reason']}, exit code {pod.get('exit_code')}")
    if pod.get("message"):
        parts.append(" ".join(str(pod["message"]).split())[-300:])
    return "; ".join(parts)
