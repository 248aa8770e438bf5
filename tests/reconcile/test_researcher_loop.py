"""The researcher's loop on Kubernetes: the wrapper's own reason in the tags, `retry`, an undeploy that
stays undone, `status --json`, and messages that are true. Against the real MLflow server, moto's S3
and kmock with the control plane of tests/control_plane.py (its kubelet gives a crashing container the
termination message the wrapper wrote, as pkg/kubelet/kuberuntime does).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from mlflow import MlflowClient

from devstack.models import LoggedModel, register_versions
from model_wrapper.contract.naming import model_slug
from tests.peers import KubernetesPeer, all_ready, crash
from watcher.entry.cli import main
from watcher.reconcile.deps import Deps
from watcher.reconcile.engine import reconcile_once
from watcher.reconcile.record import MAX_MESSAGE


@pytest.fixture(autouse=True)
def _logging_restored(capsys: pytest.CaptureFixture[str], _restore_logging: None) -> None:
    """main() points the root logger at the captured stderr; put pytest's back first (see test_cli)."""


def tags(name: str, version: int | str = 1) -> dict[str, str]:
    return dict(MlflowClient().get_model_version(name, str(version)).tags)


def test_the_wrappers_termination_message_becomes_the_deployment_message_bounded_and_redacted(
    env: dict[str, str], kube: KubernetesPeer, namespace: str, model_name: str, iris: LoggedModel,
    production: dict[str, str],
) -> None:
    reason = ("the model needs xgboost 3.0.5, which this runtime does not have; serve it with a runtime image "
              "that has it (RUNTIME_IMAGES=\"xgboost=<image>\")")
    # What a log tail (FallbackToLogsOnError) could hold besides: credentials and far too much text.
    kube.set_rollout_policy(lambda template: crash(f"{reason}\nAWS_SECRET_ACCESS_KEY=devstack-secret "
                                                   f"MLFLOW_TRACKING_PASSWORD: hunter22 " + "x" * 5000))
    register_versions(model_name, iris, tags=production)

    assert main(["run-once"]) == 0

    message = tags(model_name)["deployment_message"]
    assert tags(model_name)["deployment_status"] == "failed"
    assert "CrashLoopBackOff: " + reason in message
    assert "devstack-secret" not in message and "hunter22" not in message
    assert len(message) <= MAX_MESSAGE
    assert message.endswith(f"once fixed: python -m watcher retry {model_name} 1")


def test_retry_deploys_a_version_whose_failure_was_fixed_outside_the_model(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], kube: KubernetesPeer, namespace: str,
    model_name: str, iris: LoggedModel, production: dict[str, str], make_deps: Callable[..., Deps],
) -> None:
    kube.set_rollout_policy(lambda template: crash("the model needs xgboost 3.0.5, which this runtime does not have"))
    register_versions(model_name, iris, tags=production)
    assert main(["run-once"]) == 0
    assert tags(model_name)["deployment_status"] == "failed"
    kube.set_rollout_policy(all_ready)  # ops rebuilt the image under the same tag, with xgboost

    remembered = reconcile_once(make_deps())
    assert (remembered.unchanged, remembered.deployed) == (1, 0)  # the failure's inputs did not change
    capsys.readouterr()

    assert main(["retry", model_name]) == 0

    assert f"{model_name} v1: deployed: Serving version 1 at" in capsys.readouterr().out
    assert tags(model_name)["deployment_status"] == "deployed"
    assert main(["retry", model_name, "1"]) == 0
    assert "nothing to retry (deployed)" in capsys.readouterr().out


def test_undeploy_refuses_while_the_tag_still_selects_the_model_and_says_what_selects_it(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], kube: KubernetesPeer, namespace: str,
    model_name: str, iris: LoggedModel, production: dict[str, str],
) -> None:
    register_versions(model_name, iris, tags=production)
    assert main(["run-once"]) == 0
    capsys.readouterr()

    assert main(["undeploy", model_name]) == 1

    out = capsys.readouterr().out
    assert f"tag:deploy={production['deploy']} still selects v1" in out and "--untag" in out
    assert model_slug(model_name) in kube.objects("deployments", namespace)
    assert tags(model_name)["deployment_status"] == "deployed"


