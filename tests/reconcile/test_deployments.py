"""The `mlflow deployments` target `service-builder`, found through its entry point in an installed copy
of the project, driven by MLflow's own CLI (a subprocess) and by `get_deploy_client` (in this process),
against the session's MLflow server and moto S3, on the local target (real wrapper processes) and the
emulated cluster: create, get, list, predict (with MLflow's `--input-path` file), update, delete, a
failing version, a bad config key, what is not supported, and run-local in the foreground.

The project is installed (`pip install --no-deps -e .`) into a virtualenv of its own that sees the
shared one's packages (tests/reconcile/installed.py), never into the shared one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from devstack.models import LoggedModel, register_versions
from devstack.servers import free_port
from model_wrapper.contract.naming import model_slug
from tests.peers import KubernetesPeer
from tests.reconcile.installed import installed_python

ROWS = {"dataframe_split": {"columns": ["sepal_length", "sepal_width", "petal_length", "petal_width"],
                            "data": [[5.1, 3.5, 1.4, 0.2], [7.7, 2.8, 6.7, 2.0]]}}


@pytest.fixture(scope="module")
def python() -> Path:
    return installed_python()


@pytest.fixture
def local_env(env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, str]]:
    """The watcher's environment on the local target; every wrapper it started is stopped at the end."""
    state = tmp_path / "local-state"
    values = {**os.environ, **env, "DEPLOY_TARGET": "local", "LOCAL_STATE_DIR": str(state),
              "ROLLOUT_TIMEOUT_SECONDS": "180", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    yield values
    for path in state.glob("*.json"):
        pid = json.loads(path.read_text()).get("pid")
        if isinstance(pid, int):
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)


def _mlflow(python: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), "-m", "mlflow", "deployments", *args, "-t", "service-builder"],
                          env=env, capture_output=True, text=True, timeout=400)


def _tags(name: str, version: str) -> dict[str, str]:
    return dict(MlflowClient().get_model_version(name, version).tags)


def test_the_console_script_is_the_watcher_cli_and_the_target_explains_itself(python: Path,
                                                                              env: dict[str, str]) -> None:
    script = subprocess.run([str(python.parent / "service-builder"), "--help"], capture_output=True, text=True)
    module = subprocess.run([sys.executable, "-m", "watcher", "--help"], capture_output=True, text=True)
    target_help = subprocess.run([str(python), "-m", "mlflow", "deployments", "help", "-t", "service-builder"],
                                 capture_output=True, text=True, env={**os.environ, **env})

    assert script.returncode == module.returncode == 0 and script.stdout == module.stdout
    assert target_help.returncode == 0, target_help.stderr
    assert "models:/NAME/VERSION" in target_help.stdout and "-C key=value" in target_help.stdout


@pytest.mark.timeout(600)  # three wrapper starts (create, update's new process) on a shared machine
def test_mlflows_cli_creates_predicts_updates_and_deletes_on_the_local_target(
        python: Path, local_env: dict[str, str], model_name: str, iris: LoggedModel, tmp_path: Path) -> None:
    register_versions(model_name, iris, 2)
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps(ROWS))

    created = _mlflow(python, local_env, "create", "--name", model_name, "-m", f"models:/{model_name}/1")
    assert created.returncode == 0, created.stderr[-3000:]
    assert _tags(model_name, "1")["deployment_status"] == "deployed"
    endpoint = _tags(model_name, "1")["model_endpoint"]
    assert f"deployed at {endpoint}" in created.stderr  # MLflow prints only its own line: the endpoint is logged

    got = _mlflow(python, local_env, "get", "--name", model_name)
    listed = _mlflow(python, local_env, "list")
    predicted = _mlflow(python, local_env, "predict", "--name", model_name, "--input-path", str(rows),
                        "--output-path", str(tmp_path / "out.json"))
    assert got.returncode == listed.returncode == predicted.returncode == 0, (got.stderr, predicted.stderr)
    assert f"endpoint: {endpoint}" in got.stdout and "status: deployed" in got.stdout
    assert model_name in listed.stdout
    assert json.loads((tmp_path / "out.json").read_text())["predictions"] == iris.model.predict(
        pd.DataFrame(ROWS["dataframe_split"]["data"], columns=ROWS["dataframe_split"]["columns"])).tolist()

    updated = _mlflow(python, local_env, "update", "--name", model_name, "-m", f"models:/{model_name}/2")
    assert updated.returncode == 0, updated.stderr[-3000:]
    assert _tags(model_name, "2")["deployment_status"] == "deployed" and "deploy" not in _tags(model_name, "1")

    deleted = _mlflow(python, local_env, "delete", "--name", model_name)
    assert deleted.returncode == 0, deleted.stderr[-3000:]
    assert _tags(model_name, "2")["deployment_status"] == "undeployed" and "deploy" not in _tags(model_name, "2")
    assert not list(Path(local_env["LOCAL_STATE_DIR"]).glob("*.json"))


