"""Hostile evaluation data and sections: each ends as `failed` with a message that says what to fix,
never a crash, and nothing of the version is deployed. One pass on the local target judges them
all (each evaluation is a real `python -m model_wrapper evaluate` process)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow import MlflowClient

from devstack.models import IRIS_CONTRACT, LoggedModel
from tests.evaluation.conftest import GATE, csv_bytes, good_iris, iris_table, parquet_bytes, variant  # noqa: F401
from watcher.config.settings import Settings
from watcher.reconcile import gate
from watcher.reconcile.deps import Deps
from watcher.reconcile.engine import reconcile_once

CONTRACT = "extra_files/contract.yaml"
DATA = "extra_files/evaluation.csv"
HUGE_LIMIT = 200_000


def _with(section: str) -> bytes:
    return (IRIS_CONTRACT + section).encode()


CASES: dict[str, tuple[dict[str, bytes], str]] = {
    "unknown-metric": ({CONTRACT: _with(GATE.replace("f1_macro", "f1_macroo"))},
                       "evaluation.metrics: Value error, unknown metric 'f1_macroo'"),
    "wrong-task": ({CONTRACT: _with(GATE.replace("f1_macro: {min: 0.85}", "rmse: {max: 1}"))},
                   "rmse is a regression metric; this task is classification"),
    "missing-file": ({CONTRACT: _with(GATE.replace("evaluation.csv", "holdout.csv"))},
                     "evaluation.data 'holdout.csv' is missing: log it beside contract.yaml "
                     "(looked for extra_files/holdout.csv)"),
    "missing-file-in-a-folder": ({CONTRACT: _with(GATE.replace("evaluation.csv", "data/holdout.csv"))},
                                 "evaluation.data 'data/holdout.csv' is missing: log it beside contract.yaml "
                                 "(looked for extra_files/data/holdout.csv)"),
    "no-target": ({DATA: csv_bytes(iris_table().drop(columns="species"))},
                  "the target column 'species' is not among evaluation.csv's columns"),
    "other-columns": ({DATA: csv_bytes(iris_table().rename(columns={"petal_width": "petal_wid"}))},
                      "evaluation.csv's input columns do not match the contract: missing 'petal_width'; "
                      "not in the contract 'petal_wid'"),
    "not-utf8-header": ({DATA: csv_bytes(iris_table().rename(columns={"species": "espèce"})).replace(
        "espèce".encode(), "espèce".encode("latin-1"))}, "evaluation.csv is not UTF-8 text; save it as UTF-8"),
    "not-utf8-rows": ({DATA: csv_bytes(iris_table()).replace(b"setosa", "s\xe9tosa".encode("latin-1"))},
                      "evaluation.csv is not UTF-8 text; save it as UTF-8"),
    "words-for-numbers": ({DATA: csv_bytes(iris_table().astype({"sepal_length": str}).assign(
        sepal_length=lambda t: t.sepal_length.where(t.index != 7, "five")))},
                          "evaluation.csv: column 'sepal_length' holds values that are not numbers (first: 'five')"),
    "parquet-not-parquet": ({CONTRACT: _with(GATE.replace("evaluation.csv", "evaluation.parquet")),
                             "extra_files/evaluation.parquet": csv_bytes(iris_table())},
                            "evaluation.parquet cannot be read as parquet"),
    "huge": ({DATA: csv_bytes(iris_table().sample(20_000, replace=True, random_state=1))},
             "evaluation.csv is 495 KiB; the limit is 195 KiB; evaluate on a sample"),
}


def test_hostile_evaluation_data_fails_the_version_with_a_message(
    make_deps: Callable[..., Deps], make_settings: Callable[..., Settings], tmp_path: Path, model_name: str,
    good_iris: LoggedModel, variant: Callable[..., str], production: dict[str, str],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gate, "MAX_DATA_BYTES", HUGE_LIMIT)  # 1 GiB in production; a 200 kB file shows the rule
    names = {case: f"{model_name[:30]}-{case}" for case in CASES}
    for case, (files, _) in CASES.items():
        variant(names[case], good_iris, files, production)
    deps = make_deps(make_settings(deploy_target="local", local_state_dir=tmp_path / "state"))

    report = reconcile_once(deps)

    assert (report.failed, report.deployed) == (len(CASES), 0), report.failures
    for case, (_, message) in CASES.items():
        tags = MlflowClient().get_model_version(names[case], "1").tags
        assert tags["deployment_status"] == "failed", case
        assert message in tags["deployment_message"], (case, tags["deployment_message"])
    assert not list((tmp_path / "state").glob("*.json"))  # no wrapper was started for any of them
