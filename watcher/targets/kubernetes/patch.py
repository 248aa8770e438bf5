"""The JSON patch that updates a live object to what we render and touches nothing else.

Pure functions over plain API dicts, used by `watcher.targets.kubernetes.cluster` for every update:
what controllers, admission and people add to our objects survives.
"""

from __future__ import annotations

from typing import Any


def owned_patch(manifest: dict[str, Any], current: dict[str, Any]) -> list[dict[str, Any]]:
    """JSON-patch ops that set what `manifest` says and nothing else: our labels and annotations key by key,
    each top-level `spec` field we render (a field we do not render, e.g. ingressClassName when
    INGRESS_CLASS_NAME is unset, is left to admission), and in a pod template its spec plus our template
    labels and annotations key by key (so `kubectl rollout restart`'s annotation stays)."""
    ops: list[dict[str, Any]] = []
    _merge_map(ops, "/metadata/labels", manifest["metadata"].get("labels") or {}, current["metadata"].get("labels"))
    _merge_map(ops, "/metadata/annotations", manifest["metadata"].get("annotations") or {},
               current["metadata"].get("annotations"))
    live_spec = current.get("spec") or {}
    for key, value in (manifest.get("spec") or {}).items():
        path = "/spec/" + pointer(key)
        if key == "template" and isinstance(live_spec.get("template"), dict):
            live = live_spec["template"]
            meta, live_meta = value.get("metadata") or {}, live.get("metadata") or {}
            if not isinstance(live.get("metadata"), dict):
                ops.append({"op": "add", "path": path + "/metadata", "value": {}})
            _merge_map(ops, path + "/metadata/labels", meta.get("labels") or {}, live_meta.get("labels"))
            _merge_map(ops, path + "/metadata/annotations", meta.get("annotations") or {}, live_meta.get("annotations"))
            if live.get("spec") != value.get("spec"):
                ops.append({"op": "add", "path": path + "/spec", "value": value.get("spec") or {}})
        elif live_spec.get(key) != value:
            ops.append({"op": "add", "path": path, "value": value})
    if ops and "spec" not in current and manifest.get("spec") is not None:
        ops.insert(0, {"op": "add", "path": "/spec", "value": {}})
    return ops


def _merge_map(ops: list[dict[str, Any]], path: str, wanted: dict[str, Any], live: Any) -> None:
    if not isinstance(live, dict):
        if wanted:
            ops.append({"op": "add", "path": path, "value": wanted})
        return
    ops += [{"op": "add", "path": f"{path}/{pointer(key)}", "value": value}
            for key, value in wanted.items() if live.get(key) != value]


def ours(previous: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
    """What we had set on `previous` (a live object from before this release): the same paths `manifest`
    owns, with the values they had then."""
    meta, spec = previous.get("metadata") or {}, previous.get("spec") or {}
    mine = manifest["metadata"]

    def picked(values: Any, keys: Any) -> dict[str, Any]:
        return {k: v for k, v in (values or {}).items() if k in (keys or {})}

    owned_spec = {k: spec[k] for k in manifest.get("spec") or {} if k in spec}
    if isinstance(owned_spec.get("template"), dict):
        template, wanted = owned_spec["template"], manifest["spec"]["template"].get("metadata") or {}
        owned_spec["template"] = {"metadata": {
            "labels": picked((template.get("metadata") or {}).get("labels"), wanted.get("labels")),
            "annotations": picked((template.get("metadata") or {}).get("annotations"), wanted.get("annotations"))},
            "spec": template.get("spec")}
    return {"kind": manifest["kind"], "metadata": {
        "name": mine["name"], "labels": picked(meta.get("labels"), mine.get("labels")),
        "annotations": picked(meta.get("annotations"), mine.get("annotations"))}, "spec": owned_spec}


def pointer(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")
