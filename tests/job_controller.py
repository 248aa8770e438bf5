"""The Job controller, and a kubelet that really runs a Job's container, for the test control plane.

Mixed into `tests.control_plane.ControlPlane`, written from kubernetes/kubernetes:

- `pkg/apis/batch/v1/defaults.go` (`SetDefaults_Job`): completions and parallelism 1, backoffLimit 6,
  completionMode NonIndexed, suspend false, podReplacementPolicy TerminatingOrFailed;
- `pkg/registry/batch/job/strategy.go` (`PrepareForCreate`, `generateSelector`): status cleared, the
  selector `batch.kubernetes.io/controller-uid`, and the labels `batch.kubernetes.io/controller-uid`,
  `batch.kubernetes.io/job-name`, `controller-uid`, `job-name` on the pod template;
- `pkg/controller/job/job_controller.go` (`syncJob`): `startTime` on the first sync; one pod for a
  Job of one completion, owned by the Job; a failed pod counted in `status.failed`, and more failures
  than `backoffLimit` is `BackoffLimitExceeded`; `pastActiveDeadline` is `DeadlineExceeded` and the
  active pod is deleted; a succeeded pod with `completions` reached is success. With JobManagedBy /
  JobPodReplacementPolicy on (the default since 1.31) the interim `FailureTarget` or
  `SuccessCriteriaMet` condition comes one sync before the terminal `Failed` or `Complete`
  (`delayTerminalCondition`), which also sets `completionTime`; `active`, `succeeded` and `failed`
  are omitempty, `ready` and `terminating` are pointers, always written.
- The kubelet (`pkg/kubelet/kuberuntime/kuberuntime_container.go`): the container's process runs with
  only the environment its spec gives (a `secretKeyRef` read from the namespace's Secret; a missing
  one is `CreateContainerConfigError`), the termination-message file mounted at TERMINATION_LOG, and
  `FallbackToLogsOnError` taking the log's tail (80 lines, 2048 bytes) when that file is empty and the
  container failed. Exit 0 is `Completed` (pod `Succeeded`), else `Error` (`OOMKilled` for SIGKILL),
  pod `Failed`. What a pod does is still the test's `pod_policy` (`READY` runs it; `crash(message)`
  fails it with that message without running it; `BAD_IMAGE` never pulls).
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import kmock

JOBS = kmock.resource("batch", "v1", "jobs")
SECRETS = kmock.resource("", "v1", "secrets")
PODS = kmock.resource("", "v1", "pods")
ROOT = Path(__file__).resolve().parent.parent
JOB_LABELS = ("batch.kubernetes.io/controller-uid", "batch.kubernetes.io/job-name", "controller-uid", "job-name")


class JobController:
    """The Job half of the control plane: defaults on create, `sync_job` on every step."""

    _running: dict[str, tuple[subprocess.Popen[bytes], Path, Path]]

    def default_job(self, obj: dict[str, Any]) -> None:
        spec = obj.setdefault("spec", {})
        for key, value in (("completions", 1), ("parallelism", 1), ("backoffLimit", 6),
                           ("completionMode", "NonIndexed"), ("suspend", False),
                           ("podReplacementPolicy", "TerminatingOrFailed"), ("manualSelector", False)):
            spec.setdefault(key, value)
        uid, name = obj["metadata"]["uid"], obj["metadata"]["name"]
        spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
        labels = spec.setdefault("template", {}).setdefault("metadata", {}).setdefault("labels", {})
        labels.update(dict(zip(JOB_LABELS, (uid, name, uid, name), strict=True)))

    def sync_job(self, namespace: str, name: str) -> None:
        job = copy.deepcopy(self._objects[(JOBS, namespace, name)].raw)  # type: ignore[attr-defined]
        status = job.setdefault("status", {})
        if _terminal(status):
            return
        status.setdefault("startTime", self._stamp_now())
        pods = self._owned(PODS, namespace, job)  # type: ignore[attr-defined]
        for pod in pods:
            self._job_kubelet(pod, job["spec"]["template"])
        pods = self._owned(PODS, namespace, job)  # type: ignore[attr-defined]
        succeeded = sum(1 for p in pods if p["status"]["phase"] == "Succeeded")
        failed = sum(1 for p in pods if p["status"]["phase"] == "Failed")
        active = [p for p in pods if p["status"]["phase"] not in ("Succeeded", "Failed")]
        interim = _condition(status, "FailureTarget") or _condition(status, "SuccessCriteriaMet")
        if interim is not None:  # one sync after the interim condition: the terminal one
            terminal = "Failed" if interim["type"] == "FailureTarget" else "Complete"
            status["conditions"].append(self._new_condition(terminal, interim.get("reason", ""),
                                                            interim.get("message", "")))
            if terminal == "Complete":
                status["completionTime"] = self._stamp_now()
        elif failed > job["spec"]["backoffLimit"]:
            self._interim(status, "FailureTarget", "BackoffLimitExceeded",
                          "Job has reached the specified backoff limit")
        elif self._past_deadline(job):
            for pod in active:
                self._stop(pod)
                self._delete(PODS, namespace, pod["metadata"]["name"])  # type: ignore[attr-defined]
            active = []
            self._interim(status, "FailureTarget", "DeadlineExceeded",
                          "Job was active longer than specified deadline")
        elif succeeded >= job["spec"]["completions"] and not active:
            self._interim(status, "SuccessCriteriaMet", "CompletionsReached",
                          "Reached expected number of succeeded pods")
        elif not active and succeeded + failed < job["spec"]["completions"] + job["spec"]["backoffLimit"] + 1:
            self._create_job_pod(job)
            active = self._owned(PODS, namespace, job)[-1:]  # type: ignore[attr-defined]
        counts = {"active": len(active), "succeeded": succeeded, "failed": failed}
        status.update({k: v for k, v in counts.items() if v})
        for key in [k for k, v in counts.items() if not v]:
            status.pop(key, None)
        status.update(ready=sum(1 for p in active if p["status"]["phase"] == "Running"), terminating=0,
                      uncountedTerminatedPods={})
        self._save(JOBS, job)  # type: ignore[attr-defined]
        if not _terminal(status):
            self._dirty.add(namespace)  # type: ignore[attr-defined]  # a running container: look again next tick

    # --- the controller's helpers -----------------------------------------------------------------

    def _stamp_now(self) -> str:
        return str(self.now().strftime("%Y-%m-%dT%H:%M:%SZ"))  # type: ignore[attr-defined]

    def _new_condition(self, kind: str, reason: str, message: str) -> dict[str, Any]:
        now = self._stamp_now()
        return {"type": kind, "status": "True", "lastProbeTime": now, "lastTransitionTime": now,
                "reason": reason, "message": message}

    def _interim(self, status: dict[str, Any], kind: str, reason: str, message: str) -> None:
        status.setdefault("conditions", []).append(self._new_condition(kind, reason, message))

    def _past_deadline(self, job: dict[str, Any]) -> bool:
        deadline = job["spec"].get("activeDeadlineSeconds")
        if deadline is None:
            return False
        from tests.kubelet import parse as _parse

        started = _parse(job["status"]["startTime"])
        return bool((self.now() - started).total_seconds() >= deadline)  # type: ignore[attr-defined]

    def _create_job_pod(self, job: dict[str, Any]) -> None:
        template = job["spec"]["template"]
        containers = template["spec"]["containers"]
        name = f"{job['metadata']['name']}-{uuid.uuid4().hex[:5]}"
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": job["metadata"]["namespace"], "uid": str(uuid.uuid4()),
                            "creationTimestamp": self._stamp_now(), "labels": dict(template["metadata"]["labels"]),
                            "annotations": dict(template["metadata"].get("annotations") or {}),
                            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "controller": True,
                                                 "blockOwnerDeletion": True, "name": job["metadata"]["name"],
                                                 "uid": job["metadata"]["uid"]}]},
               "spec": copy.deepcopy(template["spec"]),
               "status": {"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}],
                          "containerStatuses": [
                              {"name": c.get("name"), "image": c.get("image"), "imageID": "", "ready": False,
                               "restartCount": 0, "started": False,
                               "state": {"waiting": {"reason": "ContainerCreating"}}} for c in containers]}}
        self._save(PODS, pod)  # type: ignore[attr-defined]

    # --- the kubelet ------------------------------------------------------------------------------

    def _job_kubelet(self, pod: dict[str, Any], template: dict[str, Any]) -> None:
        if pod["status"]["phase"] in ("Succeeded", "Failed"):
            return
        behaviour = type(self).pod_policy(template)  # type: ignore[attr-defined]
        status = copy.deepcopy(pod["status"])
        container = status["containerStatuses"][0]
        kind = getattr(behaviour, "kind", "pending")
        if kind == "crash":
            self._terminated(status, 1, "Error", behaviour.message)
        elif kind == "bad-image":
            waiting = (container["state"].get("waiting") or {}).get("reason")
            reason = "ImagePullBackOff" if waiting in ("ErrImagePull", "ImagePullBackOff") else "ErrImagePull"
            container["state"] = {"waiting": {"reason": reason, "message": behaviour.message}}
        elif kind == "ready":
            self._run(pod, status)
        if status != pod["status"]:
            pod["status"] = status
            self._save(PODS, pod)  # type: ignore[attr-defined]

    def _run(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        running = self.__dict__.setdefault("_running", {})
        if uid not in running:
            env = self._container_env(pod)
            if isinstance(env, str):
                status["containerStatuses"][0]["state"] = {"waiting": {"reason": "CreateContainerConfigError",
                                                                       "message": env}}
                return
            workdir = Path(tempfile.mkdtemp(prefix="kubelet-"))
            mounted = self._mount_secrets(pod, workdir)
            if isinstance(mounted, str):
                status["containerStatuses"][0]["state"] = {"waiting": {"reason": "ContainerCreating",
                                                                       "message": mounted}}
                return
            env = {name: _remount(value, mounted) for name, value in env.items()}
            termination, log = workdir / "termination-log", workdir / "log"
            termination.touch()
            container = pod["spec"]["containers"][0]
            command = [*(container.get("command") or []), *(container.get("args") or [])]
            command[0] = sys.executable if command and command[0] == "python" else command[0]
            with log.open("wb") as out:
                process = subprocess.Popen(command, env={**env, "TERMINATION_LOG": str(termination)}, cwd=ROOT,
                                           stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           start_new_session=True)
            running[uid] = (process, termination, log)
            status.update(phase="Running", conditions=[{"type": "Ready", "status": "True"}])
            status["containerStatuses"][0].update(ready=True, started=True,
                                                  state={"running": {"startedAt": self._stamp_now()}})
            return
        process, termination, log = running[uid]
        code = process.poll()
        if code is None:
            return
        del running[uid]
        message = termination.read_text(errors="replace").strip()
        if not message and code != 0:  # FallbackToLogsOnError
            message = "\n".join(log.read_text(errors="replace").splitlines()[-80:])[-2048:]
        reason = "Completed" if code == 0 else ("OOMKilled" if code == -signal.SIGKILL else "Error")
        self._terminated(status, code if code >= 0 else 128 - code, reason, message)

    def _terminated(self, status: dict[str, Any], code: int, reason: str, message: str) -> None:
        status.update(phase="Succeeded" if code == 0 else "Failed", conditions=[{"type": "Ready", "status": "False"}])
        status["containerStatuses"][0].update(ready=False, started=False, state={"terminated": {
            "exitCode": code, "reason": reason, "message": message, "startedAt": self._stamp_now(),
            "finishedAt": self._stamp_now()}})

    def _stop(self, pod: dict[str, Any]) -> None:
        entry = self.__dict__.get("_running", {}).pop(pod["metadata"]["uid"], None)
        if entry is not None and entry[0].poll() is None:
            os.killpg(entry[0].pid, signal.SIGKILL)
            entry[0].wait()

    def stop_job_containers(self) -> None:
        for process, _, _ in self.__dict__.get("_running", {}).values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def _mount_secrets(self, pod: dict[str, Any], workdir: Path) -> dict[str, Path] | str:
        """The container's Secret volumes as files, as the kubelet's secret volume plugin writes them
        (pkg/volume/secret/secret.go: each `items` key at its `path`; a missing Secret or key fails the
        mount unless the volume is optional). Returns mount path -> local folder, or why it cannot mount."""
        import base64

        namespace, spec = pod["metadata"]["namespace"], pod["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes") or [] if "secret" in v}
        mounted: dict[str, Path] = {}
        for mount in spec["containers"][0].get("volumeMounts") or []:
            volume = volumes.get(mount["name"])
            if volume is None:
                continue
            source = volume["secret"]
            secret = self._objects._objects.get((SECRETS, namespace, source["secretName"]))  # type: ignore[attr-defined]
            data = (secret.raw.get("data") or {}) if secret is not None and not secret.deleted else None
            local = workdir / "volumes" / mount["name"]
            local.mkdir(parents=True)
            mounted[mount["mountPath"]] = local
            for item in source.get("items") or [{"key": k, "path": k} for k in data or {}]:
                if data is None or item["key"] not in data:
                    if source.get("optional"):
                        continue
                    return f'MountVolume.SetUp failed for volume "{mount["name"]}": secret "{source["secretName"]}"' \
                        + (" not found" if data is None else f" has no key {item['key']}")
                (local / item["path"]).write_bytes(base64.b64decode(data[item["key"]]))
        return mounted

    def _container_env(self, pod: dict[str, Any]) -> dict[str, str] | str:
        """The container's environment, as the kubelet builds it (no variable of the test process leaks in),
        or why it cannot be built."""
        import base64

        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT)}
        namespace = pod["metadata"]["namespace"]
        for item in pod["spec"]["containers"][0].get("env") or []:
            if "value" in item:
                env[item["name"]] = str(item["value"])
                continue
            ref = item["valueFrom"]["secretKeyRef"]
            key = (SECRETS, namespace, ref["name"])
            secret = self._objects._objects.get(key)  # type: ignore[attr-defined]
            data = (secret.raw.get("data") or {}) if secret is not None and not secret.deleted else None
            if data is None or ref["key"] not in data:
                if ref.get("optional"):
                    continue
                return f'secret "{ref["name"]}" not found' if data is None else \
                    f"couldn't find key {ref['key']} in Secret {namespace}/{ref['name']}"
            env[item["name"]] = base64.b64decode(data[ref["key"]]).decode()
        return env


def _remount(value: str, mounted: dict[str, Path]) -> str:
    """A path under a mounted volume, as the process sees that volume here (the pod's path, re-rooted)."""
    for mount_path, local in mounted.items():
        if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
            return str(local) + value[len(mount_path.rstrip("/")):]
    return value


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind and c["status"] == "True"), None)


def _terminal(status: dict[str, Any]) -> bool:
    return _condition(status, "Complete") is not None or _condition(status, "Failed") is not None
