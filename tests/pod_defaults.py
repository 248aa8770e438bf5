"""The API server's defaulting of a pod template, for the test control plane (create and update alike).

Written from kubernetes/kubernetes `pkg/apis/core/v1/defaults.go`, which the generated
`zz_generated.defaults.go` runs on every PodTemplateSpec of a Deployment, ReplicaSet or Job:
- `SetDefaults_PodSpec`: dnsPolicy ClusterFirst, restartPolicy Always, securityContext {},
  terminationGracePeriodSeconds 30, schedulerName default-scheduler;
- `SetDefaults_Container`: imagePullPolicy Always for a `:latest` (or untagged) image, else IfNotPresent;
  terminationMessagePath /dev/termination-log, terminationMessagePolicy File;
- `SetDefaults_Probe`: timeoutSeconds 1, periodSeconds 10, successThreshold 1, failureThreshold 3;
  `SetDefaults_HTTPGetAction`: path /, scheme HTTP;
- `SetDefaults_SecretVolumeSource` / `ConfigMapVolumeSource` / `ProjectedVolumeSource`: defaultMode 0644;
  `SetDefaults_ObjectFieldSelector`: apiVersion v1;
- and the declarative `+default="TCP"` of ContainerPort.protocol (staging/src/k8s.io/api/core/v1/types.go).
So a template read back is never equal to the one sent: a client that compares them always finds a change.
"""

from __future__ import annotations

from typing import Any

PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
FILE_MODE = 0o644


def default_pod_spec(spec: dict[str, Any]) -> None:
    """Fill in, in place, what the API server fills into a stored PodSpec."""
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("securityContext", {})
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("schedulerName", "default-scheduler")
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        _default_container(container)
    for volume in spec.get("volumes") or []:
        for source in ("secret", "configMap", "projected"):
            if isinstance(volume.get(source), dict):
                volume[source].setdefault("defaultMode", FILE_MODE)


def _default_container(container: dict[str, Any]) -> None:
    if not container.get("imagePullPolicy"):
        container["imagePullPolicy"] = "Always" if _tag(str(container.get("image", ""))) == "latest" \
            else "IfNotPresent"
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    for port in container.get("ports") or []:
        port.setdefault("protocol", "TCP")
    for probe in PROBES:
        if isinstance(container.get(probe), dict):
            _default_probe(container[probe])
    for variable in container.get("env") or []:
        field_ref = (variable.get("valueFrom") or {}).get("fieldRef")
        if isinstance(field_ref, dict):
            field_ref.setdefault("apiVersion", "v1")


def _default_probe(probe: dict[str, Any]) -> None:
    for field, value in (("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1),
                         ("failureThreshold", 3)):
        probe.setdefault(field, value)
    if isinstance(probe.get("httpGet"), dict):
        probe["httpGet"].setdefault("path", "/")
        probe["httpGet"].setdefault("scheme", "HTTP")


def _tag(image: str) -> str:
    """parsers.ParseImageName's tag: `latest` when none is given; a digest leaves it empty."""
    if "@" in image:
        return ""
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else "latest"
