"""The security scan (`make scan`, devstack/scan.py): checkov over the rendered model manifests and cronjob/.

The gate is tested against checkov itself, from its own virtualenv (made by the same code on first
use; CI runs `make scan` before the tests): one run scans what we ship beside deliberately broken
copies of it. A real flaw fails naming the check, an exception without a reason fails, the same
exception with a reason passes, and a file checkov cannot read fails instead of passing unseen.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from devstack import scan

# The intended exceptions, each marked with its reason on the object (checkov.io/skipN annotations).
EXPECTED_EXCEPTIONS = {
    "model-default.yaml": {"CKV_K8S_11", "CKV_K8S_15", "CKV_K8S_35", "CKV_K8S_43"},
    "model-serving.yaml": {"CKV_K8S_15", "CKV_K8S_35", "CKV_K8S_43"},   # the contract sets a CPU limit
    "model-locked-down.yaml": {"CKV_K8S_15", "CKV_K8S_35"},            # DEFAULT_CPU_LIMIT and a digest
    "cronjob.yaml": {"CKV_K8S_15", "CKV_K8S_38", "CKV_K8S_43"},
    "cronjob-watch.yaml": {"CKV_K8S_15", "CKV_K8S_38", "CKV_K8S_43"},
}


def _deployment(text: str) -> dict[str, Any]:
    return copy.deepcopy(next(doc for doc in yaml.safe_load_all(text) if doc["kind"] == "Deployment"))


def _privileged(deployment: dict[str, Any], annotation: str | None = None) -> str:
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] = True
    if annotation is not None:
        deployment["metadata"]["annotations"]["checkov.io/skip9"] = annotation
    return yaml.safe_dump(deployment)


@pytest.fixture(scope="module")
def results() -> dict[str, scan.Scanned]:
    shipped = scan.targets()
    model = shipped["model-default.yaml"]
    broken = {
        "broken-privileged.yaml": _privileged(_deployment(model)),
        "broken-unexplained.yaml": _privileged(_deployment(model), "CKV_K8S_16"),
        "explained.yaml": _privileged(_deployment(model), "CKV_K8S_16=a test of the gate, with its reason"),
        "broken-unreadable.yaml": "apiVersion: apps/v1\nkind: [Deployment\n",
    }
    return {result.name: result for result in scan.scan({**shipped, **broken}, scan.checkov())}


def test_a_manifest_with_a_real_flaw_fails_the_scan_naming_the_check(results: dict[str, scan.Scanned]) -> None:
    problems = results["broken-privileged.yaml"].problems()
    assert [p for p in problems if "CKV_K8S_16" in p], problems  # "Container should not be privileged"
    assert all(p.startswith("broken-privileged.yaml: ") for p in problems)


def test_an_exception_needs_a_reason_to_pass(results: dict[str, scan.Scanned]) -> None:
    unexplained = results["broken-unexplained.yaml"].problems()
    assert [p for p in unexplained if "CKV_K8S_16 skipped" in p and "without a reason" in p], unexplained
    explained = results["explained.yaml"]
    assert ("CKV_K8S_16", "a test of the gate, with its reason") in {(c, why) for c, _, why in explained.skipped}
    assert not [p for p in explained.problems() if "CKV_K8S_16" in p]


def test_a_file_the_scanner_cannot_read_fails_rather_than_passing_unchecked(results: dict[str, scan.Scanned]) -> None:
    assert results["broken-unreadable.yaml"].problems() == [
        "broken-unreadable.yaml: checkov checked nothing in it (unparsed, or no Kubernetes object)"]


@pytest.mark.parametrize("name", sorted(EXPECTED_EXCEPTIONS))
def test_everything_we_ship_passes_with_only_the_intended_exceptions(
        results: dict[str, scan.Scanned], name: str) -> None:
    result = results[name]
    assert result.problems() == []
    assert result.passed > 50  # the Kubernetes checks ran on it
    assert {check for check, _, _ in result.skipped} == EXPECTED_EXCEPTIONS[name]
    assert all(len(reason) > 20 for _, _, reason in result.skipped)


def test_the_scan_covers_every_kit_directory_and_the_policy_of_every_contract() -> None:
    shipped = scan.targets()
    assert set(shipped) == set(EXPECTED_EXCEPTIONS)
    for name in ("model-default.yaml", "model-serving.yaml", "model-locked-down.yaml"):
        assert "kind: NetworkPolicy" in shipped[name]
    assert "- Egress" in shipped["model-locked-down.yaml"]