def test_a_failing_version_and_a_bad_config_key_are_errors_that_say_why(
        python: Path, local_env: dict[str, str], model_name: str, upload: Callable[[dict[str, str]], str]) -> None:
    MlflowClient().create_registered_model(model_name)
    MlflowClient().create_model_version(model_name, upload({"MLmodel": "flavors: {}\n"}))

    failed = _mlflow(python, local_env, "create", "--name", model_name, "-m", f"models:/{model_name}/1")
    bad_key = _mlflow(python, local_env, "create", "--name", model_name, "-m", f"models:/{model_name}/1",
                      "-C", "colour=blue")

    assert failed.returncode != 0
    message = _tags(model_name, "1")["deployment_message"]
    assert _tags(model_name, "1")["deployment_status"] == "failed" and message[:80] in failed.stderr
    assert bad_key.returncode != 0 and "unknown config key 'colour'" in bad_key.stderr


@pytest.fixture
def deploy_client(python: Path, env: dict[str, str]) -> Any:
    """`get_deploy_client("service-builder")` in this process, the plugin found by its entry point."""
    from mlflow.deployments import get_deploy_client
    from mlflow.deployments.interface import plugin_store

    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    if site not in sys.path:
        sys.path.append(site)  # where the installed copy's entry point metadata is
    plugin_store.register_entrypoints()
    return get_deploy_client("service-builder")


def test_get_deploy_client_deploys_by_alias_on_the_emulated_cluster(
        deploy_client: Any, kube: KubernetesPeer, namespace: str, model_name: str, iris: LoggedModel) -> None:
    register_versions(model_name, iris, 2)
    MlflowClient().set_registered_model_alias(model_name, "champion", "2")

    created = deploy_client.create_deployment(model_name, f"models:/{model_name}@champion")
    got = deploy_client.get_deployment(model_name)
    listed = deploy_client.list_deployments()

    assert type(deploy_client).__module__ == "watcher.entry.deployments"
    assert created["name"] == model_name and created["flavor"] == "python_function" and created["version"] == 2
    assert created["endpoint"] == f"http://models.example.org/{model_slug(model_name)}/api/"
    assert kube.objects("deployments", namespace)[model_slug(model_name)]
    assert (got["status"], got["endpoint"], got["tags"]["deployment_status"]) == \
        ("deployed", created["endpoint"], "deployed")
    assert any(row["name"] == model_name and row["version"] == 2 for row in listed)

    deploy_client.delete_deployment(model_name)
    assert kube.objects("deployments", namespace) == {}
    assert _tags(model_name, "2")["deployment_status"] == "undeployed"


@pytest.mark.parametrize(("call", "words"), [
    (lambda c, n: c.explain(n, None), "explain is not supported"),
    (lambda c, n: c.create_endpoint(n), "endpoints is not supported"),
    (lambda c, n: c.list_endpoints(), "endpoints is not supported"),
    (lambda c, n: c.create_deployment(n, f"models:/{n}/1", config={"colour": "blue"}), "unknown config key 'colour'"),
    (lambda c, n: c.create_deployment(n, f"models:/{n}/1", config={"timeout": "soon"}), "'soon' is not a number"),
    (lambda c, n: c.create_deployment(n, "runs:/abc/model"), "use models:/"),
    (lambda c, n: c.create_deployment(n, f"models:/{n}/7"), "does not exist in the registry"),
    (lambda c, n: c.get_deployment(n), "no deployment named"),
])
def test_what_the_target_does_not_do_is_a_clear_error(deploy_client: Any, model_name: str,
                                                       call: Callable[[Any, str], Any], words: str) -> None:
    with pytest.raises(MlflowException, match=words.replace("(", r"\(")):
        call(deploy_client, model_name)


@pytest.mark.timeout(300)
def test_run_local_serves_the_version_with_the_wrapper_in_the_foreground_and_selects_nothing(
        python: Path, local_env: dict[str, str], model_name: str, iris: LoggedModel) -> None:
    register_versions(model_name, iris, 1)
    port = free_port()
    command = [str(python), "-m", "mlflow", "deployments", "run-local", "-t", "service-builder", "--name", model_name,
               "-m", f"models:/{model_name}/1", "-C", f"port={port}"]
    process = subprocess.Popen(command, env=local_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)
    base = f"http://127.0.0.1:{port}/{model_slug(model_name)}/api/"
    columns = ROWS["dataframe_split"]["columns"]
    instances = [dict(zip(columns, row, strict=True)) for row in ROWS["dataframe_split"]["data"]]
    try:
        deadline = time.monotonic() + 180
        while not _answers(base + "ready"):
            assert process.poll() is None, process.stdout.read().decode()[-3000:] if process.stdout else ""
            assert time.monotonic() < deadline, "run-local never became ready"
            time.sleep(0.5)
        answer = httpx.post(base + "predict", json={"instances": instances}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == iris.model.predict(
            pd.DataFrame(ROWS["dataframe_split"]["data"], columns=columns)).tolist()
        assert "deploy" not in _tags(model_name, "1") and "deployment_status" not in _tags(model_name, "1")
    finally:
        with contextlib.suppress(OSError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
