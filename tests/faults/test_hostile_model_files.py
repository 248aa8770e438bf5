"""Hostile files beside the contract: the MLmodel file and the saved input example, and errors nobody foresaw.

The watcher reads the MLmodel file (for the signature) before any contract, so a broken one must
fail its own version with a message, never the pass. Each model is logged for real, then the
file is overwritten in S3, as anyone with write access to the artifact store could.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from devstack.models import log_iris
from model_wrapper.contract.naming import model_slug
from tests.faults.support import tags
from tests.peers import KubernetesPeer
from watcher.clients.artifacts import S3Store
from watcher.reconcile.deps import Deps
from watcher.reconcile.engine import reconcile_once

pytestmark = pytest.mark.usefixtures("mlflow_server")
BOMB = "\n".join(['l0: &l0 ["lol"]'] + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)])


def with_signature(mlmodel: bytes, inputs: Any) -> bytes:
    document = yaml.safe_load(mlmodel)
    document["signature"]["inputs"] = inputs
    return yaml.safe_dump(document).encode()


# (what is wrong, how the real MLmodel is rewritten, a fragment the message must contain)
BROKEN_MLMODELS: list[tuple[str, Callable[[bytes], bytes], str]] = [
    ("not YAML", lambda _: b"flavors: [python_function", "is not a valid MLflow model file"),
    ("nested too deeply", lambda _: b"flavors: " + b"[" * 5_000 + b"]" * 5_000, "nested too deeply"),
    ("a list, not a mapping", lambda _: b"- flavors\n- signature\n", "not a mapping"),
    ("signature inputs not a string", lambda real: with_signature(real, 5), "is not a valid MLflow model file"),
    ("signature inputs not JSON", lambda real: with_signature(real, "[{name: x"), "is not a valid MLflow model file"),
    ("signature columns named by lists",
     lambda real: with_signature(real, json.dumps([{"name": ["sepal_length"], "type": "double"}])),
     "disagrees with the model signature"),
    ("a Python object tag", lambda _: b"flavors: !!python/object/apply:os.system ['id']\n",
     "is not a valid MLflow model file"),
]


def test_every_broken_mlmodel_fails_its_own_version_in_one_pass_and_the_healthy_model_deploys(
    make_deps: Callable[..., Deps], kube: KubernetesPeer, namespace: str, model_name: str,
    production: dict[str, str], s3_client: Any, model_files: Callable[[str, str], tuple[str, str]],
) -> None:
    broken = {f"{model_name}-{index}": case for index, case in enumerate(BROKEN_MLMODELS)}
    for name, (_, rewrite, _) in broken.items():
        logged = log_iris(name, kind="tree", tags=production)
        bucket, prefix = model_files(name, logged.version)
        real = s3_client.get_object(Bucket=bucket, Key=f"{prefix}/MLmodel")["Body"].read()
        s3_client.put_object(Bucket=bucket, Key=f"{prefix}/MLmodel", Body=rewrite(real))
    healthy = f"{model_name}-healthy"
    log_iris(healthy, kind="tree", tags=production)

    report = reconcile_once(make_deps())

    assert (report.deployed, report.failed) == (1, len(broken)), report.failures
    for name, (case, _, fragment) in broken.items():
        found = tags(name)
        assert found["deployment_status"] == "failed", case
        assert fragment in found["deployment_message"], (case, found["deployment_message"])
        assert "MLmodel" in found["deployment_message"] or "signature" in found["deployment_message"], case
    assert set(kube.objects("deployments", namespace)) == {model_slug(healthy)}


@pytest.mark.timeout(60)
def test_an_alias_bomb_in_mlmodel_is_never_expanded(
    make_deps: Callable[..., Deps], model_name: str, production: dict[str, str], s3_client: Any,
    model_files: Callable[[str, str], tuple[str, str]],
) -> None:
    logged = log_iris(model_name, kind="tree", tags=production)
    bucket, prefix = model_files(model_name, logged.version)
    real = s3_client.get_object(Bucket=bucket, Key=f"{prefix}/MLmodel")["Body"].read()
    s3_client.put_object(Bucket=bucket, Key=f"{prefix}/MLmodel", Body=real + b"\n" + BOMB.encode() + b"\n")
    report = reconcile_once(make_deps())
    assert report.deployed == 1, report.failures  # 9**8 strings if expanded; shared references as loaded


@pytest.mark.parametrize("example", [
    {"columns": ["sepal_length"], "data": 5},
    {"columns": [["sepal_length"]], "data": [[5.1]]},
    {"columns": ["sepal_length"], "data": [5.1, 4.9]},
    "not an object",
], ids=["rows not a list", "a list as a column name", "rows not lists", "not an object"])
def test_an_unusable_saved_input_example_is_ignored_and_the_signature_still_gives_a_contract(
    example: Any, make_deps: Callable[..., Deps], model_name: str, production: dict[str, str], s3_client: Any,
    model_files: Callable[[str, str], tuple[str, str]],
) -> None:
    logged = log_iris(model_name, kind="tree", contract=None, tags=production)
    bucket, prefix = model_files(model_name, logged.version)
    mlmodel = yaml.safe_load(s3_client.get_object(Bucket=bucket, Key=f"{prefix}/MLmodel")["Body"].read())
    path = mlmodel["saved_input_example_info"]["artifact_path"]
    s3_client.put_object(Bucket=bucket, Key=f"{prefix}/{path}", Body=json.dumps(example).encode())
    report = reconcile_once(make_deps())
    assert report.deployed == 1, report.failures


class _FailingStore(S3Store):
    """The project's own S3 seam, made to fail as no test input can: a bug in the watcher itself."""

    def __init__(self, real: S3Store, poisoned: str) -> None:
        self._real, self._poisoned = real, poisoned

    def __getattr__(self, name: str) -> Any:  # everything but `read` is the real store's (its client included)
        return getattr(self._real, name)

    def read(self, uri: str, limit: int = 1 << 20) -> bytes | None:
        if self._poisoned in uri:
            raise KeyError("a bug")
        return self._real.read(uri, limit)


def test_an_unexpected_error_fails_only_its_model_and_the_pass_goes_on(
    make_deps: Callable[..., Deps], kube: KubernetesPeer, namespace: str, model_name: str,
    production: dict[str, str], model_files: Callable[[str, str], tuple[str, str]],
) -> None:
    unlucky, healthy = f"{model_name}-unlucky", f"{model_name}-healthy"
    logged = log_iris(unlucky, kind="tree", tags=production)
    log_iris(healthy, kind="tree", tags=production)
    _, prefix = model_files(unlucky, logged.version)
    deps = make_deps()
    report = reconcile_once(make_deps(store=_FailingStore(deps.store, prefix)))
    assert (report.deployed, report.failed) == (1, 1), report.failures
    found = tags(unlucky)
    assert found["deployment_status"] == "failed"
    assert found["deployment_message"] == ("the watcher failed unexpectedly (KeyError); its log has the details; "
                                           "will retry on the next pass")
    assert found["deployment_attempt"].endswith(" failures=1"), "tried again next pass"
    assert set(kube.objects("deployments", namespace)) == {model_slug(healthy)}
