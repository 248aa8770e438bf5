"""The HorizontalPodAutoscaler controller's rescale rule, for the test control plane.

Written from kubernetes/kubernetes `pkg/controller/podautoscaler/horizontal.go` (`reconcileAutoscaler`):
a target whose scale is 0 while minReplicas is not has autoscaling disabled and is left alone; above
`maxReplicas` it is rescaled to maxReplicas ("Current number of replicas above Spec.MaxReplicas"),
below `minReplicas` to minReplicas; in between the metrics decide, and the emulator has none, so the
count stays as it is (a steady load). The rescale is an update of the target's `scale` subresource,
which the Deployment's storage (`pkg/registry/apps/deployment/storage/storage.go`, ScaleREST) turns
into a spec.replicas update, so generation moves as for any spec change; the HPA's status then says
what it saw and wanted.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import kmock

HPAS = kmock.resource("autoscaling", "v2", "horizontalpodautoscalers")
DEPLOYMENTS = kmock.resource("apps", "v1", "deployments")


class HpaController:
    """Mixed into tests.control_plane.ControlPlane: `sync_hpa` on every step of a namespace."""

    _objects: Any
    _save: Callable[[Any, dict[str, Any]], None]

    def sync_hpa(self, namespace: str, name: str) -> None:
        hpa = copy.deepcopy(self._objects[(HPAS, namespace, name)].raw)
        target = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
        key = (DEPLOYMENTS, namespace, target.get("name"))
        if target.get("kind") != "Deployment" or key not in self._objects or self._objects[key].deleted:
            return
        deployment = copy.deepcopy(self._objects[key].raw)
        current = int(deployment["spec"].get("replicas", 1))
        desired = rescaled(current, int(hpa["spec"].get("minReplicas") or 1), int(hpa["spec"]["maxReplicas"]))
        if desired != current:
            deployment["spec"]["replicas"] = desired
            deployment["metadata"]["generation"] = int(deployment["metadata"].get("generation") or 1) + 1
            self._save(DEPLOYMENTS, deployment)
        status = {"currentReplicas": current, "desiredReplicas": desired}
        if hpa.get("status") != status:
            hpa["status"] = status
            self._save(HPAS, hpa)


def rescaled(current: int, minimum: int, maximum: int) -> int:
    """horizontal.go's bounds: 0 with a non-zero minimum is autoscaling off; out of range goes to the bound."""
    if current == 0 and minimum != 0:
        return current
    return min(max(current, minimum), maximum)
