"""What one release owns on the cluster, over plain API dicts: the fields the watcher keeps setting, the optional
objects it stops rendering, and the note of the version an update replaces.

Pure functions, used by `watcher.targets.kubernetes.cluster` for every apply, roll-back and finish.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from watcher.render.manifests import MODEL_VERSION, ROLLBACK_TO, Rendered
from watcher.targets.kubernetes.snapshot import Snapshot, managed


def owned_manifests(rendered: Rendered) -> list[dict[str, Any]]:
    """The manifests as the watcher patches them: an autoscaled Deployment without spec.replicas, which is
    the HPA's (a create still starts at min_replicas). The three-way merge never removes it (patch.py), so no
    patch undoes a scale, and a scale alone changes no spec hash, so it causes no write at all."""
    manifests = list(rendered.manifests)
    if not any(m["kind"] == "HorizontalPodAutoscaler" for m in manifests):
        return manifests
    return [m if m["kind"] != "Deployment" else {**m, "spec": {k: v for k, v in m["spec"].items() if k != "replicas"}}
            for m in manifests]


def dropped(rendered: Rendered, snapshot: Snapshot, kinds: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """The managed objects of `kinds` the model has now and this release no longer renders."""
    name = rendered.deployment["metadata"]["name"]
    kept = {manifest["kind"] for manifest in rendered.manifests}
    found = [(kind, snapshot.objects.get((kind, name))) for kind in kinds if kind not in kept]
    return [(kind, obj) for kind, obj in found if obj is not None and managed(obj)]


def remembering(manifest: dict[str, Any], existing: dict[str, Any]) -> dict[str, Any]:
    """An update of a Deployment to another version notes the version it replaces, until it is done, so a
    roll-back cut short (API errors, a killed pass) is finished by a later pass."""
    before = existing["metadata"].get("annotations") or {}
    after = manifest["metadata"].get("annotations") or {}
    if manifest["kind"] != "Deployment" or before.get(MODEL_VERSION) in (None, after.get(MODEL_VERSION)):
        return manifest
    serving = before.get(ROLLBACK_TO) or before[MODEL_VERSION]  # a second update keeps the first note
    return {**manifest, "metadata": {**manifest["metadata"], "annotations": {**after, ROLLBACK_TO: serving}}}


