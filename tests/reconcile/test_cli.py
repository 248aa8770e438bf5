"""`python -m watcher ...` as a developer and the CronJob run it: `main(argv)` with the environment set.

Covers the summary line and exit codes of `run-once`, a dry run that writes nothing, and the
developer commands `render`, `deploy`, `undeploy` and `status`, all against the real peers.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import yaml
from mlflow import MlflowClient

from devstack.models import LoggedModel, register_versions
from devstack.servers import free_port
from model_wrapper.contract.naming import model_slug
from tests.peers import KubernetesPeer
from watcher.entry.cli import main

SUMMARY = re.compile(r"pass done: found=(\d+) deployed=(\d+) updated=(\d+) unchanged=(\d+) superseded=(\d+) "
                     r"undeployed=(\d+) failed=(\d+) duration=\d+\.\d\ds")


@pytest.fixture(autouse=True)
def _logging_restored(capsys: pytest.CaptureFixture[str], _restore_logging: None) -> None:
    """main() points the root logger at the captured stderr; put pytest's handlers back before it closes.

    Depending on `capsys` makes the restore tear down first, so no thread ever logs to a closed stream.
    """


def summaries(text: str) -> list[tuple[int, ...]]:
    return [tuple(int(n) for n in match.groups()) for match in SUMMARY.finditer(text)]


def tags(name: str, version: str = "1") -> dict[str, str]:
    return dict(MlflowClient().get_model_version(name, version).tags)


# --- run-once: summary and exit codes -------------------------------------------------------------


def test_run_once_logs_one_summary_line_and_exits_zero_although_a_model_failed(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], kube: KubernetesPeer, namespace: str, model_name: str,
    iris: LoggedModel, production: dict[str, str],
) -> None:
    register_versions(model_name, iris, tags=production)
    register_versions(f"{model_name}-clash", iris, tags=production)
    kube.create("apis/apps/v1", namespace, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": model_slug(f"{model_name}-clash")},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
            "metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})

    code = main(["run-once"])

    captured = capsys.readouterr()
    assert code == 0
    # found, deployed, updated, unchanged, superseded, undeployed, failed
    assert summaries(captured.out + captured.err) == [(2, 1, 0, 0, 0, 0, 1)]
    assert tags(f"{model_name}-clash")["deployment_status"] == "failed"


def test_run_once_exits_one_when_the_registry_cannot_be_reached(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], kube: KubernetesPeer,
    namespace: str,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")

    assert main(["run-once"]) == 1

    assert "pass aborted" in capsys.readouterr().err
    assert kube.writes(namespace) == []


def test_run_once_exits_one_when_the_cluster_cannot_be_reached(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], model_name: str,
    iris: LoggedModel, production: dict[str, str],
) -> None:
    register_versions(model_name, iris, tags=production)
    monkeypatch.setenv("K8S_API", f"http://127.0.0.1:{free_port()}")

    assert main(["run-once"]) == 1

    assert "Kubernetes API unreachable" in capsys.readouterr().err
    assert "deployment_status" not in tags(model_name)


@pytest.mark.parametrize(("settings", "named"), [
    ({"SELECTOR": "production"}, "SELECTOR"),
    ({"DEFAULT_MEMORY_REQUEST": "2Gi", "DEFAULT_MEMORY_LIMIT": "1536Mi"}, "DEFAULT_MEMORY_REQUEST (2Gi) is above"),
], ids=["a selector without a kind", "a default request above the default limit"])
def test_bad_setting_exits_two_naming_the_variable(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    settings: dict[str, str], named: str,
) -> None:
    for variable, value in settings.items():
        monkeypatch.setenv(variable, value)

    assert main(["run-once"]) == 2

    assert named in capsys.readouterr().err


def test_run_once_for_one_model_leaves_the_others_alone(
    env: dict[str, str], kube: KubernetesPeer, namespace: str, model_name: str, iris: LoggedModel,
    production: dict[str, str],
) -> None:
    register_versions(model_name, iris, tags=production)
    register_versions(f"{model_name}-other", iris, tags=production)

    assert main(["run-once", "--model", model_name]) == 0

    assert set(kube.objects("deployments", namespace)) == {model_slug(model_name)}
    assert "deployment_status" not in tags(f"{model_name}-other")


# --- dry run --------------------------------------------------------------------------------------


def test_dry_run_prints_the_plan_and_manifests_and_writes_nothing(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], kube: KubernetesPeer, namespace: str, model_name: str,
    iris: LoggedModel, production: dict[str, str],
) -> None:
    register_versions(model_name, iris, tags=production)
    before = tags(model_name)

    assert main(["run-once", "--dry-run"]) == 0

    out = capsys.readouterr().out
    slug = model_slug(model_name)
    assert f"- new: {model_name} v1 as {slug}" in out
    documents = [doc for doc in yaml.safe_load_all(out[out.index("apiVersion"):]) if doc]
    assert [doc["kind"] for doc in documents] == ["Deployment", "Service", "Ingress", "NetworkPolicy"]
    assert kube.writes(namespace) == []
    assert tags(model_name) == before


def test_dry_run_with_nothing_to_do_says_so(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], kube: KubernetesPeer, namespace: str, model_name: str,
    iris: LoggedModel, production: dict[str, str],
) -> None:
    register_versions(model_name, iris, tags=production)
    assert main(["run-once"]) == 0
    capsys.readouterr()
    writes = len(kube.writes(namespace))

    assert main(["run-once", "--dry-run"]) == 0

    assert "nothing to do" in capsys.readouterr().out
    assert len(kube.writes(namespace)) == writes


# --- render, deploy, undeploy, status ----------------------------------------------------------


def test_render_prints_the_validated_manifests_of_any_version(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], kube: KubernetesPeer, namespace: str, model_name: str,
    iris: LoggedModel,
) -> None:
    register_versions(model_name, iris, 2)

    assert main(["render", model_name, "2"]) == 0

    documents = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [doc["kind"] for doc in documents] == ["Deployment", "Service", "Ingress", "NetworkPolicy"]
    env_vars = {e["name"]: e.get("value") for e in documents[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env_vars["MODEL_NAME"] == model_name and env_vars["MODEL_VERSION"] == "2"
    assert kube.requests(namespace) == []


def test_render_of_a_missing_version_exits_one_with_a_message(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], model_name: str,
) -> None:
    assert main(["render", model_name, "7"]) == 1
    assert f"{model_name} v7 does not exist" in capsys.readouterr().err


def test_deploy_then_undeploy_one_version_on_kubernetes(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], kube: KubernetesPeer, namespace: str, model_name: str,
    iris: LoggedModel,
) -> None:
    register_versions(model_name, iris)  # not selected: deploy is the developer's explicit request
    slug = model_slug(model_name)

    assert main(["deploy", model_name, "1", "--target", "kubernetes"]) == 0

    assert f"deployed at http://models.example.org/{slug}/api/" in capsys.readouterr().out
    assert all(slug in kube.objects(plural, namespace) for plural in ("deployments", "services", "ingresses"))
    assert tags(model_name)["deployment_status"] == "deployed"

    assert main(["undeploy", model_name]) == 0

    assert f"{model_name}: undeployed" in capsys.readouterr().out
    assert all(kube.objects(plural, namespace) == {} for plural in ("deployments", "services", "ingresses"))
    assert (tags(model_name)["deployment_status"], tags(model_name)["deployed"]) == ("undeployed", "false")


def test_deploy_that_fails_exits_one_and_records_why(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], kube: KubernetesPeer, namespace: str, model_name: str,
    upload: Callable[[dict[str, str]], str],
) -> None:
    MlflowClient().create_registered_model(model_name)
    MlflowClient().create_model_version(model_name, upload({"MLmodel": "flavors: {}\n"}))

    assert main(["deploy", model_name, "1"]) == 1

    assert "failed" in capsys.readouterr().out
    assert tags(model_name)["deployment_status"] == "failed"
    assert kube.objects("deployments", namespace) == {}


def test_undeploy_of_a_model_that_is_not_deployed_says_so(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], model_name: str,
) -> None:
    assert main(["undeploy", model_name]) == 0
    assert f"{model_name}: not deployed" in capsys.readouterr().out


def test_status_lists_every_selected_or_running_version_with_status_endpoint_and_message(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], kube: KubernetesPeer, namespace: str, model_name: str,
    iris: LoggedModel, production: dict[str, str],
) -> None:
    register_versions(model_name, iris, 2, tags=production)
    kube.create("apis/apps/v1", namespace, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "handmade"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
            "metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
    assert main(["run-once"]) == 0
    capsys.readouterr()

    assert main(["status"]) == 0

    lines = capsys.readouterr().out.splitlines()
    endpoint = f"http://models.example.org/{model_slug(model_name)}/api/"
    assert lines[0].split() == ["MODEL", "VERSION", "STATUS", "ENDPOINT", "MESSAGE"]
    assert [line.split(maxsplit=4) for line in lines[1:]] == [
        [model_name, "1", "superseded", "-", "Replaced by version 2 of this model."],
        [model_name, "2", "deployed", endpoint]]
