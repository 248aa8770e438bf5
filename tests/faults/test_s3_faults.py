"""S3 failing under the watcher: endpoint down, bucket missing, model files missing, bad credentials.

Each ends with the affected model `failed` and a message that names the bucket or key and never
a credential; models it does not affect deploy, or keep serving untouched, in the same pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from mlflow import MlflowClient

from devstack.models import log_iris
from devstack.servers import LocalS3
from model_wrapper.contract.naming import model_slug
from tests.faults.support import credentials_checked, tags
from tests.peers import KubernetesPeer
from watcher.config.settings import Settings
from watcher.reconcile.deps import Deps
from watcher.reconcile.engine import reconcile_once

pytestmark = pytest.mark.usefixtures("mlflow_server")
BAD_KEY_ID, BAD_SECRET = "AKIAWRONGKEY00000000", "wrong-secret-0123456789abcdef"


def test_s3_down_fails_each_model_that_needs_its_contract_and_leaves_serving_models_alone(
    s3: LocalS3, make_deps: Callable[..., Deps], kube: KubernetesPeer, namespace: str, model_name: str,
    production: dict[str, str],
) -> None:
    serving, newcomer = f"{model_name}-serving", f"{model_name}-new"
    log_iris(serving, kind="tree", tags=production)
    assert reconcile_once(make_deps()).deployed == 1
    log_iris(newcomer, kind="tree", tags=production)
    writes_before = _object_writes(kube, namespace)
    s3.stop()
    try:
        report = reconcile_once(make_deps())
    finally:
        s3.start()
    assert (report.failed, report.unchanged, report.deployed) == (1, 1, 0), report.failures
    message = tags(newcomer)["deployment_message"]
    assert "S3 unreachable" in message and f"s3://{s3.bucket}/" in message
    assert tags(newcomer)["deployment_status"] == "failed"
    assert tags(serving)["deployment_status"] == "deployed"
    assert _object_writes(kube, namespace) == writes_before, "nothing applied without a contract"

    report = reconcile_once(make_deps())
    assert report.deployed == 1 and report.failed == 0, report.failures
    assert tags(newcomer)["deployment_status"] == "deployed"


def _object_writes(kube: KubernetesPeer, namespace: str) -> int:
    return len([r for r in kube.writes(namespace) if r.resource is not None and r.resource.plural != "leases"])


def test_a_version_in_a_missing_bucket_fails_naming_the_bucket_and_the_others_deploy(
    make_deps: Callable[..., Deps], kube: KubernetesPeer, namespace: str, model_name: str,
    production: dict[str, str],
) -> None:
    lost, healthy = f"{model_name}-lost", f"{model_name}-healthy"
    bucket = f"no-such-bucket-{namespace}"
    client = MlflowClient()
    client.create_registered_model(lost)
    version = client.create_model_version(lost, source=f"s3://{bucket}/models/iris", run_id=None)
    for key, value in production.items():
        client.set_model_version_tag(lost, version.version, key, value)
    log_iris(healthy, kind="tree", tags=production)
    report = reconcile_once(make_deps())
    assert (report.deployed, report.failed) == (1, 1), report.failures
    message = tags(lost)["deployment_message"]
    assert f"S3 bucket {bucket!r} does not exist" in message
    assert tags(lost).get("deployment_attempt"), "nothing about the version changes by itself: not retried blindly"
    assert tags(healthy)["deployment_status"] == "deployed"
    assert model_slug(lost) not in kube.objects("deployments", namespace)


def test_a_version_whose_files_were_deleted_fails_naming_the_missing_key_and_the_others_deploy(
    make_deps: Callable[..., Deps], kube: KubernetesPeer, namespace: str, model_name: str,
    production: dict[str, str], s3_client: Any, model_files: Callable[[str, str], tuple[str, str]],
) -> None:
    gutted, healthy = f"{model_name}-gutted", f"{model_name}-healthy"
    logged = log_iris(gutted, kind="tree", tags=production)
    log_iris(healthy, kind="tree", tags=production)
    bucket, prefix = model_files(gutted, logged.version)
    listed = s3_client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/")["Contents"]
    s3_client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": item["Key"]} for item in listed]})
    report = reconcile_once(make_deps())
    assert (report.deployed, report.failed) == (1, 1), report.failures
    message = tags(gutted)["deployment_message"]
    assert f"s3://{bucket}/{prefix}/MLmodel" in message, message
    assert tags(healthy)["deployment_status"] == "deployed"
    assert model_slug(gutted) not in kube.objects("deployments", namespace)


def test_bad_s3_credentials_fail_the_model_naming_the_key_but_never_the_credentials(
    s3: LocalS3, make_settings: Callable[..., Settings], make_deps: Callable[..., Deps], kube: KubernetesPeer,
    namespace: str, model_name: str, production: dict[str, str],
) -> None:
    log_iris(model_name, kind="tree", tags=production)
    settings = make_settings(aws_access_key_id=BAD_KEY_ID, aws_secret_access_key=BAD_SECRET)
    with credentials_checked(s3):
        report = reconcile_once(make_deps(settings))
    assert report.failed == 1, report.failures
    found = tags(model_name)
    assert found["deployment_status"] == "failed"
    assert "S3 refused access to s3://" in found["deployment_message"]
    assert "check the S3 credentials" in found["deployment_message"]
    for value in [*found.values(), *report.failures]:
        assert BAD_KEY_ID not in value and BAD_SECRET not in value
    assert model_slug(model_name) not in kube.objects("deployments", namespace)

    # Ops fix the Secret: the next pass deploys, without anyone re-tagging the version.
    report = reconcile_once(make_deps())
    assert report.deployed == 1, report.failures
    assert tags(model_name)["deployment_status"] == "deployed"
