"""The whole pass on real peers: register and tag in MLflow, run-once, then look at kmock and the tags."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from mlflow import MlflowClient

from devstack.models import log_iris
from model_wrapper.contract.naming import model_slug
from tests.peers import KubernetesPeer
from watcher.config.settings import Settings
from watcher.reconcile.deps import Deps
from watcher.reconcile.engine import reconcile_once

pytestmark = pytest.mark.usefixtures("mlflow_server")


def test_tagged_version_becomes_deployment_service_and_ingress(
    make_settings: Callable[..., Settings], make_deps: Callable[..., Deps], kube: KubernetesPeer, namespace: str,
    model_name: str,
) -> None:
    logged = log_iris(model_name, tags={"deploy": "production"})
    report = reconcile_once(make_deps(make_settings(selector="tag:deploy=production")))
    assert report.deployed == 1 and report.failed == 0, report.failures
    slug = model_slug(model_name)
    deployment = kube.objects("deployments", namespace)[slug]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert container["image"] == "registry.example.org/model-wrapper:1.0"
    assert env["MODEL_NAME"] == model_name and env["MODEL_VERSION"] == logged.version
    assert env["MODEL_SOURCE"] == logged.source and env["MODEL_RUN_ID"] == logged.run_id
    assert deployment["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "service-builder"
    assert slug in kube.objects("services", namespace)
    rule = kube.objects("ingresses", namespace)[slug]["spec"]["rules"][0]
    assert rule["host"] == "models.example.org"
    assert rule["http"]["paths"][0]["path"] == f"/{slug}/api"
    tags = MlflowClient().get_model_version(model_name, logged.version).tags
    assert tags["deployment_status"] == "deployed"
    assert tags["model_endpoint"] == f"http://models.example.org/{slug}/api/"
    assert tags["deployed"] == "true" and tags["deployment_name"] == slug
    assert tags["deployed_at"] == "2026-11-22T12:00:00+00:00"


def test_second_pass_with_nothing_changed_writes_nothing(
    make_deps: Callable[..., Deps], kube: KubernetesPeer, namespace: str, model_name: str, production: dict[str, str]
) -> None:
    log_iris(model_name, tags=production)
    reconcile_once(make_deps())
    writes_before = len(kube.writes(namespace))
    tags_before = MlflowClient().get_model_version(model_name, "1").tags
    report = reconcile_once(make_deps())
    assert report.unchanged == 1 and report.deployed == 0
    assert len(kube.writes(namespace)) == writes_before
    assert MlflowClient().get_model_version(model_name, "1").tags == tags_before
