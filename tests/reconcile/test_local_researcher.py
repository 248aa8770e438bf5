"""The researcher's local loop (`make up`, DEPLOY_TARGET=local) as issue 22 found it: a near-miss selector tag,
CLI commands that tell the truth, fix hints that work when copied as written. Against the real MLflow server,
moto's S3 and real wrapper processes; every process a test starts is gone when it ends.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from devstack.models import LoggedModel, register_versions
from devstack.servers import LocalMlflow
from watcher.entry.cli import main


@pytest.fixture(autouse=True)
def _logging_restored(capsys: pytest.CaptureFixture[str], _restore_logging: None) -> None:
    """main() points the root logger at the captured stderr; put pytest's back first (see test_cli)."""


@pytest.fixture
def local(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """The local target, as `make up` runs it; whatever it leaves running is killed at the end."""
    monkeypatch.setenv("DEPLOY_TARGET", "local")
    monkeypatch.setenv("ROLLOUT_TIMEOUT_SECONDS", "120")  # a wrapper process loads its model in seconds
    state_dir = Path(env["LOCAL_STATE_DIR"])
    yield state_dir
    for path in [*state_dir.glob("*.json"), *state_dir.glob("front/process.json")]:
        pid = json.loads(path.read_text()).get("pid")
        if isinstance(pid, int) and Path(f"/proc/{pid}").exists():
            os.killpg(pid, signal.SIGKILL)


def tags(name: str, version: int | str = 1) -> dict[str, str]:
    return dict(MlflowClient().get_model_version(name, str(version)).tags)


# --- 2. a near-miss selector tag ------------------------------------------------------------------


@pytest.mark.parametrize("value", ["Production", " production "])
def test_a_tag_value_that_differs_from_the_selector_in_case_or_spaces_is_told_once_and_never_deployed(
    local: Path, capsys: pytest.CaptureFixture[str], model_name: str, iris: LoggedModel, production: dict[str, str],
    value: str,
) -> None:
    near = value.replace("production", production["deploy"]).replace("Production", production["deploy"].title())
    register_versions(model_name, iris, tags={"deploy": near})

    assert main(["run-once"]) == 0

    message = tags(model_name)["deployment_message"]
    assert message.startswith(f"Not deployed: the tag 'deploy' = {near!r} looks meant for the selector "
                              f"tag:deploy={production['deploy']}, which needs the tag 'deploy' = "
                              f"{production['deploy']!r} exactly (case and surrounding spaces count)")
    assert "deployment_status" not in tags(model_name)
    assert not list(local.glob("*.json")), "no wrapper was started"
    assert f"{model_name} v1: not deployed: the tag 'deploy' = {near!r} only nearly matches" in capsys.readouterr().err

    assert main(["run-once"]) == 0
    assert "only nearly matches" not in capsys.readouterr().err, "told once, not every pass"


# --- 7. CLI honesty ----------------------------------------------------------------------------------


def test_retry_of_a_model_that_does_not_exist_is_an_error(local: Path, capsys: pytest.CaptureFixture[str],
                                                          model_name: str) -> None:
    assert main(["retry", model_name]) == 1

    assert f"{model_name}: no registered model of this name" in capsys.readouterr().err


def test_status_without_local_state_says_so_and_creates_nothing_in_the_checkout(
    local: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    monkeypatch.chdir(checkout)
    monkeypatch.delenv("LOCAL_STATE_DIR")

    assert main(["status"]) == 0

    assert list(checkout.iterdir()) == [], "status only reads"
    assert f"no local state at {checkout / '.state' / 'local'} (LOCAL_STATE_DIR)" in capsys.readouterr().err


def test_a_deploy_by_hand_of_an_unselected_version_warns_and_the_pass_that_undoes_it_says_why(
    local: Path, capsys: pytest.CaptureFixture[str], model_name: str, iris: LoggedModel, production: dict[str, str],
) -> None:
    register_versions(model_name, iris)  # not tagged: the selector does not pick it

    assert main(["deploy", model_name, "1", "--target", "local"]) == 0

    out = capsys.readouterr().out
    assert (f"warning: tag:deploy={production['deploy']} does not select {model_name} v1: a running watcher's next "
            "pass will undo this deploy (the model is undeployed)") in out
    assert f"set the tag deploy={production['deploy']} on v1" in out
    assert tags(model_name)["deployment_status"] == "deployed"

    assert main(["run-once"]) == 0

    err = capsys.readouterr().err
    assert f"undeployed {model_name} v1" in err
    assert f"tag:deploy={production['deploy']} selects no version of it any more" in err
    assert tags(model_name)["deployment_status"] == "undeployed"


# --- 6. the README's example for logging your own model, run as written ---------------------------------


def readme_example() -> str:
    """The README's first Python block: what a researcher copies."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    return readme.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readmes_own_model_example_logs_a_random_forest_that_deploys_and_predicts(
    local: Path, model_name: str, production: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    import mlflow

    example = readme_example()
    assert 'skops_trusted_types=["sklearn.tree._tree.Tree"]' in example, "the line a first RandomForest needs"
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    exec(compile(example.replace('"iris-forest"', repr(model_name)), "README.md", "exec"), {})
    MlflowClient().set_model_version_tag(model_name, "1", "deploy", production["deploy"])

    assert main(["run-once"]) == 0

    after = tags(model_name)
    assert after["deployment_status"] == "deployed", after.get("deployment_message")
    row = {"sepal length (cm)": 6.7, "sepal width (cm)": 3.0, "petal length (cm)": 5.2, "petal width (cm)": 2.3}
    request = urllib.request.Request(f"{after['model_endpoint']}predict", method="POST",
                                     data=json.dumps({"instances": [row]}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert json.loads(answer.read())["predictions"] == [2]
    assert main(["undeploy", model_name, "--untag"]) == 0


def test_a_tree_model_whose_trusted_types_are_missing_fails_saying_how_to_log_it_again(
    local: Path, model_name: str, production: dict[str, str], tmp_path: Path, mlflow_server: LocalMlflow,
) -> None:
    """A forest whose MLmodel lacks skops_trusted_types (logged by another tool, or edited): the wrapper's reason
    names the argument and the types, and that only a new version can carry it."""
    import boto3
    import mlflow.sklearn
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    from model_wrapper.contract.spec import NEEDS_NEW_VERSION

    features, species = load_iris(return_X_y=True, as_frame=True)
    model = RandomForestClassifier(n_estimators=5, random_state=0).fit(features, species)
    mlflow.sklearn.save_model(model, tmp_path / "forest", input_example=features.head(2),
                              skops_trusted_types=["sklearn.tree._tree.Tree"])
    mlmodel = tmp_path / "forest" / "MLmodel"
    mlmodel.write_text("".join(line for line in mlmodel.read_text().splitlines(keepends=True)
                               if "skops_trusted_types" not in line and "sklearn.tree._tree.Tree" not in line))
    s3 = boto3.client("s3", endpoint_url=mlflow_server.s3.endpoint_url, region_name="us-east-1",
                      aws_access_key_id="devstack-key", aws_secret_access_key="devstack-secret")
    prefix = f"handmade/{model_name}"
    for path in (tmp_path / "forest").rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), mlflow_server.s3.bucket, f"{prefix}/{path.relative_to(tmp_path / 'forest')}")
    MlflowClient().create_registered_model(model_name)
    MlflowClient().create_model_version(model_name, f"s3://{mlflow_server.s3.bucket}/{prefix}", tags=production)

    assert main(["run-once"]) == 0

    message = tags(model_name)["deployment_message"]
    assert tags(model_name)["deployment_status"] == "failed"
    assert "mlflow.sklearn.log_model(..., skops_trusted_types=['sklearn.tree._tree.Tree'])" in message, message
    assert NEEDS_NEW_VERSION in message and "retry" not in message
