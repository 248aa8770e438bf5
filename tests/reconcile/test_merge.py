"""The three-way merge of an update (watcher.targets.kubernetes.patch), table-tested on the cases kubectl
apply documents: set what we render, remove what we rendered last time and no longer do, keep everything else."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest

from watcher.targets.kubernetes.patch import LAST_APPLIED, last_applied, merged, three_way_patch, with_last_applied

CASES = [
    ("a field we render is set", {"a": 1}, {"a": 2}, {"a": 1, "theirs": 0}, {"a": 2, "theirs": 0}),
    ("a field we stop rendering goes", {"a": 1, "b": 1}, {"a": 1}, {"a": 1, "b": 1}, {"a": 1}),
    ("a field others added stays", {"a": 1}, {"a": 1}, {"a": 1, "x": 5}, {"a": 1, "x": 5}),
    ("a default stays", {"c": {"image": "i:1"}}, {"c": {"image": "i:2"}},
     {"c": {"image": "i:1", "imagePullPolicy": "IfNotPresent"}},
     {"c": {"image": "i:2", "imagePullPolicy": "IfNotPresent"}}),
    ("containers merge by name, others' sidecar stays",
     {"containers": [{"name": "model", "image": "1"}]}, {"containers": [{"name": "model", "image": "2"}]},
     {"containers": [{"name": "model", "image": "1", "terminationMessagePath": "/dev/termination-log"},
                     {"name": "proxy", "image": "envoy"}]},
     {"containers": [{"name": "model", "image": "2", "terminationMessagePath": "/dev/termination-log"},
                     {"name": "proxy", "image": "envoy"}]}),
    ("an env variable we drop goes, one ops added stays",
     {"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "1"}]}, {"env": [{"name": "A", "value": "2"}]},
     {"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "1"}, {"name": "P", "value": "p"}]},
     {"env": [{"name": "A", "value": "2"}, {"name": "P", "value": "p"}]}),
    ("a list without a merge key is ours whole", {"tls": [{"a": 1}]}, {"tls": [{"b": 1}]},
     {"tls": [{"a": 1}, {"c": 1}]}, {"tls": [{"b": 1}]}),
    ("an HPA's replicas stay when we stop rendering them", {"spec": {"replicas": 2}}, {"spec": {}},
     {"spec": {"replicas": 7}}, {"spec": {"replicas": 7}}),
]


@pytest.mark.parametrize(("case", "last", "new", "live", "expected"), CASES, ids=[c[0] for c in CASES])
def test_the_merge_follows_kubectl_apply(case: str, last: Any, new: Any, live: Any, expected: Any) -> None:
    assert merged(last, new, live) == expected


def deployment(image: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "Deployment", "metadata": {"name": "m", "labels": {"app": "m"}},
            "spec": {"template": {"spec": {"containers": [{"name": "model", "image": image, **extra}]}}}}


def live_of(applied: dict[str, Any], version: str = "7") -> dict[str, Any]:
    live = copy.deepcopy(with_last_applied(applied))
    live["metadata"].update(resourceVersion=version, uid="u")
    live["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "IfNotPresent"  # defaulted
    return live


def test_nothing_to_change_is_no_patch_even_against_a_defaulted_object() -> None:
    applied = deployment("i:1")
    live = live_of(applied)
    assert three_way_patch(last_applied(live), with_last_applied(applied), live) == []


def test_a_patch_carries_the_resource_version_it_was_computed_from_and_records_what_it_applied() -> None:
    live = live_of(deployment("i:1"))
    ops = three_way_patch(last_applied(live), with_last_applied(deployment("i:2")), live)
    assert ops[0] == {"op": "replace", "path": "/metadata/resourceVersion", "value": "7"}
    after = jsonpatch.apply_patch(live, ops)
    assert after["spec"]["template"]["spec"]["containers"][0] == {"name": "model", "image": "i:2",
                                                                  "imagePullPolicy": "IfNotPresent"}
    assert last_applied(after) == deployment("i:2") and LAST_APPLIED not in str(last_applied(after))


def test_an_object_without_a_record_of_the_last_apply_loses_nothing() -> None:
    live = live_of(deployment("i:1"))
    del live["metadata"]["annotations"][LAST_APPLIED]
    live["metadata"]["labels"]["old"] = "x"
    after = jsonpatch.apply_patch(live, three_way_patch(last_applied(live), with_last_applied(deployment("i:2")), live))
    assert after["metadata"]["labels"] == {"app": "m", "old": "x"}
