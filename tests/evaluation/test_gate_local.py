"""The evaluation gate on the local target: the `evaluate` command runs as a process before a
version takes traffic; a good version passes and is served, a bad one is refused with its figures
while the live version keeps serving, and compare_with_live refuses a regression and accepts an
improvement. Figures are read back through the MLflow client and compared with scikit-learn's own
on the same data."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from sklearn.metrics import accuracy_score, f1_score
from sklearn.tree import DecisionTreeClassifier

from devstack.models import LoggedModel, iris_frame, register_versions
from model_wrapper.contract.naming import model_slug
from tests.evaluation.conftest import good_model, log_gated
from tests.reconcile.test_local_target import answers
from watcher.reconcile.deps import Deps
from watcher.reconcile.engine import reconcile_once


def served_version(state_dir: Path, slug: str) -> Any:
    endpoint = json.loads((state_dir / f"{slug}.json").read_text())["endpoint"]
    with urllib.request.urlopen(f"{endpoint}metadata", timeout=5) as response:
        return json.loads(response.read())["version"]


def sklearn_figures(logged: LoggedModel) -> dict[str, float]:
    features, target = iris_frame()
    predicted = logged.model.predict(features)
    return {"accuracy": accuracy_score(target, predicted), "f1_macro": f1_score(target, predicted, average="macro")}


def test_a_good_version_passes_and_a_shuffled_one_is_refused_while_the_live_one_serves(
    local_deps: Callable[[], Deps], state_dir: Path, model_name: str, good_iris: LoggedModel,
    bad_iris: LoggedModel, production: dict[str, str],
) -> None:
    client, slug = MlflowClient(), model_slug(model_name)
    register_versions(model_name, good_iris, tags=production)

    first = reconcile_once(local_deps())

    assert (first.deployed, first.failed) == (1, 0), first.failures
    tags = client.get_model_version(model_name, "1").tags
    assert (tags["deployment_status"], tags["evaluation_status"]) == ("deployed", "passed")
    expected = sklearn_figures(good_iris)
    logged = client.get_logged_model(good_iris.source.removeprefix("models:/"))
    metrics = {m.key: m.value for m in logged.metrics or []}
    assert metrics["evaluation_accuracy"] == pytest.approx(expected["accuracy"], abs=1e-12)
    assert metrics["evaluation_f1_macro"] == pytest.approx(expected["f1_macro"], abs=1e-12)
    assert tags["evaluation_summary"] == (f"accuracy={expected['accuracy']:.3f} f1_macro={expected['f1_macro']:.3f} "
                                          "(evaluation.csv, 150 rows)")

    register_versions(model_name, bad_iris, tags=production)
    refused = reconcile_once(local_deps())

    assert (refused.failed, refused.updated) == (1, 0)
    bad = client.get_model_version(model_name, "2").tags
    accuracy = sklearn_figures(bad_iris)["accuracy"]
    assert (bad["deployment_status"], bad["evaluation_status"]) == ("failed", "failed")
    assert bad["deployment_message"].startswith(f"evaluation failed: accuracy {accuracy:.3f} < 0.900 required; ")
    assert bad["deployment_message"].endswith("(evaluation.csv, 150 rows); version 1 keeps serving")
    assert served_version(state_dir, slug) in (1, "1")
    assert client.get_model_version(model_name, "1").tags["deployment_status"] == "deployed"
    evaluation_log = state_dir / f"{slug}.evaluation.log"
    before = evaluation_log.stat().st_mtime_ns

    steady = reconcile_once(local_deps())  # the refusal is remembered: nothing is evaluated again

    assert (steady.unchanged, steady.failed, steady.updated) == (1, 0, 0)
    assert evaluation_log.stat().st_mtime_ns == before
    assert client.get_model_version(model_name, "2").tags == bad


def test_compare_with_live_accepts_an_improvement_and_refuses_a_regression(
    local_deps: Callable[[], Deps], state_dir: Path, model_name: str, production: dict[str, str],
) -> None:
    gate = "evaluation:\n  data: evaluation.csv\n  target: species\n" \
           "  compare_with_live: {metric: accuracy, max_drop: 0.01}\n"
    features, target = iris_frame()
    stump = DecisionTreeClassifier(max_depth=1, random_state=0).fit(features, target)
    weak, strong = log_gated(model_name, stump, gate=gate), log_gated(model_name, good_model(), gate=gate)
    client, slug = MlflowClient(), model_slug(model_name)
    for version in ("1", "2"):
        client.set_model_version_tag(model_name, version, "deploy", production["deploy"])
    client.delete_model_version_tag(model_name, "2", "deploy")

    assert reconcile_once(local_deps()).deployed == 1  # nothing serves yet: nothing to compare with
    client.set_model_version_tag(model_name, "2", "deploy", production["deploy"])
    improved = reconcile_once(local_deps())

    assert (improved.updated, improved.failed) == (1, 0), improved.failures
    weak_accuracy, strong_accuracy = (accuracy_score(target, m.model.predict(features)) for m in (weak, strong))
    assert client.get_model_version(model_name, "2").tags["evaluation_summary"] == (
        f"accuracy={strong_accuracy:.3f} (live v1: accuracy={weak_accuracy:.3f}) (evaluation.csv, 150 rows)")

    register_versions(model_name, weak, tags=production)  # v3: the stump again, now against v2
    regressed = reconcile_once(local_deps())

    assert regressed.failed == 1
    message = client.get_model_version(model_name, "3").tags["deployment_message"]
    assert message == (f"evaluation failed: accuracy {weak_accuracy:.3f}, {strong_accuracy - weak_accuracy:.3f} "
                       "below live version 2 (max_drop 0.010) (evaluation.csv, 150 rows); version 2 keeps serving")
    assert served_version(state_dir, slug) in (2, "2") and answers(
        json.loads((state_dir / f"{slug}.json").read_text())["endpoint"] + "ready")
