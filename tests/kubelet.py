"""The kubelet's side of the test control plane's Deployment pods: what their containers do, step by step, on
the control plane's clock (`ControlPlane.now()`, which tests move with `advance()` instead of sleeping).

Written from kubernetes/kubernetes:

- `pkg/kubelet/kubelet.go`: container restarts back off from `backOffPeriod` (10 s) to `MaxContainerBackOff`
  (300 s), `flowcontrol.NewBackOff(backOffPeriod, MaxContainerBackOff)`;
- `staging/src/k8s.io/client-go/util/flowcontrol/backoff.go`: `Next` starts an entry at the initial period and
  doubles it on every later call, capped at the maximum; `IsInBackOffSince(id, t)` holds while less than the
  current period has passed since `t`;
- `pkg/kubelet/kuberuntime/kuberuntime_manager.go` (`doBackOff`): the time checked is the exited container's
  `FinishedAt`; at the first exit there is no entry yet, so the first restart is immediate and starts the
  10 s period; from then on the container waits in `CrashLoopBackOff` with the message
  `back-off 20s restarting failed container=NAME pod=POD_NAMESPACE(UID)` until its period has passed;
- `pkg/kubelet/kubelet_pods.go` (`convertToAPIContainerStatuses`): `restartCount` counts the restarts,
  `lastState.terminated` is the previous run (exit code, reason, `message` from terminationMessagePath or,
  with FallbackToLogsOnError, the log's tail; `startedAt`, `finishedAt`);
- `pkg/kubelet/images/image_manager.go`: a bad image shows `ErrImagePull` on the first pull and
  `ImagePullBackOff` after.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

BACK_OFF_PERIOD = 10
"""Seconds, pkg/kubelet/kubelet.go `backOffPeriod`."""
MAX_CONTAINER_BACK_OFF = 300
"""Seconds, pkg/kubelet/kubelet.go `MaxContainerBackOff`."""
WRAPPER_LOAD_FAILED = 65
"""What the wrapper exits with when the version cannot serve (model_wrapper.server.EXIT_LOAD_FAILED)."""


@dataclass(frozen=True)
class Pods:
    """What the kubelet makes of a pod template: `ready`, `pending` (never starts), `crash`, `bad-image`.
    A crashing container exits with `exit_code` (`reason` as the runtime reports it) and `message`."""

    kind: str
    message: str = ""
    exit_code: int = WRAPPER_LOAD_FAILED
    reason: str = "Error"


READY = Pods("ready")
PENDING = Pods("pending")
BAD_IMAGE = Pods("bad-image", 'Back-off pulling image: not found')


def crash(message: str, exit_code: int = WRAPPER_LOAD_FAILED, reason: str = "Error") -> Pods:
    """The container exits at start-up with `message` as its termination message; by default as the wrapper
    does when the version cannot serve."""
    return Pods("crash", message, exit_code, reason)


def back_off(restarts: int) -> int:
    """The period a container that has restarted `restarts` (>= 1) times waits after its next exit."""
    return int(min(BACK_OFF_PERIOD * 2 ** (restarts - 1), MAX_CONTAINER_BACK_OFF))


def go_duration(seconds: int) -> str:
    """time.Duration's String(): 10s, 1m20s, 5m0s."""
    return f"{seconds // 60}m{seconds % 60}s" if seconds >= 60 else f"{seconds}s"


def container_step(container: dict[str, Any], behaviour: Pods, now: datetime, pod: dict[str, Any]) -> None:
    """One sync of one container's status toward what `behaviour` says it does."""
    waiting = (container["state"].get("waiting") or {}).get("reason")
    if behaviour.kind == "ready":
        container.update(ready=True, started=True, state={"running": {"startedAt": stamp(now)}})
    elif behaviour.kind == "crash":
        _crash_step(container, behaviour, now, pod)
    elif behaviour.kind == "bad-image":
        reason = "ImagePullBackOff" if waiting in ("ErrImagePull", "ImagePullBackOff") else "ErrImagePull"
        container.update(ready=False, state={"waiting": {"reason": reason, "message": behaviour.message}})
    else:
        container.update(ready=False, state={"waiting": {"reason": "ContainerCreating"}})


def _crash_step(container: dict[str, Any], behaviour: Pods, now: datetime, pod: dict[str, Any]) -> None:
    """Created -> running -> exited: restarted at once the first time, then after each back-off period."""
    state = container["state"]
    if "running" in state:
        finished = {"exitCode": behaviour.exit_code, "reason": behaviour.reason, "message": behaviour.message,
                    "startedAt": state["running"]["startedAt"], "finishedAt": stamp(now)}
        container.update(ready=False, started=False, lastState={"terminated": finished})
        if container["restartCount"] == 0:  # doBackOff: no entry yet, so no back-off
            _start(container, now, restart=True)
            return
        meta = pod["metadata"]
        container["state"] = {"waiting": {"reason": "CrashLoopBackOff", "message": (
            f"back-off {go_duration(back_off(container['restartCount']))} restarting failed "
            f"container={container['name']} pod={meta['name']}_{meta['namespace']}({meta['uid']})")}}
    elif (state.get("waiting") or {}).get("reason") == "CrashLoopBackOff":
        finished_at = parse(container["lastState"]["terminated"]["finishedAt"])
        if (now - finished_at).total_seconds() >= back_off(container["restartCount"]):
            _start(container, now, restart=True)
    else:
        _start(container, now, restart=False)


def _start(container: dict[str, Any], now: datetime, *, restart: bool) -> None:
    container.update(ready=False, started=True, state={"running": {"startedAt": stamp(now)}},
                     restartCount=container["restartCount"] + restart)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def restart_due(container: dict[str, Any]) -> datetime | None:
    """When a container waiting out its back-off may start again, else None."""
    if (container["state"].get("waiting") or {}).get("reason") != "CrashLoopBackOff":
        return None
    finished_at = parse(container["lastState"]["terminated"]["finishedAt"])
    return finished_at + timedelta(seconds=back_off(container["restartCount"]))
