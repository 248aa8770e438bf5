"""No secret in output: known secret values are set, then every output the watcher makes is scanned for them.

Outputs: the manifests sent to the cluster (every request body kmock saw), the tags written on
every version, log lines (caplog in-process, stderr of `python -m watcher` in text and JSON),
stdout of a dry run, and error messages. The passes walk the paths where a secret could slip
out: a deploy, a dry run, a broken contract, a missing bucket, S3 refusing the credentials, a
forbidden Kubernetes call, and an unreachable registry whose URL carries a password.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from mlflow import MlflowClient

from devstack.models import log_iris
from devstack.servers import LocalMlflow, LocalS3, free_port
from model_wrapper.contract.naming import model_slug
from tests.faults.kube_faults import KubeFaults
from tests.faults.support import credentials_checked, run_watcher, tags, watcher_env
from tests.peers import KubernetesPeer
from watcher.config.settings import Settings
from watcher.entry.cli import main
from watcher.reconcile.deps import Deps
from watcher.reconcile.engine import reconcile_once

pytestmark = pytest.mark.usefixtures("mlflow_server")
SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAKNOWNSECRET0001",
    "AWS_SECRET_ACCESS_KEY": "s3-secret-value-8fJ2kLq9",
    "K8S_API_KEY": "k8s-bearer-token-Z7w3pX",
    "WEBHOOK_SECRET": "webhook-hmac-secret-Q4v8",
    "MLFLOW_TRACKING_PASSWORD": "mlflow-password-R2d9",
    "MLFLOW_TRACKING_TOKEN": "mlflow-token-T5g1",
    "API_KEYS": "wrapper-api-key-H6j3,wrapper-api-key-K8m2",
}
URL_PASSWORD = "url-password-N3b7"


def leaks(text: str) -> list[str]:
    values = [*SECRETS.values(), *SECRETS["API_KEYS"].split(","), URL_PASSWORD]
    return [value for value in values if value in text]


def everything_sent_to(kube: KubernetesPeer, namespace: str) -> str:
    """URLs, headers and bodies of every request in the namespace; the API token only in its own header."""
    lines = []
    for request in kube.requests(namespace):
        headers = {key.lower(): value for key, value in request.headers.items()}
        assert headers.pop("authorization", "") == f"Bearer {SECRETS['K8S_API_KEY']}"
        lines.append(f"{request.method.value} {request.url} {headers} {request.text}")
    return "\n".join(lines)


def every_tag(*names: str) -> str:
    client = MlflowClient()
    return json.dumps([dict(v.tags) for name in names for v in client.search_model_versions(f"name = '{name}'")])


SETTINGS_SECRETS = {key.lower(): SECRETS[key] for key in
                    ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "K8S_API_KEY", "WEBHOOK_SECRET")}


@pytest.fixture
def secret_settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(**SETTINGS_SECRETS)


@pytest.fixture
def models(model_name: str, production: dict[str, str]) -> dict[str, str]:
    """A healthy model, one with a broken contract, one whose files live in a bucket that does not exist."""
    names = {"healthy": f"{model_name}-healthy", "broken": f"{model_name}-broken", "lost": f"{model_name}-lost"}
    log_iris(names["healthy"], kind="tree", tags=production)
    log_iris(names["broken"], kind="tree", contract=b"inputs: {x: {type: float64}}\n", tags=production)
    client = MlflowClient()
    client.create_registered_model(names["lost"])
    client.create_model_version(names["lost"], f"s3://no-bucket-{model_name.lower()[-6:]}/iris", None,
                                tags=production)
    return names


@contextmanager
def secret_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with monkeypatch.context() as patched:
        for key in ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "API_KEYS"):
            patched.setenv(key, SECRETS[key])
        yield


def test_no_secret_reaches_a_manifest_a_tag_a_log_record_or_an_error_in_process(
    make_settings: Callable[..., Settings], make_deps: Callable[..., Deps], kube: KubernetesPeer,
    kube_faults: KubeFaults, namespace: str, models: dict[str, str], caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch, mlflow_server: LocalMlflow,
) -> None:
    # Here the registry URL carries a password too (the MLflow client sends it as basic auth).
    with_password = mlflow_server.tracking_uri.replace("http://", f"http://watcher:{URL_PASSWORD}@")
    secret_settings = make_settings(mlflow_tracking_uri=with_password, **SETTINGS_SECRETS)
    caplog.set_level(logging.DEBUG, logger="watcher")
    kube_faults.refuse("create", "ingresses", 403)
    with secret_environment(monkeypatch):
        forbidden = reconcile_once(make_deps(secret_settings))
        assert forbidden.failed == 3 and "forbidden" in tags(models["healthy"])["deployment_message"]
        kube_faults.clear()
        report = reconcile_once(make_deps(secret_settings))
    assert (report.deployed, report.failed) == (1, 0), report.failures
    deployment = kube.objects("deployments", namespace)[model_slug(models["healthy"])]
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    by_name = {item["name"]: item for item in env}
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(by_name)  # a mounted file, named below
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["s3-credentials"]["secret"]["items"] == [{"key": "credentials", "path": "credentials"}]
    assert by_name["AWS_SHARED_CREDENTIALS_FILE"]["value"].endswith("/s3/credentials")
    logged = caplog.text + "".join(str(r.exc_info) for r in caplog.records)
    assert leaks(everything_sent_to(kube, namespace)) == []
    assert leaks(every_tag(*models.values())) == []
    assert leaks(logged) == [] and leaks(" ".join(forbidden.failures + report.failures)) == []


@pytest.mark.usefixtures("_restore_logging")
def test_no_secret_reaches_the_output_of_the_watcher_on_any_path(
    secret_settings: Settings, kube: KubernetesPeer, namespace: str, models: dict[str, str], s3: LocalS3,
    model_name: str, production: dict[str, str], monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    env = {**watcher_env(secret_settings, LOG_FORMAT="text"), **SECRETS}
    outputs = [run_watcher(["run-once"], env).stderr]
    assert tags(models["healthy"])["deployment_status"] == "deployed"

    log_iris(f"{model_name}-refused", kind="tree", tags=production)
    with credentials_checked(s3):  # S3 now refuses these (unknown) credentials
        refused = run_watcher(["run-once"], {**env, "LOG_FORMAT": "json"})
    outputs += [refused.stdout, refused.stderr]
    assert "S3 refused access" in tags(f"{model_name}-refused")["deployment_message"]

    for key, value in env.items():  # the same process environment, for main() in this process
        monkeypatch.setenv(key, value)
    assert main(["run-once", "--dry-run"]) == 0
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://watcher:{URL_PASSWORD}@127.0.0.1:{free_port()}")
    assert main(["run-once"]) == 1
    printed = capfd.readouterr()
    assert "kind: Deployment" in printed.out and "MLflow registry unreachable" in printed.err
    outputs += [printed.out, printed.err]

    assert [leaks(output) for output in outputs] == [[] for _ in outputs]
    assert leaks(every_tag(*models.values(), f"{model_name}-refused")) == []
    assert leaks(everything_sent_to(kube, namespace)) == []