def test_undeploy_untag_removes_the_selecting_tag_records_it_and_stays_undone(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], kube: KubernetesPeer, namespace: str,
    model_name: str, iris: LoggedModel, production: dict[str, str],
) -> None:
    register_versions(model_name, iris, 2, tags=production)  # v1 superseded, v2 served
    assert main(["run-once"]) == 0
    assert "model_endpoint" in tags(model_name, 2)
    capsys.readouterr()

    assert main(["undeploy", model_name, "--untag"]) == 0

    assert f"{model_name}: undeployed (tag:deploy={production['deploy']} removed from v1, v2)" in \
        capsys.readouterr().out
    for version in (1, 2):
        after = tags(model_name, version)
        assert "deploy" not in after and "model_endpoint" not in after
        assert after["deployment_status"] == "undeployed"
        assert "undeploy --untag" in after["deployment_message"] and "removed tag:deploy=" in \
            after["deployment_message"]
    assert main(["run-once"]) == 0
    assert kube.objects("deployments", namespace) == {}  # the next pass does not bring it back


def test_undeploy_untag_removes_an_alias_selector(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, kube: KubernetesPeer, namespace: str, model_name: str,
    iris: LoggedModel,
) -> None:
    alias = f"live-{namespace}"
    monkeypatch.setenv("SELECTOR", f"alias:{alias}")
    register_versions(model_name, iris)
    MlflowClient().set_registered_model_alias(model_name, alias, "1")
    assert main(["run-once"]) == 0 and main(["undeploy", model_name]) == 1

    assert main(["undeploy", model_name, "--untag"]) == 0

    assert MlflowClient().get_registered_model(model_name).aliases == {}
    assert tags(model_name)["deployment_status"] == "undeployed"


def test_an_undeploy_of_a_model_no_longer_selected_says_so_truly(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], model_name: str, iris: LoggedModel,
    production: dict[str, str],
) -> None:
    register_versions(model_name, iris, tags=production)
    assert main(["run-once"]) == 0
    MlflowClient().delete_model_version_tag(model_name, "1", "deploy")

    assert main(["undeploy", model_name]) == 0

    assert tags(model_name)["deployment_message"] == "Undeployed: no version of this model is selected any more."
    assert "model_endpoint" not in tags(model_name)


def test_status_json_lists_deployed_failed_and_superseded_versions_with_their_messages(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], kube: KubernetesPeer, model_name: str,
    iris: LoggedModel, production: dict[str, str], upload: Callable[[dict[str, str]], str],
) -> None:
    register_versions(model_name, iris, 2, tags=production)
    broken = f"{model_name}-broken"
    MlflowClient().create_registered_model(broken)
    MlflowClient().create_model_version(broken, upload({"MLmodel": "flavors: {}\n"}), tags=production)
    assert main(["run-once"]) == 0
    capsys.readouterr()

    assert main(["status", "--json"]) == 0

    rows = {(row["model"], row["version"]): row for row in json.loads(capsys.readouterr().out)}
    assert set(rows) == {(model_name, 1), (model_name, 2), (broken, 1)}
    assert (rows[(model_name, 2)]["status"], rows[(model_name, 2)]["running"]) == ("deployed", True)
    assert rows[(model_name, 2)]["endpoint"] == f"http://models.example.org/{model_slug(model_name)}/api/"
    assert rows[(model_name, 1)]["status"] == "superseded"
    assert rows[(model_name, 1)]["message"] == "Replaced by version 2 of this model."
    assert (rows[(broken, 1)]["status"], rows[(broken, 1)]["running"]) == ("failed", False)
    assert "no contract.yaml and no model signature" in rows[(broken, 1)]["message"]


def test_a_failed_deploy_names_its_subject_once(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], model_name: str,
    upload: Callable[[dict[str, str]], str],
) -> None:
    MlflowClient().create_registered_model(model_name)
    MlflowClient().create_model_version(model_name, upload({"MLmodel": "flavors: {}\n"}))

    assert main(["deploy", model_name, "1"]) == 1

    out = capsys.readouterr().out
    assert out.startswith(f"{model_name} v1: failed: no contract.yaml") and out.count(f"{model_name} v1") == 2


def test_no_kubernetes_access_suggests_the_local_target_and_speaks_of_no_pass_outside_one(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Any,
) -> None:
    monkeypatch.delenv("K8S_API")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))

    assert main(["status"]) == 1

    err = capsys.readouterr().err
    assert "no Kubernetes access" in err and "DEPLOY_TARGET=local" in err and "pass" not in err
    assert main(["run-once"]) == 1
    assert "pass aborted: no Kubernetes access" in capsys.readouterr().err
