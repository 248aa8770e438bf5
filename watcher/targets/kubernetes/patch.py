"""The JSON patch of an update: the three-way merge `kubectl apply` computes, over plain API dicts.

Pure functions, used by `watcher.targets.kubernetes.cluster` for every update and roll-back.

Three inputs: what we applied last time (kept on the object in the `LAST_APPLIED` annotation), what
we render now, and the live object (with what the API server defaulted and what others added). A
field we render is set; a field we rendered last time and no longer render is removed; anything else
on the live object, defaults and other people's additions, is kept. Lists of named things
(containers, env, volumes, ports, ...) merge element by element by their strategic-merge key, as
kubectl's strategic merge patch does (k8s.io/api/core/v1/types.go `patchMergeKey`); other lists are
ours whole. The result is sent as a JSON patch (the official client sends a list body as one) that
starts with the `resourceVersion` it was computed from, so a concurrent write makes it a 409 and a
fresh read, never a patch applied to an object it was not computed from.
"""

from __future__ import annotations

import copy
import json
from typing import Any

LAST_APPLIED = "service-builder.io/last-applied"
MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",), "initContainers": ("name",), "env": ("name",), "volumes": ("name",),
    "volumeMounts": ("mountPath",), "imagePullSecrets": ("name",), "ports": ("containerPort", "port"),
}
"""Strategic-merge keys of the lists we render (types.go): container ports by containerPort, Service ports
by port."""
KEPT_WHEN_DROPPED = (("spec", "replicas"),)
"""Fields never removed when we stop rendering them: an autoscaled Deployment's replicas are the HPA's, and
removing them would default the count to 1 (the kubectl apply pitfall the Kubernetes docs warn of)."""


def with_last_applied(manifest: dict[str, Any]) -> dict[str, Any]:
    """`manifest` carrying itself (minus this annotation) in the LAST_APPLIED annotation."""
    meta = dict(manifest["metadata"])
    notes = {k: v for k, v in (meta.pop("annotations", None) or {}).items() if k != LAST_APPLIED}
    bare = {**manifest, "metadata": {**meta, **({"annotations": notes} if notes else {})}}
    text = json.dumps(bare, sort_keys=True, separators=(",", ":"))
    return {**bare, "metadata": {**meta, "annotations": {**notes, LAST_APPLIED: text}}}


def last_applied(live: dict[str, Any]) -> dict[str, Any] | None:
    """What was applied to `live` last, or None (created before the annotation existed, or unreadable)."""
    text = ((live.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
    try:
        found = json.loads(text) if text else None
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def merged(last: Any, new: Any, live: Any, path: tuple[str, ...] = ()) -> Any:
    """The object after applying `new` over `live`, given that `last` was applied before."""
    if isinstance(new, dict) and isinstance(live, dict):
        before = last if isinstance(last, dict) else {}
        result = {k: v for k, v in live.items()
                  if k in new or k not in before or (*path, k) in KEPT_WHEN_DROPPED}
        for key, value in new.items():
            result[key] = merged(before.get(key), value, live.get(key), (*path, key))
        return result
    key = _merge_key(path[-1] if path else "", new, live)
    if key is not None:
        return _merged_list(key, last if isinstance(last, list) else [], new, live, path)
    return copy.deepcopy(new)


def _merge_key(field: str, new: Any, live: Any) -> str | None:
    if not (isinstance(new, list) and isinstance(live, list)):
        return None
    items = [*new, *live]
    return next((k for k in MERGE_KEYS.get(field, ()) if all(isinstance(i, dict) and k in i for i in items)), None)


def _merged_list(key: str, last: list[Any], new: list[Any], live: list[Any], path: tuple[str, ...]) -> list[Any]:
    """Our elements in our order, merged with their live twins; then the live ones we never rendered."""
    live_by = {item[key]: item for item in live}
    last_by = {item[key]: item for item in last if isinstance(item, dict) and key in item}
    ours = [merged(last_by.get(item[key]), item, live_by.get(item[key], {}), path) for item in new]
    rendered = {item[key] for item in new}
    theirs = [item for item in live if item[key] not in rendered and item[key] not in last_by]
    return ours + copy.deepcopy(theirs)


def patch_ops(live: dict[str, Any], target: dict[str, Any]) -> list[dict[str, Any]]:
    """JSON-patch ops that turn `live` into `target`: maps key by key, lists whole."""
    ops: list[dict[str, Any]] = []
    _diff(ops, "", live, target)
    return ops


def _diff(ops: list[dict[str, Any]], path: str, old: Any, new: Any) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in old:
            if key not in new:
                ops.append({"op": "remove", "path": f"{path}/{pointer(key)}"})
        for key, value in new.items():
            if key not in old:
                ops.append({"op": "add", "path": f"{path}/{pointer(key)}", "value": value})
            else:
                _diff(ops, f"{path}/{pointer(key)}", old[key], value)
    elif old != new or type(old) is not type(new):
        ops.append({"op": "replace", "path": path, "value": new})


def three_way_patch(last: dict[str, Any] | None, new: dict[str, Any], live: dict[str, Any]) -> list[dict[str, Any]]:
    """The ops that apply `new` to `live`; none when there is nothing to change. With no record of the last
    apply (an object from before LAST_APPLIED), nothing is removed: only what `new` says is set."""
    body = {k: v for k, v in new.items() if k in ("metadata", "spec")}
    target = merged(_shape(last if last is not None else body), body,
                    {k: v for k, v in live.items() if k in ("metadata", "spec")})
    ops = patch_ops({k: live[k] for k in ("metadata", "spec") if k in live}, target)
    if not ops:
        return []
    version = (live.get("metadata") or {}).get("resourceVersion")
    return ([{"op": "replace", "path": "/metadata/resourceVersion", "value": version}] if version else []) + ops


def _shape(last: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in last.items() if k in ("metadata", "spec")}


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
    """RFC 6901: one JSON-pointer segment."""
    return key.replace("~", "~0").replace("/", "~1")
