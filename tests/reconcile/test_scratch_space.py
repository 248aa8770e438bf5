"""The model pod's scratch space (the emptyDir at /tmp the wrapper downloads the model into): sized by
DEFAULT_SCRATCH_SIZE or the contract's serving.scratch_size, and a version whose files on S3 are larger is
refused before anything is applied, saying what to raise, instead of being evicted and restarted for ever."""

from __future__ import annotations

from collections.abc import Callable

from mlflow import MlflowClient

from devstack.models import IRIS_CONTRACT, LoggedModel, log_iris, register_versions
from tests.peers import KubernetesPeer
from watcher.config.settings import Settings
from watcher.reconcile.deps import Deps
from watcher.reconcile.engine import reconcile_once


def message(name: str) -> str:
    return MlflowClient().get_model_version(name, "1").tags["deployment_message"]


def test_a_model_larger_than_its_scratch_space_fails_before_anything_is_applied_and_a_raise_deploys_it(
    make_deps: Callable[..., Deps], make_settings: Callable[..., Settings], kube: KubernetesPeer, namespace: str,
    model_name: str, iris: LoggedModel, production: dict[str, str],
) -> None:
    register_versions(model_name, iris, tags=production)

    refused = reconcile_once(make_deps(make_settings(default_scratch_size="1Ki")))

    assert refused.failed == 1
    assert "more than its scratch space (1Ki, the pod's /tmp where the wrapper downloads them)" in message(model_name)
    assert "set serving.scratch_size in contract.yaml (e.g. 1Gi), or ask ops to raise DEFAULT_SCRATCH_SIZE" in (
        message(model_name))
    assert [r for r in kube.writes(namespace) if r.resource is not None and r.resource.plural != "leases"] == []

    raised = reconcile_once(make_deps(make_settings(default_scratch_size="2Gi")))

    assert (raised.deployed, raised.failed) == (1, 0), raised.failures
    (volume,) = [v for v in kube.objects("deployments", namespace)[next(iter(kube.objects("deployments", namespace)))]
                 ["spec"]["template"]["spec"]["volumes"] if v["name"] == "tmp"]
    assert volume["emptyDir"]["sizeLimit"] == "2Gi"


def test_the_contracts_scratch_size_is_the_pods_and_is_checked_against_the_model(
    make_deps: Callable[..., Deps], kube: KubernetesPeer, namespace: str, model_name: str,
    production: dict[str, str],
) -> None:
    log_iris(model_name, tags=production, contract=IRIS_CONTRACT + "serving:\n  scratch_size: 2Ki\n")

    refused = reconcile_once(make_deps())

    assert refused.failed == 1 and "more than its scratch space (2Ki," in message(model_name)
    assert kube.objects("deployments", namespace) == {}
